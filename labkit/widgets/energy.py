"""The energy notebook's models, figures and widgets.

* :func:`model_zoo` - the digit classifiers the earlier notebooks built (dense MLP, unstructured
  magnitude-pruned, structurally pruned with units physically removed, and a small Mixture-of-Experts),
  trained once and cached on disk.
* :func:`energy_rows` - per model: accuracy, parameters and *estimated* joules per inference (at
  several batch sizes) and for training, from :func:`labkit.energy.estimate`.
* :func:`pareto_figure` and :func:`energy_labels` - accuracy against joules per inference, and an
  "energy label" card per model. Every number on them says ESTIMATED.
* :class:`DeploymentCalculator` - requests per day, joules per request, PUE, region, idle share and
  price in; kWh, tCO2e and cost per year out, with every assumption written below.
"""
from __future__ import annotations

import copy
import csv
import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch import nn

from labkit import carbon, energy, results
from labkit.data import Split
from labkit.models import MoEClassifier
from labkit.plots import COLORS, rounded, style

#: Bump when the zoo's training recipe changes, so stale cached weights are never read.
ZOO_VERSION = 1


@dataclass
class ZooModel:
    """One trained model of the zoo and how it was made."""

    name: str
    description: str
    model: nn.Module
    recipe: list[tuple[nn.Module, int]]  # (architecture trained, optimizer steps) per phase, pretraining included

    @property
    def train_steps(self) -> int:
        """Optimizer steps of the whole recipe."""
        return sum(steps for _, steps in self.recipe)


def _check_zoo_and_batches(zoo: dict, test: Split, batch_sizes: tuple[int, ...]) -> None:
    if not zoo:
        raise ValueError("zoo is empty: build it with model_zoo()")
    for b in batch_sizes:
        energy._check_count("batch size", b)
        if b > len(test):
            raise ValueError(f"batch size {b} is larger than the test split ({len(test)} examples)")


