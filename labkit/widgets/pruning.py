"""The pruning sweep's results as tables and figures, and the sparsity-versus-accuracy explorer.

* :func:`load_sweep` reads ``benchmarks/results/pruning_sweep_cpu.json`` (written by
  ``benchmarks/pruning_sweep.py``); :func:`summarize` gives mean and spread over seeds;
  :func:`goal_at_90` states whether 90% sparsity stays within one point of dense.
* :func:`accuracy_figure`, :func:`small_dense_table`, :func:`lottery_table` are what notebook 02 shows.
* :class:`PruningExplorer` (``pruning_explorer()``): pick a criterion and a granularity, slide the
  sparsity, toggle fine-tuning; see the accuracy curves with the current point, the weight-magnitude
  histogram with the threshold, the mask of a layer and the sparsity of every layer. Everything is
  precomputed (and cached on disk with :func:`labkit.cache.cached`), so a change only looks results up.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from labkit import results
from labkit.plots import COLORS, rounded, style
from labkit.utils import RESULTS_DIR

SWEEP_PATH = RESULTS_DIR / "pruning_sweep_cpu.json"
#: Human names of the sweep's methods, for legends and tables.
LABELS = {"random": "random", "magnitude": "magnitude (per layer)", "global_magnitude": "global magnitude",
          "block": "block", "structured": "structured (units removed)", "small_dense": "small dense",
          "lottery_rewind": "lottery ticket (rewind)", "lottery_reinit": "random re-init, same mask",
          "dense": "dense", "dense_long": "dense, trained longer"}


# ----------------------------------------------------------------------------------------------
# Reading and summarizing the sweep
# ----------------------------------------------------------------------------------------------

def load_sweep(path: str | Path | None = None) -> dict:
    """The sweep JSON (default: the committed ``benchmarks/results/pruning_sweep_cpu.json``)."""
    path = Path(path) if path is not None else SWEEP_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/pruning_sweep.py` to create it")
    sweep = results.read(path, "pruning_sweep")
    return {**sweep, "runs": sweep["rows"], "torch": sweep["versions"]["torch"]}  # notebook alias: remove at merge


def _check_model(sweep: dict, model: str) -> None:
    if model not in sweep["config"]["models"]:
        raise ValueError(f"model must be one of {sweep['config']['models']}, got {model!r}")


def summarize(sweep: dict, model: str = "mlp", metric: str = "test_acc") -> list[dict]:
    """Mean and sample standard deviation over seeds for every (method, fine-tuned, target sparsity).

    Each row: ``method, finetune, target_sparsity, sparsity`` (achieved share of weights removed),
    ``mean, std, n`` of ``metric`` (``"test_acc"`` or ``"val_acc"``), as fractions.
    """
    _check_model(sweep, model)
    if metric not in ("test_acc", "val_acc"):
        raise ValueError(f"metric must be 'test_acc' or 'val_acc', got {metric!r}")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in sweep["runs"]:
        if r["model"] == model:
            groups[(r["method"], r["finetune"], r["target_sparsity"])].append(r)
    rows = []
    for (method, finetune, target), runs in groups.items():
        values = np.array([r[metric] for r in runs])
        rows.append({"method": method, "finetune": finetune, "target_sparsity": target,
                     "sparsity": float(np.mean([r["sparsity"] for r in runs])),
                     "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     "n": len(values)})
    return sorted(rows, key=lambda r: (r["method"], r["finetune"], r["target_sparsity"]))


def _row(rows: list[dict], method: str, finetune: bool, target: float) -> dict | None:
    for r in rows:
        if r["method"] == method and r["finetune"] == finetune and abs(r["target_sparsity"] - target) < 1e-9:
            return r
    return None


def goal_at_90(sweep: dict, model: str = "mlp", sparsity: float = 0.9, tolerance: float = 0.01) -> dict:
    """Is fine-tuned unstructured pruning at ``sparsity`` within ``tolerance`` of dense test accuracy?

    The method (per-layer or global magnitude) is picked by *validation* accuracy, then its *test*
    accuracy is compared with the dense model's: the test split never chooses anything.
    """
    test = summarize(sweep, model, "test_acc")
    val = summarize(sweep, model, "val_acc")
    candidates = [m for m in ("magnitude", "global_magnitude") if _row(val, m, True, sparsity)]
    if not candidates:
        raise ValueError(f"the sweep has no fine-tuned magnitude run at sparsity {sparsity}")
    method = max(candidates, key=lambda m: _row(val, m, True, sparsity)["mean"])
    dense, pruned = _row(test, "dense", False, 0.0), _row(test, method, True, sparsity)
    longer = _row(test, "dense_long", True, 0.0)
    drop = dense["mean"] - pruned["mean"]
    return {"model": model, "method": method, "sparsity": sparsity, "dense": dense["mean"], "dense_std": dense["std"],
            "pruned": pruned["mean"], "pruned_std": pruned["std"], "drop_points": 100 * drop,
            "met": bool(drop <= tolerance), "seeds": pruned["n"],
            "dense_long": None if longer is None else longer["mean"],
            "dense_long_std": None if longer is None else longer["std"]}


def goal_text(goal: dict) -> str:
    """One line stating the 90% result, met or not, with the numbers."""
    verdict = "MET" if goal["met"] else "NOT met"
    change = (f"drop {goal['drop_points']:.1f} points" if goal["drop_points"] >= 0
              else f"gain {-goal['drop_points']:.1f} points")
    longer = ("" if goal.get("dense_long") is None else
              f" [dense trained as many extra epochs: {100 * goal['dense_long']:.1f} ± {100 * goal['dense_long_std']:.1f}%]")
    return (f"{goal['model']}: dense {100 * goal['dense']:.1f} ± {100 * goal['dense_std']:.1f}%, "
            f"{LABELS[goal['method']]} at {100 * goal['sparsity']:.0f}% sparsity after gradual pruning + fine-tuning "
            f"{100 * goal['pruned']:.1f} ± {100 * goal['pruned_std']:.1f}% ({goal['seeds']} seeds): "
            f"{change}{longer} -> goal (within 1 point of dense) {verdict}")


def accuracy_table(sweep: dict, model: str, methods: list[str], finetune: bool) -> str:
    """A text table: test accuracy mean ± std (%) per method (rows) and target sparsity (columns)."""
    rows = summarize(sweep, model)
    targets = sorted({r["target_sparsity"] for r in rows if r["method"] in methods and r["finetune"] == finetune})
    lines = [f"{'method':<28}" + "".join(f"{100 * t:>13.0f}%" for t in targets)]
    for m in methods:
        cells = []
        for t in targets:
            r = _row(rows, m, finetune, t)
            cells.append(f"{100 * r['mean']:>7.1f} ± {100 * r['std']:3.1f}" if r else f"{'-':>13}")
        lines.append(f"{LABELS.get(m, m):<28}" + " ".join(cells))
    if "structured" in methods or "block" in methods:
        lines.append("(columns are target sparsities; structured: share of hidden units removed, block: of the layers "
                     "the block fits; the figures plot the share of all weights removed)")
    return "\n".join(lines)


def kept_axis(fig: go.Figure) -> go.Figure:
    """x axis = share of weights kept, log scale, reversed: sparser to the right, and 90% / 95% / 99%
    sparsity (10%, 5%, 1% kept) get as much room as 0-50%."""
    fig.update_xaxes(title="weights kept (%, log scale): sparser to the right", type="log", autorange="reversed",
                     tickvals=[100, 50, 20, 10, 5, 2, 1, 0.5], ticktext=["100", "50", "20", "10", "5", "2", "1", "0.5"])
    return fig


def accuracy_figure(sweep: dict, model: str = "mlp", methods: list[str] | None = None, finetune: bool = True,
                    title: str | None = None) -> go.Figure:
    """Test accuracy (mean ± std over seeds) against the share of weights removed, one line per method."""
    rows = summarize(sweep, model)
    methods = methods or sweep["config"]["methods"]
    dense = _row(rows, "dense", False, 0.0)
    fig = go.Figure()
    for i, m in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == m and r["finetune"] == finetune), key=lambda r: r["sparsity"])
        if not pts:
            raise ValueError(f"the sweep has no runs of method {m!r} with finetune={finetune}")
        fig.add_trace(go.Scatter(x=rounded([100 * (1 - r["sparsity"]) for r in pts], 3),
                                 y=rounded([100 * r["mean"] for r in pts], 2), mode="lines+markers",
                                 error_y=dict(array=rounded([100 * r["std"] for r in pts], 2)),
                                 name=LABELS.get(m, m), line_color=COLORS[i % len(COLORS)]))
    fig.add_hline(y=round(100 * dense["mean"], 2), line_dash="dot", line_color="grey",
                  annotation_text=f"dense {100 * dense['mean']:.1f}%")
    kept_axis(fig)
    fig.update_yaxes(title="test accuracy (%)", range=[0, 100])
    tuned = "gradual pruning + fine-tuning" if finetune else "one-shot, no fine-tuning"
    return style(fig, title or f"{model.upper()} on digits: {tuned} ({len(sweep['config']['seeds'])} seeds)")


def small_dense_table(sweep: dict, model: str = "mlp") -> str:
    """Large-sparse (global magnitude, fine-tuned) against small-dense with about as many weights as it has nonzeros."""
    rows = summarize(sweep, model)
    small_runs = [r for r in sweep["runs"] if r["model"] == model and r["method"] == "small_dense"]
    targets = sorted({r["target_sparsity"] for r in small_runs})
    lines = [f"{'sparsity':>9} {'sparse nonzeros':>16} {'dense weights':>14} {'large sparse':>14} {'small dense':>14}"
             f"  {'better':<13} small-dense widths"]
    for t in targets:
        big, small = _row(rows, "global_magnitude", True, t), _row(rows, "small_dense", True, t)
        sparse_nz = int(np.mean([r["nonzeros"] for r in sweep["runs"] if r["model"] == model
                                 and r["method"] == "global_magnitude" and r["finetune"] and r["target_sparsity"] == t]))
        run = next(r for r in small_runs if r["target_sparsity"] == t)
        # "better" only when the means differ by more than the larger spread
        gap, spread = big["mean"] - small["mean"], max(big["std"], small["std"])
        better = "large sparse" if gap > spread else "small dense" if -gap > spread else "within spread"
        lines.append(f"{100 * t:>8.0f}% {sparse_nz:>16} {run['nonzeros']:>14} {100 * big['mean']:>8.1f} ± {100 * big['std']:.1f}"
                     f" {100 * small['mean']:>8.1f} ± {100 * small['std']:.1f}  {better:<13} {tuple(run['widths'])}")
    return "\n".join(lines)


def lottery_table(sweep: dict, model: str = "mlp") -> str:
    """Lottery tickets: survivors rewound to epoch 1 vs re-initialised at random, same mask, same training."""
    rows = summarize(sweep, model)
    targets = sorted({r["target_sparsity"] for r in rows if r["method"] == "lottery_rewind"})
    lines = [f"{'sparsity':>9} {'rewind':>14} {'re-init':>14}"]
    for t in targets:
        a, b = _row(rows, "lottery_rewind", True, t), _row(rows, "lottery_reinit", True, t)
        lines.append(f"{100 * t:>8.0f}% {100 * a['mean']:>8.1f} ± {100 * a['std']:.1f} {100 * b['mean']:>8.1f} ± {100 * b['std']:.1f}")
    return "\n".join(lines)


def nm_table(sweep: dict, model: str = "mlp") -> str:
    """N:M patterns (one-shot), test accuracy mean ± std with and without fine-tuning."""
    rows = summarize(sweep, model)
    lines = [f"{'pattern':>8} {'removed':>8} {'no fine-tuning':>15} {'fine-tuned':>12}"]
    for n, m in sweep["config"]["nm_patterns"]:
        raw, tuned = _row(rows, f"{n}:{m}", False, 1 - n / m), _row(rows, f"{n}:{m}", True, 1 - n / m)
        lines.append(f"{f'{n}:{m}':>8} {100 * raw['sparsity']:>7.1f}% {100 * raw['mean']:>9.1f} ± {100 * raw['std']:.1f} "
                     f"{100 * tuned['mean']:>6.1f} ± {100 * tuned['std']:.1f}")
    return "\n".join(lines)


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


# ----------------------------------------------------------------------------------------------
# The explorer
# ----------------------------------------------------------------------------------------------

#: (granularity, criterion) -> the sweep's method name. Block and structured rank by L1 norm (magnitude).
COMBINATIONS = {("unstructured", "magnitude"): "magnitude", ("unstructured", "global magnitude"): "global_magnitude",
                ("unstructured", "random"): "random", ("block", "magnitude"): "block",
                ("structured", "magnitude"): "structured"}
GRANULARITIES = ("unstructured", "block", "structured")
HIST_BINS = 40
#: Bump when the precomputed tables change shape, so stale cache entries are never read.
EXPLORER_VERSION = 2


def _unpack(entry: dict) -> np.ndarray:
    bits = np.frombuffer(base64.b64decode(entry["bits"]), dtype=np.uint8)
    shape = entry["shape"]
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(shape).astype(bool)


def _precompute(sweep: dict, model_kind: str) -> dict:
    """Every number the explorer can show, keyed by (method, sparsity, finetune)."""
    from labkit import models, prune, train

    cfg = sweep["config"]
    seed = cfg["explorer"]["seed"]
    dense = train.pretrained(model_kind, seed=seed, epochs=cfg["dense"]["epochs"], lr=cfg["dense"]["lr"],
                             data_seed=cfg["data_seed"])
    weights = {n: m.weight.detach().clone() for n, m in models.prunable_layers(dense).items()}
    grid = [0.0] + list(cfg["sparsities"])
    test = summarize(sweep, model_kind, "test_acc")
    edges = {n: np.linspace(0.0, float(w.abs().max()), HIST_BINS + 1) for n, w in weights.items()}
    table: dict = {"grid": grid, "layers": list(weights), "edges": {n: rounded(e, 4) for n, e in edges.items()},
                   "all_counts": {n: np.histogram(w.abs().flatten().numpy(), edges[n])[0].tolist() for n, w in weights.items()},
                   "shapes": {n: list(prune._as_matrix(w).shape) for n, w in weights.items()},
                   "curves": {}, "entries": {}, "seeds": list(cfg["seeds"])}
    for method in COMBINATIONS.values():
        for finetune in (False, True):
            pts = [(0.0, _row(test, "dense", False, 0.0))] + [(s, _row(test, method, finetune, s)) for s in cfg["sparsities"]]
            table["curves"][(method, finetune)] = {"x": rounded([100 * (1 - r["sparsity"]) for _, r in pts], 3),
                                                   "y": rounded([100 * r["mean"] for _, r in pts], 2),
                                                   "err": rounded([100 * r["std"] for _, r in pts], 2)}
        for s in grid:
            for finetune in (False, True):
                if s == 0.0:
                    masks = {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}
                elif finetune:
                    masks = {n: _unpack(e) for n, e in sweep["explorer_masks"][f"{method}|{s}"].items()}
                else:
                    trial = models.build(model_kind, seed=None)
                    trial.load_state_dict(dense.state_dict())
                    options = {"block": cfg["block"][model_kind], "skip_incompatible": True} if method == "block" else {}
                    got = prune.prune_model(trial, method, s, seed=seed, **options)
                    masks = {n: got[n].numpy().astype(bool) if n in got else np.ones(w.shape, dtype=bool)
                             for n, w in weights.items()}
                entry = {"layer_sparsity": {n: round(100 * (1 - m.mean()), 2) for n, m in masks.items()},
                         "masks": {n: m.reshape(m.shape[0], -1) for n, m in masks.items()},
                         "kept_counts": {n: np.histogram(weights[n].abs().numpy()[masks[n]], edges[n])[0].tolist()
                                         for n in weights},
                         "threshold": {}}
                if method in ("magnitude", "global_magnitude") and not finetune and s > 0:
                    for n in weights:
                        kept = weights[n].abs().numpy()[masks[n]]
                        table_thr = float(kept.min()) if kept.size else None
                        entry["threshold"][n] = None if table_thr is None else round(table_thr, 4)
                acc = _row(test, "dense", False, 0.0) if s == 0.0 else _row(test, method, finetune, s)
                entry["point"] = (round(100 * (1 - acc["sparsity"]), 3), round(100 * acc["mean"], 2))
                entry["removed"] = round(100 * acc["sparsity"], 2)
                table["entries"][(method, s, finetune)] = entry
    return table


class PruningExplorer(widgets.VBox):
    """Criterion, granularity, sparsity and fine-tuning controls over four linked figures.

    Attributes (drive them from Python): ``granularity``, ``criterion``, ``sparsity`` (a
    SelectionSlider over the swept sparsities, in percent), ``finetune`` (ToggleButton), ``layer``;
    figures ``curve_fig``, ``hist_fig``, ``mask_fig``, ``layers_fig``; ``last_update_ms``.
    """

    def __init__(self, sweep: dict | None = None, model: str = "mlp"):
        from labkit import cache

        sweep = load_sweep() if sweep is None else sweep
        if not isinstance(sweep, dict) or "runs" not in sweep:
            raise TypeError("sweep must be the dict load_sweep() returns (or None for the committed one)")
        if model != sweep["config"]["explorer"]["model"]:
            raise ValueError(f"the sweep stores fine-tuned masks for model {sweep['config']['explorer']['model']!r} "
                             f"only, got model={model!r}")
        digest = hashlib.sha256(json.dumps(sweep, sort_keys=True).encode()).hexdigest()[:16]
        self.table = cache.cached("pruning_explorer", EXPLORER_VERSION, {"sweep": digest, "model": model},
                                  lambda: _precompute(sweep, model))
        self.model = model
        self.last_update_ms = 0.0
        grid = self.table["grid"]
        self.granularity = widgets.Dropdown(options=GRANULARITIES, value="unstructured", description="granularity")
        self.criterion = widgets.Dropdown(options=self._criteria("unstructured"), value="magnitude", description="criterion")
        self.sparsity = widgets.SelectionSlider(options=[(f"{100 * s:g}%", s) for s in grid], value=0.9,
                                                description="sparsity", continuous_update=True)
        self.finetune = widgets.ToggleButton(value=True, description="fine-tuned", tooltip="gradual pruning + fine-tuning")
        self.layer = widgets.Dropdown(options=self.table["layers"], value=self.table["layers"][0], description="layer")
        self.status = widgets.HTML()
        self._build_figures()
        for control in (self.criterion, self.sparsity, self.finetune, self.layer):
            control.observe(lambda _change: self.update(), names="value")
        self.granularity.observe(self._on_granularity, names="value")
        self.update()
        controls = widgets.HBox([widgets.VBox([self.granularity, self.criterion]),
                                 widgets.VBox([self.sparsity, self.layer]), widgets.VBox([self.finetune, self.status])])
        super().__init__([controls, widgets.HBox([self.curve_fig, self.hist_fig]),
                          widgets.HBox([self.mask_fig, self.layers_fig])])

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
        style(self.layers_fig, "sparsity per layer", height=330)
        self.layers_fig.update_yaxes(title="weights removed (%)", range=[0, 100])
        for fig in (self.curve_fig, self.hist_fig, self.mask_fig, self.layers_fig):
            fig.update_layout(width=480)

    def current(self) -> dict:
        """The precomputed entry for the current controls (accuracy point, masks, counts, threshold)."""
        return self.table["entries"][(self.method, self.sparsity.value, bool(self.finetune.value))]

    def update(self) -> None:
        """Redraw every figure from the precomputed tables; records ``last_update_ms``."""
        start = time.perf_counter()
        entry, layer, method = self.current(), self.layer.value, self.method
        tuned, raw = self.table["curves"][(method, True)], self.table["curves"][(method, False)]
        with self.curve_fig.batch_update():
            for trace, c in zip(self.curve_fig.data[:2], (tuned, raw)):
                trace.x, trace.y, trace.error_y = c["x"], c["y"], dict(array=c["err"])
            self.curve_fig.data[2].x, self.curve_fig.data[2].y = [entry["point"][0]], [entry["point"][1]]
        centers = rounded((np.array(self.table["edges"][layer][:-1]) + np.array(self.table["edges"][layer][1:])) / 2, 4)
        threshold = entry["threshold"].get(layer)
        with self.hist_fig.batch_update():
            self.hist_fig.data[0].x, self.hist_fig.data[0].y = centers, self.table["all_counts"][layer]
            self.hist_fig.data[1].x, self.hist_fig.data[1].y = centers, entry["kept_counts"][layer]
            self.hist_fig.layout.shapes = [] if threshold is None else [dict(
                type="line", x0=threshold, x1=threshold, yref="paper", y0=0, y1=1, line=dict(color=COLORS[3], dash="dash"))]
            self.hist_fig.layout.title.text = (f"|w| of {layer}" + (f": threshold {threshold:.3f}" if threshold is not None
                                                                   else ": no single threshold for this choice"))
        with self.mask_fig.batch_update():
            # a uint8 array travels to the browser as compact binary, not a JSON list of 32k numbers
            self.mask_fig.data[0].z = np.ascontiguousarray(entry["masks"][layer][::-1], dtype=np.uint8)  # row 0 at the top
            rows, cols = self.table["shapes"][layer]
            self.mask_fig.layout.title.text = f"mask of {layer} ({rows} x {cols}), blue = kept"
        with self.layers_fig.batch_update():
            self.layers_fig.data[0].x = list(entry["layer_sparsity"])
            self.layers_fig.data[0].y = list(entry["layer_sparsity"].values())
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        self.status.value = (f"<b>{LABELS[method]}</b>, {entry['removed']:.1f}% removed: "
                             f"test accuracy {entry['point'][1]:.1f}% (mean of {len(self.table['seeds'])} seeds)")


def pruning_explorer(sweep: dict | None = None, model: str = "mlp") -> PruningExplorer:
    """The explorer over the committed sweep (or ``sweep``), for the model whose masks the sweep stored."""
    return PruningExplorer(sweep, model)
