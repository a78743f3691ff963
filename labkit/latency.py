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

:func:`crossover` finds the sparsity from which a path beats dense; :func:`latency_figure` plots it.
Timings depend on the machine and on what else it is doing: always re-measure.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from labkit import checks
from labkit.plots import rounded, style
from labkit.utils import median_time

#: The keys of each row :func:`cpu_linear_latency` returns, and the paths it times.
PATHS = ("dense_ms", "masked_ms", "structured_ms", "csr_ms")
_LABELS = {"dense_ms": "dense", "masked_ms": "masked (zeros kept)", "structured_ms": "structured (smaller dense)",
           "csr_ms": "torch CSR"}


def cpu_linear_latency(out_features: int = 1024, in_features: int = 1024, tokens: int = 64,
                       sparsities: Sequence[float] = (0.0, 0.5, 0.7, 0.9, 0.95, 0.98, 0.99), repeats: int = 7,
                       seed: int = 0) -> list[dict]:
    """Median milliseconds of ``x @ W.T`` (``x``: ``tokens x in_features``) for each path and sparsity.

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
            # Interleave the paths over 3 rounds and keep each path's best median: a burst of load
            # from other programs then slows one round, not one path.
            best = dict.fromkeys(paths, math.inf)
            for _ in range(3):
                for key, fn in paths.items():
                    best[key] = min(best[key], 1000.0 * median_time(fn, repeats=repeats, warmup=1))
            rows.append({"sparsity": s, **best})
    return rows


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


def _check_rows(rows: Sequence[dict], key: str) -> None:
    if not isinstance(rows, Sequence) or not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be the non-empty list of dicts that cpu_linear_latency returns")
    checks.choice("key", key, PATHS)
    missing = [k for k in ("sparsity", "dense_ms", key) if k not in rows[0]]
    if missing:
        raise ValueError(f"rows lack the keys {missing}; pass the output of cpu_linear_latency")


def crossover(rows: Sequence[dict], key: str = "csr_ms", margin: float = 0.1) -> float | None:
    """The lowest measured sparsity from which ``key`` beats dense, at it and at every higher sparsity.

    "Beats" means at least ``margin`` (10%) faster, so timer noise between two identical dense
    matmuls is not a win. ``None`` if the path does not beat dense at the highest sparsity measured.
    Requiring it to *stay* faster keeps one lucky timing from declaring a crossover.
    """
    _check_rows(rows, key)
    margin = checks.fraction("margin", margin)
    # Sparsity 0 is the baseline itself (the "structured" layer is the dense one), never a crossover.
    ordered = sorted((r for r in rows if r["sparsity"] > 0), key=lambda r: r["sparsity"])
    found = None
    for r in reversed(ordered):
        if r[key] < (1.0 - margin) * r["dense_ms"]:
            found = r["sparsity"]
        else:
            break
    return found


def latency_figure(rows: Sequence[dict], title: str | None = "Linear layer latency on this CPU") -> go.Figure:
    """Milliseconds against sparsity for every path, log scale, crossover of CSR marked when there is one."""
    _check_rows(rows, "csr_ms")
    ordered = sorted(rows, key=lambda r: r["sparsity"])
    xs = rounded([100 * r["sparsity"] for r in ordered], 1)
    fig = go.Figure()
    for key in PATHS:
        if key in ordered[0]:
            fig.add_trace(go.Scatter(x=xs, y=rounded([r[key] for r in ordered], 3), mode="lines+markers",
                                     name=_LABELS[key]))
    cross = crossover(ordered, "csr_ms")
    if cross is not None:
        fig.add_vline(x=round(100 * cross, 1), line_dash="dot", line_color="grey",
                      annotation_text=f"CSR wins from {100 * cross:g}%")
    fig.update_xaxes(title="sparsity (%)")
    fig.update_yaxes(title="milliseconds (log scale)", type="log")
    return style(fig, title)


def speedup_table(rows: Sequence[dict]) -> list[dict]:
    """Each path's speed-up over dense (``dense_ms / path_ms``) per sparsity, rounded to 2 decimals."""
    _check_rows(rows, "csr_ms")
    def ratio(r: dict, k: str) -> float:
        return round(r["dense_ms"] / r[k], 2) if r[k] > 0 else math.inf

    return [{"sparsity": r["sparsity"], **{k.replace("_ms", ""): ratio(r, k) for k in PATHS if k != "dense_ms"}}
            for r in rows]
