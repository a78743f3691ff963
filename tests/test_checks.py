"""labkit.checks: every check names the argument, normalises good values and rejects bools, NaN, inf, strings."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from labkit import checks


@pytest.mark.parametrize("fn", [checks.positive_int, checks.nonneg_int])
@pytest.mark.parametrize("bad", [True, False, 1.0, 2.5, "3", None, float("nan"), [1]])
def test_int_checks_reject_non_integers_with_a_type_error_naming_the_argument(fn, bad):
    with pytest.raises(TypeError, match="repeats must be an int"):
        fn("repeats", bad)


def test_int_checks_bounds_and_normalisation():
    assert checks.positive_int("n", np.int64(3)) == 3 and type(checks.positive_int("n", np.int64(3))) is int
    assert checks.nonneg_int("n", 0) == 0
    with pytest.raises(ValueError, match="n must be a positive int"):
        checks.positive_int("n", 0)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        checks.nonneg_int("n", -1)
    with pytest.raises(TypeError, match=r"pass int\(2.0\)"):
        checks.positive_int("n", 2.0)


@given(st.integers())
def test_int_checks_agree_with_their_definition(n):
    if n >= 1:
        assert checks.positive_int("n", n) == n
    else:
        with pytest.raises(ValueError):
            checks.positive_int("n", n)
    if n >= 0:
        assert checks.nonneg_int("n", n) == n
    else:
        with pytest.raises(ValueError):
            checks.nonneg_int("n", n)


@pytest.mark.parametrize("bad", [True, "0.5", None, 1j, [0.5]])
def test_finite_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="idle_s must be a real number"):
        checks.finite("idle_s", bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf, np.float32("nan")])
def test_finite_rejects_nan_and_inf(bad):
    with pytest.raises(ValueError, match="idle_s must be a finite number"):
        checks.finite("idle_s", bad)


def test_finite_bounds_and_accepted_types():
    assert checks.finite("x", 3) == 3.0 and type(checks.finite("x", 3)) is float
    assert checks.finite("x", np.float32(0.25)) == 0.25
    assert checks.finite("x", torch.tensor(1.5)) == 1.5
    assert checks.finite("x", 0.0, low=0.0, high=0.0) == 0.0
    with pytest.raises(ValueError, match="x must be >= 0"):
        checks.finite("x", -0.1, low=0)
    with pytest.raises(ValueError, match="x must be <= 1"):
        checks.finite("x", 1.5, high=1)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_fraction_accepts_exactly_the_half_open_unit_interval(x):
    if math.isfinite(x) and 0.0 <= x < 1.0:
        assert checks.fraction("sparsity", x) == x
    else:
        with pytest.raises(ValueError, match="sparsity"):
            checks.fraction("sparsity", x)


def test_fraction_include_high_and_custom_bounds():
    assert checks.fraction("p", 1.0, include_high=True) == 1.0
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1"):
        checks.fraction("p", 1.0)
    with pytest.raises(ValueError, match=r"\[0.1, 0.5\]"):
        checks.fraction("p", 0.05, low=0.1, high=0.5, include_high=True)
    with pytest.raises(TypeError, match="p must be a real number"):
        checks.fraction("p", "0.5")
    with pytest.raises(TypeError):
        checks.fraction("p", False)


def test_choice_returns_the_option_and_lists_the_options():
    assert checks.choice("format", "csr", ("dense", "csr")) == "csr"
    with pytest.raises(ValueError, match="format must be one of 'dense', 'csr'; got 'CSR'"):
        checks.choice("format", "CSR", ("dense", "csr"))
    with pytest.raises(ValueError, match="n must be one of"):
        checks.choice("n", True, (1, 2))  # True == 1 in Python, but a bool is not a number here
    assert checks.choice("n", np.int64(2), (1, 2)) == 2
    with pytest.raises(ValueError):
        checks.choice("n", torch.ones(3), (1, 2))  # ambiguous == does not crash


def test_tensor_checks_type_dim_dtype_emptiness_and_values():
    t = torch.ones(2, 3)
    assert checks.tensor("w", t, dim=2, dtypes=torch.float32) is t
    assert checks.tensor("w", t, dim=(1, 2), dtypes=(torch.float16, torch.float32)) is t
    with pytest.raises(TypeError, match=r"w must be a torch.Tensor, got list; convert it with torch.as_tensor"):
        checks.tensor("w", [[1.0]])
    with pytest.raises(ValueError, match=r"w must have 1 dimensions, got shape \(2, 3\)"):
        checks.tensor("w", t, dim=1)
    with pytest.raises(TypeError, match="w must have dtype float16, got float32"):
        checks.tensor("w", t, dtypes=torch.float16)
    with pytest.raises(ValueError, match="w must not be empty"):
        checks.tensor("w", torch.ones(0, 3), nonempty=True)
    bad = t.clone()
    bad[0, 1] = float("nan")
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="w has 2 NaN or infinite"):
        checks.tensor("w", bad, all_finite=True)
    assert checks.tensor("w", bad) is bad  # values are only checked when asked


def test_tensor_checks_the_stored_values_of_sparse_tensors():
    dense = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    for sparse in (dense.to_sparse_csr(), dense.to_sparse()):
        assert checks.tensor("w", sparse, all_finite=True) is sparse  # no "unsupported layout" error
    bad = torch.tensor([[0.0, float("nan")], [2.0, 0.0]])
    for sparse in (bad.to_sparse_csr(), bad.to_sparse()):
        with pytest.raises(ValueError, match="w has 1 NaN"):
            checks.tensor("w", sparse, all_finite=True)
