"""tinytorch ops against torch (float64): one op table drives forward, backward and grad_check tests.

Hypothesis draws the shapes (including broadcastable pairs and batched matmul shapes) and the memory
layout of every input (contiguous, permuted, or a strided slice of a bigger tensor). Each op runs in
both libraries on the same numbers; outputs and the gradients of the underlying leaf tensors must
agree to 1e-9. ``grad_check`` then compares tinytorch's backward with central differences.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as torch_F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinytorch as tt
import tinytorch.functional as tt_F
from tinytorch.testing import GradCheckError, grad_check

LIBS = {"torch": (torch, torch_F, torch.float64), "tinytorch": (tt, tt_F, tt.float64)}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- shape strategies -------------------------------------------------------------------------------
def shapes(min_dims: int = 1, max_dims: int = 3, min_size: int = 1, max_size: int = 4) -> st.SearchStrategy:
    return st.lists(st.integers(min_size, max_size), min_size=min_dims, max_size=max_dims).map(tuple)


@st.composite
def broadcast_pair(draw: Callable, min_dims: int = 1, max_dims: int = 3) -> list[tuple]:
    """Two shapes that broadcast: per aligned dim both n, or one of them 1; the shorter loses leading dims."""
    full = draw(shapes(min_dims, max_dims))
    a, b = [], []
    for n in full:
        kind = draw(st.sampled_from(["same", "a1", "b1"]))
        a.append(1 if kind == "a1" else n)
        b.append(1 if kind == "b1" else n)
    cut = draw(st.integers(0, len(b) - 1))
    b = b[cut:]
    return [tuple(a), tuple(b)] if draw(st.booleans()) else [tuple(b), tuple(a)]


@st.composite
def matmul_shapes(draw: Callable) -> list[tuple]:
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if draw(st.booleans()):
        return [(n, k), (k, m)]
    ba, bb = draw(broadcast_pair(1, 2))
    kind = draw(st.sampled_from(["batched", "a_only"]))
    return [ba + (n, k), bb + (k, m)] if kind == "batched" else [ba + (n, k), (k, m)]


def fixed(*shape_list: tuple) -> st.SearchStrategy:
    return st.just(list(shape_list))


def one(**kw: int) -> st.SearchStrategy:
    return shapes(**kw).map(lambda s: [s])


# -- the op table -----------------------------------------------------------------------------------
@dataclass
class Op:
    name: str
    fn: Callable  # fn(L, F, *inputs) with L = torch or tinytorch, F = its functional module
    shapes: st.SearchStrategy  # -> list of input shapes
    low: float = -2.0  # inputs drawn uniformly from [low, high]
    high: float = 2.0
    grad: bool = True


POS = {"low": 0.3, "high": 2.0}


def _ce(L: object, F: object, x: object) -> object:
    n, c = x.shape
    target = L.tensor([(3 * i + 1) % c if i != 1 else -100 for i in range(n)])  # row 1 is ignored
    return F.cross_entropy(x, target, ignore_index=-100)


OPS = [
    # elementwise, one input
    Op("neg", lambda L, F, x: -x, one()),
    Op("exp", lambda L, F, x: x.exp(), one()),
    Op("log", lambda L, F, x: x.log(), one(), **POS),
    Op("sqrt", lambda L, F, x: x.sqrt(), one(), **POS),
    Op("rsqrt", lambda L, F, x: x.rsqrt(), one(), **POS),
    Op("tanh", lambda L, F, x: x.tanh(), one()),
    Op("sigmoid", lambda L, F, x: x.sigmoid(), one()),
    Op("relu", lambda L, F, x: F.relu(x), one()),
    Op("silu", lambda L, F, x: F.silu(x), one()),
    Op("gelu", lambda L, F, x: F.gelu(x), one()),
    Op("gelu_tanh", lambda L, F, x: F.gelu(x, approximate="tanh"), one()),
    Op("cos", lambda L, F, x: x.cos(), one()),
    Op("sin", lambda L, F, x: x.sin(), one()),
    Op("abs", lambda L, F, x: x.abs(), one()),
    Op("pow_scalar", lambda L, F, x: x**3, one()),
    Op("pow_frac", lambda L, F, x: x**0.5, one(), **POS),
    Op("rpow", lambda L, F, x: 2.0**x, one()),
    Op("rsub_rmul", lambda L, F, x: 3.0 - 2.0 * x, one()),
    Op("rdiv", lambda L, F, x: 2.0 / x, one(), **POS),
    Op("div_scalar", lambda L, F, x: x / 3.0 + 1, one()),
    Op("clamp", lambda L, F, x: x.clamp(-0.5, 0.7), one()),
    Op("masked_fill", lambda L, F, x: x.masked_fill(x > 0.3, -1.0), one()),
    # broadcasting binary
    Op("add", lambda L, F, a, b: a + b, broadcast_pair()),
    Op("sub", lambda L, F, a, b: a - b, broadcast_pair()),
    Op("mul", lambda L, F, a, b: a * b, broadcast_pair()),
    Op("div", lambda L, F, a, b: a / b, broadcast_pair(), **POS),
    Op("pow", lambda L, F, a, b: a**b, broadcast_pair(), **POS),
    Op("where", lambda L, F, a, b: L.where(a > b, a, b * 2), broadcast_pair()),
    Op("matmul", lambda L, F, a, b: a @ b, matmul_shapes()),
    Op("matvec", lambda L, F, a, b: a @ b, st.sampled_from([[(3, 4), (4,)], [(4,), (4, 2)], [(4,), (4,)]])),
    # reductions
    Op("sum_all", lambda L, F, x: x.sum(), one()),
    Op("sum_dim0", lambda L, F, x: x.sum(0), one()),
    Op("sum_last_keepdim", lambda L, F, x: x.sum(-1, keepdim=True), one()),
    Op("sum_dims", lambda L, F, x: x.sum((0, -1)), one(min_dims=2)),
    Op("mean_all", lambda L, F, x: x.mean(), one()),
    Op("mean_last", lambda L, F, x: x.mean(-1, keepdim=True), one()),
    Op("var", lambda L, F, x: x.var(-1), one(min_size=2)),
    Op("var_biased", lambda L, F, x: x.var(0, keepdim=True, unbiased=False), one(min_size=2)),
    Op("std", lambda L, F, x: x.std(), one(min_size=2)),
    Op("max_all", lambda L, F, x: x.max(), one()),
    Op("min_all", lambda L, F, x: x.min(), one()),
    Op("max_dim", lambda L, F, x: x.max(-1).values, one()),
    Op("min_dim_keepdim", lambda L, F, x: x.min(0, keepdim=True).values, one()),
    Op("softmax_last", lambda L, F, x: F.softmax(x, dim=-1), one()),
    Op("softmax_first", lambda L, F, x: x.softmax(0), one()),
    Op("log_softmax", lambda L, F, x: F.log_softmax(x, dim=-1), one()),
    # views, indexing, joining
    Op("view", lambda L, F, x: x.contiguous().view(-1) * 1, one()),
    Op("reshape", lambda L, F, x: x.reshape(-1, 1), one()),
    Op("permute", lambda L, F, x: x.permute(*reversed(range(x.dim()))), one()),
    Op("transpose", lambda L, F, x: x.transpose(0, -1), one()),
    Op("unsqueeze_squeeze", lambda L, F, x: x.unsqueeze(1).squeeze(), one()),
    Op("expand", lambda L, F, x: x.unsqueeze(0).expand(3, *x.shape), one()),
    Op("flatten", lambda L, F, x: x.flatten(), one()),
    Op("slice_step", lambda L, F, x: x[..., ::2], one()),
    Op("slice_negative", lambda L, F, x: x[-1, 1:] if x.dim() > 1 else x[-2:], one(min_size=2)),
    Op("index_list", lambda L, F, x: x[[0, -1, 0]], one()),
    Op("index_tensor", lambda L, F, x: x[:, L.tensor([[1, 0], [0, 1]])], one(min_dims=2, min_size=2)),
    Op("index_mask", lambda L, F, x: x[x > 0], one()),
    Op("cat", lambda L, F, a, b: L.cat([a, b * 2, a], dim=-1), one().map(lambda s: s * 2)),
    Op("cat_dim0", lambda L, F, a: L.cat([a, a.exp()], dim=0), one()),
    Op("stack", lambda L, F, a: L.stack([a, a * a], dim=1), one()),
    Op("tril", lambda L, F, x: x.tril(), one(min_dims=2)),
    Op("triu_k", lambda L, F, x: x.triu(1), one(min_dims=2)),
    # functional (nn)
    Op("cross_entropy", _ce, fixed((4, 5))),
    Op("cross_entropy_sum", lambda L, F, x: F.cross_entropy(x, L.tensor([2, 0, 1]), reduction="sum"), fixed((3, 4))),
    Op("embedding", lambda L, F, w: F.embedding(L.tensor([[0, 4, 2], [4, 4, 1]]), w), fixed((5, 3))),
    Op("linear", lambda L, F, x, w, b: F.linear(x, w, b), fixed((2, 3, 4), (5, 4), (5,))),
    Op("rms_norm", lambda L, F, x, w: F.rms_norm(x, (4,), w, eps=1e-6), fixed((2, 3, 4), (4,))),
    Op("layer_norm", lambda L, F, x, w, b: F.layer_norm(x, (4,), w, b), fixed((3, 4), (4,), (4,))),
    Op("mse_loss", lambda L, F, a, b: F.mse_loss(a, b), fixed((3, 2), (3, 2))),
    Op(
        "sdpa_causal",
        lambda L, F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        fixed((1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)),
    ),
    Op("argmax", lambda L, F, x: x.argmax(-1), one(), grad=False),
    Op("compare", lambda L, F, a, b: (a <= b).long() + (a > b).long() * 2, broadcast_pair(), grad=False),
]


# -- inputs: the same numbers in both libraries, in a drawn memory layout ------------------------------
@dataclass
class Layout:
    kind: str  # contiguous | permuted | sliced
    perm: tuple[int, ...]


def base_shape(shape: tuple, layout: Layout) -> tuple:
    if layout.kind == "permuted":
        return tuple(shape[p] for p in layout.perm)
    if layout.kind == "sliced":
        return tuple(2 * n + 1 for n in shape)
    return shape


def make_input(L: object, dtype: object, values: list, shape: tuple, layout: Layout) -> tuple:
    """(leaf, view of the leaf with ``shape``); the leaf is what gradients are compared on."""
    leaf = L.tensor(values, dtype=dtype).reshape(base_shape(shape, layout)).detach().requires_grad_()
    if layout.kind == "permuted":
        inv = [layout.perm.index(i) for i in range(len(shape))]
        return leaf, leaf.permute(*inv)
    if layout.kind == "sliced":
        return leaf, leaf[tuple(slice(1, None, 2) for _ in shape)]
    return leaf, leaf


@st.composite
def layouts(draw: Callable, ndim: int) -> Layout:
    kind = draw(st.sampled_from(["contiguous", "permuted", "sliced"]))
    return Layout(kind, tuple(draw(st.permutations(range(ndim)))))


def run(op: Op, lib: str, values: list, in_shapes: list, lays: list, grad_out_seed: int) -> tuple:
    L, F, dtype = LIBS[lib]
    leaves, inputs = [], []
    for vals, shape, lay in zip(values, in_shapes, lays):
        leaf, x = make_input(L, dtype, vals, shape, lay)
        leaves.append(leaf)
        inputs.append(x)
    out = op.fn(L, F, *inputs)
    if not op.grad:
        return out.tolist(), None
    rng = random.Random(grad_out_seed)
    g = L.tensor([rng.uniform(-1, 1) for _ in range(out.numel())], dtype=dtype).reshape(tuple(out.shape))
    out.backward(g)
    return out.tolist(), [leaf.grad.tolist() if leaf.grad is not None else None for leaf in leaves]


def assert_close(ours: object, ref: object, what: str) -> None:
    a = torch.tensor(ours, dtype=torch.float64)
    b = torch.tensor(ref, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
@SETTINGS
@given(data=st.data())
def test_op_forward_backward_matches_torch(op: Op, data: st.DataObject) -> None:
    in_shapes = data.draw(op.shapes, label="shapes")
    lays = [data.draw(layouts(len(s)), label="layout") for s in in_shapes]
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = random.Random(seed)
    values = [
        [rng.uniform(op.low, op.high) for _ in range(math.prod(base_shape(s, lay)))] for s, lay in zip(in_shapes, lays)
    ]
    ref_out, ref_grads = run(op, "torch", values, in_shapes, lays, seed)
    out, grads = run(op, "tinytorch", values, in_shapes, lays, seed)
    assert_close(out, ref_out, f"{op.name} forward")
    if op.grad:
        for i, (g, rg) in enumerate(zip(grads, ref_grads)):
            assert (g is None) == (rg is None), f"{op.name}: input {i} grad presence differs"
            if rg is not None:
                assert_close(g, rg, f"{op.name} grad of input {i}")


GRAD_OPS = [op for op in OPS if op.grad]


@pytest.mark.parametrize("op", GRAD_OPS, ids=[op.name for op in GRAD_OPS])
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_op_grad_check(op: Op, data: st.DataObject) -> None:
    in_shapes = data.draw(op.shapes, label="shapes")
    rng = random.Random(data.draw(st.integers(0, 2**16), label="seed"))
    inputs = [
        tt.tensor([rng.uniform(op.low, op.high) for _ in range(math.prod(s))]).reshape(s).detach().requires_grad_()
        for s in in_shapes
    ]
    assert grad_check(lambda *xs: op.fn(tt, tt_F, *xs), inputs)


def test_grad_check_catches_a_wrong_backward() -> None:
    """grad_check must be able to fail: a hand-made op with a backward off by a factor 2."""
    from tinytorch.ops import record_op

    def bad_square(x: tt.Tensor) -> tt.Tensor:
        return record_op(x.data * x.data, (x,), "bad_square", lambda g: (g * x.data * 4.0,))

    x = tt.tensor([0.5, -1.0, 2.0], requires_grad=True)
    with pytest.raises(GradCheckError, match="input 0 element 0"):
        grad_check(bad_square, [x])


def test_gradient_accumulates_and_no_grad_records_nothing() -> None:
    ref = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    x = tt.tensor([1.0, -2.0, 3.0], requires_grad=True)
    for a in (ref, x):
        (a * a).sum().backward()
        (a.exp()).sum().backward()  # second backward adds to .grad
    assert_close(x.grad.tolist(), ref.grad.tolist(), "accumulated grad")
    with tt.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf and y._parents == ()
    z = x * 2
    assert z.requires_grad and z._parents == (x, z._parents[1]) and z._op == "mul"
    assert x.detach().requires_grad is False and x.detach().data.storage is x.data.storage


def test_shared_subexpression_and_retain_grad() -> None:
    """A node used twice gets both contributions; retain_grad keeps a non-leaf's grad (as torch)."""
    vals = [[0.3, -1.2], [2.0, 0.7]]
    grads = {}
    for name, L in (("torch", torch), ("tinytorch", tt)):
        x = L.tensor(vals, dtype=LIBS[name][2], requires_grad=True)
        h = x @ x.T
        h.retain_grad()
        loss = (h * h.tanh() + h).sum()
        loss.backward()
        grads[name] = (x.grad.tolist(), h.grad.tolist())
    assert_close(grads["tinytorch"][0], grads["torch"][0], "x.grad")
    assert_close(grads["tinytorch"][1], grads["torch"][1], "h.grad")


