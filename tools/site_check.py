"""Check the course's website in a real headless browser (``make site-check``; site/README.md).

The site (``site/_build/html``, built by ``make site``) is served by Python's ``http.server`` on
127.0.0.1 at a free port; Debian's chromium, driven by selenium through Debian's chromedriver,
opens every page and the check fails on any of:

* an error in the browser's console (a script error, a resource that did not load);
* an equation left as raw TeX: ``$$``, ``\\(``, ``\\[``, a command such as ``\\frac`` or an inline
  ``$...$`` with TeX in it, in a text node outside code; or an equation MathJax could not typeset;
* an image that did not load (``naturalWidth`` 0);
* a same-origin link (``href``/``src`` of links, stylesheets, scripts, images) whose HTTP status
  is not 200, or whose ``#fragment`` names no element of its page;
* a resource loaded from another origin (the site must work without the network);
* a notebook page without its links box (student edition, source), or a home page without the
  course map.

It saves screenshots (home page, notebooks 02 and 07, at the top and at their first equation or
figure) under ``site/_build/screenshots/`` and writes a JSON report beside them.

The parts that need no browser (the raw-TeX detector, the text of a page outside code, the links
of a page and how they resolve, the fragment check) are plain functions, tested by
``tests/test_site.py``.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SITE = ROOT / "site" / "_build" / "html"
DEFAULT_SHOTS = ROOT / "site" / "_build" / "screenshots"
# (file name, page, what to scroll into view first: None for the top of the page)
SCREENSHOTS = [
    ("home", "index.html", None),
    ("home-course-map", "index.html", "#the-course-map"),
    ("02_nash_equilibrium", "notebooks/02_*.html", None),
    ("02_nash_equilibrium-equation", "notebooks/02_*.html", "mjx-container[display]"),
    ("02_nash_equilibrium-figure", "notebooks/02_*.html", ".cell_output img"),
    ("07_language_models", "notebooks/07_*.html", None),
    ("07_language_models-figure", "notebooks/07_*.html", ".cell_output img"),
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--mute-audio",
    "--lang=en-US",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1280,900",
    # every host name but the local server's fails at once: the check proves the site needs no
    # network, on a machine with a network too
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
SKIP_DIRS = {"_static", "_sources", "_downloads", "_images", "student", "source"}

# ---------------------------------------------------------------------------------------------
# raw TeX
# ---------------------------------------------------------------------------------------------
RAW_TEX = re.compile(
    r"\$\$"  # display math delimiters left in the text
    r"|\\[()\[\]]"  # MathJax's own delimiters, not typeset
    r"|\\(?:begin|end)\{"  # an environment
    r"|\\[A-Za-z]{2,}(?![A-Za-z])"  # a command: \frac, \pi, \text, \mathrm (not \n)
    r"|(?<![\w$])\$(?=\S)[^$\n]{0,200}?[\\^_{][^$\n]{0,200}?(?<=\S)\$(?![\w$])"  # $x^2$, $\pi$
)

# Text inside these elements is code or typeset math, where TeX-like text is expected.
SKIP_TAGS = {
    "script",
    "style",
    "pre",
    "code",
    "kbd",
    "samp",
    "textarea",
    "noscript",
    "svg",
    "math",
    "mjx-container",  # MathJax 3's typeset equation
}
SKIP_CLASSES = {"highlight"}
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}
LINK_ATTRS = {
    "a": "href",
    "link": "href",
    "script": "src",
    "img": "src",
    "iframe": "src",
    "source": "src",
}


def raw_tex(text: str) -> list[str]:
    """Each piece of ``text`` that looks like TeX a reader should not see, with a little
    context."""
    hits = []
    for m in RAW_TEX.finditer(text):
        a, b = max(0, m.start() - 30), min(len(text), m.end() + 30)
        hits.append(" ".join(text[a:b].split()))
    return hits


class _Page(HTMLParser):
    """One pass over a page: its text nodes outside code and math, its links, its ids."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []  # for each open element: is text inside it skipped?
        self.texts: list[str] = []
        self.links: list[tuple[str, str]] = []  # (tag, url as written)
        self.ids: set[str] = set()
        self.classes: set[str] = set()
        self.base: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "base" and attrs.get("href") and self.base is None:
            self.base = attrs["href"]
        url = attrs.get(LINK_ATTRS.get(tag, ""))
        if url is not None:
            self.links.append((tag, url))
        if tag in VOID:
            return
        classes = set((attrs.get("class") or "").split())
        self.classes |= classes
        skipped = bool(self.stack and self.stack[-1]) or tag in SKIP_TAGS
        self.stack.append(skipped or bool(classes & SKIP_CLASSES))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self.stack:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if data.strip() and not (self.stack and self.stack[-1]):
            self.texts.append(data)


