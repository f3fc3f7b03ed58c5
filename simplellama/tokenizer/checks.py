"""What a tokenizer file must hold, checked when it is loaded rather than when it first fails.

A Llama 3 tiktoken file with a repeated or missing rank makes tiktoken panic; a GGUF or
tokenizer.json vocabulary with an id past its end fails at the first decode; a special-token id
outside the vocabulary fails mid-generation. These readers turn each into one line naming the
file (and line, key or token) with what was expected and what was found.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from gguf import Keys, TokenType

from ..errors import TokenizerError
from ..gguf_reader import gguf_field

__all__ = ["token_id", "tiktoken_ranks", "gguf_vocab", "hf_bpe_vocab"]


def token_id(value: Any, n: int, what: str, source: str) -> int | None:
    """``value`` as a token id of a vocabulary of ``n`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise TokenizerError(f"{source}: {what}: expected a token id in 0..{n - 1}, found "
                             f"{value!r:.60}")  # fmt: skip
    return value


def tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A Llama 3 ``tokenizer.model``: one ``base64(token bytes) rank`` line per token.

    The ranks must be 0..n-1, each once, each token's bytes must appear once, and every single
    byte must be a token (byte-level BPE can then spell any text).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not a text file (byte at offset {e.start})") from None
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank_text = line.split()
            token_bytes, rank = base64.b64decode(token, validate=True), int(rank_text)
        except ValueError:
            raise TokenizerError(
                f"{path}: line {lineno}: expected 'base64 rank', found {line!r:.80}"
            ) from None
        if token_bytes in ranks:
            raise TokenizerError(f"{path}: line {lineno}: token {token_bytes!r:.40} appears twice")
        if rank in line_of_rank:
            raise TokenizerError(
                f"{path}: line {lineno}: rank {rank} already given on line {line_of_rank[rank]}"
            )
        ranks[token_bytes], line_of_rank[rank] = rank, lineno
    missing = next((b for b in range(256) if bytes([b]) not in ranks), None)
    if missing is not None:
        raise TokenizerError(f"{path}: no token for the single byte {missing:#04x} (expected all "
                             "256 bytes)")  # fmt: skip
    n = len(ranks)
    bad = next((r for r in line_of_rank if not 0 <= r < n), None)
    if bad is not None:  # n distinct ranks in 0..n-1 are exactly 0..n-1
        raise TokenizerError(f"{path}: line {line_of_rank[bad]}: rank {bad} is outside 0..{n - 1} "
                             f"(expected the ranks 0..{n - 1} of its {n} tokens)")  # fmt: skip
    return ranks


def gguf_vocab(reader: Any, source: str) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    """``(tokens, token types, merges)`` of a GGUF file's byte-level BPE vocabulary, checked."""
    K = Keys.Tokenizer
    tokens = gguf_field(reader, K.LIST)
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        found = type(tokens).__name__ if not isinstance(tokens, list) else f"{len(tokens)} items"
        raise TokenizerError(f"{source}: {K.LIST}: expected a non-empty list of strings, "
                             f"found {found}")  # fmt: skip
    types = gguf_field(reader, K.TOKEN_TYPE)
    if types is None:
        types = [TokenType.NORMAL] * len(tokens)
    if not isinstance(types, list) or len(types) != len(tokens):
        found = f"{len(types)} items" if isinstance(types, list) else type(types).__name__
        raise TokenizerError(
            f"{source}: {K.TOKEN_TYPE}: expected one type per token ({len(tokens)}), found {found}"
        )
    merges = gguf_field(reader, K.MERGES, [])
    pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else () for m in merges]
    bad = next((i for i, p in enumerate(pairs) if len(p) != 2), None)
    if not isinstance(merges, list) or bad is not None:
        found = f"{merges[bad]!r:.40} at {bad}" if bad is not None else type(merges).__name__
        raise TokenizerError(f"{source}: {K.MERGES}: expected 'left right' strings, found {found}")
    return tokens, types, pairs


def hf_bpe_vocab(
    model: dict, added: Any, path: Path
) -> tuple[list[str], list[tuple[str, str]], dict[str, int], dict[str, int]]:
    """``(tokens by id, merges, special tokens, other added tokens)`` of a tokenizer.json BPE.

    Ids must be non-negative ints; the largest may exceed the number of tokens only a little
    (a vocabulary with holes), never enough to make the id table huge.
    """
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{path}: model.vocab: expected a non-empty object, found "
                             f"{type(vocab).__name__}")  # fmt: skip
    if not isinstance(added, list) or not all(
        isinstance(a, dict) and isinstance(a.get("content"), str) for a in added
    ):
        raise TokenizerError(
            f"{path}: added_tokens: expected a list of {{'content', 'id'}} objects"
        )
    ids = {**vocab, **{a["content"]: a.get("id") for a in added}}
    limit = 2 * len(ids) + 1024
    for token, i in ids.items():
        token_id(i, limit, f"token {token!r:.40}", str(path))
    tokens = [""] * (max(ids.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    merges, pairs = model.get("merges", []), []
    for m in merges if isinstance(merges, list) else [merges]:
        pair = tuple(m.split(" ", 1)) if isinstance(m, str) else m
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TokenizerError(f"{path}: model.merges: expected 'left right' strings or pairs, "
                                 f"found {m!r:.40}")  # fmt: skip
        pairs.append(tuple(pair))
    specials = {a["content"]: a["id"] for a in added if a.get("special")}
    plain = {a["content"]: a["id"] for a in added if not a.get("special")}
    return tokens, pairs, specials, plain
