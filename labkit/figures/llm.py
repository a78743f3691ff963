"""Figures for notebooks 06 and 07 (pruning, healing and quantizing a language model): one function per figure,
data in, ``go.Figure`` out.

* :func:`perplexity_figure`: perplexity against sparsity, one line per method x pattern, log y axis,
  with the dense model and 1.5x dense marked.
* :func:`input_norms_figure`: the input-feature norms of one layer (the outlier features that
  break magnitude pruning) and the max / median ratio of every layer.
* :func:`bytes_figure`: megabytes of the weights in each storage format, per pruned model.
* :func:`speed_figure`: prompt (prefill) and generation (decode) tokens per second, side by side.
* :func:`bytes_and_speed_figure`: the two above in one figure (the explorer's bars).
* :func:`energy_figure`: estimated joules per generated token, two estimates side by side.
* :func:`heal_figure`: healing curves, perplexity / dense against CPU-minutes (notebook 07).
* :func:`compression_map_figure`: every model the lab makes on one bytes-against-quality map (notebook 07).

Values are rounded before they enter a figure, so nbval sees the same JSON on every machine.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.figures import COLORS, rounded, style

#: Human names for the sweep's methods and patterns (legends, tables, the explorer).
METHOD_LABELS = {"dense": "dense", "random": "random mask", "magnitude": "magnitude (per row)",
                 "magnitude_layer": "magnitude (per layer)", "magnitude_global": "magnitude (global)",
                 "wanda": "Wanda", "sparsegpt": "SparseGPT", "structured": "structured (FFN channels)"}
PATTERN_LABELS = {"unstructured": "unstructured", "2:4": "2:4", "4:8": "4:8", "ffn_channels": "FFN channels removed"}
#: Teaching order: the baseline first, the best one-shot method after it, structured last.
METHOD_ORDER = ("random", "magnitude_layer", "magnitude", "magnitude_global", "wanda", "sparsegpt", "structured")
PATTERN_ORDER = ("unstructured", "2:4", "4:8", "ffn_channels")
#: Perplexity above this is "the model is broken"; plotted at the cap so a log axis stays readable.
PERPLEXITY_CAP = 1e5


def case_label(method: str, pattern: str) -> str:
    """``"Wanda, 2:4"``: the legend name of one method x pattern."""
    if method == "structured" or pattern == "unstructured":
        return METHOD_LABELS.get(method, method)
    return f"{METHOD_LABELS.get(method, method)}, {PATTERN_LABELS.get(pattern, pattern)}"


def row_label(row: Mapping) -> str:
    """``"Wanda 50%"``, ``"SparseGPT, 2:4"``, ``"structured (FFN channels), 50% kept"``: one sweep row's name."""
    if row["method"] == "dense":
        return "dense"
    if "ffn_keep" in row:
        return f"{case_label(row['method'], row['pattern'])}, {100 * row['ffn_keep']:g}% kept"
    if row["pattern"] != "unstructured":
        return case_label(row["method"], row["pattern"])
    return f"{case_label(row['method'], row['pattern'])} {100 * row['sparsity']:g}%"


def case_order(method: str, pattern: str) -> tuple:
    """Sort key putting method x pattern cases in teaching order (unknown names last, alphabetically)."""
    def rank(name: str, order: tuple[str, ...]) -> int:
        return order.index(name) if name in order else len(order)

    return rank(method, METHOD_ORDER), method, rank(pattern, PATTERN_ORDER), pattern


def _check_rows(rows: Sequence[Mapping], needed: Sequence[str]) -> list[Mapping]:
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
        raise TypeError("rows must be a non-empty list of sweep rows (dicts), e.g. the sweep file's 'rows'")
    for r in rows:
        missing = [k for k in needed if k not in r]
        if missing:
            raise ValueError(f"each row needs the fields {list(needed)}; a row lacks {missing}: {dict(r)}")
    return list(rows)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _capped(value: float) -> float:
    return round(min(value, PERPLEXITY_CAP), 2)


def perplexity_error_bars(rows: Sequence[Mapping]) -> dict | None:
    """Plotly ``error_y`` for rows that carry ``perplexity_ci`` ([lo, hi], a 95% bootstrap interval); else None.

    Rows of an older sweep have no interval: then there are no error bars (``None``), never made-up ones.
    Values are capped like the points (:data:`PERPLEXITY_CAP`).
    """
    if not rows or any(r.get("perplexity_ci") is None for r in rows):
        return None
    up, down = [], []
    for r in rows:
        ci = r["perplexity_ci"]
        if not (isinstance(ci, Sequence) and len(ci) == 2 and ci[0] <= r["perplexity"] <= ci[1]):
            raise ValueError(f"perplexity_ci must be [lo, hi] around the perplexity {r['perplexity']!r}, "
                             f"got {ci!r} (row {row_label(r)!r})")
        p = _capped(r["perplexity"])
        up.append(round(max(_capped(ci[1]) - p, 0.0), 2))
        down.append(round(max(p - _capped(ci[0]), 0.0), 2))
    return dict(type="data", array=up, arrayminus=down, thickness=1.5, width=4)


