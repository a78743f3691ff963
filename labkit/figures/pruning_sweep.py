"""Figures of the pruning sweep (``labkit.experiments.pruning_sweep``): data in, ``go.Figure`` out.

Every accuracy plot carries two reference lines: the dense model and a logistic regression on the
same splits (640 weights). A pruned network below the logistic line has lost everything its hidden
layers added: on digits a linear model is already a strong baseline.
"""
from __future__ import annotations

import plotly.graph_objects as go

from labkit.experiments.pruning_sweep import LABELS, find, require, summarize
from labkit.figures import COLORS, rounded, style


def kept_axis(fig: go.Figure) -> go.Figure:
    """x axis = share of weights kept, log scale, reversed: sparser to the right, and 90% / 95% / 99%
    sparsity (10%, 5%, 1% kept) get as much room as 0-50%."""
    fig.update_xaxes(title="weights kept (%, log scale): sparser to the right", type="log", autorange="reversed",
                     tickvals=[100, 50, 20, 10, 5, 2, 1, 0.5], ticktext=["100", "50", "20", "10", "5", "2", "1", "0.5"])
    return fig


def reference_lines(fig: go.Figure, sweep: dict, model: str) -> go.Figure:
    """Dense and logistic-regression test accuracy (means over seeds) as dotted horizontal lines."""
    rows = summarize(sweep, model)
    dense, linear = require(rows, "dense", False, 0.0), find(rows, "logistic", False, 0.0)
    fig.add_hline(y=round(100 * dense["mean"], 2), line_dash="dot", line_color="grey",
                  annotation_text=f"dense {100 * dense['mean']:.1f}%", annotation_position="top right")
    if linear is not None:
        fig.add_hline(y=round(100 * linear["mean"], 2), line_dash="dash", line_color=COLORS[7],
                      annotation_text=f"logistic regression {100 * linear['mean']:.1f}%",
                      annotation_position="bottom left")
    return fig


def accuracy_figure(sweep: dict, model: str = "mlp", methods: list[str] | None = None, finetune: bool = True,
                    title: str | None = None) -> go.Figure:
    """Test accuracy (mean, 95% CI over seeds as error bars) against the share of weights kept, one line per method."""
    rows = summarize(sweep, model)
    methods = methods or sweep["config"]["methods"]
    fig = go.Figure()
    for i, m in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == m and r["finetune"] == finetune), key=lambda r: r["sparsity"])
        if not pts:
            raise ValueError(f"the sweep has no runs of method {m!r} with finetune={finetune}")
        fig.add_trace(go.Scatter(x=rounded([100 * (1 - r["sparsity"]) for r in pts], 3),
                                 y=rounded([100 * r["mean"] for r in pts], 2), mode="lines+markers",
                                 error_y={"array": rounded([100 * r["ci95"] for r in pts], 2)},
                                 name=LABELS.get(m, m), line_color=COLORS[i % len(COLORS)]))
    reference_lines(fig, sweep, model)
    kept_axis(fig)
    fig.update_yaxes(title="test accuracy (%), 95% CI", range=[0, 100])
    tuned = "gradual pruning + fine-tuning" if finetune else "one-shot, no fine-tuning"
    return style(fig, title or f"{model.upper()} on digits: {tuned} ({len(sweep['config']['seeds'])} seeds)")
