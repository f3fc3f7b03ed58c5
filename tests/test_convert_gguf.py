"""``convert --to gguf``: the written files read back with gguf's own reader, our loader and llama.cpp.

References we did not write: ``gguf.GGUFReader`` (names, types, metadata), the block formats of
llama.cpp's ``ggml-quants.c`` (error bounds of Q8_0 / Q4_0), transformers (logits of an HF model
with Llama 3.1 RoPE scaling; ``TikTokenConverter``'s merges), tiktoken (token ids), and llama.cpp
itself through ``llama_cpp`` (llama-cpp-python) where it is installed (the tests that need it skip
otherwise; it is not a ``make setup`` dependency).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from importlib.util import find_spec
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from ckpt_factory import random_state_dict, tiny_args, write_hf, write_meta

from simplellama.checkpoint import (
    CheckpointError,
    convert,
    default_model_path,
    load_checkpoint,
    load_model,
    model_from_state_dict,
)
from simplellama.checkpoint import gguf_writer as gw
from simplellama.checkpoint.gguf import FastGGUFReader
from simplellama.cli import main
from simplellama.model import Transformer

LLAMA3_MODEL = Path(find_spec("llama_models").submodule_search_locations[0]) / "llama3/tokenizer.model"
OUT_TYPES = ["F32", "F16", "Q8_0", "Q4_0"]
TEXTS = [
    "Hello world! 12345 numbers and 3.14",
    "  two  spaces\n\nnewlines\ttabs  ",
    "unicode: 🦙 中文 ñ café",
    "<|eot_id|> stays text; 's 'll I'M",
]
NO_LLAMA_CPP = "llama.cpp comparison skipped: llama_cpp (llama-cpp-python) does not import"


def small_state_dict(args, seed=0):
    """Random weights at a realistic scale (|logits| ~ 1): llama.cpp's q8 activations stay within 1 %."""
    sd = random_state_dict(args, seed)
    return {k: v if v.ndim == 1 or k.startswith("tok_") else v * 0.25 for k, v in sd.items()}


def meta_dir(path, **overrides):
    args = tiny_args(**overrides)
    write_meta(path, args, sd=small_state_dict(args))
    return path


def logits(path_or_model, tokens):
    model = load_model(path_or_model)[0] if isinstance(path_or_model, Path) else path_or_model
    with torch.no_grad():
        return model(tokens, start_pos=None)[0].float()


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # not installed, or its compiled library cannot load
        pytest.skip(f"{NO_LLAMA_CPP} ({e})")
    return llama_cpp


def llama_cpp_logits(path, tokens, n_ctx=256):
    """llama.cpp's logits for every position (KV cache in f32, one thread)."""
    llama_cpp = import_llama_cpp()
    ll = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=1, type_k=0, type_v=0)
    ll.eval(tokens[0].tolist())
    return torch.from_numpy(np.array(ll.scores[: tokens.shape[1]])).float()


def llama_cpp_vocab(path):
    return import_llama_cpp().Llama(str(path), vocab_only=True, verbose=False)


def fields(path, fast=False) -> dict:
    """Metadata as gguf's reader gives it (``fast``: our FastGGUFReader, checked field by field against
    it in test_checkpoint_gguf.py; the stock one takes ~25 s over a 128k vocabulary's arrays)."""
    reader = FastGGUFReader(path) if fast else gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def block_bound(w: torch.Tensor, qtype: str) -> torch.Tensor:
    """Largest error llama.cpp's reference quantizer may make on each weight (ggml-quants.c).

    Q8_0: d = amax/127, q = round(x/d): |err| <= d/2, plus fp16 rounding of d times |q| <= 127.
    Q4_0: d = -max/8 (max: the signed value of largest magnitude), q = clamp(x/d + 8.5, 0, 15): the
    opposite end (x/d = +8) is clamped to 7, so |err| <= |d|, plus fp16 rounding of d times 8.
    """
    blocks = w.reshape(-1, 32).abs().amax(1, keepdim=True)  # (blocks, 1)
    d = blocks / (127 if qtype == "Q8_0" else 8)
    bound = d * (0.5 + 127 * 2**-11) if qtype == "Q8_0" else d * (1 + 8 * 2**-11)
    return (bound + 1e-7).expand(-1, 32).reshape(w.shape)


