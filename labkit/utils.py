"""Small helpers every notebook uses: reproducibility, checking arguments, timing."""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

#: Where benchmark and sweep scripts write the JSON results that notebooks read: ``benchmarks/results``
#: of this checkout, or ``$LABKIT_RESULTS`` (for an installed, non-editable copy of labkit).
RESULTS_DIR = Path(os.environ.get("LABKIT_RESULTS", Path(__file__).resolve().parent.parent / "benchmarks" / "results"))

#: Thread count notebooks pin, so CPU results agree between a laptop and CI (2 cores).
DEFAULT_THREADS = 2


def reproducible(seed: int = 0, threads: int | None = DEFAULT_THREADS) -> None:
    """Seed python, numpy and torch, and pin torch's CPU thread count.

    Float sums depend on how work is split across threads, so a fixed thread count keeps the
    numbers a notebook prints the same from run to run.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(min(threads, os.cpu_count() or 1))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_fraction(name: str, value: float, *, low: float = 0.0, high: float = 1.0,
                   include_high: bool = False) -> float:
    """Raise a clear error unless ``low <= value < high`` (or ``<= high``); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok = low <= value <= high if include_high else low <= value < high
    if not ok:
        bracket = "]" if include_high else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {value:g}")
    return value


def check_positive_int(name: str, value: int) -> int:
    """Raise a clear error unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds, after warm-up calls.

    Each sample repeats ``fn`` until at least ``min_time`` seconds pass, so very fast calls are
    not lost in timer noise.
    """
    check_positive_int("repeats", repeats)
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
