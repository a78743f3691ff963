"""Does sparsity make a linear layer faster on *this* CPU? Measure it.

:func:`cpu_linear_latency` times one ``nn.Linear``-sized product ``y = x @ W.T`` four ways at each
sparsity:

* ``dense_ms`` - the full dense weight (the baseline);
* ``masked_ms`` - the same dense matmul on a weight whose pruned entries are zeros. A dense kernel
  multiplies zeros as fast as any other number, so this is never faster: masking saves nothing;
* ``structured_ms`` - a *smaller dense* layer with the same number of nonzeros (whole output rows
  removed), what structured pruning gives you;
* ``csr_ms`` - ``torch``'s sparse CSR matmul, which skips the zeros but pays for index lookups and
  irregular memory access, so it only wins at high sparsity.

:func:`crossover` finds the sparsity from which a path beats dense; :func:`labkit.figures.latency.latency_figure`
plots it.
Timings depend on the machine and on what else it is doing: always re-measure. To stay honest on
a busy laptop, :func:`interleaved_times` samples the paths in turn (a burst of load from another
program then slows every path a little, not one path a lot), each row reports the median and the
interquartile range (``*_iqr_ms``) of every path, :func:`spread` gives the largest IQR / median, and
a :class:`BusyMachineWarning` says when that spread means the machine was busy. :func:`crossover`
declares a win only when the two paths' interquartile ranges do not overlap.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from labkit import checks

#: Relative spread (IQR / median) above which the timings are called noisy: the machine was busy.
BUSY_SPREAD = 0.25


class BusyMachineWarning(UserWarning):
    """Timings spread so widely that other programs were competing for the CPU."""

#: The keys of each row :func:`cpu_linear_latency` returns, and the paths it times.
PATHS = ("dense_ms", "masked_ms", "structured_ms", "csr_ms")


def cpu_linear_latency(out_features: int = 1024, in_features: int = 1024, tokens: int = 64,
                       sparsities: Sequence[float] = (0.0, 0.5, 0.7, 0.9, 0.95, 0.98, 0.99), repeats: int = 15,
                       seed: int = 0) -> list[dict]:
    """Median milliseconds of ``x @ W.T`` (``x``: ``tokens x in_features``) for each path and sparsity.

    Each path is timed ``repeats`` times, interleaved with the others (:func:`interleaved_times`).
    Each row also holds ``<path>_iqr_ms``, the interquartile range of those samples; when the
    largest IQR is more than :data:`BUSY_SPREAD` of its median a :class:`BusyMachineWarning` is issued.

    Returns one dict per sparsity with keys ``sparsity`` and :data:`PATHS`. The masked weight prunes
    the smallest-magnitude entries (unstructured); the structured layer keeps
    ``round((1 - sparsity) * out_features)`` rows, the same nonzero count.
    """
    from labkit.prune import magnitude_mask

    out_features = checks.positive_int("out_features", out_features)
    in_features = checks.positive_int("in_features", in_features)
    tokens = checks.positive_int("tokens", tokens)
    repeats = checks.positive_int("repeats", repeats)
    seed = checks.nonneg_int("seed", seed)
    if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Sequence):
        raise TypeError(f"sparsities must be a list of fractions in [0, 1) such as (0.5, 0.9), got {sparsities!r}")
    if not sparsities:
        raise ValueError("sparsities must hold at least one fraction in [0, 1), got an empty list")
    sparsities = [checks.fraction(f"sparsities[{i}]", s) for i, s in enumerate(sparsities)]
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=gen)
    x = torch.randn(tokens, in_features, generator=gen)
    rows = []
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        for s in sparsities:
            masked = weight * magnitude_mask(weight, s)
            small = weight[: max(1, round((1 - s) * out_features))].contiguous()
            csr = masked.to_sparse_csr()
            paths = _paths(x, weight, masked, small, csr)
            samples = interleaved_times(paths, repeats=repeats)
            row = {"sparsity": s}
            for key, times in samples.items():
                q1, median, q3 = np.percentile(1000.0 * np.asarray(times), [25, 50, 75])
                row[key], row[key.replace("_ms", "_iqr_ms")] = float(median), float(q3 - q1)
            rows.append(row)
    worst = spread(rows)
    if worst > BUSY_SPREAD:
        warnings.warn(f"timings spread by up to {100 * worst:.0f}% (interquartile range / median): the machine "
                      f"looks busy. The medians below are still fair comparisons, but close calls are noise; "
                      f"re-run when fewer programs are running.", BusyMachineWarning, stacklevel=2)
    return rows


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int = 15, warmup: int = 1,
                      min_time: float = 1e-3) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` samples each, taken in turns.

    Round ``r`` times every function once (starting with a different one each round), so slow
    moments of the machine fall on all functions alike. A sample repeats its call until
    ``min_time`` seconds have passed, so the timer's resolution does not matter.
    """
    repeats = checks.positive_int("repeats", repeats)
    warmup = checks.nonneg_int("warmup", warmup)
    min_time = checks.finite("min_time", min_time, low=0.0)
    if not isinstance(fns, dict) or not fns or not all(callable(f) for f in fns.values()):
        raise TypeError("fns must be a non-empty dict {name: function of no arguments}")
    keys = list(fns)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            calls, start = 0, time.perf_counter()
            while True:
                fns[key]()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            samples[key].append(elapsed / calls)
    return samples


