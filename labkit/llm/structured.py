"""Structured pruning: remove whole FFN channels and attention heads, so the matrices get *smaller*.

Unstructured zeros need a sparse format and a sparse kernel to save anything; a smaller dense matrix
is faster with the ordinary dense kernels, on any hardware. The price: a whole channel or head is a
much coarser cut than single weights, and one-shot the loss is larger. The papers win part of it
back: LLM-Pruner (Ma et al. 2023) with a short LoRA fine-tune, Sheared LLaMA (Xia et al. 2024) with
continued pre-training, and FLAP (An et al. 2024) without any retraining: it removes the channels whose
input fluctuates least over the calibration data (weighted by their output weights) and adds their
mean contribution back as a bias of the output layer. This module does none of these, so its numbers
are the one-shot cost of the cut alone.

Where the cuts go, in a Llama block:

* FFN channel ``c``: row ``c`` of ``gate_proj`` and ``up_proj``, column ``c`` of ``down_proj``.
* Attention, by key-value group (SmolLM2: 9 query heads share 3 key-value heads, 3 per group): the
  group's rows of ``k_proj`` and ``v_proj``, its query heads' rows of ``q_proj``, their columns of
  ``o_proj``. Removing a key-value head alone would leave its query heads without keys.

Importance, from calibration data (a Wanda-style score for a unit): how much output the unit can
produce, ``sum over its columns j of ||X_j||_2 * ||W_out[:, j]||_2`` with ``X`` the input of
``down_proj`` / ``o_proj``. The same one-forward-pass trick as :mod:`labkit.llm.oneshot` makes it
sequential: each block is scored on the outputs of the already pruned blocks before it.
"""
from __future__ import annotations

import time
from typing import Any, cast

import torch
from torch import nn

from labkit import checks
from labkit.llm.evaluate import check_tokens
from labkit.llm.oneshot import prunable_layers, run_with_hooks


def _keep_rows(layer: nn.Linear, index: torch.Tensor) -> None:
    """Keep only output rows ``index`` of ``layer``, in place (the matrix gets physically smaller)."""
    layer.weight = nn.Parameter(layer.weight.detach()[index].clone(), requires_grad=layer.weight.requires_grad)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[index].clone(), requires_grad=layer.bias.requires_grad)
    layer.out_features = len(index)


