"""Benchmark the lab's sparse kernels against dense ``F.linear`` and PyTorch's own sparse paths.

On a GPU (the full grid, about 6-8 minutes on an H200, progress printed as it goes):

    python benchmarks/kernels.py            # writes benchmarks/results/<gpu-name>.json

Grid (the kernels issue): weights 8192x8192 and 14336x4096 (out x in); bf16 and fp16; tokens
M in {1, 16, 128, 1024, 8192}; densities {0.5, 0.25, 0.1, 0.05}; BSR blocks 32 and 64. For each
case it first checks the kernel's output against the dense reference (``F.linear`` on the same
zero-filled weight), then times (``triton.testing.do_bench``, median):

* ``bsr``: :func:`labkit.kernels.bsr_linear.bsr_linear`; baseline ``torch.sparse._triton_ops.bsr_dense_mm``;
* ``2:4``: :func:`labkit.kernels.semi24.semi24_linear` (density 0.5); baseline ``to_sparse_semi_structured``;
* ``csr``: :func:`labkit.kernels.csr_linear.csr_linear`; baseline cuSPARSE (``torch.sparse.mm`` on CSR);
* ``auto``: :class:`labkit.sparse.SparseLinear` with ``format="auto"`` on the BSR (density 0.1,
  block 64) and 2:4 weights, against dense.

Each row has exactly: ``kernel, M, N, K, dtype, density, block, ms, dense_ms, baseline, baseline_ms,
speedup_vs_dense, speedup_vs_baseline``. The file also records the GPU name, torch and triton
versions and the date; ``bandwidth`` (decode rows' achieved bytes/s against a measured device copy);
``energy`` (NVML joules of dense against BSR at density 0.1, when NVML is available); the SparseLinear
``auto_plans``; the issue's ``targets``, each met / missed with its measured ratio; and any ``errors``.
Baselines get their operand in the layout they want
(``x.T`` contiguous) outside the timed region, which favours them slightly.

``--quick`` (``benchmarks/gpu_session.sh quick``) runs a reduced grid on the GPU in about a minute and a
half: the 8192x8192 weight in bf16 (the one the targets are judged on), M in {1, 16, 8192}, densities
{0.5, 0.1}, 64x64 blocks, no energy comparison; it writes ``<gpu-name>_quick.json`` (``"quick": true``),
never over a full run's file.

Without a GPU, ``--smoke`` runs the same code end to end under the Triton interpreter at a tiny
size (seconds), so the script is known to work before a GPU session starts.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import labkit  # noqa: F401  (sets TRITON_INTERPRET=1 when there is no GPU, before triton loads)
from labkit import results
from labkit.experiments.kernel_timings import COLUMNS
from labkit.experiments.kernel_timings import kernel_row as row
from labkit.kernels import runtime as rt
from labkit.kernels.bsr_linear import bsr_linear
from labkit.kernels.csr_linear import csr_linear
from labkit.kernels.patterns import block_sparse, two_four, unstructured
from labkit.kernels.semi24 import pack_24, semi24_linear
from labkit.sparse import SparseLinear, bucket_for, results_name

FULL = dict(shapes=[(8192, 8192), (14336, 4096)], dtypes=["bfloat16", "float16"], tokens=[1, 16, 128, 1024, 8192],
            densities=[0.5, 0.25, 0.1, 0.05], blocks=[32, 64])
QUICK = dict(shapes=[(8192, 8192)], dtypes=["bfloat16"], tokens=[1, 16, 8192], densities=[0.5, 0.1], blocks=[64])
SMOKE = dict(shapes=[(64, 128)], dtypes=["float16"], tokens=[1, 40], densities=[0.5, 0.1], blocks=[32, 64])

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")
warnings.filterwarnings("ignore", message=".*non-optimal triton kernel parameters.*")


def log(*a) -> None:
    print(*a, flush=True)


def timer(device: str):
    """Median milliseconds of a call (:func:`labkit.utils.time_ms`): do_bench on a GPU, one sample on a CPU."""
    from labkit.utils import time_ms

    return lambda fn: time_ms(fn, cuda=device == "cuda", repeats=1, warmup=0)


class Run:
    """One benchmark run: collects rows, errors and side measurements, and knows its time budget."""

    def __init__(self, device: str, budget_s: float):
        self.device, self.budget_s, self.t0 = device, budget_s, time.time()
        self.time = timer(device)
        self.rows: list[dict] = []
        self.errors: list[str] = []
        self.bandwidth: list[dict] = []
        self.energy: list[dict] = []
        self.auto_plans: list[dict] = []
        self.skipped = 0

    def over_budget(self) -> bool:
        return time.time() - self.t0 > self.budget_s

    def checked(self, name: str, fn, ref: torch.Tensor, dtype: torch.dtype) -> float | None:
        """Run ``fn`` once, compare with ``ref``, then time it; None (and an error noted) if it fails."""
        try:
            out = fn()
            err = rt.rel_error(out, ref)
            if not math.isfinite(err) or err > rt.TOLERANCE[dtype]:
                self.errors.append(f"{name}: relative error {err:.2e} above tolerance {rt.TOLERANCE[dtype]}")
                return None
            return self.time(fn)
        except Exception as e:  # noqa: BLE001  (a failing path is recorded, the run goes on)
            self.errors.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
            return None


def copy_bandwidth(run: Run) -> float:
    """Device copy bandwidth in GB/s (bytes read + written): the roof decode kernels are held to."""
    n = (512 << 20) if run.device == "cuda" else (1 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=run.device)
    dst = torch.empty_like(src)
    ms = run.time(lambda: dst.copy_(src))
    return 2 * n / ms / 1e6


def bench_case(run: Run, n: int, k: int, dtype_name: str, grid: dict, copy_gbps: float) -> None:
    dtype = getattr(torch, dtype_name)
    dev = run.device
    # Random weights are drawn on the device (a CPU generator would spend ~0.5 s per 8192^2 weight);
    # main() seeds torch, so the run is repeatable.
    gen = None
    for m in grid["tokens"]:
        x = torch.randn(m, k, device=dev, dtype=dtype)
        xt = x.t().contiguous()
        dense_w = torch.randn(n, k, device=dev, dtype=dtype)
        dense_ms = run.time(lambda w=dense_w: F.linear(x, w))
        del dense_w
        tag = f"{n}x{k} {dtype_name} M={m}"

        def add(kernel, density, block, ms, baseline=None, baseline_ms=None, weight_bytes=None):
            r = row(kernel, m, n, k, dtype_name, density, block, ms, dense_ms, baseline, baseline_ms)
            run.rows.append(r)
            if weight_bytes is not None and ms and m <= 16:
                moved = weight_bytes + (m * k + m * n) * x.element_size()
                gbps = moved / ms / 1e6
                run.bandwidth.append(dict(kernel=kernel, M=m, N=n, K=k, dtype=dtype_name, density=density,
                                          block=block, GB_per_s=float(f"{gbps:.4g}"),
                                          share_of_copy=float(f"{gbps / copy_gbps:.3g}")))
            log(f"  [{time.time() - run.t0:6.0f}s] {kernel:4s} {tag} d={density} b={block}: "
                f"{r['ms']} ms, dense {r['dense_ms']} ms, x{r['speedup_vs_dense']} vs dense, "
                f"baseline {baseline} {r['baseline_ms']} ms")

        # ---- BSR -------------------------------------------------------------------------------
        for block in grid["blocks"]:
            for density in grid["densities"]:
                if run.over_budget():
                    run.skipped += 1
                    continue
                w = block_sparse(n, k, block, density, gen, device=dev).to(dtype)
                ref = F.linear(x, w)
                wb = w.to_sparse_bsr((block, block))
                ms = run.checked(f"bsr {tag} d={density} b={block}", lambda wb=wb: bsr_linear(x, wb), ref, dtype)
                base_ms = None
                if dev == "cuda":
                    from torch.sparse._triton_ops import bsr_dense_mm
                    base_ms = run.checked(f"torch bsr_dense_mm {tag} d={density} b={block}",
                                          lambda wb=wb: bsr_dense_mm(wb, xt), ref.t(), dtype)
                nbytes = wb.values().numel() * x.element_size() + (wb.col_indices().numel() + n // block) * 8
                add("bsr", density, block, ms, "torch.sparse._triton_ops.bsr_dense_mm", base_ms, nbytes)
                if density == 0.1 and block == 64:
                    auto(run, w, x, ref, tag, add, density, block, "bsr")
                del w, wb, ref

        # ---- 2:4 --------------------------------------------------------------------------------
        if not run.over_budget():
            w = two_four(n, k, gen, device=dev).to(dtype)
            ref = F.linear(x, w)
            values, meta = pack_24(w)
            ms = run.checked(f"2:4 {tag}", lambda: semi24_linear(x, values, meta), ref, dtype)
            base_ms = None
            if dev == "cuda":
                try:
                    from torch.sparse import to_sparse_semi_structured
                    ws = to_sparse_semi_structured(w)
                    base_ms = run.checked(f"to_sparse_semi_structured {tag}", lambda: F.linear(x, ws), ref, dtype)
                except Exception as e:  # noqa: BLE001
                    run.errors.append(f"to_sparse_semi_structured {tag}: {type(e).__name__}: {str(e)[:200]}")
            nbytes = values.numel() * values.element_size() + meta.numel()
            add("2:4", 0.5, None, ms, "torch.sparse.to_sparse_semi_structured", base_ms, nbytes)
            auto(run, w, x, ref, tag, add, 0.5, None, "2:4")
            del w, ref, values, meta
        else:
            run.skipped += 1

        # ---- CSR --------------------------------------------------------------------------------
        for density in grid["densities"]:
            if run.over_budget():
                run.skipped += 1
                continue
            w = unstructured(n, k, density, gen, device=dev).to(dtype)
            ref = F.linear(x, w)
            wc = w.to_sparse_csr()
            ms = run.checked(f"csr {tag} d={density}", lambda wc=wc: csr_linear(x, wc), ref, dtype)
            base_ms = None
            if dev == "cuda":
                base_ms = run.checked(f"cuSPARSE csr {tag} d={density}", lambda wc=wc: torch.sparse.mm(wc, xt),
                                      ref.t(), dtype)
            nbytes = wc.values().numel() * x.element_size() + wc.col_indices().numel() * 8 + (n + 1) * 8
            add("csr", density, None, ms, "cuSPARSE (torch.sparse.mm, CSR)", base_ms, nbytes)
            del w, wc, ref


def auto(run: Run, w, x, ref, tag, add, density, block, source) -> None:
    """SparseLinear(format='auto') on this weight: decide its plan, then time the call as a user would."""
    layer = SparseLinear(w, format="auto")
    try:
        fmt = layer.choose(x.shape[0], x)
    except Exception as e:  # noqa: BLE001
        run.errors.append(f"auto {tag} {source}: {type(e).__name__}: {str(e)[:200]}")
        return
    ms = run.checked(f"auto {tag} {source}", lambda: layer(x), ref, x.dtype)
    run.auto_plans.append(dict(weight=source, M=x.shape[0], N=w.shape[0], K=w.shape[1], dtype=str(x.dtype)[6:],
                               chosen=fmt, timings_ms={f: round(t, 5) for f, t in
                                                       layer.timings.get(bucket_for(x.shape[0]), {}).items()}))
    add("auto", density, block, ms, f"SparseLinear chose {fmt}", None)


def energy(run: Run) -> None:
    """NVML joules per call of dense against the lab's BSR kernel at density 0.1 (8192^3, bf16, 64 blocks)."""
    if run.device != "cuda":
        return
    from labkit import energy as en

    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    w = block_sparse(8192, 8192, 64, 0.1, torch.Generator().manual_seed(1), device="cuda").to(torch.bfloat16)
    wb = w.to_sparse_bsr((64, 64))
    cases = (("dense F.linear", lambda: F.linear(x, w)), ("lab bsr_linear d=0.1 b=64", lambda: bsr_linear(x, wb)))
    for name, fn in cases:
        try:
            with en.measure(items=1, min_window_s=2.0) as m:
                rep = m.run(fn)
            run.energy.append(dict(case=name, M=8192, N=8192, K=8192, dtype="bfloat16",
                                   joules_per_call=round(rep.joules_per_item, 5),
                                   kind=rep.kind, scope=rep.primary.scope, avg_watts=round(rep.avg_watts, 1),
                                   calls=rep.repeats))
            log(f"  energy {name}: {rep.joules_per_item:.4f} J per call ({rep.kind}, {rep.avg_watts:.0f} W)")
        except Exception as e:  # noqa: BLE001
            run.errors.append(f"energy {name}: {type(e).__name__}: {str(e)[:200]}")


