"""SparseLinear: every format matches the masked dense layer; "auto" plans; bad input is refused."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit import prune
from labkit.kernels import runtime as rt
from labkit.sparse import BUCKETS, CSR_MAX_DENSITY, SparseLinear, block_density, detect_block

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")
# the interpreter converts 1-element arrays in `for` bounds to ints (a numpy deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def pruned_linear(kind: str, seed: int = 0, in_f: int = 96, out_f: int = 80, dtype=torch.float32) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():
        mask = prune.block_mask(lin.weight, 0.75, 16) if kind == "block" else prune.nm_mask(lin.weight, 2, 4)
        lin.weight.mul_(mask)
    return lin.to(dtype)


@pytest.mark.parametrize("use_triton", [None, True], ids=["torch-paths", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("fmt,kind", [("dense", "block"), ("bsr", "block"), ("csr", "block"), ("2:4", "nm"),
                                      ("auto", "block"), ("auto", "nm")])
def test_formats_match_masked_dense(fmt, kind, dtype, use_triton):
    lin = pruned_linear(kind, dtype=dtype)
    layer = SparseLinear.from_linear(lin, format=fmt, use_triton=use_triton)
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
    with pytest.raises(ValueError, match=r"expects \(\.\.\., 96\)"):
        layer(torch.randn(2, 95))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(2, 96).half())


def test_cpu_uses_torch_paths_unless_triton_is_asked_for(monkeypatch):
    """On a CPU a forced format computes with PyTorch; use_triton=True runs the kernels (interpreter)."""
    if torch.cuda.is_available():
        pytest.skip("CPU dispatch")
    from labkit.kernels import bsr_linear as bsr_module

    calls = []
    monkeypatch.setattr(bsr_module, "_launch", lambda x, *a: calls.append("bsr") or torch.zeros(len(x), 80))
    lin = pruned_linear("block")
    x = torch.randn(4, 96)
    torch_layer = SparseLinear.from_linear(lin, format="bsr")
    assert rt.rel_error(torch_layer(x), lin(x).double()) <= 1e-5 and calls == []
    SparseLinear.from_linear(lin, format="bsr", use_triton=True).run(x, "bsr")
    assert calls == ["bsr"]
    with pytest.raises(TypeError, match="use_triton"):
        SparseLinear.from_linear(lin, use_triton="yes")


def test_indices_are_checked_once_when_packed_and_again_when_replaced(monkeypatch):
    from labkit import sparse as sparse_module

    layer = SparseLinear.from_linear(pruned_linear("block"), format="csr")
    calls = []
    real = sparse_module.check_csr_weight
    monkeypatch.setattr(sparse_module, "check_csr_weight", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(3, 96)
    layer(x)
    layer(x)
    assert calls == []  # checked in __init__: decode calls pay nothing
    state = layer.state_dict()
    state["csr_col"] = state["csr_col"].clone()
    state["csr_col"][0] = 500  # a damaged checkpoint: column 500 of a 96-input layer
    layer.load_state_dict(state)
    with pytest.raises(ValueError, match=r"col_indices\(\) must lie in \[0, 96\)"):
        layer(x)
    assert calls == [1]


# ---- sparsify / densify ------------------------------------------------------------------------
from labkit.sparse import densify, sparsify  # noqa: E402


class TiedLM(nn.Module):
    """A tiny language-model shape: embedding, two pruned blocks, an LM head tied to the embedding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(32, 64)
        self.blocks = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64, bias=False))
        self.proj = nn.Linear(64, 64)  # left dense
        self.head = nn.Linear(64, 32, bias=False)
        self.head.weight = self.embed.weight  # tied
        with torch.no_grad():
            self.blocks[0].weight.mul_(prune.block_mask(self.blocks[0].weight, 0.75, 16))
            self.blocks[2].weight.mul_(prune.nm_mask(self.blocks[2].weight, 2, 4))
            self.embed.weight[:, :8] = 0  # zeros in the tied matrix: still left alone

    def forward(self, tokens):
        return self.head(self.proj(self.blocks(self.embed(tokens))))


