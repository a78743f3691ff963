"""Every notebook, run in JupyterLab in a real (headless) browser: what a learner actually sees.

nbval checks a notebook's outputs as data; it cannot see a widget that shows "Error displaying widget" or
a plot that stays blank. For each notebooks/NN_*.ipynb (collected automatically) this test opens it in
JupyterLab, clears the stored outputs, runs it the way a learner does, **Run All** (every cell queued at once,
so the kernel drives an explorer while its browser side is still loading), **with the CPU under load** (busy
loops on every core, LABKIT_BROWSER_LOAD of them, default: the number of cores; 0 turns the load off), and checks:

- no cell produced an error output (stderr warnings are fine; cells marked NBVAL_RAISES_EXCEPTION may raise;
  cells marked NBVAL_SKIP are not run, as under nbval);
- no "Error displaying widget" anywhere in the page;
- every plotly figure rendered: as many drawn ``.js-plotly-plot`` elements as the run produced plotly outputs
  plus FigureWidgets;
- what is drawn (``PLOT_CONTENT``), right after Run All and again after every move of an explorer's control:
  every data trace has points in plotly's data (``gd._fullData``) *and* drawn marks in the SVG (points,
  line paths, bars, heatmap images); every scatter point lies inside its axis range; every annotation that
  refers to a data axis (log axes included: there plotly reads an annotation's position as log10) lies inside
  its axis range *and* near what is drawn (data and shapes), so a label cannot stretch an axis away from
  the data;
- every explorer (a widget output holding both a control and a plotly figure) responds: each slider,
  dropdown, toggle or radio button in it is moved with the keyboard or mouse, and a figure in it must change;
  each redraw time (key press to changed figure) goes to test-artifacts/redraw_times.json, and a line is
  printed for every redraw over the lab's 200 ms goal (a report, not an assertion: timing is not tested);
- no JavaScript errors in the page (a widget whose front end throws shows up blank, and only there).

A screenshot of the whole notebook and a JSON summary (cell times, widget update times, the load average
during the run) go to test-artifacts/. Cells may take minutes (training, Triton under the interpreter): the
per-cell limit is LABKIT_BROWSER_CELL_TIMEOUT seconds (default 900, like nbval's).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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
#: The lab's goal for one explorer redraw (CONTRIBUTING.md); over it, a report line is printed.
REDRAW_BUDGET_MS = 200
#: Busy loops started beside each notebook run (a room of learners' laptops is a loaded machine).
LOAD_PROCESSES = int(os.environ.get("LABKIT_BROWSER_LOAD", str(os.cpu_count() or 2)))
#: Hard limit of each busy loop, in seconds: it ends by itself even if the test process dies.
LOAD_LIMIT_S = int(os.environ.get("LABKIT_BROWSER_LOAD_LIMIT", "1800"))
REDRAW_TIMES = ARTIFACTS / "redraw_times.json"

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

# What each plotly figure under `root` (or the whole page) really draws; returns a list of problems (strings).
# A trace needs points in plotly's full data and drawn marks in the SVG; scatter points must lie inside their
# axes; an annotation on a data axis must lie inside its axes and within 40 px of what is drawn there (data
# marks and shapes), so a label placed at the wrong coordinate (a log axis reads annotation positions as log10)
# cannot stretch the axis away from the data.
PLOT_CONTENT = """root => {
  const problems = [];
  const plots = [...(root || document).querySelectorAll('.js-plotly-plot')];
  plots.forEach((gd, k) => {
    const fl = gd._fullLayout, fd = gd._fullData;
    const name = `figure ${k} (${(fl && fl.title && fl.title.text) || 'untitled'})`;
    if (!fl || !fd) { problems.push(`${name}: not plotted`); return; }
    const box = gd.getBoundingClientRect();
    const marks = {};  // trace index -> drawn SVG marks
    const extent = {};  // "xy" subplot -> pixel extent of what is drawn, relative to the figure
    const grow = (sub, r) => {
      if (!r.width && !r.height) return;
      const e = extent[sub] || (extent[sub] = {x0: Infinity, x1: -Infinity, y0: Infinity, y1: -Infinity});
      e.x0 = Math.min(e.x0, r.left - box.left); e.x1 = Math.max(e.x1, r.right - box.left);
      e.y0 = Math.min(e.y0, r.top - box.top); e.y1 = Math.max(e.y1, r.bottom - box.top);
    };
    gd.querySelectorAll('g.trace, g.hm').forEach(g => {
      const d = g.__data__, trace = d && (d[0] && d[0].trace || d.trace);
      if (!trace) return;
      const marksSelector = 'path.point, .point path, image, text.textpoint, path.js-line, path.js-fill';
      const drawn = [...g.querySelectorAll(marksSelector)]
        .filter(el => el.tagName !== 'path' || (el.getAttribute('d') || '').length > 4);
      marks[trace.index] = (marks[trace.index] || 0) + drawn.length;
      drawn.forEach(el => grow((trace.xaxis || 'x') + (trace.yaxis || 'y'), el.getBoundingClientRect()));
    });
    (fl.shapes || []).forEach((shape, i) => {
      const el = gd.querySelectorAll('.shapelayer path')[i];
      if (el) grow((shape.xref || 'x').replace(' domain', '') + (shape.yref || 'y').replace(' domain', ''),
                   el.getBoundingClientRect());
    });
    fd.forEach((t, i) => {
      if (t.visible !== true) return;
      const n = t._length ?? (t.z ? t.z.length : undefined) ?? (t.values ? t.values.length : 0);
      if (!n) problems.push(`${name}: trace ${i} (${t.name || t.type}) has no points in gd._fullData`);
      else if (!marks[i]) problems.push(`${name}: trace ${i} (${t.name || t.type}) has ${n} points but none drawn`);
      if (t.type !== 'scatter' || !gd.calcdata || !gd.calcdata[i]) return;
      const xa = fl[t.xaxis.replace('x', 'xaxis')], ya = fl[t.yaxis.replace('y', 'yaxis')];
      const outside = gd.calcdata[i].filter(p => Number.isFinite(p.x) && Number.isFinite(p.y)).filter(p => {
        const px = xa.c2p(p.x), py = ya.c2p(p.y);
        return !(px >= -1 && px <= xa._length + 1 && py >= -1 && py <= ya._length + 1);
      });
      if (outside.length)
        problems.push(`${name}: trace ${i} (${t.name}) has ${outside.length} points outside its axes`);
    });
    (fl.annotations || []).forEach((a, i) => {
      if (a.visible === false) return;
      const where = [];
      for (const [ref, val, dim] of [[a.xref, a.x, 'x'], [a.yref, a.y, 'y']]) {
        if (!ref || ref === 'paper' || ref.endsWith(' domain')) continue;
        const ax = fl[ref.replace(dim, dim + 'axis')];
        if (!ax) continue;
        const p = typeof val === 'string' && ax.type === 'category' ? ax.d2p(val) : ax.r2p(val);
        if (!(p >= -1 && p <= ax._length + 1)) {
          problems.push(`${name}: annotation ${i} ('${a.text}') ${dim}=${val} is outside its ${ax.type} axis ` +
                        `(range ${ax.range.map(v => +(+v).toFixed(3))})`);
          return;
        }
        where.push([dim, ax._offset + p]);
      }
      const sub = (a.xref || 'x').replace(' domain', '') + (a.yref || 'y').replace(' domain', '');
      const e = extent[sub];
      if (!e) return;
      for (const [dim, p] of where) {
        const [lo, hi] = dim === 'x' ? [e.x0, e.x1] : [e.y0, e.y1];
        const away = Math.round(Math.min(Math.abs(p - lo), Math.abs(p - hi)));
        if (p < lo - 40 || p > hi + 40)
          problems.push(`${name}: annotation ${i} ('${a.text}') sits ${away} px away from everything drawn ` +
                        `on its axes (${dim})`);
      }
    });
  });
  return problems;
}"""

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


# Queue every cell but those skipped, at once, as Run All does (a cell's run no longer waits for the previous
# one to be drawn); the result lands in window.__labRun when JupyterLab's run command resolves.
RUN_ALL = f"""skip => {{
  const nb = {CURRENT}.content;
  nb.deselectAll();
  const run = nb.widgets.map((_, i) => i).filter(i => !skip.includes(i));
  nb.activeCellIndex = run[0];
  run.forEach(i => nb.select(nb.widgets[i]));
  window.__labRun = {{done: false}};
  window.jupyterapp.commands.execute('notebook:run-cell').then(
    ok => {{ window.__labRun = {{done: true, ok}}; }},
    err => {{ window.__labRun = {{done: true, ok: false, error: String(err)}}; }});
  return run.length;
}}"""

# Seconds each cell ran, from the execution timestamps JupyterLab records (setting recordTiming, conftest).
CELL_SECONDS = f"""() => {CURRENT}.content.widgets.map(cell => {{
  const t = cell.model.type === 'code' ? cell.model.getMetadata('execution') : null;
  if (!t || !t['shell.execute_reply'] || !t['iopub.execute_input']) return 0;
  return (Date.parse(t['shell.execute_reply']) - Date.parse(t['iopub.execute_input'])) / 1000;
}})"""


def run_all(page, skip: set[int]) -> list[float]:
    """Clear the outputs and Run All (but the cells in ``skip``); wait for the kernel; return each cell's seconds."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    n = page.evaluate(RUN_ALL, sorted(skip))
    page.wait_for_function("() => window.__labRun.done", timeout=max(n, 1) * CELL_TIMEOUT_MS, polling=200)
    page.wait_for_function(KERNEL_IDLE, timeout=CELL_TIMEOUT_MS)
    return page.evaluate(CELL_SECONDS)


