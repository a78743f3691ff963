"""Notebook 05: the zoo's energy rows (experiments), Pareto chart and labels (figures), the deployment calculator."""
from __future__ import annotations

import time

import pytest
import torch

from labkit import carbon, data
from labkit.experiments import energy_zoo as ez
from labkit.figures import energy as fe
from labkit.models import MLP, MoEClassifier
from labkit.widgets import energy as we


@pytest.fixture(scope="module")
def rows():
    ds = data.digits(0, flat=True)
    dense, small = MLP(seed=0), MLP(hidden=(64, 32), seed=0)
    zoo = {"dense": ez.ZooModel("dense", "MLP 64-256-128-10", dense, [(dense, 3)]),
           "structured": ez.ZooModel("structured", "MLP 64-64-32-10", small, [(dense, 3), (small, 2)]),
           "moe": ez.ZooModel("moe", "4 experts", MoEClassifier(seed=0), [(MoEClassifier(seed=0), 3)])}
    return ez.energy_rows(zoo, ds.test, ds.train, batch_sizes=(1, 8))


def test_rows_are_estimated_and_ordered_by_work(rows):
    by = {r["name"]: r for r in rows}
    assert all(r["kind"] == "estimated" for r in rows)
    assert by["structured"]["j_per_inference_b1"] < by["dense"]["j_per_inference_b1"]
    # Batching spreads the weight reads over more inputs: fewer joules per inference.
    assert all(r["j_per_inference_b8"] < r["j_per_inference_b1"] for r in rows)
    assert by["moe"]["active"] < by["moe"]["parameters"]
    assert by["structured"]["train_steps"] == 5
    assert by["structured"]["j_training"] > 0.6 * by["dense"]["j_training"]  # it pays for the dense pretraining


def test_energy_rows_bad_input():
    ds = data.digits(0, flat=True)
    with pytest.raises(ValueError, match="zoo is empty"):
        ez.energy_rows({}, ds.test, ds.train)
    m = MLP(seed=0)
    with pytest.raises(ValueError, match="larger than the test split"):
        ez.energy_rows({"d": ez.ZooModel("d", "", m, [(m, 1)])}, ds.test, ds.train, batch_sizes=(10_000,))


def test_pareto_front():
    pts = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 90.0)]
    assert fe.pareto_front(pts) == [3, 0, 1]


def test_pareto_figure_and_labels(rows):
    fig = fe.pareto_figure(rows, batch=1)
    names = [t.name for t in fig.data]
    assert names[0] == "Pareto front" and set(names[1:]) == {"dense", "structured", "moe"}
    assert "ESTIMATED" in fig.layout.xaxis.title.text and fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="j_per_inference_b64"):
        fe.pareto_figure(rows, batch=64)
    cards = fe.energy_labels(rows, "dense", batch=1)
    assert cards.count("ESTIMATED") == 3 and "1.00x dense" in cards
    with pytest.raises(ValueError, match="reference must be one of"):
        fe.energy_labels(rows, "sparse")


def test_grade():
    assert [fe.grade(r) for r in (0.1, 0.4, 0.7, 1.0, 3.0)] == ["A", "B", "C", "D", "E"]
    with pytest.raises(ValueError, match="ratio"):
        fe.grade(-1.0)


