"""Value: reverse-mode autograd on single numbers (the idea behind every tensor library, in ~200 lines).

Each operation returns a new ``Value`` that remembers its inputs (``_parents``), the operation's name
(``_op``, the same names tinytorch tensors use) and a ``_backward`` closure that applies the chain rule:
given ``out.grad`` (d loss / d out) it adds ``d out / d parent * out.grad`` to each parent's ``grad``.
``backward()`` visits the graph in reverse topological order so a node's gradient is complete before it
is passed on. This follows Karpathy's micrograd (engine.py) with more ops and torch's edge-case values
(``log(0) = -inf``, ``x / 0 = inf``, NaN for a negative base with a fractional exponent).

    >>> a, b = Value(2.0), Value(-3.0)
    >>> c = a * b + a.exp()
    >>> c.backward()
    >>> a.grad == b.data + math.exp(2.0)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from tinytorch.autograd import topological_order
from tinytorch.scalar_math import ieee_div, ieee_exp, ieee_log, ieee_pow, stable_sigmoid

__all__ = ["Value"]

Number = int | float


def _as_value(x: Value | Number) -> Value:
    return x if isinstance(x, Value) else Value(float(x))


class Value:
    """A scalar that records how it was computed, so ``backward()`` can fill in ``grad`` of its inputs."""

    __slots__ = ("data", "grad", "label", "_parents", "_op", "_backward")

    def __init__(self, data: Number, _parents: tuple[Value, ...] = (), _op: str = "", label: str = "") -> None:
        self.data = float(data)
        self.grad = 0.0
        self.label = label
        self._parents = _parents
        self._op = _op
        self._backward: Callable[[], None] = _no_backward

    # -- binary ops ------------------------------------------------------------------------------
    def __add__(self, other: Value | Number) -> Value:
        other = _as_value(other)
        out = Value(self.data + other.data, (self, other), "add")

        def _backward() -> None:
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __sub__(self, other: Value | Number) -> Value:
        other = _as_value(other)
        out = Value(self.data - other.data, (self, other), "sub")

        def _backward() -> None:
            self.grad += out.grad
            other.grad -= out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | Number) -> Value:
        other = _as_value(other)
        out = Value(self.data * other.data, (self, other), "mul")

        def _backward() -> None:
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __truediv__(self, other: Value | Number) -> Value:
        other = _as_value(other)
        out = Value(ieee_div(self.data, other.data), (self, other), "div")

        def _backward() -> None:
            self.grad += ieee_div(out.grad, other.data)  # d(a/b)/da = 1/b
            other.grad += -ieee_div(out.data, other.data) * out.grad  # d(a/b)/db = -a/b^2

        out._backward = _backward
        return out

    def __pow__(self, other: Value | Number) -> Value:
        other = _as_value(other)
        a, b = self.data, other.data
        out = Value(ieee_pow(a, b), (self, other), "pow")

        def _backward() -> None:
            if b != 0.0:  # d(a^b)/da = b a^(b-1); torch uses 0 where b == 0 (even at a == 0)
                self.grad += b * ieee_pow(a, b - 1.0) * out.grad
            # d(a^b)/db = a^b log a; torch uses 0 where a == 0 and b >= 0.
            if a == 0.0 and b >= 0.0:
                return
            other.grad += out.data * ieee_log(a) * out.grad

        out._backward = _backward
        return out

    # Reflected forms: ``2 * v`` calls ``v.__rmul__(2)``.
    def __radd__(self, other: Number) -> Value:
        return _as_value(other) + self

    def __rsub__(self, other: Number) -> Value:
        return _as_value(other) - self

    def __rmul__(self, other: Number) -> Value:
        return _as_value(other) * self

    def __rtruediv__(self, other: Number) -> Value:
        return _as_value(other) / self

    def __rpow__(self, other: Number) -> Value:
        return _as_value(other) ** self

    # -- unary ops -------------------------------------------------------------------------------
    def _unary(self, data: float, op: str, local_grad: float) -> Value:
        """A one-input op whose derivative at this point is ``local_grad``."""
        out = Value(data, (self,), op)

        def _backward() -> None:
            self.grad += local_grad * out.grad

        out._backward = _backward
        return out

    def __neg__(self) -> Value:
        return self._unary(-self.data, "neg", -1.0)

    def exp(self) -> Value:
        e = ieee_exp(self.data)
        return self._unary(e, "exp", e)

    def log(self) -> Value:
        return self._unary(ieee_log(self.data), "log", ieee_div(1.0, self.data))

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return self._unary(t, "tanh", 1.0 - t * t)

    def relu(self) -> Value:
        return self._unary(max(self.data, 0.0), "relu", 1.0 if self.data > 0.0 else 0.0)

    def sigmoid(self) -> Value:
        s = stable_sigmoid(self.data)
        return self._unary(s, "sigmoid", s * (1.0 - s))

    def silu(self) -> Value:
        x, s = self.data, stable_sigmoid(self.data)
        return self._unary(x * s, "silu", s * (1.0 + x * (1.0 - s)))  # d(x s)/dx = s + x s (1 - s)

    def sin(self) -> Value:
        return self._unary(math.sin(self.data), "sin", math.cos(self.data))

    def cos(self) -> Value:
        return self._unary(math.cos(self.data), "cos", -math.sin(self.data))

    # -- autograd --------------------------------------------------------------------------------
    def topological_order(self) -> list[Value]:
        """Every node this value depends on, inputs before the nodes computed from them."""
        return topological_order(self, lambda node: node._parents)

    def backward(self, grad: float = 1.0) -> None:
        """Fill in ``x.grad`` = d self / d x for every ``x`` in the graph, with torch's accumulation rules.

        Leaves (values not computed from others, like weights) *add* to their ``grad``, so two calls
        sum two gradients, as torch does. Intermediate nodes are reset to 0 first: their ``grad`` is
        recomputed by each call, otherwise a second call would pass on the first call's gradient again.
        """
        order = self.topological_order()
        for node in order:
            if node._parents:
                node.grad = 0.0
        self.grad += grad
        for node in reversed(order):
            node._backward()

    def zero_grad(self) -> None:
        """Set ``grad`` to 0 on this value and everything it was computed from."""
        for node in self.topological_order():
            node.grad = 0.0

    def __repr__(self) -> str:
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g}{label})"

    @staticmethod
    def sum(values: Iterable[Value | Number]) -> Value:
        """Sum of many values as one chain of ``add`` nodes (``sum(values)`` starts from the int 0)."""
        total: Value | None = None
        for v in values:
            total = _as_value(v) if total is None else total + v
        return total if total is not None else Value(0.0)


def _no_backward() -> None:
    """Leaves have nothing to pass gradients to."""
