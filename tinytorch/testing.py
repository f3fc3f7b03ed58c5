"""Numerical gradient checking: compare ``backward`` with central differences.

For a random weighting ``w`` of the output, d(sum(w * f(x))) / dx_i is estimated as
``(L(x_i + eps) - L(x_i - eps)) / (2 eps)`` and compared with what autograd puts in ``x.grad``.
Use float64 inputs; ``eps=1e-6`` then gives ~1e-8 accuracy on smooth functions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from tinytorch.array import TinyArray
from tinytorch.autograd import no_grad
from tinytorch.storage import positions
from tinytorch.tensor import Tensor

__all__ = ["GradCheckError", "grad_check"]


class GradCheckError(AssertionError):
    """Autograd and central differences disagree."""


def grad_check(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    seed: int = 0,
) -> bool:
    """Check every ``requires_grad`` input's gradient of ``fn(*inputs)``; raise GradCheckError naming the first bad one.

    Returns True when all gradients agree (so it reads naturally inside an ``assert``).
    """
    rng = random.Random(seed)
    out = fn(*inputs)
    w = TinyArray([rng.uniform(0.5, 1.5) for _ in range(out.numel())], out.shape)

    def loss() -> float:
        with no_grad():
            y = fn(*inputs)
        return sum(a * b for a, b in zip(y.data.flat(), w.flat()))

    for x in inputs:
        x.grad = None
    out.backward(Tensor(w))
    for k, x in enumerate(inputs):
        if not x.requires_grad:
            continue
        analytic = x.grad.data.flat() if x.grad is not None else [0.0] * x.numel()
        arr = x.data
        slots = arr._index(())  # a view: its positions are where x's elements live in storage
        for i, p in enumerate(positions(slots.shape, slots.strides, slots.offset)):
            old = arr.storage[p]
            arr.storage[p] = old + eps
            hi = loss()
            arr.storage[p] = old - eps
            lo = loss()
            arr.storage[p] = old
            numeric = (hi - lo) / (2 * eps)
            if abs(numeric - analytic[i]) > atol + rtol * abs(numeric):
                raise GradCheckError(
                    f"grad_check: input {k} element {i}: autograd {analytic[i]!r} vs central difference {numeric!r}"
                )
    return True
