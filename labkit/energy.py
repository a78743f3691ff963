"""Energy meters that say what they measured, what they estimated, and why.

Meters are tried in this order; each reports whether it is available here and, if not, why:

1. **NVML** (``nvidia-ml-py``): the GPU's total-energy counter (Volta and newer; millijoules,
   updated about every 100 ms) -> kind ``measured``. Older GPUs have no counter, so power samples
   are integrated over time -> kind ``sampled``.
2. **RAPL** through Linux sysfs powercap: CPU ``package-N`` and ``dram`` counters only. ``core``,
   ``uncore`` and ``psys`` overlap the package domain, so adding them would count energy twice.
   Counters wrap at ``max_energy_range_uj``. A counter the user may not read (root only since
   Linux 5.10, after the Platypus side channel) makes the meter *unavailable*, never 0 J.
3. **Model**: FLOPs counted by ``torch.utils.flop_counter`` and bytes moved, priced with the
   per-operation energies of Horowitz (ISSCC 2014, 45 nm) -> kind ``estimated``. Always
   available, deterministic, and only good for ratios and orders of magnitude.
4. **Wall time**, always.

Every :class:`Reading` carries value, unit, kind, scope, sensor update period and source. A total
is only ever formed from readings of one kind (:meth:`EnergyReport.total`), so a measured GPU figure
is never silently added to an estimated CPU figure.

:func:`measure` is the context manager notebooks use::

    with energy.measure(items=64) as m:
        m.run(lambda: model(x))        # repeated until the window is long enough for the sensor
    print(m.report)                    # joules, joules per item, watts, and every label
"""
from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Protocol, runtime_checkable

import torch

from labkit import checks

RAPL_ROOT = Path("/sys/class/powercap")

#: What a reading is. ``measured``: a hardware energy counter; ``sampled``: power samples integrated
#: over time; ``estimated``: a model, not a sensor.
KINDS = ("measured", "sampled", "estimated")

#: NVML's energy counter updates about every 100 ms (ML.ENERGY blog "Thermally stable profiling";
#: PETSc docs say 20-100 ms). ``nvmlDeviceGetPowerUsage`` is a 1 s average on Ampere and newer.
NVML_COUNTER_PERIOD_S = 0.1
NVML_POWER_PERIOD_S = 1.0
#: The RAPL MSRs update about every 1 ms (Intel SDM vol. 3B, ch. 14).
RAPL_PERIOD_S = 0.001
#: A window should span at least this many sensor updates.
WINDOWS_PER_PERIOD = 10


@dataclass(frozen=True)
class SensorStatus:
    """Whether one energy sensor can be read here, and the reason in words."""

    name: str
    available: bool
    reason: str


@dataclass(frozen=True)
class Reading:
    """One labelled number: never a bare float.

    ``kind`` is ``measured``, ``sampled`` or ``estimated``; ``scope`` says what the number covers
    (``"GPU board"``, ``"CPU package"``, ``"DRAM"``, ``"model: ..."``, ``"wall clock"``);
    ``sensor_period_s`` is how often the sensor updates (``None`` for a model).
    """

    value: float
    unit: str
    kind: str
    scope: str
    source: str
    sensor_period_s: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        checks.finite("value", self.value)  # a NaN reading is a broken sensor, never a number to add up
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.unit not in ("J", "s", "W"):
            raise ValueError(f"unit must be 'J', 's' or 'W', got {self.unit!r}")

    def label(self) -> str:
        """``"0.12 J  ESTIMATED  model: arithmetic  (source)"``: the number with its provenance."""
        period = f", sensor updates every {self.sensor_period_s:g} s" if self.sensor_period_s else ""
        note = f"; {self.note}" if self.note else ""
        return f"{self.value:.4g} {self.unit}  {self.kind.upper()}  {self.scope}  ({self.source}{period}{note})"


@runtime_checkable
class Meter(Protocol):
    """What every meter does; :func:`measure` needs nothing else.

    A window is ``state = m.start()``, any number of ``m.poll(state)`` (for counters that wrap), then
    ``m.stop(state)``, which returns the window's readings (possibly none). ``period_s`` is how often the
    sensor updates (``None`` for a model or an assumption): windows are made at least
    :data:`WINDOWS_PER_PERIOD` times longer.
    """

    name: str
    period_s: float | None

    def status(self) -> SensorStatus:
        """Available here or not, and why."""
        ...

    def start(self) -> dict:
        """Open a window: read counters, start samplers."""
        ...

    def poll(self, state: dict) -> None:
        """Fold progress into ``state`` (counters that may wrap); may do nothing."""
        ...

    def stop(self, state: dict) -> list[Reading]:
        """Close the window and return its readings."""
        ...


