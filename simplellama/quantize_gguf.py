"""GGUF quantized tensors -> the layers of ``quantize.py``, keeping the file's own numbers.

llama.cpp's block formats (``ggml-common.h``; ``gguf.quants`` reads them in numpy): 32 weights a
block, each block a little-endian fp16 ``d`` (and ``m``) followed by the weights::

    Q4_0  d, 16 bytes of nibbles      x = d (q - 8)   -> int4 group 32: scale d, zero 0
    Q4_1  d, m, 16 bytes of nibbles   x = d q + m     -> int4 group 32: scale d, zero m + 8 d
    Q8_0  d, 32 int8                  x = d q         -> Int8GroupLinear (exact, see quantize.py)

Byte j of a Q4 block holds weight j (low nibble) and weight j + 16 (high nibble). The nibbles go
into torch's packed layout as they are; only d and m are rounded, from fp16 to the kernels' bf16
(relative error <= 2^-8). Q8_0 is not requantized for torch's int8 kernel: it takes one scale per
row, so a row's largest block would set the step of all its blocks (error up to max_b d_b / 2
instead of d_b / 2); the int4 kernel over [x, x] keeps each block's d and reads as many bytes.

Other types are dequantized with ``gguf.quants.dequantize`` (a few rows at a time) and quantized
again with our formulas (a second rounding, within ``quantize_int4`` / ``quantize_int8``'s bounds):
Q2_K..Q4_K, Q5_0/Q5_1 and Q4_0/Q4_1 at another group size to int4 (group 32, the K-quants'
sub-block), Q5_K, Q6_K and the rest to int8 per channel (their 5-6 bits would not survive int4).
Float tensors (F32, F16, BF16) stay float under ``mode="auto"``.

Shapes: ``data`` is a tensor's bytes as the gguf reader gives them, (N, bytes per row) uint8; the
matrix is (N, K) row-major (GGUF lists dimensions fastest-first).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .quantize import (
    Int4Linear,
    Int8GroupLinear,
    Int8Linear,
    QuantizeError,
    by_rows,
    quantize_int4,
    quantize_int8,
)

__all__ = ["EXACT_TYPES", "gguf_q4_blocks", "gguf_q8_0_blocks", "gguf_target", "gguf_linear"]

Data = np.ndarray | torch.Tensor

EXACT_TYPES = ("Q4_0", "Q4_1", "Q8_0")  # carried into the packed layouts without dequantizing
_TO_INT4 = ("Q2_K", "Q3_K", "Q4_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
_FLOAT = ("F32", "F16", "BF16")
_ROWS = 256  # rows dequantized per step when requantizing (a multiple of the int4 packing block)


def _type(qtype: object) -> tuple[str, int, int]:
    """(name, weights per block, bytes per block) of a ``GGMLQuantizationType``, name or value."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        t = GGMLQuantizationType[qtype] if isinstance(qtype, str) else GGMLQuantizationType(qtype)
    except (KeyError, ValueError):
        msg = f"GGUF tensor type: expected a GGMLQuantizationType, found {qtype!r}"
        raise QuantizeError(msg) from None
    return (t.name, *GGML_QUANT_SIZES[t])


def _blocks(data: Data, qtype: object, expected: str) -> tuple[torch.Tensor, int]:
    """Bytes (N, row bytes) -> (N, blocks per row, bytes per block) uint8 (a copy), and K."""
    name, block, size = _type(qtype)
    if name not in expected.split(" or "):
        raise QuantizeError(f"GGUF tensor type: expected {expected}, found {name}")
    raw = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.array(data, np.uint8))
    if raw.dtype != torch.uint8 or raw.ndim != 2 or raw.shape[1] % size:
        found = f"{raw.dtype} {tuple(raw.shape)}"
        raise QuantizeError(
            f"GGUF {name} data: expected uint8 (rows, n * {size} bytes), found {found}"
        )
    n_blocks = raw.shape[1] // size
    return raw.reshape(raw.shape[0], n_blocks, size), n_blocks * block


def _fp16(b: torch.Tensor) -> torch.Tensor:
    """(..., 2) little-endian bytes -> (...) float32."""
    return b.contiguous().view(torch.float16).squeeze(-1).float()


