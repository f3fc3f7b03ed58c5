"""SimpleLlama: Llama 3.x from first principles, readable PyTorch that loads real checkpoints.

The model core is flat, one file per notebook concept: config, norm, rope, attention, ffn, kv_cache,
model. Around it: tokenizer/ and checkpoint/ (packages), chat_format (+ chat_template,
tool_calls), sampling, generation (``Llama``), parallel (tensor parallelism), devices, errors, cli;
diagram draws the architecture.
``from simplellama import Llama`` loads only what that name needs (names are resolved on first use,
so ``simplellama --version`` stays instant).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "ModelArgs": "config", "PRESETS": "config", "preset": "config",
    "RMSNorm": "norm", "FeedForward": "ffn", "KVCache": "kv_cache", "Attention": "attention",
    "apply_rotary_emb": "rope", "hf_to_meta_qk": "rope", "meta_to_hf_qk": "rope",
    "precompute_freqs_cis": "rope", "rope_frequencies": "rope",
    "Transformer": "model", "TransformerBlock": "model",
    "Tokenizer": "tokenizer", "SentencePieceTokenizer": "tokenizer",
    "ByteLevelBPETokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "ChatFormat": "chat_format", "ChatFormatError": "errors", "ChatTemplate": "chat_template",
    "UnsafeTemplateError": "chat_template", "Dialog": "chat_format",
    "Checkpoint": "checkpoint", "convert": "checkpoint", "default_model_path": "checkpoint",
    "detect_format": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "read_header": "checkpoint", "save_hf": "checkpoint", "save_meta": "checkpoint",
    "parallelize": "checkpoint.sharded", "Llama": "generation",
    "SimpleLlamaError": "errors", "ModelArgsError": "errors", "RopeError": "errors",
    "KVCacheError": "errors", "ModelError": "errors", "TokenizerError": "errors",
    "CheckpointError": "errors", "ParallelError": "errors", "DeviceError": "errors",
    "GenerationError": "errors", "architecture_diagram": "diagram",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'simplellama' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
