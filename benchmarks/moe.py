"""Benchmark the fused MoE kernel against the naive loop, torch._grouped_mm and a dense SwiGLU FFN.

On a GPU (the full run, about 2-4 minutes on an H200):

    python benchmarks/moe.py                # writes benchmarks/results/moe_<gpu-name>.json

Shapes: E=8 experts, top-2, d_model=4096, d_ff=14336 (Mixtral 8x7B's FFN), bf16, T in {16, 512, 4096}
tokens, random router logits. For each T it first checks every implementation against the naive
loop, then times (median, ``triton.testing.do_bench``):

* ``naive``: the loop over experts (gather, 3 GEMMs, scatter-add), as in most tutorials;
* ``grouped_mm``: ``torch._grouped_mm`` with its own permute and combine, and its GEMMs alone;
* ``fused``: this lab's kernel, split into align (sort + pad), up GEMM (w1, w3, SwiGLU), down GEMM
  (w2, gate) and combine, plus end to end; with the padding waste ``(padded - T*top_k) / padded``;
* ``dense``: one SwiGLU FFN over ``T * top_k`` rows, the same FLOPs: the roof an MoE layer can reach.

``--quick`` (``benchmarks/gpu_session.sh quick``) times the same shapes at T in {16, 4096} only (the
target is judged at 4096) and writes ``moe_<gpu-name>_quick.json`` (``"quick": true``), never over a full run's file.

Without a GPU, ``--smoke`` runs the same code end to end under the Triton interpreter at a tiny
size (seconds), so the script is known to work before a GPU session starts.
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import labkit  # noqa: F401  (sets TRITON_INTERPRET=1 when there is no GPU, before triton loads)
from labkit import results
from labkit.kernels import moe as km
from labkit.kernels import runtime as rt
from labkit.utils import time_ms


def make_weights(E: int, d: int, ff: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Random experts scaled like nn.Linear, generated on the device (8 x 14336 x 4096 x 3 is 1.4 G values)."""
    g = torch.Generator(device=device).manual_seed(seed)
    w1 = (torch.randn(E, ff, d, generator=g, device=device) * d ** -0.5).to(dtype)
    w3 = (torch.randn(E, ff, d, generator=g, device=device) * d ** -0.5).to(dtype)
    w2 = (torch.randn(E, d, ff, generator=g, device=device) * ff ** -0.5).to(dtype)
    return w1, w3, w2


