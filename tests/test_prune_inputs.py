"""labkit.prune: regression tests for issue 11 (NaN weights, bad block, empty models, re-pruning, devices)."""
import pytest
import torch
from torch import nn

from labkit import models, prune


def _with(value):
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    w[2, 3] = value
    return w


MASKS = {
    "random": lambda w: prune.random_mask(w, 0.5),
    "magnitude": lambda w: prune.magnitude_mask(w, 0.5),
    "global": lambda w: prune.global_magnitude_masks({"a": w}, 0.5),
    "structured": lambda w: prune.structured_mask(w, 0.5),
    "nm": lambda w: prune.nm_mask(w, 2, 4),
    "block": lambda w: prune.block_mask(w, 0.5, block=4),
    "unit_scores": lambda w: prune.unit_scores(w),
    "block_scores": lambda w: prune.block_scores(w, 2),
}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("fn", list(MASKS), ids=list(MASKS))
def test_every_mask_function_rejects_nan_and_inf_weights(fn, value):
    """nm_mask used to drop a NaN weight while magnitude_mask kept it: now both refuse, with the same message."""
    with pytest.raises(ValueError, match="NaN or infinite"):
        MASKS[fn](_with(value))


def test_prune_model_names_the_layer_with_a_nan_weight():
    model = models.MLP(hidden=(8,), seed=0)
    with torch.no_grad():
        model.net[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weight of layer 'net.2' has 1 NaN"):
        prune.prune_model(model, "magnitude", 0.5)


@pytest.mark.parametrize("fn", [lambda w: prune.magnitude_mask(w, 0.5), lambda w: prune.nm_mask(w),
                                lambda w: prune.block_mask(w, 0.5)])
def test_empty_weights_are_rejected(fn):
    with pytest.raises(ValueError, match="weight must not be empty"):
        fn(torch.zeros(0, 8))


@pytest.mark.parametrize("block", ["4", 4.0, True, (4, "4"), [4, 4, 4], None])
def test_block_of_the_wrong_type_is_a_clear_type_error(block):
    """block="4" used to fail with 'not enough values to unpack'."""
    with pytest.raises((TypeError, ValueError), match="block"):
        prune.block_mask(torch.randn(8, 8), 0.5, block=block)
    with pytest.raises((TypeError, ValueError), match="block"):
        prune.block_scores(torch.randn(8, 8), block=block)


@pytest.mark.parametrize("fn, kwargs", [(prune.nm_mask, {"n": "2"}), (prune.nm_mask, {"m": 4.0}),
                                        (prune.random_mask, {"sparsity": 0.5, "seed": -1}),
                                        (prune.structured_mask, {"sparsity": 0.5, "norm": True})])
def test_other_integer_arguments_are_checked(fn, kwargs):
    with pytest.raises((TypeError, ValueError), match=next(iter(kwargs)) if "sparsity" not in kwargs
                       else list(kwargs)[1]):
        fn(torch.randn(8, 8), **kwargs)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_sparsity_report_of_a_model_without_prunable_layers_is_a_clear_error():
    """sparsity_report(nn.ReLU()) used to divide by zero."""
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d layers"):
        prune.sparsity_report(nn.ReLU())
    assert prune.count_weights(nn.ReLU()) == 0  # a sum over zero layers is 0, not an error
    report = prune.sparsity_report(nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 2)))  # zero items in one layer
    assert report["layers"][0]["sparsity"] == 0.0 and report["numel"] == 8


