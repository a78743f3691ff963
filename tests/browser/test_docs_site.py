"""The docs site (``make docs``: Jupyter Book 1, configured by docs/_config.yml, hooks in docs/_ext/labsite.py).

The hooks are tested on small inputs. Then one build serves every other test: ``make docs-build`` (the recipe
``make docs`` runs) on a temporary clone of the repository in which a notebook was edited and not committed,
so the site must show the committed notebooks only. The built files are checked as files (sidebar, previous
and next, downloads, every internal link, one copy of plotly.js and MathJax), and the pages in headless
Chromium (skipped without it), served from 127.0.0.1 with every other request blocked: math is typeset,
search finds the notebooks, every plotly figure and every explorer picture is drawn.
"""
from __future__ import annotations

import functools
import hashlib
import html as htmllib
import http.server
import logging
import os
import posixpath
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import ipywidgets as widgets
import nbformat
import plotly.graph_objects as go
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import labsite  # noqa: E402

PLOTLY_MIME = labsite.PLOTLY_MIME
WIDGET_MIME = labsite.WIDGET_MIME
#: Text added to a notebook of the clone and never committed: it must not reach the site.
UNCOMMITTED = "An edit saved in the working tree and never committed (test_docs_site)"


def git(*args: str, cwd: Path = ROOT) -> bytes:
    """The output of ``git args`` in ``cwd`` (the repository by default); fails on a git error."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True).stdout


@functools.cache
def committed_notebooks() -> dict[str, bytes]:
    """``notebooks/NN_*.ipynb`` of HEAD, name -> file bytes, in file-name order."""
    names = git("ls-tree", "--name-only", "HEAD", "notebooks/").decode().split()
    return {Path(n).stem: git("show", f"HEAD:{n}") for n in sorted(names) if re.match(r"notebooks/\d\d_.*\.ipynb$", n)}


def committed(stem: str) -> nbformat.NotebookNode:
    """Notebook ``stem`` as committed in HEAD."""
    return nbformat.reads(committed_notebooks()[stem].decode("utf-8"), as_version=4)


def outputs(nb: nbformat.NotebookNode, mime: str) -> list[dict]:
    """Every output of ``nb`` that carries ``mime``."""
    return [o for c in nb.cells for o in c.get("outputs", []) if mime in o.get("data", {})]


def explorer_outputs(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(widget class, source of the cell that displays it) of every non-progress-bar widget output."""
    found = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            plain = o.get("data", {}).get("text/plain", "")
            if WIDGET_MIME in o.get("data", {}) and not labsite.TQDM_TEXT.match(plain):
                found.append((plain.split("(", 1)[0], cell.source))
    return found


# ---- the hooks, on small inputs ----------------------------------------------------------------------------

def test_figure_html_is_a_div_for_the_shared_plotly_js_and_rejects_other_json():
    with pytest.raises(ValueError, match="plotly JSON"):
        labsite.figure_html({"layout": {}}, "x")
    html = labsite.figure_html({"data": [{"type": "bar", "y": [1, 2]}], "layout": {}}, "fig-1")
    assert 'id="fig-1"' in html and "Plotly.newPlot" in html and "plotly.js v" not in html  # not inlined


def test_progress_bars_become_text_and_unknown_widgets_a_note_and_a_warning(caplog):
    bar = labsite.widget_html("train or load:   0%|          | 0/4 [00:00<?, ?it/s]", "w", None)
    assert bar.startswith('<pre class="lab-progress">train or load:')
    with caplog.at_level(logging.WARNING):
        note = labsite.widget_html("NewExplorer(children=(IntSlider(value=0),))", "w", None)
    assert "<code>NewExplorer</code>" in note and "JupyterLab" in note
    assert "no static picture for the widget 'NewExplorer'" in caplog.text  # the build runs with -W: it fails


