"""Random sparse weights with an exact pattern (blocks, unstructured, 2:4), for tests, benchmarks
and notebook 03's demos.

These generate *data* with a known pattern (e.g. exactly ``round(density * tiles)`` kept tiles), so
benchmarks compare like with like. They are not a pruning method: see :mod:`labkit.prune`.
"""
from __future__ import annotations

import torch


def block_sparse(n: int, k: int, block: int, density: float, gen: torch.Generator | None = None,
                 empty_rows: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """A random (n, k) float32 weight keeping a random ``density`` share of its block x block tiles.

    The number of kept tiles is exact (``round(density * tiles)``), so benchmarks compare like with like.
    """
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
    """A random (n, k) float32 weight with each entry kept with probability ``density``."""
    if gen is not None:
        return (torch.randn(n, k, generator=gen) * (torch.rand(n, k, generator=gen) < density)).to(device)
    return torch.randn(n, k, device=device) * (torch.rand(n, k, device=device) < density)


def two_four(n: int, k: int, gen: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """A random (n, k) float32 weight with exactly 2 nonzeros in each group of 4 inputs."""
    w = torch.randn(n, k, generator=gen).to(device) if gen is not None else torch.randn(n, k, device=device)
    idx = w.abs().reshape(n, k // 4, 4).topk(2, dim=-1).indices
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool, device=w.device).scatter_(-1, idx, True)
    return w * mask.reshape(n, k)
