"""Timings of the lab's sparse kernels for notebook 03: live on a GPU, or the committed ones.

* :func:`kernel_row`: one timing row in the ``kernels`` results schema (shared with ``benchmarks/kernels.py``).
* :func:`live_gpu_rows`: time dense ``F.linear``, the lab's ``bsr_linear`` and torch's ``bsr_dense_mm`` now.
* :func:`lab_results_files`: committed ``benchmarks/kernels.py`` runs on a GPU, newest first.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from labkit import formats, results
from labkit.kernels.bsr_linear import bsr_linear

#: The fields of a row, in order (the ``kernels`` schema of :mod:`labkit.results`).
COLUMNS = ("kernel", "M", "N", "K", "dtype", "density", "block", "ms", "dense_ms", "baseline", "baseline_ms",
           "speedup_vs_dense", "speedup_vs_baseline")


def kernel_row(kernel: str, m: int, n: int, k: int, dtype: str, density: float, block: int | None,
               ms: float | None, dense_ms: float, baseline: str | None = None, baseline_ms: float | None = None
               ) -> dict:
    """One timing row: the case, its times in ms (None: the path failed), and the speed-ups they give."""
    row = {"kernel": kernel, "M": m, "N": n, "K": k, "dtype": dtype, "density": density, "block": block,
           "ms": None if ms is None else round(ms, 5), "dense_ms": round(dense_ms, 5), "baseline": baseline,
           "baseline_ms": None if baseline_ms is None else round(baseline_ms, 5),
           "speedup_vs_dense": None if not ms else round(dense_ms / ms, 3),
           "speedup_vs_baseline": None if not (ms and baseline_ms) else round(baseline_ms / ms, 3)}
    assert tuple(row) == COLUMNS
    return row


def live_gpu_rows(n: int = 4096, k: int = 4096, tokens=(16, 4096), densities=(0.5, 0.25, 0.1, 0.05), block: int = 64,
                  dtype: torch.dtype = torch.bfloat16, device: str = "cuda", timer=None) -> list[dict]:
    """Time dense ``F.linear``, the lab's ``bsr_linear`` and (on a GPU) torch's ``bsr_dense_mm`` here and now.

    Rows are :func:`kernel_row` rows. ``timer(fn) -> ms`` defaults to ``triton.testing.do_bench`` on a
    GPU and :func:`labkit.utils.median_time` elsewhere (both through :func:`labkit.utils.time_ms`).
    """
    from labkit.kernels.patterns import block_sparse

    formats.check_block(block)
    if timer is None:
        from labkit.utils import time_ms

        def timer(fn):
            return time_ms(fn, cuda=device == "cuda", repeats=1, warmup=0)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for m in tokens:
        x = torch.randn(m, k, generator=gen).to(device, dtype)
        xt = x.t().contiguous()
        for d in densities:
            w = block_sparse(n, k, block, d, gen).to(device, dtype)
            wb = w.to_sparse_bsr((block, block))
            dense_ms = timer(lambda x=x, w=w: F.linear(x, w))
            ms = timer(lambda x=x, wb=wb: bsr_linear(x, wb))
            base = None
            if device == "cuda":
                from torch.sparse._triton_ops import bsr_dense_mm
                base = timer(lambda xt=xt, wb=wb: bsr_dense_mm(wb, xt))
            rows.append(kernel_row("bsr", m, n, k, str(dtype)[6:], d, block, ms, dense_ms,
                                   "torch.sparse._triton_ops.bsr_dense_mm", base))
    return rows


def lab_results_files(results_dir: Path | str | None = None) -> list[Path]:
    """Committed ``benchmarks/kernels.py`` results (full runs on a GPU, not smoke or quick runs), newest date first."""
    found = []
    for p in results.find("kernels", results_dir):
        data = results.read(p, "kernels")  # a damaged kernels file is an error, not skipped
        if not data["smoke"] and not data.get("quick"):  # a quick run times fewer shapes: not the full table
            found.append((data["date"], p))
    return [p for _, p in sorted(found, reverse=True)]
