"""Notebook 07's evidence (issue 19): the three results files paired on one dense model, the map and its frontier,
the byte-budget explorer, the figures, the exercises, and the statements notebook 07's prose makes about the
committed files (a re-run that changes them fails here, naming the sentence to edit)."""
import copy
import json
import shutil

import pytest
import torch
from torch import nn

from labkit import results
from labkit.exercises import ExerciseError
from labkit.exercises import llm_compress as ex
from labkit.experiments import llm_compress as evidence
from labkit.figures import llm as figures
from labkit.llm import stats
from labkit.widgets import llm_compress as explorer_lib


@pytest.fixture(scope="module")
def files():
    return evidence.load_all()


@pytest.fixture(scope="module")
def points(files):
    return evidence.map_points(files)


def _point(label, mb, losses, family="quantized"):
    losses = [float(x) for x in losses]
    ratio = stats.paired_ratio(losses, [2.0] * len(losses))  # against a flat "dense"
    return {"label": label, "family": family, "format": "dense_int4", "bytes": int(mb * 1e6), "ratio": ratio["ratio"],
            "ratio_ci": list(ratio["ci"]), "window_losses": losses, "source": "test", "speed": None}


# --- the three files ------------------------------------------------------------------------------------------

def test_the_three_files_share_one_dense_model(files):
    base = evidence.dense_losses(files["prune"])
    assert len(base) == 64
    for key in ("heal", "quant"):
        assert torch.allclose(torch.tensor(evidence.dense_losses(files[key])), torch.tensor(base), atol=1e-4)


def test_files_scoring_another_dense_model_are_refused(tmp_path):
    for name, _ in evidence.FILES.values():
        shutil.copy(results.path_of(name), tmp_path / f"{name}.json")
    heal = json.loads((tmp_path / "llm_heal_cpu.json").read_text())
    heal["dense"]["window_losses"] = [x + 0.01 for x in heal["dense"]["window_losses"]]
    (tmp_path / "llm_heal_cpu.json").write_text(json.dumps(heal))
    with pytest.raises(ValueError, match="cannot be paired"):
        evidence.load_all(tmp_path)


# --- dominance, frontier, budget ------------------------------------------------------------------------------

def test_dominance_needs_fewer_bytes_and_a_resolved_margin():
    g = torch.Generator().manual_seed(0)
    base = (2.0 + 0.3 * torch.randn(64, generator=g)).tolist()
    small_same = _point("same losses, smaller", 50, base)
    big_same = _point("same losses, larger", 100, base)
    better = _point("clearly better", 100, [x - 0.2 for x in base])
    noisy = _point("not resolved", 40, [x + 0.01 * (-1) ** i for i, x in enumerate(base)])
    assert evidence.dominates(small_same, big_same) and not evidence.dominates(big_same, small_same)
    assert not evidence.dominates(big_same, big_same)  # a model never beats itself
    assert not evidence.dominates(small_same, better)  # smaller, but resolved worse
    assert evidence.dominates(better, big_same)  # same size, resolved better
    assert not evidence.dominates(noisy, small_same) and not evidence.dominates(small_same, noisy)
    front = evidence.frontier([small_same, big_same, better, noisy])
    assert [p["label"] for p in front] == ["not resolved", "same losses, smaller", "clearly better"]


def test_best_within_a_budget_names_the_ties():
    g = torch.Generator().manual_seed(1)
    base = (2.0 + 0.3 * torch.randn(64, generator=g)).tolist()
    a = _point("a", 50, [x + 0.3 for x in base])
    b = _point("b", 80, base)
    c = _point("c", 90, [x + 0.001 * (-1) ** i for i, x in enumerate(base)])
    assert evidence.best_within([a, b, c], 10e6) is None
    assert evidence.best_within([a, b, c], 60e6)["best"] is a
    pick = evidence.best_within([a, b, c], 100e6)
    assert pick["best"]["label"] in ("b", "c") and [p["label"] for p in pick["ties"]] == [
        ({"b", "c"} - {pick["best"]["label"]}).pop()]
    assert "no model of the map fits" in evidence.budget_text([a, b, c], 10e6)
    for bad in (0, -5, "100", True):
        with pytest.raises(ValueError, match="budget_bytes"):
            evidence.best_within([a], bad)


