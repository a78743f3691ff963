"""SparseGPT for one linear layer (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be
Accurately Pruned in One-Shot", ICML 2023), written for reading.

The problem, per layer: find a sparse ``W'`` so that ``W' X`` stays close to ``W X`` on calibration
inputs ``X``. Its curvature is ``H = X X^T`` (input features x input features).

The idea is Optimal Brain Surgeon applied column by column. Going left to right over the input
columns, prune the chosen weights of column ``j`` and push each removed weight's error onto the columns
to its right, which can still change:

    err = (w_j - q_j) / [H^-1]_jj          (q_j: column j after pruning)
    W[:, j+1:] -= err * [H^-1]_j,j+1:      (the OBS update)

Using the *upper Cholesky factor* ``U`` of ``H^-1`` instead of ``H^-1`` itself gives, row ``j`` of ``U``,
exactly the update for "columns 0..j-1 already fixed": no re-inversion per column.

Lazy batch updates: the loop touches only a block of ``block_size`` columns (128); the errors of the
whole block reach the columns to its right in one matrix multiply at the end of the block.

The mask is chosen by ``w^2 / [U]_jj^2`` (the OBS saliency): for unstructured sparsity once per block
of columns (exactly the wanted count in each block), for N:M inside each group of M columns when the
loop reaches it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


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

    Unstructured (``n = m = 0``): exactly ``round(sparsity * out * in)`` zeros, counted block by block.
    N:M (e.g. ``n=2, m=4``): in every group of ``m`` consecutive inputs of a row, ``m - n`` are zero.
    ``damping`` adds that share of the mean diagonal of ``h`` to its diagonal, so it can be inverted.
    """
    rows, cols = weight.shape
    if h.shape != (cols, cols):
        raise ValueError(f"h must be ({cols}, {cols}) for a weight with {cols} inputs, got {tuple(h.shape)}")
    with one_thread():
        return _sparsegpt(weight, h, sparsity, n, m, block_size, damping)


def _sparsegpt(weight: torch.Tensor, h: torch.Tensor, sparsity: float, n: int, m: int, block_size: int,
               damping: float) -> torch.Tensor:
    rows, cols = weight.shape
    w = weight.detach().float().clone()
    h = h.double().clone()
    dead = torch.diag(h) == 0  # an input that is always zero: its weights do nothing, prune them freely
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    try:
        h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
        u = torch.linalg.cholesky(h_inv, upper=True).float()  # upper factor of H^-1
    except torch.linalg.LinAlgError as exc:
        raise ValueError("the calibration Hessian is not positive definite even after damping: use more "
                         "calibration tokens or a larger damping (e.g. 0.1)") from exc

    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        d = torch.diag(u1)
        if m == 0:
            # Exact running count: after column i2, round(sparsity * rows * i2) weights are pruned in total.
            k = round(sparsity * rows * i2) - round(sparsity * rows * i1)
            prune1 = _lowest(w1**2 / d**2, k)
        else:
            prune1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if m and i % m == 0:  # N:M: choose this group's m - n weights per row with the current values
                group = w1[:, i:i + m] ** 2 / d[i:i + m] ** 2
                drop = torch.sort(group, dim=1, stable=True).indices[:, :m - n]
                prune1[:, i:i + m].scatter_(1, drop, True)
            col = w1[:, i]
            q = torch.where(prune1[:, i], 0.0, col)
            err = (col - q) / d[i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]  # OBS update of the columns still free
            w1[:, i] = q  # exactly zero where pruned, whatever the rounding of the update
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # lazy batch update of everything right of the block
    return w.to(weight.dtype)