def test_static_outputs_replace_plotly_and_widgets_and_keep_the_rest():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("fig", outputs=[
        nbformat.v4.new_output("display_data", {PLOTLY_MIME: {"data": [{"type": "bar", "y": [3]}], "layout": {}},
                                                "text/plain": "Figure"}),
        nbformat.v4.new_output("display_data", {WIDGET_MIME: {"model_id": "x"}, "text/plain": "9%|# | 1/9 [..]"}),
        nbformat.v4.new_output("stream", text="printed\n")])]
    out = labsite.static_outputs(nb, "p", None).cells[0].outputs
    assert list(out[0]["data"]) == ["text/html"] and 'id="p-figure-1"' in out[0]["data"]["text/html"]
    assert list(out[1]["data"]) == ["text/html"] and 'class="lab-progress"' in out[1]["data"]["text/html"]
    assert out[2]["text"] == "printed\n"


def test_read_notebook_gives_stable_unique_figure_ids():
    nb = nbformat.v4.new_notebook()
    figure = {"data": [{"type": "scatter", "y": [1]}], "layout": {}}
    nb.cells = [nbformat.v4.new_code_cell("f", outputs=[nbformat.v4.new_output("display_data", {PLOTLY_MIME: figure})
                                                         for _ in range(2)])]
    text = nbformat.writes(nb)
    first, again = labsite.read_notebook(text), labsite.read_notebook(text)
    ids = [re.search(r'id="([^"]+)"', o["data"]["text/html"]).group(1) for o in first.cells[0].outputs]
    assert len(set(ids)) == 2  # unique on the page
    assert [o["data"] for o in again.cells[0].outputs] == [o["data"] for o in first.cells[0].outputs]  # stable


def test_explorer_picture_shows_settings_figures_and_html_in_order():
    fig = go.FigureWidget(go.Bar(y=[1, 2]))
    box = widgets.VBox([widgets.Dropdown(options=[("ten %", 0.1)], value=0.1, description="sparsity"),
                        widgets.HBox([fig, widgets.HTML("<b>status</b>")])])
    picture = labsite.explorer_picture("Demo", box, "d")
    assert "sparsity: <b>ten %</b>" in picture  # what the control shows, not its value
    assert picture.index("plotly-graph-div") < picture.index("<b>status</b>")
    assert "Run this notebook in JupyterLab" in picture
    assert fig.to_plotly_json()["data"][0].get("uid") and '"uid"' not in picture  # a random id: builds would differ
    with pytest.raises(ValueError, match="no plotly FigureWidget"):
        labsite.explorer_picture("Empty", widgets.VBox([widgets.HTML("x")]), "e")


def test_every_explorer_in_the_notebooks_has_a_picture_made_the_way_its_notebook_makes_it():
    shown = {}
    for stem in committed_notebooks():
        for name, source in explorer_outputs(committed(stem)):
            assert name in labsite.EXPLORERS, f"{stem} shows {name}: add it to labsite.EXPLORERS"
            explorer = labsite.EXPLORERS[name]
            assert explorer.notebook == stem, f"{name} is shown by {stem}, not {explorer.notebook}"
            assert explorer.call in source, f"{stem} no longer makes {name} with {explorer.call!r}: update labsite"
            shown[name] = stem
    assert shown.keys() == labsite.EXPLORERS.keys(), f"explorers no notebook shows: {labsite.EXPLORERS.keys() - shown}"


def test_mathjax_and_plotly_come_from_installed_packages():
    assert (labsite.mathjax_folder() / "tex-chtml.js").stat().st_size > 500_000
    assert labsite.plotly_js().stat().st_size > 1_000_000


# ---- the built site, as files ------------------------------------------------------------------------------

