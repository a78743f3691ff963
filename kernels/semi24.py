"""2:4 semi-structured sparsity: the lab's packed format, pack/unpack, and a kernel that reads it.

The idea
--------
In a 2:4 sparse weight every group of 4 consecutive inputs (along K) holds at most 2 nonzeros.
So we store, per group, only the 2 kept values plus *where* they were: two positions 0..3, two
bits each. Our packed format, for a weight ``W`` of shape (N, K) with K a multiple of 8:

* ``values``: (N, K/2), same dtype as W. Group g's kept values sit at ``values[:, 2g]`` and
  ``values[:, 2g+1]``, in increasing position order.
* ``meta``: (N, K/8), uint8. One byte describes two groups: the low nibble group ``2j``, the high
  nibble group ``2j+1``. A nibble is ``i0 | (i1 << 2)`` with ``i0 < i1`` the kept positions.
  A group with fewer than 2 nonzeros keeps zeros at its lowest free positions.

Example: the row ``[0, 5, 0, 7,  1, 0, 0, 0]`` packs to values ``[5, 7, 1, 0]`` and one meta byte:
group 0 kept positions 1 and 3 -> ``1 | 3<<2 = 13``; group 1 kept 0 and (padding) 1 -> ``0 | 1<<2 = 4``;
byte = ``13 | 4<<4 = 77``.

(NVIDIA's hardware format stores the same information, 2-bit indices per kept value, but in an
interleaved order built for its sparse tensor cores; PyTorch's own comment calls that reordering
code impossible to understand. Ours is the readable version.)

Byte arithmetic (fp16/bf16, 2 bytes per value)
----------------------------------------------
Per 4 dense weights: 2 values x 2 B + 2 indices x 2 bits = 4 B + 0.5 B = **4.5 B instead of 8 B**.
With 1-16 tokens a linear layer is memory-bound (it reads every weight byte to do 2 FLOPs per
byte and token), so the ideal speedup there is 8 / 4.5 = **1.78x**.

Triton cannot reach the GPU's sparse tensor cores (no ``mma.sp`` in upstream Triton), so the
kernel rebuilds the dense tile in registers and calls an ordinary ``tl.dot``: it saves *bytes*,
not FLOPs. With many tokens the layer is compute-bound and its ideal is 1.0x; there
:class:`labkit.sparse.SparseLinear` dispatches to ``torch.sparse.to_sparse_semi_structured``
(cuSPARSELt / CUTLASS, which do use sparse tensor cores) when that is measured to be faster.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from labkit.kernels import runtime as rt

if rt.HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["M", "N", "K", "SPLIT_K"])  # one compiled variant for all shapes
    def _semi24_linear_kernel(
        x_ptr, val_ptr, meta_ptr, bias_ptr, out_ptr,
        M, N, K, SPLIT_K, stride_xm, stride_vn, stride_mn, stride_om, stride_os,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        PARTIAL: tl.constexpr, HAS_BIAS: tl.constexpr, CAST_FP32: tl.constexpr,
    ):
        # grouped program order, as in Triton's matmul tutorial, so neighbouring programs share tiles in L2
        pid = tl.program_id(0)
        pid_k = tl.program_id(1)
        num_m = tl.cdiv(M, BLOCK_M)
        num_n = tl.cdiv(N, BLOCK_N)
        in_group = GROUP_M * num_n
        first_m = (pid // in_group) * GROUP_M
        group_size = tl.minimum(num_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % group_size
        pid_n = (pid % in_group) // group_size

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = offs_m < M
        n_ok = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

        # this program's K chunks: pid_k, pid_k + SPLIT_K, ... (bounds are arguments, not loaded from
        # memory, so a `for` loop is fine everywhere, and the compiler pipelines its loads)
        for chunk in tl.range(pid_k, tl.cdiv(K, BLOCK_K), SPLIT_K):
            offs_k = chunk * BLOCK_K + tl.arange(0, BLOCK_K)  # dense input positions
            k_ok = offs_k < K
            a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                        mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            # Rebuild the dense (BLOCK_N x BLOCK_K) tile of W from the packed weight. Both loads are
            # contiguous rows (vectorized on a GPU); the unpacking happens in registers.
            offs_v = chunk * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)  # packed value columns
            offs_b = chunk * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)  # meta byte columns
            vals = tl.load(val_ptr + offs_n[:, None] * stride_vn + offs_v[None, :],
                           mask=n_ok[:, None] & (offs_v[None, :] < K // 2), other=0.0)
            byte = tl.load(meta_ptr + offs_n[:, None] * stride_mn + offs_b[None, :],
                           mask=n_ok[:, None] & (offs_b[None, :] < K // 8), other=0).to(tl.int32)
            v0, v1 = tl.split(tl.reshape(vals, (BLOCK_N, BLOCK_K // 4, 2)))  # each group's 2 kept values
            nibble = tl.reshape(tl.join(byte & 0xF, byte >> 4), (BLOCK_N, BLOCK_K // 4))  # one per group
            i0 = (nibble & 3)[:, :, None]  # the kept positions, 0..3
            i1 = (nibble >> 2)[:, :, None]
            pos = tl.arange(0, 4)[None, None, :]
            w = tl.where(i0 == pos, v0[:, :, None], tl.where(i1 == pos, v1[:, :, None], 0.0))
            w = tl.trans(tl.reshape(w, (BLOCK_N, BLOCK_K)))  # (BLOCK_K x BLOCK_N) for y = x @ W.T
            if CAST_FP32:  # the interpreter computes bf16 wrongly: do it in fp32 there
                a = a.to(tl.float32)
                w = w.to(tl.float32)
            acc += tl.dot(a, w.to(a.dtype))

        mask = m_ok[:, None] & n_ok[None, :]
        if not PARTIAL:
            if HAS_BIAS:
                acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
                     mask=mask)
        else:
            tl.store(out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :], acc, mask=mask)

    _prefill = triton.autotune(
        configs=rt.autotune_configs(
            [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "GROUP_M": 8}, num_warps=w, num_stages=s)
             for bm, bn, w, s in ((64, 64, 4, 4), (128, 64, 4, 3), (128, 128, 8, 3), (64, 128, 4, 3))],
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "GROUP_M": 8}, num_warps=4, num_stages=1)),
        do_bench=rt.autotune_bench, key=["M", "N", "K"],
    )
    _decode = triton.autotune(
        configs=rt.autotune_configs(
            [triton.Config({"BLOCK_M": 16, "GROUP_M": 1}, num_warps=w, num_stages=s)
             for w, s in ((4, 3), (4, 4), (8, 3), (2, 4))],
            triton.Config({"BLOCK_M": 16, "GROUP_M": 1}, num_warps=4, num_stages=1)),
        do_bench=rt.autotune_bench, key=["N", "K", "SPLIT_K", "BLOCK_N"],
    )
    _prefill = _prefill(_semi24_linear_kernel)
    _decode = _decode(_semi24_linear_kernel)

#: Dense inputs per K step of the kernel (a multiple of 8, >= 16 for tl.dot).
BLOCK_K = 64
DECODE_MAX_TOKENS = 16


def pack_24(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a 2:4 sparse dense weight (N, K) into ``(values (N, K/2), meta (N, K/8) uint8)``.

    Contract: a dense 2-D floating tensor with K a multiple of 8 and at most 2 nonzeros in each
    group of 4 along K (else a ValueError/TypeError). The metadata it writes is always valid.
    """
    if not isinstance(weight, torch.Tensor) or weight.layout != torch.strided:
        raise TypeError("weight must be a dense torch.Tensor (prune it to 2:4 first)")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if k % 8:
        raise ValueError(f"in_features={k} must be a multiple of 8 for the 2:4 format; zero-pad the weight's columns")
    groups = (weight != 0).reshape(n, k // 4, 4)
    worst = int(groups.sum(-1).max()) if groups.numel() else 0
    if worst > 2:
        raise ValueError(f"weight is not 2:4 sparse: a group of 4 inputs holds {worst} nonzeros; "
                         "prune it first (keep the 2 largest of every 4)")
    pos = torch.arange(4, device=weight.device)
    # nonzeros first, then the lowest free positions; then sort so that i0 < i1
    key = groups.to(torch.int64) * 8 + (3 - pos)
    idx = key.topk(2, dim=-1).indices.sort(dim=-1).values  # (n, k/4, 2)
    values = weight.reshape(n, k // 4, 4).gather(-1, idx).reshape(n, k // 2).contiguous()
    nib = (idx[..., 0] | (idx[..., 1] << 2)).reshape(n, k // 8, 2)
    meta = (nib[..., 0] | (nib[..., 1] << 4)).to(torch.uint8).contiguous()
    return values, meta


def unpack_24(values: torch.Tensor, meta: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """The dense (N, K) weight back from ``pack_24``'s output (the plain-torch decoder).

    ``values`` may be any floating dtype (float64 too); ``validate`` checks ``meta`` first.
    """
    _check_packed(values, meta, validate)
    n, half = values.shape
    m = meta.to(torch.int64)
    nib = torch.stack([m & 0xF, m >> 4], dim=-1).reshape(n, half // 2)  # one nibble per group
    idx = torch.stack([nib & 3, nib >> 2], dim=-1)  # (n, k/4, 2)
    dense = torch.zeros(n, half // 2, 4, dtype=values.dtype, device=values.device)
    dense.scatter_(-1, idx, values.reshape(n, half // 2, 2))
    return dense.reshape(n, 2 * half)


def check_meta(meta: torch.Tensor) -> None:
    """Every 4-bit group descriptor of ``meta`` names two *different* kept positions ``i0 < i1``.

    A hand-made byte such as 0 (both indices 0) would make the kernel and the reference disagree:
    two values written to one position. ``pack_24`` always writes ``i0 < i1``.
    """
    m = meta.to(torch.int32)
    nibbles = torch.stack([m & 0xF, m >> 4])
    bad = (nibbles & 3) >= (nibbles >> 2)
    if bool(bad.any()):
        row = int(bad.any(0).nonzero()[0, 0])
        raise ValueError(f"meta is not valid 2:4 metadata: row {row} has a group whose two kept positions are "
                         "not increasing and distinct (each nibble is i0 | i1 << 2 with i0 < i1); build it with "
                         "pack_24(weight)")


def _check_packed(values: torch.Tensor, meta: torch.Tensor, validate: bool = True) -> None:
    for name, t in (("values", values), ("meta", meta)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor from pack_24, got {type(t).__name__}")
        if t.layout != torch.strided or t.dim() != 2:
            raise ValueError(f"{name} must be a dense 2-D tensor from pack_24, got shape {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} is not contiguous; call .contiguous() or repack with pack_24")
    if meta.dtype != torch.uint8:
        raise TypeError(f"meta must be uint8 (two 4-bit group descriptors per byte), got {meta.dtype}")
    if not values.is_floating_point():
        raise TypeError(f"values has dtype {values.dtype}; use float16, bfloat16 or float32")
    if meta.device != values.device:
        raise ValueError(f"meta is on {meta.device} but values on {values.device}; move both to one device")
    if meta.shape != (values.shape[0], values.shape[1] // 4) or values.shape[1] % 4:
        raise ValueError(f"values {tuple(values.shape)} and meta {tuple(meta.shape)} do not fit together: "
                         "expected values (N, K/2) and meta (N, K/8)")
    if validate:
        check_meta(meta)


def semi24_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                  bias: torch.Tensor | None = None, split_k: int | None = None, validate: bool = True) -> torch.Tensor:
    """``x @ W.T + bias`` where ``W`` is given packed as ``(values, meta)`` (see the module docstring).

    Input contract (anything else raises a ValueError/TypeError naming the argument):

    Args:
        x: (M, K) contiguous activations; fp16, bf16 or fp32 matching ``values`` (M may be 0).
        values, meta: the output of :func:`pack_24` for a (N, K) weight, K a multiple of 8:
            values (N, K/2) in ``x``'s dtype, meta (N, K/8) uint8, both contiguous on ``x``'s device.
        bias: optional (N,) vector.
        split_k: force the decode path's split over K, a positive int (default: enough programs to fill the GPU).
        validate: check every meta nibble first (default); pass False only for metadata from
            ``pack_24`` or checked once, as ``SparseLinear`` does.

    Returns (M, N) in ``x``'s dtype.
    """
    rt.check_activations(x)
    _check_packed(values, meta, validate)
    rt.check_same(x, values, "values")
    if meta.device != x.device:
        raise ValueError(f"meta is on {meta.device} but x is on {x.device}; move both to the same device")
    n, k = values.shape[0], 2 * values.shape[1]
    if x.shape[1] != k:
        raise ValueError(f"inner dimensions differ: x has {x.shape[1]} features but the packed weight has {k}")
    rt.check_bias(bias, x, n)
    split_k = rt.check_split_k(split_k)
    return torch.ops.labkit.semi24_linear(x, values, meta, bias, split_k or 0, True)


def _launch(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
            split_k: int | None) -> torch.Tensor:
    """Launch the Triton kernel on checked, non-empty inputs (what the operator runs where Triton can)."""
    m, k = x.shape
    n = values.shape[0]
    chunks = triton.cdiv(k, BLOCK_K)
    extra = {}
    if m <= DECODE_MAX_TOKENS:
        # about two programs per SM: narrower output tiles first, then split-K (>= 4 K chunks each)
        want, block_n = 2 * rt.num_sms(x.device), 64
        while block_n > 16 and triton.cdiv(n, block_n) < want:
            block_n //= 2
        if split_k is None:
            split_k = max(1, min(16, -(-want // triton.cdiv(n, block_n)), chunks // 4))
        kernel, extra = _decode, {"BLOCK_N": block_n}
    else:
        split_k = split_k or 1
        kernel = _prefill
    split_k = min(split_k, chunks)
    out, stride_os = rt.split_k_output(x, m, n, split_k)

    def grid(meta_):
        return (triton.cdiv(m, meta_["BLOCK_M"]) * triton.cdiv(n, meta_["BLOCK_N"]), split_k)

    kernel[grid](x, values, meta, bias if bias is not None else x, out,
                 m, n, k, split_k, x.stride(0), values.stride(0), meta.stride(0), n, stride_os,
                 BLOCK_K=BLOCK_K, PARTIAL=split_k > 1, HAS_BIAS=bias is not None and split_k == 1,
                 CAST_FP32=rt.interpreting() and x.dtype == torch.bfloat16, **extra)
    return rt.reduce_split_k(out, bias, x.dtype)


def kept_positions(meta: torch.Tensor) -> torch.Tensor:
    """(N, K/2) int64: the dense input column of each stored value (``4 * group + i0`` or ``+ i1``)."""
    m = meta.to(torch.int64)
    n, bytes_ = m.shape
    nib = torch.stack([m & 0xF, m >> 4], dim=-1).reshape(n, 2 * bytes_)  # one nibble per group
    idx = torch.stack([nib & 3, nib >> 2], dim=-1)  # (n, k/4, 2)
    group = torch.arange(2 * bytes_, device=meta.device)[None, :, None]
    return (4 * group + idx).reshape(n, 4 * bytes_)


# --------------------------------------------------------------------------------------------
# As a PyTorch operator: autograd and a FLOP formula (see bsr_linear.py for the pattern)
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("labkit::semi24_linear", mutates_args=(),
                         schema="(Tensor x, Tensor values, Tensor meta, Tensor? bias, int split_k, "
                                "bool use_triton) -> Tensor")
def _semi24_op(x, values, meta, bias, split_k, use_triton):
    """``use_triton``: the kernel where it can launch; else (or False) the dense product of the unpacked weight."""
    if use_triton and rt.can_launch(x) and x.shape[0] and values.shape[0] and values.shape[1]:
        return _launch(x, values, meta, bias, split_k or None)
    return rt.torch_linear(x, unpack_24(values, meta, validate=False), bias)


@_semi24_op.register_fake
def _(x, values, meta, bias, split_k, use_triton):
    return x.new_empty((x.shape[0], values.shape[0]))


def _semi24_setup(ctx, inputs, output):
    x, values, meta, _, _, _ = inputs
    ctx.save_for_backward(x, values, meta)


def _semi24_backward(ctx, grad):
    """* input: ``grad_x = grad @ W`` with ``W`` unpacked (half its entries are zero by construction);
    * values: ``grad_W = grad^T @ x`` read at each stored value's column (:func:`kept_positions`).
      This computes the full (N, K) product and keeps half of it: for 2:4 only 2x the sampled work."""
    x, values, meta = ctx.saved_tensors
    dtype = torch.float32 if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    g = grad.to(dtype)
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = (g @ unpack_24(values, meta, validate=False).to(dtype)).to(x.dtype)
    if ctx.needs_input_grad[1]:
        grad_values = (g.t() @ x.to(dtype)).gather(1, kept_positions(meta)).to(values.dtype)
    if ctx.needs_input_grad[3]:
        grad_bias = grad.sum(0)
    return grad_x, grad_values, None, grad_bias, None, None


_semi24_op.register_autograd(_semi24_backward, setup_context=_semi24_setup)


@register_flop_formula(torch.ops.labkit.semi24_linear)
def _semi24_flops(x_shape, values_shape, *args, out_shape=None, **kwargs) -> int:
    """2 FLOPs per token and stored value (half the dense weight): ``2 * M * N * K / 2``.

    (The GPU kernel rebuilds dense tiles and multiplies the zeros too, see the module docstring:
    this counts the arithmetic the layer needs, as for a sparse tensor core.)"""
    return 2 * x_shape[0] * values_shape[0] * values_shape[1]


def semi24_linear_reference(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                            bias: torch.Tensor | None = None, validate: bool = True) -> torch.Tensor:
    """Plain torch: unpack to dense and call ``F.linear``. The same input contract as :func:`semi24_linear`."""
    rt.check_activations(x)
    w = unpack_24(values, meta, validate)
    rt.check_same(x, w, "values")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"inner dimensions differ: x has {x.shape[1]} features but the packed weight has {w.shape[1]}")
    rt.check_bias(bias, x, w.shape[0])
    return rt.torch_linear(x, w, bias)


def bytes_per_weight(dtype: torch.dtype = torch.float16) -> float:
    """Stored bytes per *dense* weight position in this format (0.5625 x dense for fp16)."""
    s = torch.finfo(dtype).bits / 8
    return (2 * s + 0.5) / 4
