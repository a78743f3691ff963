"""SparseGPT called directly (labkit.llm.sparsegpt): checked arguments, dead inputs, exact counts (issue 21 s8)."""
from __future__ import annotations

import math

import pytest
import torch

from labkit.llm.sparsegpt import hessian, sparsegpt


def _layer(rows: int = 8, cols: int = 32, dead: tuple[int, ...] = (), seed: int = 0):
    """A weight with no zeros and calibration inputs whose ``dead`` features are always zero."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w = torch.where(w == 0, 1.0, w)
    x = torch.randn(400, cols, generator=g)
    x[:, list(dead)] = 0.0
    return w, x


# ---- arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [1.5, -0.1, float("nan")])
def test_sparsity_out_of_range_is_refused_by_name(sparsity):
    w, x = _layer()
    with pytest.raises(ValueError, match="sparsity must be"):
        sparsegpt(w, hessian(x), sparsity)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sparsity": 1.0}, ValueError, r"sparsity must be in \[0, 1\)"),  # would prune every weight
    ({"sparsity": float("inf")}, ValueError, "sparsity must be a finite number"),
    ({"sparsity": float("-inf")}, ValueError, "sparsity must be a finite number"),
    ({"sparsity": True}, TypeError, "sparsity must be a real number"),
    ({"sparsity": "0.5"}, TypeError, "sparsity must be a real number"),
    ({"n": 2}, ValueError, "n=2 needs m"),
    ({"n": 4, "m": 4}, ValueError, "0 < n < m"),
    ({"n": 0, "m": 4}, ValueError, "0 < n < m"),
    ({"n": 5, "m": 4}, ValueError, "0 < n < m"),
    ({"n": -1, "m": 4}, ValueError, "n must be a non-negative int"),
    ({"n": 2.0, "m": 4}, TypeError, "n must be an int"),
    ({"n": 2, "m": 3}, ValueError, "multiples of m"),  # 32 inputs are not groups of 3
    ({"n": 2, "m": 8, "block_size": 12}, ValueError, "multiples of m"),  # a group would straddle two blocks
    ({"block_size": 0}, ValueError, "block_size must be a positive int"),
    ({"damping": -0.1}, ValueError, "damping must be >= 0"),
    ({"damping": float("nan")}, ValueError, "damping must be a finite number"),
])
def test_every_bad_argument_is_refused_by_name(kwargs, error, match):
    w, x = _layer()
    with pytest.raises(error, match=match):
        sparsegpt(w, hessian(x), **kwargs)


def test_bad_weight_or_hessian_is_refused_by_name():
    w, x = _layer()
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        sparsegpt(w.tolist(), hessian(x))
    with pytest.raises(ValueError, match="weight must have 2 dimensions"):
        sparsegpt(w[0], hessian(x))
    with pytest.raises(ValueError, match="weight has 8 NaN or infinite"):
        sparsegpt(w.index_fill(1, torch.tensor([3]), float("nan")), hessian(x))
    with pytest.raises(TypeError, match="weight must be a floating-point tensor"):
        sparsegpt(w.long(), hessian(x))
    with pytest.raises(ValueError, match="h has .* NaN or infinite"):
        sparsegpt(w, hessian(x).index_fill(0, torch.tensor([0]), float("inf")))


# ---- dead inputs (always zero in calibration) and exact counts ------------------------------------------

def test_sparsity_zero_leaves_a_dead_input_unchanged():
    w, x = _layer(dead=(5,))
    out = sparsegpt(w, hessian(x), 0.0, block_size=16)
    assert torch.equal(out, w)  # nothing to prune: the weight comes back as it was
    probe = torch.zeros(1, 32)
    probe[0, 5] = 1.0  # an input where the feature is not zero: the layer's output must not change
    assert torch.equal(probe @ out.T, probe @ w.T)


@pytest.mark.parametrize("dead", [(0,), (3, 7, 20), (31,), tuple(range(16)), tuple(range(0, 32, 2))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_sparsity_zero_returns_every_weight_unchanged(dead, dtype):
    """Any dead inputs (first, last, a whole block, every other one), any float dtype."""
    w, x = _layer(dead=dead)
    w = w.to(dtype)
    out = sparsegpt(w, hessian(x), 0.0, block_size=16)
    assert out.dtype == dtype and torch.equal(out, w)


@pytest.mark.parametrize("dead", [(), (3,), (3, 7, 20), tuple(range(16)), tuple(range(0, 32, 2))])
@pytest.mark.parametrize("sparsity", [0.01, 0.05, 0.1, 0.3, 0.5, 0.9])
def test_unstructured_count_is_exact_with_dead_inputs(dead, sparsity):
    """Exactly round(sparsity * out * in) zeros, however many dead weights there are; dead weights go first."""
    rows, cols = 8, 32
    w, x = _layer(rows, cols, dead)
    out = sparsegpt(w, hessian(x), sparsity, block_size=16)
    assert int((out == 0).sum()) == round(sparsity * rows * cols)
    for i1 in range(0, cols, 16):  # per block: the block's count goes to its dead weights first (saliency 0)
        k = round(sparsity * rows * (i1 + 16)) - round(sparsity * rows * i1)
        block_dead = [j for j in dead if i1 <= j < i1 + 16]
        assert int((out[:, block_dead] == 0).sum()) == min(k, rows * len(block_dead))


@pytest.mark.parametrize("dead", [(), (1,), (0, 1, 2, 3), tuple(range(0, 32, 2))])
def test_nm_pattern_holds_with_dead_inputs_and_prefers_them(dead):
    w, x = _layer(dead=dead)
    out = sparsegpt(w, hessian(x), 0.5, n=2, m=4, block_size=16)
    groups = (out != 0).reshape(8, -1, 4).sum(-1)
    assert bool((groups == 2).all())  # exactly 2 of every 4 kept
    for g0 in range(0, 32, 4):  # each row prunes the group's dead weights first: min(2, dead in group) of them
        group_dead = [j for j in dead if g0 <= j < g0 + 4]
        assert bool(((out[:, group_dead] == 0).sum(1) == min(2, len(group_dead))).all())


def test_the_saliency_denominator_is_the_inverse_hessian_of_the_free_columns():
    """The module docstring's identity: U_jj^2 = [(H[j:, j:])^-1]_00, U the upper Cholesky factor of H^-1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 12, generator=g, dtype=torch.float64)
    h = x.T @ x + torch.eye(12, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    for j in range(12):
        free = torch.linalg.inv(h[j:, j:])
        assert math.isclose(float(u[j, j] ** 2), float(free[0, 0]), rel_tol=1e-9)
        assert torch.allclose(u[j, j] * u[j, j:], free[0], rtol=1e-9, atol=1e-12)  # the OBS update row
