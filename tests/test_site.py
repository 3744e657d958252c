"""The website's checker and build, on tiny fixtures: no browser, no Sphinx, a second or so.

``tools/site_check.py`` opens every page of the site in chromium (``make site-check``); what it
decides from a page is plain Python, tested here: the raw-TeX detector, the text a reader sees
outside code and typeset math, the links of a page and how they resolve on the site's server,
and the fragment check. ``site/build.py``'s staging helpers are tested on a small notebook and
Markdown: the links box under the title, equations kept whole across a line that looks like a
list item, the course map's minutes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = _load("site_check", ROOT / "tools" / "site_check.py")
build = _load("site_build", ROOT / "site" / "build.py")

PAGE = r"""<!DOCTYPE html>
<html><head><title>fixture</title>
<link rel="stylesheet" href="../_static/site.css">
<script src="../_static/mathjax/tex-chtml.js"></script>
<script type="math/tex">\frac{a}{b}</script>
</head><body>
<p id="intro">Prose with a typeset equation
<mjx-container class="MathJax" jax="CHTML"><mjx-math>\pi_{\text{ref}}</mjx-math></mjx-container>
and a table header row \ col.</p>
<pre>print(r"$\tau$ and \frac{1}{2} in code")</pre>
<p>Inline <code>\beta</code> and <span class="highlight">$$x$$</span> are code.</p>
<div class="output"><p>LEFT: $\tau \log \sum_y$ was not typeset</p></div>
<img src="../_images/fig.png" alt="a figure"><br/>
<a href="#intro">up</a> <a href="other.html#missing">other</a> <a href="./">folder</a>
<a href="https://example.org/x">outside</a> <a href="mailto:a@b.c">mail</a>
<a href="javascript:void(0)">js</a> <a name="anchor"></a>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# raw TeX
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "$$P(y \\succ y')$$",
        "the value \\frac{1}{2}",
        "left as \\(x\\)",
        "display \\[x\\] left",
        "an env \\begin{aligned}",
        "with $x^2$ inline",
        "with $\\pi$ inline",
        "policy $\\pi_{\\text{ref}}$.",
    ],
)
def test_raw_tex_is_found(text):
    assert check.raw_tex(text), text


@pytest.mark.parametrize(
    "text",
    [
        "row \\ col",
        "costs $5 and $6 a month",
        "a newline \\n in prose",
        "P(y ≻ y') with Unicode, π and τ",
        "$ alone",
        "a price of $10.",
    ],
)
def test_plain_text_is_not_raw_tex(text):
    assert check.raw_tex(text) == [], text


def test_text_outside_code_and_typeset_math():
    texts = " ".join(check.text_nodes(PAGE))
    assert "Prose with a typeset equation" in texts
    assert "row \\ col" in texts
    for hidden in ("\\pi_{\\text{ref}}", "in code", "\\beta", "$$x$$", "\\frac{a}{b}"):
        assert hidden not in texts
    hits = check.page_raw_tex(PAGE)
    assert hits and all("LEFT" in hit or "log" in hit or "sum" in hit for hit in hits)


# ---------------------------------------------------------------------------------------------
# links
# ---------------------------------------------------------------------------------------------
def test_links_resolve_against_the_page_and_skip_non_http():
    base = "http://127.0.0.1:8000/"
    links = check.page_links(PAGE, base + "notebooks/02.html")
    urls = [u for _, u in links]
    assert base + "_static/site.css" in urls
    assert base + "_static/mathjax/tex-chtml.js" in urls
    assert base + "_images/fig.png" in urls
    assert base + "notebooks/02.html#intro" in urls
    assert base + "notebooks/other.html#missing" in urls
    assert base + "notebooks/" in urls
    assert "https://example.org/x" in urls
    assert not [u for u in urls if u.startswith(("mailto:", "javascript:"))]
    assert [u for u in urls if check.same_origin(u, base)] == [
        u for u in urls if u.startswith(base)
    ]