class CPULoad:
    """``processes`` busy loops (one per core by default) for the length of a ``with`` block.

    Each loop is a separate Python process that spins until it is killed or until ``limit_s`` seconds have
    passed, whichever comes first, so a crashed test cannot leave the machine loaded.
    """

    def __init__(self, processes: int, limit_s: int):
        self.processes, self.limit_s, self.procs = processes, limit_s, []
        self.load_average: dict[str, float] = {}

    def __enter__(self) -> CPULoad:
        spin = f"import time\nend = time.monotonic() + {self.limit_s}\nwhile time.monotonic() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(self.processes)]
        self.load_average["start"] = os.getloadavg()[0]
        return self

    def __exit__(self, *exc) -> None:
        self.load_average["end"] = os.getloadavg()[0]
        for proc in self.procs:
            proc.kill()
            proc.wait()


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
                if kind == "dropdown" and control.locator("option").count() < 2:
                    continue  # a dropdown with one entry (e.g. structured pruning's one pattern): nothing to choose
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
                update_ms = round((time.perf_counter() - start) * 1000)
                assert changed, (f"widget output {k}: moving {kind} {j} {MOVES} times changed no figure "
                                 f"(waited {UPDATE_TIMEOUT_MS / MOVES / 1000:.0f} s after each move)")
                page.wait_for_timeout(300)  # let every figure of the explorer finish its redraw
                problems = out.evaluate(PLOT_CONTENT)
                assert not problems, f"widget output {k}: after moving {kind} {j}, what is drawn is wrong: {problems}"
                results.append({"output": k, "control": f"{kind} {j}", "moves": attempt + 1, "update_ms": update_ms})
    return results


