"""Everything the pruning explorer (notebook 02) shows that needs a model: masks, histograms, per-layer sparsity.

:func:`explorer_table` trains (or loads from the cache) the seed-0 dense model of the sweep, prunes it one-shot
with every method at every swept sparsity, unpacks the fine-tuned masks the sweep stored, and returns plain
tables. The widget (:mod:`labkit.widgets.pruning`) only looks them up, so moving a control is instant.

Removed weights are counted one way everywhere: a weight is removed when its mask is off, *or* when the unit
that feeds it is gone. Structured pruning removes a hidden unit's row in its own layer and its biases; the
unit then always outputs ReLU(0) = 0, so its column in the next layer is removed too (that is what
:func:`labkit.prune.remove_units` cuts out). The per-layer bars and the "% removed" line both count that way.
"""
from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np
import torch

from labkit import cache

#: (granularity, criterion) -> the sweep's method name. Block and structured rank by L1 norm (magnitude).
COMBINATIONS = {("unstructured", "magnitude"): "magnitude", ("unstructured", "global magnitude"): "global_magnitude",
                ("unstructured", "random"): "random", ("block", "magnitude"): "block",
                ("structured", "magnitude"): "structured"}
GRANULARITIES = ("unstructured", "block", "structured")
HIST_BINS = 40
#: Bump when the precomputed tables change shape, so stale cache entries are never read.
EXPLORER_VERSION = 3


def unpack_mask(entry: dict) -> np.ndarray:
    """A bool mask from the sweep's ``{"shape", "bits"}`` (base64 of the packed bits)."""
    bits = np.frombuffer(base64.b64decode(entry["bits"]), dtype=np.uint8)
    shape = entry["shape"]
    return np.unpackbits(bits)[: int(np.prod(shape))].reshape(shape).astype(bool)


def effective_masks(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Structured masks with the inputs of removed units switched off too (layers in forward order).

    A unit whose whole row is masked is gone; the next layer's weights that read it (one column, or for a
    flattened conv channel a run of ``pooled`` columns, as in :func:`labkit.prune.remove_units`) are removed.
    """
    names = list(masks)
    out = {n: m.copy() for n, m in masks.items()}
    for prev, name in zip(names, names[1:], strict=False):
        rows = masks[prev].reshape(masks[prev].shape[0], -1)
        dead = ~rows.any(axis=1)  # units of ``prev`` with every weight removed
        if not dead.any():
            continue
        m = out[name]
        inputs, units = m.shape[1], rows.shape[0]
        if inputs % units:
            raise ValueError(f"layer {name!r} has {inputs} inputs, not a multiple of {prev!r}'s {units} units")
        per_unit = inputs // units  # 1, or the pooled positions of one channel after a flatten
        m[:, np.repeat(dead, per_unit)] = False
    return out


def removed_share(masks: dict[str, np.ndarray]) -> float:
    """Share of all weights removed (percent) by ``masks``: the per-layer bars weighted by layer size."""
    total = sum(m.size for m in masks.values())
    return 100 * (1 - sum(int(m.sum()) for m in masks.values()) / total)


def _compute(sweep: dict, model_kind: str) -> dict:
    """Every mask-derived number the explorer can show, keyed by (method, sparsity, finetune)."""
    from labkit import models, prune, train

    cfg = sweep["config"]
    seed = cfg["explorer"]["seed"]
    # The explorer's split: its own entry in newer sweeps (one split per seed), else the sweep-wide one.
    data_seed = cfg["explorer"]["data_seed"] if "data_seed" in cfg["explorer"] else cfg["data_seed"]
    dense = train.pretrained(model_kind, seed=seed, epochs=cfg["dense"]["epochs"], lr=cfg["dense"]["lr"],
                             data_seed=data_seed)
    weights = {n: m.weight.detach().clone().abs().numpy() for n, m in models.prunable_layers(dense).items()}
    grid = [0.0] + list(cfg["sparsities"])
    edges = {n: np.linspace(0.0, float(w.max()), HIST_BINS + 1) for n, w in weights.items()}
    table: dict = {"grid": grid, "layers": list(weights),
                   "edges": {n: np.round(e, 4).tolist() for n, e in edges.items()},
                   "all_counts": {n: np.histogram(w, edges[n])[0].tolist() for n, w in weights.items()},
                   "sizes": {n: int(w.size) for n, w in weights.items()},
                   "shapes": {n: [w.shape[0], int(w.size // w.shape[0])] for n, w in weights.items()},
                   "entries": {}}
    for method in COMBINATIONS.values():
        for s in grid:
            for finetune in (False, True):
                masks: dict[str, np.ndarray]  # one type for the three branches below (mypy took the first one's shape)
                if s == 0.0:
                    masks = {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}
                elif finetune:
                    masks = {n: unpack_mask(e) for n, e in sweep["explorer_masks"][f"{method}|{s}"].items()}
                else:
                    trial = models.build(model_kind, seed=None)
                    trial.load_state_dict(dense.state_dict())
                    options = ({"block": cfg["block"][model_kind], "skip_incompatible": True}
                               if method == "block" else {})
                    got = prune.prune_model(trial, method, s, seed=seed, **options)
                    masks = {n: got[n].numpy().astype(bool) if n in got else np.ones(w.shape, dtype=bool)
                             for n, w in weights.items()}
                if method == "structured":
                    masks = effective_masks(masks)
                entry: dict[str, Any] = {
                    "layer_sparsity": {n: round(100 * (1 - float(m.mean())), 2) for n, m in masks.items()},
                    "removed": round(removed_share(masks), 2),
                    "masks": {n: m.reshape(m.shape[0], -1) for n, m in masks.items()},
                    "kept_counts": {n: np.histogram(weights[n][masks[n]], edges[n])[0].tolist() for n in weights},
                    "threshold": {}}
                if method in ("magnitude", "global_magnitude") and not finetune and s > 0:
                    for n in weights:  # one-shot magnitude: the smallest |w| kept is the threshold
                        kept = weights[n][masks[n]]
                        entry["threshold"][n] = round(float(kept.min()), 4) if kept.size else None
                table["entries"][(method, s, finetune)] = entry
    return table


def explorer_table(sweep: dict, model: str = "mlp") -> dict:
    """The explorer's precomputed tables for ``sweep`` (computed once, then read from the disk cache)."""
    if not isinstance(sweep, dict) or "config" not in sweep or "explorer_masks" not in sweep:
        raise TypeError("sweep must be the dict labkit.experiments.pruning_sweep.load_sweep() returns")
    if model != sweep["config"]["explorer"]["model"]:
        raise ValueError(f"the sweep stores fine-tuned masks for model {sweep['config']['explorer']['model']!r} "
                         f"only, got model={model!r}")
    digest = hashlib.sha256(json.dumps(sweep, sort_keys=True).encode()).hexdigest()[:16]
    # Cached as safe data: the boolean masks travel as torch tensors and come back as numpy arrays here.
    table = cache.cached("pruning_explorer", EXPLORER_VERSION, {"sweep": digest, "model": model},
                         lambda: _with_masks_as(_compute(sweep, model), torch.from_numpy))
    return _with_masks_as(table, lambda m: m.numpy())


def _with_masks_as(table: dict, convert) -> dict:
    """``table`` with every entry's masks passed through ``convert`` (numpy <-> torch, for the safe cache)."""
    entries = {k: {**e, "masks": {n: convert(m) for n, m in e["masks"].items()}} for k, e in table["entries"].items()}
    return {**table, "entries": entries}