def test_sparsify_round_trip_keeps_outputs_and_leaves_tied_and_dense_layers():
    model = TiedLM()
    tokens = torch.randint(0, 32, (2, 5))
    before = model(tokens)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert sparsify(model) is model
    assert isinstance(model.blocks[0], SparseLinear) and isinstance(model.blocks[2], SparseLinear)
    assert "bsr" in model.blocks[0].available and "2:4" in model.blocks[2].available
    assert type(model.proj) is nn.Linear and type(model.head) is nn.Linear  # dense / tied: untouched
    assert model.head.weight is model.embed.weight
    assert rt.rel_error(model(tokens), before.double()) <= 1e-5
    assert densify(model) is model
    assert all(type(m) is not SparseLinear for m in model.modules())
    assert type(model.blocks[0]) is nn.Linear and model.blocks[2].bias is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # the same weights, zeros included, under the same names
    assert torch.equal(model(tokens), before)


def test_sparsify_forced_format_skip_and_min_sparsity():
    model = TiedLM()
    with pytest.raises(ValueError, match=r"layer 'blocks.0'.*2:4.*skip"):
        sparsify(model, "2:4")  # blocks.0 is block-pruned, not 2:4
    assert all(type(m) is not SparseLinear for m in model.modules())  # nothing swapped before the error
    sparsify(model, "2:4", skip=("blocks.0",))
    assert type(model.blocks[0]) is nn.Linear and model.blocks[2].format == "2:4"
    densify(model)
    sparsify(model, min_sparsity=0.6)  # blocks.0 is 75% zeros, blocks.2 50%
    assert isinstance(model.blocks[0], SparseLinear) and type(model.blocks[2]) is nn.Linear
    densify(model)
    sparsify(model, "csr", skip=("blocks.*",))
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


def test_sparsify_a_bare_linear_and_bad_arguments():
    lin = pruned_linear("block")
    layer = sparsify(lin, "bsr")
    assert isinstance(layer, SparseLinear) and layer.format == "bsr"
    back = densify(layer)
    assert type(back) is nn.Linear and torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)
    assert sparsify(nn.Linear(8, 8)).__class__ is nn.Linear  # dense: returned as it is
    with pytest.raises(TypeError, match="model"):
        sparsify("model")
    with pytest.raises(ValueError, match="format"):
        sparsify(lin, "coo")
    for bad in (1.0, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="min_sparsity"):
            sparsify(lin, min_sparsity=bad)
    with pytest.raises(TypeError, match="skip"):
        sparsify(lin, skip="lm_head")
    dense_model = nn.Sequential(nn.Linear(8, 8))  # nothing to swap, but bad arguments are still refused
    with pytest.raises(TypeError, match="use_triton"):
        sparsify(dense_model, use_triton="yes")
    with pytest.raises((TypeError, ValueError), match="block"):
        sparsify(dense_model, block=24)
    with pytest.raises(TypeError, match="model"):
        densify(None)


# The roofline model and notebook 03's GPU figures moved to labkit.roofline / labkit.figures.kernels:
# tests/test_roofline.py covers them.


def test_plan_from_benchmark_rows():
    def r(kernel, m, density, block, ms, dense_ms, baseline_ms=None):
        return dict(kernel=kernel, M=m, N=96, K=96, dtype="float32", density=density, block=block, ms=ms,
                    dense_ms=dense_ms, baseline=None, baseline_ms=baseline_ms, speedup_vs_dense=dense_ms / ms,
                    speedup_vs_baseline=None)

    torch.manual_seed(0)
    w = torch.randn(192, 192)
    w = w * prune.block_mask(w, 0.92, 32)  # 3 of 36 tiles kept
    layer = SparseLinear(w)
    assert layer._kept == ["dense", "csr", "bsr"] and layer.block == 32
    rows = [r("bsr", 1, 0.1, 32, 1.0, 5.0), r("bsr", 8192, 0.1, 32, 1.0, 1.02), r("csr", 8192, 0.1, None, 0.5, 1.0),
            r("bsr", 1, 0.1, 64, 0.1, 5.0), r("2:4", 1, 0.5, None, 0.01, 5.0, 0.001)]
    assert layer.plan_from_results(rows, 1) == "bsr"  # 5x; the 64-block row does not match this layer
    assert layer.plan_from_results(rows, 8192) == "csr"  # bsr only 1.02x (< MARGIN), csr 2x
    assert layer.plan_from_results(rows, 16) == "bsr"  # nearest token count is 1
    assert layer.plan_from_results([], 16) == "dense"  # nothing measured: dense


