"""SimpleLlama: Llama 3.x from first principles, readable PyTorch that loads real checkpoints.

Modules (one concept each): config, norm, rope, attention, ffn, kv_cache, model, tokenizer,
chat_format, checkpoint, generation, cli.
"""

from .config import PRESETS, ConfigError, ModelArgs, preset

__all__ = ["ConfigError", "ModelArgs", "PRESETS", "preset"]
