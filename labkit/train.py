"""Training and evaluation for the small digit models: one loop, used for dense training and fine-tuning.

* :func:`train` - Adam on mini-batches, seeded shuffling, an optional ``on_step`` hook that pruning
  schedules use to update masks between optimizer steps. Masks made with :mod:`labkit.prune` stay in
  force while training (``torch.nn.utils.prune`` re-applies them in every forward pass), so
  fine-tuning never brings pruned weights back.
* :func:`evaluate` - accuracy on a split.
* :func:`pretrained` - a dense model trained once per (kind, seed, epochs) and cached on disk.

Tune anything on the *validation* split; the *test* split is only reported.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.data import Split

#: Dense training defaults: tested to reach ~97% (MLP) and ~98% (CNN) on the digits test split.
DEFAULT_EPOCHS = 30
DEFAULT_LR = 3e-3
DEFAULT_BATCH_SIZE = 64


def _check_model_split(model: nn.Module, split: Split) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(split, Split):
        raise TypeError("split must be a labkit.data.Split (e.g. labkit.data.digits().train), "
                        f"got {type(split).__name__}")
    if len(split) == 0:
        raise ValueError("split is empty: pass a split with at least one example")


def steps_per_epoch(split: Split, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """How many optimizer steps one epoch over ``split`` takes (the last batch may be short)."""
    batch_size = checks.positive_int("batch_size", batch_size)
    return -(-len(split) // batch_size)


def train(model: nn.Module, split: Split, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, seed: int = 0,
          batch_size: int = DEFAULT_BATCH_SIZE, weight_decay: float = 0.0,
          on_step: Callable[[int], None] | None = None, progress: bool = False) -> list[float]:
    """Train ``model`` in place with Adam and cross-entropy; return the mean loss of each epoch.

    Args:
        model: any classifier mapping ``split.x`` to logits.
        split: the training data (``labkit.data.digits(...).train``).
        epochs: passes over the data (0 is allowed and does nothing).
        lr: Adam learning rate.
        seed: seeds the shuffling, so the same call gives the same model.
        batch_size: examples per step.
        weight_decay: L2 penalty passed to Adam.
        on_step: called as ``on_step(step)`` *before* each optimizer step ``step`` (0-based, counted
            over all epochs); pruning schedules use it to tighten masks as training goes.
        progress: show a tqdm bar over epochs.
    """
    _check_model_split(model, split)
    epochs = checks.nonneg_int("epochs", epochs)
    if checks.finite("lr", lr) <= 0:
        raise ValueError(f"lr must be a positive number such as 3e-3, got {lr!r}")
    seed = checks.nonneg_int("seed", seed)
    n_steps = steps_per_epoch(split, batch_size)
    weight_decay = checks.finite("weight_decay", weight_decay, low=0.0)
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be a function step -> None, got {type(on_step).__name__}")

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="training", leave=False)
    losses, step = [], 0
    model.train()
    for _ in epoch_iter:
        order = torch.randperm(len(split), generator=generator)
        total = 0.0
        for b in range(n_steps):
            idx = order[b * batch_size:(b + 1) * batch_size]
            if on_step is not None:
                on_step(step)
            loss = F.cross_entropy(model(split.x[idx]), split.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            step += 1
        losses.append(total / len(split))
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, split: Split) -> torch.Tensor:
    """Predicted class of every example in ``split``."""
    _check_model_split(model, split)
    was_training = model.training
    model.eval()
    out = model(split.x).argmax(dim=1)
    model.train(was_training)
    return out


def evaluate(model: nn.Module, split: Split) -> float:
    """Accuracy (a fraction in [0, 1]) of ``model`` on ``split``."""
    return float((predict(model, split) == split.y).float().mean())


def pretrained(kind: str = "mlp", seed: int = 0, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
               data_seed: int = 0) -> nn.Module:
    """A dense ``"mlp"`` or ``"cnn"`` trained on ``digits(data_seed).train``, cached on disk.

    The first call trains (a few seconds on a CPU); later calls load the cached weights. Every call
    returns a fresh copy, so pruning it never changes the cache.
    """
    from labkit import cache, data, models
    from labkit.utils import DEFAULT_THREADS

    checks.choice("kind", kind, models.MODEL_KINDS)
    config = {"kind": kind, "seed": seed, "epochs": epochs, "lr": lr, "data_seed": data_seed,
              "torch": torch.__version__.split("+")[0]}

    def fit() -> dict:
        model = models.build(kind, seed=seed)
        train(model, data.digits(data_seed, flat=True).train, epochs=epochs, lr=lr, seed=seed)
        return copy.deepcopy(model.state_dict())

    # Float sums depend on the thread count: training always runs with DEFAULT_THREADS, so the cached
    # weights are the same on every machine and the key need not hold the machine's core count.
    state = cache.cached(f"pretrained_{kind}", 1, config, fit, threads=DEFAULT_THREADS)
    model = models.build(kind, seed=seed)
    model.load_state_dict(state)
    model.eval()
    return model
