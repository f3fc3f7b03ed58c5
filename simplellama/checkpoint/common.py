"""Pieces every checkpoint format shares: the ``Checkpoint`` record, key/shape checks, the RAM
estimate, tokenizer files beside the weights, atomic output directories, and building the model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from LogRelay import get_relay

from ..config import ModelArgs
from ..errors import CheckpointError
from ..tokenizer import ByteLevelBPETokenizer, find_tokenizer_file, hf_chat_template, load_tokenizer
from .keys import expected_shapes

__all__ = [
    "Checkpoint",
    "check_state_dict",
    "log_ram_estimate",
    "find_tokenizer_files",
    "tokenizer_for",
    "atomic_dir",
    "write_tokenizer_files",
    "model_from_state_dict",
    "assign_weights",
]

log = get_relay("simplellama.checkpoint")


@dataclass
class Checkpoint:
    """A loaded checkpoint: architecture, weights in Meta names, tokenizer and chat template.

    ``tokenizer_json``/``tokenizer_config`` hold Hugging Face
    ``tokenizer.json``/``tokenizer_config.json``
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


def check_state_dict(
    sd: dict[str, torch.Tensor], args: ModelArgs, source: str
) -> dict[str, torch.Tensor]:
    """Check keys and shapes against ``args``; a missing ``output.weight`` is tied to the
    embedding."""
    shapes = expected_shapes(args)
    if "output.weight" not in sd and "tok_embeddings.weight" in sd:
        log.info(
            "%s: no output.weight: tying it to tok_embeddings.weight (tied embeddings)", source
        )
        sd["output.weight"] = sd["tok_embeddings.weight"]
        args.tie_word_embeddings = True
    unknown = sorted(set(sd) - set(shapes))
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected key {unknown[0]!r} ({len(unknown)} unknown keys in all)"
        )
    missing = [k for k in shapes if k not in sd]
    if missing:
        raise CheckpointError(
            f"{source}: missing key {missing[0]!r} ({len(missing)} missing keys in all)"
        )
    for k, shape in shapes.items():
        if tuple(sd[k].shape) != shape:
            raise CheckpointError(
                f"{source}: {k}: expected shape {shape} (from the config), found "
                f"{tuple(sd[k].shape)}"
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
            "%s: weights need about %.2f GB of RAM but only %.2f GB are free; the OS may kill the "
            "process",
            source,
            n_bytes / 1e9,
            avail / 1e9,
        )
    else:
        log.info("%s: loading about %.2f GB of weights into RAM", source, n_bytes / 1e9)


# ---- tokenizer files beside the weights ----


def find_tokenizer_files(ckpt: Checkpoint) -> None:
    """Fill ``ckpt``'s tokenizer fields from the files in its directory."""
    d = ckpt.path
    found = find_tokenizer_file(d)
    if found is not None and found.name == "tokenizer.model":
        ckpt.tokenizer_model = found
    if (d / "tokenizer.json").is_file():
        ckpt.tokenizer_json = json.loads((d / "tokenizer.json").read_text())
    if (d / "tokenizer_config.json").is_file():
        ckpt.tokenizer_config = json.loads((d / "tokenizer_config.json").read_text())
    ckpt.chat_template = hf_chat_template(d, ckpt.tokenizer_config or {}) or ckpt.chat_template


def tokenizer_for(ckpt: Checkpoint) -> Any:
    """The tokenizer the checkpoint carries: GGUF metadata, else tokenizer.model, else
    tokenizer.json."""
    if ckpt.format == "gguf":
        return ByteLevelBPETokenizer.from_gguf(str(ckpt.path))
    if ckpt.tokenizer_model is not None or ckpt.tokenizer_json is not None:
        return load_tokenizer(ckpt.path)
    log.warning("%s: no tokenizer.model or tokenizer.json found: no tokenizer loaded", ckpt.path)
    return None


# ---- writers ----


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
    """Copy/write the checkpoint's tokenizer: ``tokenizer.model`` and/or HF ``tokenizer.json`` +
    config."""
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


# ---- the model ----


def model_from_state_dict(
    cls: type, args: ModelArgs, sd: dict[str, torch.Tensor], device: str | torch.device
) -> Any:
    """``cls(args)`` built on the meta device (no memory) whose parameters *are* ``sd``'s
    tensors."""
    weight = sd.get("tok_embeddings.weight")
    dtype = None if weight is None else weight.dtype  # float64 weights get a float64 RoPE table
    return assign_weights(cls(args, device="meta", dtype=dtype), args, sd, device)


def assign_weights(
    model: Any, args: ModelArgs, sd: dict[str, torch.Tensor], device: str | torch.device
) -> Any:
    """Make ``sd``'s tensors the parameters of ``model`` (built on the meta device), re-tie, move to
    ``device``."""
    model.load_state_dict(sd, strict=True, assign=True)
    if args.tie_word_embeddings:
        model.output.weight = (
            model.tok_embeddings.weight
        )  # one parameter, as in the model's own __init__
    model = model.to(device)
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise CheckpointError(
            f"{type(model).__name__}: {meta[0]} is still on the meta device after loading"
        )
    return model.eval()
