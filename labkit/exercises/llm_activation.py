"""Self-checks for notebook 08 (activation sparsity).

Each ``check_*`` prints "not attempted yet" while the answer is ``None``, raises ``AssertionError``
with a hint when it is wrong, and returns ``True`` when it is right.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from labkit.exercises import call, check_callable, expect, labelled, passed
from labkit.llm import stats


def check_threshold(answer) -> bool:
    """Exercise 8.1: ``answer(x, sparsity)`` returns the threshold ``t`` below which (``|x| <= t``) a share
    ``sparsity`` of the entries of ``x`` lie: the ``sparsity`` quantile of ``|x|``."""
    name = "Exercise 8.1 (a threshold for a target sparsity)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(8)
    for sparsity in (0.25, 0.6, 0.8):  # not 0.5, where a quantile at 1 - sparsity would pass too
        x = torch.randn(4000, generator=g) * torch.rand(4000, generator=g) ** 3  # heavy-tailed, like real inputs
        x[:5] = 40.0  # a few outliers, as in a real layer
        got = call(fn, x.clone(), sparsity, exercise=name)
        t = float(got)
        expect(t >= 0, f"{name}: a threshold on |x| is never negative, got {t:g}. Hint: work with x.abs().")
        skipped = float((x.abs() <= t).float().mean())
        expect(abs(skipped - (1 - sparsity)) > 0.01,
               f"{name}: your threshold skips {skipped:.0%} of the inputs; the target was {sparsity:.0%}. You "
               "took the quantile at 1 - sparsity: the threshold should leave `sparsity` of |x| below it.")
        expect(abs(skipped - sparsity) <= 0.01, f"{name}: your threshold skips {skipped:.1%} of the inputs, not "
                                                f"{sparsity:.0%}. Hint: torch.quantile(x.abs(), sparsity) (a share "
                                                "of the mean or of the largest |x| is not a quantile).")
    return passed(name, "That is how ActivationSparsity sets each group's threshold, from calibration text "
                        "(labkit/llm/activation.py, _quantile).")


def check_gather(answer) -> bool:
    """Exercise 8.2: ``answer(x, weight_t, threshold)`` returns ``W x`` over the kept inputs (``|x_j| > threshold``)
    **without reading the skipped rows** of ``weight_t`` (``W^T``, shape ``(inputs, outputs)``)."""
    name = "Exercise 8.2 (skip the rows, do not multiply them by zero)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(9)
    x = torch.randn(64, generator=g)
    weight_t = torch.randn(64, 48, generator=g)
    threshold = 0.6
    keep = x.abs() > threshold
    want = x[keep] @ weight_t[keep]
    poisoned = weight_t.clone()
    poisoned[~keep] = float("nan")  # a skipped row must never be read: reading one turns the answer into NaN
    got = call(fn, x.clone(), poisoned, threshold, exercise=name)
    expect(isinstance(got, torch.Tensor) and got.numel() == 48,
           f"{name}: return the 48 outputs as a tensor, got "
           f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
    got = got.reshape(-1)
    expect(not torch.isnan(got).any(), f"{name}: your answer holds NaN. The skipped rows of weight_t were filled with "
           "NaN, and 0 x NaN is NaN: you multiplied skipped rows by zero instead of not reading them. Hint: "
           "kept = (x.abs() > threshold).nonzero().flatten(), then use only weight_t[kept].")
    expect(torch.allclose(got, want, atol=1e-5), f"{name}: wrong outputs. Multiply each kept input x[j] by its row "
           "weight_t[j] and add the rows up (x[kept] @ weight_t[kept], or F.embedding_bag with per_sample_weights).")
    return passed(name, f"Read {int(keep.sum())} of 64 rows: {1 - float(keep.float().mean()):.0%} of the weight bytes "
                        "were never touched. SparseGroup.gather does this with F.embedding_bag, no copy of the rows.")


def check_fastest_within(answer, points: Sequence[Mapping], threshold: float = 1.2) -> bool:
    """Exercise 8.3: the label of the fastest ``activation uniform`` point whose perplexity ratio is *resolved*
    within ``threshold`` x dense (its whole 95% interval below it)."""
    name = "Exercise 8.3 (the fastest uniform setting within 1.2x dense)"
    pick = labelled(answer, points, name, "trade_points names it")
    if pick is None:
        return False
    expect(pick["technique"] == "activation uniform", f"{name}: {answer} is {pick['technique']}; the question asks "
                                                      "for a uniform activation-sparse setting.")
    expect(stats.verdict(pick["ratio_ci"], threshold) == "below",
           f"{name}: {answer} is {stats.ratio_text(pick['ratio'], pick['ratio_ci'])} dense: its interval is not "
           f"wholly below {threshold:g}. Decide on the interval's upper end, not the point.")
    within = [p for p in points if p["technique"] == "activation uniform"
              and stats.verdict(p["ratio_ci"], threshold) == "below"]
    want = max(within, key=lambda p: p["decode_tokens_per_s"])
    expect(pick["label"] == want["label"], f"{name}: {answer} is within {threshold:g}x, but {want['label']} is "
                                           "within too and decodes faster.")
    return passed(name, f"{want['label']}: {want['speedup']:.2f}x the shipped dense, {want['speedup_fair']:.2f}x the "
                        "fair dense. Which of the two is the speed-up of the skipping?")
