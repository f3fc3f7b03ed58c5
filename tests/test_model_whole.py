"""Whole model against transformers' LlamaForCausalLM built from the equivalent config.

Tiny random weights are made in Meta's layout (our names), converted to HF names with q/k rows
permuted by ``meta_to_hf_qk``, and loaded strictly into transformers. Small ``original_max_seq_len``
values and sequences longer than it make Llama 3.1 RoPE scaling matter at tiny sizes.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hf_reference import hf_llama_config
from transformers import LlamaForCausalLM

from simplellama.config import ModelArgs
from simplellama.model import ModelError, Transformer
from simplellama.rope import meta_to_hf_qk

THETA = 10000.0


def hf_model(args: ModelArgs, meta_sd: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    model = LlamaForCausalLM(hf_llama_config(args)).eval()
    model.load_state_dict(to_hf_names(args, meta_sd), strict=True)
    if args.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def to_hf_names(args: ModelArgs, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta names -> HF names (the published mapping of transformers' Llama conversion script)."""
    out = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"],
           "lm_head.weight": sd["output.weight"]}  # fmt: skip
    for i in range(args.n_layers):
        m, h = f"layers.{i}.", f"model.layers.{i}."
        out[h + "self_attn.q_proj.weight"] = meta_to_hf_qk(sd[m + "attention.wq.weight"], args.n_heads)
        out[h + "self_attn.k_proj.weight"] = meta_to_hf_qk(sd[m + "attention.wk.weight"], args.n_kv_heads)
        out[h + "self_attn.v_proj.weight"] = sd[m + "attention.wv.weight"]
        out[h + "self_attn.o_proj.weight"] = sd[m + "attention.wo.weight"]
        out[h + "mlp.gate_proj.weight"] = sd[m + "feed_forward.w1.weight"]
        out[h + "mlp.up_proj.weight"] = sd[m + "feed_forward.w3.weight"]
        out[h + "mlp.down_proj.weight"] = sd[m + "feed_forward.w2.weight"]
        out[h + "input_layernorm.weight"] = sd[m + "attention_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = sd[m + "ffn_norm.weight"]
    return out


def meta_key_names(n_layers: int) -> set[str]:
    """Parameter names of Meta's consolidated.00.pth (llama_models/llama3/model.py)."""
    keys = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    for i in range(n_layers):
        keys |= {f"layers.{i}.attention.{w}.weight" for w in ("wq", "wk", "wv", "wo")}
        keys |= {f"layers.{i}.feed_forward.{w}.weight" for w in ("w1", "w2", "w3")}
        keys |= {f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"}
    return keys


def make_args(n_kv_heads: int = 2, tied: bool = False, factor: float | None = None, **kw) -> ModelArgs:
    rope = {}
    if factor is not None:
        rope = dict(use_scaled_rope=True, rope_scaling_factor=factor, rope_original_max_seq_len=48)
    base = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=128, multiple_of=32,
                rope_theta=THETA, tie_word_embeddings=tied, max_seq_len=192, max_batch_size=2)  # fmt: skip
    return ModelArgs(**{**base, **rope, **kw})


def random_model(args: ModelArgs, seed: int = 0, dtype: torch.dtype | None = None) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(args, dtype=dtype)
    model.init_weights(std=0.15)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model


CASES = [
    dict(n_kv_heads=2, tied=True, factor=8.0),
    dict(n_kv_heads=4, tied=False, factor=32.0),
    dict(n_kv_heads=2, tied=False, factor=None),
    dict(n_kv_heads=4, tied=True, factor=32.0, rope_low_freq_factor=2.0, rope_high_freq_factor=8.0),
    dict(n_kv_heads=1, tied=False, factor=8.0),
]
IDS = ["gqa-tied-f8", "mha-untied-f32", "gqa-untied-noscale", "mha-tied-f32-lf2-hf8", "mqa-untied-f8"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logits_match_transformers(case):
    args = make_args(**case)
    model = random_model(args)
    ref = hf_model(args, model.state_dict())
    tokens = torch.randint(0, args.vocab_size, (2, 160), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(tokens).logits
    assert expected.abs().max() > 1.0, "logits too flat to test anything"
    for logits in (model(tokens, start_pos=None), model(tokens, start_pos=0)):
        assert logits.dtype == torch.float32 and logits.shape == (2, 160, args.vocab_size)
        assert (logits - expected).abs().max().item() <= 1e-4
    # transformers' logits_to_keep: the last n positions only, on both paths
    with torch.no_grad():
        expected_last = ref(tokens, logits_to_keep=3).logits
    assert expected_last.shape == (2, 3, args.vocab_size)
    for logits in (model(tokens, start_pos=None, logits_to_keep=3), model(tokens, start_pos=0, logits_to_keep=3)):
        assert logits.shape == (2, 3, args.vocab_size)
        assert (logits - expected_last).abs().max().item() <= 1e-4


def test_rope_scaling_matters_at_these_sizes():
    """The factor-8 model differs from the same weights without scaling: the comparisons above can fail."""
    args = make_args(factor=8.0)
    model = random_model(args)
    plain = hf_model(make_args(), model.state_dict())
    tokens = torch.randint(0, args.vocab_size, (1, 160), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(tokens, start_pos=None) - plain(tokens).logits).abs().max() > 1e-2


def test_gradients_match_transformers():
    args = make_args(n_kv_heads=2, tied=True, factor=8.0)
    model = random_model(args)
    ref = hf_model(args, model.state_dict())
    tokens = torch.randint(0, args.vocab_size, (2, 64), generator=torch.Generator().manual_seed(2))
    loss = torch.nn.functional.cross_entropy(
        model(tokens, start_pos=None)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()
    )
    loss.backward()
    ref_loss = ref(tokens, labels=tokens).loss
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    layer = ref.model.layers[1]
    pairs = [
        (model.layers[1].attention.wq.weight.grad, layer.self_attn.q_proj.weight.grad, args.n_heads),
        (model.layers[1].attention.wk.weight.grad, layer.self_attn.k_proj.weight.grad, args.n_kv_heads),
        (model.layers[0].feed_forward.w2.weight.grad, ref.model.layers[0].mlp.down_proj.weight.grad, None),
        (model.tok_embeddings.weight.grad, ref.model.embed_tokens.weight.grad, None),
    ]
    for ours, theirs, n_heads in pairs:
        ours = ours if n_heads is None else meta_to_hf_qk(ours, n_heads)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_close_to_fp32(dtype):
    args = make_args(n_kv_heads=2, tied=False, factor=8.0)
    model = random_model(args)
    tokens = torch.randint(0, args.vocab_size, (2, 100), generator=torch.Generator().manual_seed(3))
    ref = model(tokens, start_pos=None)
    low = Transformer(args, dtype=dtype)
    low.load_state_dict(model.state_dict(), strict=True)  # casts the fp32 weights
    assert low.tok_embeddings.weight.dtype == dtype
    out = low(tokens, start_pos=0)
    assert out.dtype == torch.float32
    scale = ref.abs().max()
    assert (out - ref).abs().max() <= 0.08 * scale  # bf16 keeps ~3 significant digits
    cos = torch.nn.functional.cosine_similarity(out, ref, dim=-1)
    assert cos.min() > 0.99
    # model.to(dtype) keeps the RoPE table complex and gives the same result as building in dtype
    moved = random_model(args).to(dtype)
    assert moved.freqs_cis.dtype == torch.complex64
    torch.testing.assert_close(moved(tokens, start_pos=None), low(tokens, start_pos=None), atol=0, rtol=0)


def test_state_dict_has_meta_names_only_and_loads_strict(tmp_path):
    args = make_args(tied=False, factor=8.0)
    src = random_model(args, seed=1)
    src.setup_cache(2, 64)  # caches and the RoPE table are not part of a checkpoint
    sd = src.state_dict()
    assert set(sd) == meta_key_names(args.n_layers)
    path = tmp_path / "consolidated.00.pth"
    torch.save(sd, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    dst = random_model(args, seed=2)
    dst.load_state_dict(loaded, strict=True)
    tokens = torch.randint(0, args.vocab_size, (1, 20))
    torch.testing.assert_close(dst(tokens, None), src(tokens, None), atol=0, rtol=0)

    del loaded["layers.1.ffn_norm.weight"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "layers.1.ffn_norm.weight"'):
        dst.load_state_dict(loaded, strict=True)


def test_tied_embeddings_share_one_tensor():
    args = make_args(tied=True)
    model = random_model(args)
    assert model.output.weight is model.tok_embeddings.weight
    sd = model.state_dict()
    assert set(sd) == meta_key_names(args.n_layers)  # output.weight still present
    assert args.num_parameters() == sum(p.numel() for p in model.parameters())  # counted once


def test_meta_device_build_then_assign_load():
    """How loaders avoid initialising big models twice: build on "meta", then assign real tensors."""
    args = make_args(factor=32.0)
    src = random_model(args)
    with torch.device("meta"):
        empty = Transformer(args)
    empty.load_state_dict(src.state_dict(), strict=True, assign=True)
    tokens = torch.randint(0, args.vocab_size, (2, 70))
    torch.testing.assert_close(empty(tokens, 0), src(tokens, None), atol=1e-5, rtol=1e-5)


def test_training_path_has_gradients_cache_path_has_none():
    args = make_args()
    model = random_model(args)
    tokens = torch.randint(0, args.vocab_size, (2, 12))
    assert model(tokens, start_pos=None).requires_grad
    assert not model(tokens, start_pos=0).requires_grad


@pytest.mark.parametrize(
    "tokens,start_pos,message",
    [
        (torch.zeros(2, 3), 0, r"tokens must be integer \(B, T\), found torch.float32 \(2, 3\)"),
        (torch.zeros(3, dtype=torch.long), 0, r"tokens must be integer \(B, T\), found torch.int64 \(3,\)"),
        (torch.zeros(1, 3, dtype=torch.long), -1, "start_pos must be None or an int >= 0, found -1"),
        (torch.zeros(1, 3, dtype=torch.long), 1.5, "start_pos must be None or an int >= 0, found 1.5"),
        (torch.zeros(1, 3, dtype=torch.long), True, "start_pos must be None or an int >= 0, found True"),
    ],
)
def test_forward_input_errors(tokens, start_pos, message):
    model = random_model(make_args())
    with pytest.raises(ModelError, match=message):
        model(tokens, start_pos)


@pytest.mark.parametrize("keep", [-1, 1.0, True])
def test_forward_logits_to_keep_error(keep):
    model = random_model(make_args())
    with pytest.raises(ModelError, match=f"logits_to_keep must be an int >= 0, found {keep!r}"):
        model(torch.zeros(1, 3, dtype=torch.long), 0, logits_to_keep=keep)


def test_generation_under_inference_mode_then_training():
    """Cache and RoPE table made under torch.inference_mode() stay usable by a later training step."""
    args = make_args(max_seq_len=16)
    model = random_model(args)
    tokens = torch.randint(0, args.vocab_size, (2, 24))
    with torch.inference_mode():
        model.setup_cache(2, 24)  # grows the RoPE table past max_seq_len too
        cached = torch.cat([model(tokens[:, :20], 0), model(tokens[:, 20:], np.int64(20))], dim=1)
    logits = model(tokens, start_pos=None)
    logits.sum().backward()
    assert model.layers[0].attention.wq.weight.grad is not None
    torch.testing.assert_close(cached, logits.detach(), atol=2e-5, rtol=1e-5)


def test_build_logs_the_rope_variant(caplog):
    with caplog.at_level(logging.INFO, logger="simplellama.model"):
        Transformer(make_args(factor=32.0))
        Transformer(make_args())
    messages = [r.getMessage() for r in caplog.records if r.name == "simplellama.model"]
    assert any("Llama 3.1 scaling factor=32 " in m and "original_max_seq_len=48" in m for m in messages)
    assert any("no frequency scaling" in m for m in messages)
