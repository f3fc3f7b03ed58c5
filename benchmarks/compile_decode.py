"""One-off measurement: decode speed of the embedded SmolLM2, eager vs ``CompiledDecoder``.

Per configuration (fp32, bf16, int8, int4: ``load_model()`` fp32, then cast or ``quantize_model``)
one fresh process prefills a fixed prompt eagerly, then decodes greedily, eager and compiled in
turn (``--repeats`` times each, on the same cache size), and prints decode tok/s, the first
compiled step's seconds (the compile) and, with the compiled step fed eager's greedy tokens, the
share of steps whose top-1 agrees.

    .venv/bin/python -m benchmarks.compile_decode [--threads 1] [--steps 64] [--configs fp32 int4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from simplellama import default_model_path, load_model, load_tokenizer
from simplellama.compiled import CompiledDecoder
from simplellama.quantize import quantize_model

PROMPT = (
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. One "
    "stormy night, he noticed a small boat struggling against the waves near the rocks. He"
)
CONFIGS = {
    "fp32": lambda m: m,
    "bf16": lambda m: m.to(torch.bfloat16),
    "int8": lambda m: quantize_model(m, "int8"),
    "int4": lambda m: quantize_model(m, "int4", 32),
}


@torch.inference_mode()
def decode(model, step, prompt: torch.Tensor, steps: int, forced: list[int] | None = None):
    """Prefill ``prompt`` (1, T) eagerly, then ``steps`` greedy steps of ``step`` (fed ``forced``
    tokens if given): (seconds of each step, top-1 token of each step)."""
    T = prompt.shape[1]
    logits = model(prompt, 0, 1)
    tokens, times = [], []
    for i in range(steps):
        tokens.append(int(logits[0, -1].argmax()))
        token = torch.tensor([[tokens[-1] if forced is None else forced[i]]])
        t0 = time.perf_counter()
        logits = step(token, T + i)
        times.append(time.perf_counter() - t0)
    return times, tokens


def worker(name: str, steps: int, repeats: int) -> dict:
    model, _ = load_model()
    model = CONFIGS[name](model).eval()
    ids = load_tokenizer(default_model_path()).encode(PROMPT, bos=False, eos=False)
    prompt = torch.tensor([ids])
    model.setup_cache(1, 256)  # the size CompiledDecoder.setup_cache picks for this request
    compiled = CompiledDecoder(model)
    out = {"eager": [], "compiled": [], "compile_s": None}
    for _ in range(repeats):  # alternating, so both see the same machine load
        times, eager_tokens = decode(model, lambda t, p: model(t, p), prompt, steps)
        out["eager"].append(times)
        times, compiled_tokens = decode(model, compiled, prompt, steps, forced=eager_tokens)
        out["compile_s"] = out["compile_s"] or times[0]
        out["compiled"].append(times[1:])  # not the compile
    # teacher-forced on eager's greedy tokens: the same top-1 at each step?
    out["agree"] = sum(a == b for a, b in zip(eager_tokens, compiled_tokens)) / steps
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--cold", action="store_true", help="a fresh inductor cache per config")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.repeats)))
        return
    print(f"# SmolLM2-135M, {args.steps} greedy decode steps, {args.threads} thread(s), torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}")  # fmt: skip
    print("# tok/s = 1 / median step time per run (eager and compiled alternate); best = 1 / fastest step;")
    cache = "a fresh" if args.cold else "this machine's"
    print(f"# compile s: the first compiled step, with {cache} inductor cache")
    head = f"{'config':6} {'eager tok/s':>18} {'compiled tok/s':>18} {'x':>5} {'best x':>6}"
    print(f"{head} {'compile s':>9} {'top-1 agree':>11}")
    for name in args.configs:
        cmd = [sys.executable, "-m", "benchmarks.compile_decode", "--worker", name]
        cmd += ["--threads", str(args.threads), "--steps", str(args.steps)]
        cmd += ["--repeats", str(args.repeats)]
        with tempfile.TemporaryDirectory() as cache:  # --cold: compile s is a first compile
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache} if args.cold else None
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        tps = {k: [1 / statistics.median(t) for t in r[k]] for k in ("eager", "compiled")}
        best = {k: 1 / min(min(t) for t in r[k]) for k in ("eager", "compiled")}
        eager, compiled = (" ".join(f"{x:.1f}" for x in tps[k]) for k in ("eager", "compiled"))
        x = max(tps["compiled"]) / max(tps["eager"])
        print(f"{name:6} {eager:>18} {compiled:>18} {x:>5.2f} {best['compiled'] / best['eager']:>6.2f} "
              f"{r['compile_s']:>9.1f} {r['agree']:>11.0%}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
