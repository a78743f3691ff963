"""SparseLinear: a drop-in ``nn.Linear`` that stores a pruned weight sparsely and runs the fastest path.

A pruned weight is only *faster* if a kernel skips its zeros, and which kernel wins depends on the
pattern (blocks, 2:4, scattered), the device and above all the number of tokens: with 1-16 tokens
a layer is memory-bound and every saved byte counts; with thousands it is compute-bound and only
skipped tensor-core FLOPs count. So ``SparseLinear`` keeps the formats the weight allows and picks
one *per token count* from measurements:

* ``format="auto"`` (default): for each token-count bucket (1, 16, 128, 1024, 8192 tokens) it uses

  1. the committed benchmark results for this GPU (``benchmarks/results/<gpu-name>.json``, written
     by ``benchmarks/kernels.py``) when the file exists and covers this dtype; otherwise
  2. a quick measurement of every candidate on this device, the first time a bucket is seen.

  Dense is always a candidate, and a sparse path is chosen only when it beats dense by more than
  :data:`MARGIN`, so "auto" should never be much slower than the dense layer.
* ``format="dense" | "bsr" | "2:4" | "csr"``: always that format (on a CPU without a GPU, the
  Triton kernels run in the interpreter: correct, but a slow simulation).

Where triton is not installed the kernels fall back to their plain-torch references.
Tolerance: outputs match the masked dense layer to :data:`labkit.kernels._runtime.TOLERANCE`
(relative to the largest output: 2e-2 fp32 (TF32 on GPUs), 1e-2 fp16, 3e-2 bf16).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labkit.kernels import _runtime as rt
from labkit.kernels.bsr_linear import bsr_linear
from labkit.kernels.csr_linear import csr_linear
from labkit.kernels.semi24 import pack_24, semi24_linear

FORMATS = ("dense", "bsr", "2:4", "csr")
#: Token counts "auto" plans for; a call uses the bucket nearest its token count (in log scale).
BUCKETS = (1, 16, 128, 1024, 8192)
#: A sparse path must be this much faster than dense (ratio) to be chosen.
MARGIN = 1.05
#: "auto" keeps (and times) CSR only at or below this density: CSR moves 3x the bytes of dense per
#: kept weight and runs without tensor cores, so above it CSR cannot win (kernels/csr_linear.py).
CSR_MAX_DENSITY = 0.1
RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def gpu_results_path(device: torch.device | str = "cuda") -> Path | None:
    """``benchmarks/results/<gpu-name>.json`` for this GPU, or None (no GPU, or not benchmarked yet)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    path = RESULTS_DIR / f"{results_name(name)}.json"
    return path if path.exists() else None


def results_name(gpu_name: str) -> str:
    """File-name form of a GPU name: ``NVIDIA H200`` -> ``nvidia-h200``."""
    return "".join(c if c.isalnum() else "-" for c in gpu_name.lower()).strip("-")


def block_density(weight: torch.Tensor, block: int) -> float:
    """Share of ``block x block`` tiles holding at least one nonzero (1.0 if the block does not fit)."""
    n, k = weight.shape
    nb, kb = math.ceil(n / block), math.ceil(k / block)
    pad = F.pad(weight != 0, (0, kb * block - k, 0, nb * block - n))
    return pad.reshape(nb, block, kb, block).any(dim=(1, 3)).float().mean().item()


def detect_block(weight: torch.Tensor, blocks: tuple[int, ...] = (64, 32, 16), slack: float = 1.25) -> int | None:
    """The largest block size whose tiles the zeros respect (tile density <= slack x element density)."""
    density = (weight != 0).float().mean().item()
    for b in blocks:
        if block_density(weight, b) <= min(1.0, slack * density) and density < 1.0:
            return b
    return None


def bucket_for(m: int) -> int:
    """The planning bucket of :data:`BUCKETS` nearest ``m`` tokens (in log scale)."""
    return min(BUCKETS, key=lambda b: abs(math.log(b) - math.log(max(m, 1))))