def record_redraw_times(notebook: str, explorers: list[dict], load: dict) -> None:
    """Add this notebook's redraw times to test-artifacts/redraw_times.json; print a line for each over budget."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        table = json.loads(REDRAW_TIMES.read_text())
    except (OSError, ValueError):
        table = {}
    table.setdefault("budget_ms", REDRAW_BUDGET_MS)
    table.setdefault("notebooks", {})[notebook] = {
        "update_ms": [e["update_ms"] for e in explorers], "controls": [e["control"] for e in explorers],
        "load_processes": LOAD_PROCESSES, "cpu_count": os.cpu_count(), "load_average_1min": load,
        "measured": time.strftime("%Y-%m-%d %H:%M")}
    REDRAW_TIMES.write_text(json.dumps(table, indent=1))
    for e in explorers:
        if e["update_ms"] > REDRAW_BUDGET_MS:
            print(f"REDRAW OVER BUDGET: {notebook} output {e['output']} {e['control']}: {e['update_ms']} ms "
                  f"> {REDRAW_BUDGET_MS} ms (with {LOAD_PROCESSES} busy loops on {os.cpu_count()} cores)")


def full_screenshot(page, path: Path) -> None:
    """Grow the viewport to the notebook's height (JupyterLab scrolls inside the page), then shoot."""
    height = page.evaluate("() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-WindowedPanel-outer')?.scrollHeight ?? 0") + 200
    page.set_viewport_size({"width": 1280, "height": min(max(height, 900), 16_000)})
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(el => { el.scrollTop = 0; })")
    page.wait_for_timeout(500)  # let plotly redraw at the new size
    page.screenshot(path=str(path))


