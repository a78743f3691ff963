"""Anchor measurements on a GPU: what a user gets today from PyTorch's own sparse paths.

Copied unchanged (apart from this paragraph) from the project's shared measurements
(``shared/measurements/gpu_anchors.py``). It produced
``benchmarks/results/pytorch_baselines_h200_2026-11-28.json`` on one NVIDIA H200 (torch 2.11,
triton 3.6) on 2026-11-28, run as ``OUT=. python gpu_anchors.py``. Notebook 03 reads that file to
show PyTorch's own sparse paths until ``benchmarks/kernels.py`` has timed the lab's kernels on a GPU.

Prints a table of (case, ms, ratio vs dense, joules) and writes the same as JSON to $OUT.
Each section is independent: a failure is printed and the next section runs.
"""
import json
import os
import tempfile
import time
import traceback

import torch
import triton
from triton.testing import do_bench

OUT = os.environ.get("OUT", tempfile.gettempdir())
rows = []


def log(*a):
    print(*a, flush=True)


def rec(section, case, ms, dense_ms=None, extra=None):
    r = {"section": section, "case": case, "ms": round(ms, 4)}
    if dense_ms:
        r["speedup_vs_dense"] = round(dense_ms / ms, 3)
    if extra:
        r.update(extra)
    rows.append(r)
    log(json.dumps(r))


def bench(fn):
    return do_bench(fn, warmup=25, rep=150, return_mode="median")


def section(name):
    def deco(f):
        t0 = time.time()
        try:
            f()
        except Exception:
            log(f"SECTION {name} FAILED")
            traceback.print_exc()
        log(f"-- {name} took {time.time() - t0:.1f}s")
        return f
    return deco


dev = "cuda"
props = torch.cuda.get_device_properties(0)
log("torch", torch.__version__, "triton", triton.__version__, props.name, props.multi_processor_count, "SMs")
torch.manual_seed(0)


