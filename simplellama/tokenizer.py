"""Tokenizers: text <-> token ids for the checkpoints SimpleLlama loads.

Three tokenizers share Meta's Llama 3 interface (llama_models/llama3/tokenizer.py):
``encode(s, *, bos, eos, allowed_special=None, disallowed_special=()) -> list[int]``, ``decode(ids) -> str``,
``bos_id``, ``eos_id``, ``pad_id``, ``stop_tokens``, ``special_tokens`` (text -> id) and ``n_words``.

- ``Tokenizer``: Llama 3 tiktoken file (one ``base64(token bytes) rank`` per line) + 256 special tokens.
- ``SentencePieceTokenizer``: Llama 2 style ``tokenizer.model`` (a SentencePiece ModelProto).
- ``ByteLevelBPETokenizer``: GPT-2 style byte-level BPE from a GGUF file or a Hugging Face ``tokenizer.json``
  (SmolLM2, the default model, uses it); written out in plain Python in tokenizer_bpe.py.

Special tokens follow Meta: by default their text is encoded as ordinary text; pass ``allowed_special="all"``
(or a set) to turn them into their ids, ``disallowed_special="all"`` to raise when one appears.
``load_tokenizer(path)`` looks at a file's content (not its name) and picks the right class.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from pathlib import Path

import tiktoken

from LogRelay import get_relay

from .tokenizer_bpe import PRETOKENIZER_SPLITS, ByteLevelBPETokenizer, bytes_to_unicode
from .tokenizer_utils import (
    FORMAT_NAMES,
    LLAMA3_PATTERN,
    Specials,
    TokenizerError,
    allowed_specials,
    detect_tokenizer_format,
    expect_format,
    special_pattern,
    split_on,
)

__all__ = [
    "TokenizerError",
    "Tokenizer",
    "SentencePieceTokenizer",
    "ByteLevelBPETokenizer",
    "PRETOKENIZER_SPLITS",
    "bytes_to_unicode",
    "detect_tokenizer_format",
    "load_tokenizer",
]

log = get_relay("simplellama.tokenizer")

# Meta, llama3/tokenizer.py: tiktoken panics on > 400k chars, and gets very slow on runs of more than
# 25k whitespace or non-whitespace characters (https://github.com/openai/tiktoken/issues/195).
TIKTOKEN_MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACES_CHARS = 25_000


# ----------------------------------------------------------------------------------------- Llama 3


class Tokenizer:
    """Llama 3 tokenizer (tiktoken BPE, 128000 base tokens + 256 special tokens), Meta's API."""

    num_reserved_special_tokens = 256
    pat_str = LLAMA3_PATTERN

    def __init__(self, model_path: str | Path) -> None:
        path = expect_format(model_path, "tiktoken", "Tokenizer")
        mergeable_ranks: dict[bytes, int] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                mergeable_ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise TokenizerError(f"Tokenizer: {path} line {lineno}: expected 'base64 rank', found {line!r}") from e
        num_base_tokens = len(mergeable_ranks)
        # Order and names as in Meta's llama_models/llama3/tokenizer.py: ids 128000.. follow this list.
        special_tokens = [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>",
            "<|step_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",  # end of message (a tool call follows)
            "<|eot_id|>",  # end of turn
            "<|python_tag|>",
            "<|image|>",
        ]
        special_tokens += [
            f"<|reserved_special_token_{2 + i}|>" for i in range(self.num_reserved_special_tokens - len(special_tokens))
        ]
        self.special_tokens: dict[str, int] = {t: num_base_tokens + i for i, t in enumerate(special_tokens)}
        self.model = tiktoken.Encoding(
            name=path.name, pat_str=self.pat_str, mergeable_ranks=mergeable_ranks, special_tokens=self.special_tokens
        )
        self.n_words: int = num_base_tokens + len(special_tokens)
        self.bos_id: int = self.special_tokens["<|begin_of_text|>"]
        self.eos_id: int = self.special_tokens["<|end_of_text|>"]
        self.eot_id: int = self.special_tokens["<|eot_id|>"]
        self.eom_id: int = self.special_tokens["<|eom_id|>"]
        self.python_tag_id: int = self.special_tokens["<|python_tag|>"]
        self.pad_id: int = self.special_tokens["<|finetune_right_pad_id|>"]
        self.stop_tokens: list[int] = [self.eos_id, self.eom_id, self.eot_id]
        log.debug("loaded Llama 3 tokenizer %s: %d words", path, self.n_words)

    def encode(
        self, s: str, *, bos: bool, eos: bool, allowed_special: Specials = None, disallowed_special: Specials = ()
    ) -> list[int]:
        """Encode ``s``; ``bos``/``eos`` add <|begin_of_text|>/<|end_of_text|>. See the module doc for specials."""
        allowed = allowed_specials(s, self.special_tokens, allowed_special, disallowed_special)
        t: list[int] = []
        for i in range(0, len(s), TIKTOKEN_MAX_ENCODE_CHARS):
            for piece in self._split_whitespaces_or_nonwhitespaces(
                s[i : i + TIKTOKEN_MAX_ENCODE_CHARS], MAX_NO_WHITESPACES_CHARS
            ):
                t.extend(self.model.encode(piece, allowed_special=allowed, disallowed_special=()))
        return [self.bos_id] * bos + t + [self.eos_id] * eos

    def decode(self, t: Sequence[int]) -> str:
        """Decode ids to text (special tokens appear as their text; broken UTF-8 becomes U+FFFD)."""
        return self.model.decode(list(t))

    @staticmethod
    def _split_whitespaces_or_nonwhitespaces(s: str, max_consecutive_slice_len: int) -> Iterator[str]:
        """Cut ``s`` so that no piece holds more than ``max_consecutive_slice_len`` consecutive (non-)spaces."""
        run_len, run_is_space, start = 0, s[:1].isspace(), 0
        for i, ch in enumerate(s):
            if ch.isspace() != run_is_space:
                run_len, run_is_space = 1, ch.isspace()
            else:
                run_len += 1
                if run_len > max_consecutive_slice_len:
                    yield s[start:i]
                    start, run_len = i, 1
        yield s[start:]


