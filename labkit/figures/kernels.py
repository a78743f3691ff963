"""Figures and tables of notebook 03 (sparse kernels): the roofline, and measured GPU speed-ups.

* :func:`roofline_figure`: attainable TFLOP/s against FLOPs per byte (:mod:`labkit.roofline`).
* :func:`lab_results_figure`: the lab's BSR kernel against dense and PyTorch's ``bsr_dense_mm``, from
  ``benchmarks/kernels.py`` rows (a committed GPU file, or live rows).
* :func:`pytorch_baselines_figure`, :func:`pytorch_baselines_table`, :func:`baseline_facts`: PyTorch's
  own sparse paths measured on an H200 (rows of :func:`labkit.results.pytorch_baselines`).
* :func:`gpu_curves`: the notebook's GPU figure (live timings on a GPU, else committed ones) and a
  sentence saying where its numbers come from.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import plotly.graph_objects as go
import torch

from labkit import results, roofline
from labkit.experiments import kernel_timings
from labkit.figures import rounded, style
from labkit.kernels import runtime as rt


def _baselines(rows: Sequence[dict] | None) -> list[dict]:
    return list(rows) if rows is not None else results.pytorch_baselines()


def roofline_figure(roofs: dict | None = None, m_values=roofline.TOKENS, n: int = 8192, k: int = 8192) -> go.Figure:
    """Classic roofline: attainable TFLOP/s against FLOPs per byte, with each format at each token count."""
    roofs = roofs or roofline.measured_roofs()
    peak, bw = roofs["peak_tflops"], roofs["bandwidth_tbs"]
    xs = [0.5 * 2**i for i in range(15)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rounded(xs, 2), y=rounded([min(peak, bw * x) for x in xs], 1), mode="lines",
                             name="tensor-core roof", line={"color": "black"}))
    fig.add_trace(go.Scatter(x=rounded(xs, 2), y=rounded([min(peak * roofline.CUDA_CORE_RATIO, bw * x) for x in xs], 1),
                             mode="lines", name="CUDA-core roof (CSR)", line={"color": "grey", "dash": "dot"}))
    for fmt, d in (("dense", 1.0), ("bsr", 0.1), ("2:4", 0.5), ("csr", 0.1)):
        ai, perf = [], []
        for m in m_values:
            flops, nbytes = roofline.work(fmt, m, n, k, d)
            ai.append(flops / nbytes)
            perf.append(flops / roofline.model_time(fmt, m, n, k, d, peak, bw) / 1e12)
        fig.add_trace(go.Scatter(x=rounded(ai, 2), y=rounded(perf, 1), mode="markers+text", name=f"{fmt} d={d}",
                                 text=[f"M={m}" for m in m_values], textposition="top center"))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOPs executed per byte moved)")
    fig.update_yaxes(type="log", title="attainable TFLOP/s")
    return style(fig, f"Roofline of an 8192x8192 bf16 layer (roofs measured on an H200: {peak:g} TFLOP/s, "
                      f"{bw:g} TB/s)", height=460)


def lab_results_figure(result: dict, dtype: str = "bfloat16", n: int = 8192, k: int = 8192, block: int = 64
                       ) -> go.Figure:
    """Speed-up over dense against density from a ``benchmarks/kernels.py`` result: the lab's BSR
    kernel and PyTorch's ``bsr_dense_mm`` at the smallest and largest token counts, with the ideal 1/d.

    ``result``: a dict with ``gpu``, ``date`` and ``rows`` (the ``kernels`` results schema).
    """
    rows = [r for r in result["rows"] if r["kernel"] == "bsr" and r["dtype"] == dtype and r["N"] == n
            and r["K"] == k and r["block"] == block]
    if not rows:
        raise ValueError(f"no bsr rows for {n}x{k} {dtype} block {block} in this result")
    ms = sorted({r["M"] for r in rows})
    fig = go.Figure()
    dens = sorted({r["density"] for r in rows})
    fig.add_trace(go.Scatter(x=dens, y=rounded([1 / d for d in dens], 2), name="ideal 1/density",
                             mode="lines", line={"color": "grey", "dash": "dot"}))
    for m in sorted({ms[0], ms[-1]}):
        sel = sorted((r for r in rows if r["M"] == m), key=lambda r: r["density"])
        fig.add_trace(go.Scatter(x=[r["density"] for r in sel],
                                 y=rounded([r["speedup_vs_dense"] or 0 for r in sel], 3),
                                 name=f"lab bsr_linear, M={m}", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=[r["density"] for r in sel],
                                 y=rounded([r["dense_ms"] / r["baseline_ms"] if r["baseline_ms"] else 0 for r in sel],
                                           3),
                                 name=f"torch bsr_dense_mm, M={m}", mode="lines+markers", line={"dash": "dash"}))
    fig.update_xaxes(type="log", title="density (share of blocks kept)")
    fig.update_yaxes(type="log", title="speed-up over dense F.linear")
    return style(fig, f"BSR on {result['gpu']} ({result['date']}), {n}x{k} {dtype}, {block}x{block} blocks")


def pytorch_baselines_figure(rows: Sequence[dict] | None = None) -> go.Figure:
    """PyTorch's own sparse paths on an H200 against dense: BSR (bsr_dense_mm), 2:4, cuSPARSE CSR.

    ``rows``: the baseline rows (default: the committed file, :func:`labkit.results.pytorch_baselines`).
    """
    rows = _baselines(rows)
    fig = go.Figure()
    dens = [0.5, 0.25, 0.1, 0.05, 0.01]
    fig.add_trace(go.Scatter(x=dens, y=rounded([1 / d for d in dens], 2), name="ideal 1/density", mode="lines",
                             line={"color": "grey", "dash": "dot"}))
    for m in (8192, 16):
        for bs in (64, 32):
            sel = [r for r in rows if r["section"] == "bsr" and r["op"] == "bsr_dense_mm" and r["M"] == m
                   and r["block"] == bs]
            fig.add_trace(go.Scatter(x=[r["density"] for r in sel], y=rounded([r["speedup_vs_dense"] for r in sel], 3),
                                     mode="lines+markers", name=f"BSR bsr_dense_mm {bs}x{bs}, M={m} (bf16)"))
    csr = [r for r in rows if r["section"] == "csr"]
    fig.add_trace(go.Scatter(x=[r["density"] for r in csr], y=rounded([r["speedup_vs_dense"] for r in csr], 3),
                             mode="lines+markers", name="cuSPARSE CSR, M=4096 (fp32)"))
    s24 = [r for r in rows if r["section"] == "2:4" and r["op"] == "semi_structured_linear"]
    fig.add_trace(go.Scatter(x=[0.5] * len(s24), y=rounded([r["speedup_vs_dense"] for r in s24], 3),
                             mode="markers+text", text=[f"M={r['M']}" for r in s24], textposition="middle right",
                             name="2:4 cuSPARSELt (bf16)", marker={"size": 10, "symbol": "diamond"}))
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    fig.update_xaxes(type="log", title="density (share of weights kept)", autorange="reversed")
    fig.update_yaxes(type="log", title="speed-up over dense (above 1 = faster)")
    return style(fig, "PyTorch's own sparse paths on an NVIDIA H200 (2026-11-28)", height=460)


def pytorch_baselines_table(rows: Sequence[dict] | None = None) -> list[dict]:
    """The baseline rows with a speed-up over dense, as (case, ms, speed-up) for printing."""
    return [{"case": r["label"], "ms": r["ms"], "speedup_vs_dense": r["speedup_vs_dense"]}
            for r in _baselines(rows) if "speedup_vs_dense" in r and r["section"] != "moe"]


def baseline_facts(rows: Sequence[dict] | None = None) -> list[str]:
    """Sentences with the key numbers of PyTorch's own sparse paths, read from the committed file."""
    rows = _baselines(rows)
    csr = [r for r in rows if r["section"] == "csr"]
    out = ["cuSPARSE CSR vs dense (fp32, 4096 tokens): " + ", ".join(
        f"density {r['density']:g}: {r['speedup_vs_dense']}x (ideal {r['ideal_speedup']}x)" for r in csr)]
    for m in (8192, 16):
        r = results.one(rows, section="bsr", op="bsr_dense_mm", M=m, block=64, density=0.1)
        out.append(f"torch bsr_dense_mm, 64x64 blocks, density 0.1, {m} tokens: {r['speedup_vs_dense']}x dense "
                   f"(ideal {r['ideal_speedup']}x)")
    for m in (8192, 64):
        r = results.one(rows, op="semi_structured_linear", M=m, N=8192, K=8192)
        out.append(f"2:4 through to_sparse_semi_structured (cuSPARSELt), {m} tokens: {r['speedup_vs_dense']}x dense")
    return out


