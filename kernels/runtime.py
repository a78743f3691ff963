"""What every kernel file shares: whether a Triton launch is possible, autotune configs, input checks.

Kept in one place so the kernel files read like Triton's tutorials (idea, kernel, launcher,
reference) instead of repeating the same twenty lines of bookkeeping. Public: the kernels,
:mod:`labkit.sparse`, the benchmarks and the tests all use it.

"Can Triton run here?" is decided once, by :func:`labkit.backend.detect`; :func:`can_launch` asks
it for every call, so there is one answer for every kernel.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

from labkit import backend as _backend
from labkit import checks, formats

#: Whether ``import triton`` works here (actually tried: a shadowed or broken triton counts as missing).
#: Kernel files define their Triton kernels only when it does.
HAS_TRITON = _backend.triton_problem() is None

#: dtypes the kernels accept. bf16 is GPU-only in tests: the interpreter computes bf16 wrongly
#: unless a kernel casts it to fp32 after loading (which ours do, see ``_load_cast`` comments).
DTYPES = (torch.float16, torch.bfloat16, torch.float32)

#: Documented tolerances (relative to the output's scale) of kernel output against a float64
#: reference of the same, already-rounded inputs. fp32 on a GPU goes through TF32 tensor cores.
TOLERANCE = {torch.float32: 2e-2, torch.float16: 1e-2, torch.bfloat16: 3e-2}

#: dtypes tested on a CPU. bf16 runs on a GPU only: the interpreter's bf16 is not faithful.
CPU_DTYPES = (torch.float32, torch.float16)


def interpreting() -> bool:
    """True when triton simulates kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_backends: dict[tuple, _backend.Backend] = {}


def backend() -> _backend.Backend:
    """The kernel backend of this process (:func:`labkit.backend.detect`, remembered per setting).

    A setting ``detect`` refuses (e.g. triton imported before ``TRITON_INTERPRET=1`` was set, on a
    machine without a GPU) makes the kernels use their torch references, with one warning.
    """
    key = (os.environ.get("LABKIT_BACKEND"), interpreting(), HAS_TRITON)
    if key not in _backends:
        try:
            chosen = _backend.detect()
        except RuntimeError as e:
            chosen = _backend.Backend("torch", "cpu", str(e))
            warnings.warn(f"labkit kernels fall back to their torch references: {e}", stacklevel=2)
        _backends[key] = chosen
    return _backends[key]


def can_launch(where: torch.Tensor | torch.device | str) -> bool:
    """Whether a Triton kernel runs for tensors on ``where`` (a tensor or a device); else the torch reference.

    The one place every kernel asks. Compiled Triton needs CUDA tensors, the interpreter CPU
    tensors; no (working) triton or ``LABKIT_BACKEND=torch`` means the plain-torch references.
    """
    if not HAS_TRITON:
        return False
    device = where.device if isinstance(where, torch.Tensor) else torch.device(where)
    chosen = backend()
    return chosen.uses_triton and device.type == chosen.device


def kernel_device() -> str:
    """Where kernel inputs must live for the Triton path: ``"cuda"`` (compiled) or ``"cpu"`` (interpreter).

    Tests and benchmarks put their tensors here, so one test checks the compiled kernels on a GPU
    and the interpreter elsewhere.
    """
    return backend().device


def autotune_configs(gpu_configs: list, interpreter_config):
    """The GPU's search space, or the single config the interpreter can run.

    ``@triton.autotune`` with two or more configs needs a GPU driver to benchmark them; under the
    interpreter it fails, so there we hand it exactly one.
    """
    return [interpreter_config] if interpreting() else gpu_configs


def autotune_bench(kernel_call, quantiles):
    """Short timing for ``@triton.autotune`` (5 ms warm-up, 20 ms of repeats instead of 25 and 100):
    a benchmark grid tunes hundreds of cases, and the ranking of configs is stable at this length."""
    from triton.testing import do_bench

    return do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


