"""Random numbers: a seeded ``Generator`` and the default one (``manual_seed``), as torch spells them.

Numbers come from Python's ``random.Random`` (Mersenne Twister), so ``manual_seed(0)`` makes runs
repeatable; they are *not* the numbers torch draws for the same seed.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["Generator", "default_generator", "manual_seed", "python_rng"]


class Generator:
    """A seeded source of random numbers (``tinytorch.Generator().manual_seed(42)``)."""

    def __init__(self, device: str = "cpu") -> None:
        self.rng = random.Random(0)
        self._seed = 0

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self.rng.seed(self._seed)
        return self

    def initial_seed(self) -> int:
        return self._seed


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (used when no ``generator=`` is passed)."""
    return default_generator.manual_seed(seed)


def python_rng(generator: Any = None) -> random.Random:
    """The ``random.Random`` behind a ``Generator``; a ``random.Random`` as is; None: the default's."""
    generator = generator or default_generator
    return getattr(generator, "rng", generator)
