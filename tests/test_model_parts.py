"""Model parts against transformers' Llama modules (a reference we did not write), on random inputs.

Our model keeps q/k in Meta's interleaved (complex) RoPE layout; transformers uses the rotate-half
layout, so q/k weights and activations are converted with ``meta_to_hf_qk`` before comparing.
"""

from __future__ import annotations

import math

import pytest
import torch
from hf_reference import hf_llama_config
from transformers import LlamaConfig
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

from simplellama.attention import Attention, attend, attend_sdpa, causal_mask, repeat_kv
from simplellama.config import ModelArgs
from simplellama.ffn import FeedForward
from simplellama.kv_cache import KVCache
from simplellama.norm import RMSNorm
from simplellama.rope import (
    RopeError,
    apply_llama3_scaling,
    apply_rotary_emb,
    apply_rotary_emb_real,
    apply_rotary_emb_rotate_half,
    freqs_cis_from_args,
    hf_to_meta_qk,
    meta_to_hf_qk,
    precompute_freqs_cis,
    rope_cos_sin,
    rope_description,
    rope_frequencies,
)

# (name, ModelArgs RoPE fields, transformers rope_parameters); original_max 64 with theta 10000 and
# Dh 16 puts wavelengths below, inside and above the llama3 thresholds (16 .. 64).
THETA = 10000.0
ROPE_CASES = [
    ("none", dict(use_scaled_rope=False), {"rope_type": "default", "rope_theta": THETA}),
    (
        "factor8",
        dict(use_scaled_rope=True, rope_scaling_factor=8.0, rope_original_max_seq_len=64),
        {"rope_type": "llama3", "rope_theta": THETA, "factor": 8.0, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    ),
    (
        "factor32",
        dict(use_scaled_rope=True, rope_scaling_factor=32.0, rope_low_freq_factor=2.0,
             rope_high_freq_factor=8.0, rope_original_max_seq_len=256),
        {"rope_type": "llama3", "rope_theta": THETA, "factor": 32.0, "low_freq_factor": 2.0,
         "high_freq_factor": 8.0, "original_max_position_embeddings": 256},
    ),
]  # fmt: skip


def tiny_args(rope: dict, **kw) -> ModelArgs:
    base = dict(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, rope_theta=THETA,
                max_seq_len=320, max_batch_size=2, norm_eps=1e-5)  # fmt: skip
    return ModelArgs(**{**base, **rope, **kw})


def heads_to_hf(x: torch.Tensor) -> torch.Tensor:
    """Activations (B, T, heads, Dh): Meta's per-head feature order -> HF's, with our row permutation."""
    return meta_to_hf_qk(x.movedim(-1, 0), 1).movedim(0, -1)


def heads_to_meta(x: torch.Tensor) -> torch.Tensor:
    return hf_to_meta_qk(x.movedim(-1, 0), 1).movedim(0, -1)


# ---------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 0.0)])
def test_rmsnorm_matches_transformers(dtype, tol):
    torch.manual_seed(0)
    ours, ref = RMSNorm(48, eps=1e-5, dtype=dtype), LlamaRMSNorm(48, eps=1e-5).to(dtype)
    w = torch.randn(48).to(dtype)
    ours.weight.data.copy_(w)
    ref.weight.data.copy_(w)
    x = (torch.randn(2, 7, 48) * 3).to(dtype)
    y = ours(x)
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(y, ref(x), atol=tol, rtol=tol)


def test_rmsnorm_formula_float64():
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    norm = RMSNorm(16, eps=1e-6, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)  # fused F.rms_norm path
    torch.testing.assert_close(norm._norm(x), expected)  # the formula spelled out


# ---------------------------------------------------------------- RoPE frequencies
@pytest.mark.parametrize("name,rope,rope_params", ROPE_CASES, ids=[c[0] for c in ROPE_CASES])
def test_inv_freq_matches_transformers(name, rope, rope_params):
    args = tiny_args(rope)
    ref = LlamaRotaryEmbedding(hf_llama_config(args, rope_params)).inv_freq
    torch.testing.assert_close(rope_frequencies(args), ref, atol=0, rtol=1e-6)
    if name != "none":  # scaling really changed something, in all three regimes
        plain = rope_frequencies(tiny_args({}))
        ratio = plain / rope_frequencies(args)
        factor = rope["rope_scaling_factor"]
        assert torch.isclose(ratio[0], torch.tensor(1.0)), "highest frequency must be kept"
        assert torch.isclose(ratio[-1], torch.tensor(factor)), "lowest frequency must be divided by factor"
        assert ((ratio > 1.001) & (ratio < factor - 0.001)).any(), "some frequency must be blended"


def test_llama3_scaling_real_sizes_matches_transformers():
    """Llama 3.2 1B settings (Dh 64, theta 500000, factor 32, original 8192) against transformers."""
    args = ModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, use_scaled_rope=True, rope_theta=500000.0)
    assert args.rope_scaling_factor == 32.0  # inferred for the 3.2 1B shape
    cfg = LlamaConfig(hidden_size=2048, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=1,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})  # fmt: skip
    ref = LlamaRotaryEmbedding(cfg).inv_freq
    torch.testing.assert_close(rope_frequencies(args), ref, atol=0, rtol=1e-6)
    assert "factor=32" in rope_description(args)