# --------------------------------------------------------------------------------------------
# Loops over a row's nonzeros: `for` (pipelined) or `while` (always accepted)
# --------------------------------------------------------------------------------------------
# A sparse kernel's loop bound comes from memory (crow_indices). Written as `for p in tl.range(...)`
# the GPU compiler software-pipelines it: the loads of the next blocks are in flight while the
# current block's tl.dot runs, which is most of a kernel's speed. A `while` loop is never pipelined,
# but the lab's house rule asks for it because some Triton versions rejected data-dependent
# range() bounds. PyTorch's own BSR kernel uses range(row_nnz) with Triton 3.6 on an H200, and
# Triton 3.6's interpreter accepts it too, so on a GPU the kernels try `for` first and fall back
# to `while` (with a warning, once) if compiling it fails. The tests run both styles.
LOOP_STYLES = ("for", "while")
_loop = {"style": "while" if interpreting() else "for"}


def loop_style() -> str:
    """``"for"`` (software-pipelined) or ``"while"``: how kernels loop over a row's nonzeros now."""
    return _loop["style"]


def set_loop_style(style: str) -> None:
    """Force the loop style (tests run both; a failed ``for`` compile switches to ``while``)."""
    if style not in LOOP_STYLES:
        raise ValueError(f"style must be one of {LOOP_STYLES}, got {style!r}")
    _loop["style"] = style


def launch(fn) -> None:
    """Call ``fn(pipeline: bool)``; if the pipelined variant fails to compile on a GPU, retry with ``while``."""
    if _loop["style"] == "while":
        fn(False)
        return
    try:
        fn(True)
    except Exception as first:  # noqa: BLE001  (compile errors have several types across Triton versions)
        if interpreting():
            raise
        try:
            fn(False)
        except Exception:  # noqa: BLE001
            raise first from None  # not a loop-style problem: report the original error
        warnings.warn(f"the pipelined `for` loop failed here ({type(first).__name__}: {str(first)[:200]}); "
                      "using the `while` loop from now on (slower)", stacklevel=3)
        _loop["style"] = "while"


def split_k_output(x: torch.Tensor, m: int, n: int, split_k: int) -> tuple[torch.Tensor, int]:
    """The output buffer of a launch and its split stride.

    With split-K each of the ``split_k`` programs of an output tile writes its own fp32 partial sum
    (no atomics, so results are deterministic); the launcher adds them up afterwards. Without it
    the kernel writes ``x``'s dtype directly.
    """
    if split_k == 1:
        return torch.empty((m, n), device=x.device, dtype=x.dtype), 0
    out = torch.empty((split_k, m, n), device=x.device, dtype=torch.float32)
    return out, out.stride(0)


def reduce_split_k(out: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Finish a launch made with :func:`split_k_output`: add the partial sums (and then the bias).

    A 2-D ``out`` was written directly by the kernel (bias included) and is returned as it is.
    """
    if out.dim() == 2:
        return out
    y = out.sum(0)
    if bias is not None:
        y += bias.float()
    return y.to(dtype)


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors on ``device`` (132 on an H100/H200); a nominal 4 on the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


# --------------------------------------------------------------------------------------------
# Input checks: every launcher calls these first, so bad input is a clear error, not a segfault.
# --------------------------------------------------------------------------------------------

def check_activations(x: torch.Tensor, name: str = "x") -> None:
    """``x`` must be a contiguous 2-D floating tensor of a supported dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {x.layout}; call {name}.to_dense()")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (tokens, features), got shape {tuple(x.shape)}; "
                         f"flatten leading dimensions with {name}.reshape(-1, {name}.shape[-1])")
    if x.dtype not in DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; use one of float16, bfloat16, float32")
    if not x.is_contiguous():
        raise ValueError(f"{name} is not contiguous (strides {x.stride()}); call {name}.contiguous() first")


def check_same(x: torch.Tensor, other: torch.Tensor, what: str) -> None:
    """``other`` must share ``x``'s dtype and device."""
    if other.device != x.device:
        raise ValueError(f"{what} is on {other.device} but x is on {x.device}; move both to the same device")
    if other.dtype != x.dtype:
        raise TypeError(f"{what} has dtype {other.dtype} but x has {x.dtype}; cast one of them")


def check_bias(bias: torch.Tensor | None, x: torch.Tensor, n: int) -> None:
    """``bias`` is None or a contiguous vector of ``n`` values matching ``x``."""
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    check_same(x, bias, "bias")
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},) to match the weight's output features, got {tuple(bias.shape)}")
    if not bias.is_contiguous():
        raise ValueError("bias is not contiguous; call bias.contiguous() first")


INDEX_DTYPES = (torch.int32, torch.int64)


def check_split_k(split_k: int | None) -> int | None:
    """``None`` (the launcher chooses) or a positive int: the number of programs sharing one output tile."""
    return None if split_k is None else checks.positive_int("split_k", split_k)


