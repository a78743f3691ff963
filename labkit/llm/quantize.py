"""Quantize a language model's linear layers: round to nearest (RTN) or GPTQ, alone or with pruning.

Model-agnostic like :func:`labkit.llm.prune`, and walking the same layers the same way: every
``nn.Linear`` except a tied LM head (:func:`labkit.llm.oneshot.prunable_layers`), GPTQ layer after layer on
the inputs the already quantized layers produce (:func:`labkit.llm.oneshot.obs_pass`).

* ``"rtn"``: every weight to the nearest value of its group's grid (:func:`labkit.llm.grid.rtn`). No data.
* ``"gptq"``: the OBS loop of :mod:`labkit.llm.sparsegpt` with "round to the grid" in place of "set to
  zero": each column's rounding error is spread over the columns not yet rounded. Needs calibration tokens.
* ``"gptq"`` with a ``pattern`` (and ``sparsity``): SparseGPT's joint pruning and quantization in one
  pass: the chosen weights become zero, the others land on the grid, and both errors are repaired alike.

The weights stay float32 *on the grid* ("fake quantization"): the model computes exactly what an integer
kernel would, so its perplexity is the quantized model's. :mod:`labkit.llm.qlinear` stores the integer codes
for real, for speed; :func:`labkit.llm.quantized_bytes` counts their bytes.

**The trap.** SmolLM2 arrived as Q4_1 GGUF: 4-bit codes with a scale and a minimum per block of 32 inputs.
Its float32 weights are therefore *already* on the asymmetric 4-bit grid of groups of 32, and quantizing
them to that grid changes nothing: a perplexity change of zero that teaches nothing about quantization.
:func:`on_grid` detects it (quantize a copy, compare with the loaded weights); 3 bits, per-channel 4 bits,
symmetric 4 bits or groups of 64 do change the weights. (8 bits, scale + min, in groups of 32 do not: its 256
levels include the file's 16, since 255 = 17 x 15.)
"""
from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import checks
from labkit.llm.evaluate import check_tokens
from labkit.llm.grid import check_group, decode, encode, make_grid, rtn
from labkit.llm.oneshot import check_nm_layers, check_pattern, measure_sparsity, obs_pass, prunable_layers
from labkit.llm.sparsegpt import obs

METHODS = ("rtn", "gptq")
#: A weight that moves by at most this share of its grid step was already on the grid (float rounding only).
ON_GRID_STEPS = 1e-3


def _check_grid_fits(layers: dict[str, nn.Linear], bits: int, group_size: int | None, symmetric: bool):
    g = make_grid(bits, group_size, symmetric)
    for name, layer in layers.items():
        check_group(g, layer.in_features, name)
    return g