def test_base_element_is_respected():
    html = '<html><head><base href="/sub/"></head><body><a href="a.html">a</a></body></html>'
    assert check.page_links(html, "http://h:1/x/y.html") == [("a", "http://h:1/sub/a.html")]


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "html"
    (site / "notebooks").mkdir(parents=True)
    (site / "_images").mkdir()
    (site / "notebooks" / "02.html").write_text(PAGE, encoding="utf-8")
    (site / "notebooks" / "other.html").write_text('<p id="here">x</p>', encoding="utf-8")
    (site / "notebooks" / "index.html").write_text("<p>folder</p>", encoding="utf-8")
    (site / "_images" / "fig.png").write_bytes(b"\x89PNG")
    (site / "index.html").write_text("<p>home</p>", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("outside the site", encoding="utf-8")
    return site


def test_site_path_maps_urls_to_files(tmp_path):
    site, base = _site(tmp_path), "http://127.0.0.1:9/"
    assert check.site_path(base, base, site) == site / "index.html"
    assert check.site_path(base + "notebooks/", base, site) == site / "notebooks" / "index.html"
    assert check.site_path(base + "notebooks/02.html#x", base, site) == site / "notebooks/02.html"
    assert check.site_path(base + "notebooks/nope.html", base, site) is None
    assert check.site_path(base + "../secret.txt", base, site) is None
    assert check.site_path(base + "%2e%2e/secret.txt", base, site) is None
    assert check.site_path("http://elsewhere/index.html", base, site) is None


def test_missing_fragments():
    ids = {"http://h/a.html": {"x", "y"}, "http://h/b.html": set()}
    links = ["http://h/a.html#x", "http://h/a.html#z", "http://h/b.html", "http://h/f.json#q"]
    assert check.missing_fragments(links, ids.get) == ["http://h/a.html#z"]
    assert "anchor" in check.parse_page(PAGE).ids and "intro" in check.parse_page(PAGE).ids


def test_server_statuses_and_the_link_check(tmp_path):
    site = _site(tmp_path)
    with check.Server(site) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert check.http_status(server.url + "notebooks/02.html") == 200
        assert check.http_status(server.url + "notebooks/") == 200
        assert check.http_status(server.url + "missing.html") == 404
        links: dict[str, str] = {}
        for _, url in check.page_links(PAGE, server.url + "notebooks/02.html"):
            if check.same_origin(url, server.url):
                links.setdefault(url, "notebooks/02.html")
        report = check.Report()
        check.check_links(links, site, server.url, report)
    problems = "\n".join(report.problems)
    assert "_static/site.css answers HTTP 404" in problems
    assert "mathjax/tex-chtml.js answers HTTP 404" in problems
    assert "other.html#missing names no element" in problems
    assert "fig.png" not in problems and "#intro" not in problems
    assert report.links == 6 and report.fragments == 2


def test_pages_of_a_site(tmp_path):
    site = _site(tmp_path)
    (site / "_static").mkdir()
    (site / "_static" / "x.html").write_text("", encoding="utf-8")
    assert check.site_pages(site) == [
        "index.html",
        "notebooks/02.html",
        "notebooks/index.html",
        "notebooks/other.html",
    ]


# ---------------------------------------------------------------------------------------------
# the build's staging
# ---------------------------------------------------------------------------------------------
def test_list_like_lines_inside_math_are_joined():
    text = (
        "In logs the update reads\n$\\log\\pi = a\n  + b$, which needs $c$.\n\n"
        "$$x = 1\n- y$$\n\n"
        "- a real list\n- second item $y$\n\n"
        "```python\nx = '$'\n+ 1\n```\n"
    )
    out = build.mend_math_lines(text)
    assert "$\\log\\pi = a + b$, which needs $c$." in out
    assert "$$x = 1 - y$$" in out
    assert "- a real list\n- second item $y$" in out
    assert "x = '$'\n+ 1\n" in out
    assert build.mend_math_lines("`$` in code\n- item") == "`$` in code\n- item"


def test_course_map_minutes():
    readme = (
        "| notebook | topic | minutes, cpu profile (measured) | minutes, gpu (estimate) |\n"
        "| --- | --- | --- | --- |\n"
        "| [00_setup](notebooks/00_setup.ipynb) | set-up | 0.2 | ~1 |\n"
        "| [07_lm](notebooks/07_lm.ipynb) | models | 7.0 | ~3 |\n"
    )
    rows = build.course_map(readme)
    assert rows["07_lm"] == [
        ("minutes, cpu profile (measured)", "7.0"),
        ("minutes, gpu (estimate)", "~3"),
    ]
    assert "[05_<wbr>a_<wbr>b](notebooks/" in build.breakable_names("[05_a_b](notebooks/05.ipynb)")


def test_link_targets_are_configurable():
    assert build.site_href("student/{name}.ipynb", "02_x", "notebooks") == "../student/02_x.ipynb"
    url = "https://example.org/course/blob/main/notebooks/{name}.ipynb"
    assert build.site_href(url, "02_x", "notebooks") == url.format(name="02_x")
    assert build.site_href("/student/{name}.ipynb", "02_x", "notebooks") == "/student/02_x.ipynb"


def test_notebook_gets_its_links_box_under_the_title(tmp_path):
    nb = {
        "cells": [
            {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": []},
            {"cell_type": "markdown", "source": ["# 02 · Title\n", "\n", "You will learn\n"]},
            {"cell_type": "markdown", "source": "$a\n+ b$"},
        ],
        "metadata": {"widgets": {"state": {}}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    src = tmp_path / "02_x.ipynb"
    src.write_text(json.dumps(nb), encoding="utf-8")
    stage = build.Stage(tmp_path / "stage")
    box = build.links_box("02_x", "../student/02_x.ipynb", "../source/02_x.ipynb", [("m", "1")])
    build.stage_notebook(src, stage, box)
    out = json.loads((tmp_path / "stage" / "notebooks" / "02_x.ipynb").read_text("utf-8"))
    first = out["cells"][1]["source"]
    assert first.startswith('# 02 · Title\n\n<div class="site-links')
    assert first.index('href="../student/02_x.ipynb"') < first.index("You will learn")
    assert 'class="site-source' in first and "Course map</a>: 1 m" in first
    assert out["cells"][2]["source"] == "$a + b$"
    assert "widgets" not in out["metadata"]
    stage.prune()
    assert (tmp_path / "stage" / "notebooks" / "02_x.ipynb").is_file()
    assert "not built here" in build.links_box("02_x", None, "s", None)


def test_links_box_is_required_on_a_notebook_page():
    report = check.Report()
    box = build.links_box("02_x", "../student/02_x.ipynb", "../source/02_x.ipynb", None)
    assert check.links_box_problem("n.html", check.parse_page(box), report) == 1
    unbuilt = build.links_box("02_x", None, "../source/02_x.ipynb", None)
    assert check.links_box_problem("n.html", check.parse_page(unbuilt), report) == 1
    assert check.links_box_problem("n.html", check.parse_page(PAGE), report) == 0
    assert report.problems == ["n.html: no links box (student edition, source) under the title"]
