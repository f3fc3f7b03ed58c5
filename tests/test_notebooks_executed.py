"""The notebooks are stored executed (`make notebooks`) so readers see their figures on the repository's
web page. These checks run without executing anything: the stored outputs came from the stored code, carry
nothing of the machine that made them, and notebooks/ stays small. (`make test` still executes every
notebook from scratch with nbmake: the stored outputs are for readers, not a reference.)
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from notebooks.tools.execute import REPO, code_hash, normalise, notebook_paths, stored_code_hash

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = notebook_paths([])
MAX_NOTEBOOKS_BYTES = 15_000_000  # the budget for notebooks/ with outputs (15 MB)
# What a path, an object address or a venv looks like when it leaked from the machine that ran `make notebooks`.
MACHINE_SPECIFIC = re.compile(
    r"/site-packages/|/\.venv/|/home/\w|/root/|/Users/\w|[A-Z]:\\Users\\|/tmp/tmp\w{8}|\bat 0x[0-9a-fA-F]{6,}"
)


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def _output_texts(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    texts = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            texts += [(i, out.get("text", "")), *((i, line) for line in out.get("traceback", []))]
            texts += [(i, v) for mime, v in out.get("data", {}).items() if mime.startswith("text/")]
    return texts


def test_every_notebook_is_found() -> None:
    assert len(NOTEBOOKS) >= 8, f"expected notebooks under {NOTEBOOK_DIR}, found {[_name(p) for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_outputs_come_from_the_stored_code(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    fix = f"run `make notebooks NB={_name(path)}` (or `make notebooks` for all) and commit the result"
    stored = stored_code_hash(nb)
    assert stored is not None, (
        f"{_name(path)} was not executed by `make notebooks` (no code hash in its metadata); {fix}"
    )
    assert stored == code_hash(nb), f"{_name(path)}: code cells changed since its outputs were made; {fix}"
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not not_run, f"{_name(path)}: code cells {not_run} have no stored execution (outputs stripped?); {fix}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_outputs_hold_nothing_of_the_machine(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    leaks = [(i, m.group(0)) for i, text in _output_texts(nb) for m in MACHINE_SPECIFIC.finditer(text)]
    assert not leaks, f"{_name(path)}: machine-specific text in outputs (cell, text): {leaks[:5]}"
    assert set(nb.metadata.get("language_info", {})) <= {"name", "pygments_lexer"}, f"{_name(path)}: kernel metadata"


def test_notebooks_folder_is_small() -> None:
    files = [
        f for f in NOTEBOOK_DIR.rglob("*") if f.is_file() and not {"__pycache__", ".ipynb_checkpoints"} & set(f.parts)
    ]
    total = sum(f.stat().st_size for f in files)
    largest = sorted(files, key=lambda f: -f.stat().st_size)[:3]
    assert total < MAX_NOTEBOOKS_BYTES, (
        f"notebooks/ holds {total / 1e6:.1f} MB, expected under {MAX_NOTEBOOKS_BYTES / 1e6:.0f} MB; largest: "
        + ", ".join(f"{_name(f)} {f.stat().st_size / 1e6:.1f} MB" for f in largest)
    )


def test_editing_a_code_cell_makes_the_outputs_stale() -> None:
    """The check above can fail: a code edit changes the hash, a prose or whitespace edit does not."""
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    before = code_hash(nb)
    code = next(c for c in nb.cells if c.cell_type == "code")
    markdown = next(c for c in nb.cells if c.cell_type == "markdown")
    markdown.source += "\n\nOne more sentence."
    code.source += "   \n\n"
    assert code_hash(nb) == before
    code.source += "\nx = 1"
    assert code_hash(nb) != before


def test_normalise_strips_what_varies_between_runs() -> None:
    import sys
    import tempfile

    tmp = tempfile.gettempdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('x')", execution_count=1)
    cell.metadata["execution"] = {"iopub.execute_input": "2025-01-01T10:00:00.000001Z"}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"wrote {tmp}/tmpab_cd123/ckpt\n"),
        nbformat.v4.new_output("stream", name="stdout", text=f"read {REPO}/notebooks/x.txt from {sys.prefix}\n"),
        nbformat.v4.new_output("stream", name="stderr", text="2025-01-01 10:00:00,123 INFO loaded\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "<Foo at 0x7f3a2b1c4d50>"}, execution_count=1),
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.jupyter.widget-view+json": {"model_id": "abc"}, "text/plain": "0%| | 0/9"},
        ),
    ]
    nb.cells.append(cell)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "pygments_lexer": "ipython3"}
    normalise(nb)
    outs = nb.cells[0].outputs
    assert [o.output_type for o in outs] == ["stream", "stream", "execute_result"]  # streams merged, widget gone
    assert outs[0].text == "wrote <tmp>/tmpXXXXXXXX/ckpt\nread <repo>/notebooks/x.txt from <venv>\n"
    assert outs[1].text == "<time> INFO loaded\n"
    assert outs[2].data["text/plain"] == "<Foo at 0x...>"
    assert "execution" not in nb.cells[0].metadata
    assert nb.metadata.language_info == {"name": "python", "pygments_lexer": "ipython3"}
    assert stored_code_hash(nb) == code_hash(nb)
