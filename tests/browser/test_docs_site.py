"""The docs site (``make docs``, scripts/build_docs.py): its pieces, the built files, and the pages in a browser.

The unit tests run everywhere; the last test opens the built site in headless Chromium (skipped without it),
served from 127.0.0.1 with every other request blocked, and checks that the plotly figures are drawn.
"""
from __future__ import annotations

import functools
import http.server
import re
import sys
import threading
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import build_docs  # noqa: E402


def notebook_paths() -> list[Path]:
    return build_docs.notebook_paths(ROOT / "notebooks")

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

README = """# Lab

## Two commands
| not | this |
|---|---|
| a | b |

## Notebooks (in order)

Some prose.

| notebook | what you learn |
|---|---|
| [00_welcome](notebooks/00_welcome.ipynb) | the map |
| `01_pruning_basics` | pruning |

More prose.

## Later
| x | y |
|---|---|
"""


def count_outputs(nb, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    build_docs.build(out)
    return out


def test_notebook_table_is_the_first_table_under_the_notebooks_heading():
    table = build_docs.notebook_table(README)
    assert table.splitlines()[0] == "| notebook | what you learn |"
    assert "`01_pruning_basics`" in table and "| a | b |" not in table and "| x | y |" not in table


def test_notebook_table_is_none_without_such_a_section():
    assert build_docs.notebook_table("# Lab\n\n## Notebooks\n\nnone yet\n\n## Other\n| a | b |\n|---|---|\n") is None
    assert build_docs.notebook_table("") is None
    with pytest.raises(TypeError, match="readme must be"):
        build_docs.notebook_table(None)


def test_links_and_code_mentions_point_at_site_pages():
    html = build_docs.link_notebooks(
        '<a href="notebooks/00_welcome.ipynb">00</a> <td><code>01_pruning_basics</code></td> <code>99_nope</code> '
        '<a href="x"><code>00_welcome</code></a>',
        ["00_welcome", "01_pruning_basics"])
    assert '<a href="00_welcome.html">00</a>' in html
    assert '<a href="01_pruning_basics.html"><code>01_pruning_basics</code></a>' in html
    assert "<code>99_nope</code>" in html and "99_nope.html" not in html
    assert '<a href="x"><code>00_welcome</code></a>' in html  # already a link: left alone


def test_landing_page_warns_about_notebooks_missing_from_the_table():
    page, warnings = build_docs.landing_page(README, ["00_welcome", "01_pruning_basics", "02_new"],
                                             {"00_welcome": "Welcome", "01_pruning_basics": "P", "02_new": "New"})
    assert 'href="00_welcome.html"' in page and 'href="01_pruning_basics.html"' in page
    assert 'href="02_new.html"' in page  # still reachable, listed under the table
    assert warnings == ["notebooks missing from the README's table: 02_new"]
    _, warnings = build_docs.landing_page("# no table", ["00_welcome"], {"00_welcome": "Welcome"})
    assert "no markdown table" in warnings[0]


def test_widget_outputs_become_a_note_and_progress_bars_text():
    note = build_docs.widget_html("DigitBrowser(children=(IntSlider(value=0),))")
    assert "<code>DigitBrowser</code>" in note and "JupyterLab" in note
    bar = build_docs.widget_html("100%|██████████| 5/5 [00:01<00:00,  4.1it/s]")
    assert bar.startswith('<pre class="lab-progress">100%|')


def test_figure_html_rejects_what_is_not_plotly_json():
    with pytest.raises(ValueError, match="plotly JSON"):
        build_docs.figure_html({"layout": {}}, "x")
    html = build_docs.figure_html({"data": [{"type": "bar", "y": [1, 2]}], "layout": {}}, "fig-1")
    assert 'id="fig-1"' in html and "Plotly.newPlot" in html


def test_built_site_has_every_notebook_and_ships_plotly_js_once(site: Path):
    plotly_js = site / "assets" / "plotly.min.js"
    assert plotly_js.stat().st_size > 1_000_000
    index = (site / "index.html").read_text()
    for path in notebook_paths():
        nb = nbformat.read(path, as_version=4)
        page = (site / f"{path.stem}.html").read_text()
        assert f'href="{path.stem}.html"' in index, f"landing page does not link {path.stem}"
        assert (site / "notebooks" / path.name).exists()
        assert len(page) < 2_000_000 and "plotly.js v" not in page, f"{path.stem}: plotly.js inlined"
        assert re.search(r'<script[^>]* src="assets/plotly.min.js"', page)
        assert page.count("Plotly.newPlot(") == count_outputs(nb, PLOTLY_MIME), f"{path.stem}: a figure went missing"
        assert page.count('class="lab-widget-note"') + page.count('class="lab-progress"') \
            == count_outputs(nb, WIDGET_MIME)
        # Offline: nothing is loaded from elsewhere (links in prose are fine, scripts and styles are not).
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page), f"{path.stem}: remote asset"


def test_instructor_guide_is_built_and_linked_from_the_landing_page(site: Path):
    index = (site / "index.html").read_text()
    assert 'href="instructors.html"' in index
    guide = (site / "instructors.html").read_text()
    assert "<h1>Instructor guide" in guide and "<table>" in guide  # markdown rendered, agenda table included
    # built from measured run times and stated study times, with a core path and optional parts
    for needed in ("Run time", "Study time", "Optional parts", "--no-index --find-links", "labkit doctor",
                   "Answers to the exercises", "06"):
        assert needed in guide, needed
    # every notebook has its answers in the guide (00-05 on the core path, 06 optional)
    for path in notebook_paths():
        assert f"<strong>{path.stem[:2]} " in guide, path.stem


def test_readme_links_the_instructor_guide():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "(docs/instructors.md)" in readme


@pytest.mark.browser
def test_built_site_draws_every_figure_offline_in_chromium(site: Path, browser):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    blocked: list[str] = []

    def only_local(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    try:
        page.goto(f"{base}/index.html")
        links = page.locator("table a[href$='.html'], ul.lab-more a[href$='.html']")
        assert links.count() >= len(notebook_paths())
        with_figures = [p for p in notebook_paths() if count_outputs(nbformat.read(p, 4), PLOTLY_MIME)]
        assert with_figures, "no notebook has a plotly figure to check"
        page.locator(f"a[href='{with_figures[0].stem}.html']").first.click()  # the landing page's links work
        page.wait_for_url(f"**/{with_figures[0].stem}.html")
        for path in notebook_paths():  # and every page draws all of its figures
            nb = nbformat.read(path, 4)
            if page.url != f"{base}/{path.stem}.html":
                page.goto(f"{base}/{path.stem}.html")
            expected = count_outputs(nb, PLOTLY_MIME)
            page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
                                   arg=expected, timeout=30_000)
            assert page.locator(".js-plotly-plot").count() == expected, path.stem
            assert page.locator(".js-plotly-plot .modebar-container").count() == expected  # interactive
            notes = page.locator(".lab-widget-note")
            assert notes.count() + page.locator(".lab-progress").count() == count_outputs(nb, WIDGET_MIME)
            for k in range(notes.count()):
                assert "Run this notebook in JupyterLab" in notes.nth(k).inner_text()
            if path == with_figures[0]:
                page.screenshot(path=str(ROOT / "test-artifacts" / f"docs-{path.stem}.png"), full_page=True)
        assert not blocked, f"the site asked for remote resources: {blocked[:5]}"
    finally:
        page.close()
        server.shutdown()
        server.server_close()
