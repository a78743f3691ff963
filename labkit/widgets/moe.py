"""Routing explorer: experts, top-k, capacity factor and balancing weight -> load, drops, parameters, FLOPs.

Every combination was trained ahead of time (:mod:`labkit.moe.routing_grid`, committed as
``benchmarks/results/moe_routing_grid.json``), so moving a control is a dictionary lookup.
"""
from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go

from labkit.figures import COLORS, style
from labkit.moe.routing_grid import (
    BALANCE_WEIGHTS,
    CAPACITY_FACTORS,
    D_FF,
    D_MODEL,
    EXPERTS,
    GridPoint,
    cf_key,
    load_routing_grid,
)
from labkit.widgets import leave_room_for_toolbar, redraw


def capacity_line(capacity: int) -> dict:
    """A dashed horizontal line at height ``capacity`` across the bar chart, shown in the legend as "capacity"."""
    return dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=capacity, y1=capacity, name="capacity",
                showlegend=True, line=dict(color="black", dash="dash"))


class RoutingExplorer(widgets.VBox):
    """Sliders for experts (2-16), top-k (1-4), capacity factor and balancing weight; a load histogram and a summary.

    Attributes ``experts``, ``top_k``, ``capacity_factor``, ``balance_weight`` (controls), ``figure``
    (the histogram) and ``summary`` (an HTML line) let tests and notebooks drive it from Python.
    """

    def __init__(self, grid: dict[tuple[int, int, float], GridPoint] | None = None):
        self.grid = load_routing_grid() if grid is None else grid
        if not isinstance(self.grid, dict) or not self.grid:
            raise ValueError("grid must be the non-empty dict returned by labkit.moe.routing_grid.load_routing_grid()")
        cf_options = [("dropless" if cf is None else f"{cf:g}", cf_key(cf)) for cf in CAPACITY_FACTORS]
        self.experts = widgets.SelectionSlider(options=list(EXPERTS), value=4, description="experts")
        self.top_k = widgets.IntSlider(value=1, min=1, max=4, description="top-k")
        self.capacity_factor = widgets.SelectionSlider(options=cf_options, value="1.25", description="capacity")
        self.balance_weight = widgets.SelectionSlider(options=list(BALANCE_WEIGHTS), value=0.01,
                                                      description="balance w")
        self.figure = go.FigureWidget(go.Bar(x=[], y=[], marker_color=COLORS[0], name="processed"))
        self.figure.add_bar(x=[], y=[], marker_color=COLORS[3], name="dropped")
        style(self.figure, "routing", height=320)  # a title, so the top margin leaves the toolbar room
        self.figure.update_layout(barmode="stack", xaxis=dict(title="expert", type="category"),
                                  yaxis_title="token slots (of 1024 tokens)")
        leave_room_for_toolbar(self.figure)
        self.summary = widgets.HTML()
        for control in (self.experts, self.top_k, self.capacity_factor, self.balance_weight):
            control.observe(self._update, names="value")
        self._update()
        super().__init__([widgets.HBox([self.experts, self.top_k]),
                          widgets.HBox([self.capacity_factor, self.balance_weight]), self.figure, self.summary])

    def point(self) -> GridPoint:
        """The precomputed result for the current controls (top-k is capped at the number of experts)."""
        return self.grid[(self.experts.value, min(self.top_k.value, self.experts.value), self.balance_weight.value)]

    def _update(self, change=None) -> None:
        e = self.experts.value
        if self.top_k.value > e:  # top-k cannot exceed the number of experts
            self.top_k.value = e  # triggers another _update with a valid value
            return
        p = self.point()
        cf = self.capacity_factor.value
        load, routed = p.load[cf], p.routed
        names = [str(i) for i in range(e)]
        with redraw(self.figure):
            self.figure.data[0].x, self.figure.data[0].y = names, list(load)
            self.figure.data[1].x, self.figure.data[1].y = names, [r - k for r, k in zip(routed, load, strict=True)]
            self.figure.layout.xaxis.categoryarray = names  # exactly the experts, in order
            # The capacity is a horizontal line across the whole plot area at the capacity height. A shape with
            # xref="x domain" spans the category axis from edge to edge without adding categories to it
            # (a scatter trace at x = -0.5 .. E-0.5 would add "-0.5" and "15.5" as two extra categories).
            self.figure.layout.shapes = [] if cf == "dropless" else [capacity_line(p.capacity[cf])]
            self.figure.layout.title.text = (f"{e} experts, top-{self.top_k.value}, capacity {cf}, "
                                             f"balance weight {self.balance_weight.value:g}")
        slots = p.tokens * min(self.top_k.value, e)
        self.summary.value = (
            f"dropped: <b>{p.dropped[cf]}</b> of {slots} slots ({p.dropped[cf] / slots:.1%}) &nbsp;|&nbsp; "
            f"parameters: <b>{p.active_params:,}</b> active of {p.total_params:,} total &nbsp;|&nbsp; "
            f"FLOPs per token: <b>{p.flops_per_token:,.0f}</b> &nbsp;|&nbsp; "
            f"layer d_model={D_MODEL}, d_ff={D_FF} per expert")


def routing_explorer(grid: dict | None = None) -> RoutingExplorer:
    """The routing explorer widget (reads the committed grid unless ``grid`` is given)."""
    return RoutingExplorer(grid)
