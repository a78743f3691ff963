"""labkit.formats: one registry of storage formats; byte counts by shape agree with exact counts of real weights."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import formats, prune
from labkit.formats import FORMATS


def test_registry_order_and_kernel_formats():
    assert list(FORMATS) == ["dense", "csr", "bsr", "2:4", "bitmask"]
    assert formats.KERNEL_FORMATS == ("dense", "csr", "bsr", "2:4")
    assert all(f.name == name for name, f in FORMATS.items())
    assert prune.FORMATS == tuple(FORMATS)
    assert formats.get("csr") is FORMATS["csr"]
    with pytest.raises(ValueError, match="format must be one of 'dense', 'csr', 'bsr', '2:4', 'bitmask'; got 'coo'"):
        formats.get("coo")


def test_bytes_by_shape_match_the_known_formulas():
    n = k = 4096
    assert FORMATS["dense"].bytes((n, k)) == n * k * 2
    assert FORMATS["2:4"].bytes((n, k)) / FORMATS["dense"].bytes((n, k)) == 4.5 / 8
    assert FORMATS["csr"].bytes((100, 100), 1 / 3) == pytest.approx(100 * 100 / 3 * 6 + 101 * 4)
    assert FORMATS["bsr"].bytes((128, 128), 0.5, block=64) == 2 * (64 * 64 * 2 + 4) + 3 * 4
    assert FORMATS["bitmask"].bytes((8, 8), 0.25, value_bytes=4) == 16 * 4 + 8


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), b=st.sampled_from([1, 2, 4]), keep=st.floats(0.05, 1.0),
       seed=st.integers(0, 1000))
def test_shape_bytes_equal_exact_weight_bytes_at_the_weights_own_density(rows, cols, b, keep, seed):
    """For block-pruned weights, bytes(shape, density) is weight_bytes(weight): one formula, two entry points."""
    g = torch.Generator().manual_seed(seed)
    tiles = torch.rand(rows, cols, generator=g) < keep
    tiles.view(-1)[0] = True  # at least one tile kept: density > 0
    mask = tiles.repeat_interleave(b, 0).repeat_interleave(b, 1)
    w = (torch.rand(rows * b, cols * b, generator=g) + 0.5) * mask
    density = float(mask.float().mean())
    for name in ("dense", "csr", "bitmask", "bsr"):
        f = FORMATS[name]
        exact = f.weight_bytes(w, value_bytes=2, index_bytes=4, block=b)
        assert f.bytes(tuple(w.shape), density, value_bytes=2, index_bytes=4, block=b) == pytest.approx(exact)


def test_weight_bytes_none_when_the_format_cannot_hold_the_weight():
    w = torch.randn(6, 6)
    assert FORMATS["bsr"].weight_bytes(w, block=4) is None  # 4 does not divide 6
    assert FORMATS["2:4"].weight_bytes(w) is None  # 6 inputs, not groups of 4 and not 2:4
    assert FORMATS["bsr"].weight_bytes(w, block=3) is not None  # storage takes any tile size


def test_kernel_constraints_live_in_fits():
    w = torch.zeros(32, 64)
    w[:, ::2] = 1.0  # 2 of every 4 kept
    assert FORMATS["2:4"].fits(w)
    w12 = torch.zeros(4, 12)
    w12[:, ::2] = 1.0
    assert formats.is_nm(w12) and not FORMATS["2:4"].fits(w12)  # 2:4 pattern, but 12 % 8 != 0
    assert "multiple of 8" in FORMATS["2:4"].why_not(w12)
    assert "not 2:4" in FORMATS["2:4"].why_not(torch.ones(4, 8))
    assert FORMATS["bsr"].fits(w, block=16) and FORMATS["bsr"].fits(w, block=32)
    assert "does not divide" in FORMATS["bsr"].why_not(torch.ones(48, 48), block=32)
    with pytest.raises(ValueError, match="power of two >= 16"):
        FORMATS["bsr"].fits(w, block=8)
    assert FORMATS["dense"].fits(w) and FORMATS["csr"].fits(w) and not FORMATS["bitmask"].fits(w)


@pytest.mark.parametrize("block", [16, 32, 64, 128, 1024])
def test_check_block_accepts_powers_of_two_from_16(block):
    assert formats.check_block(block) == block


@pytest.mark.parametrize("block, error", [(8, ValueError), (24, ValueError), (0, ValueError), (True, TypeError),
                                          ("16", TypeError), (16.0, TypeError)])
def test_check_block_rejects_everything_else(block, error):
    with pytest.raises(error, match="block"):
        formats.check_block(block)


def test_pruning_accepts_any_tile_size_the_kernel_does_not():
    w = torch.randn(12, 12)
    mask = prune.block_mask(w, 0.5, block=3)  # a 3x3 tile: fine for pruning and for byte counts
    assert int((~mask).sum()) == 8 * 9
    assert prune.storage_bytes(w * mask, block=3)["bsr"] == 8 * 9 * 4 + 8 * 4 + 5 * 4
    with pytest.raises(ValueError, match="power of two"):
        formats.check_block(3)


@pytest.mark.parametrize("call, error, match", [
    (lambda: FORMATS["csr"].bytes((4, 4), 0.0), ValueError, "density must be > 0"),
    (lambda: FORMATS["csr"].bytes((4, 4), float("nan")), ValueError, "density"),
    (lambda: FORMATS["csr"].bytes((4, 4), 1.5), ValueError, "density"),
    (lambda: FORMATS["csr"].bytes((4, 4), True), TypeError, "density"),
    (lambda: FORMATS["csr"].bytes((4, 0)), ValueError, r"shape\[1\]"),
    (lambda: FORMATS["csr"].bytes(16), TypeError, "shape"),
    (lambda: FORMATS["csr"].bytes((4, 4), value_bytes=2.0), TypeError, "value_bytes"),
    (lambda: FORMATS["bsr"].bytes((100, 100), 0.5, block=64), ValueError, "must divide"),
    (lambda: FORMATS["bsr"].weight_bytes(torch.ones(8, 8), block="4"), TypeError, "block must be an int"),
    (lambda: FORMATS["2:4"].bytes((4, 6)), ValueError, "divisible by 4"),
    (lambda: FORMATS["dense"].weight_bytes([[1.0]]), TypeError, "weight must be a torch.Tensor"),
    (lambda: FORMATS["dense"].weight_bytes(torch.ones(3)), ValueError, "weight must have 2 or 4 dimensions"),
])
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_conv_weights_are_counted_as_matrices():
    w = torch.randn(8, 2, 2, 2)
    sizes = formats.storage_bytes(w)
    assert sizes["dense"] == 8 * 8 * 4 and sizes["csr"] == 64 * 8 + 9 * 4
    assert sizes["bitmask"] == 64 * 4 + math.ceil(64 / 8)


# ---- torch sparse tensors as weights (issue 21, section 8) -----------------------------------------------

def _pruned(rows=8, cols=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    return torch.where(w.abs() < 0.8, 0.0, w).to(dtype)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_weight_bytes_of_a_csr_tensor_counts_values_and_both_index_arrays():
    t = _pruned().to_sparse_csr()  # int64 indices, as torch makes them
    vb, ib = t.values().element_size(), t.col_indices().element_size()
    assert ib == 8
    own = t.values().nbytes + t.crow_indices().nbytes + t.col_indices().nbytes
    assert FORMATS["csr"].weight_bytes(t, vb, ib) == own
    # int32 indices: the same count with index_bytes=4
    t32 = torch.sparse_csr_tensor(t.crow_indices().int(), t.col_indices().int(), t.values(), t.shape,
                                  check_invariants=True)
    own32 = t32.values().nbytes + t32.crow_indices().nbytes + t32.col_indices().nbytes
    assert FORMATS["csr"].weight_bytes(t32, vb, t32.col_indices().element_size()) == own32


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("to_sparse", [
    lambda w: w.to_sparse(), lambda w: w.to_sparse_csr(), lambda w: w.to_sparse_csc(),
    lambda w: w.to_sparse_bsr((2, 4)), lambda w: w.to_sparse_bsc((4, 4))], ids=["coo", "csr", "csc", "bsr", "bsc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_sparse_layout_counts_as_the_weight_it_holds(to_sparse, dtype):
    w = _pruned(dtype=dtype)
    t = to_sparse(w)
    assert formats.storage_bytes(t, 2, 4, 4) == formats.storage_bytes(w, 2, 4, 4)
    for name, f in FORMATS.items():
        assert f.weight_bytes(t) == f.weight_bytes(w), name


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_tensors_with_stored_zeros_conv_shape_or_no_entries():
    w = _pruned()
    # a stored zero is a zero: counted as the weight holds it, never as an extra nonzero
    csr = w.to_sparse_csr()
    values = csr.values().clone()
    values[0] = 0.0
    with_zero = torch.sparse_csr_tensor(csr.crow_indices(), csr.col_indices(), values, csr.shape, check_invariants=True)
    assert FORMATS["csr"].weight_bytes(with_zero) == FORMATS["csr"].weight_bytes(with_zero.to_dense())
    assert FORMATS["csr"].weight_bytes(with_zero) == FORMATS["csr"].weight_bytes(w) - 8
    conv = _pruned(4, 18).reshape(4, 2, 3, 3)  # a 4-D conv weight as sparse COO: the (4, 18) matrix
    assert formats.storage_bytes(conv.to_sparse()) == formats.storage_bytes(conv)
    empty = torch.zeros(4, 8).to_sparse_csr()  # every weight pruned: only the row pointers remain
    assert FORMATS["csr"].weight_bytes(empty, 4, 4) == 5 * 4
    with pytest.raises(ValueError, match="weight must have 2 or 4 dimensions"):
        FORMATS["csr"].weight_bytes(torch.zeros(2, 2, 2).to_sparse())
