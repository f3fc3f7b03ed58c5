"""Grouped-query causal self-attention (GQA, Ainslie et al. 2023) with RoPE and a KV cache.

H query heads share K key/value heads, G = H / K queries per kv head (Llama 3 8B: H=32, K=8): keys
and values are computed for K heads only (a K/H smaller cache) and query head h reads kv head
h // G. Follows Meta's ``llama_models/llama3/model.py: Attention``::

    q, k, v = wq x, wk x, wv x;   q, k = rope(q), rope(k)
    k, v    = cache[0 : start_pos + T]           (after writing the T new positions)
    out     = wo softmax(q k^T / sqrt(Dh) + causal mask) v

The mask lets new token i (absolute position start_pos + i) see positions j <= start_pos + i, so
any T works per call. ``attend`` spells the last line out (``attention_probs`` gives the softmax
weights, e.g. for heatmaps; ``attention_inputs`` records a real model's inputs to them);
``attend_sdpa`` hands it to torch's fused kernel, which ``Attention`` uses where it is the fast one
(CUDA, float32 on CPU; tests assert both agree).
Neither copies the cache: the G query heads of a kv head are stacked against it (Meta's
``repeat_kv`` spells out the same pairing with copies). Softmax runs in float32 at least.

Shapes: B batch, T new tokens, S = start_pos + T visible positions, D model dim, H query heads,
K kv heads, G = H / K, Dh head dim.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelArgs
from .errors import KVCacheError
from .kv_cache import KVCache
from .norm import upcast
from .rope import apply_rotary_emb

Mask = Tensor | None  # (T, S) bool, True where a query may see a key; None: sees everything

__all__ = [
    "Attention", "repeat_kv", "causal_mask", "attention_probs", "attend", "attend_sdpa",
    "attention_inputs",
]  # fmt: skip


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, S, K, Dh) -> (B, S, K*n_rep, Dh): each kv head n_rep times (head h uses h // G)."""
    B, S, K, Dh = x.shape
    if n_rep == 1:
        return x
    return (
        x[:, :, :, None, :].expand(B, S, K, n_rep, Dh).reshape(B, S, K * n_rep, Dh)
    )  # (B, S, H, Dh)


def causal_mask(T: int, start_pos: int = 0, device: torch.device | str | None = None) -> Mask:
    """Boolean (T, start_pos+T) mask, True where new token i may see position j <= start_pos + i.

    Returns None for T == 1 (a single new token sees everything before it).
    """
    if T == 1:
        return None
    rows = torch.arange(T, device=device)[:, None] + start_pos  # (T, 1) positions of the queries
    cols = torch.arange(start_pos + T, device=device)[None, :]  # (1, S) positions of the keys
    return cols <= rows  # (T, S)


def attention_probs(q: Tensor, k: Tensor, mask: Mask) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) over the visible positions, in float32 (float64 stays float64).

    q (B, H, T, Dh), k (B, K, S, Dh) with K dividing H, mask (T, S) or None -> (B, H, T, S).
    """
    B, H, T, Dh = q.shape
    K, S = k.shape[1], k.shape[2]
    q_grouped = q.reshape(B, K, H // K * T, Dh)  # (B, K, G*T, Dh): the G query heads of a kv head
    scores = upcast(q_grouped @ k.transpose(-2, -1)).view(B, H, T, S) / math.sqrt(
        Dh
    )  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (T, S) broadcasts over B, H
    return F.softmax(scores, dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Mask) -> Tensor:
    """Explicit attention: q (B, H, T, Dh), k/v (B, K, S, Dh) -> (B, H, T, Dh).

    The weights (``attention_probs``, float32) are cast back to q's dtype before multiplying v.
    """
    B, H, T, _ = q.shape
    K, S = k.shape[1], k.shape[2]
    probs = attention_probs(q, k, mask).type_as(q)  # (B, H, T, S)
    return (probs.view(B, K, H // K * T, S) @ v).view(
        B, H, T, -1
    )  # (B, K, G*T, Dh) -> (B, H, T, Dh)


def attend_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Mask) -> Tensor:
    """``attend`` with torch's fused ``scaled_dot_product_attention``: same shapes, q's dtype kept
    (the kernels accumulate in float32); the boolean mask is used as given."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1]
    )


