"""``python -m labkit doctor``: what this machine can run, in plain words.

It checks capabilities, not just versions: is there a GPU and can it do bf16, how will Triton
kernels run, which energy sensors can be read (and why not), will widgets render in JupyterLab.
The last line is a verdict. The exit status is non-zero only when the lab cannot run at all.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"

#: Packages whose versions the report lists; the first three are required to run the lab at all.
PACKAGES = ("torch", "numpy", "scikit-learn", "triton", "jupyterlab", "ipywidgets", "jupyterlab_widgets",
            "anywidget", "plotly", "nvidia-ml-py")
REQUIRED = {"torch", "numpy", "scikit-learn"}

#: JupyterLab front-end extensions that draw the lab's widgets and plotly figures.
LAB_EXTENSIONS = {
    "@jupyter-widgets/jupyterlab-manager": "ipywidgets (package jupyterlab_widgets)",
    "anywidget": "plotly FigureWidget (package anywidget)",
    "jupyterlab-plotly": "plotly figures (package plotly)",
}


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    topic: str
    status: str  # OK, WARN or FAIL
    detail: str


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _machine() -> list[Check]:
    import psutil

    py = sys.version_info
    checks = [Check("python", OK if py >= (3, 11) else FAIL, f"{platform.python_version()} ({sys.executable})")]
    checks.append(Check("system", OK, f"{platform.system()} {platform.release()} {platform.machine()}"))
    ram = psutil.virtual_memory().total / 2**30
    checks.append(Check("cpu", OK, f"{os.cpu_count()} logical cores, {ram:.1f} GiB RAM"))
    if ram < 2:
        checks[-1] = Check("cpu", WARN, f"{os.cpu_count()} cores, only {ram:.1f} GiB RAM: close other programs")
    return checks


def _packages() -> list[Check]:
    checks = []
    for name in PACKAGES:
        version = _version(name)
        if version is None:
            status = FAIL if name in REQUIRED else WARN
            checks.append(Check(name, status, "not installed"))
        else:
            checks.append(Check(name, OK, version))
    return checks


def _gpu() -> list[Check]:
    import torch

    if not torch.cuda.is_available():
        return [Check("gpu", WARN, "no CUDA GPU visible: everything runs on the CPU, GPU timings come from "
                                   "committed results files")]
    name = torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    bf16 = "bf16 ok" if (major, minor) >= (8, 0) else "no bf16 (needs compute capability 8.0+)"
    return [Check("gpu", OK, f"{name}, compute capability {major}.{minor}, {bf16}")]


def _kernels() -> list[Check]:
    from labkit import backend

    b = backend.detect()
    return [Check("kernels", OK if b.name == "triton" else WARN, f"{b.name}: {b.reason}")]


def _energy() -> list[Check]:
    from labkit import energy

    checks = []
    for status in energy.sensor_status():
        checks.append(Check(f"energy: {status.name}", OK if status.available else WARN, status.reason))
    return checks


def _widgets() -> list[Check]:
    """Will ipywidgets and plotly render in JupyterLab? Their labextensions must sit in a data dir."""
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return [Check("widgets", WARN, "jupyter is not installed: run `make lab`")]
    found: dict[str, str] = {}  # extension -> the first data dir that has it
    for base in jupyter_path("labextensions"):
        for ext in LAB_EXTENSIONS:
            if (Path(base) / ext / "package.json").exists():
                found.setdefault(ext, base)
    missing = [what for ext, what in LAB_EXTENSIONS.items() if ext not in found]
    if missing:
        return [Check("widgets", WARN, "JupyterLab will not draw: " + "; ".join(missing)
                      + ". Install the lab extras: pip install -e '.[lab]'")]
    return [Check("widgets", OK, "ipywidgets, anywidget and plotly front-ends are installed for JupyterLab")]


def _llm() -> list[Check]:
    """Is SmolLM2-135M (notebook 06) installed, and is its file the one the lab was tested with?"""
    from labkit.llm import model

    path = model.installed_path()
    if path is None:
        return [Check("llm", WARN, f"SmolLM2-135M not installed (notebook 06 needs it): {model.INSTALL_COMMAND}")]
    try:
        model.verify(path)
    except model.ModelFileError as e:
        return [Check("llm", WARN, str(e))]
    return [Check("llm", OK, f"SmolLM2-135M found, SHA-256 ok ({path})")]


def run() -> list[Check]:
    """Every check, in report order."""
    checks = _machine() + _packages()
    if _version("torch") is None:
        return checks  # nothing else can be probed without torch
    return checks + _gpu() + _kernels() + _energy() + _widgets() + _llm()


def verdict(checks: list[Check]) -> tuple[bool, str]:
    """``(can_run, sentence)`` summarising the checks."""
    failed = [c.topic for c in checks if c.status == FAIL]
    if failed:
        return False, f"NOT READY: fix {', '.join(failed)} first (see the lines marked FAIL)."
    warned = [c.topic for c in checks if c.status == WARN]
    if warned:
        return True, f"READY, with limits: every notebook runs; see the notes on {', '.join(warned)}."
    return True, "READY: everything the lab uses is available, GPU included."


def format_report(checks: list[Check]) -> str:
    """The report as aligned text lines, verdict last."""
    width = max(len(c.topic) for c in checks)
    lines = ["Sparse Models Lab doctor"]
    lines += [f"  [{c.status:>4}] {c.topic:<{width}}  {c.detail}" for c in checks]
    lines.append(verdict(checks)[1])
    return "\n".join(lines)


def main() -> int:
    checks = run()
    print(format_report(checks))
    return 0 if verdict(checks)[0] else 1
