"""benchmarks/gpu_session.sh: its quick profile fits 8 minutes, and every flag and file it names exists.

The script runs only on a lent GPU machine, so it is checked here by reading it: the time limits of
the quick profile (install and doctor included) add up to less than 480 s, each benchmark it runs with
``$QUICK`` accepts ``--quick``, and the test files it runs are there.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
TEXT = SCRIPT.read_text()
QUICK_BUDGET_S = 480  # 8 minutes, all steps of `bash benchmarks/gpu_session.sh quick`


def _profile_block(name: str) -> str:
    """The lines that set one profile's limits: the `if ... quick` branch or its `else` branch."""
    m = re.search(r'if \[ "\$profile" = quick \]; then\n(.*?)\nelse\n(.*?)\nfi\n', TEXT, re.S)
    assert m, "gpu_session.sh no longer sets its limits in one `if [ \"$profile\" = quick ]; then ... else ... fi`"
    return m.group(1) if name == "quick" else m.group(2)


def _limits(name: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^\s*([A-Z]+_S)=(\d+)\s*$", _profile_block(name), re.M)}


def _test_files(name: str) -> list[str]:
    m = re.search(r'TEST_FILES="([^"]*)"', _profile_block(name))
    assert m, f"no TEST_FILES in the {name} profile"
    return m.group(1).split()


def test_quick_profile_fits_eight_minutes():
    quick, full = _limits("quick"), _limits("full")
    assert set(quick) == set(full) and len(quick) >= 7, (quick, full)
    assert sum(quick.values()) < QUICK_BUDGET_S, f"quick limits add up to {sum(quick.values())} s: {quick}"
    assert all(quick[k] <= full[k] for k in quick), "a quick limit is longer than the full one"
    used = set(re.findall(r'timeout "\$([A-Z]+_S)"', TEXT))
    assert used == set(quick), f"every command runs under one of the limits, and every limit is used: {used}"


def test_every_step_runs_under_its_limit():
    steps = re.search(r"steps=\$\{\*:-([a-z ]+)\}", TEXT).group(1).split()
    assert steps == ["tests", "kernels", "gemv", "moe", "energy"]
    for step in steps:
        line = re.search(rf"^\s*{step}\)\s+(.*)$", TEXT, re.M)
        assert line, f"no case for step {step}"
        assert re.match(r'timeout "\$[A-Z]+_S" ', line.group(1)), f"step {step} has no time limit: {line.group(1)}"


@pytest.mark.parametrize("script", sorted(set(re.findall(r"python (benchmarks/\w+\.py) \$QUICK", TEXT))))
def test_each_benchmark_accepts_the_quick_flag(script):
    """``--quick`` is in the script's own argparse help (parse_args runs before any work)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem + "_for_help", ROOT / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as done:
        mod.main(["--quick", "--help"])
    assert done.value.code == 0
    assert "--quick" in buf.getvalue()


def test_quick_flag_reaches_every_benchmark_step():
    run = set(re.findall(r"python (benchmarks/\w+\.py) \$QUICK", TEXT))
    assert run == {"benchmarks/kernels.py", "benchmarks/sparse_gemv.py", "benchmarks/moe.py",
                   "benchmarks/energy.py"}
    assert "QUICK=--quick" in _profile_block("quick") and re.search(r"^\s*QUICK=\s*$", _profile_block("full"), re.M)


def test_test_files_exist_and_quick_is_a_subset():
    quick, full = _test_files("quick"), _test_files("full")
    for f in full:
        assert (ROOT / f).is_file(), f
    assert set(quick) <= set(full) and "tests/test_kernel_sparse_gemv.py" in quick


def test_script_parses_and_quick_is_documented():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert "bash benchmarks/gpu_session.sh quick" in TEXT
    readme = (ROOT / "README.md").read_text()
    assert "gpu_session.sh quick" in readme