TOKENS = torch.randint(0, 96, (1, 40), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def meta_ckpt(tmp_path_factory):
    return meta_dir(tmp_path_factory.mktemp("meta") / "meta")


@pytest.fixture(scope="module")
def converted(meta_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: convert(meta_ckpt, out / f"tiny.{t}.gguf", to="gguf", outtype=t) for t in OUT_TYPES}


# ---- Meta -> GGUF: what gguf's reader sees ----


@pytest.mark.parametrize("outtype", OUT_TYPES)
def test_gguf_reader_sees_llama_cpp_names_types_and_metadata(converted, outtype):
    args = tiny_args()
    r = gguf.GGUFReader(converted[outtype])
    types = {t.name: t.tensor_type.name for t in r.tensors}
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{n}.weight"
        for i in range(args.n_layers)
        for n in (
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "attn_norm",
            "ffn_norm",
        )
    }
    assert set(types) == expected
    for name, kind in types.items():
        assert kind == ("F32" if "norm" in name else outtype), name
    shapes = {t.name: [int(n) for n in t.shape] for t in r.tensors}  # GGUF lists dims fastest-first
    assert shapes["blk.0.ffn_down.weight"] == [args.hidden_dim, args.dim]
    f = fields(converted[outtype])
    assert f["general.architecture"] == "llama" and f["general.file_type"] == gw._FILE_TYPE[outtype]
    assert (f["llama.block_count"], f["llama.embedding_length"], f["llama.feed_forward_length"]) == (2, 64, 96)
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"], f["llama.vocab_size"]) == (4, 2, 96)
    assert f["llama.rope.dimension_count"] == 16 and f["llama.rope.freq_base"] == 10000.0
    assert f["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert f["tokenizer.ggml.model"] == "none"  # tiny checkpoints carry no tokenizer
    assert not [p.name for p in converted[outtype].parent.iterdir() if p.name.endswith(".tmp")]


# ---- Meta -> GGUF -> our loader ----


def test_f32_round_trip_is_exact(meta_ckpt, converted):
    ckpt, back = load_checkpoint(meta_ckpt), load_checkpoint(converted["F32"], with_tokenizer=False)
    assert back.args.norm_eps == float(np.float32(ckpt.args.norm_eps))  # GGUF stores it as float32
    assert dataclasses.replace(back.args, norm_eps=ckpt.args.norm_eps) == ckpt.args
    src = ckpt.state_dict
    assert set(back.state_dict) == set(src)
    for k, w in src.items():
        assert torch.equal(back.state_dict[k], w), k
    assert torch.equal(logits(converted["F32"], TOKENS), logits(meta_ckpt, TOKENS))


@pytest.mark.parametrize("outtype", ["F16", "Q8_0", "Q4_0"])
def test_weights_within_the_block_format_bound(meta_ckpt, converted, outtype):
    src = load_checkpoint(meta_ckpt).state_dict
    back = load_checkpoint(converted[outtype], with_tokenizer=False).state_dict
    for k, w in src.items():
        if w.ndim == 1:
            assert torch.equal(back[k], w), k  # norms stay F32
        elif outtype == "F16":
            assert torch.equal(back[k], w.half().float()), k
        else:
            err = (back[k] - w).abs()
            assert (err <= block_bound(w, outtype)).all(), (k, float(err.max()))
            assert err.max() > 0  # it did quantize


def test_logits_error_grows_as_bits_shrink(meta_ckpt, converted):
    ref = logits(meta_ckpt, TOKENS)
    err = {t: float((logits(converted[t], TOKENS) - ref).abs().max()) for t in OUT_TYPES}
    assert err["F32"] == 0 < err["F16"] < 1e-3 < err["Q8_0"] < 0.05 < err["Q4_0"] < float(ref.std())
    # the error follows the step: Q4_0's (absmax/8) is 127/8 ~ 16 times Q8_0's (absmax/127)
    assert 8 < err["Q4_0"] / err["Q8_0"] < 32


# ---- llama.cpp runs the files ----


@pytest.mark.parametrize("outtype,tol", [("F32", 2e-5), ("F16", 2e-3), ("Q8_0", 0.03), ("Q4_0", 0.03)])
def test_llama_cpp_logits_match_ours(converted, outtype, tol):
    """Same file, two engines. llama.cpp multiplies F16 weights with fp16 activations and quantized
    weights with q8_0-quantized activations (blocks of 32, step absmax/127), hence the tolerances."""
    ours = logits(converted[outtype], TOKENS)
    theirs = llama_cpp_logits(converted[outtype], TOKENS)
    assert (theirs - ours).abs().max() < tol
    top2 = ours.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tol  # positions with a clear top-1 margin
    assert clear.sum() > 20 and torch.equal(theirs.argmax(-1)[clear], ours.argmax(-1)[clear])


# ---- HF -> GGUF: q/k rows, RoPE scaling (transformers is the reference) ----

LLAMA31_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def published_rope_freqs(theta, dim, factor=8.0, low=1.0, high=4.0, old_context_len=8192):
    """llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors), formula as published."""
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * theta ** (i / dim)
        if wavelen < old_context_len / high:
            factors.append(1.0)
        elif wavelen > old_context_len / low:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors)


