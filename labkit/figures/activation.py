"""Figures for notebook 08 (activation sparsity): one function per figure, data in, ``go.Figure`` out.

* :func:`activation_histogram_figure`: how the inputs of a few linear layers are spread (heavy-tailed, mostly
  near zero), with the threshold that skips a given share of them.
* :func:`trade_figure`: perplexity / dense (95% CI) against decode speed-up, one trace per technique, with the
  fair dense baseline and the quality threshold marked.

Values are rounded before they enter a figure, so nbval sees the same JSON on every machine.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from labkit.figures import COLORS, style

TECHNIQUE_STYLE = {"activation uniform": (COLORS[0], "circle"), "activation greedy": (COLORS[1], "diamond"),
                   "structured": (COLORS[2], "square")}


def activation_histogram_figure(values: Mapping[str, Sequence[float]], thresholds: Mapping[str, float],
                                bins: int = 60, title: str | None = None) -> go.Figure:
    """Histogram (share of inputs, log y) of each layer's inputs ``x``, with the threshold ``+-t`` dashed.

    ``values``: ``{layer name: input values}``; ``thresholds``: ``{layer name: t}`` (inputs with ``|x| <= t``
    are skipped). Each layer is scaled by its own largest ``|x|``, so layers of different ranges share one axis.
    """
    if not isinstance(values, Mapping) or not values:
        raise TypeError("values must be a non-empty dict {layer name: list of input values}")
    missing = [name for name in values if name not in thresholds]
    if missing:
        raise ValueError(f"thresholds lacks {missing}: give one threshold per layer of values")
    bins = int(bins)
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    edges = np.linspace(-1, 1, bins + 1)
    centres = np.round((edges[:-1] + edges[1:]) / 2, 4)
    fig = go.Figure()
    for i, (name, xs) in enumerate(values.items()):
        x = np.asarray(xs, dtype=np.float64)
        scale = float(np.abs(x).max()) or 1.0
        counts, _ = np.histogram(x / scale, bins=edges)
        share = np.round(counts / max(len(x), 1), 6)
        colour = COLORS[i % len(COLORS)]
        # an empty bin has no place on a log axis: a gap (None), not a point at zero
        fig.add_scatter(x=centres, y=[float(v) if v > 0 else None for v in share], mode="lines",
                        line=dict(shape="hvh", color=colour), name=name, connectgaps=False)
        t = round(float(thresholds[name]) / scale, 4)
        for side in (-t, t):
            fig.add_vline(x=side, line_dash="dash", line_color=colour, opacity=0.7)
    fig.update_xaxes(title="input value / the layer's largest |input| (dashed: +- threshold)")
    fig.update_yaxes(title="share of inputs (log scale)", type="log")
    return style(fig, title or "Inputs of a linear layer: most are near zero, a few are large", height=420)


def trade_figure(points: Sequence[Mapping], *, fair_speedup: float, threshold: float = 1.2,
                 highlight: Mapping | None = None, title: str | None = None) -> go.Figure:
    """Perplexity / dense (log y, 95% CI bars) against decode speed-up over the dense model as shipped.

    ``points``: :func:`labkit.experiments.llm_activation.trade_points`. ``fair_speedup``: the fair dense
    baseline's speed-up (a vertical dotted line: right of it, a technique beats dense in the same layout).
    A star marks ``highlight`` (always drawn, hidden when None, so a widget can move it).
    """
    fig = go.Figure()
    for name, (colour, symbol) in TECHNIQUE_STYLE.items():
        pts = [p for p in points if p["technique"] == name]
        if not pts:
            continue
        up = [round(p["ratio_ci"][1] - p["ratio"], 4) for p in pts]
        down = [round(p["ratio"] - p["ratio_ci"][0], 4) for p in pts]
        fig.add_scatter(x=[round(p["speedup"], 3) for p in pts], y=[round(p["ratio"], 4) for p in pts],
                        error_y=dict(type="data", array=up, arrayminus=down, thickness=1.5, width=3),
                        mode="markers+lines", name=name, marker=dict(size=9, color=colour, symbol=symbol),
                        line=dict(color=colour, width=1), hovertext=[p["label"] for p in pts], hoverinfo="text+x+y")
    star = highlight or {"speedup": 1.0, "ratio": 1.0}
    fig.add_scatter(x=[round(star["speedup"], 3)], y=[round(star["ratio"], 4)], mode="markers", name="selected",
                    visible=highlight is not None, hoverinfo="skip",
                    marker=dict(size=20, symbol="star", color=COLORS[6], line=dict(width=1, color="black")))
    fig.add_vline(x=1.0, line_dash="dot", line_color="grey")
    fig.add_vline(x=round(fair_speedup, 3), line_dash="dot", line_color=COLORS[3])
    fig.add_hline(y=threshold, line_dash="dash", line_color=COLORS[3])
    fig.add_annotation(x=round(fair_speedup, 3), y=1, yref="paper", text="fair dense (same layout)",
                       showarrow=False, xanchor="left", yanchor="top")
    fig.add_annotation(x=0, xref="paper", y=float(np.log10(threshold)), text=f"{threshold:g}x dense perplexity",
                       showarrow=False, xanchor="left", yanchor="bottom")
    fig.update_xaxes(title="decode speed / dense as transformers runs it (measured in turns, 2 cores)")
    fig.update_yaxes(title="perplexity / dense (log scale, 95% CI)", type="log")
    return style(fig, title or "What each technique buys: faster is right, better is down", height=460)
