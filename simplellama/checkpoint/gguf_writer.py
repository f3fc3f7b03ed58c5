"""Writing GGUF files (``convert --to gguf``): what llama.cpp needs to run a Llama checkpoint.

llama.cpp's own converter (``convert_hf_to_gguf.py``) reads Hugging Face directories only; this
writer takes whatever ``load_checkpoint`` reads (Meta ``consolidated.*.pth``, HF, GGUF) and writes
what that converter writes for a ``LlamaForCausalLM``:

* metadata ``llama.*`` (context length, embedding length, block count, feed-forward length, head
  counts, RoPE base and dimensions, RMSNorm eps, vocabulary size) and ``general.file_type``;
* Llama 3.1/3.2 RoPE scaling as the tensor ``rope_freqs.weight`` of per-frequency divisors
  ``freq / scaled_freq`` (``LlamaModel.generate_extra_tensors``; llama.cpp has no ``llama3``
  scaling type and refuses unknown ``rope.scaling.type`` values);
* the tokenizer: a byte-level BPE vocabulary (``tokenizer.ggml.model = "gpt2"``) from
  ``tokenizer.json`` or from Meta's tiktoken ``tokenizer.model`` (tokens spelled with GPT-2's
  byte alphabet, merges derived from the ranks as transformers' ``TikTokenConverter`` and gguf-py's
  ``MistralVocab`` do), a SentencePiece vocabulary (``"llama"``: pieces, scores, types), or, from
  a GGUF, the source's ``tokenizer.*`` fields as they are; ``"none"`` when the source has none;
* q/k rows in Meta's interleaved order: the order every reader here returns and llama.cpp expects;
* tensor types: 1-D tensors (norms) and ``rope_freqs`` stay F32; 2-D weights get the out type.
  Q8_0/Q4_0 blocks hold 32 weights of a row (``gguf.quants.quantize``, llama.cpp's reference
  rounding); a row length not divisible by 32 falls back to F16, as llama.cpp's converter does.

The file is written to a temporary name beside ``dst`` and renamed when complete.

Shapes: V vocab, D model dim, Dh head dim; a (N, K) weight holds K-long rows.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import (
    GGML_QUANT_SIZES,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
    LlamaFileType,
    TokenType,
)

from LogRelay import get_relay

from ..config import ModelArgs
from ..errors import CheckpointError
from ..rope import apply_llama3_scaling
from ..tokenizer import PRETOKENIZERS, bytes_to_unicode, detect_tokenizer_format, load_tokenizer
from ..tokenizer.rules import splits_from_hf
from .common import Checkpoint
from .gguf import FastGGUFReader, gguf_metadata
from .keys import LAYER_KEY, LAYER_WEIGHTS, ROPE_FREQS_GGUF, TOP_WEIGHTS, expected_shapes

__all__ = [
    "OUT_TYPES",
    "LLAMA3_CHAT_TEMPLATE",
    "GGUFVocab",
    "check_gguf_target",
    "tensor_type",
    "rope_freqs",
    "tiktoken_merges",
    "vocab_for",
    "save_gguf",
]

log = get_relay("simplellama.checkpoint")

Q = GGMLQuantizationType
OUT_TYPES = ("F32", "F16", "Q8_0", "Q4_0")
_FILE_TYPE = {
    "F32": LlamaFileType.ALL_F32,
    "F16": LlamaFileType.MOSTLY_F16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": LlamaFileType.MOSTLY_Q4_0,
}
_F16_MAX = 65504.0  # larger magnitudes become inf in fp16
_QUANT_ROWS = 1 << 20  # weights quantized per step (a few MiB of numpy temporaries)

# Meta's chat layout (llama_models/llama3/chat_format.py, and chat_format.ChatFormat here) as a
# jinja template, for a tiktoken tokenizer.model, which carries none: llama.cpp recognises it as
# its "llama3" format. Tests check that it renders the same ids as ChatFormat.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{ '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + message['content'] + "
    "'<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# end-of-turn / end-of-message tokens llama.cpp stops on, found by their text
_EOT, _EOM = "<|eot_id|>", "<|eom_id|>"


def check_gguf_target(dst: str | os.PathLike, outtype: str) -> str:
    """The out type's canonical name (``"q8_0"`` -> ``"Q8_0"``); raises if it or ``dst`` cannot
    be written (called before a checkpoint is loaded, so a bad argument fails at once)."""
    name = str(outtype).upper()
    if name not in OUT_TYPES:
        raise CheckpointError(
            f"convert: outtype: expected one of {', '.join(OUT_TYPES)}, found {outtype!r}"
        )
    dst = Path(dst)
    if dst.exists():
        raise CheckpointError(f"{dst}: output exists (remove it or pick another name)")
    if dst.parent.exists() and not dst.parent.is_dir():
        raise CheckpointError(f"{dst.parent}: expected a directory for the output file")
    return name


def tensor_type(name: str, t: torch.Tensor, outtype: str) -> GGMLQuantizationType:
    """The GGUF type tensor ``name`` is stored in: 1-D -> F32, else ``outtype`` where it fits.

    Rows not divisible by the block size (32) fall back to F16 and weights beyond fp16's range
    to F32, logged (llama.cpp's converter falls back the same way).
    """
    if t.ndim == 1 or outtype == "F32":
        return Q.F32
    qtype = Q[outtype]
    block = GGML_QUANT_SIZES[qtype][0]
    if t.shape[-1] % block:
        log.warning(
            "%s: rows of %d weights are not a multiple of the %s block size %d: storing F16",
            name, t.shape[-1], outtype, block,
        )  # fmt: skip
        qtype = Q.F16
    if qtype == Q.F16 and (peak := float(max(map(abs, torch.aminmax(t.detach()))))) > _F16_MAX:
        log.warning(
            "%s: |w| up to %g does not fit fp16 (max %g): storing F32", name, peak, _F16_MAX
        )
        qtype = Q.F32
    return qtype


def _nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def _tensor_data(t: torch.Tensor, qtype: GGMLQuantizationType) -> np.ndarray:
    """``t`` in GGUF type ``qtype``: a float array, or (N, K / 32 * block bytes) uint8 blocks."""
    t = t.detach().cpu()
    if qtype == Q.F32:
        return t.float().contiguous().numpy()
    if qtype == Q.F16:
        return t.to(torch.float16).contiguous().numpy()
    rows = t.reshape(-1, t.shape[-1])  # (N, K)
    block, size = GGML_QUANT_SIZES[qtype]
    out = np.empty((rows.shape[0], rows.shape[1] // block * size), dtype=np.uint8)
    step = max(1, _QUANT_ROWS // rows.shape[1])
    for i in range(0, rows.shape[0], step):  # a few rows at a time: no full-size fp32 temporaries
        out[i : i + step] = gguf.quants.quantize(rows[i : i + step].float().numpy(), qtype)
    return out.reshape(*t.shape[:-1], -1)


def _gguf_name(key: str) -> str:
    """``layers.3.attention.wq.weight`` -> ``blk.3.attn_q.weight`` (the table in ``keys.py``)."""
    if m := LAYER_KEY.fullmatch(key):
        return f"blk.{m.group(1)}.{LAYER_WEIGHTS[m.group(2)].gguf}.weight"
    return TOP_WEIGHTS[key.removesuffix(".weight")].gguf + ".weight"


def rope_freqs(args: ModelArgs) -> torch.Tensor:
    """llama.cpp's ``rope_freqs.weight`` for Llama 3.1 scaling: ``freq / scaled_freq``, float32
    (Dh/2,): 1 for short waves, the factor for long ones, blended in between."""
    exps = torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim
    freqs = 1.0 / (args.rope_theta**exps)  # (Dh/2,)
    a = args
    scaled = apply_llama3_scaling(
        freqs, a.rope_scaling_factor, a.rope_low_freq_factor, a.rope_high_freq_factor,
        a.rope_original_max_seq_len,
    )  # fmt: skip
    if (a.rope_low_freq_factor, a.rope_high_freq_factor, a.rope_original_max_seq_len) != (
        1.0, 4.0, 8192,
    ):  # fmt: skip
        log.warning(
            "RoPE scaling low/high %g/%g, original context %d: llama.cpp reads it, but "
            "simplellama's GGUF reader recognises only Meta's 1/4/8192",
            a.rope_low_freq_factor, a.rope_high_freq_factor, a.rope_original_max_seq_len,
        )  # fmt: skip
    return (freqs / scaled).float()


# ---------------------------------------------------------------------------------------------
# the tokenizer
# ---------------------------------------------------------------------------------------------


@dataclass
class GGUFVocab:
    """The ``tokenizer.ggml.*`` fields of a GGUF file (``model = "none"``: no tokenizer)."""

    model: str = "none"
    pre: str | None = None
    tokens: list[str] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)  # bos, eos, eot, eom, unk, pad -> token id
    add_bos: bool | None = None
    add_eos: bool | None = None
    chat_template: str | None = None
    copied: dict[str, Any] = field(default_factory=dict)  # key -> ReaderField, from a GGUF source

    def write(self, w: gguf.GGUFWriter) -> None:
        """Add the fields to writer ``w``."""
        if self.copied:
            for key, f in self.copied.items():
                sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
                w.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
            return
        w.add_tokenizer_model(self.model)
        if self.model == "none":
            return
        if self.pre is not None:
            w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        w.add_token_types(self.types)
        if self.scores:
            w.add_token_scores(self.scores)
        if self.merges:
            w.add_token_merges(self.merges)
        for kind, token_id in self.ids.items():
            getattr(w, f"add_{kind}_token_id")(token_id)
        if self.add_bos is not None:
            w.add_add_bos_token(self.add_bos)
        if self.add_eos is not None:
            w.add_add_eos_token(self.add_eos)
        if self.chat_template:
            w.add_chat_template(self.chat_template)


def _pad(vocab: GGUFVocab, vocab_size: int, source: str) -> GGUFVocab:
    """Pad the token list to the embedding's rows with ``[PAD{i}]`` (UNUSED), as llama.cpp does;
    more tokens than rows is an error (llama.cpp would refuse the file)."""
    n = len(vocab.tokens)
    if n > vocab_size:
        raise CheckpointError(
            f"{source}: tokenizer has {n} tokens but the model's vocab_size is {vocab_size}"
        )
    vocab.tokens += [f"[PAD{i}]" for i in range(n, vocab_size)]
    vocab.types += [TokenType.UNUSED] * (vocab_size - n)
    if vocab.scores:
        vocab.scores += [-1000.0] * (vocab_size - n)
    for kind, text in (("eot", _EOT), ("eom", _EOM)):
        if text in vocab.tokens and vocab.types[vocab.tokens.index(text)] == TokenType.CONTROL:
            vocab.ids.setdefault(kind, vocab.tokens.index(text))
    return vocab


def tiktoken_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """BPE merges of a tiktoken rank table, as transformers' ``TikTokenConverter`` derives them.

    tiktoken keeps no merge list: a token is made by merging any two tokens that spell it. Every
    such split is a merge, ranked by the merged token's rank, then by the ranks of its two parts.
    (Replaying BPE on each token to find one split fails: Llama 3 has tokens such as ``.:.:``
    that BPE never reaches, yet they still split into two tokens.)
    """
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        pairs = [(a, b) for a, b in splits if a in ranks and b in ranks]
        merges += sorted(pairs, key=lambda ab: (ranks[ab[0]], ranks[ab[1]]))
    return merges


def _tiktoken_vocab(path: Path) -> GGUFVocab:
    """Meta's Llama 3 ``tokenizer.model``: byte-level tokens, derived merges, ``llama-bpe``."""
    tok = load_tokenizer(path)  # Tokenizer: tiktoken Encoding + Meta's special tokens
    enc, n_base = tok.model, tok.n_words - len(tok.special_tokens)
    ranks = {enc.decode_single_token_bytes(i): i for i in range(n_base)}  # rank == id
    byte_char = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(byte_char[x] for x in b)

    tokens = [spell(b) for b in ranks]
    tokens += sorted(tok.special_tokens, key=tok.special_tokens.get)
    types = [TokenType.NORMAL] * n_base + [TokenType.CONTROL] * len(tok.special_tokens)
    merges = [f"{spell(a)} {spell(b)}" for a, b in tiktoken_merges(ranks)]
    return GGUFVocab(
        "gpt2", "llama-bpe", tokens, types, merges,
        ids={"bos": tok.bos_id, "eos": tok.eos_id}, add_bos=True,
        chat_template=LLAMA3_CHAT_TEMPLATE,
    )  # fmt: skip


def _sentencepiece_vocab(path: Path) -> GGUFVocab:
    """A Llama 2 style SentencePiece model: pieces, scores, types (``_set_vocab_sentencepiece``)."""
    sp = load_tokenizer(path).sp_model
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        T = TokenType
        kinds = [(sp.is_unknown, T.UNKNOWN), (sp.is_control, T.CONTROL),
                 (sp.is_unused, T.UNUSED), (sp.is_byte, T.BYTE)]  # fmt: skip
        types.append(next((k for test, k in kinds if test(i)), T.NORMAL))
    ids = {k: v for k, v in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()),
                              ("pad", sp.pad_id())) if v >= 0}  # fmt: skip
    return GGUFVocab(
        "llama", "default", tokens, types, scores=scores, ids=ids, add_bos=True, add_eos=False
    )