@pytest.fixture(scope="module")
def hf_scaled(tmp_path_factory):
    """A random transformers model with Llama 3.1 RoPE scaling, its GGUF, and 200 positions of logits."""
    from transformers import LlamaForCausalLM

    d = tmp_path_factory.mktemp("hf")
    ref = write_hf(d / "hf", rope_scaling=LLAMA31_SCALING, max_position_embeddings=131072)
    with torch.no_grad():  # small_state_dict's scale, but sharp attention so that RoPE matters
        for n, p in ref.named_parameters():
            if p.ndim == 2 and not any(s in n for s in ("embed", "q_proj", "k_proj")):
                p.mul_(0.25)
    ref.save_pretrained(d / "hf")
    shutil.copytree(d / "hf", d / "plain")  # the same weights without the scaling
    cfg = json.loads((d / "plain" / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (d / "plain" / "config.json").write_text(json.dumps(cfg))
    tokens = torch.randint(0, 96, (1, 200), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scaled = ref(tokens).logits[0].float()
        plain = LlamaForCausalLM.from_pretrained(d / "plain")(tokens).logits[0].float()
    path = convert(d / "hf", d / "hf.F32.gguf", to="gguf", outtype="F32")
    return path, tokens, scaled, plain


def test_hf_rope_scaling_written_as_rope_freqs(hf_scaled):
    path, tokens, scaled, plain = hf_scaled
    r = gguf.GGUFReader(path)
    (freqs,) = [t for t in r.tensors if t.name == "rope_freqs.weight"]
    assert freqs.tensor_type.name == "F32"
    torch.testing.assert_close(torch.from_numpy(np.array(freqs.data)), published_rope_freqs(10000.0, 16))
    assert "llama.rope.scaling.type" not in fields(path)  # llama.cpp asserts on unknown types
    args = load_checkpoint(path, with_tokenizer=False).args
    assert args.use_scaled_rope and args.rope_scaling_factor == 8.0
    assert fields(path)["llama.context_length"] == 131072  # the config's max_position_embeddings


def test_hf_to_gguf_logits_match_transformers(hf_scaled):
    path, tokens, scaled, plain = hf_scaled
    tol = 1e-4
    assert (scaled - plain).abs().max() > 100 * tol  # scaling matters at these positions
    torch.testing.assert_close(logits(path, tokens), scaled, rtol=0, atol=tol)
    torch.testing.assert_close(llama_cpp_logits(path, tokens), scaled, rtol=0, atol=tol)


# ---- tokenizers ----


def test_tiktoken_merges_equal_transformers_converter():
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from simplellama.tokenizer import Tokenizer, bytes_to_unicode

    enc = Tokenizer(LLAMA3_MODEL).model
    ranks = {enc.decode_single_token_bytes(i): i for i in range(128000)}
    spell = bytes_to_unicode()
    ours = [("".join(spell[b] for b in x), "".join(spell[b] for b in y)) for x, y in gw.tiktoken_merges(ranks)]
    vocab, merges = TikTokenConverter(str(LLAMA3_MODEL)).extract_vocab_merges_from_model(str(LLAMA3_MODEL))
    assert len(ours) == 280147 and ours == merges


def truncated_tiktoken(path: Path, n: int) -> Path:
    """The first ``n`` ranks of Meta's Llama 3 tokenizer.model: a small, valid tiktoken file."""
    path.write_text("".join(LLAMA3_MODEL.read_text().splitlines(keepends=True)[:n]))
    return path


@pytest.fixture(scope="module")
def llama3_gguf(tmp_path_factory):
    """A one-layer model with Meta's full Llama 3 tokenizer.model, converted (the slow part: 280k merges)."""
    d = tmp_path_factory.mktemp("llama3")
    meta_dir(d / "meta", vocab_size=128256, n_layers=1, tie_word_embeddings=True)
    shutil.copyfile(LLAMA3_MODEL, d / "meta" / "tokenizer.model")
    return convert(d / "meta", d / "llama3.Q8_0.gguf", to="gguf", outtype="Q8_0")


@pytest.mark.slow
def test_tiktoken_tokenizer_fields(llama3_gguf):
    from simplellama.chat_format import ChatFormat, ChatTemplate
    from simplellama.tokenizer import ByteLevelBPETokenizer, Tokenizer

    f = fields(llama3_gguf, fast=True)
    assert (f["tokenizer.ggml.model"], f["tokenizer.ggml.pre"]) == ("gpt2", "llama-bpe")
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == 128256 and tokens[128000] == "<|begin_of_text|>" and tokens[220] == "Ġ"
    assert set(types[:128000]) == {gguf.TokenType.NORMAL} and set(types[128000:]) == {gguf.TokenType.CONTROL}
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"]) == (128000, 128001)
    assert (f["tokenizer.ggml.eot_token_id"], f["tokenizer.ggml.eom_token_id"]) == (128009, 128008)
    assert f["tokenizer.ggml.add_bos_token"] is True and f["llama.context_length"] == 8192
    meta_tok = Tokenizer(LLAMA3_MODEL)
    ours = ByteLevelBPETokenizer.from_gguf(FastGGUFReader(llama3_gguf))
    for text in TEXTS:
        assert ours.encode(text, bos=False, eos=False) == meta_tok.encode(text, bos=False, eos=False), text
    dialog = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    template = ChatTemplate(f["tokenizer.chat_template"], meta_tok)
    assert template.encode_dialog_prompt(dialog) == ChatFormat(meta_tok).encode_dialog_prompt(dialog)


@pytest.mark.slow
def test_llama_cpp_tokenizes_the_tiktoken_vocab_like_tiktoken(llama3_gguf):
    from simplellama.tokenizer import Tokenizer

    meta_tok, ll = Tokenizer(LLAMA3_MODEL), llama_cpp_vocab(llama3_gguf)
    for text in TEXTS:
        assert ll.tokenize(text.encode(), add_bos=False, special=False) == meta_tok.encode(
            text, bos=False, eos=False
        ), text
    header = "<|start_header_id|>user<|end_header_id|>"
    assert ll.tokenize(header.encode(), add_bos=True, special=True) == [128000, 128006, 882, 128007]


def test_gguf_to_hf_to_gguf_keeps_metadata_and_tensors(tmp_path):
    """GGUF -> HF (tokenizer.json, q/k permuted) -> GGUF gives the same file, but for its name."""
    meta_dir(tmp_path / "meta", vocab_size=2256, tie_word_embeddings=True)
    truncated_tiktoken(tmp_path / "meta" / "tokenizer.model", 2000)
    first = convert(tmp_path / "meta", tmp_path / "a.gguf", to="gguf", outtype="F32")
    convert(first, tmp_path / "hf", to="hf")
    second = convert(tmp_path / "hf", tmp_path / "b.gguf", to="gguf", outtype="F32")
    a, b = fields(first), fields(second)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert differ == ["general.name"]
    assert a["tokenizer.ggml.pre"] == "llama-bpe" and len(a["tokenizer.ggml.merges"]) > 1744
    ta, tb = ({t.name: t for t in gguf.GGUFReader(p).tensors} for p in (first, second))
    assert list(ta) == list(tb)
    for name, t in ta.items():
        assert t.tensor_type == tb[name].tensor_type and np.array_equal(t.data, tb[name].data), name


def test_gguf_to_gguf_requantizes_and_copies_the_tokenizer(tmp_path):
    meta_dir(tmp_path / "meta", vocab_size=2256)
    truncated_tiktoken(tmp_path / "meta" / "tokenizer.model", 2000)
    f32 = convert(tmp_path / "meta", tmp_path / "a.gguf", to="gguf", outtype="F32")
    q4 = convert(f32, tmp_path / "b.gguf", to="gguf", outtype="Q4_0")
    a, b = fields(f32), fields(q4)
    assert {k: v for k, v in a.items() if k.startswith("tokenizer.")} == {
        k: v for k, v in b.items() if k.startswith("tokenizer.")
    }
    assert b["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_0
    src, back = load_checkpoint(f32).state_dict, load_checkpoint(q4).state_dict
    w = src["layers.1.feed_forward.w2.weight"]
    assert ((back["layers.1.feed_forward.w2.weight"] - w).abs() <= block_bound(w, "Q4_0")).all()


def train_sentencepiece(d: Path):
    """A tiny Llama 2 style SentencePiece model (BPE, byte fallback), as tests/test_tokenizer_sentencepiece.py."""
    sentencepiece = pytest.importorskip("sentencepiece")
    text = "The llama is a domesticated South American camelid, used as a pack animal by Andean cultures. " * 20
    (d / "text.txt").write_text(text)
    sentencepiece.SentencePieceTrainer.train(
        input=str(d / "text.txt"), model_prefix=str(d / "sp"), vocab_size=320, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2,
    )  # fmt: skip
    return sentencepiece.SentencePieceProcessor(model_file=str(d / "sp.model"))


def test_sentencepiece_vocab(tmp_path):
    """A Llama 2 style tokenizer.model: pieces, scores and types as sentencepiece has them; llama.cpp
    tokenizes like sentencepiece."""
    sp = train_sentencepiece(tmp_path)
    meta_dir(tmp_path / "meta", vocab_size=320)
    shutil.copyfile(tmp_path / "sp.model", tmp_path / "meta" / "tokenizer.model")
    path = convert(tmp_path / "meta", tmp_path / "sp.gguf", to="gguf", outtype="Q8_0")
    f = fields(path)
    assert f["tokenizer.ggml.model"] == "llama"
    assert f["tokenizer.ggml.tokens"] == [sp.id_to_piece(i) for i in range(320)]
    assert f["tokenizer.ggml.scores"] == pytest.approx([sp.get_score(i) for i in range(320)])
    assert f["tokenizer.ggml.token_type"][:3] == [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    assert f["tokenizer.ggml.token_type"][3 + 0x41] == gguf.TokenType.BYTE  # <0x41>
    ll = llama_cpp_vocab(path)
    for s in ["The llama is social.", "Numbers: 25 to 30%", "unseen: 🦙 ñ"]:
        assert ll.tokenize(s.encode(), add_bos=True) == [sp.bos_id(), *sp.encode(s)], s


def test_hf_dir_with_a_sentencepiece_tokenizer_json(tmp_path):
    """A Llama 2 style HF dir: tokenizer.json is BPE with byte fallback (not byte-level), so the
    tokenizer.model beside it is written; without one, a one-line error."""
    from transformers import LlamaTokenizer

    sp = train_sentencepiece(tmp_path)
    write_hf(tmp_path / "hf", vocab_size=320)
    LlamaTokenizer(vocab_file=str(tmp_path / "sp.model")).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match=r"tokenizer.json model: expected byte-level BPE, found 'BPE' with byte"):
        convert(tmp_path / "hf", tmp_path / "x.gguf", to="gguf")
    shutil.copyfile(tmp_path / "sp.model", tmp_path / "hf" / "tokenizer.model")
    f = fields(convert(tmp_path / "hf", tmp_path / "x.gguf", to="gguf"))
    assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.tokens"] == [
        sp.id_to_piece(i) for i in range(320)
    ]


@pytest.mark.slow
def test_embedded_smollm2_through_hf_back_to_gguf(tmp_path):
    """The embedded Q4_1 SmolLM2 -> HF dir -> GGUF Q8_0: the same vocabulary, weights within Q8_0's
    bound of the dequantized Q4_1 ones, and llama.cpp's greedy choices equal ours on the original."""
    convert(None, tmp_path / "hf", to="hf")
    path = convert(tmp_path / "hf", tmp_path / "smol.Q8_0.gguf", to="gguf", outtype="q8_0")
    a, b = fields(default_model_path(), fast=True), fields(path, fast=True)
    for key in ("tokens", "token_type", "merges", "bos_token_id", "eos_token_id", "padding_token_id"):
        assert a[f"tokenizer.ggml.{key}"] == b[f"tokenizer.ggml.{key}"], key
    assert a["tokenizer.chat_template"] == b["tokenizer.chat_template"]
    # GGUF -> HF writes "smollm" as transformers reads it: the GPT-2 split (rules.py), llama.cpp's "gpt-2"
    assert (a["tokenizer.ggml.pre"], b["tokenizer.ggml.pre"]) == ("smollm", "gpt-2")
    src = load_checkpoint(None)
    back = load_checkpoint(path, with_tokenizer=False).state_dict
    for k in ("layers.0.attention.wq.weight", "layers.29.feed_forward.w2.weight", "tok_embeddings.weight"):
        assert ((back[k] - src.state_dict[k]).abs() <= block_bound(src.state_dict[k], "Q8_0")).all(), k
    text = "The capital of France is Paris. The capital of Italy is"
    ids = torch.tensor([src.tokenizer.encode(text, bos=False, eos=False)])
    assert llama_cpp_vocab(path).tokenize(text.encode(), add_bos=False) == ids[0].tolist()
    model = model_from_state_dict(Transformer, src.args, src.state_dict, "cpu")
    ours, theirs = logits(model, ids), llama_cpp_logits(path, ids)
    top2 = ours.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.5
    assert clear.sum() >= 3 and torch.equal(theirs.argmax(-1)[clear], ours.argmax(-1)[clear])


# ---- fallbacks and errors ----


def test_rows_not_divisible_by_the_block_fall_back_to_f16(tmp_path, caplog):
    meta_dir(tmp_path / "meta", ffn_hidden_dim=80)  # ffn_down rows hold 80 weights: not 32k
    with caplog.at_level("WARNING", logger="simplellama.checkpoint"):
        path = convert(tmp_path / "meta", tmp_path / "x.gguf", to="gguf", outtype="Q4_0")
    assert "blk.0.ffn_down.weight: rows of 80 weights are not a multiple of the Q4_0 block size 32" in caplog.text
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_gate.weight"] == "Q4_0"
    tokens = TOKENS[:, :12]
    torch.testing.assert_close(llama_cpp_logits(path, tokens), logits(path, tokens), rtol=0, atol=0.03)


def test_weights_beyond_fp16_stay_f32(tmp_path, caplog):
    args = tiny_args()
    sd = small_state_dict(args)
    sd["layers.0.attention.wv.weight"][0, 0] = 1e5
    write_meta(tmp_path / "meta", args, sd=sd)
    with caplog.at_level("WARNING", logger="simplellama.checkpoint"):
        path = convert(tmp_path / "meta", tmp_path / "x.gguf", to="gguf", outtype="F16")
    assert "blk.0.attn_v.weight: |w| up to 100000 does not fit fp16 (max 65504): storing F32" in caplog.text
    assert load_checkpoint(path, with_tokenizer=False).state_dict["layers.0.attention.wv.weight"][0, 0] == 1e5


def test_errors_are_one_line_and_leave_no_file(meta_ckpt, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"outtype: expected one of F32, F16, Q8_0, Q4_0, found 'Q4_K'"):
        convert(meta_ckpt, tmp_path / "x.gguf", to="gguf", outtype="Q4_K")
    with pytest.raises(CheckpointError, match=r"outtype 'Q8_0' applies to to='gguf' only, found 'hf'"):
        convert(meta_ckpt, tmp_path / "x", to="hf", outtype="Q8_0")
    with pytest.raises(CheckpointError, match=r"to: expected 'meta', 'hf' or 'gguf', found 'onnx'"):
        convert(meta_ckpt, tmp_path / "x", to="onnx")
    (tmp_path / "taken.gguf").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"taken.gguf: output exists"):
        convert(meta_ckpt, tmp_path / "taken.gguf", to="gguf")
    monkeypatch.setattr(gw.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CheckpointError, match=r"x.gguf: the GGUF file needs 0.00 GB but .* has 0.00 GB free"):
        convert(meta_ckpt, tmp_path / "x.gguf", to="gguf")
    monkeypatch.undo()

    def broken(self, tensor):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", broken)
    with pytest.raises(OSError, match="disk full"):
        convert(meta_ckpt, tmp_path / "x.gguf", to="gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.gguf"]  # no partial file, no temp file


def test_cli_convert_to_gguf(meta_ckpt, tmp_path, capsys):
    out = tmp_path / "tiny.Q8_0.gguf"
    assert main(["convert", str(meta_ckpt), str(out), "--to", "gguf", "--outtype", "q8_0"]) == 0
    assert f"wrote gguf checkpoint to {out}" in capsys.readouterr().out
    assert {t.tensor_type.name for t in gguf.GGUFReader(out).tensors} == {"F32", "Q8_0"}
    assert main(["convert", str(meta_ckpt), str(tmp_path / "h"), "--to", "hf", "--outtype", "q8_0"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"simplellama: error: convert: outtype 'q8_0' applies to to='gguf' only, found 'hf'\n", err)