def _nonzero(model: nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def _active(model: nn.Module) -> int:
    """Parameters one input is multiplied with: zeros stored densely still count (they are multiplied)."""
    if isinstance(model, MoEClassifier):
        return model.active_parameters()
    return sum(p.numel() for p in model.parameters())


def model_zoo(data_seed: int = 0, seed: int = 0, sparsity: float = 0.9, removed: float = 0.75,
              finetune_epochs: int = 10) -> dict[str, ZooModel]:
    """Dense, unstructured-pruned, structurally pruned and MoE digit classifiers, cached on disk.

    * ``dense``: :func:`labkit.train.pretrained` MLP 64-256-128-10 (30 epochs).
    * ``unstructured``: the dense model, ``sparsity`` of its weights zeroed by global magnitude,
      fine-tuned ``finetune_epochs``; stored dense (zeros are still multiplied).
    * ``structured``: ``removed`` of the hidden units physically removed (:func:`labkit.prune.remove_units`),
      fine-tuned ``finetune_epochs``: a smaller dense model.
    * ``moe``: :class:`MoEClassifier` with 4 experts, top-1, trained 30 epochs.
    """
    from labkit import cache, data, prune, train
    from labkit.models import MLP
    from labkit.utils import DEFAULT_THREADS

    split = data.digits(data_seed, flat=True).train
    steps_per_epoch = train.steps_per_epoch(split)
    dense_steps = train.DEFAULT_EPOCHS * steps_per_epoch
    dense = train.pretrained("mlp", seed=seed, data_seed=data_seed)
    config = {"data_seed": data_seed, "seed": seed, "sparsity": sparsity, "removed": removed,
              "finetune_epochs": finetune_epochs, "torch": torch.__version__.split("+")[0]}

    def fit() -> dict:
        unstructured = copy.deepcopy(dense)
        prune.prune_and_finetune(unstructured, split, "global_magnitude", sparsity, schedule="one_shot",
                                 epochs=finetune_epochs, lr=1e-3, seed=seed)
        prune.make_permanent(unstructured)
        structured = prune.remove_units(dense, removed)
        train.train(structured, split, epochs=finetune_epochs, lr=1e-3, seed=seed)
        moe = MoEClassifier(seed=seed)
        train.train(moe, split, epochs=train.DEFAULT_EPOCHS, seed=seed)
        return {"unstructured": unstructured.state_dict(), "structured": structured.state_dict(),
                "structured_hidden": structured.hidden, "moe": moe.state_dict()}

    states = cache.cached("energy_zoo", ZOO_VERSION, config, fit, threads=DEFAULT_THREADS)
    unstructured = copy.deepcopy(dense)
    unstructured.load_state_dict(states["unstructured"])
    structured = MLP(64, states["structured_hidden"], 10)
    structured.load_state_dict(states["structured"])
    moe = MoEClassifier(seed=seed)
    moe.load_state_dict(states["moe"])
    for m in (dense, unstructured, structured, moe):
        m.eval()
    hidden = "-".join(map(str, structured.hidden))
    ft = finetune_epochs * steps_per_epoch
    return {
        "dense": ZooModel("dense", "MLP 64-256-128-10", dense, [(dense, dense_steps)]),
        "unstructured": ZooModel("unstructured", f"dense MLP, {sparsity:.0%} of weights zeroed (global magnitude), "
                                 "stored dense", unstructured, [(dense, dense_steps), (dense, ft)]),
        "structured": ZooModel("structured", f"MLP 64-{hidden}-10: {removed:.0%} of hidden units removed",
                               structured, [(dense, dense_steps), (structured, ft)]),
        "moe": ZooModel("moe", "4 SwiGLU experts, top-1 routing", moe, [(moe, dense_steps)]),
    }


def _train_step(model: nn.Module, batch: Split):
    """A closure doing one Adam step on a private copy of ``model`` (the original is untouched)."""
    twin = copy.deepcopy(model).train()
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(twin(batch.x), batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def energy_rows(zoo: dict[str, ZooModel], test: Split, train_split: Split,
                batch_sizes: tuple[int, ...] = (1, 64)) -> list[dict]:
    """Per model: test accuracy, parameters, estimated joules per inference and for its training recipe.

    Every joule here is ``estimated`` (:func:`labkit.energy.estimate`): deterministic, for comparing
    models, not the joules a real machine draws.
    """
    from labkit.train import DEFAULT_BATCH_SIZE, evaluate

    _check_zoo_and_batches(zoo, test, batch_sizes)
    rows = []
    train_batch = Split(train_split.x[:DEFAULT_BATCH_SIZE], train_split.y[:DEFAULT_BATCH_SIZE])
    for entry in zoo.values():
        model = entry.model
        row = {"name": entry.name, "description": entry.description, "accuracy": evaluate(model, test),
               "parameters": sum(p.numel() for p in model.parameters()), "nonzero": _nonzero(model),
               "active": _active(model), "kind": "estimated"}
        with torch.no_grad():
            for b in batch_sizes:
                x = test.x[:b]
                row[f"j_per_inference_b{b}"] = energy.estimate(lambda: model(x), items=b).joules_per_item
        row["train_steps"] = entry.train_steps
        row["j_training"] = sum(energy.estimate(_train_step(arch, train_batch)).joules * steps
                                for arch, steps in entry.recipe)
        rows.append(row)
    return rows


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
    front = pareto_front(list(zip(xs, ys)))
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


class DeploymentCalculator(widgets.VBox):
    """Serve a model for a year: energy, carbon and cost, with every assumption shown.

    Controls (attributes): ``preset``, ``requests``, ``joules``, ``pue``, ``region``, ``idle_share``, ``price``.
    ``presets`` maps a name to ``(joules_per_request, kind)``; choosing one sets both, and the kind
    is shown in the assumptions. A value typed by hand is labelled ``assumed``.
    Outputs: ``result`` (an HTML widget with the numbers and assumptions) and ``figure`` (tCO2e per year
    in every bundled region, the chosen one highlighted). ``deployment`` is the current
    :class:`labkit.carbon.Deployment`.
    """

    def __init__(self, joules_per_request: float = 1.0, requests_per_day: float = 1e6, region: str = "USA",
                 pue: float = carbon.PUE_UPTIME_2023, idle_share: float = 0.3, price_per_kwh: float = 0.15,
                 energy_kind: str = "assumed", presets: dict[str, tuple[float, str]] | None = None):
        # Validate once through the calculator itself: bad input fails here, with its message.
        carbon.deployment(requests_per_day, joules_per_request, region, pue=pue, idle_share=idle_share,
                          price_per_kwh=price_per_kwh, energy_kind=energy_kind)
        self.presets = dict(presets or {})
        for name, preset in self.presets.items():
            if not (isinstance(preset, tuple) and len(preset) == 2 and preset[1] in carbon.ENERGY_KINDS):
                raise ValueError(f"presets[{name!r}] must be (joules_per_request, kind) with kind in "
                                 f"{carbon.ENERGY_KINDS}, got {preset!r}")
        self.energy_kind = energy_kind
        self._grid = carbon.grid_table()
        self._order = carbon.regions()
        style_ = {"description_width": "150px"}
        layout = widgets.Layout(width="460px")
        self.requests = widgets.FloatLogSlider(value=requests_per_day, base=10, min=0, max=10, step=0.1,
                                               description="requests per day", style=style_, layout=layout)
        self.joules = widgets.BoundedFloatText(value=joules_per_request, min=1e-12, max=1e9,
                                               description="joules per request", style=style_, layout=layout)
        self.preset = widgets.Dropdown(options=["(type a value)"] + list(self.presets), description="from model",
                                       style=style_, layout=layout)
        self.pue = widgets.FloatSlider(value=pue, min=1.0, max=2.5, step=0.01, description="PUE", style=style_,
                                       layout=layout)
        self.region = widgets.Dropdown(options=[(f"{self._grid[c].name} ({c})", c) for c in self._order],
                                       value=carbon.intensity(region).region, description="region", style=style_,
                                       layout=layout)
        self.idle_share = widgets.FloatSlider(value=idle_share, min=0.0, max=0.9, step=0.05,
                                              description="idle share", style=style_, layout=layout)
        self.price = widgets.BoundedFloatText(value=price_per_kwh, min=0.0, max=10.0, step=0.01,
                                              description="price per kWh", style=style_, layout=layout)
        self.result = widgets.HTML()
        self.figure = go.FigureWidget()
        self.figure.add_bar(x=[f"{c}" for c in self._order], y=[0.0] * len(self._order),
                            marker_color=[COLORS[0]] * len(self._order))
        style(self.figure, "tCO2e per year if served from each region", height=320)
        self.figure.update_yaxes(title="tCO2e per year")
        self.joules.observe(self._joules_typed, names="value")
        for control in (self.requests, self.joules, self.pue, self.region, self.idle_share, self.price):
            control.observe(self._update, names="value")
        self.preset.observe(self._use_preset, names="value")
        self.deployment: carbon.Deployment | None = None
        self._update()
        super().__init__([widgets.HTML("<b>Deployment calculator</b>"), self.preset, self.joules, self.requests,
                          self.idle_share, self.pue, self.region, self.price, self.result, self.figure])

    def _use_preset(self, change) -> None:
        if change["new"] in self.presets:
            joules, kind = self.presets[change["new"]]
            self.energy_kind = kind
            if self.joules.value == joules:
                self._update()
            self.joules.value = joules  # triggers _update
        else:
            self.energy_kind = "assumed"
            self._update()

    def _joules_typed(self, change) -> None:
        """A value typed by hand is an assumption, whatever preset it started from."""
        preset = self.presets.get(self.preset.value)
        if preset is not None and change["new"] != preset[0]:
            self.energy_kind = "assumed"
            self.preset.value = "(type a value)"

    def _calc(self, region: str) -> carbon.Deployment:
        return carbon.deployment(self.requests.value, self.joules.value, region, pue=self.pue.value,
                                 idle_share=self.idle_share.value, price_per_kwh=self.price.value,
                                 energy_kind=self.energy_kind)

    def _update(self, change=None) -> None:
        self.deployment = d = self._calc(self.region.value)
        items = "".join(f"<li>{html.escape(a)}</li>" for a in d.assumptions())
        self.result.value = (f"<div style='font-family:sans-serif'><b>{html.escape(d.summary())}</b>"
                             f"<br>Assumptions:<ul>{items}</ul></div>")
        per_region = [self._calc(c).tco2e_per_year for c in self._order]
        with self.figure.batch_update():
            self.figure.data[0].y = rounded(per_region, 6)
            self.figure.data[0].marker.color = [COLORS[3] if c == self.region.value else COLORS[0]
                                                for c in self._order]


def deployment_calculator(joules_per_request: float = 1.0, **kwargs) -> DeploymentCalculator:
    """A :class:`DeploymentCalculator` starting at ``joules_per_request`` (other settings as keywords)."""
    return DeploymentCalculator(joules_per_request, **kwargs)


def batching_figure(zoo: dict[str, ZooModel], test: Split, batch_sizes: tuple[int, ...] = (1, 4, 16, 64, 256)) -> go.Figure:
    """Estimated joules per inference against batch size, one line per model (log-log).

    Weights are read once per batch, so their DRAM cost is shared by every input in it.
    """
    _check_zoo_and_batches(zoo, test, batch_sizes)
    fig = go.Figure()
    with torch.no_grad():
        for entry in zoo.values():
            ys = [energy.estimate(lambda: entry.model(test.x[:b]), items=b).joules_per_item for b in batch_sizes]
            fig.add_scatter(x=list(batch_sizes), y=rounded(ys, 12), mode="lines+markers", name=entry.name)
    fig.update_xaxes(type="log", title="batch size (inputs per forward pass)")
    fig.update_yaxes(type="log", title="joules per inference (ESTIMATED)")
    return style(fig, "Batching shares the weight traffic (estimated, Horowitz 45 nm model)")


def published_figures() -> list[dict]:
    """Published energy figures for context, each with its source (``labkit/tables/published_energy.csv``)."""
    text = resources.files("labkit").joinpath("tables/published_energy.csv").read_text()
    return [dict(row, value=float(row["value"])) for row in csv.DictReader(text.splitlines())]


#: Where benchmark scripts write their JSON (present in a source checkout).
from labkit.utils import RESULTS_DIR  # noqa: E402


#: PyTorch's own sparse paths measured on an H200 by ``benchmarks/pytorch_baselines.py``; its rows in
#: section "energy" are NVML joules (the same file notebook 03 reads for timings).
PYTORCH_BASELINES = RESULTS_DIR / "pytorch_baselines_h200_2026-11-28.json"
PYTORCH_BASELINES_METHOD = ("NVIDIA H200, 2026-11-28, torch 2.11: NVML total-energy counter read before and after a "
                            ">= 2 s loop of the operation, CUDA synchronized at both edges; whole board, idle power "
                            "not subtracted")


def gpu_energy_results(results_dir: Path | str = RESULTS_DIR) -> dict[str, dict]:
    """Measured-GPU energy files written by ``benchmarks/energy.py`` (``energy_*.json``), by file name."""
    folder = Path(results_dir)
    if not folder.is_dir():
        return {}
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("energy_*.json"))}


