"""SparseLinear: every format matches the masked dense layer; "auto" plans; bad input is refused."""
import warnings

import pytest
import torch
from torch import nn

from labkit import prune
from labkit.kernels import _runtime as rt
from labkit.sparse import BUCKETS, CSR_MAX_DENSITY, SparseLinear, block_density, detect_block

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")


def pruned_linear(kind: str, seed: int = 0, in_f: int = 96, out_f: int = 80, dtype=torch.float32) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():
        mask = prune.block_mask(lin.weight, 0.75, 16) if kind == "block" else prune.nm_mask(lin.weight, 2, 4)
        lin.weight.mul_(mask)
    return lin.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("fmt,kind", [("dense", "block"), ("bsr", "block"), ("csr", "block"), ("2:4", "nm"),
                                      ("auto", "block"), ("auto", "nm")])
def test_formats_match_masked_dense(fmt, kind, dtype):
    lin = pruned_linear(kind, dtype=dtype)
    layer = SparseLinear.from_linear(lin, format=fmt)
    x = torch.randn(2, 3, 96).to(dtype)
    ref = torch.nn.functional.linear(x.double(), lin.weight.double(), lin.bias.double())
    out = layer(x)
    assert out.shape == (2, 3, 80) and out.dtype == dtype
    assert rt.rel_error(out, ref) <= rt.TOLERANCE[dtype]


def test_bsr_pads_dims_that_are_not_block_multiples():
    torch.manual_seed(1)
    w = torch.randn(50, 40) * (torch.rand(50, 40) < 0.3)
    layer = SparseLinear(w, format="bsr", block=16)
    x = torch.randn(5, 40)
    assert rt.rel_error(layer(x), x.double() @ w.double().T) <= rt.TOLERANCE[torch.float32]


def test_detects_structure():
    block = pruned_linear("block").weight
    assert detect_block(block) == 16 and block_density(block, 16) == pytest.approx(0.25, abs=0.02)
    nm = SparseLinear.from_linear(pruned_linear("nm"))
    assert "2:4" in nm.available and "bsr" not in nm.available  # 2:4 zeros are not block-aligned
    dense = SparseLinear(torch.randn(32, 32))
    assert dense.available == ["dense"]  # "auto" drops CSR above CSR_MAX_DENSITY
    assert SparseLinear(torch.randn(32, 32), format="csr").available == ["dense", "csr"]


def test_auto_plans_per_bucket_and_picks_only_measured_winners():
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    w = w * prune.magnitude_mask(w, 0.97)
    layer = SparseLinear(w)
    assert "csr" in layer.available and layer.density <= CSR_MAX_DENSITY
    layer(torch.randn(1, 256))
    layer(torch.randn(200, 256))
    assert set(layer.plan) == {1, 128}
    for bucket, fmt in layer.plan.items():
        times = layer.timings[bucket]
        assert fmt in times and set(times) <= {"dense", "csr"}
        # a sparse choice must be measured faster than dense by the margin
        assert fmt == "dense" or times[fmt] * 1.05 < times["dense"]
    assert all(b in BUCKETS for b in layer.plan)


def test_forced_format_plan_is_fixed():
    layer = SparseLinear.from_linear(pruned_linear("block"), format="csr")
    assert set(layer.plan.values()) == {"csr"}


def test_bad_inputs():
    lin = pruned_linear("block")
    with pytest.raises(ValueError, match="format"):
        SparseLinear.from_linear(lin, format="coo")
    with pytest.raises(ValueError, match="2:4"):
        SparseLinear.from_linear(lin, format="2:4")
    with pytest.raises(TypeError, match="nn.Linear"):
        SparseLinear.from_linear(nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="power of two"):
        SparseLinear.from_linear(lin, format="bsr", block=24)
    with pytest.raises(TypeError, match="dtype"):
        SparseLinear(torch.randn(4, 4).int())
    layer = SparseLinear.from_linear(lin, format="dense")
    with pytest.raises(ValueError, match="expects 96"):
        layer(torch.randn(2, 95))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(2, 96).half())