@dataclass
class Site:
    """The built site: its folder, and which notebook the clone it was built from had edited."""

    root: Path
    #: the notebook the clone edited without committing
    edited: str


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    """``make docs-build`` on a clone of HEAD whose first notebook carries an uncommitted edit."""
    tmp = tmp_path_factory.mktemp("docs")
    clone = tmp / "clone"
    git("clone", "--quiet", "--shared", str(ROOT), str(clone))
    edited = next(iter(committed_notebooks()))
    path = clone / "notebooks" / f"{edited}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(f"**{UNCOMMITTED}**"))
    nbformat.write(nb, path)
    assert git("status", "--porcelain", cwd=clone).strip(), "the clone should have an uncommitted edit"
    out = tmp / "site"
    proc = subprocess.run(["make", "--no-print-directory", "docs-build", f"DOCS_REPO={clone}", f"DOCS_OUT={out}",
                           f"VENV={sys.prefix}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"make docs-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert not proc.stderr.strip(), f"the build warned:\n{proc.stderr[-3000:]}"
    return Site(out, edited)


class Page(HTMLParser):
    """One HTML page: its links (every href and src), ids, sidebar entries, previous/next links, and its plotly
    figures, counted inside and outside the pictures of explorers."""

    def __init__(self, text: str):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.sidebar: list[str] = []
        self.prev_next: dict[str, str] = {}
        self.figures = {"outside": 0, "in explorers": 0}
        self.explorers = 0
        self._open: list[set[str]] = []  # the classes of each open nav and div element, outermost first
        self.feed(text)

    def _inside(self, css_class: str) -> bool:
        return any(css_class in classes for classes in self._open)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = set(a.get("class", "").split())
        self.ids |= {a[k] for k in ("id", "name") if a.get(k)}
        self.links += [a[k] for k in ("href", "src") if a.get(k)]
        if tag == "a" and "reference" in classes and self._inside("bd-docs-nav"):
            self.sidebar.append(a.get("href", ""))
        if tag == "a" and classes & {"left-prev", "right-next"}:
            self.prev_next["prev" if "left-prev" in classes else "next"] = a.get("href", "")
        if tag == "div" and "plotly-graph-div" in classes:
            self.figures["in explorers" if self._inside("lab-explorer") else "outside"] += 1
        if tag == "div" and "lab-explorer" in classes:
            self.explorers += 1
        if tag in ("nav", "div"):
            self._open.append(classes)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("nav", "div") and self._open:
            self._open.pop()


def pages(site: Site) -> Iterator[tuple[str, str]]:
    """(path relative to the site, HTML) of every page (not the Jinja macros the theme leaves in _static/)."""
    for path in sorted(site.root.rglob("*.html")):
        name = path.relative_to(site.root).as_posix()
        if not name.startswith("_static/"):
            yield name, path.read_text(encoding="utf-8")


def resolve(page: str, href: str) -> tuple[str, str]:
    """The site path and fragment an internal link of ``page`` points at."""
    parsed = urllib.parse.urlsplit(href)
    path = urllib.parse.unquote(parsed.path)
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page), path)) if path else page
    return target, parsed.fragment


def is_external(href: str) -> bool:
    """A link to another site (it has a scheme or starts with //)."""
    return bool(urllib.parse.urlsplit(href).scheme) or href.startswith("//")


#: The sidebar, top to bottom: the landing page, the notebooks in order, the README's results, the guide.
SIDEBAR = ["docs/index.html", *(f"notebooks/{stem}.html" for stem in committed_notebooks()), "docs/results.html",
           "docs/instructors.html"]


def test_sidebar_lists_every_notebook_in_order_then_the_results_and_the_instructor_guide(site: Site):
    for name, text in pages(site):
        if name.startswith(("notebooks/", "docs/")):
            listed = [resolve(name, h)[0] for h in Page(text).sidebar]
            assert listed == SIDEBAR, f"{name}: sidebar {listed}"


def test_previous_and_next_links_follow_the_sidebar(site: Site):
    order = SIDEBAR
    for i, name in enumerate(order):
        links = {k: resolve(name, v)[0] for k, v in Page((site.root / name).read_text()).prev_next.items()}
        assert links.get("prev") == (order[i - 1] if i else None), name
        assert links.get("next") == (order[i + 1] if i + 1 < len(order) else None), name