def parse_page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def text_nodes(html: str) -> list[str]:
    """The text of ``html`` that a reader sees as prose: outside code, scripts and typeset math."""
    return parse_page(html).texts


def page_raw_tex(html: str) -> list[str]:
    return [hit for text in text_nodes(html) for hit in raw_tex(text)]


# ---------------------------------------------------------------------------------------------
# links
# ---------------------------------------------------------------------------------------------
def page_links(html: str, page_url: str) -> list[tuple[str, str]]:
    """``(tag, absolute URL)`` of every link of the page (``<base>`` respected), in order."""
    page = parse_page(html)
    base = urljoin(page_url, page.base) if page.base else page_url
    out = []
    for tag, url in page.links:
        url = url.strip()
        if not url or url.startswith(("javascript:", "data:", "mailto:", "blob:")):
            continue
        out.append((tag, urljoin(base, url)))
    return out


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def same_origin(url: str, base: str) -> bool:
    return origin(url) == origin(base)


def site_path(url: str, site_url: str, site_root: Path) -> Path | None:
    """The file under ``site_root`` that ``url`` names on a server of the site at ``site_url``
    (a folder means its index.html), or None when the URL is outside the site or names nothing."""
    if not same_origin(url, site_url):
        return None
    path = unquote(urlsplit(url).path)
    prefix = urlsplit(site_url).path
    if not path.startswith(prefix):
        return None
    rel = path[len(prefix) :].lstrip("/")
    target = (site_root / rel).resolve()
    root = site_root.resolve()
    if target != root and root not in target.parents:
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def http_status(url: str, timeout: float = 10.0) -> int:
    """The HTTP status of a GET of ``url`` (0 when no answer came)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def missing_fragments(links: Iterable[str], ids_of) -> list[str]:
    """Each link whose ``#fragment`` is not an id of its page (``ids_of(page url)`` gives the
    page's ids, or None for a page that is not HTML, whose fragments are not checked)."""
    bad = []
    for url in links:
        page, frag = urldefrag(url)
        frag = unquote(frag)
        if not frag or frag == "top":
            continue
        ids = ids_of(page)
        if ids is not None and frag not in ids:
            bad.append(url)
    return bad


# ---------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------
class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".ipynb": "application/x-ipynb+json",
        ".woff": "font/woff",
        ".otf": "font/otf",
        ".svg": "image/svg+xml",
        ".jsonl": "application/jsonl",
    }

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@dataclass
class Server:
    """``http.server`` on 127.0.0.1 at a free port, serving ``root``, in a thread."""

    root: Path
    httpd: ThreadingHTTPServer = field(init=False)

    def __post_init__(self):
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# the browser
# ---------------------------------------------------------------------------------------------
# After the load event: wait for MathJax (when the page loads it) to typeset everything, make
# every image load, and report what the check needs from the live page.
_SETTLE_JS = """
const done = arguments[arguments.length - 1];
const until = Date.now() + 20000;
async function mathjax() {
  if (!document.querySelector('script[src*="mathjax/"]')) return 'absent';
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > until) return 'not loaded';
    await new Promise(r => setTimeout(r, 50));
  }
  return await Promise.race([
    MathJax.startup.promise.then(() => 'done', e => 'failed: ' + e),
    new Promise(r => setTimeout(() => r('timeout'), Math.max(0, until - Date.now()))),
  ]);
}
async function images() {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000);
  })));
  return imgs.map(i => [i.currentSrc || i.src, i.naturalWidth]);
}
(async () => {
  const mj = await mathjax();
  const imgs = await images();
  const q = s => document.querySelectorAll(s).length;
  done({
    mathjax: mj,
    images: imgs,
    equations: q('mjx-container'),
    math_errors: q('mjx-merror, [data-mjx-error]'),
    resources: performance.getEntriesByType('resource').map(e => e.name),
    html: document.documentElement.outerHTML,
  });
})();
"""


