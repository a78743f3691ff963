"""labkit.kernels.moe: the fused MoE grouped GEMM, checked against the naive loop (interpreter on CPU)."""
import pytest
import torch

import labkit  # noqa: F401  (switches Triton to the interpreter when there is no GPU)
from labkit.backend import detect
from labkit.kernels import moe as km

pytestmark = pytest.mark.skipif(detect().name == "torch", reason="triton is not installed")
DEV = detect().device


def _problem(T, E, k, d=32, ff=48, dtype=torch.float32, seed=0, experts=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, d, generator=g)
    w1, w3 = (torch.randn(E, ff, d, generator=g) * d ** -0.5 for _ in range(2))
    w2 = torch.randn(E, d, ff, generator=g) * ff ** -0.5
    if experts is None:
        gates, experts = torch.randn(T, E, generator=g).softmax(-1).topk(k, -1)
    else:
        gates = torch.rand(experts.shape, generator=g)
    return [t.to(DEV) for t in (x.to(dtype), w1.to(dtype), w3.to(dtype), w2.to(dtype), gates, experts)]


def _check(args, atol=1e-4, rtol=1e-4, block_m=None):
    if DEV == "cuda":  # compiled tl.dot rounds fp32 to tf32
        atol, rtol = max(atol, 2e-2), max(rtol, 2e-2)
    out = km.fused_moe(*args, block_m=block_m)
    ref = km.moe_reference(*[a.float() if a.is_floating_point() else a for a in args])
    assert out.shape == args[0].shape and out.dtype == args[0].dtype
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=rtol)


def test_align_example_from_the_docstring():
    experts = torch.tensor([[2], [0], [2], [2], [0]])
    slots, blocks, n_padded = km.moe_align(experts, 3, 16)
    assert slots[:16].tolist() == [1, 4] + [5] * 14
    assert slots[16:20].tolist() == [0, 2, 3, 5]
    assert blocks.tolist()[:2] == [0, 2] and set(blocks.tolist()[2:]) <= {-1}
    assert int(n_padded) == 32
    assert km.padding_waste(experts, 3, 16) == pytest.approx(27 / 32)


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_matches_naive_loop_for_top_k(top_k):
    _check(_problem(12, 4, top_k, seed=top_k))


def test_experts_without_tokens():
    experts = torch.tensor([[1], [1], [3], [1], [3]])  # experts 0 and 2 get nothing
    _check(_problem(5, 4, 1, experts=experts))


def test_very_uneven_load_spans_several_blocks():
    experts = torch.zeros(40, 2, dtype=torch.long)
    experts[:, 1] = 3
    experts[0, 1] = 1  # expert 1 gets one slot, expert 3 gets 39, expert 0 gets 40
    _check(_problem(40, 4, 2, experts=experts), block_m=16)


def test_one_token():
    _check(_problem(1, 8, 2))


def test_no_tokens():
    args = _problem(1, 4, 1)
    args[0], args[4], args[5] = args[0][:0], args[4][:0], args[5][:0]
    assert km.fused_moe(*args).shape == (0, 32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    _check(_problem(9, 4, 2, dtype=dtype), atol=3e-2, rtol=3e-2)


def test_ragged_feature_sizes_are_masked():
    _check(_problem(7, 3, 2, d=40, ff=24))  # neither is a multiple of the 32-wide tiles


def test_bad_inputs_raise_clear_errors():
    x, w1, w3, w2, gates, experts = _problem(4, 4, 2)
    with pytest.raises(ValueError, match="experts must lie in"):
        km.fused_moe(x, w1, w3, w2, gates, experts + 4)
    with pytest.raises(TypeError, match="w1 has dtype"):
        km.fused_moe(x, w1.double(), w3, w2, gates, experts)
    with pytest.raises(ValueError, match="x must be"):
        km.fused_moe(x[None], w1, w3, w2, gates, experts)
    with pytest.raises(ValueError, match="shapes disagree"):
        km.fused_moe(x, w1, w3, w2.transpose(1, 2), gates, experts)
    with pytest.raises(ValueError, match="gates must have the shape"):
        km.fused_moe(x, w1, w3, w2, gates[:, :1], experts)
    with pytest.raises(TypeError, match="expert ids"):
        km.fused_moe(x, w1, w3, w2, gates, experts.float())
    with pytest.raises(ValueError, match="block_m"):
        km.fused_moe(x, w1, w3, w2, gates, experts, block_m=24)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        km.fused_moe(x.tolist(), w1, w3, w2, gates, experts)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 8), st.integers(1, 3), st.sampled_from([16, 32, 64]), st.integers(0, 10_000))
