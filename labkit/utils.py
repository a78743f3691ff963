"""Small helpers every notebook uses: reproducibility, timing, parameter counts.

Argument checks live in :mod:`labkit.checks`.
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import numpy as np
import torch

from labkit import checks

#: Thread count notebooks pin, so CPU results agree between a laptop and CI (2 cores). ``LABKIT_THREADS``
#: overrides it: CI's second-CPU pass uses 1 to act as a different machine (``make test-other-cpu``).
DEFAULT_THREADS = int(os.environ.get("LABKIT_THREADS") or 2)


def reproducible(seed: int = 0, threads: int | None = DEFAULT_THREADS) -> None:
    """Seed python, numpy and torch, and pin torch's CPU thread count.

    Float sums depend on how work is split across threads, so a fixed thread count keeps the
    numbers a notebook prints the same from run to run.
    """
    seed = checks.nonneg_int("seed", seed)
    if threads is not None:
        threads = checks.positive_int("threads", threads)
        torch.set_num_threads(min(threads, os.cpu_count() or 1))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds, after warm-up calls.

    Each sample repeats ``fn`` until at least ``min_time`` seconds pass, so very fast calls are
    not lost in timer noise.
    """
    repeats = checks.positive_int("repeats", repeats)
    warmup = checks.nonneg_int("warmup", warmup)
    min_time = checks.finite("min_time", min_time, low=0.0)
    if not callable(fn):
        raise TypeError(f"fn must be a function taking no arguments, got {type(fn).__name__}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return float(np.median(samples))


def time_ms(fn: Callable[[], object], *, cuda: bool | None = None, repeats: int = 5, warmup: int = 1) -> float:
    """Median milliseconds of one call of ``fn()``: the lab's one timer, for notebooks and benchmarks alike.

    On a CUDA GPU (``cuda=None``: whenever torch sees one) it is ``triton.testing.do_bench`` (CUDA
    events, the L2 cache flushed between calls, Triton's default 25 ms warm-up and 100 ms of samples);
    elsewhere :func:`median_time` with ``repeats`` samples after ``warmup`` calls.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function taking no arguments, got {type(fn).__name__}")
    if cuda is None:
        cuda = torch.cuda.is_available()
    if not isinstance(cuda, bool):
        raise TypeError(f"cuda must be True, False or None (auto), got {cuda!r}")
    if cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    return 1e3 * median_time(fn, repeats=repeats, warmup=warmup)


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters of ``model`` (weights and biases), zeros included."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())
