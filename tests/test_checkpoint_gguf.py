"""The embedded SmolLM2-135M-Instruct Q4_1 GGUF: our loader versus transformers' GGUF loader.

transformers dequantizes the same file and un-permutes q/k to its rotate-half layout; our model keeps
GGUF's (Meta's) interleaved rows. Equal logits show the names, the reversed GGUF dimensions, the q/k
order and the dequantization are all right.
"""

from __future__ import annotations

import json

import pytest
import torch

from simplellama.checkpoint import convert, default_model_path, load_checkpoint, load_model, model_from_state_dict
from simplellama.model import Transformer

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def ref_tokenizer():
    """transformers' tokenizer for the embedded GGUF, the chat prompt and its ids."""
    from transformers import AutoTokenizer

    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return tok, text, tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def reference(ref_tokenizer):
    """... plus transformers' fp32 last-position logits for the prompt (loading takes ~20 s)."""
    from transformers import AutoModelForCausalLM

    tok, text, ids = ref_tokenizer
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    return tok, text, ids, logits


@pytest.fixture(scope="module")
def ours():
    return load_checkpoint(default_model_path())


def _last_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]), start_pos=0)[0, -1].float()


def test_args_from_metadata(ours):
    a = ours.args
    assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.hidden_dim, a.vocab_size) == (576, 30, 9, 3, 1536, 49152)
    assert a.rope_theta == 100000.0 and a.tie_word_embeddings and not a.use_scaled_rope
    assert ours.chat_template.startswith("{% for message in messages %}")
    assert ours.state_dict["output.weight"] is ours.state_dict["tok_embeddings.weight"]


@pytest.mark.slow
def test_logits_match_transformers(ours, reference):
    tok, text, ids, ref_logits = reference
    model = model_from_state_dict(Transformer, ours.args, ours.state_dict, "cpu")
    got = _last_logits(model, ids)
    torch.testing.assert_close(got, ref_logits, rtol=1e-3, atol=1e-3)
    assert got.argmax() == ref_logits.argmax()


def test_tokenizer_from_gguf_matches_transformers(ours, ref_tokenizer):
    tok, text, ids = ref_tokenizer
    assert ours.tokenizer.encode(text, bos=False, eos=False, allowed_special="all") == ids


@pytest.mark.slow
def test_gguf_to_meta_and_hf_round_trips(tmp_path, ours, reference):
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    tok, text, ids, ref_logits = reference
    expected = _last_logits(model_from_state_dict(Transformer, ours.args, ours.state_dict, "cpu"), ids)
    convert(None, tmp_path / "meta", to="meta")
    model, args = load_model(tmp_path / "meta")
    assert args.tie_word_embeddings and args.n_kv_heads == 3
    torch.testing.assert_close(_last_logits(model, ids), expected, rtol=1e-5, atol=1e-5)
    del model
    convert(None, tmp_path / "hf", to="hf")
    model, _ = load_model(tmp_path / "hf")
    torch.testing.assert_close(_last_logits(model, ids), expected, rtol=1e-5, atol=1e-5)
    del model
    # the HF dir is a real HF checkpoint: transformers loads it, and the `tokenizers` library its tokenizer.json
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(torch.tensor([ids])).logits[0, -1], ref_logits, rtol=1e-3, atol=1e-3)
    del hf
    for d in ("meta", "hf"):
        fast = Tokenizer.from_file(str(tmp_path / d / "tokenizer.json"))
        assert fast.encode(text, add_special_tokens=False).ids == ids
        # whitespace before digits is where pre-tokenizers differ: the written file must read as the GGUF does
        assert fast.encode("x =  1\n    22", add_special_tokens=False).ids == tok.encode(
            "x =  1\n    22", add_special_tokens=False
        )
        reloaded = load_checkpoint(tmp_path / d, with_tokenizer=True)
        assert reloaded.tokenizer.encode(text, bos=False, eos=False, allowed_special="all") == ids
        assert reloaded.chat_template == ours.chat_template
        config = json.loads((tmp_path / d / "tokenizer_config.json").read_text())
        assert config["eos_token"] == tok.eos_token and config["bos_token"] == tok.bos_token


def test_fast_reader_fields_equal_gguf_reader():
    """Our faster metadata parse gives the stock gguf.GGUFReader's fields, part by part."""
    import gguf

    from simplellama.errors import CheckpointError
    from simplellama.gguf_reader import open_gguf

    path = default_model_path()
    stock, fast = gguf.GGUFReader(path), open_gguf(path, CheckpointError)
    assert list(fast.fields) == list(stock.fields)
    for key, a in stock.fields.items():
        b = fast.fields[key]
        assert (b.offset, b.data, b.types) == (a.offset, a.data, a.types), key
        assert len(b.parts) == len(a.parts), key
        assert all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a.parts, b.parts)), key
        assert b.contents() == a.contents(), key
    assert [(t.name, t.data_offset, t.n_bytes) for t in fast.tensors] == [
        (t.name, t.data_offset, t.n_bytes) for t in stock.tensors
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_dequantize_equals_gguf_dequantize(monkeypatch, dtype):
    """Row-chunked dequantization into a preallocated tensor == gguf.quants.dequantize of the whole tensor."""
    import numpy as np
    from gguf.quants import dequantize

    from simplellama.checkpoint import gguf as checkpoint_gguf
    from simplellama.errors import CheckpointError
    from simplellama.gguf_reader import open_gguf

    path = default_model_path()
    reader = open_gguf(path, CheckpointError)
    monkeypatch.setattr(checkpoint_gguf, "_DEQUANT_CHUNK", 5000)  # several chunks, a partial last one
    kinds = {}
    for t in reader.tensors:  # one tensor of each stored type (Q8_0, Q4_1, F32, ...)
        kinds.setdefault(t.tensor_type, t)
    assert len(kinds) >= 2
    for t in kinds.values():
        got = checkpoint_gguf._dequantize(t, dtype, path)
        ref = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))
        assert got.dtype == dtype and got.shape == tuple(int(n) for n in reversed(t.shape))
        assert torch.equal(got, ref.reshape(got.shape).to(dtype)), t.name
