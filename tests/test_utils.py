"""labkit.utils: the one timer and parameter counts."""
import pytest
import torch

from labkit import utils


def test_time_ms_is_median_time_in_milliseconds_on_a_cpu():
    calls = []
    ms = utils.time_ms(lambda: calls.append(1), cuda=False, repeats=3, warmup=2)
    assert ms > 0 and len(calls) == 5  # 2 warm-up calls, then 3 samples (min_time=0: one call each)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"fn": 3}, TypeError, "fn must be a function"),
    ({"cuda": "yes"}, TypeError, "cuda must be True, False or None"),
    ({"repeats": 0}, ValueError, "repeats must be a positive int"),
    ({"warmup": -1}, ValueError, "warmup must be a non-negative int"),
])
def test_time_ms_rejects_bad_arguments(kwargs, error, match):
    args = {"fn": lambda: None, "cuda": False, **kwargs}
    with pytest.raises(error, match=match):
        utils.time_ms(args.pop("fn"), **args)


def test_median_time_rejects_nan_min_time():
    with pytest.raises(ValueError, match="min_time must be a finite number"):
        utils.median_time(lambda: None, min_time=float("nan"))


def test_count_parameters_has_one_home():
    from labkit import models, moe

    assert models.count_parameters is utils.count_parameters is moe.count_parameters
    assert utils.count_parameters(torch.nn.Linear(3, 2)) == 8
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        utils.count_parameters("model")
