"""KV cache: cached prefill + decode must equal a full recompute, and the buffers must behave.

References: the model's own no-cache causal forward (``start_pos=None``, itself compared with
transformers in test_model_whole.py), transformers' logits, and torch tensor sizes.
"""

from __future__ import annotations

import pytest
import torch
from test_model_whole import hf_model, make_args, random_model

from simplellama.config import ModelArgs
from simplellama.kv_cache import KVCache, KVCacheError
from simplellama.model import Transformer


def run_chunks(model: Transformer, tokens: torch.Tensor, chunks: list[int]) -> list[torch.Tensor]:
    """Feed ``tokens`` (B, S) through the cache in consecutive chunks; returns each chunk's logits."""
    outs, pos = [], 0
    for n in chunks:
        outs.append(model(tokens[:, pos : pos + n], start_pos=pos))
        pos += n
    assert pos == tokens.shape[1]
    return outs


@pytest.mark.parametrize(
    "case,chunks",
    [
        (dict(n_kv_heads=2, tied=True, factor=8.0), [7, 1, 1, 3, 1, 5, 1, 1, 40, 2, 1]),
        (dict(n_kv_heads=4, tied=False, factor=32.0), [1, 1, 19, 1, 4, 1, 1, 1, 30, 1, 1, 1, 1]),
        (dict(n_kv_heads=1, tied=False, factor=None), [24, 1, 1, 1, 1, 1, 1, 1, 32]),
    ],
    ids=["gqa-prefill7", "mha-prefill1", "mqa-prefill24"],
)
def test_cached_logits_equal_full_recompute_every_step(case, chunks):
    args = make_args(**case)
    model = random_model(args)
    total = sum(chunks)
    tokens = torch.randint(0, args.vocab_size, (2, total), generator=torch.Generator().manual_seed(4))
    model.setup_cache(max_batch_size=2, max_seq_len=total)
    pos = 0
    for n, logits in zip(chunks, run_chunks(model, tokens, chunks), strict=True):
        full = model(tokens[:, : pos + n], start_pos=None)  # recompute everything up to this step
        assert logits.shape == (2, n, args.vocab_size)
        torch.testing.assert_close(logits, full[:, pos:], atol=2e-5, rtol=1e-5)
        pos += n


