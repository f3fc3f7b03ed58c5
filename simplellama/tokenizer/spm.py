"""Llama 2 style SentencePiece ``tokenizer.model`` (a ModelProto), with the Llama 3 ``Tokenizer``
API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sentencepiece

from ..errors import TokenizerError
from .checks import token_id
from .common import Specials, allowed_specials, special_pattern, split_on
from .sniff import expect_format

__all__ = ["SentencePieceTokenizer"]


class SentencePieceTokenizer:
    """Llama 2 style SentencePiece tokenizer with the same interface as ``Tokenizer``."""

    def __init__(self, model_path: str | Path) -> None:
        path = expect_format(model_path, "sentencepiece", "SentencePieceTokenizer")
        self.sp_model = sentencepiece.SentencePieceProcessor()
        try:
            self.sp_model.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise TokenizerError(
                f"SentencePieceTokenizer: {path} is not a valid SentencePiece ModelProto: {e}"
            ) from e
        sp = self.sp_model
        self.n_words: int = sp.vocab_size()
        if self.n_words < 1:
            raise TokenizerError(f"SentencePieceTokenizer: {path}: the vocabulary is empty")
        for what, i in (("bos_id", sp.bos_id()), ("eos_id", sp.eos_id()), ("pad_id", sp.pad_id())):
            if i != -1:  # -1: the model has none
                token_id(i, self.n_words, what, str(path))
        self.bos_id: int = sp.bos_id()
        self.eos_id: int = sp.eos_id()
        self.pad_id: int = sp.pad_id()  # -1 when the model has none (Llama 2)
        self.eot_id: int = self.eos_id
        self.stop_tokens: list[int] = [self.eos_id]
        self.special_tokens: dict[str, int] = {
            sp.id_to_piece(i): i
            for i in range(self.n_words)
            if sp.is_control(i) or sp.is_unknown(i)
        }

    def encode(
        self,
        s: str,
        *,
        bos: bool,
        eos: bool,
        allowed_special: Specials = None,
        disallowed_special: Specials = (),
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
