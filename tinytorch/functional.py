"""tinytorch.functional: the part of torch.nn.functional that a small Llama / MLP needs.

``import tinytorch.functional as F`` then ``F.softmax(x, dim=-1)``, ``F.cross_entropy(logits, targets)``.
Activations and softmax come from ops.py; losses and norms are here. ``cat``/``stack``/``where`` are
re-exported for convenience (torch keeps those in the top-level namespace).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tinytorch import ops
from tinytorch.array import TinyArray
from tinytorch.creation import rand
from tinytorch.ops import cat, log_softmax, record_op, softmax, stack, where
from tinytorch.scalar_math import ieee_exp
from tinytorch.storage import ShapeError, TinyIndexError
from tinytorch.tensor import Tensor

__all__ = [
    "relu", "silu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax", "cross_entropy", "nll_loss", "mse_loss",
    "embedding", "linear", "rms_norm", "layer_norm", "dropout", "scaled_dot_product_attention",
    "cat", "stack", "where",
]  # fmt: skip

_EPS64 = 2.220446049250313e-16  # torch.finfo(torch.float64).eps: rms_norm's default eps


def relu(input: Tensor) -> Tensor:
    return ops.unary(input, "relu")


def silu(input: Tensor) -> Tensor:
    """x * sigmoid(x) (SwiGLU's gate in Llama's feed-forward)."""
    return ops.unary(input, "silu")


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact normal cdf, or torch's tanh approximation."""
    return ops.unary(input, "gelu_tanh" if approximate == "tanh" else "gelu")


def sigmoid(input: Tensor) -> Tensor:
    return ops.unary(input, "sigmoid")


def tanh(input: Tensor) -> Tensor:
    return ops.unary(input, "tanh")


def cross_entropy(
    input: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
) -> Tensor:
    """-log softmax(input)[target], fused: input (N, C) or (C,), target (N,) or () class ids.

    Rows whose target is ``ignore_index`` add nothing and are not counted in the mean.
    """
    if input.ndim not in (1, 2):
        raise ShapeError(f"cross_entropy: input: expected (N, C) or (C,), found {tuple(input.shape)}")
    rows = [input.data.flat()] if input.ndim == 1 else input.data.tolist()
    targets = [target.item()] if input.ndim == 1 else target.data.flat()
    if len(targets) != len(rows):
        raise ShapeError(f"Expected input batch_size ({len(rows)}) to match target batch_size ({len(targets)}).")
    C = input.shape[-1]
    probs, losses, count = [], [], 0
    for r, t in zip(rows, targets):
        if t == ignore_index:
            probs.append(None)
            losses.append(0.0)
            continue
        if not 0 <= t < C:
            raise TinyIndexError(f"Target {t} is out of bounds.")
        m = max(r)
        e = [ieee_exp(v - m) for v in r]
        s = sum(e)
        logp = [v - m - math.log(s) for v in r]
        probs.append([v / s for v in e])
        smooth = -sum(logp) / C if label_smoothing else 0.0
        losses.append((1 - label_smoothing) * -logp[t] + label_smoothing * smooth)
        count += 1
    if reduction == "none":
        out = TinyArray(losses, target.shape)
    else:
        total = sum(losses)
        out = TinyArray([total / count if count else math.nan] if reduction == "mean" else [total], ())

    def backward(g: TinyArray) -> tuple:  # d/dlogits = softmax - (smoothed) one-hot, per counted row
        gs = (
            g.flat()
            if reduction == "none"
            else [g.item() / (count or 1) if reduction == "mean" else g.item()] * len(rows)
        )
        grad = []
        for p, t, gv in zip(probs, targets, gs):
            if p is None:
                grad += [0.0] * C
                continue
            row = [gv * (pi - label_smoothing / C) for pi in p]
            row[t] -= gv * (1 - label_smoothing)
            grad += row
        return TinyArray(grad, input.shape), None

    return record_op(out, (input, target), "cross_entropy", backward)


def nll_loss(input: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Mean of -input[n, target[n]] over rows not ignored (input holds log-probabilities)."""
    keep = [i for i, t in enumerate(target.data.flat()) if t != ignore_index]
    picked = ops.getitem(input, (Tensor(keep, dtype="int64"), Tensor([target.data.flat()[i] for i in keep])))
    if reduction == "none":
        raise ShapeError("nll_loss: reduction='none' is not supported by tinytorch; use cross_entropy")
    total = ops.neg(ops.sum(picked))
    return ops.div(total, len(keep)) if reduction == "mean" else total


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    d = ops.sub(input, target)
    sq = ops.mul(d, d)
    return ops.mean(sq) if reduction == "mean" else ops.sum(sq) if reduction == "sum" else sq


def embedding(input: Tensor, weight: Tensor) -> Tensor:
    """Rows of ``weight`` (V, D) picked by the ids in ``input`` (any shape): out shape input.shape + (D,)."""
    ids = input if isinstance(input, Tensor) else Tensor(input)
    return ops.getitem(weight, ids)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias, weight stored (out_features, in_features) as in torch."""
    out = ops.matmul(input, ops.transpose(weight, 0, 1))  # (..., in) @ (in, out) -> (..., out)
    return out if bias is None else ops.add(out, bias)


def _last_dims(x: Tensor, normalized_shape: Sequence[int] | int) -> list[int]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(shape) :]) != shape:
        raise ShapeError(f"normalized_shape {list(shape)} does not match the last dims of input {list(x.shape)}")
    return list(range(x.ndim - len(shape), x.ndim))


def rms_norm(
    input: Tensor, normalized_shape: Sequence[int] | int, weight: Tensor | None = None, eps: float | None = None
) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dims (Llama's RMSNorm)."""
    dims = _last_dims(input, normalized_shape)
    ms = ops.mean(ops.mul(input, input), dims, keepdim=True)
    out = ops.mul(input, ops.unary(ops.add(ms, _EPS64 if eps is None else eps), "rsqrt"))
    return out if weight is None else ops.mul(out, weight)


def layer_norm(
    input: Tensor,
    normalized_shape: Sequence[int] | int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dims (biased variance, as torch)."""
    dims = _last_dims(input, normalized_shape)
    d = ops.sub(input, ops.mean(input, dims, keepdim=True))
    var = ops.mean(ops.mul(d, d), dims, keepdim=True)
    out = ops.mul(d, ops.unary(ops.add(var, eps), "rsqrt"))
    out = out if weight is None else ops.mul(out, weight)
    return out if bias is None else ops.add(out, bias)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, generator: Any = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (identity when not training)."""
    if not training or p == 0.0:
        return input
    keep = ops.lt(rand(*input.shape, generator=generator), 1.0 - p)
    return ops.mul(ops.masked_fill(input, ops.eq(keep, False), 0.0), 1.0 / (1.0 - p))


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:  # fmt: skip
    """softmax(q k^T * scale + mask) v over the last two dims; a bool mask keeps the True positions."""
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = ops.mul(ops.matmul(query, ops.transpose(key, -2, -1)), scale)  # (..., L, S)
    if is_causal:
        causal = Tensor(TinyArray([j > i for i in range(L) for j in range(S)], (L, S), dtype="bool"))
        scores = ops.masked_fill(scores, causal, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == "bool":
            scores = ops.masked_fill(scores, ops.eq(attn_mask, False), -math.inf)
        else:
            scores = ops.add(scores, attn_mask)
    return ops.matmul(softmax(scores, -1), value)