def find_program(explicit: str | None, names: list[str]) -> str:
    for candidate in ([explicit] if explicit else []) + names:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    raise SystemExit(
        f"site-check: none of {', '.join(([explicit] if explicit else []) + names)} found; "
        "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    )


def start_browser(chromium: str, chromedriver: str, profile_dir: str):
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never looks for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


@dataclass
class Report:
    pages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    equations: int = 0
    images: int = 0
    links: int = 0
    fragments: int = 0
    notebook_boxes: int = 0
    screenshots: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, page: str, what: str) -> None:
        self.problems.append(f"{page}: {what}")


def site_pages(site: Path) -> list[str]:
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site)
        if rel.parts[0] not in SKIP_DIRS:
            pages.append(rel.as_posix())
    return sorted(pages, key=lambda p: (p != "index.html", p))


def check_page(driver, rel: str, base: str, report: Report, links: dict[str, str]) -> dict:
    """Open one page, wait for it to settle and check it; returns what the browser reported."""
    driver.get_log("browser")  # drop what an earlier page left
    driver.get(urljoin(base, rel))
    state = driver.execute_async_script(_SETTLE_JS)
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            report.fail(rel, f"console error: {entry.get('message', '')[:300]}")
    if state["mathjax"] not in ("absent", "done"):
        report.fail(rel, f"MathJax {state['mathjax']}")
    if state["math_errors"]:
        report.fail(rel, f"{state['math_errors']} equation(s) MathJax could not typeset")
    for hit in dict.fromkeys(page_raw_tex(state["html"])):  # each piece of text once
        report.fail(rel, f"raw TeX in the text: {hit!r}")
    for src, width in state["images"]:
        if not width:
            report.fail(rel, f"image did not load: {src}")
    for url in state["resources"]:
        if not same_origin(url, base):
            report.fail(rel, f"resource from another origin: {url}")
    for _tag, url in page_links(state["html"], urljoin(base, rel)):
        if same_origin(url, base):
            links.setdefault(url, rel)
    report.equations += state["equations"]
    report.images += sum(1 for _, width in state["images"] if width)
    if rel.startswith("notebooks/"):
        report.notebook_boxes += links_box_problem(rel, parse_page(state["html"]), report)
    if rel == "index.html" and "the-course-map" not in parse_page(state["html"]).ids:
        report.fail(rel, "no course map")
    return state


def links_box_problem(rel: str, page: _Page, report: Report) -> int:
    """1 when the notebook page has its links box (the site's build puts it under the title):
    a link to the source and one to the student edition (or the words saying it was not built);
    else 0, and the problem is reported."""
    student = "site-student" in page.classes or any("not built here" in t for t in page.texts)
    if {"site-links", "site-source"} <= page.classes and student:
        return 1
    report.fail(rel, "no links box (student edition, source) under the title")
    return 0


