"""Unstructured sparsity: a CSR weight times dense activations, row-split, ``y = x @ W.T + b``.

The idea
--------
Magnitude pruning without any structure leaves nonzeros scattered anywhere. torch's
``sparse_csr`` layout stores them row by row: ``crow_indices`` (N+1) says where each output row's
nonzeros start, ``col_indices`` and ``values`` (nnz each) say which input each one reads and its
weight. The simplest GPU schedule is **row-split**: one program per (output row, tile of
``BLOCK_M`` tokens). It walks its row's nonzeros ``BLOCK_NZ`` at a time, gathers the matching
input features of its tokens, multiplies and sums:

    y[m, n] = sum over p in row n of values[p] * x[m, col_indices[p]]

The launcher hands the kernel ``x`` transposed (``xT``, K x M, contiguous), so that one gathered
input feature is ``BLOCK_M`` *consecutive* values: a coalesced load instead of a strided one.

Why unstructured sparsity pays so late
--------------------------------------
* Bytes: every nonzero carries a 4-byte column index (8 with torch's default int64) next to its
  2-byte fp16 value: 6 B per kept weight against 2 B per dense weight. CSR reads fewer bytes than
  dense only below density 1/3, and its memory-bound ideal is ``1/(3d)``, not ``1/d``.
* FLOPs: the gathered values do not form tiles, so there is no ``tl.dot``: the multiply-adds run
  on ordinary CUDA cores, 10-20x slower than the tensor cores dense cuBLAS uses. Every nonzero
  also costs a gathered load of ``BLOCK_M`` activations with no reuse.
  Together: unstructured sparsity beats a tensor-core dense layer only at ~95 %+ sparsity.
* Load imbalance: rows hold different numbers of nonzeros, so programs get different amounts of
  work, and the GPU waits for the longest rows at the end (the tail). :func:`row_stats` measures
  it; ``order="longest_first"`` launches long rows first so the short ones fill in the tail.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from labkit import checks
from labkit.kernels import runtime as rt

if rt.HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _csr_chunk(acc, p, end, xt_ptr, col_ptr, val_ptr, offs_m, m_ok, K, NNZ, stride_xk,
                   BLOCK_NZ: tl.constexpr):
        """BLOCK_NZ nonzeros of the row starting at p: gather their inputs, multiply, add."""
        offs = p + tl.arange(0, BLOCK_NZ)
        ok = (offs < end) & (offs < NNZ) & (offs >= 0)
        cols = tl.load(col_ptr + offs, mask=ok, other=0)
        vals = tl.load(val_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        # gather: one row of xT (BLOCK_M consecutive tokens) per nonzero
        xs = tl.load(xt_ptr + cols[:, None].to(tl.int64) * stride_xk + offs_m[None, :],
                     mask=ok[:, None] & m_ok[None, :] & (cols[:, None] < K) & (cols[:, None] >= 0), other=0.0)
        # CUDA-core FMAs, no tensor cores; summed over the nonzeros only once, after the loop
        return acc + vals[:, None] * xs.to(tl.float32)

    @triton.jit(do_not_specialize=["M", "N", "K", "NNZ"])  # one compiled variant for all shapes
    def _csr_linear_kernel(
        xt_ptr, crow_ptr, col_ptr, val_ptr, order_ptr, bias_ptr, out_ptr,
        M, N, K, NNZ, stride_xk, stride_on,
        BLOCK_M: tl.constexpr, BLOCK_NZ: tl.constexpr, HAS_BIAS: tl.constexpr, CAST_FP32: tl.constexpr,
        PIPELINE: tl.constexpr,
    ):
        # the launch order is a permutation of rows (natural, or longest rows first). The launcher
        # checked it and crow; the masks and the clamp keep even bad indices inside the arrays.
        row = tl.load(order_ptr + tl.program_id(0), mask=tl.program_id(0) < N, other=0)
        row_ok = (row >= 0) & (row < N)
        offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < M
        start = tl.load(crow_ptr + row, mask=row_ok, other=0)
        end = tl.minimum(tl.load(crow_ptr + row + 1, mask=row_ok, other=0), NNZ)
        acc = tl.zeros((BLOCK_NZ, BLOCK_M), dtype=tl.float32)  # one partial sum per lane of nonzeros
        if PIPELINE:  # `for` over a bound loaded from memory: pipelined (see runtime.launch)
            for p in tl.range(start, end, BLOCK_NZ):
                acc = _csr_chunk(acc, p, end, xt_ptr, col_ptr, val_ptr, offs_m, m_ok, K, NNZ, stride_xk, BLOCK_NZ)
        else:
            p = start
            while p < end:
                acc = _csr_chunk(acc, p, end, xt_ptr, col_ptr, val_ptr, offs_m, m_ok, K, NNZ, stride_xk, BLOCK_NZ)
                p += BLOCK_NZ
        y = tl.sum(acc, axis=0)  # reduce across the BLOCK_NZ lanes once, not in every iteration
        if HAS_BIAS:
            y += tl.load(bias_ptr + row, mask=row_ok, other=0.0).to(tl.float32)
        # output is yT (N x M): the BLOCK_M results of one row are consecutive
        tl.store(out_ptr + row.to(tl.int64) * stride_on + offs_m, y.to(out_ptr.dtype.element_ty), mask=m_ok & row_ok)

    _csr_tuned = triton.autotune(
        configs=rt.autotune_configs(
            [triton.Config({"BLOCK_NZ": nz}, num_warps=w, num_stages=2) for nz, w in ((32, 4), (64, 4), (64, 8))],
            triton.Config({"BLOCK_NZ": 32}, num_warps=4, num_stages=1)),
        do_bench=rt.autotune_bench, key=["M", "N", "K", "NNZ", "BLOCK_M"],
    )(_csr_linear_kernel)

ORDERS = ("natural", "longest_first")


def check_csr_weight(weight: torch.Tensor, x: torch.Tensor | None = None, validate: bool = True) -> None:
    """Validate a ``torch.sparse_csr`` weight (and ``x`` against it).

    ``validate`` also checks the index arrays (monotone ``crow_indices`` ending at nnz, column
    indices in range): one pass over them and, on a GPU, a sync; callers that checked them once
    when packing (:class:`labkit.sparse.SparseLinear`) skip it.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor in sparse_csr layout, got {type(weight).__name__}")
    if weight.layout != torch.sparse_csr:
        raise ValueError(f"weight must have layout torch.sparse_csr, got {weight.layout}; "
                         "convert with weight.to_sparse_csr()")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if validate:
        rt.check_compressed_rows(weight.crow_indices(), weight.col_indices(), weight.shape[0], weight.shape[1],
                                 weight.values().numel())
    if x is not None:
        rt.check_activations(x)
        rt.check_same(x, weight, "weight")
        if x.shape[1] != weight.shape[1]:
            raise ValueError(f"inner dimensions differ: x has {x.shape[1]} features but weight has "
                             f"{weight.shape[1]} inputs (x @ W.T needs x.shape[1] == weight.shape[1])")


