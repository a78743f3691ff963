"""labkit.experiments.pruning_sweep and labkit.figures.pruning_sweep on small synthetic sweeps (no training
except one tiny iterative lottery ticket): confidence intervals, paired verdicts, the logistic reference line,
block fits, and the iterative ticket's nested masks."""
import math

import pytest
import torch

from labkit import data, models, prune, train
from labkit.experiments import pruning_sweep as S
from labkit.figures import pruning_sweep as F


def _row(seed, method, acc, finetune=True, target=0.9, sparsity=None, **extra):
    return {"model": "mlp", "seed": seed, "method": method, "finetune": finetune, "target_sparsity": target,
            "sparsity": target if sparsity is None else sparsity, "nonzeros": 10, "val_acc": acc, "test_acc": acc,
            "n_test": 270, "layer_sparsity": {}, **extra}


def _sweep(rows):
    return {"config": {"models": ["mlp"], "seeds": [0, 1, 2], "methods": ["global_magnitude"],
                       "layerwise": {"max_drop": 0.01}}, "rows": rows}


BASE = [_row(s, "dense", a, False, 0.0) for s, a in enumerate((0.96, 0.97, 0.98))]
BASE += [_row(s, "logistic", a, False, 0.0) for s, a in enumerate((0.95, 0.955, 0.96))]
BASE += [_row(s, "global_magnitude", a) for s, a in enumerate((0.95, 0.96, 0.97))]


def test_mean_ci_is_the_t_interval():
    mean, ci = S.mean_ci([0.96, 0.97, 0.98])
    assert mean == pytest.approx(0.97)
    assert ci == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)  # t(0.975, 2 dof) * s / sqrt(n)
    assert S.mean_ci([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="empty"):
        S.mean_ci([])


def test_binomial_se_of_one_test_set():
    assert S.binomial_se(0.97, 270) == pytest.approx(math.sqrt(0.97 * 0.03 / 270))  # about one point
    with pytest.raises(ValueError, match="accuracy"):
        S.binomial_se(1.5, 270)
    with pytest.raises(ValueError, match="n_test"):
        S.binomial_se(0.9, 0)


def test_summarize_reports_ci_and_test_set_noise_and_skips_matched_runs():
    rows = S.summarize(_sweep(BASE + [_row(0, "per_layer_scan", 0.9, target=0.77)]), "mlp")
    assert {r["method"] for r in rows} == {"dense", "logistic", "global_magnitude"}
    dense = S.find(rows, "dense", False, 0.0)
    assert dense["n"] == 3 and dense["ci95"] > dense["std"]  # 3 seeds: the t interval is wider than one std
    assert dense["se_test"] == pytest.approx(S.binomial_se(0.97, 270))


def test_paired_difference_gives_a_verdict_only_outside_the_noise():
    same_gap = BASE + [_row(s, "small_dense", a) for s, a in enumerate((0.93, 0.94, 0.95))]  # always 2 points lower
    diff = S.paired_difference(_sweep(same_gap), "mlp", ("global_magnitude", True, 0.9), ("small_dense", True, 0.9))
    assert diff["mean"] == pytest.approx(0.02) and diff["verdict"] == "a"
    noisy = BASE + [_row(s, "small_dense", a) for s, a in enumerate((0.97, 0.94, 0.96))]
    diff = S.paired_difference(_sweep(noisy), "mlp", ("global_magnitude", True, 0.9), ("small_dense", True, 0.9))
    assert diff["verdict"] == "within noise"
    with pytest.raises(ValueError, match="no seed"):
        S.paired_difference(_sweep(BASE), "mlp", ("global_magnitude", True, 0.9), ("lottery_rewind", True, 0.9))


def test_goal_at_90_reports_the_drop_with_its_interval():
    sweep = _sweep(BASE + [_row(s, "magnitude", a) for s, a in enumerate((0.90, 0.91, 0.92))])
    goal = S.goal_at_90(sweep, "mlp")
    assert goal["method"] == "global_magnitude"  # higher validation accuracy than per-layer magnitude
    assert goal["drop_points"] == pytest.approx(1.0) and goal["drop_ci_points"] == pytest.approx(0.0, abs=1e-9)
    assert goal["logistic"] == pytest.approx(0.955)
    assert "logistic regression 95.5%" in S.goal_text(goal)


def test_every_accuracy_figure_draws_the_logistic_reference():
    fig = F.accuracy_figure(_sweep(BASE), "mlp", ["global_magnitude"])
    lines = {s.y0 for s in fig.layout.shapes}
    assert lines == {97.0, 95.5}  # dense and logistic regression means, in percent
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("logistic regression 95.5%") for t in texts)
    assert list(fig.data[0].y) == [96.0] and list(fig.data[0].error_y.array) == [pytest.approx(2.48, abs=0.01)]


