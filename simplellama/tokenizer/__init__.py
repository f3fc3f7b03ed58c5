"""Tokenizers: text <-> token ids for the checkpoints SimpleLlama loads, all with Meta's Llama 3
API.

- ``Tokenizer`` (``llama3.py``): Llama 3 tiktoken file (one ``base64(token bytes) rank`` per line).
- ``SentencePieceTokenizer`` (``spm.py``): Llama 2 style ``tokenizer.model`` (a SentencePiece
ModelProto).
- ``ByteLevelBPETokenizer`` (``bpe.py``): GPT-2 style byte-level BPE from a GGUF file or a Hugging
Face
  ``tokenizer.json`` (SmolLM2, the default model, uses it), written out in plain Python.

``load_tokenizer(path)`` looks at a file's content (``sniff.py``), not its name, and picks the
class. Pre-tokenizer rules live in one table (``rules.py``); ``streaming.py`` turns a token stream
into text.
"""

from __future__ import annotations

from pathlib import Path

from ..assets import default_model_path
from ..errors import TokenizerError
from .bpe import ByteLevelBPETokenizer, hf_chat_template
from .llama3 import Tokenizer
from .rules import LLAMA3_PATTERN, PRETOKENIZERS, bytes_to_unicode
from .sniff import FORMAT_NAMES, detect_tokenizer_format
from .spm import SentencePieceTokenizer
from .streaming import IncrementalDecoder, stream_text

__all__ = [
    "TokenizerError",
    "Tokenizer",
    "SentencePieceTokenizer",
    "ByteLevelBPETokenizer",
    "AnyTokenizer",
    "IncrementalDecoder",
    "stream_text",
    "LLAMA3_PATTERN",
    "PRETOKENIZERS",
    "bytes_to_unicode",
    "detect_tokenizer_format",
    "hf_chat_template",
    "find_tokenizer_file",
    "load_tokenizer",
]

AnyTokenizer = Tokenizer | SentencePieceTokenizer | ByteLevelBPETokenizer

# Where a checkpoint directory keeps its tokenizer, in the order we look (Meta's file first: an HF
# Llama 3 dir carries both, and ``original/tokenizer.model`` is Meta's own).
TOKENIZER_FILES = ("tokenizer.model", "original/tokenizer.model", "tokenizer.json")


def find_tokenizer_file(directory: str | Path) -> Path | None:
    """The tokenizer file of a checkpoint directory (see ``TOKENIZER_FILES``), else its one
    .gguf."""
    d = Path(directory)
    for name in TOKENIZER_FILES:
        if (d / name).is_file():
            return d / name
    ggufs = sorted(d.glob("*.gguf"))
    return ggufs[0] if len(ggufs) == 1 else None


def load_tokenizer(path: str | Path | None = None) -> AnyTokenizer:
    """Open a tokenizer by content: tiktoken text, SentencePiece ModelProto, tokenizer.json or
    .gguf.

    Args:
        path: a tokenizer file, a checkpoint directory (searched with ``find_tokenizer_file``) or a
            .gguf checkpoint; None: the embedded default model's tokenizer.
    """
    path = default_model_path() if path is None else Path(path)
    if path.is_dir():
        found = find_tokenizer_file(path)
        if found is None:
            raise TokenizerError(
                f"load_tokenizer: {path} holds no tokenizer.json, tokenizer.model or .gguf file"
            )
        path = found
    if not path.is_file():
        raise TokenizerError(f"load_tokenizer: tokenizer file not found: {path}")
    fmt = detect_tokenizer_format(path)
    if fmt == "tiktoken":
        return Tokenizer(path)
    if fmt == "sentencepiece":
        return SentencePieceTokenizer(path)
    if fmt == "hf_json":
        return ByteLevelBPETokenizer.from_hf(path)
    if fmt == "gguf":
        return ByteLevelBPETokenizer.from_gguf(path)
    with open(path, "rb") as f:
        head = f.read(16)
    raise TokenizerError(
        f"load_tokenizer: {path} is {FORMAT_NAMES[fmt]} (starts with {head!r}); expected a Llama "
        "3 tiktoken "
        "file, a SentencePiece model, a tokenizer.json or a .gguf"
    )