def spread(rows: Sequence[dict]) -> float:
    """The largest interquartile range / median over every path and row (0 when rows have no ``*_iqr_ms``)."""
    return max((r[k.replace("_ms", "_iqr_ms")] / r[k] for r in rows for k in PATHS
                if k.replace("_ms", "_iqr_ms") in r and r[k] > 0), default=0.0)


def _paths(x: torch.Tensor, weight: torch.Tensor, masked: torch.Tensor, small: torch.Tensor,
           csr: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The four products :func:`cpu_linear_latency` times, as functions of no arguments."""
    xt = x.t().contiguous()
    return {
        "dense_ms": lambda: F.linear(x, weight),
        "masked_ms": lambda: F.linear(x, masked),
        "structured_ms": lambda: F.linear(x, small),
        "csr_ms": lambda: torch.sparse.mm(csr, xt),
    }


def check_rows(rows: Sequence[dict], key: str) -> None:
    """Raise a clear error unless ``rows`` came from :func:`cpu_linear_latency` and ``key`` is in :data:`PATHS`."""
    if not isinstance(rows, Sequence) or not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be the non-empty list of dicts that cpu_linear_latency returns")
    checks.choice("key", key, PATHS)
    for i, r in enumerate(rows):
        missing = [k for k in ("sparsity", "dense_ms", key) if k not in r]
        if missing:
            raise ValueError(f"rows[{i}] lacks the keys {missing}; pass the output of cpu_linear_latency")
        checks.fraction(f"rows[{i}]['sparsity']", r["sparsity"])
        for k in ("dense_ms", key):
            checks.finite(f"rows[{i}][{k!r}]", r[k], low=0.0)


def crossover(rows: Sequence[dict], key: str = "csr_ms", margin: float = 0.1) -> float | None:
    """The lowest measured sparsity from which ``key`` beats dense, at it and at every higher sparsity.

    "Beats" means at least ``margin`` (10%) faster, so timer noise between two identical dense
    matmuls is not a win, and, when the rows carry interquartile ranges, the path's upper quartile
    below dense's lower quartile (median ± IQR/2), so a busy machine's noise is not a win either.
    ``None`` if the path does not beat dense at the highest sparsity measured.
    Requiring it to *stay* faster keeps one lucky timing from declaring a crossover.
    """
    check_rows(rows, key)
    margin = checks.fraction("margin", margin)
    # Sparsity 0 is the baseline itself (the "structured" layer is the dense one), never a crossover.
    ordered = sorted((r for r in rows if r["sparsity"] > 0), key=lambda r: r["sparsity"])
    found = None
    for r in reversed(ordered):
        path_high = r[key] + r.get(key.replace("_ms", "_iqr_ms"), 0.0) / 2
        dense_low = r["dense_ms"] - r.get("dense_iqr_ms", 0.0) / 2
        if r[key] < (1.0 - margin) * r["dense_ms"] and path_high < dense_low:
            found = r["sparsity"]
        else:
            break
    return found


def speedup_table(rows: Sequence[dict]) -> list[dict]:
    """Each path's speed-up over dense (``dense_ms / path_ms``) per sparsity, rounded to 2 decimals."""
    check_rows(rows, "csr_ms")
    def ratio(r: dict, k: str) -> float:
        return round(r["dense_ms"] / r[k], 2) if r[k] > 0 else math.inf

    return [{"sparsity": r["sparsity"], **{k.replace("_ms", ""): ratio(r, k) for k in PATHS if k != "dense_ms"}}
            for r in rows]