def test_lowering_the_sparsity_revives_the_largest_pruned_weights_not_the_first_ones():
    """Pruning an 80%-pruned layer to 50% brings back the pruned weights with the largest |weight_orig|."""
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    w0 = layer.weight.detach().clone()
    model = nn.Sequential(layer)
    prune.prune_model(model, "magnitude", 0.8)
    first = layer.weight_mask.bool().clone()
    prune.prune_model(model, "magnitude", 0.5)
    second = layer.weight_mask.bool()
    assert int((~second).sum()) == 100 and bool((second >= first).all())  # nested: kept weights stay kept
    revived = second & ~first
    # The revived ones are exactly the 60 largest |w| among the pruned: magnitude order, not position.
    pruned_mags = w0.abs()[~first]
    assert int(revived.sum()) == 60  # 160 pruned at 80%, 100 at 50%
    assert w0.abs()[revived].min() >= pruned_mags.sort(descending=True).values[59]
    # ... which is what a single prune of the dense layer to 50% keeps, too.
    assert torch.equal(second, prune.magnitude_mask(w0, 0.5))


@pytest.mark.parametrize("method, kwargs", [("structured", {}), ("block", {"block": 2}), ("global_magnitude", {})])
def test_lowering_the_sparsity_revives_by_magnitude_for_other_criteria(method, kwargs):
    model = models.MLP(hidden=(16,), seed=0)
    dense = {n: w.clone() for n, w in prune.current_weights(model).items()}
    layers = ["net.0"] if method != "global_magnitude" else None
    prune.prune_model(model, method, 0.75, layers=layers, **kwargs)
    masks = prune.prune_model(model, method, 0.25, layers=layers, **kwargs)
    fresh = models.MLP(hidden=(16,), seed=0)
    expected = prune.prune_model(fresh, method, 0.25, layers=layers, **kwargs)
    for name in masks:
        assert torch.equal(masks[name], expected[name]), name
    assert dense  # the dense weights were read before pruning


def test_raising_the_sparsity_keeps_every_earlier_pruned_weight_pruned():
    model = models.MLP(hidden=(16,), seed=0)
    first = {n: m.clone() for n, m in prune.prune_model(model, "magnitude", 0.5).items()}
    second = prune.prune_model(model, "magnitude", 0.8)
    for name in first:
        assert bool((second[name] <= first[name]).all())


def test_nm_re_pruning_breaks_ties_by_the_unmasked_weight():
    w = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    masked = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    assert prune.nm_mask(masked, 2, 4).tolist() == [[False, False, True, True]]
    assert prune.nm_mask(masked, 3, 4, orig=w).tolist() == [[True, False, True, True]]
    with pytest.raises(ValueError, match="orig must have the weight's shape"):
        prune.nm_mask(masked, orig=torch.ones(2, 4))


def test_masks_are_built_on_the_weights_device_without_numpy(monkeypatch):
    """_lowest_k used numpy (CPU only): a CUDA model failed with a device mismatch. Now torch sorts on the device."""
    import numpy as np

    def no_numpy(*args, **kwargs):
        raise AssertionError("masks must not go through numpy")

    monkeypatch.setattr(np, "argsort", no_numpy)
    w = torch.randn(8, 8)
    for fn in (lambda: prune.magnitude_mask(w, 0.5), lambda: prune.random_mask(w, 0.5),
               lambda: prune.block_mask(w, 0.5, 2), lambda: prune.structured_mask(w, 0.5)):
        assert fn().device == w.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pruning_a_cuda_model_keeps_masks_on_the_gpu():
    model = models.MLP(hidden=(16,), seed=0).cuda()
    for method, kwargs in [("random", {}), ("magnitude", {}), ("global_magnitude", {}), ("structured", {}),
                           ("nm", {}), ("block", {"block": 2, "skip_incompatible": True})]:
        m = models.MLP(hidden=(16,), seed=0).cuda()
        masks = prune.prune_model(m, method, None if method == "nm" else 0.5, **kwargs)
        assert all(mask.device.type == "cuda" for mask in masks.values()), method
        m(torch.randn(4, 64, device="cuda"))
    prune.prune_model(model, "magnitude", 0.8)
    prune.prune_model(model, "magnitude", 0.5)
    report = prune.sparsity_report(model)
    assert abs(report["overall"] - 0.5) < 0.01


def test_apply_mask_checks_mask_values():
    with pytest.raises(ValueError, match="only 0s and 1s"):
        prune.apply_mask(nn.Linear(4, 4), torch.full((4, 4), 0.5))
