"""Every pruning method of the lab, in one file.

Read it top to bottom: it is course material.

1. **Masks.** A mask is a bool tensor shaped like a weight: ``True`` keeps a weight, ``False`` prunes it.
   Each criterion is one small function that returns a mask and checks its own invariants:
   :func:`random_mask`, :func:`magnitude_mask` (per layer), :func:`global_magnitude_masks` (one
   threshold ranked across layers), :func:`structured_mask` (whole output neurons / channels by L1 or L2
   norm), :func:`nm_mask` (N:M, e.g. 2:4) and :func:`block_mask` (b x b tiles).
2. **Applying masks** with ``torch.nn.utils.prune``: the module keeps ``weight_orig`` (trainable) and a
   ``weight_mask`` buffer, and a forward pre-hook sets ``weight = weight_orig * weight_mask`` before every
   forward pass, so training never revives a pruned weight. :func:`prune_model` prunes a whole model;
   :func:`make_permanent` bakes the zeros in and drops the hooks. Masking alone makes nothing faster:
   the matrix is still dense, full of zeros.
3. **Physical removal**: :func:`remove_units` deletes whole neurons / channels and returns a *smaller
   dense* model; this is the form of sparsity that ordinary dense kernels turn into speed.
4. **Schedules** with fine-tuning: :func:`prune_and_finetune` runs one-shot, iterative or gradual
   (Zhu & Gupta's cubic schedule, :func:`cubic_sparsity`) pruning. :func:`lottery_ticket` rewinds the
   survivors to their early weights and retrains.
5. **Sensitivity**: :func:`sensitivity_scan` prunes one layer at a time and measures *validation*
   accuracy; :func:`choose_layer_sparsity` picks each layer's sparsity from it.
6. **Reports**: :func:`sparsity_report` (per layer and overall) and :func:`storage_bytes` (honest byte
   counts for dense, CSR, BSR, 2:4 packed and bitmask storage, indices and metadata included).

Conventions: "sparsity" is the fraction of weights set to zero, in ``[0, 1)``. A mask prunes exactly
``round(sparsity * count)`` weights (or rows, or blocks): ties are broken by position, never by luck.
Weights must be finite: a NaN has no magnitude to rank, so every mask function rejects NaN and inf.
Masks are built on the weight's device (a CUDA model is pruned on the GPU).

Re-pruning a pruned layer ranks its *effective* weights (pruned ones count as zero), so raising the
sparsity only ever adds to the pruned set. Lowering it (80% -> 50%) must bring some weights back: ties
among the zeros are broken by the magnitude of the trainable ``weight_orig`` (the ``orig=`` argument of
the mask functions), so the revived weights are the largest pruned ones, never the first ones by position.
Convolution weights ``(out, in, kh, kw)`` are viewed as matrices ``(out, in * kh * kw)`` for N:M and
block patterns, as sparse kernels see them.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from labkit import checks, formats
from labkit.data import Split
from labkit.models import MLP, SmallCNN, prunable_layers

#: Methods understood by :func:`prune_model`.
METHODS = ("random", "magnitude", "global_magnitude", "structured", "nm", "block")
#: Schedules understood by :func:`prune_and_finetune`.
SCHEDULES = ("one_shot", "iterative", "gradual")
#: Storage formats reported by :func:`storage_bytes` (names of :data:`labkit.formats.FORMATS`).
FORMATS = tuple(formats.FORMATS)


# ----------------------------------------------------------------------------------------------
# Argument checks (every public function validates its inputs and names the argument to fix)
# ----------------------------------------------------------------------------------------------

def check_sparsity(sparsity: object, name: str = "sparsity") -> float:
    """Return ``sparsity`` as a float, or raise unless it is a number in [0, 1) (0.9 prunes 90%, keeps 10%)."""
    return checks.fraction(name, sparsity)


def _check_weight(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """A 2-D (Linear) or 4-D (Conv2d) tensor with at least one element, every value finite."""
    checks.tensor(name, weight)
    if weight.dim() not in (2, 4):
        raise ValueError(f"{name} must be 2-D (Linear) or 4-D (Conv2d), got shape {tuple(weight.shape)}")
    return checks.tensor(name, weight, nonempty=True, all_finite=True)


def _check_orig(orig: torch.Tensor | None, weight: torch.Tensor, name: str = "orig") -> torch.Tensor | None:
    """``orig`` (the unmasked ``weight_orig``) must match ``weight``'s shape; ``None`` means ties go by position."""
    if orig is None:
        return None
    _check_weight(orig, name)
    if orig.shape != weight.shape:
        raise ValueError(f"{name} must have the weight's shape {tuple(weight.shape)}, got {tuple(orig.shape)}")
    return orig




def _n_pruned(sparsity: float, count: int) -> int:
    return int(round(sparsity * count))