def test_precompute_freqs_cis_is_polar_of_outer_product():
    freqs = apply_llama3_scaling(1.0 / THETA ** (torch.arange(0, 16, 2).double() / 16), 8.0, 1.0, 4.0, 64)
    expected = torch.polar(torch.ones(100, 8, dtype=torch.float64), torch.outer(torch.arange(100.0).double(), freqs))
    got = precompute_freqs_cis(16, 100, THETA, scaling_factor=8.0, original_max_seq_len=64)
    assert got.shape == (100, 8) and got.dtype == torch.complex64
    torch.testing.assert_close(got, expected.to(torch.complex64), atol=2e-5, rtol=0)


def test_precompute_freqs_cis_rejects_odd_head_dim():
    with pytest.raises(RopeError, match="head_dim must be a positive even number, found 7"):
        precompute_freqs_cis(7, 10)


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("name,rope,rope_params", ROPE_CASES, ids=[c[0] for c in ROPE_CASES])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
def test_rotary_matches_transformers(name, rope, rope_params, dtype, tol):
    torch.manual_seed(1)
    args = tiny_args(rope)
    B, T, start = 2, 150, 130  # positions 130..279: past every wavelength threshold
    xq = torch.randn(B, T, args.n_heads, args.head_dim).to(dtype)
    xk = torch.randn(B, T, args.n_kv_heads, args.head_dim).to(dtype)
    freqs_cis = freqs_cis_from_args(args)[start : start + T]
    q, k = apply_rotary_emb(xq, xk, freqs_cis)
    assert q.dtype == dtype and k.dtype == dtype and q.shape == xq.shape and k.shape == xk.shape

    rot = LlamaRotaryEmbedding(hf_llama_config(args, rope_params))
    pos = torch.arange(start, start + T)[None].expand(B, T)
    cos, sin = rot(xq.float(), pos)  # (B, T, Dh) float32
    q_hf, k_hf = apply_rotary_pos_emb(heads_to_hf(xq).float(), heads_to_hf(xk).float(), cos, sin, unsqueeze_dim=2)
    torch.testing.assert_close(q.float(), heads_to_meta(q_hf), atol=tol, rtol=tol)
    torch.testing.assert_close(k.float(), heads_to_meta(k_hf), atol=tol, rtol=tol)

    # the teaching rotate-half form on HF-ordered features gives the HF result too
    q_rh, k_rh = apply_rotary_emb_rotate_half(heads_to_hf(xq), heads_to_hf(xk), freqs_cis)
    torch.testing.assert_close(q_rh.float(), q_hf, atol=tol, rtol=tol)
    torch.testing.assert_close(k_rh.float(), k_hf, atol=tol, rtol=tol)

    # the real-arithmetic form (compiled.py) on Meta's layout gives it too
    q_re, k_re = apply_rotary_emb_real(xq, xk, *rope_cos_sin(freqs_cis))
    torch.testing.assert_close(q_re.float(), heads_to_meta(q_hf), atol=tol, rtol=tol)
    torch.testing.assert_close(k_re.float(), heads_to_meta(k_hf), atol=tol, rtol=tol)


def test_rotation_depends_only_on_relative_position():
    torch.manual_seed(2)
    fc = precompute_freqs_cis(16, 64, THETA)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> torch.Tensor:
        qm, _ = apply_rotary_emb(q, q, fc[m : m + 1])
        kn, _ = apply_rotary_emb(k, k, fc[n : n + 1])
        return (qm * kn).sum()

    torch.testing.assert_close(score(10, 3), score(50, 43), atol=1e-5, rtol=1e-5)
    assert not torch.isclose(score(10, 3), score(10, 4), atol=1e-4)