# ----------------------------------------------------------------------------------------------
# NVML
# ----------------------------------------------------------------------------------------------


def _import_pynvml() -> ModuleType | None:
    try:
        import pynvml  # the module of the nvidia-ml-py package
    except ImportError:
        return None
    return pynvml


class NvmlMeter:
    """GPU energy from NVML: the total-energy counter, else integrated power samples.

    ``nvml`` is the module to use (default: ``pynvml`` from nvidia-ml-py); tests pass a fake.
    NVML reports the whole board, all processes included.
    """

    name = "nvml"
    period_s: float | None = NVML_COUNTER_PERIOD_S

    def __init__(self, index: int = 0, nvml: ModuleType | None = None, sample_interval_s: float = 0.05):
        self.index = checks.nonneg_int("index", index)
        self.sample_interval_s = checks.finite("sample_interval_s", sample_interval_s)
        if not self.sample_interval_s > 0:
            raise ValueError(f"sample_interval_s must be > 0 seconds, got {sample_interval_s!r}")
        self._nvml = nvml

    def _module(self) -> ModuleType | None:
        return self._nvml if self._nvml is not None else _import_pynvml()

    def _probe(self) -> tuple[SensorStatus, str | None]:
        """Status plus the mode (``"counter"`` or ``"sampling"``) when available."""
        nvml = self._module()
        if nvml is None:
            return SensorStatus(self.name, False, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"), None
        error = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except error as e:
            return SensorStatus(self.name, False, f"no NVIDIA driver or GPU ({e})"), None
        try:
            count = nvml.nvmlDeviceGetCount()
            if count <= self.index:
                what = "no GPU" if count == 0 else f"{count} GPU(s), none with index {self.index}"
                return SensorStatus(self.name, False, f"NVML found {what}"), None
            handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                reason = (f"GPU {self.index} total-energy counter (mJ, updates about every "
                          f"{NVML_COUNTER_PERIOD_S * 1000:.0f} ms): measured")
                return SensorStatus(self.name, True, reason), "counter"
            except error:
                pass
            try:
                nvml.nvmlDeviceGetPowerUsage(handle)
            except error as e:
                return SensorStatus(self.name, False, f"GPU {self.index} has neither an energy counter nor power "
                                                      f"readings ({e})"), None
            return SensorStatus(self.name, True, f"GPU {self.index} has no energy counter (older than Volta, or a "
                                                 "vGPU): power samples integrated over time: sampled"), "sampling"
        finally:
            nvml.nvmlShutdown()

    def status(self) -> SensorStatus:
        """Available or not, and why."""
        return self._probe()[0]

    def start(self) -> dict:
        """Open NVML and take the first reading (or start the power sampler)."""
        status, mode = self._probe()
        if mode is None:
            raise RuntimeError(f"NVML meter unavailable: {status.reason}")
        nvml = self._module()
        assert nvml is not None  # _probe found the module, or mode would be None
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        state = {"nvml": nvml, "handle": handle, "mode": mode, "t0": time.perf_counter()}
        if mode == "counter":
            state["mj0"] = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        else:
            samples = [(time.perf_counter(), nvml.nvmlDeviceGetPowerUsage(handle))]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(self.sample_interval_s):
                    samples.append((time.perf_counter(), nvml.nvmlDeviceGetPowerUsage(handle)))

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            state.update(samples=samples, stop=stop, thread=thread)
        return state

    def poll(self, state: dict) -> None:
        """Nothing to do: the counter is 64-bit and the sampler runs on its own."""

    def stop(self, state: dict) -> list[Reading]:
        """Close the window and return one reading for the GPU board."""
        nvml, handle = state["nvml"], state["handle"]
        try:
            if state["mode"] == "counter":
                joules = (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - state["mj0"]) / 1000.0
                note = ""
                if joules == 0:
                    note = "counter did not advance: the window was shorter than its update period"
                return [Reading(joules, "J", "measured", "GPU board", f"nvml.nvmlDeviceGetTotalEnergyConsumption"
                                f"(gpu{self.index})", NVML_COUNTER_PERIOD_S, note)]
            state["stop"].set()
            state["thread"].join()
            samples = state["samples"] + [(time.perf_counter(), nvml.nvmlDeviceGetPowerUsage(handle))]
            return [Reading(integrate_power(samples), "J", "sampled", "GPU board",
                            f"nvml.nvmlDeviceGetPowerUsage(gpu{self.index}) every {self.sample_interval_s:g} s, "
                            "trapezoid rule", NVML_POWER_PERIOD_S,
                            f"{len(samples)} power samples; on A100/H100 only ~25% of runtime is sampled "
                            "(Yang et al., SC'24)")]
        finally:
            nvml.nvmlShutdown()


def nvml_index(cuda_index: int = 0, visible: str | None = None) -> int:
    """NVML's index of CUDA device ``cuda_index``: they differ when ``CUDA_VISIBLE_DEVICES`` reorders GPUs.

    ``visible`` defaults to the environment variable. UUID entries cannot be mapped without NVML,
    so they fall back to ``cuda_index`` (and a warning).
    """
    import os
    import warnings

    cuda_index = checks.nonneg_int("cuda_index", cuda_index)
    if visible is not None and not isinstance(visible, str):
        raise TypeError(f"visible must be None or a string like '1,0', got {type(visible).__name__}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible:
        return cuda_index
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    if cuda_index >= len(parts):
        raise ValueError(f"cuda_index {cuda_index} is not visible: CUDA_VISIBLE_DEVICES={visible!r}")
    if parts[cuda_index].isdigit():
        return int(parts[cuda_index])
    warnings.warn(f"CUDA_VISIBLE_DEVICES={visible!r} names GPUs by UUID: assuming NVML index {cuda_index}",
                  stacklevel=2)
    return cuda_index


def integrate_power(samples: Sequence[tuple[float, float]]) -> float:
    """Joules from ``(time_s, milliwatts)`` samples by the trapezoid rule."""
    if len(samples) < 2:
        raise ValueError(f"samples needs at least 2 (time, mW) pairs to integrate, got {len(samples)}")
    for i, (t, p) in enumerate(samples):
        checks.finite(f"samples[{i}] time", t)
        checks.finite(f"samples[{i}] milliwatts", p, low=0.0)
    joules = 0.0
    for (t0, p0), (t1, p1) in pairwise(samples):
        if t1 < t0:
            raise ValueError("samples must be in time order")
        joules += (t1 - t0) * (p0 + p1) / 2 / 1000.0
    return joules


# ----------------------------------------------------------------------------------------------
# RAPL
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaplZone:
    """One RAPL counter the meter reads: a CPU package or its DRAM subdomain."""

    label: str  # "package-0" or "package-0/dram"
    scope: str  # "CPU package" or "DRAM"
    path: Path  # the zone folder, holding energy_uj and max_energy_range_uj
    max_range_uj: int


def _read_text(path: Path) -> str:
    return path.read_text()


def wrapped_delta(before_uj: int, after_uj: int, max_range_uj: int) -> int:
    """Counter increase in microjoules, allowing for one wrap at ``max_range_uj``."""
    checks.nonneg_int("before_uj", before_uj)
    checks.nonneg_int("after_uj", after_uj)
    checks.positive_int("max_range_uj", max_range_uj)
    return (after_uj - before_uj) % (max_range_uj + 1)


class RaplMeter:
    """CPU package and DRAM energy from Linux RAPL (sysfs powercap).

    ``root`` is the powercap folder and ``reader`` the function that reads a file; tests pass a
    temporary tree and a reader that raises ``PermissionError`` (as root, ``chmod 000`` does not stop
    reads, so a real permission test needs an injected reader). Counters cover the whole socket,
    all processes included.
    """

    name = "rapl"
    period_s: float | None = RAPL_PERIOD_S

    def __init__(self, root: Path | str = RAPL_ROOT, reader: Callable[[Path], str] | None = None,
                 include_dram: bool = True):
        if not isinstance(root, (str, Path)):
            raise TypeError(f"root must be a folder path (str or Path), got {type(root).__name__}")
        if reader is not None and not callable(reader):
            raise TypeError(f"reader must be a function path -> str, got {type(reader).__name__}")
        self.root = Path(root)
        self.reader = reader or _read_text
        self.include_dram = bool(include_dram)

    def _discover(self) -> tuple[list[RaplZone], list[str]]:
        """Package and DRAM zones (deduplicated), plus the names of overlapping domains skipped."""
        if not self.root.is_dir():
            return [], []
        # /sys/class/powercap lists every zone flat: intel-rapl:0, intel-rapl:0:0, intel-rapl-mmio:0, ...
        # The MSR interface ("intel-rapl:") is read first; an MMIO zone with the same name is a duplicate.
        entries = sorted(self.root.glob("intel-rapl*:*"), key=lambda p: ("mmio" in p.name, p.name))
        zones: dict[str, RaplZone] = {}
        skipped: list[str] = []
        for entry in entries:
            try:
                name = self.reader(entry / "name").strip()
            except OSError:
                continue
            if name.startswith("package"):
                label, scope = name, "CPU package"
            elif name == "dram":
                if not self.include_dram:
                    continue
                parent = entry.parent / entry.name.rsplit(":", 1)[0]
                try:
                    parent_name = self.reader(parent / "name").strip()
                except OSError:
                    parent_name = parent.name
                label, scope = f"{parent_name}/dram", "DRAM"
            else:
                skipped.append(name)  # core, uncore, psys: they overlap the package domain
                continue
            if label in zones:
                continue
            try:
                max_range = int(self.reader(entry / "max_energy_range_uj"))
            except (OSError, ValueError):
                max_range = 2**32 - 1
            zones[label] = RaplZone(label, scope, entry, max_range)
        return list(zones.values()), sorted(set(skipped))

    def zones(self) -> list[RaplZone]:
        """The package and DRAM zones this meter reads."""
        return self._discover()[0]

    def status(self) -> SensorStatus:
        """Available or not, and why (permission, no zones, no DRAM domain)."""
        zones, skipped = self._discover()
        if not zones:
            return SensorStatus(self.name, False, f"no RAPL package zones under {self.root} (a virtual machine, "
                                                  "a CPU without RAPL, or not Linux)")
        for zone in zones:
            counter = zone.path / "energy_uj"
            try:
                int(self.reader(counter))
            except PermissionError:
                return SensorStatus(self.name, False, f"{counter} is not readable by this user (root only since "
                                                      "Linux 5.10, CVE-2020-8694): run as root or make it readable "
                                                      "with chmod; never read as 0 J")
            except (OSError, ValueError) as e:
                return SensorStatus(self.name, False, f"{counter} cannot be read: {e}")
        labels = ", ".join(z.label for z in zones)
        extra = ""
        if not any(z.scope == "DRAM" for z in zones):
            extra += "; no DRAM domain, so DRAM energy is not measured"
        if skipped:
            extra += f"; skipped overlapping domains: {', '.join(skipped)}"
        return SensorStatus(self.name, True, f"RAPL counters {labels} (updates about every 1 ms): measured{extra}")

    def start(self) -> dict:
        """Read every counter once."""
        status = self.status()
        if not status.available:
            raise RuntimeError(f"RAPL meter unavailable: {status.reason}")
        zones = self.zones()
        return {"zones": zones, "last": {z.label: self._read(z) for z in zones},
                "total_uj": {z.label: 0 for z in zones}}

    def _read(self, zone: RaplZone) -> int:
        return int(self.reader(zone.path / "energy_uj"))

    def poll(self, state: dict) -> None:
        """Fold the counter increase so far into the total: call it more often than the counter wraps."""
        for zone in state["zones"]:
            now = self._read(zone)
            state["total_uj"][zone.label] += wrapped_delta(state["last"][zone.label], now, zone.max_range_uj)
            state["last"][zone.label] = now

    def stop(self, state: dict) -> list[Reading]:
        """One reading per zone: package and DRAM stay separate."""
        self.poll(state)
        return [Reading(state["total_uj"][z.label] / 1e6, "J", "measured", z.scope, f"rapl:{z.label}",
                        RAPL_PERIOD_S, "whole socket, all processes") for z in state["zones"]]


# ----------------------------------------------------------------------------------------------
# The model: counted FLOPs and bytes priced per operation
# ----------------------------------------------------------------------------------------------

OP_ENERGY_SOURCE = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
                    "doi:10.1109/ISSCC.2014.6757323; 45 nm, 0.9 V (table as reproduced in Han et al., "
                    "NeurIPS 2015, Fig. 1)")


def op_energy_table() -> dict[str, float]:
    """Picojoules per operation from the bundled table ``labkit/tables/op_energy_horowitz2014.csv``."""
    text = resources.files("labkit").joinpath("tables/op_energy_horowitz2014.csv").read_text()
    return {row["operation"]: float(row["picojoules"]) for row in csv.DictReader(text.splitlines())}


@dataclass(frozen=True)
class WorkCounts:
    """What one call of a function does: FLOPs (matmuls and convolutions) and bytes its ops touch."""

    flops: int
    bytes_moved: int

    def readings(self, calls: int = 1, dtype: torch.dtype = torch.float32) -> list[Reading]:
        """Estimated joules for ``calls`` calls: arithmetic and DRAM traffic, kept apart."""
        calls = checks.positive_int("calls", calls)
        pj = op_energy_table()
        if dtype in (torch.float16, torch.bfloat16):
            per_mac, bits, note = pj["fp16 mult"] + pj["fp16 add"], 16, "bf16 priced as fp16"
        elif dtype == torch.float32:
            per_mac, bits, note = pj["fp32 mult"] + pj["fp32 add"], 32, ""
        else:
            raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
        per_byte = pj["32b DRAM read"] / 4
        compute = self.flops * calls / 2 * per_mac * 1e-12  # one multiply-accumulate = 2 FLOPs
        memory = self.bytes_moved * calls * per_byte * 1e-12
        src = "model: Horowitz ISSCC 2014, 45 nm"
        return [
            Reading(compute, "J", "estimated", "model: arithmetic", src, None,
                    f"{self.flops * calls:.3g} FLOPs x {per_mac / 2:.3g} pJ/FLOP (fp{bits} mult+add per MAC)"
                    + (f", {note}" if note else "")),
            Reading(memory, "J", "estimated", "model: DRAM traffic", src, None,
                    f"{self.bytes_moved * calls:.3g} bytes x {per_byte:.3g} pJ/byte; every op reads its inputs and "
                    "writes its output once, no cache reuse: an upper bound"),
        ]


def _nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor really stores: sparse layouts count their values and indices only."""
    if t.layout == torch.strided:
        return t.numel() * t.element_size()
    if t.layout == torch.sparse_coo:
        return _nbytes(t._indices()) + _nbytes(t._values())
    if t.layout in (torch.sparse_csr, torch.sparse_bsr):
        return _nbytes(t.crow_indices()) + _nbytes(t.col_indices()) + _nbytes(t.values())
    if t.layout in (torch.sparse_csc, torch.sparse_bsc):
        return _nbytes(t.ccol_indices()) + _nbytes(t.row_indices()) + _nbytes(t.values())
    return t.numel() * t.element_size()


def count_work(fn: Callable[[], object]) -> WorkCounts:
    """Run ``fn()`` once, counting FLOPs (``torch.utils.flop_counter``) and bytes its ops read and write.

    FLOPs cover matrix multiplies and convolutions (which dominate) and the lab's sparse kernels:
    each is a ``torch.library`` operator with a FLOP formula (``torch.ops.labkit.bsr_linear``, ...:
    2 FLOPs per token and *kept* weight), so a kernel call counts its real work, not 0. Element-wise
    ops count only toward bytes; an operator's bytes are its inputs and output (what a kernel reads
    and writes). Views move no data and are skipped. Counting slows the call, so never time it.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function taking no arguments, got {type(fn).__name__}")
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    class ByteCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                leaves = tree_flatten((args, kwargs or {}, out))[0]
                self.bytes += sum(_nbytes(t) for t in leaves if isinstance(t, torch.Tensor))
            return out

    bytes_counter = ByteCounter()
    with FlopCounterMode(display=False) as flops, bytes_counter:
        fn()
    return WorkCounts(int(flops.get_total_flops()), int(bytes_counter.bytes))


