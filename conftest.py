"""Test-wide setup, for tests/ and notebooks/ alike (a conftest at the repository root applies to both;
one under tests/ would not reach the notebooks that nbval collects).

The Triton interpreter must be switched on before anything imports triton, so this runs
labkit's backend configuration first (it sets TRITON_INTERPRET=1 when there is no GPU).
"""
import os

os.environ.setdefault("PYTHONHASHSEED", "0")

import labkit  # noqa: E402,F401  (configures TRITON_INTERPRET before triton is imported)


def pytest_collectstart(collector):
    """nbval: stderr carries version-dependent warnings and progress bars, so don't compare it."""
    if getattr(collector, "fspath", None) is not None and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
