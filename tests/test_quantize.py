"""Quantization (issue 19, section 2): the grid and RTN, the one OBS loop that prunes and/or rounds (SparseGPT,
GPTQ, both), model-level quantize(), the Q4_1 trap, bytes of integer codes, the int8/int4 CPU kernels and the
sweep script. Small seeded layers and tiny Llamas; the real-model checks are marked slow."""
from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit import formats, llm, results
from labkit.llm import grid as G
from labkit.llm.oneshot import run_with_hooks
from labkit.llm.sparsegpt import _lowest, _saliency, gptq, hessian, obs, sparsegpt

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------------------------

def _layer(rows: int = 16, cols: int = 128, seed: int = 0, dead: tuple[int, ...] = ()):
    """A seeded weight and calibration inputs with *correlated* features (where GPTQ's updates matter)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mix = torch.eye(cols) + torch.randn(cols, cols, generator=g) / cols ** 0.5
    x = torch.randn(400, cols, generator=g) @ mix
    x[:, list(dead)] = 0.0
    return w, x


def _output_error(w: torch.Tensor, new: torch.Tensor, x: torch.Tensor) -> float:
    """``||X W^T - X W'^T||^2 / ||X W^T||^2``: what the OBS loop minimises, relative."""
    return float(((x @ (w - new).T) ** 2).sum() / ((x @ w.T) ** 2).sum())


