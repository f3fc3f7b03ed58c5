"""tinytorch.value.Value against torch (float64): random expression trees, values and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinytorch.value import Value

N_VARS = 3

# name -> (Value version, torch version)
UNARY = {
    "neg": (lambda v: -v, lambda t: -t),
    "exp": (lambda v: v.exp(), torch.exp),
    "tanh": (lambda v: v.tanh(), torch.tanh),
    "relu": (lambda v: v.relu(), torch.relu),
    "sigmoid": (lambda v: v.sigmoid(), torch.sigmoid),
    "silu": (lambda v: v.silu(), F.silu),
    "sin": (lambda v: v.sin(), torch.sin),
    "cos": (lambda v: v.cos(), torch.cos),
    # domain-guarded forms (the guard is part of the expression on both sides)
    "log": (lambda v: (v * v + 0.1).log(), lambda t: torch.log(t * t + 0.1)),
    "pow2": (lambda v: v**2, lambda t: t**2),
    "pow3": (lambda v: v**3, lambda t: t**3),
    "rpow": (lambda v: 2.0**v, lambda t: 2.0**t),
    "radd": (lambda v: 1.5 + v, lambda t: 1.5 + t),
    "rsub": (lambda v: 1.5 - v, lambda t: 1.5 - t),
    "rmul": (lambda v: 1.5 * v, lambda t: 1.5 * t),
    "rdiv": (lambda v: 1.5 / (v * v + 1.0), lambda t: 1.5 / (t * t + 1.0)),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 0.5),
    "pow": lambda a, b: (a * a + 0.5) ** b,
    "add_const": lambda a, b: a + 0.25 - b * 2,
}

# Leaves are input variables; constants enter through the reflected ops (1.5 + x, 2 ** x, ...).
leaves = st.tuples(st.just("var"), st.integers(0, N_VARS - 1))


def extend(children):
    return st.one_of(
        st.tuples(st.just("unary"), st.sampled_from(sorted(UNARY)), children),
        st.tuples(st.just("binary"), st.sampled_from(sorted(BINARY)), children, children),
    )


trees = st.recursive(leaves, extend, max_leaves=12)


def evaluate(tree, xs, side):
    kind = tree[0]
    if kind == "var":
        return xs[tree[1]]
    if kind == "unary":
        return UNARY[tree[1]][side](evaluate(tree[2], xs, side))
    a, b = evaluate(tree[2], xs, side), evaluate(tree[3], xs, side)
    return BINARY[tree[1]](a, b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(tree=trees, inputs=st.lists(st.floats(-2, 2, allow_nan=False), min_size=N_VARS, max_size=N_VARS))
def test_random_expressions_match_torch(tree, inputs):
    vs = [Value(x) for x in inputs]
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    out_v = evaluate(tree, vs, 0)
    out_t = evaluate(tree, ts, 1)
    assume(math.isfinite(out_t.item()) and abs(out_t.item()) < 1e8)
    assert out_v.data == pytest.approx(out_t.item(), rel=1e-9, abs=1e-12)
    out_v.backward()
    out_t.backward()
    for v, t in zip(vs, ts):
        expected = 0.0 if t.grad is None else t.grad.item()
        assume(math.isfinite(expected) and abs(expected) < 1e8)
        assert v.grad == pytest.approx(expected, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("x", [-800.0, -1.7, -0.3, 0.0, 0.4, 2.2, 800.0])
def test_each_unary_op(name, x):
    v = Value(x)
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out_v, out_t = UNARY[name][0](v), UNARY[name][1](t)
    out_v.backward()
    out_t.backward()
    assert out_v.data == pytest.approx(out_t.item(), rel=1e-12, abs=1e-15)
    assert v.grad == pytest.approx(t.grad.item(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("expr", "args"),
    [
        (lambda a, b: a / b, (1.0, 0.0)),
        (lambda a, b: a / b, (-1.0, 0.0)),
        (lambda a, b: a**b, (-2.0, 0.5)),
        (lambda a, b: a**b, (0.0, -1.0)),
        (lambda a, b: a**b, (0.0, 0.0)),
        (lambda a, b: a**b, (0.0, 2.0)),
        (lambda a, b: a.log() + b, (0.0, 1.0)),
        (lambda a, b: a.log() + b, (-1.0, 1.0)),
        (lambda a, b: a.exp() * b, (1000.0, 1.0)),
        (lambda a, b: a.sigmoid() + b.sigmoid(), (-800.0, 800.0)),
    ],
)
def test_edge_values_match_torch(expr, args):
    vs = [Value(x) for x in args]
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in args]
    out_v, out_t = expr(*vs), expr(*ts)
    out_v.backward()
    out_t.backward()
    expected = torch.tensor([out_t.item()] + [t.grad.item() for t in ts], dtype=torch.float64)
    got = torch.tensor([out_v.data] + [v.grad for v in vs], dtype=torch.float64)
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=1e-12, atol=0)


def test_graph_structure_and_reuse():
    a = Value(3.0, label="a")
    b = a * a + a  # a used three times: gradients accumulate
    assert b._op == "add" and b._parents[0]._op == "mul" and b._parents[1] is a
    b.backward()
    assert a.grad == 2 * 3.0 + 1
    order = b.topological_order()
    assert order[-1] is b and order.index(a) < order.index(b._parents[0])
    b.zero_grad()
    assert a.grad == 0.0 and b.grad == 0.0


def test_deep_graph_does_not_hit_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**5000, rel=1e-9)


def test_sum_helper():
    xs = [Value(float(i)) for i in range(4)]
    s = Value.sum(x * x for x in xs)
    s.backward()
    assert s.data == 14.0 and [x.grad for x in xs] == [0.0, 2.0, 4.0, 6.0]
    assert Value.sum([]).data == 0.0


def test_backward_twice_accumulates_like_torch():
    """Leaves accumulate across backward() calls; intermediates are recomputed (torch with retain_graph)."""
    exprs = [
        lambda a, b: a + a,
        lambda a, b: (a * b + a).tanh() * (a - b),
        lambda a, b: ((a * a).exp() + b) ** 2 / (b * b + 1.0),
        lambda a, b: a,  # the root is itself a leaf
    ]
    for expr in exprs:
        a, b = Value(0.7), Value(-1.3)
        ta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        tb = torch.tensor(-1.3, dtype=torch.float64, requires_grad=True)
        out_v, out_t = expr(a, b), expr(ta, tb)
        for _ in range(3):
            out_v.backward()
            out_t.backward(retain_graph=True)
            expected = [0.0 if t.grad is None else t.grad.item() for t in (ta, tb)]
            assert [a.grad, b.grad] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # A second output sharing an intermediate: the shared node must not carry the first call's gradient.
    a, ta = Value(1.5), torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    h, th = a * a, ta * ta
    (h * 3.0).backward()
    (h.exp()).backward()
    (th * 3.0).backward(retain_graph=True)
    th.exp().backward()
    assert a.grad == pytest.approx(ta.grad.item(), rel=1e-12)
