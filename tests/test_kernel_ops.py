"""The kernels as torch operators: FLOP counting (labkit.energy.count_work), autograd of the raw ops,
and the fused MoE's fallbacks (no Triton; gradients required)."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from labkit import energy
from labkit.kernels import moe as km
from labkit.kernels.bsr_linear import bsr_linear
from labkit.kernels.csr_linear import csr_linear
from labkit.kernels.semi24 import pack_24, semi24_linear

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def _weight():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    w[:32] = 0  # half the blocks (and half the values) are zero
    w[:, 1::4] = 0
    w[:, 2::4] = 0  # 2:4 as well
    return w


def test_count_work_sees_the_kernels():
    """count_work used to report 0 FLOPs for a Triton kernel call (dense F.linear: 2*M*N*K)."""
    w, x = _weight(), torch.randn(8, 64)
    dense = energy.count_work(lambda: F.linear(x, w)).flops
    assert dense == 2 * 8 * 64 * 64
    bsr = w.to_sparse_bsr((16, 16))
    assert energy.count_work(lambda: bsr_linear(x, bsr)).flops == 2 * 8 * bsr.values().numel() == dense // 2
    csr = w.to_sparse_csr()
    assert energy.count_work(lambda: csr_linear(x, csr)).flops == 2 * 8 * int((w != 0).sum()) == dense // 4
    values, meta = pack_24(w)
    assert energy.count_work(lambda: semi24_linear(x, values, meta)).flops == dense // 2
    work = energy.count_work(lambda: bsr_linear(x, bsr))
    assert work.bytes_moved >= x.numel() * 4 + bsr.values().numel() * 4  # it reads x and the kept blocks


def test_fused_moe_flops_and_flop_counter_module_view():
    T, E, k, d, ff = 6, 4, 2, 32, 48
    g = torch.Generator().manual_seed(0)
    x, w1, w3 = torch.randn(T, d, generator=g), torch.randn(E, ff, d, generator=g), torch.randn(E, ff, d, generator=g)
    w2 = torch.randn(E, d, ff, generator=g)
    gates, experts = torch.randn(T, E, generator=g).softmax(-1).topk(k, -1)
    with FlopCounterMode(display=False) as counter:
        km.fused_moe(x, w1, w3, w2, gates, experts)
    assert counter.get_total_flops() == 2 * 3 * T * k * d * ff
    assert "labkit.fused_moe" in str(counter.get_flop_counts()["Global"])


@pytest.mark.parametrize("kind", ["bsr", "csr", "2:4"])
def test_raw_operators_are_differentiable(kind):
    """gradcheck of each operator on its torch path in float64 (what SparseLinear's backward runs)."""
    w = _weight()[:32, :32].double()
    w[:16, :16] = torch.randn(16, 16, dtype=torch.float64) * (torch.rand(16, 16) < 0.5)
    x = torch.randn(3, 32, dtype=torch.float64, requires_grad=True)
    b = torch.randn(32, dtype=torch.float64, requires_grad=True)
    if kind == "bsr":
        s = w.to_sparse_bsr((16, 16))
        v = s.values().clone().requires_grad_()

        def f(x, v, b):
            return torch.ops.labkit.bsr_linear(x, s.crow_indices(), s.col_indices(), v, b, 32, 0, False)
    elif kind == "csr":
        s = w.to_sparse_csr()
        v = s.values().clone().requires_grad_()
        order = torch.arange(32, dtype=torch.int32)

        def f(x, v, b):
            return torch.ops.labkit.csr_linear(x, s.crow_indices(), s.col_indices(), v, order, b, False)
    else:
        v0, meta = pack_24(_weight()[:32, :32].double())
        v = v0.clone().requires_grad_()

        def f(x, v, b):
            return torch.ops.labkit.semi24_linear(x, v, meta, b, 0, False)
    assert torch.autograd.gradcheck(f, (x, v, b), fast_mode=True)


def test_fused_moe_with_gradients_runs_the_differentiable_reference():
    T, E, k, d, ff = 5, 3, 2, 16, 24
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, d, generator=g, requires_grad=True)
    w1, w3 = torch.randn(E, ff, d, generator=g), torch.randn(E, ff, d, generator=g)
    w2 = torch.randn(E, d, ff, generator=g)
    gates, experts = torch.randn(T, E, generator=g).softmax(-1).topk(k, -1)
    km._notice.pop("grad", None)
    with pytest.warns(UserWarning, match="no backward pass"):
        out = km.fused_moe(x, w1, w3, w2, gates, experts)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


NO_TRITON = """
import sys, warnings
sys.modules["triton"] = None  # `import triton` now raises ImportError, as where it is not installed
import torch, labkit
from labkit.kernels import moe as km, runtime as rt
from labkit.kernels.bsr_linear import bsr_linear
assert not rt.HAS_TRITON and not rt.can_launch(torch.zeros(1))
g = torch.Generator().manual_seed(0)
T, E, k, d, ff = 7, 4, 2, 16, 24
x, w1, w3, w2 = (torch.randn(T, d, generator=g), torch.randn(E, ff, d, generator=g),
                 torch.randn(E, ff, d, generator=g), torch.randn(E, d, ff, generator=g))
gates, experts = torch.randn(T, E, generator=g).softmax(-1).topk(k, -1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = km.fused_moe(x, w1, w3, w2, gates, experts)
    km.fused_moe(x, w1, w3, w2, gates, experts)
    slots, blocks, _ = km.moe_align(experts, E, 16)
    h = km.moe_up(x, w1, w3, slots, blocks, k, 16)
    y = km.moe_down(h, w2, gates, slots, blocks, 16)
notices = [str(w.message) for w in caught if "plain-torch reference" in str(w.message)]
assert len(notices) == 1, notices  # one clear notice, not one per call
torch.testing.assert_close(out, km.moe_reference(x, w1, w3, w2, gates, experts))
torch.testing.assert_close(km.moe_combine(y, k), out, atol=1e-5, rtol=1e-5)
w, xs = torch.randn(32, 32), torch.randn(3, 32)
print("ok", float((bsr_linear(xs, w.to_sparse_bsr((16, 16))) - xs @ w.T).abs().max()) < 1e-4)
"""


def test_fused_moe_without_triton_falls_back_to_the_reference(tmp_path):
    """Notebook 04 used to raise 'triton is not installed here' where triton is missing."""
    out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", NO_TRITON], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "True"]


def test_pattern_generators_check_their_arguments():
    from labkit.kernels.patterns import block_sparse, two_four, unstructured

    assert (block_sparse(32, 32, 16, 0.5) != 0).float().mean() == pytest.approx(0.5, abs=0.05)
    for bad in (float("nan"), 1.5, True, "0.5"):
        with pytest.raises((TypeError, ValueError), match="density"):
            block_sparse(32, 32, 16, bad)
        with pytest.raises((TypeError, ValueError), match="density"):
            unstructured(8, 8, bad)
    with pytest.raises(ValueError, match="block=16 must divide"):
        block_sparse(40, 32, 16, 0.5)
    with pytest.raises(ValueError, match="multiple of 4"):
        two_four(4, 6)
    with pytest.raises(TypeError, match="n must be an int"):
        two_four(4.0, 8)
