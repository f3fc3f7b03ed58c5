"""``simplellama bench``: speed, memory and quality per weight format, each row in its own process.

Rows (``ROWS``) on the embedded SmolLM2 GGUF: fp32, bf16, int8, int4 (group 32) and auto (the file's
own Q4_1 / Q8_0 blocks), each eager and compiled ("+compile", ``compiled.CompiledDecoder``).
One worker subprocess per row (so peak RSS is its own) measures, on the same prompt ids:

- prefill tok/s: one forward over the P-token prompt, filling the KV cache;
- decode tok/s: N one-token steps over the cache. The fp32 row decodes greedily; every other row is
  teacher-forced on fp32's tokens (same positions, same work) and its own top-1 token is compared
  with fp32's at each step: **agreement** = teacher-forced top-1 agreement over every bench prompt;
- peak RSS after loading and timing (before the perplexity pass);
- perplexity of the Zen of Python (``this.py``, shipped with Python; ``perplexity``).

Every forward keeps the last position's logits only, as generation does; timings are medians over
``--repeat`` runs. ``benchmarks/compare.py`` (``make bench``) adds transformers and llama.cpp rows,
a Llama-3.2-1B-shaped table and the issue's targets, reusing ``measure`` and ``spawn``.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from LogRelay import get_relay

from .assets import default_model_path
from .checkpoint import load_model
from .compiled import CompiledDecoder
from .errors import SimpleLlamaError
from .tokenizer import load_tokenizer

__all__ = ["ROWS", "Side", "bench_prompts", "cpu_description", "zen_of_python", "perplexity",
           "peak_rss_mib", "load_row", "measure", "spawn", "format_table",
           "run"]  # fmt: skip

log = get_relay("simplellama.bench")

# row name -> (model dtype, quantize, compile)
ROWS: dict[str, tuple[str, str | None, bool]] = {}
for _name, _dtype, _q in (("fp32", "float32", None), ("bf16", "bfloat16", None),
                          ("int8", "float32", "int8"), ("int4", "float32", "int4"),
                          ("auto", "float32", "auto")):  # fmt: skip
    ROWS[_name] = (_dtype, _q, False)
    ROWS[_name + "+compile"] = (_dtype, _q, True)

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

# Three passages to continue (prefill + decode); the first is timed, all count for agreement.
_PASSAGES = """
The history of the Roman Empire spans many centuries, from the founding of the city on the banks of
the Tiber to the fall of Constantinople in 1453. Historians usually divide it into three periods:
the Kingdom, ruled by seven kings; the Republic, governed by elected consuls and a senate of
aristocrats; and the Empire, which began when Augustus took sole power after a long civil war. At
its height under Trajan, the Empire stretched from Britain to Mesopotamia, and its roads, aqueducts
and laws shaped Europe for a thousand years. Its decline had many causes, among them plague,
inflation, civil wars between rival generals and pressure on the frontiers from peoples who had
long traded with Rome and served in its armies. In the west the last emperor was deposed in 476,
while in the east the empire survived for another thousand years, with Greek as its language and

Photosynthesis is the process by which green plants, algae and some bacteria turn light into
chemical energy. In the chloroplasts of a leaf, chlorophyll absorbs mostly red and blue light and
uses its energy to split water molecules, releasing oxygen as a by-product. The energy is stored in
two carrier molecules, which then drive the Calvin cycle: carbon dioxide from the air is fixed into
sugars that the plant uses to grow, to build cellulose for its cell walls and to store starch in
its roots and seeds. The rate of photosynthesis depends on the intensity of the light, the
concentration of carbon dioxide and the temperature, and whichever of the three is in shortest
supply limits the whole process. Nearly all the oxygen in the atmosphere and almost every

