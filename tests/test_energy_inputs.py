"""labkit.energy: the Meter protocol, and bad input rejected up front (issue 11)."""
from __future__ import annotations

import time

import pytest
import torch

from labkit import energy
from labkit.energy import AssumedPowerMeter, Meter, ModelMeter, NvmlMeter, RaplMeter


def test_every_meter_follows_the_meter_protocol(tmp_path):
    meters = [NvmlMeter(nvml=None), RaplMeter(tmp_path), ModelMeter(), AssumedPowerMeter(5.0, "CPU", "a source")]
    for m in meters + energy.default_meters(rapl_root=tmp_path):
        assert isinstance(m, Meter), type(m).__name__
    assert [m.period_s for m in meters] == [energy.NVML_COUNTER_PERIOD_S, energy.RAPL_PERIOD_S, None, None]


class SlowCounter:
    """A meter written against the protocol alone: measure() needs no isinstance switch to use it."""

    name = "slow-counter"
    period_s = 0.02  # updates every 20 ms -> windows of at least 10 x 20 ms

    def status(self) -> energy.SensorStatus:
        return energy.SensorStatus(self.name, True, "test meter")

    def start(self) -> dict:
        return {"t0": time.perf_counter(), "polls": 0}

    def poll(self, state: dict) -> None:
        state["polls"] += 1

    def stop(self, state: dict) -> list[energy.Reading]:
        return [energy.Reading(1.0, "J", "measured", "test", f"polled {state['polls']}x", self.period_s)]


def test_a_new_meter_needs_only_the_protocol():
    with energy.measure(meters=[SlowCounter()]) as m:
        report = m.run(lambda: torch.ones(4).sum())
    assert m.min_window_s == pytest.approx(energy.WINDOWS_PER_PERIOD * 0.02)  # from period_s, not a type switch
    assert report.wall_s >= 0.2 and report.energy_readings("measured")[0].source.startswith("polled")


def test_model_meter_windows_have_no_readings_but_run_counts_the_work():
    state = ModelMeter().start()
    assert ModelMeter().stop(state) == []
    with energy.measure(min_window_s=0.01, meters=[ModelMeter()]) as m:
        report = m.run(lambda: torch.ones(8, 8) @ torch.ones(8, 8))
    assert report.kind == "estimated"


@pytest.mark.parametrize("idle_s", [float("nan"), float("inf"), -1.0, "1", True])
def test_measure_rejects_bad_idle_seconds_up_front(idle_s):
    """measure(idle_s=nan|inf) used to pass the check and fail later inside time.sleep."""
    with pytest.raises((TypeError, ValueError), match="idle_s"):
        with energy.measure(idle_s=idle_s, meters=[ModelMeter()]):
            pytest.fail("the block must not run")


@pytest.mark.parametrize("kwargs, match", [
    ({"min_window_s": float("nan")}, "min_window_s"), ({"min_window_s": float("inf")}, "min_window_s"),
    ({"min_window_s": 0}, "min_window_s"), ({"items": 0}, "items"), ({"items": 2.0}, "items"),
    ({"max_repeats": True}, "max_repeats"), ({"meters": "nvml"}, "meters"), ({"meters": [object()]}, "energy.Meter"),
])
def test_measure_rejects_other_bad_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        with energy.measure(**kwargs):
            pass


@pytest.mark.parametrize("call, match", [
    (lambda: NvmlMeter(sample_interval_s=float("inf")), "sample_interval_s"),
    (lambda: NvmlMeter(sample_interval_s=0), "sample_interval_s"),
    (lambda: NvmlMeter(index=True), "index"),
    (lambda: AssumedPowerMeter(float("inf"), "CPU", "src"), "watts"),
    (lambda: AssumedPowerMeter(float("nan"), "CPU", "src"), "watts"),
    (lambda: AssumedPowerMeter(5.0, "", "src"), "scope"),
    (lambda: RaplMeter(root=3), "root"),
    (lambda: energy.integrate_power([(0.0, 1.0), (1.0, float("nan"))]), "milliwatts"),
    (lambda: energy.integrate_power([(0.0, 1.0), (float("inf"), 1.0)]), "time"),
    (lambda: energy.wrapped_delta(1.5, 2, 10), "before_uj"),
    (lambda: energy.nvml_index(-1), "cuda_index"),
    (lambda: energy.estimate(lambda: None, items=0), "items"),
    (lambda: energy.WorkCounts(10, 10).readings(calls=0), "calls"),
])
def test_public_functions_name_the_bad_argument(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_reports_over_zero_items_of_work_are_defined():
    counts = energy.WorkCounts(0, 0)
    assert [r.value for r in counts.readings()] == [0.0, 0.0]
    assert energy.integrate_power([(0.0, 1000.0), (0.0, 1000.0)]) == 0.0  # a zero-length window: 0 J


def test_dead_status_helpers_are_gone():
    assert not hasattr(energy, "nvml_status") and not hasattr(energy, "rapl_status")
    assert [s.name for s in energy.sensor_status(rapl_root="/nonexistent")][-2:] == ["model", "wall-time"]
