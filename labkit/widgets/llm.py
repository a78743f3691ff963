"""The sparsity-versus-perplexity explorer of notebook 06 (pruning SmolLM2-135M).

Choose a method (magnitude, Wanda, SparseGPT, structured), a pattern (unstructured, 2:4, 4:8, FFN
channels) and a sparsity: the explorer shows where that case sits on the perplexity curves, its bytes
per storage format, the prompt and generation speed of the model that runs like it next to the dense
model's, and what the pruned model answers to the sweep's fixed prompt. It reads
``benchmarks/results/llm_prune_cpu.json`` (written by ``benchmarks/llm_prune_sweep.py``) and nothing else:
every control only looks a row up.

Speeds come only from the sweep's ``side_by_side`` block, where the models were timed in turns (one
round of each, repeated), so two speeds on screen were measured under the same load. A masked model,
whatever its method and sparsity, runs the same dense kernels as every other masked model: it shows the
in-turns "dense kernels" model of its pattern; a structured row shows the in-turns model with its share
of FFN channels; CSR is shown where the in-turns run timed that sparsity through CSR.
"""
from __future__ import annotations

import html
import time
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go

from labkit import results
from labkit.figures import llm as figures
from labkit.widgets import leave_room_for_toolbar, redraw

SWEEP_NAME = "llm_prune_cpu"
#: Shown with a case whose zeros stay in dense matrices.
MASKED_NOTE = ("<br><i>The zeros stay in dense matrices, which the same dense kernels multiply: every masked "
               "model runs at the speed of the masked model timed in turns with dense (section 7); any "
               "difference from dense is measurement noise.</i>")
#: Fields the explorer reads from every row of the sweep.
ROW_FIELDS = ("method", "pattern", "sparsity", "model_sparsity", "perplexity", "bytes", "sample")
SPEED_KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s")


def load_sweep(path: str | Path | None = None) -> dict:
    """The LLM pruning sweep (default: the committed ``benchmarks/results/llm_prune_cpu.json``), validated."""
    return results.read(SWEEP_NAME if path is None else Path(path), "llm_prune")


def check_sweep(sweep: Mapping) -> list[Mapping]:
    """The sweep's rows, after checking each has what the explorer shows; clear errors otherwise."""
    if not isinstance(sweep, Mapping) or not isinstance(sweep.get("rows"), list) or not sweep["rows"]:
        raise TypeError("sweep must be the dict load_sweep() returns: a results envelope with a non-empty 'rows' list")
    for r in sweep["rows"]:
        missing = [k for k in ROW_FIELDS if k not in r]
        if missing:
            raise ValueError(f"a sweep row lacks {missing}: rerun `python benchmarks/llm_prune_sweep.py` "
                             f"(row: method={r.get('method')!r}, sparsity={r.get('sparsity')!r})")
    dense_row(sweep)
    return sweep["rows"]


def dense_row(sweep: Mapping) -> Mapping:
    """The unpruned model's row (method ``"dense"``, or the row with sparsity 0)."""
    for r in sweep["rows"]:
        if r["method"] == "dense" or r["sparsity"] == 0:
            return r
    raise ValueError("the sweep has no dense row (method 'dense' or sparsity 0): rerun "
                     "`python benchmarks/llm_prune_sweep.py`")


def side_by_side_models(sweep: Mapping) -> dict[str, Mapping]:
    """The models the sweep timed in turns (``sweep["side_by_side"]["models"]``), each with both speeds."""
    models = (sweep.get("side_by_side") or {}).get("models") if isinstance(sweep, Mapping) else None
    if not isinstance(models, Mapping) or "dense" not in models:
        raise ValueError("sweep has no side_by_side models with a 'dense' entry (the speeds timed in turns): rerun "
                         "`python benchmarks/llm_prune_sweep.py`")
    for label, m in models.items():
        if not isinstance(m, Mapping) or any(k not in m for k in SPEED_KEYS):
            raise ValueError(f"side_by_side model {label!r} must have {SPEED_KEYS}: rerun "
                             "`python benchmarks/llm_prune_sweep.py`")
    return dict(models)


def in_turns_speeds(row: Mapping, models: Mapping[str, Mapping]) -> dict[str, str | None]:
    """Which in-turns (side-by-side) models show ``row``'s speed: ``{"kernels": label, "csr": label or None}``.

    A structured row maps to the model with its share of FFN channels kept; a masked row (any method and
    sparsity) to the masked model of its pattern run with dense kernels (2:4 for N:M patterns, else the
    unstructured one: the kernels, and so the speed, do not depend on where the zeros are); ``csr`` is the
    model timed in turns through torch CSR at the row's sparsity, or None where none was. A label is None
    when the sweep timed no such model (the explorer then says so instead of showing another speed).
    """
    if "ffn_keep" in row:
        label = f"structured, {100 * row['ffn_keep']:g}% of FFN channels kept"
        return {"kernels": label if label in models else None, "csr": None}
    masked = [m for m in models if m.endswith(", dense kernels")]
    wanted = "2:4, dense kernels" if row["pattern"] in ("2:4", "4:8") else "unstructured 50%, dense kernels"
    kernels = wanted if wanted in models else next(iter(masked), None)
    csr = f"unstructured {100 * row['sparsity']:g}%, torch CSR" if row["pattern"] == "unstructured" else None
    return {"kernels": kernels, "csr": csr if csr in models else None}


