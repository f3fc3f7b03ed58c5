"""The book as a reader sees it: every page of `make book` opened in headless Chromium (Debian's
/usr/bin/chromium). Marked `browser`: `make test` skips it, `make browser-test` and `.ci/run` run it.

The checker must be able to fail, so it is first shown a tiny site and then the same site (and a real
page of the book) with an image removed, a link broken, raw TeX and a console error: each is reported.
Screenshots of the landing page and of one notebook page go to _build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from notebooks.tools import book
from notebooks.tools.browser import Chromium, check_site

pytestmark = pytest.mark.browser

SCREENSHOTS = book.REPO / "_build" / "screenshots"
NOTEBOOK_PAGE = "10_rope.html"  # math and figures near the top


@pytest.fixture(scope="module")
def chromium():
    with Chromium() as browser:
        yield browser


def _tiny_site(root: Path) -> Path:
    root.mkdir(parents=True)
    Image.new("RGB", (8, 6), (200, 40, 40)).save(root / "fig.png")
    (root / "index.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
        '<h1 id="top">Tiny</h1><p>A figure:</p><img src="fig.png" alt="fig">'
        '<p><a href="page.html#part">part two</a>, <a href="#top">top</a>, <code>$$ in code is fine</code></p>'
        "</body></html>"
    )
    (root / "page.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>p</title></head><body>'
        '<h2 id="part">Part</h2><p><math><mi>x</mi></math> and <a href="index.html">back</a></p></body></html>'
    )
    return root


def test_a_sound_site_passes(chromium: Chromium, tmp_path: Path) -> None:
    report = check_site(_tiny_site(tmp_path / "site"), chromium)
    assert report.problems == []
    assert sorted(report.pages) == ["index.html", "page.html"]
    assert report.pages["index.html"].figures == 1 and report.pages["page.html"].math == 1


def test_a_removed_image_is_reported(chromium: Chromium, tmp_path: Path) -> None:
    site = _tiny_site(tmp_path / "site")
    (site / "fig.png").unlink()
    problems = check_site(site, chromium).problems
    assert any("image did not load (naturalWidth 0): 'fig.png'" in p for p in problems), problems
    assert any(p.startswith("index.html: ") and "fig.png" in p and "ERR_FILE_NOT_FOUND" in p for p in problems), (
        problems
    )


def test_broken_links_are_reported(chromium: Chromium, tmp_path: Path) -> None:
    site = _tiny_site(tmp_path / "site")
    (site / "index.html").write_text((site / "index.html").read_text().replace("page.html#part", "pages.html"))
    (site / "page.html").write_text((site / "page.html").read_text().replace("index.html", "index.html#nowhere"))
    problems = check_site(site, chromium).problems
    assert any(p.startswith("index.html: broken link to file://") and p.endswith("/pages.html") for p in problems)
    assert any(p.startswith("page.html: broken link") and "no element with id 'nowhere'" in p for p in problems)
    assert len(problems) == 2, problems


def test_raw_tex_and_console_errors_are_reported(chromium: Chromium, tmp_path: Path) -> None:
    site = _tiny_site(tmp_path / "site")
    (site / "page.html").write_text(
        "<html><body><p>$$ \\frac{1}{2} $$ and \\(x\\) and $q\\cdot k$</p><math><mi>\\arg</mi></math>"
        '<script>console.error("boom")</script><img src="https://example.org/x.png"></body></html>'
    )
    problems = [p for p in check_site(site, chromium).problems if p.startswith("page.html: ")]
    for expected in ("unrendered math '$$'", "unrendered math '\\\\('", "unrendered math: '$q\\\\cdot k$'"):
        assert any(expected in p for p in problems), (expected, problems)
    assert any("'\\\\arg' inside a formula" in p for p in problems), problems
    assert any("console.error: boom" in p for p in problems), problems
    assert any("network request (the book must work offline): https://example.org/x.png" in p for p in problems)


def test_the_book_in_chromium(chromium: Chromium, tmp_path: Path) -> None:
    written = book.build()  # _build/html, from the notebooks as stored
    site = book.DEFAULT_OUT
    notebook_page = NOTEBOOK_PAGE if (site / NOTEBOOK_PAGE).exists() else written[1].name
    shots = {
        "index.html": SCREENSHOTS / "index.png",
        notebook_page: SCREENSHOTS / notebook_page.replace(".html", ".png"),
    }
    report = check_site(site, chromium, screenshots=shots)
    assert report.problems == [], "\n".join(report.problems)
    assert sorted(report.pages) == sorted(p.relative_to(site).as_posix() for p in written)
    for page in book.discover():
        if page.group == "Notebooks":  # every notebook draws something (tests/test_notebooks_meta.py)
            assert report.pages[page.out].figures > 0, f"{page.out}: no figure on the page"
        if page.nb is not None and re.search(
            r"\$[^$]+\$", "".join(c.source for c in page.nb.cells if c.cell_type == "markdown")
        ):
            assert report.pages[page.out].math > 0, f"{page.out}: its markdown has math but the page shows none"
    index_links = {link.rsplit("/", 1)[-1] for link in report.pages["index.html"].links}
    missing = [p.out for p in book.discover() if p.group == "Notebooks" and p.out not in index_links]
    assert not missing, f"the landing page does not link to {missing}"
    assert all(path.stat().st_size > 10_000 for path in shots.values())

    # The same checks fail on a damaged copy of a real page: one figure's file gone, one link broken.
    damaged = tmp_path / "damaged"
    shutil.copytree(site, damaged)
    html = (damaged / notebook_page).read_text()
    html, n_img = re.subn(r'(<img [^>]*\bsrc=")data:image/png;base64,[^"]*"', r'\1figure-1.png"', html, count=1)
    html, n_link = re.subn(r'(<a (?=[^>]*\brel="next")[^>]*\bhref="[^"]+)\.html"', r'\1-renamed.html"', html, count=1)
    assert n_img == 1 and n_link == 1, f"{notebook_page}: expected a PNG figure and a next link to damage"
    (damaged / notebook_page).write_text(html)
    problems = check_site(damaged, chromium, pages=[notebook_page]).problems
    assert any("image did not load (naturalWidth 0): 'figure-1.png'" in p for p in problems), problems
    assert any("broken link" in p and "-renamed.html" in p for p in problems), problems
