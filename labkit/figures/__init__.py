"""Every plotly figure of the lab lives in this package, in one convention, with one look.

Convention: a figure function takes data (rows, dicts, numbers; never a model to train or a file
path to parse) and returns a ``plotly.graph_objects.Figure`` styled with :func:`style`. Whatever
trains or measures lives in :mod:`labkit.experiments`; what reads results files, in
:mod:`labkit.results`. One module per topic: :mod:`labkit.figures.kernels`, :mod:`labkit.figures.energy`,
:mod:`labkit.figures.pruning`, :mod:`labkit.figures.llm`, ...

This module holds the shared look: :data:`COLORS`, :func:`style`, :func:`rounded` and :func:`significant`.

Numbers are rounded before they go into a figure: nbval compares plotly's JSON output exactly
and cannot sanitize it, so unrounded floats would differ in the last bit between machines.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

TEMPLATE = "plotly_white"
#: A colour-blind-safe palette (Okabe & Ito), used in this order by every figure.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def rounded(values, digits: int = 4) -> list:
    """Values as plain Python floats rounded to ``digits`` decimals (nested lists kept)."""
    return np.round(np.asarray(values, dtype=float), digits).tolist()


def significant(values, digits: int = 3) -> list:
    """Values as plain Python floats rounded to ``digits`` significant figures (zeros stay zero).

    For values whose size varies by orders of magnitude (grams to tonnes): a fixed number of decimals
    would round the small ones to zero.
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be a positive int, got {digits!r}")
    flat = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(flat).all():
        raise ValueError(f"values must be finite numbers, got {flat[~np.isfinite(flat)][:3].tolist()}")
    return [float(f"{v:.{digits}g}") for v in flat.tolist()]


def style(fig: go.Figure, title: str | None = None, height: int = 380) -> go.Figure:
    """Apply the lab's template, size and margins; returns the figure for chaining."""
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=50 if title else 20, b=50),
                      colorway=list(COLORS))
    if title:
        fig.update_layout(title=dict(text=title, x=0.02))
    return fig


def image_grid(images, labels: Sequence, cols: int = 10, title: str | None = None) -> go.Figure:
    """Small grayscale images in a grid, each titled with its label (for the digits)."""
    from plotly.subplots import make_subplots

    images = np.asarray(images, dtype=float)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, height, width), got {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} entries but there are {len(images)} images")
    rows = int(np.ceil(len(images) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[str(label) for label in labels],
                        horizontal_spacing=0.01, vertical_spacing=0.08)
    for i, img in enumerate(images):
        fig.add_trace(go.Heatmap(z=rounded(img[::-1], 3), colorscale="gray_r", showscale=False,
                                 hoverinfo="skip"), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, title, height=110 * rows + 60)
