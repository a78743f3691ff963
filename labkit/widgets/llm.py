"""The sparsity-versus-perplexity explorer of notebook 06 (pruning SmolLM2-135M).

Choose a method (magnitude, Wanda, SparseGPT, structured), a pattern (unstructured, 2:4, 4:8, FFN
channels) and a sparsity: the explorer shows where that case sits on the perplexity curves, its bytes
per storage format, its prompt and generation speed next to the dense model's, and what the pruned
model answers to the sweep's fixed prompt. It reads ``benchmarks/results/llm_prune_cpu.json`` (written
by ``benchmarks/llm_prune_sweep.py``) and nothing else: every control only looks a row up.
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

SWEEP_NAME = "llm_prune_cpu"
#: Shown with a case whose zeros stay in dense matrices: its row was timed minutes apart from the dense row.
MASKED_NOTE = ("<br><i>The zeros stay in dense matrices, which the same dense kernels multiply: any speed "
               "difference from dense here is measurement noise (the sweep timed each case separately). "
               "Section 7 times the models in turns.</i>")
#: Fields the explorer reads from every row of the sweep.
ROW_FIELDS = ("method", "pattern", "sparsity", "model_sparsity", "perplexity", "bytes", "prefill_tokens_per_s",
              "decode_tokens_per_s", "sample")


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


def cases(sweep: Mapping) -> dict[tuple[str, str, float], Mapping]:
    """Every pruned row keyed by ``(method, pattern, sparsity)``: the explorer's lookup table."""
    return {(r["method"], r["pattern"], r["sparsity"]): r for r in check_sweep(sweep) if r is not dense_row(sweep)}


class LLMExplorer(widgets.VBox):
    """Method, pattern and sparsity controls over the perplexity curves, bytes, speed and a sample answer.

    Attributes (drive them from Python): controls ``method``, ``pattern``, ``sparsity`` (a
    SelectionSlider over the sparsities the sweep holds for that method and pattern); figures
    ``curve_fig`` and ``bars_fig`` (bytes per format, then prompt and generation tokens/s); HTML ``answer``
    and ``status``; ``last_update_ms``.
    """

    def __init__(self, sweep: Mapping | None = None):
        sweep = load_sweep() if sweep is None else sweep
        self.table = cases(sweep)
        self.dense = dense_row(sweep)
        self.prompt = (sweep.get("config") or {}).get("prompt")  # the fixed prompt every row's sample answers
        self.last_update_ms = 0.0
        methods = sorted({m for m, _, _ in self.table}, key=lambda m: figures.case_order(m, "")[:2])
        self.method = widgets.Dropdown(options=methods, value="wanda" if "wanda" in methods else methods[0],
                                       description="method")
        self.pattern = widgets.Dropdown(options=self._patterns(self.method.value), description="pattern")
        self.sparsity = widgets.SelectionSlider(options=self._sparsities(self.method.value, self.pattern.value),
                                                description="sparsity", continuous_update=True)
        self.status = widgets.HTML()
        self.answer = widgets.HTML()
        self._quiet = False  # True while one control resets another, so the figures are drawn once
        self._build_figures(sweep)
        self.method.observe(self._on_method, names="value")
        self.pattern.observe(self._on_pattern, names="value")
        self.sparsity.observe(lambda _change: None if self._quiet else self.update(), names="value")
        self.update()
        controls = widgets.HBox([widgets.VBox([self.method, self.pattern, self.sparsity]), self.status])
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
        self.curve_fig = go.FigureWidget(base)
        self.curve_fig.update_layout(height=400)
        self._star = len(self.curve_fig.data) - 1  # perplexity_figure draws the highlight last
        # Bytes and speed in one figure, with fixed categories (the status line names the case): each figure
        # redrawn, and each category axis that changes, costs tens of ms in the browser. update() fills the bars.
        self.bars_fig = go.FigureWidget(figures.bytes_and_speed_figure(
            {"dense": self.dense["bytes"], "pruned": self.dense["bytes"]},
            {"dense": self.dense, "pruned, dense kernels": self.dense, "pruned, torch CSR": self.dense}))

    def current(self) -> Mapping:
        """The sweep row of the current method, pattern and sparsity."""
        return self.table[(self.method.value, self.pattern.value, self.sparsity.value)]

    def update(self) -> None:
        """Redraw from the lookup table; records ``last_update_ms``."""
        start = time.perf_counter()
        row, dense = self.current(), self.dense
        label = figures.row_label(row)
        with self.curve_fig.batch_update():
            star = self.curve_fig.data[self._star]
            star.x, star.y = [round(100 * row["sparsity"], 2)], [round(min(row["perplexity"], 1e5), 2)]
            for trace in self.curve_fig.data[: self._star]:
                trace.opacity = 1.0 if trace.name == figures.case_label(row["method"], row["pattern"]) else 0.35
        formats = list(dict.fromkeys(list(dense["bytes"]) + list(row["bytes"])))
        bytes_traces, speed_traces = self.bars_fig.data[:2], self.bars_fig.data[2:]
        with self.bars_fig.batch_update():
            for trace, source in zip(bytes_traces, (dense, row), strict=True):
                trace.x = formats
                trace.y = [None if source["bytes"].get(f) is None else round(source["bytes"][f] / 1e6, 2)
                           for f in formats]
            # fixed categories: a changing category axis costs a relayout in the browser
            csr = ({k: row[f"csr_{k}"] for k in ("prefill_tokens_per_s", "decode_tokens_per_s")}
                   if row.get("csr_decode_tokens_per_s") else None)
            bars = {"dense": dense, "pruned, dense kernels": row, "pruned, torch CSR": csr}
            for trace, key in zip(speed_traces, ("prefill_tokens_per_s", "decode_tokens_per_s"), strict=True):
                trace.y = [None if b is None else round(b[key], 1) for b in bars.values()]
                trace.hovertext = ["" if b is None else f"{b[key] / dense[key]:.2f}x dense" for b in bars.values()]
        ratio = row["perplexity"] / dense["perplexity"]
        verdict = "within" if ratio <= 1.5 else "beyond"
        self.status.value = (
            f"<b>{html.escape(label)}</b><br>perplexity {row['perplexity']:,.2f} ({ratio:.2f}x dense "
            f"{dense['perplexity']:.2f}: {verdict} 1.5x)<br>"
            f"{100 * row['model_sparsity']:.1f}% of the whole model removed "
            f"({100 * row['sparsity']:g}% of the block matrices; the tied embedding / LM head stays dense)<br>"
            f"generation {row['decode_tokens_per_s'] / dense['decode_tokens_per_s']:.2f}x dense, "
            f"prompt {row['prefill_tokens_per_s'] / dense['prefill_tokens_per_s']:.2f}x dense "
            f"(runs as: {html.escape(str(row.get('runs_as', 'dense')))})"
            + ("" if "ffn_keep" in row else MASKED_NOTE))  # only structured rows are smaller models
        prompt = "" if self.prompt is None else f"<b>prompt:</b> {html.escape(str(self.prompt))}<br>"
        self.answer.value = (f"{prompt}<b>dense answers:</b> {html.escape(dense['sample'])}<br>"
                             f"<b>{html.escape(label)} answers:</b> {html.escape(row['sample'])}")
        self.last_update_ms = 1000 * (time.perf_counter() - start)


def llm_explorer(sweep: Mapping | None = None) -> LLMExplorer:
    """The explorer over the committed LLM pruning sweep (or ``sweep``, a dict with the same rows)."""
    return LLMExplorer(sweep)
