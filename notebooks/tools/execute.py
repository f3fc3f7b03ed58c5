"""Execute notebooks headless, in place, with the project's venv (`make notebooks`).

Stored outputs are for readers who open a notebook on the repository's web page; `make test` still runs
every notebook from scratch. So that the stored outputs change only when the code or the package does,
this executor

- runs each notebook in a fresh kernel with fixed settings: PYTHONHASHSEED=0 (set/dict order in printed
  output), one torch/BLAS thread (same float summation order on any core count), TZ=UTC, and an empty
  IPython profile whose only settings are PNG figures at a modest dpi (no user start-up files);
- normalises what still varies between machines and runs: absolute paths of this checkout, the venv and
  the temp directory become placeholders, `at 0x7f...` addresses become `at 0x...`, log-line timestamps
  become `<time>`, kernel metadata keeps only the language name and lexer, no timing metadata;
- records `metadata.simplellama.code_sha256`, a hash of the notebook's code cells, so a test can tell
  that the stored outputs came from the stored code (tests/test_notebooks_executed.py).

A notebook that fails is named with its cell and error, and is left unchanged (written via temp file).

    python -m notebooks.tools.execute [NOTEBOOK ...] [--jobs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import site
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_GLOBS = ("notebooks/[0-9][0-9]_*.ipynb", "notebooks/solutions/*.ipynb")
METADATA_KEY = "simplellama"  # nb.metadata[METADATA_KEY]["code_sha256"]
FIGURE_DPI = 80  # matplotlib's default is 100; (10, 3) inch figures become 800x240 px PNGs
CELL_TIMEOUT_S = 600

# IPython kernel configuration, written to a throw-away IPYTHONDIR for each run.
KERNEL_CONFIG = f"""
c.InlineBackend.figure_formats = {{"png"}}
c.InlineBackend.rc = {{"figure.dpi": {FIGURE_DPI}}}
c.HistoryManager.enabled = False
"""

# A widget (a tqdm bar in a notebook) cannot render without a live kernel, and its text/plain fallback is
# its state when created ("0%|  | 0/272"): such outputs are not stored.
WIDGET_MIME_TYPE = "application/vnd.jupyter.widget-view+json"

ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
MKDTEMP_NAME = re.compile(r"(<tmp>/tmp)[a-z0-9_]{8}(?![\w.-])")  # tempfile.mkdtemp()'s random name
ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{6,16}\b")
# 2024-05-01 12:34:56,789 / 2024-05-01T12:34:56.789Z / [12:34:56] at the start of a line
LOG_TIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\b"
    r"|(?m:^\[?\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\]?)"
)


def notebook_paths(args: list[str]) -> list[Path]:
    """The notebooks named on the command line, or every notebook (and solutions notebook) in order."""
    if args:
        paths = [Path(a).resolve() for a in args]
        missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
        if missing:
            raise SystemExit(f"make notebooks: not a notebook file: {', '.join(missing)}")
        return paths
    return [p for pattern in NOTEBOOK_GLOBS for p in sorted(REPO.glob(pattern))]


def code_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 of the notebook's code cells, insensitive to trailing spaces and blank lines at cell ends."""
    cells = [
        "\n".join(line.rstrip() for line in c.source.strip().splitlines()) for c in nb.cells if c.cell_type == "code"
    ]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def stored_code_hash(nb: nbformat.NotebookNode) -> str | None:
    """The code hash `make notebooks` recorded when it executed this notebook (None: never executed)."""
    return nb.metadata.get(METADATA_KEY, {}).get("code_sha256")


def _path_replacements() -> list[tuple[str, str]]:
    """Machine-specific path prefixes, longest first, and the placeholder each becomes."""
    pairs = {REPO: "<repo>", Path(tempfile.gettempdir()): "<tmp>", Path.home(): "~"}
    if sys.prefix != sys.base_prefix:  # a venv (never /usr of a system python)
        pairs[Path(sys.prefix)] = "<venv>"
    for sp in site.getsitepackages():
        pairs[Path(sp)] = "<site-packages>"
    out = []
    for path, placeholder in pairs.items():
        for variant in {str(path), str(path.resolve())}:
            if len(variant) > 1:
                out.append((variant, placeholder))
    return sorted(out, key=lambda pair: -len(pair[0]))


