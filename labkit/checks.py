"""Argument checks shared by every labkit function.

Each check takes the argument's ``name`` (used in the message), the value, and returns the value
normalised (``int``, ``float``, ...) or raises a ``TypeError`` (wrong kind of value) or
``ValueError`` (right kind, wrong value) that names the argument and says what to pass instead.

Booleans are rejected where a number is expected (``True`` is an ``int`` in Python, but
``sparsity=True`` is always a mistake), and so are strings, NaN and infinity.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable
from typing import TypeVar

import torch

T = TypeVar("T")

__all__ = ["choice", "finite", "fraction", "nonneg_int", "positive_int", "tensor"]


def _describe(v: object) -> str:
    """``'0.5' (str)``: the value and its type, for error messages."""
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(v).__name__})"


def _integer(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        hint = f"; pass int({v!r})" if isinstance(v, float) and v.is_integer() else ""
        raise TypeError(f"{name} must be an int, got {_describe(v)}{hint}")
    return int(v)


def positive_int(name: str, v: object) -> int:
    """Return ``v`` as an ``int`` if it is an integer >= 1."""
    n = _integer(name, v)
    if n < 1:
        raise ValueError(f"{name} must be a positive int (1 or more), got {n}")
    return n


def nonneg_int(name: str, v: object) -> int:
    """Return ``v`` as an ``int`` if it is an integer >= 0."""
    n = _integer(name, v)
    if n < 0:
        raise ValueError(f"{name} must be a non-negative int (0 or more), got {n}")
    return n


def finite(name: str, v: object, low: float | None = None, high: float | None = None) -> float:
    """Return ``v`` as a ``float`` if it is a finite real number with ``low <= v <= high``.

    Either bound may be ``None`` (no bound). Python, numpy and 0-d torch numbers are accepted.
    """
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.dtype.is_complex and v.dtype != torch.bool:
        v = v.item()
    if isinstance(v, (bool, str)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(v)}")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {x}")
    if low is not None and x < low:
        raise ValueError(f"{name} must be >= {low:g}, got {x:g}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high:g}, got {x:g}")
    return x


def fraction(name: str, v: object, *, low: float = 0.0, high: float = 1.0, include_high: bool = False) -> float:
    """Return ``v`` as a ``float`` if ``low <= v < high`` (``<= high`` with ``include_high=True``).

    The default, ``[0, 1)``, is what a sparsity needs: 1.0 would remove every weight.
    """
    x = finite(name, v)
    ok = low <= x <= high if include_high else low <= x < high
    if not ok:
        bracket = "]" if include_high else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {x:g}")
    return x


def choice(name: str, v: object, options: Iterable[T]) -> T:
    """Return the option equal to ``v``; a bool never matches 0 or 1 (``True == 1`` in Python)."""
    opts = list(options)
    for o in opts:
        if isinstance(v, bool) != isinstance(o, bool):
            continue
        try:
            if bool(v == o):
                return o
        except (TypeError, ValueError, RuntimeError):  # e.g. a tensor with many elements: not an option
            continue
    listed = ", ".join(repr(o) for o in opts)
    raise ValueError(f"{name} must be one of {listed}; got {_describe(v)}")


def tensor(name: str, t: object, dim: int | Collection[int] | None = None,
           dtypes: torch.dtype | Iterable[torch.dtype] | None = None, *,
           nonempty: bool = False, all_finite: bool = False) -> torch.Tensor:
    """Return ``t`` if it is a ``torch.Tensor`` with the given number of dimensions and dtype.

    ``dim`` is an int or a collection of allowed ints; ``dtypes`` one dtype or several.
    ``nonempty=True`` rejects tensors with no elements; ``all_finite=True`` rejects NaN or inf values.
    """
    if not isinstance(t, torch.Tensor):
        hint = "; convert it with torch.as_tensor(...)" if isinstance(t, (list, tuple, numbers.Number)) else ""
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}{hint}")
    if dim is not None:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        if t.dim() not in dims:
            want = " or ".join(str(d) for d in dims)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None:
        allowed = (dtypes,) if isinstance(dtypes, torch.dtype) else tuple(dtypes)
        if t.dtype not in allowed:
            want = ", ".join(str(d).replace("torch.", "") for d in allowed)
            raise TypeError(f"{name} must have dtype {want}, got {str(t.dtype).replace('torch.', '')}; "
                            f"convert it with .to(...)")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    # A sparse tensor (COO, CSR, BSR...) stores its numbers in values(): check those.
    stored = t if t.layout == torch.strided else t.values()
    if all_finite and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(stored).all()):
        bad = int((~torch.isfinite(stored)).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite value(s); clean or replace them first "
                         f"(e.g. torch.nan_to_num)")
    return t