def row_stats(weight: torch.Tensor) -> dict:
    """Nonzeros per row of a CSR weight and the load imbalance a row-split kernel suffers.

    ``imbalance`` is max/mean nonzeros per row: 1.0 is perfectly even; 3.0 means the longest
    row's program works three times longer than the average one.
    """
    check_csr_weight(weight)
    lengths = weight.crow_indices().diff()
    mean = lengths.double().mean().item() if lengths.numel() else 0.0
    longest = int(lengths.max()) if lengths.numel() else 0
    return {"rows": int(lengths.numel()), "nnz": int(lengths.sum()), "mean": mean, "max": longest,
            "min": int(lengths.min()) if lengths.numel() else 0,
            "imbalance": longest / mean if mean > 0 else 1.0}


def launch_order(weight: torch.Tensor, order: str = "natural", validate: bool = True) -> torch.Tensor:
    """The rows in the order programs are launched: natural, or longest rows first (int32).

    Contract: ``weight`` a ``sparse_csr`` tensor (indices checked unless ``validate=False``),
    ``order`` one of :data:`ORDERS`. The result is a permutation of ``0 .. N-1`` on its device.
    """
    check_csr_weight(weight, validate=validate)
    checks.choice("order", order, ORDERS)
    n = weight.shape[0]
    if order == "natural":
        return torch.arange(n, device=weight.device, dtype=torch.int32)
    lengths = weight.crow_indices().diff()
    return torch.argsort(lengths, descending=True, stable=True).to(torch.int32)


def csr_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               order: str | torch.Tensor = "natural", validate: bool = True) -> torch.Tensor:
    """``x @ weight.T + bias`` with an unstructured sparse weight in torch's ``sparse_csr`` layout.

    Input contract (anything else raises a ValueError/TypeError naming the argument):

    Args:
        x: (M, K) contiguous activations; fp16, bf16 or fp32 matching the weight (M may be 0).
        weight: (N, K) ``sparse_csr`` tensor on ``x``'s device.
        bias: optional (N,) vector.
        order: ``"natural"``, ``"longest_first"``, or a precomputed :func:`launch_order` tensor: an
            int32 permutation of ``0 .. N-1`` on ``x``'s device.
        validate: check the index arrays (``crow``, ``col``, a given ``order``) first (default).
            Pass False only for indices already checked once, as ``SparseLinear`` does.

    Returns (M, N) in ``x``'s dtype.
    """
    check_csr_weight(weight, x, validate)
    n = weight.shape[0]
    rt.check_bias(bias, x, n)
    if isinstance(order, str):
        order = launch_order(weight, checks.choice("order", order, ORDERS), validate=False)
    else:
        if not isinstance(order, torch.Tensor):
            raise TypeError(f"order must be one of {ORDERS} or an int32 tensor from launch_order(), "
                            f"got {type(order).__name__}")
        if order.device != x.device:
            raise ValueError(f"order is on {order.device} but x is on {x.device}; move both to the same device")
        if validate:
            rt.check_permutation("order", order, n)
        elif order.dtype != torch.int32 or order.shape != (n,):
            raise ValueError(f"order must be an int32 tensor of {n} row ids from launch_order()")
    values = weight.values()
    return torch.ops.labkit.csr_linear(x, weight.crow_indices(), weight.col_indices(),
                                       values if values.is_contiguous() else values.contiguous(), order, bias, True)


