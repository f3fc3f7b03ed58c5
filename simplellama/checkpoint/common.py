"""Pieces every checkpoint format shares: the ``Checkpoint`` record, key/shape/dtype/finiteness
checks, the memory check, tokenizer files beside the weights, atomic output directories, and
building the model."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from LogRelay import get_relay

from ..config import ModelArgs
from ..devices import check_memory
from ..errors import CheckpointError, TokenizerError
from ..files import checkpoint_file, read_json
from ..model import MEMORY_HINT, rope_table_bytes
from ..tokenizer import ByteLevelBPETokenizer, find_tokenizer_file, hf_chat_template, load_tokenizer
from .keys import LAYER_WEIGHTS, expected_shape

__all__ = [
    "Checkpoint",
    "RawBlocks",
    "TensorSink",
    "check_state_dict",
    "check_weight",
    "check_ram",
    "release_pages",
    "trim_heap",
    "check_tokenizer",
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


@dataclass
class RawBlocks:
    """A GGUF tensor as stored, for a loader that keeps the file's blocks (``quantized.py``)."""

    name: str  # the tensor's name in the file
    data: Any  # its bytes, (N, bytes per row) uint8 (``ReaderTensor.data``, memory-mapped)
    qtype: Any  # its ``GGMLQuantizationType``
    dequantize: Callable[[torch.dtype], torch.Tensor]  # the float tensor, finiteness checked


class TensorSink(Protocol):
    """Receives each weight as a loader reads it, instead of the float state dict keeping it.

    The readers (``meta.py``, ``hf.py``, ``gguf.py``) do their usual parsing and checks, then hand
    every tensor (or, for GGUF, its :class:`RawBlocks`) to the sink and keep what it returns: a
    float tensor, or a ``meta``-device stand-in of the same shape for a weight the sink keeps in
    another form. ``check_ram`` replaces the readers' float-sized memory check.
    """

    def check_ram(
        self,
        source: str,
        args: ModelArgs,
        cache_device: torch.device | str | None,
        itemsize: int,
        stored: dict[str, str] | None = None,
    ) -> None:
        """Refuse before reading if the result cannot fit (``stored``: GGUF type per Meta key)."""

    def __call__(self, key: str, weight: torch.Tensor | RawBlocks) -> torch.Tensor:
        """What the state dict keeps for the Meta-named ``key``: never a view of ``weight``
        (the readers drop its file pages afterwards)."""


def check_state_dict(
    sd: dict[str, torch.Tensor], args: ModelArgs, source: str
) -> dict[str, torch.Tensor]:
    """Check keys and shapes against ``args``; a missing ``output.weight`` is tied to the
    embedding; weights stored in another dtype than the embedding are cast to its dtype (one model,
    one dtype). Runs in time linear in ``len(sd)``, whatever ``args.n_layers`` claims."""
    if "output.weight" not in sd and "tok_embeddings.weight" in sd:
        log.info(
            "%s: no output.weight: tying it to tok_embeddings.weight (tied embeddings)", source
        )
        sd["output.weight"] = sd["tok_embeddings.weight"]
        args.tie_word_embeddings = True
    unknown = sorted(k for k in sd if expected_shape(k, args) is None)
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected key {unknown[0]!r} ({len(unknown)} unknown keys in all)"
        )
    n_expected = 3 + len(LAYER_WEIGHTS) * args.n_layers  # embedding, norm, output + per layer
    if len(sd) < n_expected:
        missing = next(k for k in _expected_keys(args) if k not in sd)
        raise CheckpointError(f"{source}: missing key {missing!r} "
                              f"({n_expected - len(sd)} missing keys in all)")  # fmt: skip
    dtype = sd["tok_embeddings.weight"].dtype
    for k, t in sd.items():
        shape = expected_shape(k, args)
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{source}: {k}: expected shape {shape} (from the config), found {tuple(t.shape)}"
            )
        if t.dtype != dtype:
            log.info("%s: %s is %s: cast to the embedding's %s", source, k, t.dtype, dtype)
            sd[k] = t.to(dtype)
    return sd


def _expected_keys(args: ModelArgs) -> Iterator[str]:
    yield "tok_embeddings.weight"
    for i in range(args.n_layers):
        yield from (f"layers.{i}.{m}.weight" for m in LAYER_WEIGHTS)
    yield from ("norm.weight", "output.weight")


_CHUNK = 1 << 22  # elements per finiteness test: a 4 MiB bool temporary, whatever the tensor


def check_weight(t: Any, key: str, source: str) -> torch.Tensor:
    """``t`` if it is a floating-point tensor without NaN/Inf; else one line naming ``key``.

    Integer and bool tensors would load (and give ``load_state_dict``'s multi-line message) or
    silently compute garbage; NaN/Inf would surface only at sampling. Cheap: one sum per tensor
    (a NaN or Inf anywhere makes it non-finite), read while the tensor is being loaded anyway;
    only a non-finite sum (a bad value, or an overflow of the sum) is searched in chunks.
    """
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"{source}: {key}: expected a tensor, found {type(t).__name__}")
    if not t.is_floating_point():
        raise CheckpointError(f"{source}: {key}: expected floating-point weights, found {t.dtype}")
    if t.device.type == "meta":
        return t
    flat = t.reshape(-1)  # a view for the contiguous tensors loaders produce
    if bool(torch.isfinite(flat.sum())):
        return t
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK]
        if not bool(torch.isfinite(chunk).all()):
            bad = start + int((~torch.isfinite(chunk)).nonzero()[0, 0])
            value = flat[bad].item()
            raise CheckpointError(
                f"{source}: {key}: weight {bad} (flat index) is {value}; expected finite values"
            )
    return t


