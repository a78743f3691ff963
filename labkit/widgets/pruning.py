"""The sparsity-versus-accuracy explorer of notebook 02: controls over four linked figures.

:class:`PruningExplorer` (``pruning_explorer()``): pick a criterion and a granularity, slide the sparsity,
toggle fine-tuning; see the accuracy curves with the current point, the weight-magnitude histogram with the
threshold, the mask of a layer and the sparsity of every layer. The widget only draws: the masks and
histograms come from :func:`labkit.experiments.pruning_explorer.explorer_table` (computed once, cached on
disk) and the accuracies from the committed sweep, so a change only looks results up.
"""
from __future__ import annotations

import time

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from labkit.experiments.pruning_explorer import COMBINATIONS, GRANULARITIES, explorer_table
from labkit.experiments.pruning_sweep import LABELS, find, load_sweep, summarize
from labkit.figures import COLORS, rounded, style
from labkit.figures.pruning_sweep import kept_axis
from labkit.widgets import leave_room_for_toolbar, redraw


class PruningExplorer(widgets.VBox):
    """Criterion, granularity, sparsity and fine-tuning controls over four linked figures.

    Attributes (drive them from Python): ``granularity``, ``criterion``, ``sparsity`` (a
    SelectionSlider over the swept sparsities, in percent), ``finetune`` (ToggleButtons: False = one-shot,
    True = fine-tuned), ``layer``; figures ``curve_fig``, ``hist_fig``, ``mask_fig``, ``layers_fig``; the
    ``status`` line; ``last_update_ms``.
    """

    def __init__(self, sweep: dict | None = None, model: str = "mlp"):
        sweep = load_sweep() if sweep is None else sweep
        if not isinstance(sweep, dict) or "rows" not in sweep:
            raise TypeError("sweep must be the dict load_sweep() returns (or None for the committed one)")
        self.table = explorer_table(sweep, model)
        self.model = model
        self.n_seeds = len(sweep["config"]["seeds"])
        self.curves, self.points = self._accuracies(sweep, model)
        self.last_update_ms = 0.0
        grid = self.table["grid"]
        # Fixed description and control widths, and rows that wrap instead of squeezing: with JupyterLab's file
        # browser open (1400 px window) nothing overlaps, in particular not the sparsity value and the toggle.
        label = {"description_width": "80px"}
        wide, narrow = widgets.Layout(width="420px", flex="0 0 auto"), widgets.Layout(width="230px", flex="0 0 auto")
        self.granularity = widgets.Dropdown(options=GRANULARITIES, value="unstructured", description="granularity",
                                            style=label, layout=narrow)
        self.criterion = widgets.Dropdown(options=self._criteria("unstructured"), value="magnitude",
                                          description="criterion", style=label, layout=narrow)
        self.layer = widgets.Dropdown(options=self.table["layers"], value=self.table["layers"][0], description="layer",
                                      style=label, layout=narrow)
        self.sparsity = widgets.SelectionSlider(options=[(f"{100 * s:g}%", s) for s in grid], value=0.9,
                                                description="sparsity", continuous_update=True, style=label,
                                                layout=wide)
        self.finetune = widgets.ToggleButtons(options=[("one-shot", False), ("fine-tuned", True)], value=True,
                                              description="training", style=label,
                                              tooltips=["pruned once, no training afterwards",
                                                        "gradual pruning + fine-tuning"],
                                              layout=widgets.Layout(flex="0 0 auto"))
        self.status = widgets.HTML(layout=widgets.Layout(width="100%"))
        self._build_figures()
        for control in (self.criterion, self.sparsity, self.finetune, self.layer):
            control.observe(lambda _change: self.update(), names="value")
        self.granularity.observe(self._on_granularity, names="value")
        self.update()
        wrap = widgets.Layout(flex_flow="row wrap", width="100%")
        self.controls = widgets.VBox([widgets.HBox([self.granularity, self.criterion, self.layer], layout=wrap),
                                      widgets.HBox([self.sparsity, self.finetune], layout=wrap), self.status])
        super().__init__([self.controls, widgets.HBox([self.curve_fig, self.hist_fig], layout=wrap),
                          widgets.HBox([self.mask_fig, self.layers_fig], layout=wrap)])

    @staticmethod
    def _accuracies(sweep: dict, model: str) -> tuple[dict, dict]:
        """Accuracy curves per (method, finetune) and the point per (method, sparsity, finetune), from the sweep."""
        test = summarize(sweep, model, "test_acc")
        dense = find(test, "dense", False, 0.0)
        curves, points = {}, {}
        for method in COMBINATIONS.values():
            for finetune in (False, True):
                rows = [(0.0, dense)] + [(s, find(test, method, finetune, s))
                                         for s in sweep["config"]["sparsities"]]
                curves[(method, finetune)] = {"x": rounded([100 * (1 - r["sparsity"]) for _, r in rows], 3),
                                              "y": rounded([100 * r["mean"] for _, r in rows], 2),
                                              "err": rounded([100 * r["ci95"] for _, r in rows], 2)}
                for s, r in rows:
                    points[(method, s, finetune)] = {"x": round(100 * (1 - r["sparsity"]), 3),
                                                     "y": round(100 * r["mean"], 2), "ci95": round(100 * r["ci95"], 2)}
        return curves, points

    @staticmethod
    def _criteria(granularity: str) -> list[str]:
        return [c for (g, c) in COMBINATIONS if g == granularity]

    @property
    def method(self) -> str:
        """The sweep method the current granularity and criterion select."""
        return COMBINATIONS[(self.granularity.value, self.criterion.value)]

    def _on_granularity(self, change) -> None:
        options = self._criteria(change["new"])
        with self.criterion.hold_trait_notifications():
            self.criterion.options = options
            self.criterion.value = options[0]
        self.update()

    def _build_figures(self) -> None:
        self.curve_fig = go.FigureWidget(data=[
            go.Scatter(mode="lines+markers", name="fine-tuned", line_color=COLORS[0]),
            go.Scatter(mode="lines+markers", name="no fine-tuning", line_color=COLORS[1]),
            go.Scatter(mode="markers", name="current", marker=dict(size=16, symbol="star", color=COLORS[3]))])
        style(self.curve_fig, "test accuracy vs weights kept", height=330)
        kept_axis(self.curve_fig)
        self.curve_fig.update_yaxes(title="test accuracy (%)", range=[0, 101])
        self.hist_fig = go.FigureWidget(data=[go.Bar(name="all weights", marker_color="#BBBBBB"),
                                              go.Bar(name="kept by the mask", marker_color=COLORS[0])])
        style(self.hist_fig, "|w| of the layer (dense values)", height=330)
        self.hist_fig.update_layout(barmode="overlay", bargap=0.02)
        self.hist_fig.update_xaxes(title="|weight|")
        self.hist_fig.update_yaxes(title="count")
        self.mask_fig = go.FigureWidget(data=[go.Heatmap(colorscale=[[0, "#FFFFFF"], [1, COLORS[0]]], zmin=0, zmax=1,
                                                         showscale=False)])
        style(self.mask_fig, "mask (blue = kept)", height=330)
        self.mask_fig.update_xaxes(title="input", showgrid=False)
        self.mask_fig.update_yaxes(title="output unit", showgrid=False, showticklabels=False)
        self.layers_fig = go.FigureWidget(data=[go.Bar(marker_color=COLORS[2])])
        style(self.layers_fig, "weights removed per layer", height=330)
        self.layers_fig.update_yaxes(title="weights removed (%)", range=[0, 100])
        for fig in (self.curve_fig, self.hist_fig, self.mask_fig, self.layers_fig):
            fig.update_layout(width=480)
            leave_room_for_toolbar(fig)

    def current(self) -> dict:
        """The precomputed entry for the current controls (masks, per-layer sparsity, removed share, counts)."""
        return self.table["entries"][(self.method, self.sparsity.value, bool(self.finetune.value))]

    def update(self) -> None:
        """Redraw every figure from the precomputed tables; records ``last_update_ms``."""
        start = time.perf_counter()
        entry, layer, method = self.current(), self.layer.value, self.method
        tuned, raw = self.curves[(method, True)], self.curves[(method, False)]
        point = self.points[(method, self.sparsity.value, bool(self.finetune.value))]
        with redraw(self.curve_fig):
            for trace, c in zip(self.curve_fig.data[:2], (tuned, raw), strict=True):
                trace.x, trace.y, trace.error_y = c["x"], c["y"], dict(array=c["err"])
            self.curve_fig.data[2].x, self.curve_fig.data[2].y = [point["x"]], [point["y"]]
        centers = rounded((np.array(self.table["edges"][layer][:-1]) + np.array(self.table["edges"][layer][1:])) / 2, 4)
        threshold = entry["threshold"].get(layer)
        with redraw(self.hist_fig):
            self.hist_fig.data[0].x, self.hist_fig.data[0].y = centers, self.table["all_counts"][layer]
            self.hist_fig.data[1].x, self.hist_fig.data[1].y = centers, entry["kept_counts"][layer]
            self.hist_fig.layout.shapes = [] if threshold is None else [dict(
                type="line", x0=threshold, x1=threshold, yref="paper", y0=0, y1=1,
                line=dict(color=COLORS[3], dash="dash"))]
            self.hist_fig.layout.title.text = f"|w| of {layer}" + (
                f": threshold {threshold:.3f}" if threshold is not None else ": no single threshold for this choice")
        with redraw(self.mask_fig):
            # a uint8 array travels to the browser as compact binary, not a JSON list of 32k numbers
            # row 0 at the top
            self.mask_fig.data[0].z = np.ascontiguousarray(entry["masks"][layer][::-1], dtype=np.uint8)
            rows, cols = self.table["shapes"][layer]
            self.mask_fig.layout.title.text = f"mask of {layer} ({rows} x {cols}), blue = kept"
        with redraw(self.layers_fig):
            self.layers_fig.data[0].x = list(entry["layer_sparsity"])
            self.layers_fig.data[0].y = list(entry["layer_sparsity"].values())
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        training = ("fine-tuned (gradual pruning + fine-tuning)" if self.finetune.value
                    else "one-shot (pruned once, no fine-tuning)")
        self.status.value = (f"<b>{LABELS[method]}</b>, <b>{training}</b>: <b>{entry['removed']:.1f}%</b> of the "
                             "weights removed (seed-0 model: the per-layer bars, weighted by layer size) &nbsp;|&nbsp; "
                             f"test accuracy {point['y']:.1f} ± {point['ci95']:.1f}% "
                             f"(mean and 95% CI over {self.n_seeds} seeds)")


def pruning_explorer(sweep: dict | None = None, model: str = "mlp") -> PruningExplorer:
    """The explorer over the committed sweep (or ``sweep``), for the model whose masks the sweep stored."""
    return PruningExplorer(sweep, model)
