"""Key/value cache: preallocated per-layer buffers, written at explicit positions.

During generation each new token attends to every earlier one. Instead of recomputing earlier keys
and values, each attention layer keeps them in two buffers of shape (B, S, K, Dh), allocated once
(sized from the request: batch x longest sequence) and filled in place. ``update(start_pos, k, v)``
writes T new positions at ``start_pos`` and returns views of positions ``0 .. start_pos+T``; any T
works, so a prompt can be prefilled in one call or in chunks, then decoded one or several tokens at
a time.

``update_at(pos, k, v)`` is the same write with the positions given as a tensor, returning all
``max_seq_len`` positions: the shapes never depend on the position, so ``torch.compile`` traces
one graph for every decode step (``compiled.py``; the caller masks positions not written yet).

The buffers are registered with ``persistent=False``: they follow ``model.to(device/dtype)`` but are
not part of the state dict, so checkpoints load with ``strict=True``.

Shapes: B batch, T new tokens, S cached positions, K kv heads, Dh head dim.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import KVCacheError

__all__ = ["KVCache", "KVCacheError", "check_cache_size"]


def check_cache_size(max_batch_size: int, max_seq_len: int, where: str) -> None:
    """Both sizes must be positive ints (bools are not): raise :class:`KVCacheError` naming it."""
    for name, value in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise KVCacheError(f"{where}: {name} must be a positive integer, found {value!r}")


class KVCache(nn.Module):
    """K and V buffers of one attention layer, (max_batch_size, max_seq_len, n_kv_heads, head_dim)
    each."""

    def __init__(
        self,
        max_batch_size: int,
        max_seq_len: int,
        n_kv_heads: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_cache_size(max_batch_size, max_seq_len, "KVCache")
        shape = (max_batch_size, max_seq_len, n_kv_heads, head_dim)  # (B, S, K, Dh)
        self.register_buffer(
            "cache_k", torch.zeros(shape, device=device, dtype=dtype), persistent=False
        )
        self.register_buffer(
            "cache_v", torch.zeros(shape, device=device, dtype=dtype), persistent=False
        )

    @property
    def max_batch_size(self) -> int:
        return self.cache_k.shape[0]

    @property
    def max_seq_len(self) -> int:
        return self.cache_k.shape[1]

    @property
    def nbytes(self) -> int:
        """Memory held by the K and V buffers, in bytes."""
        return self.cache_k.nbytes + self.cache_v.nbytes

    def update(
        self, start_pos: int, xk: torch.Tensor, xv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, T, K, Dh) at positions ``start_pos .. start_pos+T-1``.

        Returns views (B, start_pos+T, K, Dh) of keys and values for positions ``0 ..
        start_pos+T-1``.
        """
        B, T = xk.shape[:2]
        if xk.shape != xv.shape or xk.shape[2:] != self.cache_k.shape[2:]:
            raise KVCacheError(
                f"KVCache.update: k and v must be (B, T, {self.cache_k.shape[2]}, "
                f"{self.cache_k.shape[3]}), "
                f"found {tuple(xk.shape)} and {tuple(xv.shape)}"
            )
        if B > self.max_batch_size:
            raise KVCacheError(
                f"KVCache.update: batch {B} exceeds max_batch_size {self.max_batch_size}"
            )
        if start_pos < 0 or start_pos + T > self.max_seq_len:
            raise KVCacheError(
                f"KVCache.update: positions {start_pos}..{start_pos + T - 1} do not fit "
                "max_seq_len "
                f"{self.max_seq_len} (call setup_cache with a larger max_seq_len)"
            )
        if xk.dtype != self.cache_k.dtype or xv.dtype != self.cache_v.dtype:
            raise KVCacheError(
                f"KVCache.update: dtype {xk.dtype}/{xv.dtype} does not match the cache's "
                f"{self.cache_k.dtype}"
            )
        end = start_pos + T
        self.cache_k[:B, start_pos:end] = xk
        self.cache_v[:B, start_pos:end] = xv
        return self.cache_k[:B, :end], self.cache_v[
            :B, :end
        ]  # (B, S, K, Dh) views, S = start_pos + T

    def update_at(
        self, pos: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, T, K, Dh) at positions ``pos`` (T,) int64 (``index_copy_``).

        Returns views (B, max_seq_len, K, Dh) of every position, written or not. Shapes and dtypes
        are checked; the positions are not (reading them would sync a device; ``index_copy_``
        itself rejects one out of range).
        """
        B, T = xk.shape[:2]
        K, Dh = self.cache_k.shape[2:]
        if xk.shape != xv.shape or xk.shape[2:] != (K, Dh) or pos.shape != (T,):
            found = f"{tuple(pos.shape)}, {tuple(xk.shape)} and {tuple(xv.shape)}"
            raise KVCacheError(f"KVCache.update_at: expected pos (T,), k and v (B, T, {K}, {Dh}), "
                               f"found {found}")  # fmt: skip
        if B > self.max_batch_size or xk.dtype != self.cache_k.dtype:
            raise KVCacheError(
                f"KVCache.update_at: batch {B} {xk.dtype} does not fit the cache's "
                f"{self.max_batch_size} {self.cache_k.dtype}"
            )
        cache_k, cache_v = self.cache_k[:B], self.cache_v[:B]  # (B, S, K, Dh) views
        cache_k.index_copy_(1, pos, xk)
        cache_v.index_copy_(1, pos, xv)
        return cache_k, cache_v

    def extra_repr(self) -> str:
        shape, dtype = tuple(self.cache_k.shape), self.cache_k.dtype
        return f"{shape}, dtype={dtype}, {self.nbytes / 2**20:.1f} MiB"
