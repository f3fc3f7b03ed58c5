"""TinyArray: an n-d array as a flat list + shape, strides and offset (no autograd here).

Views (``view``, ``permute``, ``transpose``, ``expand``, ``unsqueeze``, ``squeeze``, basic slicing)
build a new TinyArray over the *same* list with other strides, exactly as torch does, so
``a.permute(1, 0).stride() == torch_a.permute(1, 0).stride()``. Computations read the elements in
row-major order (``flat()``), work on plain Python lists and return a new contiguous array.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

from tinytorch.storage import (
    ShapeError,
    Size,
    TinyIndexError,
    TinyTorchError,
    bool_,
    broadcast_shapes,
    cast,
    contiguous_strides,
    flatten_nested,
    float64,
    infer_dtype,
    infer_shape,
    int64,
    normalize_dim,
    positions,
    result_dtype,
)

__all__ = ["TinyArray", "as_shape"]


def as_shape(shape: tuple) -> tuple[int, ...]:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` as torch does."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(n) for n in shape)


def _view_strides(old_shape: tuple, old_strides: tuple, new_shape: tuple) -> tuple[int, ...] | None:
    """Strides that let ``new_shape`` view the same elements without a copy, or None (torch's computeStride)."""
    if math.prod(old_shape) == 0 or not old_shape:
        return contiguous_strides(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base = old_strides[-1]
    tensor_numel = view_numel = 1
    for d in range(len(old_shape) - 1, -1, -1):
        tensor_numel *= old_shape[d]
        # A chunk ends where the next-outer dim does not continue this one in memory.
        if d == 0 or (old_shape[d - 1] != 1 and old_strides[d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if d > 0:
                chunk_base, tensor_numel, view_numel = old_strides[d - 1], 1, 1
    return tuple(new_strides) if view_d == -1 else None


class TinyArray:
    """An n-d array over a flat Python list. ``storage`` is shared between views."""

    __slots__ = ("storage", "shape", "strides", "offset", "dtype")

    def __init__(
        self,
        storage: list,
        shape: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        offset: int = 0,
        dtype: str = float64,
    ) -> None:
        self.storage = storage
        self.shape = Size((len(storage),) if shape is None else shape)
        self.strides = contiguous_strides(self.shape) if strides is None else tuple(strides)
        self.offset = offset
        self.dtype = dtype

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_data(cls, data: Any, dtype: str | None = None) -> TinyArray:
        """From a number or nested lists; dtype inferred like torch (ints -> int64) unless given."""
        flat, shape = flatten_nested(data)
        dtype = dtype or infer_dtype(flat)
        return cls(cast(flat, dtype), shape, dtype=dtype)

    @classmethod
    def full(cls, shape: Sequence[int], value: Any, dtype: str = float64) -> TinyArray:
        return cls(cast([value], dtype) * math.prod(shape), tuple(shape), dtype=dtype)

    def _new(self, shape: Sequence[int], strides: Sequence[int], offset: int) -> TinyArray:
        """A view of the same storage."""
        return TinyArray(self.storage, shape, strides, offset, self.dtype)

    # -- geometry ----------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def stride(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.strides if dim is None else self.strides[normalize_dim(dim, self.ndim)]

    def storage_offset(self) -> int:
        return self.offset

    def is_contiguous(self) -> bool:
        """Row-major with no gaps (dims of size 1 may have any stride, as in torch)."""
        expected = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n == 0:
                return True
            if n != 1:
                if s != expected:
                    return False
                expected *= n
        return True

    def flat(self) -> list:
        """The elements in row-major order, as a new list."""
        if self.is_contiguous():
            return self.storage[self.offset : self.offset + self.numel()]
        s = self.storage
        return [s[p] for p in positions(self.shape, self.strides, self.offset)]

    def contiguous(self) -> TinyArray:
        return self if self.is_contiguous() else TinyArray(self.flat(), self.shape, dtype=self.dtype)

    def tolist(self) -> Any:
        flat = self.flat()
        for n in reversed(self.shape[1:]):
            flat = [flat[i : i + n] for i in range(0, len(flat), n)]
        return flat[0] if not self.shape else flat

    def item(self) -> Any:
        if self.numel() != 1:
            raise TinyTorchError(f"a Tensor with {self.numel()} elements cannot be converted to Scalar")
        return self.storage[self.offset]

    def astype(self, dtype: str) -> TinyArray:
        return self if dtype == self.dtype else TinyArray(cast(self.flat(), dtype), self.shape, dtype=dtype)

    # -- views -------------------------------------------------------------------------------------
    def view(self, *shape: int) -> TinyArray:
        shape = infer_shape(as_shape(shape), self.numel())
        strides = _view_strides(self.shape, self.strides, shape)
        if strides is None:
            raise ShapeError(
                "view size is not compatible with input tensor's size and stride (at least one dimension spans "
                "across two contiguous subspaces). Use .reshape(...) instead."
            )
        return self._new(shape, strides, self.offset)

    def reshape(self, *shape: int) -> TinyArray:
        shape = infer_shape(as_shape(shape), self.numel())
        strides = _view_strides(self.shape, self.strides, shape)
        if strides is None:  # no view possible: copy, as torch does
            return TinyArray(self.flat(), shape, dtype=self.dtype)
        return self._new(shape, strides, self.offset)

    def permute(self, *dims: int) -> TinyArray:
        dims = tuple(normalize_dim(d, self.ndim) for d in as_shape(dims))
        if sorted(dims) != list(range(self.ndim)):
            raise ShapeError(
                f"permute(sparse_coo): number of dimensions in the tensor input does not match "
                f"the length of the desired ordering of dimensions i.e. input.dim() = {self.ndim} "
                f"is not equal to len(dims) = {len(dims)}"
                if len(dims) != self.ndim
                else f"permute(): duplicate dims are not allowed (got {list(dims)})"
            )
        return self._new([self.shape[d] for d in dims], [self.strides[d] for d in dims], self.offset)

    def transpose(self, dim0: int, dim1: int) -> TinyArray:
        order = list(range(self.ndim))
        d0, d1 = normalize_dim(dim0, self.ndim), normalize_dim(dim1, self.ndim)
        order[d0], order[d1] = order[d1], order[d0]
        return self.permute(*order) if self.ndim else self

    def unsqueeze(self, dim: int) -> TinyArray:
        dim = normalize_dim(dim, self.ndim + 1)
        stride = self.shape[dim] * self.strides[dim] if dim < self.ndim else 1
        return self._new(
            self.shape[:dim] + (1,) + self.shape[dim:], self.strides[:dim] + (stride,) + self.strides[dim:], self.offset
        )

    def squeeze(self, dim: int | Sequence[int] | None = None) -> TinyArray:
        if dim is None:
            dims = {d for d, n in enumerate(self.shape) if n == 1}
        else:
            dims = {normalize_dim(d, self.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
            dims = {d for d in dims if self.ndim and self.shape[d] == 1}
        keep = [d for d in range(self.ndim) if d not in dims]
        return self._new([self.shape[d] for d in keep], [self.strides[d] for d in keep], self.offset)

    def expand(self, *shape: int) -> TinyArray:
        """Broadcast to ``shape`` without copying: new or size-1 dims get stride 0 (-1 keeps a size)."""
        shape = as_shape(shape)
        lead = len(shape) - self.ndim
        if lead < 0:
            raise ShapeError(
                f"expand: the number of sizes provided ({len(shape)}) must be greater or equal to the number "
                f"of dimensions in the tensor ({self.ndim})"
            )
        sizes, strides = list(shape), [0] * len(shape)
        for i, (n, s) in enumerate(zip(self.shape, self.strides)):
            want = shape[lead + i]
            if want == -1 or want == n:
                sizes[lead + i], strides[lead + i] = n, s
            elif n != 1:
                raise ShapeError(
                    f"The expanded size of the tensor ({want}) must match the existing size ({n}) at non-singleton "
                    f"dimension {lead + i}.  Target sizes: {list(shape)}.  Tensor sizes: {list(self.shape)}"
                )
        return self._new(sizes, strides, self.offset)

    def broadcast_to(self, shape: Sequence[int]) -> TinyArray:
        return self if tuple(shape) == self.shape else self.expand(*shape)

    def sum_to(self, shape: Sequence[int]) -> TinyArray:
        """Undo broadcasting: sum over the dims that ``shape`` broadcast along (used by backward)."""
        shape = tuple(shape)
        if self.shape == shape:
            return self
        lead = self.ndim - len(shape)
        dims = list(range(lead)) + [lead + i for i, n in enumerate(shape) if n == 1 and self.shape[lead + i] != 1]
        return self.reduce(dims, True, sum).reshape(shape)

    # -- indexing ----------------------------------------------------------------------------------
    def _index(self, key: Any) -> TinyArray | tuple[list[int], tuple[int, ...]]:
        """Apply ``key``: a view for basic indexing, else (storage positions, shape) to gather."""
        key = key if isinstance(key, tuple) else (key,)
        used = sum(
            (k.ndim if k.dtype == bool_ else 1) if isinstance(k, TinyArray) else 0 if k is None or k is ... else 1
            for k in key
        )
        if used > self.ndim:
            raise TinyIndexError(f"too many indices for tensor of dimension {self.ndim}")
        if ... in key:
            i = key.index(...)
            key = key[:i] + (slice(None),) * (self.ndim - used) + key[i + 1 :]
        shape, strides, offset, adv, d = [], [], self.offset, [], 0
        for k in key:
            if k is None:  # new axis: the stride torch's unsqueeze would give
                shape.append(1)
                strides.append(self.shape[d] * self.strides[d] if d < self.ndim else 1)
                continue
            if isinstance(k, (list, tuple)):
                k = TinyArray.from_data(k)
            if isinstance(k, TinyArray) and k.dtype == bool_:  # mask -> integer index per masked dim
                flat = k.flat()
                nz = [p for p, v in zip(positions(k.shape, contiguous_strides(k.shape), 0), flat) if v]
                for j, stride in enumerate(contiguous_strides(k.shape)):
                    adv.append((len(shape), TinyArray([p // stride % k.shape[j] for p in nz], dtype=int64)))
                    shape.append(self.shape[d])
                    strides.append(self.strides[d])
                    d += 1
                continue
            n, s = self.shape[d], self.strides[d]
            if isinstance(k, TinyArray):
                adv.append((len(shape), k))
                shape.append(n)
                strides.append(s)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step <= 0:
                    raise ValueError("step must be greater than zero")
                shape.append(len(range(start, stop, step)))
                strides.append(s * step)
                offset += start * s
            else:
                k = operator.index(k)
                if not -n <= k < n:
                    raise TinyIndexError(f"index {k} is out of bounds for dimension {d} with size {n}")
                offset += (k % n) * s
            d += 1
        shape += self.shape[d:]
        strides += self.strides[d:]
        if not adv:
            return self._new(shape, strides, offset)
        # Advanced (integer-array) indexing: the index arrays broadcast together (numpy rules).
        ishape = ()
        for _, k in adv:
            ishape = broadcast_shapes(ishape, k.shape)
        adv_offsets = [0] * math.prod(ishape)
        for p, k in adv:
            n, s = shape[p], strides[p]
            idx = k.broadcast_to(ishape).flat()
            for i in idx:
                if not -n <= i < n:
                    raise TinyIndexError(f"index {i} is out of bounds for dimension {p} with size {n}")
            adv_offsets = [o + (i % n) * s for o, i in zip(adv_offsets, idx)]
        ps = [p for p, _ in adv]
        if ps == list(range(ps[0], ps[0] + len(ps))):  # adjacent: result dims go where the indices were
            a, b = ps[0], ps[-1] + 1
            pre = positions(shape[:a], strides[:a], offset)
            post = positions(shape[b:], strides[b:], 0)
            pos = [x + y + z for x in pre for y in adv_offsets for z in post]
            return pos, tuple(shape[:a]) + ishape + tuple(shape[b:])
        rest = [i for i in range(len(shape)) if i not in ps]  # else they go first
        post = positions([shape[i] for i in rest], [strides[i] for i in rest], offset)
        return [y + z for y in adv_offsets for z in post], ishape + tuple(shape[i] for i in rest)

    def __getitem__(self, key: Any) -> TinyArray:
        out = self._index(key)
        if isinstance(out, TinyArray):
            return out
        pos, shape = out
        s = self.storage
        return TinyArray([s[p] for p in pos], shape, dtype=self.dtype)

    def __setitem__(self, key: Any, value: Any) -> None:
        out = self._index(key)
        pos, shape = (positions(out.shape, out.strides, out.offset), out.shape) if isinstance(out, TinyArray) else out
        if isinstance(value, TinyArray):
            vals = cast(value.broadcast_to(shape).flat(), self.dtype)
        else:
            vals = cast([value], self.dtype) * len(pos)
        s = self.storage
        for p, v in zip(pos, vals):
            s[p] = v

    # -- computation -------------------------------------------------------------------------------
    def map(self, fn: Callable, dtype: str | None = None, safe: Callable | None = None) -> TinyArray:
        """Apply ``fn`` to every element (``safe`` is retried if ``fn`` raises, e.g. ``log(0)``)."""
        return TinyArray(_apply(fn, safe, self.flat()), self.shape, dtype=dtype or self.dtype)

    def zip_with(
        self, other: TinyArray | float, fn: Callable, dtype: str | None = None, safe: Callable | None = None
    ) -> TinyArray:
        """Apply ``fn(a, b)`` elementwise with broadcasting; ``other`` may be a Python number."""
        if not isinstance(other, TinyArray):
            a = self.flat()
            return TinyArray(_apply(fn, safe, a, [other] * len(a)), self.shape, dtype=dtype or self.dtype)
        dtype = dtype or result_dtype(self.dtype, other.dtype)
        if self.shape == other.shape:
            shape, a, b = self.shape, self.flat(), other.flat()
        elif not other.shape:  # a 0-d operand (a wrapped Python number): no index arithmetic needed
            shape, a = self.shape, self.flat()
            b = [other.storage[other.offset]] * len(a)
        elif not self.shape:
            shape, b = other.shape, other.flat()
            a = [self.storage[self.offset]] * len(b)
        else:
            shape = broadcast_shapes(self.shape, other.shape)
            a, b = self.broadcast_to(shape).flat(), other.broadcast_to(shape).flat()
        return TinyArray(_apply(fn, safe, a, b), shape, dtype=dtype)

    def reduce(self, dims: int | Sequence[int] | None, keepdim: bool, fn: Callable, dtype: str | None = None):
        """Apply ``fn(list) -> value`` over ``dims`` (all dims if None)."""
        if dims is None:
            dims = list(range(self.ndim))
        elif isinstance(dims, int):
            dims = [dims]
        dims = sorted({normalize_dim(d, self.ndim) for d in dims})
        keep = [d for d in range(self.ndim) if d not in dims]
        flat = self.permute(*keep, *dims).flat()  # reduced dims last, so each group is one slice
        m = math.prod(self.shape[d] for d in dims)
        outer = math.prod(self.shape[d] for d in keep)
        vals = [fn(flat[i * m : (i + 1) * m]) for i in range(outer)]
        shape = [1 if d in dims else n for d, n in enumerate(self.shape)] if keepdim else [self.shape[d] for d in keep]
        return TinyArray(vals, shape, dtype=dtype or self.dtype)

    def matmul(self, other: TinyArray) -> TinyArray:
        """Batched, broadcast matrix product of arrays with at least 2 dims (row . column inner products)."""
        a, b = self, other
        if a.ndim < 2 or b.ndim < 2:
            raise ShapeError(f"TinyArray.matmul: expected 2+ dims, found {a.ndim} and {b.ndim}")
        (n, k), (k2, m) = a.shape[-2:], b.shape[-2:]
        rows = math.prod(a.shape[:-1]) if b.ndim == 2 else n
        if k != k2:
            raise ShapeError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{k} and {k2}x{m})")
        dtype = result_dtype(a.dtype, b.dtype)
        if b.ndim == 2:  # (..., n, k) @ (k, m): fold the batch into the rows
            out = _mm(a.reshape(-1, k).flat(), rows, k, b.transpose(0, 1).flat(), m)
            return TinyArray(out, a.shape[:-1] + (m,), dtype=dtype)
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        A = a.broadcast_to(batch + (n, k)).flat()
        Bt = b.broadcast_to(batch + (k, m)).transpose(-1, -2).flat()  # columns of b as rows
        out = []
        for i in range(math.prod(batch)):
            out += _mm(A[i * n * k : (i + 1) * n * k], n, k, Bt[i * k * m : (i + 1) * k * m], m)
        return TinyArray(out, batch + (n, m), dtype=dtype)

    # -- operators (no autograd; handy for optimizers working on .data) ----------------------------
    def _op(self, other: Any, fn: Callable) -> TinyArray:
        if isinstance(other, TinyArray):
            return self.zip_with(other, fn)
        dtype = result_dtype(self.dtype, float64 if isinstance(other, float) else int64)
        return self.zip_with(other, fn, dtype)

    def __add__(self, other: Any) -> TinyArray:
        return self._op(other, operator.add)

    def __sub__(self, other: Any) -> TinyArray:
        return self._op(other, operator.sub)

    def __mul__(self, other: Any) -> TinyArray:
        return self._op(other, operator.mul)

    def __truediv__(self, other: Any) -> TinyArray:
        return self._op(other, operator.truediv).astype(float64)

    def __pow__(self, other: Any) -> TinyArray:
        return self._op(other, operator.pow)

    def __neg__(self) -> TinyArray:
        return self.map(operator.neg)

    __radd__, __rmul__ = __add__, __mul__

    def __matmul__(self, other: TinyArray) -> TinyArray:
        return self.matmul(other)

    def __repr__(self) -> str:
        return (
            f"TinyArray({format_values(self.tolist(), self.dtype, 10)}, shape={tuple(self.shape)}, "
            f"strides={self.strides}, offset={self.offset}, dtype={self.dtype})"
        )


def _apply(fn: Callable, safe: Callable | None, *lists: list) -> list:
    """``list(map(fn, *lists))``; on a math error (log(0), x/0, overflow) redo it with ``safe``."""
    if safe is None:
        return list(map(fn, *lists))
    try:
        return list(map(fn, *lists))
    except (ZeroDivisionError, ValueError, OverflowError):
        return list(map(safe, *lists))


def _mm(A: list, n: int, k: int, Bt: list, m: int) -> list:
    """(n, k) @ (k, m) from row-major A and row-major B^T: each output is one row . column inner product."""
    rows = [A[i * k : (i + 1) * k] for i in range(n)]
    cols = [Bt[j * k : (j + 1) * k] for j in range(m)]
    mul = operator.mul
    return [sum(map(mul, r, c)) for r in rows for c in cols]


def format_values(values: Any, dtype: str, indent: int) -> str:
    """Nested lists -> torch-like text: ``[[ 1.0000, -2.0000], ...]`` with aligned columns."""
    if dtype == float64:
        fmt = lambda v: f"{v:.4f}"  # noqa: E731
    else:
        fmt = str
    flat, _ = flatten_nested(values)
    width = max((len(fmt(v)) for v in flat), default=0)

    def rec(v: Any, depth: int) -> str:
        if not isinstance(v, list):
            return fmt(v).rjust(width)
        nested = bool(v) and isinstance(v[0], list)
        sep = ",\n" + "\n" * (_depth(v) - 2) + " " * (indent + depth + 1) if nested else ", "
        return "[" + sep.join(rec(x, depth + 1) for x in v) + "]"

    return rec(values, 0)


def _depth(v: Any) -> int:
    d = 0
    while isinstance(v, list):
        d += 1
        v = v[0] if v else None
    return d