def hline_label(fig: go.Figure, y: float, text: str, *, log_axis: bool, position: str = "top") -> None:
    """A label at the right end of a horizontal line at data height ``y``.

    On a log axis plotly reads an annotation's ``y`` as log10 of the value (not the value, as for a
    shape): passing the value would put a label for 17.5 at 10^17.5 and stretch the axis up there.
    """
    fig.add_annotation(x=1, xref="x domain", xanchor="right", y=float(np.log10(y)) if log_axis else y, yref="y",
                       yanchor="bottom" if position == "top" else "top", text=text, showarrow=False)


def perplexity_figure(rows: Sequence[Mapping], dense_perplexity: float, *, tolerance: float = 1.5,
                      highlight: Mapping | None = None, title: str | None = None) -> go.Figure:
    """Perplexity (log scale) against the share of block weights removed, one trace per method x pattern.

    ``rows`` are sweep rows (``method, pattern, sparsity, perplexity``). Unstructured cases are lines;
    N:M patterns (one sparsity each) are markers. Where every row of a case has ``perplexity_ci`` (the
    sweep's 95% bootstrap interval), it is drawn as error bars. Dotted lines mark dense and
    ``tolerance`` x dense. ``highlight`` (one row) is drawn as a star: the explorer's current choice.
    """
    rows = _check_rows(rows, ("method", "pattern", "sparsity", "perplexity"))
    dense = _check_positive("dense_perplexity", dense_perplexity)
    tolerance = _check_positive("tolerance", tolerance)
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for r in rows:
        if r["method"] != "dense":
            groups.setdefault((r["method"], r["pattern"]), []).append(r)
    fig = go.Figure()
    for (method, pattern), pts in sorted(groups.items(), key=lambda item: case_order(*item[0])):
        pts = sorted(pts, key=lambda r: r["sparsity"])
        colour = COLORS[case_order(method, pattern)[0] % len(COLORS)]  # one colour per method
        fig.add_scatter(x=rounded([100 * r["sparsity"] for r in pts], 2), y=[_capped(r["perplexity"]) for r in pts],
                        error_y=perplexity_error_bars(pts),
                        mode="lines+markers" if len(pts) > 1 else "markers", name=case_label(method, pattern),
                        marker=dict(size=8 if len(pts) > 1 else 12, symbol="circle" if pattern == "unstructured"
                                    else "diamond"), line_color=colour)
    if highlight is not None:
        fig.add_scatter(x=[round(100 * highlight["sparsity"], 2)], y=[_capped(highlight["perplexity"])],
                        mode="markers", name="current", marker=dict(size=18, symbol="star", color=COLORS[7]))
    # Shapes take data values on a log axis; their labels are annotations (see hline_label).
    fig.add_hline(y=round(dense, 2), line_dash="dot", line_color="grey")
    fig.add_hline(y=round(tolerance * dense, 2), line_dash="dash", line_color=COLORS[3])
    hline_label(fig, round(dense, 2), f"dense {dense:.2f}", log_axis=True, position="bottom")
    hline_label(fig, round(tolerance * dense, 2), f"{tolerance:g}x dense", log_axis=True, position="top")
    fig.update_xaxes(title="weights removed from the 30 blocks (%)")
    fig.update_yaxes(title=f"perplexity (log scale; capped at {PERPLEXITY_CAP:.0e})", type="log")
    return style(fig, title or "One-shot pruning of SmolLM2-135M: lower is better", height=420)