def _keep_columns(layer: nn.Linear, index: torch.Tensor) -> None:
    """Keep only input columns ``index`` of ``layer``, in place."""
    layer.weight = nn.Parameter(layer.weight.detach()[:, index].clone(), requires_grad=layer.weight.requires_grad)
    layer.in_features = len(index)


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, in their original order (ties broken by position)."""
    order = torch.sort(-scores, stable=True).indices[:keep]
    return order.sort().values


def mlps(model: nn.Module) -> list[nn.Module]:
    """Llama-style MLPs (modules with ``gate_proj``, ``up_proj`` and ``down_proj`` linear layers)."""
    return [m for m in model.modules()
            if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("gate_proj", "up_proj", "down_proj"))]


def attentions(model: nn.Module) -> list[nn.Module]:
    """Llama-style attention modules (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and ``head_dim``)."""
    return [m for m in model.modules() if hasattr(m, "head_dim")
            and all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "o_proj"))]


def prune_structured(model: nn.Module, ffn_keep: float = 0.5, calibration: torch.Tensor | None = None, *,
                     heads_keep: float = 1.0) -> dict:
    """Remove FFN channels and/or key-value groups of heads from every block of a Llama-style model, in place.

    ``ffn_keep``: the share of FFN channels kept in each block, in (0, 1] (0.5 keeps 768 of SmolLM2's
    1536). ``heads_keep``: the share of key-value groups kept (SmolLM2 has 3; at least 1 stays).
    ``calibration``: token ids ``(sequences, length)`` for the importance score.
    Returns ``{"ffn_keep", "heads_keep", "ffn_channels", "kv_groups", "block_sparsity", "model_sparsity",
    "parameters", "seconds"}`` where the sparsities count *removed* parameters against the original model.
    """
    ffn_keep = checks.fraction("ffn_keep", ffn_keep, low=0.0, high=1.0, include_high=True)
    heads_keep = checks.fraction("heads_keep", heads_keep, low=0.0, high=1.0, include_high=True)
    if ffn_keep == 0 or heads_keep == 0:
        raise ValueError("ffn_keep and heads_keep must be above 0: a block needs at least one channel / head group")
    if calibration is None:
        raise ValueError("calibration tokens are required to score channels: "
                         "pass calibration=text_splits(tokenizer)['calibration']")
    calibration = check_tokens("calibration", calibration, model)
    mlp_list = mlps(model) if ffn_keep < 1 else []
    attn_list = attentions(model) if heads_keep < 1 else []
    if ffn_keep < 1 and not mlp_list:
        raise ValueError("model has no Llama-style MLP (gate_proj, up_proj, down_proj): cannot remove FFN channels")
    if heads_keep < 1 and not attn_list:
        raise ValueError("model has no Llama-style attention (q/k/v/o_proj and head_dim): cannot remove heads")
    before = sum(p.numel() for p in model.parameters())
    prunable_before = _block_parameters(model)
    # Llama-style blocks found by duck typing (see mlps/attentions); their submodules are reached by name
    owners: dict[int, tuple[str, Any]] = {id(mlp.down_proj): ("mlp", mlp) for mlp in mlp_list}
    owners.update({id(attn.o_proj): ("attn", attn) for attn in attn_list})
    layers = {name: m for name, m in model.named_modules() if id(m) in owners}
    kept: dict[str, int] = {}

    def cut(name: str, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        kind, parent = owners[id(layer)]
        # One score per input column of the output projection: ||X_j|| * ||W[:, j]||.
        column = x.float().pow(2).sum(0).sqrt() * layer.weight.float().norm(dim=0)
        if kind == "mlp":
            index = _top(column, max(1, round(ffn_keep * layer.in_features)))
            _keep_rows(parent.gate_proj, index)
            _keep_rows(parent.up_proj, index)
            kept["ffn_channels"] = len(index)
        else:
            hd = parent.head_dim
            per_group = parent.num_key_value_groups  # query heads per key-value head
            groups = parent.k_proj.out_features // hd
            group_scores = column.reshape(groups, per_group * hd).sum(1)
            chosen = _top(group_scores, max(1, round(heads_keep * groups)))
            q_index = torch.cat([torch.arange(g * per_group * hd, (g + 1) * per_group * hd) for g in chosen.tolist()])
            kv_index = torch.cat([torch.arange(g * hd, (g + 1) * hd) for g in chosen.tolist()])
            _keep_rows(parent.q_proj, q_index)
            _keep_rows(parent.k_proj, kv_index)
            _keep_rows(parent.v_proj, kv_index)
            index = q_index
            kept["kv_groups"] = len(chosen)
        _keep_columns(layer, index)
        return x[:, index]  # this pass continues as if the removed units had never been there

    start = time.perf_counter()
    run_with_hooks(model, calibration, layers, cut, desc="structured")
    seconds = time.perf_counter() - start
    config = getattr(model, "config", None)
    if config is not None:  # keep the config truthful, so the smaller model can be saved and reloaded
        if "ffn_channels" in kept and hasattr(config, "intermediate_size"):
            config.intermediate_size = kept["ffn_channels"]
        if "kv_groups" in kept and hasattr(config, "num_key_value_heads"):
            config.num_attention_heads = kept["kv_groups"] * cast(Any, attn_list[0]).num_key_value_groups
            config.num_key_value_heads = kept["kv_groups"]
    after = sum(p.numel() for p in model.parameters())
    removed = before - after
    assert removed >= 0
    return {"ffn_keep": ffn_keep, "heads_keep": heads_keep, "ffn_channels": kept.get("ffn_channels"),
            "kv_groups": kept.get("kv_groups"), "block_sparsity": removed / prunable_before,
            "model_sparsity": removed / before, "parameters": after, "seconds": seconds}


def _block_parameters(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in prunable_layers(model).values())
