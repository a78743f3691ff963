"""labkit.moe.layers: routing, auxiliary losses, capacity and the MoE layer."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.moe import (
    MoEFeedForward,
    SwiGLU,
    TopKRouter,
    active_parameters,
    capacity_mask,
    count_parameters,
    expert_capacity,
    load_balancing_loss,
    router_entropy,
    router_z_loss,
    top_k_route,
)


def test_top_k_route_picks_largest_and_renormalizes():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 2.9]])
    r = top_k_route(logits, 2)
    assert r.experts.tolist() == [[1, 2], [0, 3]]
    torch.testing.assert_close(r.weights.sum(-1), torch.ones(2))
    r1 = top_k_route(logits, 1)  # top-1 keeps the raw probability (Switch)
    torch.testing.assert_close(r1.weights[:, 0], logits.softmax(-1).max(-1).values)


def test_router_noise_only_in_training():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, top_k=2, noise_std=1.0)
    x = torch.randn(16, 8)
    router.eval()
    torch.testing.assert_close(router(x).logits, router(x).logits)
    router.train()
    assert not torch.allclose(router(x).logits, router(x).logits)


def test_balance_loss_is_one_when_uniform_and_larger_when_skewed():
    probs = torch.full((8, 4), 0.25)
    experts = torch.arange(8).remainder(4)[:, None]
    assert load_balancing_loss(probs, experts).item() == pytest.approx(1.0)
    skew_probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1)
    skew_experts = torch.zeros(8, 1, dtype=torch.long)
    assert load_balancing_loss(skew_probs, skew_experts).item() == pytest.approx(4 * 0.7)


def test_z_loss_and_entropy():
    logits = torch.zeros(3, 4)
    assert router_z_loss(logits).item() == pytest.approx(math.log(4) ** 2)
    assert router_entropy(logits.softmax(-1)).item() == pytest.approx(math.log(4))
    assert router_entropy(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_capacity_and_priority():
    assert expert_capacity(10, 4, 2, 1.0) == 5
    assert expert_capacity(10, 4, 1, 1.25) == 4
    assert expert_capacity(10, 4, 1, None) == 10
    # 4 tokens, all first choices on expert 0; second choices on 1. Capacity 2.
    experts = torch.tensor([[0, 1], [0, 1], [0, 1], [0, 2]])
    keep = capacity_mask(experts, 3, 2)
    assert keep[:, 0].tolist() == [True, True, False, False]  # earlier tokens win
    assert keep[:, 1].tolist() == [True, True, False, True]
    # first choices beat second choices for the same expert
    experts = torch.tensor([[1, 0], [0, 1]])
    assert capacity_mask(experts, 2, 1).tolist() == [[True, False], [True, False]]


def _naive(layer, x):
    r = top_k_route(layer.router.gate(x), layer.top_k)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(layer.top_k):
            e = int(r.experts[t, j])
            out[t] += r.weights[t, j] * layer.expert(e, x[t:t + 1])[0]
    return out


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_dropless_layer_matches_per_token_loop(top_k):
    torch.manual_seed(top_k)
    layer = MoEFeedForward(8, 16, n_experts=4, top_k=top_k).eval()
    x = torch.randn(2, 5, 8)
    y = layer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.reshape(-1, 8), _naive(layer, x.reshape(-1, 8)))
    s = layer.last_stats
    assert s.dropped == 0 and sum(s.load) == 10 * top_k and s.tokens == 10


def test_capacity_drops_tokens_and_zeroes_them():
    torch.manual_seed(0)
    layer = MoEFeedForward(8, 16, n_experts=4, top_k=1, capacity_factor=0.5)
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[0] = 1.0  # push everything to expert 0
    x = torch.rand(12, 8) + 0.5
    y = layer(x)
    s = layer.last_stats
    assert s.capacity == 2 and s.load[0] == 2 and s.dropped == 10
    assert s.dropped_fraction == pytest.approx(10 / 12)
    assert torch.count_nonzero(y.abs().sum(-1)) == 2  # dropped tokens get a zero update


def test_aux_loss_backpropagates_to_router():
    torch.manual_seed(0)
    layer = MoEFeedForward(8, 16, n_experts=4, top_k=2, balance_weight=0.1, z_weight=0.01)
    y = layer(torch.randn(6, 8))
    (y.sum() + layer.aux_loss).backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0
    assert layer.w1.grad is not None


def test_parameter_counts():
    dense = SwiGLU(8, 16)
    moe = MoEFeedForward(8, 16, n_experts=4, top_k=2)
    assert count_parameters(dense) == 3 * 8 * 16
    assert count_parameters(moe) == 4 * 3 * 8 * 16 + 8 * 4
    assert active_parameters(moe) == 2 * 3 * 8 * 16 + 8 * 4
    assert active_parameters(dense) == count_parameters(dense)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(8, 16, n_experts=4, top_k=5)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoEFeedForward(8, 16, n_experts=4, capacity_factor=0)
    with pytest.raises(TypeError, match="n_experts"):
        MoEFeedForward(8, 16, n_experts=4.0)
    with pytest.raises(ValueError, match="balance_weight"):
        MoEFeedForward(8, 16, n_experts=4, balance_weight=-1)
    with pytest.raises(ValueError, match="d_model=8"):
        MoEFeedForward(8, 16, n_experts=4)(torch.randn(3, 7))
    with pytest.raises(TypeError, match="x must be"):
        SwiGLU(8, 16)([1.0] * 8)
    with pytest.raises(ValueError, match="logits"):
        top_k_route(torch.randn(4), 1)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        count_parameters("model")



@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.integers(1, 3), st.integers(0, 12), st.integers(0, 10_000))
def test_capacity_mask_invariants(tokens, n_experts, top_k, capacity, seed):
    top_k = min(top_k, n_experts)
    g = torch.Generator().manual_seed(seed)
    experts = torch.rand(tokens, n_experts, generator=g).topk(top_k, -1).indices
    keep = capacity_mask(experts, n_experts, capacity)
    for e in range(n_experts):
        kept = int(keep[experts == e].sum())
        routed = int((experts == e).sum())
        assert kept == min(routed, capacity)  # an expert fills up to capacity, never beyond
        # priority: a kept slot never comes after a dropped one in (choice, token) order
        order = [bool(keep[t, j]) for j in range(top_k) for t in range(tokens) if experts[t, j] == e]
        assert order == sorted(order, reverse=True)
