"""Reverse-mode autograd for ``Tensor``: grad mode, recording ops, and the backward graph walk.

Every op (``ops.py`` / ``functional.py``) returns a new tensor that remembers its inputs
(``_parents``), its op name (``_op``) and a ``_backward`` closure mapping d loss/d output to
d loss/d input for each parent (``record_op``). ``backward`` visits the graph in reverse
topological order, sums the gradients that reach each node, and stores them in ``.grad`` of the
leaves (tensors a user made with ``requires_grad=True``). Inside ``with no_grad():`` nothing is
recorded. This module knows tensors only by those attributes, so ``tensor.py`` and ``ops.py``
both build on it without importing each other in a circle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from LogRelay import get_relay
from tinytorch.array import TinyArray
from tinytorch.debug import DEBUG
from tinytorch.storage import TinyTorchError

__all__ = [
    "is_grad_enabled",
    "set_grad_enabled",
    "no_grad",
    "enable_grad",
    "topological_order",
    "record_op",
    "backward",
]

log = get_relay("tinytorch")
_grad_enabled = [True]  # a list so the context managers can flip it in place


def is_grad_enabled() -> bool:
    return _grad_enabled[0]


class set_grad_enabled(contextlib.ContextDecorator):  # noqa: N801 (torch's name)
    """Switch graph recording on or off; usable as a call, a ``with`` block or a decorator."""

    def __init__(self, mode: bool) -> None:
        self.prev = _grad_enabled[0]
        self.mode = mode
        _grad_enabled[0] = mode

    def __enter__(self) -> None:
        _grad_enabled[0] = self.mode

    def __exit__(self, *exc: Any) -> None:
        _grad_enabled[0] = self.prev


class no_grad(contextlib.ContextDecorator):  # noqa: N801 (torch's name)
    """``with no_grad():`` (or ``@no_grad()``): ops inside record no graph (inference, optimizer steps)."""

    def __enter__(self) -> None:
        self.prev = _grad_enabled[0]
        _grad_enabled[0] = False

    def __exit__(self, *exc: Any) -> None:
        _grad_enabled[0] = self.prev


class enable_grad(no_grad):  # noqa: N801 (torch's name)
    """Record the graph again inside a ``no_grad`` block."""

    def __enter__(self) -> None:
        self.prev = _grad_enabled[0]
        _grad_enabled[0] = True


def topological_order(root: Any, parents: Callable[[Any], Iterable[Any]]) -> list:
    """``root`` and every node it depends on through ``parents(node)``, each after all of its parents.

    Iterative depth-first search (deep graphs exceed Python's recursion limit); the scalar ``Value``
    (value.py) walks its graph with it too.
    """
    order: list = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in parents(node) if id(p) not in seen)
    return order


def record_op(out: Any, parents: tuple[Any, ...], op: str, backward_fn: Callable) -> Any:
    """Mark ``out`` as made by ``op`` from ``parents`` if grad mode is on and an input needs grad."""
    if _grad_enabled[0]:
        out._parents, out._op = parents, op
        if any(p.requires_grad for p in parents):
            out.requires_grad, out._backward = True, backward_fn
    if DEBUG.on(out, op):
        log.debug("%s %s -> %s", op, [tuple(p.shape) for p in parents], tuple(out.shape))
    return out


def backward(root: Any, seed: TinyArray) -> None:
    """Accumulate d root / d leaf into every leaf's ``.grad`` (and retained nodes'); ``seed`` = d loss / d root."""
    grads: dict[int, TinyArray] = {id(root): seed}
    for node in reversed(topological_order(root, lambda n: [p for p in n._parents if p.requires_grad])):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if DEBUG.on(node, "backward"):
            log.debug("backward %s %s: grad %s", node._op or "leaf", tuple(node.shape), g)
        if node._backward is None or node._retain:
            node._accumulate_grad(g)
        if node._backward is None:
            continue
        for parent, pg in zip(node._parents, node._backward(g)):
            if pg is None or not parent.requires_grad:
                continue
            if pg.shape != parent.shape:  # a broken backward rule; fail loudly, not silently
                raise TinyTorchError(f"backward of {node._op}: grad shape {pg.shape} != input shape {parent.shape}")
            k = id(parent)
            grads[k] = grads[k] + pg if k in grads else pg
