"""Notebook 08's evidence, figures, explorer and exercises, on the committed llm_activation_cpu.json."""
from __future__ import annotations

import copy

import pytest

from labkit.exercises import ExerciseError
from labkit.exercises import llm_activation as ex
from labkit.experiments import llm_activation as evidence
from labkit.figures import activation as figures
from labkit.llm import stats
from labkit.widgets import llm_activation as explorer_lib


@pytest.fixture(scope="module")
def sweep() -> dict:
    return evidence.load()


@pytest.fixture(scope="module")
def points(sweep) -> list[dict]:
    return evidence.trade_points(sweep)


def test_the_sweep_holds_every_setting_with_paired_ratios(sweep):
    rows = sweep["rows"]
    assert sweep["complete"] is True
    dense = evidence.dense_row(sweep)
    assert dense["ratio"] == 1.0 and len(dense["window_losses"]) == 64
    for allocation in ("uniform", "greedy"):
        got = sorted(r["sparsity"] for r in rows if r.get("allocation") == allocation)
        assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    for r in rows:
        assert len(r["window_losses"]) == 64
        assert r["ratio_ci"][0] <= r["ratio"] <= r["ratio_ci"][1]
        assert r["bytes_per_token"]["total"] == r["bytes_per_token"]["blocks"] + r["bytes_per_token"]["head"]
    uniform = sorted((r for r in rows if r.get("allocation") == "uniform"), key=lambda r: r["sparsity"])
    # more inputs skipped: fewer bytes read per token, and the measured share follows the target
    totals = [r["bytes_per_token"]["total"] for r in uniform]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals)
    assert all(abs(r["weight_reads_skipped"] - r["sparsity"]) < 0.1 for r in uniform)


def test_trade_points_join_rows_and_speeds(sweep, points):
    models = sweep["speed"]["models"]
    labels = [p["label"] for p in points]
    assert labels[0] == evidence.SHIPPED and len(set(labels)) == len(labels)
    for p in points:
        assert p["decode_tokens_per_s"] == models[p["label"]]["decode_tokens_per_s"]
        assert p["speedup"] == pytest.approx(p["decode_tokens_per_s"] / models[evidence.SHIPPED]["decode_tokens_per_s"])
    assert {p["technique"] for p in points} >= {"activation uniform", "activation greedy", "structured"}


def test_best_within_decides_on_the_interval(points):
    fake = [dict(points[0], label="a", technique="structured", ratio=1.1, ratio_ci=[1.05, 1.15],
                 decode_tokens_per_s=10.0),
            dict(points[0], label="b", technique="structured", ratio=1.15, ratio_ci=[1.1, 1.25],
                 decode_tokens_per_s=20.0),
            dict(points[0], label="c", technique="structured", ratio=1.3, ratio_ci=[1.25, 1.35],
                 decode_tokens_per_s=30.0)]
    best = evidence.best_within(fake, 1.2)["structured"]
    assert best["best"]["label"] == "a"  # b is faster, but its interval straddles 1.2
    assert best["unresolved"] == ["b"]
    lines = evidence.best_within_lines(fake, 1.2)
    assert any("fastest within 1.2x dense is a" in line and "not resolved" in line for line in lines)


def test_notebook_claims_hold_on_the_file(sweep, points):
    """The prose of notebook 08, section 6, checked against the committed numbers."""
    models = sweep["speed"]["models"]
    shipped = models[evidence.SHIPPED]["decode_tokens_per_s"]
    # the layout effect: the fair dense baseline decodes faster than the shipped dense model
    assert models[evidence.FAIR]["decode_tokens_per_s"] > 1.1 * shipped
    rows = {(r["allocation"], r["sparsity"]): r for r in sweep["rows"] if r["method"] == "activation"}
    # greedy is no better than uniform: at each target it skips a little more and is never resolved better
    for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        g, u = rows[("greedy", s)], rows[("uniform", s)]
        ratio = stats.paired_ratio(g["window_losses"], u["window_losses"])
        assert g["weight_reads_skipped"] >= u["weight_reads_skipped"] - 0.01
        assert stats.verdict(ratio["ci"], 1.0) != "below"
    # nearly free at low sparsity, broken past about half the inputs
    assert rows[("uniform", 0.2)]["ratio_ci"][1] < 1.05 and rows[("uniform", 0.6)]["ratio"] > 2
    # against the shipped model clearly faster, against the fair dense hardly at all
    best = evidence.best_within(points, 1.2)
    uniform = best["activation uniform"]["best"]
    assert uniform["speedup"] > 1.2 > uniform["speedup_fair"] + 0.1
    # within 1.2x dense, every technique's fastest setting is within about a tenth of the fair dense
    assert all(0.9 < best[k]["best"]["speedup_fair"] < 1.15 for k in evidence.TECHNIQUES)