def gguf_q4_blocks(
    data: Data, qtype: object, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_0 / Q4_1 bytes -> q (N, K) uint8 in [0, 15], scale and zero (N, K/32) in ``dtype``.

    The int4 group-32 form of :func:`quantize.quantize_int4`: x = (q - 8) * scale + zero.
    """
    name = _type(qtype)[0]
    blocks, K = _blocks(data, qtype, "Q4_0 or Q4_1")
    d = _fp16(blocks[..., 0:2])  # (N, K/32)
    m = _fp16(blocks[..., 2:4]) if name == "Q4_1" else None
    packed = blocks[..., 4:] if name == "Q4_1" else blocks[..., 2:]  # (N, K/32, 16)
    q = torch.cat([packed & 15, packed >> 4], dim=-1)  # (N, K/32, 32): weights 0..15, 16..31
    zero = torch.zeros_like(d) if m is None else m + 8 * d  # d q + m = (q - 8) d + (m + 8 d)
    return q.reshape(-1, K), d.to(dtype), zero.to(dtype)


def gguf_q8_0_blocks(
    data: Data, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 bytes -> q (N, K) int8 and scale (N, K/32) in ``dtype``: x = scale * q per block."""
    blocks, K = _blocks(data, "Q8_0", "Q8_0")
    d = _fp16(blocks[..., 0:2])  # (N, K/32)
    q = blocks[..., 2:].contiguous().view(torch.int8)  # (N, K/32, 32)
    return q.reshape(-1, K), d.to(dtype)


def gguf_linear(
    data: Data,
    qtype: object,
    mode: str = "auto",
    group_size: int = 32,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> nn.Module | None:
    """A quantized layer for one GGUF weight tensor; None keeps it float (float types, "auto").

    Args:
        data: the tensor's bytes, (N, bytes per row) uint8 (``ReaderTensor.data``).
        qtype: its ``GGMLQuantizationType`` (``ReaderTensor.tensor_type``).
        mode: ``"auto"`` (the file's own numbers: Q4_0/Q4_1 -> int4 group 32, Q8_0 -> int8
            groups, other types quantized again as the module docstring says), ``"int4"``,
            ``"int8"``.
        group_size: int4 group size (Q4_0/Q4_1 are carried as they are only at 32).
        device, dtype: where the layer lives and its kernels' activation dtype.
    """
    target = gguf_target(qtype, mode, group_size)
    if target == "float":
        return None
    if target == "q4":
        return Int4Linear.from_quantized(*gguf_q4_blocks(data, qtype, dtype), device=device)
    if target == "q8":
        return Int8GroupLinear.from_int8(*gguf_q8_0_blocks(data, dtype), device=device)
    return _requantize(data, qtype, target, group_size, torch.device(device), dtype)


def gguf_target(qtype: object, mode: str = "auto", group_size: int = 32) -> str:
    """What :func:`gguf_linear` makes of a tensor of type ``qtype`` (loaders size memory by it).

    ``"float"`` (kept float), ``"q4"`` (Q4_0/Q4_1 blocks as an int4 group-32 layer), ``"q8"``
    (Q8_0 blocks as an ``Int8GroupLinear``), ``"int4"`` / ``"int8"`` (dequantized, quantized
    again with ``quantize_int4`` at ``group_size`` / ``quantize_int8``).
    """
    name = _type(qtype)[0]
    if mode not in ("auto", "int4", "int8"):
        raise QuantizeError(f"gguf_linear: mode must be 'auto', 'int4' or 'int8', found {mode!r}")
    if mode == "auto" and name in _FLOAT:
        return "float"
    if name in ("Q4_0", "Q4_1") and mode != "int8" and group_size == 32:
        return "q4"
    if name == "Q8_0" and mode != "int4":
        return "q8"
    return mode if mode != "auto" else ("int4" if name in _TO_INT4 else "int8")


def _requantize(
    data: Data, qtype: object, mode: str, group_size: int, device: torch.device, dtype: torch.dtype
) -> Int4Linear | Int8Linear:
    """Dequantize with gguf ``_ROWS`` rows at a time (no whole float copy), quantize with ours."""
    from gguf.quants import dequantize

    name = _type(qtype)[0]
    rows = data if isinstance(data, np.ndarray) else data.numpy()

    def requantize(i: int, j: int) -> tuple[torch.Tensor, ...]:
        try:
            w = np.require(dequantize(rows[i:j], qtype), np.float32, "W")
        except NotImplementedError:
            raise QuantizeError(f"GGUF tensor type {name}: gguf cannot dequantize it") from None
        w = torch.from_numpy(w)
        return quantize_int4(w, group_size, dtype) if mode == "int4" else quantize_int8(w, dtype)

    merged = by_rows(requantize, rows.shape[0], _ROWS)
    if mode == "int4":
        return Int4Linear.from_quantized(*merged, device=device)
    return Int8Linear(*(t.to(device) for t in merged))