def pytorch_baseline_energy(path: Path | str = PYTORCH_BASELINES) -> list[dict]:
    """The measured energy rows (dense, PyTorch's BSR kernel) of the committed PyTorch-baseline file."""
    path = Path(path)
    if not path.exists():
        return []
    return [r for r in results.read(path, "pytorch_baselines")["rows"] if r["section"] == "energy"
            and "joules_per_op" in r]


def gpu_energy_summary(results: dict[str, dict] | None = None, baselines: list[dict] | None = None) -> str:
    """The measured GPU joules in the committed results files, as text lines with their origin."""
    results = gpu_energy_results() if results is None else results
    baselines = pytorch_baseline_energy() if baselines is None else baselines
    lines = []
    if baselines:
        lines.append(f"{PYTORCH_BASELINES.name}: MEASURED (GPU board), {PYTORCH_BASELINES_METHOD}")
        for r in baselines:
            lines.append(f"  {r['label']:<40} {r['joules_per_op']:.3f} J per product at {r['avg_watts']:.0f} W")
        if len(baselines) == 2:
            lines.append(f"  dense / sparse: {baselines[0]['joules_per_op'] / baselines[1]['joules_per_op']:.1f}x"
                         " fewer joules with the sparse kernel")
        lines.append("  origin: benchmarks/pytorch_baselines.py (PyTorch's own kernels, not the lab's)")
    for name, res in results.items():  # written by benchmarks/energy.py
        lines.append(f"{name}: MEASURED by {res['script']} on {res['gpu']}, {res['date']}")
        for r in res["rows"]:
            lines.append(f"  {r['tokens']:>5} tokens  {r['case']:<22} {r['joules_per_call']:.4g} J per call "
                         f"({r['kind']}, {r['scope']}), {r.get('energy_ratio_vs_dense', float('nan')):.2f}x "
                         "fewer joules than dense")
    if not results:
        lines.append("The lab's own kernels have no measured GPU joules yet: run `python benchmarks/energy.py` on an "
                     "NVIDIA GPU and commit benchmarks/results/energy_<gpu>.json.")
    return "\n".join(lines)


