"""The OBS loop for one linear layer: SparseGPT (prune), GPTQ (quantize), or both at once, written for reading.

Papers: Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"
(ICML 2023); Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers" (ICLR 2023).

The problem, per layer: find a sparse and/or quantized ``W'`` so that ``W' X`` stays close to ``W X`` on
calibration inputs ``X``. Its curvature is ``H = X X^T`` (input features x input features).

The idea is Optimal Brain Surgeon applied column by column. Going left to right over the input
columns, replace column ``j`` by what may be stored, ``q_j``, and push the error onto the columns to its
right, which can still change. There are two ways to make ``q_j``, and the loop does not care which:

* **prune** (SparseGPT): set the chosen weights to zero;
* **round** (GPTQ): put every weight on the quantization grid (:mod:`labkit.llm.grid`);
* **both** (SparseGPT's joint 50% or 2:4 + 4-bit): zero the chosen weights, round the others.

With ``F = {j, j+1, ...}`` the columns not yet fixed and ``H_F^-1 = (H[F, F])^-1`` the inverse Hessian
restricted to them:

    err = (w_j - q_j) / [H_F^-1]_jj
    W[:, j+1:] -= err * [H_F^-1]_j,j+1:      (the OBS update)

Using the *upper Cholesky factor* ``U`` of ``H^-1`` (``H^-1 = U^T U``) avoids re-inverting ``H[F, F]``
after every column: ``U[F, F]^T U[F, F]`` *is* ``H_F^-1``, so row ``j`` of ``U`` scaled by ``U_jj`` is the
row of ``H_F^-1`` above, and ``U_jj^2 = [H_F^-1]_jj``. The code therefore computes
``err = (w_j - q_j) / U_jj`` and ``W[:, j:] -= err * U[j, j:]``.

Lazy batch updates: the loop touches only a block of ``block_size`` columns (128); the errors of the
whole block reach the columns to its right in one matrix multiply at the end of the block.

The mask is chosen by the OBS saliency ``w^2 / [H_F^-1]_jj``, computed as ``w^2 / U_jj^2`` (the same
number, by the identity above): for unstructured sparsity once per block of columns (exactly the wanted
count in each block), for N:M inside each group of M columns when the loop reaches it.

The grid: per channel, fitted once to the whole weight before the loop (as GPTQ does); per group of
``group_size`` inputs, fitted when the loop reaches the group's first column, to the weights as the
updates have left them, leaving out those already chosen for pruning (they are not stored). A pruned
weight is exactly zero; it is never rounded.

A *dead* input (always zero in the calibration data, ``H_jj = 0``) has saliency 0: removing its
weights changes nothing the calibration can see, so they are pruned first, but only within the
wanted count. At sparsity 0 and with no grid nothing changes and the weight comes back unchanged, dead
inputs included: they may well be nonzero on other inputs. With a grid they are rounded like the others
(they must be stored too); their error reaches no other column (their row of ``U`` is zero right of the
diagonal).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from labkit import checks
from labkit.llm.grid import Grid, check_group, make_grid


class Solved(NamedTuple):
    """What :func:`obs` returns: the new weight and, when it rounded, the grid of every group (else ``None``)."""

    weight: torch.Tensor
    scale: torch.Tensor | None
    offset: torch.Tensor | None


def hessian(x: torch.Tensor) -> torch.Tensor:
    """``2 X^T X / n`` for calibration inputs ``x`` of shape ``(n tokens, in features)``.

    Summed in float32 (fast, as in the paper's code), returned in float64 for the Cholesky steps.
    """
    x = x.reshape(-1, x.shape[-1]).float()
    return (2 * x.T @ x / x.shape[0]).double()


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask, True at the ``k`` lowest entries of ``scores`` (flat ranking, ties broken by position)."""
    prune = torch.zeros(scores.numel(), dtype=torch.bool)
    if k > 0:
        prune[torch.sort(scores.flatten(), stable=True).indices[:k]] = True
    return prune.reshape(scores.shape)


def _saliency(w: torch.Tensor, d: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """OBS saliency ``w^2 / U_jj^2`` of each weight; 0 for the weights of dead inputs (pruning them costs nothing)."""
    return torch.where(dead, 0.0, w**2 / d**2)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block in one CPU thread.

    The column loop is thousands of small tensor operations. Split over threads, each one waits for
    all threads to meet: on a busy 2-core machine that made SparseGPT ~15x slower than one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sparsegpt(weight: torch.Tensor, h: torch.Tensor, sparsity: float = 0.5, n: int = 0, m: int = 0,
              block_size: int = 128, damping: float = 0.01) -> torch.Tensor:
    """Prune ``weight`` ``(out, in)`` with SparseGPT given ``h = hessian(x)``; returns the new weight.

    Unstructured (``n = m = 0``): exactly ``round(sparsity * out * in)`` weights pruned to zero, counted
    block by block (``sparsity`` in [0, 1); 0 returns the weight unchanged).
    N:M (e.g. ``n=2, m=4``, with ``0 < n < m``): in every group of ``m`` consecutive inputs of a row,
    ``m - n`` are zero; ``sparsity`` is then not used (it is implied: ``1 - n/m``), but must still be valid.
    ``damping`` adds that share of the mean diagonal of ``h`` to its diagonal, so it can be inverted.
    This is :func:`obs` with pruning and no grid.
    """
    return obs(weight, h, sparsity, n, m, block_size=block_size, damping=damping).weight


def gptq(weight: torch.Tensor, h: torch.Tensor, bits: int = 4, group_size: int | None = None,
         symmetric: bool = False, *, keep_zeros: bool = False, block_size: int = 128,
         damping: float = 0.01) -> torch.Tensor:
    """Quantize ``weight`` ``(out, in)`` with GPTQ given ``h = hessian(x)``; every weight ends on the grid.

    The grid (:mod:`labkit.llm.grid`): ``bits`` from 2 to 8, one scale (and, unless ``symmetric``, an
    offset) per ``group_size`` inputs of a row (``None``: per row). ``keep_zeros``: weights that are exactly
    zero (pruned before) stay zero. This is :func:`obs` with rounding and no pruning.
    """
    return obs(weight, h, 0.0, grid=make_grid(bits, group_size, symmetric), keep_zeros=keep_zeros,
               block_size=block_size, damping=damping).weight


def obs(weight: torch.Tensor, h: torch.Tensor, sparsity: float = 0.0, n: int = 0, m: int = 0, *,
        grid: Grid | None = None, keep_zeros: bool = False, block_size: int = 128, damping: float = 0.01) -> Solved:
    """The OBS loop: prune (``sparsity`` or ``n:m``), round to ``grid``, or both; returns a :class:`Solved`.

    ``sparsity``, ``n``, ``m``, ``block_size``, ``damping``: as in :func:`sparsegpt` (``sparsity=0`` and
    ``m=0``: no pruning). ``grid``: a :class:`labkit.llm.grid.Grid` (from :func:`labkit.llm.grid.make_grid`);
    ``None``: no rounding. With a grid, ``keep_zeros=True`` treats the weights that are already exactly zero
    as pruned (a pruned model quantized afterwards stays sparse). A grid's groups may not straddle a block:
    ``block_size`` must be a multiple of ``grid.group_size``.
    The result's ``weight`` is the new weight; with a grid, ``scale`` and ``offset`` are the grid each group
    was rounded to, ``(out, in // group)`` each: what a storage format keeps beside the codes.
    """
    weight = checks.tensor("weight", weight, dim=2, nonempty=True, all_finite=True)
    if not weight.dtype.is_floating_point:
        raise TypeError(f"weight must be a floating-point tensor, got {weight.dtype}")
    rows, cols = weight.shape
    h = checks.tensor("h", h, dim=2, all_finite=True)
    if h.shape != (cols, cols):
        raise ValueError(f"h must be ({cols}, {cols}) for a weight with {cols} inputs, got {tuple(h.shape)}")
    sparsity = checks.fraction("sparsity", sparsity)
    n, m = checks.nonneg_int("n", n), checks.nonneg_int("m", m)
    block_size = checks.positive_int("block_size", block_size)
    damping = checks.finite("damping", damping, low=0.0)
    if m == 0 and n != 0:
        raise ValueError(f"n={n} needs m (an N:M pattern such as n=2, m=4); for unstructured pruning pass n=0, m=0")
    if m and not 0 < n < m:
        raise ValueError(f"an N:M pattern keeps 0 < n < m weights of every m, got n={n}, m={m} (e.g. n=2, m=4)")
    if m and (cols % m or block_size % m):
        raise ValueError(f"N:M with m={m} needs the input size ({cols}) and block_size ({block_size}) to be "
                         f"multiples of m, so that no group of {m} straddles a block or the matrix edge")
    if grid is not None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be None or a labkit.llm.grid.Grid (e.g. make_grid(4, 32)), "
                            f"got {type(grid).__name__}")
        check_group(grid, cols)
        if grid.group_size is not None and block_size % grid.group_size:
            raise ValueError(f"block_size ({block_size}) must be a multiple of group_size ({grid.group_size}), so that "
                             "no quantization group straddles two blocks of the OBS loop")
    if not isinstance(keep_zeros, bool):
        raise TypeError(f"keep_zeros must be True or False, got {keep_zeros!r}")
    with one_thread():
        new, scales, offsets = _obs(weight, h, sparsity, n, m, grid, keep_zeros, block_size, damping)
    if grid is None:
        return Solved(new, None, None)
    return Solved(new, torch.stack(scales, 1), torch.stack(offsets, 1))


def _obs(weight: torch.Tensor, h: torch.Tensor, sparsity: float, n: int, m: int, grid: Grid | None,
         keep_zeros: bool, block_size: int, damping: float
         ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    rows, cols = weight.shape
    w = weight.detach().float().clone()
    # Weights that are zero already and must stay zero (a grid may not hold zero): pruned from the start.
    zero = w == 0 if grid is not None and keep_zeros else None
    h = h.double().clone()
    # An input that is always zero: H_jj = 0 cannot be inverted, so its Hessian entry becomes 1 (its row and
    # column are zero, so the inverse then leaves the other columns alone). Its weights are *not* zeroed here:
    # they get saliency 0 below, which prunes them first but only within the wanted count.
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damping * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    try:
        h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
        u = torch.linalg.cholesky(h_inv, upper=True).float()  # upper factor of H^-1
    except torch.linalg.LinAlgError as exc:
        raise ValueError("the calibration Hessian is not positive definite even after damping: use more "
                         "calibration tokens or a larger damping (e.g. 0.1)") from exc
    scales: list[torch.Tensor] = []  # the grid of each group, in order
    offsets: list[torch.Tensor] = []
    if grid is not None:
        size = grid.group_of(cols)
        if grid.group_size is None:  # per channel: one grid per row, fitted to the whole weight before the loop
            scale, offset = grid.fit(w, None if zero is None else ~zero)
            scales.append(scale)
            offsets.append(offset)

    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        d, dead1 = torch.diag(u1), dead[i1:i2]
        if m == 0:
            # Exact running count: after column i2, round(sparsity * rows * i2) weights are pruned in total.
            k = round(sparsity * rows * i2) - round(sparsity * rows * i1)
            prune1 = _lowest(_saliency(w1, d, dead1), k)
        else:
            prune1 = torch.zeros_like(w1, dtype=torch.bool)
        if zero is not None:
            prune1 |= zero[:, i1:i2]
        for i in range(i2 - i1):
            if m and i % m == 0:  # N:M: choose this group's m - n weights per row with the current values
                group = _saliency(w1[:, i:i + m], d[i:i + m], dead1[i:i + m])
                drop = torch.sort(group, dim=1, stable=True).indices[:, :m - n]
                prune1[:, i:i + m].scatter_(1, drop, True)
            if grid is not None and grid.group_size is not None and (i1 + i) % size == 0:
                # A new quantization group: its grid fits the weights as the updates left them; pruned ones
                # known by now are left out (they are not stored).
                scale, offset = grid.fit(w1[:, i:i + size], ~prune1[:, i:i + size])
                scales.append(scale)
                offsets.append(offset)
            # The two ways to make the column's error: round it to the grid (GPTQ), set it to zero (SparseGPT).
            col = w1[:, i]
            rounded = col if grid is None else grid.round(col, scale, offset)
            q = torch.where(prune1[:, i], 0.0, rounded)
            err = (col - q) / d[i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]  # OBS update of the columns still free
            w1[:, i] = q  # exactly zero where pruned (and exactly on the grid), whatever the rounding of the update
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # lazy batch update of everything right of the block
    return w.to(weight.dtype), scales, offsets
