"""PyTorch's own sparse paths, measured: what a user gets today without the lab's kernels.

On an NVIDIA GPU (the committed ``benchmarks/results/pytorch_baselines_h200_2026-11-28.json`` came from an
H200) it times, each section independent (a failure is recorded and the next section runs):

- ``dense``: ``F.linear`` in bf16 at many and at few tokens (the roof everything is compared with);
- ``2:4``: ``to_sparse_semi_structured``, once with PyTorch's default backend and once with CUTLASS forced
  (``SparseSemiStructuredTensor._FORCE_CUTLASS = True``). Each row records the tensor class PyTorch really
  built (``SparseSemiStructuredTensorCUSPARSELT`` or ``...CUTLASS``), is timed eagerly and replayed from a
  CUDA graph (which removes the per-call Python and launch cost), and each backend gets a
  ``torch.profiler`` trace whose kernel names go to ``<results>_profile.json``. The committed H200 file
  timed the default path at ~0.85 ms from 64 to 8192 tokens, a fixed cost per call whose backend was
  never confirmed: until this script has run on a GPU, every text keeps the "?" on it;
- ``csr``: cuSPARSE CSR @ dense (fp32 values) against three dense baselines: fp32 with TF32 off (CUDA
  cores), TF32, and bf16 (tensor cores), so "sparse beats dense" always says which dense;
- ``bsr``: ``bsr_dense_mm`` (PyTorch's Triton block-sparse kernel) and the dispatcher's ``bsr @ dense``;
- ``moe``: a naive per-expert loop, the same FLOPs as one dense FFN, and ``torch._grouped_mm``;
- ``energy``: joules from NVML's energy counter, dense against ``bsr_dense_mm``.

``--smoke`` runs every code path a CPU has on tiny shapes (dense, CSR against fp32 and bf16 dense, the
profiler, the MoE loop; 2:4, CUDA graphs, BSR's Triton kernel and NVML are recorded as skipped with
the reason) and writes only where ``--out`` says (default: a temporary folder).

Usage: ``python benchmarks/pytorch_baselines.py`` on a GPU (writes ``pytorch_baselines_<gpu>_<date>.json``
in benchmarks/results), or ``python benchmarks/pytorch_baselines.py --smoke [--out DIR]`` anywhere.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labkit import results
from labkit.utils import time_ms

SECTIONS = ("dense", "2:4", "csr", "bsr", "moe", "energy")


def _sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (0.0024123 -> 0.002412, 1234.56 -> 1235.0)."""
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class Sizes:
    """Shapes of one run: the GPU run's, or the smoke run's tiny ones."""
    n: int  # N = K of the square weight
    dense_tokens: tuple[int, ...]
    semi_tokens: tuple[int, ...]
    csr_tokens: int
    csr_densities: tuple[float, ...]
    bsr_tokens: tuple[int, ...]
    bsr_blocks: tuple[int, ...]
    bsr_densities: tuple[float, ...]
    moe: dict = field(default_factory=dict)  # E, top_k, d, ff, T


GPU_SIZES = Sizes(n=8192, dense_tokens=(8192, 16), semi_tokens=(8192, 1024, 64), csr_tokens=4096,
                  csr_densities=(0.1, 0.05, 0.01), bsr_tokens=(8192, 16), bsr_blocks=(32, 64),
                  bsr_densities=(0.5, 0.25, 0.1, 0.05), moe={"E": 8, "top_k": 2, "d": 4096, "ff": 14336, "T": 4096})
SMOKE_SIZES = Sizes(n=64, dense_tokens=(32, 4), semi_tokens=(32, 4), csr_tokens=16, csr_densities=(0.1,),
                    bsr_tokens=(16,), bsr_blocks=(16,), bsr_densities=(0.25,),
                    moe={"E": 4, "top_k": 2, "d": 32, "ff": 64, "T": 16})


