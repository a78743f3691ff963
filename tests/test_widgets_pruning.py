"""The pruning explorer driven from Python: what each of its figures and its status line show."""
import re

import numpy as np
import pytest

from labkit.experiments import pruning_sweep as S
from labkit.experiments.pruning_explorer import explorer_table
from labkit.widgets import pruning as P


@pytest.fixture(scope="module")
def sweep():
    return S.load_sweep()


@pytest.fixture(scope="module")
def explorer(sweep, tmp_path_factory):
    import os

    old = os.environ.get("LABKIT_CACHE")
    os.environ["LABKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # start cold, like CI
    try:
        yield P.PruningExplorer(sweep)
    finally:
        if old is None:
            os.environ.pop("LABKIT_CACHE")
        else:
            os.environ["LABKIT_CACHE"] = old


def test_explorer_responds_to_every_control(explorer):
    times = []

    def snapshot():
        times.append(explorer.last_update_ms)
        return (tuple(explorer.curve_fig.data[2].x), tuple(explorer.curve_fig.data[2].y),
                np.asarray(explorer.mask_fig.data[0].z).sum(), tuple(explorer.layers_fig.data[0].y),
                tuple(explorer.hist_fig.data[1].y))

    start = snapshot()
    explorer.sparsity.value = 0.5
    after_sparsity = snapshot()
    assert after_sparsity[0] != start[0] and after_sparsity[2] > start[2]  # fewer weights removed, more kept
    explorer.finetune.value = False
    after_ft = snapshot()
    assert after_ft[1] != after_sparsity[1]
    explorer.granularity.value = "structured"
    assert list(explorer.criterion.options) == ["magnitude"] and explorer.method == "structured"
    mask = np.asarray(explorer.mask_fig.data[0].z)
    assert set(mask.all(axis=1) | ~mask.any(axis=1)) == {True}  # whole rows kept or removed
    explorer.granularity.value = "unstructured"
    explorer.criterion.value = "global magnitude"
    assert explorer.method == "global_magnitude"
    assert explorer.hist_fig.layout.shapes  # a threshold line for magnitude without fine-tuning
    before_layer = np.asarray(explorer.mask_fig.data[0].z).shape
    explorer.layer.value = explorer.layer.options[1]
    assert np.asarray(explorer.mask_fig.data[0].z).shape != before_layer
    snapshot()
    explorer.sparsity.value = 0.0
    assert explorer.layers_fig.data[0].y == (0.0,) * len(explorer.layer.options)
    snapshot()
    assert all(t > 0 for t in times)
    print(f"explorer update times (ms, on this machine): median {np.median(times):.1f}, max {max(times):.1f}")


def removed_in_status(explorer) -> float:
    """The "% removed" number of the status line."""
    match = re.search(r"<b>([0-9.]+)%</b> of the weights removed", explorer.status.value)
    assert match, explorer.status.value
    return float(match.group(1))


def bars_total(explorer) -> float:
    """What the per-layer bars add up to: each layer's removed share weighted by its number of weights."""
    bars = dict(zip(explorer.layers_fig.data[0].x, explorer.layers_fig.data[0].y, strict=True))
    sizes = explorer.table["sizes"]
    return sum(bars[n] * sizes[n] for n in bars) / sum(sizes.values())


@pytest.mark.parametrize("granularity", ["unstructured", "block", "structured"])
def test_status_removed_equals_what_the_bars_add_up_to(explorer, granularity):
    explorer.granularity.value = granularity
    for finetune in (False, True):
        explorer.finetune.value = finetune
        for s in explorer.table["grid"]:
            explorer.sparsity.value = s
            assert removed_in_status(explorer) == pytest.approx(bars_total(explorer), abs=0.06), (granularity, s)
            assert ("fine-tuned" if finetune else "one-shot") in explorer.status.value
            assert ("one-shot" if finetune else "fine-tuned") not in explorer.status.value


def test_structured_counts_the_inputs_of_removed_units(explorer):
    # MLP(64, (256, 128), 10) with half of each hidden layer removed keeps 64*128 + 128*64 + 64*10 weights
    # (exercise 2.3): the bars show 50% / 75% / 50% removed, and the status line 66.2%.
    explorer.granularity.value = "structured"
    explorer.finetune.value = False
    explorer.sparsity.value = 0.5
    assert list(explorer.layers_fig.data[0].y) == [50.0, 75.0, 50.0]
    assert removed_in_status(explorer) == round(100 * (1 - (64 * 128 + 128 * 64 + 64 * 10) / 50432), 1)
    # the mask shown for the second layer: whole rows off (its own units) and whole columns off (dead inputs)
    explorer.layer.value = "net.2"
    mask = np.asarray(explorer.mask_fig.data[0].z).astype(bool)
    assert mask.shape == (128, 256) and mask.sum() == 64 * 128
    assert (mask.any(axis=0).sum(), mask.any(axis=1).sum()) == (128, 64)
    explorer.layer.value = "net.0"


def test_effective_masks_follow_remove_units():
    from labkit import models, prune
    from labkit.experiments.pruning_explorer import effective_masks

    for kind in ("mlp", "cnn"):
        model = models.build(kind, seed=0)
        masks = {n: m.numpy().astype(bool) for n, m in prune.prune_model(model, "structured", 0.5).items()}
        masks = effective_masks({**{n: np.ones(tuple(w.shape), bool) for n, w in prune.current_weights(model).items()},
                                 **masks})
        small = prune.remove_units(models.build(kind, seed=0), 0.5)
        assert sum(int(m.sum()) for m in masks.values()) == prune.count_weights(small), kind
    with pytest.raises(ValueError, match="multiple"):
        effective_masks({"a": np.zeros((3, 4), bool), "b": np.ones((2, 4), bool)})


def test_layout_keeps_controls_apart(explorer):
    # Rows wrap instead of squeezing, controls keep their width, and the status line has a row of its own.
    rows = explorer.controls.children
    assert explorer.status in rows and all(explorer.status not in getattr(r, "children", ()) for r in rows)
    for row in rows[:2]:
        assert row.layout.flex_flow == "row wrap"
        for control in row.children:
            assert control.layout.flex == "0 0 auto"
    assert explorer.sparsity.style.description_width == explorer.finetune.style.description_width == "80px"
    assert explorer.sparsity in rows[1].children and explorer.finetune in rows[1].children


def test_bad_inputs(sweep):
    from labkit.figures.pruning import storage_figure

    with pytest.raises(ValueError, match="model='cnn'"):
        P.PruningExplorer(sweep, model="cnn")
    with pytest.raises(TypeError, match="sweep"):
        P.PruningExplorer(sweep=[1, 2])
    with pytest.raises(TypeError, match="sweep"):
        explorer_table({"rows": []})
    with pytest.raises(TypeError, match="sizes"):
        storage_figure({})
