"""A small on-disk cache for expensive results (trained weights, sweeps), keyed by config.

Keys are a name, a version number and a config dict; change the version when the code that
produces a result changes, and old entries are simply never read again. The cache lives in
``$LABKIT_CACHE`` or ``<repo>/.cache/labkit`` (ignored by git), so it is safe to delete.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")


def cache_dir() -> Path:
    """Where cached results are stored (created on first use)."""
    default = Path(__file__).resolve().parent.parent / ".cache" / "labkit"
    path = Path(os.environ.get("LABKIT_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def key(name: str, version: int, config: dict) -> str:
    """A file-name-safe key: the name plus a hash of the version and the config."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name must be letters, digits, '_' or '-', got {name!r}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    blob = json.dumps({"version": version, "config": config}, sort_keys=True, default=str)
    return f"{name}-v{version}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def cached(name: str, version: int, config: dict, compute: Callable[[], T]) -> T:
    """Return the cached result for ``(name, version, config)``, computing and saving it on a miss.

    Results are saved with ``torch.save``, so tensors, state dicts and plain Python data all work.
    """
    path = cache_dir() / f"{key(name, version, config)}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # a half-written or stale file: recompute it
            path.unlink(missing_ok=True)
    result = compute()
    tmp = path.with_suffix(".tmp")
    torch.save(result, tmp)
    tmp.replace(path)  # atomic, so a crash never leaves a truncated entry
    return result