def test_inplace_ops_under_no_grad_match_torch() -> None:
    vals = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    results = {}
    for name, L in (("torch", torch), ("tinytorch", tt)):
        p = L.tensor(vals, dtype=LIBS[name][2], requires_grad=True)
        with L.no_grad():
            p[:, 1:].mul_(2.0)  # through a view: the leaf's storage changes
            p.add_(L.ones(3, dtype=LIBS[name][2]), alpha=0.5)
            p[0] = L.tensor([7.0, 8.0, 9.0], dtype=LIBS[name][2])
            q = L.zeros(2, 3, dtype=LIBS[name][2]).copy_(p)
            q.fill_(1.5)
        w = L.zeros(3, dtype=LIBS[name][2])
        w += 4.0
        w.zero_()
        results[name] = (p.tolist(), q.tolist(), w.tolist())
    assert results["tinytorch"] == results["torch"]


def test_creation_and_seeded_generator() -> None:
    assert tt.arange(5).tolist() == torch.arange(5).tolist() and tt.arange(5).dtype == "int64"
    assert tt.arange(1.0, 2.0, 0.25).tolist() == torch.arange(1.0, 2.0, 0.25).tolist()
    assert tt.eye(2, 3).tolist() == torch.eye(2, 3).tolist()
    assert tt.full((2, 2), 7).tolist() == torch.full((2, 2), 7).tolist()
    assert tt.linspace(0, 1, 5).tolist() == torch.linspace(0, 1, 5, dtype=torch.float64).tolist()
    assert tt.zeros_like(tt.ones(2, 3)).shape == (2, 3) and tt.ones_like(tt.zeros(4)).tolist() == [1.0] * 4
    tt.manual_seed(3)
    a = tt.randn(2, 3)
    tt.manual_seed(3)
    b = tt.randn(2, 3)
    g = tt.Generator().manual_seed(3)
    c = tt.randn(2, 3, generator=g)
    assert a.tolist() == b.tolist() == c.tolist()
    u = tt.rand(1000, generator=g).tolist()
    assert 0 <= min(u) and max(u) < 1
    ids = tt.randint(0, 5, (200,), generator=g).tolist()
    assert set(ids) == set(range(5))
    draws = tt.multinomial(tt.tensor([0.0, 1.0, 0.0]), 3, replacement=True, generator=g).tolist()
    assert draws == [1, 1, 1]