def _lowest_k(scores: torch.Tensor, k: int, tiebreak: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask over a flat ``scores``: True everywhere except the ``k`` lowest scores.

    Equal scores (for example the zeros left by an earlier pruning step) are ranked by ``tiebreak``
    (lowest pruned first), then by position: two stable sorts, so the count is always exact.
    Everything stays on ``scores``' device.
    """
    flat = scores.detach().flatten().float()
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        order = torch.arange(flat.numel(), device=flat.device)
        if tiebreak is not None:
            order = torch.sort(tiebreak.detach().flatten().float(), stable=True).indices
        order = order[torch.sort(flat[order], stable=True).indices]
        keep[order[:k]] = False
    return keep


# ----------------------------------------------------------------------------------------------
# 1. Masks: one function per criterion
# ----------------------------------------------------------------------------------------------

def random_mask(weight: torch.Tensor, sparsity: float, seed: int = 0) -> torch.Tensor:
    """Prune a random ``sparsity`` share of the weights: the baseline every criterion must beat."""
    _check_weight(weight)
    sparsity = check_sparsity(sparsity)
    seed = checks.nonneg_int("seed", seed)
    # Drawn on the CPU (the same numbers on every device), ranked on the weight's device.
    scores = torch.rand(weight.numel(), generator=torch.Generator().manual_seed(seed)).to(weight.device)
    mask = _lowest_k(scores, _n_pruned(sparsity, weight.numel())).reshape(weight.shape)
    assert (~mask).sum() == _n_pruned(sparsity, weight.numel())
    return mask


def magnitude_mask(weight: torch.Tensor, sparsity: float, *, orig: torch.Tensor | None = None) -> torch.Tensor:
    """Prune the ``sparsity`` share of this layer's weights with the smallest ``|w|`` (Han et al., 2015).

    ``orig``: the unmasked weight (``weight_orig``) of an already pruned layer; equal ``|w|`` (its zeros)
    are then ranked by ``|orig|``, so lowering the sparsity revives the largest pruned weights.
    """
    _check_weight(weight)
    orig = _check_orig(orig, weight)
    sparsity = check_sparsity(sparsity)
    k = _n_pruned(sparsity, weight.numel())
    mask = _lowest_k(weight.detach().abs(), k, None if orig is None else orig.abs()).reshape(weight.shape)
    assert (~mask).sum() == k
    return mask


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float, *,
                           orig: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One threshold for all layers: rank every ``|w|`` of every layer together and prune the smallest.

    Layers whose weights are small overall (often the wide early layers) lose more; the total count
    pruned is exactly ``round(sparsity * total)``. ``orig`` maps layer names to unmasked weights
    (see :func:`magnitude_mask`).
    """
    if not isinstance(weights, Mapping) or not weights:
        raise TypeError("weights must be a non-empty dict {layer name: weight tensor}")
    sparsity = check_sparsity(sparsity)
    for name, w in weights.items():
        _check_weight(w, f"weights[{name!r}]")
    if orig is not None and (not isinstance(orig, Mapping) or set(orig) != set(weights)):
        raise ValueError("orig must be None or a dict with the same layer names as weights")
    for name, w in weights.items():
        _check_orig(None if orig is None else orig[name], w, f"orig[{name!r}]")
    device = next(iter(weights.values())).device
    flat = torch.cat([w.detach().abs().flatten().to(device) for w in weights.values()])
    tiebreak = None if orig is None else torch.cat([orig[n].detach().abs().flatten().to(device) for n in weights])
    k = _n_pruned(sparsity, flat.numel())
    keep = _lowest_k(flat, k, tiebreak)
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].reshape(w.shape).to(w.device)
        start += w.numel()
    assert sum(int((~m).sum()) for m in masks.values()) == k
    return masks


def _check_norm(norm: int) -> int:
    if isinstance(norm, bool) or norm not in (1, 2):
        raise ValueError(f"norm must be 1 (L1, sum of |w|) or 2 (L2, Euclidean), got {norm!r}")
    return int(norm)


def unit_scores(weight: torch.Tensor, norm: int = 1) -> torch.Tensor:
    """The L1 or L2 norm of each output unit (row of a Linear, filter of a Conv2d)."""
    _check_weight(weight)
    return formats.as_matrix(weight.detach()).norm(p=_check_norm(norm), dim=1)


def structured_mask(weight: torch.Tensor, sparsity: float, norm: int = 1, *,
                    orig: torch.Tensor | None = None) -> torch.Tensor:
    """Prune whole output units: the ``round(sparsity * out)`` rows (filters) with the smallest norm.

    At least one unit always survives, so a layer can never be cut off entirely. ``orig``: see
    :func:`magnitude_mask` (ties between zeroed units are ranked by their unmasked norm).
    """
    _check_weight(weight)
    orig = _check_orig(orig, weight)
    sparsity = check_sparsity(sparsity)
    out = weight.shape[0]
    k = min(_n_pruned(sparsity, out), out - 1)
    rows = _lowest_k(unit_scores(weight, norm), k, None if orig is None else unit_scores(orig, norm))
    mask = rows.reshape(-1, *([1] * (weight.dim() - 1))).expand_as(weight).clone()
    assert (~rows).sum() == k and int((~mask).sum()) == k * formats.as_matrix(weight).shape[1]
    return mask