def input_norms_figure(norms: Mapping[str, Sequence[float]], layer: str | None = None,
                       title: str | None = None) -> go.Figure:
    """Left: the L2 norm of every input feature of ``layer`` over the calibration tokens (log y).
    Right: for every layer, its largest feature norm divided by the median one.

    ``norms`` maps layer names to their per-input-feature norms (what ``labkit.llm.input_norms`` returns).
    A ratio far above 1 means a few features carry huge activations: a small weight on such a feature
    matters more than a large weight on a quiet one, which is what magnitude pruning gets wrong.
    """
    if not isinstance(norms, Mapping) or not norms:
        raise TypeError("norms must be a non-empty dict {layer name: per-input-feature norms}")
    layer = next(iter(norms)) if layer is None else layer
    if layer not in norms:
        raise ValueError(f"layer must be one of the norms' keys, e.g. {list(norms)[:3]}, got {layer!r}")
    values = {name: np.asarray(v, dtype=float).ravel() for name, v in norms.items()}
    ratios = {name: float(v.max() / np.median(v)) if np.median(v) > 0 else float("inf") for name, v in values.items()}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                        subplot_titles=[f"input-feature norms of {layer}", "max / median feature norm, every layer"])
    shown = values[layer]
    # One marker per feature (bars 1 px wide vanish among hundreds of features), the outliers (over 10x the
    # median) larger and in another colour, and the loudest one labelled: the point of the figure.
    loud = shown > 10 * np.median(shown)
    fig.add_scatter(x=list(range(len(shown))), y=rounded(shown, 3), mode="markers", name=layer,
                    marker=dict(color=[COLORS[3] if flag else COLORS[0] for flag in loud],
                                size=[9 if flag else 4 for flag in loud]), row=1, col=1)
    top = int(np.argmax(shown))
    fig.add_annotation(x=top, y=float(np.log10(shown[top])) if shown[top] > 0 else 0.0, xref="x", yref="y",
                       text=f"feature {top}: {shown[top]:,.0f}", showarrow=True, arrowhead=2, ax=40, ay=20,
                       xanchor="left")
    fig.add_bar(x=list(range(len(ratios))), y=rounded(list(ratios.values()), 2), marker_color=COLORS[1],
                hovertext=list(ratios), name="max / median", row=1, col=2)
    fig.update_xaxes(title="input feature", row=1, col=1)
    fig.update_yaxes(title="||X_j||, L2 over calibration tokens (log)", type="log", row=1, col=1)
    fig.update_annotations(font_size=12)
    fig.update_xaxes(title="layer (in model order)", row=1, col=2)
    fig.update_yaxes(title="ratio (log)", type="log", row=1, col=2)
    fig.update_layout(showlegend=False)
    return style(fig, title, height=380)


def bytes_figure(sizes: Mapping[str, Mapping[str, float]], title: str | None = None) -> go.Figure:
    """Grouped bars: megabytes of the weights (x: storage format) for each model (one colour per model).

    ``sizes`` maps a model label (``"dense"``, ``"Wanda 50%"``) to ``{format: bytes}`` (what
    ``labkit.llm.model_bytes`` returns). A format a model does not fit (2:4 packing for an unstructured
    mask) is ``None`` or absent, and has no bar.
    """
    if not isinstance(sizes, Mapping) or not sizes:
        raise TypeError("sizes must be a non-empty dict {model label: {format: bytes}}")
    formats: list[str] = []
    for per_format in sizes.values():
        if not isinstance(per_format, Mapping):
            raise TypeError(f"each value of sizes must be a dict {{format: bytes}}, got {type(per_format).__name__}")
        formats += [f for f in per_format if f not in formats]
    fig = go.Figure()
    for i, (label, per_format) in enumerate(sizes.items()):
        megabytes = [None if per_format.get(f) is None else round(per_format[f] / 1e6, 2) for f in formats]
        fig.add_bar(x=formats, y=megabytes, name=label, marker_color=COLORS[i % len(COLORS)])
    fig.update_xaxes(title="storage format")
    fig.update_yaxes(title="megabytes (whole model)")
    return style(fig, title or "Bytes to store the model", height=380)


def speed_figure(speeds: Mapping[str, Mapping[str, float]], title: str | None = None) -> go.Figure:
    """Tokens per second of each model: prompt processing (prefill) left, generation (decode) right.

    ``speeds`` maps a model label to ``{"prefill_tokens_per_s": .., "decode_tokens_per_s": ..}``
    (what ``labkit.llm.speed`` returns, or a sweep row). The first model is the reference: each bar's
    hover text gives its speed-up over it.
    """
    if not isinstance(speeds, Mapping) or not speeds:
        raise TypeError("speeds must be a non-empty dict {model label: {'prefill_tokens_per_s', "
                        "'decode_tokens_per_s'}}")
    keys = ("prefill_tokens_per_s", "decode_tokens_per_s")
    for label, s in speeds.items():
        if not isinstance(s, Mapping) or any(k not in s for k in keys):
            raise ValueError(f"speeds[{label!r}] must have the keys {keys}")
    labels = list(speeds)
    first = speeds[labels[0]]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["prompt (prefill), tokens/s", "generation (decode), tokens/s"])
    for col, key in enumerate(keys, start=1):
        values = [speeds[label][key] for label in labels]
        fig.add_bar(x=labels, y=rounded(values, 1), marker_color=[COLORS[i % len(COLORS)] for i in range(len(labels))],
                    hovertext=[f"{v / first[key]:.2f}x {labels[0]}" for v in values], showlegend=False, row=1, col=col)
    fig.update_yaxes(title="tokens per second (higher is faster)", row=1, col=1)
    return style(fig, title or "Speed on this CPU", height=380)