def block_mask(n, k, bs, density):
    m = (torch.rand(n // bs, k // bs, device=dev) < density)
    return m.repeat_interleave(bs, 0).repeat_interleave(bs, 1)


@section("dense")
def _():
    for M in (8192, 16):
        a = torch.randn(M, 8192, device=dev, dtype=torch.bfloat16)
        w = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        ms = bench(lambda: torch.nn.functional.linear(a, w))
        rec("dense", f"linear M={M} K=N=8192 bf16", ms, extra={"tflops": round(2 * M * 8192 * 8192 / ms / 1e9, 1)})


@section("bsr")
def _():
    from torch.sparse._triton_ops import bsr_dense_mm
    N = K = 8192
    for M in (8192, 16):
        x = torch.randn(K, M, device=dev, dtype=torch.bfloat16)
        for bs in (32, 64):
            for density in (0.5, 0.25, 0.1, 0.05):
                w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * block_mask(N, K, bs, density)
                dense_ms = bench(lambda: w @ x)
                wb = w.to_sparse_bsr((bs, bs))
                out = bsr_dense_mm(wb, x)
                err = ((out.float() - (w @ x).float()).norm() / (w @ x).float().norm()).item()
                ms = bench(lambda: bsr_dense_mm(wb, x))
                rec("bsr", f"torch bsr_dense_mm M={M} bs={bs} density={density}", ms, dense_ms,
                    {"ideal_speedup": round(1 / density, 2), "rel_err": float(f"{err:.2e}")})
                try:
                    ms2 = bench(lambda: wb @ x)
                    rec("bsr", f"torch bsr @ dense (dispatch) M={M} bs={bs} density={density}", ms2, dense_ms)
                except Exception as e:
                    log("dispatch bsr@dense failed:", repr(e)[:200])


@section("semi_structured_2_4")
def _():
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
    N = K = 8192
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
    mask = torch.tensor([1, 1, 0, 0], device=dev, dtype=torch.bool).repeat(N, K // 4)
    w = w * mask
    for force_cutlass in (False, True):
        SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
        name = "cutlass" if force_cutlass else "default(cusparselt?)"
        try:
            ws = to_sparse_semi_structured(w)
        except Exception as e:
            log("to_sparse_semi_structured failed", name, repr(e)[:300])
            continue
        for M in (8192, 1024, 64):
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            dense_ms = bench(lambda: torch.nn.functional.linear(a, w))
            ref = torch.nn.functional.linear(a, w).float()
            got = torch.nn.functional.linear(a, ws).float()
            err = ((got - ref).norm() / ref.norm()).item()
            ms = bench(lambda: torch.nn.functional.linear(a, ws))
            rec("2:4", f"{name} linear M={M} K=N=8192 bf16", ms, dense_ms, {"rel_err": float(f"{err:.2e}")})


@section("csr_unstructured")
def _():
    N = K = 8192
    x = torch.randn(K, 4096, device=dev, dtype=torch.float32)
    for density in (0.1, 0.05, 0.01):
        w = torch.randn(N, K, device=dev) * (torch.rand(N, K, device=dev) < density)
        dense_ms = bench(lambda: w @ x)
        wc = w.to_sparse_csr()
        ms = bench(lambda: wc @ x)
        rec("csr", f"cuSPARSE csr @ dense fp32 M=4096 density={density}", ms, dense_ms, {"ideal_speedup": round(1 / density, 1)})


@section("moe")
def _():
    E, topk, d, ff, T = 8, 2, 4096, 14336, 4096
    dt = torch.bfloat16
    w1 = torch.randn(E, ff, d, device=dev, dtype=dt) * 0.02
    w3 = torch.randn(E, ff, d, device=dev, dtype=dt) * 0.02
    w2 = torch.randn(E, d, ff, device=dev, dtype=dt) * 0.02
    x = torch.randn(T, d, device=dev, dtype=dt)
    logits = torch.randn(T, E, device=dev)
    weights, idx = torch.topk(logits.softmax(-1), topk, dim=-1)

    def naive():
        out = torch.zeros_like(x)
        for e in range(E):
            tok, slot = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            h = x[tok]
            y = torch.nn.functional.silu(h @ w1[e].T) * (h @ w3[e].T)
            y = y @ w2[e].T
            out.index_add_(0, tok, (y * weights[tok, slot, None]).to(dt))
        return out

    ms_naive = bench(naive)
    # ideal: same FLOPs as one dense SwiGLU FFN over T*topk tokens
    xt = torch.randn(T * topk, d, device=dev, dtype=dt)

    def dense_equiv():
        y = torch.nn.functional.silu(xt @ w1[0].T) * (xt @ w3[0].T)
        return y @ w2[0].T

    ms_dense = bench(dense_equiv)
    flops = 2 * 3 * T * topk * d * ff
    rec("moe", f"naive loop E={E} top{topk} d={d} ff={ff} T={T}", ms_naive, ms_dense,
        {"tflops": round(flops / ms_naive / 1e9, 1)})
    rec("moe", "dense FFN with the same active FLOPs", ms_dense, ms_dense, {"tflops": round(flops / ms_dense / 1e9, 1)})
    if hasattr(torch, "_grouped_mm"):
        try:
            order = idx.flatten().argsort()
            counts = torch.bincount(idx.flatten(), minlength=E)
            offs = counts.cumsum(0).to(torch.int32)
            xs = x[order // topk]
            w1t, w3t, w2t = w1.transpose(1, 2), w3.transpose(1, 2), w2.transpose(1, 2)

            def grouped():
                h1 = torch._grouped_mm(xs, w1t, offs=offs)
                h3 = torch._grouped_mm(xs, w3t, offs=offs)
                return torch._grouped_mm(torch.nn.functional.silu(h1) * h3, w2t, offs=offs)

            ms_g = bench(grouped)
            rec("moe", "torch._grouped_mm expert GEMMs only (no permute)", ms_g, ms_dense, {"tflops": round(flops / ms_g / 1e9, 1)})
        except Exception as e:
            log("_grouped_mm failed", repr(e)[:300])


@section("nvml_energy")
def _():
    import pynvml
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    log("nvml driver", pynvml.nvmlSystemGetDriverVersion())
    log("power limit W", pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000)

    def energy_of(fn, seconds=2.0):
        fn()
        torch.cuda.synchronize()
        e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                fn()
            n += 10
            torch.cuda.synchronize()
        t = time.perf_counter() - t0
        e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        return (e1 - e0) / 1000.0, n, t

    time.sleep(0.5)
    e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    time.sleep(1.0)
    idle_w = (pynvml.nvmlDeviceGetTotalEnergyConsumption(h) - e0) / 1000.0
    log("idle power W (1 s window)", idle_w)
    from torch.sparse._triton_ops import bsr_dense_mm
    N = K = 8192
    x = torch.randn(K, 8192, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
    j, n, t = energy_of(lambda: w @ x)
    rec("energy", "dense 8192^3 bf16", t / n * 1e3, extra={"joules_per_op": round(j / n, 4), "avg_watts": round(j / t, 1)})
    wm = w * block_mask(N, K, 64, 0.1)
    wb = wm.to_sparse_bsr((64, 64))
    j, n, t = energy_of(lambda: bsr_dense_mm(wb, x))
    rec("energy", "torch bsr_dense_mm density 0.1 bs64", t / n * 1e3, extra={"joules_per_op": round(j / n, 4), "avg_watts": round(j / t, 1)})


with open(os.path.join(OUT, "gpu_anchors.json"), "w") as f:
    json.dump(rows, f, indent=1)
log("\nSUMMARY")
for r in rows:
    log(f"{r['section']:6s} {r['case'][:70]:70s} {r['ms']:9.3f} ms  x{r.get('speedup_vs_dense', '')}  "
        f"{'ideal x' + str(r['ideal_speedup']) if 'ideal_speedup' in r else ''} {r.get('joules_per_op', '')}")
