"""One model in each form the lab compares for speed, and a fair way to time them: in turns.

A sparse model is only faster if the zeros are stored and run in a format a kernel can skip. To see
that on your own machine, build the variants of one model and time them *in turns* (every model once
per round, the median over rounds), so a background job slows them all alike:

* masked: zeros inside an ordinary dense matrix (unstructured or N:M such as 2:4), run by the dense
  kernels, which multiply the zeros too;
* CSR: unstructured zeros stored as values + column indices (``labkit.sparse.sparsify(model, "csr")``),
  run by torch's sparse product;
* structured: whole FFN channels removed (:func:`labkit.llm.prune_structured`), a smaller dense model;
* on a GPU, the lab's own 2:4 and block-sparse (BSR) Triton kernels inside the model (:func:`gpu_variants`);
* quantized: int8 and int4 codes through PyTorch's weight-only CPU kernels (:func:`quant_variants`,
  :mod:`labkit.llm.qlinear`), beside dense float32 and bfloat16.

The unstructured and N:M variants use magnitude masks: speed depends on the pattern and the density, not
on which weights were kept (perplexity is what depends on the method: see :func:`labkit.llm.prune`).

Usage::

    variants = llm.speed_variants(model, data["calibration"])
    table = llm.speeds_in_turns(variants, tokenizer, rounds=3)
"""
from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from labkit import checks
from labkit import prune as labprune
from labkit.llm.evaluate import speed
from labkit.llm.oneshot import prunable_layers, prune
from labkit.llm.qlinear import INT4_GROUPS, KERNELS, pack
from labkit.llm.structured import prune_structured
from labkit.sparse import sparsify

#: What each variant is: ``{"kind", "runs_as", ...}`` next to the model itself.
Variant = tuple[dict, nn.Module]


def _check_dense(dense: object) -> None:
    if not isinstance(dense, nn.Module):
        raise TypeError(f"dense must be a torch.nn.Module (the unpruned model), got {type(dense).__name__}")


def speed_variants(dense: nn.Module, calibration: torch.Tensor | None = None, *,
                   masked: Sequence[tuple[str, float | None]] = (("unstructured", 0.5), ("2:4", None)),
                   csr: Sequence[float] = (0.5, 0.9),
                   ffn_keep: Sequence[float] = (0.75, 0.5, 0.25)) -> dict[str, Variant]:
    """``{label: (info, model)}``: ``dense`` itself first, then pruned copies of it.

    ``masked``: ``(pattern, sparsity)`` pairs kept as zeros in dense matrices, e.g. ``("unstructured", 0.5)``
    or ``("2:4", None)``; ``csr``: unstructured sparsities stored and run as CSR; ``ffn_keep``: shares of
    FFN channels kept by structured pruning (needs ``calibration`` token ids for its importance score).
    Each copy holds its own weights: SmolLM2 in float32 costs about 0.5 GB per variant.
    """
    _check_dense(dense)
    if ffn_keep and calibration is None:
        raise ValueError("structured variants (ffn_keep) need calibration tokens: pass "
                         "calibration=text_splits(tokenizer)['calibration'], or ffn_keep=()")
    out: dict[str, Variant] = {"dense": ({"kind": "dense", "runs_as": "dense"}, dense)}
    for pattern, sparsity in masked:
        model = copy.deepcopy(dense)
        report = prune(model, "magnitude", pattern, sparsity)
        name = f"unstructured {report['sparsity']:.0%}" if pattern == "unstructured" else pattern
        runs_as = "dense" if pattern == "unstructured" else "dense (PyTorch's 2:4 kernels are CUDA-only)"
        out[f"{name}, dense kernels"] = ({"kind": pattern, "block_sparsity": report["block_sparsity"],
                                          "runs_as": runs_as}, model)
    for sparsity in csr:
        model = copy.deepcopy(dense)
        report = prune(model, "magnitude", "unstructured", sparsity)
        out[f"unstructured {report['sparsity']:.0%}, torch CSR"] = (
            {"kind": "unstructured", "block_sparsity": report["block_sparsity"], "runs_as": "torch CSR"},
            sparsify(model, "csr"))
    for keep in ffn_keep:
        model = copy.deepcopy(dense)
        report = prune_structured(model, ffn_keep=keep, calibration=calibration)
        out[f"structured, {keep:.0%} of FFN channels kept"] = (
            {"kind": "structured", "ffn_keep": keep, "block_sparsity": report["block_sparsity"],
             "runs_as": "smaller dense"}, model)
    return out


