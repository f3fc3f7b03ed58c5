"""The second table of ``make bench``: a Llama-3.2-1B-shaped model against the memory bandwidth.

Random weights with Llama 3.2 1B's shapes (``preset("llama3.2-1b")``: dim 2048, 16 layers, 32 heads,
8 kv heads, FFN 8192, vocabulary 128256, tied embeddings), built straight in each format: float32,
bfloat16, or int8 / int4 layers quantized one random weight at a time (no float copy of the model).
Per format, in its own process: decode tok/s and the bytes one step reads (``model_decode_bytes``,
counted from the model's tensors). A decode step cannot beat bytes / bandwidth, so

    % of the bandwidth limit = bytes per token x tok/s / read bandwidth

with the bandwidth measured by ``read_bandwidth`` (reading a 1 GiB buffer, far larger than the caches,
same thread count; best of several runs, as decode speed is here). And the peak RSS of loading a
1B-shaped Meta checkpoint (bf16 ``consolidated.00.pth`` + ``params.json``, written on the fly into a
temp dir): in float32 vs quantized to int4 while loading.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from simplellama.bench import peak_rss_mib
from simplellama.checkpoint import load_model
from simplellama.checkpoint.keys import expected_shapes
from simplellama.config import ModelArgs, preset
from simplellama.footprint import model_decode_bytes
from simplellama.model import Transformer
from simplellama.norm import RMSNorm
from simplellama.quantize import quantize_linear

__all__ = ["args_1b", "bandwidth_fraction", "read_bandwidth", "random_model", "decode_speed", "write_meta",
           "load_peak", "resident_mib", "worker"]  # fmt: skip

STD = 0.02  # weights ~ N(0, STD^2): finite activations through 16 random layers


def args_1b() -> ModelArgs:
    """Llama 3.2 1B's shapes, a cache just long enough for the measurement."""
    return preset("llama3.2-1b", max_seq_len=64, max_batch_size=1)


def bandwidth_fraction(bytes_per_token: float, tok_s: float, bandwidth: float) -> float:
    """Share of the read-bandwidth limit a decode reaches: bytes/token x tok/s / (bytes/s)."""
    return bytes_per_token * tok_s / bandwidth


def read_bandwidth(n_bytes: int = 1 << 30, repeat: int = 7) -> float:
    """Bytes/s of the fastest read of an ``n_bytes`` float32 buffer: best of ``repeat`` runs of
    ``torch.sum`` and of a matrix-vector product over it (either may be the faster reader)."""
    big = torch.ones(n_bytes // 4)
    mat, x = big.view(-1, 4096), torch.ones(4096)  # (n/4096, 4096), (4096,)
    best = float("inf")
    for fn in (big.sum, lambda: mat @ x):
        fn()  # first touch
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return big.nbytes / best


@torch.no_grad()
def random_model(args: ModelArgs, fmt: str, seed: int = 0) -> Transformer:
    """A model with random N(0, STD^2) weights in ``fmt`` (float32, bfloat16, int8, int4 g32).

    Quantized formats: float32 norms and embedding table; each linear weight is drawn in float32
    and quantized before the next is drawn.
    """
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if fmt == "bfloat16" else torch.float32
    with torch.device("meta"):
        model = Transformer(args, dtype=dtype)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding | RMSNorm) or (fmt in ("float32", "bfloat16") and name in linears):
            m.to_empty(device="cpu", recurse=False)
    if args.tie_word_embeddings and fmt in ("float32", "bfloat16"):
        model.output.weight = model.tok_embeddings.weight
    for p in model.parameters():
        if p.ndim == 1:
            p.fill_(1.0)
        else:
            p.normal_(0.0, STD, generator=g)
    if fmt in ("int8", "int4"):
        for name in linears:
            tied = name == "output" and args.tie_word_embeddings
            shape = model.get_submodule(name).weight.shape
            w = model.tok_embeddings.weight if tied else torch.randn(shape, generator=g) * STD
            model.set_submodule(name, quantize_linear(w, fmt, 32, "cpu"))
    return model.eval()


@torch.inference_mode()
def decode_speed(model: Transformer, steps: int = 16, repeat: int = 3) -> float:
    """Greedy one-token steps per second after an 8-token prompt (best of ``repeat``, as the
    bandwidth is: both are upper bounds disturbed by whatever else runs)."""
    rates = []
    for _ in range(repeat):
        model.setup_cache(1, 8 + steps)
        logits = model(torch.arange(8)[None], 0, logits_to_keep=1)
        t0 = time.perf_counter()
        for i in range(steps):
            logits = model(logits[:, -1].argmax(-1, keepdim=True), 8 + i)
        rates.append(steps / (time.perf_counter() - t0))
    return max(rates)


def write_meta(d: Path, args: ModelArgs, seed: int = 0) -> None:
    """A Meta-layout checkpoint of random bf16 weights (tied: no output.weight, as Meta's 1B/3B)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in expected_shapes(args).items():
        if key == "output.weight" and args.tie_word_embeddings:
            continue
        t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=g) * STD
        sd[key] = t.bfloat16()
    torch.save(sd, d / "consolidated.00.pth")
    (d / "params.json").write_text(json.dumps(args.to_params_json()))


def load_peak(d: Path, quantize: str | None) -> dict:
    """Load the checkpoint in ``d`` in float32, or quantized while streaming; seconds, peak RSS."""
    t0 = time.perf_counter()
    model, _ = load_model(d, "cpu", torch.float32, quantize=quantize, group_size=32)
    load_s = time.perf_counter() - t0
    resident = resident_mib()  # while the model is alive
    del model
    return {"load_s": load_s, "peak_rss_mib": peak_rss_mib(), **resident}


def resident_mib() -> dict[str, float]:
    """This process's resident memory now, split as /proc/self/status does: anonymous (the
    model's tensors) and file-backed (pages of memory-mapped checkpoint files; the kernel may drop
    them under pressure, yet they count in RSS). Empty where there is no /proc."""
    out = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[f"{key.lower()[3:]}_mib"] = int(value.split()[0]) / 1024  # kB
    return out


def worker(job: dict) -> dict:
    """One measurement in this process: ``bandwidth``, ``decode`` (a format), ``write`` or ``load``."""
    torch.set_num_threads(job["threads"])
    kind = job["kind"]
    if kind == "bandwidth":
        return {"bandwidth": read_bandwidth()}
    if kind == "write":
        write_meta(Path(job["dir"]), args_1b())
        return {}
    if kind == "load":
        return load_peak(Path(job["dir"]), job["quantize"])
    model = random_model(args_1b(), job["fmt"])
    return {"fmt": job["fmt"], "bytes_per_token": model_decode_bytes(model),
            "decode_tok_s": decode_speed(model, job["steps"])}  # fmt: skip
