"""
Fused Mixture-of-Experts in Triton
==================================

An MoE feed-forward layer sends each of ``T`` tokens to ``top_k`` of ``E`` experts, each a SwiGLU
``w2 @ (silu(w1 @ x) * (w3 @ x))``. The *naive* implementation loops over experts in Python:
gather the expert's tokens, run three small GEMMs, scatter-add the result. That is ``3 E`` kernel
launches of uneven, often tiny GEMMs, plus a gather and a scatter per expert.

This file does the same work in **two launches**, the way vLLM's ``fused_moe`` and MegaBlocks do:

1. **Align** (:func:`moe_align`, plain torch). Flatten the ``T * top_k`` (token, choice) *slots*,
   sort them by expert, and pad each expert's group up to a multiple of ``BLOCK_M`` rows. The result
   is ``sorted_slots`` (slot id per padded row; padding rows hold the id ``T * top_k``, which every
   load masks out) and ``block_expert`` (which expert each block of ``BLOCK_M`` rows belongs to;
   ``-1`` for blocks past the end). Example, ``E=3``, ``BLOCK_M=4``, expert choices per slot
   ``[2, 0, 2, 2, 0]``: rows ``[1, 4, P, P | 0, 2, 3, P]`` with ``P=5``, and ``block_expert = [0, 2]``
   (expert 1 got no tokens and therefore no block).
2. **Up-projection, one launch for all experts** (:func:`moe_up`). Program ``(m, n)`` reads
   ``e = block_expert[m]``, gathers its ``BLOCK_M`` token rows of ``x`` straight from memory
   (no permuted copy of ``x`` is ever made), multiplies them by ``w1[e]`` and ``w3[e]`` and stores
   ``silu(x w1^T) * (x w3^T)`` into a padded buffer ``h``. This is a *grouped GEMM*: one grid covers
   every expert's GEMM, and the block-to-expert map says which weights each tile uses. Tiles are
   launched in groups of ``GROUP_M`` row blocks (as in Triton's matmul tutorial) so that a weight
   tile is fetched from memory once and served from L2 to the row blocks that need it.
3. **Down-projection and gate** (:func:`moe_down`). The same grouped GEMM with ``w2``; the epilogue
   multiplies each row by its gate weight and stores it at its slot.
4. **Combine** (:func:`moe_combine`): a token's output is the sum of its ``top_k`` slots. No atomics,
   so the result is deterministic.

Cost model. The FLOPs are ``2 * 3 * T * top_k * d_model * d_ff``: exactly a dense SwiGLU over
``T * top_k`` rows, so the dense FFN with the same active FLOPs is the roof. The padding adds up to
``E * (BLOCK_M - 1)`` wasted rows (:func:`padding_waste`): large when tokens are few (decoding) and
negligible when every expert has hundreds of rows.

Under ``TRITON_INTERPRET=1`` (no GPU) the same kernels run on numpy, slowly: keep shapes tiny.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from labkit import checks
from labkit.kernels import runtime as rt

if rt.HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["moe_align", "moe_up", "moe_down", "moe_combine", "fused_moe", "moe_reference", "padding_waste",
           "choose_block_m", "check_moe_inputs", "check_grouped_inputs", "moe_up_reference", "moe_down_reference"]


def _is_pow2(n: int) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


# ----------------------------------------------------------------------------------------------
# 1. Align: sort slots by expert and pad each expert's group to a multiple of BLOCK_M
# ----------------------------------------------------------------------------------------------
def moe_align(experts: torch.Tensor, n_experts: int, block_m: int,
              check_ids: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the ``T * top_k`` slots by expert and pad every expert's group to a ``block_m`` multiple.

    Returns ``(sorted_slots, block_expert, n_padded)``: ``sorted_slots[r]`` is the slot computed by
    padded row ``r`` (``T * top_k`` marks padding), ``block_expert[b]`` the expert of row block
    ``b`` (``-1`` past the end) and ``n_padded`` (a 0-d tensor) the rows in use. Sizes are upper
    bounds known without reading the data, so nothing waits for the GPU (except ``check_ids``,
    which checks every id is in ``[0, n_experts)``: one sync; pass False for ids already checked).
    """
    if not isinstance(experts, torch.Tensor) or experts.ndim != 2 or experts.dtype not in (torch.int32, torch.int64):
        raise ValueError("experts must be an int32/int64 tensor of shape (tokens, top_k)")
    n_experts = checks.positive_int("n_experts", n_experts)
    if not _is_pow2(block_m) or block_m < 16:
        raise ValueError(f"block_m must be a power of two >= 16 (tl.dot needs 16 rows), got {block_m!r}")
    if check_ids and experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= n_experts):
        raise ValueError(f"experts must lie in [0, {n_experts}), got ids from {int(experts.min())} to "
                         f"{int(experts.max())}")
    flat = experts.reshape(-1).long()
    n_slots = flat.numel()
    dev = flat.device
    # index_add_ rather than bincount: CUDA's bincount reads the max back to the host (a sync).
    counts = torch.zeros(n_experts, dtype=torch.long, device=dev).index_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = padded.cumsum(0)
    padded_start = padded_end - padded
    order = torch.argsort(flat, stable=True)  # slots grouped by expert, in token order inside a group
    sorted_expert = flat[order]
    first_of_expert = counts.cumsum(0) - counts
    rank = torch.arange(n_slots, device=dev) - first_of_expert[sorted_expert]
    max_blocks = (n_slots + n_experts * (block_m - 1) + block_m - 1) // block_m
    sorted_slots = torch.full((max_blocks * block_m,), n_slots, dtype=torch.int32, device=dev)
    sorted_slots[padded_start[sorted_expert] + rank] = order.to(torch.int32)
    block_start = torch.arange(max_blocks, device=dev) * block_m
    block_expert = torch.searchsorted(padded_end, block_start, right=True).to(torch.int32)
    n_padded = padded_end[-1]
    block_expert = torch.where(block_start < n_padded, block_expert, torch.full_like(block_expert, -1))
    return sorted_slots, block_expert, n_padded