def _q41(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Weights exactly as the GGUF reader dequantizes Q4_1: ``d * q + m`` in float32, with ``d`` and ``m`` fp16
    per block of 32 inputs and codes 0..15, each block holding its extremes (llama.cpp's scale is (max - min)/15)."""
    g = torch.Generator().manual_seed(seed)
    blocks = cols // 32
    d = (0.002 + 0.01 * torch.rand(rows, blocks, 1, generator=g)).half().float()
    m = (-0.05 - 0.1 * torch.rand(rows, blocks, 1, generator=g)).half().float()
    q = torch.randint(0, 16, (rows, blocks, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0.0, 15.0
    return (d * q + m).reshape(rows, cols)


def _tiny64(seed: int = 0) -> nn.Module:
    """A tiny Llama whose every block linear has 64 or 128 inputs, so groups of 32 and 64 (and the int4 kernel) fit."""
    return llm.tiny_llama(seed=seed, hidden_size=64, intermediate_size=128, num_attention_heads=8,
                          num_key_value_heads=2, head_dim=8)


def _char_tokenizer(text, add_special_tokens=False):
    return {"input_ids": [ord(c) % 96 for c in text]}


def _logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tokens).logits.float()


# --- the OBS loop prunes exactly as the SparseGPT it replaced ------------------------------------------------

def _sparsegpt_before_the_obs_loop(weight, h, sparsity, n, m, block_size, damping=0.01):
    """labkit.llm.sparsegpt._sparsegpt as it was before it became the OBS loop (commit a7c7188), verbatim."""
    rows, cols = weight.shape
    w = weight.detach().float().clone()
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damping * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    u = torch.linalg.cholesky(h_inv, upper=True).float()
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        d, dead1 = torch.diag(u1), dead[i1:i2]
        if m == 0:
            k = round(sparsity * rows * i2) - round(sparsity * rows * i1)
            prune1 = _lowest(_saliency(w1, d, dead1), k)
        else:
            prune1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if m and i % m == 0:
                group = _saliency(w1[:, i:i + m], d[i:i + m], dead1[i:i + m])
                drop = torch.sort(group, dim=1, stable=True).indices[:, :m - n]
                prune1[:, i:i + m].scatter_(1, drop, True)
            col = w1[:, i]
            q = torch.where(prune1[:, i], 0.0, col)
            err = (col - q) / d[i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w.to(weight.dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(16, 64), (24, 256), (8, 96)])
@pytest.mark.parametrize("sparsity, n, m, block_size", [
    (0.3, 0, 0, 128), (0.5, 0, 0, 128), (0.7, 0, 0, 32), (0.9, 0, 0, 16), (0.0, 0, 0, 128),
    (0.5, 2, 4, 128), (0.5, 2, 4, 16), (0.5, 4, 8, 32)])
def test_the_obs_loop_prunes_bit_for_bit_like_the_sparsegpt_it_replaced(seed, shape, sparsity, n, m, block_size):
    """Unstructured, 2:4 and 4:8 at several sparsities, blocks that do and do not divide the width, a dead input."""
    w, x = _layer(*shape, seed=seed, dead=(3,))
    h = hessian(x)
    before = _sparsegpt_before_the_obs_loop(w, h, sparsity, n, m, block_size)
    assert torch.equal(sparsegpt(w, h, sparsity, n, m, block_size), before)
    solved = obs(w, h, sparsity, n, m, block_size=block_size)
    assert torch.equal(solved.weight, before) and solved.scale is None and solved.offset is None


@pytest.mark.parametrize("pattern, sparsity", [("unstructured", 0.5), ("2:4", None)])
def test_prune_sparsegpt_on_a_model_is_the_old_layer_algorithm_layer_after_layer(tiny, tokens, pattern, sparsity):
    """llm.prune(..., 'sparsegpt') through the shared OBS pass equals the old per-layer code run in the same order."""
    model = copy.deepcopy(tiny)
    llm.prune(model, "sparsegpt", pattern, sparsity, tokens, block_size=16)
    reference = copy.deepcopy(tiny)
    n, m = (0, 0) if pattern == "unstructured" else (2, 4)

    def old(name, layer, x):
        layer.weight.copy_(_sparsegpt_before_the_obs_loop(layer.weight, hessian(x), 0.5, n, m, 16))

    with torch.no_grad():
        run_with_hooks(reference, tokens, llm.prunable_layers(reference), old)
    for (name, a), b in zip(llm.prunable_layers(model).items(), llm.prunable_layers(reference).values(), strict=True):
        assert torch.equal(a.weight, b.weight), name


# --- the grid and RTN ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("group_size", [None, 32, 128])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_moves_no_weight_by_more_than_half_a_step_and_lands_on_the_grid(bits, group_size, symmetric):
    w, _ = _layer(12, 256, seed=bits)
    g = G.make_grid(bits, group_size, symmetric)
    q = G.rtn(w, bits, group_size, symmetric)
    codes, scale, offset = G.encode(g, w)
    size = g.group_of(256)
    step = scale.repeat_interleave(size, dim=1)
    assert bool(((q - w).abs() <= step / 2 * (1 + 1e-5)).all())  # max error <= scale / 2, group by group
    assert torch.equal(q, G.decode(codes, scale, offset))  # every value is offset + scale * an integer code
    assert torch.equal(codes, codes.round()) and codes.min() >= g.low and codes.max() <= g.high
    per_group = q.reshape(12, -1, size)
    assert max(len(row.unique()) for grp in per_group for row in grp) <= 2 ** bits  # at most 2^b values a group
    if symmetric:
        assert g.high == 2 ** (bits - 1) - 1 and g.low == -g.high  # -127..127 at 8 bits
    else:
        assert (g.low, g.high) == (0, 2 ** bits - 1)
        assert torch.equal(q.reshape(12, -1, size).amin(-1), w.reshape(12, -1, size).amin(-1))  # offset = min


def test_rtn_is_exact_at_8_bits_for_weights_already_on_the_grid():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-127, 128, (8, 64), generator=g).float()
    codes[:, 0] = 127.0  # every row reaches the top code, so its scale is found again exactly
    scale = 2.0 ** -torch.randint(4, 9, (8, 1), generator=g).float()  # powers of two: no rounding anywhere
    w = codes * scale
    assert torch.equal(G.rtn(w, 8, None, symmetric=True), w)
    codes = torch.randint(0, 256, (8, 64), generator=g).float()
    codes[:, 0], codes[:, 1] = 0.0, 255.0  # asymmetric: codes 0..255, both ends in every row
    w = codes * scale - 1.0  # the offset (-1) is the row's minimum itself
    assert torch.equal(G.rtn(w, 8, None, symmetric=False), w)
    assert not torch.equal(G.rtn(w, 4, None, symmetric=False), w)  # the same weights at 4 bits do move


@pytest.mark.parametrize("positive", [False, True])
def test_rtn_keep_zeros_keeps_pruned_weights_out_of_the_grid(positive):
    w, _ = _layer(8, 64, seed=3)
    if positive:
        w = w.abs() + 0.5  # zero far below every group's minimum: counted, it would stretch the grid
    w[:, ::2] = 0.0
    kept = G.rtn(w, 4, 32, keep_zeros=True)
    assert torch.equal(kept == 0, w == 0)  # zeros stay zero, nothing else becomes zero
    alone = G.rtn(w[:, 1::2], 4, 16)  # the grid of the nonzeros alone: the zeros did not widen the range
    assert torch.equal(kept[:, 1::2], alone)
    filled = G.rtn(w, 4, 32)  # without keep_zeros a zero is a weight like the others
    if positive:  # the range now starts at zero: the nonzeros get a coarser grid
        assert (filled - w)[:, 1::2].abs().max() > (kept - w)[:, 1::2].abs().max()
    else:  # zero is not on the scale + min grid: the layer is no longer sparse
        assert int((filled[:, ::2] != 0).sum()) > 0


def test_a_constant_or_empty_group_is_stored_exactly():
    w = torch.zeros(2, 32)
    w[1] = 0.25
    assert torch.equal(G.rtn(w, 3, 32), w) and torch.equal(G.rtn(w, 3, 32, symmetric=True), w)
    assert torch.equal(G.rtn(w, 3, 32, keep_zeros=True), w)


# --- GPTQ: the same loop, rounding --------------------------------------------------------------------------

@pytest.mark.parametrize("group_size", [None, 32])
def test_gptq_lowers_the_output_error_of_rtn_at_3_bits_with_correlated_inputs(group_size):
    w, x = _layer(32, 128, seed=0)
    rtn_error = _output_error(w, G.rtn(w, 3, group_size), x)
    gptq_error = _output_error(w, gptq(w, hessian(x), 3, group_size), x)
    assert gptq_error < 0.7 * rtn_error  # measured: about half


def test_gptq_with_no_correlation_to_exploit_is_rtn():
    """An identity Hessian: no column can repair another's rounding, and the loop rounds each weight alone."""
    w, _ = _layer(16, 128, seed=1)
    eye = torch.eye(128, dtype=torch.float64)
    for bits, group_size, symmetric in ((3, 32, False), (4, None, True), (8, 64, False)):
        assert torch.equal(gptq(w, eye, bits, group_size, symmetric), G.rtn(w, bits, group_size, symmetric))


@pytest.mark.parametrize("group_size", [None, 32, 64])
def test_gptq_weights_lie_on_the_grid_it_returns(group_size):
    w, x = _layer(16, 128, seed=2, dead=(5,))
    g = G.make_grid(4, group_size)
    solved = obs(w, hessian(x), grid=g)
    size = g.group_of(128)
    assert solved.scale.shape == (16, 128 // size)
    codes = torch.cat([g.codes(solved.weight[:, j:j + size], solved.scale[:, j // size], solved.offset[:, j // size])
                       for j in range(0, 128, size)], dim=1)
    assert torch.equal(G.decode(codes, solved.scale, solved.offset), solved.weight)


def test_gptq_keep_zeros_keeps_a_pruned_layer_sparse():
    w, x = _layer(16, 128, seed=4)
    pruned = sparsegpt(w, hessian(x), 0.5)
    q = gptq(pruned, hessian(x), 4, 32, keep_zeros=True)
    assert torch.equal(q == 0, pruned == 0)


# --- joint: SparseGPT + GPTQ in one pass ----------------------------------------------------------------------

@pytest.mark.parametrize("sparsity, n, m", [(0.5, 0, 0), (0.5, 2, 4), (0.5, 4, 8)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_joint_pruning_and_quantization_keeps_zeros_zero_and_the_rest_on_the_grid(sparsity, n, m, symmetric):
    w, x = _layer(16, 128, seed=5, dead=(7,))
    h = hessian(x)
    g = G.make_grid(4, 32, symmetric)
    solved = obs(w, h, sparsity, n, m, grid=g)
    new = solved.weight
    if m:
        assert bool(((new != 0).reshape(16, -1, m).sum(-1) <= n).all())  # the pattern holds
    assert int((new == 0).sum()) >= round(sparsity * new.numel())  # the pruned count (a kept code may round to 0)
    codes = torch.cat([g.codes(new[:, j:j + 32], solved.scale[:, j // 32], solved.offset[:, j // 32])
                       for j in range(0, 128, 32)], dim=1)
    on_grid = G.decode(codes, solved.scale, solved.offset)
    assert torch.equal(torch.where(new != 0, on_grid, 0.0), new)  # every nonzero is offset + scale * code
    # The loop repairs both errors: the same zeros and the same bits without its updates cost far more.
    unrepaired = G.rtn(torch.where(new == 0, 0.0, w), 4, 32, symmetric, keep_zeros=True)
    assert _output_error(w, new, x) < 0.85 * _output_error(w, unrepaired, x)  # measured: 0.67 to 0.77


# --- quantize() on a model --------------------------------------------------------------------------------------

def test_quantize_rtn_puts_every_block_matrix_on_its_grid_and_leaves_the_rest(tokens):
    model = _tiny64()
    before = copy.deepcopy(model)
    report = llm.quantize(model, "rtn", 3, 32)
    assert report["method"] == "rtn" and report["layers"] == len(llm.prunable_layers(model))
    assert 0 <= report["unchanged_share"] < 0.5 and report["max_abs_change"] > 0
    for name, layer in llm.prunable_layers(model).items():
        assert torch.equal(layer.weight, G.rtn(llm.prunable_layers(before)[name].weight, 3, 32)), name
    assert torch.equal(model.model.embed_tokens.weight, before.model.embed_tokens.weight)  # the tied head as it was
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_quantize_gptq_beats_rtn_on_the_model_output_at_3_bits(tokens):
    dense = _tiny64()
    rtn_model, gptq_model = copy.deepcopy(dense), copy.deepcopy(dense)
    llm.quantize(rtn_model, "rtn", 3, None)
    report = llm.quantize(gptq_model, "gptq", 3, None, calibration=tokens, block_size=32)
    assert report["method"] == "gptq" and report["block_sparsity"] < 0.01
    reference = _logits(dense, tokens)
    assert (_logits(gptq_model, tokens) - reference).norm() < (_logits(rtn_model, tokens) - reference).norm()


@pytest.mark.parametrize("pattern, sparsity", [("2:4", None), ("unstructured", 0.5)])
def test_quantize_with_a_pattern_prunes_and_quantizes_in_one_pass(tokens, pattern, sparsity):
    model = _tiny64()
    report = llm.quantize(model, "gptq", 4, 32, calibration=tokens, pattern=pattern, sparsity=sparsity)
    assert report["pattern"] == pattern and report["sparsity"] == 0.5
    assert report["block_sparsity"] >= 0.5
    sizes = llm.quantized_bytes(model, 4, 32)
    assert (sizes["2:4_int4"] is None) == (pattern == "unstructured")
    if pattern == "2:4":
        assert all(formats.is_nm(layer.weight) for layer in llm.prunable_layers(model).values())


def test_wanda_then_rtn_with_keep_zeros_keeps_the_mask(tokens):
    model = _tiny64()
    llm.prune(model, "wanda", "2:4", None, tokens)
    masks = {name: layer.weight != 0 for name, layer in llm.prunable_layers(model).items()}
    llm.quantize(model, "rtn", 4, 32, keep_zeros=True)
    for name, layer in llm.prunable_layers(model).items():
        assert torch.equal(layer.weight != 0, masks[name]), name


@pytest.mark.parametrize("kwargs, error, match", [
    ({"bits": 9}, ValueError, "bits must be an int from 2 to 8"),
    ({"bits": 1}, ValueError, "bits must be an int from 2 to 8"),
    ({"bits": 4.0}, ValueError, "bits must be an int from 2 to 8"),
    ({"bits": True}, ValueError, "bits must be an int from 2 to 8"),
    ({"group_size": 0}, ValueError, "group_size must be a positive int"),
    ({"group_size": 48}, ValueError, r"group_size=48 must divide the input size of model.layers.0.self_attn.q_proj"),
    ({"group_size": 128}, ValueError, "group_size=128 must divide the input size"),  # 64 inputs
    ({"symmetric": "yes"}, TypeError, "symmetric must be True"),
    ({"method": "awq"}, ValueError, "method must be one of 'rtn', 'gptq'"),
    ({"method": "gptq"}, ValueError, "needs calibration tokens"),
    ({"pattern": "2:4"}, ValueError, "method 'rtn' does not prune"),
    ({"sparsity": 0.5}, ValueError, "sparsity=0.5 needs a pattern"),
    ({"method": "gptq", "calibration": "tokens", "pattern": "2:3"}, ValueError, "input size divisible by 3"),
    ({"method": "gptq", "calibration": "tokens", "pattern": "2:16", "block_size": 8, "group_size": None},
     ValueError, r"block_size \(8\) must be a multiple of m \(16\)"),
    ({"method": "gptq", "calibration": "tokens", "pattern": "2:4", "sparsity": 0.3}, ValueError, "sets sparsity"),
    ({"method": "gptq", "calibration": "tokens", "group_size": 64, "block_size": 32}, ValueError,
     r"block_size \(32\) must be a multiple of group_size \(64\)"),
    ({"keep_zeros": 1}, TypeError, "keep_zeros must be True or False"),
])
def test_quantize_refuses_bad_input_by_name(tokens, kwargs, error, match):
    kwargs = {**kwargs, "calibration": tokens} if kwargs.get("calibration") == "tokens" else kwargs
    model = _tiny64()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        llm.quantize(model, **{"method": "rtn", "bits": 4, "group_size": 32, **kwargs})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before changing anything


def test_the_layer_functions_refuse_bad_input_by_name():
    w, x = _layer(8, 64)
    with pytest.raises(TypeError, match="grid must be None or a labkit.llm.grid.Grid"):
        obs(w, hessian(x), grid=(4, 32))
    with pytest.raises(ValueError, match="must divide the input size of weight"):
        gptq(w, hessian(x), 4, 48)
    with pytest.raises(ValueError, match="bits must be an int from 2 to 8"):
        G.rtn(w, 16)
    with pytest.raises(TypeError, match="weight must be a floating-point tensor"):
        G.rtn(w.long(), 4)
    with pytest.raises(TypeError, match="keep_zeros must be True or False"):
        G.rtn(w, 4, keep_zeros=None)


# --- the Q4_1 trap ---------------------------------------------------------------------------------------------

def _q41_model() -> nn.Module:
    """Two linear layers whose weights are exactly on a Q4_1 grid, as SmolLM2's arrive."""
    model = nn.Sequential(nn.Linear(128, 64, bias=False), nn.ReLU(), nn.Linear(64, 8, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(_q41(64, 128, seed=1))
        model[2].weight.copy_(_q41(8, 64, seed=2))
    return model


def test_weights_on_a_q4_1_grid_come_back_unchanged_from_asymmetric_4_bit_groups_of_32():
    w = _q41(16, 128)
    assert torch.equal(G.rtn(w, 4, 32), w)  # bit for bit: quantizing to the file's own grid changes nothing
    assert not torch.equal(G.rtn(w, 4, 32, symmetric=True), w)


def test_on_grid_detects_the_trap_and_where_quantization_really_costs():
    model = _q41_model()
    trap = llm.on_grid(model, 4, 32, symmetric=False)
    assert trap["on_grid"] and trap["layers_on_grid"] == trap["layers"] == 2
    assert trap["unchanged_share"] == 1.0 and trap["max_abs_change"] == 0.0
    report = llm.quantize(copy.deepcopy(model), "rtn", 4, 32)
    assert report["unchanged_share"] == 1.0 and report["max_abs_change"] == 0.0  # quantize() reports it too
    for bits, group_size, symmetric in ((4, None, False), (3, 32, False), (4, 64, False), (4, 32, True)):
        real = llm.on_grid(model, bits, group_size, symmetric)
        assert not real["on_grid"] and real["layers_on_grid"] == 0, (bits, group_size, symmetric)
        assert real["unchanged_share"] < 0.5 and 0.1 < real["max_change_in_steps"] <= 0.5 + 1e-5
    # 8 bits, scale + min, groups of 32: 255 = 17 x 15, so the file's 16 levels are among the 256. Another trap,
    # up to float rounding (a change of at most a thousandth of a step), which is why on_grid has a tolerance.
    eight = llm.on_grid(model, 8, 32)
    assert eight["on_grid"] and eight["max_change_in_steps"] <= 1e-3
    wide = nn.Sequential(nn.Linear(128, 8, bias=False))  # groups of 128 span four of the file's blocks
    with torch.no_grad():
        wide[0].weight.copy_(_q41(8, 128, seed=3))
    assert llm.on_grid(wide, 4, 32)["on_grid"] and not llm.on_grid(wide, 4, 128)["on_grid"]
    assert torch.equal(model[0].weight, _q41(64, 128, seed=1))  # on_grid does not change the model


# --- bytes -----------------------------------------------------------------------------------------------------

def _sparse_4x8() -> torch.Tensor:
    """4 x 8 with 16 nonzeros, 2 in every group of 4 (so 2:4 sparse): small enough to count by hand."""
    w = torch.zeros(4, 8)
    w[:, 0], w[:, 3], w[:, 5], w[:, 6] = 1.0, -2.0, 3.0, 0.5
    return w


@pytest.mark.parametrize("fmt, bits, group_size, symmetric, expected", [
    # dense: 32 codes x 4 bits = 16 B; 2 groups of 4 per row x 4 rows = 8 groups x (scale + min) x 2 B = 32 B
    ("dense", 4, 4, False, 16 + 32),
    # dense int8 per channel, symmetric: 32 B of codes + 4 scales x 2 B
    ("dense", 8, None, True, 32 + 8),
    # 2:4 + int4: the kept half (16 codes x 4 bits = 8 B) + 2 bits per kept value (16 x 2 bits = 4 B) + 4 x (2 + 2) B
    ("2:4", 4, None, False, 8 + 4 + 16),
    # CSR + int8: 16 codes (16 B) + 16 column indices (64 B) + 5 row pointers (20 B) + 4 symmetric scales (8 B)
    ("csr", 8, None, True, 16 + 64 + 20 + 8),
    # bitmask + int4: 16 codes x 4 bits (8 B) + 32 bits of mask (4 B) + 8 groups of 4 x (2 + 2) B
    ("bitmask", 4, 4, False, 8 + 4 + 32),
])
def test_quantized_bytes_by_hand(fmt, bits, group_size, symmetric, expected):
    assert formats.FORMATS[fmt].quantized_bytes(_sparse_4x8(), bits, group_size, symmetric) == expected


def test_quantized_bytes_round_codes_up_to_whole_bytes_and_refuse_what_a_format_cannot_hold():
    w = torch.zeros(3, 8)
    w[0, 0], w[1, 1], w[2, 7] = 1.0, 2.0, 3.0  # 3 nonzeros: 12 bits of 4-bit codes take 2 bytes
    assert formats.FORMATS["bitmask"].quantized_bytes(w, 4, None, True, scale_bytes=4) == 2 + 3 + 3 * 4
    assert formats.FORMATS["2:4"].quantized_bytes(torch.ones(4, 8), 4) is None  # not 2:4 sparse
    # weight_bytes is the same count with 16-bit values: only the scales (here 1 byte per row) are added
    w = _sparse_4x8()
    for name in ("dense", "csr", "bitmask", "2:4"):
        floats = formats.FORMATS[name].weight_bytes(w, value_bytes=2)
        assert formats.FORMATS[name].quantized_bytes(w, 16, None, True, scale_bytes=1) == floats + 4
    with pytest.raises(ValueError, match="bits must be an int from 1 to 16"):
        formats.FORMATS["dense"].quantized_bytes(w, 0)
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        formats.FORMATS["dense"].quantized_bytes(w, 4, 0)


def test_quantized_model_bytes_count_the_embedding_as_q8_0_and_the_norms_in_fp32():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)  # 80 values: 80 B of codes + 3 fp16 scales (groups of 32)
            self.norm = nn.Parameter(torch.ones(8))  # 8 x 4 B
            self.proj = nn.Linear(8, 4, bias=False)

    toy = Toy()
    with torch.no_grad():
        toy.proj.weight.copy_(_sparse_4x8())
    sizes = llm.quantized_bytes(toy, 4, None, symmetric=False)
    rest = 80 + 3 * 2 + 8 * 4
    assert sizes == {"dense_int4": rest + 16 + 16, "csr_int4": rest + 8 + 64 + 20 + 16,
                     "bitmask_int4": rest + 8 + 4 + 16, "2:4_int4": rest + 8 + 4 + 16}


# --- the int8 / int4 CPU kernels -------------------------------------------------------------------------------

@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_int8_linear_computes_with_the_rounded_weight(compute_dtype, tolerance):
    layer = nn.Linear(64, 48)
    x = torch.randn(5, 3, 64)
    q = llm.Int8Linear.from_linear(layer, compute_dtype)
    expected = nn.functional.linear(x, G.rtn(layer.weight.detach(), 8, None, symmetric=True), layer.bias.detach())
    got = q(x)
    assert got.shape == (5, 3, 48) and got.dtype == torch.float32
    assert float((got - expected).abs().max()) <= tolerance * float(expected.abs().max())
    assert q.codes.dtype == torch.int8 and int(q.codes.abs().max()) == 127


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [32, 64])
@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_int4_linear_computes_with_the_rounded_weight(symmetric, group_size, compute_dtype, tolerance):
    layer = nn.Linear(128, 16, bias=False)
    x = torch.randn(7, 128)
    q = llm.Int4Linear.from_linear(layer, group_size, symmetric, compute_dtype)
    expected = x @ G.rtn(layer.weight.detach(), 4, group_size, symmetric).T
    got = q(x)
    assert float((got - expected).abs().max()) <= tolerance * float(expected.abs().max())
    assert q.packed.dtype == torch.uint8 and q.packed.shape == (16, 64)  # two codes a byte


def test_pack_swaps_the_block_linears_and_computes_the_quantized_model(tokens):
    dense = _tiny64()
    fake = copy.deepcopy(dense)
    llm.quantize(fake, "rtn", 4, 32)
    packed = llm.pack(copy.deepcopy(fake), "int4", 32, compute_dtype=torch.float32)
    layers = [m for m in packed.modules() if isinstance(m, llm.Int4Linear)]
    assert len(layers) == len(llm.prunable_layers(dense))
    assert isinstance(packed.lm_head, nn.Linear) and packed.lm_head.weight is packed.model.embed_tokens.weight
    reference = _logits(fake, tokens)
    assert float((_logits(packed, tokens) - reference).abs().max()) <= 1e-4 * float(reference.abs().max())
    fake8 = copy.deepcopy(dense)
    llm.quantize(fake8, "rtn", 8, None, symmetric=True)
    packed8 = llm.pack(copy.deepcopy(dense), "int8", compute_dtype=torch.float32)
    reference = _logits(fake8, tokens)
    assert float((_logits(packed8, tokens) - reference).abs().max()) <= 1e-4 * float(reference.abs().max())
    assert llm.held_bytes(packed8) < llm.held_bytes(dense) and llm.held_bytes(packed) < llm.held_bytes(packed8)
    single = llm.pack(nn.Linear(64, 8), "int8")  # a bare layer comes back as the new layer
    assert isinstance(single, llm.Int8Linear)


def test_kernel_layers_refuse_bad_input_by_name(tiny):
    with pytest.raises(ValueError, match="kernel must be one of 'int8', 'int4'"):
        llm.pack(_tiny64(), "int2")
    with pytest.raises(ValueError, match="group_size must be one of 32, 64, 128, 256"):
        llm.pack(_tiny64(), "int4", 48)
    with pytest.raises(ValueError, match="must divide the input size of model.layers.0.self_attn.q_proj"):
        llm.pack(tiny, "int4", 32)  # 48 inputs
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        llm.pack(_tiny64(), "int8", compute_dtype=torch.float16)
    with pytest.raises(TypeError, match="layer must be a torch.nn.Linear"):
        llm.Int8Linear.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="codes must lie in 0..15"):
        llm.Int4Linear(torch.full((4, 32), 16), torch.ones(4, 1), torch.zeros(4, 1), 32)
    with pytest.raises(ValueError, match="scale must have one entry per output row"):
        llm.Int8Linear(torch.zeros(4, 8, dtype=torch.int8), torch.ones(3))
    with pytest.raises(ValueError, match="x must end in 64 features"):
        llm.Int8Linear.from_linear(nn.Linear(64, 8))(torch.ones(2, 32))


def test_quant_variants_time_in_turns_with_the_dense_model(tokens):
    dense = _tiny64()
    variants = llm.quant_variants(dense, group_size=32)
    assert list(variants) == ["dense", "dense bf16", "int8 per channel, weight-only kernel",
                              "int4 groups of 32, weight-only kernel"]
    assert variants["dense"][1] is dense
    assert any(isinstance(m, llm.Int8Linear) for m in variants["int8 per channel, weight-only kernel"][1].modules())
    table = llm.speeds_in_turns(variants, _char_tokenizer, rounds=1, prompt_tokens=8, new_tokens=2)
    assert all(row["decode_tokens_per_s"] > 0 and row["prefill_tokens_per_s"] > 0 for row in table.values())
    assert table["int4 groups of 32, weight-only kernel"]["group_size"] == 32
    with pytest.raises(ValueError, match="kernels must be a sequence"):
        llm.quant_variants(dense, kernels="int8")


# --- the sweep script -------------------------------------------------------------------------------------------

def _sweep():
    spec = importlib.util.spec_from_file_location("llm_quant_sweep", ROOT / "benchmarks" / "llm_quant_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_quick_on_a_tiny_model_writes_resumable_rows_and_speeds(tmp_path, monkeypatch):
    sweep = _sweep()
    gen = torch.Generator().manual_seed(0)
    data = {"evaluation": torch.randint(0, 96, (8, 24), generator=gen),
            "calibration": torch.randint(0, 96, (4, 32), generator=gen)}
    dense = _tiny64()
    monkeypatch.setattr(sweep, "load_inputs", lambda quick: (dense, _char_tokenizer, data))
    out = tmp_path / "q.json"
    assert sweep.main(["--quick", "--out", str(out), "--only", "rows"]) == 0
    written = results.read(out, "llm_quant")
    rows = written["rows"]
    assert written["complete"] and [r["method"] for r in rows] == ["dense", "rtn", "gptq", "sparsegpt+gptq"]
    assert rows[0]["ratio"] == 1.0 and rows[0]["bits"] is None and "dense_fp32" in rows[0]["bytes"]
    joint = rows[3]
    assert joint["pattern"] == "2:4" and joint["block_sparsity"] >= 0.5 and joint["bytes"]["2:4_int4"] > 0
    assert rows[1]["on_file_grid"] is False  # a random model is on no grid
    assert written["sizes"]["file"] == llm.model.MODEL_BYTES and "speed" not in written
    assert sweep.main(["--quick", "--out", str(out), "--resume"]) == 0  # rows kept, the speed block added
    again = results.read(out, "llm_quant")
    structured = {f"structured, {keep:.0%} of FFN channels kept" for keep in sweep.STRUCTURED_KEEP}
    assert again["rows"] == rows and set(again["speed"]["models"]) == set(llm.quant_variants(dense)) | structured
    assert all(again["speed"]["models"][label]["held_bytes"] < again["speed"]["models"]["dense"]["held_bytes"]
               for label in structured)  # timed in the same turns: the map compares their speeds
    with pytest.raises(SystemExit):  # a quick run never writes the committed file
        sweep.main(["--quick"])


def test_sweep_cases_cover_the_issue():
    cases = _sweep().cases(quick=False)
    assert len(cases) == len(set(cases)) == 29 and cases[0].method == "dense"
    for method in ("rtn", "gptq"):
        assert {(c.bits, c.group_size) for c in cases if c.method == method and not c.symmetric} == {
            (b, g) for b in (8, 4, 3) for g in (None, 32, 64)}
    assert {(c.method, c.pattern) for c in cases if c.pattern != "none"} == {
        (method, pattern) for method in ("sparsegpt+gptq", "wanda+rtn") for pattern in ("unstructured", "2:4")}


# --- the real model ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    return llm.load()[0]


@pytest.mark.slow
def test_smollm2_is_already_on_the_asymmetric_4_bit_grid_of_groups_of_32(smollm2):
    """The trap, measured: all 210 block matrices come back bit for bit from RTN at the file's own grid."""
    trap = llm.on_grid(smollm2, 4, 32, symmetric=False)
    assert trap["on_grid"] and trap["layers_on_grid"] == 210 and trap["unchanged_share"] == 1.0
    for bits, group_size in ((4, None), (3, 32), (4, 64)):
        assert llm.on_grid(smollm2, bits, group_size)["layers_on_grid"] == 0
    assert llm.on_grid(smollm2, 8, 32)["on_grid"]  # 8 bits in groups of 32 hold the file's 16 levels too


@pytest.mark.slow
def test_smollm2_bytes_at_the_file_grid_are_the_gguf_files_tensor_bytes(smollm2):
    from gguf import GGUFReader

    tensors = sum(int(t.n_bytes) for t in GGUFReader(str(llm.model_file())).tensors)
    sizes = llm.quantized_bytes(smollm2, 4, 32, symmetric=False)
    assert sizes["dense_int4"] == tensors == 96_576_768  # Q4_1 matrices, Q8_0 embedding, fp32 norms
    assert sizes["2:4_int4"] is None and math.isclose(llm.model.MODEL_BYTES / tensors, 1.0185, abs_tol=1e-3)
