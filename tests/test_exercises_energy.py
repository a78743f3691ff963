"""Exercise checkers of notebook 05: right answers pass, wrong ones raise with a hint, None is reported."""
from __future__ import annotations

import pytest

from labkit import carbon
from labkit.energy import SensorStatus
from labkit.exercises import energy as ex

NONE_HERE = [SensorStatus("nvml", False, "no GPU"), SensorStatus("rapl", False, "no zones"),
             SensorStatus("model", True, "estimate")]
GPU = [SensorStatus("nvml", True, "counter: measured"), SensorStatus("rapl", False, "x"),
       SensorStatus("model", True, "estimate")]
OLD_GPU = [SensorStatus("nvml", True, "no energy counter: power samples: sampled")] + NONE_HERE[1:]
RAPL = [NONE_HERE[0], SensorStatus("rapl", True, "package-0: measured"), NONE_HERE[2]]


def test_primary_kind(capsys):
    assert ex.check_primary_kind(None, NONE_HERE) is False
    assert "not attempted" in capsys.readouterr().out
    assert ex.check_primary_kind("estimated", NONE_HERE)
    assert ex.check_primary_kind("measured", GPU)
    assert ex.check_primary_kind("sampled", OLD_GPU)
    assert ex.check_primary_kind("measured", RAPL)
    with pytest.raises(AssertionError, match="first \\*available\\* meter"):
        ex.check_primary_kind("measured", NONE_HERE)
    with pytest.raises(AssertionError, match="one of"):
        ex.check_primary_kind("guessed", NONE_HERE)


def test_zero_skipping():
    assert ex.check_zero_skipping(None, 2.0, 0.1) is False
    assert ex.check_zero_skipping(0.2, 2.0, 0.1)
    with pytest.raises(AssertionError, match="dense figure"):
        ex.check_zero_skipping(2.0, 2.0, 0.1)
    with pytest.raises(AssertionError, match="non-zero"):
        ex.check_zero_skipping(1.0, 2.0, 0.1)
    with pytest.raises(AssertionError, match="expected a number"):
        ex.check_zero_skipping("0.2", 2.0, 0.1)


def test_greenest_region():
    kg = carbon.by_region(1e6)
    best, worst = min(kg, key=kg.get), max(kg, key=kg.get)
    assert ex.check_greenest_region(None, 1e6) is False
    assert ex.check_greenest_region((best.lower(), kg[worst] / kg[best]), 1e6)
    with pytest.raises(AssertionError, match="not the cleanest"):
        ex.check_greenest_region(("USA", 1.0), 1e6)
    with pytest.raises(AssertionError, match="dirtiest"):
        ex.check_greenest_region((best, 2.0), 1e6)
    with pytest.raises(AssertionError, match="tuple"):
        ex.check_greenest_region(best, 1e6)


def test_deployment_kwh():
    args = (1e6, 3.6, 1.5, 0.5)
    right = 1e6 * 365 * 3.6 / 3.6e6 / 0.5 * 1.5
    assert ex.check_deployment_kwh(None, *args) is False
    assert ex.check_deployment_kwh(right, *args)
    with pytest.raises(AssertionError, match="active energy only"):
        ex.check_deployment_kwh(365.0, *args)
    with pytest.raises(AssertionError, match="PUE"):
        ex.check_deployment_kwh(730.0, *args)


def test_cpu_estimate(capsys):
    assert ex.check_cpu_estimate(None) is False
    assert ex.check_cpu_estimate("b") and ex.check_cpu_estimate(" B")
    with pytest.raises(AssertionError, match="sensor list"):
        ex.check_cpu_estimate("a")
    with pytest.raises(AssertionError, match="one letter"):
        ex.check_cpu_estimate("z")


def test_idle_subtraction():
    # 10 s window, 120 J measured, the idle GPU draws 5 W: 70 J above idle over 7 calls = 10 J per call
    assert ex.check_idle_subtraction(None, 120.0, 10.0, 5.0) is False
    assert ex.check_idle_subtraction(10.0, 120.0, 10.0, 5.0, calls=7)
    with pytest.raises(AssertionError, match="idle draw"):
        ex.check_idle_subtraction(120.0 / 7, 120.0, 10.0, 5.0, calls=7)
    with pytest.raises(AssertionError, match="divide by the 7 calls"):
        ex.check_idle_subtraction(70.0, 120.0, 10.0, 5.0, calls=7)
    with pytest.raises(AssertionError, match="total joules - idle watts"):
        ex.check_idle_subtraction(3.0, 120.0, 10.0, 5.0, calls=7)
    with pytest.raises(AssertionError, match="calls"):
        ex.check_idle_subtraction(3.0, 120.0, 10.0, 5.0, calls=0)
