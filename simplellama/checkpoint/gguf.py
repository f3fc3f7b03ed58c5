"""GGUF files (llama.cpp): metadata -> ``ModelArgs``, (quantized) tensors -> Meta-named float
tensors.

Facts this loader relies on (checked by tests against transformers' own GGUF loader):

* ``llama.*`` metadata keys describe the architecture (``embedding_length``, ``block_count``, ...).
* GGUF lists dimensions fastest-first: a weight with ``tensor.shape == [D, F]`` is an (F, D)
  matrix in torch's row-major order. ``gguf.quants.dequantize`` returns the row-major array.
* llama.cpp's ``convert_hf_to_gguf.py`` permutes HF's q/k rows back to Meta's interleaved order,
  so GGUF q/k rows are already in the order our model uses (transformers un-permutes them).
* Quantized blocks (Q4_0, Q4_1, Q8_0, K-quants, ...) are dequantized with
  ``gguf.quants.dequantize``.

Files are opened by ``gguf_reader.open_gguf`` (bounded, one-line errors).
"""

from __future__ import annotations

import functools
import mmap
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, Keys, quants

from LogRelay import get_relay

from ..config import ModelArgs
from ..errors import CheckpointError, ModelArgsError
from ..gguf_reader import FastGGUFReader, gguf_field, gguf_metadata, open_gguf
from ..rope import apply_llama3_scaling
from ..tokenizer import ByteLevelBPETokenizer
from ..tokenizer.checks import gguf_vocab
from ..tokenizer.rules import (
    GGUF_PRE_AS_TRANSFORMERS,
    PRETOKENIZERS,
    gguf_token_kinds,
    hf_pre_tokenizer,
)
from .common import (
    Checkpoint,
    RawBlocks,
    TensorSink,
    check_ram,
    check_state_dict,
    check_tokenizer,
    check_weight,
)
from .keys import ROPE_FREQS_GGUF, TOP_WEIGHTS, gguf_to_meta_name

__all__ = [
    "FastGGUFReader",  # defined in ..gguf_reader (the tokenizer reads GGUF too); imported from here
    "gguf_metadata",
    "gguf_args",
    "load_gguf",
    "read_gguf_header",
    "gguf_tokenizer_files",
]

log = get_relay("simplellama.checkpoint")

_DEQUANT_CHUNK = 1 << 20  # values dequantized per step (4 MiB of float32, and gguf temporaries)
_Q = GGMLQuantizationType
_INT_TYPES = (_Q.I8, _Q.I16, _Q.I32, _Q.I64)  # integer tensors are not weights


