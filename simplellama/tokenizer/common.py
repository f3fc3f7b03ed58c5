"""Special-token handling shared by the tokenizers (Meta/tiktoken semantics), and the text
splitter."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Literal

from ..errors import TokenizerError

__all__ = ["Specials", "allowed_specials", "special_pattern", "split_on"]

Specials = Literal["all"] | Collection[str] | None


def allowed_specials(
    s: str, specials: Collection[str], allowed: Specials, disallowed: Specials
) -> set[str]:
    """Check ``encode``'s input and return the special tokens to encode as ids (Meta/tiktoken
    semantics).

    ``allowed`` ("all" or names) become ids, ``disallowed`` ("all" = every special not allowed)
    raise when ``s`` contains them, the rest are plain text.
    """
    if not isinstance(s, str):
        raise TokenizerError(f"encode: expected a str, found {type(s).__name__}")
    allowed_set = set(specials) if allowed == "all" else set(allowed or ())
    disallowed_set = set(specials) - allowed_set if disallowed == "all" else set(disallowed or ())
    for token in disallowed_set:
        if token in s:
            raise TokenizerError(
                f"encode: the text contains the special token {token!r}, which is disallowed; pass "
                f"allowed_special={{{token!r}}} to encode it as a special token, or "
                "disallowed_special=() as text"
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
