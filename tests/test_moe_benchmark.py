"""benchmarks/moe.py runs end to end at a tiny size (Triton interpreter), so a GPU session can run it at once."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.backend import detect
from labkit.experiments import moe_routing as routing
from labkit.figures import moe as figures

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(detect().name == "torch", reason="triton is not installed")
def test_smoke_run_writes_a_complete_result(tmp_path):
    out = tmp_path / "moe_smoke.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "moe.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["smoke"] is True and [r["T"] for r in result["rows"]] == [1, 16, 40]
    for row in result["rows"]:
        assert row["rel_err_fused"] < (1e-4 if result["device"].startswith("cpu") else 3e-2)  # tf32 on a GPU
        assert set(row["ms"]) >= {"naive", "fused", "fused_align", "fused_up_gemm", "fused_down_gemm",
                                  "fused_combine", "dense_same_flops"}
        assert 0.0 <= row["padding_waste"] < 1.0
        assert sum(row["load_per_expert"]) == row["T"] * row["top_k"]

    # The notebook's loader skips smoke runs and draws GPU runs.
    assert routing.gpu_benchmarks(tmp_path) == []
    result["smoke"] = False
    (tmp_path / "moe_fake-gpu.json").write_text(json.dumps(result))
    out.unlink()
    found = routing.gpu_benchmarks(tmp_path)
    assert len(found) == 1
    fig = figures.benchmark_figure(found[0])
    assert len(fig.data) == 6 and list(fig.data[0].x) == ["T=1", "T=16", "T=40"]


def test_plain_run_without_gpu_falls_back_to_the_smoke_test(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full run would start")
    out = tmp_path / "moe.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "moe.py"), "--out", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No CUDA GPU here" in proc.stdout and "--smoke" in proc.stdout
    assert json.loads(out.read_text())["smoke"] is True