def check_index(name: str, t: object, length: int | None = None) -> torch.Tensor:
    """A 1-D int32/int64 index tensor (of ``length`` entries, if given)."""
    checks.tensor(name, t, dim=1, dtypes=INDEX_DTYPES)
    assert isinstance(t, torch.Tensor)
    if length is not None and t.numel() != length:
        raise ValueError(f"{name} must hold {length} entries, got {t.numel()}")
    return t


def check_compressed_rows(crow: torch.Tensor, col: torch.Tensor, rows: int, cols: int, nnz: int,
                          what: str = "weight") -> None:
    """Validate compressed-row indices (CSR; BSR counts blocks): what every kernel reads before it loads.

    ``crow`` has ``rows + 1`` entries, starts at 0, never decreases and ends at ``nnz``;
    ``col`` has ``nnz`` entries, each in ``[0, cols)``. A kernel trusting bad indices reads outside
    its arrays (a crash), loops for ever, or returns garbage: so they are checked on the host first.
    """
    check_index(f"{what}.crow_indices()", crow, rows + 1)
    check_index(f"{what}.col_indices()", col, nnz)
    c = crow.long()
    if int(c[0]) != 0:
        raise ValueError(f"{what}.crow_indices() must start at 0, got {int(c[0])}")
    if rows and bool((c[1:] < c[:-1]).any()):
        bad = int((c[1:] < c[:-1]).nonzero()[0, 0])
        raise ValueError(f"{what}.crow_indices() must never decrease, but row {bad} ends before it starts "
                         f"({int(c[bad])} > {int(c[bad + 1])}); rebuild the weight with .to_sparse_csr() "
                         "or .to_sparse_bsr()")
    if int(c[-1]) != nnz:
        raise ValueError(f"{what}.crow_indices()[-1] must equal the number of stored values ({nnz}), "
                         f"got {int(c[-1])}")
    if nnz and (int(col.min()) < 0 or int(col.max()) >= cols):
        raise ValueError(f"{what}.col_indices() must lie in [0, {cols}), got values from {int(col.min())} "
                         f"to {int(col.max())}")


def check_permutation(name: str, order: object, n: int) -> torch.Tensor:
    """An int32 tensor holding each of ``0 .. n-1`` exactly once (a launch order of rows)."""
    checks.tensor(name, order, dim=1, dtypes=torch.int32)
    assert isinstance(order, torch.Tensor)
    if order.numel() != n:
        raise ValueError(f"{name} must hold {n} row ids (one per output row), got {order.numel()}")
    if n and not torch.equal(order.long().sort().values, torch.arange(n, device=order.device)):
        low, high = int(order.min()), int(order.max())
        why = (f"ids from {low} to {high} are outside [0, {n})" if low < 0 or high >= n
               else "some row appears twice and another never")
        raise ValueError(f"{name} must be a permutation of 0..{n - 1} ({why}); build it with launch_order()")
    return order


def check_block(block: int, name: str = "block") -> int:
    """A block edge the GPU compiler accepts: a power of two >= 16 (the rule lives in labkit.formats)."""
    return formats.check_block(block, name)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| divided by max |ref| (0 when both are zero): the tolerance measure above."""
    diff = (out.double() - ref.double()).abs().max().item() if out.numel() else 0.0
    scale = ref.double().abs().max().item() if ref.numel() else 0.0
    return diff / scale if scale > 0 else diff


def reference(x: torch.Tensor, w_dense: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + b`` in float64 from the same (already rounded) inputs: what kernels are compared to."""
    y = x.double() @ w_dense.double().T
    return y if bias is None else y + bias.double()


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Shape, dtype, and relative error within the documented :data:`TOLERANCE` for ``dtype``."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == dtype, (out.dtype, dtype)
    err = rel_error(out, ref)
    assert err <= TOLERANCE[dtype], f"relative error {err:.2e} above {TOLERANCE[dtype]:.0e} for {dtype}"


def torch_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` as the torch references and CPU paths run it: fp16/bf16 on a CPU computed in fp32
    (CPU half-precision matmul is slow or missing on some builds), rounded back to ``x``'s dtype."""
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        return F.linear(x.float(), w.float(), None if bias is None else bias.float()).to(x.dtype)
    return F.linear(x, w, bias)