class SparseLinear(nn.Module):
    """``y = x @ W.T + b`` with a sparse ``W`` stored dense, BSR, 2:4 and/or CSR.

    Build it with :meth:`from_linear` from a pruned ``nn.Linear`` (masks already applied or made
    permanent). ``plan`` shows which format each token-count bucket uses once decided.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, format: str = "auto",
                 block: int | None = None):
        super().__init__()
        if not isinstance(weight, torch.Tensor) or weight.layout != torch.strided or weight.dim() != 2:
            raise TypeError("weight must be a dense 2-D torch.Tensor (out_features, in_features)")
        if weight.dtype not in rt.DTYPES:
            raise TypeError(f"weight has dtype {weight.dtype}; use float16, bfloat16 or float32")
        if format not in FORMATS + ("auto",):
            raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
        if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
            raise ValueError(f"bias must be None or a tensor of shape ({weight.shape[0]},)")
        w = weight.detach().contiguous()
        self.out_features, self.in_features = w.shape
        self.format = format
        self.density = (w != 0).float().mean().item()
        self.register_buffer("bias", None if bias is None else bias.detach().to(w.dtype).contiguous())

        if block is not None:
            rt.check_block(block)
        elif format in ("bsr", "auto"):
            block = detect_block(w) or (16 if format == "bsr" else None)
        self.block = block
        self.available = ["dense", "csr"]  # CSR is dropped below for "auto" above CSR_MAX_DENSITY
        if block is not None:
            self.available.append("bsr")
        if self.in_features % 8 == 0 and bool(((w.reshape(-1, 4) != 0).sum(1) <= 2).all()):
            self.available.append("2:4")
        if format != "auto" and format not in self.available:
            why = "the weight is not 2:4 sparse (at most 2 nonzeros in each group of 4 inputs, in_features % 8 == 0)"
            raise ValueError(f"format={format!r} does not fit this weight: {why}; use 'auto' or another format")
        if format == "auto" and self.density > CSR_MAX_DENSITY:
            self.available.remove("csr")  # hopeless above this density (see kernels/csr_linear.py): not kept
        keep = self.available if format == "auto" else sorted({"dense", format}, key=FORMATS.index)
        self.register_buffer("weight", w)  # dense: also the reference and the CPU fallback
        if "bsr" in keep:
            n_pad, k_pad = (math.ceil(d / block) * block for d in w.shape)
            bsr = F.pad(w, (0, k_pad - w.shape[1], 0, n_pad - w.shape[0])).to_sparse_bsr((block, block))
            self.register_buffer("bsr_crow", bsr.crow_indices())
            self.register_buffer("bsr_col", bsr.col_indices())
            self.register_buffer("bsr_values", bsr.values().contiguous())
            self._bsr_shape = (n_pad, k_pad)
        if "2:4" in keep:
            values, meta = pack_24(w)
            self.register_buffer("s24_values", values)
            self.register_buffer("s24_meta", meta)
        if "csr" in keep:
            csr = w.to_sparse_csr()
            self.register_buffer("csr_crow", csr.crow_indices())
            self.register_buffer("csr_col", csr.col_indices())
            self.register_buffer("csr_values", csr.values())
        self._kept = keep
        self.plan: dict[int, str] = {} if format == "auto" else {b: format for b in BUCKETS}
        self.timings: dict[int, dict[str, float]] = {}
        self._torch24 = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, format: str = "auto", block: int | None = None) -> "SparseLinear":
        """Build from a pruned ``nn.Linear`` (its current weight, masks from torch.nn.utils.prune applied)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight.detach(), linear.bias, format=format, block=block)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, density={self.density:.3f}, "
                f"format={self.format!r}, block={self.block}, formats={self._kept}")

    # -- the sparse tensors, rebuilt as views of the buffers (so .to(device) moves them) --------
    def _bsr(self) -> torch.Tensor:
        return torch.sparse_bsr_tensor(self.bsr_crow, self.bsr_col, self.bsr_values, self._bsr_shape)

    def _csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.csr_crow, self.csr_col, self.csr_values,
                                       (self.out_features, self.in_features))

    def run(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        """Apply the layer to 2-D ``x`` with one named format (what ``forward`` dispatches to)."""
        if fmt not in self._kept and fmt != "2:4-torch":
            raise ValueError(f"format {fmt!r} is not stored by this layer; stored: {self._kept}")
        if fmt == "dense":
            return F.linear(x, self.weight, self.bias)
        if fmt == "bsr":
            return bsr_linear(x, self._bsr(), self.bias, out_features=self.out_features)
        if fmt == "2:4":
            return semi24_linear(x, self.s24_values, self.s24_meta, self.bias)
        if fmt == "2:4-torch":  # cuSPARSELt / CUTLASS through torch: sparse tensor cores
            if self._torch24 is None:
                from torch.sparse import to_sparse_semi_structured
                self._torch24 = to_sparse_semi_structured(self.weight)
            return F.linear(x, self._torch24, self.bias)
        return csr_linear(x, self._csr(), self.bias)

    def _cpu_run(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        """What "auto" uses on a CPU: torch's own CPU sparse paths (the interpreter is a simulation)."""
        if fmt == "csr":
            y = torch.sparse.mm(self._csr(), x.t()).t()
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)

    # -- choosing ---------------------------------------------------------------------------------
    def candidates(self, device: torch.device) -> list[str]:
        """Formats "auto" may pick on ``device``."""
        if device.type == "cuda" and rt.HAS_TRITON and not rt.interpreting():
            extra = ["2:4-torch"] if "2:4" in self._kept and self.weight.dtype != torch.float32 else []
            return list(self._kept) + extra
        # on a CPU only dense and torch's CSR (fp32 only: its MKL path has no fp16) are worth timing
        return ["dense", "csr"] if "csr" in self._kept and self.weight.dtype == torch.float32 else ["dense"]

    def _from_results(self, bucket: int) -> str | None:
        path = gpu_results_path(self.weight.device) if self.weight.is_cuda else None
        if path is None:
            return None
        rows = [r for r in json.loads(path.read_text())["rows"]
                if r.get("dtype") == str(self.weight.dtype).replace("torch.", "") and r.get("ms")]
        best, best_speed = "dense", MARGIN
        for kernel in self._kept + ["2:4-torch"]:
            if kernel == "dense":
                continue
            name = "2:4" if kernel == "2:4-torch" else kernel
            fits = [r for r in rows if r["kernel"] == name and (name != "bsr" or r["block"] == self.block)]
            if not fits:
                continue
            near = min(fits, key=lambda r: (abs(math.log(r["M"] / bucket)), abs(r["density"] - self.density),
                                           abs(math.log(r["N"] * r["K"] / (self.out_features * self.in_features)))))
            speed = (near["dense_ms"] / near["baseline_ms"] if kernel == "2:4-torch" and near.get("baseline_ms")
                     else near["speedup_vs_dense"] if kernel != "2:4-torch" else 0.0)
            if speed and speed > best_speed:
                best, best_speed = kernel, speed
        return best

    def _measure(self, x: torch.Tensor, bucket: int) -> str:
        xb = torch.randn(bucket, self.in_features, device=x.device, dtype=x.dtype)
        times = {}
        for fmt in self.candidates(x.device):
            fn = (lambda f=fmt: self.run(xb, f)) if x.is_cuda else (lambda f=fmt: self._cpu_run(xb, f))
            try:
                if x.is_cuda:
                    from triton.testing import do_bench
                    times[fmt] = do_bench(fn, warmup=5, rep=20, return_mode="median")
                else:
                    from labkit.utils import median_time
                    times[fmt] = median_time(fn, repeats=5, warmup=1) * 1e3
            except Exception as e:  # a path that cannot run here is simply not a candidate
                warnings.warn(f"SparseLinear: format {fmt} failed while measuring ({e!r}); skipped")
        self.timings[bucket] = times
        best = min(times, key=times.get)
        return best if times[best] * MARGIN < times["dense"] else "dense"

    def choose(self, m: int, x: torch.Tensor | None = None) -> str:
        """The format used for ``m`` tokens (deciding, and measuring if needed, the first time)."""
        bucket = bucket_for(m)
        if bucket not in self.plan:
            x = x if x is not None else self.weight
            self.plan[bucket] = self._from_results(bucket) or self._measure(x, bucket)
        return self.plan[bucket]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x has {x.shape[-1]} features in its last dimension but this layer expects "
                             f"{self.in_features}")
        if x.dtype != self.weight.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weight is {self.weight.dtype}; cast one of them")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        fmt = self.choose(x2.shape[0], x2)
        if self.format == "auto" and not x2.is_cuda:
            y = self._cpu_run(x2, fmt)
        else:
            y = self.run(x2, fmt)
        return y.reshape(*lead, self.out_features)
