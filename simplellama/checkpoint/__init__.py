"""Checkpoints: one entry point for Meta dirs, Hugging Face dirs and GGUF files.

Every format is translated once, into Meta's parameter names (the names ``Transformer`` uses), by
the table in ``keys.py``, so ``model.load_state_dict(ckpt.state_dict, strict=True)`` works for all::

    ckpt = load_checkpoint("Llama3.2-1B")      # Meta (meta.py): params.json + consolidated.NN.pth
    ckpt = load_checkpoint("Llama-3.2-1B-hf")  # HF (hf.py): config.json + *.safetensors
    ckpt = load_checkpoint("model.Q4_1.gguf")  # GGUF file (gguf.py)
    model, args = load_model()                 # the embedded SmolLM2-135M GGUF

``common.py`` holds what the formats share; ``sharded.py`` loads one rank's slice for tensor
parallelism (``load_model(path, model_parallel_size=8)`` under torchrun); ``quantized.py`` turns
linear weights into int8 / int4 layers as the readers stream them (``load_model(path,
quantize="int4")``). Every loader refuses
what cannot work before reading weights (``files.py`` confines paths, ``config.py`` checks every
field, ``check_ram`` the memory) and checks each tensor as it reads it (``check_weight``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from LogRelay import get_relay

from ..assets import default_model_path
from ..config import ModelArgs
from ..devices import pick_device
from ..errors import CheckpointError, ParallelError
from ..files import regular_file
from ..model import Transformer
from ..parallel import init_distributed, resolve_model_parallel_size
from ..tokenizer import load_tokenizer
from .common import (
    Checkpoint,
    TensorSink,
    assign_weights,
    check_ram,
    check_state_dict,
    check_tokenizer,
    check_weight,
    find_tokenizer_files,
    model_from_state_dict,
    tokenizer_for,
)
from .gguf import load_gguf, read_gguf_header
from .gguf_writer import check_gguf_target, save_gguf
from .hf import load_hf, read_hf_header, save_hf
from .keys import expected_shapes
from .meta import SHARD_FILE, load_meta, read_meta_header, save_meta
from .quantized import QuantizingSink, check_quantize
from .sharded import check_parallel, load_meta_rank, parallelize

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ModelArgs",
    "detect_format",
    "expected_shapes",
    "check_state_dict",
    "load_checkpoint",
    "read_header",
    "load_model",
    "load_for_inference",
    "model_from_state_dict",
    "assign_weights",
    "load_tokenizer",
    "default_model_path",
    "find_tokenizer_files",
    "tokenizer_for",
    "check_ram",
    "check_weight",
    "check_tokenizer",
    "save_meta",
    "save_hf",
    "save_gguf",
    "convert",
]

log = get_relay("simplellama.checkpoint")


def detect_format(path: str | os.PathLike) -> str:
    """``"meta"`` (params.json + consolidated.*.pth), ``"hf"`` (config.json + *.safetensors) or
    ``"gguf"``."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if not p.is_dir():
        regular_file(p, CheckpointError)  # a named pipe would block the open below
        with open(p, "rb") as f:
            head = f.read(64)
        if head[:4] == b"GGUF":
            return "gguf"
        found = f"a file starting {head[:4]!r}"
        if head.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
            found = "an HTML page (an expired download link?)"
        raise CheckpointError(
            f"{p}: expected a GGUF file (magic b'GGUF') or a checkpoint directory, found {found}"
        )
    names = sorted(x.name for x in p.iterdir())
    shards = any(SHARD_FILE.fullmatch(n) for n in names)
    if "params.json" in names and shards:
        return "meta"
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return "hf"
    if "params.json" in names:
        raise CheckpointError(f"{p}: found params.json but no consolidated.NN.pth weight files")
    if shards:
        raise CheckpointError(
            f"{p}: found consolidated.*.pth but no params.json (Meta checkpoints need both)"
        )
    if "config.json" in names:
        raise CheckpointError(
            f"{p}: found config.json but no *.safetensors weights (.bin is not supported)"
        )
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") or "nothing"
    raise CheckpointError(
        f"{p}: not a checkpoint: expected params.json + consolidated.NN.pth (Meta), config.json + "
        f"*.safetensors (Hugging Face) or a .gguf file; found {shown}"
    )