def padding_waste(experts: torch.Tensor, n_experts: int, block_m: int) -> float:
    """Share of computed rows that are padding: ``(padded - T * top_k) / padded`` (0.0 for no slots)."""
    checks.tensor("experts", experts, dtypes=(torch.int32, torch.int64))
    n_experts = checks.positive_int("n_experts", n_experts)
    block_m = checks.positive_int("block_m", block_m)
    if experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= n_experts):
        raise ValueError(f"experts must lie in [0, {n_experts}), got ids from {int(experts.min())} to "
                         f"{int(experts.max())}")
    counts = torch.bincount(experts.reshape(-1).long(), minlength=n_experts)
    padded = int(((counts + block_m - 1) // block_m * block_m).sum())
    return (padded - experts.numel()) / padded if padded else 0.0


def choose_block_m(n_slots: int, n_experts: int) -> int:
    """Rows per block: small when experts get few tokens (less padding), 128 when they get many."""
    checks.nonneg_int("n_slots", n_slots)
    checks.positive_int("n_experts", n_experts)
    avg = max(1, n_slots // max(1, n_experts))
    return 16 if avg <= 16 else 32 if avg <= 32 else 64 if avg <= 128 else 128


# ----------------------------------------------------------------------------------------------
# 2. and 3. The grouped GEMM kernels
# ----------------------------------------------------------------------------------------------
def _configs():
    """One config under the interpreter (autotuning needs a GPU); a few to choose from on a GPU."""
    if rt.interpreting():
        return [triton.Config({"BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 16}, num_warps=8, num_stages=2),
    ]


if rt.HAS_TRITON:

    @triton.jit
    def _tile_ids(num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
        """Grouped launch order (Triton's matmul tutorial): GROUP_M row blocks sweep the column tiles together.

        Programs running at the same time then share a few row blocks of tokens *and* the same weight
        tiles, so both stay in L2, instead of every weight tile being re-read from memory once per
        row block.
        """
        pid = tl.program_id(0)
        per_group = GROUP_M * num_pid_n
        first_m = (pid // per_group) * GROUP_M
        group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % group_m
        pid_n = (pid % per_group) // group_m
        return pid_m, pid_n

    @triton.autotune(configs=_configs(), key=["D", "FF", "BLOCK_M"])
    @triton.jit
    def _moe_up_kernel(x_ptr, w1_ptr, w3_ptr, h_ptr, sorted_slots_ptr, block_expert_ptr,
                       n_slots, D, FF, num_blocks, E,
                       stride_xt, stride_xd, stride_we, stride_wf, stride_wd, stride_hr, stride_hf,
                       TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, UPCAST: tl.constexpr):
        """h[row] = silu(x[token] @ w1[e]^T) * (x[token] @ w3[e]^T) for one (BLOCK_M, BLOCK_N) tile."""
        pid_m, pid_n = _tile_ids(num_blocks, tl.cdiv(FF, BLOCK_N), GROUP_M)
        # (the launcher checked the index arrays; the masks keep even bad ones inside the arrays)
        expert = tl.load(block_expert_ptr + pid_m, mask=pid_m < num_blocks, other=-1)
        if (expert >= 0) & (expert < E):  # blocks past the last expert's padding do nothing
            rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots = tl.load(sorted_slots_ptr + rows, mask=rows < num_blocks * BLOCK_M, other=n_slots)
            valid = (slots < n_slots) & (slots >= 0)
            tokens = slots // TOP_K  # slot = token * top_k + choice
            cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < FF
            w_base = expert.to(tl.int64) * stride_we
            acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            acc3 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, D, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_ok = ks < D
                a = tl.load(x_ptr + tokens[:, None].to(tl.int64) * stride_xt + ks[None, :] * stride_xd,
                            mask=valid[:, None] & k_ok[None, :], other=0.0)
                w_off = w_base + cols[None, :] * stride_wf + ks[:, None] * stride_wd  # (BLOCK_K, BLOCK_N) = w^T
                b1 = tl.load(w1_ptr + w_off, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                b3 = tl.load(w3_ptr + w_off, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                if UPCAST:  # the interpreter's bf16 dot is wrong: compute in fp32 there
                    a, b1, b3 = a.to(tl.float32), b1.to(tl.float32), b3.to(tl.float32)
                acc1 = tl.dot(a, b1, acc1)
                acc3 = tl.dot(a, b3, acc3)
            h = acc1 * tl.sigmoid(acc1) * acc3  # silu(a) = a * sigmoid(a)
            tl.store(h_ptr + rows[:, None].to(tl.int64) * stride_hr + cols[None, :] * stride_hf,
                     h.to(h_ptr.dtype.element_ty), mask=valid[:, None] & col_ok[None, :])

    @triton.autotune(configs=_configs(), key=["D", "FF", "BLOCK_M"])
    @triton.jit
    def _moe_down_kernel(h_ptr, w2_ptr, gate_ptr, y_ptr, sorted_slots_ptr, block_expert_ptr,
                         n_slots, D, FF, num_blocks, E,
                         stride_hr, stride_hf, stride_we, stride_wd, stride_wf, stride_ys, stride_yd,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                         UPCAST: tl.constexpr):
        """y[slot] = gate[slot] * (h[row] @ w2[e]^T) for one tile; rows are stored back in slot order."""
        pid_m, pid_n = _tile_ids(num_blocks, tl.cdiv(D, BLOCK_N), GROUP_M)
        expert = tl.load(block_expert_ptr + pid_m, mask=pid_m < num_blocks, other=-1)
        if (expert >= 0) & (expert < E):
            rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots = tl.load(sorted_slots_ptr + rows, mask=rows < num_blocks * BLOCK_M, other=n_slots)
            valid = (slots < n_slots) & (slots >= 0)
            cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < D
            w_base = expert.to(tl.int64) * stride_we
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, FF, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_ok = ks < FF
                a = tl.load(h_ptr + rows[:, None].to(tl.int64) * stride_hr + ks[None, :] * stride_hf,
                            mask=valid[:, None] & k_ok[None, :], other=0.0)
                b = tl.load(w2_ptr + w_base + cols[None, :] * stride_wd + ks[:, None] * stride_wf,
                            mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                if UPCAST:
                    a, b = a.to(tl.float32), b.to(tl.float32)
                acc = tl.dot(a, b, acc)
            gate = tl.load(gate_ptr + slots, mask=valid, other=0.0).to(tl.float32)
            acc = acc * gate[:, None]
            tl.store(y_ptr + slots[:, None].to(tl.int64) * stride_ys + cols[None, :] * stride_yd,
                     acc.to(y_ptr.dtype.element_ty), mask=valid[:, None] & col_ok[None, :])


# ----------------------------------------------------------------------------------------------
# Launchers with input checks
# ----------------------------------------------------------------------------------------------
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_moe_inputs(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor,
                     gates: torch.Tensor, experts: torch.Tensor, check_ids: bool = True) -> None:
    """Raise a clear ValueError/TypeError unless the shapes, dtypes and devices fit together.

    ``check_ids`` also checks every expert id is in range, which reads them back from the GPU (a sync).
    """
    for name, t in (("x", x), ("w1", w1), ("w3", w3), ("w2", w2), ("gates", gates), ("experts", experts)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be (tokens, d_model), got shape {tuple(x.shape)}; reshape(-1, d_model) first")
    if x.dtype not in _DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if w1.ndim != 3 or w3.shape != w1.shape or w2.ndim != 3:
        raise ValueError(f"w1 and w3 must be (E, d_ff, d_model) and w2 (E, d_model, d_ff), got "
                         f"{tuple(w1.shape)}, {tuple(w3.shape)}, {tuple(w2.shape)}")
    n_experts, d_ff, d_model = w1.shape
    if d_model != x.shape[1] or tuple(w2.shape) != (n_experts, d_model, d_ff):
        raise ValueError(f"shapes disagree: x {tuple(x.shape)}, w1 {tuple(w1.shape)} (E, d_ff, d_model), "
                         f"w2 {tuple(w2.shape)} (E, d_model, d_ff)")
    for name, t in (("w1", w1), ("w3", w3), ("w2", w2)):
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; cast them to one dtype")
    if experts.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"experts must hold int32/int64 expert ids, got {experts.dtype}")
    if experts.ndim != 2 or experts.shape[0] != x.shape[0]:
        raise ValueError(f"experts must be (tokens, top_k) with tokens={x.shape[0]}, got {tuple(experts.shape)}")
    if gates.shape != experts.shape:
        raise ValueError(f"gates must have the shape of experts {tuple(experts.shape)}, got {tuple(gates.shape)}")
    if not gates.is_floating_point():
        raise TypeError(f"gates must be floating point, got {gates.dtype}")
    if check_ids and experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= n_experts):
        raise ValueError(f"experts must lie in [0, {n_experts}), got ids from {int(experts.min())} to "
                         f"{int(experts.max())}")
    devices = {t.device for t in (x, w1, w3, w2, gates, experts)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(str(d) for d in devices)}")


@contextlib.contextmanager
def _quiet_interpreter():
    """Triton 3.6's interpreter converts 1-element arrays to scalars, which numpy>=1.25 warns about: hide that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Conversion of an array with ndim > 0", category=DeprecationWarning)
        yield


_notice = {"shown": False}


def _use_kernels(x: torch.Tensor) -> bool:
    """Whether the Triton kernels run for ``x`` (:func:`labkit.kernels.runtime.can_launch`).

    Where they cannot (no triton, e.g. macOS or Windows; or tensors on the wrong device), the plain
    torch references below compute the same thing, and a notice says so once.
    """
    if rt.can_launch(x):
        return True
    if not _notice["shown"]:
        _notice["shown"] = True
        warnings.warn(f"labkit.kernels.moe: the Triton kernels cannot run for {x.device.type} tensors here "
                      f"({rt.backend().reason}); using the plain-torch reference instead (same result, slower)",
                      stacklevel=3)
    return False


def check_grouped_inputs(sorted_slots: torch.Tensor, block_expert: torch.Tensor, n_slots: int, n_experts: int,
                         block_m: int, device: torch.device, validate: bool = True) -> None:
    """The index arrays of :func:`moe_align`, which the kernels read before they load anything.

    ``sorted_slots``: int32, ``len(block_expert) * block_m`` entries in ``[0, n_slots]`` (``n_slots``
    marks padding). ``block_expert``: int32 expert ids in ``[-1, n_experts)`` (``-1``: unused block).
    ``validate=False`` skips the value checks (a sync on a GPU), for arrays fresh from ``moe_align``.
    """
    checks.tensor("block_expert", block_expert, dim=1, dtypes=torch.int32)
    checks.tensor("sorted_slots", sorted_slots, dim=1, dtypes=torch.int32)
    if not _is_pow2(block_m) or block_m < 16:
        raise ValueError(f"block_m must be a power of two >= 16 (tl.dot needs 16 rows), got {block_m!r}")
    if sorted_slots.numel() != block_expert.numel() * block_m:
        raise ValueError(f"sorted_slots must hold len(block_expert) * block_m = {block_expert.numel() * block_m} "
                         f"entries, got {sorted_slots.numel()}; build both with moe_align()")
    for name, t in (("sorted_slots", sorted_slots), ("block_expert", block_expert)):
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the activations on {device}; move both to one device")
    if validate and sorted_slots.numel():
        if int(sorted_slots.min()) < 0 or int(sorted_slots.max()) > n_slots:
            raise ValueError(f"sorted_slots must lie in [0, {n_slots}] ({n_slots} marks padding), got values from "
                             f"{int(sorted_slots.min())} to {int(sorted_slots.max())}")
        if int(block_expert.min()) < -1 or int(block_expert.max()) >= n_experts:
            raise ValueError(f"block_expert must lie in [-1, {n_experts}) (the expert of each row block, -1 for "
                             f"none), got values from {int(block_expert.min())} to {int(block_expert.max())}")


def _check_weights(name: str, w: torch.Tensor, x: torch.Tensor, in_features: int) -> tuple[int, int, int]:
    checks.tensor(name, w, dim=3)
    if w.dtype != x.dtype or w.device != x.device:
        raise TypeError(f"{name} is {w.dtype} on {w.device} but the activations are {x.dtype} on {x.device}; "
                        "use one dtype and device")
    if w.shape[2] != in_features:
        raise ValueError(f"{name} must be (E, out, {in_features}) to match the activations, got {tuple(w.shape)}")
    return w.shape[0], w.shape[1], w.shape[2]


def _rows(sorted_slots: torch.Tensor, block_expert: torch.Tensor, n_slots: int, block_m: int):
    """(padded row ids, their slots, their experts) of the rows that compute a real slot."""
    expert_of_row = block_expert.long().repeat_interleave(block_m)
    slots = sorted_slots.long()
    rows = ((slots < n_slots) & (expert_of_row >= 0)).nonzero().squeeze(1)
    return rows, slots[rows], expert_of_row[rows]


def moe_up_reference(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, sorted_slots: torch.Tensor,
                     block_expert: torch.Tensor, top_k: int, block_m: int) -> torch.Tensor:
    """Plain torch :func:`moe_up` (padding rows are zero); inputs as checked by :func:`moe_up`."""
    h = torch.zeros(sorted_slots.numel(), w1.shape[1], device=x.device, dtype=x.dtype)
    rows, slots, experts = _rows(sorted_slots, block_expert, x.shape[0] * top_k, block_m)
    for e in experts.unique().tolist():
        sel = experts == e
        xe = x[slots[sel] // top_k].float()
        h[rows[sel]] = (F.silu(xe @ w1[e].float().T) * (xe @ w3[e].float().T)).to(x.dtype)
    return h


def moe_down_reference(h: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor, sorted_slots: torch.Tensor,
                       block_expert: torch.Tensor, block_m: int) -> torch.Tensor:
    """Plain torch :func:`moe_down` (slots no row computes are zero); inputs as checked by :func:`moe_down`."""
    n_slots = gates.numel()
    y = torch.zeros(n_slots, w2.shape[1], device=h.device, dtype=h.dtype)
    rows, slots, experts = _rows(sorted_slots, block_expert, n_slots, block_m)
    g = gates.reshape(-1).float()
    for e in experts.unique().tolist():
        sel = experts == e
        y[slots[sel]] = ((h[rows[sel]].float() @ w2[e].float().T) * g[slots[sel], None]).to(h.dtype)
    return y


def moe_up(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, sorted_slots: torch.Tensor,
           block_expert: torch.Tensor, top_k: int, block_m: int, validate: bool = True) -> torch.Tensor:
    """Grouped up-projection: ``h`` (padded rows, d_ff) with ``silu(x w1^T) * (x w3^T)`` per row.

    Input contract: ``x`` (T, d_model) fp32/fp16/bf16; ``w1``, ``w3`` (E, d_ff, d_model) of ``x``'s
    dtype and device; ``sorted_slots``/``block_expert`` from :func:`moe_align` for ``T * top_k``
    slots (checked by :func:`check_grouped_inputs` unless ``validate=False``); ``top_k`` >= 1;
    ``block_m`` the power of two given to ``moe_align``. Rows of padding are left unwritten by the
    kernel (zero in the reference). Without Triton, the plain-torch reference runs.
    """
    rt.check_activations(x)
    top_k = checks.positive_int("top_k", top_k)
    n_experts, d_ff, d_model = _check_weights("w1", w1, x, x.shape[1])
    if w3.shape != w1.shape:
        raise ValueError(f"w3 must have w1's shape {tuple(w1.shape)}, got {tuple(w3.shape)}")
    _check_weights("w3", w3, x, x.shape[1])
    check_grouped_inputs(sorted_slots, block_expert, x.shape[0] * top_k, n_experts, block_m, x.device, validate)
    if not _use_kernels(x) or block_expert.numel() == 0 or d_ff == 0:
        return moe_up_reference(x, w1, w3, sorted_slots, block_expert, top_k, block_m)
    w1, w3 = w1.contiguous(), w3.contiguous()
    h = torch.empty(sorted_slots.numel(), d_ff, device=x.device, dtype=x.dtype)
    num_blocks = block_expert.numel()
    grid = lambda meta: (num_blocks * triton.cdiv(d_ff, meta["BLOCK_N"]),)  # noqa: E731
    with _quiet_interpreter():
        _moe_up_kernel[grid](x, w1, w3, h, sorted_slots, block_expert, x.shape[0] * top_k, d_model, d_ff, num_blocks,
                             n_experts, x.stride(0), x.stride(1), w1.stride(0), w1.stride(1), w1.stride(2),
                             h.stride(0), h.stride(1), TOP_K=top_k, BLOCK_M=block_m, UPCAST=rt.interpreting())
    return h


def moe_down(h: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor, sorted_slots: torch.Tensor,
             block_expert: torch.Tensor, block_m: int, validate: bool = True) -> torch.Tensor:
    """Grouped down-projection times the gate weight, stored per slot: ``(T * top_k, d_model)``.

    Input contract: ``h`` (padded rows, d_ff) from :func:`moe_up`; ``w2`` (E, d_model, d_ff) of
    ``h``'s dtype and device; ``gates`` T * top_k floating gate weights (any shape); the index
    arrays as for :func:`moe_up`. Without Triton, the plain-torch reference runs.
    """
    rt.check_activations(h, "h")
    n_experts, d_model, _ = _check_weights("w2", w2, h, h.shape[1])
    checks.tensor("gates", gates)
    if not gates.is_floating_point() or gates.device != h.device:
        raise TypeError(f"gates must be floating point on {h.device}, got {gates.dtype} on {gates.device}")
    n_slots = gates.numel()
    if h.shape[0] != sorted_slots.numel():
        raise ValueError(f"h must have one row per entry of sorted_slots ({sorted_slots.numel()}), got {h.shape[0]}")
    check_grouped_inputs(sorted_slots, block_expert, n_slots, n_experts, block_m, h.device, validate)
    if not _use_kernels(h) or block_expert.numel() == 0 or d_model == 0:
        return moe_down_reference(h, w2, gates, sorted_slots, block_expert, block_m)
    w2 = w2.contiguous()
    y = torch.zeros(n_slots, d_model, device=h.device, dtype=h.dtype)  # zeros: a slot no row computes stays 0
    gates = gates.reshape(-1).contiguous()
    num_blocks = block_expert.numel()
    grid = lambda meta: (num_blocks * triton.cdiv(d_model, meta["BLOCK_N"]),)  # noqa: E731
    with _quiet_interpreter():
        _moe_down_kernel[grid](h, w2, gates, y, sorted_slots, block_expert, n_slots, d_model, w2.shape[2], num_blocks,
                               n_experts, h.stride(0), h.stride(1), w2.stride(0), w2.stride(1), w2.stride(2),
                               y.stride(0), y.stride(1), BLOCK_M=block_m, UPCAST=rt.interpreting())
    return y


def moe_combine(y_slots: torch.Tensor, top_k: int) -> torch.Tensor:
    """Sum each token's ``top_k`` gated slot outputs (already weighted): ``(T, d_model)``.

    Contract: ``y_slots`` 2-D with a multiple of ``top_k`` rows (token-major), ``top_k`` >= 1.
    """
    checks.tensor("y_slots", y_slots, dim=2)
    top_k = checks.positive_int("top_k", top_k)
    if y_slots.shape[0] % top_k:
        raise ValueError(f"y_slots has {y_slots.shape[0]} rows, not a multiple of top_k={top_k}")
    return y_slots.view(-1, top_k, y_slots.shape[-1]).sum(dim=1)


def fused_moe(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor,
              experts: torch.Tensor, block_m: int | None = None, check_ids: bool = True) -> torch.Tensor:
    """The MoE SwiGLU layer ``sum_j gates[t, j] * expert_{experts[t, j]}(x[t])`` in two Triton launches.

    Input contract (checked by :func:`check_moe_inputs`; anything else raises naming the argument):

    Args:
        x: (T, d_model) tokens (T may be 0). w1, w3: (E, d_ff, d_model); w2: (E, d_model, d_ff): the experts,
            in the layout of :class:`labkit.moe.MoEFeedForward`, all of ``x``'s dtype. gates: (T, top_k)
            floating gate weights; experts: (T, top_k) int32/int64 expert ids in ``[0, E)`` (from a router).
            block_m: rows per tile (power of two >= 16); ``None`` picks one from the average load
            (:func:`choose_block_m`).
        check_ids: check that every expert id is in ``[0, E)`` (costs a GPU sync; benchmarks turn it off).

    Where Triton cannot run (not installed, or tensors on the wrong device) the plain-torch
    :func:`moe_reference` runs instead, with a one-time notice: the same result, slower.
    """
    check_moe_inputs(x, w1, w3, w2, gates, experts, check_ids)
    if block_m is not None and (not _is_pow2(block_m) or block_m < 16):
        raise ValueError(f"block_m must be a power of two >= 16 (tl.dot needs 16 rows), got {block_m!r}")
    n_tokens, top_k = experts.shape
    if n_tokens == 0 or top_k == 0:
        return torch.zeros_like(x)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w1, w3, w2, gates)):
        if not _notice.get("grad"):
            _notice["grad"] = True
            warnings.warn("fused_moe has no backward pass: with gradients required it runs the differentiable "
                          "moe_reference instead (wrap inference in torch.no_grad() to run the kernels)", stacklevel=2)
        return moe_reference(x, w1, w3, w2, gates, experts, check_ids=False)
    return torch.ops.labkit.fused_moe(x, w1, w3, w2, gates, experts, block_m or 0)


@torch.library.custom_op("labkit::fused_moe", mutates_args=(),
                         schema="(Tensor x, Tensor w1, Tensor w3, Tensor w2, Tensor gates, Tensor experts, "
                                "int block_m) -> Tensor")
def _fused_moe_op(x, w1, w3, w2, gates, experts, block_m):
    """Checked inputs; ``block_m`` 0 = choose. An operator, so ``torch.utils.flop_counter`` counts its FLOPs."""
    if not _use_kernels(x):
        return moe_reference(x, w1, w3, w2, gates, experts, check_ids=False)
    n_tokens, top_k = experts.shape
    block_m = block_m or choose_block_m(n_tokens * top_k, w1.shape[0])
    x, w1, w3, w2 = (t.contiguous() for t in (x, w1, w3, w2))
    sorted_slots, block_expert, _ = moe_align(experts, w1.shape[0], block_m, check_ids=False)
    # the index arrays come straight from moe_align (valid by construction): no second check
    h = moe_up(x, w1, w3, sorted_slots, block_expert, top_k, block_m, validate=False)
    y = moe_down(h, w2, gates.to(torch.float32), sorted_slots, block_expert, block_m, validate=False)
    return moe_combine(y, top_k)


@_fused_moe_op.register_fake
def _(x, w1, w3, w2, gates, experts, block_m):
    return torch.empty_like(x)


@register_flop_formula(torch.ops.labkit.fused_moe)
def _fused_moe_flops(x_shape, w1_shape, w3_shape, w2_shape, gates_shape, experts_shape, *args, out_shape=None,
                     **kwargs) -> int:
    """Three GEMMs of d_model x d_ff per (token, choice): ``2 * 3 * T * top_k * d_model * d_ff`` (padding excluded)."""
    return 6 * experts_shape[0] * experts_shape[1] * w1_shape[1] * w1_shape[2]


# ----------------------------------------------------------------------------------------------
# Reference: the naive loop over experts
# ----------------------------------------------------------------------------------------------
def moe_reference(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor,
                  experts: torch.Tensor, check_ids: bool = True) -> torch.Tensor:
    """Plain torch: for each expert, gather its tokens, run the SwiGLU, scatter-add ``gate * output``.

    The same input contract as :func:`fused_moe` (checked by :func:`check_moe_inputs`); differentiable.
    """
    check_moe_inputs(x, w1, w3, w2, gates, experts, check_ids)
    out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    for e in range(w1.shape[0]):
        token, choice = torch.where(experts == e)
        if token.numel() == 0:
            continue
        h = x[token]
        y = F.linear(F.silu(F.linear(h, w1[e])) * F.linear(h, w3[e]), w2[e])
        out.index_add_(0, token, y.float() * gates[token, choice, None].float())
    return out.to(x.dtype)
