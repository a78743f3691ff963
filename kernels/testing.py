"""Helpers shared by the kernel tests and ``benchmarks/kernels.py``: float64 references, tolerances,
and random sparse weights with an exact pattern (test data, not a pruning method: see labkit.prune)."""
from __future__ import annotations

import torch

from labkit.kernels import _runtime as rt

#: dtypes tested on a CPU. bf16 runs on a GPU only: the interpreter's bf16 is not faithful.
CPU_DTYPES = (torch.float32, torch.float16)


def reference(x: torch.Tensor, w_dense: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + b`` in float64 from the same (already rounded) inputs."""
    y = x.double() @ w_dense.double().T
    return y if bias is None else y + bias.double()


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Shape, dtype, and relative error within the documented tolerance for ``dtype``."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == dtype, (out.dtype, dtype)
    err = rt.rel_error(out, ref)
    assert err <= rt.TOLERANCE[dtype], f"relative error {err:.2e} above {rt.TOLERANCE[dtype]:.0e} for {dtype}"


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


#: Where kernel tests put their tensors: the GPU when the compiled kernels can run, else the CPU
#: (the interpreter). The same tests then check the compiled kernels in a GPU session.
TEST_DEVICE = "cuda" if torch.cuda.is_available() and not rt.interpreting() else "cpu"