def rows_table(rows: list[dict]) -> str:
    """The zoo's rows as aligned text (what nbval compares): every joule labelled estimated."""
    batches = sorted(int(k.rsplit("b", 1)[1]) for k in rows[0] if k.startswith("j_per_inference_b"))
    head = f"{'model':<13}{'accuracy':>9}{'params':>8}{'nonzero':>8}{'active':>8}" + "".join(
        f"{'J/inf b' + str(b):>12}" for b in batches) + f"{'J train':>10}"
    lines = [head + "   (all joules ESTIMATED)"]
    for r in rows:
        lines.append(f"{r['name']:<13}{100 * r['accuracy']:>8.1f}%{r['parameters']:>8,}{r['nonzero']:>8,}{r['active']:>8,}"
                     + "".join(f"{r[f'j_per_inference_b{b}']:>12.3g}" for b in batches) + f"{r['j_training']:>10.3g}")
    return "\n".join(lines)


def measure_zoo(zoo: dict[str, ZooModel], test: Split, batch_sizes: tuple[int, ...] = (1, 64),
                min_window_s: float = 0.2) -> str:
    """Measure every model with :func:`labkit.energy.measure` on this machine; text lines with every label.

    Machine-dependent: wall time is measured; joules are whatever the best available meter gives
    (estimated where there is no sensor) and say so.
    """
    lines = []
    with torch.no_grad():
        for entry in zoo.values():
            for b in batch_sizes:
                x = test.x[:b]
                with energy.measure(items=b, min_window_s=min_window_s) as m:
                    report = m.run(lambda: entry.model(x), warmup=3)
                lines.append(f"{entry.name:<13} batch {b:>3}: {1e6 * report.wall_s / (b * report.repeats):8.2f} us per "
                             f"inference (MEASURED wall time, {report.repeats} repeats); {report.joules_per_item:.3g} J per "
                             f"inference {report.kind.upper()} ({report.primary.scope})")
    return "\n".join(lines)


def region_figure(joules: float, pue: float = 1.0) -> go.Figure:
    """kgCO2e of the same ``joules`` in every bundled region (cleanest first)."""
    kg = carbon.by_region(joules, pue=pue)
    grid = carbon.grid_table()
    fig = go.Figure(go.Bar(x=[f"{grid[c].name} ({grid[c].year})" for c in kg], y=rounded(list(kg.values()), 9),
                           marker_color=COLORS[0]))
    fig.update_yaxes(title="kgCO2e")
    return style(fig, f"The same {joules:.3g} J (PUE {pue:g}) in each region's grid")
