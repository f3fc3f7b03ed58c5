"""Bytes of a Llama's weights per storage format: what RAM holds, and what one decode step reads.

Per (N, K) linear layer, in the layouts of ``quantize.py`` (scales and zeros stored in bf16;
``checkpoint.quantized.layer_bytes``, which the loader's memory check uses too)::

    float32  4 N K        bfloat16  2 N K
    int8     N K + 2 N            (one scale per output row)
    int4     N K / 2 + 4 N K / g  (a scale and a zero per group of g inputs)

A decode step multiplies one token by every linear layer (the output projection included) and reads
each weight once, so it reads the linear layers plus the norms; the embedding table is only looked
up (one row per token). The table stays float under int8/int4 (``quantize_model`` keeps it; a tied
model's output projection is quantized from it), so RAM holds it in ``embedding_dtype`` beside the
quantized output. Shapes come from ``checkpoint.keys.module_shapes``, the loaders' own table.
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint.keys import LAYER_WEIGHTS, module_shapes
from .checkpoint.quantized import layer_bytes
from .config import ModelArgs, preset
from .errors import SimpleLlamaError

__all__ = [
    "FORMATS",
    "linear_bytes",
    "weight_bytes",
    "decode_bytes",
    "model_bytes",
    "model_decode_bytes",
    "ram_table",
    "format_ram_table",
]

FORMATS = ("float32", "bfloat16", "int8", "int4")
_FLOAT = {"float32": 4, "bfloat16": 2}


def linear_bytes(N: int, K: int, fmt: str, group_size: int = 32) -> int:
    """Bytes of one (N, K) linear weight stored as ``fmt`` (one of ``FORMATS``)."""
    if fmt in _FLOAT:
        return layer_bytes("float", N, K, group_size, _FLOAT[fmt])
    if fmt in ("int8", "int4"):
        return layer_bytes(fmt, N, K, group_size, 0)
    raise SimpleLlamaError(f"linear_bytes: fmt must be one of {FORMATS}, found {fmt!r}")


def _parts(args: ModelArgs, fmt: str, group_size: int, norm_bytes: int) -> dict[str, int]:
    shapes = module_shapes(args)
    per_layer = sum(
        linear_bytes(*shapes[m], fmt, group_size) for m in LAYER_WEIGHTS if len(shapes[m]) == 2
    )
    norms = (2 * args.n_layers + 1) * args.dim * norm_bytes
    return {
        "layers": args.n_layers * per_layer,
        "output": linear_bytes(*shapes["output"], fmt, group_size),
        "norms": norms,
    }


def weight_bytes(
    args: ModelArgs, fmt: str, group_size: int = 32, embedding_dtype: torch.dtype | None = None
) -> int:
    """Bytes of all weights in RAM with every linear layer stored as ``fmt``.

    Float formats: every tensor in that dtype (a tied table counted once: ``4 x num_parameters``
    in float32). int8 / int4: linear layers quantized, embedding table and norms in
    ``embedding_dtype`` (default float32: the model's dtype on a CPU unless ``--dtype`` says).
    """
    if fmt in _FLOAT:
        emb_bytes = _FLOAT[fmt]
    else:
        emb_bytes = (embedding_dtype or torch.float32).itemsize
    parts = _parts(args, fmt, group_size, emb_bytes)
    emb = args.vocab_size * args.dim * emb_bytes
    if fmt in _FLOAT and args.tie_word_embeddings:
        emb = 0  # the output projection is the table
    return sum(parts.values()) + emb


def decode_bytes(args: ModelArgs, fmt: str, group_size: int = 32, norm_bytes: int = 4) -> int:
    """Weight bytes one decode step reads: every linear layer (output included) and the norms."""
    return sum(_parts(args, fmt, group_size, norm_bytes).values())


def _tensors(model: nn.Module, skip: str | None = None) -> dict[int, int]:
    """{storage address: bytes} of the parameters and buffers of ``model`` (KV caches left out)."""
    out = {}
    for name, module in model.named_modules():
        if name.endswith(".cache") or (skip and (name == skip or name.startswith(skip + "."))):
            continue
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            out[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return out


def model_bytes(model: nn.Module) -> int:
    """Bytes of a built model's weights, counted from its tensors (shared tensors once)."""
    return sum(_tensors(model).values())


def model_decode_bytes(model: nn.Module) -> int:
    """Bytes a built ``Transformer`` reads per decode step: its tensors except the embedding
    table (looked up, not multiplied), unless the output projection shares it."""
    kept = _tensors(model, skip="tok_embeddings")
    return sum(kept.values())


# (name, preset) of the table in the README; parameter counts from Meta's model cards
RAM_MODELS = (
    ("Llama 3.2 1B", "llama3.2-1b"),
    ("Llama 3.2 3B", "llama3.2-3b"),
    ("Llama 3.1 8B", "llama3.1-8b"),
    ("Llama 3.1 70B", "llama3.1-70b"),
)


def ram_table(group_size: int = 32) -> list[tuple[str, dict[str, int]]]:
    """[(model, {format: weight bytes})] for the README's RAM table (weights only, no KV cache)."""
    return [
        (name, {fmt: weight_bytes(preset(key), fmt, group_size) for fmt in FORMATS})
        for name, key in RAM_MODELS
    ]


def format_ram_table(group_size: int = 32) -> str:
    """``ram_table`` as the README's markdown table, GiB of weights per format."""
    head = "| model | params | " + " | ".join(FORMATS) + " |"
    lines = [head, "|---|---|" + "---|" * len(FORMATS)]
    for (name, key), (_, by_fmt) in zip(RAM_MODELS, ram_table(group_size)):
        cells = [f"{by_fmt[f] / 2**30:.1f} GiB" for f in FORMATS]
        lines.append(
            f"| {name} | {preset(key).num_parameters() / 1e9:.2f}B | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)