def check_ram(
    source: str,
    n_bytes: int | dict[str, int],
    args: ModelArgs,
    cache_device: torch.device | str | None = None,
    itemsize: int = 2,
) -> None:
    """Refuse to load weights of ``n_bytes`` (plus, with ``cache_device``, the KV cache for
    ``args.max_batch_size`` x ``args.max_seq_len`` positions and the RoPE table) that cannot fit.

    Weights are read into CPU memory first; a KV cache on another device is checked there.
    ``n_bytes`` may be a dict naming its parts (e.g. quantized and float weights).
    """
    cpu = dict(n_bytes) if isinstance(n_bytes, dict) else {"weights": n_bytes}
    n_bytes = sum(cpu.values())
    if cache_device is not None:
        rope = rope_table_bytes(2 * args.max_seq_len, args.head_dim, torch.float32)
        cache = {"KV cache": args.kv_cache_bytes(bytes_per_el=itemsize), "RoPE table": rope}
        if torch.device(cache_device).type == "cpu":
            cpu |= cache
        else:
            check_memory(source, {"weights": n_bytes, "KV cache": cache["KV cache"]},
                         cache_device, MEMORY_HINT)  # fmt: skip
            cpu["RoPE table"] = rope
    total = check_memory(source, cpu, "cpu", MEMORY_HINT)
    log.info("%s: loading about %.2f GB of weights into RAM (%.2f GB in all)", source,
             n_bytes / 1e9, total / 1e9)  # fmt: skip


def release_pages(t: torch.Tensor) -> None:
    """Tell the OS this process is done with the memory-mapped file pages under ``t`` (Linux).

    Only for tensors of ``torch.load(mmap=True)`` that nothing reads any more: once read, their
    pages count in the process's resident memory until unmapped, as GGUF's do
    (``gguf._release_pages``); a quantizing load would otherwise peak at the file's size plus the
    quantized model. Whole pages inside the tensor only; the file cache keeps them, and they
    would be read back from the file if touched again (the mapping is never written).
    """
    libc = _libc()
    if libc is None or t.device.type != "cpu" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    storage = t.untyped_storage()
    start, page = storage.data_ptr(), mmap.PAGESIZE
    lo, hi = -(-start // page) * page, (start + storage.nbytes()) // page * page
    if hi > lo:
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), mmap.MADV_DONTNEED)


def trim_heap() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``; elsewhere nothing).

    Loading one weight at a time frees each tensor read while keeping the smaller result: glibc
    then serves later allocations from the heap's holes, and its resident size only grows
    (measured, int4 load of a 187M-parameter Meta checkpoint: 587 MB peak without, 508 MB with
    a trim after each weight).
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


# ---- tokenizer files beside the weights ----


_TOKENIZER_NAMES = ("tokenizer.model", "original/tokenizer.model", "tokenizer.json",
                    "tokenizer_config.json", "chat_template.jinja")  # fmt: skip


def find_tokenizer_files(ckpt: Checkpoint) -> None:
    """Fill ``ckpt``'s tokenizer fields from the files in its directory (each must be a regular
    file inside it: ``files.checkpoint_file``)."""
    d = ckpt.path
    for name in _TOKENIZER_NAMES:
        if os.path.lexists(d / name):
            checkpoint_file(d, name, CheckpointError)
    found = find_tokenizer_file(d)
    if found is not None and found.name == "tokenizer.model":
        ckpt.tokenizer_model = found
    if (d / "tokenizer.json").is_file():
        ckpt.tokenizer_json = read_json(d / "tokenizer.json", CheckpointError)
    if (d / "tokenizer_config.json").is_file():
        ckpt.tokenizer_config = read_json(d / "tokenizer_config.json", CheckpointError)
    try:
        template = hf_chat_template(d, ckpt.tokenizer_config or {})
    except TokenizerError as e:
        raise CheckpointError(str(e)) from None
    ckpt.chat_template = template or ckpt.chat_template


def tokenizer_for(ckpt: Checkpoint) -> Any:
    """The tokenizer the checkpoint carries: GGUF metadata, else tokenizer.model, else
    tokenizer.json; checked against the model (:func:`check_tokenizer`)."""
    if ckpt.format == "gguf":
        tok = ByteLevelBPETokenizer.from_gguf(str(ckpt.path))
    elif ckpt.tokenizer_model is not None or ckpt.tokenizer_json is not None:
        tok = load_tokenizer(ckpt.path)
    else:
        log.warning(
            "%s: no tokenizer.model or tokenizer.json found: no tokenizer loaded", ckpt.path
        )
        return None
    return check_tokenizer(tok, ckpt.args, str(ckpt.path))


def check_tokenizer(tokenizer: Any, args: ModelArgs, source: str) -> Any:
    """``tokenizer`` if its ids index the model's embedding (n_words <= vocab_size, every special
    id below it); else one line with both numbers, at load time rather than mid-generation."""
    V, n = args.vocab_size, tokenizer.n_words
    if n > V:
        raise CheckpointError(
            f"{source}: tokenizer has {n} tokens but the model's vocab_size is {V}: wrong "
            "tokenizer for this checkpoint?"
        )
    specials = getattr(tokenizer, "special_tokens", {})
    ids = [*specials.values(), tokenizer.bos_id, tokenizer.eos_id, *tokenizer.stop_tokens]
    top = max((i for i in ids if i is not None), default=-1)
    if top >= V:  # the tokenizers check their ids against n_words; this catches the rest
        raise CheckpointError(
            f"{source}: tokenizer uses token id {top}, outside the model's vocab_size {V}"
        )
    return tokenizer


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
