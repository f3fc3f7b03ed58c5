"""One table of weight names and shard dimensions, used by every reader, writer and per-rank loader.

The model's parameter names are Meta's (``layers.3.attention.wq.weight``), so a
``consolidated.00.pth`` loads with ``strict=True``; every other format is translated here, once:

* Hugging Face names (``model.layers.3.self_attn.q_proj.weight``; transformers' conversion script);
* GGUF names (``blk.3.attn_q.weight``), taken from the ``gguf`` package's ``TENSOR_NAMES``;
* the split dimension of each weight over model-parallel ranks, which is also how Meta's multi-file
  checkpoints are cut (fairscale layer types in ``llama_models/llama3/model.py``):
  ``ColumnParallelLinear`` (wq, wk, wv, w1, w3, output) splits its output features (dim 0),
  ``RowParallelLinear`` (wo, w2) its input features (dim 1), ``VocabParallelEmbedding`` the
  vocabulary (dim 0; Llama 2's ``ParallelEmbedding`` split dim 1, recognised by shape); norms are
  replicated (None). Meta's ``llama_models/checkpoint.py``
  (``_WEIGHT_ROW_KEY``/``_WEIGHT_COLUMN_KEY``)
  uses the same table.

Shape glossary: V vocab, D model dim, H query heads, K kv heads, Dh head dim, F ffn dim.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gguf import MODEL_TENSOR, TENSOR_NAMES

from ..config import ModelArgs

__all__ = [
    "WeightName",
    "LAYER_WEIGHTS",
    "TOP_WEIGHTS",
    "LAYER_KEY",
    "ROPE_FREQS_GGUF",
    "module_of",
    "shard_dim",
    "module_shapes",
    "expected_shape",
    "expected_shapes",
    "hf_to_meta_name",
    "meta_to_hf_name",
    "gguf_to_meta_name",
]


class WeightName(NamedTuple):
    """One weight's name in each format and its split dimension (None: replicated on every rank)."""

    hf: str
    gguf: str
    shard_dim: int | None


def _gguf(t: MODEL_TENSOR) -> str:
    return TENSOR_NAMES[t].removeprefix("blk.{bid}.")  # "blk.{bid}.attn_q" -> "attn_q"


T = MODEL_TENSOR
# Meta module name inside ``layers.N.`` -> HF name inside ``model.layers.N.``, GGUF name inside
# ``blk.N.``
LAYER_WEIGHTS: dict[str, WeightName] = {
    "attention.wq": WeightName("self_attn.q_proj", _gguf(T.ATTN_Q), 0),
    "attention.wk": WeightName("self_attn.k_proj", _gguf(T.ATTN_K), 0),
    "attention.wv": WeightName("self_attn.v_proj", _gguf(T.ATTN_V), 0),
    "attention.wo": WeightName("self_attn.o_proj", _gguf(T.ATTN_OUT), 1),
    "feed_forward.w1": WeightName("mlp.gate_proj", _gguf(T.FFN_GATE), 0),
    "feed_forward.w2": WeightName("mlp.down_proj", _gguf(T.FFN_DOWN), 1),
    "feed_forward.w3": WeightName("mlp.up_proj", _gguf(T.FFN_UP), 0),
    "attention_norm": WeightName("input_layernorm", _gguf(T.ATTN_NORM), None),
    "ffn_norm": WeightName("post_attention_layernorm", _gguf(T.FFN_NORM), None),
}
# Meta module names outside the layers
TOP_WEIGHTS: dict[str, WeightName] = {
    "tok_embeddings": WeightName("model.embed_tokens", _gguf(T.TOKEN_EMBD), 0),
    "norm": WeightName("model.norm", _gguf(T.OUTPUT_NORM), None),
    "output": WeightName("lm_head", _gguf(T.OUTPUT), 0),
}
ROPE_FREQS_GGUF = TENSOR_NAMES[T.ROPE_FREQS] + ".weight"  # llama.cpp's per-frequency RoPE divisors
LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)\.weight")  # Meta name of a per-layer weight

