"""Activation sparsity at decode: a GEMV that skips the weight columns small inputs would multiply.

The idea
--------
At decode a language model runs one token at a time, so every linear layer is a matrix-vector
product ``y = W x`` (W of shape (N, K): N outputs, K inputs). TEAL (Liu et al. 2024, "Training-Free
Activation Sparsity in Large Language Models"), like Deja Vu and CATS before it, observes that
many of the inputs ``x_j`` are tiny: treat every ``|x_j| <= threshold`` as exactly zero and the
product changes little, but the whole column ``W[:, j]`` that ``x_j`` would multiply no longer
has to be read. Nothing about the *weight* is sparse; which columns are skipped changes with
every token.

The layout that makes a skipped input cheap (TEAL's): store the weight **transposed**, ``W^T`` of
shape (K, N), row-major. Then input ``j`` multiplies row ``j`` of ``W^T``: N *contiguous* values, so
skipping it skips whole memory transactions instead of one value in every row. :func:`prepare`
builds that copy once, when the model is loaded. Each program owns ``BLOCK_N`` outputs, walks K
``BLOCK_K`` inputs at a time and

1. loads the chunk of ``x`` and computes ``keep = |x| > threshold``;
2. loads the ``BLOCK_K x BLOCK_N`` tile of ``W^T`` with the mask ``keep[:, None] & n_ok[None, :]``:
   on a GPU a masked-off lane issues no memory transaction, so a skipped input costs no bytes;
3. accumulates ``x_j * W^T[j, :]`` in fp32 (every load is cast to fp32 first, which also keeps
   the Triton interpreter's bf16 honest).

When the N outputs give too few programs to keep every SM busy (a 4096-wide layer is 32 tiles of
128), the K range is split over ``split_k`` programs that write fp32 partial sums, added up after
the kernel (no atomics, so results are deterministic; the same scheme as ``semi24.py``'s decode path).
That sum is one or two more small launches, a few microseconds against a GEMV of 10-30 us:
``benchmarks/sparse_gemv.py`` also times ``split_k = 1`` so a GPU run shows what the split costs and buys
(:func:`plan` is the choice).

Byte arithmetic
---------------
A decode GEMV does 2 FLOPs per weight it reads, far below any GPU's ridge point: it is
memory-bound, its time is bytes / bandwidth. With a share ``s`` of the inputs skipped (the
*activation sparsity*) and ``b`` bytes per weight:

    bytes read  ~  (1 - s) * K * N * b   +   K * b (x)   +   N * b (y)

so the ideal speedup over a dense GEMV is ``1 / (1 - s)``: 2x at 50 %, 3.3x at 70 %. TEAL reports
1.53x and 1.8x end-to-end decode at 40 % and 50 % model-wide sparsity: less, because only the
linear layers shrink and every kept row still arrives in ``BLOCK_N``-wide pieces. :func:`gemv_bytes`
computes the formula; ``benchmarks/sparse_gemv.py`` measures it.

Why only at batch 1
-------------------
Each token skips its *own* inputs. With several tokens in one call, a weight row can be skipped
only if every token skips it: the bytes follow the *union* of kept inputs. If each token kept a
random half, 4 tokens would already need ``1 - 0.5**4 = 94 %`` of the rows and 8 tokens 99.6 %;
prefill (hundreds of tokens) needs them all, and there a dense GEMM on tensor cores wins. So this
kernel takes at most :data:`MAX_TOKENS` rows (each row is its own program, re-reading its own kept
weight rows; a GPU's L2 absorbs part of the overlap) and is meant for ``M = 1``.

Thresholds
----------
``threshold = 0.0`` means dense, exactly: ``|x| > 0`` keeps every nonzero input, and the inputs it
drops are zeros, which add nothing. TEAL picks one threshold per layer offline, from the
distribution of that layer's inputs on calibration text, so that a target share ``s`` falls below
it: :func:`calibrate_threshold` does that from a sample of activations.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from labkit import checks
from labkit.kernels import runtime as rt

if rt.HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["N", "K", "SPLIT_K"])  # one compiled variant for all shapes
    def _sparse_gemv_kernel(
        x_ptr, wt_ptr, bias_ptr, out_ptr,
        N, K, SPLIT_K, threshold, stride_xm, stride_wk, stride_om, stride_os,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PARTIAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)  # which share of K (split-K)
        row = tl.program_id(2)  # which token (decode: only 0)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        x_row = x_ptr + row.to(tl.int64) * stride_xm
        acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)  # one partial sum per lane, reduced once at the end

        # this program's K chunks: pid_k, pid_k + SPLIT_K, ... (bounds are arguments, not loaded from
        # memory, so a `for` loop is fine everywhere, and the compiler pipelines its loads)
        for chunk in tl.range(pid_k, tl.cdiv(K, BLOCK_K), SPLIT_K):
            offs_k = chunk * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            xs = tl.load(x_row + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            keep = (tl.abs(xs) > threshold) & k_ok  # the inputs that count; the rest are skipped
            # one kept input = one contiguous row of W^T; a skipped one issues no memory transaction
            w = tl.load(wt_ptr + offs_k[:, None].to(tl.int64) * stride_wk + offs_n[None, :],
                        mask=keep[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
            acc += w * xs[:, None]  # CUDA-core FMAs (a GEMV has no tile for tl.dot)
        y = tl.sum(acc, axis=0)

        if not PARTIAL:
            if HAS_BIAS:
                y += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
            tl.store(out_ptr + row.to(tl.int64) * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_ok)
        else:
            tl.store(out_ptr + pid_k.to(tl.int64) * stride_os + row.to(tl.int64) * stride_om + offs_n, y,
                     mask=n_ok)

    _sparse_gemv_tuned = triton.autotune(
        configs=rt.autotune_configs(
            [triton.Config({"BLOCK_K": bk}, num_warps=w, num_stages=s)
             for bk, w, s in ((32, 4, 3), (64, 4, 3), (32, 8, 4), (16, 4, 4))],
            triton.Config({"BLOCK_K": 64}, num_warps=4, num_stages=1)),
        do_bench=rt.autotune_bench, key=["N", "K", "SPLIT_K", "BLOCK_N"],
    )(_sparse_gemv_kernel)

#: The most tokens (rows of ``x``) one call takes: beyond a few, the union of kept inputs is nearly
#: every input (see "Why only at batch 1"), and dense ``F.linear`` is the right call.
MAX_TOKENS = 8


def prepare(weight: torch.Tensor) -> torch.Tensor:
    """The transposed, contiguous copy ``W^T`` (K, N) of an ``nn.Linear`` weight (N, K): do it once, at load.

    Contract: a dense 2-D fp16, bf16 or fp32 tensor (else a ValueError/TypeError naming ``weight``).
    The copy costs as much memory as the weight; the original can be dropped afterwards.
    """
    checks.tensor("weight", weight, dim=2, dtypes=rt.DTYPES)
    if weight.layout != torch.strided:
        raise ValueError(f"weight must be a dense (strided) tensor, got layout {weight.layout}; "
                         "call weight.to_dense() first")
    return weight.t().contiguous()


def keep_mask(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``|x| > threshold`` exactly as the kernel decides it: ``x`` in fp32 against the fp32 threshold."""
    return x.float().abs() > torch.tensor(float(threshold), dtype=torch.float32).item()


