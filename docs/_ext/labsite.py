"""labsite: the lab's hooks into Jupyter Book 1 (Sphinx + MyST-NB) for the docs site (``make docs``).

Jupyter Book does the site: pages, sidebar, previous/next links, search, math, the ``.ipynb`` download
button. Four things it cannot know about this lab are done here, each through a documented hook:

- **Notebook outputs** (``nb_custom_formats`` in docs/_config.yml makes MyST-NB read every ``.ipynb``
  through :func:`read_notebook`). Plotly figures are stored as ``application/vnd.plotly.v1+json``, which
  MyST-NB does not render: each becomes a ``<div>`` plus a ``Plotly.newPlot`` call. Explorer widgets need a
  kernel: each becomes a static picture of its default state, drawn now by the lab's own widget and figure
  code from the committed results files, with a line saying to run the notebook for the live version.
  A finished tqdm bar becomes its text. The notebook file itself is untouched, so the ``.ipynb`` a page
  offers for download is the committed one.
- **One shared plotly.js** (``html-page-context``): pages with figures load ``_static/plotly.min.js``,
  copied once from the installed plotly package (inlined it would cost ~4.6 MB per page).
- **Math without a network**: MathJax 3 comes from the ``sphinx-mathjax-offline`` package; only what
  ``tex-chtml.js`` loads (the script, its fonts, the TeX extensions it may autoload) is copied to
  ``_static/mathjax`` (``mathjax_path`` in docs/_config.yml points there), not the package's 24 MB.
- **Links to run a notebook** (``doctree-read``): under the title of each notebook page, its ``.ipynb``
  and the address ``make lab`` opens it at.
"""
from __future__ import annotations

import functools
import hashlib
import html
import importlib.util
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# tqdm.auto shows a widget bar in Jupyter; its text/plain is the bar as text, e.g. "train:  0%|   | 0/4 [...]".
TQDM_TEXT = re.compile(r"^[^|\n]*\d+%\|")
#: Where ``make lab`` serves JupyterLab (Makefile: 127.0.0.1, PORT 8888), rooted at the repository.
LAB_URL = "http://127.0.0.1:8888/lab/tree/"
#: What of MathJax 3 a page needs offline, relative to the package's ``static/mathjax`` folder.
MATHJAX_FILES = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")
#: The results files the explorers read, relative to the staged source folder (from the last commit).
RESULTS = Path("benchmarks") / "results"


# ---- explorers: how each notebook builds its explorer, reproduced from committed inputs --------------------

@dataclass(frozen=True)
class Explorer:
    """One explorer widget class of the lab and how its notebook makes it.

    ``call`` is the notebook's own line, checked by tests/browser/test_docs_site.py against the cell that
    displays the widget, so a notebook that changes how it builds its explorer fails a test until ``build``
    (which makes the same widget from the committed results folder) follows.
    """

    notebook: str
    call: str
    build: Callable[[Path], Any]


def _digit_browser(results: Path) -> Any:
    """Notebook 00's digit browser over the test split of its digits."""
    from labkit import data
    from labkit.widgets.digits import digit_browser

    ds = data.digits(seed=0)  # notebook 00's split
    return digit_browser(ds.test)


def _pruning_explorer(results: Path) -> Any:
    """Notebook 02's sparsity-versus-accuracy explorer over the committed pruning sweep."""
    from labkit.experiments import pruning_sweep
    from labkit.widgets.pruning import pruning_explorer

    return pruning_explorer(pruning_sweep.load_sweep(results / "pruning_sweep_cpu.json"))


def _routing_explorer(results: Path) -> Any:
    """Notebook 04's routing explorer over the committed routing grid."""
    from labkit.moe.routing_grid import load_routing_grid
    from labkit.widgets.moe import routing_explorer

    return routing_explorer(load_routing_grid(results / "moe_routing_grid.json"))


def _deployment_calculator(results: Path) -> Any:
    """Notebook 05's deployment calculator, starting at the dense digits model's estimated joules."""
    from labkit import data
    from labkit.experiments import energy_zoo
    from labkit.figures import energy as energy_figures
    from labkit.widgets import energy as we

    # Notebook 05's cells, in order: the zoo (cached on disk), its estimated joules, the presets.
    ds = data.digits(seed=0, flat=True)
    zoo = energy_zoo.model_zoo()
    rows = energy_zoo.energy_rows(zoo, ds.test, ds.train, batch_sizes=(1, 64))
    presets = {f"{r['name']} digits model, batch 1": (r["j_per_inference_b1"], "estimated") for r in rows}
    qwen = energy_figures.published_figures()[0]
    presets[f"{qwen['figure']} (ML.ENERGY)"] = (qwen["value"], "measured")
    return we.deployment_calculator(rows[0]["j_per_inference_b1"], requests_per_day=1e6, region="USA",
                                    presets=presets)


def _llm_explorer(results: Path) -> Any:
    """Notebook 06's sparsity-versus-perplexity explorer over the committed language-model sweep."""
    from labkit.widgets import llm as explorer_lib

    return explorer_lib.llm_explorer(explorer_lib.load_sweep(results / "llm_prune_cpu.json"))