def check_links(links: dict[str, str], site: Path, base: str, report: Report) -> None:
    """The HTTP status of every same-origin URL found, and the fragment of every link."""
    status: dict[str, int] = {}
    for url, page in sorted(links.items()):
        target = urldefrag(url)[0]
        if target not in status:
            status[target] = http_status(target)
            if status[target] != 200:
                report.fail(page, f"link {target} answers HTTP {status[target]}")
    report.links = len(status)

    @functools.cache
    def ids_of(page_url: str) -> frozenset[str] | None:
        path = site_path(page_url, base, site)
        if path is None or path.suffix != ".html":
            return None
        return frozenset(parse_page(path.read_text(encoding="utf-8")).ids)

    with_frags = [u for u in links if urldefrag(u)[1]]
    report.fragments = len(with_frags)
    for url in missing_fragments(with_frags, ids_of):
        report.fail(links[url], f"link {url} names no element of its page")


def screenshot(driver, base: str, page: str, path: Path, scroll: str | None) -> None:
    driver.get(urljoin(base, page))
    driver.execute_async_script(_SETTLE_JS)
    if scroll:
        driver.execute_script(  # a section from its top, an equation or figure centred
            "const e = document.querySelector(arguments[0]);"
            "if (e) e.scrollIntoView({block: arguments[0].startsWith('#') ? 'start' : 'center'});",
            scroll,
        )
        time.sleep(0.3)
    driver.save_screenshot(str(path))


def run(
    site: Path, shots: Path, chromium: str, chromedriver: str, only: list[str], verbose=False
) -> Report:
    report = Report()
    start = time.perf_counter()
    pages = [p for p in site_pages(site) if not only or any(fnmatch.fnmatch(p, g) for g in only)]
    shots.mkdir(parents=True, exist_ok=True)
    links: dict[str, str] = {}
    with Server(site) as server, tempfile.TemporaryDirectory(prefix="site-check-") as profile:
        driver = start_browser(chromium, chromedriver, profile)
        try:
            for rel in pages:
                t0 = time.perf_counter()
                state = check_page(driver, rel, server.url, report, links)
                report.pages.append(rel)
                if verbose:
                    print(
                        f"  {rel}: {time.perf_counter() - t0:.1f} s, {state['equations']} "
                        f"equations, {len(state['images'])} images",
                        flush=True,
                    )
            check_links(links, site, server.url, report)
            for name, glob, scroll in SCREENSHOTS:
                match = [p for p in site_pages(site) if fnmatch.fnmatch(p, glob)]
                if not match:
                    report.fail(glob, "no page for the screenshot")
                    continue
                out = shots / f"{name}.png"
                screenshot(driver, server.url, match[0], out, scroll)
                report.screenshots.append(str(out))
        finally:
            driver.quit()
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=DEFAULT_SITE, help="%(default)s")
    parser.add_argument("--screenshots", type=Path, default=DEFAULT_SHOTS, help="%(default)s")
    parser.add_argument("--chromium", default=None, help="the browser (default: chromium)")
    parser.add_argument("--chromedriver", default=None, help="the driver (default: chromedriver)")
    parser.add_argument("--pages", nargs="*", default=[], help="only these pages (globs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per page")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"site-check: {args.site}/index.html is missing; run make site", file=sys.stderr)
        return 2
    chromium = find_program(args.chromium, ["chromium", "chromium-browser", "google-chrome"])
    driver = find_program(args.chromedriver, ["chromedriver", "/usr/lib/chromium/chromedriver"])
    for stale in args.screenshots.glob("*.png"):
        stale.unlink()
    report = run(args.site, args.screenshots, chromium, driver, args.pages, args.verbose)
    (args.screenshots / "report.json").write_text(json.dumps(report.__dict__, indent=1) + "\n")
    for problem in report.problems:
        print(f"FAIL {problem}")
    print(
        f"site-check: {len(report.pages)} pages opened in chromium, {report.equations} equations "
        f"typeset, {report.images} images loaded, {report.links} same-origin URLs answered "
        f"(+{report.fragments} links with a #fragment checked), {report.notebook_boxes} notebook "
        f"pages with their links box; {len(report.problems)} problem(s) "
        f"in {report.seconds:.1f} s"
    )
    for shot in map(Path, report.screenshots):
        print(f"  screenshot {shot.relative_to(ROOT) if ROOT in shot.parents else shot}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
