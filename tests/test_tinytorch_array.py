"""TinyArray views against torch: after each view op, shape, stride(), storage_offset(), contiguity and
values must equal torch's for the same op on the same data."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytorch.array import TinyArray
from tinytorch.storage import ShapeError, broadcast_shapes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VIEW_OPS = ["permute", "transpose", "slice", "int", "unsqueeze", "squeeze", "expand", "view", "reshape", "none", "list"]


def assert_same_view(a: TinyArray, t: torch.Tensor, what: str, strides: bool = True) -> None:
    assert tuple(a.shape) == tuple(t.shape), f"{what}: shape {a.shape} vs {t.shape}"
    if strides:
        assert a.stride() == t.stride(), f"{what}: stride {a.stride()} vs {t.stride()}"
        assert a.storage_offset() == t.storage_offset(), f"{what}: offset {a.storage_offset()} vs {t.storage_offset()}"
        assert a.is_contiguous() == t.is_contiguous(), f"{what}: is_contiguous"
    assert a.tolist() == t.tolist(), f"{what}: values"


@st.composite
def a_slice(draw: Callable, n: int) -> slice:
    """A non-empty slice of range(n), written with negative indices or None sometimes."""
    start = draw(st.integers(0, n - 1))
    stop = draw(st.integers(start + 1, n))
    step = draw(st.integers(1, 3))
    start_w = draw(st.sampled_from([start, start - n, None if start == 0 else start]))
    stop_w = draw(st.sampled_from([stop, None if stop == n else stop, stop - n if stop < n else stop]))
    return slice(start_w, stop_w, step)


def step(data: st.DataObject, a: TinyArray, t: torch.Tensor) -> tuple[str, TinyArray, torch.Tensor, bool]:
    """Apply one random view op to both; returns (description, a, t, compare_strides)."""
    nd = t.dim()
    kind = data.draw(st.sampled_from(VIEW_OPS), label="op")
    if kind == "permute" and nd:
        perm = data.draw(st.permutations(range(nd)))
        return f"permute{perm}", a.permute(*perm), t.permute(*perm), True
    if kind == "transpose" and nd:
        d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
        return f"transpose({d0},{d1})", a.transpose(d0, d1), t.transpose(d0, d1), True
    if kind == "slice" and nd and t.numel():
        key = tuple(data.draw(a_slice(n)) for n in t.shape)
        return f"[{key}]", a[key], t[key], True
    if kind == "int" and nd and t.numel():
        d = data.draw(st.integers(0, nd - 1))
        i = data.draw(st.integers(-t.shape[d], t.shape[d] - 1))
        key = (slice(None),) * d + (i,)
        return f"[{key}]", a[key], t[key], True
    if kind == "unsqueeze":
        d = data.draw(st.integers(-nd - 1, nd))
        return f"unsqueeze({d})", a.unsqueeze(d), t.unsqueeze(d), True
    if kind == "squeeze":
        d = data.draw(st.one_of(st.none(), st.integers(-nd, nd - 1))) if nd else None
        return f"squeeze({d})", a.squeeze(d), t.squeeze() if d is None else t.squeeze(d), True
    if kind == "expand":
        sizes = [data.draw(st.sampled_from([1, 3])) if n == 1 else n for n in t.shape]
        lead = [2] if data.draw(st.booleans()) or not sizes else []  # torch's expand() needs >= 1 size
        return f"expand({lead + sizes})", a.expand(*lead, *sizes), t.expand(*lead, *sizes), True
    if kind == "view" and nd >= 2:
        new = (*t.shape[:-2], -1)
        try:
            tv = t.view(new)
        except RuntimeError:
            with pytest.raises(ShapeError, match="view size is not compatible"):
                a.view(*new)
            return "view (both refuse)", a, t, True
        return f"view{new}", a.view(*new), tv, True
    if kind == "reshape":
        new = tuple(reversed(t.shape))
        return f"reshape{new}", a.reshape(*new), t.reshape(new), True
    if kind == "none":
        key = (slice(None), None) if nd else (None,)
        return "[:, None]", a[key], t[key], True
    if kind == "list" and nd and t.numel():
        d = data.draw(st.integers(0, nd - 1))
        idx = data.draw(st.lists(st.integers(-t.shape[d], t.shape[d] - 1), min_size=1, max_size=3))
        key = (slice(None),) * d + (idx,)
        # A gathered copy: values and shape only. torch lays its copy out in the input's memory order (an
        # implementation detail; tinytorch copies are contiguous), so the chain goes on from a contiguous copy.
        return f"[{key}]", a[key], t[key].clone(memory_format=torch.contiguous_format), False
    return "noop", a, t, True


@SETTINGS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_view_chains_match_torch_strides(shape: list[int], data: st.DataObject) -> None:
    n = math.prod(shape)
    t = torch.arange(n, dtype=torch.float64).reshape(shape)
    a = TinyArray([float(i) for i in range(n)], shape)
    history = []
    for _ in range(data.draw(st.integers(1, 5), label="steps")):
        what, a, t, strides = step(data, a, t)
        history.append(what)
        assert_same_view(a, t, " -> ".join(history), strides)
        c, tc = a.contiguous(), t.contiguous()
        assert_same_view(c, tc, " -> ".join(history) + " -> contiguous()")


def test_views_share_storage_and_writes_show_through() -> None:
    a = TinyArray([float(i) for i in range(6)], (2, 3))
    t = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    va, vt = a.transpose(0, 1)[1:], t.transpose(0, 1)[1:]
    va[0] = TinyArray([10.0, 20.0])
    vt[0] = torch.tensor([10.0, 20.0], dtype=torch.float64)
    assert va.storage is a.storage
    assert a.tolist() == t.tolist()


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.integers(1, 4), max_size=4), b=st.lists(st.integers(1, 4), max_size=4))
def test_broadcast_shapes_match_torch(a: list[int], b: list[int]) -> None:
    try:
        expected = tuple((torch.zeros(a) + torch.zeros(b)).shape)
    except RuntimeError as e:  # same message as torch's elementwise ops
        with pytest.raises(ShapeError) as info:
            broadcast_shapes(a, b)
        assert str(info.value) == str(e)
        return
    assert broadcast_shapes(a, b) == expected


def test_repr_is_readable() -> None:
    a = TinyArray([1.0, -2.5, 3.0, 4.0], (2, 2))
    text = repr(a.transpose(0, 1))
    assert "[[ 1.0000,  3.0000]," in text and "[-2.5000,  4.0000]]" in text
    assert "shape=(2, 2), strides=(1, 2), offset=0" in text


def test_matmul_and_reduce_match_torch() -> None:
    t1 = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 7
    t2 = torch.arange(20, dtype=torch.float64).reshape(4, 5) - 3
    a1, a2 = TinyArray(t1.flatten().tolist(), (2, 3, 4)), TinyArray(t2.flatten().tolist(), (4, 5))
    torch.testing.assert_close(
        torch.tensor(a1.matmul(a2).tolist(), dtype=torch.float64), (t1 @ t2), rtol=1e-12, atol=1e-12
    )
    tt_bmm = a1.matmul(a1.transpose(-1, -2)).tolist()
    torch.testing.assert_close(
        torch.tensor(tt_bmm, dtype=torch.float64), t1 @ t1.transpose(-1, -2), rtol=1e-12, atol=1e-12
    )
    red = torch.tensor(a1.reduce((0, 2), True, sum).tolist(), dtype=torch.float64)
    torch.testing.assert_close(red, t1.sum((0, 2), keepdim=True), rtol=1e-12, atol=1e-12)
