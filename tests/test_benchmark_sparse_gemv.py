"""benchmarks/sparse_gemv.py runs end to end at a tiny size (Triton interpreter), before any GPU session."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from labkit import results
from labkit.backend import detect
from labkit.kernels.sparse_gemv import gemv_bytes

ROOT = Path(__file__).resolve().parent.parent
# the interpreter converts 1-element arrays in `for` bounds to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def _load():
    spec = importlib.util.spec_from_file_location("bench_sparse_gemv", ROOT / "benchmarks" / "sparse_gemv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(detect().name == "torch", reason="triton is not installed")
def test_smoke_run_writes_a_valid_sparse_gemv_file(tmp_path):
    bench = _load()
    out = tmp_path / "sparse_gemv_smoke.json"
    result = bench.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert results.read(out, "sparse_gemv")["rows"] == result["rows"]  # a valid results envelope
    assert result["smoke"] is True and result["quick"] is False and result["errors"] == []
    grid = bench.SMOKE
    rows = result["rows"]
    assert len(rows) == len(grid["shapes"]) * len(grid["dtypes"]) * len(grid["sparsities"]) * len(bench.VARIANTS)
    assert {r["kernel"] for r in rows} == {"sparse_gemv", "sparse_gemv_split1"}
    assert {r["split_k"] for r in rows if r["kernel"] == "sparse_gemv_split1"} == {1}
    for r in rows:  # every case passed its correctness check, so it was timed
        assert r["M"] == 1 and r["rel_err"] <= 1e-2 and r["block_n"] in (64, 128)
        assert r["kept"] == pytest.approx(1 - r["sparsity"], abs=1 / r["K"])
        size = torch.finfo(getattr(torch, r["dtype"])).bits // 8
        assert r["bytes"] == pytest.approx(gemv_bytes(r["N"], r["K"], r["kept"], size), rel=1e-3)
        assert r["ideal_speedup"] == pytest.approx(gemv_bytes(r["N"], r["K"], 1.0, size) / r["bytes"], rel=1e-2)
        assert r["ms"] > 0 and r["speedup_vs_dense"] == pytest.approx(r["dense_ms"] / r["ms"], rel=1e-2, abs=1e-3)
        assert r["GB_per_s"] == pytest.approx(r["bytes"] / r["ms"] / 1e6, rel=1e-3)
    assert {r["threshold"] for r in rows if r["sparsity"] == 0.0} == {0.0}  # threshold 0 is the dense case


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what --quick does without a GPU")
@pytest.mark.skipif(detect().name == "torch", reason="triton is not installed")
def test_quick_without_gpu_falls_back_to_the_smoke_test(tmp_path, capsys):
    result = _load().main(["--quick", "--out", str(tmp_path / "q.json")])
    assert "No GPU here" in capsys.readouterr().out
    assert result["smoke"] is True and result["quick"] is False  # a smoke run is never labelled a quick GPU run
    assert results.read(tmp_path / "q.json", "sparse_gemv")["rows"] == result["rows"]


def test_quick_grid_is_a_subset_of_the_full_grid():
    bench = _load()
    assert set(bench.QUICK["shapes"]) < set(bench.FULL["shapes"])
    assert set(bench.QUICK["sparsities"]) < set(bench.FULL["sparsities"]) and 0.0 in bench.QUICK["sparsities"]
    # the shapes: SmolLM2-135M's three linear shapes and LLaMA-7B's two, in fp16, at 0/0.4/0.5/0.7
    assert bench.FULL["shapes"] == [(576, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)]
    assert bench.FULL["sparsities"] == [0.0, 0.4, 0.5, 0.7] and bench.FULL["dtypes"] == ["float16"]