def test_map_points_from_the_committed_files(files, points):
    families = {p["family"] for p in points}
    assert families == set(evidence.FAMILIES)
    models = evidence.speed_models(files["quant"])
    for p in points:
        assert p["speed"] is None or p["speed"] in models, p
        assert p["ratio_ci"][0] <= p["ratio"] <= p["ratio_ci"][1], p
        assert len(p["window_losses"]) == 64
        if p["family"] in ("dense", "pruned", "healed", "structured"):
            assert p["format"].endswith("_fp32"), p  # floats priced in the precision they were scored in
    labels = [p["label"] for p in points]
    assert len(labels) == len(set(labels))
    assert not any(lab.startswith("GPTQ 4-bit, groups of 32") and "symmetric" not in lab for lab in labels), \
        "GPTQ at the file's own grid is the very model RTN gives there: one point"
    shipped = next(p for p in points if p["label"].startswith("4-bit Q4_1 as shipped"))
    assert abs(shipped["ratio"] - 1) < 1e-6 and shipped["speed"] is not None
    assert models[shipped["speed"]]["kind"] == "int4"


def test_speed_cases_price_each_running_model(files):
    cases = {c["label"]: c for c in evidence.speed_cases(files["quant"])}
    models = evidence.speed_models(files["quant"])
    dense = models["dense"]["parameters"]
    for label, m in models.items():
        assert cases[label]["weight_bytes"] == m["held_bytes"]
        assert cases[label]["weights_read"] == (m["parameters"] if m["kind"] == "structured" else dense)
    assert any(m["kind"] == "structured" for m in models.values()), "structured models are timed in the same turns"


# --- what notebook 07 says about the files ----------------------------------------------------------------------

def test_notebook_07_statements_hold_for_the_committed_files(files, points):
    heal, quant, prune = files["heal"], files["quant"], files["prune"]
    # Section 2: every distillation run ends better than it started, resolved.
    for r in heal["rows"]:
        if r["objective"] == "distill":
            gain = stats.paired_ratio(r["curve"][-1]["window_losses"], r["curve"][0]["window_losses"])
            assert gain["ci"][1] < 1, evidence.heal_label(r)
    # "next-token looks better than distillation at first sight", "the dense model trained the same way moves too"
    nt, distilled = evidence.heal_row(heal, "wanda", objective="next_token"), evidence.heal_row(heal, "wanda")
    control = evidence.heal_row(heal, "dense", "dense", 0.0, objective="next_token")
    assert nt["curve"][-1]["ratio"] < distilled["curve"][-1]["ratio"]
    assert control["curve"][-1]["ratio_ci"][1] < 1
    # "50% zeros in a bitmask format save only about a third of the bytes"
    wanda = next(r for r in prune["rows"] if r["method"] == "wanda" and r["sparsity"] == 0.5
                 and r["pattern"] == "unstructured")
    assert 0.3 < 1 - wanda["bytes"]["bitmask_fp32"] / wanda["bytes"]["dense_fp32"] < 0.4
    # Section 4: where rounding costs something, GPTQ beats RTN, resolved.
    for r in quant["rows"]:
        rtn = evidence.quant_row(quant, "rtn", r["bits"], r["group_size"], r["symmetric"])
        if r["method"] == "gptq" and rtn["ratio"] > 1.05:
            assert stats.paired_ratio(r["window_losses"], rtn["window_losses"])["ci"][1] < 1, r
    # "Wanda + RTN in groups of 32 costs almost nothing over Wanda alone ... in groups of 64 the rounding is real"
    for group, low, high in ((32, 0.99, 1.02), (64, 1.1, 10.0)):
        joint = evidence.quant_row(quant, "wanda+rtn", 4, group, pattern="unstructured")
        ci = stats.paired_ratio(joint["window_losses"], wanda["window_losses"])["ci"]
        assert low < ci[0] and ci[1] < high, (group, ci)
    # Section 6: the integer kernels generate faster than dense fp32, and do not help prompts.
    models = evidence.speed_models(quant)
    for m in models.values():
        if m["kind"] in ("int8", "int4"):
            assert m["decode_tokens_per_s"] > models["dense"]["decode_tokens_per_s"]
            assert m["prefill_tokens_per_s"] < 1.05 * models["dense"]["prefill_tokens_per_s"]
            assert m["prefill_tokens_per_s"] < 0.75 * models["dense bf16"]["prefill_tokens_per_s"]
    # Section 8: pruned, healed and structured models are off the frontier, each best one beaten by a quantized
    # model; pruning reaches the frontier only with quantization, below the smallest 4-bit-only model.
    front = evidence.frontier(points)
    on = {p["family"] for p in front}
    assert on.isdisjoint({"pruned", "healed", "structured"}) and "pruned + quantized" in on
    for family in ("pruned", "healed", "structured"):
        best = min((p for p in points if p["family"] == family), key=lambda p: p["ratio"])
        assert any(q["family"] == "quantized" and evidence.dominates(q, best) for q in points), family
    four_bit = min(p["bytes"] for p in points if p["family"] == "quantized" and "4-bit" in p["label"])
    assert all(p["bytes"] < four_bit for p in front if p["family"] == "pruned + quantized")


