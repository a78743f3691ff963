"""Compute-optimal training (labkit.experiments.isoflop): the IsoFLOP fit, its bootstrap, the 6ND check, the
training run at a budget, and the quick sweep of benchmarks/isoflop_sweep.py."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from labkit import results
from labkit.data import text_corpus
from labkit.experiments import isoflop as iso

ROOT = Path(__file__).resolve().parents[1]


def _parabola(n_opt: float, sizes, curvature: float = 0.3, floor: float = 1.5):
    return [floor + curvature * (math.log10(n) - math.log10(n_opt)) ** 2 for n in sizes]


def test_fit_recovers_the_minimum_of_a_known_parabola():
    sizes = [3e3, 1e4, 3e4, 1e5, 3e5]
    fit = iso.fit_isoflop(sizes, _parabola(2e4, sizes), flops=1e11)
    assert fit["n_opt"] == pytest.approx(2e4, rel=1e-6)
    assert fit["loss_opt"] == pytest.approx(1.5, abs=1e-9)
    assert fit["bracketed"]
    assert fit["d_opt"] == pytest.approx(1e11 / (6 * 2e4), rel=1e-6)
    assert fit["tokens_per_param"] == pytest.approx(1e11 / (6 * 2e4 ** 2), rel=1e-6)


def test_fit_flags_a_minimum_outside_the_sizes_and_a_curve_without_one():
    sizes = [1e4, 2e4, 4e4]
    outside = iso.fit_isoflop(sizes, _parabola(1e6, sizes))
    assert outside["n_opt"] == pytest.approx(1e6, rel=1e-6) and not outside["bracketed"]
    assert outside["tokens_per_param"] is None  # no budget given
    concave = iso.fit_isoflop(sizes, [1.0, 2.0, 1.0])
    assert concave["n_opt"] is None and concave["coefficients"][0] < 0 and not concave["bracketed"]


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_less_noise():
    sizes = [3e3, 1e4, 3e4, 1e5, 3e5]
    rng = np.random.default_rng(0)
    truth = _parabola(2e4, sizes)
    noisy = [[y + rng.normal(0, 0.03) for _ in range(3)] for y in truth]
    quiet = [[y + rng.normal(0, 0.003) for _ in range(3)] for y in truth]
    wide = iso.bootstrap_isoflop(sizes, noisy, 1e11, resamples=400)
    narrow = iso.bootstrap_isoflop(sizes, quiet, 1e11, resamples=400)
    for fit in (wide, narrow):
        lo, hi = fit["n_opt_ci"]
        assert lo <= fit["n_opt"] <= hi and fit["valid_share"] == 1.0 and fit["seeds"] == 3
        tlo, thi = fit["tokens_per_param_ci"]
        assert tlo <= fit["tokens_per_param"] <= thi
    assert narrow["n_opt_ci"][1] / narrow["n_opt_ci"][0] < wide["n_opt_ci"][1] / wide["n_opt_ci"][0]
    assert narrow["n_opt"] == pytest.approx(2e4, rel=0.05)
    # the same seed gives the same interval
    assert iso.bootstrap_isoflop(sizes, noisy, 1e11, resamples=400)["n_opt_ci"] == wide["n_opt_ci"]


def test_bootstrap_over_three_seeds_covers_the_truth_often_but_less_than_its_level():
    """Simulated sweeps with a known minimum: a 95% interval from 3 seeds covers it in most sweeps, but a
    bootstrap cannot see spread that 3 seeds never showed, so fewer than 95% (the docstring's warning)."""
    sizes = [3e3, 1e4, 3e4, 1e5, 3e5]
    truth = _parabola(2e4, sizes)
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(40):
        losses = [[y + rng.normal(0, 0.03) for _ in range(3)] for y in truth]
        lo, hi = iso.bootstrap_isoflop(sizes, losses, 1e11, resamples=100, seed=rep)["n_opt_ci"]
        covered += lo <= 2e4 <= hi
    assert 0.5 <= covered / 40 < 0.95


def test_isoflop_table_fits_each_budget_in_both_parameter_conventions():
    rows = []
    for budget, n_opt in ((1e10, 1e4), (1e11, 3e4)):
        for name, n, total in (("a", 3e3, 8e3), ("b", 1e4, 1.8e4), ("c", 3e4, 4e4), ("d", 1e5, 1.2e5)):
            for seed, noise in enumerate((-0.002, 0.0, 0.002)):
                rows.append({"budget": budget, "size": name, "n_params": int(n), "total_params": int(total),
                             "tokens": int(budget / (6 * n)), "seed": seed,
                             "val_loss": _parabola(n_opt, [n])[0] + noise})
    table = iso.isoflop_table(rows, resamples=200)
    assert [t["budget"] for t in table] == [1e10, 1e11] and table[0]["sizes"] == ["a", "b", "c", "d"]
    assert [t["n_opt"] for t in table] == pytest.approx([1e4, 3e4], rel=1e-3)
    assert table[1]["tokens_per_param"] == pytest.approx(1e11 / (6 * 3e4 ** 2), rel=1e-2)
    exponent = iso.fit_exponent([t["budget"] for t in table], [t["n_opt"] for t in table])
    assert exponent["a"] == pytest.approx(math.log(3) / math.log(10), rel=1e-2)
    assert exponent["a"] + exponent["b"] == pytest.approx(1.0)
    total = iso.isoflop_table(rows, params="total_params", resamples=200)
    # counting the vocabulary matrices too makes every model bigger, so fewer tokens per parameter
    assert total[1]["tokens_per_param"] < table[1]["tokens_per_param"]


@pytest.mark.parametrize("sizes, losses, error, match", [
    ([1e3, 1e4], [1.0, 2.0], ValueError, "at least 3 distinct sizes"),
    ([1e3, 1e3, 1e3], [1.0, 2.0, 3.0], ValueError, "at least 3 distinct sizes"),
    ([1e3, 1e4, 1e5], [1.0, 2.0], ValueError, "same length"),
    ([1e3, -1e4, 1e5], [1.0, 2.0, 3.0], ValueError, "positive parameter counts"),
    ([1e3, 1e4, 1e5], [1.0, float("nan"), 3.0], ValueError, r"losses\[1\]"),
    ([1e3, 1e4, 1e5], "123", TypeError, "losses must be a list"),
    (1e4, [1.0, 2.0, 3.0], TypeError, "sizes must be a list"),
])
def test_fit_rejects_bad_input(sizes, losses, error, match):
    with pytest.raises(error, match=match):
        iso.fit_isoflop(sizes, losses)


def test_other_functions_reject_bad_input():
    with pytest.raises(ValueError, match="flops must be a positive"):
        iso.fit_isoflop([1e3, 1e4, 1e5], [1.0, 0.5, 1.0], flops=-1)
    with pytest.raises(ValueError, match=r"losses\[1\] must be a non-empty"):
        iso.bootstrap_isoflop([1e3, 1e4, 1e5], [[1.0], [], [1.0]], 1e10)
    with pytest.raises(ValueError, match="level must be"):
        iso.bootstrap_isoflop([1e3, 1e4, 1e5], [[1.0], [0.5], [1.0]], 1e10, level=1.5)
    with pytest.raises(ValueError, match="params must be one of"):
        iso.isoflop_table([{"budget": 1}], params="embedding")
    two_sizes = [{"budget": 1e10, "size": name, "n_params": n, "val_loss": 1.0} for name, n in (("a", 10), ("b", 20))]
    with pytest.raises(ValueError, match=r"has 2 size\(s\) in rows.*--resume"):
        iso.isoflop_table(two_sizes)
    with pytest.raises(ValueError, match="2\\+ distinct budgets"):
        iso.fit_exponent([1e10], [1e4])
    with pytest.raises(ValueError, match="size must be a ModelSize or one of"):
        iso.parameter_counts("d1000xL9", 94)
    with pytest.raises(TypeError, match="size must be a ModelSize"):
        iso.train_at_budget(64, 1e9)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        iso.ModelSize(30, 1)
    with pytest.raises(ValueError, match="less than one batch.*at least"):
        iso.train_at_budget("d32xL1", 1e6)
    with pytest.raises(ValueError, match="flops must be a positive compute budget"):
        iso.tokens_for(0, 100)
    with pytest.raises(ValueError, match="step must be in"):
        iso.lr_at(10, 10)


def test_parameter_counts_split_the_vocabulary_matrices_from_the_rest():
    counts = iso.parameter_counts("d64xL2", 94)
    # notebook 04's dense model: 98,688 parameters, of which tok 94x64 + pos 64x64 + head 94x64 are embedding
    assert counts["total"] == 98_688
    assert counts["embedding"] == 94 * 64 + 64 * 64 + 94 * 64
    assert counts["non_embedding"] == counts["total"] - counts["embedding"]
    ns = [iso.parameter_counts(s, 94)["non_embedding"] for s in iso.SIZES.values()]
    assert ns == sorted(ns)  # SIZES run from small to large


def test_learning_rate_warms_up_then_decays_to_a_tenth_over_the_run():
    lrs = [iso.lr_at(s, 200, peak=0.01) for s in range(200)]
    assert lrs[0] < lrs[9] == pytest.approx(0.01)  # warm-up: 5% of 200 steps
    assert all(b <= a for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.01 * iso.FINAL_LR_SHARE)
    # the peak falls as 1 / width: notebook 04's width 64 gets LR_WIDTH / 64
    assert iso.peak_lr("d64xL2") == pytest.approx(iso.LR_WIDTH / 64) == 2 * iso.peak_lr(iso.ModelSize(128, 1))


def test_six_nd_undercounts_the_counted_flops_by_the_head_and_attention():
    """6ND vs torch.utils.flop_counter on one training step. Stated bound: for every size of the sweep the counter
    finds 1x to 2.5x of 6ND (the head and attention it leaves out weigh most in the narrowest model), backward costs
    2x forward, and the head + attention terms explain the counter to within 2% (LayerNorms are not matmuls)."""
    checks = [iso.flop_check(s) for s in ("d16xL1", "d64xL2", "d96xL3")]  # the narrowest, notebook 04's, the widest
    for c in checks:
        assert 1.0 < c["ratio"] < 2.5, c
        assert c["backward_over_forward"] == pytest.approx(2.0, rel=0.01)
        assert abs(c["unexplained"]) < 0.02, c
    # wider models come closer to 6ND: the head and attention shrink relative to the blocks
    assert checks[-1]["ratio"] < checks[0]["ratio"]


def test_train_at_budget_spends_the_budget_and_is_seeded():
    corpus = text_corpus()
    n = iso.parameter_counts("d16xL1", corpus.vocab_size)["non_embedding"]
    budget = 6 * n * 1024 * 12.5  # 12.5 batches: rounds down to 12
    row = iso.train_at_budget("d16xL1", budget, seed=3, corpus=corpus, threads=1)
    assert row["steps"] == 12 and row["tokens"] == 12 * 1024 and row["n_params"] == n
    assert row["tokens_per_param"] == pytest.approx(row["tokens"] / n)
    assert row["epochs"] == pytest.approx(row["tokens"] / len(corpus.train))
    assert row["config"] == {"d_model": 16, "n_layers": 1, "n_heads": 4, "d_ff": 32} and row["seed"] == 3
    again = iso.train_at_budget("d16xL1", budget, seed=3, corpus=corpus, threads=1)
    assert again["val_loss"] == row["val_loss"]
    # 12 steps of training already beat a uniform guess over the vocabulary
    assert row["val_loss"] < math.log(corpus.vocab_size)


def _load_script():
    spec = importlib.util.spec_from_file_location("isoflop_sweep", ROOT / "benchmarks" / "isoflop_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_sweep_writes_a_valid_file_and_resumes(tmp_path):
    script = _load_script()
    out = tmp_path / "isoflop_quick.json"
    assert script.main(["--quick", "--out", str(out), "--jobs", "1"]) == 0
    data = results.read(out, "isoflop")
    assert data["complete"] and len(data["rows"]) == sum(len(v) for v in script.QUICK_PLAN.values())
    assert {r["size"] for r in data["rows"]} == set(next(iter(script.QUICK_PLAN.values())))
    assert len(data["flop_check"]) == 3 and data["config"]["carry_over"]
    # --resume keeps every finished run and trains nothing new
    assert script.main(["--quick", "--out", str(out), "--jobs", "1", "--resume"]) == 0
    assert results.read(out, "isoflop")["rows"] == data["rows"]
    with pytest.raises(SystemExit):
        script.main(["--quick"])  # --quick needs --out: it never overwrites the committed file
