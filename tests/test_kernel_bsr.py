"""The BSR linear kernel against a float64 reference, under TRITON_INTERPRET=1 on a CPU."""
import warnings

import pytest
import torch

from labkit.kernels import runtime as rt
from labkit.kernels.bsr_linear import bsr_linear, bsr_linear_reference
from labkit.kernels.patterns import block_sparse
from labkit.kernels.runtime import CPU_DTYPES, assert_close, reference

TEST_DEVICE = rt.kernel_device()  # the GPU when compiled kernels run here, else the CPU (interpreter)

# the interpreter's `for` over loaded bounds converts 1-element arrays to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")

warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")

# (tokens M, outputs N, inputs K, block, density): M=1 and 16 take the split-K decode path,
# 17+ the prefill path; 65/40 are not multiples of the 64-token tile.
CASES = [(1, 128, 96, 32, 0.5), (5, 64, 128, 16, 0.3), (16, 96, 64, 32, 0.7),
         (40, 64, 96, 16, 0.4), (65, 128, 128, 64, 0.5), (20, 32, 32, 32, 1.0)]


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("m,n,k,bs,density", CASES)
def test_bsr_matches_float64(m, n, k, bs, density, dtype):
    gen = torch.Generator().manual_seed(m * 1000 + n + k)
    w = block_sparse(n, k, bs, density, gen, empty_rows=1).to(TEST_DEVICE, dtype)
    x = torch.randn(m, k, generator=gen).to(TEST_DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(TEST_DEVICE, dtype)
    out = bsr_linear(x, w.to_sparse_bsr((bs, bs)), b)
    assert_close(out, reference(x, w, b), dtype)


@pytest.mark.parametrize("split_k", [1, 2, 3])
def test_split_k_gives_the_same_answer(split_k):
    gen = torch.Generator().manual_seed(7)
    w = block_sparse(64, 128, 16, 0.6, gen)
    x = torch.randn(3, 128, generator=gen)
    assert_close(bsr_linear(x, w.to_sparse_bsr((16, 16)), split_k=split_k), reference(x, w, None), torch.float32)


def test_all_zero_weight_gives_bias_only():
    w = torch.zeros(64, 64)
    b = torch.arange(64, dtype=torch.float32)
    out = bsr_linear(torch.randn(4, 64), w.to_sparse_bsr((32, 32)), b)
    assert torch.equal(out, b.expand(4, 64))


def test_padded_weight_and_ragged_features():
    """in/out features that are not block multiples: zero-pad the weight, pass out_features."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(50, 40, generator=gen)
    w_pad = torch.nn.functional.pad(w, (0, 24, 0, 14))  # 64 x 64
    x = torch.randn(18, 40, generator=gen)
    out = bsr_linear(x, w_pad.to_sparse_bsr((32, 32)), out_features=50)
    assert_close(out, reference(x, w, None), torch.float32)


def test_reference_agrees_with_kernel():
    gen = torch.Generator().manual_seed(5)
    w = block_sparse(64, 64, 16, 0.5, gen)
    x = torch.randn(17, 64, generator=gen)
    wb = w.to_sparse_bsr((16, 16))
    assert_close(bsr_linear(x, wb), bsr_linear_reference(x, wb).double(), torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available() or rt.interpreting(), reason="bf16 is tested on a GPU only")
@pytest.mark.parametrize("m", [1, 16, 300])
def test_bf16_on_gpu(m):
    gen = torch.Generator().manual_seed(m)
    w = block_sparse(256, 256, 64, 0.3, gen).bfloat16().cuda()
    x = torch.randn(m, 256, generator=gen).bfloat16().cuda()
    assert_close(bsr_linear(x, w.to_sparse_bsr((64, 64))), reference(x, w, None), torch.bfloat16)


# ---- bad input: clear errors, never a crash -------------------------------------------------------
def _bsr(n=64, k=64, bs=32, dtype=torch.float32):
    return torch.randn(n, k).to(dtype).to_sparse_bsr((bs, bs))


@pytest.mark.parametrize("make,err,match", [
    (lambda: (torch.randn(2, 64), torch.randn(64, 64)), ValueError, "sparse_bsr"),
    (lambda: (torch.randn(2, 64), torch.randn(64, 64).to_sparse_csr()), ValueError, "sparse_bsr"),
    (lambda: (torch.randn(2, 64).half(), _bsr()), TypeError, "dtype"),
    (lambda: (torch.randn(2, 96), _bsr()), ValueError, "inner dimensions"),
    (lambda: (torch.randn(2, 16), _bsr()), ValueError, "inner dimensions"),
    (lambda: (torch.randn(2, 64), _bsr(bs=8)), ValueError, "power of two >= 16"),
    (lambda: (torch.randn(64, 2).t(), _bsr()), ValueError, "contiguous"),
    (lambda: (torch.randn(2, 3, 64), _bsr()), ValueError, "2-D"),
    (lambda: (torch.randn(2, 64).int(), _bsr()), TypeError, "dtype"),
    (lambda: (torch.randn(2, 64), torch.randn(64, 64).to_sparse_bsr((16, 32))), ValueError, "square"),
])
def test_bad_inputs_raise(make, err, match):
    x, w = make()
    with pytest.raises(err, match=match):
        bsr_linear(x, w)


def test_device_mismatch_raises():
    w = _bsr()
    x = torch.randn(2, 64, device="meta")
    with pytest.raises(ValueError, match="same device"):
        bsr_linear(x, w)


def test_bad_bias_and_split_raise():
    w = _bsr()
    with pytest.raises(ValueError, match="shape"):
        bsr_linear(torch.randn(2, 64), w, torch.randn(10))
    with pytest.raises(ValueError, match="split_k"):
        bsr_linear(torch.randn(2, 64), w, split_k=0)
    with pytest.raises(ValueError, match="power of two"):
        rt.check_block(48)
    with pytest.raises(TypeError, match="int"):
        rt.check_block(32.0)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None, derandomize=True)
@given(m=st.integers(1, 70), rows=st.integers(1, 3), cols=st.integers(1, 3), bs=st.sampled_from([16, 32]),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_random_shapes(m, rows, cols, bs, density, seed):
    gen = torch.Generator().manual_seed(seed)
    w = block_sparse(rows * bs, cols * bs, bs, density, gen)
    x = torch.randn(m, cols * bs, generator=gen)
    assert_close(bsr_linear(x, w.to_sparse_bsr((bs, bs))), reference(x, w, None), torch.float32)


def test_program_schedule_covers_every_tile_once_in_grouped_order():
    from labkit.kernels.bsr_linear import program_schedule
    order = program_schedule(m=300, n_rows=5, block_m=64, group_m=2)  # 5 token tiles, the last group ragged
    assert sorted(order) == [(t, r) for t in range(5) for r in range(5)]
    assert order[:4] == [(0, 0), (1, 0), (0, 1), (1, 1)]  # two token tiles share each block row in turn
    assert program_schedule(128, 3, 64, 1)[:3] == [(0, 0), (0, 1), (0, 2)]
    with pytest.raises(ValueError, match="group_m"):
        program_schedule(10, 2, 64, 0)


def test_row_blocks():
    from labkit.kernels.bsr_linear import row_blocks
    w = torch.zeros(64, 96)
    w[:32, 32:64] = 1
    w[32:, :32] = w[32:, 64:] = 1
    assert row_blocks(w.to_sparse_bsr((32, 32))) == {0: [1], 1: [0, 2]}


def test_kernel_source_is_the_kernel():
    from labkit.kernels.bsr_linear import kernel_source
    src = kernel_source()
    assert src.startswith("@triton.jit") and "def _bsr_linear_kernel(" in src and "tl.dot(a, w)" in src


@pytest.fixture(params=["for", "while"])
def loop_style(request):
    """Run a test with both loop styles (the GPU uses `for` unless it fails to compile)."""
    before = rt.loop_style()
    rt.set_loop_style(request.param)
    yield request.param
    rt.set_loop_style(before)


@pytest.mark.parametrize("m", [1, 3, 40])
def test_both_loop_styles_agree(loop_style, m):
    gen = torch.Generator().manual_seed(11)
    w = block_sparse(96, 64, 32, 0.6, gen, empty_rows=1)
    x = torch.randn(m, 64, generator=gen)
    assert_close(bsr_linear(x, w.to_sparse_bsr((32, 32)), split_k=2 if m < 16 else None), reference(x, w, None),
                 torch.float32)


def test_loop_style_is_validated():
    with pytest.raises(ValueError, match="style"):
        rt.set_loop_style("goto")


def test_launch_falls_back_to_while_only_on_a_gpu(monkeypatch):
    calls = []

    def fn(pipeline):
        calls.append(pipeline)
        if pipeline:
            raise RuntimeError("PassManager::run failed")

    before = rt.loop_style()
    try:
        rt.set_loop_style("for")
        monkeypatch.setattr(rt, "interpreting", lambda: False)
        with pytest.warns(UserWarning, match="while"):
            rt.launch(fn)
        assert calls == [True, False] and rt.loop_style() == "while"
        rt.set_loop_style("for")
        monkeypatch.setattr(rt, "interpreting", lambda: True)
        with pytest.raises(RuntimeError, match="PassManager"):
            rt.launch(fn)  # under the interpreter an error is a real error
    finally:
        rt.set_loop_style(before)


def test_without_triton_every_launcher_uses_its_torch_reference(monkeypatch):
    from labkit.kernels.csr_linear import csr_linear
    from labkit.kernels.patterns import two_four
    from labkit.kernels.semi24 import pack_24, semi24_linear

    monkeypatch.setattr(rt, "HAS_TRITON", False)
    gen = torch.Generator().manual_seed(4)
    w = block_sparse(64, 64, 32, 0.5, gen)
    x = torch.randn(3, 64, generator=gen)
    assert_close(bsr_linear(x, w.to_sparse_bsr((32, 32))), reference(x, w), torch.float32)
    assert_close(csr_linear(x, w.to_sparse_csr()), reference(x, w), torch.float32)
    w24 = two_four(64, 64, gen)
    assert_close(semi24_linear(x, *pack_24(w24)), reference(x, w24), torch.float32)


# ---- argument and index checks (issue 11) --------------------------------------------------------
from labkit.kernels import bsr_linear as bsr_mod  # noqa: E402
from labkit.kernels.bsr_linear import program_schedule  # noqa: E402


@pytest.mark.parametrize("fn", [bsr_linear, bsr_linear_reference])
def test_out_features_must_fit_the_weight(fn):
    w = _bsr(bs=16)  # 64 x 64, blocks of 16
    with pytest.raises(ValueError, match="out_features=200"):  # the reference used to return (2, 64)
        fn(torch.randn(2, 64), w, out_features=200)
    with pytest.raises(ValueError, match="out_features=40"):
        fn(torch.randn(2, 64), w, out_features=40)
    for bad in (True, 50.0, "50", float("nan")):
        with pytest.raises(TypeError, match="out_features"):
            fn(torch.randn(2, 64), w, out_features=bad)
    assert fn(torch.randn(2, 64), w, out_features=50).shape == (2, 50)


@pytest.mark.parametrize("bad", [True, 2.0, "2", float("inf"), -1])
def test_split_k_rejects_non_ints(bad):
    with pytest.raises((TypeError, ValueError), match="split_k"):
        bsr_linear(torch.randn(2, 64), _bsr(), split_k=bad)


@pytest.mark.parametrize("fn", ["bsr_linear", "bsr_linear_reference", "row_blocks"])
@pytest.mark.parametrize("damage,match", [("crow_end", r"\[-1\] must equal"), ("col_high", r"must lie in \[0, 4\)"),
                                          ("crow_down", "never decrease")])
def test_hand_built_bsr_indices_are_checked(fn, damage, match):
    w = _bsr(bs=16)
    crow, col = w.crow_indices().clone(), w.col_indices().clone()
    if damage == "crow_end":
        crow[-1] += 1
    elif damage == "col_high":
        col[0] = 4
    else:
        crow[1] = int(crow[2]) + 1
    bad = torch.sparse_bsr_tensor(crow, col, w.values(), w.shape, check_invariants=False)
    args = (bad,) if fn == "row_blocks" else (torch.randn(2, 64), bad)
    with pytest.raises(ValueError, match=match):
        fns = {"bsr_linear": bsr_linear, "bsr_linear_reference": bsr_linear_reference, "row_blocks": bsr_mod.row_blocks}
        fns[fn](*args)


def test_no_tokens_and_no_blocks():
    w = _bsr()
    assert bsr_linear(torch.randn(0, 64), w).shape == (0, 64)
    b = torch.randn(32)
    out = bsr_linear(torch.randn(3, 32), torch.zeros(32, 32).to_sparse_bsr((16, 16)), b)
    assert torch.equal(out, b.expand(3, 32))  # no kept block: the loop sums zero items


def test_program_schedule_rejects_bad_sizes():
    for bad in (0, True, 2.5, "3"):
        with pytest.raises((TypeError, ValueError), match="m"):
            program_schedule(bad, 2)
