"""Every notebook, run in JupyterLab in a real (headless) browser: what a learner actually sees.

nbval checks a notebook's outputs as data; it cannot see a widget that shows "Error displaying widget" or
a plot that stays blank. For each notebooks/NN_*.ipynb (collected automatically) this test opens it in
JupyterLab, clears the stored outputs, runs it cell by cell and checks:

- no cell produced an error output (stderr warnings are fine; cells marked NBVAL_RAISES_EXCEPTION may raise;
  cells marked NBVAL_SKIP are not run, as under nbval);
- no "Error displaying widget" anywhere in the page;
- every plotly figure rendered: as many drawn ``.js-plotly-plot`` elements as the run produced plotly outputs
  plus FigureWidgets;
- every explorer (a widget output holding both a control and a plotly figure) responds: each slider,
  dropdown, toggle or radio button in it is moved with the keyboard or mouse, and a figure in it must change;
- no JavaScript errors in the page (a widget whose front end throws shows up blank, and only there).

A screenshot of the whole notebook and a JSON summary (cell times, widget update times) go to
test-artifacts/. Cells may take minutes (training, Triton under the interpreter): the per-cell limit is
LABKIT_BROWSER_CELL_TIMEOUT seconds (default 900, like nbval's).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture skips these tests with the reason
    PlaywrightTimeout = TimeoutError

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# Whatever notebooks exist when the tests are collected: a new notebook is covered without editing this file.
NOTEBOOK_PATHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

pytestmark = pytest.mark.browser

CELL_TIMEOUT_MS = int(float(os.environ.get("LABKIT_BROWSER_CELL_TIMEOUT", "900")) * 1000)
RENDER_TIMEOUT_MS = 60_000
UPDATE_TIMEOUT_MS = 15_000
MOVES = 3

CURRENT = "window.jupyterapp?.shell?.currentWidget"
KERNEL_IDLE = f"() => {CURRENT}?.sessionContext?.session?.kernel?.status === 'idle'"

# Start running cell i; the result lands in window.__labRun when JupyterLab's run command resolves.
RUN_CELL = f"""i => {{
  const nb = {CURRENT}.content;
  nb.activeCellIndex = i;
  nb.deselectAll();
  window.__labRun = {{done: false}};
  window.jupyterapp.commands.execute('notebook:run-cell').then(
    ok => {{ window.__labRun = {{done: true, ok}}; }},
    err => {{ window.__labRun = {{done: true, ok: false, error: String(err)}}; }});
  return nb.widgets[i].model.type;
}}"""

# What the fresh run produced, read from JupyterLab's own notebook model (not from the DOM).
RUN_SUMMARY = f"""() => {{
  const cells = {CURRENT}.content.widgets;
  const errors = [];
  let plotly = 0, figureWidgets = 0;
  cells.forEach((cell, i) => {{
    if (cell.model.type !== 'code') return;
    const outputs = cell.model.outputs;
    for (let k = 0; k < outputs.length; k++) {{
      const o = outputs.get(k).toJSON();
      if (o.output_type === 'error') errors.push({{cell: i, ename: o.ename, evalue: o.evalue}});
      const data = o.data || {{}};
      if ('application/vnd.plotly.v1+json' in data) plotly += 1;
      if ('application/vnd.jupyter.widget-view+json' in data) {{
        const text = [].concat(data['text/plain'] || []).join('');
        figureWidgets += (text.match(/FigureWidget\\(/g) || []).length;
      }}
    }}
  }});
  return {{errors, plotly, figureWidgets}};
}}"""

# Plots that are really drawn: an SVG inside, and a size on screen.
DRAWN_PLOTS = """() => [...document.querySelectorAll('.js-plotly-plot')].filter(
  el => el.querySelector('.main-svg') && el.getBoundingClientRect().width > 0).length"""

# A fingerprint of each figure's data and layout inside one output element.
PLOT_SIGNATURES = """root => [...root.querySelectorAll('.js-plotly-plot')].map(el => {
  const s = JSON.stringify([el.data, el.layout]) || '';
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  return `${h}:${s.length}`;
})"""

CONTROLS = {  # ipywidgets 8 DOM: what a learner can move, per kind of control
    "slider": ".noUi-handle",
    "dropdown": ".widget-dropdown select",
    "toggle": ".widget-toggle-buttons .widget-toggle-button:not(.mod-active)",
    "radio": ".widget-radio-box input[type=radio]:not(:checked)",
}


def marked(nb, marker: str) -> set[int]:
    """Indices of cells carrying an nbval marker, as a comment line (``# NBVAL_SKIP``) or a tag."""
    tag = marker.lower().replace("_", "-")
    found = set()
    for i, cell in enumerate(nb.cells):
        in_source = any(line.strip().startswith("#") and line.strip().lstrip("#").strip() == marker
                        for line in cell.source.splitlines())
        tags = set(cell.metadata.get("tags", []))
        if in_source or tag in tags or (marker == "NBVAL_RAISES_EXCEPTION" and "raises-exception" in tags):
            found.add(i)
    return found


def open_notebook(page, server, name: str) -> None:
    """Open a notebook, accept a kernel dialog if one appears, wait until its kernel is idle."""
    page.goto(server.notebook_url(name))
    page.wait_for_function(f"n => {CURRENT}?.context?.path === n", arg=server.notebook_path(name),
                           timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function(f"() => {KERNEL_IDLE[6:]} || document.querySelector('.jp-Dialog') !== null",
                           timeout=RENDER_TIMEOUT_MS)
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    if dialog.count():  # "Select Kernel": take the default (this environment's Python)
        dialog.first.click()
    page.wait_for_function(KERNEL_IDLE, timeout=RENDER_TIMEOUT_MS)


def run_cell_by_cell(page, skip: set[int]) -> list[float]:
    """Run every cell in order (but those in ``skip``), waiting for each to finish; return their seconds."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    n = page.evaluate(f"() => {CURRENT}.content.widgets.length")
    seconds = []
    for i in range(n):
        if i in skip:
            seconds.append(0.0)
            continue
        start = time.perf_counter()
        page.evaluate(RUN_CELL, i)
        page.wait_for_function("() => window.__labRun.done", timeout=CELL_TIMEOUT_MS, polling=100)
        seconds.append(time.perf_counter() - start)
    page.wait_for_function(KERNEL_IDLE, timeout=CELL_TIMEOUT_MS)
    return seconds


def move(page, control, kind: str) -> None:
    """Move one control the way a learner would: keyboard for sliders and dropdowns, a click otherwise."""
    if kind == "slider":
        now, top = (float(control.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemax"))
        control.focus()
        page.keyboard.press("ArrowLeft" if now >= top else "ArrowRight")
    elif kind == "dropdown":
        control.focus()
        options = control.locator("option")
        current = control.evaluate("el => el.selectedIndex")
        control.select_option(index=(current + 1) % options.count())
    else:
        control.click()


def exercise_explorers(page) -> list[dict]:
    """Move every control of every explorer; assert a figure beside it changes. Returns the timings."""
    results = []
    # Each cell's own outputs (an Output widget nests output areas: take the outermost only).
    outputs = page.locator(".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output")
    for k in range(outputs.count()):
        out = outputs.nth(k)
        if out.locator(".js-plotly-plot").count() == 0 or out.locator(".jupyter-widgets").count() == 0:
            continue  # not an explorer (a plain figure, a progress bar, a lone control)
        for kind, selector in CONTROLS.items():
            for j in range(out.locator(selector).count()):
                control = out.locator(selector).nth(j)
                if not control.is_visible() or control.is_disabled():
                    continue
                single = control.get_attribute("aria-valuemin") == control.get_attribute("aria-valuemax")
                if kind == "slider" and single:
                    continue  # a slider with a single position (e.g. a sweep holding one sparsity): nothing to move
                control.scroll_into_view_if_needed()
                # One move may legitimately change nothing (a dropdown entry equal to the current setting),
                # so a control gets up to MOVES tries; it fails only if none of them changes a figure.
                changed = False
                for attempt in range(MOVES):  # noqa: B007 - read after the loop
                    before = out.evaluate(PLOT_SIGNATURES)
                    start = time.perf_counter()
                    move(page, control, kind)
                    try:
                        page.wait_for_function(
                            f"([root, before]) => JSON.stringify(({PLOT_SIGNATURES})(root)) !== JSON.stringify(before)",
                            arg=[out.element_handle(), before], timeout=UPDATE_TIMEOUT_MS / MOVES, polling=20)
                        changed = True
                        break
                    except PlaywrightTimeout:
                        pass
                assert changed, (f"widget output {k}: moving {kind} {j} {MOVES} times changed no figure "
                                 f"(waited {UPDATE_TIMEOUT_MS / MOVES / 1000:.0f} s after each move)")
                results.append({"output": k, "control": f"{kind} {j}", "moves": attempt + 1,
                                "update_ms": round((time.perf_counter() - start) * 1000)})
    return results


def full_screenshot(page, path: Path) -> None:
    """Grow the viewport to the notebook's height (JupyterLab scrolls inside the page), then shoot."""
    height = page.evaluate("() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-WindowedPanel-outer')?.scrollHeight ?? 0") + 200
    page.set_viewport_size({"width": 1280, "height": min(max(height, 900), 16_000)})
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(el => { el.scrollTop = 0; })")
    page.wait_for_timeout(500)  # let plotly redraw at the new size
    page.screenshot(path=str(path))


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_notebook_runs_and_renders_in_jupyterlab(path: Path, lab_server, browser):
    nb = nbformat.read(path, as_version=4)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    summary: dict = {"notebook": path.name}
    try:
        start = time.perf_counter()
        open_notebook(page, lab_server, path.name)
        cell_seconds = run_cell_by_cell(page, skip=marked(nb, "NBVAL_SKIP"))  # what nbval skips, too
        summary["run_s"] = round(time.perf_counter() - start, 1)
        summary["slowest_cells"] = sorted(((round(s, 1), i) for i, s in enumerate(cell_seconds)), reverse=True)[:5]

        run = page.evaluate(RUN_SUMMARY)
        unexpected = [e for e in run["errors"] if e["cell"] not in marked(nb, "NBVAL_RAISES_EXCEPTION")]
        assert not unexpected, f"{path.name}: error outputs in JupyterLab: {unexpected}"

        expected_plots = run["plotly"] + run["figureWidgets"]
        summary["plots_expected"] = expected_plots
        try:
            page.wait_for_function(f"n => ({DRAWN_PLOTS})() >= n", arg=expected_plots, timeout=RENDER_TIMEOUT_MS)
        except PlaywrightTimeout:
            pass  # the assertion below reports the counts
        drawn = page.evaluate(DRAWN_PLOTS)
        summary["plots_drawn"] = drawn
        assert drawn >= expected_plots, (f"{path.name}: {drawn} plotly figures drawn, expected {expected_plots} "
                                         f"({run['plotly']} figures + {run['figureWidgets']} FigureWidgets)")
        for output in page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.plotly.v1+json"]').all():
            assert output.locator(".js-plotly-plot .main-svg").count() >= 1, f"{path.name}: a blank plotly output"

        assert "Error displaying widget" not in page.evaluate("() => document.body.innerText"), \
            f"{path.name}: 'Error displaying widget' in the page"

        summary["explorers"] = exercise_explorers(page)

        # A widget whose front end throws renders blank, without "Error displaying widget": its
        # JavaScript error is the only trace. (A missing optional file, a 404, is not a failure.)
        js_errors = [e for e in console_errors if not e.startswith("Failed to load resource")]
        assert not js_errors, f"{path.name}: JavaScript errors in the page: {js_errors[:5]}"
    finally:
        summary["console_errors"] = console_errors[:20]
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"{path.stem}.browser.json").write_text(json.dumps(summary, indent=1))
        # Clean-up must not hide the test's own failure: its errors are ignored.
        for step in (lambda: full_screenshot(page, ARTIFACTS / f"{path.stem}.png"),
                     lambda: page.evaluate("() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.shutdown()"),
                     page.close):
            try:
                step()
            except Exception:
                pass