def bytes_and_speed_figure(sizes: Mapping[str, Mapping[str, float]], speeds: Mapping[str, Mapping[str, float]],
                           title: str | None = None) -> go.Figure:
    """:func:`bytes_figure` and :func:`speed_figure` side by side in one figure.

    One figure redraws once where two would redraw twice: the explorer of notebook 06 uses it to stay
    under its 200 ms budget in the browser. Traces: one per model of ``sizes`` (column 1, megabytes),
    then prefill (column 2) and decode (column 3) tokens/s with one bar per model of ``speeds``.
    """
    left, right = bytes_figure(sizes), speed_figure(speeds)
    # Two-line subplot titles: side by side in one line each, the narrow columns' titles overlapped.
    fig = make_subplots(rows=1, cols=3, column_widths=[0.44, 0.28, 0.28], horizontal_spacing=0.08,
                        subplot_titles=["bytes per format<br>(whole model)", "prompt (prefill)<br>tokens/s",
                                        "generation (decode)<br>tokens/s"])
    for trace in left.data:
        fig.add_trace(trace, row=1, col=1)
    for col, trace in enumerate(right.data, start=2):
        fig.add_trace(trace, row=1, col=col)
    fig.update_yaxes(title="megabytes", row=1, col=1)
    fig.update_yaxes(title="tokens per second (higher is faster)", row=1, col=2)
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style(fig, title, height=380)


def energy_figure(cases: Sequence[Mapping], title: str | None = None) -> go.Figure:
    """Estimated millijoules per generated token: assumed power x time next to the FLOP/byte model.

    ``cases`` are rows of :func:`labkit.experiments.llm_energy.energy_table` (``label``,
    ``power_time_j``, ``model_j``). Both are *estimates*; the title says so.
    """
    cases = _check_rows(cases, ("label", "power_time_j", "model_j"))
    labels = [c["label"] for c in cases]
    fig = go.Figure()
    fig.add_bar(x=labels, y=rounded([1000 * c["power_time_j"] for c in cases], 2), name="assumed power x time",
                marker_color=COLORS[0])
    fig.add_bar(x=labels, y=rounded([1000 * c["model_j"] for c in cases], 3), name="FLOP/byte model (Horowitz 45 nm)",
                marker_color=COLORS[1])
    fig.update_yaxes(title="millijoules per generated token (log)", type="log")
    return style(fig, title or "Energy per generated token: ESTIMATED (no CPU energy sensor used)", height=380)


#: Ratios to dense above this are plotted at the cap (the map's log axis stays readable); hover gives the value.
RATIO_CAP = 20.0
#: One colour and marker per family of the compression map (labkit.experiments.llm_compress.FAMILIES).
FAMILY_STYLE = {"dense": (COLORS[0], "square"), "quantized": (COLORS[1], "circle"), "pruned": (COLORS[3], "x"),
                "healed": (COLORS[2], "triangle-up"), "pruned + quantized": (COLORS[4], "diamond"),
                "structured": (COLORS[5], "cross")}


def _ratio_bars(points: Sequence[Mapping], cap: float) -> dict:
    up = [round(max(min(p["ratio_ci"][1], cap) - min(p["ratio"], cap), 0.0), 4) for p in points]
    down = [round(max(min(p["ratio"], cap) - min(p["ratio_ci"][0], cap), 0.0), 4) for p in points]
    return dict(type="data", array=up, arrayminus=down, thickness=1.5, width=3)


