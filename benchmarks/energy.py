"""Measured GPU joules: dense against block-sparse (PyTorch's kernel and the lab's), via labkit.energy.

Run on a machine with an NVIDIA GPU (Volta or newer for the energy counter)::

    python benchmarks/energy.py            # about 1 minute; writes benchmarks/results/energy_<gpu>.json

For each case it warms up, then uses :func:`labkit.energy.measure` with the NVML meter: CUDA is
synchronized at both window edges, the work is repeated until the window lasts ``--window`` seconds
(20 updates of the ~100 ms counter by default), and an idle baseline of ``--idle`` seconds is
subtracted to give the *dynamic* joules next to the whole-board joules. Cases: an 8192x8192 bf16
weight at 90% block sparsity (64x64 blocks) with 8192 tokens (compute-bound) and 16 tokens
(memory-bound): dense ``F.linear``, PyTorch's ``bsr_dense_mm`` and the lab's ``bsr_linear``.

The goal the energy issue sets: the lab's kernel at least 6x fewer joules than dense at 8192 tokens
(PyTorch's own kernel measured 3.2x: benchmarks/results/pytorch_baselines_h200_2026-11-28.json).

``--quick`` (``benchmarks/gpu_session.sh quick``): 1 s windows, 0.5 s of idle baseline and a short cool-down,
about half a minute; it writes ``energy_<gpu>_quick.json`` (``"quick": true``), never over a full run's file.

Without a GPU it prints why and exits with status 0, writing nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch


def cases(tokens: int, density: float, block: int, size: int):
    """(kernel, label, function) triples sharing one weight and one input."""
    import torch.nn.functional as F

    from labkit.kernels.bsr_linear import bsr_linear
    from labkit.kernels.patterns import block_sparse

    gen = torch.Generator().manual_seed(0)
    w = block_sparse(size, size, block, density, gen).to("cuda", torch.bfloat16)
    x = torch.randn(tokens, size, generator=gen).to("cuda", torch.bfloat16)
    w_bsr = w.to_sparse_bsr((block, block))
    out = [("dense", "dense F.linear", lambda: F.linear(x, w))]
    try:
        from torch.sparse._triton_ops import bsr_dense_mm

        xt = x.T.contiguous()
        out.append(("torch_bsr_dense_mm", "torch bsr_dense_mm", lambda: bsr_dense_mm(w_bsr, xt)))
    except ImportError as e:
        print("torch bsr_dense_mm unavailable:", e)
    out.append(("lab_bsr_linear", "lab bsr_linear", lambda: bsr_linear(x, w_bsr)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=None,
                        help="seconds per measured window (default 2, 1 with --quick)")
    parser.add_argument("--idle", type=float, default=None,
                        help="seconds of idle baseline (default 1, 0.5 with --quick)")
    parser.add_argument("--size", type=int, default=8192, help="weight is size x size (default 8192)")
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows and cool-downs (benchmarks/gpu_session.sh quick); "
                             "writes energy_<gpu>_quick.json")
    args = parser.parse_args(argv)
    if args.window is None:
        args.window = 1.0 if args.quick else 2.0
    if args.idle is None:
        args.idle = 0.5 if args.quick else 1.0
    if not args.window > 0 or args.idle < 0:
        parser.error("--window must be > 0 and --idle >= 0")

    import labkit  # noqa: F401  (configures Triton before it is imported)
    from labkit import energy, results

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (this script needs an NVIDIA GPU); no results written")
        return 0
    meter = energy.NvmlMeter(index=energy.nvml_index(torch.cuda.current_device()))
    status = meter.status()
    print("nvml:", status.reason)
    if not status.available:
        print("no NVML energy source: no results written")
        return 0
    gpu = torch.cuda.get_device_name()
    rows = []
    for tokens in (8192, 16):
        for kernel, label, fn in cases(tokens, 0.1, 64, args.size):
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            time.sleep(0.3 if args.quick else 1.0)  # cool down a little between cases (thermal drift)
            with energy.measure(items=1, min_window_s=args.window, idle_s=args.idle, meters=[meter]) as m:
                report = m.run(fn, warmup=3)
            dynamic = [r for r in report.readings if "dynamic" in r.scope]
            row = {"label": label, "kernel": kernel, "M": tokens, "N": args.size, "K": args.size, "density": 0.1,
                   "block": 64, "dtype": "bfloat16",
                   "kind": report.kind, "scope": report.primary.scope, "source": report.primary.source,
                   "repeats": report.repeats, "window_s": round(report.wall_s, 4),
                   "ms_per_call": round(1000 * report.wall_s / report.repeats, 5),
                   "joules_per_call": round(report.joules_per_item, 6), "avg_watts": round(report.avg_watts, 1),
                   "dynamic_joules_per_call": round(dynamic[0].value / report.repeats, 6) if dynamic else None,
                   "idle_watts": {k: round(v, 1) for k, v in report.idle_watts.items()},
                   "warnings": list(report.warnings)}
            print(json.dumps(row))
            rows.append(row)
    for tokens in (8192, 16):
        dense = results.one(rows, M=tokens, kernel="dense")
        for r in rows:
            if r["M"] == tokens:
                r["energy_ratio_vs_dense"] = round(dense["joules_per_call"] / r["joules_per_call"], 3)
    name = f"energy_{re.sub(r'[^a-z0-9]+', '_', gpu.lower()).strip('_')}{'_quick' if args.quick else ''}"
    path = results.write(name, rows, script="benchmarks/energy.py", schema="energy",
                         extra={"gpu": gpu, "quick": args.quick,
                                "goal": "lab bsr_linear >= 6x fewer joules than dense at 8192 tokens"})
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