def gguf_args(
    meta: dict[str, Any], vocab_size: int, tied: bool, source: str, **overrides: Any
) -> ModelArgs:
    """``ModelArgs`` from ``llama.*`` metadata; ``vocab_size`` from token_embd, ``tied`` if output
    is absent."""
    arch = meta.get(Keys.General.ARCHITECTURE)
    if arch != "llama":
        raise CheckpointError(
            f"{source}: {Keys.General.ARCHITECTURE}: expected 'llama', found {arch!r}"
        )

    def get(key: str, default: Any = KeyError) -> Any:
        key = key.format(arch=arch)  # gguf.Keys spell per-architecture keys as "{arch}.block_count"
        if key in meta:
            return meta[key]
        if default is KeyError:
            raise CheckpointError(f"{source}: metadata key {key} is missing")
        return default

    LLM, Att, Rope = Keys.LLM, Keys.Attention, Keys.Rope
    keys = {  # ModelArgs field -> metadata key (values are checked by ModelArgs.from_dict)
        "dim": LLM.EMBEDDING_LENGTH, "n_layers": LLM.BLOCK_COUNT, "n_heads": Att.HEAD_COUNT,
        "n_kv_heads": Att.HEAD_COUNT_KV, "ffn_hidden_dim": LLM.FEED_FORWARD_LENGTH,
        "norm_eps": Att.LAYERNORM_RMS_EPS, "rope_theta": Rope.FREQ_BASE,
        "rope_scaling_factor": Rope.SCALING_FACTOR,
        "rope_original_max_seq_len": Rope.SCALING_ORIG_CTX_LEN,
    }  # fmt: skip
    names = {field: key.format(arch=arch) for field, key in keys.items()}
    d: dict[str, Any] = {
        "dim": get(LLM.EMBEDDING_LENGTH),
        "n_layers": get(LLM.BLOCK_COUNT),
        "n_heads": get(Att.HEAD_COUNT),
        "n_kv_heads": get(Att.HEAD_COUNT_KV, get(Att.HEAD_COUNT)),
        "vocab_size": vocab_size,
        "ffn_hidden_dim": get(LLM.FEED_FORWARD_LENGTH),
        "norm_eps": get(Att.LAYERNORM_RMS_EPS, 1e-5),
        "rope_theta": get(Rope.FREQ_BASE, 10000.0),
        "tie_word_embeddings": tied,
    }
    kind = get(Rope.SCALING_TYPE, "none")
    if kind == "llama3":
        d["use_scaled_rope"] = True
        d["rope_scaling_factor"] = get(Rope.SCALING_FACTOR, 8.0)
        d["rope_original_max_seq_len"] = get(Rope.SCALING_ORIG_CTX_LEN, 8192)
    elif kind != "none":
        key = Rope.SCALING_TYPE.format(arch=arch)
        raise CheckpointError(f"{source}: {key}: expected 'none' or 'llama3', found {kind!r}")
    try:
        args = ModelArgs.from_dict(d, source=source, names=names, **overrides)
    except ModelArgsError as e:
        raise CheckpointError(str(e)) from None
    rope_dim = get(Rope.DIMENSION_COUNT, args.head_dim)
    if rope_dim != args.head_dim:
        key = Rope.DIMENSION_COUNT.format(arch=arch)
        raise CheckpointError(
            f"{source}: {key}: expected head_dim {args.head_dim}, found {rope_dim}"
        )
    log.info("%s: context length %s", source, get(LLM.CONTEXT_LENGTH, "unknown"))
    return args


