"""The embedded SmolLM2 model as the tests use it: fp32 on the CPU, torch on one thread.

One thread because `make test` runs 2 pytest workers on 2 cores, and oversubscribed threads make every
matmul wait for a descheduled peer (measured 10x slower decode steps). Use it in a module fixture::

    @pytest.fixture(scope="module")
    def llama():
        yield from one_thread_llama(max_seq_len=256)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from simplellama.generation import Llama

__all__ = ["one_thread_llama"]


def one_thread_llama(**build_kw: Any) -> Iterator[Llama]:
    """Yield ``Llama.build(dtype="float32", device="cpu", **build_kw)`` with torch on one thread until resumed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Llama.build(dtype="float32", device="cpu", **build_kw)
    finally:
        torch.set_num_threads(threads)
