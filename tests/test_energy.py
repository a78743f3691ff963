"""Energy meters: fake sysfs trees for RAPL, a fake NVML module, labels and the fallback order.

Joule values from sensors are never asserted (they are the sensor's business); labels, kinds,
scopes, the fallback order and the arithmetic (wrap-around, trapezoid, the model) are.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labkit import energy
from labkit.energy import ModelMeter, NvmlMeter, RaplMeter

# ------------------------------------------------------------------------------- fake RAPL tree


def make_rapl(root: Path, *, dram: bool = True, energy_uj: int = 1_000_000, max_uj: int = 262_143_328_850) -> Path:
    """A flat /sys/class/powercap-like tree: package-0 with core and dram subzones, psys, an MMIO duplicate."""
    zones = {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core", "intel-rapl:1": "psys",
             "intel-rapl-mmio:0": "package-0"}
    if dram:
        zones["intel-rapl:0:1"] = "dram"
    for folder, name in zones.items():
        d = root / folder
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{energy_uj}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return root


def set_uj(root: Path, folder: str, value: int) -> None:
    (root / folder / "energy_uj").write_text(f"{value}\n")


def test_rapl_normal_reads_package_and_dram_only(tmp_path):
    root = make_rapl(tmp_path)
    meter = RaplMeter(root)
    status = meter.status()
    assert status.available, status.reason
    assert [z.label for z in meter.zones()] == ["package-0", "package-0/dram"]  # MMIO duplicate dropped
    assert "core" in status.reason and "psys" in status.reason  # overlapping domains named as skipped
    state = meter.start()
    set_uj(root, "intel-rapl:0", 3_000_000)
    set_uj(root, "intel-rapl:0:1", 1_500_000)
    set_uj(root, "intel-rapl:1", 9_000_000)  # psys moves too, but must not be added
    readings = meter.stop(state)
    assert [(r.kind, r.scope, r.source, r.unit) for r in readings] == [
        ("measured", "CPU package", "rapl:package-0", "J"), ("measured", "DRAM", "rapl:package-0/dram", "J")]
    assert all(r.sensor_period_s == energy.RAPL_PERIOD_S for r in readings)


def test_rapl_wraparound_uses_max_energy_range():
    assert energy.wrapped_delta(100, 250, 1000) == 150
    assert energy.wrapped_delta(900, 50, 1000) == 151  # 900 -> 1000, wraps to 0, -> 50
    with pytest.raises(ValueError, match="max_range_uj"):
        energy.wrapped_delta(0, 1, 0)


def test_rapl_wraparound_in_a_window(tmp_path):
    root = make_rapl(tmp_path, energy_uj=990_000, max_uj=999_999)
    meter = RaplMeter(root)
    state = meter.start()
    set_uj(root, "intel-rapl:0", 10_000)  # wrapped: 10 000 uJ past the end, 10 000 before it
    package = meter.stop(state)[0]
    assert package.value > 0, "a wrapped counter must not give a negative or zero reading"
    assert package.value == pytest.approx(0.02)


def test_rapl_poll_counts_several_wraps(tmp_path):
    root = make_rapl(tmp_path, energy_uj=0, max_uj=999_999)
    meter = RaplMeter(root)
    state = meter.start()
    for value in (600_000, 200_000, 800_000, 100_000):  # wraps twice; polled in between
        set_uj(root, "intel-rapl:0", value)
        meter.poll(state)
    assert meter.stop(state)[0].value == pytest.approx(2.1)


def test_rapl_permission_denied_is_unavailable_not_zero(tmp_path):
    # chmod 000 does not stop root, so the permission error is injected through the reader.
    root = make_rapl(tmp_path)

    def reader(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    meter = RaplMeter(root, reader=reader)
    status = meter.status()
    assert not status.available
    assert "not readable" in status.reason and "root" in status.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        meter.start()
    statuses = energy.sensor_status(nvml=FakeNvml(gpus=0), rapl_root=root, rapl_reader=reader)
    assert [s.name for s in statuses if s.available] == ["model", "wall-time"]


def test_rapl_missing_dram_domain(tmp_path):
    root = make_rapl(tmp_path, dram=False)
    meter = RaplMeter(root)
    status = meter.status()
    assert status.available and "no DRAM domain" in status.reason
    state = meter.start()
    assert [r.scope for r in meter.stop(state)] == ["CPU package"]


def test_rapl_no_tree(tmp_path):
    status = RaplMeter(tmp_path / "absent").status()
    assert not status.available and "no RAPL" in status.reason


# ---------------------------------------------------------------------------------- fake NVML


class FakeNvml:
    """Just enough of pynvml: a counter that rises 50 mJ per read, power readings of 300 W."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int = 1, counter: bool = True, driver: bool = True):
        self.gpus, self.counter, self.driver = gpus, counter, driver
        self.mj = 0
        self.open = 0

    def nvmlInit(self):
        if not self.driver:
            raise self.NVMLError("Driver Not Loaded")
        self.open += 1

    def nvmlShutdown(self):
        self.open -= 1

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise self.NVMLError("Not Supported")
        self.mj += 50
        return self.mj

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000


