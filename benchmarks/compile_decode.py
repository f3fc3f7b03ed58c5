"""One-off measurement: decode speed of the embedded SmolLM2, eager vs ``CompiledDecoder``.

Per configuration (fp32, bf16, int8, int4: ``load_model()`` fp32, then cast or ``quantize_model``)
one fresh process prefills a fixed prompt eagerly, then decodes greedily, eager and compiled in
turn (``--repeats`` times each, on the same cache size), and prints decode tok/s, the first
compiled step's seconds (the compile) and whether both decoded the same tokens.

    .venv/bin/python -m benchmarks.compile_decode [--threads 1] [--steps 64] [--configs fp32 int4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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
def decode(model, step, prompt: torch.Tensor, steps: int) -> tuple[float, list[int], float]:
    """Prefill ``prompt`` (1, T) eagerly, then ``steps`` greedy steps of ``step``: (tok/s from the
    median step time, robust to a shared machine's stalls; tokens; seconds of the first step)."""
    T = prompt.shape[1]
    logits = model(prompt, 0, 1)
    tokens, times = [], []
    for i in range(steps):
        token = logits[:, -1:].argmax(-1)  # (1, 1)
        tokens.append(int(token))
        t0 = time.perf_counter()
        logits = step(token, T + i)
        times.append(time.perf_counter() - t0)
    return 1 / statistics.median(times[1:]), tokens, times[0]


def worker(name: str, steps: int, repeats: int) -> dict:
    model, _ = load_model()
    model = CONFIGS[name](model).eval()
    ids = load_tokenizer(default_model_path()).encode(PROMPT, bos=False, eos=False)
    prompt = torch.tensor([ids])
    model.setup_cache(1, 256)  # the size CompiledDecoder.setup_cache picks for this request
    compiled = CompiledDecoder(model)
    eager_runs, compiled_runs, compile_s = [], [], None
    for _ in range(repeats):
        tps, eager_tokens, _ = decode(model, lambda t, p: model(t, p), prompt, steps)
        eager_runs.append(tps)
        tps, compiled_tokens, first = decode(model, compiled, prompt, steps)
        compile_s = first if compile_s is None else compile_s
        compiled_runs.append(tps)
    same = sum(a == b for a, b in zip(eager_tokens, compiled_tokens)) / steps
    return {"eager": eager_runs, "compiled": compiled_runs, "compile_s": compile_s, "same": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.repeats)))
        return
    print(f"# SmolLM2-135M, {args.steps} greedy decode steps, {args.threads} thread(s), torch "
          f"{torch.__version__}; tok/s per run (eager and compiled alternate)")  # fmt: skip
    print(f"{'config':6} {'eager tok/s':>22} {'compiled tok/s':>22} {'x':>5} {'compile s':>9} same")
    for name in args.configs:
        cmd = [sys.executable, "-m", "benchmarks.compile_decode", "--worker", name]
        cmd += ["--threads", str(args.threads), "--steps", str(args.steps)]
        cmd += ["--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        e, c = max(r["eager"]), max(r["compiled"])
        runs = (" ".join(f"{x:.1f}" for x in r[k]) for k in ("eager", "compiled"))
        eager, compiled = runs
        print(f"{name:6} {eager:>22} {compiled:>22} {c / e:>5.2f} {r['compile_s']:>9.1f} "
              f"{r['same']:.0%}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
