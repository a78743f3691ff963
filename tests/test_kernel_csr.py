"""The row-split CSR kernel and its load-imbalance tools, under the interpreter."""
import pytest
import torch

from labkit.kernels import runtime as rt
from labkit.kernels.csr_linear import csr_linear, launch_order, row_stats
from labkit.kernels.runtime import CPU_DTYPES, assert_close, reference

TEST_DEVICE = rt.kernel_device()  # the GPU when compiled kernels run here, else the CPU (interpreter)

# the interpreter's `for` over loaded bounds converts 1-element arrays to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def unstructured(n, k, density, gen, dtype=torch.float32):
    w = torch.randn(n, k, generator=gen) * (torch.rand(n, k, generator=gen) < density)
    w[0] = 0  # an empty row
    return w.to(dtype)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("m,n,k,density,order", [(1, 40, 100, 0.2, "natural"), (7, 33, 64, 0.5, "longest_first"),
                                                 (130, 16, 48, 0.1, "natural")])
def test_csr_matches_float64(m, n, k, density, order, dtype):
    gen = torch.Generator().manual_seed(m + n + k)
    w = unstructured(n, k, density, gen, dtype).to(TEST_DEVICE)
    x = torch.randn(m, k, generator=gen).to(TEST_DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(TEST_DEVICE, dtype)
    assert_close(csr_linear(x, w.to_sparse_csr(), b, order=order), reference(x, w, b), dtype)


def test_all_zero_weight():
    out = csr_linear(torch.randn(3, 20), torch.zeros(10, 20).to_sparse_csr())
    assert torch.equal(out, torch.zeros(3, 10))


def test_row_stats_and_order_show_imbalance():
    w = torch.zeros(4, 10)
    w[0, :8] = 1  # one long row, three short ones
    w[1, 0] = w[2, 0] = w[3, 0] = 1
    stats = row_stats(w.to_sparse_csr())
    assert stats["max"] == 8 and stats["nnz"] == 11 and stats["min"] == 1
    assert stats["imbalance"] == pytest.approx(8 / (11 / 4))
    order = launch_order(w.to_sparse_csr(), "longest_first")
    assert order.dtype == torch.int32 and order[0].item() == 0
    assert sorted(order.tolist()) == [0, 1, 2, 3]


@pytest.mark.skipif(not torch.cuda.is_available() or rt.interpreting(), reason="bf16 is tested on a GPU only")
def test_bf16_on_gpu():
    gen = torch.Generator().manual_seed(0)
    w = unstructured(256, 256, 0.1, gen, torch.bfloat16).cuda()
    x = torch.randn(40, 256, generator=gen).bfloat16().cuda()
    assert_close(csr_linear(x, w.to_sparse_csr()), reference(x, w, None), torch.bfloat16)


def test_bad_inputs():
    w = torch.randn(8, 16).to_sparse_csr()
    with pytest.raises(ValueError, match="sparse_csr"):
        csr_linear(torch.randn(2, 16), torch.randn(8, 16))
    with pytest.raises(ValueError, match="inner dimensions"):
        csr_linear(torch.randn(2, 12), w)
    with pytest.raises(TypeError, match="dtype"):
        csr_linear(torch.randn(2, 16).half(), w)
    with pytest.raises(ValueError, match="contiguous"):
        csr_linear(torch.randn(16, 2).t(), w)
    with pytest.raises(ValueError, match="same device"):
        csr_linear(torch.randn(2, 16, device="meta"), w)
    with pytest.raises(ValueError, match="order"):
        csr_linear(torch.randn(2, 16), w, order="random")
    with pytest.raises(ValueError, match="order"):
        launch_order(w, "shortest")


@pytest.mark.parametrize("style", ["for", "while"])
def test_both_loop_styles_agree(style):
    before = rt.loop_style()
    rt.set_loop_style(style)
    try:
        gen = torch.Generator().manual_seed(2)
        w = unstructured(20, 80, 0.3, gen)
        x = torch.randn(5, 80, generator=gen)
        assert_close(csr_linear(x, w.to_sparse_csr()), reference(x, w, None), torch.float32)
    finally:
        rt.set_loop_style(before)


# ---- index checks (issue 11): a bad index is a clear error, never a crash, a hang or garbage ----------
def _csr_parts(n=6, k=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = unstructured(n, k, 0.5, gen)
    w[0] = 0
    w[1, 3] = 1.0
    c = w.to_sparse_csr()
    return w, c.crow_indices(), c.col_indices(), c.values()


@pytest.mark.parametrize("order,match", [
    ([0, 1, 2, 3, 4, 60], r"outside \[0, 6\)"),  # row id out of range: used to abort the process
    ([0, 1, 2, 3, 4, -1], r"outside \[0, 6\)"),  # negative: used to hang
    ([0, 1, 2, 3, 4, 4], "appears twice"),  # not a permutation: used to return uninitialised rows
    ([0, 1, 2], "6 row ids"),
])
def test_order_must_be_a_permutation(order, match):
    w, *_ = _csr_parts()
    with pytest.raises(ValueError, match=match):
        csr_linear(torch.randn(3, 10), w.to_sparse_csr(), order=torch.tensor(order, dtype=torch.int32))


def test_order_type_and_a_valid_custom_order():
    w, *_ = _csr_parts()
    x = torch.randn(3, 10)
    with pytest.raises(TypeError, match="order"):
        csr_linear(x, w.to_sparse_csr(), order=torch.arange(6, dtype=torch.float32))
    with pytest.raises(TypeError, match="order"):
        csr_linear(x, w.to_sparse_csr(), order=[0, 1, 2, 3, 4, 5])
    reverse = torch.arange(5, -1, -1, dtype=torch.int32)
    assert_close(csr_linear(x, w.to_sparse_csr(), order=reverse), reference(x, w), torch.float32)


@pytest.mark.parametrize("fn", ["csr_linear", "csr_linear_reference", "row_stats", "launch_order"])
@pytest.mark.parametrize("damage,match", [
    ("crow_end", r"crow_indices\(\)\[-1\] must equal"),  # crow[-1] > nnz: was accepted
    ("crow_down", "never decrease"),
    ("crow_start", "start at 0"),
    ("col_high", r"col_indices\(\) must lie in \[0, 10\)"),
    ("col_negative", r"col_indices\(\) must lie in"),
])
def test_hand_built_csr_indices_are_checked(fn, damage, match):
    from labkit.kernels import csr_linear as module

    _, crow, col, values = _csr_parts()
    crow, col = crow.clone(), col.clone()
    if damage == "crow_end":
        crow[-1] += 3
    elif damage == "crow_down":
        crow[2] = int(crow[3]) + 1  # row 2 ends before it starts
    elif damage == "crow_start":
        crow[0] = 1
    elif damage == "col_high":
        col[0] = 10
    else:
        col[-1] = -2
    bad = torch.sparse_csr_tensor(crow, col, values, (6, 10), check_invariants=False)
    args = (torch.randn(2, 10), bad) if fn.startswith("csr") else (bad,)
    with pytest.raises(ValueError, match=match):
        getattr(module, fn)(*args)


def test_empty_inputs_give_empty_or_bias_outputs():
    w, *_ = _csr_parts()
    b = torch.randn(6)
    assert csr_linear(torch.randn(0, 10), w.to_sparse_csr(), b).shape == (0, 6)
    out = csr_linear(torch.randn(3, 10), torch.zeros(6, 10).to_sparse_csr(), b)
    assert torch.equal(out, b.expand(3, 6))  # rows without nonzeros: a sum over zero items is 0
