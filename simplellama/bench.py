"""``simplellama bench``: speed and memory of simplellama vs transformers on the embedded model.

For each dtype and each side (simplellama, transformers) one worker subprocess (so peak RSS is
its own) loads the embedded SmolLM2 GGUF, sets the same torch thread count, then measures:

- load time: checkpoint file -> model ready;
- prefill tok/s: one forward over a P-token prompt, filling the KV cache;
- decode tok/s: N greedy steps of one token each, reusing the KV cache (both sides);
- peak RSS of the worker process (``resource.getrusage``).

Both sides get the same prompt ids and run the same loop (prefill, then argmax -> one-token
forward), so the numbers compare the models, not the generation helpers. Like generation on both
sides (``Llama.generate``, transformers' ``generate``), every forward computes the logits of the last
position only (``logits_to_keep=1`` on both sides). Same thread count, greedy, no state kept between
runs (the KV cache is refilled from position 0 every run). Timings are medians over ``--repeat``
runs. The parent prints a table with simplellama / transformers ratios and the token agreement.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from LogRelay import get_relay

__all__ = ["add_arguments", "run", "run_worker", "measure", "format_table"]

log = get_relay("simplellama.bench")
SIDES = ("simplellama", "transformers")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PROMPT_TEXT = (
    "The history of the Roman Empire spans many centuries, from the founding of the city of Rome to the fall "
    "of Constantinople. Historians divide it into periods: the Kingdom, the Republic and the Empire. "
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` options."""
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list of float32, bfloat16")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length for prefill")
    parser.add_argument("--new-tokens", type=int, default=128, help="greedy tokens for decode")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--sides", default=",".join(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one side, print JSON
    parser.add_argument("--prompt-ids", default=None, help=argparse.SUPPRESS)


# ---------------------------------------------------------------------------------------------
# worker: one side, one dtype, in its own process
# ---------------------------------------------------------------------------------------------


def _load(side: str, dtype: torch.dtype):
    """(forward(ids, past) -> (logits (1, T, V), past), seconds to load) for one side."""
    from .checkpoint import default_model_path

    path = default_model_path()
    t0 = time.perf_counter()
    if side == "simplellama":
        from .checkpoint import load_model

        model, _ = load_model(path, device="cpu", dtype=dtype)
        model.eval()

        def forward(ids: torch.Tensor, pos: int, past: Any = None) -> tuple[torch.Tensor, Any]:
            return model(ids, pos, logits_to_keep=1), None  # (1, 1, V)

        setup = model.setup_cache
    else:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()

        cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"

        def forward(ids: torch.Tensor, pos: int, past: Any = None) -> tuple[torch.Tensor, Any]:
            out = hf(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_arg: past})  # (1, 1, V)
            return out.logits, getattr(out, cache_arg)

        def setup(batch: int, seq_len: int) -> None:  # transformers grows its DynamicCache itself
            pass

    return forward, setup, time.perf_counter() - t0


@torch.inference_mode()
def measure(side: str, dtype: torch.dtype, prompt_ids: list[int], new_tokens: int, repeat: int) -> dict[str, Any]:
    """Load one side and time prefill and greedy decode; returns a dict of numbers."""
    forward, setup, load_s = _load(side, dtype)
    ids = torch.tensor([prompt_ids])  # (1, P)
    prefill, decode, generated = [], [], []
    setup(1, 8)  # warm-up (first-call allocations, kernel selection), not timed
    logits, past = forward(ids[:, :4], 0)
    forward(logits[:, -1].argmax(-1, keepdim=True), 4, past)
    for _ in range(repeat):
        setup(1, len(prompt_ids) + new_tokens)
        t0 = time.perf_counter()
        logits, past = forward(ids, 0)  # (1, 1, V)
        t1 = time.perf_counter()
        tokens = []
        for i in range(new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            tokens.append(int(nxt))
            logits, past = forward(nxt, len(prompt_ids) + i, past)
        t2 = time.perf_counter()
        prefill.append(t1 - t0)
        decode.append(t2 - t1)
        generated = tokens
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "side": side,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "prefill_tok_s": len(prompt_ids) / statistics.median(prefill),
        "decode_tok_s": new_tokens / statistics.median(decode),
        "peak_rss_mib": rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20,
        "tokens": generated,
    }