# ------------------------------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer:
    """Llama 2 style SentencePiece tokenizer with the same interface as ``Tokenizer``."""

    def __init__(self, model_path: str | Path) -> None:
        import sentencepiece

        path = expect_format(model_path, "sentencepiece", "SentencePieceTokenizer")
        self.sp_model = sentencepiece.SentencePieceProcessor()
        try:
            self.sp_model.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"SentencePieceTokenizer: {path} is not a valid SentencePiece ModelProto: {e}") from e
        sp = self.sp_model
        self.n_words: int = sp.vocab_size()
        self.bos_id: int = sp.bos_id()
        self.eos_id: int = sp.eos_id()
        self.pad_id: int = sp.pad_id()  # -1 when the model has none (Llama 2)
        self.eot_id: int = self.eos_id
        self.stop_tokens: list[int] = [self.eos_id]
        self.special_tokens: dict[str, int] = {
            sp.id_to_piece(i): i for i in range(self.n_words) if sp.is_control(i) or sp.is_unknown(i)
        }
        self._id_to_special = {i: t for t, i in self.special_tokens.items()}

    def encode(
        self, s: str, *, bos: bool, eos: bool, allowed_special: Specials = None, disallowed_special: Specials = ()
    ) -> list[int]:
        """Encode ``s`` with SentencePiece; allowed special tokens in the text become their ids."""
        allowed = allowed_specials(s, self.special_tokens, allowed_special, disallowed_special)
        t: list[int] = []
        for piece, is_special in split_on(s, special_pattern(allowed)):
            t.extend([self.special_tokens[piece]] if is_special else self.sp_model.encode(piece))
        return [self.bos_id] * bos + t + [self.eos_id] * eos

    def decode(self, t: Sequence[int]) -> str:
        """Decode ids to text; control tokens (<s>, </s>) are dropped, as SentencePiece does."""
        return self.sp_model.decode(list(t))


# --------------------------------------------------------------------------------------------- loader

AnyTokenizer = Tokenizer | SentencePieceTokenizer | ByteLevelBPETokenizer


def load_tokenizer(path: str | Path) -> AnyTokenizer:
    """Open a tokenizer by content: tiktoken text, SentencePiece ModelProto, tokenizer.json or .gguf.

    A directory is searched for tokenizer.json, then tokenizer.model, then a single .gguf file.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "tokenizer.json", path / "tokenizer.model", *sorted(path.glob("*.gguf"))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise TokenizerError(f"load_tokenizer: {path} holds no tokenizer.json, tokenizer.model or .gguf file")
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
        f"load_tokenizer: {path} is {FORMAT_NAMES[fmt]} (starts with {head!r}); expected a Llama 3 tiktoken file, "
        "a SentencePiece model, a tokenizer.json or a .gguf"
    )
