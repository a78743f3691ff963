"""Random sparse weights with an exact pattern (blocks, unstructured, 2:4), for tests, benchmarks
and notebook 03's demos.

These generate *data* with a known pattern (e.g. exactly ``round(density * tiles)`` kept tiles), so
benchmarks compare like with like. They are not a pruning method: see :mod:`labkit.prune`.
"""
from __future__ import annotations

import torch

from labkit import checks


def block_sparse(n: int, k: int, block: int, density: float, gen: torch.Generator | None = None,
                 empty_rows: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """A random (n, k) float32 weight keeping a random ``density`` share of its block x block tiles.

    The number of kept tiles is exact (``round(density * tiles)``), so benchmarks compare like with like.
    Contract: ``n``, ``k``, ``block`` positive ints with ``block`` dividing both; ``density`` in [0, 1];
    ``empty_rows`` (block rows left empty) a non-negative int.
    """
    n, k = checks.positive_int("n", n), checks.positive_int("k", k)
    block = checks.positive_int("block", block)
    density = checks.fraction("density", density, include_high=True)
    empty_rows = checks.nonneg_int("empty_rows", empty_rows)
    if n % block or k % block:
        raise ValueError(f"block={block} must divide the weight shape ({n}, {k})")
    rows, cols = n // block, k // block
    keep = round(density * rows * cols)
    order = torch.randperm(rows * cols, generator=gen)
    tiles = torch.zeros(rows * cols, dtype=torch.bool)
    tiles[order[:keep]] = True
    tiles = tiles.reshape(rows, cols)
    if empty_rows:
        tiles[:empty_rows] = False  # block rows with no kept block at all
    mask = tiles.to(device).repeat_interleave(block, 0).repeat_interleave(block, 1)
    w = torch.randn(n, k, generator=gen).to(device) if gen is not None else torch.randn(n, k, device=device)
    return w * mask


def unstructured(n: int, k: int, density: float, gen: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """A random (n, k) float32 weight with each entry kept with probability ``density``.

    Contract: ``n``, ``k`` positive ints; ``density`` in [0, 1].
    """
    n, k = checks.positive_int("n", n), checks.positive_int("k", k)
    density = checks.fraction("density", density, include_high=True)
    if gen is not None:
        return (torch.randn(n, k, generator=gen) * (torch.rand(n, k, generator=gen) < density)).to(device)
    return torch.randn(n, k, device=device) * (torch.rand(n, k, device=device) < density)


def two_four(n: int, k: int, gen: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """A random (n, k) float32 weight with exactly 2 nonzeros in each group of 4 inputs.

    Contract: ``n`` a positive int, ``k`` a positive multiple of 4.
    """
    n, k = checks.positive_int("n", n), checks.positive_int("k", k)
    if k % 4:
        raise ValueError(f"k={k} must be a multiple of 4 (groups of 4 inputs)")
    w = torch.randn(n, k, generator=gen).to(device) if gen is not None else torch.randn(n, k, device=device)
    idx = w.abs().reshape(n, k // 4, 4).topk(2, dim=-1).indices
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool, device=w.device).scatter_(-1, idx, True)
    return w * mask.reshape(n, k)