def _pre_name(tok_json: dict, source: str) -> str:
    """The ``tokenizer.ggml.pre`` of a tokenizer.json pre-tokenizer (``rules.PRETOKENIZERS``)."""
    splits = tuple(splits_from_hf(tok_json.get("pre_tokenizer"), Path(source)))
    ignore = bool(tok_json["model"].get("ignore_merges", False))
    for name, rule in PRETOKENIZERS.items():
        if rule.splits == splits and rule.ignore_merges == ignore:
            return name
    raise CheckpointError(
        f"{source}: tokenizer.json pre_tokenizer matches none of llama.cpp's pre-tokenizers we "
        f"know ({', '.join(PRETOKENIZERS)}); found splits {list(splits)}"
    )


def _adds_bos(tok_json: dict, config: dict, bos: str | None) -> bool | None:
    """``add_bos_token`` from tokenizer_config.json, else from a ``TemplateProcessing`` post-
    processor that starts with the bos token (how Llama 3's tokenizer.json adds it)."""
    if isinstance(config.get("add_bos_token"), bool):
        return config["add_bos_token"]
    post = tok_json.get("post_processor") or {}
    for p in post.get("processors", [post]):
        if p.get("type") == "TemplateProcessing" and p.get("single"):
            return p["single"][0].get("SpecialToken", {}).get("id") == bos
    return None


