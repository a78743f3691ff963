"""The disk cache is safe to share: nothing in it runs code, writes are atomic, keys are machine-independent."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import cache

ROOT = Path(__file__).resolve().parent.parent


class _Planted:
    """Unpickling this creates ``marker``: what a hostile cache file could do under a full-pickle load."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    torch.save({"state": _Planted(str(marker))}, path)
    assert not marker.exists()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LABKIT_CACHE", str(folder))
    return folder


def _only_entry(folder: Path) -> Path:
    entries = list(folder.iterdir())
    assert len(entries) == 1, entries
    return entries[0]


def test_planted_pickle_is_refused_and_recomputed(fresh_cache, tmp_path):
    marker = tmp_path / "pwned"
    _plant(cache.cache_dir() / f"{cache.key('demo', 1, {'a': 1})}.pt", marker)
    with pytest.warns(UserWarning, match=r"refusing .*demo-v1-.*\.pt.*recomputing"):
        assert cache.cached("demo", 1, {"a": 1}, lambda: {"w": torch.ones(2)})["w"].sum() == 2
    assert not marker.exists()
    with warnings.catch_warnings():  # the recomputed entry replaced the planted one
        warnings.simplefilter("error")
        assert cache.cached("demo", 1, {"a": 1}, lambda: 1 / 0)["w"].sum() == 2


def test_planted_pickle_in_a_real_producer(fresh_cache, tmp_path, monkeypatch):
    """The path notebooks take: train.pretrained reads a planted entry, warns, retrains, never unpickles it."""
    from labkit import train

    _no_training(monkeypatch)
    first = train.pretrained("mlp", epochs=1)
    entry = _only_entry(fresh_cache)
    marker = tmp_path / "pwned"
    _plant(entry, marker)
    with pytest.warns(UserWarning, match="refusing"):
        again = train.pretrained("mlp", epochs=1)
    assert not marker.exists()
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_damaged_entry_warns_and_recomputes(fresh_cache):
    path = cache.cache_dir() / f"{cache.key('demo', 1, {})}.pt"
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="refusing"):
        assert cache.cached("demo", 1, {}, lambda: 42) == 42


def test_unsafe_results_are_not_cached(fresh_cache):
    with pytest.raises(TypeError, match="state dict"):
        cache.cached("demo", 1, {}, lambda: {"mask": np.ones(3, dtype=bool)})
    with pytest.raises(TypeError, match="dataclass as a dict"):
        cache.cached("demo", 1, {}, lambda: _Planted("x"))
    assert not list(fresh_cache.iterdir())  # nothing written, no temporary file left


def test_safe_types_round_trip(fresh_cache):
    value = {"t": torch.arange(3), "n": 1.5, "s": "x", "l": [1, (2, 3)], "none": None, ("m", 0.5, True): True}
    cache.cached("demo", 1, {}, lambda: value)
    got = cache.cached("demo", 1, {}, lambda: 1 / 0)
    assert torch.equal(got.pop("t"), value["t"])
    assert got == {k: v for k, v in value.items() if k != "t"}


def test_threads_are_pinned_for_compute_and_restored(fresh_cache):
    before = torch.get_num_threads()
    seen = cache.cached("demo", 1, {}, torch.get_num_threads, threads=1)
    assert seen == 1 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        cache.cached("demo", 2, {}, lambda: 0, threads=0)


def test_keys_do_not_depend_on_the_thread_count(fresh_cache, monkeypatch):
    from labkit import train

    _no_training(monkeypatch)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train.pretrained("mlp", epochs=1)
        entry = _only_entry(fresh_cache)
        torch.set_num_threads(2)
        train.pretrained("mlp", epochs=1)
        assert _only_entry(fresh_cache) == entry
    finally:
        torch.set_num_threads(before)


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from labkit import cache

    folder, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    def compute():
        (folder / f"ready-{me}").touch()
        while not (folder / f"ready-{other}").exists():  # both processes are computing at once
            time.sleep(0.01)
        return {"w": torch.arange(2_000_000, dtype=torch.float32)}  # ~8 MB: the writes overlap

    out = cache.cached("race", 1, {"n": 2_000_000}, compute)
    assert torch.equal(out["w"], torch.arange(2_000_000, dtype=torch.float32))
    print("ok", me)
