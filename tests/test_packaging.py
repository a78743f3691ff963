"""The package layout: kernels/ ships as labkit.kernels, never as a top-level `kernels` module."""
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(CONFIG["tool"]["setuptools"]["packages"])
    found = {"labkit" + "".join("." + part for part in p.parent.relative_to(ROOT / "labkit").parts)
             for p in (ROOT / "labkit").rglob("__init__.py")}
    found |= {"labkit.kernels" + "".join("." + part for part in p.parent.relative_to(ROOT / "kernels").parts)
              for p in (ROOT / "kernels").rglob("__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_kernels_folder_maps_to_labkit_kernels():
    assert CONFIG["tool"]["setuptools"]["package-dir"]["labkit.kernels"] == "kernels"
    import labkit.kernels

    assert Path(labkit.kernels.__file__).resolve().parent == ROOT / "kernels"


def test_no_top_level_kernels_module_is_installed(tmp_path):
    # `kernels` on PyPI is another project that transformers probes for; we must not shadow it.
    # Run from an empty folder so the checkout itself is not on sys.path.
    code = "import importlib.util, labkit.kernels; print(importlib.util.find_spec('kernels'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None", f"a top-level `kernels` module is importable: {out.stdout}"
