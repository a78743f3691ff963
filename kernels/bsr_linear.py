"""Block-sparse (BSR) weight times dense activations, in linear-layer form: ``y = x @ W.T + b``.

The idea
--------
Prune a weight ``W`` (N outputs x K inputs) in square ``BS x BS`` blocks and keep only the blocks
that survive. torch's ``sparse_bsr`` layout stores them row of blocks by row of blocks:

* ``crow_indices`` (N/BS + 1): block row ``r`` owns kept blocks ``crow[r] .. crow[r+1]-1``;
* ``col_indices`` (nnzb): the block column of each kept block;
* ``values`` (nnzb, BS, BS): the blocks themselves, each one dense and contiguous.

Output features ``r*BS .. r*BS+BS-1`` only need the kept blocks of block row ``r``. So a program
owns a tile of ``BLOCK_M`` tokens x one block row, walks that row's kept blocks, and for each one
loads the matching ``BLOCK_M x BS`` slice of ``x`` and does one dense ``tl.dot`` on tensor cores.
Zero blocks cost nothing: they are never loaded and never multiplied.

Byte and FLOP arithmetic (density d = kept blocks / all blocks, s bytes per value)
----------------------------------------------------------------------------------
* FLOPs: ``2*M*N*K*d`` instead of ``2*M*N*K``. Compute-bound ideal speedup: ``1/d``.
* Weight bytes: ``N*K*d*s`` values plus 4-8 bytes of index per block (0.1 % for 64x64 fp16), so the
  memory-bound ideal (few tokens: weight bytes dominate) is also about ``1/d``.
* The catch is *activation* traffic. Each program re-reads a ``BLOCK_M x BS`` slice of ``x`` for every
  kept block, so ``x`` is read about ``N/BS * d`` times in all. A first kernel that launched tiles
  in plain row order measured 3.7x dense at d=0.1 on an H200 (ideal 10x): it waited on ``x``.
  Two fixes here:

  1. **Grouped (L2-aware) program order** (Triton tutorial 03): consecutive programs take
     ``GROUP_M`` token tiles and sweep all block rows for them, so the ``x`` slices those programs
     share are still in the L2 cache when the next block row asks for them.
  2. **A decode path** for 1-16 tokens: there is almost no ``x`` to reuse, the weight bytes are
     everything, and a 8192-output layer has only 128 block rows of 64, fewer than the GPU's 132
     SMs can keep busy with enough loads in flight. So each block row's kept blocks are also
     **split** across ``SPLIT_K`` programs (split-K), each writing an fp32 partial sum that a final
     ``sum`` adds up. More programs means more bytes in flight, which is what bandwidth needs.

Everything accumulates in fp32, whatever the input dtype (fp16, bf16 or fp32).

The loop over a row's kept blocks exists twice: a ``for`` loop, which the GPU compiler
software-pipelines (the next blocks' loads are in flight while this block's ``tl.dot`` runs), and a
``while`` loop, accepted by every Triton version but never pipelined. See ``runtime.launch``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from labkit import checks
from labkit.kernels import runtime as rt

if rt.HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _bsr_block(acc, p, x_ptr, col_ptr, val_ptr, offs_m, offs_b, offs_nb, m_ok, K, NNZB, stride_xm,
                   BS: tl.constexpr, CAST_FP32: tl.constexpr):
        """One kept block: load its x slice and the block, and accumulate their product."""
        col = tl.load(col_ptr + p, mask=p < NNZB, other=0)
        k = col * BS + offs_b
        # x slice (BLOCK_M tokens x BS inputs): masked for the ragged last token tile and for a
        # weight whose K was padded up to a block multiple.
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                    mask=m_ok[:, None] & (k[None, :] < K) & (k[None, :] >= 0), other=0.0)
        # the kept block's rows offs_nb, read transposed (BS inputs x BLOCK_N outputs): y = x @ W.T
        w = tl.load(val_ptr + p * (BS * BS) + offs_nb[None, :] * BS + offs_b[:, None],  # p: int64 index
                    mask=(p < NNZB), other=0.0)
        if CAST_FP32:  # the interpreter computes bf16 wrongly: do it in fp32 there
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        return acc + tl.dot(a, w)

    # do_not_specialize: one compiled variant for every token count and shape (Triton otherwise
    # compiles a separate kernel when an int argument is 1 or a multiple of 16).
    @triton.jit(do_not_specialize=["M", "N", "K", "NNZB", "SPLIT_K"])
    def _bsr_linear_kernel(
        x_ptr, crow_ptr, col_ptr, val_ptr, bias_ptr, out_ptr,
        M, N, K, NNZB, SPLIT_K, stride_xm, stride_om, stride_os,
        BS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
        PARTIAL: tl.constexpr, HAS_BIAS: tl.constexpr, CAST_FP32: tl.constexpr, PIPELINE: tl.constexpr,
    ):
        # -- which tile am I? Grouped order: GROUP_M token tiles share each output tile in turn -------
        # An output tile is BLOCK_N of a block row's BS features (BLOCK_N = BS, except for decode,
        # where splitting a block row into BS // BLOCK_N tiles gives more programs).
        pid = tl.program_id(0)
        pid_k = tl.program_id(1)  # which slice of the row's kept blocks (split-K); 0 when SPLIT_K == 1
        num_m = tl.cdiv(M, BLOCK_M)
        num_n = tl.cdiv(N, BS) * (BS // BLOCK_N)
        in_group = GROUP_M * num_n
        first_m = (pid // in_group) * GROUP_M
        group_size = tl.minimum(num_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % group_size
        pid_n = (pid % in_group) // group_size
        row = pid_n // (BS // BLOCK_N)  # the block row this tile belongs to

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_b = tl.arange(0, BS)  # position inside a block along K
        offs_nb = (pid_n % (BS // BLOCK_N)) * BLOCK_N + tl.arange(0, BLOCK_N)  # ... and along N
        m_ok = offs_m < M

        # -- walk this block row's kept blocks: p = start + pid_k, start + pid_k + SPLIT_K, ... -------
        # (the launcher checked crow; the masks and the clamp keep even a bad one inside the arrays)
        row_ok = row < tl.cdiv(N, BS)
        start = tl.load(crow_ptr + row, mask=row_ok, other=0)
        end = tl.minimum(tl.load(crow_ptr + row + 1, mask=row_ok, other=0), NNZB)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if PIPELINE:  # `for`: the compiler loads the next blocks while this one's tl.dot runs
            for p in tl.range(start + pid_k, end, SPLIT_K):
                acc = _bsr_block(acc, p, x_ptr, col_ptr, val_ptr, offs_m, offs_b, offs_nb, m_ok, K, NNZB, stride_xm,
                                 BS, CAST_FP32)
        else:  # `while`: one block at a time, accepted by every Triton version
            p = start + pid_k
            while p < end:
                acc = _bsr_block(acc, p, x_ptr, col_ptr, val_ptr, offs_m, offs_b, offs_nb, m_ok, K, NNZB, stride_xm,
                                 BS, CAST_FP32)
                p += SPLIT_K

        # -- write: the finished tile (+ bias), or an fp32 partial sum for the split-K reduction ------
        offs_n = row * BS + offs_nb
        mask = m_ok[:, None] & (offs_n[None, :] < N)
        if not PARTIAL:
            if HAS_BIAS:
                acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
            tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :],
                     acc.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :], acc, mask=mask)

    def _cfg(block_m, group_m, warps, stages):
        return triton.Config({"BLOCK_M": block_m, "GROUP_M": group_m}, num_warps=warps, num_stages=stages)

    # Prefill: many tokens. Big token tiles give each loaded weight block more reuse.
    _prefill = triton.autotune(
        configs=rt.autotune_configs(
            [_cfg(64, 8, 4, 4), _cfg(128, 8, 4, 3), _cfg(128, 32, 8, 3), _cfg(256, 8, 8, 3)],
            _cfg(64, 8, 4, 1)),
        do_bench=rt.autotune_bench, key=["M", "N", "K", "BS", "NNZB"],
    )(_bsr_linear_kernel)

    # Decode: 1-16 tokens, one 16-row tile (the smallest tl.dot the GPU accepts); only the
    # pipelining depth and warps matter, split-K is chosen by the launcher.
    _decode = triton.autotune(
        configs=rt.autotune_configs(
            [triton.Config({"BLOCK_M": 16, "GROUP_M": 1}, num_warps=w, num_stages=s)
             for w, s in ((2, 3), (4, 3), (4, 4))],
            triton.Config({"BLOCK_M": 16, "GROUP_M": 1}, num_warps=4, num_stages=1)),
        do_bench=rt.autotune_bench, key=["N", "K", "BS", "NNZB", "SPLIT_K"],
    )(_bsr_linear_kernel)

#: Token counts up to this use the split-K decode path.
DECODE_MAX_TOKENS = 16


def check_bsr_weight(weight: torch.Tensor, x: torch.Tensor | None = None, validate: bool = True) -> int:
    """Validate a ``torch.sparse_bsr`` weight (and ``x`` against it); return the block size.

    ``validate`` also checks the index arrays (monotone ``crow_indices`` ending at the number of
    blocks, block columns in range): one pass over the indices and, on a GPU, a sync. Callers that
    packed the weight themselves and checked it once (:class:`labkit.sparse.SparseLinear`) skip it.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor in sparse_bsr layout, got {type(weight).__name__}")
    if weight.layout != torch.sparse_bsr:
        raise ValueError(f"weight must have layout torch.sparse_bsr, got {weight.layout}; "
                         "convert with weight.to_sparse_bsr((block, block))")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    bh, bw = weight.values().shape[-2:]
    if bh != bw:
        raise ValueError(f"weight blocks must be square, got {bh}x{bw}; use to_sparse_bsr((b, b))")
    rt.check_block(int(bh), "block size of weight")
    nnzb = weight.values().shape[0]
    if weight.shape[0] % bh or weight.shape[1] % bh:
        raise ValueError(f"weight shape {tuple(weight.shape)} is not a multiple of its {bh}x{bw} blocks")
    if validate:
        rt.check_compressed_rows(weight.crow_indices(), weight.col_indices(), weight.shape[0] // bh,
                                 weight.shape[1] // bh, nnzb)
    if weight.col_indices().dtype != torch.int64 and nnzb * bh * bw >= 2**31:
        raise ValueError("weight has int32 indices but more than 2**31 stored values; rebuild it with int64 "
                         "indices (torch's default for to_sparse_bsr)")
    if x is not None:
        rt.check_activations(x)
        rt.check_same(x, weight, "weight")
        k_pad = weight.shape[1]
        if not (k_pad - bh < x.shape[1] <= k_pad):
            raise ValueError(f"inner dimensions differ: x has {x.shape[1]} features but weight has {k_pad} "
                             f"inputs (x @ W.T needs x.shape[1] == weight.shape[1])")
    return int(bh)


def _out_features(weight: torch.Tensor, bs: int, out_features: int | None) -> int:
    """The logical output width: ``weight.shape[0]``, or less by under one block (a padded weight)."""
    if out_features is None:
        return weight.shape[0]
    n = checks.positive_int("out_features", out_features)
    if not (weight.shape[0] - bs < n <= weight.shape[0]):
        raise ValueError(f"out_features={n} must be within one block ({bs}) of weight.shape[0]={weight.shape[0]}: "
                         "a padded weight loses less than one block of rows")
    return n


def bsr_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               out_features: int | None = None, split_k: int | None = None, validate: bool = True) -> torch.Tensor:
    """``x @ weight.T + bias`` with a block-sparse weight in torch's ``sparse_bsr`` layout.

    Input contract (anything else raises a ValueError/TypeError naming the argument):

    Args:
        x: (M, K) contiguous activations, fp16, bf16 or fp32 (M may be 0).
        weight: (N_pad, K_pad) ``sparse_bsr`` tensor with square blocks (power of two, >= 16), same
            dtype and device as ``x``. ``K_pad`` may exceed ``K`` by less than a block (a weight
            zero-padded to whole blocks).
        bias: optional (out_features,) vector, same dtype and device.
        out_features: logical output width when the weight was padded (default ``N_pad``; at most
            one block less).
        split_k: force the decode path's split count, a positive int (default: enough programs to fill the GPU).
        validate: check the index arrays first (default). Pass False only for indices already
            checked, e.g. built by ``to_sparse_bsr`` and checked once by ``SparseLinear``.

    Returns (M, out_features) in ``x``'s dtype. Runs the Triton kernel where
    :func:`labkit.kernels.runtime.can_launch` says it can, else the plain-torch reference. It is
    the operator ``torch.ops.labkit.bsr_linear``: autograd and ``torch.utils.flop_counter`` see it.
    """
    bs = check_bsr_weight(weight, x, validate)
    n = _out_features(weight, bs, out_features)
    rt.check_bias(bias, x, n)
    split_k = rt.check_split_k(split_k)
    values = weight.values()
    return torch.ops.labkit.bsr_linear(x, weight.crow_indices(), weight.col_indices(),
                                       values if values.is_contiguous() else values.contiguous(), bias, n,
                                       split_k or 0, True)


