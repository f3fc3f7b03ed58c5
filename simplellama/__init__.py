"""SimpleLlama: Llama 3.x from first principles, readable PyTorch that loads real checkpoints.

Modules (one concept each): config, norm, rope, attention, ffn, kv_cache, model, tokenizer,
chat_format, checkpoint, generation, cli.
"""

from .attention import Attention
from .chat_format import ChatFormat, ChatFormatError, ChatTemplate, UnsafeTemplateError
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    convert,
    default_model_path,
    detect_format,
    load_checkpoint,
    load_model,
    save_hf,
    save_meta,
)
from .config import PRESETS, ConfigError, ModelArgs, preset
from .ffn import FeedForward
from .generation import Dialog, GenerationError, Llama
from .kv_cache import KVCache, KVCacheError
from .model import ModelError, Transformer, TransformerBlock
from .norm import RMSNorm
from .parallel import ParallelError, parallelize
from .parallel_load import load_model_parallel
from .rope import RopeError, apply_rotary_emb, hf_to_meta_qk, meta_to_hf_qk, precompute_freqs_cis, rope_frequencies
from .tokenizer import ByteLevelBPETokenizer, SentencePieceTokenizer, Tokenizer, TokenizerError, load_tokenizer

__all__ = ["ConfigError", "ModelArgs", "PRESETS", "preset"]
__all__ += ["Attention", "FeedForward", "KVCache", "KVCacheError", "ModelError", "RMSNorm", "RopeError", "Transformer"]
__all__ += ["TransformerBlock", "apply_rotary_emb", "hf_to_meta_qk", "meta_to_hf_qk", "precompute_freqs_cis"]
__all__ += ["rope_frequencies"]
__all__ += ["Dialog", "GenerationError", "Llama"]
__all__ += ["ByteLevelBPETokenizer", "SentencePieceTokenizer", "Tokenizer", "TokenizerError", "load_tokenizer"]
__all__ += ["ChatFormat", "ChatFormatError", "ChatTemplate", "UnsafeTemplateError"]
__all__ += ["Checkpoint", "CheckpointError", "convert", "default_model_path", "detect_format", "load_checkpoint"]
__all__ += ["load_model", "save_hf", "save_meta"]
__all__ += ["ParallelError", "load_model_parallel", "parallelize"]
