"""Which tokenizer format a file holds, read from its first bytes (never from its name).

A Llama 3 tiktoken ``tokenizer.model`` fed to SentencePiece fails with "could not parse ModelProto",
and the reverse fails as obscurely: detecting the format first turns both into a plain message.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import TokenizerError

__all__ = ["FORMAT_NAMES", "detect_tokenizer_format", "expect_format"]

FORMAT_NAMES = {
    "gguf": "a GGUF file",
    "hf_json": "a Hugging Face tokenizer.json",
    "tiktoken": "a Llama 3 tiktoken file",
    "sentencepiece": "a SentencePiece model (Llama 2 style)",
    "html": "an HTML page (an expired download link?)",
    "unknown": "not a tokenizer file we know",
}


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
    if re.match(
        rb"[A-Za-z0-9+/=]+ \d+\r?\n", head
    ):  # "IQ== 0\n": base64 token bytes, then its rank
        return "tiktoken"
    if head[:1] == b"\x0a":  # protobuf field 1 (ModelProto.pieces), length-delimited
        return "sentencepiece"
    return "unknown"


def expect_format(path: str | Path, expected: str, cls: str) -> Path:
    """``path`` as a Path if it is a file of format ``expected``; else a TokenizerError naming
    both."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{cls}: tokenizer file not found: {path}")
    found = detect_tokenizer_format(path)
    if found != expected:
        raise TokenizerError(
            f"{cls}: {path} is {FORMAT_NAMES[found]}, not {FORMAT_NAMES[expected]}; try "
            f"load_tokenizer({str(path)!r})"
        )
    return path
