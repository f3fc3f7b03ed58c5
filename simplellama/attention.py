"""Grouped-query causal self-attention (GQA, Ainslie et al. 2023) with RoPE and a KV cache.

H query heads share K key/value heads, G = H / K queries per kv head (Llama 3 8B: H=32, K=8). Keys
and values are computed for K heads only (a K/H smaller cache), then repeated G times so every query
head has a partner (``repeat_kv``). Follows Meta's ``llama_models/llama3/model.py: Attention``::

    q, k, v = wq x, wk x, wv x;   q, k = rope(q), rope(k)
    k, v    = cache[0 : start_pos + T]           (after writing the T new positions)
    out     = wo softmax(q k^T / sqrt(Dh) + causal mask) v

Softmax runs in float32 whatever the weight dtype. The mask lets new token i (absolute position
start_pos + i) see cached/new positions j <= start_pos + i, so any T works per call.

Two implementations of the last line, tested equal: ``attend`` spells it out (repeat_kv, scores, mask,
softmax) for reading; ``attend_sdpa`` hands it to torch's fused ``scaled_dot_product_attention``
(``enable_gqa``: no repeated K/V copies). ``Attention`` uses the fused one unless
``use_sdpa=False``: fewer kernels and no K/V copies per layer.

Shapes: B batch, T new tokens, S = start_pos + T visible positions, D model dim, H query heads,
K kv heads, G = H / K, Dh head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelArgs
from .kv_cache import KVCache, KVCacheError
from .norm import upcast
from .rope import apply_rotary_emb

__all__ = ["Attention", "repeat_kv", "causal_mask", "attend", "attend_sdpa"]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, S, K, Dh) -> (B, S, K*n_rep, Dh), each kv head repeated n_rep times in place (head h uses h // G)."""
    B, S, K, Dh = x.shape
    if n_rep == 1:
        return x
    return x[:, :, :, None, :].expand(B, S, K, n_rep, Dh).reshape(B, S, K * n_rep, Dh)  # (B, S, H, Dh)


def causal_mask(T: int, start_pos: int = 0, device: torch.device | str | None = None) -> torch.Tensor | None:
    """Boolean (T, start_pos+T) mask, True where new token i may attend to position j (j <= start_pos + i).

    Returns None for T == 1 (a single new token sees everything before it).
    """
    if T == 1:
        return None
    rows = torch.arange(T, device=device)[:, None] + start_pos  # (T, 1) absolute positions of the queries
    cols = torch.arange(start_pos + T, device=device)[None, :]  # (1, S) absolute positions of the keys
    return cols <= rows  # (T, S)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Explicit scaled dot-product attention: q (B, H, T, Dh), k/v (B, H, S, Dh) -> (B, H, T, Dh).

    Scores are scaled by 1/sqrt(Dh), masked and soft-maxed in float32 (or float64), then cast back to q's dtype.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    scores = upcast(scores)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (T, S) broadcasts over B, H
    probs = F.softmax(scores, dim=-1).type_as(q)  # (B, H, T, S)
    return probs @ v  # (B, H, T, Dh)


def attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``attend`` with torch's fused kernel and grouped kv heads: q (B, H, T, Dh), k/v (B, K, S, Dh) -> (B, H, T, Dh).

    Runs in float32 like ``attend``'s softmax (bf16 inputs are upcast: on CPU this is also several
    times faster than torch's bf16 kernel for one new token). The boolean mask is used as given.
    """
    gqa = k.shape[1] != q.shape[1]  # query head h reads kv head h // G inside the kernel
    out = F.scaled_dot_product_attention(upcast(q), upcast(k), upcast(v), attn_mask=mask, enable_gqa=gqa)
    return out.type_as(q)  # (B, H, T, Dh)


class Attention(nn.Module):
    """GQA self-attention with Meta's parameter names ``wq``, ``wk``, ``wv``, ``wo`` (no biases).

    ``use_sdpa`` (default) computes attention with ``attend_sdpa`` (torch's fused kernel); ``False``
    runs the explicit ``attend`` (same result to float32 rounding). The KV cache (``self.cache``) is
    attached by ``Transformer.setup_cache``.
    """

    def __init__(
        self,
        args: ModelArgs,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        use_sdpa: bool = True,
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

    def forward(
        self,
        x: torch.Tensor,
        freqs_cis: torch.Tensor,
        mask: torch.Tensor | None,
        start_pos: int | None = None,
    ) -> torch.Tensor:
        """x (B, T, D), freqs_cis (T, Dh/2) for positions start_pos.., mask (T, S) or None -> (B, T, D).

        ``start_pos=None``: no cache, keys/values are the T new positions only (training, full recompute).
        """
        B, T, _ = x.shape
        xq = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H*Dh) -> (B, T, H, Dh)
        xk = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Dh)
        xv = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Dh)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)

        if start_pos is None:
            keys, values = xk, xv  # (B, S=T, K, Dh)
        else:
            if self.cache is None:
                raise KVCacheError("Attention.forward: start_pos given but no KV cache (call setup_cache first)")
            keys, values = self.cache.update(start_pos, xk, xv)  # (B, S, K, Dh)

        q = xq.transpose(1, 2)  # (B, T, H, Dh) -> (B, H, T, Dh)
        if self.use_sdpa:  # grouped kv heads go in as they are
            out = attend_sdpa(q, keys.transpose(1, 2), values.transpose(1, 2), mask)  # (B, H, T, Dh)
        else:
            k = repeat_kv(keys, self.n_rep).transpose(1, 2)  # (B, S, K, Dh) -> (B, S, H, Dh) -> (B, H, S, Dh)
            v = repeat_kv(values, self.n_rep).transpose(1, 2)  # (B, H, S, Dh)
            out = attend(q, k, v, mask)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*Dh)
        return self.wo(out)  # (B, T, D)
