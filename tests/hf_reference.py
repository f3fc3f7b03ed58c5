"""transformers' ``LlamaConfig`` for a ``ModelArgs``: the reference side of the model tests.

The mapping is transformers' own (``convert_llama_weights_to_hf.py``): dim -> hidden_size, n_layers ->
num_hidden_layers, FFN size -> intermediate_size, RoPE scaling -> ``rope_parameters`` with rope_type llama3.
"""

from __future__ import annotations

from transformers import LlamaConfig

from simplellama.config import ModelArgs

__all__ = ["hf_rope_parameters", "hf_llama_config"]


def hf_rope_parameters(args: ModelArgs) -> dict:
    """``rope_parameters`` of the transformers config equivalent to ``args``."""
    if not args.use_scaled_rope:
        return {"rope_type": "default", "rope_theta": args.rope_theta}
    return {"rope_type": "llama3", "rope_theta": args.rope_theta, "factor": args.rope_scaling_factor,
            "low_freq_factor": args.rope_low_freq_factor, "high_freq_factor": args.rope_high_freq_factor,
            "original_max_position_embeddings": args.rope_original_max_seq_len}  # fmt: skip


def hf_llama_config(args: ModelArgs, rope_parameters: dict | None = None) -> LlamaConfig:
    """``LlamaConfig`` with ``args``' sizes and eager attention; ``rope_parameters`` default from ``args``."""
    cfg = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.hidden_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        rms_norm_eps=args.norm_eps,
        max_position_embeddings=args.max_seq_len,
        rope_parameters=dict(hf_rope_parameters(args) if rope_parameters is None else rope_parameters),
        tie_word_embeddings=args.tie_word_embeddings,
    )
    cfg._attn_implementation = "eager"
    return cfg