def test_deployment_calculator_driven_from_python():
    calc = we.deployment_calculator(2.0, requests_per_day=1e5, region="FRA",
                                    presets={"dense": (5.0, "estimated"), "gpu": (0.2, "measured")})
    assert "(assumed)" in calc.result.value
    assert calc.deployment.grid.region == "FRA"
    before = list(calc.figure.data[0].y)
    start = time.perf_counter()
    calc.joules.value = 4.0
    seconds = time.perf_counter() - start
    print(f"deployment calculator update: {seconds * 1000:.1f} ms")
    after = list(calc.figure.data[0].y)
    assert after != before and after[0] == pytest.approx(2 * before[0], rel=1e-2)  # 3 significant figures
    calc.region.value = "POL"
    colors = list(calc.figure.data[0].marker.color)
    assert colors[carbon.regions().index("POL")] != colors[carbon.regions().index("FRA")]
    assert "Poland" in calc.result.value and "PUE" in calc.result.value and "idle share" in calc.result.value
    calc.preset.value = "dense"
    assert calc.joules.value == 5.0 and calc.deployment.joules_per_request == 5.0
    assert "(estimated)" in calc.result.value
    calc.preset.value = "gpu"
    assert calc.deployment.energy_kind == "measured" and "(measured)" in calc.result.value
    calc.joules.value = 0.3  # typed by hand: an assumption now
    assert calc.deployment.energy_kind == "assumed" and calc.preset.value == "(type a value)"
    calc.preset.value = "dense"
    expected = carbon.deployment(1e5, 5.0, "POL", pue=calc.pue.value, idle_share=calc.idle_share.value,
                                 price_per_kwh=calc.price.value)
    assert calc.deployment.tco2e_per_year == pytest.approx(expected.tco2e_per_year)


def test_deployment_calculator_bad_input():
    with pytest.raises(ValueError, match="unknown region"):
        we.deployment_calculator(1.0, region="Narnia")
    with pytest.raises(ValueError, match="joules_per_request"):
        we.deployment_calculator(0.0)
    with pytest.raises(ValueError, match=r"presets\['x'\] must be"):
        we.deployment_calculator(1.0, presets={"x": 3.0})


def test_moe_classifier_shapes_and_active_parameters():
    m = MoEClassifier(seed=0)
    assert m(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert m.active_parameters() < sum(p.numel() for p in m.parameters())
    with pytest.raises(ValueError, match="seed"):
        MoEClassifier(seed=-1)


def test_gpu_energy_summary_labels_baselines_and_missing_lab_measurements(tmp_path):
    baselines = [{"section": "energy", "label": "dense", "joules_per_op": 1.2, "avg_watts": 700.0},
                 {"section": "energy", "label": "bsr", "joules_per_op": 0.4, "avg_watts": 650.0}]
    text = fe.gpu_energy_summary(results={}, baselines=baselines)
    assert "MEASURED" in text and "3.0x fewer joules" in text and "not the lab's" in text
    assert "no measured GPU joules yet" in text
    lab = {"energy_gpu.json": {"script": "benchmarks/energy.py", "gpu": "GPU X", "date": "2026-01-01",
                               "rows": [{"M": 16, "label": "lab bsr", "joules_per_call": 0.1, "kind": "measured",
                                         "scope": "GPU board", "energy_ratio_vs_dense": 7.0}]}}
    text = fe.gpu_energy_summary(results=lab, baselines=[])
    assert "MEASURED by benchmarks/energy.py on GPU X" in text and "7.00x fewer joules" in text
    assert "no measured GPU joules yet" not in text
    # The committed baseline file holds exactly the two energy rows PyTorch measured.
    energy_rows = fe.pytorch_baseline_energy()
    assert [r["label"] for r in energy_rows] == ["dense 8192^3 bf16", "torch bsr_dense_mm density 0.1 bs64"]
    assert [(r["op"], r["density"], r["block"]) for r in energy_rows] == [("matmul", 1.0, None),
                                                                          ("bsr_dense_mm", 0.1, 64)]
    assert fe.pytorch_baseline_energy(tmp_path / "missing.json") == []


def test_rows_table_and_batching_use_structured_batch_sizes(rows):
    table = fe.rows_table(rows)
    assert "J/inf b1" in table and "J/inf b8" in table and table.count("\n") == len(rows)
    assert all(r["batch_sizes"] == [1, 8] for r in rows)
    fig = fe.batching_figure((1, 8), {"a": [2.0, 1.0]})
    assert list(fig.data[0].y) == [2.0, 1.0]
    with pytest.raises(ValueError, match="2 batch sizes"):
        fe.batching_figure((1, 8), {"a": [1.0]})