def _hf_vocab(tok_json: dict, config: dict, template: str | None, source: str) -> GGUFVocab:
    """A byte-level BPE tokenizer.json (+ tokenizer_config.json), as llama.cpp's
    ``_set_vocab_gpt2`` writes it: added special tokens CONTROL, other added tokens USER_DEFINED."""
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise CheckpointError(
            f"{source}: tokenizer.json model: expected byte-level BPE, found "
            f"{model.get('type')!r}{' with byte_fallback' if model.get('byte_fallback') else ''}"
        )
    pre = _pre_name(tok_json, source)
    ids = dict(model["vocab"])
    kinds = {i: TokenType.NORMAL for i in ids.values()}
    for a in tok_json.get("added_tokens") or []:
        ids[a["content"]] = a["id"]
        kinds[a["id"]] = TokenType.CONTROL if a.get("special") else TokenType.USER_DEFINED
    n = max(ids.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [TokenType.UNUSED] * n
    for text, i in ids.items():
        tokens[i], types[i] = text, kinds[i]
    merges = [  # tokenizer.json >= 4.45 may hold pairs; a space inside a token is spelled U+0120
        m if isinstance(m, str) else " ".join(s.replace(" ", "\u0120") for s in m)
        for m in model.get("merges", [])
    ]
    special = {}
    for kind in ("bos", "eos", "unk", "pad"):
        text = config.get(f"{kind}_token")
        text = text.get("content") if isinstance(text, dict) else text
        if text is not None and text in ids:
            special[kind] = ids[text]
    bos = config.get("bos_token")
    bos = bos.get("content") if isinstance(bos, dict) else bos
    add_eos = config.get("add_eos_token") if isinstance(config.get("add_eos_token"), bool) else None
    return GGUFVocab(
        "gpt2", pre, tokens, types, merges, ids=special, add_bos=_adds_bos(tok_json, config, bos),
        add_eos=add_eos, chat_template=template,
    )  # fmt: skip


def vocab_for(ckpt: Checkpoint) -> GGUFVocab:
    """The GGUF tokenizer fields for ``ckpt``: copied from a GGUF source, else built from its
    byte-level tokenizer.json, else from its tokenizer.model (tiktoken or SentencePiece), else
    ``"none"``."""
    src = str(ckpt.path)
    if ckpt.format == "gguf":
        reader = FastGGUFReader(ckpt.path)
        return GGUFVocab(
            copied={k: f for k, f in reader.fields.items() if k.startswith("tokenizer.")}
        )
    tok_json = ckpt.tokenizer_json
    spm_json = tok_json is not None and (tok_json.get("model") or {}).get("byte_fallback")
    if tok_json is not None and not (spm_json and ckpt.tokenizer_model is not None):
        vocab = _hf_vocab(tok_json, ckpt.tokenizer_config or {}, ckpt.chat_template, src)
    elif ckpt.tokenizer_model is not None:  # (a Llama 2 HF dir: its SentencePiece file)
        kind = detect_tokenizer_format(ckpt.tokenizer_model)
        if kind == "tiktoken":
            vocab = _tiktoken_vocab(ckpt.tokenizer_model)
        elif kind == "sentencepiece":
            vocab = _sentencepiece_vocab(ckpt.tokenizer_model)
        else:
            raise CheckpointError(
                f"{ckpt.tokenizer_model}: expected a tiktoken or SentencePiece tokenizer.model, "
                f"found {kind}"
            )
        if ckpt.chat_template:
            vocab.chat_template = ckpt.chat_template
    else:
        log.warning(
            "%s: no tokenizer found: writing tokenizer.ggml.model = 'none' (llama.cpp then takes "
            "token ids only)", src,
        )  # fmt: skip
        return GGUFVocab()
    return _pad(vocab, ckpt.args.vocab_size, src)


# ---------------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------------


def _context_length(ckpt: Checkpoint) -> int:
    """``llama.context_length``: the source's own (GGUF metadata, HF ``max_position_embeddings``);
    Meta's params.json records none, so the published one: 131072 for Llama 3.1/3.2 (scaled
    RoPE), 8192 for Llama 3 (128256 tokens), else ``max_seq_len``."""
    a = ckpt.args
    if ckpt.format == "gguf":
        meta = gguf_metadata(FastGGUFReader(ckpt.path))
        found = meta.get(Keys.LLM.CONTEXT_LENGTH.format(arch="llama"))
    elif ckpt.format == "hf":
        found = json.loads((ckpt.path / "config.json").read_text()).get("max_position_embeddings")
    else:
        found = 131072 if a.use_scaled_rope else 8192 if a.vocab_size == 128256 else None
    return int(found) if found else a.max_seq_len


def _source_name(ckpt: Checkpoint) -> str:
    p = ckpt.path
    return "llama" if p is None else p.stem if p.is_file() else p.name


def _check_space(dst: Path, n_bytes: int) -> None:
    free = shutil.disk_usage(dst.parent).free
    if n_bytes > free:
        raise CheckpointError(
            f"{dst}: the GGUF file needs {n_bytes / 1e9:.2f} GB but {dst.parent} has "
            f"{free / 1e9:.2f} GB free"
        )


def save_gguf(
    ckpt: Checkpoint,
    dst: str | os.PathLike,
    outtype: str = "F16",
    *,
    context_length: int | None = None,
    name: str | None = None,
) -> Path:
    """Write ``ckpt`` as a llama.cpp GGUF file.

    Args:
        ckpt: a checkpoint as ``load_checkpoint`` returns it (Meta names, q/k in Meta's order).
        dst: the .gguf file to write; it must not exist.
        outtype: F32, F16, Q8_0 or Q4_0 for the 2-D weights (norms stay F32).
        context_length: ``llama.context_length`` (default: the source's, see ``_context_length``).
        name: ``general.name`` (default: the source's file or directory name).
    """
    outtype, dst = check_gguf_target(dst, outtype), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    args, sd = ckpt.args, ckpt.state_dict
    extra = {ROPE_FREQS_GGUF: rope_freqs(args)} if args.use_scaled_rope else {}
    # in expected_shapes' order (embedding, layer by layer, norm, output), whatever the source's
    tensors = {**extra, **{_gguf_name(k): sd[k] for k in expected_shapes(args)}}
    if args.tie_word_embeddings:
        del tensors[_gguf_name("output.weight")]  # llama.cpp ties a missing output to token_embd
    plan = {n: tensor_type(n, t, outtype) for n, t in tensors.items()}
    n_bytes = sum(_nbytes(tuple(t.shape), plan[n]) for n, t in tensors.items())
    _check_space(dst, n_bytes)
    vocab = vocab_for(ckpt)

    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    w = gguf.GGUFWriter(tmp, "llama")
    try:
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(name or _source_name(ckpt))
        w.add_file_type(_FILE_TYPE[outtype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_vocab_size(args.vocab_size)
        w.add_context_length(context_length or _context_length(ckpt))
        w.add_embedding_length(args.dim)
        w.add_block_count(args.n_layers)
        w.add_feed_forward_length(args.hidden_dim)
        w.add_head_count(args.n_heads)
        w.add_head_count_kv(args.n_kv_heads)
        w.add_rope_freq_base(args.rope_theta)
        w.add_rope_dimension_count(args.head_dim)
        w.add_layer_norm_rms_eps(args.norm_eps)
        vocab.write(w)
        for n, t in tensors.items():  # sizes first: the header lists every tensor's offset
            w.add_tensor_info(n, tuple(t.shape), np.dtype(np.float32), _nbytes(t.shape, plan[n]),
                              raw_dtype=plan[n])  # fmt: skip
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        with log.busy(f"writing {dst.name} ({outtype})", total=len(tensors)) as bar:
            for n, t in tensors.items():  # one tensor converted at a time
                w.write_tensor_data(_tensor_data(t, plan[n]))
                bar.update()
        w.close()
        os.replace(tmp, dst)
    except BaseException:
        w.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    kinds = ", ".join(
        f"{sum(q == k for q in plan.values())} {k.name}" for k in sorted(set(plan.values()))
    )
    log.info("wrote GGUF %s: %.1f MB, tensors %s", dst, dst.stat().st_size / 1e6, kinds)
    return dst
