"""The pruning explorer driven from Python, and the sweep summaries it and notebook 02 show."""
import numpy as np
import pytest

from labkit.widgets import pruning as P


@pytest.fixture(scope="module")
def sweep():
    return P.load_sweep()


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


def test_committed_sweep_has_three_seeds_and_every_method(sweep):
    cfg = sweep["config"]
    assert len(cfg["seeds"]) >= 3 and {"mlp", "cnn"} <= set(cfg["models"])
    for needed in (0.9, 0.95, 0.98):
        assert needed in cfg["sparsities"]
    methods = {r["method"] for r in sweep["runs"]}
    assert {"dense", "random", "magnitude", "global_magnitude", "block", "structured", "2:4", "small_dense",
            "lottery_rewind", "lottery_reinit", "dense_long"} <= methods
    rows = P.summarize(sweep, "cnn")
    assert all(r["n"] == len(cfg["seeds"]) for r in rows)


def test_goal_is_stated_from_the_numbers(sweep):
    for model in ("mlp", "cnn"):
        goal = P.goal_at_90(sweep, model)
        assert goal["met"] == (goal["dense"] - goal["pruned"] <= 0.01)
        assert P.goal_text(goal).endswith("MET" if goal["met"] else "NOT met")
        assert "trained as many extra epochs" in P.goal_text(goal)


def test_tables_and_figures(sweep):
    assert "global magnitude" in P.accuracy_table(sweep, "mlp", ["global_magnitude"], True)
    assert P.small_dense_table(sweep).count("\n") == len(sweep["config"]["small_dense_sparsities"])
    assert P.nm_table(sweep, "cnn").count("\n") == len(sweep["config"]["nm_patterns"])
    assert "rewind" in P.lottery_table(sweep)
    fig = P.accuracy_figure(sweep, "mlp", ["magnitude", "structured"])
    assert len(fig.data) == 2 and max(fig.data[0].y) <= 100


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


def test_bad_inputs(sweep, tmp_path):
    with pytest.raises(FileNotFoundError, match="pruning_sweep.py"):
        P.load_sweep(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="model"):
        P.summarize(sweep, "transformer")
    with pytest.raises(ValueError, match="metric"):
        P.summarize(sweep, "mlp", "loss")
    with pytest.raises(ValueError, match="model='cnn'"):
        P.PruningExplorer(sweep, model="cnn")
    with pytest.raises(TypeError, match="sweep"):
        P.PruningExplorer(sweep=[1, 2])
    with pytest.raises(TypeError, match="sizes"):
        P.storage_figure({})
