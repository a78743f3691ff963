"""labkit.cache and labkit.utils."""
import pytest
import torch

from labkit import cache, utils


def test_cached_computes_once_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(3)}

    a = cache.cached("demo", 1, {"lr": 0.1}, compute)
    b = cache.cached("demo", 1, {"lr": 0.1}, compute)
    assert torch.equal(a["w"], b["w"]) and len(calls) == 1
    cache.cached("demo", 2, {"lr": 0.1}, compute)  # new version: recomputed
    cache.cached("demo", 1, {"lr": 0.2}, compute)  # new config: recomputed
    assert len(calls) == 3


def test_cache_key_rejects_bad_names_and_configs():
    with pytest.raises(ValueError, match="name"):
        cache.key("../escape", 1, {})
    with pytest.raises(TypeError, match="config"):
        cache.key("ok", 1, [1, 2])


def test_reproducible_seeds_torch():
    utils.reproducible(5)
    a = torch.rand(3)
    utils.reproducible(5)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed"):
        utils.reproducible(-1)
    with pytest.raises(ValueError, match="threads"):
        utils.reproducible(0, threads=0)


def test_median_time_is_positive():
    assert utils.median_time(lambda: sum(range(100)), repeats=3, warmup=1) > 0
