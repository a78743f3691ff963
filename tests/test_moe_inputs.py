"""labkit.moe.layers: regression tests for issue 11 (exact capacity, zero tokens, checked expert ids)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.moe import layers as L


def test_expert_capacity_of_the_reported_case_is_exact():
    """ceil(1.1 * 50 * 1 / 5) is 11; float arithmetic gave 12."""
    assert 1.1 * 50 * 1 / 5 > 11  # the float product really is just above 11
    assert L.expert_capacity(50, 5, 1, 1.1) == 11


@settings(max_examples=300, deadline=None)
@given(n_tokens=st.integers(0, 5000), n_experts=st.integers(1, 64), top_k=st.integers(1, 4),
       hundredths=st.integers(1, 400))
def test_expert_capacity_matches_integer_arithmetic(n_tokens, n_experts, top_k, hundredths):
    top_k = min(top_k, n_experts)
    cf = hundredths / 100  # e.g. 1.1, 1.25, 0.07: what a learner types
    expected = -(-hundredths * n_tokens * top_k // (100 * n_experts))  # ceil with integers only
    assert L.expert_capacity(n_tokens, n_experts, top_k, cf) == expected


@pytest.mark.parametrize("cf", [float("nan"), float("inf"), 0.0, -1.0, True, "1.25"])
def test_bad_capacity_factors_are_rejected(cf):
    with pytest.raises((TypeError, ValueError), match="capacity_factor"):
        L.expert_capacity(10, 2, 1, cf)


def test_moe_layer_on_zero_tokens_gives_zero_losses_not_nan():
    torch.manual_seed(0)
    layer = L.MoEFeedForward(8, 16, 4, top_k=2, capacity_factor=1.25)
    x = torch.randn(0, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 8)
    assert layer.aux_loss.item() == 0.0 and not torch.isnan(layer.aux_loss)
    stats = layer.last_stats
    assert stats.tokens == 0 and stats.router_entropy == 0.0 and stats.balance_loss == 0.0 and stats.z_loss == 0.0
    assert stats.dropped_fraction == 0.0 and stats.load_fraction == [0.0] * 4
    (y.sum() + layer.aux_loss).backward()  # a zero-token batch must not poison training
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


@pytest.mark.parametrize("fn", [
    lambda: L.load_balancing_loss(torch.zeros(0, 4), torch.zeros(0, 2, dtype=torch.long)),
    lambda: L.router_z_loss(torch.zeros(0, 4)),
    lambda: L.router_entropy(torch.zeros(0, 4)),
])
def test_reductions_over_zero_tokens_are_zero(fn):
    out = fn()
    assert out.item() == 0.0


def test_reductions_still_match_their_definitions_on_real_tokens():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert L.router_entropy(probs).item() == pytest.approx(math.log(2) / 2)
    experts = torch.tensor([[0], [0]])
    assert L.load_balancing_loss(probs, experts).item() == pytest.approx(2 * (1.0 * 0.75 + 0.0 * 0.25))


@pytest.mark.parametrize("fn, match", [
    (lambda: L.load_balancing_loss(torch.rand(3, 4), torch.tensor([[0], [4], [1]])), r"experts must hold expert ids"),
    (lambda: L.load_balancing_loss(torch.rand(3, 4), torch.tensor([[0], [-1], [1]])), r"experts must hold expert ids"),
    (lambda: L.load_balancing_loss(torch.rand(3, 4), torch.rand(3, 1)), "experts must have dtype"),
    (lambda: L.capacity_mask(torch.tensor([[0], [5]]), 4, 2), r"experts must hold expert ids in \[0, 4\)"),
    (lambda: L.capacity_mask(torch.tensor([[0]]), 4, True), "capacity must be an int"),
    (lambda: L.capacity_mask(torch.tensor([[0]]), 0, 1), "n_experts must be a positive int"),
    (lambda: L.router_z_loss([[1.0, 2.0]]), "logits must be a torch.Tensor"),
    (lambda: L.top_k_route(torch.rand(3, 4), 5), "top_k must be >= 1 and <= 4"),
    (lambda: L.TopKRouter(8, 4, noise_std=float("nan")), "noise_std must be a finite number"),
    (lambda: L.MoEFeedForward(8, 16, 4, balance_weight=float("inf")), "balance_weight must be a finite number"),
    (lambda: L.MoEFeedForward(8, 16, "4"), "n_experts must be an int"),
])
def test_bad_inputs_name_the_argument(fn, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fn()


def test_capacity_mask_on_zero_tokens():
    keep = L.capacity_mask(torch.zeros(0, 2, dtype=torch.long), 4, 3)
    assert keep.shape == (0, 2)
