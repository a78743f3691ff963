"""Error bars for perplexity: a perplexity is measured on a *sample* of text, so it has one.

The evaluation text is cut into windows (:func:`labkit.llm.text_splits`) and :func:`labkit.llm.window_losses`
gives each window's mean next-token loss. Resampling the windows with replacement (the bootstrap,
Efron 1979) shows how much the number would move on another sample of text like this one:

* :func:`perplexity_ci`: a perplexity and its 95% interval.
* :func:`paired_ratio`: model A's perplexity over model B's ("1.64x dense") with a **paired** interval:
  both models are scored on the *same* resampled windows, so the windows that are hard for both cancel
  out. That is why a paired interval is much narrower than two separate ones.
* :func:`verdict`: a threshold sentence ("within 1.5x dense") decided only when the whole interval is on
  one side; otherwise "not resolved by this evaluation". Nothing is decided by a point estimate alone.

All windows have the same length, so the mean of the window means is the mean over all tokens and
``exp(mean loss)`` is exactly the perplexity of :func:`labkit.llm.perplexity`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from labkit import checks

#: Bootstrap resamples and confidence level used everywhere in the lab's language-model results.
RESAMPLES = 2000
LEVEL = 0.95


def _losses(name: str, losses: object) -> torch.Tensor:
    if isinstance(losses, torch.Tensor):
        values = losses.detach().double().flatten()
    elif isinstance(losses, Sequence) and not isinstance(losses, str):
        values = torch.tensor([checks.finite(f"{name}[{i}]", v) for i, v in enumerate(losses)], dtype=torch.float64)
    else:
        raise TypeError(f"{name} must be a list or 1-D tensor of per-window losses, got {type(losses).__name__}")
    if values.numel() < 2:
        raise ValueError(f"{name} must hold at least 2 window losses to resample, got {values.numel()}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite losses: was the model broken when it was scored?")
    return values


def _resamples(n: int, resamples: int, seed: int) -> torch.Tensor:
    """``(resamples, n)`` window indices drawn with replacement, the same for every model given the seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (resamples, n), generator=generator)


def _interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
    return low, high


def perplexity_ci(losses: Sequence[float] | torch.Tensor, *, resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int = 0) -> dict[str, float | tuple[float, float]]:
    """``{"perplexity", "ci": (low, high)}`` from per-window losses, by a percentile bootstrap over windows."""
    values = _losses("losses", losses)
    resamples = checks.positive_int("resamples", resamples)
    level = checks.fraction("level", level, low=0.5)
    means = values[_resamples(values.numel(), resamples, seed)].mean(dim=1)
    low, high = _interval(means, level)
    return {"perplexity": math.exp(float(values.mean())), "ci": (math.exp(low), math.exp(high))}


def paired_ratio(losses: Sequence[float] | torch.Tensor, baseline: Sequence[float] | torch.Tensor, *,
                 resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict[str, float | tuple]:
    """``{"ratio", "ci": (low, high)}``: perplexity of ``losses`` over that of ``baseline``, paired bootstrap.

    Both lists must be losses on the same windows, in the same order (model A and model B scored on one
    evaluation set). Each resample draws one set of windows and uses it for both models.
    """
    a, b = _losses("losses", losses), _losses("baseline", baseline)
    if a.numel() != b.numel():
        raise ValueError(f"losses ({a.numel()} windows) and baseline ({b.numel()}) must be scored on the same "
                         "windows: use one evaluation set for both models")
    resamples = checks.positive_int("resamples", resamples)
    level = checks.fraction("level", level, low=0.5)
    index = _resamples(a.numel(), resamples, seed)
    log_ratios = a[index].mean(dim=1) - b[index].mean(dim=1)
    low, high = _interval(log_ratios, level)
    return {"ratio": math.exp(float(a.mean() - b.mean())), "ci": (math.exp(low), math.exp(high))}


def verdict(ci: Sequence[float], threshold: float) -> str:
    """``"below"`` if the whole interval ``ci`` lies below ``threshold``, ``"above"`` if above, else
    ``"not resolved"`` (the evaluation cannot tell: the interval straddles the threshold)."""
    if not isinstance(ci, Sequence) or len(ci) != 2:
        raise TypeError(f"ci must be a (low, high) pair, got {ci!r}")
    low, high = checks.finite("ci[0]", ci[0]), checks.finite("ci[1]", ci[1])
    if low > high:
        raise ValueError(f"ci must be (low, high) with low <= high, got {ci!r}")
    threshold = checks.finite("threshold", threshold)
    if high < threshold:
        return "below"
    if low > threshold:
        return "above"
    return "not resolved"


def ratio_text(ratio: float, ci: Sequence[float]) -> str:
    """``"1.64x (95% CI 1.57-1.71)"``; a ratio under 0.01 keeps two significant digits (``"0.0037x"``)."""
    def fmt(x: float) -> str:
        return f"{x:.2g}" if 0 < abs(x) < 0.01 else f"{x:.2f}"
    return f"{fmt(ratio)}x (95% CI {fmt(ci[0])}-{fmt(ci[1])})"


def _decided(head: str, ci: Sequence[float], threshold: float, below: str, above: str, unresolved: str) -> str:
    """``head: below`` / ``head: above`` / ``head: unresolved`` as :func:`verdict` decides ``ci``."""
    return f"{head}: " + {"below": below, "above": above}.get(verdict(ci, threshold), unresolved)


def within_text(name: str, ratio: float, ci: Sequence[float], threshold: float, of: str = "dense") -> str:
    """One sentence deciding "``name`` is within ``threshold``x ``of``" from the interval, never the point."""
    return _decided(f"{name}: {ratio_text(ratio, ci)} {of}", ci, threshold, f"within {threshold:g}x {of}",
                    f"worse than {threshold:g}x {of}", f"within {threshold:g}x {of}? not resolved by this evaluation")


def beats_text(name_a: str, name_b: str, ratio: float, ci: Sequence[float]) -> str:
    """One sentence deciding whether A (perplexity ratio A/B with ``ci``) beats B: lower perplexity wins."""
    return _decided(f"{name_a} / {name_b} perplexity {ratio_text(ratio, ci)}", ci, 1.0, f"{name_a} beats {name_b}",
                    f"{name_b} beats {name_a}", "not resolved by this evaluation")