def _launch(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, order: torch.Tensor,
            bias: torch.Tensor | None) -> torch.Tensor:
    """Launch the Triton kernel on checked inputs (what the operator runs where Triton can)."""
    m, k = x.shape
    n = crow.numel() - 1
    xt = x.t().contiguous()  # K x M: a gathered input feature is BLOCK_M consecutive values
    yt = torch.empty((n, m), device=x.device, dtype=x.dtype)
    block_m = min(128, rt.next_pow2(m))
    grid = (n, triton.cdiv(m, block_m))
    rt.launch(lambda pipeline: _csr_tuned[grid](
        xt, crow, col, values, order, bias if bias is not None else x, yt,
        m, n, k, values.numel(), xt.stride(0), yt.stride(0), BLOCK_M=block_m, HAS_BIAS=bias is not None,
        CAST_FP32=rt.interpreting() and x.dtype == torch.bfloat16, PIPELINE=pipeline))
    return yt.t().contiguous()


def _low_precision_cpu(t: torch.Tensor) -> bool:
    """torch's CPU sparse products (MKL) have no fp16/bf16: those are computed in fp32."""
    return t.device.type == "cpu" and t.dtype in (torch.float16, torch.bfloat16)


def _torch_csr_linear(x, crow, col, values, bias):
    """PyTorch's own CSR product (``torch.sparse.mm``): the honest CPU path, no Triton."""
    dtype = torch.float32 if _low_precision_cpu(x) else x.dtype
    w = torch.sparse_csr_tensor(crow, col, values.to(dtype), (crow.numel() - 1, x.shape[1]), check_invariants=False)
    y = torch.sparse.mm(w, x.to(dtype).t()).t()
    if bias is not None:
        y = y + bias.to(dtype)
    return y.to(x.dtype).contiguous()


# --------------------------------------------------------------------------------------------
# As a PyTorch operator: autograd and a FLOP formula (see bsr_linear.py for the pattern)
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("labkit::csr_linear", mutates_args=(),
                         schema="(Tensor x, Tensor crow, Tensor col, Tensor values, Tensor order, Tensor? bias, "
                                "bool use_triton) -> Tensor")
def _csr_op(x, crow, col, values, order, bias, use_triton):
    """``use_triton``: the kernel where it can launch; else (or False) ``torch.sparse.mm``."""
    if use_triton and rt.can_launch(x) and x.shape[0] and crow.numel() > 1:
        return _launch(x, crow, col, values, order, bias)
    return _torch_csr_linear(x, crow, col, values, bias)


@_csr_op.register_fake
def _(x, crow, col, values, order, bias, use_triton):
    return x.new_empty((x.shape[0], crow.numel() - 1))


def _csr_setup(ctx, inputs, output):
    x, crow, col, values, _, _, _ = inputs
    ctx.save_for_backward(x, crow, col, values)


def _csr_backward(ctx, grad):
    """Both gradients touch only the stored nonzeros:

    * input:  ``grad_x = grad @ W``, computed as ``W^T @ grad^T`` with ``W^T`` read as CSC (the same
      three arrays: a CSR matrix's rows are its transpose's compressed columns);
    * values: ``grad_W[n, k] = sum_m grad[m, n] x[m, k]`` at the stored ``(n, k)`` only
      (``torch.sparse.sampled_addmm``, a sampled dense-dense product).
    """
    x, crow, col, values = ctx.saved_tensors
    n, k = crow.numel() - 1, x.shape[1]
    dtype = torch.float32 if _low_precision_cpu(x) else x.dtype
    g = grad.to(dtype)
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        wt = torch.sparse_csc_tensor(crow, col, values.to(dtype), (k, n), check_invariants=False)
        grad_x = torch.sparse.mm(wt, g.t()).t().to(x.dtype)
    if ctx.needs_input_grad[3]:
        pattern = torch.sparse_csr_tensor(crow, col, torch.zeros_like(values, dtype=dtype), (n, k),
                                          check_invariants=False)
        grad_values = torch.sparse.sampled_addmm(pattern, g.t(), x.to(dtype), beta=0.0).values().to(values.dtype)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.sum(0)
    return grad_x, None, None, grad_values, None, grad_bias, None


_csr_op.register_autograd(_csr_backward, setup_context=_csr_setup)


@register_flop_formula(torch.ops.labkit.csr_linear)
def _csr_flops(x_shape, crow_shape, col_shape, values_shape, *args, out_shape=None, **kwargs) -> int:
    """2 FLOPs per token and stored nonzero: ``2 * M * nnz``."""
    return 2 * x_shape[0] * values_shape[0]


def csr_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         validate: bool = True) -> torch.Tensor:
    """Plain torch: densify and call ``F.linear``. The same input contract as :func:`csr_linear`."""
    check_csr_weight(weight, x, validate)
    rt.check_bias(bias, x, weight.shape[0])
    return rt.torch_linear(x, weight.to_dense(), bias)
