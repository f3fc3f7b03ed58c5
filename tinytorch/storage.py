"""Flat storage and the index arithmetic over it: shapes, strides, broadcasting, dtypes, errors.

A tensor's numbers live in one flat Python ``list`` (its *storage*). A view is that list plus a
``shape``, ``strides`` (how far to step in the list for +1 along each dim) and an ``offset``; element
``(i0, i1, ...)`` sits at ``offset + i0*strides[0] + i1*strides[1] + ...``. Everything here is that
arithmetic, kept apart from the array class so it can be read (and tested) on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "Size",
    "DTYPES",
    "float64",
    "int64",
    "bool_",
    "TinyTorchError",
    "ShapeError",
    "TinyIndexError",
    "contiguous_strides",
    "broadcast_shapes",
    "positions",
    "normalize_dim",
    "infer_shape",
    "flatten_nested",
    "result_dtype",
    "infer_dtype",
    "cast",
]

float64, int64, bool_ = "float64", "int64", "bool"
DTYPES = (bool_, int64, float64)  # promotion order: bool < int64 < float64 (as torch)


class TinyTorchError(RuntimeError):
    """Base class of tinytorch errors (torch raises RuntimeError for the same mistakes)."""


class ShapeError(TinyTorchError):
    """Shapes do not fit: broadcasting, matmul, view, cat."""


class TinyIndexError(IndexError, TinyTorchError):
    """An index is out of range (an IndexError, as in torch and Python)."""


class Size(tuple):
    """The shape of a tensor: a tuple that prints like ``torch.Size([2, 3])``."""

    def numel(self) -> int:
        return math.prod(self)

    def __repr__(self) -> str:
        return f"tinytorch.Size({list(self)})"


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides: the last dim moves by 1, each earlier dim by the product of the later sizes."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def broadcast_shapes(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """numpy/torch broadcasting: align from the right; sizes must match or one of them be 1."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    for i in range(n - 1, -1, -1):  # torch reports the right-most mismatch
        x, y = a[i], b[i]
        if x != y and x != 1 and y != 1:
            raise ShapeError(
                f"The size of tensor a ({x}) must match the size of tensor b ({y}) at non-singleton dimension {i}"
            )
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def positions(shape: Sequence[int], strides: Sequence[int], offset: int) -> list[int]:
    """Storage positions of every element of a view, in row-major order."""
    pos = [offset]
    for n, s in zip(shape, strides):
        steps = [k * s for k in range(n)]
        pos = [p + d for p in pos for d in steps]
    return pos


def normalize_dim(dim: int, ndim: int) -> int:
    """Turn a possibly negative ``dim`` into ``0 <= dim < ndim`` (a 0-d tensor accepts -1 and 0)."""
    lo, hi = (-ndim, ndim - 1) if ndim > 0 else (-1, 0)
    if not lo <= dim <= hi:
        raise TinyIndexError(f"Dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})")
    return dim % max(ndim, 1)


def infer_shape(shape: Sequence[int], numel: int) -> tuple[int, ...]:
    """Resolve one ``-1`` in a requested view/reshape shape and check the element count."""
    shape = tuple(int(n) for n in shape)
    if shape.count(-1) > 1:
        raise ShapeError("only one dimension can be inferred")
    known = math.prod(n for n in shape if n != -1)
    if -1 in shape and known != 0 and numel % known == 0:
        shape = tuple(numel // known if n == -1 else n for n in shape)
    if math.prod(shape) != numel or any(n < 0 for n in shape):
        raise ShapeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
    return shape


def flatten_nested(data: Any) -> tuple[list, tuple[int, ...]]:
    """Nested lists of numbers -> (flat list, shape). Ragged input is an error, as in torch."""
    if isinstance(data, (int, float, bool)):
        return [data], ()
    shape: list[int] = []
    probe = data
    while isinstance(probe, (list, tuple)):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = list(data)
    for depth in range(1, len(shape)):
        for row in flat:
            if not isinstance(row, (list, tuple)) or len(row) != shape[depth]:
                raise ShapeError(f"expected sequence of length {shape[depth]} at dim {depth} (got {row!r})")
        flat = [x for row in flat for x in row]
    return flat, tuple(shape)


def result_dtype(*dtypes: str) -> str:
    """Type promotion: the widest of the inputs (bool < int64 < float64)."""
    return max(dtypes, key=DTYPES.index)


def infer_dtype(values: list) -> str:
    """dtype for Python numbers: all bool -> bool, all int -> int64, else float64."""
    if values and all(isinstance(v, bool) for v in values):
        return bool_
    if all(isinstance(v, int) for v in values) and values:
        return int64
    return float64


def cast(values: list, dtype: str) -> list:
    """Convert Python numbers to the Python type that stores ``dtype`` (float, int or bool)."""
    if dtype not in DTYPES:
        raise TinyTorchError(f"dtype: expected one of {DTYPES}, found {dtype!r}")
    kind = {float64: float, int64: int, bool_: bool}[dtype]
    return [v if type(v) is kind else kind(v) for v in values]