def test_apply_rotary_emb_shape_error():
    fc = precompute_freqs_cis(16, 5, THETA)
    with pytest.raises(RopeError, match=r"xq must be \(B, T, heads, Dh\) with T=5 and Dh=16.*found \(1, 4, 2, 16\)"):
        apply_rotary_emb(torch.randn(1, 4, 2, 16), torch.randn(1, 5, 2, 16), fc)


# ---------------------------------------------------------------- q/k row permutation
@pytest.mark.parametrize("n_heads,n_kv_heads,head_dim", [(4, 2, 16), (9, 3, 64), (8, 8, 8)])
def test_qk_permutation_matches_transformers_gguf_reader(n_heads, n_kv_heads, head_dim):
    """transformers reads GGUF (Meta row order) into HF order with ``_reverse_permute_weights``."""
    dim = n_heads * head_dim
    wq, wk = torch.randn(n_heads * head_dim, dim), torch.randn(n_kv_heads * head_dim, dim)
    proc = LlamaTensorProcessor()
    ref_q = torch.from_numpy(proc._reverse_permute_weights(wq.numpy(), n_heads, n_heads))
    ref_k = torch.from_numpy(proc._reverse_permute_weights(wk.numpy(), n_heads, n_kv_heads))
    assert torch.equal(meta_to_hf_qk(wq, n_heads), ref_q)
    assert torch.equal(meta_to_hf_qk(wk, n_kv_heads), ref_k)
    assert torch.equal(hf_to_meta_qk(meta_to_hf_qk(wq, n_heads), n_heads), wq)
    assert torch.equal(meta_to_hf_qk(hf_to_meta_qk(wk, n_kv_heads), n_kv_heads), wk)
    assert not torch.equal(meta_to_hf_qk(wq, n_heads), wq)


def test_qk_permutation_row_mapping():
    rows = torch.arange(8.0)[:, None]  # one head, Dh = 8
    assert meta_to_hf_qk(rows, 1).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_qk_permutation_error():
    with pytest.raises(RopeError, match=r"meta_to_hf_qk: weight rows \(\(12,\)\) must split into n_heads=4"):
        meta_to_hf_qk(torch.zeros(12, 4), 4)
    with pytest.raises(RopeError, match="hf_to_meta_qk"):
        hf_to_meta_qk(torch.zeros(12, 4), 5)


# ---------------------------------------------------------------- attention
def test_repeat_kv_is_repeat_interleave():
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(repeat_kv(x, 4), torch.repeat_interleave(x, 4, dim=2))
    # transformers' version works on (B, K, S, Dh)
    torch.testing.assert_close(repeat_kv(x, 2), hf_repeat_kv(x.transpose(1, 2), 2).transpose(1, 2))


@pytest.mark.parametrize("T,start", [(1, 0), (1, 9), (5, 0), (4, 3)])
def test_causal_mask(T, start):
    mask = causal_mask(T, start)
    if T == 1:
        assert mask is None
        return
    expected = torch.ones(T, start + T, dtype=torch.bool).tril(diagonal=start)
    assert torch.equal(mask, expected)


def test_attend_matches_torch_sdpa():
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 8)
    mask = causal_mask(6, 3)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attend(q, k, v, mask), ref, atol=1e-5, rtol=1e-5)


def load_hf_attention(ours: Attention, args: ModelArgs, rope_params: dict) -> LlamaAttention:
    ref = LlamaAttention(hf_llama_config(args, rope_params), layer_idx=0)
    ref.q_proj.weight.data.copy_(meta_to_hf_qk(ours.wq.weight.data, args.n_heads))
    ref.k_proj.weight.data.copy_(meta_to_hf_qk(ours.wk.weight.data, args.n_kv_heads))
    ref.v_proj.weight.data.copy_(ours.wv.weight.data)
    ref.o_proj.weight.data.copy_(ours.wo.weight.data)
    return ref


