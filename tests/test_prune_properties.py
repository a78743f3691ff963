"""Property tests: the pruning invariants hold for any shape and sparsity, not just the hand-picked ones."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import prune

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))
fractions = st.floats(0.0, 0.999, allow_nan=False)


def _weight(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, sparsity=fractions, seed=st.integers(0, 1000))
def test_unstructured_count_is_exact(shape, sparsity, seed):
    w = _weight(shape, seed)
    k = round(sparsity * w.numel())
    for mask in (prune.magnitude_mask(w, sparsity), prune.random_mask(w, sparsity, seed)):
        assert int((~mask).sum()) == k
    kept, dropped = w[prune.magnitude_mask(w, sparsity)].abs(), w[~prune.magnitude_mask(w, sparsity)].abs()
    if kept.numel() and dropped.numel():
        assert kept.min() >= dropped.max()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), groups=st.integers(1, 6), m=st.integers(1, 8), data=st.data(), seed=st.integers(0, 1000))
def test_nm_every_group(rows, groups, m, data, seed):
    n = data.draw(st.integers(1, m))
    w = _weight((rows, groups * m), seed)
    mask = prune.nm_mask(w, n, m)
    assert (mask.reshape(-1, m).sum(dim=1) == n).all()


@settings(max_examples=40, deadline=None)
@given(tiles=st.tuples(st.integers(1, 5), st.integers(1, 5)), b=st.integers(1, 4), sparsity=fractions,
       seed=st.integers(0, 1000))
def test_block_whole_tiles_exact_count(tiles, b, sparsity, seed):
    w = _weight((tiles[0] * b, tiles[1] * b), seed)
    mask = prune.block_mask(w, sparsity, block=b)
    per_tile = mask.reshape(tiles[0], b, tiles[1], b).sum(dim=(1, 3))
    assert set(per_tile.flatten().tolist()) <= {0, b * b}
    assert int((per_tile == 0).sum()) == round(sparsity * tiles[0] * tiles[1])


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(shapes, min_size=1, max_size=4), sparsity=fractions, seed=st.integers(0, 1000))
def test_global_threshold_is_one_threshold(shapes, sparsity, seed):
    weights = {f"l{i}": _weight(s, seed + i) for i, s in enumerate(shapes)}
    masks = prune.global_magnitude_masks(weights, sparsity)
    total = sum(w.numel() for w in weights.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
    kept = torch.cat([weights[k][masks[k]].abs() for k in weights])
    dropped = torch.cat([weights[k][~masks[k]].abs() for k in weights])
    if kept.numel() and dropped.numel():
        assert kept.min() >= dropped.max()