def _check_nm(n: int, m: int) -> tuple[int, int]:
    n, m = checks.positive_int("n", n), checks.positive_int("m", m)
    if n > m:
        raise ValueError(f"N:M keeps n of every m weights, so n must be <= m; got n={n}, m={m} (did you mean {m}:{n}?)")
    return n, m


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4, *, orig: torch.Tensor | None = None) -> torch.Tensor:
    """N:M sparsity: in every group of ``m`` consecutive weights along a row, keep the ``n`` largest ``|w|``.

    2:4 (50%) is the pattern NVIDIA's sparse tensor cores accelerate. Groups run along the input
    dimension (``in * kh * kw`` for a conv), which must be divisible by ``m``. ``orig``: see
    :func:`magnitude_mask`.
    """
    _check_weight(weight)
    orig = _check_orig(orig, weight)
    n, m = _check_nm(n, m)
    mat = formats.as_matrix(weight.detach())
    if mat.shape[1] % m:
        raise ValueError(f"N:M needs the input dimension ({mat.shape[1]} for weight of shape {tuple(weight.shape)}) "
                         f"to be divisible by m={m}; choose another m or skip this layer")
    groups = mat.abs().reshape(-1, m)
    # Keep the n largest of each group; stable sorts of -|w| break ties by -|orig|, then by position.
    order = torch.arange(m, device=groups.device).expand_as(groups)
    if orig is not None:
        order = torch.sort(-formats.as_matrix(orig.detach()).abs().reshape(-1, m), dim=1, stable=True).indices
    order = order.gather(1, torch.sort(-groups.gather(1, order), dim=1, stable=True).indices)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    assert bool((keep.sum(dim=1) == n).all())
    return keep.reshape(weight.shape)


def _check_block(block: int | tuple[int, int]) -> tuple[int, int]:
    """Any tile size ``b`` or ``(bh, bw)``: pruning is not limited by a kernel (see labkit.formats.check_block)."""
    return formats.tile(block)


def block_scores(weight: torch.Tensor, block: int | tuple[int, int] = 4, norm: int = 1) -> torch.Tensor:
    """The L1 / L2 norm of each ``bh x bw`` tile of the weight matrix: shape ``(rows / bh, cols / bw)``."""
    _check_weight(weight)
    bh, bw = _check_block(block)
    mat = formats.as_matrix(weight.detach())
    r, c = mat.shape
    if r % bh or c % bw:
        raise ValueError(f"block {bh}x{bw} must divide the weight matrix {r}x{c} (shape {tuple(weight.shape)}); "
                         f"pick a block size that divides both, or skip this layer")
    tiles = mat.reshape(r // bh, bh, c // bw, bw).permute(0, 2, 1, 3)
    return tiles.abs().sum(dim=(2, 3)) if _check_norm(norm) == 1 else tiles.pow(2).sum(dim=(2, 3)).sqrt()


def block_mask(weight: torch.Tensor, sparsity: float, block: int | tuple[int, int] = 4, norm: int = 1, *,
               orig: torch.Tensor | None = None) -> torch.Tensor:
    """Prune whole ``b x b`` tiles: the ``round(sparsity * n_tiles)`` tiles with the smallest norm.

    Block-sparse (BSR) kernels skip a whole tile at once, which is why this pattern can be fast. Any
    tile size works here; the BSR kernel itself needs a power of two >= 16 (``labkit.formats.check_block``).
    ``orig``: see :func:`magnitude_mask`.
    """
    _check_weight(weight)
    orig = _check_orig(orig, weight)
    sparsity = check_sparsity(sparsity)
    bh, bw = _check_block(block)
    scores = block_scores(weight, (bh, bw), norm)
    k = _n_pruned(sparsity, scores.numel())
    tiebreak = None if orig is None else block_scores(orig, (bh, bw), norm)
    tiles = _lowest_k(scores, k, tiebreak).reshape(scores.shape)
    mask = tiles.repeat_interleave(bh, dim=0).repeat_interleave(bw, dim=1).reshape(weight.shape)
    assert (~tiles).sum() == k and (~mask).sum() == k * bh * bw
    return mask


# ----------------------------------------------------------------------------------------------
# 2. Applying masks to a model (torch.nn.utils.prune) and making them permanent
# ----------------------------------------------------------------------------------------------

def _check_module(module: nn.Module, where: str = "module") -> nn.Module:
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"{where} must be nn.Linear or nn.Conv2d to be pruned here, got {type(module).__name__}")
    return module


def is_masked(module: nn.Module, name: str = "weight") -> bool:
    """True if ``module.<name>`` carries a ``torch.nn.utils.prune`` mask."""
    return hasattr(module, f"{name}_mask")