def test_sentences_are_decided_by_intervals(files):
    lines = evidence.gptq_vs_rtn_lines(files["quant"])
    assert any("not resolved by this evaluation" in line for line in lines)  # 8-bit: GPTQ and RTN tie
    assert any("0.0037x" in line for line in lines), "a tiny ratio keeps two significant digits"
    assert "100.0% of the block weights unchanged" in evidence.trap_line(files["quant"])
    assert len(evidence.heal_lines(files["heal"])) == 6
    assert all("beats" in line for line in evidence.heal_comparisons(files["heal"]))


def test_ratio_text_keeps_small_ratios_readable():
    assert stats.ratio_text(1.6412, (1.57, 1.71)) == "1.64x (95% CI 1.57-1.71)"
    assert stats.ratio_text(0.00374, (0.0033, 0.0043)) == "0.0037x (95% CI 0.0033-0.0043)"


# --- figures and the explorer ----------------------------------------------------------------------------------

def test_figures(files, points):
    heal_rows = files["heal"]["rows"]
    fig = figures.heal_figure(heal_rows)
    assert len(fig.data) == len(heal_rows)
    hollow = fig.data[0].marker.symbol
    assert hollow[0] == "circle" and "circle-open" in hollow  # subset points drawn hollow
    assert figures.heal_figure(heal_rows, x="tokens").data[0].x[-1] == heal_rows[0]["curve"][-1]["tokens_seen"]
    with pytest.raises(ValueError, match="x must be"):
        figures.heal_figure(heal_rows, x="steps")
    front = evidence.frontier(points)
    fig = figures.compression_map_figure(points, front)
    assert max(max(t.y) for t in fig.data if t.y is not None) <= figures.RATIO_CAP  # RTN 3-bit per channel: capped
    assert fig.data[-1].visible is False and fig.layout.shapes[0].visible is False  # no budget, no star
    with pytest.raises(ValueError, match="lacks"):
        figures.compression_map_figure([{"label": "x"}])


def test_budget_explorer_looks_up_and_moves_line_and_star(files):
    explorer = explorer_lib.budget_explorer(files)
    star = explorer.fig.data[explorer._star]
    explorer.budget.value = 100
    assert explorer.fig.layout.shapes[0].x0 == 100 and star.visible
    shipped_x = star.x[0]
    explorer.budget.value = 80
    assert star.x[0] < shipped_x and explorer.fig.layout.shapes[0].x0 == 80
    assert "80 MB" in explorer.status.value and "GPTQ 3-bit" in explorer.status.value
    explorer.budget.value = explorer_lib.BUDGETS_MB[0]
    assert star.visible is False and "no model of the map fits" in explorer.status.value
    assert set(explorer.table) == set(explorer_lib.BUDGETS_MB)
    with pytest.raises(TypeError, match="budgets_mb"):
        explorer_lib.budget_table(explorer.points, None, "100")