def test_align_invariants(tokens, n_experts, top_k, block_m, seed):
    top_k = min(top_k, n_experts)
    g = torch.Generator().manual_seed(seed)
    experts = torch.rand(tokens, n_experts, generator=g).topk(top_k, -1).indices
    slots, blocks, n_padded = km.moe_align(experts, n_experts, block_m)
    n_slots = tokens * top_k
    real = slots[slots < n_slots]
    assert sorted(real.tolist()) == list(range(n_slots))  # every slot exactly once
    flat = experts.reshape(-1)
    for b, e in enumerate(blocks.tolist()):
        rows = slots[b * block_m:(b + 1) * block_m]
        rows = rows[rows < n_slots]
        if e < 0:
            assert rows.numel() == 0 and b * block_m >= int(n_padded)
        else:
            assert (flat[rows.long()] == e).all()  # one expert per block
    assert int(n_padded) % block_m == 0 and int(n_padded) - n_slots < n_experts * block_m


# ---- index checks of the public grouped GEMMs (issue 11) -----------------------------------------
def _grouped(T=6, E=4, k=2, block_m=16):
    x, w1, w3, w2, gates, experts = _problem(T, E, k)
    slots, blocks, _ = km.moe_align(experts, E, block_m)
    return x, w1, w3, w2, gates, slots, blocks


def test_moe_up_and_down_match_their_references():
    x, w1, w3, w2, gates, slots, blocks = _grouped()
    h = km.moe_up(x, w1, w3, slots, blocks, 2, 16)
    ref_h = km.moe_up_reference(x, w1, w3, slots, blocks, 2, 16)
    real = slots < gates.numel()
    torch.testing.assert_close(h[real], ref_h[real], atol=2e-2 if DEV == "cuda" else 1e-4, rtol=1e-3)
    y = km.moe_down(ref_h, w2, gates, slots, blocks, 16)
    torch.testing.assert_close(y, km.moe_down_reference(ref_h, w2, gates, slots, blocks, 16),
                               atol=2e-2 if DEV == "cuda" else 1e-4, rtol=1e-3)


@pytest.mark.parametrize("fn", ["moe_up", "moe_down"])
def test_expert_ids_beyond_E_are_refused(fn):
    """moe_up used to accept block_expert >= E and read past the end of w1."""
    x, w1, w3, w2, gates, slots, blocks = _grouped()
    bad = blocks.clone()
    bad[0] = 4
    call = {"moe_up": lambda b, s: km.moe_up(x, w1, w3, s, b, 2, 16),
            "moe_down": lambda b, s: km.moe_down(torch.zeros(s.numel(), 48), w2, gates, s, b, 16)}[fn]
    with pytest.raises(ValueError, match=r"block_expert must lie in \[-1, 4\)"):
        call(bad, slots)
    neg = slots.clone()
    neg[3] = -5
    with pytest.raises(ValueError, match="sorted_slots must lie in"):
        call(blocks, neg)
    with pytest.raises(ValueError, match="entries"):
        call(blocks, slots[:-1])
    with pytest.raises(TypeError, match="int32"):
        call(blocks.long(), slots)


def test_align_and_helpers_check_their_arguments():
    experts = torch.tensor([[0, 5]])
    with pytest.raises(ValueError, match=r"experts must lie in \[0, 4\)"):
        km.moe_align(experts, 4, 16)
    with pytest.raises(ValueError, match=r"experts must lie in \[0, 4\)"):
        km.padding_waste(experts, 4, 16)
    for bad in (0, True, 2.0):
        with pytest.raises((TypeError, ValueError), match="n_experts"):
            km.moe_align(torch.tensor([[0]]), bad, 16)
    with pytest.raises(ValueError, match="top_k"):
        km.moe_combine(torch.zeros(4, 3), 0)
    assert km.padding_waste(torch.zeros(0, 2, dtype=torch.long), 4, 16) == 0.0
