"""Pruning figures that are not about the sweep: storage bytes per format, the gradual schedule, the sensitivity scan.

The sweep's own figures and tables live in :mod:`labkit.figures.pruning_sweep` and
:mod:`labkit.experiments.pruning_sweep`. Every number is rounded before it goes into a figure (nbval
compares plotly JSON exactly).
"""
from __future__ import annotations

import plotly.graph_objects as go

from labkit.figures import rounded, style


def storage_figure(sizes: dict[str, dict[str, int]], title: str | None = "Bytes to store the weights") -> go.Figure:
    """Grouped bars: kilobytes per storage format (x) for each pruned model (one bar colour per model).

    ``sizes`` maps a model label to :func:`labkit.prune.model_storage_bytes` of that model.
    """
    from labkit.prune import FORMATS

    if not isinstance(sizes, dict) or not sizes:
        raise TypeError("sizes must be a non-empty dict {label: labkit.prune.model_storage_bytes(model)}")
    fig = go.Figure()
    for label, per_format in sizes.items():
        fig.add_bar(x=list(FORMATS), y=rounded([per_format[f] / 1024 for f in FORMATS], 2), name=label)
    fig.update_yaxes(title="kilobytes (float32 values, int32 indices)")
    fig.update_xaxes(title="storage format")
    return style(fig, title)


def schedule_figure(final_sparsity: float = 0.9, steps: int = 100, title: str | None = None) -> go.Figure:
    """Zhu & Gupta's cubic schedule against a linear ramp to the same final sparsity."""
    from labkit.prune import cubic_sparsity

    ts = list(range(steps + 1))
    fig = go.Figure()
    fig.add_scatter(x=ts, y=rounded([100 * cubic_sparsity(t, final_sparsity, 0, steps) for t in ts], 3), name="cubic")
    fig.add_scatter(x=ts, y=rounded([100 * final_sparsity * t / steps for t in ts], 3), name="linear",
                    line_dash="dot")
    fig.update_xaxes(title="pruning step (share of the pruning phase)")
    fig.update_yaxes(title="sparsity (%)")
    return style(fig, title or f"Gradual pruning to {100 * final_sparsity:g}%")


def sensitivity_figure(scan: dict[str, list[float]], sparsities: list[float], dense_accuracy: float,
                       max_drop: float = 0.01) -> go.Figure:
    """Validation accuracy when pruning one layer at a time, one line per layer, with the allowed drop marked."""
    if not scan:
        raise ValueError("scan is empty: pass the dict labkit.prune.sensitivity_scan returns")
    fig = go.Figure()
    for name, accs in scan.items():
        fig.add_scatter(x=rounded([100 * s for s in sparsities], 2), y=rounded([100 * a for a in accs], 2),
                        mode="lines+markers", name=name)
    fig.add_hline(y=round(100 * (dense_accuracy - max_drop), 2), line_dash="dot", line_color="grey",
                  annotation_text=f"dense - {100 * max_drop:g} point")
    fig.update_xaxes(title="sparsity of this layer only (%)")
    fig.update_yaxes(title="validation accuracy (%)")
    return style(fig, "Sensitivity scan (validation split)")
