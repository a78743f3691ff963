"""The storage formats of a sparse weight matrix, in one registry: :data:`FORMATS`.

A pruned weight is a matrix full of zeros. How many bytes it takes depends on how it is stored:

============  ====================================================================  ==================
format        what is stored                                                        lab kernel
============  ====================================================================  ==================
``dense``     every value, zeros included                                           ``F.linear``
``csr``       each nonzero value + its column index + ``rows + 1`` row pointers     ``csr_linear``
``bsr``       every value of each kept ``bh x bw`` tile + a column index per tile   ``bsr_linear``
              + ``rows / bh + 1`` block-row pointers
``2:4``       2 values of every group of 4 + 2 bits of position per kept value      ``semi24_linear``
              (4 bits per group, cuSPARSELt's layout)
``bitmask``   each nonzero value + one bit per position                             (none)
============  ====================================================================  ==================

Every :class:`Format` answers three questions:

* :meth:`Format.bytes` - bytes for a ``(rows, cols)`` shape at a given density: what a roofline
  model needs before any weight exists.
* :meth:`Format.weight_bytes` - exact bytes for a real weight (``None`` if the format cannot hold it,
  e.g. a weight that is not 2:4 sparse).
* :meth:`Format.fits` / :meth:`Format.why_not` - whether the lab's *kernel* for the format accepts the
  weight, and if not, why. Storage is more forgiving than a kernel: pruning and byte counts take any
  tile size, the BSR kernel only powers of two >= 16 (:func:`check_block`, the one home of that rule).

Conv weights ``(out, in, kh, kw)`` are viewed as the ``(out, in * kh * kw)`` matrix a GEMM kernel sees.
``value_bytes`` is 4 for float32 and 2 for fp16/bf16; ``index_bytes`` 4 for int32 indices (torch's own
sparse tensors use int64: 8).

**Quantized values.** Every format stores some values and some indices or metadata. The values need
not be floats: :meth:`Format.quantized_bytes` prices them as ``bits``-bit integer codes plus, per group of
``group_size`` inputs of a row, a scale (and, unless symmetric, an offset) of ``scale_bytes`` each (fp16: 2).
So ``dense`` at 4 bits, groups of 32, scale + min is GGUF's Q4_1 (5 bits a weight), ``2:4`` at 4 bits is
the kept half as codes + the 2-bit positions + the scales, ``csr`` at 8 bits a code and an index per nonzero.
The groups are counted along the dense row (the quantizer's groups, :mod:`labkit.llm.grid`), zeros included.

A weight may also be given as a torch sparse tensor (``to_sparse_csr()``, ``to_sparse_bsr(...)``,
``to_sparse()``...): it is counted as the weight it holds, in every format, so an explicitly stored zero is
a zero. For what a torch CSR tensor itself occupies, pass its own widths: ``weight_bytes(t,
t.values().element_size(), t.col_indices().element_size())`` is the bytes of its values, ``crow_indices``
and ``col_indices``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from labkit import checks

#: The smallest block edge the BSR kernel accepts (fp16/bf16 ``tl.dot`` on a GPU needs K >= 16).
MIN_KERNEL_BLOCK = 16
#: The 2:4 kernel packs two groups of 4 into one metadata byte: in_features must be a multiple of 8.
SEMI24_IN_MULTIPLE = 8

Block = int | tuple[int, int]


def check_block(block: int, name: str = "block") -> int:
    """The BSR kernel's rule for a block edge: a power of two >= 16 (16, 32, 64, 128, ...).

    Triton's ``tl.dot`` on a GPU needs K >= 16 for fp16/bf16 and tile edges that are powers of two.
    Pruning itself accepts any tile size (see :func:`labkit.prune.block_mask`).
    """
    block = checks.positive_int(name, block)
    if block < MIN_KERNEL_BLOCK or block & (block - 1):
        raise ValueError(f"{name}={block} must be a power of two >= {MIN_KERNEL_BLOCK} (16, 32, 64, 128): Triton's "
                         "tl.dot on a GPU needs K >= 16 for fp16/bf16 and tile edges that are powers of two")
    return block


def tile(block: Block, name: str = "block") -> tuple[int, int]:
    """``b`` or ``(bh, bw)`` as a pair of positive ints: any tile size, as storage and pruning allow."""
    if isinstance(block, tuple) and len(block) == 2:
        return checks.positive_int(f"{name}[0]", block[0]), checks.positive_int(f"{name}[1]", block[1])
    if isinstance(block, (list, tuple)):
        raise ValueError(f"{name} must be an int b (a b x b tile) or a pair (bh, bw), got {block!r}")
    b = checks.positive_int(name, block)
    return b, b


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """View a conv weight ``(out, in, kh, kw)`` as the ``(out, in*kh*kw)`` matrix a GEMM kernel sees."""
    return weight.reshape(weight.shape[0], -1)


def _check_matrix_weight(weight: object) -> torch.Tensor:
    w = checks.tensor("weight", weight, dim=(2, 4), nonempty=True).detach()
    if w.layout != torch.strided:  # a torch sparse tensor (COO, CSR, CSC, BSR, BSC): the weight it holds
        w = w.to_dense()
    return as_matrix(w)


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise TypeError(f"shape must be a (rows, cols) pair such as (4096, 4096), got {shape!r}")
    return checks.positive_int("shape[0]", shape[0]), checks.positive_int("shape[1]", shape[1])


def _check_bytes(value_bytes: int, index_bytes: int) -> tuple[int, int]:
    return checks.positive_int("value_bytes", value_bytes), checks.positive_int("index_bytes", index_bytes)


def is_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True if every group of ``m`` consecutive weights along a row holds at most ``n`` nonzeros."""
    mat = _check_matrix_weight(weight)
    n, m = checks.positive_int("n", n), checks.positive_int("m", m)
    if mat.shape[1] % m:
        return False
    return bool(((mat.reshape(-1, m) != 0).sum(dim=1) <= n).all())