_HF_LAYER = {w.hf: m for m, w in LAYER_WEIGHTS.items()}
_HF_TOP = {w.hf: m for m, w in TOP_WEIGHTS.items()}
_GGUF_LAYER = {w.gguf: m for m, w in LAYER_WEIGHTS.items()}
_GGUF_TOP = {w.gguf: m for m, w in TOP_WEIGHTS.items()}


def module_of(key: str) -> str:
    """``layers.3.attention.wq.weight`` -> ``attention.wq``; ``output.weight`` -> ``output``."""
    m = LAYER_KEY.fullmatch(key)
    return m.group(2) if m else key.removesuffix(".weight")


def shard_dim(key: str) -> int | None:
    """The dimension along which the Meta-named weight ``key`` is split over ranks (None:
    replicated)."""
    module = module_of(key)
    entry = LAYER_WEIGHTS.get(module) or TOP_WEIGHTS.get(module)
    return None if entry is None else entry.shard_dim


def module_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Shape of each Meta module's weight (per-layer modules without the ``layers.N.`` prefix)."""
    D, V, F, Dh = args.dim, args.vocab_size, args.hidden_dim, args.head_dim
    H, K = args.n_heads, args.n_kv_heads
    return {
        "tok_embeddings": (V, D),
        "attention.wq": (H * Dh, D),
        "attention.wk": (K * Dh, D),
        "attention.wv": (K * Dh, D),
        "attention.wo": (D, H * Dh),
        "feed_forward.w1": (F, D),
        "feed_forward.w2": (D, F),
        "feed_forward.w3": (F, D),
        "attention_norm": (D,),
        "ffn_norm": (D,),
        "norm": (D,),
        "output": (V, D),
    }


def expected_shape(key: str, args: ModelArgs) -> tuple[int, ...] | None:
    """The shape of the Meta-named weight ``key`` under ``args`` (None: not a weight of the model),
    found without listing every key (a config may claim billions of layers)."""
    m = LAYER_KEY.fullmatch(key)
    if m is not None:
        layer_ok = int(m.group(1)) < args.n_layers and m.group(1) == str(int(m.group(1)))
        return module_shapes(args)[m.group(2)] if layer_ok and m.group(2) in LAYER_WEIGHTS else None
    module = key.removesuffix(".weight")
    return (
        module_shapes(args)[module] if key.endswith(".weight") and module in TOP_WEIGHTS else None
    )


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every key of a Meta-named state dict and its shape, computed from ``args``."""
    shapes = module_shapes(args)
    out = {"tok_embeddings.weight": shapes["tok_embeddings"]}
    for i in range(args.n_layers):
        out.update({f"layers.{i}.{m}.weight": shapes[m] for m in LAYER_WEIGHTS if m in shapes})
    out["norm.weight"], out["output.weight"] = shapes["norm"], shapes["output"]
    return out


def hf_to_meta_name(name: str) -> str | None:
    """``model.layers.3.mlp.gate_proj.weight`` -> ``layers.3.feed_forward.w1.weight`` (None if
    unknown)."""
    if m := re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name):
        meta = _HF_LAYER.get(m.group(2))
        return None if meta is None else f"layers.{m.group(1)}.{meta}.weight"
    meta = _HF_TOP.get(name.removesuffix(".weight"))
    return None if meta is None or not name.endswith(".weight") else meta + ".weight"


def meta_to_hf_name(name: str) -> str:
    """``layers.3.feed_forward.w1.weight`` -> ``model.layers.3.mlp.gate_proj.weight``."""
    if m := LAYER_KEY.fullmatch(name):
        return f"model.layers.{m.group(1)}.{LAYER_WEIGHTS[m.group(2)].hf}.weight"
    return TOP_WEIGHTS[name.removesuffix(".weight")].hf + ".weight"


def gguf_to_meta_name(name: str) -> str | None:
    """``blk.3.ffn_gate.weight`` -> ``layers.3.feed_forward.w1.weight`` (None if not a Llama
    weight)."""
    if m := re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name):
        meta = _GGUF_LAYER.get(m.group(2))
        return None if meta is None else f"layers.{m.group(1)}.{meta}.weight"
    if m := re.fullmatch(r"(\w+)\.weight", name):
        meta = _GGUF_TOP.get(m.group(1))
        return None if meta is None else meta + ".weight"
    return None
