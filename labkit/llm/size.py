"""How many bytes a (pruned, quantized) language model takes in each storage format.

The prunable matrices are counted by the lab's one registry of formats, :data:`labkit.formats.FORMATS`
(indices and metadata included); everything else (token embedding = tied LM head, norms) stays dense in every format. A
structurally pruned model is simply a smaller dense model: its ``dense_*`` entries shrink.

:func:`model_bytes` stores the values as floats (fp32, bf16); :func:`quantized_bytes` as integer codes with
their scales (:meth:`labkit.formats.Format.quantized_bytes`), the rest of the model as SmolLM2's GGUF file
stores it: the token embedding as Q8_0 (8-bit codes, an fp16 scale per 32 values) and the norms in fp32.
"""
from __future__ import annotations

import itertools
import math

from torch import nn

from labkit import formats
from labkit.llm.oneshot import prunable_layers

#: Storage formats reported for the prunable matrices, each at fp32 and bf16 values.
FORMATS = ("dense", "csr", "bitmask", "2:4")


def model_bytes(model: nn.Module, index_bytes: int = 4) -> dict[str, int | None]:
    """Bytes of the whole model (tied tensors once) with its linear layers stored in each format.

    Keys ``"<format>_<fp32|bf16>"`` for format in ``dense``, ``csr``, ``bitmask``, ``2:4``. ``2:4`` is
    ``None`` unless every prunable matrix follows the 2:4 pattern. Indices take ``index_bytes`` each
    (4: int32). Real zeros are counted, whatever method made them.
    """
    layers = prunable_layers(model)
    in_layers = sum(m.weight.numel() for m in layers.values())
    rest = sum(p.numel() for p in model.parameters()) - in_layers  # embedding (= LM head), norms, biases
    out: dict[str, int | None] = {}
    for suffix, value_bytes in (("fp32", 4), ("bf16", 2)):
        totals: dict[str, int | None] = {f: rest * value_bytes for f in FORMATS}
        for layer in layers.values():
            for f in FORMATS:
                total = totals[f]
                if total is not None:
                    size = formats.FORMATS[f].weight_bytes(layer.weight.detach(), value_bytes, index_bytes)
                    totals[f] = None if size is None else total + size
        out.update({f"{f}_{suffix}": v for f, v in totals.items()})
    return out


def held_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters and buffers really occupy now (tied tensors once), as stored.

    Unlike :func:`model_bytes`, which prices each format with ``index_bytes``-wide indices, this counts
    what the running model holds: a ``SparseLinear`` in CSR keeps the row pointers and column indices that
    ``torch.Tensor.to_sparse_csr`` makes, which are int64 (8 bytes each, so 12 bytes per kept fp32 weight).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    total = 0
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


#: How the GGUF file stores the token embedding (Q8_0): 8-bit symmetric codes and an fp16 scale per 32 values.
EMBEDDING_BITS, EMBEDDING_GROUP = 8, 32


def quantized_bytes(model: nn.Module, bits: int, group_size: int | None = None, symmetric: bool = False, *,
                    scale_bytes: int = 2, index_bytes: int = 4) -> dict[str, int | None]:
    """Bytes of the whole model with its linear layers stored as ``bits``-bit codes in each format.

    Keys ``"<format>_int<bits>"`` for format in ``dense``, ``csr``, ``bitmask``, ``2:4`` (``None`` where a
    matrix does not fit the format, e.g. ``2:4`` of a dense model). Each matrix: the format's codes, indices
    and metadata, and its scales (and offsets unless ``symmetric``), ``scale_bytes`` each, one per
    ``group_size`` inputs of a row (``None``: per row); see :meth:`labkit.formats.Format.quantized_bytes`.
    The rest as in SmolLM2's file: embeddings (the tied LM head is one of them) Q8_0, every other parameter
    (norms, biases) fp32. So ``dense_int4`` with groups of 32, scale + min, is the file's tensor data.
    """
    layers = prunable_layers(model)
    embeddings = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    in_layers = {id(m.weight) for m in layers.values()}
    rest = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        if id(p) in embeddings:
            rest += p.numel() * EMBEDDING_BITS // 8 + math.ceil(p.numel() / EMBEDDING_GROUP) * 2
        elif id(p) not in in_layers:
            rest += p.numel() * 4
    out: dict[str, int | None] = {}
    for f in FORMATS:
        sizes = [formats.FORMATS[f].quantized_bytes(layer.weight.detach(), bits, group_size, symmetric, scale_bytes,
                                                    index_bytes) for layer in layers.values()]
        out[f"{f}_int{bits}"] = None if None in sizes else rest + sum(s for s in sizes if s is not None)
    return out
