"""Property tests (issue 11): every public kernel entry point and SparseLinear, driven with random tiny
shapes, dtypes and malformed index arrays. Each call returns the reference's answer (within the
documented tolerance) or raises a clear ValueError/TypeError: never a crash, a hang or garbage.

Shapes stay tiny and examples few: under TRITON_INTERPRET=1 every kernel call is a slow simulation,
and an unmasked out-of-bounds load would take the whole pytest process down (which is the point:
a crash here fails the run).
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.kernels import moe as km
from labkit.kernels import runtime as rt
from labkit.kernels.bsr_linear import bsr_linear, bsr_linear_reference
from labkit.kernels.csr_linear import csr_linear, csr_linear_reference, launch_order
from labkit.kernels.semi24 import pack_24, semi24_linear, semi24_linear_reference, unpack_24
from labkit.sparse import SparseLinear

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning",
                                        "ignore:Sparse invariant checks")
DEV = rt.kernel_device()
FAST = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from(rt.CPU_DTYPES)
CLEAR = (ValueError, TypeError)


def _random(shape, seed, dtype, density=1.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g)
    if density < 1:
        t = t * (torch.rand(shape, generator=g) < density)
    return t.to(dtype)


def _close(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == dtype
    assert rt.rel_error(out, ref) <= rt.TOLERANCE[dtype]


# ---- CSR ------------------------------------------------------------------------------------------
CSR_DAMAGE = [None, "order_high", "order_negative", "order_repeat", "order_short", "order_float",
              "crow_end", "crow_down", "col_high", "col_negative"]


@FAST
@given(m=st.integers(0, 5), n=st.integers(1, 10), k=st.integers(1, 12), density=st.floats(0, 1),
       dtype=DTYPES, damage=st.sampled_from(CSR_DAMAGE), bias=st.booleans(), seed=st.integers(0, 999))
def test_csr_linear_answers_or_refuses(m, n, k, density, dtype, damage, bias, seed):
    w = _random((n, k), seed, dtype, density)
    x = _random((m, k), seed + 1, dtype).to(DEV)
    b = _random((n,), seed + 2, dtype).to(DEV) if bias else None
    csr = w.to_sparse_csr()
    crow, col, values = csr.crow_indices().clone(), csr.col_indices().clone(), csr.values()
    order = launch_order(csr, "longest_first")
    if damage == "order_high":
        order[0] = n
    elif damage == "order_negative":
        order[-1] = -1
    elif damage == "order_repeat":
        order[0] = order[-1] if n > 1 else 5
    elif damage == "order_short":
        order = order[1:] if n > 1 else order.repeat(2)
    elif damage == "order_float":
        order = order.float()
    elif damage == "crow_end":
        crow[-1] += 1
    elif damage == "crow_down":
        crow[0] = 1
    elif damage in ("col_high", "col_negative") and values.numel():
        col[0] = k if damage == "col_high" else -1
    else:
        damage = None  # nothing to damage (no nonzeros)
    weight = torch.sparse_csr_tensor(crow, col, values, (n, k), check_invariants=False).to(DEV)
    if damage is not None:
        with pytest.raises(CLEAR):
            csr_linear(x, weight, b, order=order.to(DEV))
        return
    out = csr_linear(x, weight, b, order=order.to(DEV))
    _close(out, rt.reference(x, w.to(DEV), b), dtype)
    _close(csr_linear_reference(x, weight, b), rt.reference(x, w.to(DEV), b), dtype)


# ---- BSR ------------------------------------------------------------------------------------------
BSR_DAMAGE = [None, "crow_end", "col_high", "out_high", "out_low", "out_bool", "split_nan", "bias_short"]


@FAST
@given(m=st.integers(0, 20), rows=st.integers(1, 2), cols=st.integers(1, 2), cut=st.integers(0, 15),
       density=st.floats(0, 1), dtype=DTYPES, damage=st.sampled_from(BSR_DAMAGE), seed=st.integers(0, 999))
def test_bsr_linear_answers_or_refuses(m, rows, cols, cut, density, dtype, damage, seed):
    bs = 16
    n_pad, k_pad = rows * bs, cols * bs
    n, k = n_pad - cut, k_pad - (cut % bs)  # a weight padded up to whole blocks
    tiles = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) < density
    w_pad = _random((n_pad, k_pad), seed, dtype) * tiles.repeat_interleave(bs, 0).repeat_interleave(bs, 1)
    w_pad[n:] = 0
    w_pad[:, k:] = 0
    bsr = w_pad.to_sparse_bsr((bs, bs))
    crow, col = bsr.crow_indices().clone(), bsr.col_indices().clone()
    x = _random((m, k), seed + 1, dtype).to(DEV)
    b = _random((n,), seed + 2, dtype).to(DEV)
    kwargs = {"out_features": n}
    if damage == "crow_end":
        crow[-1] += 1
    elif damage == "col_high" and col.numel():
        col[0] = cols
    elif damage == "out_high":
        kwargs["out_features"] = n_pad + 1
    elif damage == "out_low":
        kwargs["out_features"] = n_pad - bs
    elif damage == "out_bool":
        kwargs["out_features"] = True
    elif damage == "split_nan":
        kwargs["split_k"] = float("nan")
    elif damage == "bias_short":
        b = b[:-1]
    else:
        damage = None
    weight = torch.sparse_bsr_tensor(crow, col, bsr.values(), (n_pad, k_pad), check_invariants=False).to(DEV)
    if damage is not None:
        for fn in (bsr_linear,) if damage == "split_nan" else (bsr_linear, bsr_linear_reference):
            with pytest.raises(CLEAR):
                fn(x, weight, b, **kwargs)
        return
    ref = rt.reference(x, w_pad[:n, :k].to(DEV), b)
    _close(bsr_linear(x, weight, b, **kwargs), ref, dtype)
    _close(bsr_linear_reference(x, weight, b, **kwargs), ref, dtype)


# ---- 2:4 ------------------------------------------------------------------------------------------
S24_DAMAGE = [None, "meta_equal", "meta_reversed", "meta_shape", "values_dtype", "x_width"]


@FAST
@given(m=st.integers(0, 20), n=st.integers(1, 8), groups=st.integers(1, 3), dtype=DTYPES,
       damage=st.sampled_from(S24_DAMAGE), seed=st.integers(0, 999))
def test_semi24_linear_answers_or_refuses(m, n, groups, dtype, damage, seed):
    k = 8 * groups
    w = _random((n, k), seed, dtype)
    idx = w.float().abs().reshape(n, k // 4, 4).topk(2, -1).indices
    w = w * torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, idx, True).reshape(n, k)
    values, meta = pack_24(w)
    assert torch.equal(unpack_24(values, meta), w)  # the round trip is exact
    x = _random((m, k), seed + 1, dtype)
    if damage == "meta_equal":
        meta = meta.clone()
        meta[0, 0] = (meta[0, 0] & 0xF0) | 0b0101  # low group: i0 = i1 = 1
    elif damage == "meta_reversed":
        meta = meta.clone()
        meta[-1, -1] = (meta[-1, -1] & 0x0F) | (0b0111 << 4)  # high group: i0 = 3 > i1 = 1
    elif damage == "meta_shape":
        meta = meta[:, :-1].contiguous() if meta.shape[1] > 1 else meta.repeat(1, 2)
    elif damage == "values_dtype":
        values = values.to(torch.int32)
    elif damage == "x_width":
        x = _random((m, k + 8), seed + 1, dtype)
    if damage is not None:
        for fn in (semi24_linear, semi24_linear_reference):
            with pytest.raises(CLEAR):
                fn(x.to(DEV), values.to(DEV), meta.to(DEV))
        return
    ref = rt.reference(x, w)
    _close(semi24_linear(x.to(DEV), values.to(DEV), meta.to(DEV)).cpu(), ref, dtype)
    _close(semi24_linear_reference(x, values, meta), ref, dtype)


# ---- fused MoE ------------------------------------------------------------------------------------
MOE_DAMAGE = [None, "expert_high", "expert_negative", "block_expert_high", "slot_negative", "top_k_zero"]


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.integers(0, 6), e=st.integers(1, 4), top_k=st.integers(1, 2), damage=st.sampled_from(MOE_DAMAGE),
       seed=st.integers(0, 999))
def test_moe_entry_points_answer_or_refuse(t, e, top_k, damage, seed):
    top_k = min(top_k, e)
    d, ff = 16, 16
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, d, generator=g)
    w1, w3 = torch.randn(e, ff, d, generator=g), torch.randn(e, ff, d, generator=g)
    w2 = torch.randn(e, d, ff, generator=g)
    gates, experts = torch.randn(t, e, generator=g).softmax(-1).topk(top_k, -1)
    if damage in ("expert_high", "expert_negative") and t:
        experts = experts.clone()
        experts[0, 0] = e if damage == "expert_high" else -1
        for fn in (km.fused_moe, km.moe_reference):
            with pytest.raises(CLEAR):
                fn(x, w1, w3, w2, gates, experts)
        with pytest.raises(CLEAR):
            km.moe_align(experts, e, 16)
        return
    args = [a.to(DEV) for a in (x, w1, w3, w2, gates, experts)]
    torch.testing.assert_close(km.fused_moe(*args).cpu(), km.moe_reference(x, w1, w3, w2, gates, experts),
                               atol=2e-2 if DEV == "cuda" else 1e-4, rtol=1e-3)
    slots, blocks, _ = km.moe_align(args[5], e, 16)
    if damage == "block_expert_high" and blocks.numel():
        blocks = blocks.clone()
        blocks[0] = e
    elif damage == "slot_negative" and slots.numel():
        slots = slots.clone()
        slots[0] = -1
    elif damage == "top_k_zero":
        with pytest.raises(CLEAR):
            km.moe_up(args[0], args[1], args[2], slots, blocks, 0, 16)
        return
    else:
        damage = None
    if damage is not None:
        with pytest.raises(CLEAR):
            km.moe_up(args[0], args[1], args[2], slots, blocks, top_k, 16)
        with pytest.raises(CLEAR):
            km.moe_down(torch.zeros(slots.numel(), ff, device=DEV), args[3], args[4], slots, blocks, 16)
        return
    h = km.moe_up(args[0], args[1], args[2], slots, blocks, top_k, 16)
    y = km.moe_down(h, args[3], args[4], slots, blocks, 16)
    torch.testing.assert_close(km.moe_combine(y, top_k).cpu(), km.moe_reference(x, w1, w3, w2, gates, experts),
                               atol=2e-2 if DEV == "cuda" else 1e-4, rtol=1e-3)


# ---- SparseLinear ---------------------------------------------------------------------------------
@FAST
@given(fmt=st.sampled_from(["auto", "dense", "bsr", "2:4", "csr"]), lead=st.lists(st.integers(0, 3), max_size=2),
       dtype=DTYPES, use_triton=st.sampled_from([None, True, False]), bias=st.booleans(), seed=st.integers(0, 999))
def test_sparse_linear_matches_the_masked_dense_layer(fmt, lead, dtype, use_triton, bias, seed):
    n, k = 32, 32
    w = _random((n, k), seed, torch.float32)
    if fmt == "2:4":
        idx = w.abs().reshape(n, k // 4, 4).topk(2, -1).indices
        w = w * torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, idx, True).reshape(n, k)
    else:
        w[:16, 16:] = 0  # one zero block of four
        w[w.abs() < 0.5] = 0
    w, b = w.to(dtype), (_random((n,), seed + 1, dtype) if bias else None)
    layer = SparseLinear(w, b, format=fmt, use_triton=use_triton)
    x = _random((*lead, k), seed + 2, dtype)
    with torch.no_grad():
        out = layer(x)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    _close(out, ref, dtype)
    for bad in (x[..., :-1], x.int(), "x"):
        with pytest.raises(CLEAR):
            layer(bad)
