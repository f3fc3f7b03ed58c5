"""Runs fuzz cases (tests/fuzz_inputs.py) one by one under a memory limit and a per-case alarm.

    python tests/fuzz_worker.py LIMIT_MB CASE_SECONDS cases.jsonl > results.jsonl

Address space is limited to (what the process maps after its imports) + LIMIT_MB, so an allocation
the loaders should have refused fails here instead of swapping the machine (simplellama's memory
check reads the same limit). Each case gets CASE_SECONDS (SIGALRM); the parent also kills the
whole worker if a case never returns (a hang inside C code cannot see the alarm). Each result line:
``{"id", "outcome": "ok" | "error" | "crash" | "timeout", "type", "message", "seconds", "rss_mb"}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import resource
import signal
import sys
import time
import traceback


class CaseTimeout(BaseException):  # not an Exception: library code must not swallow it
    pass


def _status_bytes(key: str) -> int:
    """A /proc/self/status size: VmSize (address space), VmHWM (peak resident memory).

    Not ``getrusage``: its ru_maxrss keeps the peak of the process that forked us (pytest)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _run(op: str, path: str) -> None:
    import torch

    from simplellama import cli
    from simplellama.checkpoint import load_for_inference, read_header
    from simplellama.tokenizer import load_tokenizer

    if op == "load":  # as Llama.build loads: weights + KV cache checked to fit, then a forward pass
        _, model = load_for_inference(path, "cpu")
        model(torch.tensor([[0, 1, 2]]))
    elif op == "header":
        read_header(path)
    elif op == "tokenizer":
        load_tokenizer(path).decode([0])
    elif op in ("cli_info", "cli_generate"):
        argv = ["info", path] if op == "cli_info" else ["generate", "--model", path, "--prompt", "the",
                                                           "--max-new-tokens", "3", "--temperature", "0"]  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
        if code != 0:
            raise _CliError(code, err.getvalue())
    else:
        raise ValueError(f"unknown op {op}")


class _CliError(Exception):
    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(stderr)
        self.code, self.stderr = code, stderr


def main() -> None:
    limit_mb, seconds = int(sys.argv[1]), float(sys.argv[2])
    import torch  # noqa: F401  (imported before the limit is measured)

    import simplellama.checkpoint  # noqa: F401
    import simplellama.cli  # noqa: F401
    from simplellama.errors import SimpleLlamaError

    logging.disable(logging.CRITICAL)
    torch.set_num_threads(1)
    budget = _status_bytes("VmSize") + limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (budget, budget))

    def alarm(signum, frame):  # noqa: ARG001
        raise CaseTimeout()

    signal.signal(signal.SIGALRM, alarm)
    with open(sys.argv[3]) as f:
        cases = [json.loads(line) for line in f]
    for case in cases:
        t0 = time.perf_counter()
        out = {"id": case["id"], "outcome": "ok", "type": "", "message": ""}
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            _run(case["op"], case["path"])
        except CaseTimeout:
            out.update(outcome="timeout")
        except _CliError as e:
            ok = e.code == 1 and e.stderr.count("\n") == 1 and e.stderr.startswith("simplellama: error: ")
            out.update(outcome="error" if ok else "crash", type=f"exit {e.code}", message=e.stderr)
        except SimpleLlamaError as e:
            out.update(outcome="error", type=type(e).__name__, message=str(e))
        except BaseException as e:  # noqa: BLE001 (anything else is what the fuzz test hunts)
            tb = traceback.format_exception(e)[-3:]
            out.update(outcome="crash", type=type(e).__name__, message=str(e)[:500] + " | " + "".join(tb)[-800:])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        out["rss_mb"] = round(_status_bytes("VmHWM") / 2**20)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