def test_nvml_counter_present_is_measured():
    fake = FakeNvml()
    meter = NvmlMeter(nvml=fake)
    status = meter.status()
    assert status.available and "counter" in status.reason
    state = meter.start()
    (reading,) = meter.stop(state)
    assert (reading.kind, reading.scope, reading.unit) == ("measured", "GPU board", "J")
    assert "TotalEnergyConsumption" in reading.source
    assert reading.sensor_period_s == energy.NVML_COUNTER_PERIOD_S
    assert fake.open == 0, "every nvmlInit must be matched by nvmlShutdown"


def test_nvml_counter_absent_falls_back_to_sampling():
    fake = FakeNvml(counter=False)
    meter = NvmlMeter(nvml=fake, sample_interval_s=0.005)
    status = meter.status()
    assert status.available and "no energy counter" in status.reason
    (reading,) = meter.stop(meter.start())
    assert (reading.kind, reading.scope) == ("sampled", "GPU board")
    assert "PowerUsage" in reading.source and reading.sensor_period_s == energy.NVML_POWER_PERIOD_S
    assert fake.open == 0


@pytest.mark.parametrize("fake, words", [(FakeNvml(gpus=0), "no GPU"), (FakeNvml(driver=False), "no NVIDIA driver")])
def test_nvml_no_gpu_is_unavailable(fake, words):
    status = NvmlMeter(nvml=fake).status()
    assert not status.available and words in status.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        NvmlMeter(nvml=fake).start()


def test_nvml_index_follows_cuda_visible_devices():
    assert energy.nvml_index(0, visible="") == 0
    assert energy.nvml_index(1, visible="3,1") == 1
    assert energy.nvml_index(0, visible="3,1") == 3
    with pytest.warns(UserWarning, match="UUID"):
        assert energy.nvml_index(0, visible="GPU-8f3c") == 0
    with pytest.raises(ValueError, match="not visible"):
        energy.nvml_index(2, visible="0,1")


def test_integrate_power_trapezoid():
    assert energy.integrate_power([(0.0, 100_000), (1.0, 300_000)]) == pytest.approx(200.0)
    with pytest.raises(ValueError, match="at least 2"):
        energy.integrate_power([(0.0, 1.0)])
    with pytest.raises(ValueError, match="time order"):
        energy.integrate_power([(1.0, 1.0), (0.0, 1.0)])


# ------------------------------------------------------------------------- fallback and measure


def tiny_work():
    w = torch.ones(8, 8)
    return lambda: w @ w


def test_fallback_order_in_sensor_status(tmp_path):
    statuses = energy.sensor_status(nvml=FakeNvml(), rapl_root=make_rapl(tmp_path))
    assert [s.name for s in statuses] == ["nvml", "rapl", "model", "wall-time"]
    assert all(s.available for s in statuses)


def test_measure_primary_prefers_gpu_then_cpu_then_model(tmp_path):
    root = make_rapl(tmp_path)
    cases = [(FakeNvml(), ("measured", "GPU board")), (FakeNvml(gpus=0), ("measured", "DRAM + CPU package")),
             (None, ("estimated", "model: arithmetic + DRAM traffic"))]
    for fake, expected in cases:
        if fake is None:
            meters = [NvmlMeter(nvml=FakeNvml(driver=False)), RaplMeter(tmp_path / "none"), ModelMeter()]
        else:
            meters = energy.default_meters(nvml=fake, rapl_root=root)
        with energy.measure(items=4, min_window_s=0.01, meters=meters) as m:
            report = m.run(tiny_work())
        assert (report.primary.kind, report.primary.scope) == expected
        assert report.kind == expected[0]
        assert report.joules_per_item == pytest.approx(report.joules / (4 * report.repeats))
        assert any(r.scope == "wall clock" and r.unit == "s" for r in report.readings)
        assert report.wall_s >= 0.01


