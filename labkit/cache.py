"""A small on-disk cache for expensive results (trained weights, sweeps), keyed by config.

Keys are a name, a version number and a config dict; change the version when the code that
produces a result changes, and old entries are simply never read again. The cache lives in
``$LABKIT_CACHE`` or ``<repo>/.cache/labkit`` (ignored by git), so it is safe to delete.

Caches get shared: an instructor pre-seeds every machine in a room, learners copy folders to each
other. So an entry holds only *safe data* - tensors, numbers, strings, booleans, None, and lists,
tuples and dicts of those (a state dict is one) - and is loaded with ``torch.load(weights_only=True)``,
which builds those types and nothing else. A file that does not load that way (an older format,
a damaged copy, or a pickle crafted to run code) is refused with a warning and recomputed: it is
never executed. Producers store models as state dicts plus the config that rebuilds them.

Writes go to a temporary file unique to the writer and are then renamed over the entry, so two
kernels filling the same entry at once never see half a file, and no temporary file is left behind.
A folder that cannot be written (a read-only shared ``LABKIT_CACHE``, a full disk) only costs the
saving: the computed value is returned, with one warning per folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import TypeVar

import numpy as np
import torch

from labkit import checks

T = TypeVar("T")

#: Version of the file format, part of every key: entries written in the old full-pickle format
#: (format 1) are never looked up, so they are neither trusted nor warned about.
FORMAT = 2


#: Folders already reported as unwritable in this process (each is warned about once).
_UNWRITABLE: set[Path] = set()


def _folder() -> Path:
    default = Path(__file__).resolve().parent.parent / ".cache" / "labkit"
    return Path(os.environ.get("LABKIT_CACHE", default))


def cache_dir() -> Path:
    """Where cached results are stored (created on first use)."""
    path = _folder()
    path.mkdir(parents=True, exist_ok=True)
    return path


def key(name: str, version: int, config: dict) -> str:
    """A file-name-safe key: the name plus a hash of the version and the config.

    ``config`` holds only what changes the result (seeds, sizes, library versions), never facts
    about the machine such as its core count, so a cache made on one machine is used on another.
    Tensors and arrays in it are keyed by their contents (see :func:`_key_part`).
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name must be letters, digits, '_' or '-', got {name!r}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    blob = json.dumps({"format": FORMAT, "version": version, "config": config}, sort_keys=True, default=_key_part)
    return f"{name}-v{version}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _key_part(value: object) -> object:
    """What stands in a key for a config value JSON cannot write itself.

    A tensor or array by its contents (dtype, shape and a hash of its bytes), never by how it prints:
    ``torch.tensor(0.1)`` and ``torch.tensor(0.10001)`` both print ``tensor(0.1000)``, and a large
    tensor prints with ``...``. Dtypes, devices, paths and numpy scalars print exactly, so their text
    is the key; anything else is refused (an object's text holds its memory address: never a hit).
    """
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        t = (t.to_dense() if t.layout != torch.strided else t).contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # every dtype, bfloat16 included
        return {"tensor": str(t.dtype), "shape": list(t.shape), "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
        return {"array": value.dtype.str, "shape": list(value.shape), "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, (np.generic, torch.dtype, torch.device, PurePath)):
        return str(value)
    raise TypeError(f"a cache key's config holds a {type(value).__name__} ({str(value)[:40]!r}), which has no "
                    "exact text form: use numbers, strings, lists and dicts (or tensors) that say what changes "
                    "the result")


def _load_safe(path: Path) -> object:
    """The entry at ``path`` built with ``weights_only=True`` (only tensors and plain data; no code runs)."""
    return torch.load(path, weights_only=True, map_location="cpu")


def _safe_bytes(result: object, name: str) -> bytes:
    """``result`` serialized, after checking that it loads back as safe data (else a clear TypeError)."""
    buffer = io.BytesIO()
    torch.save(result, buffer)
    try:
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception as e:  # noqa: BLE001  (any refusal means the producer returned unsafe data)
        raise TypeError(f"the compute function of cache entry {name!r} returned {type(result).__name__} holding "
                        "something other than tensors, numbers, strings, lists, tuples and dicts; return plain "
                        f"data (a model as its state dict, a dataclass as a dict). torch.load said: {e}") from None
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file unique to this writer, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(name: str, version: int, config: dict, compute: Callable[[], T], *, threads: int | None = None) -> T:
    """Return the cached result for ``(name, version, config)``, computing and saving it on a miss.

    ``compute`` must return safe data (see the module docstring); anything else raises a TypeError
    rather than being cached in a form that would later run code. ``threads``: run ``compute`` with
    that many torch threads (restored afterwards), so the result does not depend on the machine's
    core count and the key need not mention it.
    """
    path = _folder() / f"{key(name, version, config)}.pt"
    with contextlib.suppress(OSError):  # a folder that cannot be made is reported when saving fails
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            return _load_safe(path)  # type: ignore[return-value]
        except Exception as e:  # noqa: BLE001  (old format, damaged or hostile: never executed, recomputed)
            warnings.warn(f"labkit cache: refusing {path} (it does not load as plain tensors and data: "
                          f"{type(e).__name__}); recomputing it", stacklevel=2)
    if threads is None:
        result = compute()
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(checks.positive_int("threads", threads))
        try:
            result = compute()
        finally:
            torch.set_num_threads(previous)
    data = _safe_bytes(result, name)
    try:
        _write_atomic(path, data)
    except OSError as e:  # read-only shared cache, full disk: the value is still good, only saving failed
        if path.parent not in _UNWRITABLE:
            _UNWRITABLE.add(path.parent)
            warnings.warn(f"labkit cache: cannot save results in {path.parent} ({type(e).__name__}: "
                          f"{e.strerror or e}); they are computed but not kept. Set LABKIT_CACHE to a folder "
                          "you can write to keep them.", stacklevel=2)
    return result
