"""``make bench``: simplellama per weight format beside transformers and llama.cpp, then a 1B table.

Table 1 (``simplellama.bench``): the embedded SmolLM2 GGUF, one process per row, same prompt ids,
new-token count and threads; rows fp32 / bf16 / int8 / int4 / auto (each +compile where this
version compiles), transformers fp32 and llama.cpp on the same file (``benchmarks/peers.py``;
skipped with a line when llama-cpp-python does not import). Table 2 (``benchmarks/llama1b.py``): a
Llama-3.2-1B-shaped model against the measured read bandwidth, and the peak RSS of loading a
1B-shaped Meta checkpoint in float32 vs int4. Then the issue's targets, each met / not met.

    python -m benchmarks.compare [--threads 1] [--rows fp32,int4] [--json out.json] [--no-1b]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks import llama1b
from benchmarks.peers import llama_cpp_missing, llama_cpp_side, transformers_side
from simplellama.bench import ROWS, cpu_description, format_table, run_rows, run_worker, spawn
from simplellama.cli import add_bench_arguments

PEERS = {"transformers fp32": transformers_side, "llama.cpp": llama_cpp_side}
SELF = [sys.executable, "-m", "benchmarks.compare"]


def table_1b(args: argparse.Namespace) -> dict[str, Any]:
    """Decode of the 1B-shaped model per format, the bandwidth, and the load peaks."""
    job = {"threads": args.threads}
    out: dict[str, Any] = spawn([*SELF, "--worker", "1b"], {**job, "kind": "bandwidth"}, args.threads)
    out["decode"] = []
    for fmt in ("float32", "bfloat16", "int8", "int4"):
        print(f"1B-shaped {fmt}: building and decoding...", file=sys.stderr, flush=True)
        r = spawn([*SELF, "--worker", "1b"], {**job, "kind": "decode", "fmt": fmt, "steps": 8}, args.threads)
        r["bandwidth_pct"] = 100 * llama1b.bandwidth_fraction(r["bytes_per_token"], r["decode_tok_s"], out["bandwidth"])
        out["decode"].append(r)
    with tempfile.TemporaryDirectory(prefix="simplellama-1b-") as d:
        print("1B-shaped Meta checkpoint: writing, then loading...", file=sys.stderr, flush=True)
        spawn([*SELF, "--worker", "1b"], {**job, "kind": "write", "dir": d}, args.threads)
        out["checkpoint_mib"] = sum(f.stat().st_size for f in Path(d).iterdir()) / 2**20
        out["load"] = {
            q or "float32": spawn([*SELF, "--worker", "1b"], {**job, "kind": "load", "dir": d, "quantize": q}, 1)
            for q in (None, "int4")
        }
    return out


def format_1b(t: dict[str, Any]) -> str:
    lines = [f"read bandwidth {t['bandwidth'] / 1e9:.1f} GB/s (fastest read of a 1 GiB buffer)",
             f"{'format':10} {'decode tok/s':>12} {'MB/token':>9} {'% of bandwidth limit':>21}"]  # fmt: skip
    for r in t["decode"]:
        mb = r["bytes_per_token"] / 1e6
        lines.append(f"{r['fmt']:10} {r['decode_tok_s']:>12.2f} {mb:>9.0f} {r['bandwidth_pct']:>20.0f}%")
    f32, i4 = t["load"]["float32"], t["load"]["int4"]
    lines.append(
        f"load 1B-shaped Meta checkpoint (bf16, {t['checkpoint_mib']:.0f} MiB on disk); int4 quantized while streaming"
    )
    for name, r in (("float32", f32), ("int4", i4)):
        split = (
            f"; after loading: {r['anon_mib']:.0f} anonymous + {r['file_mib']:.0f} file pages"
            if "anon_mib" in r
            else ""
        )
        lines.append(f"  {name:8} peak RSS {r['peak_rss_mib']:6.0f} MiB, {r['load_s']:5.1f} s{split}")
    return "\n".join(lines)


def targets(results: list[dict[str, Any]], t1b: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of issue 15 (met None: not measured)."""
    by = {r["row"]: r for r in results}

    def best(prefixes: tuple[str, ...]) -> dict | None:
        rows = [r for r in results if r["row"].split("+")[0] in prefixes]
        return max(rows, key=lambda r: r["decode_tok_s"], default=None)

    def ratio(name: str, row: dict | None, base: str, key: str, goal: float) -> tuple:
        if row is None or base not in by:
            return (name, "not measured", None)
        x = row[key] / by[base][key]
        return (name, f"{x:.2f}x ({row['row']})", x >= goal)

    fp32, i4, i8 = by.get("fp32"), best(("int4", "auto")), best(("int8",))
    out = [
        ratio("SmolLM2 int4 decode >= 2.5x fp32", i4, "fp32", "decode_tok_s", 2.5),
        ratio("SmolLM2 int4 decode >= 0.6x llama.cpp", i4, "llama.cpp", "decode_tok_s", 0.6),
        ratio("SmolLM2 int8 decode >= 1.5x fp32", i8, "fp32", "decode_tok_s", 1.5),
    ]
    if "int8" in by:
        out.append(("int8 greedy agreement >= 90 %", f"{by['int8']['agreement']:.0%}", by["int8"]["agreement"] >= 0.9))
    for row in ("int4", "auto"):
        if row in by and fp32:
            rel = by[row]["perplexity"] / fp32["perplexity"] - 1
            out.append((f"{row} perplexity within 10 % of fp32", f"{rel:+.1%}", abs(rel) <= 0.10))
    if t1b:
        pct = next(r["bandwidth_pct"] for r in t1b["decode"] if r["fmt"] == "int4")
        out.append(("1B int4 decode >= 60 % of bandwidth limit", f"{pct:.0f} %", pct >= 60))
        lf, li = t1b["load"]["float32"], t1b["load"]["int4"]
        f32, i4l = lf["peak_rss_mib"], li["peak_rss_mib"]
        note = f"; anonymous {li['anon_mib'] / lf['anon_mib']:.2f}x" if "anon_mib" in li else ""
        out.append(("int4 load peak <= 0.35x fp32 load peak", f"{i4l / f32:.2f}x{note}", i4l / f32 <= 0.35))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    parser.add_argument("--no-1b", action="store_true", help="skip the Llama-3.2-1B-shaped table")
    args = parser.parse_args(argv)
    args.threads = args.threads or torch.get_num_threads()
    if args.worker == "1b":
        print(json.dumps(llama1b.worker(json.loads(sys.stdin.read()))), flush=True)
        return 0
    if args.worker:
        return run_worker(PEERS)
    rows = (args.rows or list(ROWS)) + list(PEERS)
    if (why := llama_cpp_missing()) is not None:
        print(why, flush=True)
        rows.remove("llama.cpp")
    cpu = cpu_description()
    print(f"CPU: {cpu}; {args.threads} thread(s); torch {torch.__version__}; {datetime.date.today()}", flush=True)

    def command(row: str) -> list[str]:
        return [*SELF, "--worker", row] if row in PEERS else [sys.executable, "-m", "simplellama", "bench",
                                                                "--worker", row]  # fmt: skip

    results = run_rows(args, rows, command)
    print(f"\nembedded SmolLM2-135M Q4_1 GGUF: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
          f"median of {args.repeat}; agree = teacher-forced top-1 agreement with our fp32 over "
          f"{args.new_tokens} steps x 3 prompts; ppl = perplexity of the Zen of Python")  # fmt: skip
    print(format_table(results, ("fp32", "llama.cpp")))
    t1b = None if args.no_1b else table_1b(args)
    if t1b:
        print(f"\nLlama-3.2-1B-shaped model, random weights, {args.threads} thread(s)")
        print(format_1b(t1b))
    met = targets(results, t1b)
    print("\ntargets (issue 15)")
    for name, value, ok in met:
        print(f"  {name:45} {value:36} {'met' if ok else 'not met' if ok is False else '-'}")
    if args.json:
        report = {"cpu": cpu, "threads": args.threads, "torch": torch.__version__, "date": str(datetime.date.today()),
                  "smollm2": results, "llama1b": t1b,
                  "targets": [{"target": n, "measured": v, "met": ok} for n, v, ok in met]}  # fmt: skip
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
