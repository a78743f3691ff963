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
    with pytest.raises(AssertionError, match="non-zero weights"):
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
    with pytest.raises(AssertionError, match="serving the requests only"):
        ex.check_deployment_kwh(365.0, *args)
    with pytest.raises(AssertionError, match="PUE"):
        ex.check_deployment_kwh(730.0, *args)


@pytest.mark.parametrize("wrong, hint", [
    (365.0 * 1.5, "between requests"),             # PUE, but no idle share
    (365.0 * 1.5 * 1.5, "how the idle share is defined"),  # idle as 50% on top of the active energy
    (365.0 * 0.5 * 1.5, "does not remove"),        # idle share subtracted
    (1095.0 / 365, "one day"),
    (1095.0 * 3.6e6, "joules"),
    (1095.0 * 3.6, "joules are in one kWh"),
    (123.0, "each step"),
])
def test_deployment_hints_name_the_step_not_the_answer(wrong, hint):
    args = (1e6, 3.6, 1.5, 0.5)  # the right answer: 365 kWh active / (1 - 0.5) x 1.5 = 1095 kWh
    with pytest.raises(AssertionError, match=hint) as failure:
        ex.check_deployment_kwh(wrong, *args)
    shown = str(failure.value)
    assert not any(v in shown for v in ("1095", "1,095", "1.095", "1.1e+03")), shown  # the value, in any rounding
    assert "3.6e6" not in shown and "/ (1 - idle" not in shown, shown  # nor the formula that computes it


def test_other_energy_hints_do_not_state_the_answer():
    with pytest.raises(AssertionError) as failure:
        ex.check_zero_skipping(1.0, 2.0, 0.1)  # the answer is 0.2
    assert "0.2 " not in str(failure.value) and "Multiply" not in str(failure.value)
    with pytest.raises(AssertionError) as failure:
        ex.check_idle_subtraction(3.0, 120.0, 10.0, 5.0, calls=7)  # the answer is 10
    assert "10" not in str(failure.value) and "total joules - idle" not in str(failure.value)


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
    with pytest.raises(AssertionError, match="how many calls share"):
        ex.check_idle_subtraction(3.0, 120.0, 10.0, 5.0, calls=7)
    with pytest.raises(AssertionError, match="calls"):
        ex.check_idle_subtraction(3.0, 120.0, 10.0, 5.0, calls=0)