def test_every_internal_link_resolves(site: Site):
    checked, broken = 0, []
    ids = {name: Page(text).ids for name, text in pages(site)}
    for name, text in pages(site):
        for href in Page(text).links:
            if is_external(href) or href.startswith(("mailto:", "data:", "javascript:")) or href == "#":
                continue
            target, fragment = resolve(name, href)
            checked += 1
            if not (site.root / target).is_file():
                broken.append(f"{name}: {href} (no file {target})")
            elif fragment and target.endswith(".html") and fragment not in ids[target]:
                broken.append(f"{name}: {href} (no id {fragment!r} in {target})")
    assert checked > 500, f"only {checked} internal links: is the site complete?"
    assert not broken, f"{len(broken)} broken internal links: {broken[:10]}"


def article(html: str) -> str:
    """The page's own content, without the sidebar, header and footer of the theme."""
    return html.split("<article", 1)[1].split(">", 1)[1].split("</article>", 1)[0]


def text_of(html: str) -> str:
    """The text of an HTML fragment (code is highlighted word by word, so search its text, not its HTML)."""
    return htmllib.unescape(re.sub(r"<[^>]+>", "", html))


def test_landing_page_is_the_root_and_links_every_notebook_the_results_and_the_guide(site: Site):
    index = (site.root / "docs" / "index.html").read_text()
    linked = {resolve("docs/index.html", h)[0] for h in Page(article(index)).links}
    assert set(SIDEBAR[1:]) <= linked, f"the landing page (README's table) does not link {set(SIDEBAR[1:]) - linked}"
    assert "<table" in article(index) and "minutes on a 2-core CPU" in article(index)  # the README's table
    assert 'url=docs/index.html"' in (site.root / "index.html").read_text()  # the site's root opens it


def test_results_page_is_the_readmes_results_section(site: Site):
    page = text_of(article((site.root / "docs" / "results.html").read_text()))
    for needed in ("What the lab measured on a CPU", "GPU results", "Pruning keeps accuracy at 90%",
                   "benchmarks/results/pytorch_baselines_h200_2026-11-28.json"):
        assert needed in page, needed
    assert "Check your machine" not in page  # the section ends where the README's next one starts


def test_instructor_guide_is_built(site: Site):
    html = (site.root / "docs" / "instructors.html").read_text()
    assert "<table" in article(html)  # markdown rendered, agenda table included
    guide = text_of(article(html))
    assert guide.lstrip().startswith("Instructor guide")
    # built from measured run times and stated study times, with a core path and optional parts
    for needed in ("Run time", "Study time", "Optional parts", "--no-index --find-links", "labkit doctor",
                   "Answers to the exercises", "06"):
        assert needed in guide, needed
    for stem in committed_notebooks():  # every notebook has its answers in the guide (00-05 core, 06 optional)
        assert f"<strong>{stem[:2]} " in html, stem


def test_readme_links_the_instructor_guide():
    assert "(docs/instructors.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_downloads_are_the_committed_notebooks_and_the_uncommitted_edit_is_nowhere(site: Site):
    for stem, blob in committed_notebooks().items():
        page = (site.root / "notebooks" / f"{stem}.html").read_text()
        downloads = {resolve(f"notebooks/{stem}.html", h)[0] for h in Page(page).links if h.endswith(".ipynb")
                     and not is_external(h)}
        assert downloads == {f"_sources/notebooks/{stem}.ipynb"}, downloads  # the theme's button and labsite's link
        served = (site.root / "_sources" / "notebooks" / f"{stem}.ipynb").read_bytes()
        assert served == blob, f"{stem}: the download is not HEAD's notebook"
        nbformat.validate(nbformat.reads(served.decode("utf-8"), as_version=4))
        assert f"{labsite.LAB_URL}notebooks/{stem}.ipynb" in page  # open it in a running `make lab`
    leaked = [p for p in site.root.rglob("*") if p.is_file() and UNCOMMITTED.encode() in p.read_bytes()]
    assert not leaked, f"the uncommitted edit of {site.edited} reached the site: {leaked}"


