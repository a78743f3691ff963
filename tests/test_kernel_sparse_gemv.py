"""The activation-sparse GEMV (TEAL-style), under the interpreter on a CPU, compiled on a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit import energy
from labkit.kernels import runtime as rt
from labkit.kernels import sparse_gemv as sg
from labkit.kernels.runtime import CPU_DTYPES, assert_close, reference
from labkit.kernels.sparse_gemv import calibrate_threshold, prepare, sparse_gemv, sparse_gemv_reference

ROOT = Path(__file__).resolve().parent.parent
TEST_DEVICE = rt.kernel_device()  # the GPU when compiled kernels run here, else the CPU (interpreter)

# the interpreter's `for` over K chunks converts 1-element arrays to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def _case(m, n, k, dtype, seed, device=TEST_DEVICE):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen).to(device, dtype)
    x = torch.randn(m, k, generator=gen).to(device, dtype)
    b = torch.randn(n, generator=gen).to(device, dtype)
    return w, x, b


def _expected(x, w, threshold, b=None):
    """float64 ``(x * (|x| > t)) @ W.T + b`` from the same rounded inputs."""
    return reference(x * sg.keep_mask(x, threshold).to(x.dtype), w, b)


# shapes deliberately not multiples of the tiles (BLOCK_N 32..128, BLOCK_K 64): the masks must hold
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("m,n,k", [(1, 100, 200), (3, 70, 130)])
def test_matches_float64_at_each_sparsity(m, n, k, sparsity, dtype):
    w, x, b = _case(m, n, k, dtype, seed=m + n + k)
    t = calibrate_threshold(x, sparsity)
    assert sg.kept_share(x, t) == pytest.approx(1 - sparsity, abs=1 / (m * k))
    assert_close(sparse_gemv(x, prepare(w), t, b), _expected(x, w, t, b), dtype)


@pytest.mark.parametrize("split_k", [1, 3, 64])
def test_split_k_and_odd_shapes(split_k):
    w, x, b = _case(2, 257, 65, torch.float32, seed=split_k)
    t = calibrate_threshold(x, 0.5)
    assert_close(sparse_gemv(x, prepare(w), t, b, split_k=split_k), _expected(x, w, t, b), torch.float32)
    assert_close(sparse_gemv(x, prepare(w), t, split_k=split_k), _expected(x, w, t), torch.float32)


def test_all_inputs_skipped_gives_the_bias():
    w, x, b = _case(2, 40, 90, torch.float32, seed=1)
    t = float(x.abs().max())  # |x| <= t everywhere
    assert sg.kept_share(x, t) == 0.0
    assert torch.equal(sparse_gemv(x, prepare(w), t, b), b.expand(2, 40))
    assert torch.equal(sparse_gemv(x, prepare(w), t), torch.zeros(2, 40, device=TEST_DEVICE))


def test_threshold_zero_is_dense_exactly():
    w, x, b = _case(1, 50, 120, torch.float32, seed=2)
    x[0, ::3] = 0  # exact zeros are "skipped" at threshold 0, and add nothing anyway
    wt = prepare(w)
    assert_close(sparse_gemv(x, wt, 0.0, b), reference(x, w, b), torch.float32)
    assert calibrate_threshold(x, 0.0) == 0.0
    dense = sparse_gemv_reference(x, w, 0.0, b)
    assert torch.equal(dense, rt.torch_linear(x, w, b))  # the reference at 0 is F.linear itself


def test_skipped_weight_rows_are_never_read():
    """NaN in the rows of skipped inputs: a kernel that loaded them (even to multiply by 0) would return NaN."""
    w, x, _ = _case(1, 64, 150, torch.float32, seed=3)
    t = calibrate_threshold(x, 0.7)
    wt = prepare(w)
    skipped = ~sg.keep_mask(x, t)[0]
    wt[skipped] = float("nan")
    out = sparse_gemv(x, wt, t)
    assert torch.isfinite(out).all()
    assert_close(out, _expected(x, w, t), torch.float32)


def test_vector_input_and_empty_inputs():
    w, x, b = _case(1, 30, 70, torch.float32, seed=4)
    wt = prepare(w)
    t = calibrate_threshold(x, 0.5)
    y = sparse_gemv(x[0], wt, t, b)
    assert y.shape == (30,)
    assert_close(y, _expected(x, w, t, b)[0], torch.float32)
    assert sparse_gemv(x[:0], wt, t, b).shape == (0, 30)
    assert torch.equal(sparse_gemv(torch.zeros(2, 0, device=TEST_DEVICE), torch.zeros(0, 30, device=TEST_DEVICE),
                                   0.0, b), b.expand(2, 30))


def test_bf16_matches_with_the_cast_after_load():
    """No tl.dot here and every load is cast to fp32 first, so even the interpreter's bf16 is right."""
    w, x, b = _case(2, 90, 140, torch.bfloat16, seed=5)
    t = calibrate_threshold(x, 0.5)
    assert_close(sparse_gemv(x, prepare(w), t, b), _expected(x, w, t, b), torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available() or rt.interpreting(), reason="compiled fp16/bf16: GPU only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n,k", [(576, 1536), (4096, 4096), (11008, 4096)])
