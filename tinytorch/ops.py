"""Differentiable tensor ops: each computes its output with TinyArray and defines ``backward(g)``.

``backward(g)`` receives d loss / d output (a TinyArray shaped like the output) and returns one
gradient per input, shaped like that input (``sum_to`` undoes broadcasting). Names follow torch.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tinytorch.array import TinyArray
from tinytorch.autograd import record_op as _record
from tinytorch.scalar_math import ieee_div, ieee_exp, ieee_log, ieee_pow, stable_sigmoid
from tinytorch.storage import (
    ShapeError,
    bool_,
    float64,
    infer_dtype,
    int64,
    normalize_dim,
    positions,
)

if TYPE_CHECKING:  # for annotations only: tensor.py imports this module, not the other way round
    from tinytorch.tensor import Tensor

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul", "unary", "UNARY",
    "eq", "ne", "lt", "le", "gt", "ge",
    "sum", "mean", "max", "min", "var", "std", "argmax", "argmin",
    "view", "reshape", "permute", "transpose", "unsqueeze", "squeeze", "expand", "contiguous", "clone",
    "getitem", "cat", "stack", "where", "masked_fill", "tril", "triu", "clamp", "softmax", "log_softmax",
    "cast_to", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "cos", "sin", "abs",
    "record_op",  # for the ops defined in functional.py
    "raw_index_key",
]  # fmt: skip

_sum = builtins.sum  # this module defines its own sum / max / min (torch's names)
MaxMin = namedtuple("MaxMin", ["values", "indices"])  # what torch.max(x, dim) returns


def record_op(data: TinyArray, parents: tuple[Tensor, ...], op: str, backward: Callable) -> Tensor:
    """Wrap an op's output in a new tensor; record the graph edge if grad mode is on and an input needs grad."""
    return _record(parents[0]._new(data), parents, op, backward)


def _is_tensor(x: Any) -> bool:
    return isinstance(getattr(x, "data", None), TinyArray)


def _wrap(x: Any, like: Tensor) -> Tensor:
    """Python numbers become 0-d tensors (their dtype then takes part in type promotion)."""
    return x if _is_tensor(x) else like._new(TinyArray([x], (), dtype=infer_dtype([x])))


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    like = a if _is_tensor(a) else b
    return _wrap(a, like), _wrap(b, like)


def raw_index_key(key: Any) -> Any:
    """An index key with each tensor in it replaced by its TinyArray (TinyArray indexing)."""
    if isinstance(key, tuple):
        return tuple(k.data if _is_tensor(k) else k for k in key)
    return key.data if _is_tensor(key) else key


# -- IEEE scalar math (Python raises where torch returns inf / nan; the rest in scalar_math.py) -----


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else math.nan


def _phi(x: float) -> float:  # standard normal cdf
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


_K = math.sqrt(2.0 / math.pi)

# name: (forward f(x), safe forward or None, derivative d(x, y=f(x)), output always float)
UNARY: dict[str, tuple[Callable, Callable | None, Callable]] = {
    "exp": (math.exp, ieee_exp, lambda x, y: y),
    "log": (math.log, ieee_log, lambda x, y: ieee_div(1.0, x)),
    "sqrt": (math.sqrt, _sqrt, lambda x, y: ieee_div(0.5, y)),
    "rsqrt": (lambda x: 1.0 / math.sqrt(x), lambda x: ieee_div(1.0, _sqrt(x)), lambda x, y: -0.5 * y * y * y),
    "tanh": (math.tanh, None, lambda x, y: 1.0 - y * y),
    "sigmoid": (stable_sigmoid, None, lambda x, y: y * (1.0 - y)),
    "relu": (lambda x: x if x > 0 else 0.0, None, lambda x, y: 1.0 if x > 0 else 0.0),
    "silu": (
        lambda x: x * stable_sigmoid(x),
        None,
        lambda x, y: stable_sigmoid(x) * (1.0 + x * (1.0 - stable_sigmoid(x))),
    ),
    "gelu": (
        lambda x: x * _phi(x),
        None,
        lambda x, y: _phi(x) + x * math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi),
    ),
    "gelu_tanh": (  # torch's approximate="tanh"
        lambda x: 0.5 * x * (1.0 + math.tanh(_K * (x + 0.044715 * x**3))),
        None,
        lambda x, y: (
            0.5 * (1.0 + (t := math.tanh(_K * (x + 0.044715 * x**3))))
            + 0.5 * x * (1.0 - t * t) * _K * (1.0 + 3 * 0.044715 * x * x)
        ),
    ),
    "cos": (math.cos, None, lambda x, y: -math.sin(x)),
    "sin": (math.sin, None, lambda x, y: math.cos(x)),
    "abs": (abs, None, lambda x, y: (x > 0) - (x < 0)),
}


