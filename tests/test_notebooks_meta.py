"""Static checks on notebooks/NN_topic.ipynb (no execution; `make test` runs them with --nbmake).

The rules come from STYLE.md: notebooks import the packages and never keep their own copy of a package
class, claims are `assert` cells, at least one picture, goal ... what comes next, roughly 40 cells / 300
code lines. (Outputs are stored executed: tests/test_notebooks_executed.py checks they match the code.)
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
MAX_CELLS, MAX_CODE_LINES = 45, 320  # STYLE.md: "aim for ~40 cells / ~300 code lines at most"
PACKAGE_IMPORT = re.compile(r"^\s*(import|from)\s+(tinytorch|simplellama|subroutines)\b", re.MULTILINE)
FIGURE = re.compile(r"\bplt\.|\bdraw_dot\(|\.imshow\(|\.plot\(|\bDigraph\(")


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _python(source: str) -> str:
    """A cell's source without IPython magics (lines starting with % or !), so ast can parse it."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _package_class_names() -> set[str]:
    """Public classes of simplellama and tinytorch (names in each module's __all__ that are classes)."""
    names: set[str] = set()
    for pkg_name in ("simplellama", "tinytorch"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name in ("__main__", "cli"):
                continue
            try:
                mod = importlib.import_module(f"{pkg_name}.{info.name}")
            except Exception:  # a module another helper is still writing must not break these checks
                continue
            for name in getattr(mod, "__all__", []):
                if isinstance(getattr(mod, name, None), type):
                    names.add(name)
    return names


def test_notebooks_exist() -> None:
    assert len(NOTEBOOKS) >= 8, f"expected notebooks 00..07 in {NOTEBOOK_DIR}, found {[p.name for p in NOTEBOOKS]}"
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert len(set(numbers)) == len(numbers), f"two notebooks share a number: {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_valid_with_python3_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec name must be python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_structure(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = _code(nb)
    lines = sum(len([ln for ln in src.splitlines() if ln.strip()]) for src in code)
    assert len(nb.cells) <= MAX_CELLS, f"{path.name}: {len(nb.cells)} cells, expected at most {MAX_CELLS}"
    assert lines <= MAX_CODE_LINES, f"{path.name}: {lines} code lines, expected at most {MAX_CODE_LINES}"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[0].cell_type == "markdown" and "goal" in nb.cells[0].source.lower(), (
        f"{path.name}: the first cell must state the goal"
    )
    assert re.search(r"what comes next|next steps|where to go next", markdown, re.IGNORECASE), (
        f"{path.name}: expected a 'What comes next' section"
    )
    all_code = "\n".join(code)
    assert PACKAGE_IMPORT.search(all_code), f"{path.name}: expected an import of tinytorch, simplellama or subroutines"
    n_asserts = sum(isinstance(node, ast.Assert) for src in code for node in ast.walk(ast.parse(_python(src))))
    assert n_asserts >= 3, f"{path.name}: claims are assert cells; found only {n_asserts} asserts"
    assert FIGURE.search(all_code), f"{path.name}: expected at least one figure (matplotlib or graphviz)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_copies_of_package_classes(path: Path) -> None:
    package_classes = _package_class_names()
    nb = nbformat.read(path, as_version=4)
    for src in _code(nb):
        for node in ast.walk(ast.parse(_python(src))):
            if isinstance(node, ast.ClassDef):
                assert node.name not in package_classes, (
                    f"{path.name}: defines class {node.name}, a copy of a package class; import it instead"
                )
