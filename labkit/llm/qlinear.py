"""Integer weights for real on the CPU: linear layers that run PyTorch's weight-only int8 and int4 kernels.

:func:`labkit.llm.quantize` leaves float32 weights on the grid: right for perplexity, but the model is as
large and as slow as before. These modules store the integer codes themselves and multiply with them:

* :class:`Int8Linear`: codes -127..127 (int8), one scale per output row (symmetric, per channel), through
  ``torch._weight_int8pack_mm(x, codes, scales)``, which computes ``x @ (codes * scales[:, None]).T``.
* :class:`Int4Linear`: codes 0..15 packed two per byte, a scale and a zero per group of 32, 64, 128 or 256
  inputs, through ``torch._convert_weight_to_int4pack_for_cpu(codes_int32, inner_k_tiles)`` (once, when the
  layer is built) and ``torch._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)``, which
  computes with ``w = (code - 8) * scale + zero``: the lab's ``offset + scale * code`` with
  ``zero = offset + 8 * scale``.

Checked on torch 2.13 (CPU): ``scales`` and ``scales_and_zeros`` must have the activations' dtype. With float32
activations both kernels take a slow path (on a 2-core AVX-512 machine, several times slower than the
float32 dense product); with bfloat16 activations they are the fast ones. So these modules compute in
``compute_dtype`` (bfloat16 by default): the input is cast to it, and the output back. The scales are then
stored in bfloat16 too, which moves each weight by up to 0.4% of its value: a kernel model is not bit for bit
the float32 model that :func:`labkit.llm.quantize` evaluated.

:func:`pack` swaps a model's block linears for these modules (rounding each weight to the kernel's grid:
a model quantized to that grid by RTN gets its own values back), so that
:func:`labkit.llm.speeds_in_turns` can time it against the dense model.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit import checks
from labkit.llm.grid import check_group, encode, make_grid
from labkit.llm.oneshot import prunable_layers

#: The weight-only kernels this module wraps.
KERNELS = ("int8", "int4")
#: Group sizes ``torch._weight_int4pack_mm_for_cpu`` accepts.
INT4_GROUPS = (32, 64, 128, 256)
#: ``torch._convert_weight_to_int4pack_for_cpu``'s ``innerKTiles``: the CPU layout ignores it (always
#: ``[out, in / 2]`` bytes); the argument is kept from the CUDA kernel's interface.
INNER_K_TILES = 2


def _check_compute_dtype(compute_dtype: torch.dtype) -> torch.dtype:
    return checks.choice("compute_dtype", compute_dtype, (torch.bfloat16, torch.float32))


def _check_linear(layer: object) -> nn.Linear:
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer must be a torch.nn.Linear, got {type(layer).__name__}")
    return layer


class _WeightOnly(nn.Module):
    """Shared by both kernels: shapes, the cast to ``compute_dtype`` and the bias."""

    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = _check_compute_dtype(compute_dtype)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must end in {self.in_features} features, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.in_features).to(self.compute_dtype).contiguous()
        y = self._matmul(flat).to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compute_dtype={self.compute_dtype}"


class Int8Linear(_WeightOnly):
    """``y = x @ (codes * scale[:, None]).T + bias``: int8 codes, one scale per output row.

    ``codes``: int8 ``(out, in)`` in -127..127; ``scale``: ``(out,)``. Build it from a float layer with
    :meth:`from_linear`.
    """

    codes: torch.Tensor
    scale: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype = torch.bfloat16):
        codes = checks.tensor("codes", codes, dim=2, dtypes=torch.int8, nonempty=True)
        scale = checks.tensor("scale", scale, dim=1, all_finite=True)
        if scale.shape[0] != codes.shape[0]:
            raise ValueError(f"scale must have one entry per output row ({codes.shape[0]}), got {scale.shape[0]}")
        super().__init__(codes.shape[1], codes.shape[0], bias, compute_dtype)
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scale", scale.to(self.compute_dtype).contiguous())

    @classmethod
    def from_linear(cls, layer: nn.Linear, compute_dtype: torch.dtype = torch.bfloat16) -> Int8Linear:
        """Round ``layer``'s weight to symmetric int8 per output row (RTN: :func:`labkit.llm.grid.rtn` with
        ``bits=8, group_size=None, symmetric=True``) and store the codes."""
        w = _check_linear(layer).weight.detach().float()
        codes, scale, _ = encode(make_grid(8, None, True), w)
        return cls(codes.to(torch.int8), scale[:, 0], layer.bias, compute_dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x, self.codes, self.scale)


class Int4Linear(_WeightOnly):
    """``y = x @ W.T + bias`` with ``W = offset + scale * code``, 4-bit codes, one scale and offset per group.

    ``codes``: integers ``(out, in)`` in ``low..low + 15`` (``low`` 0 for the asymmetric grid, -7 for the
    symmetric one); ``scale`` and ``offset``: ``(out, in // group_size)``; ``group_size`` one of
    :data:`INT4_GROUPS`. Build it from a float layer with :meth:`from_linear`.
    """

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int,
                 low: int = 0, bias: torch.Tensor | None = None, compute_dtype: torch.dtype = torch.bfloat16):
        codes = checks.tensor("codes", codes, dim=2, nonempty=True)
        out_features, in_features = codes.shape
        group_size = checks.choice("group_size", group_size, INT4_GROUPS)
        if in_features % group_size:
            raise ValueError(f"group_size={group_size} must divide in_features ({in_features}) for the int4 kernel")
        groups = (out_features, in_features // group_size)
        for name, t in (("scale", scale), ("offset", offset)):
            checks.tensor(name, t, dim=2, all_finite=True)
            if tuple(t.shape) != groups:
                raise ValueError(f"{name} must be (out, in // group_size) = {groups}, got {tuple(t.shape)}")
        kernel_codes = codes.long() - low  # the kernel's codes are 0..15
        if int(kernel_codes.min()) < 0 or int(kernel_codes.max()) > 15:
            raise ValueError(f"codes must lie in {low}..{low + 15} (4 bits), got "
                             f"{int(codes.min())}..{int(codes.max())}")
        super().__init__(in_features, out_features, bias, compute_dtype)
        self.group_size = group_size
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(
            kernel_codes.to(torch.int32).contiguous(), INNER_K_TILES))
        # offset + scale * code = (kernel_code - 8) * scale + zero, with kernel_code = code - low.
        zero = offset.float() + (8 + low) * scale.float()
        pairs = torch.stack([scale.float(), zero], dim=-1)  # (out, groups, 2)
        self.register_buffer("scales_and_zeros", pairs.transpose(0, 1).to(self.compute_dtype).contiguous())

    @classmethod
    def from_linear(cls, layer: nn.Linear, group_size: int = 32, symmetric: bool = False,
                    compute_dtype: torch.dtype = torch.bfloat16) -> Int4Linear:
        """Round ``layer``'s weight to 4 bits per group (RTN: :func:`labkit.llm.grid.rtn` with ``bits=4``) and
        pack the codes."""
        w = _check_linear(layer).weight.detach().float()
        group_size = checks.choice("group_size", group_size, INT4_GROUPS)
        g = make_grid(4, group_size, symmetric)
        codes, scale, offset = encode(g, w)
        return cls(codes, scale, offset, group_size, g.low, layer.bias, compute_dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group_size, self.scales_and_zeros)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"


def pack(model: nn.Module, kernel: str = "int8", group_size: int = 32, symmetric: bool = False,
         compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Swap every prunable linear of ``model`` for an :class:`Int8Linear` or :class:`Int4Linear`, in place.

    ``kernel``: ``"int8"`` (symmetric, per output row) or ``"int4"`` (``group_size`` 32/64/128/256,
    ``symmetric`` or scale + minimum). Each weight is rounded to the kernel's grid; a model already
    quantized to that grid keeps its values (up to the scales' ``compute_dtype``). A tied LM head stays as
    it is. Returns ``model`` (the new layer if ``model`` itself is an ``nn.Linear``). Checks every layer
    before it swaps any.
    """
    kernel = checks.choice("kernel", kernel, KERNELS)
    compute_dtype = _check_compute_dtype(compute_dtype)
    layers = prunable_layers(model)
    if kernel == "int4":
        group_size = checks.choice("group_size", group_size, INT4_GROUPS)
        g = make_grid(4, group_size, symmetric)
        for name, layer in layers.items():
            check_group(g, layer.in_features, name)
    for name, layer in layers.items():
        new: nn.Module = (Int8Linear.from_linear(layer, compute_dtype) if kernel == "int8" else
                          Int4Linear.from_linear(layer, group_size, symmetric, compute_dtype))
        if not name:  # the model is a single nn.Linear: there is no parent to put the new layer in
            return new
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model