def estimate(fn: Callable[[], object], items: int = 1, dtype: torch.dtype = torch.float32) -> EnergyReport:
    """The modeled energy of one call of ``fn`` (which handles ``items`` items), as a report.

    Deterministic, so notebooks can print it; every reading is labelled ``estimated``.
    """
    items = checks.positive_int("items", items)
    readings = tuple(count_work(fn).readings(1, dtype))
    return EnergyReport(readings, wall_s=None, repeats=1, items=items)


class ModelMeter:
    """The always-available estimate: counted FLOPs and bytes x Horowitz's picojoules per operation."""

    name = "model"
    period_s: float | None = None

    def __init__(self, dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
        self.dtype = dtype

    def status(self) -> SensorStatus:
        """Always available: it is a model, not a sensor."""
        return SensorStatus(self.name, True, "estimate from counted FLOPs and bytes x pJ per operation (Horowitz, "
                                             "ISSCC 2014, 45 nm): estimated, never measured")

    def start(self) -> dict:
        """Nothing to open: the model counts the work itself (``Session.run`` calls :func:`count_work`)."""
        return {}

    def poll(self, state: dict) -> None:
        """Nothing to poll."""

    def stop(self, state: dict) -> list[Reading]:
        """No readings from a window alone: the estimate needs the work as a function (``m.run(fn)``)."""
        return []


class AssumedPowerMeter:
    """Constant assumed power x wall time: what CodeCarbon falls back to without sensors.

    It scales with time only, so it cannot tell a sparse model from a dense one that runs as fast.
    ``source`` must say where the wattage comes from.
    """

    name = "assumed-power"
    period_s: float | None = None

    def __init__(self, watts: float, scope: str, source: str):
        watts = checks.finite("watts", watts)
        if not watts > 0:
            raise ValueError(f"watts must be a positive number, got {watts!r}")
        if not isinstance(scope, str) or not scope:
            raise ValueError("scope must say what the power covers, e.g. 'CPU package'")
        if not isinstance(source, str) or not source:
            raise ValueError("source must say where the assumed wattage comes from")
        self.watts, self.scope, self.source = float(watts), scope, source

    def status(self) -> SensorStatus:
        """Always available: an assumption."""
        return SensorStatus(self.name, True, f"{self.watts:g} W assumed x wall time ({self.source}): estimated")

    def start(self) -> dict:
        """Note the start time."""
        return {"t0": time.perf_counter()}

    def poll(self, state: dict) -> None:
        """Nothing to poll."""

    def stop(self, state: dict) -> list[Reading]:
        """Assumed watts x elapsed seconds."""
        seconds = time.perf_counter() - state["t0"]
        return [Reading(self.watts * seconds, "J", "estimated", f"{self.scope} (assumed constant power)",
                        self.source, None, f"{self.watts:g} W x {seconds:.3g} s: scales with time only")]


def default_meters(nvml: ModuleType | None = None, rapl_root: Path | str = RAPL_ROOT,
                   rapl_reader: Callable[[Path], str] | None = None) -> list[Meter]:
    """The meters in fallback order: NVML, RAPL, the model (wall time is always added)."""
    return [NvmlMeter(nvml=nvml), RaplMeter(rapl_root, rapl_reader), ModelMeter()]


def sensor_status(nvml: ModuleType | None = None, rapl_root: Path | str = RAPL_ROOT,
                  rapl_reader: Callable[[Path], str] | None = None) -> list[SensorStatus]:
    """Every energy source the lab knows, in the order meters are tried, with the reason for each."""
    statuses = [m.status() for m in default_meters(nvml, rapl_root, rapl_reader)]
    return statuses + [SensorStatus("wall-time", True, "time.perf_counter: always measured")]


# ----------------------------------------------------------------------------------------------
# Reports and the measure() context manager
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyReport:
    """Every reading of one window, plus what the window held.

    ``joules`` is the *primary* reading: the first available in fallback order (GPU measured or
    sampled, then CPU package + DRAM measured, then the model's estimate); ``primary.kind`` says which.
    """

    readings: tuple[Reading, ...]
    wall_s: float | None
    repeats: int
    items: int
    unavailable: tuple[SensorStatus, ...] = ()
    warnings: tuple[str, ...] = ()
    idle_watts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.positive_int("repeats", self.repeats)
        checks.positive_int("items", self.items)  # joules per item divides by items x repeats

    def energy_readings(self, kind: str | None = None) -> list[Reading]:
        """Readings in joules, optionally of one kind only."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return [r for r in self.readings if r.unit == "J" and (kind is None or r.kind == kind)]

    def total(self, kind: str, scope_prefix: str = "") -> float:
        """Sum of the readings of one ``kind`` (and scope prefix). Kinds are never mixed."""
        chosen = [r for r in self.energy_readings(kind) if r.scope.startswith(scope_prefix)
                  and "dynamic" not in r.scope]
        if not chosen:
            raise ValueError(f"no {kind!r} readings with scope starting {scope_prefix!r} in this report; "
                             f"kinds present: {sorted({r.kind for r in self.energy_readings()})}")
        return float(sum(r.value for r in chosen))

    @property
    def primary(self) -> Reading:
        """The reading ``joules`` reports, chosen by the fallback order."""
        readings = [r for r in self.energy_readings() if "dynamic" not in r.scope]
        gpu = [r for r in readings if r.scope == "GPU board"]
        if gpu:
            return gpu[0]
        cpu = [r for r in readings if r.kind == "measured" and r.scope in ("CPU package", "DRAM")]
        if cpu:
            scopes = " + ".join(sorted({r.scope for r in cpu}, reverse=True))
            return Reading(sum(r.value for r in cpu), "J", "measured", scopes,
                           " + ".join(r.source for r in cpu), RAPL_PERIOD_S)
        model = [r for r in readings if r.scope.startswith("model")]
        if model:
            return Reading(sum(r.value for r in model), "J", "estimated", "model: arithmetic + DRAM traffic",
                           model[0].source, None, "sum of the two estimated parts")
        if readings:
            return readings[0]
        raise ValueError("this report holds no energy reading: no sensor is available here and the modeled "
                         "estimate needs the work as a function (use m.run(fn))")

    @property
    def joules(self) -> float:
        """Joules of the whole window (all repeats), from the primary reading."""
        return self.primary.value

    @property
    def joules_per_item(self) -> float:
        """Primary joules divided by the items processed (items per call x repeats)."""
        return self.joules / (self.items * self.repeats)

    @property
    def avg_watts(self) -> float:
        """Primary joules divided by the wall time of the window."""
        if not self.wall_s:
            raise ValueError("this report has no wall time (a pure estimate): average watts are undefined")
        return self.joules / self.wall_s

    @property
    def kind(self) -> str:
        """The kind of the primary reading: say it next to every number."""
        return self.primary.kind

    def __str__(self) -> str:
        if self.energy_readings():
            p = self.primary
            lines = [f"energy: {p.value:.4g} J {p.kind.upper()} ({p.scope}); "
                     f"{self.joules_per_item:.4g} J per item over {self.items * self.repeats} items"]
            if self.wall_s:
                lines[0] += (f"; {self.avg_watts:.3g} W average over {self.wall_s:.3g} s ({self.repeats} repeats)"
                             + (" = estimated J / measured s" if p.kind == "estimated" else ""))
        else:
            lines = ["energy: no energy reading (no sensor here, and no modeled estimate without m.run(fn))"]
        lines += ["  " + r.label() for r in self.readings]
        lines += [f"  not used: {s.name}: {s.reason}" for s in self.unavailable]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _sync() -> None:
    """Wait for queued GPU work, so the window holds the work it claims to measure."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Session:
    """What ``with measure(...) as m`` gives you: call ``m.run(fn)``, then read ``m.report``."""

    def __init__(self, items: int, min_window_s: float | None, idle_s: float, meters: Sequence[Meter],
                 max_repeats: int):
        self.items, self.idle_s, self.max_repeats = items, idle_s, max_repeats
        self.statuses = [m.status() for m in meters]
        self.sensors = [m for m, s in zip(meters, self.statuses, strict=True) if s.available]
        # The model meter is the one meter that needs the work itself (count_work(fn)), not just a window.
        self.model = next((m for m in self.sensors if isinstance(m, ModelMeter)), None)
        self.unavailable = tuple(s for s in self.statuses if not s.available)
        periods = [m.period_s for m in self.sensors if m.period_s]
        auto = max([WINDOWS_PER_PERIOD * p for p in periods] + [0.2])
        self.min_window_s = auto if min_window_s is None else min_window_s
        self.report: EnergyReport | None = None
        self._idle_watts: dict[str, float] = {}
        self._idle_done = False
        self._body_state: list | None = None
        self._t0 = 0.0

    # -- idle baseline --------------------------------------------------------------------------
    def _measure_idle(self) -> None:
        if self.idle_s <= 0 or self._idle_done:
            return
        self._idle_done = True
        _sync()
        states = [m.start() for m in self.sensors]
        t0 = time.perf_counter()
        time.sleep(self.idle_s)
        seconds = time.perf_counter() - t0
        for m, st in zip(self.sensors, states, strict=True):
            for r in m.stop(st):
                if r.kind != "estimated":
                    self._idle_watts[r.source] = r.value / seconds

    # -- windows ---------------------------------------------------------------------------------
    def _begin(self) -> list:
        _sync()
        states = [m.start() for m in self.sensors]
        self._t0 = time.perf_counter()
        return states

    def _end(self, states: list, repeats: int, extra: Sequence[Reading] = (),
             warnings: Sequence[str] = ()) -> EnergyReport:
        _sync()
        wall = time.perf_counter() - self._t0
        readings: list[Reading] = []
        for m, st in zip(self.sensors, states, strict=True):
            readings += m.stop(st)
        warnings = list(warnings)
        for r in list(readings):
            idle_w = self._idle_watts.get(r.source)
            if idle_w is not None:
                readings.append(Reading(r.value - idle_w * wall, "J", r.kind, f"{r.scope} (dynamic: idle subtracted)",
                                        r.source, r.sensor_period_s,
                                        f"idle baseline {idle_w:.3g} W over {self.idle_s:g} s, times {wall:.3g} s"))
        if self.idle_s > 0 and not self._idle_watts:
            warnings.append("idle subtraction asked for, but no sensor here can take an idle baseline "
                            "(the model counts only the work, so it has no idle part)")
        readings += extra
        readings.append(Reading(wall, "s", "measured", "wall clock", "time.perf_counter", None,
                                f"{repeats} repeats, CUDA synchronized at both edges" if torch.cuda.is_available()
                                else f"{repeats} repeats"))
        return EnergyReport(tuple(readings), wall, repeats, self.items, self.unavailable, tuple(warnings),
                            dict(self._idle_watts))

    def _start_body(self) -> None:
        self._measure_idle()
        self._body_state = self._begin()

    def run(self, fn: Callable[[], object], warmup: int = 1) -> EnergyReport:
        """Call ``fn`` repeatedly until the window reaches ``min_window_s``; measure that window.

        One extra warm-up call comes first (untimed); when the model meter is on, that call also
        counts FLOPs and bytes. Returns the report (also kept as ``self.report``).
        """
        if not callable(fn):
            raise TypeError(f"fn must be a function taking no arguments, got {type(fn).__name__}")
        warmup = checks.nonneg_int("warmup", warmup)
        if self._body_state is not None:  # discard the window opened at `with`
            for m, st in zip(self.sensors, self._body_state, strict=True):
                m.stop(st)
            self._body_state = None
        counts = count_work(fn) if self.model is not None else None
        for _ in range(warmup):
            fn()
        self._measure_idle()
        states = self._begin()
        repeats, batch = 0, 1
        while True:
            for _ in range(batch):
                fn()
            repeats += batch
            _sync()
            elapsed = time.perf_counter() - self._t0
            for m, st in zip(self.sensors, states, strict=True):
                m.poll(st)
            if elapsed >= self.min_window_s or repeats >= self.max_repeats:
                break
            batch = min(batch * 2, self.max_repeats - repeats)  # grow the batch: fewer syncs for tiny work
        warnings = []
        if elapsed < self.min_window_s:
            warnings.append(f"window {elapsed:.3g} s is shorter than {self.min_window_s:.3g} s after max_repeats="
                            f"{self.max_repeats}: sensor readings are coarse")
        extra = counts.readings(repeats, self.model.dtype) if counts is not None and self.model is not None else []
        self.report = self._end(states, repeats, extra, warnings)
        return self.report

    def _finish_body(self) -> None:
        if self._body_state is None:
            return
        states, self._body_state = self._body_state, None
        warnings = []
        wall = time.perf_counter() - self._t0
        if wall < self.min_window_s:
            warnings.append(f"the window lasted {wall:.3g} s, shorter than {self.min_window_s:.3g} s "
                            f"(the minimum window for the sensors in use): use m.run(fn) to repeat short work")
        if self.model is not None:
            warnings.append("no modeled estimate: the model needs the work as a function, m.run(fn)")
        self.report = self._end(states, 1, (), warnings)


@contextmanager
def measure(items: int = 1, *, min_window_s: float | None = None, idle_s: float = 0.0,
            meters: Sequence | None = None, max_repeats: int = 100_000, threads: int | None = None
            ) -> Iterator[Session]:
    """Measure the energy of some work with every meter available here.

    ``items`` is how many items (inputs, tokens) one call of the work handles, for joules per item.
    ``min_window_s`` defaults to 10 updates of the slowest sensor in use (1 s with NVML's counter,
    0.2 s without sensors). ``idle_s`` > 0 first measures an idle baseline that long and reports a
    *dynamic* reading (idle power x window subtracted) next to each measured total.
    Use ``m.run(fn)`` inside the block to repeat short work; otherwise the block itself is the window.

    ``threads`` sets torch's CPU thread count for the whole block (restored after it); ``None`` keeps
    the current count. Time a small model with ``threads=1``: a batch-1 digits classifier gains
    nothing from a second thread, and every multi-threaded operation ends with the threads waiting
    for each other. On a busy machine one of them is often descheduled, and that wait, not the model,
    fills the window: on a loaded 2-core laptop the MoE's ``index_add`` made one input take a hundred
    times longer than in one thread. One thread has nobody to wait for, whatever ``OMP_WAIT_POLICY``
    the kernel was started with.
    """
    items = checks.positive_int("items", items)
    if min_window_s is not None and checks.finite("min_window_s", min_window_s) <= 0:
        raise ValueError(f"min_window_s must be a positive number of seconds (or None for automatic), "
                         f"got {min_window_s!r}")
    # Checked here, up front: NaN or inf would otherwise fail later, inside time.sleep.
    idle_s = checks.finite("idle_s", idle_s, low=0.0)  # seconds; 0 = no idle subtraction
    max_repeats = checks.positive_int("max_repeats", max_repeats)
    if meters is not None:
        if isinstance(meters, (str, bytes)) or not isinstance(meters, Sequence):
            raise TypeError(f"meters must be a list of meters such as [energy.ModelMeter()], got {meters!r}")
        bad = [type(m).__name__ for m in meters if not isinstance(m, Meter)]
        if bad:
            raise TypeError(f"meters must follow energy.Meter (name, period_s, status, start, poll, stop); got {bad}")
    if threads is not None:
        threads = checks.positive_int("threads", threads)
    session = Session(items, min_window_s, idle_s, list(meters) if meters is not None else default_meters(),
                      max_repeats)
    with _torch_threads(threads):
        session._start_body()
        try:
            yield session
        except BaseException:
            if session._body_state is not None:
                for m, st in zip(session.sensors, session._body_state, strict=True):
                    m.stop(st)
            raise
        session._finish_body()


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (``None``: unchanged), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
