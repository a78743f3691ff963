"""Figures of notebook 04 (Mixture-of-Experts): load during training (and collapse), tokens coloured by expert,
what experts prefer, models compared, expert parallelism's exchanges, GPU timings. Data in, ``go.Figure`` out.

Every number is rounded before it goes into a figure (nbval compares plotly JSON exactly).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.data import TextCorpus
from labkit.experiments.moe_routing import route_text
from labkit.figures import COLORS, rounded, style
from labkit.moe.tiny_gpt import TinyGPT, TrainResult


def load_during_training(runs: Mapping[str, TrainResult], layer: int = 0) -> go.Figure:
    """One panel per run: each expert's share of the routed tokens over training steps."""
    if not runs or not all(isinstance(r, TrainResult) and r.load_history for r in runs.values()):
        raise ValueError("runs must map names to TrainResults of MoE models (with a load history)")
    fig = make_subplots(rows=1, cols=len(runs), subplot_titles=list(runs), shared_yaxes=True)
    for col, run in enumerate(runs.values(), start=1):
        loads = np.array([step[layer] for step in run.load_history])  # (logged steps, experts)
        steps = [i * run.log_every for i in range(len(loads))]
        steps[-1] = run.config["steps"] - 1
        for e in range(loads.shape[1]):
            fig.add_trace(go.Scatter(x=steps, y=rounded(loads[:, e], 3), mode="lines", name=f"expert {e}",
                                     line=dict(color=COLORS[e % len(COLORS)]), stackgroup=f"s{col}",
                                     showlegend=col == 1, legendgroup=f"e{e}"), row=1, col=col)
        fig.update_xaxes(title_text="training step", row=1, col=col)
    fig.update_yaxes(title_text=f"share of tokens (layer {layer})", range=[0, 1], row=1, col=1)
    return style(fig, "Expert load during training", height=360)