def gpu_curves() -> tuple[go.Figure, str]:
    """The notebook's GPU figure and a sentence saying where its numbers come from.

    Live measurements when a GPU is present; else the newest committed ``benchmarks/kernels.py``
    result; else PyTorch's own paths measured on an H200, saying the lab's kernels are not timed yet.
    """
    if torch.cuda.is_available() and not rt.interpreting():
        name = torch.cuda.get_device_name()
        result: dict = {"gpu": name, "date": dt.date.today().isoformat(), "rows": kernel_timings.live_gpu_rows()}
        return lab_results_figure(result, n=4096, k=4096), f"Measured live on this machine's {name}."
    files = kernel_timings.lab_results_files()
    if files:
        result = results.read(files[0], "kernels")
        versions = result["versions"]
        return (lab_results_figure(result),
                f"Measured by benchmarks/kernels.py on {result['gpu']} on {result['date']} "
                f"(file {files[0].name}; torch {versions.get('torch')}, triton {versions.get('triton')}).")
    return (pytorch_baselines_figure(),
            "No GPU here, and the lab's own kernels have not been timed on a GPU yet (no benchmarks/kernels.py "
            f"results file). Shown instead: PyTorch's own sparse paths, measured on an NVIDIA H200 on 2026-11-28 "
            f"by benchmarks/pytorch_baselines.py ({results.PYTORCH_BASELINES.name}).")
