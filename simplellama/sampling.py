"""Sampling: the logits (B, V) of the last position -> the next token id of each row (B,).

Greedy (argmax), temperature, top-k (Fan et al. 2018) and top-p / nucleus (Holtzman et al. 2020)
with Meta's rule (``llama3/generation.py: sample_top_p``). ``generation.py`` re-exports these names.

Shapes: B batch, V vocabulary.
"""

from __future__ import annotations

import torch

from .errors import GenerationError

__all__ = [
    "GenerationError",
    "sample_greedy",
    "top_k_probs",
    "top_p_probs",
    "sample_top_p",
    "sample",
]


def sample_greedy(logits: torch.Tensor) -> torch.Tensor:
    """Most likely token per row (temperature 0): ``argmax`` over V. (B, V) -> (B,)."""
    return torch.argmax(logits, dim=-1)


def top_k_probs(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` most likely tokens per row, renormalised (Fan et al. 2018). (B, V) -> (B,
    V)."""
    if k <= 0:
        raise GenerationError(f"top_k: expected a positive integer, found {k}")
    k = min(k, probs.shape[-1])
    idx = torch.topk(probs, k, dim=-1).indices  # (B, k); exactly k even when values tie
    kept = torch.zeros_like(probs).scatter(-1, idx, probs.gather(-1, idx))  # (B, V)
    return kept / kept.sum(dim=-1, keepdim=True)


def top_p_probs(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020) with Meta's rule, renormalised. (B, V) -> (B, V).

    Tokens are taken in order of probability while the mass *before* a token is <= p
    (Meta ``sample_top_p``: ``mask = cumsum - prob > p``), so the kept set is the smallest
    prefix whose mass reaches p, and the most likely token is always kept.
    """
    if not 0.0 < p <= 1.0:
        raise GenerationError(f"top_p: expected 0 < top_p <= 1, found {p}")
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # (B, V) each
    mass_before = torch.cumsum(probs_sort, dim=-1) - probs_sort
    probs_sort = torch.where(mass_before > p, torch.zeros_like(probs_sort), probs_sort)
    kept = torch.zeros_like(probs).scatter(-1, probs_idx, probs_sort)  # back to vocabulary order
    return kept / kept.sum(dim=-1, keepdim=True)


def sample_top_p(
    probs: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Meta's ``sample_top_p``: draw one token per row from the top-p nucleus. (B, V) -> (B, 1)."""
    return torch.multinomial(top_p_probs(probs, p), num_samples=1, generator=generator)


def sample(
    logits: torch.Tensor,
    temperature: float = 0.6,
    top_p: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token per row: greedy at ``temperature == 0``, else softmax(logits / T) -> top-k ->
    top-p -> draw.

    Args:
        logits: (B, V) scores of the last position.
        temperature: 0 for greedy; > 0 flattens (> 1) or sharpens (< 1) the distribution.
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        top_k: keep only the k most likely tokens (None: no limit).
        generator: a seeded ``torch.Generator`` for reproducible draws.

    Returns:
        (B,) token ids.
    """
    if temperature < 0:
        raise GenerationError(f"temperature: expected >= 0, found {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise GenerationError(f"top_p: expected 0 < top_p <= 1, found {top_p}")
    if temperature == 0:
        return sample_greedy(logits)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if top_k is not None:
        probs = top_k_probs(probs, top_k)
    if top_p < 1.0:
        probs = top_p_probs(probs, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)