def test_one_copy_of_each_asset_and_nothing_loaded_from_elsewhere(site: Site):
    files = [p for p in site.root.rglob("*") if p.is_file()]
    for asset in ("plotly.min.js", "tex-chtml.js"):
        assert len([p for p in files if p.name == asset]) == 1, asset
    by_content: dict[str, list[str]] = {}
    for p in files:
        if p.stat().st_size > 50_000:  # the assets: scripts, styles, fonts, notebooks
            by_content.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), []).append(p.name)
    copies = [names for names in by_content.values() if len(names) > 1]
    assert not copies, f"assets stored twice: {copies}"
    size = sum(p.stat().st_size for p in files)
    assert size < 20_000_000, f"the site is {size / 1e6:.1f} MB"
    for name, text in pages(site):
        assert "plotly.js v" not in text, f"{name}: plotly.js inlined"
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', text), f"{name}: remote asset"


def test_every_figure_and_explorer_is_on_its_page(site: Site):
    for stem in committed_notebooks():
        nb, html = committed(stem), (site.root / "notebooks" / f"{stem}.html").read_text()
        page = Page(html)
        assert page.figures["outside"] == len(outputs(nb, PLOTLY_MIME)), f"{stem}: a figure went missing"
        explorers = [name for name, _ in explorer_outputs(nb)]
        assert page.explorers == len(explorers), stem
        for name in explorers:
            assert f"explorer <code>{name}</code> in its default state" in html, f"{stem}: no picture of {name}"
        assert page.figures["in explorers"] >= len(explorers), f"{stem}: an explorer picture without a figure"
        bars = [o for o in outputs(nb, WIDGET_MIME) if labsite.TQDM_TEXT.match(o["data"].get("text/plain", ""))]
        assert html.count('class="lab-progress"') == len(bars), stem
        if "Plotly.newPlot(" in html:
            assert re.search(r'<script src="\.\./_static/plotly\.min\.js"', html), f"{stem}: no shared plotly.js"
            assert html.index("_static/plotly.min.js") < html.index("Plotly.newPlot("), "plotly.js loads too late"


# ---- the pages in a browser, offline -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(site: Site) -> Iterator[str]:
    """The site on 127.0.0.1, as ``python -m http.server -d _build/docs`` serves it (README)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site.root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Offline:
    """A browser page on which every request that is not to the local server is blocked and recorded."""

    def __init__(self, page, base: str):
        self.page, self.base = page, base
        self.blocked: list[str] = []
        self.local: list[str] = []
        page.route("**/*", self._route)

    def _route(self, route) -> None:
        if route.request.url.startswith(self.base):
            self.local.append(route.request.url)
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def check(self) -> None:
        """No request left the machine (and some reached the local server, so there was something to check)."""
        assert self.local, "no request reached the local server"
        assert not self.blocked, f"the site asked for remote resources: {self.blocked[:5]}"


@pytest.fixture
def offline(browser, served: str) -> Iterator[Offline]:
    """A fresh page of the session's Chromium that may talk to the local server only."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        yield Offline(page, served)
    finally:
        page.close()


#: Text of the page outside code, scripts and typeset math: raw TeX would show here.
VISIBLE_TEXT = """() => {
  const skip = 'pre, code, script, style, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.querySelector('article'), NodeFilter.SHOW_TEXT);
  let text = '';
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement.closest(skip)) text += n.textContent;
  }
  return text;
}"""


@pytest.mark.browser
def test_math_is_typeset_on_every_page_offline(site: Site, offline: Offline):
    page, base = offline.page, offline.base
    typeset = {}
    for name, _ in pages(site):
        page.goto(f"{base}/{name}")
        if page.locator(".math").count():
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
            formulas, rendered = page.locator(".math").count(), page.locator(".math mjx-container").count()
            assert rendered == formulas, f"{name}: {formulas - rendered} of {formulas} formulas not typeset"
            typeset[name] = formulas
        if page.locator("article").count():
            text = page.evaluate(VISIBLE_TEXT)
            for raw in ("$$", "\\(", "\\["):
                assert raw not in text, f"{name}: raw TeX {raw!r} near {text[max(0, text.find(raw) - 60):][:120]!r}"
    # The formulas of the issue: Wanda's score in 06, the cubic schedule in 02 (display math, typeset by MathJax).
    assert {"notebooks/02_pruning_in_practice.html", "notebooks/06_pruning_a_language_model.html"} <= typeset.keys()
    page.goto(f"{base}/notebooks/06_pruning_a_language_model.html")
    page.evaluate("() => MathJax.startup.promise")
    wanda = page.locator("mjx-container[display='true']").first
    assert re.sub(r"\s", "", wanda.locator("mjx-assistive-mml").text_content()).startswith("Sij=|Wij|")
    assert wanda.bounding_box()["height"] > 10  # drawn, not an empty box
    offline.check()