def heal_figure(rows: Sequence[Mapping], x: str = "cpu_minutes", title: str | None = None) -> go.Figure:
    """Healing curves: perplexity ratio to dense (log scale, 95% CI bars) against CPU-minutes or tokens seen.

    ``rows``: runs of ``llm_heal_cpu.json`` (``curve`` points with ``ratio``, ``ratio_ci``, ``cpu_seconds``,
    ``tokens_seen``). Points scored on a subset of the windows (``windows`` not None) are drawn hollow: their
    interval is wider and their ratio is paired on that subset only.
    """
    rows = _check_rows(rows, ("method", "pattern", "sparsity", "objective", "curve"))
    if x not in ("cpu_minutes", "tokens"):
        raise ValueError(f"x must be 'cpu_minutes' or 'tokens', got {x!r}")
    fig = go.Figure()
    for i, r in enumerate(rows):
        pts = r["curve"]
        if r["method"] == "dense":
            name = "dense, next-token (control)"
        else:
            cut = f"{r['sparsity']:.0%}" if r["pattern"] == "unstructured" else r["pattern"]
            name = f"{METHOD_LABELS.get(r['method'], r['method'])} {cut}" + (
                "" if r["objective"] == "distill" else ", next-token")
        xs = [round(p["cpu_seconds"] / 60, 2) if x == "cpu_minutes" else p["tokens_seen"] for p in pts]
        dash = "solid" if r["objective"] == "distill" else "dot"
        fig.add_scatter(x=xs, y=[round(p["ratio"], 4) for p in pts], error_y=_ratio_bars(pts, RATIO_CAP),
                        mode="lines+markers", name=name, line=dict(color=COLORS[i % len(COLORS)], dash=dash),
                        marker=dict(size=8, symbol=["circle" if p.get("windows") is None else "circle-open"
                                                    for p in pts]))
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    hline_label(fig, 1.0, "dense", log_axis=True, position="bottom")
    fig.update_xaxes(title="CPU-minutes of training (process time, 2 threads)" if x == "cpu_minutes"
                     else "training tokens seen")
    fig.update_yaxes(title="perplexity / dense (log scale)", type="log")
    return style(fig, title or "Healing with the masks held: lower is better (hollow: 16 of 64 windows)", height=440)


def compression_map_figure(points: Sequence[Mapping], frontier: Sequence[Mapping] = (), *,
                           budget_bytes: float | None = None, highlight: Mapping | None = None,
                           title: str | None = None) -> go.Figure:
    """Every model on one map: megabytes (log x) against perplexity / dense (log y, 95% CI bars), one trace per
    family, the frontier as a step line, an optional byte budget (a vertical line) and a highlighted model (a star).

    ``points``: :func:`labkit.experiments.llm_compress.map_points`. Ratios above :data:`RATIO_CAP` sit at the cap;
    hovering shows each model's name, format, ratio and interval. The budget line and the star are always drawn
    (hidden when not given), so a widget can move them without adding traces.
    """
    points = _check_rows(points, ("label", "family", "bytes", "format", "ratio", "ratio_ci"))
    fig = go.Figure()
    for family, (colour, symbol) in FAMILY_STYLE.items():
        pts = [p for p in points if p["family"] == family]
        if not pts:
            continue
        hover = [f"{p['label']}<br>{p['bytes'] / 1e6:.1f} MB as {p['format']}<br>{p['ratio']:.3g}x dense "
                 f"(95% CI {p['ratio_ci'][0]:.3g}-{p['ratio_ci'][1]:.3g})" for p in pts]
        fig.add_scatter(x=[round(p["bytes"] / 1e6, 3) for p in pts], y=[round(min(p["ratio"], RATIO_CAP), 4)
                                                                         for p in pts],
                        error_y=_ratio_bars(pts, RATIO_CAP), mode="markers", name=family, hovertext=hover,
                        hoverinfo="text", marker=dict(size=10, color=colour, symbol=symbol))
    if frontier:
        steps_x, steps_y = [], []
        for p in sorted(frontier, key=lambda p: p["bytes"]):
            steps_x.append(round(p["bytes"] / 1e6, 3))
            steps_y.append(round(min(p["ratio"], RATIO_CAP), 4))
        fig.add_scatter(x=steps_x, y=steps_y, mode="lines", line=dict(shape="hv", color="black", width=1, dash="dot"),
                        name="frontier (not clearly beaten)", hoverinfo="skip")
    star = highlight or {"bytes": 1.0, "ratio": 1.0}
    fig.add_scatter(x=[round(star["bytes"] / 1e6, 3)], y=[round(min(star["ratio"], RATIO_CAP), 4)], mode="markers",
                    name="best within the budget", visible=highlight is not None, hoverinfo="skip",
                    marker=dict(size=20, symbol="star", color=COLORS[6], line=dict(width=1, color="black")))
    fig.add_vline(x=round((budget_bytes or 1.0) / 1e6, 3), line_dash="dash", line_color=COLORS[3],
                  visible=budget_bytes is not None)
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    fig.update_xaxes(title="megabytes of the whole model, in its smallest format (log scale)", type="log")
    fig.update_yaxes(title=f"perplexity / dense (log scale; capped at {RATIO_CAP:g}x)", type="log")
    return style(fig, title or "Everything the lab does to SmolLM2: smaller is left, better is down", height=500)
