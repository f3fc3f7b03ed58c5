"""Text out of a token stream without splitting multi-byte characters (``IncrementalDecoder``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["IncrementalDecoder", "stream_text"]


class IncrementalDecoder:
    """Turns token ids into text pieces as they arrive.

    One token can hold half of a UTF-8 character (byte-level BPE), and SentencePiece decodes a
    leading space differently at the start of a string. So we decode a short window of recent
    tokens twice (with and without the newest) and emit only the new suffix, holding it back
    while it ends in U+FFFD (an incomplete character). Same idea as HF ``TextStreamer``.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # window start
        self.read = 0  # ids before this index have been emitted

    def _pending(self) -> tuple[str, str]:
        """Decoded window without and with the ids not yet emitted."""
        ids, start = self.ids, self.prefix
        return self.tokenizer.decode(ids[start : self.read]), self.tokenizer.decode(ids[start:])

    def push(self, token: int) -> str:
        """Add one token id; returns the text it completes (maybe empty)."""
        self.ids.append(token)
        before, text = self._pending()
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(before) :]
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end)."""
        before, text = self._pending()
        self.prefix = self.read = len(self.ids)
        return text[len(before) :]


def stream_text(tokenizer: Any, tokens: Iterable[int]) -> Iterator[str]:
    """Text pieces of a token stream, never splitting a multi-byte character."""
    dec = IncrementalDecoder(tokenizer)
    for t in tokens:
        if piece := dec.push(t):
            yield piece
    if tail := dec.flush():
        yield tail