# --- exercises ------------------------------------------------------------------------------------------------

def test_exercise_rtn_group():
    def right(w, bits):
        low, high = w.min(), w.max()
        scale = (high - low) / (2 ** bits - 1)
        return low + scale * torch.round((w - low) / scale)

    def wrong_step(w, bits):
        low, high = w.min(), w.max()
        scale = (high - low) / 2 ** bits
        return low + scale * torch.clamp(torch.round((w - low) / scale), 0, 2 ** bits - 1)

    def symmetric(w, bits):
        scale = w.abs().max() / (2 ** (bits - 1) - 1)
        return torch.round(w / scale) * scale

    assert ex.check_rtn_group(None) is False
    assert ex.check_rtn_group(right) is True
    with pytest.raises(ExerciseError, match="2\\*\\*bits - 1"):
        ex.check_rtn_group(wrong_step)
    with pytest.raises(ExerciseError, match="symmetric"):
        ex.check_rtn_group(symmetric)
    with pytest.raises(ExerciseError, match="lab's own function"):
        from labkit.llm import rtn
        ex.check_rtn_group(rtn)


def test_exercise_masks_held():
    def right(model, masks):
        return all(bool((model.get_submodule(n).weight[~k] == 0).all()) for n, k in masks.items())

    def with_tolerance(model, masks):
        return all(bool((model.get_submodule(n).weight[~k].abs() < 1e-6).all()) for n, k in masks.items())

    def first_layer_only(model, masks):
        name, keep = next(iter(masks.items()))
        return bool((model.get_submodule(name).weight[~keep] == 0).all())

    def counts_all_zeros(model, masks):
        return all(int((model.get_submodule(n).weight == 0).sum()) == int((~k).sum()) for n, k in masks.items())

    assert ex.check_masks_held(right) is True
    for wrong in (with_tolerance, first_layer_only):
        with pytest.raises(ExerciseError, match="1e-30"):
            ex.check_masks_held(wrong)
    with pytest.raises(ExerciseError, match="kept"):
        ex.check_masks_held(counts_all_zeros)
    with pytest.raises(ExerciseError, match="bool"):
        ex.check_masks_held(lambda model, masks: torch.tensor(True))
    # the checker leaves no trace on a model of the learner's
    model = nn.Linear(4, 4)
    before = copy.deepcopy(model.state_dict())
    ex.check_masks_held(right)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_exercise_bytes_and_smallest_within(points):
    assert ex.check_bytes_24_int4(442_368) is True
    for wrong, hint in ((442_368 - 110_592 // 2, "minimum"), (221_184 * 2 + 110_592 * 2, "kept half"),
                        (221_184 + 110_592, "positions"), (1, "three parts")):
        with pytest.raises(ExerciseError, match=hint):
            ex.check_bytes_24_int4(wrong)
    with pytest.raises(ExerciseError, match="int"):
        ex.check_bytes_24_int4(442368.0)
    within = [p for p in points if p["ratio_ci"][1] < 1.5]
    want = min(within, key=lambda p: p["bytes"])
    assert ex.check_smallest_within(want["label"], points) is True
    larger = max(within, key=lambda p: p["bytes"])
    with pytest.raises(ExerciseError, match="smaller"):
        ex.check_smallest_within(larger["label"], points)
    beyond = next(p for p in points if p["ratio"] > 2)
    with pytest.raises(ExerciseError, match="beyond"):
        ex.check_smallest_within(beyond["label"], points)
    with pytest.raises(ExerciseError, match="label"):
        ex.check_smallest_within("no such model", points)