def gpu_variants(dense: nn.Module, device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16, *,
                 block: int = 64, block_sparsity: float = 0.9) -> dict[str, Variant]:
    """``{label: (info, model)}`` with the lab's own kernels inside the model, all on ``device`` in ``dtype``.

    Dense; 2:4 through the lab's 2:4 kernel (``sparsify(model, "2:4")``); and ``block_sparsity`` of the
    ``block`` x ``block`` tiles of every block matrix removed, through its block-sparse kernel
    (``sparsify(model, "bsr")``; 64 divides every SmolLM2 matrix side: 576, 192, 1536). On a CPU the
    same models run PyTorch's dense product (that is how the tests check them); only on a GPU do they
    time the kernels.
    """
    _check_dense(dense)
    block_sparsity = checks.fraction("block_sparsity", block_sparsity)
    out: dict[str, Variant] = {
        "GPU dense": ({"kind": "dense", "runs_as": f"dense, {dtype}"}, copy.deepcopy(dense).to(device, dtype))}
    model = copy.deepcopy(dense)
    prune(model, "magnitude", "2:4", None)
    out["GPU 2:4, lab kernel"] = ({"kind": "2:4", "block_sparsity": 0.5, "runs_as": "the lab's 2:4 kernel"},
                                  sparsify(model.to(device, dtype), "2:4"))
    model = copy.deepcopy(dense)
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            layer.weight.mul_(labprune.block_mask(layer.weight, block_sparsity, block))
    out[f"GPU {block_sparsity:.0%} of {block}x{block} blocks, lab kernel"] = (
        {"kind": "block", "block_sparsity": block_sparsity, "runs_as": "the lab's block-sparse (BSR) kernel"},
        sparsify(model.to(device, dtype), "bsr", block=block))
    return out


def quant_variants(dense: nn.Module, kernels: Sequence[str] = KERNELS, group_size: int = 32,
                   bf16: bool = True) -> dict[str, Variant]:
    """``{label: (info, model)}``: ``dense`` itself, a bfloat16 copy (``bf16``), and copies of it whose block
    linears run PyTorch's weight-only kernels (:func:`labkit.llm.qlinear.pack`).

    ``kernels``: ``"int8"`` (per output row, symmetric) and/or ``"int4"`` (groups of ``group_size``, scale +
    min). The kernels compute in bfloat16, which is why the bfloat16 dense model belongs beside them. The
    token embedding / LM head stays as it is in every copy (float32, read once per generated token).
    """
    _check_dense(dense)
    if isinstance(kernels, str) or not all(k in KERNELS for k in kernels):
        raise ValueError(f"kernels must be a sequence of {KERNELS}, e.g. ('int8', 'int4'), got {kernels!r}")
    group_size = checks.choice("group_size", group_size, INT4_GROUPS)
    out: dict[str, Variant] = {"dense": ({"kind": "dense", "runs_as": "dense, float32"}, dense)}
    if bf16:
        out["dense bf16"] = ({"kind": "dense", "runs_as": "dense, bfloat16"}, copy.deepcopy(dense).to(torch.bfloat16))
    for kernel in kernels:
        model = pack(copy.deepcopy(dense), kernel, group_size)
        if kernel == "int8":
            out["int8 per channel, weight-only kernel"] = (
                {"kind": "int8", "bits": 8, "group_size": None,
                 "runs_as": "torch._weight_int8pack_mm, bf16 activations"}, model)
        else:
            out[f"int4 groups of {group_size}, weight-only kernel"] = (
                {"kind": "int4", "bits": 4, "group_size": group_size,
                 "runs_as": "torch._weight_int4pack_mm_for_cpu, bf16 activations"}, model)
    return out


def speeds_in_turns(variants: Mapping[str, Variant | nn.Module], tokenizer, rounds: int = 3,
                    **speed_args) -> dict[str, dict]:
    """Time every model once per round, in turns; ``{label: info + median tokens/s + parameters}``.

    ``variants``: what :func:`speed_variants` returns (or plain ``{label: model}``). ``speed_args`` go to
    :func:`labkit.llm.speed` (``prompt_tokens``, ``new_tokens``), one run per model per round.
    """
    rounds = checks.positive_int("rounds", rounds)
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty dict {label: model or (info, model)}, e.g. from "
                         "speed_variants(model, calibration)")
    if "repeats" in speed_args:
        raise ValueError("speeds_in_turns times each model once per round: set rounds=..., not repeats")
    entries = {label: v if isinstance(v, tuple) else ({}, v) for label, v in variants.items()}
    for label, (_, model) in entries.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"variants[{label!r}] must be a model (torch.nn.Module) or (info, model), "
                            f"got {type(model).__name__}")
    runs: dict[str, list[dict]] = {label: [] for label in entries}
    for _ in range(rounds):
        for label, (_, model) in entries.items():
            runs[label].append(speed(model, tokenizer, **speed_args, repeats=1))
    return {label: {**info, **{k: statistics.median(r[k] for r in runs[label])
                               for k in ("prefill_tokens_per_s", "decode_tokens_per_s")},
                    "parameters": sum(p.numel() for p in model.parameters())}
            for label, (info, model) in entries.items()}