#: The issue's targets on an H200 (8192x8192 weight, 64x64 blocks, bf16 unless said), as
#: (name, row filter, column, minimum).
TARGETS = [
    ("BSR d=0.1 M=8192 >= 7x dense", dict(kernel="bsr", density=0.1, M=8192, block=64), "speedup_vs_dense", 7.0),
    ("BSR d=0.5 M=8192 >= 1.7x dense", dict(kernel="bsr", density=0.5, M=8192, block=64), "speedup_vs_dense", 1.7),
    ("BSR d=0.05 M=8192 >= 12x dense", dict(kernel="bsr", density=0.05, M=8192, block=64), "speedup_vs_dense", 12.0),
    ("BSR decode d=0.1 M=16 >= 4x dense", dict(kernel="bsr", density=0.1, M=16, block=64), "speedup_vs_dense", 4.0),
    ("2:4 M=1 >= 1.4x dense", dict(kernel="2:4", M=1), "speedup_vs_dense", 1.4),
    ("2:4 M=16 >= 1.4x dense", dict(kernel="2:4", M=16), "speedup_vs_dense", 1.4),
    ("CSR fp16 d=0.05 M=1024 >= cuSPARSE", dict(kernel="csr", density=0.05, M=1024, dtype="float16"),
     "speedup_vs_baseline", 1.0),
]