def kept_share(x: torch.Tensor, threshold: float) -> float:
    """Share of the inputs the kernel keeps (1 - activation sparsity); 1.0 for an empty ``x``."""
    checks.tensor("x", x)
    threshold = checks.finite("threshold", threshold, low=0.0)
    return keep_mask(x, threshold).float().mean().item() if x.numel() else 1.0


def calibrate_threshold(activations: torch.Tensor, sparsity: float) -> float:
    """The threshold that skips a share ``sparsity`` of ``activations`` (TEAL's per-layer calibration).

    ``activations``: inputs of one layer seen on calibration text (any shape); ``sparsity`` in [0, 1).
    Returns the ``k``-th smallest ``|x|`` with ``k = round(sparsity * numel)`` (0.0 for ``k = 0``, which
    is dense exactly), so ``|x| <= threshold`` holds for ``k`` of the values, ties aside.
    """
    checks.tensor("activations", activations, nonempty=True, all_finite=True)
    if not activations.is_floating_point():
        raise TypeError(f"activations must be floating point, got {activations.dtype}")
    sparsity = checks.fraction("sparsity", sparsity)
    mags = activations.detach().float().abs().flatten()
    k = round(sparsity * mags.numel())
    return 0.0 if k == 0 else float(mags.kthvalue(k).values)


def gemv_bytes(n: int, k: int, kept: float, element_size: int = 2, tokens: int = 1) -> float:
    """Bytes a sparse GEMV must move: ``kept * K * N`` weights, plus ``x`` and ``y`` (the module's formula).

    ``kept`` is the share of inputs kept (1 - activation sparsity) in [0, 1]; ``tokens`` rows of ``x``,
    each re-reading its own kept weight rows (no cache assumed).
    """
    n, k = checks.positive_int("n", n), checks.positive_int("k", k)
    kept = checks.fraction("kept", kept, include_high=True)
    element_size = checks.positive_int("element_size", element_size)
    tokens = checks.positive_int("tokens", tokens)
    return float(tokens * (kept * k * n + k + n) * element_size)