def test_shape_is_size_and_scalars() -> None:
    x = tt.zeros(2, 3)
    t = torch.zeros(2, 3)
    assert x.shape == t.shape and x.size() == tuple(t.size()) and x.size(1) == t.size(1)
    assert repr(x.shape) == "tinytorch.Size([2, 3])" and x.shape.numel() == t.shape.numel()
    assert x.numel() == 6 and x.dim() == 2 and x.T.shape == (3, 2)
    assert tt.tensor(2.5).item() == 2.5 and tt.tensor([[1, 2]]).tolist() == [[1, 2]]


def test_debug_flags_log_forward_and_backward(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG.on(...) gates logging in op dispatch and in backward; nothing is logged while no flag is set."""
    from tinytorch.debug import DEBUG

    x = tt.tensor([1.0, 2.0], requires_grad=True)
    with caplog.at_level("DEBUG", logger="tinytorch"):
        (x * x).sum().backward()
        assert not [r for r in caplog.records if r.name == "tinytorch"]
        with DEBUG.flags("Tensor.backward", "Tensor.matmul"):
            y = x @ x
            y.backward()
    messages = [r.getMessage() for r in caplog.records if r.name == "tinytorch"]
    assert any(m.startswith("matmul") for m in messages), messages
    assert any(m.startswith("backward matmul") for m in messages), messages


def test_exp_edges_match_torch():
    # nan must stay nan and exp stays finite up to float64's real overflow (~709.78), as in torch
    values = [float("nan"), 709.75, 710.0, -800.0, float("-inf")]
    got = tt.tensor(values).exp().tolist()
    want = torch.tensor(values, dtype=torch.float64).exp().tolist()
    assert [str(v) for v in got] == [str(v) for v in want]
