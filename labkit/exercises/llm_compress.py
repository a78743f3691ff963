"""Self-checks for notebook 07 (healing and quantizing a language model).

Each ``check_*`` prints "not attempted yet" while the answer is ``None``, raises ``AssertionError``
with a hint when it is wrong, and returns ``True`` when it is right.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from labkit.exercises import ExerciseError, call, check_callable, expect, labelled, passed, unanswered

#: Exercise 7.3's matrix: one of SmolLM2's ``gate_proj`` layers, 1,536 outputs x 576 inputs.
GATE_ROWS, GATE_COLS = 1536, 576


def _rtn_reference(w: torch.Tensor, bits: int) -> torch.Tensor:
    low, high = w.min(), w.max()
    scale = (high - low) / (2 ** bits - 1)
    if scale == 0:
        return w.clone()
    return low + scale * torch.clamp(torch.round((w - low) / scale), 0, 2 ** bits - 1)


def check_rtn_group(answer) -> bool:
    """Exercise 7.2: ``answer(w, bits)`` rounds one group ``w`` (1-D) to the nearest of ``2**bits`` levels
    from ``min(w)`` to ``max(w)`` (scale + min, the grid of GGUF's Q4_1) and returns the rounded values."""
    name = "Exercise 7.2 (round to nearest, by hand)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(7)
    for bits, size in ((4, 32), (3, 32), (2, 16), (8, 64)):
        w = torch.randn(size, generator=g) * 0.05 + 0.01  # lopsided: the minimum is not -maximum
        got = call(fn, w.clone(), bits, exercise=name)
        expect(isinstance(got, torch.Tensor) and tuple(got.shape) == (size,),
               f"{name}: return a tensor of the group's shape ({size},), got "
               f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        want = _rtn_reference(w, bits)
        levels = torch.unique(got).numel()
        expect(levels <= 2 ** bits, f"{name}: {levels} different values at {bits} bits; a {bits}-bit code has only "
                                    f"{2 ** bits} levels. Hint: round (w - min) / scale to an integer.")
        symmetric = w.abs().max() / (2 ** (bits - 1) - 1)
        near_symmetric = torch.round(w / symmetric) * symmetric
        expect(not torch.allclose(got, near_symmetric, atol=1e-7), f"{name}: that is the symmetric grid (codes "
               "around zero). This exercise's grid runs from the group's minimum to its maximum: offset = min(w).")
        step_too_small = (w.max() - w.min()) / 2 ** bits
        wrong = w.min() + step_too_small * torch.clamp(torch.round((w - w.min()) / step_too_small), 0, 2 ** bits - 1)
        expect(not torch.allclose(got, wrong, atol=1e-7), f"{name}: the step is (max - min) / (2**bits - 1): "
               f"{2 ** bits} levels have {2 ** bits - 1} gaps between them (you divided by 2**bits, so max is lost).")
        expect(torch.allclose(got, want, atol=1e-6), f"{name}: wrong values at {bits} bits. Check each part: "
               "scale = (max - min) / (2**bits - 1), code = round((w - min) / scale), value = min + scale * code; "
               "both ends (min and max) must come back exactly.")
    return passed(name, "Every weight moved by at most half a step. labkit.llm.rtn does this for every group of "
                        "every row (labkit/llm/grid.py).")


def check_masks_held(answer) -> bool:
    """Exercise 7.1: ``answer(model, masks)`` is True exactly when every pruned weight (``False`` in
    ``masks[name]``) of every layer ``model.get_submodule(name)`` is exactly zero."""
    name = "Exercise 7.1 (are the zeros still zero?)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    torch.manual_seed(72)
    first, last = nn.Linear(8, 8), nn.Linear(8, 4)
    model = nn.Sequential(first, nn.ReLU(), last)  # layers named "0" and "2"
    with torch.no_grad():
        for layer in (first, last):
            layer.weight.mul_(torch.rand_like(layer.weight) > 0.5)
    masks = {"0": first.weight != 0, "2": last.weight != 0}

    def ask(case: str) -> bool:
        got = call(fn, model, masks, exercise=name)
        if not isinstance(got, bool):
            raise ExerciseError(f"{name}: return True or False (a Python bool; use bool(...) around a tensor), "
                                f"got {type(got).__name__} for {case}")
        return got

    expect(ask("a model whose zeros are all zero") is True,
           f"{name}: said False for a model whose pruned weights are all exactly zero.")
    with torch.no_grad():
        pruned = tuple((~masks["2"]).nonzero()[0].tolist())
        last.weight[pruned] = 1e-30  # one pruned weight, nudged by a tiny optimizer step
    expect(ask("a pruned weight of the last layer set to 1e-30") is False,
           f"{name}: said True although a pruned weight of layer '2' is 1e-30. 'Zero' means exactly zero: a tiny "
           "value is still a weight a sparse format must store. Check every layer, not only the first, and use == 0 "
           "(no tolerance).")
    with torch.no_grad():
        last.weight[pruned] = 0.0
        kept = tuple(masks["0"].nonzero()[0].tolist())
        first.weight[kept] = 0.0  # a *kept* weight that happens to be zero is fine
    expect(ask("a kept weight that happens to be zero") is True,
           f"{name}: said False when only a *kept* weight is zero. Check the pruned positions only (~mask): kept "
           "weights may take any value, zero included.")
    return passed(name, "Use it as on_step in heal_pruned: it runs after every optimizer step.")


def check_bytes_24_int4(answer) -> bool:
    """Exercise 7.3: bytes of a 1,536 x 576 ``gate_proj`` stored as 2:4 + 4-bit codes, 2 bits of metadata per kept
    value, and an fp16 scale and an fp16 minimum per group of 32 inputs of each row."""
    name = "Exercise 7.3 (bytes of 2:4 + int4)"
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, int) and not isinstance(answer, bool),
           f"{name}: answer with a whole number of bytes (an int), got {type(answer).__name__}")
    kept = GATE_ROWS * GATE_COLS // 2
    codes, metadata = kept * 4 // 8, kept * 2 // 8
    groups = GATE_ROWS * (GATE_COLS // 32)
    want = codes + metadata + groups * 2 * 2
    expect(answer != codes + metadata + groups * 2, f"{name}: Q4_1's grid has a scale *and* a minimum per group: "
                                                    "two fp16 numbers, 4 bytes per group.")
    expect(answer != GATE_ROWS * GATE_COLS * 4 // 8 + metadata + groups * 4,
           f"{name}: 2:4 stores only the kept half of the values: codes for {kept:,} values, not for all.")
    expect(answer != codes + groups * 4, f"{name}: where are the 2-bit positions? Each kept value needs its "
                                         "position within its group of 4 (2 bits).")
    expect(answer == want, f"{name}: {answer:,} bytes is not it. Add up three parts: 4-bit codes for the kept "
                           "values, 2-bit positions for the kept values, and 2 + 2 bytes per group of 32 inputs of "
                           "each row.")
    dense = GATE_ROWS * GATE_COLS * 4
    return passed(name, f"{want:,} bytes: {dense / want:.0f}x smaller than float32 ({dense:,}), "
                        "3 bits per original weight, scales included.")


def check_smallest_within(answer, points: Sequence[Mapping], threshold: float = 1.5) -> bool:
    """Exercise 7.4: the label of the smallest model on the map whose ratio to dense is *resolved* below
    ``threshold`` (its whole 95% interval under it)."""
    name = "Exercise 7.4 (the smallest model within 1.5x dense)"
    pick = labelled(answer, points, name, "the map names it")
    if pick is None:
        return False
    within = [p for p in points if p["ratio_ci"][1] < threshold]
    want = min(within, key=lambda p: (p["bytes"], p["ratio"]))
    expect(pick["ratio_ci"][1] < threshold or pick["ratio"] >= threshold,
           f"{name}: {answer} has a ratio of {pick['ratio']:.2f}x but its interval reaches {pick['ratio_ci'][1]:.2f}x: "
           "the evaluation cannot say it is within 1.5x. Pick by the interval's upper end.")
    expect(pick["ratio"] < threshold, f"{name}: {answer} is {pick['ratio']:.2f}x dense, beyond {threshold:g}x.")
    expect(math.isclose(pick["bytes"], want["bytes"]), f"{name}: {answer} is within {threshold:g}x, but a smaller "
                                                       f"model is too ({want['bytes'] / 1e6:.1f} MB).")
    return passed(name, f"{want['label']}, {want['bytes'] / 1e6:.1f} MB. Look at which family it is in.")