def normalise_text(text: str, replacements: list[tuple[str, str]]) -> str:
    """Replace this machine's paths, memory addresses and log timestamps with stable placeholders."""
    for old, new in replacements:
        text = re.sub(re.escape(old) + r"(?![\w.-])", new, text)  # whole path components only
    text = MKDTEMP_NAME.sub(r"\1XXXXXXXX", text)
    text = ADDRESS.sub("at 0x...", text)
    return LOG_TIME.sub("<time>", text)


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip volatile metadata and machine-specific text from an executed notebook (in place)."""
    replacements = _path_replacements()
    fix = lambda s: normalise_text(s, replacements)  # noqa: E731
    lexer = nb.metadata.get("language_info", {}).get("pygments_lexer", "ipython3")
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": lexer}
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [out for out in cell.outputs if WIDGET_MIME_TYPE not in out.get("data", {})]
        # One stream output per flush depends on timing: merge them, and keep what \r left on screen.
        CoalesceStreamsPreprocessor().preprocess_cell(cell, {}, i)
        for out in cell.outputs:
            if "text" in out:
                out.text = fix(out.text)
            if "traceback" in out:
                out.traceback = [fix(line) for line in out.traceback]
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") or mime == "image/svg+xml":
                    out.data[mime] = fix(value)
    nb.metadata[METADATA_KEY] = {"code_sha256": code_hash(nb)}
    return nb


def _kernel_env(ipython_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONHASHSEED="0",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TZ="UTC",
        IPYTHONDIR=ipython_dir,
        PYDEVD_DISABLE_FILE_VALIDATION="1",  # the debugger's "frozen modules" warning on stderr
    )
    env.pop("MPLBACKEND", None)
    return env


def execute_one(path: Path) -> tuple[Path, float, str | None]:
    """Execute one notebook in place. Returns (path, seconds, error line or None); on error the file is kept."""
    from jupyter_client import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    start = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="simplellama-ipython-") as ipython_dir:
        profile = Path(ipython_dir, "profile_default")
        profile.mkdir()
        (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
        # IPC transport: no TCP ports, and no "running over TCP without encryption" warning.
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(ipython_dir, "kernel")))
        client = NotebookClient(
            nb,
            km=km,
            timeout=CELL_TIMEOUT_S,
            resources={"metadata": {"path": str(path.parent)}},
            record_timing=False,
            store_widget_state=False,
        )
        try:
            client.execute(env=_kernel_env(ipython_dir))
        except (CellExecutionError, CellTimeoutError) as exc:
            cell = next((i for i, c in enumerate(nb.cells) if getattr(c, "outputs", None) and _has_error(c)), None)
            where = f"cell {cell}" if cell is not None else "a cell"
            last = [ln for ln in ANSI_COLOUR.sub("", str(exc)).splitlines() if ln.strip()]
            return path, time.perf_counter() - start, f"{where} failed: {last[-1] if last else type(exc).__name__}"
        finally:
            if km.has_kernel:  # nbclient leaves a kernel it did not start running
                km.shutdown_kernel()
    normalise(nb)
    nbformat.validate(nb)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".ipynb.tmp", delete=False, encoding="utf-8") as tmp:
        nbformat.write(nb, tmp)
    os.replace(tmp.name, path)
    return path, time.perf_counter() - start, None


def _has_error(cell: nbformat.NotebookNode) -> bool:
    return any(out.get("output_type") == "error" for out in cell.outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to execute (default: all, in order)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    args = parser.parse_args(argv)
    paths = notebook_paths(args.notebooks)
    if not paths:
        raise SystemExit(f"make notebooks: no notebooks found under {REPO / 'notebooks'}")
    failed = []
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(paths)))) as pool:
        futures = [pool.submit(execute_one, p) for p in paths]
        for fut in as_completed(futures):
            path, seconds, error = fut.result()
            name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            if error:
                failed.append(name)
                print(f"FAILED {name} ({seconds:.0f} s): {error}", flush=True)
            else:
                print(f"ok     {name} ({seconds:.0f} s)", flush=True)
    if failed:
        print(f"{len(failed)} of {len(paths)} notebooks failed and were left unchanged: {', '.join(map(str, failed))}")
        return 1
    size = sum(f.stat().st_size for f in (REPO / "notebooks").rglob("*.ipynb"))
    print(f"executed {len(paths)} notebooks; notebooks/*.ipynb now {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
