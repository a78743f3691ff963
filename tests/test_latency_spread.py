"""labkit.latency under load: interleaved samples, medians with IQR, the busy-machine warning, a noise-proof crossover.

No assertion here depends on how fast this machine is: synthetic samples and rows stand in for timings.
"""
import warnings

import pytest

from labkit import latency
from labkit.figures.latency import latency_figure


def test_interleaved_times_takes_every_path_in_turn():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "b", "c")}
    samples = latency.interleaved_times(fns, repeats=3, warmup=0, min_time=0.0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts with another path
    assert all(t >= 0 for v in samples.values() for t in v)


@pytest.mark.parametrize("kwargs, error", [({"fns": {}}, TypeError), ({"fns": {"a": 1}}, TypeError),
                                           ({"repeats": 0}, ValueError), ({"min_time": float("nan")}, ValueError)])
def test_interleaved_times_rejects_bad_input(kwargs, error):
    args = {"fns": {"a": lambda: None}, **kwargs}
    with pytest.raises(error):
        latency.interleaved_times(**args)


def _samples(spread_of_dense: float):
    """Fake seconds per call: every path 1 ms, dense spread by ``spread_of_dense`` around its median."""
    def fake(fns, repeats, **_):
        out = {k: [1e-3] * repeats for k in fns}
        out["dense_ms"] = [1e-3 * (1 + spread_of_dense * (i / (repeats - 1) - 0.5)) for i in range(repeats)]
        return out
    return fake


def test_rows_report_median_and_iqr_and_warn_when_busy(monkeypatch):
    monkeypatch.setattr(latency, "interleaved_times", _samples(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", latency.BusyMachineWarning)  # a quiet machine: no warning
        rows = latency.cpu_linear_latency(out_features=8, in_features=8, tokens=2, sparsities=(0.5,), repeats=5)
    assert rows[0]["dense_ms"] == pytest.approx(1.0) and rows[0]["dense_iqr_ms"] == pytest.approx(0.0)
    assert latency.spread(rows) == pytest.approx(0.0)
    monkeypatch.setattr(latency, "interleaved_times", _samples(1.0))  # samples 0.5 .. 1.5 ms: IQR 0.5 ms
    with pytest.warns(latency.BusyMachineWarning, match="busy"):
        rows = latency.cpu_linear_latency(out_features=8, in_features=8, tokens=2, sparsities=(0.5,), repeats=5)
    assert rows[0]["dense_iqr_ms"] == pytest.approx(0.5)
    assert latency.spread(rows) == pytest.approx(0.5)


def _row(s, dense, csr, dense_iqr=0.0, csr_iqr=0.0):
    return {"sparsity": s, "dense_ms": dense, "masked_ms": dense, "structured_ms": dense, "csr_ms": csr,
            "dense_iqr_ms": dense_iqr, "masked_iqr_ms": dense_iqr, "structured_iqr_ms": dense_iqr,
            "csr_iqr_ms": csr_iqr}


def test_crossover_ignores_a_win_inside_the_noise():
    assert latency.crossover([_row(0.9, 1.0, 0.8)]) == 0.9  # 20% faster, no spread: a win
    assert latency.crossover([_row(0.9, 1.0, 0.8, dense_iqr=0.3, csr_iqr=0.3)]) is None  # ranges overlap
    assert latency.crossover([_row(0.9, 1.0, 0.5, dense_iqr=0.2, csr_iqr=0.2)]) == 0.9  # 0.6 < 0.9: still a win


def test_figure_draws_the_spread_as_error_bars():
    fig = latency_figure([_row(0.0, 1.0, 2.0, 0.2, 0.4), _row(0.9, 1.0, 0.5, 0.2, 0.1)])
    assert list(fig.data[0].error_y.array) == [0.1, 0.1]
    assert list(fig.data[3].error_y.array) == [0.2, 0.05]
