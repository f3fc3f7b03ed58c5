"""HF and (tiny) GGUF checkpoints: logits equal transformers' for the same files; round trips; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ckpt_factory import random_state_dict, tiny_args, write_gguf, write_hf, write_meta

from simplellama.checkpoint import CheckpointError, convert, detect_format, load_checkpoint, load_model

TOKENS = torch.tensor([[5, 17, 3, 88, 42, 9, 60, 1, 33, 71, 2, 50]])


def hf_logits(model, tokens=TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits.float()


def our_logits(path, tokens=TOKENS, **kw) -> torch.Tensor:
    model, _ = load_model(path, **kw)
    with torch.no_grad():
        return model(tokens, start_pos=None).float()


# ---- Hugging Face dirs written by transformers ----

HF_CASES = {
    "gqa-untied": dict(),
    "gqa-tied": dict(tie_word_embeddings=True),
    "mha": dict(num_key_value_heads=4),
    "llama3-scaling": dict(
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 4,
        }
    ),
}


@pytest.mark.parametrize("case", HF_CASES)
def test_hf_logits_match_transformers(tmp_path, case):
    ref = write_hf(tmp_path, **HF_CASES[case])
    assert detect_format(tmp_path) == "hf"
    ckpt = load_checkpoint(tmp_path, with_tokenizer=False)
    assert ckpt.args.tie_word_embeddings == ref.config.tie_word_embeddings
    assert ckpt.args.use_scaled_rope == (case == "llama3-scaling")
    torch.testing.assert_close(our_logits(tmp_path), hf_logits(ref), rtol=1e-4, atol=1e-4)


def test_hf_logits_with_kv_cache_positions(tmp_path):
    """Positions past the llama3 scaling window, decoded with the cache: q/k un-permutation must be right."""
    ref = write_hf(tmp_path, **HF_CASES["llama3-scaling"])
    model, _ = load_model(tmp_path)
    with torch.no_grad():
        prefill = model(TOKENS[:, :8], start_pos=0)
        step = model(TOKENS[:, 8:], start_pos=8)
    torch.testing.assert_close(torch.cat([prefill, step], 1), hf_logits(ref), rtol=1e-4, atol=1e-4)


def test_hf_sharded_safetensors(tmp_path):
    from transformers import LlamaForCausalLM

    ref = write_hf(tmp_path / "one")
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert isinstance(LlamaForCausalLM.from_pretrained(tmp_path / "sharded"), LlamaForCausalLM)
    torch.testing.assert_close(our_logits(tmp_path / "sharded"), hf_logits(ref), rtol=1e-4, atol=1e-4)


def test_hf_bfloat16_kept(tmp_path):
    ref = write_hf(tmp_path / "f32")
    ref.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    ckpt = load_checkpoint(tmp_path / "bf16", with_tokenizer=False)
    assert ckpt.state_dict["layers.0.attention.wq.weight"].dtype == torch.bfloat16
    assert (
        load_checkpoint(tmp_path / "bf16", torch.float32, with_tokenizer=False)
        .state_dict["layers.0.attention.wq.weight"]
        .dtype
        == torch.float32
    )


# ---- round trips through our writers ----


def test_hf_to_meta_to_hf(tmp_path):
    from transformers import LlamaForCausalLM

    ref = write_hf(tmp_path / "hf", **HF_CASES["llama3-scaling"])
    convert(tmp_path / "hf", tmp_path / "meta", to="meta")
    assert detect_format(tmp_path / "meta") == "meta"
    torch.testing.assert_close(our_logits(tmp_path / "meta"), hf_logits(ref), rtol=1e-4, atol=1e-4)
    convert(tmp_path / "meta", tmp_path / "hf2", to="hf")
    back = LlamaForCausalLM.from_pretrained(tmp_path / "hf2").eval()  # transformers reads our config + weights
    torch.testing.assert_close(hf_logits(back), hf_logits(ref), rtol=1e-5, atol=1e-5)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)


def test_meta_to_hf_tied_loads_in_transformers(tmp_path):
    from transformers import LlamaForCausalLM

    args = tiny_args(tie_word_embeddings=True)
    write_meta(tmp_path / "meta", args, 2)
    convert(tmp_path / "meta", tmp_path / "hf", to="hf")
    ref = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert ref.lm_head.weight.data_ptr() == ref.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(our_logits(tmp_path / "meta"), hf_logits(ref), rtol=1e-4, atol=1e-4)


def test_writer_leaves_no_partial_output(tmp_path, monkeypatch):
    import simplellama.checkpoint as ck

    write_meta(tmp_path / "meta", tiny_args(), 1)
    ckpt = load_checkpoint(tmp_path / "meta", with_tokenizer=False)

    def broken_save(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_meta(ckpt, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta"]
    monkeypatch.undo()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CheckpointError, match="output exists and is not an empty directory"):
        ck.save_meta(ckpt, tmp_path / "full")
    with pytest.raises(CheckpointError, match=r"to: expected 'meta', 'hf' or 'gguf', found 'onnx'"):
        convert(tmp_path / "meta", tmp_path / "o", to="onnx")


# ---- tiny GGUF files written with gguf.GGUFWriter, read by transformers as the reference ----


def _transformers_gguf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0"])
def test_tiny_gguf_matches_transformers(tmp_path, qtype):
    args = tiny_args()
    sd = random_state_dict(args)
    path = write_gguf(tmp_path / "tiny.gguf", args, sd, default_qtype=qtype)
    ckpt = load_checkpoint(path, with_tokenizer=False)
    assert ckpt.args.dim == 64 and ckpt.args.n_kv_heads == 2 and ckpt.args.vocab_size == 96
    if qtype == "F32":
        for k, v in sd.items():
            assert torch.equal(ckpt.state_dict[k], v), k  # layout (reversed GGUF dims, q/k order) kept exactly
    torch.testing.assert_close(our_logits(path), hf_logits(_transformers_gguf(path)), rtol=1e-4, atol=1e-4)


def test_tiny_gguf_tied_and_dtype(tmp_path):
    args = tiny_args(tie_word_embeddings=True)
    path = write_gguf(tmp_path / "tied.gguf", args, random_state_dict(args), default_qtype="Q8_0")
    ckpt = load_checkpoint(path, dtype=torch.bfloat16, with_tokenizer=False)
    assert (
        ckpt.args.tie_word_embeddings and ckpt.state_dict["output.weight"] is ckpt.state_dict["tok_embeddings.weight"]
    )
    assert ckpt.state_dict["layers.0.attention.wq.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(our_logits(path), hf_logits(_transformers_gguf(path)), rtol=1e-4, atol=1e-4)


def test_tiny_gguf_to_meta_and_hf(tmp_path):
    args = tiny_args()
    path = write_gguf(tmp_path / "t.gguf", args, random_state_dict(args), default_qtype="Q8_0")
    expected = our_logits(path)
    convert(path, tmp_path / "meta", to="meta")
    convert(path, tmp_path / "hf", to="hf")
    torch.testing.assert_close(our_logits(tmp_path / "meta"), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_logits(tmp_path / "hf"), expected, rtol=1e-5, atol=1e-5)


# ---- errors ----


def test_gguf_wrong_architecture(tmp_path):
    args = tiny_args()
    path = write_gguf(tmp_path / "q.gguf", args, random_state_dict(args), architecture="qwen2")
    with pytest.raises(CheckpointError, match=r"general.architecture: expected 'llama', found 'qwen2'"):
        load_checkpoint(path)


def test_gguf_truncated(tmp_path):
    args = tiny_args()
    path = write_gguf(tmp_path / "t.gguf", args, random_state_dict(args))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"t.gguf: truncated"):
        load_checkpoint(path)
    path.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=r"t.gguf: truncated or corrupt GGUF file"):
        load_checkpoint(path)


def test_gguf_unsupported_tensor_type(tmp_path, monkeypatch):
    import gguf

    args = tiny_args()
    path = write_gguf(tmp_path / "t.gguf", args, random_state_dict(args), default_qtype="Q8_0")

    def no_q8(data, qtype):
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            raise NotImplementedError("Dequantization for Q8_0 is not yet implemented")
        return real(data, qtype)

    real = gguf.quants.dequantize
    monkeypatch.setattr(gguf.quants, "dequantize", no_q8)
    with pytest.raises(
        CheckpointError, match=r"tensor token_embd.weight has type Q8_0, which gguf .* cannot dequantize"
    ):
        load_checkpoint(path)


def test_gguf_unexpected_tensor(tmp_path):
    args = tiny_args()
    extra = {"blk.0.attn_q.bias": np.zeros(64, dtype=np.float32)}
    path = write_gguf(tmp_path / "t.gguf", args, random_state_dict(args), extra_tensors=extra)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'blk.0.attn_q.bias' \(not a Llama weight\)"):
        load_checkpoint(path)


def test_hf_errors(tmp_path):
    write_hf(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"model_type": "mistral", "architectures": ["X"]}))
    with pytest.raises(CheckpointError, match=r"model_type: expected 'llama' \(LlamaForCausalLM\), found 'mistral'"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"attention_bias": True}))
    with pytest.raises(CheckpointError, match=r"attention_bias: expected False \(Llama 3\), found True"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_size"}))
    with pytest.raises(CheckpointError, match=r"config.json: missing field 'hidden_size'"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"intermediate_size": 128}))
    with pytest.raises(
        CheckpointError, match=r"layers.0.feed_forward.w[12].weight: expected shape \((128, 64|64, 128)\)"
    ):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated or corrupt safetensors file"):
        load_checkpoint(tmp_path)
    f.unlink()
    with pytest.raises(CheckpointError, match=r"found config.json but no \*.safetensors weights"):
        load_checkpoint(tmp_path)


def test_hf_index_names_missing_shard(tmp_path):
    ref = write_hf(tmp_path / "one")
    ref.save_pretrained(tmp_path / "sh", max_shard_size="100KB")
    victim = sorted((tmp_path / "sh").glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=rf"index.json: weight_map\['.*'\]: '{victim.name}' is missing"):
        load_checkpoint(tmp_path / "sh")
