"""Figures, labels and text of notebook 05 (energy and carbon): data in, a figure or text out.

* :func:`pareto_figure` and :func:`energy_labels` - accuracy against joules per inference, and an
  "energy label" card per model (rows of :func:`labkit.experiments.energy_zoo.energy_rows`). Every
  number on them says ESTIMATED.
* :func:`batching_figure`, :func:`region_figure`, :func:`rows_table`.
* :func:`gpu_energy_summary` - the measured GPU joules in the committed results files, with their origin.
* :func:`published_figures` - published energy figures for context, each with its source.
"""
from __future__ import annotations

import csv
import html
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import plotly.graph_objects as go

from labkit import carbon
from labkit import results as results_io  # 'results' is a parameter name below
from labkit.figures import COLORS, rounded, style

#: How the NVML joules in the PyTorch-baseline file (section "energy") were measured.
PYTORCH_BASELINES_METHOD = ("NVIDIA H200, 2026-11-28, torch 2.11: NVML total-energy counter read before and after a "
                            ">= 2 s loop of the operation, CUDA synchronized at both edges; whole board, idle power "
                            "not subtracted")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x = joules, higher y = accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_figure(rows: list[dict], batch: int = 1) -> go.Figure:
    """Accuracy against estimated joules per inference (log axis), Pareto front joined by a line."""
    key = f"j_per_inference_b{batch}"
    if not rows or key not in rows[0]:
        raise ValueError(f"rows have no {key!r}: compute energy_rows(..., batch_sizes=({batch}, ...)) first")
    xs = rounded([r[key] for r in rows], 12)
    ys = rounded([100 * r["accuracy"] for r in rows], 2)
    fig = go.Figure()
    front = pareto_front(list(zip(xs, ys, strict=True)))
    fig.add_scatter(x=[xs[i] for i in front], y=[ys[i] for i in front], mode="lines", name="Pareto front",
                    line=dict(color="#999999", dash="dot"), hoverinfo="skip")
    for i, r in enumerate(rows):
        fig.add_scatter(x=[xs[i]], y=[ys[i]], mode="markers+text", name=r["name"], text=[r["name"]],
                        textposition="top center" if i % 2 == 0 else "bottom center",  # neighbours apart
                        marker=dict(size=12, color=COLORS[i % len(COLORS)]),
                        hovertemplate=f"{r['name']}<br>%{{y:.1f}}% accuracy<br>%{{x:.3g}} J per inference "
                                      "(ESTIMATED)<extra></extra>")
    fig.update_xaxes(type="log", title=f"joules per inference at batch {batch} (ESTIMATED: Horowitz 45 nm model)")
    fig.update_yaxes(title="test accuracy (%)")
    return style(fig, f"Accuracy against energy per inference (batch {batch})")


def grade(ratio: float) -> str:
    """An energy-label letter for energy relative to the dense reference: A (<= 1/4) ... E (> 2x)."""
    if not ratio >= 0:
        raise ValueError(f"ratio must be a number >= 0, got {ratio!r}")
    for letter, limit in (("A", 0.25), ("B", 0.5), ("C", 0.8), ("D", 1.25)):
        if ratio <= limit:
            return letter
    return "E"


_GRADE_COLORS = {"A": "#009E73", "B": "#56B4E9", "C": "#F0E442", "D": "#E69F00", "E": "#D55E00"}


def energy_labels(rows: list[dict], reference: str = "dense", batch: int = 1) -> str:
    """HTML "energy label" cards, one per model, graded against ``reference`` at ``batch``."""
    key = f"j_per_inference_b{batch}"
    by_name = {r["name"]: r for r in rows}
    if reference not in by_name:
        raise ValueError(f"reference must be one of the models {list(by_name)}, got {reference!r}")
    if key not in by_name[reference]:
        raise ValueError(f"rows have no {key!r}: compute energy_rows with batch {batch}")
    ref = by_name[reference][key]
    cards = []
    for r in rows:
        ratio = r[key] / ref
        letter = grade(ratio)
        cards.append(
            f'<div style="border:2px solid {_GRADE_COLORS[letter]};border-radius:8px;padding:8px 12px;'
            f'margin:4px;min-width:190px;font-family:sans-serif;font-size:13px">'
            f'<div style="font-size:16px;font-weight:bold">{html.escape(r["name"])} '
            f'<span style="background:{_GRADE_COLORS[letter]};padding:0 8px;border-radius:4px">{letter}</span></div>'
            f'<div style="color:#555">{html.escape(r["description"])}</div>'
            f'<div>accuracy <b>{100 * r["accuracy"]:.1f}%</b></div>'
            f'<div>{r[key]:.3g} J per inference (batch {batch}), {ratio:.2f}x {html.escape(reference)}</div>'
            f'<div>{r["j_training"]:.3g} J to train ({r["train_steps"]} steps)</div>'
            f'<div>{r["active"]:,} of {r["parameters"]:,} parameters used per input, {r["nonzero"]:,} non-zero</div>'
            f'<div style="font-size:11px;color:#D55E00;font-weight:bold">ESTIMATED (Horowitz 45 nm model), '
            f'not measured</div></div>')
    return '<div style="display:flex;flex-wrap:wrap">' + "".join(cards) + "</div>"


