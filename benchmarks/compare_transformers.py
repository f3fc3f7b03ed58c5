"""Speed and memory of simplellama vs transformers on the embedded model (``make bench``).

Each (dtype, side) runs in its own worker process (so peak RSS is its own) with the same thread
count, the same prompt ids and the same loop (``simplellama.bench.measure``: prefill, then argmax ->
one-token forward, last-position logits only on both sides), so the numbers compare the models, not
the generation helpers. Prints a table with simplellama / transformers ratios and how many greedy
tokens agree. Lives outside the installed package because transformers is a dev-only dependency.

    python benchmarks/compare_transformers.py [--dtypes float32,bfloat16] [--new-tokens 128] ...
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from simplellama.assets import default_model_path
from simplellama.bench import format_table, load_simplellama, prompt_ids, run_worker, spawn
from simplellama.cli import add_bench_arguments

SIDES = ("simplellama", "transformers")


def load_transformers(dtype: torch.dtype):
    """(forward, cache setup, seconds to load) for transformers' GGUF loader on the embedded model."""
    from transformers import AutoModelForCausalLM

    path = default_model_path()
    t0 = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()
    cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"

    def forward(ids: torch.Tensor, pos: int, past: Any = None) -> tuple[torch.Tensor, Any]:
        out = hf(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_arg: past})  # (1, 1, V)
        return out.logits, getattr(out, cache_arg)

    def setup(batch: int, seq_len: int) -> None:  # transformers grows its DynamicCache itself
        pass

    return forward, setup, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    args.threads = args.threads or torch.get_num_threads()
    if args.worker:
        return run_worker(args, {"simplellama": load_simplellama, "transformers": load_transformers})
    ids = prompt_ids(args.prompt_tokens)
    module = __spec__.name if __spec__ else "benchmarks.compare_transformers"  # run with python -m
    jobs = [(d, s) for d in args.dtypes for s in SIDES]
    results = [spawn(module, s, d, ids, args) for d, s in tqdm(jobs, desc="bench", file=sys.stderr)]
    print(
        f"embedded SmolLM2-135M, prompt {args.prompt_tokens} tokens, {args.new_tokens} greedy new tokens, "
        f"{args.threads} threads, median of {args.repeat}; both sides: KV cache, last-position logits only"
    )
    print(format_table(results, SIDES))
    for dtype in args.dtypes:
        got = {r["side"]: r["tokens"] for r in results if r["dtype"] == dtype}
        if len(got) == 2:
            a, b = got.values()
            same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
            print(f"{dtype}: greedy tokens agree for the first {same} of {len(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