def test_half_precision_on_gpu(n, k, dtype):
    w, x, b = _case(1, n, k, dtype, seed=6, device="cuda")
    for sparsity in (0.0, 0.5, 0.9):
        t = calibrate_threshold(x, sparsity)
        assert_close(sparse_gemv(x, prepare(w), t, b), _expected(x, w, t, b), dtype)


def test_reference_takes_the_untransposed_weight():
    w, x, b = _case(2, 20, 48, torch.float32, seed=7, device="cpu")
    t = 0.5
    keep = (x.abs() > t).to(x.dtype)
    torch.testing.assert_close(sparse_gemv_reference(x, w, t, b), (x * keep) @ w.T + b)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, wt: sparse_gemv(x.reshape(1, 1, 64), wt, 0.1), ValueError, "1-D .* or 2-D"),
    (lambda x, wt: sparse_gemv(x[:, :60].contiguous(), wt, 0.1), ValueError, "inner dimensions differ"),
    (lambda x, wt: sparse_gemv(x, wt, -0.1), ValueError, "threshold must be >= 0"),
    (lambda x, wt: sparse_gemv(x, wt, float("nan")), ValueError, "threshold must be a finite"),
    (lambda x, wt: sparse_gemv(x, wt, "0.1"), TypeError, "threshold must be a real number"),
    (lambda x, wt: sparse_gemv(x, wt.t().contiguous().t(), 0.1), ValueError, r"not contiguous.*prepare\(weight\)"),
    (lambda x, wt: sparse_gemv(x, wt.half(), 0.1), TypeError, "weight_t has dtype"),
    (lambda x, wt: sparse_gemv(x, wt.reshape(-1), 0.1), ValueError, "weight_t must be a dense 2-D"),
    (lambda x, wt: sparse_gemv(x, wt.numpy(), 0.1), TypeError, "weight_t must be a torch.Tensor"),
    (lambda x, wt: sparse_gemv(x.repeat(9, 1), wt, 0.1), ValueError, "at most 8"),
    (lambda x, wt: sparse_gemv(x, wt, 0.1, torch.randn(3)), ValueError, "bias must have shape"),
    (lambda x, wt: sparse_gemv(x, wt, 0.1, split_k=0), ValueError, "split_k"),
    (lambda x, wt: sparse_gemv(x.int(), wt, 0.1), TypeError, "x has dtype"),
    (lambda x, wt: sparse_gemv(x.repeat(1, 2)[:, ::2], wt, 0.1), ValueError, "x is not contiguous"),
    (lambda x, wt: prepare(wt.reshape(-1)), ValueError, "weight must have 2 dimensions"),
    (lambda x, wt: prepare(wt.int()), TypeError, "weight must have dtype"),
    (lambda x, wt: calibrate_threshold(x, 1.0), ValueError, "sparsity must be in"),
    (lambda x, wt: calibrate_threshold(x[:, :0], 0.5), ValueError, "activations must not be empty"),
])
def test_bad_inputs_are_clear_errors(call, error, match):
    x, wt = torch.randn(1, 64), torch.randn(64, 32)
    with pytest.raises(error, match=match):
        call(x, wt)


