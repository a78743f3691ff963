"""The byte-budget explorer of notebook 07: how good a SmolLM2 can you have in N megabytes?

Move the budget: a dashed line moves across the map of every model the lab makes
(:func:`labkit.experiments.llm_compress.map_points`), a star marks the best model that fits, and the text
says its quality with a 95% interval, the models the evaluation cannot tell from it, and its generation
speed where a CPU kernel for its form was timed in turns. Everything is computed once, when the explorer
is built (one entry per budget); moving the slider only looks the answer up.
"""
from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go

from labkit.experiments import llm_compress
from labkit.figures import llm as figures
from labkit.widgets import leave_room_for_toolbar, redraw

#: The budgets the slider offers, in megabytes: from below the smallest model to above dense fp32.
BUDGETS_MB = (60, 75, 80, 85, 90, 100, 140, 150, 180, 200, 270, 300, 400, 540)


def budget_table(points: Sequence[Mapping], speeds: Mapping[str, Mapping] | None,
                 budgets_mb: Sequence[float] = BUDGETS_MB) -> dict[float, dict]:
    """``{budget in MB: {"best": point or None, "text": sentence}}``, computed once for every budget."""
    if isinstance(budgets_mb, (str, bytes)) or not isinstance(budgets_mb, Sequence) or not budgets_mb:
        raise TypeError(f"budgets_mb must be a non-empty list of megabytes, e.g. (100, 200), got {budgets_mb!r}")
    table = {}
    for mb in budgets_mb:
        pick = llm_compress.best_within(points, mb * 1e6)
        table[mb] = {"best": None if pick is None else pick["best"],
                     "text": llm_compress.budget_text(points, mb * 1e6, speeds)}
    return table


class BudgetExplorer(widgets.VBox):
    """A budget slider over the compression map. Attributes: ``budget`` (the slider, megabytes), ``fig`` (the
    map, a FigureWidget), ``status`` (HTML), ``table`` (the precomputed answers), ``last_update_ms``."""

    def __init__(self, files: Mapping[str, Mapping] | None = None, budgets_mb: Sequence[float] = BUDGETS_MB):
        files = llm_compress.load_all() if files is None else files
        self.points = llm_compress.map_points(files)
        self.speeds = llm_compress.speed_models(files["quant"])
        self.table = budget_table(self.points, self.speeds, budgets_mb)
        self.last_update_ms = 0.0
        start = 100 if 100 in self.table else list(self.table)[len(self.table) // 2]
        self.budget = widgets.SelectionSlider(options=list(self.table), value=start, description="budget (MB)",
                                              continuous_update=True, style={"description_width": "initial"},
                                              layout=widgets.Layout(width="520px"))
        self.status = widgets.HTML()
        base = figures.compression_map_figure(self.points, llm_compress.frontier(self.points),
                                              budget_bytes=start * 1e6, highlight=self.table[start]["best"])
        self.fig = go.FigureWidget(leave_room_for_toolbar(base))
        self._star = len(self.fig.data) - 1  # compression_map_figure draws the star last
        self.budget.observe(lambda _change: self.update(), names="value")
        self.update()
        super().__init__([self.budget, self.status, self.fig])

    def update(self) -> None:
        """Move the budget line and the star to the slider's budget (a lookup); records ``last_update_ms``."""
        start = time.perf_counter()
        mb = self.budget.value
        entry = self.table[mb]
        best = entry["best"]
        with redraw(self.fig):
            self.fig.layout.shapes[0].x0 = self.fig.layout.shapes[0].x1 = mb  # the budget line (drawn first)
            star = self.fig.data[self._star]
            star.visible = best is not None
            if best is not None:
                star.x = [round(best["bytes"] / 1e6, 3)]
                star.y = [round(min(best["ratio"], figures.RATIO_CAP), 4)]
        self.status.value = f"<b>{mb:g} MB</b>: {html.escape(entry['text'])}"
        self.last_update_ms = 1000 * (time.perf_counter() - start)


def budget_explorer(files: Mapping[str, Mapping] | None = None) -> BudgetExplorer:
    """The byte-budget explorer over the three committed results files (or ``files``, as ``load_all`` returns)."""
    return BudgetExplorer(files)
