"""A roofline model of one sparse linear layer: is it limited by arithmetic or by memory traffic?

A layer ``y = x @ W.T`` with ``m`` tokens and an ``(n, k)`` weight executes some FLOPs and moves
some bytes (the weight in its storage format, plus ``x`` and ``y``). A GPU finishes it no faster
than ``max(FLOPs / peak, bytes / bandwidth)``. With few tokens the bytes win (memory-bound: every
byte a format saves is time saved); with many tokens the FLOPs win (compute-bound: only skipped
tensor-core FLOPs help). Both roofs are *measured* on an H200 with dense ``F.linear``
(:func:`measured_roofs`, from the committed PyTorch-baseline results), not taken from a datasheet.

Byte counts per format come from :mod:`labkit.formats` (their one home).
"""
from __future__ import annotations

from pathlib import Path

from labkit import checks, formats, results

#: Assumption of the model: CUDA-core FMA throughput / tensor-core throughput on Hopper (NVIDIA H100
#: SXM datasheet: 67 fp32 TFLOPS against 989 dense bf16 tensor-core TFLOPS). CSR runs on CUDA cores;
#: dense, BSR and the lab's 2:4 kernel run on tensor cores.
CUDA_CORE_RATIO = 67 / 989
#: Token counts the notebook and the model sweep over (decode ... prefill).
TOKENS = (1, 16, 128, 1024, 8192)


def format_bytes(fmt: str, n: int, k: int, density: float = 1.0, value_bytes: int = 2, index_bytes: int = 4,
                 block: int = 64) -> float:
    """Bytes to store an (n, k) weight in ``fmt`` at ``density``, indices and metadata included.

    Shorthand for :meth:`labkit.formats.Format.bytes` (see :mod:`labkit.formats` for each format's layout);
    defaults: bf16 values (2 bytes), int32 indices, 64 x 64 BSR tiles.
    """
    return formats.get(fmt, "fmt").bytes((n, k), density, value_bytes, index_bytes, block)


def work(fmt: str, m: int, n: int, k: int, density: float, value_bytes: int = 2, index_bytes: int = 4,
         block: int = 64) -> tuple[float, float]:
    """``(FLOPs executed, bytes moved)`` of ``x @ W.T`` for ``m`` tokens and an ``(n, k)`` weight in ``fmt``.

    FLOPs: dense ``2mnk``; BSR and CSR ``2mnk * density`` (they skip the zeros); the lab's 2:4 kernel
    ``2mnk`` (Triton has no sparse tensor cores: it saves bytes, not FLOPs). Bytes: the weight in its
    format (2:4 is density 0.5 by construction) plus ``x`` and ``y``, each moved once.
    """
    for name, v in (("m", m), ("n", n), ("k", k)):
        checks.positive_int(name, v)
    d = 0.5 if fmt == "2:4" else 1.0 if fmt == "dense" else checks.fraction("density", density, include_high=True)
    flops = 2.0 * m * n * k * (1.0 if fmt in ("dense", "2:4") else d)
    return flops, format_bytes(fmt, n, k, d, value_bytes, index_bytes, block) + (m * k + m * n) * value_bytes


def model_time(fmt: str, m: int, n: int, k: int, density: float, peak_tflops: float, bandwidth_tbs: float,
               value_bytes: int = 2, index_bytes: int = 4, block: int = 64) -> float:
    """Roofline-model seconds of ``x @ W.T`` (m tokens): the larger of compute time and memory time.

    CSR's FLOPs run at :data:`CUDA_CORE_RATIO` of the tensor-core peak.
    """
    peak = checks.finite("peak_tflops", peak_tflops, low=0) * 1e12 * (CUDA_CORE_RATIO if fmt == "csr" else 1.0)
    bandwidth = checks.finite("bandwidth_tbs", bandwidth_tbs, low=0) * 1e12
    if peak == 0 or bandwidth == 0:
        raise ValueError("peak_tflops and bandwidth_tbs must be > 0 (e.g. measured_roofs())")
    flops, nbytes = work(fmt, m, n, k, density, value_bytes, index_bytes, block)
    return max(flops / peak, nbytes / bandwidth)


def measured_roofs(path: Path | str = results.PYTORCH_BASELINES) -> dict:
    """Peak tensor-core TFLOP/s and memory TB/s of the H200, both *measured* with dense ``F.linear``.

    Peak: dense bf16 8192^3. Bandwidth: dense bf16 at 16 tokens moves the 8192x8192 weight (plus x
    and y) once; bytes / time is the bandwidth cuBLAS reached (a lower bound of the hardware's).
    """
    rows = results.pytorch_baselines(path)
    big = results.one(rows, op="linear", M=8192, N=8192, K=8192)
    small = results.one(rows, op="linear", M=16, N=8192, K=8192)
    moved = 8192 * 8192 * 2 + 2 * 16 * 8192 * 2
    return {"peak_tflops": big["tflops"], "bandwidth_tbs": round(moved / (small["ms"] * 1e-3) / 1e12, 2),
            "source": f"{Path(path).name}: dense bf16 F.linear at 8192 and 16 tokens"}


def model_speedups(m_values=TOKENS, n: int = 8192, k: int = 8192, roofs: dict | None = None,
                   cases=(("bsr", 0.1), ("2:4", 0.5), ("csr", 0.1), ("csr", 0.02))) -> list[dict]:
    """The roofline model's speed-up over dense for each (format, density) case and token count."""
    roofs = roofs or measured_roofs()
    out = []
    for fmt, d in cases:
        for m in m_values:
            dense = model_time("dense", m, n, k, 1.0, roofs["peak_tflops"], roofs["bandwidth_tbs"])
            t = model_time(fmt, m, n, k, d, roofs["peak_tflops"], roofs["bandwidth_tbs"])
            out.append({"format": fmt, "density": d, "M": m, "speedup": round(dense / t, 2)})
    return out


def model_crossover(fmt: str, m: int, n: int = 8192, k: int = 8192, roofs: dict | None = None) -> float | None:
    """The highest density at which ``fmt`` is still faster than dense in the roofline model (None: never).

    Found by bisection on density in (0, 1]; the model's speed-up falls as density grows.
    """
    if fmt not in ("bsr", "csr"):
        raise ValueError(f"fmt must be 'bsr' or 'csr' (2:4 has a fixed density of 0.5), got {fmt!r}")
    roofs = roofs or measured_roofs()
    args = (roofs["peak_tflops"], roofs["bandwidth_tbs"])

    def faster(d: float) -> bool:
        return model_time(fmt, m, n, k, d, *args) < model_time("dense", m, n, k, 1.0, *args)

    lo, hi = 1e-6, 1.0
    if not faster(lo):
        return None
    if faster(hi):
        return 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if faster(mid) else (lo, mid)
    return round(lo, 4)
