"""Sampling functions against the published definitions and transformers' logits warpers."""

import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from simplellama.generation import (
    GenerationError,
    sample,
    sample_greedy,
    sample_top_p,
    top_k_probs,
    top_p_probs,
)

# Hand-made distribution (no ties, no cumulative sum lands exactly on a tested p).
PROBS = torch.tensor([[0.05, 0.40, 0.10, 0.25, 0.20]])  # sorted: 0.40 0.25 0.20 0.10 0.05


def nucleus(probs: list[float], p: float) -> set[int]:
    """Holtzman et al. 2020: the smallest set of most likely tokens whose total mass is >= p."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= p:
            break
    return kept


@pytest.mark.parametrize("p", [0.1, 0.5, 0.64, 0.7, 0.9, 0.97, 1.0])
def test_top_p_keeps_the_nucleus_and_renormalises(p):
    out = top_p_probs(PROBS.clone(), p)
    kept = set(torch.nonzero(out[0]).flatten().tolist())
    assert kept == nucleus(PROBS[0].tolist(), p)
    mass = PROBS[0, sorted(kept)].sum()
    torch.testing.assert_close(out[0, sorted(kept)], PROBS[0, sorted(kept)] / mass)
    # transformers' warper keeps the same support
    warped = TopPLogitsWarper(top_p=p, min_tokens_to_keep=1)(None, PROBS.log())
    assert set(torch.nonzero(torch.isfinite(warped[0])).flatten().tolist()) == kept


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_top_k_keeps_the_k_most_likely(k):
    out = top_k_probs(PROBS.clone(), k)
    warped = TopKLogitsWarper(top_k=k)(None, PROBS.log())
    kept = torch.isfinite(warped[0])
    assert torch.equal(out[0] > 0, kept)
    torch.testing.assert_close(out[0][kept], PROBS[0][kept] / PROBS[0][kept].sum())
    assert int((out[0] > 0).sum()) == min(k, 5)


def test_top_k_with_ties_keeps_exactly_k():
    probs = torch.tensor([[0.3, 0.3, 0.3, 0.1]])
    assert int((top_k_probs(probs, 2) > 0).sum()) == 2


def test_greedy_is_argmax_and_temperature_zero_is_greedy():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_greedy(logits), logits.argmax(-1))
    assert torch.equal(sample(logits, temperature=0.0, top_p=0.5, top_k=3), logits.argmax(-1))


def empirical(draws: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(draws.flatten(), minlength=V).float() / draws.numel()


@pytest.mark.parametrize(
    "temperature,top_p,top_k", [(1.0, 1.0, None), (0.5, 1.0, None), (1.3, 0.7, None), (0.8, 1.0, 3), (1.0, 0.9, 2)]
)
def test_sample_frequencies_follow_the_filtered_distribution(temperature, top_p, top_k):
    """N draws: frequencies within 0.02 of the expected probabilities (std of each is < 0.004)."""
    logits = PROBS.log().repeat(20000, 1)  # (N, V)
    gen = torch.Generator().manual_seed(0)
    draws = sample(logits, temperature, top_p, top_k, generator=gen)
    # expected: softmax(logits / T), then top-k by the published rule, then the nucleus
    q = torch.softmax(PROBS[0].log() / temperature, -1)
    if top_k is not None:
        q = torch.where(q >= torch.sort(q, descending=True).values[top_k - 1], q, torch.zeros_like(q))
        q = q / q.sum()
    keep = sorted(nucleus(q.tolist(), top_p))
    expected = torch.zeros_like(q)
    expected[keep] = q[keep] / q[keep].sum()
    freq = empirical(draws, 5)
    assert torch.all(freq[expected == 0] == 0), (freq, expected)
    torch.testing.assert_close(freq, expected, atol=0.02, rtol=0)


def test_sample_top_p_has_metas_signature_and_shape():
    out = sample_top_p(PROBS.repeat(3, 1), 0.5, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 1)
    assert set(out.flatten().tolist()) <= nucleus(PROBS[0].tolist(), 0.5)


def test_seeded_generator_makes_draws_reproducible():
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(3))
    a = [sample(logits, 1.0, 0.95, None, torch.Generator().manual_seed(7)) for _ in range(2)]
    b = sample(logits, 1.0, 0.95, None, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], a[1])
    assert not torch.equal(a[0], b)  # 8 rows of 100-way draws: a different seed changes some


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(temperature=-1.0), "temperature: expected >= 0, found -1.0"),
        (dict(temperature=1.0, top_p=0.0), "top_p: expected 0 < top_p <= 1, found 0.0"),
        (dict(temperature=1.0, top_k=0), "top_k: expected a positive integer, found 0"),
    ],
)
def test_bad_sampling_arguments_are_named(kwargs, message):
    with pytest.raises(GenerationError, match=message.replace("(", r"\(")):
        sample(PROBS.log(), **kwargs)