def check_targets(rows: list[dict], n: int = 8192, k: int = 8192) -> list[dict]:
    """Each target: met / missed with the measured ratio, or missing when the run has no such row.

    Also "SparseLinear auto never more than 5% slower than dense", over every auto row.
    """
    out = []
    for name, want, col, minimum in TARGETS:
        sel = [r for r in rows if r["N"] == n and r["K"] == k and r["dtype"] == want.get("dtype", "bfloat16")
               and all(r[key] == v for key, v in want.items() if key != "dtype")]
        value = sel[0][col] if sel else None
        out.append(dict(target=name, value=value,
                        status="missing" if value is None else "met" if value >= minimum else "missed"))
    auto = [r["speedup_vs_dense"] for r in rows if r["kernel"] == "auto"]
    worst = min((v for v in auto if v is not None), default=None)
    out.append(dict(target="SparseLinear auto never < 0.95x dense", value=worst,
                    status="missing" if worst is None else "met" if worst >= 1 / 1.05 else "missed"))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs under the Triton interpreter on a CPU")
    ap.add_argument("--quick", action="store_true",
                    help="reduced GPU grid (8192x8192 bf16, M 1/16/8192, densities 0.5/0.1, 64x64 blocks), "
                         "budget 75 s, no energy (benchmarks/gpu_session.sh quick)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output JSON (default: benchmarks/results/<gpu-name>.json on a GPU, <gpu-name>_quick.json "
                         "with --quick; none for --smoke)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting new cases after this many seconds (the file says what was skipped; "
                         "default 420, 75 with --quick)")
    ap.add_argument("--no-energy", action="store_true", help="skip the NVML energy comparison")
    args = ap.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 75.0 if args.quick else 420.0

    cuda = torch.cuda.is_available() and not rt.interpreting()
    if not cuda and not args.smoke:
        # Timings under the interpreter mean nothing, so a CPU gets the correctness run instead.
        print("No GPU here: running the small correctness smoke test under the Triton interpreter (--smoke).")
        args.smoke = True
    device = "cuda" if cuda else "cpu"
    quick = args.quick and not args.smoke
    grid = SMOKE if args.smoke else QUICK if quick else FULL
    torch.manual_seed(0)
    run = Run(device, args.budget_s)
    gpu = torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)"
    import importlib.metadata as md
    triton_version = md.version("triton") if rt.HAS_TRITON else None
    log(f"benchmarks/kernels.py on {gpu}; torch {torch.__version__}, triton {triton_version}; "
        f"{'smoke' if args.smoke else 'quick' if quick else 'full'} grid, budget {args.budget_s:.0f} s")
    copy_gbps = copy_bandwidth(run)
    log(f"copy bandwidth: {copy_gbps:.0f} GB/s")
    for n, k in grid["shapes"]:
        for dtype_name in grid["dtypes"]:
            log(f"== weight {n}x{k} {dtype_name}")
            bench_case(run, n, k, dtype_name, grid, copy_gbps)
    if not args.no_energy and not args.smoke and not quick:
        energy(run)

    targets = check_targets(run.rows)
    log("\nTARGETS (8192x8192, bf16, 64x64 blocks unless said)")
    for t in targets:
        log(f"  {t['status']:7} {t['target']:40} measured {t['value']}")
    # One envelope (labkit.results, schema "kernels"): rows plus what this run also measured.
    result = results.envelope(
        run.rows, script="benchmarks/kernels.py", schema="kernels",
        command="python benchmarks/kernels.py --quick (on an NVIDIA GPU)" if quick else None,
        extra=dict(gpu=gpu, smoke=args.smoke, quick=quick, columns=list(COLUMNS), copy_GB_per_s=round(copy_gbps, 1),
                   complete=run.skipped == 0, skipped_cases=run.skipped, seconds=round(time.time() - run.t0, 1),
                   bandwidth=run.bandwidth, energy=run.energy, auto_plans=run.auto_plans, targets=targets,
                   errors=run.errors))
    out = args.out or (None if args.smoke else
                       results.RESULTS_DIR / f"{results_name(gpu)}{'_quick' if quick else ''}.json")
    if out is not None:
        results.write_envelope(out, result)
        log(f"wrote {out}")
    log(f"{len(run.rows)} rows, {len(run.errors)} errors, {run.skipped} cases skipped, {result['seconds']} s")
    for e in run.errors:
        log("ERROR", e)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
