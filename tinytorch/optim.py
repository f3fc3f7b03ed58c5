"""Optimizers: SGD (with momentum), Adam and AdamW, element by element with torch's exact formulas.

Each ``step()`` reads every parameter's numbers and gradient as flat Python lists, applies the update
rule from the docstring of the matching ``torch.optim`` class (the "Algorithm" box there), and writes
the numbers back into the parameter's storage in place, so views and tied weights see the update.
State (momentum buffers, Adam moments) is kept per parameter as plain lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .storage import positions

__all__ = ["OptimizerError", "Optimizer", "SGD", "Adam", "AdamW"]


class OptimizerError(ValueError):
    """An optimizer argument is out of range or the parameter list is empty."""


def _values(t: Any) -> list[float]:
    """The numbers of a tinytorch Tensor in row-major order (a new list)."""
    return t.data.flat()


def _write(t: Any, values: list[float]) -> None:
    """Overwrite a Tensor's numbers in place (its storage is shared with any views of it)."""
    arr = t.data
    if arr.is_contiguous():
        arr.storage[arr.offset : arr.offset + len(values)] = values
    else:  # pragma: no cover - parameters are made contiguous
        for pos, v in zip(positions(arr.shape, arr.strides, arr.offset), values):
            arr.storage[pos] = v


class Optimizer:
    """Holds the parameters (those with ``requires_grad``) and per-parameter state."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise OptimizerError(
                f"tinytorch/optim.py: {type(self).__name__}: params: expected at least one, found none"
            )
        self.defaults = defaults
        self.state: dict[int, dict[str, Any]] = {id(p): {} for p in self.params}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``None``, as torch's default) before the next backward pass."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                _write(p.grad, [0.0] * p.grad.data.numel())

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for p in self.params:
            if p.grad is not None:
                new = self._update(_values(p), _values(p.grad), self.state[id(p)])
                _write(p, new)

    def _update(self, w: list[float], g: list[float], state: dict[str, Any]) -> list[float]:
        raise NotImplementedError


def _check(name: str, value: float, low: float, high: float = math.inf, cls: str = "") -> None:
    if not low <= value < high:
        raise OptimizerError(f"tinytorch/optim.py: {cls}: {name}: expected a value in [{low}, {high}), found {value}")


class SGD(Optimizer):
    """``torch.optim.SGD``: w -= lr * g, with optional momentum, dampening, Nesterov and L2 weight decay."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            _check(name, v, 0.0, cls="SGD")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise OptimizerError("tinytorch/optim.py: SGD: nesterov: expected momentum > 0 and dampening == 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay))
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov

    def _update(self, w: list[float], g: list[float], state: dict[str, Any]) -> list[float]:
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        if wd:
            g = [gi + wd * wi for gi, wi in zip(g, w)]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:  # the first step starts the buffer at g (no dampening), as torch does
                buf = list(g)
            else:
                buf = [mu * b + (1.0 - self.dampening) * gi for b, gi in zip(buf, g)]
            state["momentum_buffer"] = buf
            g = [gi + mu * b for gi, b in zip(g, buf)] if self.nesterov else buf
        return [wi - lr * gi for wi, gi in zip(w, g)]


class Adam(Optimizer):
    """``torch.optim.Adam``: moment estimates with bias correction; ``weight_decay`` is L2 added to g."""

    decoupled = False  # AdamW sets this: decay the weights directly instead of adding wd * w to g

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        cls = type(self).__name__
        _check("lr", lr, 0.0, cls=cls)
        _check("eps", eps, 0.0, cls=cls)
        _check("betas[0]", betas[0], 0.0, 1.0, cls=cls)
        _check("betas[1]", betas[1], 0.0, 1.0, cls=cls)
        _check("weight_decay", weight_decay, 0.0, cls=cls)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))
        self.lr, self.betas, self.eps, self.weight_decay, self.amsgrad = lr, betas, eps, weight_decay, amsgrad

    def _update(self, w: list[float], g: list[float], state: dict[str, Any]) -> list[float]:
        lr, (b1, b2), eps, wd = self.lr, self.betas, self.eps, self.weight_decay
        if not state:
            state.update(step=0, exp_avg=[0.0] * len(w), exp_avg_sq=[0.0] * len(w))
            if self.amsgrad:
                state["max_exp_avg_sq"] = [0.0] * len(w)
        state["step"] += 1
        t = state["step"]
        if self.decoupled:
            w = [wi * (1.0 - lr * wd) for wi in w]  # AdamW: decay weights, independent of the gradient
        elif wd:
            g = [gi + wd * wi for gi, wi in zip(g, w)]  # Adam: L2 penalty folded into the gradient
        # m <- b1 m + (1 - b1) g, written as torch's lerp: m + (1 - b1)(g - m)
        m = [mi + (1.0 - b1) * (gi - mi) for mi, gi in zip(state["exp_avg"], g)]
        v = [b2 * vi + (1.0 - b2) * gi * gi for vi, gi in zip(state["exp_avg_sq"], g)]
        state["exp_avg"], state["exp_avg_sq"] = m, v
        if self.amsgrad:
            v = state["max_exp_avg_sq"] = [max(a, b) for a, b in zip(state["max_exp_avg_sq"], v)]
        step_size = lr / (1.0 - b1**t)  # bias corrections for m and v
        bias_correction2_sqrt = math.sqrt(1.0 - b2**t)
        return [wi - step_size * mi / (math.sqrt(vi) / bias_correction2_sqrt + eps) for wi, mi, vi in zip(w, m, v)]


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay ``w <- w (1 - lr wd)`` (Loshchilov & Hutter)."""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
