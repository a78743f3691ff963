"""One-shot pruning of a language model's linear layers: magnitude, Wanda and SparseGPT.

Model-agnostic: every ``nn.Linear`` of the model is pruned except one whose weight is shared with an
``nn.Embedding`` (a tied LM head, which is also the token table). So a learner's own model works too.

Sequential, sublayer by sublayer: each layer is pruned using the inputs it receives *from the already
pruned layers before it*, even inside a block (``o_proj`` sees the attention output of the pruned
``q/k/v``; ``down_proj`` the output of the pruned ``gate/up``). This is GPTQ's "true sequential" order.
The reference codes of Wanda and SparseGPT instead calibrate a whole block at once on its inputs, then
prune all of its layers, and pass the *pruned* block's output on to the next block. We choose the
sublayer order because it needs only one forward pass with hooks, works on any model made of
``nn.Linear`` and lets every layer correct for the errors made before it. We get it with a forward
pre-hook on every layer that sees the layer's input, prunes the layer's weight in place, and only then
lets the layer run, so its (pruned) output is what the next layer sees. The pass stops as soon as the
last layer is pruned (the tied LM head over the vocabulary is never computed).

Criteria (a higher score keeps the weight):

* ``magnitude``: ``|W_ij|``, compared within each output row. ``magnitude_layer``: compared across the
  whole matrix (the magnitude baseline of the Wanda paper); ``magnitude_global``: across all layers.
* ``random``: a random score (seeded), per output row: the floor every other method must beat.
* ``wanda``: ``|W_ij| * ||X_j||_2``, compared within each output row (Sun et al., ICLR 2024). A few input
  features ``j`` carry huge activations ("outlier features", Dettmers et al. 2022): a small weight on
  such a feature matters more than a large weight on a quiet one. No weight update.
* ``sparsegpt``: the OBS saliency, with the remaining weights updated to compensate
  (:mod:`labkit.llm.sparsegpt`).

Patterns: ``"unstructured"`` (exactly ``round(sparsity * in)`` per row for ``magnitude``, ``random`` and
``wanda``; per layer for ``magnitude_layer``, counted per block of 128 columns for ``sparsegpt``; over all
layers together for ``magnitude_global``) or
``"N:M"`` such as ``"2:4"`` and ``"4:8"`` (``m - n`` zeros in every group of ``m`` inputs of a row).
Counts are chosen by rank with a stable sort, never by a threshold: SmolLM2's weights were 4-bit
quantized, so many of them are exactly equal.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import checks
from labkit import prune as labprune
from labkit.llm.evaluate import check_tokens
from labkit.llm.sparsegpt import hessian, sparsegpt

METHODS = ("magnitude", "magnitude_layer", "magnitude_global", "random", "wanda", "sparsegpt")
#: Methods that rank weights across rows, so they have no N:M form.
WHOLE_MATRIX = ("magnitude_layer", "magnitude_global")
PATTERNS = ("unstructured", "2:4", "4:8")


def prunable_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by name, except one tied to an embedding (a tied LM head).

    Raises ``ValueError`` if there is none.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    embeddings = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Embedding)}
    layers = {name: m for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and m.weight.data_ptr() not in embeddings}
    if not layers:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Linear layers to prune (a tied LM head does "
                         "not count): these methods prune linear layers only")
    return layers


def measure_sparsity(model: nn.Module) -> dict[str, float]:
    """``{"block_sparsity", "model_sparsity"}``: the share of zeros in the prunable matrices, and in all
    of the model's parameters (tied tensors counted once, so the embedding / LM head once)."""
    layers = prunable_layers(model)
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    in_layers = sum(m.weight.numel() for m in layers.values())
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    return {"block_sparsity": zeros / in_layers, "model_sparsity": zeros / total}


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"unstructured"`` -> ``(0, 0)``; ``"2:4"`` -> ``(2, 4)``."""
    if pattern == "unstructured":
        return 0, 0
    try:
        n, m = (int(part) for part in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"pattern must be 'unstructured' or 'N:M' such as '2:4' or '4:8', got {pattern!r}") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r}: N:M keeps n of every m weights, so 0 < n < m (e.g. '2:4')")
    return n, m


def check_pattern(pattern: str, sparsity: float | None) -> tuple[int, int, float]:
    """``(n, m, sparsity)`` of a pattern and its sparsity: N:M implies ``1 - n/m`` (pass ``None`` or that
    value); ``"unstructured"`` needs a sparsity in [0, 1)."""
    n, m = parse_pattern(pattern)
    if m:
        implied = 1 - n / m
        if sparsity is not None and abs(checks.finite("sparsity", sparsity) - implied) > 1e-9:
            raise ValueError(f"pattern {pattern!r} sets sparsity to {implied:g}; pass sparsity=None or {implied:g}, "
                             f"got {sparsity}")
        return n, m, implied
    if sparsity is None:
        raise ValueError("sparsity is required for pattern 'unstructured': a share in [0, 1) such as 0.5")
    return n, m, checks.fraction("sparsity", sparsity)


def check_nm_layers(layers: dict[str, nn.Linear], pattern: str, m: int) -> None:
    """A ``ValueError`` naming the first layer whose input size is not a multiple of ``m``."""
    bad = [name for name, layer in layers.items() if layer.in_features % m]
    if bad:
        raise ValueError(f"pattern {pattern!r} needs every layer's input size divisible by {m}; {bad[0]} has "
                         f"{layers[bad[0]].in_features}")


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``round(sparsity * in)`` lowest scores of every row (ties broken by position)."""
    k = round(sparsity * scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], False)
    return keep


