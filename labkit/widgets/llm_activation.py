"""The activation-sparsity explorer of notebook 08: move the sparsity, see what it costs and what it buys.

A slider over the share of inputs skipped (0-70%) and a choice of allocation (uniform, or TEAL's greedy
per block). The text gives the perplexity with its 95% interval and paired ratio to dense, the share of
weight reads actually skipped on the evaluation text, the bytes read per token, the decode speed (timed in
turns, against the dense model as shipped and the fair dense baseline), and the model's answer to the
sweep's prompt at that setting; a star moves on the trade figure, and the chosen allocation's line is drawn in
full (the other one faded). Everything comes from
``llm_activation_cpu.json`` and is looked up, not recomputed, when the slider moves.
"""
from __future__ import annotations

import html
import time
from collections.abc import Mapping

import ipywidgets as widgets
import plotly.graph_objects as go

from labkit.experiments import llm_activation
from labkit.figures import activation as figures
from labkit.widgets import leave_room_for_toolbar, redraw


class ActivationExplorer(widgets.VBox):
    """Sparsity slider + allocation buttons over the sweep. Attributes: ``sparsity`` (slider), ``allocation``
    (toggle buttons), ``status`` (HTML), ``fig`` (the trade figure, a FigureWidget), ``table``,
    ``last_update_ms``."""

    def __init__(self, sweep: Mapping | None = None):
        sweep = llm_activation.load() if sweep is None else sweep
        self.table = llm_activation.explorer_table(sweep)
        self.prompt = str(sweep["config"].get("prompt", ""))
        self.points = {p["label"]: p for p in llm_activation.trade_points(sweep)}
        models = sweep["speed"]["models"]
        shipped = models[llm_activation.SHIPPED]["decode_tokens_per_s"]
        fair = models[llm_activation.FAIR]["decode_tokens_per_s"] / shipped
        levels = sorted({s for _, s in self.table})
        self.last_update_ms = 0.0
        start = 0.3 if 0.3 in levels else levels[len(levels) // 2]
        self.sparsity = widgets.SelectionSlider(options=[(f"{s:.0%}", s) for s in levels], value=start,
                                                description="inputs skipped", continuous_update=True,
                                                style={"description_width": "initial"},
                                                layout=widgets.Layout(width="480px"))
        self.allocation = widgets.ToggleButtons(options=["uniform", "greedy"], value="uniform",
                                                description="allocation")
        self.status = widgets.HTML()
        base = figures.trade_figure(list(self.points.values()), fair_speedup=fair)
        self.fig = go.FigureWidget(leave_room_for_toolbar(base))
        self._star = next(i for i, t in enumerate(self.fig.data) if t.name == "selected")
        self.sparsity.observe(lambda _change: self.update(), names="value")
        self.allocation.observe(lambda _change: self.update(), names="value")
        self.update()
        super().__init__([widgets.HBox([self.allocation]), self.sparsity, self.status, self.fig])

    def key(self) -> tuple[str, float]:
        """The table key of the current setting (0% is the dense model for both allocations)."""
        s = self.sparsity.value
        return ("uniform", 0.0) if s == 0 else (self.allocation.value, s)

    def update(self) -> None:
        """Show the current setting's entry (a lookup) and move the star; records ``last_update_ms``."""
        start = time.perf_counter()
        allocation, s = self.key()
        entry = self.table.get((allocation, s))
        name = (llm_activation.SHIPPED if s == 0 else f"activation {allocation} {s:.0%}")
        point = self.points.get(name)
        with redraw(self.fig):
            for trace in self.fig.data:  # the chosen allocation's line in full, the other one faded
                if trace.name in ("activation uniform", "activation greedy"):
                    trace.opacity = 1.0 if trace.name == f"activation {self.allocation.value}" else 0.3
            star = self.fig.data[self._star]
            star.visible = point is not None
            if point is not None:
                star.x = [round(point["speedup"], 3)]
                star.y = [round(point["ratio"], 4)]
        if entry is None:
            self.status.value = f"<b>{allocation} {s:.0%}</b>: not in the sweep"
        else:
            answer = html.escape(entry["sample"]) or "(no answer stored)"
            self.status.value = (f"<b>{'dense' if s == 0 else f'{allocation}, {s:.0%} of inputs skipped'}</b>: "
                                 f"{html.escape(entry['text'])}<br><i>{html.escape(self.prompt)}</i> "
                                 f"&rarr; {answer}")
        self.last_update_ms = 1000 * (time.perf_counter() - start)


def activation_explorer(sweep: Mapping | None = None) -> ActivationExplorer:
    """The explorer over the committed ``llm_activation_cpu.json`` (or ``sweep``, as ``llm_activation.load``
    returns)."""
    return ActivationExplorer(sweep)
