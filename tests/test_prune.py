"""labkit.prune: the invariants every pruning method must keep, and clear errors for bad input."""
import copy

import pytest
import torch
from torch import nn

from labkit import data, models, prune, train


@pytest.fixture(scope="module")
def digits():
    return data.digits(0)


@pytest.fixture(scope="module")
def trained_mlp(digits):
    model = models.MLP(hidden=(64, 32), seed=0)
    train.train(model, digits.train, epochs=5, seed=0)
    return model


def _zeros(mask):
    return int((~mask.bool()).sum())


# --- exact sparsity per method ------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_unstructured_masks_prune_exactly(sparsity):
    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(1))
    k = round(sparsity * w.numel())
    assert _zeros(prune.magnitude_mask(w, sparsity)) == k
    assert _zeros(prune.random_mask(w, sparsity, seed=3)) == k
    conv = torch.randn(8, 4, 3, 3)
    assert _zeros(prune.magnitude_mask(conv, sparsity)) == round(sparsity * conv.numel())


def test_magnitude_keeps_the_largest_and_breaks_ties_exactly():
    w = torch.tensor([[0.1, -3.0, 0.2, 2.0]])
    assert prune.magnitude_mask(w, 0.5).tolist() == [[False, True, False, True]]
    ties = torch.zeros(4, 4)  # all equal: the count must still be exact
    assert _zeros(prune.magnitude_mask(ties, 0.25)) == 4


def test_structured_and_block_prune_whole_units_and_tiles():
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    w[3] *= 0.01  # the weakest row
    mask = prune.structured_mask(w, 0.25)
    assert (mask.all(dim=1) | (~mask).all(dim=1)).all()  # whole rows only
    assert int((~mask).all(dim=1).sum()) == 4 and not mask[3].any()
    bm = prune.block_mask(w, 0.5, block=4)
    tiles = bm.reshape(4, 4, 2, 4).permute(0, 2, 1, 3).reshape(8, 16)
    assert ((tiles.all(dim=1)) | (~tiles).all(dim=1)).all()  # each 4x4 tile all kept or all pruned
    assert _zeros(bm) == 4 * 16
    assert prune.structured_mask(w, 0.99).any(dim=1).sum() == 1  # one unit always survives


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (3, 3)])
def test_every_nm_group_holds_the_pattern(n, m):
    w = torch.randn(12, 24, generator=torch.Generator().manual_seed(2))
    mask = prune.nm_mask(w, n, m)
    groups = mask.reshape(-1, m)
    assert (groups.sum(dim=1) == n).all()
    kept = (w * mask).reshape(-1, m).abs()
    dropped = (w * ~mask).reshape(-1, m).abs()
    # within each group, every kept weight is at least as large as every dropped one
    assert (kept.masked_fill(~groups, float("inf")).min(dim=1).values >= dropped.max(dim=1).values).all()
    assert prune.is_nm(w * mask, n, m)


def test_nm_on_conv_groups_along_flattened_inputs():
    conv = torch.randn(8, 4, 3, 3)  # 36 inputs per filter
    mask = prune.nm_mask(conv, 2, 4)
    assert (mask.reshape(8, -1).reshape(-1, 4).sum(dim=1) == 2).all()


def test_prune_model_exact_overall_sparsity(trained_mlp):
    for method in ("random", "magnitude", "global_magnitude"):
        model = copy.deepcopy(trained_mlp)
        prune.prune_model(model, method, 0.8)
        report = prune.sparsity_report(model)
        total = report["numel"]
        if method == "global_magnitude":
            assert report["nonzeros"] == total - round(0.8 * total)
        else:
            for layer in report["layers"]:
                assert layer["numel"] - layer["nonzeros"] == round(0.8 * layer["numel"])
    model = copy.deepcopy(trained_mlp)
    prune.prune_model(model, "nm", None)
    assert prune.sparsity_report(model)["overall"] == pytest.approx(0.5)


# --- global thresholds rank across layers -------------------------------------------------------

def test_global_magnitude_ranks_across_layers():
    small = torch.full((4, 4), 0.01)
    large = torch.linspace(1, 2, 16).reshape(4, 4)
    masks = prune.global_magnitude_masks({"a": small, "b": large}, 0.5)
    assert not masks["a"].any() and masks["b"].all()  # the whole small layer goes first
    masks = prune.global_magnitude_masks({"a": small, "b": large}, 0.75)
    kept_b = large[masks["b"]]
    assert kept_b.min() >= large[~masks["b"]].max()  # one threshold, ranked across both layers


