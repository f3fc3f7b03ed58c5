"""Open every page of a built site in headless Chromium and report what a reader would see broken.

Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) is driven over the DevTools protocol on a loopback
port (websocket-client), with a fresh profile. Reported, one line each, naming the page:

- a console error, an uncaught exception, or an error Chromium logs (e.g. "Failed to load resource");
- a request that leaves the machine (the book must work offline) or a resource that fails to load;
- an image with naturalWidth == 0 (missing or broken);
- unrendered math: `$$`, `\\(`, `\\[` or `$...$` left in the text outside code, `\\name` inside a formula;
- a broken internal link: a file:// target that does not exist, or a #fragment the target page lacks.

    python -m notebooks.tools.browser [SITE_DIR] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import websocket

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-port=0",  # Chromium picks a free loopback port and writes it to DevToolsActivePort
    "--window-size=1280,900",
]
WIDTH = 1280
LOCAL_SCHEMES = {"file", "data", "about", "blob"}
# $...$ as TeX reads it: no space after the opening $ or before the closing one, no digit after it.
INLINE_DOLLAR = re.compile(r"(?<![\w$\\])\$(?=[^\s$])[^$\n]{1,200}?(?<=[^\s$\\])\$(?![\w$])")

TEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# Collected once the page has loaded: waits for images and fonts, then reads what a reader sees.
COLLECT_JS = """
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener('load', resolve); img.addEventListener('error', resolve); })));
  await document.fonts.ready;
  const prose = document.body.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, math, svg, textarea').forEach(e => e.remove());
  return {
    images: images.map(img => ({src: (img.getAttribute('src') || '').slice(0, 80), width: img.naturalWidth})),
    figures: images.length + document.querySelectorAll('svg').length,
    math: document.querySelectorAll('math').length,
    mathText: Array.from(document.querySelectorAll('math')).map(m => m.textContent).join(' '),
    text: prose.textContent,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    ids: Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.getAttribute('name')),
  };
})()
"""


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer."""


@dataclass
class PageReport:
    """What one page showed: its problems, figure and math counts, links and element ids."""

    url: str
    problems: list[str] = field(default_factory=list)
    figures: int = 0
    math: int = 0
    links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


@dataclass
class SiteReport:
    """Every page of a site (relative paths) and every problem found, one line each."""

    pages: dict[str, PageReport]
    problems: list[str]