def layer_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``round(sparsity * numel)`` lowest scores of the whole matrix (ties by position)."""
    k = round(sparsity * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        keep[torch.sort(scores.flatten(), stable=True).indices[:k]] = False
    return keep.reshape(scores.shape)


def _mask(scores: torch.Tensor, sparsity: float, n: int, m: int) -> torch.Tensor:
    return labprune.nm_mask(scores, n, m) if m else row_mask(scores, sparsity)


class _Stop(Exception):
    """Raised by a hook once every layer is pruned, to end the calibration pass early."""


def run_with_hooks(model: nn.Module, tokens: torch.Tensor | None, layers: dict[str, nn.Linear],
                   on_input: Callable[[str, nn.Linear, torch.Tensor], torch.Tensor | None],
                   desc: str = "layers") -> None:
    """One forward pass of ``tokens``; before each layer in ``layers`` runs, call ``on_input(name, layer, x)``.

    ``x`` is the layer's input as a 2-D ``(tokens, in features)`` tensor. ``on_input`` may change the
    layer in place, and may return a new input for the layer (structured pruning slices it). The pass
    stops once every layer has been seen once.

    Before anything changes, a dry pass over two tokens checks that the forward pass reaches every
    layer, so a model is never left half pruned. The pass runs in eval mode (dropout off: calibration
    must see the same activations as inference), and the model's mode is restored afterwards.
    """
    if tokens is None:  # prune() passes its Optional calibration after checking it for the methods that use it
        raise ValueError("run_with_hooks needs calibration tokens (sequences, length), got None")
    training = model.training
    model.eval()
    try:
        unreached = _unreached(model, tokens[:1, :2], layers)
        if unreached:
            raise RuntimeError(f"the calibration pass never reaches {unreached[:3]}... ({len(unreached)} layers), "
                               "so nothing was changed: only layers used in the forward pass can be pruned with "
                               "calibration data (leave the others out, or prune them with 'magnitude')")
        _run_with_hooks(model, tokens, layers, on_input, desc)
    finally:
        model.train(training)


def _forward(model: nn.Module, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        if getattr(model, "config", None) is not None and hasattr(model, "generate"):
            model(input_ids=tokens, use_cache=False)
        else:
            model(tokens)


def _unreached(model: nn.Module, tokens: torch.Tensor, layers: dict[str, nn.Linear]) -> list[str]:
    """Names of ``layers`` that a forward pass of ``tokens`` never calls (hooks only record, nothing changes)."""
    seen: set[str] = set()
    handles = [layer.register_forward_pre_hook(lambda module, args, name=name: seen.add(name))
               for name, layer in layers.items()]
    try:
        _forward(model, tokens)
    finally:
        for h in handles:
            h.remove()
    return [name for name in layers if name not in seen]


def _run_with_hooks(model: nn.Module, tokens: torch.Tensor, layers: dict[str, nn.Linear],
                    on_input: Callable[[str, nn.Linear, torch.Tensor], torch.Tensor | None], desc: str) -> None:
    seen: set[str] = set()
    bar = tqdm(total=len(layers), desc=desc, unit="layer", leave=False)
    last: list = [None, None]  # (input, its 2-D view): q/k/v (and gate/up) share one input tensor

    def make_hook(name: str):
        def hook(module: nn.Linear, args):
            if name in seen:  # a layer called twice in one pass is pruned once
                return None
            x = args[0]
            if last[0] is not x:  # the same object again -> the same 2-D view, so callers can reuse work
                last[:] = [x, x.reshape(-1, x.shape[-1])]
            new = on_input(name, module, last[1])
            return None if new is None else (new.reshape(*x.shape[:-1], -1), *args[1:])
        return hook

    def make_done(name: str):
        def done(module, args, output):
            if name not in seen:
                seen.add(name)
                bar.update(1)
            if len(seen) == len(layers):
                raise _Stop
        return done

    handles = []
    for name, layer in layers.items():
        handles.append(layer.register_forward_pre_hook(make_hook(name)))
        handles.append(layer.register_forward_hook(make_done(name)))
    try:
        _forward(model, tokens)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
        bar.close()
    missing = [name for name in layers if name not in seen]
    if missing:
        raise RuntimeError(f"the calibration pass never reached {missing[:3]}... ({len(missing)} layers): "
                           "only layers used in the forward pass can be pruned with calibration data")


def obs_pass(model: nn.Module, calibration: torch.Tensor | None, layers: dict[str, nn.Linear],
             solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], desc: str) -> None:
    """Replace every layer's weight by ``solve(weight, H)``, ``H = hessian(its input)``, in one calibration pass.

    The pass of SparseGPT and GPTQ (:mod:`labkit.llm.sparsegpt`): sequential, so each layer's Hessian comes
    from the inputs that the already changed layers before it produce. q, k and v (and gate and up) share
    their input, so its Hessian is computed once for them.
    """
    seen_x: list = [None, None]  # (input, its Hessian)

    def on_input(name: str, layer: nn.Linear, x: torch.Tensor) -> None:
        if seen_x[0] is not x:
            seen_x[:] = [x, hessian(x)]
        layer.weight.copy_(solve(layer.weight, seen_x[1]))

    run_with_hooks(model, calibration, layers, on_input, desc=desc)


def input_norms(model: nn.Module, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """The L2 norm of every input feature of every prunable layer over the calibration tokens.

    ``{layer name: tensor (in features,)}``, from one forward pass of the (unchanged) model. These are
    the ``||X_j||_2`` of Wanda's score; a heavy tail (a few features far above the rest) is why pruning
    by ``|W|`` alone fails on language models.
    """
    layers = prunable_layers(model)
    calibration = check_tokens("calibration", calibration, model)
    norms: dict[str, torch.Tensor] = {}

    def record(name: str, layer: nn.Linear, x: torch.Tensor) -> None:
        norms[name] = x.float().pow(2).sum(0).sqrt()

    run_with_hooks(model, calibration, layers, record, desc="input norms")
    return norms


def prune(model: nn.Module, method: str, pattern: str = "unstructured", sparsity: float | None = 0.5,
          calibration: torch.Tensor | None = None, *, block_size: int = 128, damping: float = 0.01,
          seed: int = 0) -> dict:
    """Prune every prunable linear layer of ``model`` in place, one shot; returns a report dict.

    ``method``: one of :data:`METHODS` (``"magnitude"``, ``"magnitude_layer"``, ``"magnitude_global"``,
    ``"random"``, ``"wanda"``, ``"sparsegpt"``).
    ``pattern``: ``"unstructured"`` or ``"N:M"`` (``"2:4"``, ``"4:8"``). ``sparsity``: the share of each
    matrix set to zero, in [0, 1) (for N:M it is implied: pass ``None`` or ``1 - n/m``).
    ``calibration``: token ids ``(sequences, length)`` for Wanda and SparseGPT (see :func:`text_splits`).
    ``block_size`` and ``damping`` are SparseGPT's lazy-update block and Hessian damping; ``seed`` seeds
    ``"random"``.

    The report: ``{"method", "pattern", "sparsity", "block_sparsity", "model_sparsity", "seconds", "layers"}``.
    """
    method = checks.choice("method", method, METHODS)
    n, m, sparsity = check_pattern(pattern, sparsity)
    if m and method in WHOLE_MATRIX:
        raise ValueError(f"method {method!r} ranks across rows, which has no N:M form; "
                         "use method='magnitude' with an N:M pattern")
    block_size = checks.positive_int("block_size", block_size)
    damping = checks.finite("damping", damping, low=0.0)
    layers = prunable_layers(model)
    if m:
        check_nm_layers(layers, pattern, m)
        if method == "sparsegpt" and block_size % m:
            raise ValueError(f"block_size ({block_size}) must be a multiple of m ({m}) for pattern {pattern!r}")
    if method in ("wanda", "sparsegpt"):
        if calibration is None:
            raise ValueError(f"method {method!r} needs calibration tokens (sequences, length): pass "
                             "calibration=text_splits(tokenizer)['calibration']")
        calibration = check_tokens("calibration", calibration, model)

    start = time.perf_counter()
    with torch.no_grad():
        if method == "magnitude":
            for layer in tqdm(layers.values(), desc="magnitude", unit="layer", leave=False):
                layer.weight.mul_(_mask(layer.weight.abs(), sparsity, n, m))
        elif method == "magnitude_layer":
            for layer in tqdm(layers.values(), desc="magnitude (per layer)", unit="layer", leave=False):
                layer.weight.mul_(layer_mask(layer.weight.abs(), sparsity))
        elif method == "random":
            generator = torch.Generator().manual_seed(checks.nonneg_int("seed", seed))
            for layer in layers.values():
                scores = torch.rand(layer.weight.shape, generator=generator).to(layer.weight.device)
                layer.weight.mul_(_mask(scores, sparsity, n, m))
        elif method == "magnitude_global":
            weights = {name: layer.weight for name, layer in layers.items()}
            for name, keep in labprune.global_magnitude_masks(weights, sparsity).items():
                layers[name].weight.mul_(keep)
        elif method == "wanda":
            def wanda(name: str, layer: nn.Linear, x: torch.Tensor) -> None:
                norm = x.float().pow(2).sum(0).sqrt()  # ||X_j||_2 over the calibration tokens
                layer.weight.mul_(_mask(layer.weight.abs() * norm, sparsity, n, m))

            run_with_hooks(model, calibration, layers, wanda, desc="wanda")
        else:
            obs_pass(model, calibration, layers,
                     lambda weight, h: sparsegpt(weight, h, sparsity, n, m, block_size, damping), "sparsegpt")
    seconds = time.perf_counter() - start
    return {"method": method, "pattern": pattern, "sparsity": sparsity, **measure_sparsity(model),
            "seconds": seconds, "layers": len(layers)}