def test_cached_logits_equal_transformers():
    args = make_args(n_kv_heads=2, tied=False, factor=8.0)
    model = random_model(args)
    tokens = torch.randint(0, args.vocab_size, (2, 90), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf_model(args, model.state_dict())(tokens).logits
    got = torch.cat(run_chunks(model, tokens, [50, 1, 1, 3, 35]), dim=1)
    assert (got - expected).abs().max().item() <= 1e-4


def test_cache_reused_for_a_new_prompt_and_smaller_batch():
    """A new request overwrites positions from 0; stale entries beyond it are never read."""
    args = make_args()
    model = random_model(args)
    g = torch.Generator().manual_seed(6)
    first = torch.randint(0, args.vocab_size, (2, 40), generator=g)
    second = torch.randint(0, args.vocab_size, (1, 12), generator=g)
    run_chunks(model, first, [30, 10])
    got = torch.cat(run_chunks(model, second, [5, 1, 6]), dim=1)
    torch.testing.assert_close(got, model(second, start_pos=None), atol=2e-5, rtol=1e-5)


def test_lazy_allocation_and_sizes_from_request():
    args = make_args(max_seq_len=64, max_batch_size=3)
    model = random_model(args)
    assert model.cache_bytes == 0
    model(torch.zeros(1, 4, dtype=torch.long), start_pos=0)  # allocates from args
    cache = model.layers[0].attention.cache
    assert tuple(cache.cache_k.shape) == (3, 64, args.n_kv_heads, args.head_dim)
    assert model.cache_bytes == args.kv_cache_bytes(3, 64, bytes_per_el=4)

    nbytes = model.setup_cache(max_batch_size=1, max_seq_len=20)
    assert nbytes == model.cache_bytes == args.kv_cache_bytes(1, 20, bytes_per_el=4)
    expected = sum(b.nbytes for name, b in model.named_buffers() if "cache_" in name)
    assert nbytes == expected
    model.free_cache()
    assert model.cache_bytes == 0


def test_cache_longer_than_args_max_seq_len_grows_rope_table():
    args = make_args(max_seq_len=32, factor=8.0)
    model = random_model(args)
    tokens = torch.randint(0, args.vocab_size, (2, 100), generator=torch.Generator().manual_seed(7))
    model.setup_cache(2, 100)
    assert model.freqs_cis.shape[0] >= 100
    got = torch.cat(run_chunks(model, tokens, [60, 1, 39]), dim=1)
    torch.testing.assert_close(got, model(tokens, start_pos=None), atol=2e-5, rtol=1e-5)


def test_cache_follows_model_dtype_and_is_not_recast():
    args = make_args()
    model = random_model(args)
    model.setup_cache(2, 16)
    model.to(torch.bfloat16)
    cache = model.layers[1].attention.cache
    assert cache.cache_k.dtype == torch.bfloat16
    ptr = cache.cache_k.data_ptr()
    model(torch.zeros(2, 5, dtype=torch.long), start_pos=0)
    model(torch.zeros(2, 1, dtype=torch.long), start_pos=5)
    assert cache.cache_k.data_ptr() == ptr  # written in place, same storage
    assert cache.cache_k[:, :6].abs().sum() > 0 and cache.cache_k[:, 6:].abs().sum() == 0


def test_kvcache_update_returns_views_with_the_written_values():
    c = KVCache(2, 10, 3, 4)
    k1, v1 = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 3, 4)
    keys, values = c.update(0, k1, v1)
    assert keys.shape == (2, 6, 3, 4) and torch.equal(keys, k1) and torch.equal(values, v1)
    k2, v2 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    keys, values = c.update(6, k2, v2)
    assert keys.shape == (1, 8, 3, 4)
    assert torch.equal(keys, torch.cat([k1[:1], k2], dim=1)) and torch.equal(values, torch.cat([v1[:1], v2], dim=1))
    assert keys.data_ptr() == c.cache_k.data_ptr()  # a view, not a copy
    assert c.nbytes == 2 * 2 * 10 * 3 * 4 * 4
    assert "cache_k" not in c.state_dict()


@pytest.mark.parametrize(
    "start_pos,shape,dtype,message",
    [
        (8, (1, 3, 3, 4), torch.float32, "positions 8..10 do not fit max_seq_len 10"),
        (-1, (1, 1, 3, 4), torch.float32, r"positions -1..-1 do not fit max_seq_len 10"),
        (0, (3, 1, 3, 4), torch.float32, "batch 3 exceeds max_batch_size 2"),
        (0, (1, 1, 2, 4), torch.float32, r"k and v must be \(B, T, 3, 4\), found \(1, 1, 2, 4\)"),
        (0, (1, 1, 3, 4), torch.float64, "dtype torch.float64/torch.float64 does not match the cache's torch.float32"),
    ],
)
def test_kvcache_update_errors(start_pos, shape, dtype, message):
    c = KVCache(2, 10, 3, 4)
    x = torch.zeros(shape, dtype=dtype)
    with pytest.raises(KVCacheError, match=message):
        c.update(start_pos, x, x)


def test_kvcache_bad_size_error():
    with pytest.raises(KVCacheError, match="max_seq_len must be a positive integer, found 0"):
        KVCache(1, 0, 2, 4)


def test_model_forward_past_cache_raises():
    model = random_model(make_args())
    model.setup_cache(1, 8)
    with pytest.raises(KVCacheError, match="positions 6..8 do not fit max_seq_len 8"):
        model(torch.zeros(1, 3, dtype=torch.long), start_pos=6)
    with pytest.raises(KVCacheError, match="batch 2 exceeds max_batch_size 1"):
        model(torch.zeros(2, 3, dtype=torch.long), start_pos=0)


def test_kv_cache_bytes_matches_config_formula_for_a_real_shape():
    args = ModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, max_seq_len=4096, max_batch_size=1)
    cache = KVCache(1, 4096, args.n_kv_heads, args.head_dim, device="meta", dtype=torch.bfloat16)
    assert cache.nbytes * args.n_layers == args.kv_cache_bytes(1, 4096, bytes_per_el=2)