def _check_inputs(x: torch.Tensor, weight_t: torch.Tensor, threshold: object,
                  bias: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """Validate the launcher's inputs; return ``x`` as 2-D (tokens, K) and the threshold as a float."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (1, 2):
        raise ValueError(f"x must be 1-D (features) for one token or 2-D (tokens, features), got shape "
                         f"{tuple(x.shape)}; at decode pass the token's vector, e.g. x.reshape(-1, x.shape[-1])")
    x2 = x.unsqueeze(0) if x.dim() == 1 else x  # one token given as a vector (a view: strides are kept)
    rt.check_activations(x2)
    if not isinstance(weight_t, torch.Tensor):
        raise TypeError(f"weight_t must be a torch.Tensor (the transposed weight from prepare(weight)), "
                        f"got {type(weight_t).__name__}")
    if weight_t.layout != torch.strided or weight_t.dim() != 2:
        raise ValueError(f"weight_t must be a dense 2-D tensor (in_features, out_features) from prepare(weight), "
                         f"got shape {tuple(weight_t.shape)}")
    rt.check_same(x2, weight_t, "weight_t")
    if not weight_t.is_contiguous():
        raise ValueError(f"weight_t is not contiguous (strides {weight_t.stride()}): pass prepare(weight), "
                         "the row-major copy of W^T, not the view weight.t()")
    k, n = weight_t.shape
    if x2.shape[1] != k:
        hint = (" (weight_t looks like W itself: build W^T with prepare(weight))" if x2.shape[1] == n else "")
        raise ValueError(f"inner dimensions differ: x has {x2.shape[1]} features but weight_t has {k} rows "
                         f"(weight_t is W^T, shape (in_features, out_features)){hint}")
    if x2.shape[0] > MAX_TOKENS:
        raise ValueError(f"x has {x2.shape[0]} tokens; sparse_gemv takes at most {MAX_TOKENS} (decode is 1): "
                         "with many tokens nearly every input is kept by one of them, so use dense F.linear")
    threshold = checks.finite("threshold", threshold, low=0.0)
    rt.check_bias(bias, x2, n)
    return x2, threshold


def sparse_gemv(x: torch.Tensor, weight_t: torch.Tensor, threshold: float, bias: torch.Tensor | None = None,
                split_k: int | None = None) -> torch.Tensor:
    """``y = (x * (|x| > threshold)) @ W.T + bias``, reading only the rows of ``W^T`` that kept inputs need.

    Input contract (anything else raises a ValueError/TypeError naming the argument):

    Args:
        x: (K,) one token, or (M, K) with 1 <= M <= :data:`MAX_TOKENS` (M may be 0); contiguous,
            fp16, bf16 or fp32.
        weight_t: (K, N) contiguous ``W^T`` from :func:`prepare`, in ``x``'s dtype and on its device.
        threshold: a finite number >= 0; inputs with ``|x| <= threshold`` are skipped. 0.0 is dense exactly.
        bias: optional (N,) vector.
        split_k: force the split of K over programs, a positive int (default: enough programs to fill the GPU).

    Returns (N,) for a vector ``x``, else (M, N), in ``x``'s dtype.
    """
    x2, threshold = _check_inputs(x, weight_t, threshold, bias)
    split_k = rt.check_split_k(split_k)
    y = torch.ops.labkit.sparse_gemv(x2, weight_t, threshold, bias, split_k or 0, True)
    return y.reshape(-1) if x.dim() == 1 else y


def plan(m: int, n: int, k: int, device: torch.device | str, split_k: int | None = None) -> tuple[int, int]:
    """``(BLOCK_N, split_k)`` of a launch: about two programs per SM for ``m`` tokens of a (K, N) ``W^T``.

    Output tiles narrow from 128 to 64 columns first (64 fp16 values = one 128-byte cache line per kept
    row, the narrowest tile that still reads whole lines), then K is split, each split keeping at least
    4 chunks of 64 inputs. A given ``split_k`` is kept (capped at the number of 16-input chunks).
    """
    want, block_n = 2 * rt.num_sms(torch.device(device)), 128
    while block_n > 64 and -(-n // block_n) * m < want:
        block_n //= 2
    if split_k is None:
        split_k = max(1, min(16, -(-want // (-(-n // block_n) * m)), -(-k // 64) // 4))
    return block_n, max(1, min(split_k, -(-k // 16)))


def _launch(x: torch.Tensor, weight_t: torch.Tensor, threshold: float, bias: torch.Tensor | None,
            split_k: int | None) -> torch.Tensor:
    """Launch the Triton kernel on checked, non-empty inputs (what the operator runs where Triton can)."""
    m, k = x.shape
    n = weight_t.shape[1]
    threshold = torch.tensor(threshold, dtype=torch.float32).item()  # the kernel compares in fp32, as keep_mask
    block_n, split_k = plan(m, n, k, x.device, split_k)
    out, stride_os = rt.split_k_output(x, m, n, split_k)
    grid = (triton.cdiv(n, block_n), split_k, m)
    _sparse_gemv_tuned[grid](x, weight_t, bias if bias is not None else x, out,
                             n, k, split_k, threshold, x.stride(0), weight_t.stride(0), out.stride(-2), stride_os,
                             BLOCK_N=block_n, PARTIAL=split_k > 1, HAS_BIAS=bias is not None and split_k == 1)
    return rt.reduce_split_k(out, bias, x.dtype)


def _torch_sparse_gemv(x: torch.Tensor, weight_t: torch.Tensor, threshold: float,
                       bias: torch.Tensor | None) -> torch.Tensor:
    """Plain torch, the same algorithm: gather the rows of ``W^T`` some token keeps, multiply only those.

    Rows no token keeps are never read (as in the kernel); for several tokens the rows are the union of
    their kept inputs, and each token's own skipped inputs are zeroed.
    """
    keep = keep_mask(x, threshold)
    rows = keep.any(0).nonzero().squeeze(1)
    xs = (x * keep.to(x.dtype)).index_select(1, rows)
    return rt.torch_linear(xs, weight_t.index_select(0, rows).t(), bias).contiguous()


# --------------------------------------------------------------------------------------------
# As a PyTorch operator: autograd and a FLOP formula (see bsr_linear.py for the pattern)
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("labkit::sparse_gemv", mutates_args=(),
                         schema="(Tensor x, Tensor weight_t, float threshold, Tensor? bias, int split_k, "
                                "bool use_triton) -> Tensor")
def _sparse_gemv_op(x, weight_t, threshold, bias, split_k, use_triton):
    """``use_triton``: the kernel where it can launch; else (or False) the masked dense product in torch."""
    if use_triton and rt.can_launch(x) and x.shape[0] and x.shape[1] and weight_t.shape[1]:
        return _launch(x, weight_t, threshold, bias, split_k or None)
    return _torch_sparse_gemv(x, weight_t, threshold, bias)


@_sparse_gemv_op.register_fake
def _(x, weight_t, threshold, bias, split_k, use_triton):
    return x.new_empty((x.shape[0], weight_t.shape[1]))


def _sparse_gemv_setup(ctx, inputs, output):
    x, weight_t, threshold, _, _, _ = inputs
    ctx.save_for_backward(x, weight_t)
    ctx.threshold = threshold


def _sparse_gemv_backward(ctx, grad):
    """The threshold acts as a fixed 0/1 mask on ``x`` (its derivative is zero almost everywhere), so:

    * input:   ``grad_x = (grad @ W) * keep``: skipped inputs get no gradient;
    * weight:  ``grad_W^T = (x * keep)^T @ grad``: rows of skipped inputs get none either.
    """
    x, weight_t = ctx.saved_tensors
    dtype = torch.float32 if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    keep = keep_mask(x, ctx.threshold).to(dtype)
    g = grad.to(dtype)
    grad_x = grad_w = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = ((g @ weight_t.to(dtype).t()) * keep).to(x.dtype)
    if ctx.needs_input_grad[1]:
        grad_w = ((x.to(dtype) * keep).t() @ g).to(weight_t.dtype)
    if ctx.needs_input_grad[3]:
        grad_bias = grad.sum(0)
    return grad_x, grad_w, None, grad_bias, None, None


_sparse_gemv_op.register_autograd(_sparse_gemv_backward, setup_context=_sparse_gemv_setup)


@register_flop_formula(torch.ops.labkit.sparse_gemv)
def _sparse_gemv_flops(x_shape, weight_t_shape, *args, out_shape=None, **kwargs) -> int:
    """``2 * M * K * N``: the dense count, an upper bound. Which inputs are skipped depends on the values,
    and a FLOP formula sees only shapes; multiply by :func:`kept_share` for the work actually done."""
    return 2 * x_shape[0] * weight_t_shape[0] * weight_t_shape[1]


def sparse_gemv_reference(x: torch.Tensor, weight: torch.Tensor, threshold: float,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch from the *untransposed* (N, K) weight: ``F.linear(x * (|x| > threshold), W, b)``.

    The same input contract as :func:`sparse_gemv` (with ``weight`` in place of ``weight_t``).
    """
    checks.tensor("weight", weight, dim=2)
    x2, threshold = _check_inputs(x, weight.t().contiguous(), threshold, bias)
    xs = x2 * keep_mask(x2, threshold).to(x2.dtype)
    y = rt.torch_linear(xs, weight, bias)
    return y.reshape(-1) if x.dim() == 1 else y
