"""The bench's arithmetic, against references we did not write: torch's cross-entropy, the published
parameter counts of Meta's model cards, and the bytes torch's packed layers really hold. No timings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks import llama1b
from simplellama.bench import perplexity
from simplellama.checkpoint import load_model
from simplellama.config import ModelArgs, preset
from simplellama.footprint import (
    FORMATS,
    RAM_MODELS,
    decode_bytes,
    linear_bytes,
    model_bytes,
    model_decode_bytes,
    ram_table,
    weight_bytes,
)
from simplellama.model import Transformer
from simplellama.quantize import Int4Linear, Int8Linear, quantize_model

# parameter counts on the model cards (safetensors metadata), as published
PUBLISHED = {"llama3.2-1b": "1.24B", "llama3.2-3b": "3.21B", "llama3.1-8b": "8.03B", "llama3.1-70b": "70.6B"}


def rounded_like(n: float, published: str) -> str:
    decimals = len(published.split(".")[1]) - 1  # "8.03B" -> 2
    return f"{n / 1e9:.{decimals}f}B"


def tiny(tied: bool) -> ModelArgs:
    return ModelArgs(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, ffn_hidden_dim=256,
                     max_seq_len=32, tie_word_embeddings=tied)  # fmt: skip


def test_perplexity_is_exp_of_torch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(17, 50, generator=g) * 3  # (T, V)
    ids = torch.randint(0, 50, (17,), generator=g).tolist()
    expected = torch.exp(F.cross_entropy(logits[:-1].double(), torch.tensor(ids[1:]))).item()
    assert perplexity(logits, ids) == pytest.approx(expected, rel=1e-12)
    assert perplexity(logits[:-1], ids) == pytest.approx(expected, rel=1e-12)  # last row unused


@pytest.mark.parametrize("N, K, g", [(96, 64, 32), (256, 128, 64), (64, 256, 128)])
def test_linear_bytes_are_what_the_packed_layers_hold(N, K, g):
    w = torch.randn(N, K)
    i8, i4 = Int8Linear.from_float(w), Int4Linear.from_float(w, g)
    assert linear_bytes(N, K, "int8") == sum(b.nbytes for b in i8.buffers())
    assert linear_bytes(N, K, "int4", g) == sum(b.nbytes for b in i4.buffers())
    assert linear_bytes(N, K, "float32") == w.nbytes and linear_bytes(N, K, "bfloat16") == w.bfloat16().nbytes


@pytest.mark.parametrize("name", PUBLISHED)
def test_float_weight_bytes_match_published_parameter_counts(name):
    args = preset(name)
    assert rounded_like(weight_bytes(args, "float32") / 4, PUBLISHED[name]) == PUBLISHED[name]
    assert rounded_like(weight_bytes(args, "bfloat16") / 2, PUBLISHED[name]) == PUBLISHED[name]
    # a decode step reads every weight but the embedding table (tied models: it is the output layer)
    table = 0 if args.tie_word_embeddings else args.vocab_size * args.dim
    assert rounded_like(decode_bytes(args, "float32") / 4 + table, PUBLISHED[name]) == PUBLISHED[name]


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
def test_counted_bytes_of_a_built_model_equal_the_formula(fmt, tied):
    args = tiny(tied)
    dtype = torch.bfloat16 if fmt == "bfloat16" else torch.float32
    model = Transformer(args, dtype=dtype)
    if fmt in ("int8", "int4"):
        quantize_model(model, fmt, 32)
    model.setup_cache(1, 8)  # KV caches are not weights
    emb = torch.float32 if fmt in ("int8", "int4") else None
    assert model_bytes(model) == weight_bytes(args, fmt, 32, embedding_dtype=emb)
    assert model_decode_bytes(model) == decode_bytes(args, fmt, 32, norm_bytes=dtype.itemsize)
    if fmt == "float32":
        assert model_bytes(model) == 4 * args.num_parameters()


def test_ram_table_rows_follow_the_parameter_counts():
    rows = dict(ram_table())
    assert list(rows) == [name for name, _ in RAM_MODELS]
    for (_, key), (_, by_fmt) in zip(RAM_MODELS, ram_table()):
        n = preset(key).num_parameters()
        assert by_fmt["float32"] == 4 * n and by_fmt["bfloat16"] == 2 * n
        # int8: 1 byte per linear weight (+ a scale per row), the embedding table in fp32 beside
        # (tied models: the output layer is an int8 copy of it)
        args = preset(key)
        table = args.vocab_size * args.dim
        linear = n - (0 if args.tie_word_embeddings else table)
        assert linear + 4 * table < by_fmt["int8"] < 1.01 * (linear + 4 * table)
        assert 0.5 * linear + 4 * table < by_fmt["int4"] < 1.01 * (0.625 * linear + 4 * table)
    assert rows["Llama 3.1 8B"]["int4"] / 2**30 < 8  # fits a 16 GiB laptop with room for the rest


def test_bandwidth_fraction_arithmetic():
    # 1 GB per token at 12 tok/s on a 20 GB/s memory: 60 % of the limit
    assert llama1b.bandwidth_fraction(1e9, 12.0, 20e9) == pytest.approx(0.6)
    args = llama1b.args_1b()
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads, args.hidden_dim, args.vocab_size) == (
        2048, 16, 32, 8, 8192, 128256)  # fmt: skip
    assert args.tie_word_embeddings


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_model_is_built_in_its_format(fmt):
    args = tiny(tied=True)
    model = llama1b.random_model(args, fmt)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    norm = 2 if fmt == "bfloat16" else 4
    assert model_decode_bytes(model) == decode_bytes(args, fmt, 32, norm_bytes=norm)
    logits = model(torch.tensor([[1, 2, 3]]), 0)
    assert logits.shape == (1, 3, args.vocab_size) and torch.isfinite(logits).all()


def test_written_meta_checkpoint_loads_strictly(tmp_path):
    args = tiny(tied=True)
    llama1b.write_meta(tmp_path, args)
    model, loaded = load_model(tmp_path, "cpu", torch.float32)
    assert loaded.dim == args.dim and loaded.tie_word_embeddings
    assert model.output.weight is model.tok_embeddings.weight
    assert model_bytes(model) == 4 * args.num_parameters()


def test_readme_ram_table_is_the_computed_one():
    from pathlib import Path

    from simplellama.footprint import format_ram_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert format_ram_table() in readme, "README's RAM table is stale: paste format_ram_table()"
