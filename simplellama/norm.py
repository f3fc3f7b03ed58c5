"""RMSNorm (Zhang & Sennrich 2019): scale each vector by the inverse root of its mean square.

``y = x / sqrt(mean(x**2) + eps) * weight``, no mean subtraction and no bias (cheaper than
LayerNorm). Computed in float32 whatever the input dtype, then cast back before the learned scale,
exactly as Meta's ``llama_models/llama3/model.py: RMSNorm`` (and HF ``LlamaRMSNorm``) do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSNorm", "upcast"]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or wider when it already is (float64 stays float64 for reference
    checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dim with a learned per-feature scale ``weight``
    (D,)."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))  # (D,)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """The formula, spelled out: ``x / sqrt(mean(x**2) + eps)`` over the last dim."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) -> (..., D)."""
        # F.rms_norm computes ``_norm`` in one kernel (tests check they agree); no weight inside it,
        # so
        # the scale is applied after the cast back, as Meta does.
        return F.rms_norm(upcast(x), x.shape[-1:], eps=self.eps).type_as(x) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
