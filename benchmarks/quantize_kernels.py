"""One-off measurement: which matmul path is fastest per number of rows (decode vs prefill), per shape.

Times the layers of ``simplellama.quantize`` (the code that runs) against float ``F.linear``, on one
thread by default, minimum over interleaved rounds (robust to a shared machine). Prints a table of µs per
call and, per shape, the largest row count at which the packed kernel still beats dequantize-then-matmul.

    .venv/bin/python benchmarks/quantize_kernels.py [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from simplellama.bench import cpu_description
from simplellama.quantize import Int4Linear, Int8Linear, matmul_dtype

SHAPES = {  # (N, K): SmolLM2-135M's linear layers, then a Llama-3.2-1B-shaped FFN
    "wq/wo 576x576": (576, 576),
    "wk/wv 192x576": (192, 576),
    "w1/w3 1536x576": (1536, 576),
    "w2 576x1536": (576, 1536),
    "output 49152x576": (49152, 576),
    "1B w1 8192x2048": (8192, 2048),
}
ROWS = (1, 4, 8, 16, 24, 32, 48, 64, 96, 128)


def time_us(fn, budget: float = 0.05) -> float:
    """Mean µs per call of ``fn`` over about ``budget`` seconds."""
    fn()
    t0, n = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - t0) < budget or n < 2:
        fn()
        n += 1
    return elapsed / n * 1e6


def candidates(w: torch.Tensor, i8: Int8Linear, i4: Int4Linear, M: int) -> dict:
    """The paths timed for one weight and row count, as zero-argument callables."""
    x = torch.randn(M, w.shape[1])
    xb, w_bf16 = x.bfloat16(), w.bfloat16()
    fns = {
        "f32": lambda: F.linear(x, w),
        "bf16": lambda: F.linear(xb, w_bf16),
        "i8k": lambda: i8.kernel(xb),
        "i8dq": lambda: i8.dequantized(x),
        "i4k": lambda: i4.kernel(xb),
        "i4dq": lambda: i4.dequantized(x),
    }
    if M == 1:  # fp32 activations: torch's scalar fallback (slow, so one row only)
        fns["i8k_f32x"] = lambda: torch.ops.aten._weight_int8pack_mm(x, i8.weight, i8.scale.float())
        fns["i4k_f32x"] = lambda: i4._mm(x, i4.scale_and_zero.float())
    return fns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shapes", nargs="*", default=list(SHAPES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# {cpu_description()}; torch {torch.__version__}, {args.threads} thread(s), "
        f"matmul_dtype {matmul_dtype('cpu')}"
    )
    print(
        f"# µs per call, minimum of {args.rounds} interleaved rounds; k = packed kernel (bf16 activations), "
        "dq = dequantize then F.linear in matmul_dtype, *_f32x = packed kernel on fp32 activations"
    )
    cols = ["f32", "bf16", "i8k", "i8dq", "i4k", "i4dq", "i8k_f32x", "i4k_f32x"]
    print(f"{'shape':18} {'M':>4} " + " ".join(f"{c:>9}" for c in cols))
    for label in args.shapes:
        N, K = SHAPES[label]
        w = torch.randn(N, K) * 0.02
        i8, i4 = Int8Linear.from_float(w), Int4Linear.from_float(w, 32)
        for M in ROWS:
            fns = candidates(w, i8, i4, M)
            best = {k: float("inf") for k in fns}
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    best[k] = min(best[k], time_us(fn))
            cells = [f"{best[c]:>9.0f}" if c in best else f"{'':>9}" for c in cols]
            print(f"{label:18} {M:>4} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
