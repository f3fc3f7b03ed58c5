"""The peers of ``make bench`` as :class:`simplellama.bench.Side` objects: transformers and llama.cpp.

Both run the same token ids as simplellama (no tokenizer of their own involved), on the same thread
count, one forward per call with last-position logits, greedy top-1 taken by the bench:

- transformers: ``AutoModelForCausalLM`` on the embedded GGUF (dequantized by transformers' GGUF
  loader) in fp32, its own ``DynamicCache``;
- llama.cpp (``llama-cpp-python``): the same GGUF file, its blocks as they are (Q4_1, Q8_0), f16 KV
  cache (its default), logits read with ``llama_get_logits_ith`` after each ``eval``. Perplexity
  uses a second context that keeps every position's logits (``logits_all``), so the timed context
  computes the last position's only, as ours does.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import torch

from simplellama.assets import default_model_path
from simplellama.bench import Side

__all__ = ["LLAMA_CPP_VERSION", "llama_cpp_missing", "transformers_side", "llama_cpp_side"]

LLAMA_CPP_VERSION = "0.3.36"  # pyproject's bench extra pins the same


def llama_cpp_missing() -> str | None:
    """Why the llama.cpp row cannot run here (None: it can)."""
    try:
        import llama_cpp
    except ImportError as e:
        return (
            f"llama.cpp row skipped: llama_cpp (llama-cpp-python=={LLAMA_CPP_VERSION}) does not "
            f"import ({e}); `make bench` installs it with the bench extra"
        )
    if llama_cpp.__version__ != LLAMA_CPP_VERSION:
        return f"llama.cpp row skipped: expected llama-cpp-python {LLAMA_CPP_VERSION}, found {llama_cpp.__version__}"
    return None


def transformers_side(row: str) -> Side:
    """transformers in fp32 on the embedded GGUF."""
    from transformers import AutoModelForCausalLM

    path = default_model_path()
    t0 = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    hf.eval()
    load_s = time.perf_counter() - t0
    cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    state: dict[str, Any] = {"past": None}

    def reset(positions: int) -> None:  # transformers grows its DynamicCache itself
        state["past"] = None

    def forward(ids: list[int], pos: int) -> torch.Tensor:
        out = hf(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1, **{cache_arg: state["past"]})
        state["past"] = getattr(out, cache_arg)
        return out.logits[0, -1]  # (V,)

    def logits(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()  # (T, V)

    return Side(reset, forward, logits, load_s)


def llama_cpp_side(row: str) -> Side:
    """llama.cpp on the embedded GGUF file, as llama-cpp-python runs it."""
    import llama_cpp

    path, threads = str(default_model_path()), torch.get_num_threads()
    kw = dict(n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    t0 = time.perf_counter()
    ll = llama_cpp.Llama(path, n_ctx=1024, **kw)
    load_s = time.perf_counter() - t0
    n_vocab = ll.n_vocab()

    def forward(ids: list[int], pos: int) -> torch.Tensor:
        if pos != ll.n_tokens:
            raise ValueError(f"llama.cpp side: expected position {ll.n_tokens}, found {pos}")
        ll.eval(ids)
        ptr = llama_cpp.llama_get_logits_ith(ll.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy())  # (V,)

    def logits(ids: list[int]) -> torch.Tensor:
        full = llama_cpp.Llama(path, n_ctx=max(512, len(ids)), logits_all=True, **kw)
        full.eval(ids)
        out = torch.from_numpy(np.array(full.scores[: len(ids)]))  # (T, V)
        full.close()
        return out

    return Side(lambda positions: ll.reset(), forward, logits, load_s)