class Format:
    """One storage format. Subclasses fill in the byte counts and, where a kernel has rules, :meth:`why_not`."""

    name: str = ""
    kernel: str | None = None  # the lab's kernel for this format, if any

    def bytes(self, shape: Sequence[int], density: float = 1.0, value_bytes: int = 2, index_bytes: int = 4,
              block: Block = 64) -> float:
        """Bytes of a ``(rows, cols)`` weight at ``density`` (share of nonzeros, in (0, 1]), indices included."""
        rows, cols = _check_shape(shape)
        d = checks.fraction("density", density, include_high=True)
        if d == 0.0:
            raise ValueError("density must be > 0 (the share of weights kept; 0.1 = 90% sparse), got 0")
        vb, ib = _check_bytes(value_bytes, index_bytes)
        return float(self._bytes(rows, cols, d, vb, ib, tile(block)))

    def weight_bytes(self, weight: torch.Tensor, value_bytes: int = 4, index_bytes: int = 4,
                     block: Block = 4) -> int | None:
        """Exact bytes to store this ``weight`` (its real zeros), or ``None`` if the format cannot hold it.

        ``weight``: a dense tensor or a torch sparse one (counted as the weight it holds; see the module docstring).
        """
        mat = _check_matrix_weight(weight)
        vb, ib = _check_bytes(value_bytes, index_bytes)
        return self._weight_bytes(mat, vb, ib, tile(block))

    def quantized_bytes(self, weight: torch.Tensor, bits: int, group_size: int | None = None,
                        symmetric: bool = False, scale_bytes: int = 2, index_bytes: int = 4,
                        block: Block = 4) -> int | None:
        """Exact bytes of ``weight`` in this format with its values stored as ``bits``-bit integer codes.

        Codes packed tightly (``ceil(values * bits / 8)`` bytes), the format's indices or metadata as usual,
        and one scale per ``group_size`` inputs of each row (``None``: one per row), plus one offset each
        unless ``symmetric``, of ``scale_bytes`` each. ``None`` if the format cannot hold the weight.
        """
        mat = _check_matrix_weight(weight)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an int from 1 to 16 (the width of one integer code), got {bits!r}")
        if group_size is not None:
            group_size = checks.positive_int("group_size", group_size)
        sb, ib = _check_bytes(scale_bytes, index_bytes)
        overhead = self._overhead(mat, ib, tile(block))
        if overhead is None:
            return None
        rows, cols = mat.shape
        groups = rows * math.ceil(cols / (cols if group_size is None else group_size))
        return math.ceil(self._values(mat, tile(block)) * bits / 8) + overhead + groups * sb * (1 if symmetric else 2)

    def why_not(self, weight: torch.Tensor, block: int | None = None) -> str | None:
        """Why the lab's kernel for this format cannot take ``weight`` (``None``: it can)."""
        _check_matrix_weight(weight)
        return None

    def fits(self, weight: torch.Tensor, block: int | None = None) -> bool:
        """True if the lab's kernel for this format accepts ``weight`` (see :meth:`why_not` for the reason)."""
        return self.why_not(weight, block) is None

    def _bytes(self, rows: int, cols: int, d: float, vb: int, ib: int, blk: tuple[int, int]) -> float:
        raise NotImplementedError

    def _weight_bytes(self, mat: torch.Tensor, vb: int, ib: int, blk: tuple[int, int]) -> int | None:
        overhead = self._overhead(mat, ib, blk)
        return None if overhead is None else self._values(mat, blk) * vb + overhead

    def _values(self, mat: torch.Tensor, blk: tuple[int, int]) -> int:
        """How many values the format stores for ``mat`` (zeros inside a stored tile or group included)."""
        raise NotImplementedError

    def _overhead(self, mat: torch.Tensor, ib: int, blk: tuple[int, int]) -> int | None:
        """Bytes of indices, pointers or metadata for ``mat``; ``None`` if the format cannot hold it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Format({self.name!r})"


class Dense(Format):
    """Every value, zeros included: the baseline every other format is compared with."""

    name, kernel = "dense", "F.linear"

    def _bytes(self, rows, cols, d, vb, ib, blk):
        return rows * cols * vb  # zeros cost as much as any other value

    def _values(self, mat, blk):
        return mat.numel()

    def _overhead(self, mat, ib, blk):
        return 0


class CSR(Format):
    """Compressed sparse rows (``torch.to_sparse_csr``): a value and a column index per nonzero, row pointers."""

    name, kernel = "csr", "csr_linear"

    def _bytes(self, rows, cols, d, vb, ib, blk):
        return d * rows * cols * (vb + ib) + (rows + 1) * ib

    def _values(self, mat, blk):
        return int(torch.count_nonzero(mat))

    def _overhead(self, mat, ib, blk):
        return int(torch.count_nonzero(mat)) * ib + (mat.shape[0] + 1) * ib  # a column index each, row pointers


class BSR(Format):
    """Block sparse rows (``torch.to_sparse_bsr``): whole ``bh x bw`` tiles, one column index per kept tile.

    ``bytes`` assumes the zeros fill whole tiles (block pruning), so the tile density is ``density``.
    """

    name, kernel = "bsr", "bsr_linear"

    def _bytes(self, rows, cols, d, vb, ib, blk):
        bh, bw = blk
        if rows % bh or cols % bw:
            raise ValueError(f"block {bh}x{bw} must divide the matrix {rows}x{cols}; pick a block that divides both")
        tiles = d * (rows // bh) * (cols // bw)
        return tiles * (bh * bw * vb + ib) + (rows // bh + 1) * ib

    @staticmethod
    def _kept_tiles(mat: torch.Tensor, blk: tuple[int, int]) -> int:
        bh, bw = blk
        rows, cols = mat.shape
        return int(mat.reshape(rows // bh, bh, cols // bw, bw).ne(0).any(dim=(1, 3)).sum())

    def _values(self, mat, blk):
        return self._kept_tiles(mat, blk) * blk[0] * blk[1]  # every value of a kept tile, its zeros too

    def _overhead(self, mat, ib, blk):
        bh, bw = blk
        rows, cols = mat.shape
        if rows % bh or cols % bw:
            return None
        return self._kept_tiles(mat, blk) * ib + (rows // bh + 1) * ib  # a column index per tile, block-row pointers

    def why_not(self, weight, block=None):
        mat = _check_matrix_weight(weight)
        block = check_block(MIN_KERNEL_BLOCK if block is None else block)
        rows, cols = mat.shape
        if rows % block or cols % block:
            return f"block {block} does not divide the weight matrix {rows}x{cols}"
        return None


class Semi24(Format):
    """2:4 semi-structured: 2 kept values of every group of 4 along a row, 2 bits of position each."""

    name, kernel = "2:4", "semi24_linear"

    def _bytes(self, rows, cols, d, vb, ib, blk):
        if cols % 4:
            raise ValueError(f"2:4 needs cols divisible by 4 (groups of 4 inputs), got {cols}")
        return rows * cols * vb / 2 + rows * cols / 8  # density is 1/2 by construction, whatever `density` says

    def _values(self, mat, blk):
        return mat.numel() // 2

    def _overhead(self, mat, ib, blk):
        if not is_nm(mat, 2, 4):
            return None
        return mat.numel() // 8  # 2 bits of position per kept value: 4 bits per group of 4

    def why_not(self, weight, block=None):
        mat = _check_matrix_weight(weight)
        if mat.shape[1] % SEMI24_IN_MULTIPLE:
            return (f"in_features ({mat.shape[1]}) must be a multiple of {SEMI24_IN_MULTIPLE} "
                    "(the kernel packs two groups of 4 per metadata byte)")
        if not is_nm(mat, 2, 4):
            return "the weight is not 2:4 sparse (at most 2 nonzeros in each group of 4 inputs)"
        return None


class Bitmask(Format):
    """Each nonzero value plus one bit per position (no kernel in the lab: a storage format only)."""

    name, kernel = "bitmask", None

    def _bytes(self, rows, cols, d, vb, ib, blk):
        return d * rows * cols * vb + math.ceil(rows * cols / 8)

    def _values(self, mat, blk):
        return int(torch.count_nonzero(mat))

    def _overhead(self, mat, ib, blk):
        return math.ceil(mat.numel() / 8)  # one bit per position

    def why_not(self, weight, block=None):
        _check_matrix_weight(weight)
        return "the lab has no bitmask kernel: bitmask is a storage format only"


#: The one registry: format name -> :class:`Format`, in the order tables and figures show them.
FORMATS: dict[str, Format] = {f.name: f for f in (Dense(), CSR(), BSR(), Semi24(), Bitmask())}
#: Formats the lab has a kernel for (what :class:`labkit.sparse.SparseLinear` can run).
KERNEL_FORMATS: tuple[str, ...] = tuple(name for name, f in FORMATS.items() if f.kernel is not None)


def get(name: str, arg: str = "format") -> Format:
    """The :class:`Format` called ``name`` (one of :data:`FORMATS`); ``arg`` names the argument in errors."""
    return FORMATS[checks.choice(arg, name, FORMATS)]


def storage_bytes(weight: torch.Tensor, value_bytes: int = 4, index_bytes: int = 4,
                  block: Block = 4) -> dict[str, int | None]:
    """Exact bytes of ``weight`` in every format of :data:`FORMATS` (``None``: the format cannot hold it)."""
    with warnings.catch_warnings():  # torch warns that sparse CSR/BSR support is in beta: not the learner's problem
        warnings.simplefilter("ignore", UserWarning)
        mat = _check_matrix_weight(weight)  # once (a sparse tensor is made dense here), then each format counts
        return {name: f.weight_bytes(mat, value_bytes, index_bytes, block) for name, f in FORMATS.items()}
