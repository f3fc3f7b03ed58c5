"""Llama 3's tokenizer: tiktoken BPE over 128000 byte-level tokens + 256 special tokens, Meta's API.

Follows ``llama_models/llama3/tokenizer.py``: ``encode(s, *, bos, eos, allowed_special=None,
disallowed_special=()) -> list[int]``, ``decode(ids) -> str``, ``bos_id``, ``eos_id``, ``pad_id``,
``stop_tokens``, ``special_tokens`` (text -> id) and ``n_words``. The other tokenizers of this
package share that interface. Special tokens follow Meta: by default their text is encoded as
ordinary text; ``allowed_special="all"`` (or a set) turns them into their ids,
``disallowed_special="all"`` raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import tiktoken

from LogRelay import get_relay

from .checks import tiktoken_ranks
from .common import Specials, allowed_specials
from .rules import LLAMA3_PATTERN
from .sniff import expect_format

__all__ = ["Tokenizer"]

log = get_relay("simplellama.tokenizer")

# Meta, llama3/tokenizer.py: tiktoken panics on > 400k chars, and gets very slow on runs of more
# than
# 25k whitespace or non-whitespace characters (https://github.com/openai/tiktoken/issues/195).
TIKTOKEN_MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACES_CHARS = 25_000


class Tokenizer:
    """Llama 3 tokenizer (tiktoken BPE, 128000 base tokens + 256 special tokens), Meta's API."""

    num_reserved_special_tokens = 256
    pat_str = LLAMA3_PATTERN

    def __init__(self, model_path: str | Path) -> None:
        path = expect_format(model_path, "tiktoken", "Tokenizer")
        mergeable_ranks = tiktoken_ranks(path)  # checked: ranks 0..n-1 once each, all 256 bytes
        num_base_tokens = len(mergeable_ranks)
        # Order and names as in Meta's llama_models/llama3/tokenizer.py: ids 128000.. follow this
        # list.
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
            f"<|reserved_special_token_{2 + i}|>"
            for i in range(self.num_reserved_special_tokens - len(special_tokens))
        ]
        self.special_tokens: dict[str, int] = {
            t: num_base_tokens + i for i, t in enumerate(special_tokens)
        }
        self.model = tiktoken.Encoding(
            name=path.name,
            pat_str=self.pat_str,
            mergeable_ranks=mergeable_ranks,
            special_tokens=self.special_tokens,
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
        self,
        s: str,
        *,
        bos: bool,
        eos: bool,
        allowed_special: Specials = None,
        disallowed_special: Specials = (),
    ) -> list[int]:
        """Encode ``s``; ``bos``/``eos`` add <|begin_of_text|>/<|end_of_text|>. See the module doc
        for specials."""
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
    def _split_whitespaces_or_nonwhitespaces(
        s: str, max_consecutive_slice_len: int
    ) -> Iterator[str]:
        """Cut ``s`` so that no piece holds more than ``max_consecutive_slice_len`` consecutive
        (non-)spaces."""
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