def test_explorer_table_and_widget(sweep):
    table = evidence.explorer_table(sweep)
    assert ("uniform", 0.0) in table and ("greedy", 0.7) in table
    assert all(entry["text"] and "perplexity" in entry["text"] for entry in table.values())
    explorer = explorer_lib.activation_explorer(sweep)
    assert explorer.sparsity.value == 0.3  # opens on a setting, not on dense
    opacity = {t.name: t.opacity for t in explorer.fig.data}
    assert opacity["activation uniform"] == 1.0 and opacity["activation greedy"] == 0.3
    explorer.allocation.value = "greedy"
    # every control changes the figure: switching the allocation swaps which line is faded
    assert {t.name: t.opacity for t in explorer.fig.data}["activation uniform"] == 0.3
    explorer.sparsity.value = 0.5
    assert "greedy, 50%" in explorer.status.value
    star = explorer.fig.data[explorer._star]
    assert star.visible
    explorer.sparsity.value = 0.0
    assert "dense" in explorer.status.value
    assert explorer.last_update_ms < 250


def test_figures_draw_from_the_data(points):
    fig = figures.trade_figure(points, fair_speedup=1.2, threshold=1.2)
    names = [t.name for t in fig.data]
    assert {"activation uniform", "activation greedy", "structured", "selected"} <= set(names)
    hist = figures.activation_histogram_figure({"a": [0.0, 0.1, -0.2, 3.0]}, {"a": 0.1})
    assert len(hist.data) == 1
    ys = list(hist.data[0].y)
    assert None in ys and all(y is None or y > 0 for y in ys)  # empty bins are gaps on the log axis
    with pytest.raises(ValueError, match="thresholds lacks"):
        figures.activation_histogram_figure({"a": [1.0]}, {})
    with pytest.raises(TypeError, match="values"):
        figures.activation_histogram_figure({}, {})


def test_exercise_checks_accept_right_and_explain_wrong(points):
    assert ex.check_threshold(None) is False
    assert ex.check_threshold(lambda x, s: float(x.abs().quantile(s)))
    with pytest.raises(AssertionError, match="1 - sparsity"):
        ex.check_threshold(lambda x, s: float(x.abs().quantile(1 - s)))
    with pytest.raises(AssertionError, match="quantile"):
        ex.check_threshold(lambda x, s: float(x.abs().max()) * s)

    def gather(x, weight_t, threshold):
        kept = (x.abs() > threshold).nonzero().flatten()
        return x[kept] @ weight_t[kept]

    assert ex.check_gather(gather)
    with pytest.raises(AssertionError, match="NaN"):
        ex.check_gather(lambda x, w, t: (x * (x.abs() > t)) @ w)

    within = [p for p in points if p["technique"] == "activation uniform" and p["ratio_ci"][1] < 1.2]
    right = max(within, key=lambda p: p["decode_tokens_per_s"])["label"]
    assert ex.check_fastest_within(right, points)
    with pytest.raises(ExerciseError):
        ex.check_fastest_within("no such label", points)
    too_far = max((p for p in points if p["technique"] == "activation uniform"), key=lambda p: p["sparsity"])
    with pytest.raises(AssertionError):
        ex.check_fastest_within(too_far["label"], points)


def test_load_names_the_command_when_the_speed_block_is_missing(sweep, monkeypatch):
    broken = copy.deepcopy(sweep)
    broken["speed"]["models"].pop(evidence.SHIPPED)
    monkeypatch.setattr(evidence.results, "read", lambda path, schema: broken)
    with pytest.raises(ValueError, match="llm_activation_sweep.py"):
        evidence.load()