def token_colouring(model: TinyGPT, corpus: TextCorpus, text: str, layer: int = 0, width: int = 64) -> go.Figure:
    """``text`` as a grid of characters, each cell coloured by the expert that processed it."""
    experts = route_text(model, corpus, text, layer)
    n_exp = model.cfg.n_experts
    rows = int(np.ceil(len(text) / width))
    z = np.full((rows, width), np.nan)
    chars = [[""] * width for _ in range(rows)]
    for i, (c, e) in enumerate(zip(text, experts, strict=True)):
        z[i // width, i % width] = e
        chars[i // width][i % width] = {" ": "·", "\n": "⏎"}.get(c, c)
    scale = []
    for e in range(n_exp):  # a stepped colour scale: one flat colour per expert
        colour = COLORS[e % len(COLORS)]
        scale += [[e / n_exp, colour], [(e + 1) / n_exp, colour]]
    fig = go.Figure(go.Heatmap(z=z[::-1].tolist(), text=chars[::-1], texttemplate="%{text}", colorscale=scale,
                               zmin=-0.5, zmax=n_exp - 0.5, xgap=1, ygap=1, hovertemplate="expert %{z}<extra></extra>",
                               colorbar=dict(title="expert", tickvals=list(range(n_exp)))))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, f"Which expert (layer {layer}) each character went to", height=40 + 26 * rows)


def preferences_figure(table: Mapping[str, Sequence[float]], title: str = "What each expert prefers") -> go.Figure:
    """Heatmap: rows are character classes, columns experts, cells the share routed there."""
    if not table:
        raise ValueError("table is empty: pass the output of expert_preferences()")
    names = list(table)
    z = rounded([table[n] for n in names], 3)
    n_exp = len(z[0])
    fig = go.Figure(go.Heatmap(z=z, x=[f"expert {e}" for e in range(n_exp)], y=names, colorscale="Blues",
                               zmin=0, zmax=1,
                               texttemplate="%{z:.2f}", colorbar=dict(title="share")))
    return style(fig, title, height=80 + 36 * len(names))


def comparison_figure(rows: Sequence[Mapping], x: str = "active_params") -> go.Figure:
    """Validation loss (mean and min-max over seeds) of each model against ``x``.

    ``rows``: dicts with ``model``, ``val_loss`` and ``x`` (e.g. from benchmarks/results/moe_train_cpu.json).
    """
    if x not in ("active_params", "total_params", "flops_per_token"):
        raise ValueError(f"x must be 'active_params', 'total_params' or 'flops_per_token', got {x!r}")
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = go.Figure()
    for i, m in enumerate(models):
        sel = [r for r in rows if r["model"] == m]
        losses = np.array([r["val_loss"] for r in sel])
        fig.add_trace(go.Scatter(
            x=[sel[0][x]], y=rounded([losses.mean()], 3), name=m, mode="markers",
            marker=dict(size=12, color=COLORS[i % len(COLORS)]),
            error_y=dict(type="data", symmetric=False, array=rounded([losses.max() - losses.mean()], 3),
                         arrayminus=rounded([losses.mean() - losses.min()], 3))))
    fig.update_xaxes(title_text=x.replace("_", " "), type="log")
    fig.update_yaxes(title_text="validation loss (nats/char)")
    return style(fig, f"Validation loss against {x.replace('_', ' ')} (mean, min-max over seeds)")


def exchange_diagram(send_counts: Sequence[Sequence[int]]) -> go.Figure:
    """Draw expert parallelism's two all-to-alls: dispatch (tokens to the experts' ranks) and combine (back).

    ``send_counts[i][j]``: rows rank ``i`` sends to rank ``j`` (see ``ExpertParallelMoE.last_exchange``).
    Line widths grow with the number of rows.
    """
    counts = np.asarray(send_counts, dtype=int)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or (counts < 0).any():
        raise ValueError("send_counts must be a square (ranks x ranks) table of non-negative counts, "
                         f"got {counts.tolist()}")
    world = counts.shape[0]
    fig = go.Figure()
    columns = {0: "tokens on rank", 1: "experts on rank", 2: "outputs on rank"}
    top = max(1, counts.max())
    for phase, (x0, x1) in enumerate([(0, 1), (1, 2)]):
        for i in range(world):
            for j in range(world):
                n = counts[i, j] if phase == 0 else counts[j, i]  # combine: rows go back from j to i
                src, dst = (i, j) if phase == 0 else (j, i)
                if n == 0:
                    continue
                fig.add_trace(go.Scatter(x=[x0, x1], y=[-src, -dst], mode="lines+text", showlegend=False,
                                         line=dict(width=1 + 8 * n / top, color=COLORS[src % len(COLORS)]),
                                         text=["", f"{n} rows"], textposition="middle left", hoverinfo="skip"))
    for x, label in columns.items():
        fig.add_trace(go.Scatter(x=[x] * world, y=[-r for r in range(world)], mode="markers+text", showlegend=False,
                                 marker=dict(size=36, color="white", line=dict(width=2, color="black")),
                                 text=[f"{label} {r}" for r in range(world)], textposition="top center",
                                 hoverinfo="skip"))
    fig.add_annotation(x=0.5, y=0.6, text="dispatch: all_to_all_single", showarrow=False)
    fig.add_annotation(x=1.5, y=0.6, text="combine: all_to_all_single (reverse)", showarrow=False)
    fig.update_xaxes(visible=False, range=[-0.4, 2.4])
    fig.update_yaxes(visible=False, range=[-world + 0.4, 0.9])
    return style(fig, "Expert parallelism: who sends how many token rows to whom", height=160 + 90 * world)


def benchmark_figure(result: Mapping) -> go.Figure:
    """Time relative to the dense FFN with the same FLOPs, per token count: naive, grouped_mm, fused stages."""
    rows = result["rows"]
    labels = [f"T={r['T']}" for r in rows]
    fig = go.Figure()
    for i, key in enumerate(["naive", "grouped_mm"]):
        fig.add_bar(x=labels, y=rounded([r["time_vs_dense"].get(key, float("nan")) for r in rows], 3),
                    name=key, offsetgroup=str(i), marker_color=COLORS[i])
    for j, stage in enumerate(["fused_align", "fused_up_gemm", "fused_down_gemm", "fused_combine"]):
        fig.add_bar(x=labels, y=rounded([r["time_vs_dense"][stage] for r in rows], 3), name=stage.replace("_", " "),
                    offsetgroup="2", marker_color=COLORS[2 + j])
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="dense FFN, same FLOPs")
    fig.update_layout(barmode="relative", yaxis_title="time / dense FFN time")
    return style(fig, f"MoE layer on {result['device']} ({rows[0]['dtype']}, E={rows[0]['E']}, top-{rows[0]['top_k']})")