""")


def test_two_processes_fill_one_entry(tmp_path):
    folder = tmp_path / "cache"
    flags = tmp_path / "flags"
    flags.mkdir()
    env = {"LABKIT_CACHE": str(folder), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(flags), me, other], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o.strip() for o, _ in outs) == ["ok a", "ok b"]
    files = list(folder.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt", files  # one entry, no temporary file left
    loaded = torch.load(files[0], weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(2_000_000, dtype=torch.float32))


# ------------------------------------------------------------------------------------------------
# Every cached producer the notebooks use: the second call loads, computes nothing, warns nothing
# ------------------------------------------------------------------------------------------------

def _second_call_loads(monkeypatch, produce):
    first = produce()

    def no_write(path, data):
        raise AssertionError(f"{path.name} was computed again: the cache did not load it")

    monkeypatch.setattr(cache, "_write_atomic", no_write)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = produce()
    return first, second


def test_pretrained_loads_from_cache(fresh_cache, monkeypatch):
    from labkit import train

    a, b = _second_call_loads(monkeypatch, lambda: train.pretrained("cnn", epochs=1))
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_tiny_gpt_loads_from_cache(fresh_cache, monkeypatch):
    from labkit.data import text_corpus
    from labkit.moe import tiny_gpt as tg

    corpus = text_corpus()
    cfg = tg.GPTConfig(vocab_size=corpus.vocab_size, n_layers=1, d_model=16, n_heads=2, block_size=16, d_ff=32,
                       steps=3, batch_size=4, ffn="moe", n_experts=2, top_k=1)
    a, b = _second_call_loads(monkeypatch, lambda: tg.train(cfg, corpus, log_every=1))
    assert isinstance(b, tg.TrainResult) and b.val_loss == a.val_loss and b.train_loss == a.train_loss
    assert b.load_history == a.load_history and b.config == a.config
    for x, y in zip(a.model().state_dict().values(), b.model().state_dict().values(), strict=True):
        assert torch.equal(x, y)


def _no_training(monkeypatch):
    """Skip the optimizer steps (minutes on a CPU): these tests are about what is cached, not what is learned."""
    from labkit import train

    monkeypatch.setattr(train, "train", lambda model, *args, **kwargs: model)


def test_energy_zoo_loads_from_cache(fresh_cache, monkeypatch):
    from labkit.experiments import energy_zoo

    _no_training(monkeypatch)
    a, b = _second_call_loads(monkeypatch, lambda: energy_zoo.model_zoo(finetune_epochs=1))
    assert list(a) == list(b)
    for name in a:
        for x, y in zip(a[name].model.state_dict().values(), b[name].model.state_dict().values(), strict=True):
            assert torch.equal(x, y)


def test_pruning_explorer_loads_from_cache(fresh_cache, monkeypatch):
    from labkit.experiments.pruning_explorer import explorer_table
    from labkit.experiments.pruning_sweep import load_sweep

    sweep = load_sweep()
    _no_training(monkeypatch)
    a, b = _second_call_loads(monkeypatch, lambda: explorer_table(sweep))
    assert a.keys() == b.keys() and a["entries"].keys() == b["entries"].keys()
    key = next(iter(a["entries"]))
    for layer, mask in a["entries"][key]["masks"].items():
        assert isinstance(b["entries"][key]["masks"][layer], np.ndarray)
        assert np.array_equal(mask, b["entries"][key]["masks"][layer])


# ---- an unwritable cache folder, and keys holding tensors (issue 21, section 8) ------------------------

def test_read_only_cache_returns_the_value_and_warns_once(fresh_cache, monkeypatch):
    """A read-only shared LABKIT_CACHE: the temporary file cannot be made (PermissionError)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    fresh_cache.mkdir()
    monkeypatch.setattr(cache.tempfile, "mkstemp", refuse)  # what a read-only folder does (even for root)
    monkeypatch.setattr(cache, "_UNWRITABLE", set())
    with pytest.warns(UserWarning, match=r"cannot save results in .*cache.*Permission denied.*LABKIT_CACHE") as w:
        assert cache.cached("demo", 1, {"a": 1}, lambda: {"w": torch.ones(3)})["w"].sum() == 3
    assert len(w) == 1
    with warnings.catch_warnings():  # once per folder: a second entry is computed without another warning
        warnings.simplefilter("error")
        assert cache.cached("demo", 1, {"a": 2}, lambda: 7) == 7
        assert cache.cached("demo", 1, {"a": 1}, lambda: 8) == 8  # nothing was saved: computed again
    assert list(fresh_cache.iterdir()) == []  # and no temporary file left behind