def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> nn.Module:
    """Put ``mask`` on ``module.<name>`` (replacing an earlier mask); pruned entries read as zero from now on.

    The first call uses ``torch.nn.utils.prune.custom_from_mask``, which moves the parameter to
    ``<name>_orig`` and adds a forward pre-hook; later calls overwrite the ``<name>_mask`` buffer in place.
    """
    _check_module(module)
    param = getattr(module, name, None)
    if not isinstance(param, torch.Tensor):
        raise ValueError(f"module has no tensor called {name!r} to prune")
    if not isinstance(mask, torch.Tensor) or mask.shape != param.shape:
        raise ValueError(f"mask must be a tensor of shape {tuple(param.shape)}, got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be a bool tensor (True keeps a weight) or hold only 0s and 1s")
    mask = mask.to(device=param.device, dtype=param.dtype)
    if is_masked(module, name):
        getattr(module, f"{name}_mask").copy_(mask)
        with torch.no_grad():  # refresh now, not only at the next forward pass
            setattr(module, name, getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask"))
    else:
        torch_prune.custom_from_mask(module, name, mask)
    return module


def _weight_orig(module: nn.Module) -> torch.Tensor | None:
    """The unmasked trainable weight of a pruned layer (``weight_orig``), or ``None`` if it has no mask."""
    orig = getattr(module, "weight_orig", None)
    return orig.detach() if isinstance(orig, torch.Tensor) else None


def current_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The effective (masked) weight of each prunable layer, by name."""
    return {name: m.weight.detach() for name, m in prunable_layers(model).items()}


def _select_layers(model: nn.Module, layers: Iterable[str] | None) -> dict[str, nn.Linear | nn.Conv2d]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    available = prunable_layers(model)
    if layers is None:
        if not available:
            raise TypeError(f"model {type(model).__name__} has no nn.Linear or nn.Conv2d layers to prune")
        return available
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of layer names such as [{layers!r}], got a str")
    layers = list(layers)
    modules = dict(model.named_modules())
    for name in layers:
        if name not in modules:
            raise ValueError(f"layers: {name!r} is not a module of the model; choose from {list(available)}")
        _check_module(modules[name], where=f"layer {name!r}")
    return {name: available[name] for name in layers}


def _fits(method: str, weight: torch.Tensor, n: int, m: int, block) -> bool:
    cols = formats.as_matrix(weight).shape[1]
    if method == "nm":
        return cols % m == 0
    if method == "block":
        bh, bw = _check_block(block)
        return weight.shape[0] % bh == 0 and cols % bw == 0
    return True


def prune_model(model: nn.Module, method: str, sparsity: float | Mapping[str, float] | None = None, *,
                layers: Iterable[str] | None = None, n: int = 2, m: int = 4, block: int | tuple[int, int] = 4,
                norm: int = 1, seed: int = 0, skip_incompatible: bool = False) -> dict[str, torch.Tensor]:
    """Mask the prunable layers of ``model`` in place and return the masks by layer name.

    Args:
        model: the model to prune (its ``nn.Linear`` / ``nn.Conv2d`` layers).
        method: one of :data:`METHODS`. ``"nm"`` ignores ``sparsity`` (it is ``1 - n/m``); ``"structured"``
            zeros whole output units *and their biases*, so the masked model computes exactly what
            :func:`remove_units` would.
        sparsity: the fraction to prune, or a dict ``{layer: sparsity}`` for per-layer targets
            (not with ``"global_magnitude"``, whose point is one shared threshold).
        layers: names of the layers to prune (default: all ``nn.Linear`` and ``nn.Conv2d``).
        n, m: the N:M pattern for ``"nm"``.
        block: tile size for ``"block"``.
        norm: 1 or 2, the norm that ranks units (``"structured"``) and tiles (``"block"``).
        seed: for ``"random"``.
        skip_incompatible: leave dense (instead of raising) the layers an N:M or block pattern does not
            fit, e.g. a first conv with 9 inputs per filter under 2:4. Reports count them as dense.
    """
    checks.choice("method", method, METHODS)
    checks.nonneg_int("seed", seed)
    selected = _select_layers(model, layers)
    if method == "structured" and layers is None:
        # Removing output units of the classifier would remove classes: prune hidden units only.
        selected = dict(list(selected.items())[:-1]) if len(selected) > 1 else selected
    if method == "nm":
        _check_nm(n, m)
        if sparsity is not None and not isinstance(sparsity, Mapping) and abs(float(sparsity) - (1 - n / m)) > 1e-9:
            raise ValueError(f"sparsity of {n}:{m} is fixed at {1 - n / m:g}; pass sparsity=None, got {sparsity}")
    elif sparsity is None:
        raise ValueError(f"method {method!r} needs a sparsity in [0, 1), e.g. sparsity=0.9")
    if isinstance(sparsity, Mapping):
        if method in ("global_magnitude", "nm"):
            raise ValueError(f"per-layer sparsity (a dict) does not apply to method {method!r}")
        unknown = set(sparsity) - set(selected)
        if unknown:
            raise ValueError(f"sparsity names layers that are not pruned here: {sorted(unknown)}; "
                             f"choose from {list(selected)}")
        targets = {name: check_sparsity(sparsity.get(name, 0.0), f"sparsity[{name!r}]") for name in selected}
    elif sparsity is not None:
        targets = dict.fromkeys(selected, check_sparsity(sparsity))
    if method in ("nm", "block"):
        misfits = [name for name, mod in selected.items() if not _fits(method, mod.weight, n, m, block)]
        if misfits and not skip_incompatible:
            pattern = (f"{n}:{m} (input dim divisible by {m})" if method == "nm"
                       else f"block {block} (must divide the shape)")
            raise ValueError(f"layers {misfits} do not fit the {pattern}; pass skip_incompatible=True to leave "
                             f"them dense, or choose layers=[...] explicitly")
        selected = {k: v for k, v in selected.items() if k not in misfits}
        if not selected:
            raise ValueError(f"no layer fits the {method} pattern; all of {misfits} would be skipped")

    weights = {name: _check_weight(mod.weight.detach(), f"weight of layer {name!r}") for name, mod in selected.items()}
    # Already pruned layers: rank the effective weights, break ties by the unmasked weight_orig (module docstring).
    origs = {name: _weight_orig(mod) for name, mod in selected.items()}
    if method == "global_magnitude":
        orig = {n: o if o is not None else weights[n] for n, o in origs.items()}
        masks = global_magnitude_masks(weights, targets[next(iter(targets))], orig=orig)
    else:
        masks = {}
        for i, (name, w) in enumerate(weights.items()):
            if method == "random":
                masks[name] = random_mask(w, targets[name], seed=seed + i)
            elif method == "magnitude":
                masks[name] = magnitude_mask(w, targets[name], orig=origs[name])
            elif method == "structured":
                masks[name] = structured_mask(w, targets[name], norm, orig=origs[name])
            elif method == "nm":
                masks[name] = nm_mask(w, n, m, orig=origs[name])
            else:
                masks[name] = block_mask(w, targets[name], block, norm, orig=origs[name])
    for name, mask in masks.items():
        module = selected[name]
        apply_mask(module, mask)
        if method == "structured" and module.bias is not None:
            apply_mask(module, formats.as_matrix(mask).any(dim=1), name="bias")
    return masks


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every mask into its weight (``torch.nn.utils.prune.remove``) and drop the hooks; returns ``model``.

    Afterwards the zeros are ordinary values: the model saves and loads like any other, but
    training it again would let pruned weights grow back.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        for name in ("weight", "bias"):
            if is_masked(module, name):
                torch_prune.remove(module, name)
    return model


# ----------------------------------------------------------------------------------------------
# 3. Physical removal: a smaller dense model
# ----------------------------------------------------------------------------------------------

def _kept_units(weight: torch.Tensor, sparsity: float, norm: int) -> torch.Tensor:
    """Indices (ascending) of the output units that survive structured pruning."""
    return structured_mask(weight, sparsity, norm).reshape(weight.shape[0], -1)[:, 0].nonzero().flatten()


@torch.no_grad()
def remove_units(model: MLP | SmallCNN, sparsity: float | Sequence[float], norm: int = 1) -> MLP | SmallCNN:
    """Delete the lowest-norm hidden neurons (MLP) or channels (SmallCNN) and return a smaller dense model.

    The pruned unit's row of its own layer and its column(s) in the next layer are cut out, so the
    result is an ordinary, narrower model of the same class. The output layer keeps all classes.
    A masked model that has already zeroed units by ``prune_model(..., "structured")`` gives the
    same ranking, so its zeroed units are the ones removed.

    Args:
        model: a :class:`labkit.models.MLP` or :class:`labkit.models.SmallCNN` (masks are read through).
        sparsity: the share of units to remove in every hidden layer, or one value per hidden layer.
        norm: 1 or 2, how units are ranked.
    """
    if not isinstance(model, (MLP, SmallCNN)):
        raise TypeError(f"remove_units knows how to rewire labkit.models.MLP and SmallCNN, got {type(model).__name__}")
    _check_norm(norm)
    layers = list(prunable_layers(model).values())
    hidden = layers[:-1]  # every layer but the classifier has prunable outputs
    if isinstance(sparsity, str):
        raise TypeError(f"sparsity must be a number or a list of numbers in [0, 1), got {sparsity!r}")
    ratios = [sparsity] * len(hidden) if isinstance(sparsity, (int, float)) else list(sparsity)
    if len(ratios) != len(hidden):
        raise ValueError(f"sparsity needs one value per hidden layer ({len(hidden)}), got {len(ratios)}")
    ratios = [check_sparsity(s) for s in ratios]
    keeps = [_kept_units(layer.weight, s, norm) for layer, s in zip(hidden, ratios, strict=True)]
    widths = tuple(len(k) for k in keeps)
    small: MLP | SmallCNN
    if isinstance(model, MLP):
        small = MLP(model.in_features, widths, model.n_classes)
    else:
        small = SmallCNN(widths, model.n_classes, model.image_size)
    new_layers = list(prunable_layers(small).values())
    pooled = (model.image_size // 2) ** 2 if isinstance(model, SmallCNN) else 1
    prev_keep = None
    for i, (old, new) in enumerate(zip(layers, new_layers, strict=True)):
        assert old.bias is not None and new.bias is not None  # every MLP / SmallCNN layer has a bias
        w, b = old.weight.detach(), old.bias.detach()
        if prev_keep is not None:  # drop the inputs that came from removed units
            if i == len(layers) - 1 and pooled > 1:  # flatten: channel c owns features c*pooled ... c*pooled+pooled-1
                cols = (prev_keep[:, None] * pooled + torch.arange(pooled)).flatten()
                w = w[:, cols]
            else:
                w = w[:, prev_keep]
        if i < len(keeps):
            w, b = w[keeps[i]], b[keeps[i]]
            prev_keep = keeps[i]
        new.weight.copy_(w)
        new.bias.copy_(b)
    small.eval()
    return small


# ----------------------------------------------------------------------------------------------
# 4. Schedules with fine-tuning, and lottery tickets
# ----------------------------------------------------------------------------------------------

def cubic_sparsity(step: int, final_sparsity: float, begin_step: int, end_step: int,
                   initial_sparsity: float = 0.0) -> float:
    r"""Zhu & Gupta's (2017) gradual schedule: prune fast early, gently at the end.

    .. math:: s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{t_1 - t_0}\right)^3

    for ``begin_step <= t <= end_step``; ``s_i`` before, ``s_f`` after.
    """
    final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
    initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
    step = checks.nonneg_int("step", step)
    begin_step, end_step = checks.nonneg_int("begin_step", begin_step), checks.nonneg_int("end_step", end_step)
    if not 0 <= begin_step < end_step:
        raise ValueError(f"need 0 <= begin_step < end_step, got begin_step={begin_step}, end_step={end_step}")
    if step <= begin_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    progress = (step - begin_step) / (end_step - begin_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def prune_and_finetune(model: nn.Module, train_split: Split, method: str, sparsity: float | None, *,
                       schedule: str = "gradual", epochs: int = 12, prune_epochs: int | None = None,
                       rounds: int = 4, lr: float = 1e-3, seed: int = 0, updates_per_epoch: int = 2,
                       progress: bool = False, **options) -> nn.Module:
    """Prune ``model`` in place with a schedule, fine-tuning as it goes; masks stay on (see :func:`make_permanent`).

    Args:
        model: a trained dense model.
        train_split: data for fine-tuning (never the test split).
        method: a mask method of :func:`prune_model` (not physical removal: use :func:`remove_units`
            then :func:`labkit.train.train` for that).
        sparsity: the final sparsity (``None`` for ``"nm"``).
        schedule: ``"one_shot"`` (prune once, then fine-tune for ``epochs``); ``"iterative"`` (``rounds``
            equal steps of sparsity, fine-tuning ``epochs / rounds`` after each); ``"gradual"`` (the cubic
            schedule over the first ``prune_epochs``, default two thirds of ``epochs``, updating masks
            ``updates_per_epoch`` times an epoch, then fine-tuning at the final sparsity).
        epochs: total fine-tuning epochs (0 with ``"one_shot"`` is pruning without fine-tuning).
        lr: fine-tuning learning rate (lower than for training from scratch).
        options: passed to :func:`prune_model` (``n``, ``m``, ``block``, ``norm``, ``layers``, ...).
    """
    from labkit.train import steps_per_epoch, train

    checks.choice("schedule", schedule, SCHEDULES)
    checks.choice("method", method, METHODS)
    if method == "nm" and schedule != "one_shot":
        raise ValueError("N:M sparsity is a fixed pattern: use schedule='one_shot' (with fine-tuning) for method 'nm'")
    epochs = checks.nonneg_int("epochs", epochs)
    if method != "nm":
        sparsity = check_sparsity(sparsity)
    if schedule == "one_shot":
        prune_model(model, method, sparsity, seed=seed, **options)
        train(model, train_split, epochs=epochs, lr=lr, seed=seed, progress=progress)
    elif schedule == "iterative":
        rounds = checks.positive_int("rounds", rounds)
        if epochs < rounds:
            raise ValueError(f"iterative pruning fine-tunes after each round: need epochs >= rounds, "
                             f"got {epochs} < {rounds}")
        final = check_sparsity(sparsity)  # not "nm" here: a number
        for r in range(1, rounds + 1):
            prune_model(model, method, final * r / rounds, seed=seed, **options)
            share = epochs // rounds + (1 if r <= epochs % rounds else 0)
            train(model, train_split, epochs=share, lr=lr, seed=seed + r, progress=progress)
    else:
        prune_epochs = max(1, (2 * epochs) // 3) if prune_epochs is None else checks.positive_int("prune_epochs",
                                                                                                  prune_epochs)
        updates_per_epoch = checks.positive_int("updates_per_epoch", updates_per_epoch)
        if not 1 <= prune_epochs <= epochs:
            raise ValueError(f"prune_epochs must be in [1, epochs={epochs}], got {prune_epochs}")
        per_epoch = steps_per_epoch(train_split)
        end_step = prune_epochs * per_epoch
        every = max(1, per_epoch // max(1, updates_per_epoch))
        target = check_sparsity(sparsity)  # not "nm" here: a number

        def on_step(step: int) -> None:
            if step % every == 0 and step <= end_step:
                prune_model(model, method, cubic_sparsity(step + every, target, 0, end_step), seed=seed, **options)

        train(model, train_split, epochs=epochs, lr=lr, seed=seed, on_step=on_step, progress=progress)
        prune_model(model, method, sparsity, seed=seed, **options)  # land exactly on the target
    return model


def lottery_ticket(kind: str, train_split: Split, sparsity: float, *, epochs: int = 30, rewind_epoch: int = 1,
                   lr: float = 3e-3, seed: int = 0, reinit: bool = False,
                   method: str = "global_magnitude") -> nn.Module:
    """Frankle & Carbin's lottery ticket with rewinding: train, prune, reset survivors to early weights, retrain.

    1. Build ``kind`` from ``seed`` and train ``rewind_epoch`` epochs; remember those weights.
    2. Keep training to ``epochs`` and prune to ``sparsity`` (``method``, default global magnitude).
    3. Reset the surviving weights to the remembered ones (or, with ``reinit=True``, to a *fresh*
       random init: the control experiment) and retrain ``epochs - rewind_epoch`` epochs with the mask on.
    """
    from labkit.models import build
    from labkit.train import train

    sparsity = check_sparsity(sparsity)
    epochs, rewind_epoch = checks.positive_int("epochs", epochs), checks.nonneg_int("rewind_epoch", rewind_epoch)
    if not 0 <= rewind_epoch < epochs:
        raise ValueError(f"rewind_epoch must be in [0, epochs={epochs}), got {rewind_epoch}")
    model = build(kind, seed=seed)
    train(model, train_split, epochs=rewind_epoch, lr=lr, seed=seed)
    early = copy.deepcopy(model.state_dict())
    train(model, train_split, epochs=epochs - rewind_epoch, lr=lr, seed=seed + 1)
    masks = prune_model(model, method, sparsity)
    ticket = build(kind, seed=seed + 10_000) if reinit else build(kind, seed=seed)
    if not reinit:
        ticket.load_state_dict(early)
    for name, module in prunable_layers(ticket).items():
        apply_mask(module, masks[name])
    train(ticket, train_split, epochs=epochs - rewind_epoch, lr=lr, seed=seed + 2)
    return ticket


# ----------------------------------------------------------------------------------------------
# 5. Sensitivity: which layers tolerate how much pruning (measured on the validation split)
# ----------------------------------------------------------------------------------------------

def sensitivity_scan(model: nn.Module, val_split: Split, sparsities: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
                     method: str = "magnitude") -> dict[str, list[float]]:
    """Prune one layer at a time (others dense, no fine-tuning) and record validation accuracy per sparsity.

    Use the *validation* split: choosing sparsities on the test split would leak it into the result.
    """
    from labkit.train import evaluate

    checks.choice("method", method, ("magnitude", "random", "structured"))
    sparsities = [check_sparsity(s) for s in sparsities]
    result: dict[str, list[float]] = {}
    for name in prunable_layers(model):
        accs = []
        for s in sparsities:
            trial = copy.deepcopy(model)
            prune_model(trial, method, s, layers=[name])
            accs.append(evaluate(trial, val_split))
        result[name] = accs
    return result


def choose_layer_sparsity(scan: Mapping[str, Sequence[float]], sparsities: Sequence[float], dense_accuracy: float,
                          max_drop: float = 0.01) -> dict[str, float]:
    """For each layer, the highest scanned sparsity whose validation accuracy stays within ``max_drop`` of dense.

    A layer that loses more than ``max_drop`` even at the lowest scanned sparsity stays dense (0.0).
    """
    if not isinstance(scan, Mapping):
        raise TypeError(f"scan must be the dict {{layer: accuracies}} that sensitivity_scan returns, got "
                        f"{type(scan).__name__}")
    if isinstance(sparsities, str):
        raise TypeError(f"sparsities must be a list of fractions such as (0.5, 0.9), got {sparsities!r}")
    sparsities = list(sparsities)
    max_drop = checks.fraction("max_drop", max_drop)  # 0.01 = one accuracy point
    dense_accuracy = checks.fraction("dense_accuracy", dense_accuracy, include_high=True)
    sparsities = [check_sparsity(s, f"sparsities[{i}]") for i, s in enumerate(sparsities)]
    chosen = {}
    for name, accs in scan.items():
        accs = [checks.fraction(f"scan[{name!r}][{i}]", a, include_high=True) for i, a in enumerate(accs)]
        if len(accs) != len(sparsities):
            raise ValueError(f"scan[{name!r}] has {len(accs)} accuracies for {len(sparsities)} sparsities")
        ok = [s for s, a in zip(sparsities, accs, strict=True) if a >= dense_accuracy - max_drop]
        chosen[name] = max(ok) if ok else 0.0
    return chosen


# ----------------------------------------------------------------------------------------------
# 6. Reports: sparsity and honest storage bytes
# ----------------------------------------------------------------------------------------------

def sparsity_report(model: nn.Module) -> dict:
    """Zeros per prunable layer and overall.

    Returns ``{"layers": [{name, shape, numel, nonzeros, sparsity}], "overall", "nonzeros", "numel"}``.
    """
    weights = current_weights(_require_module(model))
    if not weights:
        raise ValueError(f"model {type(model).__name__} has no nn.Linear or nn.Conv2d layers, so it has no "
                         "sparsity to report; pass a model that contains some")
    layers: list[dict] = []
    for name, w in weights.items():
        nz = int(torch.count_nonzero(w))
        # A layer with no weights at all (e.g. nn.Linear(0, 4)) has nothing pruned: sparsity 0.
        layers.append({"name": name, "shape": tuple(w.shape), "numel": w.numel(), "nonzeros": nz,
                       "sparsity": 1.0 - nz / w.numel() if w.numel() else 0.0})
    numel = sum(r["numel"] for r in layers)
    nonzeros = sum(r["nonzeros"] for r in layers)
    return {"layers": layers, "numel": numel, "nonzeros": nonzeros,
            "overall": 1.0 - nonzeros / numel if numel else 0.0}


def count_weights(model: nn.Module) -> int:
    """Weights of the prunable layers (biases excluded), zeros included: the model's "size" in the plots."""
    return sum(w.numel() for w in current_weights(_require_module(model)).values())


