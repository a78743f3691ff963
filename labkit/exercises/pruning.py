"""Self-checks for the pruning notebooks (01_pruning_basics, 02_pruning_in_practice).

Each ``check_*`` prints "not attempted yet" while the answer is ``None``, raises ``AssertionError``
with a hint when it is wrong, and returns ``True`` when it is right.
"""
from __future__ import annotations

import torch

from labkit import latency
from labkit.exercises import ExerciseError, call, check_callable, expect, passed, unanswered


def _fixtures() -> list[tuple[torch.Tensor, float]]:
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(8, 16, generator=g), 0.5), (torch.randn(32, 8, generator=g), 0.9),
            (torch.randn(4, 4, generator=g), 0.0), (torch.randn(16, 3, 3, 3, generator=g)[:, :, 0, 0], 0.75)]


# --- notebook 01 ----------------------------------------------------------------------------------

def check_magnitude_mask(answer) -> bool:
    """Exercise 1.1: ``answer(weight, sparsity)`` returns a bool mask pruning the smallest ``|w|``."""
    from labkit.prune import magnitude_mask

    name = "Exercise 1.1 (magnitude mask)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    for w, s in _fixtures():
        mask = call(fn, w.clone(), s, exercise=name)
        expect(isinstance(mask, torch.Tensor), f"{name}: return a torch.Tensor mask, got {type(mask).__name__}")
        expect(tuple(mask.shape) == tuple(w.shape), f"{name}: the mask must have the weight's shape {tuple(w.shape)}, "
                                                     f"got {tuple(mask.shape)}")
        mask = mask.bool()
        k = round(s * w.numel())
        expect(int((~mask).sum()) == k, f"{name}: at sparsity {s} a {tuple(w.shape)} weight must lose exactly {k} "
                                        f"weights, yours prunes {int((~mask).sum())}. "
                                        "Hint: k = round(sparsity * numel).")
        expect(torch.equal(mask, magnitude_mask(w, s)), f"{name}: the right number, but the wrong weights. Hint: "
                                                       "rank by absolute value, w.abs(), and drop the k smallest.")
    return passed(name, "Your mask matches labkit.prune.magnitude_mask on every test weight.")


def check_csr_breakeven(answer) -> bool:
    """Exercise 1.2: the sparsity above which CSR (4-byte values and indices) is smaller than dense float32."""
    name = "Exercise 1.2 (when does CSR pay off?)"
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, (int, float)) and not isinstance(answer, bool),
           f"{name}: answer with a number between 0 and 1, such as 0.3")
    expect(0.0 <= answer < 1.0, f"{name}: a sparsity is a fraction in [0, 1), got {answer}")
    expect(abs(answer - 0.5) <= 0.02, f"{name}: {answer} is not it. Hint: CSR stores each nonzero as a 4-byte value "
                                      "*and* a 4-byte column index, so each kept weight costs 8 bytes instead of 4. "
                                      "Ignoring the small row-pointer array, what share must be zero to break even?")
    return passed(name, "Each nonzero costs twice a dense entry, so CSR only wins above ~50% sparsity "
                        "(a little more, counting the row pointers).")


#: Exercise 1.3's widest band: a measured ratio is graded within at most +-0.5 of 1. Wider, and the table could
#: not tell "the same speed" (1x) from "half as fast again" (1.5x), which is the very question asked. It is the
#: two paths' spreads added, each at :data:`labkit.latency.BUSY_SPREAD`, the level the lab calls a busy machine.
MAX_SPEEDUP_BAND = 2 * latency.BUSY_SPREAD
#: Exercise 1.3's band around 1 without a usable table: what "about 1x" means.
SPEEDUP_TOLERANCE = 0.1


def speedup_band(rows: list[dict], sparsity: float = 0.9) -> tuple[float, float]:
    """Exercise 1.3's measurement: ``(dense_ms / masked_ms, band)`` at ``sparsity`` in the latency table ``rows``.

    ``band`` is the ratio's relative uncertainty: the interquartile range / median of the dense path plus that of
    the masked path (if both wobble the worst way, the ratio moves by about their sum).
    """
    latency.check_rows(rows, "masked_ms")
    at = [r for r in rows if abs(r["sparsity"] - sparsity) < 1e-9]
    if not at:
        raise ExerciseError(f"Exercise 1.3: the latency table has no row at sparsity {sparsity:g} (it has "
                            f"{sorted(r['sparsity'] for r in rows)}): pass rows=latency.cpu_linear_latency(), "
                            "the table of section 6")
    r = at[0]
    if not (r["dense_ms"] > 0 and r["masked_ms"] > 0):
        raise ExerciseError(f"Exercise 1.3: the table's timings at sparsity {sparsity:g} must be positive, got dense "
                            f"{r['dense_ms']} ms and masked {r['masked_ms']} ms: rerun section 6's latency cell")
    band = sum(r.get(k.replace("_ms", "_iqr_ms"), 0.0) / r[k] for k in ("dense_ms", "masked_ms"))
    return r["dense_ms"] / r["masked_ms"], band


