"""Tiny random checkpoints for tests, written the way their real producers write them.

* :func:`write_meta` - ``params.json`` + ``consolidated.NN.pth`` split over N model-parallel ranks exactly
  as fairscale lays them out (``llama_models/llama3/model.py`` layer types): column-parallel weights
  (wq, wk, wv, w1, w3, output) and the vocab-parallel embedding split dim 0, row-parallel weights (wo, w2)
  split dim 1, norms replicated; with more ranks than kv heads each kv head is repeated on N/K
  consecutive ranks (``llama_models/checkpoint.py: reshard_mp``).
* :func:`write_hf` - transformers' own ``LlamaForCausalLM.save_pretrained``.
* :func:`write_gguf` - ``gguf.GGUFWriter`` with llama.cpp's names and q/k rows in Meta order (llama.cpp's
  ``convert_hf_to_gguf.py`` permutes HF rows back), tensors stored as F32/F16/Q8_0/... .

Shared by other helpers' tests: ``from tests.ckpt_factory import write_meta`` (or ``ckpt_factory``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simplellama.config import ModelArgs

__all__ = ["TINY", "tiny_args", "random_state_dict", "shard_state_dict", "write_meta", "write_hf", "write_gguf"]

# Small enough to be instant, big enough for GQA (H=4, K=2), Q8_0 blocks (rows of 32) and RoPE (Dh=16).
TINY = dict(
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    vocab_size=96,
    ffn_hidden_dim=96,
    norm_eps=1e-5,
    rope_theta=10000.0,
    max_seq_len=64,
)


def tiny_args(**overrides: Any) -> ModelArgs:
    return ModelArgs(**{**TINY, **overrides})


def random_state_dict(args: ModelArgs, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random weights with the shapes of ``Transformer(args).state_dict()`` (norms random too).

    Tied models (``args.tie_word_embeddings``) get no ``output.weight`` key, like Meta's 1B/3B files.
    """
    from simplellama.model import Transformer

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Transformer(args).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        scale = 0.2 if len(shape) == 2 else 0.1
        base = 1.0 if len(shape) == 1 else 0.0  # norms around 1
        sd[k] = (base + scale * torch.randn(shape, generator=g)).to(dtype)
    if args.tie_word_embeddings:
        del sd["output.weight"]
    return sd


def _split_dim(key: str) -> int | None:
    module = re.sub(r"^layers\.\d+\.", "", key.removesuffix(".weight"))
    if module in (
        "attention.wq",
        "attention.wk",
        "attention.wv",
        "feed_forward.w1",
        "feed_forward.w3",
        "output",
        "tok_embeddings",
    ):
        return 0
    if module in ("attention.wo", "feed_forward.w2"):
        return 1
    return None


def shard_state_dict(sd: dict[str, torch.Tensor], args: ModelArgs, n: int) -> list[dict[str, torch.Tensor]]:
    """Split a full state dict over ``n`` model-parallel ranks as fairscale stores them."""
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for k, t in sd.items():
        dim = _split_dim(k)
        if dim is None:
            parts = [t.clone() for _ in range(n)]
        elif k.endswith(("wk.weight", "wv.weight")) and n > args.n_kv_heads:
            r = n // args.n_kv_heads  # rank i holds kv head i // r
            heads = t.view(args.n_kv_heads, args.head_dim, -1)
            parts = [heads[i // r].clone() for i in range(n)]
        else:
            parts = [p.clone() for p in t.chunk(n, dim=dim)]
        for s, p in zip(shards, parts):
            s[k] = p
    return shards


def write_meta(
    d: Path,
    args: ModelArgs,
    n_shards: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    params: dict | None = None,
    sd: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Write a Meta checkpoint dir; returns the full (unsharded) state dict it holds."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    sd = random_state_dict(args, seed, dtype) if sd is None else sd
    (d / "params.json").write_text(json.dumps(args.to_params_json() if params is None else params))
    for i, shard in enumerate(shard_state_dict(sd, args, n_shards)):
        torch.save(shard, d / f"consolidated.{i:02d}.pth")
    return sd


def write_hf(d: Path, seed: int = 0, **config: Any) -> Any:
    """Save a random transformers ``LlamaForCausalLM`` (tiny defaults, ``config`` overrides); returns the model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    kw.update(config)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    with torch.no_grad():  # default init leaves norms at 1 and is tiny: make every weight matter
        for p in model.parameters():
            p.copy_((1.0 if p.ndim == 1 else 0.0) + (0.1 if p.ndim == 1 else 0.2) * torch.randn_like(p))
    model.save_pretrained(d)
    return model


def write_gguf(
    path: Path,
    args: ModelArgs,
    sd: dict[str, torch.Tensor],
    qtypes: dict[str, str] | None = None,
    default_qtype: str = "F32",
    architecture: str = "llama",
    extra_tensors: dict | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write ``sd`` (Meta names) as a llama.cpp GGUF; ``qtypes`` maps Meta names to a GGML type name;
    ``metadata`` maps keys to ``(value, gguf.GGUFValueType)`` written over (or beside) the usual ones."""
    import gguf

    w = gguf.GGUFWriter(str(path), architecture)
    w.add_block_count(args.n_layers)
    w.add_context_length(args.max_seq_len)
    w.add_embedding_length(args.dim)
    w.add_feed_forward_length(args.hidden_dim)
    w.add_head_count(args.n_heads)
    w.add_head_count_kv(args.n_kv_heads)
    w.add_layer_norm_rms_eps(args.norm_eps)
    w.add_rope_freq_base(args.rope_theta)
    w.add_rope_dimension_count(args.head_dim)
    # a byte-level vocabulary (transformers' GGUF loader reads the tokenizer too): bytes + filler tokens
    tokens = [f"<t{i}>" for i in range(args.vocab_size)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * args.vocab_size)
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    for key, (value, vtype) in (metadata or {}).items():
        sub = gguf.GGUFValueType.INT32 if isinstance(value, list) else None
        w.add_key_value(key, value, vtype, sub_type=sub)
    names = {"tok_embeddings": "token_embd", "norm": "output_norm", "output": "output"}
    layer = {
        "attention.wq": "attn_q",
        "attention.wk": "attn_k",
        "attention.wv": "attn_v",
        "attention.wo": "attn_output",
        "feed_forward.w1": "ffn_gate",
        "feed_forward.w3": "ffn_up",
        "feed_forward.w2": "ffn_down",
        "attention_norm": "attn_norm",
        "ffn_norm": "ffn_norm",
    }
    for k, t in sd.items():
        if m := re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", k):
            name = f"blk.{m.group(1)}.{layer[m.group(2)]}.weight"
        else:
            name = names[k.removesuffix(".weight")] + ".weight"
        arr = t.detach().float().numpy()
        qtype = gguf.GGMLQuantizationType[(qtypes or {}).get(k, default_qtype if arr.ndim == 2 else "F32")]
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    for name, arr in (extra_tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
