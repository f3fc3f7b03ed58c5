"""Build the book (`make book`): a static HTML site in _build/html/ from the notebooks as stored.

The landing page is README.md (its notebook table links to the pages); then notebooks/NN_*.ipynb in
reading order and notebooks/solutions/*.ipynb, each with a sidebar and prev/next links. Pages are
JupyterLab's nbconvert template without any remote script: math is converted to MathML here, at build
time, by latex2mathml (pure Python), so pages need no MathJax/KaTeX, no web font and no network, now or
when a reader opens them, and any current browser renders them. Figures are the stored PNG/SVG outputs,
embedded in the page. Links between notebooks (`10_rope.ipynb#Goal`) become links between pages; links to
other files of the repository point to `--repo-url` (the CI workflow passes the blob URL of the commit)
or, without it, to the file in this checkout. A link to a missing file stops the build with its name.

    python -m notebooks.tools.book [--out _build/html] [--repo-url URL]
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
from jinja2 import pass_context
from jupyter_core.paths import jupyter_path
from latex2mathml.converter import convert as latex_to_mathml_string
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
DEFAULT_OUT = REPO / "_build" / "html"
# A <script>/<link>/<img>/... that loads from another host, or a CSS url() that does: the book must not.
REMOTE_ASSET = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//|@import\s+[\"'](?:https?:)?//",
    re.IGNORECASE,
)

UNKNOWN_COMMAND = re.compile(r">(\\[A-Za-z]+)<")
# Standard LaTeX operator names latex2mathml 3.81 does not know (it would print "\arg" as text).
STANDARD_OPERATORS = re.compile(r"\\(arg)(?![A-Za-z])")


class BookError(Exception):
    """A problem in the sources that stops the build (names the file and what is wrong)."""


@dataclass
class Page:
    """One page of the book: its source file, its output path (posix, relative to the site) and title."""

    src: Path
    out: str
    title: str
    group: str | None = None
    nb: nbformat.NotebookNode = field(repr=False, default=None)


def _rel(path: Path, repo: Path = REPO) -> str:
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


def href(target: str, page_out: str) -> str:
    """The relative link from page `page_out` to site path `target` (both posix, relative to the site)."""
    return posixpath.relpath(target, posixpath.dirname(page_out) or ".")


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown heading of a notebook as plain text (`# 10 · RoPE: ...` -> `10 · RoPE: ...`)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return re.sub(r"[*_`$]", "", line.lstrip("#")).strip() or fallback
    return fallback


def readme_notebook(readme: Path, notebook_stems: set[str]) -> nbformat.NotebookNode:
    """README.md as a one-cell notebook, with notebook names in its tables turned into links."""
    text = readme.read_text(encoding="utf-8")

    def link(m: re.Match) -> str:
        stem = m.group(2)
        return f"{m.group(1)}[{stem}](notebooks/{stem}.ipynb){m.group(3)}" if stem in notebook_stems else m.group(0)

    text = re.sub(r"(?m)^(\|\s*)(\d\d_\w+)(\s*\|)", link, text)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return nb


def discover(repo: Path = REPO) -> list[Page]:
    """Every page in reading order: README, notebooks/NN_*.ipynb, notebooks/solutions/*.ipynb."""
    notebooks = sorted(repo.glob("notebooks/[0-9][0-9]_*.ipynb"))
    solutions = sorted(repo.glob("notebooks/solutions/*.ipynb"))
    pages = [Page(repo / "README.md", "index.html", "Home")]
    pages[0].nb = readme_notebook(repo / "README.md", {p.stem for p in notebooks})
    for src, prefix, group in [(p, "", "Notebooks") for p in notebooks] + [
        (p, "solutions/", "Solutions") for p in solutions
    ]:
        nb = nbformat.read(src, as_version=4)
        pages.append(Page(src, f"{prefix}{src.stem}.html", title_of(nb, src.stem), group, nb))
    return pages


def tex_to_mathml(tex: str, display: str, where: str) -> str:
    """LaTeX (without delimiters) to a <math> element; BookError naming `where` if it cannot be converted."""
    source = STANDARD_OPERATORS.sub(lambda m: f"\\operatorname{{{m.group(1)}}}", tex.strip())
    try:
        mathml = latex_to_mathml_string(source, display=display)
    except Exception as exc:  # latex2mathml raises many types; the build names the formula instead
        raise BookError(f"{where}: cannot render math {tex.strip()!r}: {type(exc).__name__}: {exc}") from None
    if unknown := UNKNOWN_COMMAND.search(mathml):  # latex2mathml prints commands it does not know as text
        raise BookError(f"{where}: cannot render math {tex.strip()!r}: unknown command {unknown.group(1)}")
    return mathml


def latex_output_to_mathml(tex: str, where: str) -> str:
    """A text/latex output (`$$...$$`, `\\[...\\]`, `$...$` or bare) as block MathML."""
    tex = tex.strip()
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("$", "$"), ("\\(", "\\)")):
        if tex.startswith(left) and tex.endswith(right) and len(tex) > len(left) + len(right):
            tex = tex[len(left) : -len(right)]
            break
    return tex_to_mathml(tex, "block", where)


class BookRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with MathML instead of MathJax delimiters and book-relative links."""

    def __init__(self, *args, rewrite_link, where: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rewrite_link, self.where = rewrite_link, where

    def block_math(self, body: str) -> str:
        return tex_to_mathml(body, "block", self.where)

    def inline_math(self, body: str) -> str:
        return tex_to_mathml(body, "inline", self.where)

    def latex_environment(self, name: str, body: str) -> str:
        return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", "block", self.where)

    def link(self, text: str, url: str, title: str | None = None) -> str:
        return super().link(text, self.rewrite_link(url), title)

    def heading(self, text: str, level: int, **attrs) -> str:
        """nbconvert's heading (id "Running-Llama-3.x-on-a-laptop") after an empty anchor with the id
        GitHub gives it ("running-llama-3x-on-a-laptop"), so README links that work on GitHub work here."""
        return f'<a id="{github_anchor(text)}"></a>' + super().heading(text, level, **attrs)


def github_anchor(heading_html: str) -> str:
    """GitHub's id for a heading: tags dropped, lower case, punctuation but - and _ dropped, spaces -> -."""
    text = re.sub(r"<[^>]+>", "", heading_html).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


class BookExporter(HTMLExporter):
    """HTMLExporter with the book template, MathML markdown and links rewritten for the current page."""

    def __init__(self, pages: list[Page], out_dir: Path, repo_url: str | None, repo: Path = REPO) -> None:
        super().__init__(
            template_name="lab",
            template_file="book.html.j2",
            extra_template_paths=[str(TOOLS)],
            embed_images=True,  # images a markdown cell links to go into the page, like the outputs
        )
        self.by_src = {p.src.resolve(): p.out for p in pages}
        self.out_dir, self.repo = out_dir, repo.resolve()
        self.repo_url = repo_url.rstrip("/") if repo_url else None
        self.page: Page = pages[0]
        self.register_filter("latex_to_mathml", lambda tex: latex_output_to_mathml(tex, self.where))

    @property
    def where(self) -> str:
        """The current page's source, relative to the repository (for error messages)."""
        return _rel(self.page.src, self.repo)

    def rewrite_link(self, url: str) -> str:
        """A link written in a source file, as a link from the current page of the site."""
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:  # web links, mailto:, #anchors in the same page
            return url
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        target = (self.page.src.parent / unquote(parts.path)).resolve()
        if target in self.by_src:
            return href(self.by_src[target], self.page.out) + fragment
        if not target.exists():
            raise BookError(f"{self.where}: link to {url!r}: {_rel(target, self.repo)} does not exist")
        if not target.is_relative_to(self.repo):
            raise BookError(f"{self.where}: link to {url!r} leaves the repository")
        if self.repo_url:
            return f"{self.repo_url}/{target.relative_to(self.repo).as_posix()}{fragment}"
        page_dir = (self.out_dir / self.page.out).parent
        return Path(os.path.relpath(target, page_dir)).as_posix() + fragment

    @pass_context  # as in HTMLExporter: the filter reads the cell (attachments) from the template context
    def markdown2html(self, context, source: str) -> str:
        cell = context.get("cell", {})
        renderer = BookRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=self.embed_images,
            path=str(self.page.src.parent),
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            rewrite_link=self.rewrite_link,
            where=self.where,
            **self.lexer_options,
        )
        return MarkdownWithMath(renderer=renderer).render(source)


def _navigation(pages: list[Page], i: int) -> dict:
    """Sidebar groups and prev/next for page i, all as links relative to that page."""
    page = pages[i]

    def entry(p: Page) -> dict:
        return {"href": href(p.out, page.out), "label": p.title, "current": p is page}

    toc, groups = [], {}
    for p in pages:
        if p.group not in groups:
            groups[p.group] = {"heading": p.group, "entries": []}
            toc.append(groups[p.group])
        groups[p.group]["entries"].append(entry(p))
    return {
        "title": page.title,
        "root": "../" * page.out.count("/"),  # from the page to the site's top (assets/, index.html)
        "toc": toc,
        "prev": entry(pages[i - 1]) if i > 0 else None,
        "next": entry(pages[i + 1]) if i + 1 < len(pages) else None,
    }


def _lab_css() -> str:
    """JupyterLab's notebook CSS and light theme as nbconvert ships them (they hold only data: URLs)."""
    for base in jupyter_path("nbconvert", "templates"):
        static = Path(base, "lab", "static")
        if (static / "index.css").is_file():
            return (static / "index.css").read_text() + "\n" + (static / "theme-light.css").read_text()
    raise BookError("nbconvert's lab template CSS (lab/static/index.css) not found; run `make setup`")


def build(out_dir: Path = DEFAULT_OUT, repo_url: str | None = None, repo: Path = REPO) -> list[Path]:
    """Build the site into out_dir (replaced whole, via a temp dir). Returns the HTML files written."""
    out_dir = out_dir.resolve()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "assets").mkdir(parents=True)
    (tmp / "assets" / "jupyterlab.css").write_text(_lab_css())
    shutil.copy(TOOLS / "book.css", tmp / "assets" / "book.css")
    pages = discover(repo)
    exporter = BookExporter(pages, out_dir, repo_url, repo)
    written = []
    for i, page in enumerate(pages):
        exporter.page = page
        resources = {"metadata": {"name": page.title, "path": str(page.src.parent)}, "book": _navigation(pages, i)}
        html, _ = exporter.from_notebook_node(page.nb, resources=resources)
        if m := REMOTE_ASSET.search(html):
            raise BookError(f"{exporter.where}: the page would load {m.group(0)!r} from the network")
        dest = tmp / page.out
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(html, encoding="utf-8")
        written.append(out_dir / page.out)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default _build/html)")
    parser.add_argument("--repo-url", default=None, help="base URL for links to repository files (else local paths)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        written = build(args.out, args.repo_url)
    except BookError as exc:
        print(f"make book: {exc}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    seconds = time.perf_counter() - start
    print(f"book: {len(written)} pages, {size / 1e6:.1f} MB in {_rel(args.out.resolve())} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
