"""benchmarks/kernels.py runs end to end at a tiny size (Triton interpreter), so a GPU session can run it at once."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit import results
from labkit.backend import detect

ROOT = Path(__file__).resolve().parent.parent
# the interpreter converts 1-element arrays in `for` bounds to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def _load():
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(detect().name == "torch", reason="triton is not installed")
def test_smoke_run_writes_rows_with_the_issue_columns(tmp_path):
    bench = _load()
    out = tmp_path / "kernels_smoke.json"
    result = bench.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert results.read(out, "kernels")["rows"] == result["rows"]  # a valid results envelope
    assert result["smoke"] is True and result["errors"] == [] and result["complete"]
    assert {"gpu", "versions", "date", "machine"} <= set(result) and {"torch", "triton"} <= set(result["versions"])
    cols = ["kernel", "M", "N", "K", "dtype", "density", "block", "ms", "dense_ms", "baseline", "baseline_ms",
            "speedup_vs_dense", "speedup_vs_baseline"]
    assert result["columns"] == cols
    rows = result["rows"]
    assert all(list(r) == cols for r in rows)
    kinds = {r["kernel"] for r in rows}
    assert kinds == {"bsr", "2:4", "csr", "auto"}
    grid = bench.SMOKE
    n_bsr = len(grid["tokens"]) * len(grid["densities"]) * len(grid["blocks"])
    assert sum(r["kernel"] == "bsr" for r in rows) == n_bsr
    for r in rows:  # every kernel passed its correctness check, so it was timed
        assert r["ms"] > 0 and r["speedup_vs_dense"] == pytest.approx(r["dense_ms"] / r["ms"], rel=1e-2, abs=1e-3)
    decode = {(r["kernel"], r["density"], r["block"]) for r in rows if r["M"] == 1 and r["kernel"] != "auto"}
    assert {(b["kernel"], b["density"], b["block"]) for b in result["bandwidth"]} == decode
    assert all(b["share_of_copy"] > 0 for b in result["bandwidth"])
    assert {p["chosen"] for p in result["auto_plans"]} <= {"dense", "bsr", "2:4", "csr", "2:4-torch"}


def test_a_failing_kernel_is_recorded_not_fatal():
    bench = _load()
    run = bench.Run("cpu", budget_s=10)
    ref = torch.ones(2, 2)
    assert run.checked("wrong", lambda: torch.zeros(2, 2), ref, torch.float32) is None
    assert run.checked("raises", lambda: 1 / 0, ref, torch.float32) is None
    assert "relative error" in run.errors[0] and "ZeroDivisionError" in run.errors[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_plain_run_without_gpu_falls_back_to_the_smoke_test(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--out", str(tmp_path / "k.json")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "No GPU here" in proc.stdout and "--smoke" in proc.stdout
    assert json.loads((tmp_path / "k.json").read_text())["smoke"] is True


def test_targets_are_judged_from_rows():
    bench = _load()
    rows = [bench.row("bsr", 8192, 8192, 8192, "bfloat16", 0.1, 64, 1.0, 8.0),
            bench.row("bsr", 16, 8192, 8192, "bfloat16", 0.1, 64, 1.0, 3.0),
            bench.row("auto", 16, 8192, 8192, "bfloat16", 0.1, 64, 1.0, 0.97)]
    status = {t["target"]: (t["status"], t["value"]) for t in bench.check_targets(rows)}
    assert status["BSR d=0.1 M=8192 >= 7x dense"] == ("met", 8.0)
    assert status["BSR decode d=0.1 M=16 >= 4x dense"] == ("missed", 3.0)
    assert status["2:4 M=1 >= 1.4x dense"] == ("missing", None)
    assert status["SparseLinear auto never < 0.95x dense"] == ("met", 0.97)
