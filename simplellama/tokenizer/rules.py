"""One table of pre-tokenizer rules, read by the tokenizers and written by ``convert``.

A byte-level BPE tokenizer first cuts text into pieces with split regexes (the "pre-tokenizer"),
then merges bytes inside each piece. llama.cpp names the rule in a GGUF file
(``tokenizer.ggml.pre``); Hugging Face spells it as a ``pre_tokenizer`` step list in
``tokenizer.json``. ``PRETOKENIZERS`` holds each rule once; ``hf_pre_tokenizer`` writes it in HF's
spelling and ``splits_from_hf`` reads HF's spelling back, so loading and converting cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import TokenType

from ..errors import TokenizerError

__all__ = [
    "GPT2_PATTERN",
    "LLAMA3_PATTERN",
    "DIGIT_PATTERN",
    "PreTokenizer",
    "PRETOKENIZERS",
    "GGUF_PRE_AS_TRANSFORMERS",
    "bytes_to_unicode",
    "hf_pre_tokenizer",
    "splits_from_hf",
    "gguf_token_kinds",
]

# The GPT-2 split, also what Hugging Face's ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (  # Meta's llama3/tokenizer.py pat_str (also tiktoken's Llama 3 split)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DIGIT_PATTERN = r"\p{N}"  # each digit alone, applied before the GPT-2 split


@dataclass(frozen=True)
class PreTokenizer:
    """Split regexes applied one after another; ``ignore_merges``: a piece that is a whole token is
    kept whole (Llama 3's rule, HF ``ignore_merges``)."""

    splits: tuple[str, ...]
    ignore_merges: bool = False


_GPT2 = PreTokenizer((GPT2_PATTERN,))
_DIGITS_GPT2 = PreTokenizer(
    (DIGIT_PATTERN, GPT2_PATTERN)
)  # SmolLM2's Digits(individual_digits=True)
_LLAMA3 = PreTokenizer((LLAMA3_PATTERN,), ignore_merges=True)

# GGUF ``tokenizer.ggml.pre`` -> rule (llama.cpp, src/llama-vocab.cpp). "default" is llama.cpp's
# fallback name; we use GPT-2's split for it, as transformers does. A rule's first name is the one
# ``convert --to gguf`` writes: llama.cpp spells GPT-2's split "gpt-2" and refuses "gpt2".
PRETOKENIZERS: dict[str, PreTokenizer] = {
    "gpt-2": _GPT2,
    "gpt2": _GPT2,
    "default": _GPT2,
    "smollm": _DIGITS_GPT2,
    "starcoder": _DIGITS_GPT2,
    "refact": _DIGITS_GPT2,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
}

# What a GGUF's own ``tokenizer.ggml.pre`` means by default: transformers' GGUF loader (our
# reference
# for ids) does not know "smollm" and applies the plain GPT-2 split, so prompts tokenize exactly as
# there. The two differ only on whitespace before a digit ("  1"); ``pre="smollm"`` gives
# llama.cpp's.
GGUF_PRE_AS_TRANSFORMERS: dict[str, str] = {"smollm": "gpt2"}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte -> printable character, so every byte string is spelled as visible text.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, ...) map to
    U+0100.. in order, which is why a leading space shows up as "Ġ" (U+0120) in byte-level
    vocabularies.
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# HF's ByteLevel step: the byte alphabet, and (use_regex) the GPT-2 split
_BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}


def hf_pre_tokenizer(rule: PreTokenizer) -> dict[str, Any]:
    """``rule`` as a tokenizer.json ``pre_tokenizer`` (the inverse of ``splits_from_hf``)."""
    steps: list[dict[str, Any]] = []
    for pattern in rule.splits:
        if pattern == DIGIT_PATTERN:
            steps.append({"type": "Digits", "individual_digits": True})
        elif pattern != GPT2_PATTERN:
            split = {
                "type": "Split",
                "pattern": {"Regex": pattern},
                "behavior": "Isolated",
                "invert": False,
            }
            steps.append(split)
    byte_level = {**_BYTE_LEVEL, "use_regex": rule.splits[-1] == GPT2_PATTERN}
    return byte_level if not steps else {"type": "Sequence", "pretokenizers": [*steps, byte_level]}


def splits_from_hf(pre: dict | None, path: Path) -> list[str]:
    """tokenizer.json ``pre_tokenizer`` -> split regexes. Only byte-level set-ups are accepted."""
    kind = (pre or {}).get("type") if isinstance(pre or {}, dict) else pre
    if kind == "Sequence":
        steps = pre.get("pretokenizers")
    elif kind in ("ByteLevel", "Split", "Digits"):
        steps = [pre]
    else:
        raise TokenizerError(
            f"{path}: pre_tokenizer {kind!r:.40} is not byte-level; ByteLevelBPETokenizer cannot "
            "use it"
        )
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise TokenizerError(f"{path}: pre_tokenizer.pretokenizers: expected a list of objects")
    splits, byte_level = [], False
    for step in steps:
        kind = step.get("type")
        if kind == "ByteLevel":
            byte_level = True
            if step.get("add_prefix_space"):
                raise TokenizerError(f"{path}: ByteLevel add_prefix_space=true is not supported")
            if step.get("use_regex", True):
                splits.append(GPT2_PATTERN)
        elif kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
            pattern = step.get("pattern")
            found = (
                [pattern.get(k) for k in ("Regex", "String")] if isinstance(pattern, dict) else []
            )
            if not any(isinstance(p, str) for p in found):
                raise TokenizerError(f"{path}: pre_tokenizer Split: expected a pattern with a "
                                     f"'Regex' or 'String', found {pattern!r:.60}")  # fmt: skip
            splits.append(found[0] if isinstance(found[0], str) else re.escape(found[1]))
        elif kind == "Digits":
            splits.append(DIGIT_PATTERN if step.get("individual_digits") else r"\p{N}+")
        else:
            raise TokenizerError(f"{path}: pre_tokenizer step {step!r:.80} is not supported")
    if not byte_level:
        raise TokenizerError(
            f"{path}: pre_tokenizer has no ByteLevel step; ByteLevelBPETokenizer cannot use it"
        )
    return splits


def gguf_token_kinds(tokens: list[str], types: list[int]) -> tuple[dict[str, int], dict[str, int]]:
    """(special tokens, added tokens) of a GGUF vocabulary, text -> id, as transformers reads them.

    CONTROL tokens are special; USER_DEFINED ones are added (always matched whole, not special). A
    CONTROL token spelled outside the byte-level alphabet is a llama.cpp mislabel: an ordinary
    token.
    """
    alphabet = set(bytes_to_unicode().values())
    special = {
        t: i
        for i, (t, k) in enumerate(zip(tokens, types))
        if k == TokenType.CONTROL and set(t) <= alphabet
    }
    added = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k == TokenType.USER_DEFINED}
    return special, added
