"""SparseLinear: a drop-in ``nn.Linear`` that stores a pruned weight sparsely and runs the fastest path.

A pruned weight is only *faster* if a kernel skips its zeros, and which kernel wins depends on the
pattern (blocks, 2:4, scattered), the device and above all the number of tokens: with 1-16 tokens
a layer is memory-bound and every saved byte counts; with thousands it is compute-bound and only
skipped tensor-core FLOPs count. So ``SparseLinear`` keeps the formats the weight allows and picks
one *per token count* from measurements:

* ``format="auto"`` (default): for each token-count bucket (1, 16, 128, 1024, 8192 tokens) it uses

  1. the committed benchmark results for this GPU (``benchmarks/results/<gpu-name>.json``, written
     by ``benchmarks/kernels.py``, read and checked through ``labkit.results``) when the file exists
     and covers this dtype; otherwise
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

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labkit.formats import FORMATS as FORMAT_REGISTRY  # noqa: E402 - each format's kernel constraints
from labkit.formats import KERNEL_FORMATS as FORMATS  # noqa: E402 - the formats with a lab kernel
from labkit.kernels import runtime as rt
from labkit.kernels.bsr_linear import check_bsr_weight
from labkit.kernels.csr_linear import check_csr_weight
from labkit.kernels.semi24 import check_meta, kept_positions, pack_24, unpack_24

#: Token counts "auto" plans for; a call uses the bucket nearest its token count (in log scale).
BUCKETS = (1, 16, 128, 1024, 8192)
#: A sparse path must be this much faster than dense (ratio) to be chosen.
MARGIN = 1.05
#: "auto" keeps (and times) CSR only at or below this density: CSR moves 3x the bytes of dense per
#: kept weight and runs without tensor cores, so above it CSR cannot win (kernels/csr_linear.py).
CSR_MAX_DENSITY = 0.1
from labkit import results  # noqa: E402
from labkit.results import RESULTS_DIR  # noqa: E402


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
    """``y = x @ W.T + b`` with a sparse ``W`` stored dense, BSR, 2:4 and/or CSR; trainable.

    Build it with :meth:`from_linear` from a pruned ``nn.Linear`` (masks already applied or made
    permanent), or with :func:`sparsify` for a whole model. ``plan`` shows which format each
    token-count bucket uses once decided.

    What is stored, and what trains (the parameters keep the source weight's ``requires_grad``):

    * ``format="bsr" | "2:4" | "csr"``: only that format. Its kept values are the parameter
      (``bsr_values``, ``s24_values`` or ``csr_values``), the index arrays are buffers. Gradients
      reach the input (the transposed sparse product) and the kept values (a dense-dense product
      sampled at the kept positions); zeros inside a stored block or 2:4 group get no gradient, so
      every zero stays zero after an optimizer step.
    * ``format="dense"``: the dense ``weight`` parameter, its zeros kept at zero the same way.
    * ``format="auto"``: the dense ``weight`` parameter plus packed copies (buffers) for the
      kernels. Every call runs the planned kernel; when the weight needs a gradient, the kernel's
      values are gathered from the weight (differentiably) instead of the copies, and the copies
      are re-packed after the weight changed (an optimizer step).

    Inputs: ``(..., in_features)`` of the layer's dtype (fp16, bf16, fp32; float64 runs the torch
    paths only, e.g. for ``torch.autograd.gradcheck``).
    """

    #: the mask buffer of each parameter that can hold stored zeros (kept positions: 1)
    _KEEP = {"weight": "weight_keep", "bsr_values": "bsr_keep", "s24_values": "s24_keep"}
    # parameters and buffers (which of them exist depends on the format; see _pack)
    weight: torch.Tensor
    weight_keep: torch.Tensor
    bsr_crow: torch.Tensor
    bsr_col: torch.Tensor
    bsr_values: torch.Tensor
    bsr_keep: torch.Tensor
    s24_values: torch.Tensor
    s24_meta: torch.Tensor
    s24_keep: torch.Tensor
    csr_crow: torch.Tensor
    csr_col: torch.Tensor
    csr_values: torch.Tensor
    csr_order: torch.Tensor
    _torch24: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, format: str = "auto",
                 block: int | None = None, use_triton: bool | None = None):
        super().__init__()
        if use_triton is not None and not isinstance(use_triton, bool):
            raise TypeError(f"use_triton must be None (Triton on a GPU, PyTorch on a CPU), True or False, "
                            f"got {use_triton!r}")
        self.use_triton = use_triton
        if not isinstance(weight, torch.Tensor) or weight.layout != torch.strided or weight.dim() != 2:
            raise TypeError("weight must be a dense 2-D torch.Tensor (out_features, in_features)")
        if weight.dtype not in rt.DTYPES + (torch.float64,):
            raise TypeError(f"weight has dtype {weight.dtype}; use float16, bfloat16 or float32 (float64: torch paths)")
        if format not in FORMATS + ("auto",):
            raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
        if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
            raise ValueError(f"bias must be None or a tensor of shape ({weight.shape[0]},)")
        trainable = weight.requires_grad
        w = weight.detach().contiguous()
        self.out_features, self.in_features = w.shape
        self.format = format
        self.density = (w != 0).float().mean().item() if w.numel() else 0.0
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach().to(w.dtype).clone(), requires_grad=bias.requires_grad)

        if block is not None:
            rt.check_block(block)
        elif format in ("bsr", "auto"):
            block = detect_block(w) or (16 if format == "bsr" else None)
        self.block = block
        self.available = ["dense", "csr"]  # CSR is dropped below for "auto" above CSR_MAX_DENSITY
        if block is not None:
            self.available.append("bsr")
        if FORMAT_REGISTRY["2:4"].fits(w):  # 2:4 pattern and in_features % 8 == 0 (labkit.formats)
            self.available.append("2:4")
        if format != "auto" and format not in self.available:
            why = FORMAT_REGISTRY["2:4"].why_not(w)
            raise ValueError(f"format={format!r} does not fit this weight: {why}; use 'auto' or another format")
        if format == "auto" and self.density > CSR_MAX_DENSITY:
            self.available.remove("csr")  # hopeless above this density (see kernels/csr_linear.py): not kept
        self._kept = list(self.available) if format == "auto" else [format]
        if format in ("auto", "dense"):
            self.weight = nn.Parameter(w.clone(), requires_grad=trainable)
            self.register_buffer("weight_keep", w != 0)
        self._pack(w, trainable=trainable and format != "auto")
        self.plan: dict[int, str] = {} if format == "auto" else {b: format for b in BUCKETS}
        self.timings: dict[int, dict[str, float]] = {}

    def _pack(self, w: torch.Tensor, trainable: bool = False) -> None:
        """Store ``w`` in every kept sparse format; check the index arrays once.

        ``trainable``: the values become parameters (an explicit format); else buffers (copies of
        "auto"'s dense weight, re-packed when it changes).
        """
        def values(name: str, t: torch.Tensor) -> None:
            t = t.contiguous()
            if trainable:
                setattr(self, name, nn.Parameter(t, requires_grad=True))
            else:
                self.register_buffer(name, t)

        if "bsr" in self._kept:
            block = self.block
            assert block is not None  # "bsr" is kept only with a block size
            n_pad, k_pad = (math.ceil(d / block) * block for d in w.shape)
            bsr = F.pad(w, (0, k_pad - w.shape[1], 0, n_pad - w.shape[0])).to_sparse_bsr((block, block))
            self.register_buffer("bsr_crow", bsr.crow_indices())
            self.register_buffer("bsr_col", bsr.col_indices())
            values("bsr_values", bsr.values())
            self.register_buffer("bsr_keep", bsr.values() != 0)
            self._bsr_shape = (n_pad, k_pad)
        if "2:4" in self._kept:
            packed, meta = pack_24(w)
            values("s24_values", packed)
            self.register_buffer("s24_meta", meta)
            self.register_buffer("s24_keep", packed != 0)
        if "csr" in self._kept:
            csr = w.to_sparse_csr()  # stores the nonzeros only: no mask needed
            self.register_buffer("csr_crow", csr.crow_indices())
            self.register_buffer("csr_col", csr.col_indices())
            values("csr_values", csr.values())
            self.register_buffer("csr_order", torch.arange(self.out_features, dtype=torch.int32, device=w.device))
        self._torch24 = None
        self._positions: dict[str, torch.Tensor] = {}  # see _dense_positions
        self._packed_version = self.weight._version if self.format == "auto" else None
        self._checked: tuple = ()  # which index arrays were validated (see _check_indices)
        self._check_indices()

    @classmethod
    def from_linear(cls, linear: nn.Linear, format: str = "auto", block: int | None = None,
                    use_triton: bool | None = None) -> SparseLinear:
        """Build from a pruned ``nn.Linear`` (its current weight, masks from torch.nn.utils.prune applied)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, format=format, block=block, use_triton=use_triton)

    def extra_repr(self) -> str:
        flag = "" if self.use_triton is None else f", use_triton={self.use_triton}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, density={self.density:.3f}, "
                f"format={self.format!r}, block={self.block}, formats={self._kept}{flag}")

    def _values(self) -> torch.Tensor:
        """The tensor that holds the layer's weight values (its dtype and device are the layer's)."""
        name = {"bsr": "bsr_values", "2:4": "s24_values", "csr": "csr_values"}.get(self.format, "weight")
        return getattr(self, name)

    @property
    def dtype(self) -> torch.dtype:
        return self._values().dtype

    def dense_weight(self) -> torch.Tensor:
        """The (out_features, in_features) weight as a dense tensor (a detached copy), zeros included."""
        with torch.no_grad():
            if self.format in ("auto", "dense"):
                return (self.weight * self.weight_keep).detach().clone()
            if self.format == "bsr":
                return self._bsr().to_dense()[: self.out_features, : self.in_features].clone()
            if self.format == "2:4":
                return unpack_24(self.s24_values.detach(), self.s24_meta, validate=False)
            return self._csr().to_dense()

    # -- the sparse tensors, rebuilt as views of the stored arrays (so .to(device) moves them) --
    def _bsr(self) -> torch.Tensor:
        return torch.sparse_bsr_tensor(self.bsr_crow, self.bsr_col, self.bsr_values.detach(), self._bsr_shape,
                                       check_invariants=False)  # checked by _check_indices

    def _csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.csr_crow, self.csr_col, self.csr_values.detach(),
                                       (self.out_features, self.in_features), check_invariants=False)

    def _index_arrays(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in ("bsr_crow", "bsr_col", "s24_meta", "csr_crow", "csr_col", "csr_order")
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
            rt.check_permutation("csr_order", self.csr_order, self.out_features)
        self._checked = key

    def _fresh(self) -> None:
        """Before a call: re-pack "auto"'s copies if its weight changed, and check new index arrays."""
        if self.format == "auto" and self.weight._version != self._packed_version:
            with torch.no_grad():
                self._pack(self.weight * self.weight_keep)
        self._check_indices()

    def _weight_grad_needed(self) -> bool:
        return torch.is_grad_enabled() and self.format == "auto" and self.weight.requires_grad

    def _dense_positions(self, name: str) -> torch.Tensor:
        """Flat index into the (padded, for BSR) dense weight of every value in packed array ``name``."""
        if name not in self._positions:
            n, k = self.out_features, self.in_features
            dev = self.weight.device
            if name == "bsr_values":
                bs, (_, k_pad) = self.block, self._bsr_shape
                assert bs is not None
                n_rows = self.bsr_crow.numel() - 1
                rows = torch.repeat_interleave(torch.arange(n_rows, device=dev), self.bsr_crow.diff())
                r = rows[:, None, None] * bs + torch.arange(bs, device=dev)[None, :, None]
                c = self.bsr_col[:, None, None] * bs + torch.arange(bs, device=dev)[None, None, :]
                pos = r * k_pad + c
            elif name == "csr_values":
                rows = torch.repeat_interleave(torch.arange(n, device=dev), self.csr_crow.diff())
                pos = rows * k + self.csr_col
            else:
                pos = torch.arange(n, device=dev)[:, None] * k + kept_positions(self.s24_meta)
            self._positions[name] = pos
        return self._positions[name]

    def _kept_values(self, name: str) -> torch.Tensor:
        """The values to hand a kernel: array ``name``, made differentiable where a gradient will flow.

        * An explicit format's parameter is multiplied by its keep-mask: the product's gradient is
          zero at every stored zero, so optimizer steps keep zeros at zero.
        * "auto"'s packed copies are buffers; when its dense weight needs a gradient they are
          gathered from the (masked) weight instead, so the same kernel runs and the gradient flows
          back to the weight's kept positions.

        Without grad mode (inference) nothing extra runs and nothing is paid.
        """
        t = getattr(self, name)
        if not torch.is_grad_enabled():
            return t
        if self.format == "auto" and name != "weight":
            if not self._weight_grad_needed():
                return t
            w = self.weight * self.weight_keep
            if name == "bsr_values":
                n_pad, k_pad = self._bsr_shape
                w = F.pad(w, (0, k_pad - w.shape[1], 0, n_pad - w.shape[0]))
            return w.reshape(-1)[self._dense_positions(name)].reshape(t.shape)
        if isinstance(t, nn.Parameter) and t.requires_grad and name in self._KEEP:
            return t * getattr(self, self._KEEP[name])
        return t

    def run(self, x: torch.Tensor, fmt: str, use_triton: bool = True) -> torch.Tensor:
        """Apply the layer to contiguous 2-D ``x`` with one named format (what ``forward`` dispatches to).

        ``use_triton``: the lab's Triton kernel where it can launch (else its torch reference); False
        runs PyTorch's own path (the dense product, or ``torch.sparse.mm`` for "csr").
        """
        if fmt not in self._kept and fmt != "2:4-torch":
            raise ValueError(f"format {fmt!r} is not stored by this layer; stored: {self._kept}")
        self._fresh()
        if fmt == "dense":
            return F.linear(x, self._kept_values("weight"), self.bias)
        # the operators take the checked arrays directly (no per-call checks): see kernels/*.py
        if fmt == "bsr":
            return torch.ops.labkit.bsr_linear(x, self.bsr_crow, self.bsr_col, self._kept_values("bsr_values"),
                                               self.bias, self.out_features, 0, use_triton)
        if fmt == "2:4":
            return torch.ops.labkit.semi24_linear(x, self._kept_values("s24_values"), self.s24_meta, self.bias, 0,
                                                  use_triton)
        if fmt == "2:4-torch" and self._weight_grad_needed():
            return F.linear(x, self._kept_values("weight"), self.bias)  # torch's 2:4 tensor has no weight gradient
        if fmt == "2:4-torch":  # cuSPARSELt / CUTLASS through torch: sparse tensor cores
            if self._torch24 is None:
                from torch.sparse import to_sparse_semi_structured
                self._torch24 = to_sparse_semi_structured(self.weight.detach() * self.weight_keep)
            return F.linear(x, self._torch24, self.bias)
        return torch.ops.labkit.csr_linear(x, self.csr_crow, self.csr_col, self._kept_values("csr_values"),
                                           self.csr_order, self.bias, use_triton)

    def _torch_run(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        """PyTorch's own paths (what a CPU uses): torch's CSR product for "csr", else the dense product.

        torch's CPU CSR product (MKL) has no fp16/bf16: it computes those in fp32 and rounds back.
        """
        return self.run(x, fmt, use_triton=False)

    def _triton_here(self, x: torch.Tensor) -> bool:
        """Whether this call runs the lab's Triton kernels (GPU) or PyTorch's paths (CPU, or asked for)."""
        if x.dtype == torch.float64:
            return False  # no Triton kernel takes float64
        if self.use_triton is None:
            return x.is_cuda
        return self.use_triton

    # -- choosing ---------------------------------------------------------------------------------
    def candidates(self, device: torch.device) -> list[str]:
        """Formats "auto" may pick on ``device``."""
        if device.type == "cuda" and rt.can_launch(device):  # compiled Triton on this GPU
            extra = ["2:4-torch"] if "2:4" in self._kept and self.dtype != torch.float32 else []
            return list(self._kept) + extra
        # on a CPU only dense and torch's CSR (fp32 only: its MKL path has no fp16) are worth timing
        return ["dense", "csr"] if "csr" in self._kept and self.dtype == torch.float32 else ["dense"]

    def _from_results(self, bucket: int) -> str | None:
        values = self._values()
        path = gpu_results_path(values.device) if values.is_cuda else None
        if path is None:
            return None
        return self.plan_from_file(path, bucket)

    def plan_from_file(self, path: Path | str, bucket: int) -> str:
        """:meth:`plan_from_results` for the rows of a ``benchmarks/kernels.py`` results file, read (and
        checked) through :mod:`labkit.results`: a damaged file raises an error naming it, never a wrong plan."""
        return self.plan_from_results(results.read(path, "kernels")["rows"], bucket)

    def plan_from_results(self, rows: list[dict], bucket: int) -> str:
        """The format the benchmark rows (``benchmarks/kernels.py`` columns) say is fastest for ``bucket``
        tokens: per candidate, the nearest row by token count, density and weight size; dense unless a
        format beats it by :data:`MARGIN`."""
        rows = [r for r in rows if r.get("dtype") == str(self.dtype).replace("torch.", "") and r.get("ms")]
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

    @torch.no_grad()
    def _measure(self, x: torch.Tensor, bucket: int) -> str:
        xb = torch.randn(bucket, self.in_features, device=x.device, dtype=x.dtype)
        times = {}
        for fmt in self.candidates(x.device):
            fn = (lambda f=fmt: self.run(xb, f)) if x.is_cuda else (lambda f=fmt: self._torch_run(xb, f))
            try:
                from labkit.utils import time_ms  # do_bench on a GPU, wall-clock median elsewhere
                times[fmt] = time_ms(fn, cuda=x.is_cuda, repeats=5, warmup=1)
            except Exception as e:  # a path that cannot run here is simply not a candidate
                warnings.warn(f"SparseLinear: format {fmt} failed while measuring ({e!r}); skipped", stacklevel=2)
        self.timings[bucket] = times
        best = min(times, key=lambda f: times[f])
        return best if times[best] * MARGIN < times["dense"] else "dense"

    def choose(self, m: int, x: torch.Tensor | None = None) -> str:
        """The format used for ``m`` tokens (deciding, and measuring if needed, the first time)."""
        bucket = bucket_for(m)
        if bucket not in self.plan:
            x = x if x is not None else self._values()
            self.plan[bucket] = self._from_results(bucket) or self._measure(x, bucket)
        return self.plan[bucket]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x has shape {tuple(x.shape)} but this layer expects (..., {self.in_features})")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weight is {self.dtype}; cast one of them")
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
    the old one's device, dtype, bias and ``requires_grad``. ``format``, ``block`` and
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
    if use_triton is not None and not isinstance(use_triton, bool):
        raise TypeError(f"use_triton must be None, True or False, got {use_triton!r}")
    if block is not None:
        rt.check_block(block)
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
                linear.bias.requires_grad_(module.bias.requires_grad)
        linear.weight.requires_grad_(module._values().requires_grad)
        linear.train(module.training)
        if name == "":
            return linear
        _swap(model, name, linear)
    return model
