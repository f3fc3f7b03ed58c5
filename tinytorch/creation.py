"""Making tensors: from data, constant fills, ranges, and random numbers from a seeded Generator
(``rng.py``: Python's Mersenne Twister, repeatable with ``manual_seed``, not torch's numbers)."""

from __future__ import annotations

import math
from typing import Any

from tinytorch.array import TinyArray, as_shape
from tinytorch.rng import Generator, default_generator, manual_seed
from tinytorch.rng import python_rng as _rng
from tinytorch.storage import TinyTorchError, cast, float64, infer_dtype, int64
from tinytorch.tensor import Tensor

__all__ = [
    "Generator", "default_generator", "manual_seed", "tensor", "zeros", "ones", "full", "empty", "eye", "arange",
    "linspace", "rand", "randn", "randint", "randperm", "multinomial", "zeros_like", "ones_like", "full_like",
    "rand_like", "randn_like",
]  # fmt: skip


def _fill(shape: tuple, value: Any, dtype: str | None, requires_grad: bool) -> Tensor:
    dtype = dtype or infer_dtype([value])
    return Tensor(TinyArray.full(shape, value, dtype), requires_grad=requires_grad)


def tensor(data: Any, dtype: str | None = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor from a number, nested lists, or another tensor (copied)."""
    if isinstance(data, Tensor):
        data = data.tolist()
    return Tensor(TinyArray.from_data(data, dtype), requires_grad=requires_grad)


def zeros(*size: Any, dtype: str | None = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _fill(as_shape(size), 0.0 if dtype in (None, float64) else 0, dtype, requires_grad)


def ones(*size: Any, dtype: str | None = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _fill(as_shape(size), 1.0 if dtype in (None, float64) else 1, dtype, requires_grad)


def empty(*size: Any, dtype: str | None = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def full(size: Any, fill_value: float, dtype: str | None = None, device: Any = None, requires_grad: bool = False):
    return _fill(as_shape((size,)), fill_value, dtype, requires_grad)


def eye(n: int, m: int | None = None, dtype: str | None = None, device: Any = None, requires_grad: bool = False):
    m = n if m is None else m
    vals = cast([1.0 if i == j else 0.0 for i in range(n) for j in range(m)], dtype or float64)
    return Tensor(TinyArray(vals, (n, m), dtype=dtype or float64), requires_grad=requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, dtype: str | None = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:  # fmt: skip
    """``[start, start+step, ...)`` below ``end``; int64 when all arguments are ints (as torch)."""
    if end is None:
        start, end = 0, start
    n = max(0, math.ceil((end - start) / step))
    dtype = dtype or infer_dtype([start, end, step])
    vals = cast([start + i * step for i in range(n)], dtype)
    return Tensor(TinyArray(vals, (n,), dtype=dtype), requires_grad=requires_grad)


def linspace(start: float, end: float, steps: int, dtype: str | None = None, device: Any = None) -> Tensor:
    if steps == 1:
        return tensor([float(start)])
    step = (end - start) / (steps - 1)
    return Tensor(TinyArray([start + i * step for i in range(steps)], (steps,), dtype=dtype or float64))


def rand(*size: Any, generator: Generator | None = None, dtype: str | None = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:  # fmt: skip
    """Uniform on [0, 1)."""
    shape, rng = as_shape(size), _rng(generator)
    return Tensor(TinyArray([rng.random() for _ in range(math.prod(shape))], shape), requires_grad=requires_grad)


def randn(*size: Any, generator: Generator | None = None, dtype: str | None = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:  # fmt: skip
    """Standard normal."""
    shape, rng = as_shape(size), _rng(generator)
    return Tensor(TinyArray([rng.gauss(0.0, 1.0) for _ in range(math.prod(shape))], shape), requires_grad=requires_grad)


def randint(low: int, high: int | None = None, size: tuple = (), generator: Generator | None = None,
            dtype: str | None = None, device: Any = None) -> Tensor:  # fmt: skip
    """Integers uniform in [low, high) (``randint(high, size)`` also works, as torch)."""
    if high is None or isinstance(high, (tuple, list)):
        low, high, size = 0, low, high if high is not None else size
    shape, rng = tuple(size), _rng(generator)
    return Tensor(TinyArray([rng.randrange(low, high) for _ in range(math.prod(shape))], shape, dtype=int64))


def randperm(n: int, generator: Generator | None = None, dtype: str | None = None, device: Any = None) -> Tensor:
    perm = list(range(n))
    _rng(generator).shuffle(perm)
    return Tensor(TinyArray(perm, (n,), dtype=int64))


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, generator: Generator | None = None):
    """Draw ``num_samples`` class ids per row with probability proportional to ``input`` (1-D or 2-D)."""
    rng = _rng(generator)
    rows = [input.data.flat()] if input.ndim == 1 else input.data.tolist()
    out = []
    for w in rows:
        w = list(w)
        if not replacement and num_samples > sum(1 for v in w if v > 0):
            raise TinyTorchError("multinomial: cannot sample n_sample > prob_dist.size(-1) samples without replacement")
        picks = []
        for _ in range(num_samples):
            i = rng.choices(range(len(w)), weights=w)[0]
            picks.append(i)
            if not replacement:
                w[i] = 0.0
        out.append(picks)
    shape = (num_samples,) if input.ndim == 1 else (len(rows), num_samples)
    return Tensor(TinyArray([i for r in out for i in r], shape, dtype=int64))


def zeros_like(input: Tensor, dtype: str | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)


def ones_like(input: Tensor, dtype: str | None = None, requires_grad: bool = False) -> Tensor:
    return ones(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad)


def full_like(input: Tensor, fill_value: float, dtype: str | None = None, requires_grad: bool = False) -> Tensor:
    return full(tuple(input.shape), fill_value, dtype=dtype or input.dtype, requires_grad=requires_grad)


def rand_like(input: Tensor, generator: Generator | None = None, requires_grad: bool = False) -> Tensor:
    return rand(*input.shape, generator=generator, requires_grad=requires_grad)


def randn_like(input: Tensor, generator: Generator | None = None, requires_grad: bool = False) -> Tensor:
    return randn(*input.shape, generator=generator, requires_grad=requires_grad)
