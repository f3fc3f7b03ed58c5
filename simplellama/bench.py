"""``simplellama bench``: load time, prefill and decode speed, and peak RAM of simplellama itself.

For each dtype one worker subprocess (so peak RSS is its own) loads the embedded SmolLM2 GGUF and
measures: load time (file -> model ready), prefill tok/s (one forward over a P-token prompt, filling
the KV cache), decode tok/s (N greedy one-token steps reusing the cache) and peak RSS. Every forward
computes the logits of the last position only, as generation does. Timings are medians over
``--repeat`` runs (options: ``cli.add_bench_arguments``). ``benchmarks/compare_transformers.py``
runs the same loop on transformers beside it (``make bench``), reusing ``measure``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .assets import default_model_path
from .checkpoint import load_model
from .tokenizer import load_tokenizer

__all__ = ["prompt_ids", "load_simplellama", "measure", "spawn", "format_table", "run"]

PROMPT_TEXT = (
    "The history of the Roman Empire spans many centuries, from the founding of the city of "
    "Rome to the fall of Constantinople. Historians divide it into periods: the Kingdom, the "
    "Republic and the Empire. "
)
# forward(ids (1, T), position, past) -> (logits (1, 1, V), past); setup(batch, seq_len) sizes a
# cache
Forward = Callable[[torch.Tensor, int, Any], tuple[torch.Tensor, Any]]


def prompt_ids(n: int) -> list[int]:
    """``n`` token ids of English text (the embedded model's tokenizer)."""
    tok, ids = load_tokenizer(), []
    while len(ids) < n:
        ids += tok.encode(PROMPT_TEXT, bos=False, eos=False)
    return ids[:n]


def load_simplellama(dtype: torch.dtype) -> tuple[Forward, Callable[[int, int], Any], float]:
    """(forward, cache setup, seconds to load) for simplellama on the embedded model."""
    t0 = time.perf_counter()
    model, _ = load_model(default_model_path(), device="cpu", dtype=dtype)

    def forward(ids: torch.Tensor, pos: int, past: Any = None) -> tuple[torch.Tensor, Any]:
        return model(ids, pos, logits_to_keep=1), None  # (1, 1, V)

    return forward, model.setup_cache, time.perf_counter() - t0


@torch.inference_mode()
def measure(
    side: str,
    dtype: str,
    loaded: tuple[Forward, Callable, float],
    ids: Sequence[int],
    new_tokens: int,
    repeat: int,
) -> dict[str, Any]:
    """Time prefill and greedy decode of one loaded side; returns a dict of numbers."""
    forward, setup, load_s = loaded
    prompt = torch.tensor([list(ids)])  # (1, P)
    prefill, decode, generated = [], [], []
    setup(1, 8)  # warm-up (first-call allocations, kernel selection), not timed
    logits, past = forward(prompt[:, :4], 0)
    forward(logits[:, -1].argmax(-1, keepdim=True), 4, past)
    for _ in range(repeat):
        setup(1, len(ids) + new_tokens)
        t0 = time.perf_counter()
        logits, past = forward(prompt, 0)  # (1, 1, V)
        t1 = time.perf_counter()
        generated = []
        for i in range(new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            generated.append(int(nxt))
            logits, past = forward(nxt, len(ids) + i, past)
        prefill.append(t1 - t0)
        decode.append(time.perf_counter() - t1)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {
        "side": side,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "prefill_tok_s": len(ids) / statistics.median(prefill),
        "decode_tok_s": new_tokens / statistics.median(decode),
        "peak_rss_mib": rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20,
        "tokens": generated,
    }


def spawn(
    module: str, side: str, dtype: str, ids: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Run ``python -m module --worker side`` for one dtype in a fresh process; its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", *module.split(), "--worker", side, "--dtypes", dtype,
           "--prompt-ids", ",".join(map(str, ids)), "--new-tokens", str(args.new_tokens),
           "--threads", str(args.threads), "--repeat", str(args.repeat)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench worker {side}/{dtype} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


METRICS = [
    ("load time (s)", "load_s", "{:.2f}"),
    ("prefill (tok/s)", "prefill_tok_s", "{:.1f}"),
    ("decode (tok/s)", "decode_tok_s", "{:.1f}"),
    ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
]


def format_table(results: list[dict[str, Any]], sides: Sequence[str]) -> str:
    """One row per dtype and metric, one column per side (and their ratio when there are two)."""
    by = {(r["dtype"], r["side"]): r for r in results}
    rows = [("dtype", "metric", *sides, *(["ratio"] if len(sides) == 2 else []))]
    for dtype in dict.fromkeys(r["dtype"] for r in results):
        for label, key, fmt in METRICS:
            got = [by.get((dtype, s)) for s in sides]
            row = [dtype, label, *(fmt.format(g[key]) if g else "-" for g in got)]
            if len(sides) == 2:
                a, b = got
                row.append(f"{a[key] / b[key]:.2f}" if a and b and b[key] else "-")
            rows.append(tuple(row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run_worker(args: argparse.Namespace, loaders: dict[str, Callable[[torch.dtype], Any]]) -> int:
    """Internal: load one side, measure it and print its numbers as one JSON line on stdout."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    (dtype,) = args.dtypes
    ids = [int(x) for x in args.prompt_ids.split(",")]
    loaded = loaders[args.worker](getattr(torch, dtype))
    result = measure(args.worker, dtype, loaded, ids, args.new_tokens, args.repeat)
    print(json.dumps(result), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """``simplellama bench``: one worker per dtype, then the table."""
    args.threads = args.threads or torch.get_num_threads()
    if args.worker:
        return run_worker(args, {"simplellama": load_simplellama})
    ids = prompt_ids(args.prompt_tokens)
    results = [spawn("simplellama bench", "simplellama", d, ids, args) for d in args.dtypes]
    print(
        f"embedded SmolLM2-135M, prompt {args.prompt_tokens} tokens, "
        f"{args.new_tokens} greedy new tokens, "
        f"{args.threads} threads, median of {args.repeat}; KV cache, last-position logits only"
    )
    print(format_table(results, ["simplellama"]))
    return 0
