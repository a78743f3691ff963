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

from labkit.kernels import runtime as rt

if rt.HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["moe_align", "moe_up", "moe_down", "moe_combine", "fused_moe", "moe_reference", "padding_waste",
           "choose_block_m", "check_moe_inputs"]


def _is_pow2(n: int) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


# ----------------------------------------------------------------------------------------------
# 1. Align: sort slots by expert and pad each expert's group to a multiple of BLOCK_M
# ----------------------------------------------------------------------------------------------
def moe_align(experts: torch.Tensor, n_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the ``T * top_k`` slots by expert and pad every expert's group to a ``block_m`` multiple.

    Returns ``(sorted_slots, block_expert, n_padded)``: ``sorted_slots[r]`` is the slot computed by
    padded row ``r`` (``T * top_k`` marks padding), ``block_expert[b]`` the expert of row block
    ``b`` (``-1`` past the end) and ``n_padded`` (a 0-d tensor) the rows in use. Sizes are upper
    bounds known without reading the data, so nothing waits for the GPU.
    """
    if not isinstance(experts, torch.Tensor) or experts.ndim != 2 or experts.dtype not in (torch.int32, torch.int64):
        raise ValueError("experts must be an int32/int64 tensor of shape (tokens, top_k)")
    if not _is_pow2(block_m) or block_m < 16:
        raise ValueError(f"block_m must be a power of two >= 16 (tl.dot needs 16 rows), got {block_m!r}")
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
    """Share of computed rows that are padding: ``(padded - T * top_k) / padded``."""
    counts = torch.bincount(experts.reshape(-1).long(), minlength=n_experts)
    padded = int(((counts + block_m - 1) // block_m * block_m).sum())
    return (padded - experts.numel()) / padded if padded else 0.0


def choose_block_m(n_slots: int, n_experts: int) -> int:
    """Rows per block: small when experts get few tokens (less padding), 128 when they get many."""
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
                       n_slots, D, FF, num_blocks,
                       stride_xt, stride_xd, stride_we, stride_wf, stride_wd, stride_hr, stride_hf,
                       TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, UPCAST: tl.constexpr):
        """h[row] = silu(x[token] @ w1[e]^T) * (x[token] @ w3[e]^T) for one (BLOCK_M, BLOCK_N) tile."""
        pid_m, pid_n = _tile_ids(num_blocks, tl.cdiv(FF, BLOCK_N), GROUP_M)
        expert = tl.load(block_expert_ptr + pid_m)
        if expert >= 0:  # blocks past the last expert's padding do nothing
            rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots = tl.load(sorted_slots_ptr + rows)  # sorted_slots has exactly max_blocks * BLOCK_M entries
            valid = slots < n_slots
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
                         n_slots, D, FF, num_blocks,
                         stride_hr, stride_hf, stride_we, stride_wd, stride_wf, stride_ys, stride_yd,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                         UPCAST: tl.constexpr):
        """y[slot] = gate[slot] * (h[row] @ w2[e]^T) for one tile; rows are stored back in slot order."""
        pid_m, pid_n = _tile_ids(num_blocks, tl.cdiv(D, BLOCK_N), GROUP_M)
        expert = tl.load(block_expert_ptr + pid_m)
        if expert >= 0:
            rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            slots = tl.load(sorted_slots_ptr + rows)
            valid = slots < n_slots
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
        raise ValueError(f"experts must lie in [0, {n_experts}), got ids from {int(experts.min())} to {int(experts.max())}")
    devices = {t.device for t in (x, w1, w3, w2, gates, experts)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(str(d) for d in devices)}")


@contextlib.contextmanager
def _quiet_interpreter():
    """Triton 3.6's interpreter converts 1-element arrays to scalars, which numpy>=1.25 warns about: hide that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Conversion of an array with ndim > 0", category=DeprecationWarning)
        yield


def _kernel_device_ok(x: torch.Tensor) -> None:
    if not rt.HAS_TRITON:
        raise RuntimeError("triton is not installed here; use moe_reference (plain torch) instead")
    if rt.interpreting() and x.is_cuda:
        raise ValueError("TRITON_INTERPRET=1 runs kernels on the CPU: pass CPU tensors")
    if not rt.interpreting() and not x.is_cuda:
        raise ValueError("compiled Triton needs CUDA tensors: move inputs to the GPU, or set TRITON_INTERPRET=1 "
                         "before importing triton (import labkit does this when there is no GPU)")


def moe_up(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, sorted_slots: torch.Tensor,
           block_expert: torch.Tensor, top_k: int, block_m: int) -> torch.Tensor:
    """Grouped up-projection: ``h`` (padded rows, d_ff) with ``silu(x w1^T) * (x w3^T)`` per row."""
    _kernel_device_ok(x)
    n_experts, d_ff, d_model = w1.shape
    h = torch.empty(sorted_slots.numel(), d_ff, device=x.device, dtype=x.dtype)
    num_blocks = block_expert.numel()
    grid = lambda meta: (num_blocks * triton.cdiv(d_ff, meta["BLOCK_N"]),)  # noqa: E731
    with _quiet_interpreter():
        _moe_up_kernel[grid](x, w1, w3, h, sorted_slots, block_expert, x.shape[0] * top_k, d_model, d_ff, num_blocks,
                             x.stride(0), x.stride(1), w1.stride(0), w1.stride(1), w1.stride(2), h.stride(0),
                             h.stride(1), TOP_K=top_k, BLOCK_M=block_m, UPCAST=rt.interpreting())
    return h


def moe_down(h: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor, sorted_slots: torch.Tensor,
             block_expert: torch.Tensor, block_m: int) -> torch.Tensor:
    """Grouped down-projection times the gate weight, stored per slot: ``(T * top_k, d_model)``."""
    _kernel_device_ok(h)
    n_experts, d_model, d_ff = w2.shape
    n_slots = gates.numel()
    y = torch.empty(n_slots, d_model, device=h.device, dtype=h.dtype)
    gates = gates.reshape(-1).contiguous()
    num_blocks = block_expert.numel()
    grid = lambda meta: (num_blocks * triton.cdiv(d_model, meta["BLOCK_N"]),)  # noqa: E731
    with _quiet_interpreter():
        _moe_down_kernel[grid](h, w2, gates, y, sorted_slots, block_expert, n_slots, d_model, d_ff, num_blocks,
                               h.stride(0), h.stride(1), w2.stride(0), w2.stride(1), w2.stride(2), y.stride(0),
                               y.stride(1), BLOCK_M=block_m, UPCAST=rt.interpreting())
    return y


def moe_combine(y_slots: torch.Tensor, top_k: int) -> torch.Tensor:
    """Sum each token's ``top_k`` gated slot outputs (already weighted): ``(T, d_model)``."""
    return y_slots.view(-1, top_k, y_slots.shape[-1]).sum(dim=1)


def fused_moe(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor,
              experts: torch.Tensor, block_m: int | None = None, check_ids: bool = True) -> torch.Tensor:
    """The MoE SwiGLU layer ``sum_j gates[t, j] * expert_{experts[t, j]}(x[t])`` in two Triton launches.

    Args:
        x: (T, d_model) tokens. w1, w3: (E, d_ff, d_model); w2: (E, d_model, d_ff): the experts,
            in the layout of :class:`labkit.moe.MoEFeedForward`. gates: (T, top_k) gate weights;
            experts: (T, top_k) expert ids (from a router). block_m: rows per tile (power of two
            >= 16); ``None`` picks one from the average load (:func:`choose_block_m`).
        check_ids: check that every expert id is in ``[0, E)`` (costs a GPU sync; benchmarks turn it off).
    """
    check_moe_inputs(x, w1, w3, w2, gates, experts, check_ids)
    _kernel_device_ok(x)
    n_tokens, top_k = experts.shape
    if n_tokens == 0:
        return torch.zeros_like(x)
    if block_m is None:
        block_m = choose_block_m(n_tokens * top_k, w1.shape[0])
    x, w1, w3, w2 = (t.contiguous() for t in (x, w1, w3, w2))
    sorted_slots, block_expert, _ = moe_align(experts, w1.shape[0], block_m)
    h = moe_up(x, w1, w3, sorted_slots, block_expert, top_k, block_m)
    y = moe_down(h, w2, gates.to(torch.float32), sorted_slots, block_expert, block_m)
    return moe_combine(y, top_k)


# ----------------------------------------------------------------------------------------------
# Reference: the naive loop over experts
# ----------------------------------------------------------------------------------------------
def moe_reference(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor,
                  experts: torch.Tensor, check_ids: bool = True) -> torch.Tensor:
    """Plain torch: for each expert, gather its tokens, run the SwiGLU, scatter-add ``gate * output``."""
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
