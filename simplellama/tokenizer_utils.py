"""Shared pieces of the tokenizers: errors, file-format sniffing, split patterns, special-token handling."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Literal

__all__ = [
    "TokenizerError",
    "Specials",
    "GPT2_PATTERN",
    "LLAMA3_PATTERN",
    "DIGIT_PATTERN",
    "FORMAT_NAMES",
    "detect_tokenizer_format",
    "expect_format",
    "allowed_specials",
    "special_pattern",
    "split_on",
]

Specials = Literal["all"] | Collection[str] | None

# Split patterns (pre-tokenizers). The GPT-2 one is also what Hugging Face's ByteLevel(use_regex=True) uses.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (  # Meta's llama3/tokenizer.py pat_str
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DIGIT_PATTERN = r"\p{N}"  # each digit alone, applied before the GPT-2 split


class TokenizerError(ValueError):
    """A tokenizer file that cannot be read, or a request the tokenizer cannot honour."""


# ----------------------------------------------------------------------------------------------- helpers


def detect_tokenizer_format(path: str | Path) -> str:
    """Guess a tokenizer file's format from its first bytes.

    Returns:
        "gguf", "hf_json", "tiktoken", "sentencepiece", "html" or "unknown".
    """
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"GGUF"):
        return "gguf"
    stripped = head.lstrip()
    if stripped.startswith(b"{"):
        return "hf_json"
    if stripped[:15].lower().startswith((b"<!doctype", b"<html")):
        return "html"
    if re.match(rb"[A-Za-z0-9+/=]+ \d+\r?\n", head):  # "IQ== 0\n": base64 token bytes, then its rank
        return "tiktoken"
    if head[:1] == b"\x0a":  # protobuf field 1 (ModelProto.pieces), length-delimited
        return "sentencepiece"
    return "unknown"


FORMAT_NAMES = {
    "gguf": "a GGUF file",
    "hf_json": "a Hugging Face tokenizer.json",
    "tiktoken": "a Llama 3 tiktoken file",
    "sentencepiece": "a SentencePiece model (Llama 2 style)",
    "html": "an HTML page (an expired download link?)",
    "unknown": "not a tokenizer file we know",
}


def expect_format(path: str | Path, expected: str, cls: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{cls}: tokenizer file not found: {path}")
    found = detect_tokenizer_format(path)
    if found != expected:
        raise TokenizerError(
            f"{cls}: {path} is {FORMAT_NAMES[found]}, not {FORMAT_NAMES[expected]}; try load_tokenizer({str(path)!r})"
        )
    return path


def allowed_specials(s: str, specials: Collection[str], allowed: Specials, disallowed: Specials) -> set[str]:
    """Check ``encode``'s input and return the special tokens to encode as ids (Meta/tiktoken semantics).

    ``allowed`` ("all" or names) become ids, ``disallowed`` ("all" = every special not allowed) raise when
    ``s`` contains them, the rest are plain text.
    """
    if not isinstance(s, str):
        raise TokenizerError(f"encode: expected a str, found {type(s).__name__}")
    allowed_set = set(specials) if allowed == "all" else set(allowed or ())
    disallowed_set = set(specials) - allowed_set if disallowed == "all" else set(disallowed or ())
    for token in disallowed_set:
        if token in s:
            raise TokenizerError(
                f"encode: the text contains the special token {token!r}, which is disallowed; pass "
                f"allowed_special={{{token!r}}} to encode it as a special token, or disallowed_special=() as text"
            )
    return allowed_set


def special_pattern(tokens: Collection[str]) -> re.Pattern | None:
    """A regex matching any of ``tokens``, longest first (so the leftmost-longest token wins)."""
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def split_on(s: str, pattern: re.Pattern | None) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, is_match)`` in order: the text between matches and the matches themselves."""
    start = 0
    if pattern is not None:
        for m in pattern.finditer(s):
            if m.start() > start:
                yield s[start : m.start()], False
            yield m.group(), True
            start = m.end()
    if start < len(s):
        yield s[start:], False