def ci_text(row: Mapping) -> str:
    """`` (95% CI 25.1-27.0)`` when the row has ``perplexity_ci``, else ``""`` (older sweeps)."""
    ci = row.get("perplexity_ci")
    return "" if ci is None else f" (95% CI {ci[0]:,.2f}-{ci[1]:,.2f})"


def cases(sweep: Mapping) -> dict[tuple[str, str, float], Mapping]:
    """Every pruned row keyed by ``(method, pattern, sparsity)``: the explorer's lookup table (random masks:
    the first seed only; the others are in the results file)."""
    return {(r["method"], r["pattern"], r["sparsity"]): r for r in check_sweep(sweep)
            if r is not dense_row(sweep) and r.get("seed") in (None, 0)}


class LLMExplorer(widgets.VBox):
    """Method, pattern and sparsity controls over the perplexity curves, bytes, speed and a sample answer.

    Attributes (drive them from Python): controls ``method``, ``pattern``, ``sparsity`` (a
    SelectionSlider over the sparsities the sweep holds for that method and pattern); figures
    ``curve_fig`` and ``bars_fig`` (bytes per format, then prompt and generation tokens/s of dense, of the
    model timed in turns that runs like the case, and of its CSR version where one was timed); HTML
    ``answer`` and ``status``; ``speeds`` (the in-turns models); ``last_update_ms``.
    """

    def __init__(self, sweep: Mapping | None = None):
        sweep = load_sweep() if sweep is None else sweep
        self.table = cases(sweep)
        self.dense = dense_row(sweep)
        self.speeds = side_by_side_models(sweep)
        self.prompt = (sweep.get("config") or {}).get("prompt")  # the fixed prompt every row's sample answers
        self.last_update_ms = 0.0
        methods = sorted({m for m, _, _ in self.table}, key=lambda m: figures.case_order(m, "")[:2])
        self.method = widgets.Dropdown(options=methods, value="wanda" if "wanda" in methods else methods[0],
                                       description="method")
        self.pattern = widgets.Dropdown(options=self._patterns(self.method.value), description="pattern")
        # Fixed control widths in a column that never shrinks, the status text beside it wrapping instead:
        # no horizontal scrollbar, and the slider's readout stays visible.
        control = widgets.Layout(width="340px")
        self.method.layout, self.pattern.layout = control, widgets.Layout(width="340px")
        self.sparsity = widgets.SelectionSlider(options=self._sparsities(self.method.value, self.pattern.value),
                                                description="sparsity", continuous_update=True,
                                                layout=widgets.Layout(width="340px"))
        self.status = widgets.HTML(layout=widgets.Layout(flex="1 1 320px", min_width="0"))
        self.answer = widgets.HTML()
        self._quiet = False  # True while one control resets another, so the figures are drawn once
        self._build_figures(sweep)
        self.method.observe(self._on_method, names="value")
        self.pattern.observe(self._on_pattern, names="value")
        self.sparsity.observe(lambda _change: None if self._quiet else self.update(), names="value")
        self.update()
        controls = widgets.HBox([widgets.VBox([self.method, self.pattern, self.sparsity],
                                              layout=widgets.Layout(flex="0 0 auto")), self.status],
                                layout=widgets.Layout(flex_flow="row wrap", width="100%"))
        super().__init__([controls, self.curve_fig, self.bars_fig, self.answer])

    def _patterns(self, method: str) -> list[tuple[str, str]]:
        found = sorted({p for m, p, _ in self.table if m == method}, key=lambda p: figures.case_order(method, p))
        return [(figures.PATTERN_LABELS.get(p, p), p) for p in found]

    def _sparsities(self, method: str, pattern: str) -> list[tuple[str, float]]:
        found = sorted(s for m, p, s in self.table if m == method and p == pattern)
        return [(f"{100 * s:.0f}%", s) for s in found]

    def _on_method(self, change) -> None:
        self._quiet = True  # new options select the first pattern: draw once, at the end
        try:
            self.pattern.options = self._patterns(change["new"])
        finally:
            self._quiet = False
        self._on_pattern(None)

    def _on_pattern(self, _change) -> None:
        if self._quiet:
            return
        options = self._sparsities(self.method.value, self.pattern.value)
        # keep the sparsity when the new case has it, else take the closest one
        target = min((s for _, s in options), key=lambda s: abs(s - self.sparsity.value))
        self._quiet = True  # new options reset the slider: draw once, at the end
        try:
            self.sparsity.options = options
            self.sparsity.value = target
        finally:
            self._quiet = False
        self.update()

    def _build_figures(self, sweep: Mapping) -> None:
        rows = [r for r in sweep["rows"] if r is not self.dense]
        base = figures.perplexity_figure(rows, self.dense["perplexity"], highlight=rows[0])
        base.update_layout(height=420)
        self.curve_fig = go.FigureWidget(leave_room_for_toolbar(base))
        self._star = len(self.curve_fig.data) - 1  # perplexity_figure draws the highlight last
        # Bytes and speed in one figure, with fixed categories (the status line names the case): each figure
        # redrawn, and each category axis that changes, costs tens of ms in the browser. update() fills the bars.
        dense_speed = self.speeds["dense"]
        self.bars_fig = go.FigureWidget(leave_room_for_toolbar(figures.bytes_and_speed_figure(
            {"dense": self.dense["bytes"], "pruned": self.dense["bytes"]},
            {"dense": dense_speed, "runs like it<br>(in turns)": dense_speed, "through CSR<br>(in turns)": dense_speed},
            title="bytes of this model; speed of the model timed in turns that runs like it"),
            subplot_title_lines=2))

    def current(self) -> Mapping:
        """The sweep row of the current method, pattern and sparsity."""
        return self.table[(self.method.value, self.pattern.value, self.sparsity.value)]

    def update(self) -> None:
        """Redraw from the lookup table; records ``last_update_ms``."""
        start = time.perf_counter()
        row, dense = self.current(), self.dense
        label = figures.row_label(row)
        with redraw(self.curve_fig):
            star = self.curve_fig.data[self._star]
            star.x = [round(100 * row["sparsity"], 2)]
            star.y = [round(min(row["perplexity"], figures.PERPLEXITY_CAP), 2)]
            star.error_y = figures.perplexity_error_bars([row]) or dict(array=None, visible=False)
            for trace in self.curve_fig.data[: self._star]:
                trace.opacity = 1.0 if trace.name == figures.case_label(row["method"], row["pattern"]) else 0.35
        formats = list(dict.fromkeys(list(dense["bytes"]) + list(row["bytes"])))
        bytes_traces, speed_traces = self.bars_fig.data[:2], self.bars_fig.data[2:]
        timed = in_turns_speeds(row, self.speeds)
        bars = {"dense": self.speeds["dense"]} | {k: None if v is None else self.speeds[v] for k, v in timed.items()}
        base = self.speeds["dense"]
        with redraw(self.bars_fig):
            for trace, source in zip(bytes_traces, (dense, row), strict=True):
                trace.x = formats
                trace.y = [None if source["bytes"].get(f) is None else round(source["bytes"][f] / 1e6, 2)
                           for f in formats]
            # fixed categories: a changing category axis costs a relayout in the browser
            for trace, key in zip(speed_traces, SPEED_KEYS, strict=True):
                trace.y = [None if b is None else round(b[key], 1) for b in bars.values()]
                trace.hovertext = ["" if b is None else f"{b[key] / base[key]:.2f}x dense" for b in bars.values()]
        ratio = row["perplexity"] / dense["perplexity"]
        ratio_ci = row.get("ratio_ci")
        verdict = "within" if ratio <= 1.5 else "beyond"
        if timed["kernels"] is None:
            speed = "no model like it was timed in turns with dense (no speed shown)"
        else:
            like = self.speeds[timed["kernels"]]
            speed = (f"speed of <i>{html.escape(timed['kernels'])}</i>, timed in turns with dense: generation "
                     f"{like['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x dense, prompt "
                     f"{like['prefill_tokens_per_s'] / base['prefill_tokens_per_s']:.2f}x dense")
        if timed["csr"] is not None:
            csr = self.speeds[timed["csr"]]
            speed += (f"; through torch CSR: generation {csr['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x"
                      f" dense")
        self.status.value = (
            f"<b>{html.escape(label)}</b><br>perplexity {row['perplexity']:,.2f}{ci_text(row)} "
            f"({ratio:.2f}x dense {dense['perplexity']:.2f}"
            + ("" if ratio_ci is None else f", 95% CI {ratio_ci[0]:.2f}-{ratio_ci[1]:.2f}x")
            + f": {verdict} 1.5x)<br>"
            f"{100 * row['model_sparsity']:.1f}% of the whole model removed "
            f"({100 * row['sparsity']:g}% of the block matrices; the tied embedding / LM head stays dense)<br>"
            f"{speed} (runs as: {html.escape(str(row.get('runs_as', 'dense')))})"
            + ("" if "ffn_keep" in row else MASKED_NOTE))  # only structured rows are smaller models
        prompt = "" if self.prompt is None else f"<b>prompt:</b> {html.escape(str(self.prompt))}<br>"
        self.answer.value = (f"{prompt}<b>dense answers:</b> {html.escape(dense['sample'])}<br>"
                             f"<b>{html.escape(label)} answers:</b> {html.escape(row['sample'])}")
        self.last_update_ms = 1000 * (time.perf_counter() - start)


def llm_explorer(sweep: Mapping | None = None) -> LLMExplorer:
    """The explorer over the committed LLM pruning sweep (or ``sweep``, a dict with the same rows)."""
    return LLMExplorer(sweep)
