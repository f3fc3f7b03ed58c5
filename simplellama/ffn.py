"""SwiGLU feed-forward block (Shazeer 2020, "GLU Variants Improve Transformer").

``FFN(x) = w2(silu(w1 x) * w3 x)``: ``w1`` makes a gate, ``w3`` the values it gates, ``w2`` projects
back to the model width. Names follow Meta's checkpoints (HF: w1 = gate_proj, w3 = up_proj,
w2 = down_proj). The hidden size F comes from ``ModelArgs.hidden_dim`` (Meta's rounding rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeedForward"]


class FeedForward(nn.Module):
    """SwiGLU MLP: (..., D) -> (..., D) through a hidden size F."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = dict(bias=False, device=device, dtype=dtype)
        self.w1 = nn.Linear(dim, hidden_dim, **kw)  # gate   D -> F
        self.w2 = nn.Linear(hidden_dim, dim, **kw)  # down   F -> D
        self.w3 = nn.Linear(dim, hidden_dim, **kw)  # up     D -> F

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        gate = F.silu(self.w1(x))  # (B, T, F)
        return self.w2(gate * self.w3(x))  # (B, T, F) -> (B, T, D)