def _kernels_file(tmp_path, rows):
    from labkit import results

    return results.write(tmp_path / "nvidia-x.json", rows, script="benchmarks/kernels.py", schema="kernels",
                         extra={"gpu": "NVIDIA X", "smoke": False})


def _kernel_row(**fields):
    row = dict(kernel="csr", M=16, N=96, K=96, dtype="float32", density=0.1, block=None, ms=0.5, dense_ms=1.0,
               baseline=None, baseline_ms=None, speedup_vs_dense=2.0, speedup_vs_baseline=None)
    return {**row, **fields}


def test_plan_from_file_reads_the_gpu_results_through_labkit_results(tmp_path):
    from labkit import results

    w = torch.randn(96, 96)
    w = w * (torch.rand(96, 96, generator=torch.Generator().manual_seed(0)) < 0.05)  # CSR is kept
    layer = SparseLinear(w)
    assert layer.plan_from_file(_kernels_file(tmp_path, [_kernel_row()]), 16) == "csr"
    path = _kernels_file(tmp_path, [_kernel_row()])
    path.write_text(path.read_text().replace('"speedup_vs_dense": 2.0', '"speedup_vs_dense": NaN'))
    with pytest.raises(results.ResultsFileError, match=r"nvidia-x.json: rows\[0\].speedup_vs_dense is nan"):
        layer.plan_from_file(path, 16)  # a broken file is an error naming it, never a plan from a wrong number


@pytest.mark.parametrize("damage, error, match", [
    (lambda p: p.unlink(), "ResultsFileMissing", "benchmarks/kernels.py"),
    (lambda p: p.write_text(p.read_text()[:-30]), "ResultsFileError", "not valid JSON"),
    (lambda p: p.write_text(p.read_text().replace('"kernel": "csr"', '"kernel": 3')), "ResultsFileError",
     r"rows\[0\].kernel must be str"),
    (lambda p: p.write_text(p.read_text().replace('"schema": "kernels"', '"schema": "energy"')),
     "ResultsFileError", "expected 'kernels'"),
    (lambda p: p.write_text(p.read_text().replace('"ms": 0.5', '"ms": -Infinity')), "ResultsFileError",
     r"rows\[0\].ms is -inf"),
])
def test_plan_from_file_refuses_every_damaged_file_by_name(tmp_path, damage, error, match):
    from labkit import results

    layer = SparseLinear(torch.randn(96, 96) * (torch.rand(96, 96) < 0.05))
    path = _kernels_file(tmp_path, [_kernel_row()])
    damage(path)
    with pytest.raises(getattr(results, error), match=match):
        layer.plan_from_file(path, 16)


# ---- autograd (issue 11): gradients to the input and the kept values, zeros stay zero --------------
VALUES = {"dense": "weight", "auto": "weight", "bsr": "bsr_values", "2:4": "s24_values", "csr": "csr_values"}
FIT = {"dense": "block", "auto": "block", "bsr": "block", "2:4": "nm", "csr": "block"}