class Chromium:
    """Headless Chromium with one page target, driven over the DevTools protocol. A context manager."""

    def __init__(self, executable: str = CHROMIUM, timeout: float = 60.0) -> None:
        if not Path(executable).is_file():
            raise BrowserError(f"{executable} not found: install Debian's chromium (apt-get install chromium)")
        self.executable, self.timeout = executable, timeout
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def __enter__(self) -> Chromium:
        self.profile = tempfile.TemporaryDirectory(prefix="simplellama-chromium-")
        self.log = open(Path(self.profile.name, "chromium.log"), "wb")  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.ws = websocket.create_connection(self._devtools_url(), timeout=self.timeout, suppress_origin=True)
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "ws", None) is not None:
            try:
                self.send("Browser.close", session=False)
            except Exception:  # already gone: the process is stopped below either way
                pass
            self.ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.profile.cleanup()

    def _devtools_url(self) -> str:
        port_file = Path(self.profile.name, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = Path(self.profile.name, "chromium.log").read_text(errors="replace")[-2000:]
                raise BrowserError(f"{self.executable} exited with {self.proc.returncode}:\n{tail}")
            lines = port_file.read_text().split() if port_file.is_file() else []
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise BrowserError(f"{self.executable} did not open its DevTools port within {self.timeout:.0f} s")

    def _receive(self) -> dict:
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s") from None

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Call a DevTools method (on the page unless session=False) and return its result."""
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = self._receive()
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str) -> dict:
        """The next event of this name (already received or still to come)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for i, ev in enumerate(self.events):
                if ev["method"] == event:
                    return self.events.pop(i)
            reply = self._receive()
            if "method" in reply:
                self.events.append(reply)
        raise BrowserError(f"no {event} within {self.timeout:.0f} s")

    def visit(self, url: str) -> PageReport:
        """Load url, wait for it and its images, and report its problems (links are checked by the caller)."""
        self.events.clear()
        report = PageReport(url)
        nav = self.send("Page.navigate", {"url": url})
        if nav.get("errorText"):
            report.problems.append(f"cannot open: {nav['errorText']}")
            return report
        self.wait_for("Page.loadEventFired")
        result = self.send("Runtime.evaluate", {"expression": COLLECT_JS, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{url}: page inspection failed: {result['exceptionDetails'].get('text')}")
        info = result["result"]["value"]
        self._drain()
        report.figures, report.math, report.links, report.ids = (
            info["figures"],
            info["math"],
            info["links"],
            set(info["ids"]),
        )
        report.problems += self._event_problems()
        for img in info["images"]:
            if img["width"] == 0:
                report.problems.append(f"image did not load (naturalWidth 0): {img['src']!r}")
        text = info["text"]
        for token in ("$$", "\\(", "\\["):
            if token in text:
                i = text.index(token)
                report.problems.append(f"unrendered math {token!r}: {text[max(0, i - 30) : i + 40]!r}")
        for m in INLINE_DOLLAR.finditer(text):
            report.problems.append(f"unrendered math: {m.group(0)!r}")
        for m in TEX_COMMAND.finditer(info["mathText"]):  # a command the converter passed through as text
            report.problems.append(f"unrendered math: {m.group(0)!r} inside a formula")
        return report

    def _drain(self, quiet: float = 0.3) -> None:
        """Receive events until none came for `quiet` seconds (console and network errors can trail the load)."""
        self.ws.settimeout(quiet)
        try:
            while True:
                reply = json.loads(self.ws.recv())
                if "method" in reply:
                    self.events.append(reply)
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(self.timeout)

    def _event_problems(self) -> list[str]:
        problems, requests = [], {}
        for ev in self.events:
            method, p = ev["method"], ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                problems.append(f"console.{p['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                problems.append(
                    f"uncaught exception: {details.get('exception', {}).get('description') or details.get('text')}"
                )
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                problems.append(f"console error: {entry.get('text')} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                url = p.get("request", {}).get("url", "")
                requests[p.get("requestId")] = url
                if urlsplit(url).scheme not in LOCAL_SCHEMES:
                    problems.append(f"network request (the book must work offline): {url}")
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                problems.append(f"failed to load {requests.get(p.get('requestId'), '?')[:120]}: {p.get('errorText')}")
        self.events.clear()
        return problems

    def screenshot(self, path: Path, max_height: int = 3000) -> None:
        """A PNG of the current page, WIDTH px wide and up to max_height px from the top."""
        height = self.send("Page.getLayoutMetrics")["cssContentSize"]["height"]
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(int(height), max_height), "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})[
            "data"
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


def broken_links(pages: dict[str, PageReport]) -> list[str]:
    """Links to file:// targets that do not exist, or to a #fragment their target page does not have."""
    ids_by_file = {unquote(urlsplit(r.url).path): r.ids for r in pages.values()}
    problems = []
    for name, report in pages.items():
        for link in report.links:
            parts = urlsplit(link)
            if parts.scheme != "file":
                continue  # web links are not the book's (and there is no network to check them)
            target = unquote(parts.path)
            if Path(target).is_dir():
                target = str(Path(target, "index.html"))
            if not Path(target).exists():
                problems.append(f"{name}: broken link to {link}")
            # HTML matches a fragment as written, then percent-decoded (nbconvert's heading ids are encoded)
            elif (
                parts.fragment
                and target in ids_by_file
                and not {parts.fragment, unquote(parts.fragment)} & ids_by_file[target]
            ):
                problems.append(f"{name}: broken link to {link} (no element with id {parts.fragment!r})")
    return problems


def check_site(
    site: Path,
    browser: Chromium | None = None,
    screenshots: dict[str, Path] | None = None,
    pages: list[str] | None = None,
) -> SiteReport:
    """Open every *.html under site (or only `pages`, paths relative to site) and collect problems.

    screenshots maps a page (relative path) to the PNG to write of it. A browser already started may be
    passed in (tests check several sites with one); otherwise one is started and stopped here.
    """
    site = site.resolve()
    names = pages or sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    if not names:
        raise BrowserError(f"no HTML pages under {site}")
    if browser is None:
        with Chromium() as own:
            return check_site(site, own, screenshots, names)
    reports: dict[str, PageReport] = {}
    for name in names:
        reports[name] = browser.visit((site / name).as_uri())
        if screenshots and name in screenshots:
            browser.screenshot(screenshots[name])
    problems = [f"{name}: {p}" for name, r in reports.items() for p in r.problems] + broken_links(reports)
    return SiteReport(reports, problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=Path, default=Path("_build/html"))
    args = parser.parse_args(argv)
    report = check_site(args.site)
    for line in report.problems:
        print(line)
    print(f"{len(report.pages)} pages, {len(report.problems)} problems")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