def quantize(model: nn.Module, method: str = "rtn", bits: int = 4, group_size: int | None = None, *,
             symmetric: bool = False, calibration: torch.Tensor | None = None, pattern: str | None = None,
             sparsity: float | None = None, keep_zeros: bool = False, block_size: int = 128,
             damping: float = 0.01) -> dict:
    """Quantize every prunable linear layer of ``model`` in place; returns a report dict.

    ``method``: ``"rtn"`` or ``"gptq"``. ``bits``: 2 to 8. ``group_size``: inputs sharing one scale (and
    offset), e.g. 32 or 128, dividing every layer's input size; ``None``: one per output row (per channel).
    ``symmetric``: codes around zero (``offset = 0``) instead of scale + minimum (see :mod:`labkit.llm.grid`).
    ``calibration``: token ids ``(sequences, length)`` for GPTQ. ``pattern`` (``"unstructured"``, ``"2:4"``,
    ``"4:8"``) and ``sparsity``: prune in the same OBS pass (``"gptq"`` only). ``keep_zeros``: weights
    already exactly zero stay zero, for a model pruned before (RTN or GPTQ after Wanda, say): without it
    they are rounded like the others and the model is no longer sparse. ``block_size``, ``damping``: the
    OBS loop's (:func:`labkit.llm.sparsegpt.obs`).

    The report: ``{"method", "bits", "group_size", "symmetric", "pattern", "sparsity", "block_sparsity",
    "model_sparsity", "unchanged_share", "max_abs_change", "seconds", "layers"}``; ``unchanged_share`` is
    the share of the layers' weights that quantization left exactly as they were.
    """
    method = checks.choice("method", method, METHODS)
    layers = prunable_layers(model)
    g = _check_grid_fits(layers, bits, group_size, symmetric)
    if not isinstance(keep_zeros, bool):
        raise TypeError(f"keep_zeros must be True or False, got {keep_zeros!r}")
    n = m = 0
    if pattern is None:
        if sparsity is not None:
            raise ValueError(f"sparsity={sparsity} needs a pattern: pass pattern='unstructured' (or '2:4') to prune "
                             "and quantize in one pass, or leave sparsity=None")
        sparsity = 0.0
    else:
        if method == "rtn":
            raise ValueError("method 'rtn' does not prune: prune first (llm.prune(model, 'wanda', ...)), then "
                             "quantize(model, 'rtn', ..., keep_zeros=True); or use method='gptq' with pattern=...")
        n, m, sparsity = check_pattern(pattern, sparsity)
        if m:
            check_nm_layers(layers, pattern, m)
    block_size = checks.positive_int("block_size", block_size)
    damping = checks.finite("damping", damping, low=0.0)
    if method == "gptq":
        if g.group_size is not None and block_size % g.group_size:
            raise ValueError(f"block_size ({block_size}) must be a multiple of group_size ({g.group_size}) for GPTQ")
        if m and block_size % m:
            raise ValueError(f"block_size ({block_size}) must be a multiple of m ({m}) for pattern {pattern!r}")
        if calibration is None:
            raise ValueError("method 'gptq' needs calibration tokens (sequences, length): pass "
                             "calibration=text_splits(tokenizer)['calibration']")
        calibration = check_tokens("calibration", calibration, model)

    totals = {"weights": 0, "unchanged": 0, "max_abs_change": 0.0}

    def changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Count what quantization changed (the trap shows as nothing changed), then pass ``after`` on."""
        totals["weights"] += before.numel()
        totals["unchanged"] += int((before == after).sum())
        totals["max_abs_change"] = max(totals["max_abs_change"], float((before.float() - after.float()).abs().max()))
        return after

    start = time.perf_counter()
    with torch.no_grad():
        if method == "rtn":
            for layer in tqdm(layers.values(), desc="rtn", unit="layer", leave=False):
                layer.weight.copy_(changed(layer.weight, rtn(layer.weight, bits, group_size, symmetric,
                                                             keep_zeros=keep_zeros)))
        else:
            obs_pass(model, calibration, layers,
                     lambda weight, h: changed(weight, obs(weight, h, sparsity, n, m, grid=g, keep_zeros=keep_zeros,
                                                           block_size=block_size, damping=damping).weight),
                     "gptq" if pattern is None else "sparsegpt + gptq")
    seconds = time.perf_counter() - start
    return {"method": method, "bits": bits, "group_size": group_size, "symmetric": symmetric, "pattern": pattern,
            "sparsity": sparsity, **measure_sparsity(model),
            "unchanged_share": totals["unchanged"] / totals["weights"], "max_abs_change": totals["max_abs_change"],
            "seconds": seconds, "layers": len(layers)}


def on_grid(model: nn.Module, bits: int = 4, group_size: int | None = 32, symmetric: bool = False) -> dict:
    """Is the model *already* quantized to this grid? Quantizes a copy of each layer by RTN and compares.

    Returns ``{"on_grid", "layers", "layers_on_grid", "unchanged_share", "max_abs_change",
    "max_change_in_steps"}``: ``unchanged_share`` is the share of weights RTN leaves exactly as they are,
    ``max_change_in_steps`` the largest move as a share of its group's grid step (RTN moves a weight by
    at most half a step). A layer is on the grid when no weight moves by more than
    :data:`ON_GRID_STEPS` of a step (float rounding at most); ``on_grid`` is True when every layer is:
    quantizing the model to this grid would change nothing (SmolLM2 at 4 bits, groups of 32, asymmetric).
    The model is not changed.
    """
    layers = prunable_layers(model)
    g = _check_grid_fits(layers, bits, group_size, symmetric)
    weights = unchanged = on = 0
    max_change = max_steps = 0.0
    with torch.no_grad():
        for layer in layers.values():
            w = layer.weight.detach().float()
            codes, scale, offset = encode(g, w)
            delta = (decode(codes, scale, offset) - w).abs()  # what RTN would do to each weight
            steps = float((delta / scale.repeat_interleave(g.group_of(w.shape[1]), dim=1)).max())
            weights += w.numel()
            unchanged += int((delta == 0).sum())
            on += steps <= ON_GRID_STEPS
            max_change, max_steps = max(max_change, float(delta.max())), max(max_steps, steps)
    return {"on_grid": on == len(layers), "layers": len(layers), "layers_on_grid": on,
            "unchanged_share": unchanged / weights, "max_abs_change": max_change, "max_change_in_steps": max_steps}