def test_global_threshold_is_shared_in_a_model(trained_mlp):
    model = copy.deepcopy(trained_mlp)
    prune.prune_model(model, "global_magnitude", 0.7)
    kept, dropped = [], []
    for layer in models.prunable_layers(model).values():
        kept.append(layer.weight_orig[layer.weight_mask.bool()].abs())
        dropped.append(layer.weight_orig[~layer.weight_mask.bool()].abs())
    assert torch.cat(kept).min() >= torch.cat(dropped).max()


# --- permanence and physical removal ------------------------------------------------------------

def test_make_permanent_keeps_predictions_identical(trained_mlp, digits):
    model = copy.deepcopy(trained_mlp)
    prune.prune_model(model, "magnitude", 0.9)
    before = model(digits.test.x)
    assert any(prune.is_masked(m) for m in model.modules())
    prune.make_permanent(model)
    assert not any(prune.is_masked(m) for m in model.modules())
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())
    assert torch.equal(model(digits.test.x), before)
    assert prune.sparsity_report(model)["layers"][0]["sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_masks_survive_training(trained_mlp, digits):
    model = copy.deepcopy(trained_mlp)
    masks = prune.prune_model(model, "magnitude", 0.8)
    train.train(model, digits.train, epochs=1)
    for name, layer in models.prunable_layers(model).items():
        assert not layer.weight[~masks[name]].any()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_structured_removal_keeps_kept_units_outputs(kind, digits):
    model = models.build(kind, seed=0)
    train.train(model, digits.train, epochs=1)
    small = prune.remove_units(model, 0.5)
    first_old, first_new = model.net[0], small.net[0]
    x = digits.test.x[:50] if kind == "mlp" else digits.test.x[:50].reshape(-1, 1, 8, 8)
    keep = prune._kept_units(first_old.weight, 0.5, 1)
    assert torch.equal(first_new(x), first_old(x)[:, keep])  # the same units, bit for bit
    assert first_new.out_features == 128 if kind == "mlp" else first_new.out_channels == 8


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_structured_mask_and_removal_compute_the_same_function(kind, digits):
    model = models.build(kind, seed=1)
    train.train(model, digits.train, epochs=1)
    masked = copy.deepcopy(model)
    prune.prune_model(masked, "structured", 0.5)
    small = prune.remove_units(masked, 0.5)
    assert prune.count_weights(small) < prune.count_weights(model)
    torch.testing.assert_close(small(digits.test.x), masked(digits.test.x), rtol=1e-5, atol=1e-5)
    assert torch.equal(small(digits.test.x).argmax(1), masked(digits.test.x).argmax(1))


# --- schedules, lottery tickets, sensitivity ----------------------------------------------------

def test_cubic_schedule():
    assert prune.cubic_sparsity(0, 0.9, 0, 100) == 0.0
    assert prune.cubic_sparsity(100, 0.9, 0, 100) == 0.9
    mid = prune.cubic_sparsity(50, 0.9, 0, 100)
    assert mid == pytest.approx(0.9 - 0.9 * 0.5 ** 3)
    values = [prune.cubic_sparsity(t, 0.9, 0, 100) for t in range(0, 101, 10)]
    assert values == sorted(values)


@pytest.mark.parametrize("schedule", ["one_shot", "iterative", "gradual"])
def test_schedules_reach_the_target_and_recover(schedule, trained_mlp, digits):
    model = copy.deepcopy(trained_mlp)
    prune.prune_and_finetune(model, digits.train, "magnitude", 0.9, schedule=schedule, epochs=4, rounds=2)
    assert prune.sparsity_report(model)["overall"] == pytest.approx(0.9, abs=1e-3)
    no_ft = copy.deepcopy(trained_mlp)
    prune.prune_model(no_ft, "magnitude", 0.9)
    assert train.evaluate(model, digits.val) > train.evaluate(no_ft, digits.val)


def test_lottery_ticket_keeps_mask_and_rewinds(digits):
    ticket = prune.lottery_ticket("mlp", digits.train, 0.8, epochs=3, rewind_epoch=1)
    assert prune.sparsity_report(ticket)["overall"] == pytest.approx(0.8, abs=1e-3)
    assert train.evaluate(ticket, digits.val) > 0.5


def test_sensitivity_scan_and_choice(trained_mlp, digits):
    sparsities = (0.5, 0.9)
    scan = prune.sensitivity_scan(trained_mlp, digits.val, sparsities)
    assert list(scan) == ["net.0", "net.2", "net.4"] and all(len(v) == 2 for v in scan.values())
    chosen = prune.choose_layer_sparsity(scan, sparsities, dense_accuracy=1.0, max_drop=0.0)
    assert set(chosen.values()) <= {0.0}
    chosen = prune.choose_layer_sparsity(scan, sparsities, dense_accuracy=0.0, max_drop=0.0)
    assert set(chosen.values()) == {0.9}
    model = copy.deepcopy(trained_mlp)
    prune.prune_model(model, "magnitude", {"net.0": 0.9, "net.2": 0.5})
    sp = {r["name"]: r["sparsity"] for r in prune.sparsity_report(model)["layers"]}
    assert sp == pytest.approx({"net.0": 0.9, "net.2": 0.5, "net.4": 0.0}, abs=1e-3)


# --- storage accounting -------------------------------------------------------------------------

def test_storage_bytes_formats():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    dense = prune.storage_bytes(w)
    assert dense["dense"] == 8 * 16 * 4 and dense["2:4"] is None
    assert dense["csr"] == 128 * 4 + 128 * 4 + 9 * 4  # values + column indices + row pointers
    assert dense["bitmask"] == 128 * 4 + 16
    w24 = w * prune.nm_mask(w, 2, 4)
    s = prune.storage_bytes(w24)
    assert s["2:4"] == 64 * 4 + 16  # half the values + 2 bits per kept value
    assert s["csr"] == 64 * 8 + 9 * 4
    wb = w * prune.block_mask(w, 0.5, block=4)
    assert prune.storage_bytes(wb)["bsr"] == 4 * 16 * 4 + 4 * 4 + 3 * 4  # 4 tiles of 16 + tile indices + pointers
    assert prune.storage_bytes(torch.randn(6, 6))["bsr"] is None
    assert prune.storage_bytes(w, value_bytes=2)["dense"] == 8 * 16 * 2


# --- bad input raises clear errors --------------------------------------------------------------

@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_range(bad):
    with pytest.raises(ValueError, match=r"sparsity must be (in \[0, 1\)|a finite number)"):
        prune.magnitude_mask(torch.randn(4, 4), bad)
    with pytest.raises(ValueError, match="sparsity"):
        prune.prune_model(models.MLP(hidden=(8,)), "magnitude", bad)


def test_bad_inputs_name_the_problem():
    w = torch.randn(8, 8)
    with pytest.raises(ValueError, match="n must be <= m"):
        prune.nm_mask(w, 4, 2)
    with pytest.raises(ValueError, match="divisible by m=3"):
        prune.nm_mask(w, 2, 3)
    with pytest.raises(ValueError, match="must divide"):
        prune.block_mask(w, 0.5, block=3)
    with pytest.raises(TypeError, match="sparsity"):
        prune.magnitude_mask(w, "0.5")
    with pytest.raises(ValueError, match="method"):
        prune.prune_model(models.MLP(hidden=(8,)), "lasso", 0.5)
    with pytest.raises(ValueError, match="skip_incompatible"):
        prune.prune_model(models.MLP(hidden=(8,)), "block", 0.5, block=4)
    with pytest.raises(ValueError, match="norm"):
        prune.structured_mask(w, 0.5, norm=3)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        prune.magnitude_mask(torch.randn(8), 0.5)
    with pytest.raises(ValueError, match="fixed"):
        prune.prune_model(models.MLP(hidden=(8,)), "nm", 0.9)
    with pytest.raises(ValueError, match="schedule"):
        prune.prune_and_finetune(models.MLP(hidden=(8,)), data.digits(0).train, "magnitude", 0.5, schedule="fast")


def test_unsupported_modules_raise():
    with pytest.raises(TypeError, match="nn.Linear or nn.Conv2d"):
        prune.apply_mask(nn.LSTM(4, 4), torch.ones(16, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="no nn.Linear or nn.Conv2d"):
        prune.prune_model(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(4)), "magnitude", 0.5)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(TypeError, match="layer '1'"):
        prune.prune_model(model, "magnitude", 0.5, layers=["1"])
    with pytest.raises(ValueError, match="not a module"):
        prune.prune_model(model, "magnitude", 0.5, layers=["2"])
    with pytest.raises(TypeError, match="MLP and SmallCNN"):
        prune.remove_units(model, 0.5)
    with pytest.raises(TypeError, match="model"):
        prune.sparsity_report("mlp")


def test_structured_l1_and_l2_rank_differently():
    # row 0: many small weights (large L1, small L2); row 1: one big weight (small L1, large L2)
    w = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.9, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    assert prune.structured_mask(w, 1 / 3, norm=1)[:, 0].tolist() == [True, False, True]
    assert prune.structured_mask(w, 1 / 3, norm=2)[:, 0].tolist() == [False, True, True]


def test_remove_units_per_layer_sparsity_and_errors():
    model = models.MLP(seed=0)
    small = prune.remove_units(model, [0.5, 0.75])
    assert small.config()["hidden"] == (128, 32)
    with pytest.raises(ValueError, match="one value per hidden layer"):
        prune.remove_units(model, [0.5])
    with pytest.raises(ValueError, match="sparsity"):
        prune.remove_units(model, 1.0)
