"""Energy sensors: which can be read on this machine, and why not.

(The energy issue grows this module into full meters; ``sensor_status`` is what ``doctor`` shows.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class SensorStatus:
    """Whether one energy sensor can be read here, and the reason in words."""

    name: str
    available: bool
    reason: str


def nvml_status() -> SensorStatus:
    """NVIDIA's management library: a total-energy counter on Volta and newer GPUs."""
    try:
        import pynvml
    except ImportError:
        return SensorStatus("nvml", False, "nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return SensorStatus("nvml", False, f"no NVIDIA driver or GPU ({e})")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return SensorStatus("nvml", False, "NVML found no GPU")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return SensorStatus("nvml", True, "GPU total-energy counter (mJ, updates about every 100 ms)")
        except pynvml.NVMLError:
            pynvml.nvmlDeviceGetPowerUsage(handle)
            return SensorStatus("nvml", True, "GPU power samples only (no energy counter before Volta)")
    finally:
        pynvml.nvmlShutdown()


def rapl_status(root: Path = RAPL_ROOT) -> SensorStatus:
    """Linux RAPL through sysfs powercap: CPU package (and DRAM) energy counters."""
    zones = sorted(root.glob("intel-rapl:[0-9]")) if root.exists() else []
    if not zones:
        return SensorStatus("rapl", False, f"no RAPL zones under {root} (virtual machine, non-Intel/AMD CPU, or not Linux)")
    counter = zones[0] / "energy_uj"
    try:
        int(counter.read_text())
    except PermissionError:
        return SensorStatus("rapl", False, f"{counter} is not readable by this user (root only since Linux 5.10)")
    except OSError as e:
        return SensorStatus("rapl", False, f"{counter} cannot be read: {e}")
    return SensorStatus("rapl", True, f"CPU package energy counter at {counter}")


def sensor_status() -> list[SensorStatus]:
    """Every energy sensor the lab knows, in the order meters are tried."""
    return [nvml_status(), rapl_status()]