def search(page, base: str, query: str) -> list[str]:
    """The site paths the search page lists for ``query``."""
    page.goto(f"{base}/search.html?q={urllib.parse.quote(query)}")
    # Sphinx's search page says "Search finished, found N page(s)" or "Your search did not match any documents".
    page.wait_for_function("() => /finished|did not match/.test(document.querySelector('.search-summary')?.innerText)",
                           timeout=30_000)
    hrefs = page.locator("#search-results ul.search li a").evaluate_all("els => els.map(e => e.href)")
    return sorted({urllib.parse.urlsplit(h).path.lstrip("/") for h in hrefs})


@pytest.mark.browser
def test_search_finds_the_notebooks_offline(offline: Offline):
    page, base = offline.page, offline.base
    assert "notebooks/06_pruning_a_language_model.html" in search(page, base, "Wanda")
    assert "notebooks/04_mixture_of_experts.html" in search(page, base, "capacity")
    assert search(page, base, "qzxjvwk") == []  # a word on no page finds nothing
    offline.check()


@pytest.mark.browser
def test_ipynb_download_links_serve_notebooks_that_parse(site: Site, offline: Offline):
    page, base = offline.page, offline.base
    for stem in committed_notebooks():
        page.goto(f"{base}/notebooks/{stem}.html")
        link = page.locator("a.lab-ipynb")
        assert link.count() == 1, stem
        with page.expect_download() as download:
            link.click()
        path = download.value.path()
        nbformat.validate(nbformat.read(path, as_version=4))
        assert Path(path).read_bytes() == committed_notebooks()[stem]
    offline.check()


@pytest.mark.browser
def test_every_figure_and_explorer_picture_draws_offline(site: Site, offline: Offline):
    page, base = offline.page, offline.base
    first = True
    for stem in committed_notebooks():
        page.goto(f"{base}/notebooks/{stem}.html")
        expected = page.locator(".plotly-graph-div").count()
        if not expected:
            continue
        page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
                               arg=expected, timeout=30_000)
        assert page.locator(".js-plotly-plot").count() == expected, stem
        assert page.locator(".js-plotly-plot .modebar-container").count() == expected, stem  # interactive
        pictures = page.locator(".lab-explorer")
        for k in range(pictures.count()):
            picture = pictures.nth(k)
            assert "Run this notebook in JupyterLab" in picture.locator(".lab-widget-note").inner_text()
            assert picture.locator(".js-plotly-plot .main-svg").count() >= 1, f"{stem}: explorer picture not drawn"
        if first and pictures.count():
            os.makedirs(ROOT / "test-artifacts", exist_ok=True)
            pictures.first.screenshot(path=str(ROOT / "test-artifacts" / f"docs-{stem}-explorer.png"))
            first = False
    offline.check()


@pytest.mark.browser
def test_site_opened_from_disk_typesets_math_and_draws_figures(site: Site, browser):
    """``open _build/docs/index.html`` (README): from file:// too, math is typeset and figures drawn."""
    page = browser.new_page()
    remote: list[str] = []

    def files_only(route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    page.route("**/*", files_only)
    try:
        page.goto((site.root / "notebooks" / "06_pruning_a_language_model.html").as_uri())
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("() => MathJax.startup.promise")
        assert page.locator(".math mjx-container").count() == page.locator(".math").count() > 0
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0",
                               timeout=30_000)
        assert not remote, f"the page asked for remote resources: {remote[:5]}"
    finally:
        page.close()