def check_masking_speedup(answer, rows: list[dict] | None = None, sparsity: float = 0.9) -> bool:
    """Exercise 1.3: how much faster is a dense matmul with 90% of the weight set to zero (the ratio)?

    ``rows`` are the latency table's rows (:func:`labkit.latency.cpu_linear_latency`). An answer within
    :data:`SPEEDUP_TOLERANCE` of 1 always passes: a dense kernel's work does not depend on the zeros. With ``rows``,
    timings on a busy laptop are noisy, so an answer also passes when it is the table's own ``dense_ms / masked_ms``
    at ``sparsity`` (within 0.05), or within the table's band (:func:`speedup_band`) of 1. When that band is wider
    than :data:`MAX_SPEEDUP_BAND`, the table cannot grade anything else: the check says the machine was too busy.
    """
    name = "Exercise 1.3 (does masking speed things up?)"
    if unanswered(answer, name):
        return False
    if not isinstance(answer, (int, float)) or isinstance(answer, bool) or answer != answer:
        raise ExerciseError(f"{name}: answer with a number: the speed-up factor, e.g. 2.0 for twice as fast")
    if abs(answer - 1.0) <= SPEEDUP_TOLERANCE:
        measured, band = speedup_band(rows, sparsity) if rows else (1.0, 0.0)
        note = (f" (Your table's timings spread by {100 * band:.0f}%, too much to show it: rerun section 6's "
                "latency cell when the machine is quieter, and look again.)" if band > MAX_SPEEDUP_BAND else
                f" (Your table measured {measured:.2f}x: the difference from 1 is timing noise.)"
                if abs(measured - 1.0) > SPEEDUP_TOLERANCE else "")
        return passed(name, "About 1x: zeros cost a dense kernel as much as any other number. Speed needs a "
                            "smaller dense matrix or a sparse kernel." + note)
    hint = (f"{name}: {answer}x is not what a dense kernel does. Hint: a dense matmul multiplies every entry, zero "
            "or not; look at masked_ms against dense_ms in the latency table (on a busy machine the two can differ "
            "by chance: the spread line says how much).")
    if not rows:
        raise ExerciseError(hint)
    measured, band = speedup_band(rows, sparsity)
    expect(band <= MAX_SPEEDUP_BAND,
           f"{name}: your machine is too busy to answer this; rerun. At {100 * sparsity:g}% the dense and masked "
           f"timings spread by {100 * band:.0f}% together (interquartile range / median), so the table cannot tell "
           f"{answer}x from 1x or from any other answer. Close other programs, rerun section 6's latency cell, then "
           "this check.")
    from_table = abs(answer - measured) <= 0.05
    expect(not from_table or abs(measured - 1.0) <= MAX_SPEEDUP_BAND,
           f"{name}: your machine is too busy to answer this; rerun. Your table does say {measured:.2f}x, but a "
           "dense kernel does the same work whatever the weights hold: a burst of other work fell on one path. Close "
           "other programs, rerun section 6's latency cell, then this check.")
    expect(from_table or abs(answer - 1.0) <= band, hint)
    return passed(name, "About 1x: zeros cost a dense kernel as much as any other number. Speed needs a smaller "
                        "dense matrix or a sparse kernel. " +
                  (f"(Your table's ratio, {measured:.2f}x, differs from 1 by timing noise.)" if from_table else
                   f"(Your answer is within your table's timing noise, {100 * band:.0f}%, of 1x.)"))


# --- notebook 02 ----------------------------------------------------------------------------------

def check_cubic_schedule(answer) -> bool:
    """Exercise 2.1: ``answer(step, final_sparsity, begin_step, end_step)`` is Zhu & Gupta's schedule (s_i = 0)."""
    from labkit.prune import cubic_sparsity

    name = "Exercise 2.1 (cubic schedule)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    for step in (0, 10, 25, 50, 75, 100, 120):
        got, want = call(fn, step, 0.9, 0, 100, exercise=name), cubic_sparsity(step, 0.9, 0, 100)
        expect(isinstance(got, (int, float)) and abs(got - want) < 1e-6,
               f"{name}: at step {step} (begin 0, end 100, final 0.9) expected {want:.4f}, got {got}. Hint: "
               "s_t = s_f * (1 - (1 - progress)**3) with progress = (t - t0) / (t1 - t0), clipped to [0, 1].")
    return passed(name, "Pruning goes fast while the network has redundancy to spare, then slows down.")