def test_measure_never_mixes_kinds(tmp_path):
    meters = energy.default_meters(nvml=FakeNvml(), rapl_root=make_rapl(tmp_path))
    with energy.measure(min_window_s=0.01, meters=meters) as m:
        report = m.run(tiny_work())
    kinds = {r.kind for r in report.energy_readings()}
    assert kinds == {"measured", "estimated"}
    assert report.total("estimated") == pytest.approx(sum(r.value for r in report.energy_readings("estimated")))
    assert report.total("measured", "CPU") == report.energy_readings("measured")[1].value
    with pytest.raises(ValueError, match="no 'sampled' readings"):
        report.total("sampled")
    text = str(report)
    assert "MEASURED" in text and "ESTIMATED" in text


def test_measure_repeats_until_window_is_long_enough():
    with energy.measure(min_window_s=0.05, meters=[ModelMeter()]) as m:
        report = m.run(tiny_work())
    assert report.repeats > 1 and report.wall_s >= 0.05
    # The model prices every repeat: estimated joules scale with the repeat count.
    one = energy.estimate(tiny_work())
    assert report.total("estimated") == pytest.approx(one.total("estimated") * report.repeats)


def test_measure_idle_subtraction_reports_dynamic_reading():
    with energy.measure(min_window_s=0.01, idle_s=0.01, meters=[NvmlMeter(nvml=FakeNvml())]) as m:
        report = m.run(tiny_work())
    dynamic = [r for r in report.readings if "dynamic" in r.scope]
    assert len(dynamic) == 1 and dynamic[0].kind == "measured" and "idle baseline" in dynamic[0].note
    assert report.primary.scope == "GPU board"  # the total stays the primary; dynamic sits next to it


def test_measure_body_without_run_warns_about_short_window_and_no_model():
    with energy.measure(min_window_s=1.0, meters=[ModelMeter()]) as m:
        tiny_work()()
    assert any("shorter than" in w for w in m.report.warnings)
    assert any("m.run(fn)" in w for w in m.report.warnings)
    with pytest.raises(ValueError, match="no energy reading"):
        _ = m.report.joules  # reading the property is what raises


@pytest.mark.parametrize("kwargs, match", [
    (dict(items=0), "items"), (dict(items=-3), "items"), (dict(min_window_s=0), "min_window_s"),
    (dict(min_window_s=-1.0), "min_window_s"), (dict(idle_s=-0.5), "idle_s"), (dict(max_repeats=0), "max_repeats"),
    (dict(threads=0), "threads"),
])
def test_measure_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        with energy.measure(meters=[], **kwargs):
            pass


def test_run_rejects_non_callable():
    with energy.measure(meters=[]) as m:
        with pytest.raises(TypeError, match="fn must be a function"):
            m.run(42)


def test_reading_rejects_unknown_kind_and_unit():
    with pytest.raises(ValueError, match="kind"):
        energy.Reading(1.0, "J", "guessed", "GPU board", "x")
    with pytest.raises(ValueError, match="unit"):
        energy.Reading(1.0, "kWh", "measured", "GPU board", "x")


# ------------------------------------------------------------------------------------- the model


def test_model_counts_matmul_flops_and_bytes():
    a, b = torch.ones(4, 8), torch.ones(8, 16)
    counts = energy.count_work(lambda: a @ b)
    assert counts.flops == 2 * 4 * 8 * 16
    assert counts.bytes_moved == (4 * 8 + 8 * 16 + 4 * 16) * 4  # inputs read, output written, fp32
    compute, memory = counts.readings()
    pj = energy.op_energy_table()
    assert compute.value == pytest.approx(4 * 8 * 16 * (pj["fp32 mult"] + pj["fp32 add"]) * 1e-12)
    assert memory.value == pytest.approx(counts.bytes_moved * pj["32b DRAM read"] / 4 * 1e-12)
    assert compute.kind == memory.kind == "estimated" and "Horowitz" in compute.source


def test_model_sees_zeros_as_work_but_removed_rows_as_savings():
    """Unstructured zeros in dense storage cost the same; physically removed rows cost less."""
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    dense = torch.nn.Linear(32, 64)
    pruned = torch.nn.Linear(32, 64)
    with torch.no_grad():
        pruned.weight.copy_(dense.weight * (torch.rand_like(dense.weight) > 0.9))
    small = torch.nn.Linear(32, 16)
    e = {name: energy.estimate(lambda m=m: m(x), items=16).joules for name, m in
         [("dense", dense), ("pruned", pruned), ("small", small)]}
    assert e["pruned"] == e["dense"]
    assert e["small"] < e["dense"] / 2


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_model_counts_sparse_storage_bytes():
    w = torch.zeros(64, 64)
    w[:8] = 1.0  # 512 non-zeros out of 4096
    # CSR stores int64 row pointers (65) and column indices (512) plus fp32 values (512):
    # at 12.5% density that is 41% of the dense bytes, not 12.5%.
    assert energy._nbytes(w.to_sparse_csr()) == 65 * 8 + 512 * 8 + 512 * 4
    assert energy._nbytes(w) == 4096 * 4