The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. For forty
years he had watched the ships pass the rocks at the mouth of the harbour, and he knew each captain
by the shape of the sails. One stormy night in November, when the wind howled around the tower and
the rain hammered on the glass, he noticed a small fishing boat struggling against the waves near
the rocks. Its engine had failed and the current was carrying it toward the reef. He could see two
figures on the deck, waving their arms and shouting words that the wind tore away before they
reached the shore. The lifeboat station was on the other side of the bay, an hour away on foot.
Without hesitating, he took his coat from the hook, lit his lantern and
"""
PROMPTS = tuple(" ".join(p.split()) for p in _PASSAGES.strip().split("\n\n"))


@dataclass
class Side:
    """One engine, loaded: ``reset(positions)`` empties its cache, ``forward(ids, pos)`` runs ids
    (a list) at positions pos.. and returns the last position's logits (V,), ``logits(ids)`` the
    logits of every position (T, V) without a cache (for perplexity); ``extra()`` more fields."""

    reset: Callable[[int], None]
    forward: Callable[[list[int], int], torch.Tensor]
    logits: Callable[[list[int]], torch.Tensor]
    load_s: float
    extra: Callable[[], dict[str, Any]] = dict


def bench_prompts(n: int) -> list[list[int]]:
    """The first ``n`` token ids of each prompt (the embedded model's tokenizer)."""
    tok = load_tokenizer()
    ids = [tok.encode(p, bos=False, eos=False) for p in PROMPTS]
    if min(map(len, ids)) < n:
        raise SimpleLlamaError(f"--prompt-tokens: at most {min(map(len, ids))} tokens, found {n}")
    return [p[:n] for p in ids]


def cpu_description() -> str:
    """CPU model name, its avx2 / avx512f / avx512_bf16 / amx flags and what torch uses."""
    name, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    shown = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in CPU_FLAGS)
    return f"{name} ({shown}; torch uses {torch.backends.cpu.get_cpu_capability()})"


def zen_of_python() -> str:
    """The Zen of Python, as ``import this`` prints it (stored rot13-encoded in ``this.s``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def perplexity(logits: torch.Tensor, ids: Sequence[int]) -> float:
    """exp(mean negative log-likelihood of ids[1:]) from logits (T >= len(ids) - 1, V) of ids."""
    targets = torch.tensor(list(ids[1:]))  # (T-1,)
    logp = torch.log_softmax(logits[: len(targets)].double(), dim=-1)  # (T-1, V)
    return float(torch.exp(-logp.gather(1, targets[:, None]).mean()))


def peak_rss_mib() -> float:
    """This process's peak resident set so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def load_row(row: str, path: Any = None) -> tuple[torch.nn.Module, Any]:
    """(model, ``compiled.CompiledDecoder`` or None) of one row: the only place that loads."""
    dtype, quantize, compile_ = ROWS[row]
    path = default_model_path() if path is None else path
    model, _ = load_model(path, "cpu", getattr(torch, dtype), quantize=quantize, group_size=32)
    if not compile_:
        return model.eval(), None
    return model.eval(), CompiledDecoder(model)


def simplellama_side(row: str) -> Side:
    """A :class:`Side` for one row of ``ROWS``."""
    t0 = time.perf_counter()
    model, decoder = load_row(row)
    load_s = time.perf_counter() - t0
    run = model if decoder is None else decoder  # the decoder runs prefill eagerly

    def forward(ids: list[int], pos: int) -> torch.Tensor:
        return run(torch.tensor([ids]), pos, logits_to_keep=1)[0, -1]  # (V,)

    def logits(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.tensor([ids]), None)[0]  # (T, V)

    def extra() -> dict[str, Any]:  # a compile that failed falls back to eager: say so
        return {} if decoder is None else {"compile_fell_back": decoder.eager}

    sizer = model if decoder is None else decoder  # the decoder keeps one cache size per shape
    return Side(lambda n: sizer.setup_cache(1, n), forward, logits, load_s, extra)


@torch.inference_mode()
def _run(side: Side, prompt: list[int], forced: Sequence[int] | None, n: int) -> tuple:
    """Prefill ``prompt``, then ``n`` steps (greedy, or fed ``forced``): (s, s, top-1 ids)."""
    side.reset(len(prompt) + n)
    t0 = time.perf_counter()
    logits = side.forward(prompt, 0)
    t1 = time.perf_counter()
    tops = []
    for i in range(n):
        tops.append(int(logits.argmax()))
        logits = side.forward([tops[-1] if forced is None else forced[i]], len(prompt) + i)
    return t1 - t0, time.perf_counter() - t1, tops


