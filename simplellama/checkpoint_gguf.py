"""GGUF files (llama.cpp): metadata -> ``ModelArgs``, (quantized) tensors -> Meta-named float tensors.

Facts this loader relies on (checked by tests against transformers' own GGUF loader):

* ``llama.*`` metadata keys describe the architecture (``embedding_length``, ``block_count``, ...).
* GGUF lists dimensions fastest-first: a weight with ``tensor.shape == [D, F]`` is an (F, D) matrix in
  torch's row-major order. ``gguf.quants.dequantize`` returns the row-major array.
* llama.cpp's ``convert_hf_to_gguf.py`` permutes HF's q/k rows back to Meta's interleaved order, so GGUF
  q/k rows are already in the order our model uses (transformers un-permutes them on load).
* Quantized blocks (Q4_0, Q4_1, Q8_0, K-quants, ...) are dequantized with ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from LogRelay import get_relay

from .checkpoint import Checkpoint, CheckpointError, check_state_dict, log_ram_estimate
from .config import ConfigError, ModelArgs
from .tokenizer_bpe import GGUF_PRE_AS_TRANSFORMERS

__all__ = ["gguf_to_meta_name", "gguf_metadata", "gguf_args", "load_gguf", "gguf_tokenizer_files"]

log = get_relay("simplellama.checkpoint")

_LAYER_NAMES = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_TOP_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}
_DEQUANT_CHUNK = 1 << 22  # values dequantized per step (16 MiB of float32)


def gguf_to_meta_name(name: str) -> str | None:
    """``blk.3.ffn_gate.weight`` -> ``layers.3.feed_forward.w1.weight`` (None if not a Llama weight)."""
    if m := re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name):
        meta = _LAYER_NAMES.get(m.group(2))
        return None if meta is None else f"layers.{m.group(1)}.{meta}.weight"
    if m := re.fullmatch(r"(\w+)\.weight", name):
        meta = _TOP_NAMES.get(m.group(1))
        return None if meta is None else meta + ".weight"
    return None


@functools.cache
def _fast_reader_class() -> type:
    """``gguf.GGUFReader`` with a faster parse of metadata arrays, built on first use (gguf imports lazily).

    The stock reader calls ``_get`` (several numpy calls) for every element of an array field: parsing
    the 49152 tokens + 48900 merges of a Llama 3 style vocabulary takes seconds. This subclass walks
    little-endian arrays with ``struct`` and slices the memory map once per element, producing the same
    ``ReaderField`` parts (tests compare every field with the stock reader). Big-endian files and
    nested arrays take the stock path.
    """
    import gguf

    class FastGGUFReader(gguf.GGUFReader):
        def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
            V = gguf.GGUFValueType
            if raw_type != V.ARRAY or self.byte_order != "I" or sys.byteorder != "little":
                return super()._get_field_parts(orig_offs, raw_type)
            item_type, count = struct.unpack_from("<IQ", self.data, orig_offs)
            scalar = self.gguf_scalar_to_np.get(V(item_type))
            if item_type != V.STRING and scalar is None:  # nested arrays
                return super()._get_field_parts(orig_offs, raw_type)
            parts: list[np.ndarray] = [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)]
            offs, data = orig_offs + 12, self.data.view(np.ndarray)  # plain views: memmap slices are slow
            if item_type == V.STRING:  # (u64 length, bytes) per element: two parts, data is the bytes
                unpack = struct.Struct("<Q").unpack_from
                for _ in range(count):
                    (n,) = unpack(data, offs)
                    parts += (data[offs : offs + 8].view(np.uint64), data[offs + 8 : offs + 8 + n])
                    offs += 8 + n
                idxs = list(range(3, len(parts), 2))
            else:  # one part of one element each, as the stock reader
                size = np.dtype(scalar).itemsize
                values = data[offs : offs + size * count].view(scalar)
                parts += (values[i : i + 1] for i in range(count))
                offs += size * count
                idxs = list(range(2, len(parts)))
            return offs - orig_offs, parts, idxs, [V.ARRAY, V(item_type)]

    return FastGGUFReader


def _reader(path: Path) -> Any:
    try:
        reader = _fast_reader_class()(path)
    except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError, struct.error) as e:
        raise CheckpointError(f"{path}: truncated or corrupt GGUF file ({e})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
            raise CheckpointError(
                f"{path}: truncated GGUF file: tensor {t.name} needs bytes up to {t.data_offset + t.n_bytes}, "
                f"file has {size}"
            )
    return reader


def gguf_metadata(reader: Any) -> dict[str, Any]:
    """All key/value metadata except the (large) tokenizer arrays, as Python values."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and len(field.data) > 1:
            continue
        out[key] = field.contents()
    return out