def small_linear(kind: str, dtype=torch.float32, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(32, 48)
    with torch.no_grad():
        mask = prune.block_mask(lin.weight, 0.5, 16) if kind == "block" else prune.nm_mask(lin.weight, 2, 4)
        lin.weight.mul_(mask)
        lin.weight[lin.weight.abs() < 0.02] = 0  # a few zeros inside kept blocks / groups too
    return lin.to(dtype)


def grad_as_dense(layer: SparseLinear, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of the stored values, laid out as the dense (out, in) weight."""
    if layer.format in ("dense", "auto"):
        return grad
    if layer.format == "bsr":
        bsr = torch.sparse_bsr_tensor(layer.bsr_crow, layer.bsr_col, grad, layer._bsr_shape)
        return bsr.to_dense()[: layer.out_features, : layer.in_features]
    if layer.format == "2:4":
        from labkit.kernels.semi24 import unpack_24
        return unpack_24(grad, layer.s24_meta)
    return torch.sparse_csr_tensor(layer.csr_crow, layer.csr_col, grad, (48, 32)).to_dense()


@pytest.mark.parametrize("fmt", ["dense", "auto", "bsr", "2:4", "csr"])
def test_gradcheck_float64(fmt):
    layer = SparseLinear.from_linear(small_linear(FIT[fmt], torch.float64), format=fmt)
    name = VALUES[fmt]
    values = getattr(layer, name).detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    x = torch.randn(3, 32, dtype=torch.float64, requires_grad=True)

    def f(x, values, bias):
        return torch.func.functional_call(layer, {name: values, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, values, bias), fast_mode=True)  # random projections: quick


@pytest.mark.parametrize("use_triton", [None, True], ids=["torch-paths", "triton"])
@pytest.mark.parametrize("fmt", ["dense", "auto", "bsr", "2:4", "csr"])
def test_gradients_match_the_dense_masked_layer(fmt, use_triton):
    lin = small_linear(FIT[fmt])
    keep = lin.weight != 0
    layer = SparseLinear.from_linear(lin, format=fmt, use_triton=use_triton)
    x = torch.randn(5, 32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(5, 48)
    (layer(x1) * g).sum().backward()
    (lin(x2) * g).sum().backward()
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    torch.testing.assert_close(layer.bias.grad, lin.bias.grad, **tol)
    torch.testing.assert_close(grad_as_dense(layer, getattr(layer, VALUES[fmt]).grad), lin.weight.grad * keep, **tol)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("fmt", ["dense", "auto", "bsr", "2:4", "csr"])
def test_zeros_stay_zero_after_optimizer_steps(fmt, optimizer):
    lin = small_linear(FIT[fmt])
    layer = SparseLinear.from_linear(lin, format=fmt)
    before = layer.dense_weight()
    opt = (torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01) if optimizer == "sgd"
           else torch.optim.AdamW(layer.parameters(), lr=0.01))
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(4, 32)).pow(2).mean().backward()
        opt.step()
    after = layer.dense_weight()
    assert torch.equal(after == 0, before == 0)  # the same zeros, nothing revived
    assert not torch.equal(after, before)  # and the kept weights did train
    with torch.no_grad():  # inference after training (auto: re-packed copies) uses the new weights
        x = torch.randn(3, 32)
        torch.testing.assert_close(layer(x), F.linear(x, after, layer.bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["bsr", "2:4", "csr", "auto"])
def test_input_gradient_is_never_cut(fmt):
    """The gradient to the input used to be silently cut (requires_grad=False) for bsr, 2:4 and csr."""
    layer = SparseLinear.from_linear(small_linear(FIT[fmt]), format=fmt).requires_grad_(False)
    x = torch.randn(4, 32, requires_grad=True)
    y = layer(x)
    assert y.requires_grad
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(4, 48) @ layer.dense_weight(), atol=1e-4, rtol=1e-4)


def test_sparsify_keeps_requires_grad():
    model = nn.Sequential(small_linear("block"), nn.ReLU(), small_linear("nm").requires_grad_(False))
    sparsify(model, "auto")
    assert model[0].weight.requires_grad and not model[2].weight.requires_grad
    densify(model)
    assert model[0].weight.requires_grad and not model[2].weight.requires_grad


@pytest.mark.parametrize("kind,fmt", [("block", "bsr"), ("nm", "2:4"), ("sparse", "csr")])
def test_auto_trains_through_the_planned_kernel(kind, fmt):
    """auto with a trainable weight runs its planned kernel too; the values are gathered from the weight."""
    if kind == "sparse":
        torch.manual_seed(0)
        lin = nn.Linear(32, 48)
        with torch.no_grad():
            lin.weight.mul_(prune.magnitude_mask(lin.weight, 0.95))
    else:
        lin = small_linear(kind)
    keep = lin.weight != 0
    layer = SparseLinear.from_linear(lin, use_triton=True)
    assert fmt in layer.available
    layer.plan = {b: fmt for b in BUCKETS}
    x1, x2 = torch.randn(5, 32, requires_grad=True), None
    x2 = x1.detach().clone().requires_grad_()
    g = torch.randn(5, 48)
    (layer(x1) * g).sum().backward()
    (lin(x2) * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layer.weight.grad, lin.weight.grad * keep, atol=1e-4, rtol=1e-4)
    torch.optim.SGD(layer.parameters(), lr=0.5).step()
    after = layer.dense_weight()
    assert torch.equal(after != 0, keep)
    with torch.no_grad():  # the kernel copies were re-packed from the trained weight
        x = torch.randn(3, 32)
        torch.testing.assert_close(layer(x), F.linear(x, after, layer.bias), atol=1e-4, rtol=1e-4)
