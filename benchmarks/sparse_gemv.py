"""Benchmark the activation-sparse decode GEMV (TEAL) against a dense GEMV, at one token.

On a GPU (the full grid, well under a minute of timing plus compiling):

    python benchmarks/sparse_gemv.py            # writes benchmarks/results/sparse_gemv_<gpu-name>.json
    python benchmarks/sparse_gemv.py --quick    # fewer shapes and sparsities: ..._quick.json

Grid: fp16 weights of SmolLM2-135M's layers (576x576 attention, 1536x576 gate/up, 576x1536 down; out x in)
and LLaMA-7B's (4096x4096, 11008x4096); one token (M = 1); activation sparsity 0 (the kernel against
cuBLAS at equal bytes), 0.4, 0.5 and 0.7. The input is random, with the threshold calibrated on it
(:func:`labkit.kernels.sparse_gemv.calibrate_threshold`) so that exactly that share of inputs is skipped.
For each case it first checks the kernel against a float64 reference, then times
(``triton.testing.do_bench``, median, L2 flushed between calls: at decode the weights come from memory):

* ``dense_ms``: ``F.linear`` at M = 1 (cuBLAS's GEMV), the same for every sparsity of a shape;
* ``ms``: :func:`labkit.kernels.sparse_gemv.sparse_gemv` on the prepared ``W^T`` (rows ``kernel="sparse_gemv"``,
  the launch :func:`~labkit.kernels.sparse_gemv.plan` chooses, its ``block_n`` and ``split_k`` recorded), and
  the same with ``split_k=1`` (rows ``kernel="sparse_gemv_split1"``): no partial sums to add afterwards.

Each row also has the bytes the kernel must move (``gemv_bytes``: kept weight rows + x + y), the effective
``GB_per_s`` (those bytes over its time), the dense GEMV's, the ``ideal_speedup`` (dense bytes over
sparse bytes: ``1 / (1 - sparsity)`` for big layers) and the measured ``speedup_vs_dense``. The file
records the GPU, the versions, the date and a device-copy bandwidth (``copy_GB_per_s``) as the roof.

Without a GPU it runs ``--smoke`` instead: the same code at a tiny size under the Triton interpreter
(seconds), so the script is known to work before a GPU session starts; it writes only where ``--out`` says.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import labkit  # noqa: F401  (sets TRITON_INTERPRET=1 when there is no GPU, before triton loads)
from labkit import results
from labkit.kernels import runtime as rt
from labkit.kernels.sparse_gemv import (
    calibrate_threshold,
    gemv_bytes,
    keep_mask,
    kept_share,
    plan,
    prepare,
    sparse_gemv,
)
from labkit.utils import time_ms

#: (out, in) weight shapes: SmolLM2-135M's attention, gate/up and down projections; LLaMA-7B's attention and up.
FULL = dict(shapes=[(576, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)], dtypes=["float16"],
            sparsities=[0.0, 0.4, 0.5, 0.7])
QUICK = dict(shapes=[(1536, 576), (4096, 4096), (11008, 4096)], dtypes=["float16"], sparsities=[0.0, 0.5, 0.7])
#: (row label, forced split_k): the launch plan() chooses, and no split of K at all.
VARIANTS = (("sparse_gemv", None), ("sparse_gemv_split1", 1))
SMOKE = dict(shapes=[(48, 96), (100, 40)], dtypes=["float16"], sparsities=[0.0, 0.5, 0.7])


def log(*a) -> None:
    print(*a, flush=True)


def copy_bandwidth(cuda: bool, timer) -> float:
    """Device copy bandwidth in GB/s (bytes read + written): the roof a memory-bound GEMV is held to."""
    n = (512 << 20) if cuda else (1 << 20)
    src = torch.empty(n, dtype=torch.uint8, device="cuda" if cuda else "cpu")
    dst = torch.empty_like(src)
    return 2 * n / timer(lambda: dst.copy_(src)) / 1e6


def bench_shape(n: int, k: int, dtype_name: str, sparsities: list[float], device: str, timer, copy_gbps: float,
                errors: list[str]) -> list[dict]:
    """Dense GEMV once, then the kernel at each sparsity, on one weight: one row per sparsity."""
    dtype = getattr(torch, dtype_name)
    w = (torch.randn(n, k, device=device) * k ** -0.5).to(dtype)
    x = torch.randn(1, k, device=device).to(dtype)
    wt = prepare(w)
    size = w.element_size()
    dense_ms = timer(lambda: F.linear(x, w))
    dense_gbps = gemv_bytes(n, k, 1.0, size) / dense_ms / 1e6
    rows = []
    for sparsity in sparsities:
        t = calibrate_threshold(x, sparsity)
        kept = kept_share(x, t)
        nbytes = gemv_bytes(n, k, kept, size)
        ref = rt.reference(x * keep_mask(x, t).to(dtype), w)
        for kernel, forced in VARIANTS:
            block_n, split_k = plan(1, n, k, device, forced) if rt.can_launch(x) else (None, None)
            tag = f"{kernel} {n}x{k} {dtype_name} s={sparsity}"
            ms = err = None
            try:
                err = rt.rel_error(sparse_gemv(x, wt, t, split_k=forced), ref)
                if err > rt.TOLERANCE[dtype]:
                    errors.append(f"{tag}: relative error {err:.2e} above tolerance {rt.TOLERANCE[dtype]}")
                else:
                    ms = timer(lambda t=t, forced=forced: sparse_gemv(x, wt, t, split_k=forced))
            except Exception as e:  # noqa: BLE001  (a failing case is recorded, the run goes on)
                errors.append(f"{tag}: {type(e).__name__}: {str(e)[:200]}")
            row = dict(kernel=kernel, M=1, N=n, K=k, dtype=dtype_name, sparsity=sparsity, kept=round(kept, 4),
                       threshold=float(f"{t:.6g}"), ms=None if ms is None else round(ms, 5),
                       dense_ms=round(dense_ms, 5), bytes=nbytes,
                       GB_per_s=None if ms is None else float(f"{nbytes / ms / 1e6:.4g}"),
                       dense_GB_per_s=float(f"{dense_gbps:.4g}"),
                       ideal_speedup=round(gemv_bytes(n, k, 1.0, size) / nbytes, 3),
                       speedup_vs_dense=None if not ms else round(dense_ms / ms, 3), block_n=block_n, split_k=split_k)
            if err is not None:
                row["rel_err"] = float(f"{err:.3g}")
            if ms:
                row["share_of_copy"] = float(f"{nbytes / ms / 1e6 / copy_gbps:.3g}")
            rows.append(row)
            log(f"  {tag} (split_k {split_k}): kept {kept:.3f}, {row['ms']} ms ({row['GB_per_s']} GB/s), "
                f"dense {row['dense_ms']} ms ({row['dense_GB_per_s']} GB/s), x{row['speedup_vs_dense']} vs dense "
                f"(ideal x{row['ideal_speedup']})")
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs under the Triton interpreter on a CPU")
    ap.add_argument("--quick", action="store_true",
                    help="3 shapes x 3 sparsities instead of 5 x 4 (benchmarks/gpu_session.sh quick)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output JSON (default on a GPU: benchmarks/results/sparse_gemv_<gpu-name>[_quick].json; "
                         "none for --smoke)")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available() and not rt.interpreting()
    if not cuda and not args.smoke:
        # Timings under the interpreter mean nothing, so a CPU gets the correctness run instead.
        print("No GPU here: running the small correctness smoke test under the Triton interpreter (--smoke).")
        args.smoke = True
    device = "cuda" if cuda else rt.kernel_device()
    quick = args.quick and not args.smoke
    grid = SMOKE if args.smoke else QUICK if quick else FULL
    torch.manual_seed(0)
    gpu = torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)"
    import importlib.metadata as md
    log(f"benchmarks/sparse_gemv.py on {gpu}; torch {torch.__version__}, "
        f"triton {md.version('triton') if rt.HAS_TRITON else None}; "
        f"{'smoke' if args.smoke else 'quick' if quick else 'full'} grid")
    t0 = time.time()

    def timer(fn):
        return time_ms(fn, cuda=cuda, repeats=1, warmup=0)

    copy_gbps = copy_bandwidth(cuda, timer)
    log(f"copy bandwidth: {copy_gbps:.0f} GB/s")
    rows: list[dict] = []
    errors: list[str] = []
    for n, k in grid["shapes"]:
        for dtype_name in grid["dtypes"]:
            rows += bench_shape(n, k, dtype_name, grid["sparsities"], device, timer, copy_gbps, errors)

    result = results.envelope(
        rows, script="benchmarks/sparse_gemv.py", schema="sparse_gemv",
        command="python benchmarks/sparse_gemv.py --quick (on an NVIDIA GPU)" if quick else None,
        extra=dict(gpu=gpu, smoke=args.smoke, quick=quick,
                   copy_GB_per_s=round(copy_gbps, 1), seconds=round(time.time() - t0, 1), errors=errors))
    out = args.out
    if out is None and not args.smoke:
        from labkit.sparse import results_name

        out = results.RESULTS_DIR / f"sparse_gemv_{results_name(gpu)}{'_quick' if quick else ''}.json"
    if out is not None:
        results.write_envelope(out, result)
        log(f"wrote {out}")
    log(f"{len(rows)} rows, {len(errors)} errors, {result['seconds']} s")
    for e in errors:
        log("ERROR", e)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