@pytest.mark.parametrize("n_kv_heads", [2, 4, 1], ids=["gqa", "mha", "mqa"])
@pytest.mark.parametrize("name,rope,rope_params", ROPE_CASES[:2], ids=[c[0] for c in ROPE_CASES[:2]])
def test_attention_matches_transformers(n_kv_heads, name, rope, rope_params):
    torch.manual_seed(4)
    args = tiny_args(rope, n_kv_heads=n_kv_heads)
    ours = Attention(args)
    ref = load_hf_attention(ours, args, rope_params)
    B, T = 2, 90
    x = torch.randn(B, T, args.dim)
    ours.use_sdpa = False  # the explicit ``attend`` path
    out = ours(x, None, freqs_cis_from_args(args)[:T], causal_mask(T))

    cos, sin = LlamaRotaryEmbedding(ref.config)(x, torch.arange(T)[None].expand(B, T))
    additive = torch.full((T, T), float("-inf")).triu(1)[None, None].expand(B, 1, T, T)
    ref_out, _ = ref(x, position_embeddings=(cos, sin), attention_mask=additive)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)

    ours.use_sdpa = True
    torch.testing.assert_close(
        ours(x, None, freqs_cis_from_args(args)[:T], causal_mask(T)), ref_out, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("n_kv_heads", [2, 4], ids=["gqa", "mha"])
def test_attend_sdpa_equals_explicit_attend(n_kv_heads, dtype, tol):
    """Fused path (grouped kv heads, float32 inside) == explicit attend on repeated heads: prefill, a chunk
    after cached positions (T < S, masked), one decoded token (no mask)."""
    torch.manual_seed(7)
    H, Dh = 4, 16
    for T, start in ((9, 0), (5, 6), (1, 11)):
        S = start + T
        q = torch.randn(2, H, T, Dh, dtype=dtype)
        k, v = (torch.randn(2, n_kv_heads, S, Dh, dtype=dtype) for _ in range(2))
        mask = causal_mask(T, start)
        G = H // n_kv_heads
        k_rep, v_rep = (repeat_kv(t.transpose(1, 2), G).transpose(1, 2) for t in (k, v))  # (B, H, S, Dh)
        expected = attend(q, k_rep, v_rep, mask)
        got = attend_sdpa(q, k, v, mask)
        assert got.dtype == dtype and got.shape == (2, H, T, Dh)
        torch.testing.assert_close(got.float(), expected.float(), atol=tol, rtol=tol)


def test_attention_module_paths_agree_with_cache():
    """Attention with the KV cache, prompt then chunks then single tokens: fused == explicit path."""
    torch.manual_seed(8)
    args = tiny_args({})
    fused = Attention(args)
    explicit = Attention(args, use_sdpa=False)
    explicit.load_state_dict(fused.state_dict())
    freqs = freqs_cis_from_args(args)
    for m in (fused, explicit):
        m.cache = KVCache(1, 16, args.n_kv_heads, args.head_dim)
    x = torch.randn(1, 16, args.dim)
    with torch.no_grad():
        for start, end in ((0, 7), (7, 10), (10, 11), (11, 12)):
            T = end - start
            outs = [m(x[:, start:end], start, freqs[start:end], causal_mask(T, start)) for m in (fused, explicit)]
            torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_attention_without_cache_raises_clear_error():
    args = tiny_args({})
    attn = Attention(args)
    with pytest.raises(ValueError, match="start_pos given but no KV cache"):
        attn(torch.randn(1, 3, args.dim), 0, freqs_cis_from_args(args)[:3], causal_mask(3))


# ---------------------------------------------------------------- SwiGLU
def test_feedforward_matches_transformers():
    torch.manual_seed(5)
    args = tiny_args({})
    ours = FeedForward(args.dim, args.hidden_dim)
    ref = LlamaMLP(hf_llama_config(args, ROPE_CASES[0][2]))
    ref.gate_proj.weight.data.copy_(ours.w1.weight.data)
    ref.up_proj.weight.data.copy_(ours.w3.weight.data)
    ref.down_proj.weight.data.copy_(ours.w2.weight.data)
    x = torch.randn(2, 7, args.dim)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-6)
    # and the published formula, float64
    x64 = x.double()
    w1, w2, w3 = (w.weight.double() for w in (ours.w1, ours.w2, ours.w3))
    h = x64 @ w1.T
    expected = (h * torch.sigmoid(h) * (x64 @ w3.T)) @ w2.T
    torch.testing.assert_close(ours.double()(x64), expected)
    assert math.prod(ours.w1.weight.shape) == args.dim * args.hidden_dim
