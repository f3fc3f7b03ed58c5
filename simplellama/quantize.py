"""Weight-only int8 / int4 linear layers: weights kept packed, torch's packed kernels run them.

A decode step reads every weight once per token, so on a CPU its speed is set by bytes per weight:
fp32 4, bf16 2, int8 1 (+ a scale per row), int4 0.5 (+ a scale and a zero per group of g inputs).
The layers here hold the quantized weight and call torch's kernels, which dequantize in registers::

    int8, per output channel, symmetric (absmax):
        scale[n] = max_k |w[n, k]| / 127   q = round(w / scale) in [-127, 127]   w ~ scale[n] q
    int4, per group of g = 32/64/128/256 inputs, asymmetric (min/max):
        scale = (max - min) / 15   q = round((w - min) / scale) in [0, 15]  w ~ (q - 8) scale + zero

with zero = min + 8 scale, the form torch's int4 kernels read (``int4mm_kernel.cpp`` maps a nibble
to q - 8 in [-8, 7], then ``(q - 8) * scale + zero``; gpt-fast's ``quantize.py`` does the same).
Scales are stored in the kernels' activation dtype (bf16), rounded up so the range still fits, and
``dequantize`` reads exactly the stored numbers: the plain path (dequantize, then ``F.linear``) is
the reference the tests hold the kernels to. Kernels (``torch.ops.aten``)::

    _weight_int8pack_mm(x (M, K), q (N, K) int8, scale (N,))             CPU (CUDA where built)
    _convert_weight_to_int4pack_for_cpu(q (N, K) int32, 1) -> (N, K/2) uint8       CPU
    _weight_int4pack_mm_for_cpu(x, packed, g, scale_and_zero (K/g, N, 2))          CPU
    _convert_weight_to_int4pack(nibbles (N, K/2), tiles), _weight_int4pack_mm      CUDA

The packed int4 layout depends on the device and on the CPU's vector width: never save it, pack
at load time (a layer moved to another device type repacks itself).

Which path runs: up to ``kernel_rows`` rows per call (``KERNEL_ROWS``) the packed kernel on bf16
activations (on fp32 ones torch falls back to a scalar loop, 10-30x slower), above that dequantize
then ``F.linear`` in ``matmul_dtype``: bf16 where the CPU has bf16 dot products (AVX512_BF16, AMX),
fp32 elsewhere (torch emulates bf16 matmuls there: 6x slower prefill measured on an AVX2 machine).
``benchmarks/quantize_kernels.py`` on an AMD EPYC (Zen 4, AVX512_BF16), torch 2.13, 1 thread, µs::

    weight (N x K)      rows  F.linear fp32  bf16   int8 kernel  dequant   int4 kernel  dequant
    1536 x 576 SmolLM2     1             70    81            60      297            62      813
                          16            383   193           401      432           351     1122
                          64           1206   570          1530      814          1364     1372
                         128           2353  1080          3051     1365          2690     1894
    8192 x 2048 1B FFN     1           4346  3458          1371     5206           949    17217
                         128          52580 21140         58624    24359         50538    36373

Shapes: M rows (B*T), K input features, N output features, g group size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from LogRelay import get_relay

from .errors import SimpleLlamaError

__all__ = [
    "QuantizeError",
    "MODES",
    "GROUP_SIZES",
    "KERNEL_ROWS",
    "quantize_int8",
    "quantize_int4",
    "dequantize_int8",
    "dequantize_int4",
    "pack_int4",
    "by_rows",
    "matmul_dtype",
    "Int8Linear",
    "Int4Linear",
    "Int8GroupLinear",
    "QuantEmbedding",
    "quantize_linear",
    "quantize_model",
]

log = get_relay("simplellama.quantize")

Device = torch.device | str | None
Tensor = torch.Tensor

MODES = ("int8", "int4")
GROUP_SIZES = (32, 64, 128, 256)  # what torch's int4 kernels accept
# Calls with at most this many rows run the packed kernel (decode), larger ones dequantize
# (prefill): the crossovers measured above; a layer's ``kernel_rows`` can be set.
KERNEL_ROWS = {"int8": 16, "int4": 64}
_CHUNK = 1 << 20  # weights quantized per step: float32/int32 temporaries of a few MiB
_SLICE = 1 << 19  # weights dequantized per step of the prefill path (2 MiB of fp32: in cache)
_aten = torch.ops.aten


class QuantizeError(SimpleLlamaError):
    """A weight or model cannot be quantized as asked; names the argument, expected vs found."""


# ---------------------------------------------------------------------------------------------
# the formulas (plain tensors)
# ---------------------------------------------------------------------------------------------


def quantize_int8(w: Tensor, dtype: torch.dtype = torch.bfloat16) -> tuple[Tensor, Tensor]:
    """w (N, K) -> q (N, K) int8 in [-127, 127], scale (N,) in ``dtype``: w ~ scale[:, None] * q.

    The scale is rounded *up* to ``dtype`` (inflated by one ulp first), so max |w| / scale <= 127,
    no weight clips and |w - scale * q| <= scale / 2 for every weight.
    """
    w = w.float()
    absmax = w.abs().amax(dim=1)  # (N,)
    _check_finite(absmax, "quantize_int8")
    scale = (absmax / 127 * (1 + torch.finfo(dtype).eps)).to(dtype)
    scale = scale.clamp(min=torch.finfo(dtype).tiny)
    q = torch.round(w / scale.float()[:, None]).clamp(-127, 127)  # (N, K)
    return q.to(torch.int8), scale


def dequantize_int8(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """q (N, K) int8, scale (N,) -> w (N, K) = scale[:, None] * q in ``dtype``."""
    return q.to(dtype) * scale.to(dtype)[:, None]


def quantize_int4(
    w: Tensor, group_size: int = 32, dtype: torch.dtype = torch.bfloat16
) -> tuple[Tensor, Tensor, Tensor]:
    """w (N, K) -> q (N, K) uint8 in [0, 15], scale, zero (N, K/g): w ~ (q - 8) * scale + zero.

    Per group of g inputs: scale = (max - min) / 15 rounded up to ``dtype``, zero = min + 8 scale
    rounded to nearest. q is computed against the stored numbers, so |w - w~| <= scale / 2 plus
    zero's rounding: at most scale / 2 + 2^-8 |zero| in bf16.
    """
    N, K = w.shape
    _check_group(K, group_size, "quantize_int4")
    groups = w.float().reshape(N, K // group_size, group_size)  # (N, K/g, g)
    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, K/g)
    _check_finite(hi - lo, "quantize_int4")
    scale = ((hi - lo) / 15 * (1 + torch.finfo(dtype).eps)).to(dtype)
    scale = scale.clamp(min=torch.finfo(dtype).tiny)
    zero = (lo + 8 * scale.float()).to(dtype)
    q = torch.round((groups - zero.float()[..., None]) / scale.float()[..., None]) + 8
    return q.clamp(0, 15).to(torch.uint8).reshape(N, K), scale, zero


def dequantize_int4(
    q: Tensor, scale: Tensor, zero: Tensor, dtype: torch.dtype = torch.float32
) -> Tensor:
    """q (N, K) in [0, 15], scale, zero (N, K/g) -> w (N, K) = (q - 8) * scale + zero per group."""
    N, K = q.shape
    g = K // scale.shape[1]
    w = q.reshape(N, K // g, g).to(dtype) - 8  # (N, K/g, g)
    return (w * scale.to(dtype)[..., None] + zero.to(dtype)[..., None]).reshape(N, K)


def _check_finite(per_row: Tensor, where: str) -> None:
    bad = (~torch.isfinite(per_row)).nonzero()
    if len(bad):
        raise QuantizeError(f"{where}: row {int(bad[0, 0])} has a non-finite weight (inf or nan)")


def _check_group(K: int, group_size: int, where: str) -> None:
    if group_size not in GROUP_SIZES:
        raise QuantizeError(f"{where}: group_size must be one of {GROUP_SIZES}, found {group_size}")
    if K % group_size:
        raise QuantizeError(
            f"{where}: in_features {K} is not a multiple of group_size {group_size}"
        )


# ---------------------------------------------------------------------------------------------
# int4 packing: torch's layouts
# ---------------------------------------------------------------------------------------------


def pack_int4(q: Tensor, device: Device) -> Tensor:
    """q (N, K) in [0, 15] -> the packed weight torch's int4 kernel reads on ``device``.

    CPU: ``_convert_weight_to_int4pack_for_cpu`` packs blocks of rows independently, so packing
    chunks of 64-multiple rows and concatenating gives the same tensor (and a small int32
    temporary). CUDA: two nibbles per byte along K, the even k in the high nibble (``int4mm.cu``),
    then tinygemm's tiles with as many inner k-tiles (8, 4 or 2) as K allows.
    """
    device = torch.device(device)
    N, K = q.shape
    if device.type == "cuda":
        q = q.to(device=device, dtype=torch.uint8)
        nibbles = (q[:, 0::2] << 4) | q[:, 1::2]  # (N, K/2)
        tiles = next(t for t in (8, 4, 2) if K % (16 * t) == 0)
        return _aten._convert_weight_to_int4pack(nibbles.contiguous(), tiles)
    rows = max(64, _CHUNK // K // 64 * 64)

    def pack(i: int, j: int) -> tuple[Tensor]:
        return (_aten._convert_weight_to_int4pack_for_cpu(q[i:j].to(device, torch.int32), 1),)

    return by_rows(pack, N, rows)[0]  # (N, K/2)


def by_rows(fn: Callable[[int, int], tuple[Tensor, ...]], N: int, step: int) -> tuple[Tensor, ...]:
    """Run ``fn(start, stop)`` over row chunks of ``step``, its results written into whole tensors
    allocated at the first chunk: a list of parts joined at the end interleaves kept and freed
    blocks on the heap, which then cannot shrink (measured: loading peaked 3x the layers' bytes).
    """
    out: tuple[Tensor, ...] = ()
    for i in range(0, N, step):
        part = fn(i, min(i + step, N))
        if not out:
            out = tuple(p.new_empty((N, *p.shape[1:])) for p in part)
        for o, p in zip(out, part):
            o[i : i + len(p)] = p
    return out


@functools.cache
def _cpu_int4_layout() -> tuple[int, str] | None:
    """How this CPU's ``_convert_weight_to_int4pack_for_cpu`` orders nibbles: (block rows, style).

    ``int4mm_kernel.cpp``: rows go in blocks of BN = 4 x (floats per vector register): 64 with
    AVX-512, 32 with AVX2, 16 on 128-bit NEON. A block is stored k-major, BN/2 bytes per k; byte j
    holds rows j and j + BN/2 ("halves": AVX-512, AVX2) or rows 2j and 2j + 1 ("pairs": other
    builds and a last, partial block). Found by packing a probe, not by CPU name; None if unknown.
    """
    probe = torch.randint(0, 16, (144, 32), generator=torch.Generator().manual_seed(0))
    probe = probe.to(torch.uint8)
    packed = pack_int4(probe, "cpu")
    for layout in ((64, "halves"), (32, "halves"), (32, "pairs"), (16, "pairs")):
        if torch.equal(_unpack_cpu(packed, 144, 32, layout), probe.T):
            return layout
    log.warning("unknown int4 CPU packing layout: int4 prefill unpacks with the kernel (slow)")
    return None


def _unpack_cpu(packed: Tensor, N: int, K: int, layout: tuple[int, str]) -> Tensor:
    """The CPU packed weight (N, K/2) -> q transposed, (K, N) uint8 (k-major, as it is stored)."""
    bn, style = layout
    full = N // bn * bn
    parts = []
    if full:
        blocks = packed[:full].reshape(full // bn, K, bn // 2).transpose(0, 1)  # (K, N/BN, BN/2)
        nibbles = (blocks & 15, blocks >> 4)  # low, high
        dim = 2 if style == "halves" else 3
        parts.append(torch.stack(nibbles, dim=dim).reshape(K, full))
    if N > full:  # a partial block: adjacent rows share a byte
        tail = packed[full:].reshape(K, (N - full) // 2)
        parts.append(torch.stack((tail & 15, tail >> 4), dim=2).reshape(K, N - full))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (K, N)


def matmul_dtype(device: Device) -> torch.dtype:
    """dtype of the dequantize-then-matmul path: bf16 on CUDA and on CPUs with bf16 dot products."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return torch.bfloat16 if device.type == "cpu" and native else torch.float32


def _has_kernel(op: str, device: torch.device) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", device.type.upper())


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------


class _QuantLinear(nn.Module):
    """Shared by the layers: ``forward`` picks the packed kernel or dequantize-then-matmul."""

    in_features: int
    out_features: int
    kernel_rows: float  # calls with at most this many rows run the packed kernel

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) -> (..., N) in x's dtype."""
        rows = x.numel() // x.shape[-1]
        return self.kernel(x) if rows <= self.kernel_rows else self.dequantized(x)

    def dequantized(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The plain path: dequantize to ``dtype`` (default ``matmul_dtype``), then ``F.linear``.

        In slices of 64-multiple output rows of about ``_SLICE`` weights: the temporaries of a
        whole large weight fall out of the caches (2x slower measured for SmolLM2's output layer).
        """
        dtype = matmul_dtype(x.device) if dtype is None else dtype
        x2, N = x.to(dtype), self.out_features
        step = max(64, _SLICE // self.in_features // 64 * 64)
        parts = [self._dequantized_rows(x2, n, min(n + step, N)) for n in range(0, N, step)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).to(x.dtype)

    def _dequantized_rows(self, x: Tensor, start: int, stop: int) -> Tensor:
        return F.linear(x, self.dequantize(x.dtype, start, stop))  # (..., stop - start)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        # model.to(dtype) changes the activations' dtype, not the stored scales the kernels read
        dtypes = {name: b.dtype for name, b in self._buffers.items()}
        super()._apply(fn, recurse)
        for name, dtype in dtypes.items():
            self._buffers[name] = self._buffers[name].to(dtype)
        return self


class Int8Linear(_QuantLinear):
    """Linear layer with int8 weights, one scale per output channel: y = (x @ q^T) * scale."""

    def __init__(self, q: Tensor, scale: Tensor) -> None:
        super().__init__()
        N, K = q.shape
        if q.dtype != torch.int8 or scale.shape != (N,):
            found = f"{q.dtype} {tuple(q.shape)} and {tuple(scale.shape)}"
            raise QuantizeError(f"Int8Linear: expected q int8 (N, K), scale (N,), found {found}")
        if K % 16:  # torch's kernel reads 16 inputs at a time: other K crash it (torch 2.13)
            raise QuantizeError(f"Int8Linear: in_features must be a multiple of 16, found {K}")
        self.in_features, self.out_features = K, N
        self.register_buffer("weight", q)  # (N, K) int8
        self.register_buffer("scale", scale)  # (N,) in the kernel's activation dtype
        has_kernel = _has_kernel("_weight_int8pack_mm", q.device)
        self.kernel_rows = KERNEL_ROWS["int8"] if has_kernel else 0

    @classmethod
    def from_float(
        cls, w: Tensor, device: Device = None, dtype: torch.dtype = torch.bfloat16
    ) -> Int8Linear:
        """Quantize a float weight (N, K), a row chunk at a time, onto ``device`` (default w's)."""
        device = w.device if device is None else torch.device(device)
        rows = max(1, _CHUNK // w.shape[1])
        return cls(*by_rows(lambda i, j: quantize_int8(w[i:j].to(device), dtype), len(w), rows))

    def dequantize(
        self, dtype: torch.dtype = torch.float32, start: int = 0, stop: int | None = None
    ) -> Tensor:
        """Rows ``start:stop`` of the weight as stored, scale[:, None] * q, in ``dtype``."""
        return dequantize_int8(self.weight[start:stop], self.scale[start:stop], dtype)

    def _dequantized_rows(self, x: Tensor, start: int, stop: int) -> Tensor:
        # the per-row scale after the matmul: equal to dequantizing first, one pass fewer
        scale = self.scale[start:stop].to(x.dtype)
        return F.linear(x, self.weight[start:stop].to(x.dtype)) * scale

    def kernel(self, x: Tensor) -> Tensor:
        """``_weight_int8pack_mm`` in the scales' dtype: x (..., K) -> (..., N) in x's dtype."""
        x2 = x.reshape(-1, self.in_features).to(self.scale.dtype)  # (M, K)
        y = _aten._weight_int8pack_mm(x2, self.weight, self.scale)  # (M, N)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(_QuantLinear):
    """Linear layer with int4 weights, per group of g inputs a scale and a zero.

    w = (q - 8) * scale + zero. Holds the packed weight (``pack_int4``) and ``scale_and_zero``
    (K/g, N, 2), the kernel's layout.
    """

    def __init__(self, packed: Tensor, scale_and_zero: Tensor, group_size: int) -> None:
        super().__init__()
        n_groups, N, two = scale_and_zero.shape
        K = n_groups * group_size
        if two != 2:
            shape = tuple(scale_and_zero.shape)
            raise QuantizeError(f"Int4Linear: scale_and_zero must be (K/g, N, 2), found {shape}")
        _check_group(K, group_size, "Int4Linear")
        self.in_features, self.out_features, self.group_size = K, N, group_size
        self.packed_features = K  # inputs of the packed matrix (Int8GroupLinear packs 2K)
        self.register_buffer("weight", packed)  # q (N, K) in the device's packing
        self.register_buffer("scale_and_zero", scale_and_zero)  # (K/g, N, 2), activation dtype
        self.kernel_rows = KERNEL_ROWS["int4"] if packed.device.type == "cpu" else float("inf")

    @classmethod
    def from_quantized(
        cls, q: Tensor, scale: Tensor, zero: Tensor, device: Device = None
    ) -> Int4Linear:
        """From q (N, K) in [0, 15] and scale, zero (N, K/g) (whose dtype the kernel runs in)."""
        device = q.device if device is None else torch.device(device)
        N, K = q.shape
        if q.dtype != torch.uint8 or (q.numel() and q.max() > 15):
            top = f" up to {int(q.max())}" if q.numel() else ""
            raise QuantizeError(f"Int4Linear: q must be uint8 in [0, 15], found {q.dtype}{top}")
        if device.type == "cpu" and N % 16:
            raise QuantizeError(f"Int4Linear: out_features must be a multiple of 16, found {N}")
        if device.type == "cuda" and (N % 8 or K % 32):
            raise QuantizeError(f"Int4Linear: CUDA needs N % 8 == K % 32 == 0, found {N}, {K}")
        scale_and_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1)  # (K/g, N, 2)
        return cls(
            pack_int4(q, device), scale_and_zero.contiguous().to(device), K // scale.shape[1]
        )

    @classmethod
    def from_float(
        cls,
        w: Tensor,
        group_size: int = 32,
        device: Device = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> Int4Linear:
        """Quantize a float weight (N, K) with :func:`quantize_int4`, a row chunk at a time."""
        device = w.device if device is None else torch.device(device)
        rows = max(64, _CHUNK // w.shape[1] // 64 * 64)
        q, scale, zero = by_rows(
            lambda i, j: quantize_int4(w[i:j].to(device), group_size, dtype), len(w), rows
        )
        return cls.from_quantized(q, scale, zero, device)

    def unpack(self, start: int = 0, stop: int | None = None) -> Tensor:
        """q transposed: (K, stop - start) uint8 in [0, 15] for rows ``start:stop``."""
        K, N = self.packed_features, self.out_features
        stop = N if stop is None else stop
        layout = _cpu_int4_layout() if self.weight.device.type == "cpu" else None
        if layout is not None and start % 64 == 0:  # CPU blocks (<= 64 rows) map to packed rows
            return _unpack_cpu(self.weight[start:stop], stop - start, K, layout)
        # any layout: the kernel on the identity with scale 1, zero 8 gives q itself (K rows: slow)
        eye = torch.eye(K, dtype=torch.bfloat16, device=self.weight.device)
        unit = torch.tensor([1.0, 8.0], dtype=torch.bfloat16, device=self.weight.device)
        q_t = self._mm(eye, unit.expand(K // self.group_size, N, 2).contiguous())  # (K, N)
        return q_t[:, start:stop].to(torch.uint8)

    def dequantize(
        self, dtype: torch.dtype = torch.float32, start: int = 0, stop: int | None = None
    ) -> Tensor:
        """Rows ``start:stop`` of the weight as stored, (q - 8) * scale + zero, in ``dtype``.

        An (n, K) transposed view of a k-major (K, n) tensor: unpacking k-major avoids a byte
        transpose and matches ``scale_and_zero``'s order; ``F.linear`` takes either.
        """
        K, g = self.packed_features, self.group_size
        stop = self.out_features if stop is None else stop
        # (K/g, 1, n), contiguous: a strided operand makes the element-wise ops 10x slower
        pairs = self.scale_and_zero[:, start:stop].unbind(-1)
        scale, zero = (t.float().contiguous()[:, None] for t in pairs)
        w = self.unpack(start, stop).reshape(K // g, g, stop - start).float()  # (K/g, g, n)
        w.sub_(8).mul_(scale).add_(zero)  # in place, in fp32: bf16 element-wise ops are slow
        return w.reshape(K, stop - start).to(dtype).T  # (n, K)

    def kernel(self, x: Tensor) -> Tensor:
        """The int4 kernel in the scales' dtype: x (..., K) -> (..., N) in x's dtype."""
        x2 = x.reshape(-1, x.shape[-1]).to(self.scale_and_zero.dtype)  # (M, K)
        y = self._mm(x2, self.scale_and_zero)  # (M, N)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _mm(self, x2: Tensor, scale_and_zero: Tensor) -> Tensor:
        cuda = self.weight.device.type == "cuda"
        op = _aten._weight_int4pack_mm if cuda else _aten._weight_int4pack_mm_for_cpu
        return op(x2.contiguous(), self.weight, self.group_size, scale_and_zero)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        # the packing belongs to one device type: moving to another unpacks here, packs there
        target = fn(torch.empty(0, device=self.weight.device)).device
        if target.type != self.weight.device.type:
            self.weight = pack_int4(self.unpack().T.to(target), target)
        return super()._apply(fn, recurse)


class Int8GroupLinear(Int4Linear):
    """int8 weights with a scale per group of inputs (GGUF Q8_0: w = d q), run by the int4 kernel.

    q = 16 hi + lo with hi = q >> 4 in [-8, 7] and lo = q & 15 in [0, 15], so with x2 = [x, x]::

        x @ (d q)^T = x2 @ [16 d hi, d lo]^T

    one int4 matmul over 2K inputs: the high halves stored as hi + 8 with scale 16 d and zero 0,
    the low halves as lo with scale d and zero 8 d. No rounding beyond d's: 16 d, 8 d are exact.
    """

    @classmethod
    def from_int8(cls, q: Tensor, scale: Tensor, device: Device = None) -> Int8GroupLinear:
        """q (N, K) int8 and scale (N, K/g) (whose dtype the kernel runs in)."""
        if q.dtype != torch.int8:
            raise QuantizeError(f"Int8GroupLinear: q must be int8, found {q.dtype}")

        def halves(i: int, j: int) -> tuple[Tensor]:
            hi, lo = (q[i:j] >> 4) + 8, q[i:j] & 15  # arithmetic shift: hi = floor(q / 16)
            return (torch.cat([hi, lo], dim=1).to(torch.uint8),)

        nibbles = by_rows(halves, len(q), max(1, _CHUNK // q.shape[1]))[0]  # (N, 2K)
        scales = torch.cat([16 * scale, scale], dim=1)  # (N, 2K/g)
        zeros = torch.cat([torch.zeros_like(scale), 8 * scale], dim=1)
        layer = cls.from_quantized(nibbles, scales, zeros, device)
        layer.in_features = q.shape[1]
        return layer

    def dequantize(
        self, dtype: torch.dtype = torch.float32, start: int = 0, stop: int | None = None
    ) -> Tensor:
        """Rows ``start:stop`` of (N, K) = d * q: the sum of the two halves."""
        K = self.in_features
        w2 = super().dequantize(torch.float32, start, stop)  # (n, 2K)
        return (w2[:, :K] + w2[:, K:]).to(dtype)

    def kernel(self, x: Tensor) -> Tensor:
        """The int4 kernel on [x, x]."""
        return super().kernel(torch.cat([x, x], dim=-1))


class QuantEmbedding(nn.Module):
    """Token embedding whose rows are dequantized on lookup from an :class:`Int8Linear`'s table.

    With tied embeddings the table *is* the output layer's: one int8 copy serves both.
    """

    def __init__(self, table: Int8Linear, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.table, self.dtype = table, dtype
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> (B, T, D) in ``self.dtype``."""
        q, scale = self.table.weight[tokens], self.table.scale[tokens]  # (B, T, D), (B, T)
        return q.to(self.dtype) * scale.to(self.dtype)[..., None]


# ---------------------------------------------------------------------------------------------
# whole models
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def quantize_linear(
    weight: Tensor,
    mode: str,
    group_size: int = 32,
    device: Device = None,
    dtype: torch.dtype = torch.bfloat16,
) -> Int8Linear | Int4Linear:
    """One (N, K) float weight -> a quantized layer on ``device``; for loaders streaming tensors.

    Reads ``weight`` a row chunk at a time (it may be memory-mapped): besides the result only a
    few MiB of temporaries are allocated, so loading peaks near the quantized model plus the
    tensor being read (if the loader drops each tensor's file pages after use).
    """
    if weight.ndim != 2 or not weight.is_floating_point():
        found = f"{weight.dtype} {tuple(weight.shape)}"
        raise QuantizeError(f"quantize_linear: expected a float (N, K) weight, found {found}")
    if mode == "int8":
        return Int8Linear.from_float(weight, device, dtype)
    if mode == "int4":
        return Int4Linear.from_float(weight, group_size, device, dtype)
    raise QuantizeError(f"quantize_linear: mode must be one of {MODES}, found {mode!r}")


def quantize_model(
    model: nn.Module,
    mode: str,
    group_size: int = 32,
    *,
    device: Device = None,
    dtype: torch.dtype = torch.bfloat16,
    output_mode: str | None = None,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` in place by its quantized layer; returns ``model``.

    Args:
        model: e.g. a ``Transformer`` (its linear layers: wq, wk, wv, wo, w1, w2, w3, output).
        mode: ``"int8"`` or ``"int4"``.
        group_size: inputs per int4 scale (32, 64, 128 or 256).
        device: where the quantized layers go (default: where each weight is); the rest of the
            model (embedding, norms) is moved there too.
        dtype: the kernels' activation dtype (bf16: torch's CPU kernels are vectorized for it).
        output_mode: mode of the ``output`` layer (default ``mode``).

    A tied embedding keeps its float table: only the output projection is quantized. A layer the
    kernels cannot take (shape, bias) stays float, with a warning naming it.
    """
    for what, m in (("mode", mode), ("output_mode", output_mode or mode)):
        if m not in MODES:
            raise QuantizeError(f"quantize_model: {what} must be one of {MODES}, found {m!r}")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    with log.busy(f"quantizing {len(linears)} linear layers to {mode}", total=len(linears)) as bar:
        for name, linear in linears:
            layer_mode = (output_mode or mode) if name == "output" else mode
            try:
                if linear.bias is not None:
                    raise QuantizeError("layers with a bias are not supported")
                layer = quantize_linear(linear.weight, layer_mode, group_size, device, dtype)
                model.set_submodule(name, layer)
            except QuantizeError as e:
                log.warning("%s (%s): kept in %s: %s", name, layer_mode, linear.weight.dtype, e)
            bar.update()
    return model if device is None else model.to(device)
