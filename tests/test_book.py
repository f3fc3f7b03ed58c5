"""`make book` on a tiny repository (no browser; tests/test_book_browser.py opens the real book in Chromium):
pages in reading order, math as MathML, links between notebooks rewritten, nothing loaded from the network.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from notebooks.tools.book import REMOTE_ASSET, BookError, build, github_anchor


def _notebook(path: Path, *cells: nbformat.NotebookNode) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _pager(html: str) -> dict[str, str]:
    """The prev/next links of a page (attribute order is nbconvert's)."""
    tags = re.findall(r'<a [^>]*\brel="(prev|next)"[^>]*>', html)
    found = {m.group(1): m.group(2) for m in re.finditer(r'<a (?=[^>]*\brel="(prev|next)")[^>]*\bhref="([^"]*)"', html)}
    assert len(tags) == 2 * len(found), "each page shows its prev/next links above and below"
    return found


def _tiny_repo(root: Path, link: str = "01_next.ipynb#Goal") -> Path:
    root.mkdir()
    (root / "README.md").write_text(
        "# Tiny\n\nPlatform notes: [requirements](REQUIREMENTS.md).\n\n"
        "| notebook | concepts |\n|---|---|\n| 00_first | the $x^2$ curve |\n| 01_next | more |\n"
    )
    (root / "REQUIREMENTS.md").write_text("# Requirements\n")
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    _notebook(
        root / "notebooks" / "00_first.ipynb",
        md(
            "# 00 · First\n\n**Goal.** Inline $\\sqrt{D_h}$ and a block:\n\n$$ \\frac{1}{2} x^2 $$\n\n"
            f"On to [next]({link})."
        ),
        code("x = 1"),
    )
    _notebook(
        root / "notebooks" / "01_next.ipynb", md("# 01 · Next\n\n## Goal\n\nBack to [the start](00_first.ipynb).")
    )
    _notebook(
        root / "notebooks" / "solutions" / "01_next_solutions.ipynb",
        md("# Solutions to 01\n\nSee [01](../01_next.ipynb)."),
    )
    return root


def test_pages_math_and_links(tmp_path: Path) -> None:
    repo = _tiny_repo(tmp_path / "repo")
    out = tmp_path / "site"
    written = build(out, repo_url="https://example.org/blob/abc", repo=repo)
    assert [p.relative_to(out).as_posix() for p in written] == [
        "index.html",
        "00_first.html",
        "01_next.html",
        "solutions/01_next_solutions.html",
    ]
    index = (out / "index.html").read_text()
    assert 'href="00_first.html"' in index and 'href="01_next.html"' in index  # README's table names link
    assert 'href="https://example.org/blob/abc/REQUIREMENTS.md"' in index  # other repo files: --repo-url
    first = (out / "00_first.html").read_text()
    assert first.count("<math") == 2 and 'display="block"' in first and "<msqrt>" in first
    assert "$" not in re.sub(r"<pre.*?</pre>", "", first, flags=re.S)  # no TeX left for a script to find
    assert 'href="01_next.html#Goal"' in first
    assert _pager(first) == {"prev": "index.html", "next": "01_next.html"}
    solution = (out / "solutions" / "01_next_solutions.html").read_text()
    assert 'href="../01_next.html"' in solution and 'href="../assets/book.css"' in solution
    assert not any(REMOTE_ASSET.search(p.read_text()) for p in written), "a page loads something from the network"
    assert (out / "assets" / "jupyterlab.css").stat().st_size > 10_000


def test_local_links_to_repository_files_without_a_repo_url(tmp_path: Path) -> None:
    repo = _tiny_repo(tmp_path / "repo")
    build(tmp_path / "site", repo=repo)
    assert 'href="../repo/REQUIREMENTS.md"' in (tmp_path / "site" / "index.html").read_text()


def test_a_link_to_a_missing_notebook_stops_the_build(tmp_path: Path) -> None:
    repo = _tiny_repo(tmp_path / "repo", link="02_missing.ipynb")
    with pytest.raises(BookError, match=r"notebooks/00_first.ipynb: link to '02_missing.ipynb'.*does not exist"):
        build(tmp_path / "site", repo=repo)
    assert not (tmp_path / "site").exists(), "a failed build must not leave a half-written site"


def test_math_that_cannot_be_rendered_is_named(tmp_path: Path) -> None:
    repo = _tiny_repo(tmp_path / "repo")
    _notebook(repo / "notebooks" / "02_bad.ipynb", nbformat.v4.new_markdown_cell("# 02\n\n$\\notacommand x$"))
    with pytest.raises(BookError, match=r"notebooks/02_bad.ipynb: cannot render math .*unknown command \\notacommand"):
        build(tmp_path / "site", repo=repo)


def test_headings_carry_github_ids():
    """README links use GitHub's heading ids (lower case, punctuation but - and _ dropped, spaces -> -);
    the book gives each heading that id too, so they resolve in the browser (tests/test_book_browser.py)."""
    assert github_anchor("Running Llama 3.x on a laptop") == "running-llama-3x-on-a-laptop"
    assert github_anchor("Speed (<code>make bench</code>)") == "speed-make-bench"