class Attention(nn.Module):
    """GQA self-attention with Meta's parameter names ``wq``, ``wk``, ``wv``, ``wo`` (no biases).

    ``use_sdpa``: True runs ``attend_sdpa``, False the explicit ``attend``, None (default) the
    faster: the fused kernel except for bf16/fp16 on CPU, where torch's kernel is the slower. The
    KV cache (``self.cache``) is attached by ``Transformer.setup_cache``.
    """

    def __init__(
        self,
        args: ModelArgs,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        use_sdpa: bool | None = None,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.n_rep = args.n_rep  # G
        H, K, Dh, D = self.n_heads, self.n_kv_heads, self.head_dim, args.dim
        kw = dict(bias=False, device=device, dtype=dtype)
        self.wq = nn.Linear(D, H * Dh, **kw)
        self.wk = nn.Linear(D, K * Dh, **kw)
        self.wv = nn.Linear(D, K * Dh, **kw)
        self.wo = nn.Linear(H * Dh, D, **kw)
        self.use_sdpa = use_sdpa
        self.cache: KVCache | None = None

    def project(self, x: Tensor, start_pos: int | None, freqs_cis: Tensor) -> tuple[Tensor, ...]:
        """q (B, H, T, Dh) after RoPE; k, v (B, K, S, Dh) of every visible position.

        ``start_pos=None``: no cache, the T new positions only (S = T); else the new keys and values
        are written to the cache at ``start_pos`` and all S = start_pos + T are read back.
        """
        B, T, _ = x.shape
        xq = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H*Dh) -> (B, T, H, Dh)
        xk = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Dh)
        xv = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Dh)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)
        if start_pos is not None:
            if self.cache is None:
                raise KVCacheError("Attention: start_pos given but no KV cache (call setup_cache)")
            xk, xv = self.cache.update(start_pos, xk, xv)  # (B, S, K, Dh)
        return xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)  # (B, heads, T or S, Dh)

    def forward(self, x: Tensor, start_pos: int | None, freqs_cis: Tensor, mask: Mask) -> Tensor:
        """x (B, T, D), freqs_cis (T, Dh/2) of positions start_pos.., mask (T, S) -> (B, T, D)."""
        B, T, _ = x.shape
        q, k, v = self.project(x, start_pos, freqs_cis)
        fused = self.use_sdpa if self.use_sdpa is not None else q.is_cuda or q.dtype.itemsize >= 4
        out = attend_sdpa(q, k, v, mask) if fused else attend(q, k, v, mask)  # (B, H, T, Dh)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))  # (B, T, H*Dh) -> (B, T, D)

    def probs(self, x: Tensor, start_pos: int | None, freqs_cis: Tensor, mask: Mask) -> Tensor:
        """The attention weights (B, H, T, S) of every head from ``forward``'s arguments, so a
        forward pre-hook (``register_forward_pre_hook``) can capture a real model's heads."""
        q, k, _ = self.project(x, start_pos, freqs_cis)
        return attention_probs(q, k, mask)


@contextmanager
def attention_inputs(model: nn.Module) -> Iterator[dict[int, tuple]]:
    """Record what every ``Attention`` in ``model`` receives while the ``with`` block runs.

    Yields a dict filled by forward pre-hooks: index of the Attention (the layer number in a
    ``Transformer``) -> its arguments ``(x, start_pos, freqs_cis, mask)`` of the latest call, so
    ``model.layers[i].attention.probs(*inputs[i])`` gives layer i's weights (B, H, T, S). The hooks
    are removed on exit.
    """
    inputs: dict[int, tuple] = {}
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    handles = [
        a.register_forward_pre_hook(partial(_record, inputs, i)) for i, a in enumerate(layers)
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def _record(inputs: dict[int, tuple], i: int, module: nn.Module, args: tuple) -> None:
    inputs[i] = args
