"""Sphinx configuration of the course's website (``make site``; see site/README.md).

``site/build.py`` first stages the sources (README.md as the home page, the notebooks with their
committed outputs, notes/, docs/, results/) into ``site/_build/src``; this file then tells Sphinx,
MyST-NB and the book theme how to render them. Nothing here reaches the network: notebooks are
never executed, MathJax is served from the site's own ``_static/mathjax`` and the theme's assets
are bundled with it.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGE = Path(os.environ.get("SITE_STAGE", HERE / "_build" / "src"))

project = "Online Preference Optimisation: from preference models to IPO-MD"
author = "the course's authors"
copyright = "the course's authors, Apache-2.0"  # noqa: A001 (Sphinx's name)
html_title = "Online Preference Optimisation"

extensions = ["myst_nb", "sphinx.ext.mathjax"]
root_doc = "index"
exclude_patterns = ["_static", "_extra", "**/_files", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# MyST: $...$ and $$...$$ as in the notebooks and notes, heading anchors
# for links such as notes/paper.md#..., raw HTML (the links box staged into each notebook).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 4
myst_dmath_double_inline = True  # $$...$$ inside a paragraph, as the notes write it: display math

# The notebooks are shown as committed: never executed by the site build.
nb_execution_mode = "off"
nb_render_markdown_format = "myst"  # display(Markdown(...)) tables with $math$ like the cells
nb_ipywidgets_js = {}  # the notebooks hold no widget state; no widget manager from a CDN
nb_merge_streams = True
nb_output_stderr = "remove"  # warnings printed while the notebook ran are not course content

# MathJax 3.2.2 (CommonHTML output, its woff-v2 fonts), the files of the sphinx-mathjax-offline
# package, copied by build.py into _static/mathjax: the site renders its equations with no
# network access. myst-parser adds its processHtmlClass to this configuration, so that MathJax
# typesets only the math that MyST parsed (not a "\\(" in prose or code).
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {
    "tex": {"tags": "ams"},
    "options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"},
}

html_theme = "sphinx_book_theme"
html_static_path = [str(STAGE / "_static")]
html_extra_path = [str(STAGE / "_extra")]  # student/ and source/ notebooks, served as files
html_css_files = ["site.css"]
html_favicon = str(HERE / "static" / "favicon.svg")
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "search_bar_text": "Search the course...",
    "show_navbar_depth": 1,
    "navigation_with_keys": False,
    "navbar_persistent": [],  # one search box, in the sidebar (not also in a top bar)
}
html_context = {"default_mode": "light"}

suppress_warnings = [
    "myst.header",  # the notes number their headings as they cite them (### 4.3 under ## 4)
    "mystnb.unknown_mime_type",
    "misc.highlighting_failure",
]