def unary(x: Tensor, name: str) -> Tensor:
    """Apply one of the ``UNARY`` elementwise functions."""
    f, safe, d = UNARY[name]
    dtype = x.dtype if name in ("relu", "abs") and x.dtype != bool_ else float64
    if dtype == int64 and name == "relu":
        f = lambda v: v if v > 0 else 0  # noqa: E731
    out = x.data.map(f, dtype, safe)

    def backward(g: TinyArray) -> tuple[TinyArray]:
        dx = list(map(d, x.data.flat(), out.storage))  # out is contiguous: its storage is its flat()
        return (TinyArray(list(map(operator.mul, g.flat(), dx)), x.shape),)

    return record_op(out, (x,), name, backward)


def _unary_fn(name: str) -> Callable[[Tensor], Tensor]:
    def fn(input: Tensor) -> Tensor:
        return unary(input, name)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name} (torch.{name})."
    return fn


exp, log, sqrt, rsqrt, tanh, sigmoid, relu, cos, sin, abs = (
    _unary_fn(n) for n in ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "cos", "sin", "abs")
)


# -- arithmetic (broadcasting) ----------------------------------------------------------------------
def add(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    return record_op(
        a.data.zip_with(b.data, operator.add), (a, b), "add", lambda g: (g.sum_to(a.shape), g.sum_to(b.shape))
    )


def sub(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    return record_op(
        a.data.zip_with(b.data, operator.sub), (a, b), "sub", lambda g: (g.sum_to(a.shape), (-g).sum_to(b.shape))
    )


def mul(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)

    def backward(g: TinyArray) -> tuple:
        ga = (g * b.data).sum_to(a.shape) if a.requires_grad else None
        gb = (g * a.data).sum_to(b.shape) if b.requires_grad else None
        return ga, gb

    return record_op(a.data.zip_with(b.data, operator.mul), (a, b), "mul", backward)


def div(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    out = a.data.zip_with(b.data, operator.truediv, float64, ieee_div)

    def backward(g: TinyArray) -> tuple:
        ga = g.zip_with(b.data, operator.truediv, safe=ieee_div).sum_to(a.shape) if a.requires_grad else None
        gb = None
        if b.requires_grad:  # d(a/b)/db = -out / b
            gb = (-(g * out)).zip_with(b.data, operator.truediv, safe=ieee_div).sum_to(b.shape)
        return ga, gb

    return record_op(out, (a, b), "div", backward)


def pow(a: Any, b: Any) -> Tensor:  # torch's name
    a, b = _pair(a, b)
    ints = a.dtype != float64 and b.dtype != float64
    out = a.data.zip_with(b.data, operator.pow if ints else math.pow, None if ints else float64, ieee_pow)

    def backward(g: TinyArray) -> tuple:
        ga = gb = None
        if a.requires_grad:  # b * a^(b-1)
            ga = (g * b.data * a.data.zip_with(b.data - 1, math.pow, safe=ieee_pow)).sum_to(a.shape)
        if b.requires_grad:  # a^b * log(a); torch uses 0 where a == 0 and b >= 0
            la = a.data.map(math.log, float64, ieee_log)
            gb = g.zip_with(out, operator.mul).zip_with(la, lambda u, v: 0.0 if u == 0 else u * v).sum_to(b.shape)
        return ga, gb

    return record_op(out, (a, b), "pow", backward)


def neg(a: Tensor) -> Tensor:
    return record_op(a.data.map(operator.neg), (a,), "neg", lambda g: (-g,))


def _compare(fn: Callable) -> Callable[[Any, Any], Tensor]:
    def compare(a: Any, b: Any) -> Tensor:
        a, b = _pair(a, b)
        return a._new(a.data.zip_with(b.data, fn, bool_))

    return compare


eq, ne, lt, le, gt, ge = (
    _compare(f) for f in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge)
)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with torch's rules: 1-D operands get a dim added and removed, batch dims broadcast."""
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"both arguments to matmul need to be at least 1D, but they are {a.ndim}D and {b.ndim}D")
    if a.ndim == 1 or b.ndim == 1:  # (k,) acts as (1, k) on the left and (k, 1) on the right
        out = matmul(unsqueeze(a, 0) if a.ndim == 1 else a, unsqueeze(b, -1) if b.ndim == 1 else b)
        out = squeeze(out, -1) if b.ndim == 1 else out
        return squeeze(out, -1 if b.ndim == 1 else -2) if a.ndim == 1 else out
    out = a.data.matmul(b.data)

    def backward(g: TinyArray) -> tuple:
        ga = g.matmul(b.data.transpose(-1, -2)).sum_to(a.shape) if a.requires_grad else None
        gb = None
        if b.requires_grad:
            if b.ndim == 2:  # fold a's batch dims into rows: one (k, rows) @ (rows, m) product
                k, m = b.shape
                gb = a.data.reshape(-1, k).transpose(0, 1).matmul(g.reshape(-1, m))
            else:
                gb = a.data.transpose(-1, -2).matmul(g).sum_to(b.shape)
        return ga, gb

    return record_op(out, (a, b), "matmul", backward)


# -- reductions -------------------------------------------------------------------------------------
def _dims(x: Tensor, dim: int | Sequence[int] | None) -> list[int]:
    if dim is None:
        return list(range(x.ndim))
    return sorted({normalize_dim(d, x.ndim) for d in ((dim,) if isinstance(dim, int) else dim)})


def _keepdim_shape(shape: Sequence[int], dims: list[int]) -> tuple[int, ...]:
    return tuple(1 if d in dims else n for d, n in enumerate(shape))


def sum(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    dims = _dims(x, dim)
    out = x.data.reduce(dims, keepdim, _sum, int64 if x.dtype == bool_ else None)
    return record_op(out, (x,), "sum", lambda g: (g.reshape(_keepdim_shape(x.shape, dims)).expand(*x.shape),))


def mean(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    dims = _dims(x, dim)
    n = math.prod(x.shape[d] for d in dims)
    out = x.data.reduce(dims, keepdim, lambda v: ieee_div(_sum(v), n), float64)
    return record_op(
        out, (x,), "mean", lambda g: ((g * (1.0 / n)).reshape(_keepdim_shape(x.shape, dims)).expand(*x.shape),)
    )


def _extreme(x: Tensor, dim: int | None, keepdim: bool, pick: Callable, op: str) -> Tensor | MaxMin:
    if dim is None:  # whole tensor: the gradient is shared equally between tied extremes (as torch)
        flat = x.data.flat()
        best = pick(flat)

        def backward(g: TinyArray) -> tuple:
            ties = flat.count(best)
            gv = g.item() / ties
            return (TinyArray([gv if v == best else 0.0 for v in flat], x.shape),)

        return record_op(TinyArray([best], (), dtype=x.dtype), (x,), op, backward)
    dim = normalize_dim(dim, x.ndim)
    rows, n, pshape, inv = _rows(x.data, dim)
    idx = [pick(range(n), key=r.__getitem__) for r in rows]
    values = TinyArray([r[i] for r, i in zip(rows, idx)], pshape[:-1], dtype=x.dtype)
    indices = TinyArray(idx, pshape[:-1], dtype=int64)
    if keepdim:
        values, indices = values.unsqueeze(dim), indices.unsqueeze(dim)

    def backward(g: TinyArray) -> tuple:
        gflat, out = g.flat(), [0.0] * x.numel()
        for r, (i, gv) in enumerate(zip(idx, gflat)):
            out[r * n + i] = gv
        return (TinyArray(out, pshape).permute(*inv),)

    return MaxMin(record_op(values, (x,), op, backward), x._new(indices))


def max(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxMin:
    """Largest element, or ``(values, indices)`` along ``dim`` (as torch.max)."""
    return _extreme(x, dim, keepdim, builtins.max, "max")


def min(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxMin:
    return _extreme(x, dim, keepdim, builtins.min, "min")


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return argmax(reshape(x.detach(), -1), 0)
    return max(x.detach(), dim, keepdim).indices


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return argmin(reshape(x.detach(), -1), 0)
    return min(x.detach(), dim, keepdim).indices


def var(x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: int = 1):
    """Variance with Bessel's ``correction`` (``unbiased=False`` means correction 0), built from other ops."""
    if unbiased is not None:
        correction = int(unbiased)
    n = math.prod(x.shape[d] for d in _dims(x, dim))
    d = sub(x, mean(x, dim, keepdim=True))
    return div(sum(mul(d, d), dim, keepdim), n - correction)


def std(x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: int = 1):
    return unary(var(x, dim, unbiased, keepdim, correction=correction), "sqrt")


# -- views (the output shares storage with the input) ----------------------------------------------
def view(x: Tensor, *shape: int) -> Tensor:
    return record_op(x.data.view(*shape), (x,), "view", lambda g: (g.reshape(x.shape),))


def reshape(x: Tensor, *shape: int) -> Tensor:
    return record_op(x.data.reshape(*shape), (x,), "reshape", lambda g: (g.reshape(x.shape),))


def permute(x: Tensor, *dims: int) -> Tensor:
    out = x.data.permute(*dims)
    order = [normalize_dim(d, x.ndim) for d in (dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)]
    inv = [order.index(i) for i in range(x.ndim)]
    return record_op(out, (x,), "permute", lambda g: (g.permute(*inv),))


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    return record_op(x.data.transpose(dim0, dim1), (x,), "transpose", lambda g: (g.transpose(dim0, dim1),))


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    return record_op(x.data.unsqueeze(dim), (x,), "unsqueeze", lambda g: (g.reshape(x.shape),))


def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    return record_op(x.data.squeeze(dim), (x,), "squeeze", lambda g: (g.reshape(x.shape),))


def expand(x: Tensor, *shape: int) -> Tensor:
    return record_op(x.data.expand(*shape), (x,), "expand", lambda g: (g.sum_to(x.shape),))


def contiguous(x: Tensor) -> Tensor:
    if x.is_contiguous():
        return x
    return record_op(x.data.contiguous(), (x,), "contiguous", lambda g: (g,))


def clone(x: Tensor) -> Tensor:
    return record_op(TinyArray(x.data.flat(), x.shape, dtype=x.dtype), (x,), "clone", lambda g: (g,))


def cast_to(x: Tensor, dtype: str) -> Tensor:
    out = x.data.astype(dtype)
    return record_op(out, (x,), "to", lambda g: (g,)) if dtype == float64 else x._new(out)


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]``: basic indexing gives a view; lists / int tensors / bool masks gather a copy."""
    key = raw_index_key(key)
    out = x.data[key]

    def backward(g: TinyArray) -> tuple:
        gx = TinyArray.full(x.shape, 0.0)  # same shape, contiguous: ``key`` finds the same slots in it
        where = gx._index(key)
        pos = positions(where.shape, where.strides, where.offset) if isinstance(where, TinyArray) else where[0]
        s = gx.storage
        for p, v in zip(pos, g.flat()):
            s[p] += v  # += : an index may repeat (embedding rows, x[[0, 0]])
        return (gx,)

    return record_op(out, (x,), "index", backward)


# -- joining, selecting, masking --------------------------------------------------------------------
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    first = tensors[0]
    dim = normalize_dim(dim, first.ndim)
    for i, t in enumerate(tensors):
        for d in range(first.ndim):
            if d != dim and t.shape[d] != first.shape[d]:
                raise ShapeError(
                    f"Sizes of tensors must match except in dimension {dim}. Expected size {first.shape[d]} but "
                    f"got size {t.shape[d]} for tensor number {i} in the list."
                )
    outer = math.prod(first.shape[:dim])
    flats = [(t.data.flat(), math.prod(t.shape[dim:])) for t in tensors]
    out = []
    for i in range(outer):  # row i of the output = row i of each input, one after the other
        for f, inner in flats:
            out += f[i * inner : (i + 1) * inner]
    shape = list(first.shape)
    shape[dim] = builtins.sum(t.shape[dim] for t in tensors)
    sizes = [t.shape[dim] for t in tensors]

    def backward(g: TinyArray) -> list:
        grads, start = [], 0
        for n in sizes:
            grads.append(g[(slice(None),) * dim + (slice(start, start + n),)])
            start += n
        return grads

    return record_op(TinyArray(out, shape, dtype=first.dtype), tuple(tensors), "cat", backward)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ShapeError(
                f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} at entry 0 and "
                f"{list(t.shape)} at entry {i}"
            )
    dim = normalize_dim(dim, tensors[0].ndim + 1)
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def where(condition: Tensor, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` else ``b`` (all three broadcast)."""
    like = next(t for t in (condition, a, b) if _is_tensor(t))
    cond, a, b = _wrap(condition, like), _wrap(a, like), _wrap(b, like)
    pick = cond.data.zip_with(a.data, lambda c, x: c, bool_).shape
    shape = TinyArray([0], ()).expand(*pick).zip_with(b.data, operator.add).shape
    c = cond.data.broadcast_to(shape).flat()
    dtype = a.dtype if a.dtype == b.dtype else ("float64" if float64 in (a.dtype, b.dtype) else int64)
    vals = [x if ci else y for ci, x, y in zip(c, a.data.broadcast_to(shape).flat(), b.data.broadcast_to(shape).flat())]

    def backward(g: TinyArray) -> tuple:
        gf = g.flat()
        ga = TinyArray([v if ci else 0.0 for ci, v in zip(c, gf)], shape).sum_to(a.shape)
        gb = TinyArray([0.0 if ci else v for ci, v in zip(c, gf)], shape).sum_to(b.shape)
        return None, ga, gb

    return record_op(TinyArray(vals, shape, dtype=dtype), (cond, a, b), "where", backward)


def masked_fill(x: Tensor, mask: Tensor, value: float) -> Tensor:
    """``x`` with ``value`` wherever ``mask`` (broadcast to x's shape) is true."""
    m = _wrap(mask, x).data.broadcast_to(x.shape).flat()
    value = value.item() if _is_tensor(value) else value
    out = TinyArray([value if mi else v for mi, v in zip(m, x.data.flat())], x.shape, dtype=x.dtype)
    return record_op(
        out, (x,), "masked_fill", lambda g: (TinyArray([0.0 if mi else v for mi, v in zip(m, g.flat())], x.shape),)
    )


def _tri(x: Tensor, diagonal: int, lower: bool, op: str) -> Tensor:
    n, m = x.shape[-2:]
    keep = [(j - i <= diagonal) if lower else (j - i >= diagonal) for i in range(n) for j in range(m)]
    keep = keep * (x.numel() // builtins.max(n * m, 1))
    zero = 0.0 if x.dtype == float64 else 0

    def apply(a: TinyArray) -> TinyArray:
        return TinyArray([v if k else zero for k, v in zip(keep, a.flat())], a.shape, dtype=a.dtype)

    return record_op(apply(x.data), (x,), op, lambda g: (apply(g),))


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    return _tri(x, diagonal, True, "tril")


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    return _tri(x, diagonal, False, "triu")


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    lo = -math.inf if min is None else min
    hi = math.inf if max is None else max
    xs = x.data.flat()
    out = TinyArray([lo if v < lo else hi if v > hi else v for v in xs], x.shape, dtype=x.dtype)
    mask = lambda g: (TinyArray([gv if lo <= v <= hi else 0.0 for gv, v in zip(g.flat(), xs)], x.shape),)  # noqa: E731
    return record_op(out, (x,), "clamp", mask)


# -- softmax family (fused: one pass per row, exact backward) --------------------------------------
def _rows(a: TinyArray, dim: int) -> tuple[list[list], int, tuple, list[int]]:
    """Rows along ``dim`` (moved last): (rows, row length, moved shape, permutation back)."""
    perm = [d for d in range(a.ndim) if d != dim] + [dim]
    p = a.permute(*perm)
    flat, n = p.flat(), a.shape[dim] if a.ndim else 1
    rows = [flat[i : i + n] for i in range(0, len(flat), n)] if n else []
    return rows, n, p.shape, [perm.index(i) for i in range(a.ndim)]


def _unrows(rows: list[list], pshape: tuple, inv: list[int]) -> TinyArray:
    return TinyArray([v for r in rows for v in r], pshape).permute(*inv).contiguous()


def softmax(x: Tensor, dim: int) -> Tensor:
    dim = normalize_dim(dim, x.ndim)
    rows, _, pshape, inv = _rows(x.data, dim)
    ys = []
    for r in rows:
        m = builtins.max(r)
        e = [ieee_exp(v - m) for v in r]
        s = _sum(e)
        ys.append([v / s for v in e])

    def backward(g: TinyArray) -> tuple:  # dx = y * (g - sum(g * y))
        grows, _, _, _ = _rows(g, dim)
        out = []
        for y, gr in zip(ys, grows):
            dot = _sum(map(operator.mul, y, gr))
            out.append([yi * (gi - dot) for yi, gi in zip(y, gr)])
        return (_unrows(out, pshape, inv),)

    return record_op(_unrows(ys, pshape, inv), (x,), "softmax", backward)


def log_softmax(x: Tensor, dim: int) -> Tensor:
    dim = normalize_dim(dim, x.ndim)
    rows, _, pshape, inv = _rows(x.data, dim)
    ys = []
    for r in rows:
        m = builtins.max(r)
        lse = m + math.log(_sum(ieee_exp(v - m) for v in r))
        ys.append([v - lse for v in r])

    def backward(g: TinyArray) -> tuple:  # dx = g - softmax * sum(g)
        grows, _, _, _ = _rows(g, dim)
        out = []
        for y, gr in zip(ys, grows):
            s = _sum(gr)
            out.append([gi - math.exp(yi) * s for yi, gi in zip(y, gr)])
        return (_unrows(out, pshape, inv),)

    return record_op(_unrows(ys, pshape, inv), (x,), "log_softmax", backward)
