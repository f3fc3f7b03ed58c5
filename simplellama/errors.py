"""SimpleLlama's errors: one base class, one subclass per place a request can fail.

Every message names the file, field or argument at fault and what was expected versus found, so the
command line shows it as one line (``simplellama: error: ...``). ``except SimpleLlamaError`` catches
them all; each also is a ``ValueError`` (bad input), as before the family had a common base.
"""

from __future__ import annotations

__all__ = [
    "SimpleLlamaError",
    "ModelArgsError",
    "RopeError",
    "KVCacheError",
    "ModelError",
    "TokenizerError",
    "CheckpointError",
    "ParallelError",
    "DeviceError",
    "GenerationError",
    "ChatFormatError",
    "InsufficientMemoryError",
]


class SimpleLlamaError(ValueError):
    """Base of every error SimpleLlama raises on purpose."""


class ModelArgsError(SimpleLlamaError):
    """A model configuration (``ModelArgs``, params.json) is invalid; names the field and the
    file."""


class RopeError(SimpleLlamaError):
    """Bad RoPE input: names the argument and the expected versus found shape."""


class KVCacheError(SimpleLlamaError):
    """A cache write does not fit: names the argument, the limit and the value found."""


class ModelError(SimpleLlamaError):
    """Bad input to ``Transformer.forward``: names the argument, expected versus found."""


class TokenizerError(SimpleLlamaError):
    """A tokenizer file that cannot be read, or a request the tokenizer cannot honour."""


class CheckpointError(SimpleLlamaError):
    """A checkpoint cannot be read or written; names the file/key, expected versus found."""


class ParallelError(SimpleLlamaError):
    """A model or checkpoint cannot be split over the requested ranks; says why."""


class DeviceError(SimpleLlamaError):
    """A device or dtype that is unknown or not available on this machine."""


class GenerationError(SimpleLlamaError):
    """A generation request cannot be served (bad sampling setting, empty prompt, too long, ...)."""


class ChatFormatError(SimpleLlamaError):
    """A dialog or chat template that cannot be turned into a prompt."""


class InsufficientMemoryError(SimpleLlamaError):
    """An allocation (weights, KV cache, RoPE table) that would not fit in the memory available:
    refused before it starts, with both numbers and what to lower."""