def _require_module(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def is_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True if every group of ``m`` consecutive weights along a row holds at most ``n`` nonzeros."""
    _check_weight(weight)
    n, m = _check_nm(n, m)
    return formats.is_nm(weight, n, m)


def storage_bytes(weight: torch.Tensor, value_bytes: int = 4, index_bytes: int = 4,
                  block: int | tuple[int, int] = 4) -> dict[str, int | None]:
    """Bytes to store ``weight`` in each format of :data:`FORMATS`, counting indices and metadata.

    * ``dense``: every value.
    * ``csr``: nonzero values + a column index per value + ``rows + 1`` row pointers (``torch.to_sparse_csr``).
    * ``bsr``: every value of each stored ``b x b`` tile + a column index per tile + block-row pointers
      (``torch.to_sparse_bsr``); ``None`` if the block does not divide the matrix. Any tile size counts
      here; the BSR *kernel* needs more (``labkit.formats.FORMATS["bsr"].fits``).
    * ``2:4``: half the values + 2 bits of position per kept value (cuSPARSELt's layout); ``None``
      unless the weight already satisfies 2:4.
    * ``bitmask``: nonzero values + one bit per position.

    ``value_bytes`` is 4 for float32, 2 for fp16/bf16; ``index_bytes`` 4 for int32 indices (torch itself
    uses int64, 8 bytes). The counting itself lives in :mod:`labkit.formats`.
    """
    _check_weight(weight)
    return formats.storage_bytes(weight, value_bytes, index_bytes, block)


def model_storage_bytes(model: nn.Module, value_bytes: int = 4, index_bytes: int = 4,
                        block: int | tuple[int, int] = 4) -> dict[str, int]:
    """:func:`storage_bytes` summed over the prunable layers (weights only, biases excluded).

    A layer a format cannot hold (a block that does not divide it, a layer that is not 2:4) is counted
    at its dense size, as a real deployment would keep it dense.
    """
    total: dict[str, int] = dict.fromkeys(FORMATS, 0)
    for w in current_weights(_require_module(model)).values():
        sizes = storage_bytes(w, value_bytes, index_bytes, block)
        dense = sizes["dense"]
        assert dense is not None  # every weight fits the dense format
        for f in FORMATS:
            size = sizes[f]
            total[f] += size if size is not None else dense
    return total


def dense_hidden_for_nonzeros(kind: str, nonzeros: int) -> tuple[int, int]:
    """Hidden widths of a *small dense* model (same shape ratios as the default) with about ``nonzeros`` weights.

    Used to compare a large sparse model against a small dense one at equal nonzero weights (Zhu & Gupta).
    """
    checks.choice("kind", kind, ("mlp", "cnn"))
    nonzeros = checks.positive_int("nonzeros", nonzeros)

    def n_weights(a: int, b: int) -> int:  # weights of the prunable layers, biases excluded
        return 64 * a + a * b + b * 10 if kind == "mlp" else 9 * a + 9 * a * b + 16 * b * 10

    base = (256, 128) if kind == "mlp" else (16, 32)
    candidates = [(a, max(1, round(a * base[1] / base[0]))) for a in range(1, 4 * base[0] + 1)]
    return min(candidates, key=lambda ab: abs(n_weights(*ab) - nonzeros))