def test_block_layers_say_which_layers_a_kernel_block_fits():
    assert S.block_layers("mlp", 16) == ["net.0", "net.2"]  # the 10-row classifier stays dense
    assert S.block_layers("mlp", 32) == ["net.0", "net.2"]
    assert S.block_layers("cnn", 16) == ["net.2"]  # conv2 is 32 x 144; conv1 (16 x 9) and the classifier are not
    assert S.block_layers("cnn", 32) == []


def test_layerwise_table_compares_at_the_same_overall_sparsity():
    rows = BASE + [_row(s, m, a, ft, target=0.77, sparsity=0.77) for s in range(3)
                   for m, a in (("per_layer_scan", 0.94), ("uniform_matched", 0.90), ("global_matched", 0.93))
                   for ft in (False, True)]
    text = S.layerwise_table(_sweep(rows), "mlp")
    assert "per-layer (sensitivity scan)" in text and "77.0%" in text and "94.0 ± 0.0" in text


def test_iterative_lottery_masks_nest_and_reset_to_the_initial_weights(monkeypatch):
    split = data.digits(0).train
    small = data.Split(split.x[:128], split.y[:128])
    build = models.build
    # the sweep builds the default widths; a small MLP keeps this test fast
    monkeypatch.setattr(models, "build", lambda kind, seed=0: build(kind, seed=seed, hidden=(16, 8)))
    dense = models.build("mlp", seed=0)
    init = {k: v.clone() for k, v in dense.state_dict().items()}
    train.train(dense, small, epochs=1, seed=0)
    tickets = list(S.iterative_lottery("mlp", dense, small, [0.5, 0.2], epochs=0, lr=1e-3, seed=0))
    (share1, t1), (share2, t2) = tickets
    assert (share1, share2) == (0.5, 0.2)
    assert prune.sparsity_report(t1)["overall"] == pytest.approx(0.5, abs=0.01)
    assert prune.sparsity_report(t2)["overall"] == pytest.approx(0.8, abs=0.01)
    w1, w2 = prune.current_weights(t1), prune.current_weights(t2)
    for name in w1:
        assert not torch.any((w1[name] == 0) & (w2[name] != 0))  # what round 1 removed stays removed
    # epochs=0: the survivors are exactly the initial weights
    kept = w2["net.0"] != 0
    assert torch.equal(w2["net.0"][kept], init["net.0.weight"][kept])


@pytest.fixture(scope="module")
def committed():
    return S.load_sweep()


def test_committed_sweep_has_every_seed_method_and_reference(committed):
    cfg = committed["config"]
    assert len(cfg["seeds"]) >= 3
    for model in cfg["models"]:
        runs = [r for r in committed["rows"] if r["model"] == model]
        assert {r["seed"] for r in runs} == set(cfg["seeds"])
        expected = {*S.methods_of(cfg, model), "dense", "dense_long", "logistic", "small_dense", "lottery_rewind",
                    "lottery_reinit", "lottery_iterative", *S.MATCHED, *(f"{n}:{m}" for n, m in cfg["nm_patterns"])}
        assert {r["method"] for r in runs} == expected
        # every seed has its own split: the dense models' test accuracies are measured on different test sets
        assert all(r["n_test"] == 270 for r in runs if "n_test" in r)


def test_committed_sweep_tables_and_figures(committed):
    for model in committed["config"]["models"]:
        goal = S.goal_at_90(committed, model)
        assert goal["method"] in ("magnitude", "global_magnitude")
        assert goal["seeds"] == len(committed["config"]["seeds"])
        assert S.goal_text(goal).endswith("MET") == goal["met"]
        for text in (S.accuracy_table(committed, model, S.methods_of(committed["config"], model), True),
                     S.small_dense_table(committed, model), S.lottery_table(committed, model),
                     S.nm_table(committed, model), S.block_table(committed, model),
                     S.layerwise_table(committed, model)):
            assert "nan" not in text and len(text.splitlines()) >= 2
        fig = F.accuracy_figure(committed, model)
        assert len(fig.layout.shapes) == 2  # dense and logistic regression reference lines
        for trace in fig.data:
            assert all(0 <= y <= 100 for y in trace.y)


def test_reader_errors_name_the_argument(committed, tmp_path):
    from labkit import results

    with pytest.raises(results.ResultsFileMissing, match="pruning_sweep.py"):
        S.load_sweep(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="model"):
        S.summarize(committed, "resnet")
    with pytest.raises(ValueError, match="metric"):
        S.summarize(committed, "mlp", "loss")