def load_checkpoint(
    path: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    *,
    with_tokenizer: bool = True,
    tokenizer_files: bool = False,
    cache_device: torch.device | str | None = None,
    sink: TensorSink | None = None,
    **overrides: Any,
) -> Checkpoint:
    """Load any supported checkpoint into a :class:`Checkpoint` with Meta parameter names.

    Args:
        path: Meta/HF directory or GGUF file; None -> the embedded default model.
        dtype: cast weights to this dtype (default: keep the stored dtype; GGUF -> float32).
        with_tokenizer: also load the tokenizer stored with the weights.
        tokenizer_files: for GGUF, also build HF tokenizer.json content
            (``Checkpoint.tokenizer_json``).
        cache_device: the device a KV cache of ``max_batch_size`` x ``max_seq_len`` positions
            will be allocated on: checked to fit with the weights before loading (None: weights
            only).
        sink: receives each weight as it is read and says what the state dict keeps (quantized
            loading, ``quantized.py``); it also sizes the memory check.
        **overrides: ``ModelArgs`` fields that win over the checkpoint's (e.g. ``max_seq_len``).
    """
    path = default_model_path() if path is None else Path(path)
    fmt = detect_format(path)
    log.info("%s: %s checkpoint", path, fmt)
    if fmt == "meta":
        ckpt = load_meta(path, dtype, overrides, cache_device, sink)
    elif fmt == "hf":
        ckpt = load_hf(path, dtype, overrides, cache_device, sink)
    else:
        ckpt = load_gguf(
            path, dtype, overrides, with_tokenizer, tokenizer_files, cache_device, sink
        )
    a = ckpt.args
    log.info(
        "%s: %d layers, dim %d, %d heads (%d kv), vocab %d, rope theta %g, rope scaling %s%s",
        path, a.n_layers, a.dim, a.n_heads, a.n_kv_heads, a.vocab_size, a.rope_theta,
        f"llama3 x{a.rope_scaling_factor:g}" if a.use_scaled_rope else "none",
        ", tied embeddings" if a.tie_word_embeddings else "",
    )  # fmt: skip
    if with_tokenizer and fmt != "gguf":
        ckpt.tokenizer = tokenizer_for(ckpt)
    return ckpt


def read_header(path: str | os.PathLike | None = None, **overrides: Any) -> Checkpoint:
    """A checkpoint as ``load_checkpoint(path)`` would give it, but its ``state_dict`` holds
    ``meta``-device tensors (shape and dtype, no data): read from params.json and memory-mapped
    shards, safetensors headers, or GGUF metadata and tensor infos. Weights are never read, so a
    70B checkpoint is described in RAM the size of its tokenizer."""
    path = default_model_path() if path is None else Path(path)
    fmt = detect_format(path)
    if fmt == "gguf":
        return read_gguf_header(path, overrides)
    ckpt = read_meta_header(path, overrides) if fmt == "meta" else read_hf_header(path, overrides)
    ckpt.tokenizer = tokenizer_for(ckpt)
    return ckpt


