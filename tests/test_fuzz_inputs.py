"""Fuzz: seeded mutations of every input SimpleLlama reads end in a load or in one clear line.

Each case (tests/fuzz_inputs.py) is a mutated copy of a tiny valid checkpoint or tokenizer file:
truncated, bytes flipped, JSON values of the wrong type or size, wrong tensor dtypes/shapes/values,
inconsistent shards, paths out of the checkpoint, FIFOs, directories, huge sizes. A worker process
(tests/fuzz_worker.py) loads it under an address-space limit with a per-case alarm. Every case
must end either in a successful load (and a forward pass) or in a ``SimpleLlamaError`` (the CLI:
exit 1) whose message is one line naming the case's file, within the time limit, and the worker's
memory must stay bounded. ``make test`` runs a fast sample; ``pytest -m fuzz_long`` a long run
(``FUZZ_CASES``, ``FUZZ_SEED`` to change size and seed).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz_inputs import build_bases, make_case

# The worker bounds memory with RLIMIT_AS and measures it in /proc/self/status: Linux only.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc, RLIMIT_AS)")

WORKER = Path(__file__).with_name("fuzz_worker.py")
CASE_SECONDS = 10.0  # "within a few seconds": generous for a loaded 2-core machine
LIMIT_MB = 1536  # address space a worker may add after its imports
RSS_LIMIT_MB = 1024  # peak resident memory of a worker (about 260 MB after its imports)


def _run_cases(cases: list[dict], tmp: Path) -> dict[int, dict]:
    """Results by case id; a worker that stops answering is killed and its case marked 'hang'."""
    results: dict[int, dict] = {}
    pending = list(cases)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    for attempt in range(len(cases)):
        if not pending:
            break
        todo = tmp / f"cases_{attempt}.jsonl"  # a file, not a pipe: the worker reads at its own pace
        todo.write_text("".join(json.dumps(c) + "\n" for c in pending))
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(LIMIT_MB), str(CASE_SECONDS), str(todo)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp,
        )  # fmt: skip
        try:
            deadline_each = CASE_SECONDS + 60  # the first case also waits for the worker's imports
            while pending:
                ready, _, _ = select.select([proc.stdout], [], [], deadline_each)
                line = proc.stdout.readline() if ready else ""
                if not line:  # hung in C code, or died (e.g. killed by the OS): this case is at fault
                    case = pending.pop(0)
                    results[case["id"]] = {"id": case["id"], "outcome": "hang", "message": f"rc={proc.poll()}"}
                    break
                r = json.loads(line)
                results[r["id"]] = r
                pending = [c for c in pending if c["id"] != r["id"]]
                deadline_each = CASE_SECONDS + 20
        finally:
            proc.kill()
            proc.wait()
    return results


def _problems(cases: list[dict], results: dict[int, dict]) -> list[str]:
    bad = []
    for c in cases:
        r = results[c["id"]]
        where = f"case {c['id']} ({c['op']}, {c['what']}): {r['outcome']}"
        if r["outcome"] == "ok":
            continue
        msg = r.get("message", "")
        if r["outcome"] != "error":
            bad.append(f"{where}: {r.get('type')}: {msg}")
        elif msg.strip().count("\n") or not msg.strip():
            bad.append(f"{where}: message is not one line: {msg!r}")
        elif c["root"] not in msg:
            bad.append(f"{where}: message does not name the file: {msg!r}")
        elif r["seconds"] > CASE_SECONDS:
            bad.append(f"{where}: took {r['seconds']} s")
    peak = max((r.get("rss_mb", 0) for r in results.values()), default=0)
    if peak > RSS_LIMIT_MB:
        bad.append(f"worker peak RSS {peak} MB > {RSS_LIMIT_MB} MB")
    return bad


def _fuzz(tmp_path: Path, n: int, seed: int) -> tuple[list[dict], dict[int, dict]]:
    bases = build_bases(tmp_path / "bases")
    cases = [make_case(bases, tmp_path / "cases", i, seed) for i in range(n)]
    t0 = time.perf_counter()
    results = _run_cases(cases, tmp_path)
    peak = max(r.get("rss_mb", 0) for r in results.values())
    print(f"{n} fuzz cases in {time.perf_counter() - t0:.1f} s, worker peak RSS {peak} MB")
    return cases, results


def test_fuzz_inputs_fast(tmp_path):
    """A fixed sample (40 of each input kind), seed 19: every outcome is a load or one line."""
    cases, results = _fuzz(tmp_path, 360, seed=19)
    assert not _problems(cases, results), "\n".join(_problems(cases, results))
    outcomes = [r["outcome"] for r in results.values()]
    assert outcomes.count("error") > len(cases) // 2  # the mutations do break things


@pytest.mark.fuzz_long
def test_fuzz_inputs_long(tmp_path):
    n, seed = int(os.environ.get("FUZZ_CASES", "2000")), int(os.environ.get("FUZZ_SEED", "1"))
    cases, results = _fuzz(tmp_path, n, seed)
    problems = _problems(cases, results)
    assert not problems, f"{len(problems)} of {n}:\n" + "\n".join(problems[:50])
