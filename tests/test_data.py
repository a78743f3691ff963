"""labkit.data: deterministic, offline, stratified, with clear errors."""
import pytest
import torch

from labkit import data


def test_digits_splits_are_disjoint_complete_and_stratified():
    ds = data.digits(seed=0)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert ds.train.x.shape == (len(ds.train), 64) and ds.train.x.dtype == torch.float32
    assert ds.train.y.dtype == torch.int64
    assert 0.0 <= float(ds.train.x.min()) and float(ds.train.x.max()) <= 1.0
    # Together the splits are exactly the data set, each image once (a permutation of the rows).
    from sklearn.datasets import load_digits

    everything = torch.cat([ds.train.x, ds.val.x, ds.test.x]).mul(16).round().to(torch.int64)
    original = torch.from_numpy(load_digits().data).to(torch.int64)
    assert sorted(map(tuple, everything.tolist())) == sorted(map(tuple, original.tolist()))
    # Stratified: every class present in every split, shares within a few points.
    for split in (ds.train, ds.val, ds.test):
        counts = torch.bincount(split.y, minlength=10).float()
        assert (counts > 0).all()
        assert (counts / counts.sum()).sub(0.1).abs().max() < 0.03


def test_digits_same_seed_same_split_other_seed_other_split():
    a, b, c = data.digits(seed=3), data.digits(seed=3), data.digits(seed=4)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.test.x, c.test.x)


def test_digits_image_shape_for_cnns():
    ds = data.digits(seed=0, flat=False)
    assert ds.val.x.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(test_fraction=1.2), "test_fraction"),
    (dict(val_fraction=0.5, test_fraction=0.45), "at least 10%"),
    (dict(flat="yes"), "flat"),
])
def test_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        data.digits(**kwargs)


def test_text_corpus_round_trips_and_is_deterministic():
    corpus = data.text_corpus(max_chars=50_000)
    assert len(corpus.train) + len(corpus.val) == len(corpus.text) == 50_000
    assert corpus.decode(corpus.encode(corpus.text[:500])) == corpus.text[:500]
    assert corpus.chars == tuple(sorted(set(corpus.text)))
    assert all(c == "\n" or 32 <= ord(c) < 127 for c in corpus.chars)
    assert data.text_corpus(max_chars=50_000).text == corpus.text


def test_text_corpus_batches_are_next_character_targets():
    corpus = data.text_corpus(max_chars=20_000)
    x, y = corpus.batch("train", 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_text_corpus_rejects_bad_arguments():
    corpus = data.text_corpus(max_chars=20_000)
    with pytest.raises(ValueError, match="max_chars"):
        data.text_corpus(max_chars=10)
    with pytest.raises(ValueError, match="vocabulary"):
        corpus.encode("é")
    with pytest.raises(ValueError, match="split"):
        corpus.batch("test", 2, 8, torch.Generator())
    with pytest.raises(ValueError, match="block_size"):
        corpus.batch("val", 2, 10**7, torch.Generator())
    with pytest.raises(ValueError, match="ids"):
        corpus.decode([10**6])


def test_pydoc_topics_are_pinned_and_checked(tmp_path, monkeypatch):
    topics = data.pydoc_topics()
    assert len(topics) == 79 and list(topics) == sorted(topics)
    assert "The " in topics["assert"] and "assert" in topics["assert"]
    # A damaged copy is an error naming the file and the fix, never a silently different corpus.
    import gzip
    bad = tmp_path / "pydoc_topics.json.gz"
    bad.write_bytes(gzip.compress(b'{"assert": "edited"}'))
    monkeypatch.setattr(data, "PYDOC_TOPICS_PATH", bad)
    data.pydoc_topics.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="SHA-256.*git checkout"):
            data.pydoc_topics()
    finally:
        data.pydoc_topics.cache_clear()
