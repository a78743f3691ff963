"""The roofline model (labkit.roofline), notebook 03's kernel figures and the kernel timings experiment."""
from __future__ import annotations

import json

import pytest
import torch

from labkit import results, roofline
from labkit.experiments import kernel_timings as kt
from labkit.figures import kernels as fk


def test_format_bytes_come_from_the_formats_registry():
    assert roofline.format_bytes("dense", 4096, 4096) == 4096 * 4096 * 2
    assert roofline.format_bytes("2:4", 4096, 4096) / roofline.format_bytes("dense", 4096, 4096) == 4.5 / 8
    assert roofline.format_bytes("csr", 100, 100, 1 / 3) == pytest.approx(100 * 100 * 2 + 101 * 4)
    assert roofline.format_bytes("bsr", 128, 128, 0.5, block=64) == 2 * (64 * 64 * 2 + 4) + 3 * 4
    with pytest.raises(ValueError, match="fmt"):
        roofline.format_bytes("coo", 4, 4)
    with pytest.raises(ValueError, match="density"):
        roofline.format_bytes("csr", 4, 4, 0.0)


def test_work_counts_flops_and_bytes():
    flops, nbytes = roofline.work("bsr", 2, 128, 128, 0.5, block=64)
    assert flops == 2 * 2 * 128 * 128 * 0.5
    assert nbytes == roofline.format_bytes("bsr", 128, 128, 0.5, block=64) + (2 * 128 + 2 * 128) * 2
    assert roofline.work("2:4", 1, 64, 64, 0.9)[0] == 2 * 64 * 64  # 2:4 saves bytes, not FLOPs, in Triton
    with pytest.raises(ValueError, match="m"):
        roofline.work("dense", 0, 4, 4, 1.0)
    with pytest.raises(ValueError, match="peak_tflops"):
        roofline.model_time("dense", 1, 4, 4, 1.0, 0.0, 1.0)


def test_roofline_model_regimes():
    roofs = {"peak_tflops": 1000.0, "bandwidth_tbs": 4.0}
    speed = {(r["format"], r["M"]): r["speedup"] for r in roofline.model_speedups(
             (1, 8192), 4096, 4096, roofs, cases=(("bsr", 0.1), ("2:4", 0.5), ("csr", 0.1)))}
    assert speed[("2:4", 1)] == pytest.approx(8 / 4.5, rel=0.02)  # memory-bound: bytes ratio
    assert speed[("2:4", 8192)] == 1.0  # compute-bound: no FLOPs saved without sparse tensor cores
    # ideal 1/d = 10, but at 8192 tokens reading x and writing y once already costs more than the sparse FLOPs
    assert 5 < speed[("bsr", 8192)] < 10 and speed[("bsr", 1)] == pytest.approx(10, rel=0.02)
    assert speed[("csr", 8192)] < 1 < speed[("csr", 1)]
    assert roofline.model_crossover("csr", 1, 4096, 4096, roofs) == pytest.approx(1 / 3, abs=0.01)
    assert roofline.model_crossover("csr", 8192, 4096, 4096, roofs) == pytest.approx(roofline.CUDA_CORE_RATIO, rel=0.01)
    with pytest.raises(ValueError, match="fmt"):
        roofline.model_crossover("2:4", 1)


def test_measured_roofs_and_baseline_figures():
    roofs = roofline.measured_roofs()
    assert roofs["peak_tflops"] == 743.9 and roofs["bandwidth_tbs"] == 3.03  # from the committed H200 file
    fig = fk.pytorch_baselines_figure()
    assert len(fig.data) == 7 and "H200" in fig.layout.title.text
    bsr64 = next(t for t in fig.data if t.name == "BSR bsr_dense_mm 64x64, M=8192 (bf16)")
    assert list(bsr64.x) == [0.5, 0.25, 0.1, 0.05] and list(bsr64.y) == [0.689, 1.341, 2.094, 4.964]
    assert len(fk.roofline_figure(roofs).data) == 6
    assert all("speedup_vs_dense" in r for r in fk.pytorch_baselines_table())
    facts = fk.baseline_facts()
    assert len(facts) == 5 and "density 0.01: 7.571x" in facts[0] and "8192 tokens: 2.094x" in facts[1]


def test_baseline_readers_fail_loudly_on_a_damaged_file(tmp_path):
    data = json.loads(results.PYTORCH_BASELINES.read_text())
    data["rows"] = [r for r in data["rows"] if not (r["op"] == "linear" and r["M"] == 16)]
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="exactly one row"):
        roofline.measured_roofs(path)
    path.write_text(results.PYTORCH_BASELINES.read_text()[:500])
    with pytest.raises(results.ResultsFileError, match="pytorch_baselines.py"):
        roofline.measured_roofs(path)


def test_gpu_curves_without_gpu_say_where_numbers_come_from():
    if torch.cuda.is_available():
        pytest.skip("on a GPU the figure is measured live")
    fig, text = fk.gpu_curves()
    assert len(fig.data) > 0
    if not kt.lab_results_files():
        assert "have not been timed on a GPU yet" in text and "H200" in text


def test_lab_results_files_reads_kernels_envelopes_only(tmp_path):
    row = kt.kernel_row("bsr", 3, 64, 64, "float32", 0.5, 32, 1.0, 2.0)
    for name, smoke in (("gpu_a", False), ("smoke", True)):
        results.write(name, [row], script="benchmarks/kernels.py", schema="kernels", folder=tmp_path,
                      extra={"gpu": "test", "smoke": smoke})
    (tmp_path / "other.json").write_text("[1, 2]")
    assert kt.lab_results_files(tmp_path) == [tmp_path / "gpu_a.json"]
    broken = tmp_path / "gpu_b.json"
    broken.write_text((tmp_path / "gpu_a.json").read_text().replace('"dense_ms": 2.0', '"dense_ms": "2"'))
    with pytest.raises(results.ResultsFileError, match=r"rows\[0\]\.dense_ms"):
        kt.lab_results_files(tmp_path)


def test_lab_results_figure_from_live_rows_on_cpu():
    rows = kt.live_gpu_rows(n=64, k=64, tokens=(3,), densities=(0.5, 0.25), block=32, dtype=torch.float32,
                            device="cpu", timer=lambda fn: (fn(), 1.0)[1])
    assert [r["density"] for r in rows] == [0.5, 0.25] and rows[0]["speedup_vs_dense"] == 1.0
    assert tuple(rows[0]) == kt.COLUMNS
    fig = fk.lab_results_figure({"gpu": "test", "date": "today", "rows": rows}, dtype="float32", n=64, k=64, block=32)
    assert len(fig.data) == 3 and "test" in fig.layout.title.text
    with pytest.raises(ValueError, match="no bsr rows"):
        fk.lab_results_figure({"gpu": "t", "date": "d", "rows": rows}, block=64)
    with pytest.raises(ValueError, match="power of two"):
        kt.live_gpu_rows(n=64, k=64, block=24, device="cpu")