class Run:
    """One measurement session: the device, the timer, and everything recorded (rows, skips, profiles)."""

    def __init__(self, device: str, sizes: Sizes):
        self.device, self.sizes = device, sizes
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.profiles: dict[str, list[dict]] = {}

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def bench(self, fn: Callable[..., object], *args: object) -> float:
        """Median milliseconds per call of ``fn(*args)``, with the lab's one timer (do_bench on a GPU)."""
        return time_ms(lambda: fn(*args), cuda=self.cuda)

    def graph_ms(self, fn: Callable[..., object], *args: object) -> float:
        """Milliseconds per call replayed from a CUDA graph: the GPU work without Python and launch overhead."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up outside the graph (allocations, lazy initialisation)
            for _ in range(3):
                fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn(*args)
        return self.bench(graph.replay)

    def profile(self, name: str, fn: Callable[..., object], *args: object, steps: int = 5, top: int = 8) -> list[dict]:
        """The ``top`` kernels (GPU) or operators (CPU) by time over ``steps`` calls of ``fn(*args)``, saved
        under ``name``."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        fn(*args)
        self.sync()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                fn(*args)
            self.sync()
        key = "device_time_total" if self.cuda else "cpu_time_total"
        events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
        if self.cuda:  # kernels only: events that ran on the device themselves
            events = [e for e in events if getattr(e, "self_device_time_total", 0) > 0]
        events.sort(key=lambda e: getattr(e, key), reverse=True)
        summary = [{"name": e.key, "calls": e.count, "us_per_step": round(getattr(e, key) / steps, 2)}
                   for e in events[:top]]
        self.profiles[name] = summary
        return summary

    def row(self, section: str, op: str, label: str, ms: float, *, M: int | None, N: int | None, K: int | None,
            dtype: torch.dtype | str, density: float | None = None, block: int | None = None,
            backend: str | None = None, dense_ms: float | None = None, **extra) -> dict:
        """Record one measurement in the ``pytorch_baselines`` schema and print it."""
        # 4 significant digits, not 4 decimals: a smoke run's tiny dense products take ~0.002 ms, and
        # round(0.0024 / 6.9, 3) would store a speed-up of 0.0 (and a test comparing it would flake).
        r = {"section": section, "op": op, "label": label, "ms": _sig(ms), "M": M, "N": N, "K": K,
             "dtype": str(dtype).replace("torch.", ""), "density": density, "block": block, "backend": backend}
        if dense_ms is not None:
            r["dense_ms"] = _sig(dense_ms)
            r["speedup_vs_dense"] = _sig(dense_ms / ms)
        r.update(extra)
        self.rows.append(r)
        print(json.dumps(r), flush=True)
        return r

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")
        print(f"skipped {what}: {why}", flush=True)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error, rounded to 3 significant digits."""
    ref = ref.float()
    return float(f"{((got.float() - ref).norm() / ref.norm()).item():.2e}")


def bench_dense(run: Run) -> None:
    n = run.sizes.n
    for M in run.sizes.dense_tokens:
        a = torch.randn(M, n, device=run.device, dtype=torch.bfloat16)
        w = torch.randn(n, n, device=run.device, dtype=torch.bfloat16)
        ms = run.bench(F.linear, a, w)
        run.row("dense", "linear", f"linear M={M} K=N={n} bf16", ms, M=M, N=n, K=n, dtype=torch.bfloat16,
                tflops=round(2 * M * n * n / ms / 1e9, 3))


def bench_semi_structured(run: Run) -> None:
    """2:4 through ``to_sparse_semi_structured``: PyTorch's default backend against CUTLASS forced."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    n = run.sizes.n
    w = torch.randn(n, n, device=run.device, dtype=torch.bfloat16)
    w = w * torch.tensor([1, 1, 0, 0], device=run.device, dtype=torch.bool).repeat(n, n // 4)
    try:
        for mode, force in (("default", False), ("cutlass forced", True)):
            SparseSemiStructuredTensor._FORCE_CUTLASS = force
            try:
                ws = to_sparse_semi_structured(w)
            except Exception as e:  # no GPU, or a GPU/backend without 2:4 support
                run.skip(f"2:4 {mode}", f"to_sparse_semi_structured failed: {type(e).__name__}: {str(e)[:200]}")
                continue
            backend = type(ws).__name__  # the class PyTorch really built: ...CUSPARSELT or ...CUTLASS
            for M in run.sizes.semi_tokens:
                a = torch.randn(M, n, device=run.device, dtype=torch.bfloat16)
                dense_ms = run.bench(F.linear, a, w)
                ms = run.bench(F.linear, a, ws)
                common: dict[str, Any] = {"M": M, "N": n, "K": n, "dtype": torch.bfloat16, "density": 0.5,
                                          "backend": backend}
                run.row("2:4", "semi_structured_linear", f"{mode} ({backend}) linear M={M} K=N={n} bf16", ms,
                        dense_ms=dense_ms, rel_err=rel_err(F.linear(a, ws), F.linear(a, w)), cuda_graph=False,
                        **common)
                if run.cuda:
                    try:
                        g_dense, g_ms = run.graph_ms(F.linear, a, w), run.graph_ms(F.linear, a, ws)
                        run.row("2:4", "semi_structured_linear", f"{mode} ({backend}) linear M={M} K=N={n} bf16, "
                                "CUDA graph", g_ms, dense_ms=g_dense, cuda_graph=True, **common)
                    except Exception as e:
                        run.skip(f"2:4 {mode} M={M} CUDA graph", f"{type(e).__name__}: {str(e)[:200]}")
            a = torch.randn(run.sizes.semi_tokens[-1], n, device=run.device, dtype=torch.bfloat16)
            run.profile(f"2:4 {mode} ({backend}) M={a.shape[0]}", F.linear, a, ws)
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = False


def bench_csr(run: Run) -> None:
    """cuSPARSE (CPU: MKL or native) CSR @ dense, against fp32 (TF32 off), TF32 and bf16 dense."""
    n, M = run.sizes.n, run.sizes.csr_tokens
    x = torch.randn(n, M, device=run.device)
    for density in run.sizes.csr_densities:
        w = torch.randn(n, n, device=run.device) * (torch.rand(n, n, device=run.device) < density)
        wc = w.to_sparse_csr()
        ms = run.bench(torch.matmul, wc, x)
        err = rel_err(wc @ x, w @ x)
        baselines = {"fp32 (TF32 off)": (w, x, False), "bf16": (w.bfloat16(), x.bfloat16(), False)}
        if run.cuda:
            baselines["tf32"] = (w, x, True)
        for dense_kind, (wd, xd, tf32) in baselines.items():
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                dense_ms = run.bench(torch.matmul, wd, xd)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
            run.row("csr", "csr_matmul", f"CSR @ dense fp32 M={M} density={density} vs {dense_kind} dense", ms,
                    M=M, N=n, K=n, dtype=torch.float32, density=density,
                    backend="cuSPARSE" if run.cuda else "torch CPU", dense=dense_kind, dense_ms=dense_ms,
                    ideal_speedup=round(1 / density, 1), rel_err=err)
    run.profile(f"csr density={run.sizes.csr_densities[-1]}", torch.matmul, wc, x)


def block_mask(n: int, k: int, bs: int, density: float, device: str) -> torch.Tensor:
    """Random whole ``bs`` x ``bs`` blocks kept with probability ``density``."""
    m = torch.rand(n // bs, k // bs, device=device) < density
    return m.repeat_interleave(bs, 0).repeat_interleave(bs, 1)


def bench_bsr(run: Run) -> None:
    n = run.sizes.n
    dtype = torch.bfloat16 if run.cuda else torch.float32  # the CPU's BSR matmul has no bf16
    for M in run.sizes.bsr_tokens:
        x = torch.randn(n, M, device=run.device, dtype=dtype)
        for bs in run.sizes.bsr_blocks:
            for density in run.sizes.bsr_densities:
                w = torch.randn(n, n, device=run.device, dtype=dtype) * block_mask(n, n, bs, density, run.device)
                wb = w.to_sparse_bsr((bs, bs))
                dense_ms = run.bench(torch.matmul, w, x)
                common: dict[str, Any] = {"M": M, "N": n, "K": n, "dtype": dtype, "density": density, "block": bs,
                                          "dense_ms": dense_ms, "ideal_speedup": round(1 / density, 2)}
                if run.cuda:
                    from torch.sparse._triton_ops import bsr_dense_mm

                    ms = run.bench(bsr_dense_mm, wb, x)
                    run.row("bsr", "bsr_dense_mm", f"bsr_dense_mm M={M} bs={bs} density={density}", ms,
                            backend="torch.sparse._triton_ops", rel_err=rel_err(bsr_dense_mm(wb, x), w @ x), **common)
                else:
                    run.skip("bsr_dense_mm", "PyTorch's Triton block-sparse kernel needs a GPU")
                try:
                    ms = run.bench(torch.matmul, wb, x)
                    run.row("bsr", "bsr_matmul", f"bsr @ dense (dispatch) M={M} bs={bs} density={density}", ms,
                            backend="torch dispatch (bsr @ dense)", rel_err=rel_err(wb @ x, w @ x), **common)
                except Exception as e:
                    run.skip(f"bsr @ dense M={M} bs={bs}", f"{type(e).__name__}: {str(e)[:200]}")


def bench_moe(run: Run) -> None:
    E, top_k, d, ff, T = (run.sizes.moe[k] for k in ("E", "top_k", "d", "ff", "T"))
    dt_ = torch.bfloat16
    g = torch.Generator(device=run.device).manual_seed(0)
    w1, w3 = (torch.randn(E, ff, d, device=run.device, dtype=dt_, generator=g) * 0.02 for _ in range(2))
    w2 = torch.randn(E, d, ff, device=run.device, dtype=dt_, generator=g) * 0.02
    x = torch.randn(T, d, device=run.device, dtype=dt_, generator=g)
    weights, idx = torch.topk(torch.randn(T, E, device=run.device, generator=g).softmax(-1), top_k, dim=-1)

    def naive() -> torch.Tensor:
        out = torch.zeros_like(x)
        for e in range(E):
            tok, slot = torch.where(idx == e)
            if tok.numel():
                h = x[tok]
                y = (F.silu(h @ w1[e].T) * (h @ w3[e].T)) @ w2[e].T
                out.index_add_(0, tok, (y * weights[tok, slot, None]).to(dt_))
        return out

    xt = torch.randn(T * top_k, d, device=run.device, dtype=dt_, generator=g)

    def dense_equivalent() -> torch.Tensor:  # the same FLOPs as one SwiGLU FFN over T * top_k tokens
        return (F.silu(xt @ w1[0].T) * (xt @ w3[0].T)) @ w2[0].T

    flops = 2 * 3 * T * top_k * d * ff
    shape = {"M": T, "N": None, "K": None, "dtype": dt_, "experts": E, "top_k": top_k, "d_model": d, "d_ff": ff}
    dense_ms = run.bench(dense_equivalent)
    ms = run.bench(naive)
    run.row("moe", "moe_naive_loop", f"naive loop E={E} top{top_k} d={d} ff={ff} T={T}", ms, dense_ms=dense_ms,
            tflops=round(flops / ms / 1e9, 3), **shape)
    run.row("moe", "moe_dense_equivalent", "dense FFN with the same active FLOPs", dense_ms, dense_ms=dense_ms,
            tflops=round(flops / dense_ms / 1e9, 3), **shape)
    if not hasattr(torch, "_grouped_mm"):
        run.skip("torch._grouped_mm", "not in this torch")
        return
    order = idx.flatten().argsort()
    offs = torch.bincount(idx.flatten(), minlength=E).cumsum(0).to(torch.int32)
    xs = x[order // top_k]
    w1t, w3t, w2t = w1.transpose(1, 2), w3.transpose(1, 2), w2.transpose(1, 2)

    def grouped() -> torch.Tensor:
        h1, h3 = torch._grouped_mm(xs, w1t, offs=offs), torch._grouped_mm(xs, w3t, offs=offs)
        return torch._grouped_mm(F.silu(h1) * h3, w2t, offs=offs)

    try:
        ms = run.bench(grouped)
        run.row("moe", "grouped_mm", "torch._grouped_mm expert GEMMs only (no permute, no combine)", ms,
                dense_ms=dense_ms, backend="torch._grouped_mm", tflops=round(flops / ms / 1e9, 3), **shape)
    except Exception as e:
        run.skip("torch._grouped_mm", f"{type(e).__name__}: {str(e)[:200]}")


def bench_energy(run: Run) -> None:
    """Joules per call from NVML's energy counter (a whole-GPU counter: idle draw included)."""
    if not run.cuda:
        run.skip("energy", "NVML needs an NVIDIA GPU")
        return
    import pynvml
    from torch.sparse._triton_ops import bsr_dense_mm

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    def joules(fn: Callable[[], object], seconds: float = 2.0) -> tuple[float, int, float]:
        fn()
        torch.cuda.synchronize()
        e0, t0, calls = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                fn()
            calls += 10
            torch.cuda.synchronize()
        t = time.perf_counter() - t0
        return (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) / 1000.0, calls, t

    n = run.sizes.n
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    wb = (w * block_mask(n, n, 64, 0.1, "cuda")).to_sparse_bsr((64, 64))
    for op, label, fn, density, block, backend in [
            ("matmul", f"dense {n}^3 bf16", lambda: w @ x, None, None, None),
            ("bsr_dense_mm", "bsr_dense_mm density 0.1 bs64", lambda: bsr_dense_mm(wb, x), 0.1, 64,
             "torch.sparse._triton_ops")]:
        j, calls, t = joules(fn)
        run.row("energy", op, label, 1e3 * t / calls, M=n, N=n, K=n, dtype=torch.bfloat16, density=density,
                block=block, backend=backend, joules_per_op=round(j / calls, 4), avg_watts=round(j / t, 1))


BENCHES = {"dense": bench_dense, "2:4": bench_semi_structured, "csr": bench_csr, "bsr": bench_bsr,
           "moe": bench_moe, "energy": bench_energy}


def slug(text: str) -> str:
    """A file-name-safe lower-case form of a GPU name: 'NVIDIA H200' -> 'h200'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace("nvidia", "")).strip("_") or "gpu"


def run_all(smoke: bool, sections: tuple[str, ...] = SECTIONS) -> Run:
    """Measure ``sections`` (a GPU run unless ``smoke``) and return the session."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections must be among {SECTIONS}, got {unknown}")
    if not smoke and not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: run with --smoke for a CPU smoke run of the code paths")
    run = Run("cuda" if torch.cuda.is_available() and not smoke else "cpu", SMOKE_SIZES if smoke else GPU_SIZES)
    if run.cuda and smoke:
        run.skip("cuda", "a smoke run stays on the CPU")
    torch.manual_seed(0)
    for name in sections:
        t0 = time.perf_counter()
        try:
            BENCHES[name](run)
        except Exception as e:  # one broken section must not lose the others' measurements
            traceback.print_exc()
            run.skip(f"section {name}", f"failed: {type(e).__name__}: {str(e)[:300]}")
        print(f"-- {name} took {time.perf_counter() - t0:.1f} s", flush=True)
    return run


def save(run: Run, out: Path, smoke: bool) -> tuple[Path, Path]:
    """Write the rows through :func:`labkit.results.write` and the profiler summary beside them."""
    gpu = torch.cuda.get_device_name(0) if run.cuda else "none (CPU smoke run)"
    profile_path = out.with_name(out.stem + "_profile.json")
    command = "python benchmarks/pytorch_baselines.py" + (" --smoke" if smoke else "")
    path = results.write(out, run.rows, script="benchmarks/pytorch_baselines.py", schema="pytorch_baselines",
                         command=command, extra={"gpu": gpu, "smoke": smoke, "skipped": run.skipped,
                                                 "profile_file": profile_path.name})
    profile_path.write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "kernels": run.profiles},
                                       indent=1) + "\n", encoding="utf-8")
    return path, profile_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: exercise the code paths")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file or folder (GPU default: benchmarks/results/pytorch_baselines_<gpu>_<date>"
                             ".json; smoke default: a temporary folder)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    args = parser.parse_args(argv)
    run = run_all(args.smoke, tuple(args.sections))
    if args.smoke:
        name = "pytorch_baselines_smoke.json"
        folder = Path(tempfile.mkdtemp(prefix="baselines-")) if args.out is None else args.out
    else:
        name = f"pytorch_baselines_{slug(torch.cuda.get_device_name(0))}_{dt.date.today().isoformat()}.json"
        folder = results.RESULTS_DIR if args.out is None else args.out
    out = folder / name if folder.suffix != ".json" else folder
    path, profile_path = save(run, out, args.smoke)
    print(f"\n{len(run.rows)} rows -> {path}\nprofiler summary -> {profile_path}")
    for r in run.rows:
        print(f"{r['section']:6s} {r['label'][:78]:78s} {r['ms']:9.4f} ms  x{r.get('speedup_vs_dense', '')}")
    for s in run.skipped:
        print("skipped:", s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
