"""The quantization grid of a weight matrix: ``b``-bit integer codes, and a scale and an offset per group.

Quantizing a weight means storing, instead of each float ``w``, a small integer ``code`` and, once per
*group* of weights, the two floats that turn codes back into values::

    value = offset + scale * code

* **symmetric**: ``offset = 0``, codes ``-(2^(b-1) - 1) .. 2^(b-1) - 1`` and ``scale = max|w| / (2^(b-1) - 1)``
  (int8: -127..127, the layout of PyTorch's int8 weight-only kernel). Zero is on the grid; one code
  (-128) is left unused so the grid is the same on both sides.
* **asymmetric**: ``offset = min w``, codes ``0 .. 2^b - 1`` and ``scale = (max w - min w) / (2^b - 1)``:
  the grid spans exactly the group's range, the "scale + min" of GGUF's Q4_1 (the format SmolLM2 arrived
  in) and of PyTorch's int4 CPU kernel. It wastes no levels on a lopsided group, but zero is usually
  *not* on the grid.

A *group* is ``group_size`` consecutive inputs of one output row (32 or 128), or the whole row
(``group_size=None``: "per channel", one scale per output). Smaller groups follow the weights more
closely and cost more scales.

Round to nearest (RTN) puts every weight on the nearest grid value: the error of each weight is at most
``scale / 2``. :func:`rtn` does it for a whole matrix; the OBS loop of :mod:`labkit.llm.sparsegpt` uses
:meth:`Grid.fit` and :meth:`Grid.round` one column at a time (GPTQ).

Pruned weights are *not stored* by a sparse format, so they need no code: :meth:`Grid.fit` leaves the
weights its ``keep`` mask excludes out of the range, and ``rtn(..., keep_zeros=True)`` leaves exact zeros at
zero. A dense model keeps ``keep_zeros=False``: its zeros are weights like any other (SmolLM2's matrices hold
tens of thousands of exact zeros, values of its Q4_1 grid), and a dense format must store them as codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from labkit import checks

#: The widths the lab quantizes to (1 bit has no grid worth the name; 8 is int8).
BITS = range(2, 9)


@dataclass(frozen=True)
class Grid:
    """How a weight is rounded: ``bits`` per code, one scale (and offset) per ``group_size`` inputs of a row.

    ``group_size=None``: one group per output row (per channel). Build it with :func:`make_grid`, which checks
    the arguments.
    """

    bits: int
    group_size: int | None
    symmetric: bool

    @property
    def low(self) -> int:
        """The smallest code."""
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def high(self) -> int:
        """The largest code."""
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1

    def group_of(self, cols: int) -> int:
        """The number of inputs in one group of a weight with ``cols`` inputs."""
        return cols if self.group_size is None else self.group_size

    def fit(self, w: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, offset)``, each ``(rows,)``: the grid of each row of the group ``w`` ``(rows, group)``.

        Only the weights where ``keep`` is True set the range (pruned weights are not stored). A row with
        nothing to keep, or all its kept weights equal, gets scale 1: every code then lands on the weight
        itself or on zero, exactly.
        """
        w = w.float()
        if keep is None:
            keep = torch.ones_like(w, dtype=torch.bool)
        inf = torch.tensor(float("inf"))
        if self.symmetric:
            top = torch.where(keep, w.abs(), 0.0).amax(dim=1)
            scale = top / self.high
            offset = torch.zeros_like(scale)
        else:
            low = torch.where(keep, w, inf).amin(dim=1)
            high = torch.where(keep, w, -inf).amax(dim=1)
            empty = ~keep.any(dim=1)
            low, high = torch.where(empty, 0.0, low), torch.where(empty, 0.0, high)
            scale = (high - low) / self.high
            offset = low
        scale = torch.where(scale > 0, scale, 1.0)  # a constant (or empty) row: any scale is exact
        return scale, offset

    def codes(self, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """The integer code (held as a float) of each weight of ``w`` ``(rows, k)``, given its row's grid."""
        return torch.clamp(torch.round((w.float() - offset[:, None]) / scale[:, None]), self.low, self.high)

    def round(self, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``w`` ``(rows, k)`` or ``(rows,)`` rounded to the nearest grid value of its row (float32)."""
        flat = w.dim() == 1
        w2 = w[:, None] if flat else w
        out = offset[:, None] + scale[:, None] * self.codes(w2, scale, offset)
        return out[:, 0] if flat else out


def make_grid(bits: int = 4, group_size: int | None = None, symmetric: bool = False) -> Grid:
    """A checked :class:`Grid`: ``bits`` from 2 to 8, ``group_size`` a positive int or ``None`` (per channel)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"bits must be an int from {BITS[0]} to {BITS[-1]} (8: int8, 4: int4, 3), got {bits!r}")
    if group_size is not None:
        group_size = checks.positive_int("group_size", group_size)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be True (codes around zero) or False (scale + min), got {symmetric!r}")
    return Grid(bits, group_size, symmetric)


def check_group(g: Grid, cols: int, name: str = "weight") -> int:
    """The group width for a weight with ``cols`` inputs; a ``ValueError`` if ``group_size`` does not divide it."""
    size = g.group_of(cols)
    if cols % size:
        raise ValueError(f"group_size={g.group_size} must divide the input size of {name} ({cols}): groups of "
                         f"inputs may not straddle a row's end; pick a divisor (e.g. 32) or group_size=None "
                         "(per channel)")
    return size


def encode(g: Grid, weight: torch.Tensor, keep: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scale, offset)`` of ``weight`` ``(rows, cols)`` on grid ``g``, group by group (RTN).

    ``codes``: ``(rows, cols)`` integers held as floats; ``scale`` and ``offset``: ``(rows, cols // group)``.
    ``keep``: only these weights set each group's range (see :meth:`Grid.fit`).
    """
    rows, cols = weight.shape
    size = check_group(g, cols)
    codes = torch.empty(rows, cols)
    scales, offsets = [], []
    for j in range(0, cols, size):  # group by group, each with its own scale and offset
        scale, offset = g.fit(weight[:, j:j + size], None if keep is None else keep[:, j:j + size])
        codes[:, j:j + size] = g.codes(weight[:, j:j + size], scale, offset)
        scales.append(scale)
        offsets.append(offset)
    return codes, torch.stack(scales, 1), torch.stack(offsets, 1)


def decode(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The float32 weights ``offset + scale * code`` of :func:`encode`'s output (each group its own pair)."""
    size = codes.shape[1] // scale.shape[1]
    return offset.repeat_interleave(size, dim=1) + scale.repeat_interleave(size, dim=1) * codes


def rtn(weight: torch.Tensor, bits: int = 4, group_size: int | None = None, symmetric: bool = False, *,
        keep_zeros: bool = False) -> torch.Tensor:
    """Round-to-nearest quantization of ``weight`` ``(out, in)``: every weight on its group's grid, same dtype.

    ``keep_zeros``: weights that are exactly zero (pruned) stay zero and stay out of their group's range:
    a sparse format does not store them. The error of every other weight is at most half its group's scale.
    """
    weight = checks.tensor("weight", weight, dim=2, nonempty=True, all_finite=True)
    if not weight.dtype.is_floating_point:
        raise TypeError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if not isinstance(keep_zeros, bool):
        raise TypeError(f"keep_zeros must be True or False, got {keep_zeros!r}")
    g = make_grid(bits, group_size, symmetric)
    keep = weight != 0 if keep_zeros else None
    out = decode(*encode(g, weight.float(), keep))
    if keep is not None:
        out = torch.where(keep, out, 0.0)
    return out.to(weight.dtype)