def check_nm_mask(answer) -> bool:
    """Exercise 2.2: ``answer(weight)`` returns the 2:4 mask: the 2 largest ``|w|`` of every 4 along a row."""
    from labkit.prune import nm_mask

    name = "Exercise 2.2 (2:4 mask)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(3)
    for shape in ((4, 8), (16, 32)):
        w = torch.randn(*shape, generator=g)
        mask = call(fn, w.clone(), exercise=name)
        expect(isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape,
               f"{name}: return a tensor mask of shape {shape}")
        groups = mask.bool().reshape(-1, 4).sum(dim=1)
        expect(bool((groups == 2).all()), f"{name}: every group of 4 consecutive weights in a row must keep exactly 2; "
                                          f"yours keeps {sorted(set(groups.tolist()))}. Hint: w.abs().reshape(-1, 4).")
        expect(torch.equal(mask.bool(), nm_mask(w, 2, 4)), f"{name}: 2 per group, but not the 2 largest |w|. Hint: "
                                                           "topk(2, dim=1) on the |w| of each group.")
    return passed(name, "Every group of 4 keeps its 2 largest weights: the pattern sparse tensor cores accelerate.")


def check_structured_weights(answer) -> bool:
    """Exercise 2.3: weights left in MLP(64, (256, 128), 10) after removing half of each hidden layer's units."""
    name = "Exercise 2.3 (structured removal)"
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, int) and not isinstance(answer, bool), f"{name}: answer with an int (a weight count)")
    want = 64 * 128 + 128 * 64 + 64 * 10
    expect(answer != 64 * 256 + 256 * 128 + 128 * 10, f"{name}: that is the dense count. Remove half the units first.")
    expect(answer != (64 * 256 + 256 * 128 + 128 * 10) // 2,
           f"{name}: not half of the dense count. Hint: removing a unit deletes its row in its own layer *and* its "
           "column in the next layer, so the middle 256x128 layer shrinks on both sides.")
    expect(answer == want, f"{name}: {answer} is not it. Hint: the layers become 64->128, 128->64 and 64->10; "
                           "count in x out for each (weights only, no biases).")
    return passed(name, f"{want} weights: removing 50% of the units removes {100 * (1 - want / 50432):.0f}% of the "
                        "weights, because each layer shrinks on both sides.")


def check_target_size(answer, model, val_split, target: float = 0.75, max_drop: float = 0.01) -> bool:
    """Exercise 2.4: per-layer sparsities ``{layer: sparsity}`` that remove at least ``target`` of the model's
    weights (one-shot magnitude pruning, no fine-tuning) and keep validation accuracy within ``max_drop`` of dense.

    The checker prunes a copy of ``model`` with your sparsities and measures it on ``val_split``.
    """
    import copy

    from labkit import checks, models, prune, train

    name = "Exercise 2.4 (a target size from the sensitivity scan)"
    if unanswered(answer, name):
        return False
    target = checks.fraction("target", target)
    max_drop = checks.fraction("max_drop", max_drop)
    layers = list(models.prunable_layers(model))
    if not (isinstance(answer, dict) and answer):
        raise ExerciseError(f"{name}: answer with a dict {{layer name: sparsity}}, e.g. {{{layers[0]!r}: 0.5}}; "
                            f"the layers are {layers}")
    unknown = sorted(set(answer) - set(layers))
    expect(not unknown, f"{name}: {unknown} are not layers of this model; the layers are {layers}")
    for layer, s in answer.items():
        expect(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1,
               f"{name}: the sparsity of {layer!r} must be a fraction in [0, 1), got {s!r}")
    dense_acc = train.evaluate(model, val_split)
    trial = copy.deepcopy(model)
    prune.prune_model(trial, "magnitude", {k: float(v) for k, v in answer.items()})
    removed = prune.sparsity_report(trial)["overall"]
    acc = train.evaluate(trial, val_split)
    sizes = {n: m.weight.numel() for n, m in models.prunable_layers(model).items()}
    biggest = max(sizes, key=sizes.__getitem__)
    expect(removed >= target - 1e-9,
           f"{name}: your sparsities remove {100 * removed:.1f}% of the weights; the target is {100 * target:.0f}%. "
           f"Layers count by size: {biggest} holds {100 * sizes[biggest] / sum(sizes.values()):.0f}% of the weights, "
           "so its sparsity moves the total most.")
    expect(dense_acc - acc <= max_drop + 1e-9,
           f"{name}: {100 * removed:.1f}% removed, but validation accuracy fell {100 * (dense_acc - acc):.1f} points "
           f"({100 * dense_acc:.1f}% -> {100 * acc:.1f}%), more than {100 * max_drop:g}. The scan prunes one layer "
           "at a time: drops of layers pruned together add up. Back off the layer whose scan curve falls first, "
           "and take the sparsity from a layer that stays flat.")
    return passed(name, f"{100 * removed:.1f}% of the weights removed, validation {100 * acc:.1f}% "
                        f"(dense {100 * dense_acc:.1f}%). Report the test accuracy only now, once.")