def _launch(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
            n: int, split_k: int | None) -> torch.Tensor:
    """Launch the Triton kernel on checked inputs (what the operator runs where Triton can)."""
    m, k = x.shape
    if m == 0:
        return x.new_empty((0, n))
    bs = values.shape[-1]
    nnzb = values.shape[0]
    rows = crow.numel() - 1
    cast = rt.interpreting() and x.dtype == torch.bfloat16

    block_n = bs
    if m <= DECODE_MAX_TOKENS:
        # Aim for two programs per SM. First split block rows into narrower output tiles (no
        # extra work, no reduction); only if that is not enough, split each row's blocks (split-K).
        want = 2 * rt.num_sms(x.device)
        while block_n > 16 and rows * (bs // block_n) < want:
            block_n //= 2
        if split_k is None:
            avg = max(1, nnzb // max(1, rows))  # blocks per row: keep >= 4 per program
            split_k = max(1, min(16, -(-want // (rows * (bs // block_n))), avg // 4))
        kernel = _decode
    else:
        split_k = split_k or 1
        kernel = _prefill
    out, stride_os = rt.split_k_output(x, m, n, split_k)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * rows * (bs // block_n), split_k)

    rt.launch(lambda pipeline: kernel[grid](
        x, crow, col, values, bias if bias is not None else x, out, m, n, k, nnzb, split_k, x.stride(0), n, stride_os,
        BS=bs, BLOCK_N=block_n, PARTIAL=split_k > 1, HAS_BIAS=bias is not None and split_k == 1, CAST_FP32=cast,
        PIPELINE=pipeline))
    return rt.reduce_split_k(out, bias, x.dtype)


def _dense_weight(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The (n, k) dense weight of BSR arrays (padding cut off)."""
    bs = values.shape[-1]
    k_pad = -(-k // bs) * bs
    shape = ((crow.numel() - 1) * bs, k_pad)
    return torch.sparse_bsr_tensor(crow, col, values, shape, check_invariants=False).to_dense()[:n, :k]


# --------------------------------------------------------------------------------------------
# As a PyTorch operator: one entry point for the kernel and the torch path, with autograd and
# a FLOP formula (so torch.utils.flop_counter and labkit.energy.count_work see the kernel's work).
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("labkit::bsr_linear", mutates_args=(),
                         schema="(Tensor x, Tensor crow, Tensor col, Tensor values, Tensor? bias, int out_features, "
                                "int split_k, bool use_triton) -> Tensor")
def _bsr_op(x, crow, col, values, bias, out_features, split_k, use_triton):
    """``use_triton``: the kernel where it can launch; else (or False) the dense product of the stored weight."""
    if use_triton and rt.can_launch(x):
        return _launch(x, crow, col, values, bias, out_features, split_k or None)
    return rt.torch_linear(x, _dense_weight(crow, col, values, out_features, x.shape[1]), bias)


@_bsr_op.register_fake
def _(x, crow, col, values, bias, out_features, split_k, use_triton):
    return x.new_empty((x.shape[0], out_features))


def _bsr_setup(ctx, inputs, output):
    x, crow, col, values, bias, out_features, _, _ = inputs
    ctx.save_for_backward(x, crow, col, values)
    ctx.out_features = out_features


def _bsr_backward(ctx, grad):
    """Both gradients touch only the kept blocks (p: a kept block in block row r, block column c):

    * input:  ``grad_x[:, c] += grad[:, r] @ W_p``   (the transposed block-sparse product)
    * values: ``grad_W_p = grad[:, r].T @ x[:, c]``  (a dense-dense product sampled at the kept blocks)
    """
    x, crow, col, values = ctx.saved_tensors
    m, k = x.shape
    bs, rows = values.shape[-1], crow.numel() - 1
    cols = -(-k // bs)
    dtype = torch.float32 if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    block_row = torch.repeat_interleave(torch.arange(rows, device=x.device), crow.diff())  # r of each kept block
    g = F.pad(grad.to(dtype), (0, rows * bs - grad.shape[1])).reshape(m, rows, bs)[:, block_row]  # (m, nnzb, bs)
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        per_block = torch.einsum("mpi,pij->mpj", g, values.to(dtype))
        grad_x = torch.zeros(m, cols, bs, device=x.device, dtype=dtype).index_add_(1, col, per_block)
        grad_x = grad_x.reshape(m, cols * bs)[:, :k].to(x.dtype)
    if ctx.needs_input_grad[3]:
        xb = F.pad(x.to(dtype), (0, cols * bs - k)).reshape(m, cols, bs)[:, col]  # (m, nnzb, bs)
        grad_values = torch.einsum("mpi,mpj->pij", g, xb).to(values.dtype)
    if ctx.needs_input_grad[4]:
        grad_bias = grad.sum(0)
    return grad_x, None, None, grad_values, grad_bias, None, None, None


_bsr_op.register_autograd(_bsr_backward, setup_context=_bsr_setup)


@register_flop_formula(torch.ops.labkit.bsr_linear)
def _bsr_flops(x_shape, crow_shape, col_shape, values_shape, *args, out_shape=None, **kwargs) -> int:
    """2 FLOPs (multiply, add) per token and kept weight: ``2 * M * nnzb * bs * bs``."""
    return 2 * x_shape[0] * values_shape[0] * values_shape[1] * values_shape[2]


def bsr_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         out_features: int | None = None, validate: bool = True) -> torch.Tensor:
    """Plain torch: densify the weight and call ``F.linear`` (the answer the kernel must match).

    The same input contract as :func:`bsr_linear`.
    """
    bs = check_bsr_weight(weight, x, validate)
    n = _out_features(weight, bs, out_features)
    rt.check_bias(bias, x, n)
    return rt.torch_linear(x, weight.to_dense()[:n, : x.shape[1]], bias)


def program_schedule(m: int, n_rows: int, block_m: int = 64, group_m: int = 8) -> list[tuple[int, int]]:
    """``(token tile, block row)`` of each program id in launch order: the kernel's grouped order in Python.

    With ``group_m = 1`` one token tile sweeps every block row before the next tile starts; larger
    groups interleave ``group_m`` token tiles, so a block row's weights are reused while still in cache.
    """
    for name, v in (("m", m), ("n_rows", n_rows), ("block_m", block_m), ("group_m", group_m)):
        checks.positive_int(name, v)
    num_m = -(-m // block_m)
    order = []
    for pid in range(num_m * n_rows):
        in_group = group_m * n_rows
        first_m = (pid // in_group) * group_m
        size = min(num_m - first_m, group_m)
        order.append((first_m + (pid % in_group) % size, (pid % in_group) // size))
    return order


def row_blocks(weight: torch.Tensor) -> dict[int, list[int]]:
    """Block row -> the block columns its program visits (what ``crow_indices``/``col_indices`` encode)."""
    check_bsr_weight(weight)
    crow, col = weight.crow_indices().tolist(), weight.col_indices().tolist()
    return {r: col[crow[r]:crow[r + 1]] for r in range(len(crow) - 1)}


def kernel_source() -> str:
    """The text of the ``@triton.jit`` kernel above, for reading in a notebook (works without triton)."""
    import textwrap
    from pathlib import Path

    text = Path(__file__).read_text()
    start = text.index("    @triton.jit\n    def _bsr_block")
    end = text.index("    def _cfg")
    return textwrap.dedent(text[start:end]).rstrip() + "\n"