def measure(
    side: Side,
    prompts: list[list[int]],
    reference: list[list[int]] | None,
    new_tokens: int,
    repeat: int,
    text: list[int],
) -> dict[str, Any]:
    """Prefill and decode speed on prompts[0] (median of ``repeat``), agreement, perplexity."""
    _run(side, prompts[0][:4], None, 2)  # warm-up: first-call allocations, kernel selection
    prefill, decode, tokens = [], [], []
    with log.busy("timing", total=repeat + len(prompts) - 1) as bar:
        for i, prompt in [(0, prompts[0])] * repeat + list(enumerate(prompts))[1:]:
            p, d, tops = _run(side, prompt, reference[i] if reference else None, new_tokens)
            if i == 0:
                prefill.append(p)
                decode.append(d)
            if len(tokens) == i:
                tokens.append(tops)
            bar.update()
    rss = peak_rss_mib()
    with log.busy("perplexity"):
        ppl = perplexity(side.logits(text), text)
    pairs = [(a, b) for t, r in zip(tokens, reference or tokens) for a, b in zip(t, r)]
    return {
        "threads": torch.get_num_threads(),
        "load_s": side.load_s,
        "prefill_tok_s": len(prompts[0]) / statistics.median(prefill),
        "decode_tok_s": new_tokens / statistics.median(decode),
        "peak_rss_mib": rss,
        "agreement": sum(a == b for a, b in pairs) / len(pairs) if reference else None,
        "perplexity": ppl,
        "tokens": tokens,
        **side.extra(),
    }


def spawn(cmd: list[str], job: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run a worker ``cmd`` in a fresh process with ``job`` as JSON on stdin; its last JSON line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, input=json.dumps(job), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench worker {job.get('row')} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_worker(sides: dict[str, Callable[[str], Side]]) -> int:
    """Internal: read a job from stdin, load its row, measure, print one JSON line."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job["threads"])
    side = sides[job["row"]](job["row"])
    result = measure(side, job["prompts"], job["reference"], job["new_tokens"], job["repeat"],
                     job["text"])  # fmt: skip
    print(json.dumps({"row": job["row"], **result}), flush=True)
    return 0


COLUMNS = [  # (header, key, format)
    ("prefill tok/s", "prefill_tok_s", "{:.0f}"),
    ("decode tok/s", "decode_tok_s", "{:.1f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
    ("agree", "agreement", "{:.0%}"),
    ("ppl", "perplexity", "{:.2f}"),
]


def format_table(results: list[dict[str, Any]], baselines: Sequence[str] = ("fp32",)) -> str:
    """One line per row; speeds also as ratios to each baseline row present."""
    by = {r["row"]: r for r in results}
    base = [b for b in baselines if b in by]
    head = ["row", *(c[0] for c in COLUMNS)]
    head += [f"{k} /{b}" for b in base for k in ("prefill", "decode")]
    lines = [head]
    for r in results:
        name = r["row"] + (" (compile failed: eager)" if r.get("compile_fell_back") else "")
        cells = [name, *(f.format(r[k]) if r.get(k) is not None else "-" for _, k, f in COLUMNS)]
        for b in base:
            cells += [f"{r[k] / by[b][k]:.2f}" for k in ("prefill_tok_s", "decode_tok_s")]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(line, widths))) for line in lines]  # fmt: skip
    return "\n".join([text[0], "-" * len(text[0]), *text[1:]])


def run_rows(args: argparse.Namespace, rows: Sequence[str], cmd_for: Callable[[str], list[str]]):
    """Spawn one worker per row (fp32 first: the reference); [result], skipping rows that fail."""
    prompts = bench_prompts(args.prompt_tokens)
    text = load_tokenizer().encode(zen_of_python(), bos=False, eos=False)
    job = {"prompts": prompts, "new_tokens": args.new_tokens, "repeat": args.repeat,
           "threads": args.threads, "text": text, "reference": None}  # fmt: skip
    order = sorted(rows, key=lambda r: r != "fp32")
    results = []
    with log.busy("bench rows", total=len(order)) as bar:
        for row in order:
            try:
                results.append(spawn(cmd_for(row), {**job, "row": row}, args.threads))
            except RuntimeError as e:
                print(f"skipped {row}: {e}", flush=True)
            if row == "fp32" and results:
                job["reference"] = results[0]["tokens"]
            bar.update()
    return results


def run(args: argparse.Namespace) -> int:
    """``simplellama bench``: one worker per row, then the table (JSON with ``--json``)."""
    args.threads = args.threads or torch.get_num_threads()
    if args.worker:
        return run_worker({row: simplellama_side for row in ROWS})
    worker = [sys.executable, "-m", "simplellama", "bench", "--worker"]
    results = run_rows(args, args.rows or list(ROWS), lambda row: [*worker, row])
    print(f"CPU: {cpu_description()}")
    print(f"embedded SmolLM2-135M GGUF, {args.prompt_tokens}-token prompt, {args.new_tokens} new "
          f"tokens, {args.threads} threads, median of {args.repeat}")  # fmt: skip
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0