def gguf_args(meta: dict[str, Any], vocab_size: int, tied: bool, source: str, **overrides: Any) -> ModelArgs:
    """``ModelArgs`` from ``llama.*`` metadata; ``vocab_size`` from token_embd, ``tied`` if output is absent."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{source}: general.architecture: expected 'llama', found {arch!r}")

    def get(key: str, default: Any = KeyError) -> Any:
        if f"llama.{key}" in meta:
            return meta[f"llama.{key}"]
        if default is KeyError:
            raise CheckpointError(f"{source}: metadata key llama.{key} is missing")
        return default

    d: dict[str, Any] = {
        "dim": int(get("embedding_length")),
        "n_layers": int(get("block_count")),
        "n_heads": int(get("attention.head_count")),
        "n_kv_heads": int(get("attention.head_count_kv", get("attention.head_count"))),
        "vocab_size": vocab_size,
        "ffn_hidden_dim": int(get("feed_forward_length")),
        "norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "tie_word_embeddings": tied,
    }
    kind = get("rope.scaling.type", "none")
    if kind == "llama3":
        d["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": float(get("rope.scaling.factor", 8.0)),
            "original_max_position_embeddings": int(get("rope.scaling.original_context_length", 8192)),
        }
    elif kind != "none":
        raise CheckpointError(f"{source}: llama.rope.scaling.type: expected 'none' or 'llama3', found {kind!r}")
    try:
        args = ModelArgs.from_dict(d, source=source, **overrides)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    rope_dim = get("rope.dimension_count", args.head_dim)
    if rope_dim != args.head_dim:
        raise CheckpointError(
            f"{source}: llama.rope.dimension_count: expected head_dim {args.head_dim}, found {rope_dim}"
        )
    log.info("%s: context length %s", source, get("context_length", "unknown"))
    return args


def _dequantize(t: Any, dtype: torch.dtype, source: Path) -> torch.Tensor:
    """One GGUF tensor -> torch tensor of ``dtype`` in row-major shape (GGUF lists dims fastest-first)."""
    from gguf.quants import dequantize

    shape = tuple(int(n) for n in reversed(t.shape))
    out = torch.empty(shape, dtype=dtype)
    rows = t.data.reshape(-1, t.data.shape[-1])  # (rows, stored bytes or values per row)
    flat = out.view(rows.shape[0], -1)  # (rows, values per row)
    # A few rows at a time, written straight into ``out``: no full-size float32 temporaries (peak RAM).
    step = max(1, _DEQUANT_CHUNK // flat.shape[1])
    for i in range(0, rows.shape[0], step):
        try:
            arr = dequantize(rows[i : i + step], t.tensor_type)  # (rows, values per row) float32
        except NotImplementedError:
            raise CheckpointError(
                f"{source}: tensor {t.name} has type {t.tensor_type.name}, "
                f"which gguf {_gguf_version()} cannot dequantize"
            ) from None
        flat[i : i + step] = torch.from_numpy(np.require(arr, np.float32, "W"))  # casts to dtype
    return out


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


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def _rope_scaling_from_freqs(args: ModelArgs, factors: torch.Tensor, source: str) -> ModelArgs:
    """llama.cpp stores Llama 3.1 RoPE scaling as per-frequency divisors (``rope_freqs.weight``): match them."""
    from .rope import apply_llama3_scaling

    exps = torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim
    freqs = 1.0 / (args.rope_theta**exps)  # (Dh/2,)
    for factor in (8.0, 32.0, 16.0, 4.0, 2.0):
        expected = freqs / apply_llama3_scaling(freqs, factor, 1.0, 4.0, 8192)
        if expected.shape == factors.shape and torch.allclose(expected.float(), factors.float(), rtol=1e-3):
            args.use_scaled_rope, args.rope_scaling_factor = True, factor
            log.info("%s: rope_freqs.weight matches llama3 RoPE scaling with factor %g", source, factor)
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
) -> Checkpoint:
    """Read a Llama GGUF file into a Meta-named :class:`Checkpoint` (dequantized to ``dtype``, default fp32).

    ``with_tokenizer`` builds the tokenizer, ``tokenizer_files`` the HF tokenizer.json content (for convert),
    both from the same parsed file (parsing the vocabulary metadata is the slow part of opening a GGUF).
    """
    dtype = torch.float32 if dtype is None else dtype
    reader = _reader(path)
    meta = gguf_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise CheckpointError(f"{path}: tensor token_embd.weight is missing")
    vocab_size = int(tensors["token_embd.weight"].shape[1])
    args = gguf_args(meta, vocab_size, "output.weight" not in tensors, str(path), **overrides)
    n_bytes = sum(int(t.n_elements) for t in reader.tensors) * dtype.itemsize
    log_ram_estimate(str(path), n_bytes)
    sd: dict[str, torch.Tensor] = {}
    with log.busy("dequantizing GGUF tensors", total=len(tensors)) as bar:
        for name, t in tensors.items():
            if name == "rope_freqs.weight":
                args = _rope_scaling_from_freqs(args, _dequantize(t, torch.float32, path), str(path))
            else:
                key = gguf_to_meta_name(name)
                if key is None:
                    raise CheckpointError(f"{path}: unexpected tensor {name!r} (not a Llama weight)")
                sd[key] = _dequantize(t, dtype, path)
            _release_pages(reader, t)
            bar.update()
    check_state_dict(sd, args, str(path))
    ckpt = Checkpoint("gguf", args, sd, chat_template=meta.get("tokenizer.chat_template"), path=path)
    if with_tokenizer:
        from .tokenizer import ByteLevelBPETokenizer

        ckpt.tokenizer = ByteLevelBPETokenizer.from_gguf(reader)
    if tokenizer_files:
        ckpt.chat_template, ckpt.tokenizer_json, ckpt.tokenizer_config = gguf_tokenizer_files(reader)
    return ckpt


# ---------------------------------------------------------------------------------------------
# tokenizer metadata -> Hugging Face tokenizer.json (for convert)
# ---------------------------------------------------------------------------------------------

_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
# Llama 3's split pattern (llama_models/llama3/tokenizer.py: pat_str; HF tokenizer.json "Split" step)
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# llama.cpp pre-tokenizer name (tokenizer.ggml.pre) -> HF pre_tokenizer
_PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt2": _GPT2_BYTE_LEVEL,
    "default": _GPT2_BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _GPT2_BYTE_LEVEL]},
    "llama-bpe": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {**_GPT2_BYTE_LEVEL, "use_regex": False},
        ],
    },
}


def gguf_tokenizer_files(path_or_reader: Any) -> tuple[str | None, dict | None, dict | None]:
    """``(chat_template, tokenizer_json, tokenizer_config)`` built from a GGUF file's tokenizer metadata.

    Only byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``) with a known pre-tokenizer are
    translated; otherwise the json parts are None (logged).
    """
    if isinstance(path_or_reader, (str, os.PathLike)):
        path, reader = Path(path_or_reader), _reader(Path(path_or_reader))
    else:
        path, reader = Path(path_or_reader.data.filename), path_or_reader
    f = reader.fields

    def value(key: str, default: Any = None) -> Any:
        return f[key].contents() if key in f else default

    template = value("tokenizer.chat_template")
    model, pre = value("tokenizer.ggml.model"), value("tokenizer.ggml.pre", "default")
    pre = GGUF_PRE_AS_TRANSFORMERS.get(pre, pre)  # the same reading as ByteLevelBPETokenizer.from_gguf
    if model != "gpt2" or pre not in _PRE_TOKENIZERS:
        log.warning(
            "%s: tokenizer %s/%s cannot be written as tokenizer.json (supported: gpt2 with pre %s)",
            path,
            model,
            pre,
            ", ".join(_PRE_TOKENIZERS),
        )
        return template, None, None
    tokens = value("tokenizer.ggml.tokens")
    types = value("tokenizer.ggml.token_type", [1] * len(tokens))
    merges = value("tokenizer.ggml.merges", [])
    from .tokenizer import bytes_to_unicode

    # 3 = control (special), 4 = user defined (added, not special). Like transformers, a control token
    # spelled outside the byte-level alphabet is taken as an ordinary token (a llama.cpp mislabel).
    alphabet = set(bytes_to_unicode().values())
    special = [i for i, kind in enumerate(types) if kind == 4 or (kind == 3 and set(tokens[i]) <= alphabet)]
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
                "special": types[i] == 3,
            }
            for i in special
        ],
        "normalizer": None,
        "pre_tokenizer": _PRE_TOKENIZERS[pre],
        "post_processor": {**_GPT2_BYTE_LEVEL, "use_regex": True},
        "decoder": dict(_GPT2_BYTE_LEVEL),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": pre == "llama-bpe",
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": list(merges),
        },
    }
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(value("tokenizer.ggml.add_bos_token", False)),
    }
    for name in ("bos", "eos", "unknown", "padding"):
        token_id = value(f"tokenizer.ggml.{name}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            config[{"unknown": "unk_token", "padding": "pad_token"}.get(name, f"{name}_token")] = tokens[token_id]
    if template is not None:
        config["chat_template"] = template
    return template, tok_json, config
