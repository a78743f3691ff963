"""The routing explorer widget and the committed routing grid behind it."""
import time

import pytest

from labkit.moe import routing_grid as rg
from labkit.widgets.moe import RoutingExplorer


@pytest.fixture(scope="module")
def grid():
    return rg.load_routing_grid()


def test_committed_grid_is_complete_and_consistent(grid):
    combos = {(e, k, w) for e in rg.EXPERTS for k in rg.TOP_K if k <= e for w in rg.BALANCE_WEIGHTS}
    assert set(grid) == combos
    for p in grid.values():
        assert sum(p.routed) == p.tokens * p.top_k
        assert p.dropped["dropless"] == 0 and p.load["dropless"] == p.routed
        for cf, load in p.load.items():
            assert sum(load) + p.dropped[cf] == sum(p.routed)
            assert max(load) <= p.capacity[cf]
        assert p.active_params == p.n_experts * rg.D_MODEL + p.top_k * 3 * rg.D_MODEL * rg.D_FF


def test_balancing_loss_evens_out_the_load_on_the_grid(grid):
    # Summed over every configuration, a strong balancing loss drops fewer tokens at capacity 1.0.
    drops = {w: sum(p.dropped["1"] for p in grid.values() if p.balance_weight == w) for w in rg.BALANCE_WEIGHTS}
    assert drops[0.1] < drops[0.0]


def test_one_point_recomputes_like_the_committed_grid(grid):
    from labkit.moe.tiny_gpt import train_threads

    with train_threads():
        p = rg._train_point(2, 1, 0.01, steps=40, seed=0)
    q = grid[(2, 1, 0.01)]
    assert p.active_params == q.active_params and p.flops_per_token == q.flops_per_token
    assert abs(p.routed[0] - q.routed[0]) <= 0.02 * p.tokens  # routing agrees up to float noise across machines


def test_widget_responds_to_every_control(grid):
    w = RoutingExplorer(grid)
    before = list(w.figure.data[0].y)
    start = time.perf_counter()
    w.experts.value = 16
    elapsed = time.perf_counter() - start
    print(f"routing explorer update: {elapsed * 1e3:.1f} ms")
    assert len(w.figure.data[0].y) == 16 and list(w.figure.data[0].y) != before
    w.top_k.value = 4
    assert "top-4" in w.figure.layout.title.text
    w.capacity_factor.value = "0.5"
    dropped = list(w.figure.data[1].y)
    assert sum(dropped) == grid[(16, 4, 0.01)].dropped["0.5"] > 0
    assert_capacity_line(w, grid[(16, 4, 0.01)].capacity["0.5"])
    w.capacity_factor.value = "dropless"
    assert sum(w.figure.data[1].y) == 0 and "dropped: <b>0</b>" in w.summary.value
    assert w.figure.layout.shapes == ()  # no capacity without a capacity limit
    w.balance_weight.value = 0.0
    assert w.point().balance_weight == 0.0
    w.experts.value = 2  # top-k 4 is impossible with 2 experts: it is capped
    assert w.top_k.value == 2 and len(w.figure.data[0].y) == 2


def assert_capacity_line(w: RoutingExplorer, capacity: int) -> None:
    """The figure shows: bars on exactly the expert categories, and one dashed line across them at ``capacity``."""
    names = [str(e) for e in range(w.experts.value)]
    assert w.figure.layout.xaxis.type == "category" and list(w.figure.layout.xaxis.categoryarray) == names
    for trace in w.figure.data:  # no trace adds a category (such as "-0.5" or "15.5") to the expert axis
        assert list(trace.x) == names
    (line,) = w.figure.layout.shapes
    assert line.type == "line" and line.name == "capacity" and line.showlegend
    # from the left edge of the first expert's bar to the right edge of the last one: the whole x axis
    assert (line.xref, line.x0, line.x1) == ("x domain", 0, 1)
    assert (line.yref, line.y0, line.y1) == ("y", capacity, capacity)
    # the height is what drops tokens: no bar's processed part rises above it
    assert max(w.figure.data[0].y) <= capacity


def test_capacity_line_spans_the_experts_at_the_capacity(grid):
    w = RoutingExplorer(grid)
    for experts, top_k, cf in [(4, 1, "1.25"), (16, 2, "1"), (2, 2, "0.5"), (8, 4, "2")]:
        w.experts.value, w.top_k.value, w.capacity_factor.value = experts, top_k, cf
        p = w.point()
        assert_capacity_line(w, p.capacity[cf])
        # where the load exceeds the capacity, the bars show the excess as dropped
        assert [r - min(r, p.capacity[cf]) for r in p.routed] == list(w.figure.data[1].y)


def test_bad_grid_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="grid"):
        RoutingExplorer({})
    with pytest.raises(FileNotFoundError, match="moe_train_sweep.py"):
        rg.load_routing_grid(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="steps"):
        rg.compute_routing_grid(steps=0)