def test_passing_w_instead_of_its_transpose_says_so():
    w = torch.randn(32, 64)
    with pytest.raises(ValueError, match=r"looks like W itself"):
        sparse_gemv(torch.randn(1, 64), w, 0.1)
    with pytest.raises(ValueError, match=r"not contiguous.*not the view weight.t\(\)"):
        sparse_gemv(torch.randn(1, 64), w.t(), 0.1)


def test_plan_fills_the_gpu_with_whole_cache_lines():
    h100 = torch.device("cpu")  # plan() asks num_sms(device): 4 on a CPU; the rule is the same
    for n, k in [(576, 576), (4096, 4096), (11008, 4096), (40, 4000)]:
        block_n, split_k = sg.plan(1, n, k, h100)
        assert block_n in (64, 128) and 1 <= split_k <= 16
        assert split_k == 1 or -(-k // 64) // split_k >= 4  # each split keeps at least 4 chunks of 64 inputs
    assert sg.plan(1, 40, 4000, h100) == (64, 8)  # one tile of outputs: K split to reach 2 programs per SM
    assert sg.plan(1, 4096, 100, h100)[1] == 1  # enough output tiles: no split
    assert sg.plan(1, 40, 100, h100, split_k=64) == (64, 7)  # forced, capped at the 16-input chunks of K


def test_bytes_formula():
    assert sg.gemv_bytes(4096, 4096, 1.0) == 2 * (4096 * 4096 + 2 * 4096)
    assert sg.gemv_bytes(4096, 4096, 0.5) == 2 * (4096 * 4096 / 2 + 2 * 4096)
    assert sg.gemv_bytes(10, 20, 0.0, element_size=4, tokens=3) == 3 * 4 * 30
    with pytest.raises(ValueError, match="kept"):
        sg.gemv_bytes(10, 20, 1.5)


def test_operator_flops_and_gradients():
    w, x, b = _case(2, 24, 40, torch.float32, seed=8, device="cpu")
    wt = prepare(w)
    assert energy.count_work(lambda: sparse_gemv(x, wt, 0.3, b)).flops == 2 * 2 * 40 * 24  # dense upper bound
    # gradients of the torch path in float64; inputs kept away from the threshold (a step there)
    xd = x.double()
    xd[xd.abs().sub(0.3).abs() < 1e-2] = 0.9
    xd.requires_grad_()
    wd, bd = wt.double().requires_grad_(), b.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x_, w_, b_: torch.ops.labkit.sparse_gemv(x_, w_, 0.3, b_, 0, False),
                                    (xd, wd, bd), fast_mode=True)
    torch.ops.labkit.sparse_gemv(xd, wd, 0.3, bd, 0, False).sum().backward()
    assert torch.equal(xd.grad[xd.detach().abs() <= 0.3], torch.zeros_like(xd.grad[xd.detach().abs() <= 0.3]))


def test_without_triton_the_torch_path_gives_the_same_answer(monkeypatch):
    w, x, b = _case(3, 50, 100, torch.float32, seed=9, device="cpu")
    t = calibrate_threshold(x, 0.6)
    monkeypatch.setattr(rt, "HAS_TRITON", False)
    assert_close(sparse_gemv(x, prepare(w), t, b), _expected(x, w, t, b), torch.float32)
    assert_close(sparse_gemv(x.half(), prepare(w.half()), t, b.half()), _expected(x.half(), w.half(), t, b.half()),
                 torch.float16)


NO_TRITON = """
import torch, labkit
from labkit.kernels import runtime as rt
from labkit.kernels.sparse_gemv import prepare, sparse_gemv, sparse_gemv_reference
assert not rt.HAS_TRITON and not rt.can_launch(torch.zeros(1))
g = torch.Generator().manual_seed(0)
w, x = torch.randn(40, 96, generator=g), torch.randn(1, 96, generator=g)
err = (sparse_gemv(x, prepare(w), 0.5) - sparse_gemv_reference(x, w, 0.5)).abs().max()
print("ok", float(err) < 1e-5)
"""


def test_import_and_call_where_triton_is_missing(tmp_path):
    """As on macOS and Windows (tests/no_triton first on the path): the module imports, the call falls back.

    Run from a temporary folder, so the installed labkit is imported (on a GPU machine, the wheel's)."""
    paths = [str(ROOT / "tests" / "no_triton"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", NO_TRITON], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "True"]
