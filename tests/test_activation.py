"""Activation sparsity (labkit.llm.activation): exact at 0, the fast decode equals the reference, the allocations."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from labkit import llm
from labkit.llm.activation import (
    ActivationSparsity,
    Setting,
    SparseGroup,
    SparseInputLinear,
    block_bytes_per_token,
    input_groups,
)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(3, 96, (4, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def wrapped(tokens):
    model = llm.tiny_llama(seed=1)
    dense = copy.deepcopy(model)
    return dense, model, ActivationSparsity(model, tokens, greedy=False, progress=False)


@pytest.fixture(scope="module")
def greedy(tokens) -> ActivationSparsity:
    return ActivationSparsity(llm.tiny_llama(seed=1), tokens, progress=False)


@torch.inference_mode()
def decode_logits(model, tokens: torch.Tensor, prompt: int) -> torch.Tensor:
    """Logits of one-token decode steps with the KV cache over ``tokens`` (1, n) after the first ``prompt``.

    The next input is the given token, not the model's choice: two models that differ slightly still see
    the same inputs, so their logits compare step by step.
    """
    out = model(input_ids=tokens[:, :prompt], use_cache=True)
    cache, logits = out.cache, []
    for i in range(prompt, tokens.shape[1]):
        out = model(input_ids=tokens[:, i:i + 1], cache=cache, use_cache=True)
        logits.append(out.logits[0, -1])
        cache = out.cache
    return torch.stack(logits)


def test_groups_are_the_linears_that_read_one_input():
    groups = input_groups(llm.tiny_llama())
    assert [[name.split(".")[-1] for name in g] for g in groups] == [
        ["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]] * 2
    assert all(g[0].startswith("model.layers.0.") for g in groups[:4])


def test_sparsity_zero_is_exactly_the_dense_model(wrapped, tokens):
    dense, model, act = wrapped
    act.set(0.0)
    with torch.inference_mode():
        assert torch.equal(model(tokens).logits, dense(tokens).logits)
    assert torch.equal(decode_logits(model, tokens[:1, :12], 8), decode_logits(dense, tokens[:1, :12], 8))


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.95])
def test_fast_decode_equals_the_masked_reference(wrapped, tokens, sparsity):
    _, model, act = wrapped
    act.set(sparsity)
    act.fast(True)
    fast = decode_logits(model, tokens[:1, :14], 8)
    assert act.measured()["inputs_skipped"] > 0.1  # the gather really skipped inputs
    act.fast(False)
    reference = decode_logits(model, tokens[:1, :14], 8)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_the_reference_is_the_masked_input_through_the_original_layer(wrapped, tokens):
    dense, model, act = wrapped
    act.set(0.5)
    wrapper = model.model.layers[0].mlp.gate_proj
    assert isinstance(wrapper, SparseInputLinear)
    x = torch.randn(2, 5, 48)
    t = wrapper.group.threshold
    assert t > 0
    expected = F.linear(x * (x.abs() > t), dense.model.layers[0].mlp.gate_proj.weight)
    with torch.inference_mode():
        torch.testing.assert_close(wrapper(x), expected)
        # the second member of the group (up) reuses the same masked input
        up = model.model.layers[0].mlp.up_proj(x)
    torch.testing.assert_close(up, F.linear(x * (x.abs() > t), dense.model.layers[0].mlp.up_proj.weight))


def test_uniform_thresholds_skip_the_asked_share_on_the_calibration_text(wrapped, tokens):
    _, model, act = wrapped
    for sparsity in (0.25, 0.5, 0.75):
        act.set(sparsity)
        with torch.inference_mode():
            model(tokens)
        first = act.groups[0]  # the first group's inputs do not depend on any sparsity upstream
        # quantiles of the calibration |x| met on the same text: the share skipped is the target
        assert 1 - first.kept / first.seen == pytest.approx(sparsity, abs=0.01)
        # later groups see inputs already changed by the skipping before them: close, not equal
        assert act.measured()["inputs_skipped"] == pytest.approx(sparsity, abs=0.1)
    assert len(act.thresholds()) == 8 and len(set(act.thresholds())) == 8  # one threshold per group


def test_greedy_path_climbs_and_meets_the_target(greedy):
    act = greedy
    assert act.greedy_path is not None and len(act.greedy_path) == 2
    for path in act.greedy_path:
        averages = [a for a, _ in path]
        assert averages[0] == 0 and averages == sorted(averages)
        assert all(len(shares) == 4 for _, shares in path)
    for target in (0.2, 0.5, 0.7):
        shares = act.shares(target, "greedy")
        for block in ([0, 1, 2, 3], [4, 5, 6, 7]):
            block_shares = [shares[i] for i in block]
            weights = [act.weights[i] for i in block]
            average = sum(s * w for s, w in zip(block_shares, weights, strict=False)) / sum(weights)
            assert average >= target - 1e-9  # each block reaches the target ...
            assert average < target + 0.1 * max(weights) / sum(weights) + 1e-9  # ... by at most one step
        assert len(set(shares)) > 1  # not uniform: the groups got different shares
    assert act.shares(0.0, "greedy") == [0.0] * 8


def test_remove_restores_the_original_model(wrapped, tokens):
    dense, model, act = wrapped
    act.set(0.5)
    assert act.remove() is model
    assert not any(isinstance(m, (SparseInputLinear, SparseGroup)) for m in model.modules())
    with torch.inference_mode():
        assert torch.equal(model(tokens).logits, dense(tokens).logits)


def test_setting_sets_its_thresholds_at_each_call(wrapped, tokens):
    _, model, act = wrapped
    half, dense = Setting(act, 0.5), Setting(act, 0.0)
    with torch.inference_mode():
        a = half(tokens).logits
        dense(tokens)
        assert act.sparsity == 0.0
        b = half(tokens).logits
    assert act.sparsity == 0.5 and torch.equal(a, b)
    assert half.config is model.config


def test_bytes_per_token_follow_the_skipped_share(wrapped):
    _, _, act = wrapped
    block = sum(act.weights) * 4  # float32
    assert block_bytes_per_token(act, [0.0] * 8) == {"dense": block, "sparse": block}
    half = block_bytes_per_token(act, [0.5] * 8)
    assert half["sparse"] == pytest.approx(block / 2)


def test_bad_inputs_are_named(wrapped, tokens):
    _, model, act = wrapped
    with pytest.raises(ValueError, match="sparsity"):
        act.set(0.96)
    with pytest.raises(ValueError, match="allocation"):
        act.set(0.5, "random")
    with pytest.raises(ValueError, match="already activation-sparse"):
        ActivationSparsity(model, tokens, progress=False)
    with pytest.raises(ValueError, match="calibration"):
        ActivationSparsity(llm.tiny_llama(), torch.randint(0, 96, (2, 200)), progress=False)
    with pytest.raises(ValueError, match="greedy=True"):
        act.set(0.5, "greedy")
    with pytest.raises(ValueError, match="run the model first"):
        act.measured()
    with pytest.raises(TypeError, match="model"):
        ActivationSparsity("model", tokens)