def run_worker(args: argparse.Namespace) -> int:
    """Internal: measure one side and print its numbers as one JSON line on stdout."""
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtypes]
    ids = [int(x) for x in args.prompt_ids.split(",")]
    print(json.dumps(measure(args.worker, dtype, ids, args.new_tokens, args.repeat)), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# parent: spawn the workers, print the table
# ---------------------------------------------------------------------------------------------


def _prompt_ids(n: int) -> list[int]:
    """``n`` token ids of English text (the embedded model's tokenizer), the same for both sides."""
    from .checkpoint import load_tokenizer

    tok = load_tokenizer()
    ids: list[int] = []
    while len(ids) < n:
        ids += tok.encode(PROMPT_TEXT, bos=False, eos=False)
    return ids[:n]


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per dtype and metric: simplellama, transformers, and their ratio."""
    metrics = [
        ("load time (s)", "load_s", "{:.2f}"),
        ("prefill (tok/s)", "prefill_tok_s", "{:.1f}"),
        ("decode (tok/s)", "decode_tok_s", "{:.1f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
    ]
    by = {(r["dtype"], r["side"]): r for r in results}
    rows = [("dtype", "metric", "simplellama", "transformers", "ratio")]
    for dtype in dict.fromkeys(r["dtype"] for r in results):
        for label, key, fmt in metrics:
            a, b = by.get((dtype, "simplellama")), by.get((dtype, "transformers"))
            va = fmt.format(a[key]) if a else "-"
            vb = fmt.format(b[key]) if b else "-"
            ratio = f"{a[key] / b[key]:.2f}" if a and b and b[key] else "-"
            rows.append((dtype, label, va, vb, ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``simplellama bench``: run every (dtype, side) worker and print the table."""
    if args.worker:
        return run_worker(args)
    from tqdm.auto import tqdm

    from .generation import GenerationError

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            raise GenerationError(f"bench --dtypes: expected a comma list of {', '.join(DTYPES)}, found {d!r}")
    for name in ("prompt_tokens", "new_tokens", "threads", "repeat"):
        if getattr(args, name) < 1:
            raise GenerationError(f"bench --{name.replace('_', '-')}: expected >= 1, found {getattr(args, name)}")
    sides = [s for s in args.sides.split(",") if s]
    ids = ",".join(map(str, _prompt_ids(args.prompt_tokens)))
    jobs = [(d, s) for d in dtypes for s in sides]
    results = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    for dtype, side in tqdm(jobs, desc="bench", file=sys.stderr):
        cmd = [
            sys.executable,
            "-m",
            "simplellama",
            "bench",
            "--worker",
            side,
            "--dtypes",
            dtype,
            "--prompt-ids",
            ids,
            "--new-tokens",
            str(args.new_tokens),
            "--threads",
            str(args.threads),
            "--repeat",
            str(args.repeat),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise GenerationError(f"bench worker {side}/{dtype} failed (exit {proc.returncode}): {last}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"embedded SmolLM2-135M, prompt {args.prompt_tokens} tokens, {args.new_tokens} greedy new tokens, "
        f"{args.threads} threads, median of {args.repeat}; both sides: KV cache, last-position logits only"
    )
    print(format_table(results))
    for dtype in dtypes:
        got = {r["side"]: r["tokens"] for r in results if r["dtype"] == dtype}
        if len(got) == 2:
            a, b = got.values()
            same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
            print(f"{dtype}: greedy tokens agree for the first {same} of {len(a)}")
    return 0