def drawn_content_after_run_all(page, name: str, summary: dict) -> None:
    """Right after Run All (still under load): count the figures drawn and check what they draw, into ``summary``."""
    run = summary["_run"] = page.evaluate(RUN_SUMMARY)
    expected = summary["plots_expected"] = run["plotly"] + run["figureWidgets"]
    try:
        page.wait_for_function(f"n => ({DRAWN_PLOTS})() >= n", arg=expected, timeout=RENDER_TIMEOUT_MS)
    except PlaywrightTimeout:
        pass  # the test's assertion reports the counts
    summary["plots_drawn"] = page.evaluate(DRAWN_PLOTS)
    outputs = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.plotly.v1+json"]').all()
    summary["blank_outputs"] = sum(o.locator(".js-plotly-plot .main-svg").count() == 0 for o in outputs)
    # A FigureWidget draws a moment after its output appears: give the page until the content is right.
    try:
        page.wait_for_function(f"() => ({PLOT_CONTENT})(null).length === 0", timeout=RENDER_TIMEOUT_MS, polling=500)
    except PlaywrightTimeout:
        pass
    summary["content_problems"] = page.evaluate(PLOT_CONTENT, None)


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_notebook_runs_and_renders_in_jupyterlab(path: Path, lab_server, browser):
    nb = nbformat.read(path, as_version=4)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    summary: dict = {"notebook": path.name}
    load = CPULoad(LOAD_PROCESSES, LOAD_LIMIT_S)
    try:
        start = time.perf_counter()
        open_notebook(page, lab_server, path.name)
        with load:  # Run All on a loaded machine, the explorers' first drawing included
            cell_seconds = run_all(page, skip=marked(nb, "NBVAL_SKIP"))  # what nbval skips, too
            summary["run_s"] = round(time.perf_counter() - start, 1)
            summary["slowest_cells"] = sorted(((round(s, 1), i) for i, s in enumerate(cell_seconds)), reverse=True)[:5]
            drawn_content_after_run_all(page, path.name, summary)
        summary["load_average_1min"] = load.load_average

        run = summary.pop("_run")
        unexpected = [e for e in run["errors"] if e["cell"] not in marked(nb, "NBVAL_RAISES_EXCEPTION")]
        assert not unexpected, f"{path.name}: error outputs in JupyterLab: {unexpected}"

        assert summary["plots_drawn"] >= summary["plots_expected"], (
            f"{path.name}: {summary['plots_drawn']} plotly figures drawn, expected {summary['plots_expected']} "
            f"({run['plotly']} figures + {run['figureWidgets']} FigureWidgets)")
        assert not summary["blank_outputs"], f"{path.name}: {summary['blank_outputs']} blank plotly outputs"
        assert not summary["content_problems"], (f"{path.name}: what is drawn after Run All (under load) is wrong: "
                                                 f"{summary['content_problems']}")

        assert "Error displaying widget" not in page.evaluate("() => document.body.innerText"), \
            f"{path.name}: 'Error displaying widget' in the page"

        summary["explorers"] = exercise_explorers(page)
        record_redraw_times(path.name, summary["explorers"], load.load_average)

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