def test_model_rejects_bad_dtype_and_fn():
    with pytest.raises(ValueError, match="dtype"):
        energy.WorkCounts(1, 1).readings(dtype=torch.int8)
    with pytest.raises(TypeError, match="fn"):
        energy.count_work("not a function")
    with pytest.raises(ValueError, match="watts"):
        energy.AssumedPowerMeter(0, "CPU", "a source")


def test_assumed_power_is_estimated_and_scales_with_time():
    meter = energy.AssumedPowerMeter(8.0, "CPU", "CodeCarbon fallback: 4 W per thread x 2 threads")
    (reading,) = meter.stop(meter.start())
    assert reading.kind == "estimated" and "assumed" in reading.scope and "CodeCarbon" in reading.source


def test_doctor_lists_every_sensor_with_a_reason():
    from labkit import doctor

    checks = {c.topic: c for c in doctor._energy()}
    assert list(checks) == ["energy: nvml", "energy: rapl", "energy: model", "energy: wall-time"]
    assert all(c.detail for c in checks.values())
    assert checks["energy: model"].status == doctor.OK


# ------------------------------------------------------------------ the thread count of a measurement


@pytest.fixture
def two_threads():
    """Two torch threads before the test (a notebook's setting), whatever they were, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_measure_threads_holds_for_the_block_and_the_run_then_is_restored(two_threads):
    seen = []
    with energy.measure(min_window_s=0.01, meters=[ModelMeter()], threads=1) as m:
        seen.append(torch.get_num_threads())
        m.run(lambda: seen.append(torch.get_num_threads()), warmup=2)
    assert set(seen) == {1} and len(seen) > 3  # the block, the warm-up and every timed call
    assert torch.get_num_threads() == 2


def test_measure_threads_restored_after_an_error(two_threads):
    with pytest.raises(RuntimeError, match="boom"):
        with energy.measure(min_window_s=0.01, meters=[], threads=1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_measure_without_threads_keeps_the_count(two_threads):
    with energy.measure(min_window_s=0.01, meters=[]) as m:
        m.run(lambda: None)
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("threads, error", [(1.5, TypeError), ("1", TypeError), (-1, ValueError)])
def test_measure_rejects_bad_threads_before_changing_anything(two_threads, threads, error):
    with pytest.raises(error, match="threads"):
        with energy.measure(meters=[], threads=threads):
            pass
    assert torch.get_num_threads() == 2


def test_measure_zoo_times_every_model_in_one_thread_and_restores_the_count(two_threads):
    """The zoo is timed in MEASURE_THREADS threads (1): on a busy 2-core machine, 2-thread timings of
    these tiny models measured the threads waiting for each other, not the model (issue 21)."""
    from labkit.data import Split
    from labkit.experiments import energy_zoo

    class Probe(torch.nn.Module):
        """A model that records the thread count of every forward pass."""

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)
            self.threads: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.threads.append(torch.get_num_threads())
            return self.linear(x)

    zoo = {name: energy_zoo.ZooModel(name, "probe", Probe(), []) for name in ("a", "b")}
    test = Split(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    text = energy_zoo.measure_zoo(zoo, test, batch_sizes=(1, 4), min_window_s=0.01)
    assert energy_zoo.MEASURE_THREADS == 1
    for entry in zoo.values():
        assert entry.model.threads and set(entry.model.threads) == {1}
    assert text.count(f"torch threads: {energy_zoo.MEASURE_THREADS}") == 4
    assert torch.get_num_threads() == 2


def test_measure_zoo_rejects_a_batch_larger_than_the_test_split():
    from labkit.data import Split
    from labkit.experiments import energy_zoo

    zoo = {"a": energy_zoo.ZooModel("a", "linear", torch.nn.Linear(4, 2), [])}
    with pytest.raises(ValueError, match="batch size 16 is larger than the test split"):
        energy_zoo.measure_zoo(zoo, Split(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), batch_sizes=(16,))
