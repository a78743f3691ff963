"""labkit.latency: the shape of its output, the crossover logic and clear errors (no timing asserts)."""
import pytest

from labkit import latency
from labkit.figures.latency import latency_figure


@pytest.fixture(scope="module")
def rows():
    return latency.cpu_linear_latency(out_features=64, in_features=64, tokens=4, sparsities=(0.0, 0.9), repeats=1)


def test_rows_have_every_path(rows):
    assert [r["sparsity"] for r in rows] == [0.0, 0.9]
    for r in rows:
        assert set(r) == {"sparsity", *latency.PATHS, *(k.replace("_ms", "_iqr_ms") for k in latency.PATHS)}
        assert all(r[k] > 0 for k in latency.PATHS)
    fig = latency_figure(rows)
    assert [t.name for t in fig.data] == ["dense", "masked (zeros kept)", "structured (smaller dense)", "torch CSR"]
    assert set(latency.speedup_table(rows)[0]) == {"sparsity", "masked", "structured", "csr"}


def _row(s, dense, csr):
    return {"sparsity": s, "dense_ms": dense, "masked_ms": dense, "structured_ms": dense, "csr_ms": csr}


def test_crossover_needs_to_stay_faster_by_a_margin():
    rows = [_row(0.0, 1.0, 3.0), _row(0.5, 1.0, 0.5), _row(0.9, 1.0, 1.2), _row(0.95, 1.0, 0.8), _row(0.99, 1.0, 0.2)]
    assert latency.crossover(rows) == 0.95  # the win at 0.5 is not kept at 0.9
    assert latency.crossover(rows[::-1]) == 0.95  # order of rows does not matter
    assert latency.crossover([_row(0.5, 1.0, 0.95)]) is None  # 5% faster is within the 10% margin
    assert latency.crossover([_row(0.5, 1.0, 0.95)], margin=0.0) == 0.5
    assert latency.crossover(rows, key="masked_ms") is None
    assert latency.crossover([_row(0.0, 1.0, 0.5), _row(0.5, 1.0, 0.5)]) == 0.5  # sparsity 0 is the baseline


@pytest.mark.parametrize("kwargs, match", [
    ({"sparsities": (0.5, 1.0)}, "sparsities"), ({"sparsities": ()}, "sparsities"), ({"tokens": 0}, "tokens"),
    ({"out_features": -3}, "out_features"), ({"repeats": 0}, "repeats"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        latency.cpu_linear_latency(**kwargs)


def test_bad_rows_and_keys():
    with pytest.raises(TypeError, match="rows"):
        latency.crossover([])
    with pytest.raises(ValueError, match="key"):
        latency.crossover([_row(0.5, 1, 1)], key="gpu_ms")
    with pytest.raises(ValueError, match="margin"):
        latency.crossover([_row(0.5, 1, 1)], margin=1.5)
    with pytest.raises(ValueError, match="keys"):
        latency_figure([{"sparsity": 0.5}])