def _budget_explorer(results: Path) -> Any:
    """Notebook 07's byte-budget explorer over the three committed language-model results files."""
    from labkit.experiments import llm_compress
    from labkit.widgets import llm_compress as explorer_lib

    return explorer_lib.budget_explorer(llm_compress.load_all(results))


def _activation_explorer(results: Path) -> Any:
    """Notebook 08's activation-sparsity explorer over the committed llm_activation_cpu.json."""
    from labkit.experiments import llm_activation
    from labkit.widgets import llm_activation as explorer_lib

    return explorer_lib.activation_explorer(llm_activation.load(results))


#: Widget class name (the start of its stored text/plain, "PruningExplorer(children=...") -> its explorer.
EXPLORERS: dict[str, Explorer] = {
    "DigitBrowser": Explorer("00_welcome", "digit_browser(ds.test)", _digit_browser),
    "PruningExplorer": Explorer("02_pruning_in_practice", "pruning_explorer(sweep)", _pruning_explorer),
    "RoutingExplorer": Explorer("04_mixture_of_experts", "routing_explorer()", _routing_explorer),
    "DeploymentCalculator": Explorer(
        "05_energy_and_carbon",
        'we.deployment_calculator(rows[0]["j_per_inference_b1"], requests_per_day=1e6, region="USA", '
        "presets=presets)", _deployment_calculator),
    "LLMExplorer": Explorer("06_pruning_a_language_model", "explorer_lib.llm_explorer(sweep)", _llm_explorer),
    "BudgetExplorer": Explorer("07_healing_and_quantizing_a_language_model", "explorer_lib.budget_explorer(files)",
                               _budget_explorer),
    "ActivationExplorer": Explorer("08_activation_sparsity", "explorer_lib.activation_explorer(sweep)",
                                   _activation_explorer),
}


class _Build:
    """What the reader needs from the running build: set by :func:`_on_builder_inited`."""

    results: Path | None = None


@functools.cache
def explorer_widget(name: str, results: Path) -> Any:
    """The explorer ``name`` in its default state (built once per build: some train or load models)."""
    from labkit import utils

    utils.reproducible(0)  # as every notebook starts: seeds, and torch on 2 threads
    return EXPLORERS[name].build(results)


# ---- outputs -> static HTML ---------------------------------------------------------------------------------

def figure_html(figure: dict, div_id: str) -> str:
    """A plotly figure (its JSON) as a div drawn by the page's shared plotly.js."""
    import plotly.io as pio

    if not isinstance(figure, dict) or "data" not in figure:
        raise ValueError(f"figure {div_id} must be plotly JSON with a 'data' key, got {type(figure).__name__}")
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id, validate=False)


def _control_text(control: Any) -> str | None:
    """``description: value`` of an ipywidgets control as the user sees it, or None for a non-control."""
    description = getattr(control, "description", "")
    if not description or not hasattr(control, "value"):
        return None
    shown = control.label if hasattr(control, "label") else control.value
    if isinstance(shown, float):
        shown = f"{shown:g}"
    return f"{html.escape(description)}: <b>{html.escape(str(shown))}</b>"


