"""Moved: the shared plotly helpers are :mod:`labkit.figures` (this name stays until its importers move)."""
from labkit.figures import COLORS, TEMPLATE, image_grid, rounded, style  # noqa: F401  (alias: remove at merge)
