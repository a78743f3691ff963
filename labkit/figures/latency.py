"""The CPU latency figure of :mod:`labkit.latency`: milliseconds against sparsity for each path."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from labkit.figures import rounded, style
from labkit.latency import PATHS, check_rows, crossover

#: Legend name of each path.
LABELS = {"dense_ms": "dense", "masked_ms": "masked (zeros kept)", "structured_ms": "structured (smaller dense)",
          "csr_ms": "torch CSR"}


def latency_figure(rows: Sequence[dict], title: str | None = "Linear layer latency on this CPU") -> go.Figure:
    """Milliseconds against sparsity for every path, log scale, crossover of CSR marked when there is one."""
    check_rows(rows, "csr_ms")
    ordered = sorted(rows, key=lambda r: r["sparsity"])
    xs = rounded([100 * r["sparsity"] for r in ordered], 1)
    fig = go.Figure()
    for key in PATHS:
        if key in ordered[0]:
            iqr = key.replace("_ms", "_iqr_ms")
            error = {"array": rounded([r[iqr] / 2 for r in ordered], 3)} if iqr in ordered[0] else None
            fig.add_trace(go.Scatter(x=xs, y=rounded([r[key] for r in ordered], 3), mode="lines+markers",
                                     error_y=error, name=LABELS[key]))
    cross = crossover(ordered, "csr_ms")
    if cross is not None:
        fig.add_vline(x=round(100 * cross, 1), line_dash="dot", line_color="grey",
                      annotation_text=f"CSR wins from {100 * cross:g}%")
    fig.update_xaxes(title="sparsity (%)")
    fig.update_yaxes(title="milliseconds, median ± IQR/2 (log scale)", type="log")
    return style(fig, title)
