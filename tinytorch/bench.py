"""``python -m tinytorch.bench``: how much tensors buy over scalars, and what a pure-Python matmul costs.

1. The same MLP (same initial weights, same data, same SGD steps) trained with the scalar ``Value``
   engine and with tinytorch tensors: seconds per training step for each, the ratio, and the final
   loss of both (they must agree: it is the same computation, organised differently).
2. A 64x64 @ 64x64 matmul, forward and backward.

Numbers depend on the machine; the point is the ratio (target: tensors >= 10x faster per step).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from LogRelay import get_relay

from . import functional as F
from .nn import Linear, Module, Tanh
from .nn import Sequential as TensorSequential
from .optim import SGD
from .tensor import Tensor
from .value import Value

__all__ = ["BenchResult", "make_data", "init_weights", "train_value_mlp", "train_tensor_mlp", "time_matmul", "run"]

log = get_relay("tinytorch.bench")


@dataclass
class BenchResult:
    """Timings (seconds) and final losses of one benchmark run."""

    value_step_s: float
    tensor_step_s: float
    value_loss: float
    tensor_loss: float
    matmul_forward_s: float
    matmul_backward_s: float
    n: int

    @property
    def ratio(self) -> float:
        return self.value_step_s / self.tensor_step_s


def make_data(n: int, seed: int = 0) -> tuple[list[list[float]], list[float]]:
    """Two interleaved half moons: n points (x, y) in 2-d with labels +1 / -1."""
    rng = random.Random(seed)
    xs, ys = [], []
    for i in range(n):
        label = 1.0 if i % 2 else -1.0
        t = rng.uniform(0, math.pi)
        x, y = (math.cos(t), math.sin(t)) if label > 0 else (1 - math.cos(t), 0.5 - math.sin(t))
        xs.append([x + rng.gauss(0, 0.1), y + rng.gauss(0, 0.1)])
        ys.append(label)
    return xs, ys


def init_weights(sizes: Sequence[int], seed: int = 0) -> list[tuple[list[list[float]], list[float]]]:
    """(W (out, in), b (out,)) per layer, U(-1/sqrt(in), 1/sqrt(in)) as torch's Linear."""
    rng = random.Random(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / math.sqrt(n_in)
        W = [[rng.uniform(-bound, bound) for _ in range(n_in)] for _ in range(n_out)]
        layers.append((W, [rng.uniform(-bound, bound) for _ in range(n_out)]))
    return layers


def train_value_mlp(weights, xs, ys, steps: int, lr: float, busy=None) -> tuple[float, float]:
    """SGD on mean squared error with scalar Values; returns (seconds per step, final loss)."""
    layers = [([[Value(w) for w in row] for row in W], [Value(v) for v in b]) for W, b in weights]
    params = [p for W, b in layers for p in [*(w for row in W for w in row), *b]]
    loss_value, start = math.nan, time.perf_counter()
    for _ in range(steps):
        total = Value(0.0)
        for x, y in zip(xs, ys):
            h = [Value(v) for v in x]
            for i, (W, b) in enumerate(layers):
                h = [Value.sum(w * hj for w, hj in zip(row, h)) + bi for row, bi in zip(W, b)]
                if i < len(layers) - 1:
                    h = [v.tanh() for v in h]
            total = total + (h[0] - y) ** 2
        loss = total / len(xs)
        for p in params:
            p.grad = 0.0
        loss.backward()
        for p in params:
            p.data -= lr * p.grad
        loss_value = loss.data
        if busy is not None:
            busy.update()
    return (time.perf_counter() - start) / steps, loss_value


def _tensor_mlp(weights) -> Module:
    mods: list[Module] = []
    for i, (W, b) in enumerate(weights):
        layer = Linear(len(W[0]), len(W))
        layer.load_state_dict({"weight": W, "bias": b})
        mods.append(layer)
        if i < len(weights) - 1:
            mods.append(Tanh())
    return TensorSequential(*mods)


def train_tensor_mlp(weights, xs, ys, steps: int, lr: float, busy=None) -> tuple[float, float]:
    """The same training with tinytorch tensors and ``optim.SGD``; returns (seconds per step, final loss)."""
    model = _tensor_mlp(weights)
    opt = SGD(model.parameters(), lr=lr)
    X, Y = Tensor(xs), Tensor([[y] for y in ys])  # (N, 2), (N, 1)
    loss_value, start = math.nan, time.perf_counter()
    for _ in range(steps):
        loss = F.mse_loss(model(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_value = loss.item()
        if busy is not None:
            busy.update()
    return (time.perf_counter() - start) / steps, loss_value


def time_matmul(n: int = 64, seed: int = 0) -> tuple[float, float]:
    """Seconds for ``A @ B`` with A, B (n, n), forward and then backward of ``(A @ B).sum()``."""
    rng = random.Random(seed)
    A = Tensor([[rng.gauss(0, 1) for _ in range(n)] for _ in range(n)], requires_grad=True)
    B = Tensor([[rng.gauss(0, 1) for _ in range(n)] for _ in range(n)], requires_grad=True)
    t0 = time.perf_counter()
    out = (A @ B).sum()  # (n, n) -> ()
    t1 = time.perf_counter()
    out.backward()
    return t1 - t0, time.perf_counter() - t1


def run(
    steps: int = 5, n: int = 32, hidden: int = 16, lr: float = 0.1, matmul_n: int = 64, seed: int = 0
) -> BenchResult:
    """Both trainings (n points, a 2 -> hidden -> hidden -> 1 tanh MLP) and the matmul timing."""
    xs, ys = make_data(n, seed)
    weights = init_weights([2, hidden, hidden, 1], seed)
    with log.busy("bench: Value MLP steps", total=steps) as busy:
        v_step, v_loss = train_value_mlp(weights, xs, ys, steps, lr, busy)
    with log.busy("bench: tinytorch MLP steps", total=steps) as busy:
        t_step, t_loss = train_tensor_mlp(weights, xs, ys, steps, lr, busy)
    mm_f, mm_b = time_matmul(matmul_n, seed)
    log.info("Value %.4f s/step, tinytorch %.4f s/step", v_step, t_step)
    return BenchResult(v_step, t_step, v_loss, t_loss, mm_f, mm_b, matmul_n)


def format_table(r: BenchResult) -> str:
    """The results as a small text table."""
    rows = [
        ("MLP step, scalar Value engine", f"{r.value_step_s * 1e3:10.2f} ms", f"final loss {r.value_loss:.10f}"),
        ("MLP step, tinytorch tensors", f"{r.tensor_step_s * 1e3:10.2f} ms", f"final loss {r.tensor_loss:.10f}"),
        ("speed-up (Value / tinytorch)", f"{r.ratio:10.1f} x", "target >= 10x"),
        (f"matmul {r.n}x{r.n} @ {r.n}x{r.n} forward", f"{r.matmul_forward_s * 1e3:10.2f} ms", ""),
        (f"matmul {r.n}x{r.n} @ {r.n}x{r.n} backward", f"{r.matmul_backward_s * 1e3:10.2f} ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'tinytorch benchmark':<{width}}  {'time':>13}  note", "-" * (width + 32)]
    lines += [f"{name:<{width}}  {t:>13}  {note}" for name, t, note in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinytorch.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="training steps per engine")
    parser.add_argument("--n", type=int, default=32, help="data points (the batch)")
    parser.add_argument("--hidden", type=int, default=16, help="hidden units per layer")
    parser.add_argument("--matmul-n", type=int, default=64, help="matrix size for the matmul timing")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    result = run(steps=a.steps, n=a.n, hidden=a.hidden, matmul_n=a.matmul_n, seed=a.seed)
    print(format_table(result))  # the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
