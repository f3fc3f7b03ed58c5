"""Byte-level BPE (GPT-2 style) from a GGUF file or a Hugging Face tokenizer.json, in plain Python.

Same interface as the Llama 3 ``Tokenizer`` (``llama3.py``). SmolLM2, the default model, uses it.
Encoding: cut the text at special/added tokens, split the rest with the pre-tokenizer regexes, spell
each piece's UTF-8 bytes as printable characters (``bytes_to_unicode``), then merge the adjacent
pair with the best (lowest) merge rank until no merge applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import regex

from LogRelay import get_relay

from ..errors import TokenizerError
from ..files import read_json, regular_file
from ..gguf_reader import gguf_field, open_gguf
from .checks import gguf_vocab, hf_bpe_vocab, token_id
from .common import Specials, allowed_specials, special_pattern, split_on
from .rules import (
    GGUF_PRE_AS_TRANSFORMERS,
    GPT2_PATTERN,
    PRETOKENIZERS,
    bytes_to_unicode,
    gguf_token_kinds,
    splits_from_hf,
)
from .sniff import expect_format

__all__ = ["ByteLevelBPETokenizer", "hf_chat_template"]

log = get_relay("simplellama.tokenizer")

# Tokens that end a turn or a document in the chat formats we know; generation stops on any of them.
_END_TOKENS = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|endoftext|>",
    "</s>",
    "<end_of_turn>",
)


def hf_chat_template(directory: Path, tokenizer_config: dict[str, Any]) -> str | None:
    """The chat template of an HF tokenizer directory, read as transformers reads it:
    ``chat_template.jinja`` (where transformers 5 saves it) takes priority over
    ``tokenizer_config.json``'s
    ``chat_template`` string."""
    jinja_file = Path(directory) / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            return regular_file(jinja_file, TokenizerError).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError(f"{jinja_file}: not UTF-8 text (offset {e.start})") from None
    template = tokenizer_config.get("chat_template")
    return template if isinstance(template, str) else None


class ByteLevelBPETokenizer:
    """GPT-2 style byte-level BPE (vocabulary + ranked merges), with the ``Tokenizer`` interface.

    Encoding: cut the text at special/added tokens, split the rest with the pre-tokenizer regexes,
    spell each piece's UTF-8 bytes with ``bytes_to_unicode``, then merge adjacent symbols by best
    merge rank until no merge applies.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[tuple[str, str]],
        *,
        special_tokens: dict[str, int],
        added_tokens: dict[str, int] | None = None,
        splits: Sequence[str] = (GPT2_PATTERN,),
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        unk_id: int | None = None,
        add_bos: bool = False,
        ignore_merges: bool = False,
        chat_template: str | None = None,
        name: str = "byte-level BPE",
    ) -> None:
        self.name = name
        if not tokens:
            raise TokenizerError(f"{name}: the vocabulary is empty")
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.merge_ranks: dict[tuple[str, str], int] = {tuple(m): r for r, m in enumerate(merges)}
        self.special_tokens = dict(special_tokens)
        self.added_tokens = dict(
            added_tokens or {}
        )  # non-special added tokens: always matched whole
        self.vocab.update(self.special_tokens)
        self.vocab.update(self.added_tokens)
        self.n_words: int = max(self.vocab.values()) + 1
        for what, i in [*self.special_tokens.items(), *self.added_tokens.items(),
                        ("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id),
                        ("unk_id", unk_id)]:  # fmt: skip
            token_id(i, self.n_words, what, name)
        try:
            self.splits = [regex.compile(p) for p in splits]
        except (regex.error, TypeError) as e:
            raise TokenizerError(f"{name}: a pre-tokenizer pattern does not compile: {e}") from None
        self.ignore_merges = (
            ignore_merges  # Llama 3 style: a piece that is a whole token is not merged
        )
        self.add_bos, self.chat_template = add_bos, chat_template
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = bos_id, eos_id, pad_id, unk_id
        self.eot_id: int | None = next(
            (
                self.special_tokens[t]
                for t in ("<|eot_id|>", "<|im_end|>")
                if t in self.special_tokens
            ),
            eos_id,
        )
        ends = [self.special_tokens[t] for t in _END_TOKENS if t in self.special_tokens]
        self.stop_tokens: list[int] = list(
            dict.fromkeys(([eos_id] if eos_id is not None else []) + ends)
        )
        self.byte_encoder = bytes_to_unicode()
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        literal = {**self.special_tokens, **self.added_tokens}.keys()
        self.id_to_bytes: list[bytes] = [b""] * self.n_words
        for t, i in self.vocab.items():
            if t not in literal and all(c in byte_decoder for c in t):
                self.id_to_bytes[i] = bytes(byte_decoder[c] for c in t)
            else:  # special tokens, and tokens a GGUF stores as raw text, stand for their own UTF-8
                self.id_to_bytes[i] = t.encode("utf-8")
        self._added_pattern = special_pattern(self.added_tokens)
        self._cache: dict[str, list[int]] = {}

    # -- construction
    # -----------------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path_or_reader: Any, pre: str | None = None) -> ByteLevelBPETokenizer:
        """Build from a GGUF file (path or ``gguf.GGUFReader``) whose ``tokenizer.ggml.model`` is
        "gpt2".

        Args:
            path_or_reader: the .gguf path or an open ``gguf.GGUFReader``.
            pre: override ``tokenizer.ggml.pre`` (a key of ``rules.PRETOKENIZERS``). By default the
            file's
                value, read as transformers reads it (``GGUF_PRE_AS_TRANSFORMERS``).
        """
        K = gguf.Keys.Tokenizer
        reader = path_or_reader if isinstance(path_or_reader, gguf.GGUFReader) else None
        if reader is None:
            path = expect_format(path_or_reader, "gguf", "ByteLevelBPETokenizer.from_gguf")
            reader = open_gguf(path, TokenizerError)
        src = str(getattr(reader, "path", None) or reader.data.filename)

        def field(key: str, default: Any = None) -> Any:
            return gguf_field(reader, key, default)

        model = field(K.MODEL)
        if model != "gpt2":
            raise TokenizerError(
                f"{src}: tokenizer.ggml.model is {model!r}; ByteLevelBPETokenizer needs 'gpt2'"
            )
        if pre is None:
            pre = field(K.PRE)
            pre = GGUF_PRE_AS_TRANSFORMERS.get(pre, pre) if isinstance(pre, str) else pre
        if pre is None:
            log.warning("%s: no tokenizer.ggml.pre; using the GPT-2 split", src)
            pre = "gpt2"
        if not isinstance(pre, str) or pre not in PRETOKENIZERS:
            known = ", ".join(sorted(PRETOKENIZERS))
            raise TokenizerError(
                f"{src}: tokenizer.ggml.pre {pre!r:.40} is not supported; known: {known}"
            )
        tokens, types, merges = gguf_vocab(reader, src)
        template = field(K.CHAT_TEMPLATE)
        if template is not None and not isinstance(template, str):
            found = type(template).__name__
            raise TokenizerError(f"{src}: {K.CHAT_TEMPLATE}: expected text, found {found}")
        specials, added = gguf_token_kinds(tokens, types)
        rule = PRETOKENIZERS[pre]
        return cls(
            tokens,
            merges,
            special_tokens=specials,
            added_tokens=added,
            splits=rule.splits,
            bos_id=field(K.BOS_ID),
            eos_id=field(K.EOS_ID),
            pad_id=field(K.PAD_ID),
            unk_id=field(K.UNK_ID),
            add_bos=bool(field(K.ADD_BOS, False)),
            ignore_merges=rule.ignore_merges,
            chat_template=template,
            name=f"{src} ({pre})",
        )

    @classmethod
    def from_hf(
        cls, tokenizer_json: str | Path, tokenizer_config: str | Path | None = None
    ) -> ByteLevelBPETokenizer:
        """Build from a Hugging Face ``tokenizer.json`` (BPE model, byte-level pre-tokenizer).

        ``tokenizer_config`` (default: ``tokenizer_config.json`` beside it, if present) gives the
        bos/eos/pad/unk token names and the chat template (transformers 5 writes the template to
        ``chat_template.jinja``).
        """
        path = expect_format(tokenizer_json, "hf_json", "ByteLevelBPETokenizer.from_hf")
        spec = read_json(path, TokenizerError)
        model = spec.get("model") or {}
        kind = model.get("type") if isinstance(model, dict) else model
        if kind != "BPE" or not isinstance(model, dict):
            raise TokenizerError(
                f"{path}: model.type is {kind!r:.40}; ByteLevelBPETokenizer needs 'BPE'"
            )
        if spec.get("normalizer") is not None:
            found = spec["normalizer"]
            found = found.get("type") if isinstance(found, dict) else found
            raise TokenizerError(f"{path}: normalizer {found!r:.40} is not supported (need null)")
        splits = splits_from_hf(spec.get("pre_tokenizer"), path)
        vocab_added = hf_bpe_vocab(model, spec.get("added_tokens") or [], path)
        tokens, merges, specials, plain_added = vocab_added
        cfg_path = (
            Path(tokenizer_config) if tokenizer_config else path.with_name("tokenizer_config.json")
        )
        config = read_json(cfg_path, TokenizerError) if cfg_path.is_file() else {}
        template = hf_chat_template(path.parent, config)
        everything = {**model["vocab"], **specials, **plain_added}

        def named_id(key: str) -> int | None:
            name = config.get(key)
            name = name.get("content") if isinstance(name, dict) else name
            if name is not None and not isinstance(name, str):
                raise TokenizerError(
                    f"{cfg_path}: {key}: expected a token's text, found {name!r:.40}"
                )
            return everything.get(name) if name is not None else None

        return cls(
            tokens,
            merges,
            special_tokens=specials,
            added_tokens=plain_added,
            splits=splits,
            bos_id=named_id("bos_token"),
            eos_id=named_id("eos_token"),
            pad_id=named_id("pad_token"),
            unk_id=named_id("unk_token"),
            add_bos=bool(config.get("add_bos_token", False)),
            ignore_merges=bool(model.get("ignore_merges", False)),
            chat_template=template,
            name=str(path),
        )

    # -- encoding
    # ---------------------------------------------------------------------------------------------
    def _pieces(self, text: str) -> list[str]:
        """Run the pre-tokenizer: each split regex cuts every piece further (matches and gaps both
        kept)."""
        pieces = [text]
        for pattern in self.splits:
            pieces = [p for piece in pieces for p, _ in split_on(piece, pattern)]
        return pieces

    def _bpe(self, piece: str) -> list[int]:
        """Ids of one pre-tokenized piece: merge the best-ranked adjacent pair until none is left.
        Cached."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        word = [self.byte_encoder[b] for b in piece.encode("utf-8")]
        if self.ignore_merges and "".join(word) in self.vocab:
            word = ["".join(word)]
        while len(word) > 1:
            ranks = [self.merge_ranks.get(pair, -1) for pair in zip(word, word[1:])]
            best = min((r for r in ranks if r >= 0), default=None)
            if best is None:
                break
            merged, i = [], 0
            while i < len(word):  # merge every occurrence of the best pair, left to right
                if i < len(word) - 1 and ranks[i] == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self._lookup(sym) for sym in word]
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _lookup(self, symbol: str) -> int:
        i = self.vocab.get(symbol, self.unk_id)
        if i is None:
            raise TokenizerError(
                f"{self.name}: symbol {symbol!r} is not in the vocabulary and there is no unk token"
            )
        return i

    def encode(
        self,
        s: str,
        *,
        bos: bool,
        eos: bool,
        allowed_special: Specials = None,
        disallowed_special: Specials = (),
    ) -> list[int]:
        """Encode ``s``; ``bos``/``eos`` add the bos/eos ids. Non-special added tokens always match
        whole."""
        allowed = allowed_specials(s, self.special_tokens, allowed_special, disallowed_special)
        t: list[int] = []
        for part, is_special in split_on(s, special_pattern(allowed)):
            if is_special:
                t.append(self.special_tokens[part])
                continue
            for text, is_added in split_on(part, self._added_pattern):
                if is_added:
                    t.append(self.added_tokens[text])
                else:
                    for piece in self._pieces(text):
                        t.extend(self._bpe(piece))
        for flag, tid, what in ((bos, self.bos_id, "bos"), (eos, self.eos_id, "eos")):
            if flag and tid is None:
                raise TokenizerError(f"encode: {what}=True but {self.name} has no {what} token")
        return [self.bos_id] * bos + t + [self.eos_id] * eos

    def decode(self, t: Sequence[int]) -> str:
        """Decode ids to text (special tokens appear as their text; broken UTF-8 becomes U+FFFD)."""
        return b"".join(self.id_to_bytes[i] for i in t).decode("utf-8", errors="replace")