def _dequantize(t: Any, dtype: torch.dtype, source: Path) -> torch.Tensor:
    """One GGUF tensor -> torch tensor of ``dtype`` in row-major shape (GGUF lists dims
    fastest-first)."""
    shape = tuple(int(n) for n in reversed(t.shape))
    out = torch.empty(shape, dtype=dtype)
    rows = t.data.reshape(-1, t.data.shape[-1])  # (rows, stored bytes or values per row)
    flat = out.view(rows.shape[0], -1)  # (rows, values per row)
    # A few rows at a time, written straight into ``out``: no full-size float32 temporaries (peak
    # RAM).
    step = max(1, _DEQUANT_CHUNK // flat.shape[1])
    for i in range(0, rows.shape[0], step):
        try:  # corrupt scales may overflow: the values are checked afterwards (check_weight)
            with np.errstate(all="ignore"):
                arr = quants.dequantize(rows[i : i + step], t.tensor_type)  # (rows, values) f32
        except NotImplementedError:
            raise CheckpointError(
                f"{source}: tensor {t.name} has type {t.tensor_type.name}, "
                f"which gguf {version('gguf')} cannot dequantize"
            ) from None
        flat[i : i + step] = torch.from_numpy(np.require(arr, np.float32, "W"))  # casts to dtype
    return out


def _checked(t: Any, source: Path, dtype: torch.dtype) -> torch.Tensor:
    """``_dequantize`` then ``check_weight``: a float weight as every reader gives it."""
    return check_weight(_dequantize(t, dtype, source), t.name, str(source))


def _release_pages(reader: Any, t: Any) -> None:
    """Tell the OS we are done with tensor ``t``'s bytes of the memory-mapped file.

    The mapped file's pages count in the process's resident memory once read; dropping them after
    each tensor keeps peak RAM at about the dequantized weights (they stay in the OS file cache).
    """
    mm = getattr(reader.data, "_mmap", None)  # np.memmap's mmap.mmap (no public accessor)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = t.data_offset // mmap.PAGESIZE * mmap.PAGESIZE
    mm.madvise(mmap.MADV_DONTNEED, start, min(t.data_offset + t.n_bytes, len(mm)) - start)


def _rope_scaling_from_freqs(args: ModelArgs, factors: torch.Tensor, source: str) -> ModelArgs:
    """llama.cpp stores Llama 3.1 RoPE scaling as per-frequency divisors (``rope_freqs.weight``):
    match them."""
    exps = torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim
    freqs = 1.0 / (args.rope_theta**exps)  # (Dh/2,)
    for factor in (8.0, 32.0, 16.0, 4.0, 2.0):
        expected = freqs / apply_llama3_scaling(freqs, factor, 1.0, 4.0, 8192)
        if expected.shape == factors.shape and torch.allclose(
            expected.float(), factors.float(), rtol=1e-3
        ):
            args.use_scaled_rope, args.rope_scaling_factor = True, factor
            log.info(
                "%s: rope_freqs.weight matches llama3 RoPE scaling with factor %g", source, factor
            )
            return args
    raise CheckpointError(
        f"{source}: rope_freqs.weight does not match llama3 RoPE scaling (factor 2..32, "
        "low 1, high 4, original context 8192)"
    )


def load_gguf(
    path: Path,
    dtype: torch.dtype | None,
    overrides: dict[str, Any],
    with_tokenizer: bool = False,
    tokenizer_files: bool = False,
    cache_device: torch.device | str | None = None,
    sink: TensorSink | None = None,
) -> Checkpoint:
    """Read a Llama GGUF file into a Meta-named :class:`Checkpoint` (dequantized to ``dtype``,
    default fp32).

    ``with_tokenizer`` builds the tokenizer, ``tokenizer_files`` the HF tokenizer.json content (for
    convert), both from the same parsed file (parsing the vocabulary metadata is the slow part of
    opening a GGUF). ``cache_device``: see ``check_ram``. ``sink``: receives each weight's
    :class:`RawBlocks` instead of its dequantized tensor (``TensorSink``).
    """
    dtype = torch.float32 if dtype is None else dtype
    return _read(path, dtype, overrides, with_tokenizer, tokenizer_files, False, cache_device, sink)


def read_gguf_header(path: Path, overrides: dict[str, Any]) -> Checkpoint:
    """A GGUF file's args, tokenizer and weights as ``meta``-device float32 tensors (what
    ``load_gguf`` would give), from its metadata and tensor infos: no weight is read or
    dequantized."""
    return _read(path, torch.float32, overrides, True, False, header_only=True)


def _read(
    path: Path,
    dtype: torch.dtype,
    overrides: dict[str, Any],
    with_tokenizer: bool,
    tokenizer_files: bool,
    header_only: bool,
    cache_device: torch.device | str | None = None,
    sink: TensorSink | None = None,
) -> Checkpoint:
    reader = open_gguf(path, CheckpointError)
    meta = gguf_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    embd, output = (TOP_WEIGHTS[m].gguf + ".weight" for m in ("tok_embeddings", "output"))
    if embd not in tensors:
        raise CheckpointError(f"{path}: tensor {embd} is missing")
    if len(tensors[embd].shape) != 2:
        found = tuple(int(n) for n in tensors[embd].shape)
        raise CheckpointError(f"{path}: tensor {embd}: expected 2 dimensions, found {found}")
    vocab_size = int(tensors[embd].shape[1])
    args = gguf_args(meta, vocab_size, output not in tensors, str(path), **overrides)
    template = meta.get(Keys.Tokenizer.CHAT_TEMPLATE)
    if template is not None and not isinstance(template, str):
        found = type(template).__name__
        raise CheckpointError(
            f"{path}: {Keys.Tokenizer.CHAT_TEMPLATE}: expected text, found {found}"
        )
    if sink is not None:
        stored = {gguf_to_meta_name(n): t.tensor_type.name for n, t in tensors.items()}
        sink.check_ram(str(path), args, cache_device, dtype.itemsize, stored)
    elif not header_only:
        n_bytes = sum(int(t.n_elements) for t in reader.tensors) * dtype.itemsize
        check_ram(str(path), n_bytes, args, cache_device, dtype.itemsize)
    sd: dict[str, torch.Tensor] = {}
    with log.busy("reading GGUF tensors", total=len(tensors), progress=not header_only) as bar:
        for name, t in tensors.items():
            if t.tensor_type in _INT_TYPES:
                found = t.tensor_type.name
                raise CheckpointError(
                    f"{path}: {name}: expected floating-point weights, found {found}"
                )
            if name == ROPE_FREQS_GGUF:  # (Dh/2,) divisors: tiny, read even for the header
                args = _rope_scaling_from_freqs(
                    args, _dequantize(t, torch.float32, path), str(path)
                )
            elif (key := gguf_to_meta_name(name)) is None:
                raise CheckpointError(f"{path}: unexpected tensor {name!r} (not a Llama weight)")
            elif header_only:
                sd[key] = torch.empty(
                    tuple(int(n) for n in reversed(t.shape)), dtype=dtype, device="meta"
                )
            elif sink is not None:
                read = functools.partial(_checked, t, path)
                sd[key] = sink(key, RawBlocks(name, t.data, t.tensor_type, read))
                _release_pages(reader, t)
            else:
                sd[key] = _checked(t, path, dtype)
                _release_pages(reader, t)
            bar.update()
    check_state_dict(sd, args, str(path))
    ckpt = Checkpoint("gguf", args, sd, chat_template=template, path=path)
    if with_tokenizer:
        ckpt.tokenizer = check_tokenizer(ByteLevelBPETokenizer.from_gguf(reader), args, str(path))
    if tokenizer_files:
        ckpt.chat_template, ckpt.tokenizer_json, ckpt.tokenizer_config = gguf_tokenizer_files(
            reader
        )
    return ckpt


# ---------------------------------------------------------------------------------------------
# tokenizer metadata -> Hugging Face tokenizer.json (for convert)
# ---------------------------------------------------------------------------------------------


def gguf_tokenizer_files(path_or_reader: Any) -> tuple[str | None, dict | None, dict | None]:
    """``(chat_template, tokenizer_json, tokenizer_config)`` built from a GGUF file's tokenizer
    metadata.

    Only byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``) with a known pre-tokenizer
    are translated (the rules of ``tokenizer/rules.py``); otherwise the json parts are None
    (logged).
    """
    if isinstance(path_or_reader, (str, os.PathLike)):
        path, reader = Path(path_or_reader), open_gguf(path_or_reader, CheckpointError)
    else:
        path, reader = Path(path_or_reader.data.filename), path_or_reader
    K = Keys.Tokenizer

    def value(key: str, default: Any = None) -> Any:
        return gguf_field(reader, key, default)

    template = value(K.CHAT_TEMPLATE)
    model, pre = value(K.MODEL), value(K.PRE, "default")
    # the same reading as ByteLevelBPETokenizer.from_gguf
    pre = GGUF_PRE_AS_TRANSFORMERS.get(pre, pre) if isinstance(pre, str) else pre
    if model != "gpt2" or not isinstance(pre, str) or pre not in PRETOKENIZERS:
        known = ", ".join(PRETOKENIZERS)
        why = "cannot be written as tokenizer.json (supported: gpt2 with pre %s)"
        log.warning("%s: tokenizer %s/%s " + why, path, model, pre, known)
        return template, None, None
    tokens, types, merges = gguf_vocab(reader, str(path))  # checked
    special, added = gguf_token_kinds(tokens, types)
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    tok_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": tokens[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": tokens[i] in special,
            }
            for i in sorted({*special.values(), *added.values()})
        ],  # fmt: skip
        "normalizer": None,
        "pre_tokenizer": hf_pre_tokenizer(PRETOKENIZERS[pre]),
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": PRETOKENIZERS[pre].ignore_merges,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [" ".join(m) for m in merges],
        },
    }  # fmt: skip
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(value(K.ADD_BOS, False)),
    }
    for key, name in ((K.BOS_ID, "bos_token"), (K.EOS_ID, "eos_token"), (K.UNK_ID, "unk_token"),
                      (K.PAD_ID, "pad_token")):  # fmt: skip
        token_id = value(key)
        if isinstance(token_id, int) and 0 <= token_id < len(tokens):
            config[name] = tokens[token_id]
    if template is not None:
        config["chat_template"] = template
    return template, tok_json, config
