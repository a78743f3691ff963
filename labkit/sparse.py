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
* ``format="dense" | "bsr" | "2:4" | "csr"``: always that format.

Where it computes: on a CUDA GPU the lab's Triton kernels. On a CPU, PyTorch's own CPU paths
(torch's CSR product for ``"csr"``, the dense product of the stored weight for ``"bsr"``/``"2:4"``:
honest, no speed-up), unless ``use_triton=True`` asks for the Triton kernels in the interpreter
(a slow simulation, used by the tests and notebook 03 to show the kernels give the same answer).
Where triton is not installed the kernels fall back to their plain-torch references.

:func:`sparsify` swaps every pruned ``nn.Linear`` of a model for a ``SparseLinear`` in place, and
:func:`densify` swaps them back.
Tolerance: outputs match the masked dense layer to :data:`labkit.kernels.runtime.TOLERANCE`
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

from labkit.kernels import runtime as rt
from labkit.kernels.bsr_linear import bsr_linear, check_bsr_weight
from labkit.kernels.csr_linear import check_csr_weight, csr_linear
from labkit.kernels.semi24 import check_meta, pack_24, semi24_linear

from labkit.formats import KERNEL_FORMATS as FORMATS  # noqa: E402 - the formats with a lab kernel
#: Token counts "auto" plans for; a call uses the bucket nearest its token count (in log scale).
BUCKETS = (1, 16, 128, 1024, 8192)
#: A sparse path must be this much faster than dense (ratio) to be chosen.
MARGIN = 1.05
#: "auto" keeps (and times) CSR only at or below this density: CSR moves 3x the bytes of dense per
#: kept weight and runs without tensor cores, so above it CSR cannot win (kernels/csr_linear.py).
CSR_MAX_DENSITY = 0.1
from labkit.utils import RESULTS_DIR  # noqa: E402


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
                 block: int | None = None, use_triton: bool | None = None):
        super().__init__()
        if use_triton is not None and not isinstance(use_triton, bool):
            raise TypeError(f"use_triton must be None (Triton on a GPU, PyTorch on a CPU), True or False, "
                            f"got {use_triton!r}")
        self.use_triton = use_triton
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
        self._checked: tuple = ()  # which index arrays were validated (see _check_indices)
        self._check_indices()  # once, when packed
        self.plan: dict[int, str] = {} if format == "auto" else {b: format for b in BUCKETS}
        self.timings: dict[int, dict[str, float]] = {}
        self._torch24 = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, format: str = "auto", block: int | None = None,
                    use_triton: bool | None = None) -> SparseLinear:
        """Build from a pruned ``nn.Linear`` (its current weight, masks from torch.nn.utils.prune applied)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight.detach(), linear.bias, format=format, block=block, use_triton=use_triton)

    def extra_repr(self) -> str:
        flag = "" if self.use_triton is None else f", use_triton={self.use_triton}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, density={self.density:.3f}, "
                f"format={self.format!r}, block={self.block}, formats={self._kept}{flag}")

    def dense_weight(self) -> torch.Tensor:
        """The (out_features, in_features) weight as a dense tensor (a detached copy), zeros included."""
        return self.weight.detach().clone()

    # -- the sparse tensors, rebuilt as views of the buffers (so .to(device) moves them) --------
    def _bsr(self) -> torch.Tensor:
        return torch.sparse_bsr_tensor(self.bsr_crow, self.bsr_col, self.bsr_values, self._bsr_shape,
                                       check_invariants=False)  # built by torch's own conversion

    def _csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.csr_crow, self.csr_col, self.csr_values,
                                       (self.out_features, self.in_features), check_invariants=False)

    def _index_arrays(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in ("bsr_crow", "bsr_col", "s24_meta", "csr_crow", "csr_col")
                if hasattr(self, name)]

    def _check_indices(self) -> None:
        """Validate the stored index arrays once, and again only if they were replaced or changed.

        The record is each array's identity and version counter: ``load_state_dict`` or ``.to()``
        bring new or modified arrays, which are checked on the next call; otherwise calls pay nothing.
        """
        key = tuple((id(t), t._version) for t in self._index_arrays())
        if key == self._checked:
            return
        if "bsr" in self._kept:
            check_bsr_weight(self._bsr())
        if "2:4" in self._kept:
            check_meta(self.s24_meta)
        if "csr" in self._kept:
            check_csr_weight(self._csr())
        self._checked = key

    def run(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        """Apply the layer to 2-D ``x`` with one named format (what ``forward`` dispatches to)."""
        if fmt not in self._kept and fmt != "2:4-torch":
            raise ValueError(f"format {fmt!r} is not stored by this layer; stored: {self._kept}")
        self._check_indices()
        if fmt == "dense":
            return F.linear(x, self.weight, self.bias)
        # validate=False: the index arrays were built by torch / pack_24 and checked once in __init__
        if fmt == "bsr":
            return bsr_linear(x, self._bsr(), self.bias, out_features=self.out_features, validate=False)
        if fmt == "2:4":
            return semi24_linear(x, self.s24_values, self.s24_meta, self.bias, validate=False)
        if fmt == "2:4-torch":  # cuSPARSELt / CUTLASS through torch: sparse tensor cores
            if self._torch24 is None:
                from torch.sparse import to_sparse_semi_structured
                self._torch24 = to_sparse_semi_structured(self.weight)
            return F.linear(x, self._torch24, self.bias)
        return csr_linear(x, self._csr(), self.bias, validate=False)

    def _torch_run(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        """PyTorch's own paths (what a CPU uses): torch's CSR product for "csr", else the dense product.

        torch's CPU CSR product (MKL) has no fp16/bf16: it computes those in fp32 and rounds back.
        """
        self._check_indices()
        if fmt == "csr":
            csr = self._csr()
            low = x.dtype != torch.float32 and x.device.type == "cpu"
            if low:
                csr = csr.to(torch.float32)
            y = torch.sparse.mm(csr, (x.float() if low else x).t()).t()
            y = y if self.bias is None else y + self.bias.to(y.dtype)
            return y.to(x.dtype)
        return F.linear(x, self.weight, self.bias)

    def _triton_here(self, x: torch.Tensor) -> bool:
        """Whether this call runs the lab's Triton kernels (GPU) or PyTorch's paths (CPU, or asked for)."""
        if self.use_triton is None:
            return x.is_cuda
        return self.use_triton

    # -- choosing ---------------------------------------------------------------------------------
    def candidates(self, device: torch.device) -> list[str]:
        """Formats "auto" may pick on ``device``."""
        if device.type == "cuda" and rt.can_launch(device):  # compiled Triton on this GPU
            extra = ["2:4-torch"] if "2:4" in self._kept and self.weight.dtype != torch.float32 else []
            return list(self._kept) + extra
        # on a CPU only dense and torch's CSR (fp32 only: its MKL path has no fp16) are worth timing
        return ["dense", "csr"] if "csr" in self._kept and self.weight.dtype == torch.float32 else ["dense"]

    def _from_results(self, bucket: int) -> str | None:
        path = gpu_results_path(self.weight.device) if self.weight.is_cuda else None
        if path is None:
            return None
        return self.plan_from_results(json.loads(path.read_text())["rows"], bucket)

    def plan_from_results(self, rows: list[dict], bucket: int) -> str:
        """The format the benchmark rows (``benchmarks/kernels.py`` columns) say is fastest for ``bucket``
        tokens: per candidate, the nearest row by token count, density and weight size; dense unless a
        format beats it by :data:`MARGIN`."""
        rows = [r for r in rows if r.get("dtype") == str(self.weight.dtype).replace("torch.", "") and r.get("ms")]
        best, best_speed = "dense", MARGIN
        candidates = [f for f in self._kept if f != "dense"] + (["2:4-torch"] if "2:4" in self._kept else [])
        for kernel in candidates:
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
            fn = (lambda f=fmt: self.run(xb, f)) if x.is_cuda else (lambda f=fmt: self._torch_run(xb, f))
            try:
                if x.is_cuda:
                    from triton.testing import do_bench
                    times[fmt] = do_bench(fn, warmup=5, rep=20, return_mode="median")
                else:
                    from labkit.utils import median_time
                    times[fmt] = median_time(fn, repeats=5, warmup=1) * 1e3
            except Exception as e:  # a path that cannot run here is simply not a candidate
                warnings.warn(f"SparseLinear: format {fmt} failed while measuring ({e!r}); skipped", stacklevel=2)
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
        y = self.run(x2, fmt) if self._triton_here(x2) else self._torch_run(x2, fmt)
        return y.reshape(*lead, self.out_features)


def _tied(model: nn.Module) -> set[int]:
    """ids of parameters reachable under more than one name (e.g. an LM head sharing the embedding)."""
    seen: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        seen[id(param)] = seen.get(id(param), 0) + 1
    return {pid for pid, count in seen.items() if count > 1}


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def sparsify(model: nn.Module, format: str = "auto", *, min_sparsity: float = 0.0,
             skip: tuple[str, ...] | list[str] = (), block: int | None = None,
             use_triton: bool | None = None) -> nn.Module:
    """Swap every pruned ``nn.Linear`` of ``model`` for a :class:`SparseLinear`, in place.

    A layer is swapped when its weight has zeros and a share of zeros of at least ``min_sparsity``.
    Left alone: dense layers, layers whose weight is tied to another module (an LM head sharing
    the embedding matrix: swapping it would untie them) and layers whose qualified name matches a
    pattern in ``skip`` (``fnmatch`` style: ``"lm_head"``, ``"*.attn.*"``). Each new layer keeps
    the old one's device, dtype and bias. ``format``, ``block`` and
    ``use_triton`` are passed to :class:`SparseLinear`; a forced format that does not fit a layer
    raises a ValueError naming the layer (skip it, or use ``"auto"``).

    Returns ``model`` (a new ``SparseLinear`` if ``model`` itself is an ``nn.Linear``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if format not in FORMATS + ("auto",):
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    if isinstance(min_sparsity, bool) or not isinstance(min_sparsity, (int, float)) or not 0 <= min_sparsity < 1:
        raise ValueError(f"min_sparsity must be a number in [0, 1) (the share of zeros a layer needs), "
                         f"got {min_sparsity!r}")
    if isinstance(skip, str) or not all(isinstance(pattern, str) for pattern in skip):
        raise TypeError(f"skip must be a tuple or list of layer-name patterns, e.g. ('lm_head',), got {skip!r}")
    from fnmatch import fnmatchcase

    tied = _tied(model)
    chosen = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or any(fnmatchcase(name, pattern) for pattern in skip):
            continue  # subclasses of nn.Linear (quantized, LoRA, ...) may compute differently: left alone
        if id(module.weight) in tied:
            continue
        w = module.weight.detach()
        zeros = (w == 0).float().mean().item() if w.numel() else 0.0
        if zeros > 0 and zeros >= min_sparsity:
            chosen.append((name, module))
    for name, module in chosen:
        try:
            new = SparseLinear.from_linear(module, format=format, block=block, use_triton=use_triton)
        except ValueError as e:
            raise ValueError(f"layer {name or '(the model)'!r}: {e}; pass skip=({name!r},) to leave it dense") from None
        new.train(module.training)
        if name == "":
            return new
        _swap(model, name, new)
    return model


def densify(model: nn.Module) -> nn.Module:
    """Swap every :class:`SparseLinear` of ``model`` back for an ``nn.Linear`` (dense weight, same zeros), in place.

    Returns ``model`` (a new ``nn.Linear`` if ``model`` itself is a ``SparseLinear``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in list(model.named_modules()):
        if not isinstance(module, SparseLinear):
            continue
        w = module.dense_weight()
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=w.device, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        linear.train(module.training)
        if name == "":
            return linear
        _swap(model, name, linear)
    return model


# ================================================================================================
# Byte and roofline arithmetic per format, and the GPU results the notebook shows
# ================================================================================================

from labkit import results  # noqa: E402

#: PyTorch's own sparse paths measured on an H200 (benchmarks/pytorch_baselines.py produced it).
PYTORCH_BASELINES = RESULTS_DIR / "pytorch_baselines_h200_2026-11-28.json"
#: Assumption of the roofline model: CUDA-core FMA throughput / tensor-core throughput on Hopper
#: (NVIDIA H100 SXM datasheet: 67 fp32 TFLOPS against 989 dense bf16 tensor-core TFLOPS). CSR runs
#: on CUDA cores; dense, BSR and the lab's 2:4 kernel run on tensor cores.
CUDA_CORE_RATIO = 67 / 989


def _check_density(density: float) -> float:
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1] (the share of weights kept; 0.1 = 90% sparse), got {density!r}")
    return float(density)


def format_bytes(fmt: str, n: int, k: int, density: float = 1.0, value_bytes: int = 2, index_bytes: int = 4,
                 block: int = 64) -> float:
    """Bytes to store an (n, k) weight in ``fmt`` at ``density``, indices and metadata included.

    Counted by :meth:`labkit.formats.Format.bytes` (see :mod:`labkit.formats` for each format's layout);
    defaults: bf16 values (2 bytes), int32 indices, 64 x 64 BSR tiles.
    """
    from labkit import formats  # the one home of byte counts

    return formats.get(fmt, "fmt").bytes((n, k), density, value_bytes, index_bytes, block)


def model_time(fmt: str, m: int, n: int, k: int, density: float, peak_tflops: float, bandwidth_tbs: float,
               value_bytes: int = 2, index_bytes: int = 4, block: int = 64) -> float:
    """Roofline-model seconds of ``x @ W.T`` (m tokens): the larger of compute time and memory time.

    FLOPs executed: dense ``2mnk``; BSR ``2mnk*d`` (tensor cores); the lab's 2:4 kernel ``2mnk``
    (Triton has no sparse tensor cores: it saves bytes, not FLOPs); CSR ``2mnk*d`` on CUDA cores
    (:data:`CUDA_CORE_RATIO` of the peak). Bytes: the weight in its format + x + y, each read once.
    """
    d = 0.5 if fmt == "2:4" else _check_density(density)
    flops = 2.0 * m * n * k * (1.0 if fmt in ("dense", "2:4") else d)
    peak = peak_tflops * 1e12 * (CUDA_CORE_RATIO if fmt == "csr" else 1.0)
    nbytes = format_bytes(fmt, n, k, d if fmt != "dense" else 1.0, value_bytes, index_bytes, block) \
        + (m * k + m * n) * value_bytes
    return max(flops / peak, nbytes / (bandwidth_tbs * 1e12))


def baseline_rows(path: Path | str = PYTORCH_BASELINES) -> list[dict]:
    """The rows of the committed PyTorch-baseline file, checked by :func:`labkit.results.read`."""
    return results.read(path, "pytorch_baselines")["rows"]


def _one(rows: list[dict], **fields) -> dict:
    """The one row whose fields equal ``fields`` (a missing or doubled row is an error, not a wrong number)."""
    sel = [r for r in rows if all(r.get(k) == v for k, v in fields.items())]
    if len(sel) != 1:
        raise ValueError(f"expected one baseline row with {fields}, found {len(sel)}")
    return sel[0]


def measured_roofs(path: Path = PYTORCH_BASELINES) -> dict:
    """Peak tensor-core TFLOP/s and memory TB/s of the H200, both *measured* with dense ``F.linear``.

    Peak: dense bf16 8192^3. Bandwidth: dense bf16 at 16 tokens moves the 8192x8192 weight (plus x
    and y) once; bytes / time is the bandwidth cuBLAS reached (a lower bound of the hardware's).
    """
    rows = baseline_rows(path)
    big = _one(rows, op="linear", M=8192, N=8192, K=8192)
    small = _one(rows, op="linear", M=16, N=8192, K=8192)
    moved = 8192 * 8192 * 2 + 2 * 16 * 8192 * 2
    return {"peak_tflops": big["tflops"], "bandwidth_tbs": round(moved / (small["ms"] * 1e-3) / 1e12, 2),
            "source": f"{Path(path).name}: dense bf16 F.linear at 8192 and 16 tokens"}


def model_speedups(m_values=(1, 16, 128, 1024, 8192), n: int = 8192, k: int = 8192, roofs: dict | None = None,
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


def roofline_figure(roofs: dict | None = None, m_values=(1, 16, 128, 1024, 8192), n: int = 8192, k: int = 8192):
    """Classic roofline: attainable TFLOP/s against FLOPs per byte, with each format at each token count."""
    import plotly.graph_objects as go

    from labkit.plots import rounded, style

    roofs = roofs or measured_roofs()
    peak, bw = roofs["peak_tflops"], roofs["bandwidth_tbs"]
    xs = [0.5 * 2**i for i in range(15)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rounded(xs, 2), y=rounded([min(peak, bw * x) for x in xs], 1), mode="lines",
                             name="tensor-core roof", line=dict(color="black")))
    fig.add_trace(go.Scatter(x=rounded(xs, 2), y=rounded([min(peak * CUDA_CORE_RATIO, bw * x) for x in xs], 1),
                             mode="lines", name="CUDA-core roof (CSR)", line=dict(color="grey", dash="dot")))
    for fmt, d in (("dense", 1.0), ("bsr", 0.1), ("2:4", 0.5), ("csr", 0.1)):
        ai, perf = [], []
        for m in m_values:
            flops = 2.0 * m * n * k * (1.0 if fmt in ("dense", "2:4") else d)
            nbytes = format_bytes(fmt, n, k, d) + 2 * (m * k + m * n)
            ai.append(flops / nbytes)
            perf.append(flops / model_time(fmt, m, n, k, d, peak, bw) / 1e12)
        fig.add_trace(go.Scatter(x=rounded(ai, 2), y=rounded(perf, 1), mode="markers+text", name=f"{fmt} d={d}",
                                 text=[f"M={m}" for m in m_values], textposition="top center"))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOPs executed per byte moved)")
    fig.update_yaxes(type="log", title="attainable TFLOP/s")
    return style(fig, f"Roofline of an 8192x8192 bf16 layer (roofs measured on an H200: {peak:g} TFLOP/s, "
                      f"{bw:g} TB/s)", height=460)


def lab_results_files(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Committed ``benchmarks/kernels.py`` results (full runs on a GPU), newest date first."""
    found = []
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("columns") and "rows" in data and not data.get("smoke"):
            found.append((data.get("date", ""), p))
    return [p for _, p in sorted(found, reverse=True)]


def lab_results_figure(result: dict, dtype: str = "bfloat16", n: int = 8192, k: int = 8192, block: int = 64):
    """Speed-up over dense against density from a ``benchmarks/kernels.py`` result: the lab's BSR
    kernel and PyTorch's ``bsr_dense_mm`` at the smallest and largest token counts, with the ideal 1/d."""
    import plotly.graph_objects as go

    from labkit.plots import rounded, style

    rows = [r for r in result["rows"] if r["kernel"] == "bsr" and r["dtype"] == dtype and r["N"] == n
            and r["K"] == k and r["block"] == block]
    if not rows:
        raise ValueError(f"no bsr rows for {n}x{k} {dtype} block {block} in this result")
    ms = sorted({r["M"] for r in rows})
    fig = go.Figure()
    dens = sorted({r["density"] for r in rows})
    fig.add_trace(go.Scatter(x=dens, y=rounded([1 / d for d in dens], 2), name="ideal 1/density",
                             mode="lines", line=dict(color="grey", dash="dot")))
    for m in sorted({ms[0], ms[-1]}):
        sel = sorted((r for r in rows if r["M"] == m), key=lambda r: r["density"])
        fig.add_trace(go.Scatter(x=[r["density"] for r in sel], y=rounded([r["speedup_vs_dense"] or 0 for r in sel], 3),
                                 name=f"lab bsr_linear, M={m}", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=[r["density"] for r in sel],
                                 y=rounded([r["dense_ms"] / r["baseline_ms"] if r["baseline_ms"] else 0 for r in sel], 3),
                                 name=f"torch bsr_dense_mm, M={m}", mode="lines+markers", line=dict(dash="dash")))
    fig.update_xaxes(type="log", title="density (share of blocks kept)")
    fig.update_yaxes(type="log", title="speed-up over dense F.linear")
    return style(fig, f"BSR on {result['gpu']} ({result['date']}), {n}x{k} {dtype}, {block}x{block} blocks")


def pytorch_baselines_figure(path: Path = PYTORCH_BASELINES):
    """PyTorch's own sparse paths on an H200 against dense: BSR (bsr_dense_mm), 2:4, cuSPARSE CSR."""
    import plotly.graph_objects as go

    from labkit.plots import rounded, style

    rows = baseline_rows(path)
    fig = go.Figure()
    dens = [0.5, 0.25, 0.1, 0.05, 0.01]
    fig.add_trace(go.Scatter(x=dens, y=rounded([1 / d for d in dens], 2), name="ideal 1/density", mode="lines",
                             line=dict(color="grey", dash="dot")))
    for m in (8192, 16):
        for bs in (64, 32):
            sel = [r for r in rows if r["section"] == "bsr" and r["op"] == "bsr_dense_mm" and r["M"] == m
                   and r["block"] == bs]
            d = [r["density"] for r in sel]
            fig.add_trace(go.Scatter(x=d, y=rounded([r["speedup_vs_dense"] for r in sel], 3), mode="lines+markers",
                                     name=f"BSR bsr_dense_mm {bs}x{bs}, M={m} (bf16)"))
    csr = [r for r in rows if r["section"] == "csr"]
    fig.add_trace(go.Scatter(x=[r["density"] for r in csr],
                             y=rounded([r["speedup_vs_dense"] for r in csr], 3), mode="lines+markers",
                             name="cuSPARSE CSR, M=4096 (fp32)"))
    s24 = [r for r in rows if r["section"] == "2:4" and r["op"] == "semi_structured_linear"]
    fig.add_trace(go.Scatter(x=[0.5] * len(s24), y=rounded([r["speedup_vs_dense"] for r in s24], 3), mode="markers+text",
                             text=[f"M={r['M']}" for r in s24], textposition="middle right",
                             name="2:4 cuSPARSELt (bf16)", marker=dict(size=10, symbol="diamond")))
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    fig.update_xaxes(type="log", title="density (share of weights kept)", autorange="reversed")
    fig.update_yaxes(type="log", title="speed-up over dense (above 1 = faster)")
    return style(fig, "PyTorch's own sparse paths on an NVIDIA H200 (2026-11-28)", height=460)


def pytorch_baselines_table(path: Path = PYTORCH_BASELINES) -> list[dict]:
    """The baseline rows with a speed-up over dense, as (case, ms, speed-up) for printing."""
    return [{"case": r["label"], "ms": r["ms"], "speedup_vs_dense": r["speedup_vs_dense"]}
            for r in baseline_rows(path) if "speedup_vs_dense" in r and r["section"] != "moe"]


def baseline_facts(path: Path = PYTORCH_BASELINES) -> list[str]:
    """Sentences with the key numbers of PyTorch's own sparse paths, read from the committed file."""
    rows = baseline_rows(path)
    out = []
    csr = [r for r in rows if r["section"] == "csr"]
    out.append("cuSPARSE CSR vs dense (fp32, 4096 tokens): " + ", ".join(
        f"density {r['density']:g}: {r['speedup_vs_dense']}x (ideal {r['ideal_speedup']}x)" for r in csr))
    for m in (8192, 16):
        r = _one(rows, section="bsr", op="bsr_dense_mm", M=m, block=64, density=0.1)
        out.append(f"torch bsr_dense_mm, 64x64 blocks, density 0.1, {m} tokens: {r['speedup_vs_dense']}x dense "
                   f"(ideal {r['ideal_speedup']}x)")
    for m in (8192, 64):
        r = _one(rows, op="semi_structured_linear", M=m, N=8192, K=8192)
        out.append(f"2:4 through to_sparse_semi_structured (cuSPARSELt), {m} tokens: {r['speedup_vs_dense']}x dense")
    return out


def live_gpu_rows(n: int = 4096, k: int = 4096, tokens=(16, 4096), densities=(0.5, 0.25, 0.1, 0.05), block: int = 64,
                  dtype: torch.dtype = torch.bfloat16, device: str = "cuda", timer=None) -> list[dict]:
    """Time dense ``F.linear``, the lab's ``bsr_linear`` and (on a GPU) torch's ``bsr_dense_mm`` here and now.

    Rows use the columns of ``benchmarks/kernels.py``. ``timer(fn) -> ms`` defaults to
    ``triton.testing.do_bench`` on a GPU and :func:`labkit.utils.median_time` elsewhere.
    """
    from labkit.kernels.patterns import block_sparse

    rt.check_block(block)
    if timer is None:
        if device == "cuda":
            from triton.testing import do_bench
            timer = lambda fn: do_bench(fn, warmup=10, rep=40, return_mode="median")  # noqa: E731
        else:
            from labkit.utils import median_time
            timer = lambda fn: median_time(fn, repeats=1, warmup=0) * 1e3  # noqa: E731
    rows = []
    gen = torch.Generator().manual_seed(0)
    for m in tokens:
        x = torch.randn(m, k, generator=gen).to(device, dtype)
        xt = x.t().contiguous()
        for d in densities:
            w = block_sparse(n, k, block, d, gen).to(device, dtype)
            wb = w.to_sparse_bsr((block, block))
            dense_ms = timer(lambda: F.linear(x, w))
            ms = timer(lambda: bsr_linear(x, wb))
            base = None
            if device == "cuda":
                from torch.sparse._triton_ops import bsr_dense_mm
                base = timer(lambda: bsr_dense_mm(wb, xt))
            rows.append(dict(kernel="bsr", M=m, N=n, K=k, dtype=str(dtype)[6:], density=d, block=block, ms=ms,
                             dense_ms=dense_ms, baseline="torch.sparse._triton_ops.bsr_dense_mm", baseline_ms=base,
                             speedup_vs_dense=dense_ms / ms, speedup_vs_baseline=base / ms if base else None))
    return rows


def gpu_curves() -> tuple[object, str]:
    """The notebook's GPU figure and a sentence saying where its numbers come from.

    Live measurements when a GPU is present; else the newest committed ``benchmarks/kernels.py``
    result; else PyTorch's own paths measured on an H200, saying the lab's kernels are not timed yet.
    """
    if torch.cuda.is_available() and not rt.interpreting():
        name = torch.cuda.get_device_name()
        rows = live_gpu_rows()
        import datetime as dt
        result = {"gpu": name, "date": dt.date.today().isoformat(), "rows": rows}
        return lab_results_figure(result, n=4096, k=4096), f"Measured live on this machine's {name}."
    files = lab_results_files()
    if files:
        result = json.loads(files[0].read_text())
        return (lab_results_figure(result),
                f"Measured by benchmarks/kernels.py on {result['gpu']} on {result['date']} "
                f"(file {files[0].name}; torch {result['torch']}, triton {result['triton']}).")
    return (pytorch_baselines_figure(),
            "No GPU here, and the lab's own kernels have not been timed on a GPU yet (no benchmarks/kernels.py "
            f"results file). Shown instead: PyTorch's own sparse paths, measured on an NVIDIA H200 on 2026-11-28 "
            f"by benchmarks/pytorch_baselines.py ({PYTORCH_BASELINES.name}).")


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