def _walk(widget: Any) -> Iterator[Any]:
    """The widget and every widget inside it, in display order."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def explorer_picture(name: str, widget: Any, id_prefix: str) -> str:
    """A static picture of an explorer: its control settings, its figures and its HTML outputs, in order."""
    import ipywidgets as widgets
    import plotly.graph_objects as go

    settings: list[str] = []
    parts: list[str] = []
    for n, w in enumerate(_walk(widget)):
        if isinstance(w, go.FigureWidget):
            figure = w.to_plotly_json()
            for trace in figure["data"]:  # a random id per trace, for syncing with a live view: not needed here
                trace.pop("uid", None)
            parts.append(figure_html(figure, f"{id_prefix}-{n}"))
        elif isinstance(w, widgets.HTML | widgets.HTMLMath) and w.value:
            parts.append(f'<div class="lab-explorer-html">{w.value}</div>')  # the lab's own, escaped, HTML
        elif (text := _control_text(w)) is not None:
            settings.append(text)
    if not any("plotly-graph-div" in p for p in parts):
        raise ValueError(f"explorer {name} has no plotly FigureWidget to picture")
    note = (f'<p class="lab-widget-note">A picture of the explorer <code>{html.escape(name)}</code> in its '
            "default state, drawn when this site was built. Run this notebook in JupyterLab "
            "(<code>make lab</code>) to use the live version.</p>")
    shown = f'<p class="lab-explorer-settings">{" &middot; ".join(settings)}</p>' if settings else ""
    return f'<div class="lab-explorer">{note}{shown}{"".join(parts)}</div>'


def widget_html(plain: str, id_prefix: str, results: Path | None) -> str:
    """What a static page shows for a stored widget output (its text/plain is all the notebook keeps)."""
    if TQDM_TEXT.match(plain):
        return f'<pre class="lab-progress">{html.escape(plain)}</pre>'
    name = plain.split("(", 1)[0].strip()
    if name in EXPLORERS:
        if results is None:
            raise RuntimeError("labsite's results folder is unset: load labsite as a Sphinx extension")
        return explorer_picture(name, explorer_widget(name, results), id_prefix)
    logger.warning(f"labsite: no static picture for the widget {name or plain[:40]!r}: add it to "
                   "labsite.EXPLORERS (docs/_ext/labsite.py)", type="labsite", subtype="widget")
    return (f'<p class="lab-widget-note">An interactive widget (<code>{html.escape(name)}</code>): run this '
            "notebook in JupyterLab (<code>make lab</code>) to use it.</p>")


def static_outputs(nb: nbformat.NotebookNode, id_prefix: str, results: Path | None) -> nbformat.NotebookNode:
    """``nb`` with plotly and widget outputs replaced by HTML a static page can show (changed in place)."""
    figures = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data:
                figures += 1
                figure = data[PLOTLY_MIME]
                output["data"] = {"text/html": figure_html(figure, f"{id_prefix}-figure-{figures}")}
            elif WIDGET_MIME in data:
                figures += 1
                output["data"] = {"text/html": widget_html(data.get("text/plain", ""), f"{id_prefix}-widget-{figures}",
                                                           results)}
    return nb


def read_notebook(text: str) -> nbformat.NotebookNode:
    """MyST-NB's reader for ``.ipynb`` (``nb_custom_formats``): the notebook with static outputs."""
    nb = nbformat.reads(text, as_version=4)
    # Element ids must be unique on a page and stable between builds: a hash of the notebook.
    prefix = "lab-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return static_outputs(nb, prefix, _Build.results)


# ---- Sphinx events ------------------------------------------------------------------------------------------

def _on_builder_inited(app: Sphinx) -> None:
    """The explorers read the results files staged beside the pages (the last commit's), not the working tree's."""
    _Build.results = Path(app.srcdir) / RESULTS


def _add_notebook_links(app: Sphinx, doctree: nodes.document) -> None:
    """Under a notebook page's title: download its .ipynb, or open it in a running ``make lab``."""
    docname = app.env.docname
    if Path(app.env.doc2path(docname)).suffix != ".ipynb":
        return
    title = doctree.next_node(nodes.title)
    if title is None:
        return
    up = "../" * docname.count("/")
    name = docname.rsplit("/", 1)[-1] + ".ipynb"
    links = (f'<p class="lab-notebook-links">Download the notebook: <a class="lab-ipynb" '
             f'href="{up}_sources/{docname}.ipynb" download="{name}">{name}</a>. To run it, clone the '
             "repository and run <code>make lab</code>; once you have opened the address with the token it "
             f'prints, this notebook is at <a class="lab-jupyterlab" href="{LAB_URL}{docname}.ipynb">'
             f"{LAB_URL}{docname}.ipynb</a>. This page shows the outputs committed in the repository.</p>")
    title.parent.insert(title.parent.index(title) + 1, nodes.raw("", links, format="html"))


def _add_plotly_js(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Pages that draw figures load the one shared plotly.js, in the head, before their figures run."""
    if "Plotly.newPlot" in context.get("body", ""):
        app.builder.add_js_file("plotly.min.js")  # type: ignore[attr-defined]


def mathjax_folder() -> Path:
    """MathJax 3's files in the installed ``sphinx-mathjax-offline`` package."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("sphinx-mathjax-offline is not installed: pip install -e '.[docs]' "
                           "-c requirements/constraints.txt (make docs does it)")
    return Path(spec.origin).parent / "static" / "mathjax"


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package (the version the notebooks' figures were made with)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _copy_assets(app: Sphinx, exception: Exception | None) -> None:
    """One copy of plotly.js and of the MathJax files a page needs, into ``_static``."""
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    shutil.copy2(plotly_js(), static / "plotly.min.js")
    source = mathjax_folder()
    for part in MATHJAX_FILES:
        src, dst = source / part, static / "mathjax" / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    # The theme's source maps (3.4 MB) are read only by a browser's developer tools, never by a page.
    for source_map in static.rglob("*.map"):
        source_map.unlink()


def _add_static_path(app: Sphinx, config: Any) -> None:
    """labsite.css lives beside this file (the working tree's docs/_ext/_static), not in the staged pages."""
    config.html_static_path = [*config.html_static_path, str(Path(__file__).parent / "_static")]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hooks (Sphinx calls this when docs/_config.yml's local_extensions loads labsite)."""
    app.connect("builder-inited", _on_builder_inited)
    app.connect("doctree-read", _add_notebook_links)
    app.connect("html-page-context", _add_plotly_js)
    app.connect("build-finished", _copy_assets)
    app.connect("config-inited", _add_static_path)
    app.add_css_file("labsite.css")
    return {"parallel_read_safe": False, "parallel_write_safe": True}