@pytest.mark.parametrize("kind", ["not a folder", "read-only", "disk full"])
def test_any_unwritable_folder_costs_only_the_saving(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(cache, "_UNWRITABLE", set())
    folder = tmp_path / "cache"
    if kind == "not a folder":  # LABKIT_CACHE under a file: the folder cannot even be created
        (tmp_path / "file").write_text("x")
        folder = tmp_path / "file" / "cache"
    elif kind == "read-only":
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):  # root ignores permissions: simulate the refusal instead
            monkeypatch.setattr(cache.os, "replace", _raise(PermissionError(13, "Permission denied")))
    else:
        monkeypatch.setattr(cache.os, "replace", _raise(OSError(errno.ENOSPC, "No space left on device")))
    monkeypatch.setenv("LABKIT_CACHE", str(folder))
    with pytest.warns(UserWarning, match="cannot save results in"):
        assert cache.cached("demo", 1, {}, lambda: [1, 2]) == [1, 2]
    if folder.is_dir():
        assert [p for p in folder.iterdir()] == []  # no temporary file left behind
        folder.chmod(0o755)


def _raise(error: OSError):
    def fail(*args, **kwargs):
        raise error
    return fail


def test_keys_of_tensors_that_print_alike_differ():
    a, b = torch.tensor(0.1), torch.tensor(0.10001)
    assert str(a) == str(b)  # they print alike: a key made from the text would collide
    assert cache.key("demo", 1, {"t": a}) != cache.key("demo", 1, {"t": b})
    assert cache.key("demo", 1, {"t": a}) == cache.key("demo", 1, {"t": torch.tensor(0.1)})  # same contents


@pytest.mark.parametrize("make_a, make_b", [
    (lambda: torch.zeros(2000), lambda: torch.zeros(2000).index_fill(0, torch.tensor([1000]), 1.0)),  # "..."
    (lambda: torch.zeros(4), lambda: torch.zeros(2, 2)),  # same values, another shape
    (lambda: torch.zeros(4), lambda: torch.zeros(4, dtype=torch.float64)),  # another dtype
    (lambda: torch.tensor([1.0, 2.0], dtype=torch.bfloat16), lambda: torch.tensor([1.0, 2.015625],
                                                                                   dtype=torch.bfloat16)),
    (lambda: torch.eye(3).to_sparse_csr(), lambda: (2 * torch.eye(3)).to_sparse_csr()),
    (lambda: np.zeros(2000), lambda: np.where(np.arange(2000) == 1000, 1.0, 0.0)),  # numpy prints "..." too
    (lambda: {"nested": [torch.zeros(2000)]}, lambda: {"nested": [torch.arange(2000.0) == 5]}),
])
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_keys_follow_tensor_contents_shape_and_dtype(make_a, make_b):
    assert cache.key("demo", 1, {"t": make_a()}) != cache.key("demo", 1, {"t": make_b()})
    assert cache.key("demo", 1, {"t": make_a()}) == cache.key("demo", 1, {"t": make_a()})


def test_plain_configs_keep_their_keys_and_odd_values_are_refused():
    """Keys of plain configs are what they were (a shared, pre-seeded cache stays valid)."""
    import hashlib
    import json

    config = {"kind": "mlp", "seed": 0, "lr": 1e-3, "widths": (64, 32), "torch": "2.5.1", "none": None}
    blob = json.dumps({"format": cache.FORMAT, "version": 3, "config": config}, sort_keys=True)
    assert cache.key("demo", 3, config) == f"demo-v3-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    assert cache.key("demo", 1, {"d": torch.float16}) != cache.key("demo", 1, {"d": torch.bfloat16})
    with pytest.raises(TypeError, match="config holds a object"):
        cache.key("demo", 1, {"x": object()})  # its text holds a memory address: never the same key twice