def load_for_inference(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    model_parallel_size: int | None = None,
    with_tokenizer: bool = True,
    *,
    quantize: str | None = None,
    group_size: int = 32,
    **overrides: Any,
) -> tuple[Checkpoint, Transformer]:
    """(checkpoint, model on ``device``): what ``Llama.build`` needs, in one or in each of W
    processes.

    The model is built on the ``meta`` device (no memory) and the loaded tensors become its
    parameters, so there is no second copy of the weights. ``model_parallel_size`` (default: the
    world size under torchrun, else 1) > 1 gives this rank's slice (``sharded.py``); the checkpoint
    then carries args, tokenizer and chat template, and an empty ``state_dict``.

    ``quantize``: ``"int8"`` / ``"int4"`` (``group_size`` inputs per scale) quantize every linear
    layer while the weights stream in; ``"auto"`` keeps a GGUF file's Q4_0/Q4_1/Q8_0 blocks packed
    and leaves float checkpoints float; None: float weights (``quantized.py``). The checkpoint's
    ``state_dict`` is then empty: the model holds the weights.
    """
    mode = check_quantize(quantize, group_size)
    W = resolve_model_parallel_size(model_parallel_size)
    path = default_model_path() if path is None else Path(path)
    if mode == "auto" and (W > 1 or detect_format(path) != "gguf"):
        why = "a float checkpoint" if W == 1 else f"model_parallel_size {W} splits float weights"
        log.info("%s: quantize='auto': %s, the weights stay float", path, why)
        mode = None
    if mode is not None and W > 1:
        raise ParallelError(
            f"quantize={mode!r} with model_parallel_size {W}: the parallel layers split float "
            "weights, packed int8/int4 ones cannot be sliced per rank; use one process or "
            "quantize=None"
        )
    if W == 1:
        device = pick_device(device)
        if mode is not None:
            sink = QuantizingSink(mode, group_size, device, dtype)
            ckpt = load_checkpoint(path, dtype, with_tokenizer=with_tokenizer, cache_device=device,
                                   sink=sink, **overrides)  # fmt: skip
            return ckpt, sink.build_model(ckpt, device)
        ckpt = load_checkpoint(
            path, dtype, with_tokenizer=with_tokenizer, cache_device=device, **overrides
        )
        return ckpt, model_from_state_dict(Transformer, ckpt.args, ckpt.state_dict, device)
    device = pick_device(device)  # under torchrun "cuda" is this rank's GPU
    W, r = init_distributed(model_parallel_size, device)
    fmt = detect_format(path)
    if fmt == "meta":
        return load_meta_rank(path, W, r, device, dtype, overrides, with_tokenizer)
    log.info("rank %d: %s is a %s checkpoint: loading it whole and keeping 1/%d", r, path, fmt, W)
    ckpt = load_checkpoint(path, dtype, with_tokenizer=with_tokenizer, **overrides)
    check_parallel(ckpt.args, W)
    model = model_from_state_dict(Transformer, ckpt.args, ckpt.state_dict, "cpu")
    ckpt.state_dict = {}
    return ckpt, parallelize(model, W, r).to(device).eval()


def load_model(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    model_parallel_size: int | None = None,
    *,
    quantize: str | None = None,
    group_size: int = 32,
    **arg_overrides: Any,
) -> tuple[Transformer, ModelArgs]:
    """``(Transformer, ModelArgs)`` of a checkpoint (see :func:`load_for_inference`, also for
    ``quantize`` and ``group_size``); no tokenizer.

    Under torchrun with ``model_parallel_size`` > 1, ``forward`` returns full logits on every rank.
    """
    ckpt, model = load_for_inference(
        path, device, dtype, model_parallel_size, False,
        quantize=quantize, group_size=group_size, **arg_overrides,
    )  # fmt: skip
    return model, ckpt.args


def convert(
    src: str | os.PathLike | None,
    dst: str | os.PathLike,
    to: str = "meta",
    dtype: torch.dtype | None = None,
    outtype: str | None = None,
) -> Path:
    """Convert any readable checkpoint (Meta, HF, GGUF) to ``to`` = ``"meta"``, ``"hf"`` or
    ``"gguf"`` (``outtype`` F32, F16, Q8_0 or Q4_0; default F16, as llama.cpp's converter)."""
    if to not in ("meta", "hf", "gguf"):
        raise CheckpointError(f"convert: to: expected 'meta', 'hf' or 'gguf', found {to!r}")
    if outtype is not None and to != "gguf":
        raise CheckpointError(
            f"convert: outtype {outtype!r} applies to to='gguf' only, found {to!r}"
        )
    if to == "gguf":  # bad arguments fail before a large checkpoint is read
        outtype = check_gguf_target(dst, outtype or "F16")
    ckpt = load_checkpoint(src, dtype=dtype, with_tokenizer=False, tokenizer_files=to != "gguf")
    if to == "gguf":
        return save_gguf(ckpt, dst, outtype)
    return save_meta(ckpt, dst) if to == "meta" else save_hf(ckpt, dst)