def make_tokens(T: int, E: int, top_k: int, d: int, dtype: torch.dtype, device: str, seed: int = 1):
    """T random tokens and a random router decision (top_k of E, softmax gates)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(T, d, generator=g, device=device).to(dtype)
    gates, experts = torch.randn(T, E, generator=g, device=device).softmax(-1).topk(top_k, dim=-1)
    return x, gates, experts


def grouped_mm_moe(x, w1, w3, w2, gates, experts, stages: dict | None = None):
    """The MoE layer with ``torch._grouped_mm``: permute with argsort, 3 grouped GEMMs, index_add combine."""
    E, top_k = w1.shape[0], experts.shape[1]
    flat = experts.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.zeros(E, dtype=torch.long, device=x.device).index_add_(0, flat, torch.ones_like(flat))  # no sync
    offs = counts.cumsum(0).to(torch.int32)
    xs = x[order // top_k]
    gate = torch._grouped_mm(xs, w1.transpose(1, 2), offs=offs)
    h = F.silu(gate) * torch._grouped_mm(xs, w3.transpose(1, 2), offs=offs)
    y = torch._grouped_mm(h, w2.transpose(1, 2), offs=offs)
    out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    out.index_add_(0, order // top_k, y.float() * gates.reshape(-1)[order, None])
    return out.to(x.dtype)


def dense_swiglu(xt, w1, w3, w2):
    """One SwiGLU FFN (the expert-0 weights) over all rows: same FLOPs as the MoE layer."""
    return F.linear(F.silu(F.linear(xt, w1)) * F.linear(xt, w3), w2)


def timer(cuda: bool):
    """Median milliseconds of a call (:func:`labkit.utils.time_ms`)."""
    return lambda fn: time_ms(fn, cuda=cuda, repeats=3, warmup=1)


def bench_one(T: int, weights: tuple, top_k: int, ms_of) -> dict:
    w1, w3, w2 = weights
    E, ff, d = w1.shape
    dtype, device = w1.dtype, w1.device
    x, gates, experts = make_tokens(T, E, top_k, d, dtype, device)
    flops = 2 * 3 * T * top_k * d * ff
    block_m = km.choose_block_m(T * top_k, E)
    row = {"T": T, "E": E, "top_k": top_k, "d_model": d, "d_ff": ff, "dtype": str(dtype).replace("torch.", ""),
           "block_m": block_m, "padding_waste": round(km.padding_waste(experts, E, block_m), 4),
           "load_per_expert": torch.bincount(experts.reshape(-1), minlength=E).tolist()}

    # Correctness first: everything against the naive loop (fp32 accumulation inside).
    ref = km.moe_reference(x, w1, w3, w2, gates, experts)
    fused_out = km.fused_moe(x, w1, w3, w2, gates, experts, block_m=block_m)
    row["rel_err_fused"] = rt.rel_error(fused_out, ref)
    # fp32 is exact under the interpreter; on a GPU tl.dot rounds fp32 inputs to tf32 (10-bit mantissa).
    tol = 1e-4 if dtype == torch.float32 and device.type == "cpu" else 3e-2
    if not row["rel_err_fused"] < tol:
        raise SystemExit(f"fused MoE disagrees with the naive loop at T={T}: rel err {row['rel_err_fused']:.3g}")

    ms = {}
    # Timed without the expert-id range check (a GPU sync) in both the naive loop and the fused kernel.
    ms["naive"] = ms_of(lambda: km.moe_reference(x, w1, w3, w2, gates, experts, check_ids=False))
    try:
        row["rel_err_grouped_mm"] = rt.rel_error(grouped_mm_moe(x, w1, w3, w2, gates, experts), ref)
        ms["grouped_mm"] = ms_of(lambda: grouped_mm_moe(x, w1, w3, w2, gates, experts))
        flat = experts.reshape(-1)
        order = flat.argsort(stable=True)
        offs = torch.bincount(flat, minlength=E).cumsum(0).to(torch.int32)
        xs = x[order // top_k]
        w1t, w3t, w2t = w1.transpose(1, 2), w3.transpose(1, 2), w2.transpose(1, 2)

        def gemms_only():
            h = F.silu(torch._grouped_mm(xs, w1t, offs=offs)) * torch._grouped_mm(xs, w3t, offs=offs)
            return torch._grouped_mm(h, w2t, offs=offs)

        ms["grouped_mm_gemms_only"] = ms_of(gemms_only)
    except (RuntimeError, AttributeError) as e:  # older torch or unsupported GPU
        row["grouped_mm_error"] = repr(e)[:200]

    # The fused kernel, stage by stage, then end to end.
    sorted_slots, block_expert, _ = km.moe_align(experts, E, block_m)
    h = km.moe_up(x, w1, w3, sorted_slots, block_expert, top_k, block_m)
    y = km.moe_down(h, w2, gates, sorted_slots, block_expert, block_m)
    ms["fused_align"] = ms_of(lambda: km.moe_align(experts, E, block_m))
    ms["fused_up_gemm"] = ms_of(lambda: km.moe_up(x, w1, w3, sorted_slots, block_expert, top_k, block_m))
    ms["fused_down_gemm"] = ms_of(lambda: km.moe_down(h, w2, gates, sorted_slots, block_expert, block_m))
    ms["fused_combine"] = ms_of(lambda: km.moe_combine(y, top_k))
    ms["fused"] = ms_of(lambda: km.fused_moe(x, w1, w3, w2, gates, experts, block_m=block_m, check_ids=False))

    xt = torch.randn(T * top_k, d, device=device, generator=torch.Generator(device=device).manual_seed(2)).to(dtype)
    ms["dense_same_flops"] = ms_of(lambda: dense_swiglu(xt, w1[0], w3[0], w2[0]))

    row["ms"] = {k: round(v, 4) for k, v in ms.items()}
    row["time_vs_dense"] = {k: round(v / ms["dense_same_flops"], 3) for k, v in ms.items()}
    row["tflops"] = {k: round(flops / v / 1e9, 2) for k, v in ms.items() if not k.startswith("fused_")}
    return row


def device_name(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name()
    return f"cpu-{platform.machine()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, runs anywhere (Triton interpreter on a CPU); checks the script works")
    parser.add_argument("--quick", action="store_true",
                        help="the GPU shapes at T=16 and 4096 only (benchmarks/gpu_session.sh quick); "
                             "writes moe_<gpu-name>_quick.json")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/moe_<gpu-name>.json, ..._quick.json with --quick; "
                             "a smoke run writes nothing unless given)")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available() and not args.smoke:
        # Timings under the interpreter mean nothing, so a CPU gets the correctness run instead.
        print("No CUDA GPU here: running the small correctness smoke test under the Triton interpreter (--smoke).")
        args.smoke = True
    if args.smoke:
        device = rt.kernel_device()
        shapes = dict(E=4, top_k=2, d=32, ff=64, dtype=torch.float32)
        tokens = [1, 16, 40]
    else:
        device = "cuda"
        shapes = dict(E=8, top_k=2, d=4096, ff=14336, dtype=torch.bfloat16)
        tokens = [16, 4096] if args.quick else [16, 512, 4096]
    ms_of = timer(device == "cuda")

    weights = make_weights(shapes["E"], shapes["d"], shapes["ff"], shapes["dtype"], device)
    rows = []
    for T in tokens:
        row = bench_one(T, weights, shapes["top_k"], ms_of)
        rows.append(row)
        r = row["time_vs_dense"]
        print(f"T={T:5d} block_m={row['block_m']:3d} padding {row['padding_waste']:.1%}  time / dense FFN: "
              + "  ".join(f"{k} {v:.2f}x" for k, v in r.items() if not k.startswith("fused_")))
        print(f"        fused split (ms): align {row['ms']['fused_align']:.3f}  up {row['ms']['fused_up_gemm']:.3f}  "
              f"down {row['ms']['fused_down_gemm']:.3f}  combine {row['ms']['fused_combine']:.3f}")

    result = results.envelope(rows, script="benchmarks/moe.py", schema="moe_kernels",
                              extra={"benchmark": "moe", "device": device_name(device == "cuda"), "smoke": args.smoke,
                                     "quick": args.quick and not args.smoke,
                                     "target": "fused time / dense FFN time <= 1.11 at T=4096 (speed ratio >= 0.9)"})
    out = args.out
    if out is None and not args.smoke:
        slug = re.sub(r"[^a-z0-9]+", "-", device_name(True).lower()).strip("-")
        out = results.RESULTS_DIR / f"moe_{slug}{'_quick' if args.quick else ''}.json"
    if out is not None:
        results.write_envelope(out, result)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