def batching_figure(batch_sizes: Sequence[int], joules: Mapping[str, Sequence[float]]) -> go.Figure:
    """Estimated joules per inference against batch size, one line per model (log-log).

    ``joules``: model name -> joules per inference at each of ``batch_sizes``
    (:func:`labkit.experiments.energy_zoo.batching_rows`). Weights are read once per batch, so their
    DRAM cost is shared by every input in it.
    """
    fig = go.Figure()
    for name, ys in joules.items():
        if len(ys) != len(batch_sizes):
            raise ValueError(f"joules[{name!r}] has {len(ys)} values for {len(batch_sizes)} batch sizes")
        fig.add_scatter(x=list(batch_sizes), y=rounded(ys, 12), mode="lines+markers", name=name)
    fig.update_xaxes(type="log", title="batch size (inputs per forward pass)")
    fig.update_yaxes(type="log", title="joules per inference (ESTIMATED)")
    return style(fig, "Batching shares the weight traffic (estimated, Horowitz 45 nm model)")


def published_figures() -> list[dict]:
    """Published energy figures for context, each with its source (``labkit/tables/published_energy.csv``)."""
    text = resources.files("labkit").joinpath("tables/published_energy.csv").read_text()
    return [dict(row, value=float(row["value"])) for row in csv.DictReader(text.splitlines())]


def gpu_energy_results(results_dir: Path | str | None = None) -> dict[str, dict]:
    """Measured-GPU energy files written by ``benchmarks/energy.py`` (``energy_*.json``), by file name, checked."""
    folder = Path(results_dir) if results_dir is not None else results_io.RESULTS_DIR
    if not folder.is_dir():
        return {}
    return {p.name: results_io.read(p, "energy") for p in sorted(folder.glob("energy_*.json"))}


def pytorch_baseline_energy(path: Path | str = results_io.PYTORCH_BASELINES) -> list[dict]:
    """The measured energy rows (dense, PyTorch's BSR kernel) of the committed PyTorch-baseline file."""
    if not Path(path).exists():
        return []
    return [r for r in results_io.pytorch_baselines(path) if r["section"] == "energy" and "joules_per_op" in r]


def gpu_energy_summary(results: dict[str, dict] | None = None, baselines: list[dict] | None = None) -> str:
    """The measured GPU joules in the committed results files, as text lines with their origin."""
    results = gpu_energy_results() if results is None else results
    baselines = pytorch_baseline_energy() if baselines is None else baselines
    lines = []
    if baselines:
        lines.append(f"{results_io.PYTORCH_BASELINES.name}: MEASURED (GPU board), {PYTORCH_BASELINES_METHOD}")
        for r in baselines:
            lines.append(f"  {r['label']:<40} {r['joules_per_op']:.3f} J per product at {r['avg_watts']:.0f} W")
        if len(baselines) == 2:
            lines.append(f"  dense / sparse: {baselines[0]['joules_per_op'] / baselines[1]['joules_per_op']:.1f}x"
                         " fewer joules with the sparse kernel")
        lines.append("  origin: benchmarks/pytorch_baselines.py (PyTorch's own kernels, not the lab's)")
    for name, res in results.items():  # written by benchmarks/energy.py
        lines.append(f"{name}: MEASURED by {res['script']} on {res['gpu']}, {res['date']}")
        for r in res["rows"]:
            lines.append(f"  {r['M']:>5} tokens  {r['label']:<22} {r['joules_per_call']:.4g} J per call "
                         f"({r['kind']}, {r['scope']}), {r.get('energy_ratio_vs_dense', float('nan')):.2f}x "
                         "fewer joules than dense")
    if not results:
        lines.append("The lab's own kernels have no measured GPU joules yet: run `python benchmarks/energy.py` on an "
                     "NVIDIA GPU and commit benchmarks/results/energy_<gpu>.json.")
    return "\n".join(lines)


def rows_table(rows: list[dict]) -> str:
    """The zoo's rows as aligned text (what nbval compares): every joule labelled estimated."""
    batches = sorted(rows[0]["batch_sizes"])
    head = f"{'model':<13}{'accuracy':>9}{'params':>8}{'nonzero':>8}{'active':>8}" + "".join(
        f"{'J/inf b' + str(b):>12}" for b in batches) + f"{'J train':>10}"
    lines = [head + "   (all joules ESTIMATED)"]
    for r in rows:
        joules = "".join(f"{r[f'j_per_inference_b{b}']:>12.3g}" for b in batches)
        lines.append(f"{r['name']:<13}{100 * r['accuracy']:>8.1f}%{r['parameters']:>8,}{r['nonzero']:>8,}"
                     f"{r['active']:>8,}" + joules + f"{r['j_training']:>10.3g}")
    return "\n".join(lines)


def region_figure(joules: float, pue: float = 1.0) -> go.Figure:
    """kgCO2e of the same ``joules`` in every bundled region (cleanest first)."""
    kg = carbon.by_region(joules, pue=pue)
    grid = carbon.grid_table()
    fig = go.Figure(go.Bar(x=[f"{grid[c].name} ({grid[c].year})" for c in kg], y=rounded(list(kg.values()), 9),
                           marker_color=COLORS[0]))
    fig.update_yaxes(title="kgCO2e")
    return style(fig, f"The same {joules:.3g} J (PUE {pue:g}) in each region's grid")
