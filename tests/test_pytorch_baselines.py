"""benchmarks/pytorch_baselines.py: its CPU smoke run exercises every path a CPU has and writes a valid results
file with a profiler summary beside it; the GPU-only paths are recorded as skipped with their reason."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import pytorch_baselines as pb  # noqa: E402

from labkit import results  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    assert pb.main(["--smoke", "--out", str(out)]) == 0
    return out


def test_smoke_run_writes_a_valid_results_file(smoke):
    data = results.read(smoke / "pytorch_baselines_smoke.json", "pytorch_baselines")
    assert data["smoke"] is True and data["gpu"].startswith("none") and data["command"].endswith("--smoke")
    sections = {r["section"] for r in data["rows"]}
    assert {"dense", "csr", "moe"} <= sections
    assert all(r["ms"] > 0 for r in data["rows"])
    # CSR is compared with more than one dense: fp32 with TF32 off and bf16 (TF32 too, on a GPU)
    csr = [r for r in data["rows"] if r["section"] == "csr"]
    assert {r["dense"] for r in csr} == {"fp32 (TF32 off)", "bf16"}
    assert all(r["rel_err"] < 1e-5 and r["speedup_vs_dense"] == pytest.approx(r["dense_ms"] / r["ms"], rel=0.01)
               for r in csr)
    moe = {r["op"]: r for r in data["rows"] if r["section"] == "moe"}
    assert {"moe_naive_loop", "moe_dense_equivalent"} <= set(moe)


def test_gpu_only_paths_are_skipped_with_their_reason_and_2_4_keeps_its_question_mark(smoke):
    data = json.loads((smoke / "pytorch_baselines_smoke.json").read_text())
    skipped = "\n".join(data["skipped"])
    for what in ("2:4 default", "2:4 cutlass forced", "bsr_dense_mm", "energy"):
        assert what in skipped, what
    assert "CUDA" in skipped  # the reason PyTorch gives for 2:4 on a CPU
    # no 2:4 row without a GPU: its backend stays unmeasured ("?") until a GPU run records the class
    assert not [r for r in data["rows"] if r["section"] == "2:4"]
    from torch.sparse import SparseSemiStructuredTensor

    assert SparseSemiStructuredTensor._FORCE_CUTLASS is False  # the section restores PyTorch's default


def test_profiler_summary_is_saved_next_to_the_results(smoke):
    data = json.loads((smoke / "pytorch_baselines_smoke.json").read_text())
    profile = json.loads((smoke / data["profile_file"]).read_text())
    assert profile["torch"] == torch.__version__
    (name, top), = [(k, v) for k, v in profile["kernels"].items() if k.startswith("csr")]
    assert top and all(e["calls"] >= 1 and e["us_per_step"] > 0 for e in top)
    assert any("aten::" in e["name"] for e in top)  # on a CPU: operator names; on a GPU: kernel names


def test_arguments_and_names():
    assert pb.slug("NVIDIA H200") == "h200" and pb.slug("NVIDIA GeForce RTX 4090") == "geforce_rtx_4090"
    with pytest.raises(ValueError, match="sections"):
        pb.run_all(True, ("dense", "sparse-magic"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--smoke"):
            pb.run_all(False)
