"""The digit classifiers of notebook 05 and their energy: trained once, cached, then measured or estimated.

* :func:`model_zoo` - the classifiers the earlier notebooks built (dense MLP, unstructured
  magnitude-pruned, structurally pruned with units physically removed, and a small Mixture-of-Experts),
  trained once and cached on disk.
* :func:`energy_rows` - per model: accuracy, parameters and *estimated* joules per inference (at
  several batch sizes) and for training, from :func:`labkit.energy.estimate`.
* :func:`batching_rows` - estimated joules per inference of every model at every batch size.
* :func:`measure_zoo` - wall time and the best available joules on this machine.

Figures and labels for these rows are in :mod:`labkit.figures.energy`.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks, energy
from labkit.data import Split
from labkit.models import MoEClassifier
from labkit.moe.layers import active_parameters

#: Bump when the zoo's training recipe changes, so stale cached weights are never read.
ZOO_VERSION = 1


@dataclass
class ZooModel:
    """One trained model of the zoo and how it was made."""

    name: str
    description: str
    model: nn.Module
    recipe: list[tuple[nn.Module, int]]  # (architecture trained, optimizer steps) per phase, pretraining included

    @property
    def train_steps(self) -> int:
        """Optimizer steps of the whole recipe."""
        return sum(steps for _, steps in self.recipe)


def _check_zoo_and_batches(zoo: dict, test: Split, batch_sizes: tuple[int, ...]) -> None:
    if not zoo:
        raise ValueError("zoo is empty: build it with model_zoo()")
    for b in batch_sizes:
        checks.positive_int("batch size", b)
        if b > len(test):
            raise ValueError(f"batch size {b} is larger than the test split ({len(test)} examples)")


def _nonzero(model: nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def model_zoo(data_seed: int = 0, seed: int = 0, sparsity: float = 0.9, removed: float = 0.75,
              finetune_epochs: int = 10) -> dict[str, ZooModel]:
    """Dense, unstructured-pruned, structurally pruned and MoE digit classifiers, cached on disk.

    * ``dense``: :func:`labkit.train.pretrained` MLP 64-256-128-10 (30 epochs).
    * ``unstructured``: the dense model, ``sparsity`` of its weights zeroed by global magnitude,
      fine-tuned ``finetune_epochs``; stored dense (zeros are still multiplied).
    * ``structured``: ``removed`` of the hidden units physically removed (:func:`labkit.prune.remove_units`),
      fine-tuned ``finetune_epochs``: a smaller dense model.
    * ``moe``: :class:`MoEClassifier` with 4 experts, top-1, trained 30 epochs.
    """
    from labkit import cache, data, prune, train
    from labkit.models import MLP
    from labkit.utils import DEFAULT_THREADS

    split = data.digits(data_seed, flat=True).train
    steps_per_epoch = train.steps_per_epoch(split)
    dense_steps = train.DEFAULT_EPOCHS * steps_per_epoch
    dense = train.pretrained("mlp", seed=seed, data_seed=data_seed)
    assert isinstance(dense, MLP), "pretrained('mlp') builds an MLP"
    config = {"data_seed": data_seed, "seed": seed, "sparsity": sparsity, "removed": removed,
              "finetune_epochs": finetune_epochs, "torch": torch.__version__.split("+")[0]}

    def fit() -> dict:
        unstructured = copy.deepcopy(dense)
        prune.prune_and_finetune(unstructured, split, "global_magnitude", sparsity, schedule="one_shot",
                                 epochs=finetune_epochs, lr=1e-3, seed=seed)
        prune.make_permanent(unstructured)
        structured = prune.remove_units(dense, removed)
        train.train(structured, split, epochs=finetune_epochs, lr=1e-3, seed=seed)
        moe = MoEClassifier(seed=seed)
        train.train(moe, split, epochs=train.DEFAULT_EPOCHS, seed=seed)
        return {"unstructured": unstructured.state_dict(), "structured": structured.state_dict(),
                "structured_hidden": structured.hidden, "moe": moe.state_dict()}

    states = cache.cached("energy_zoo", ZOO_VERSION, config, fit, threads=DEFAULT_THREADS)
    unstructured = copy.deepcopy(dense)
    unstructured.load_state_dict(states["unstructured"])
    structured = MLP(64, states["structured_hidden"], 10)
    structured.load_state_dict(states["structured"])
    moe = MoEClassifier(seed=seed)
    moe.load_state_dict(states["moe"])
    for m in (dense, unstructured, structured, moe):
        m.eval()
    hidden = "-".join(map(str, structured.hidden))
    ft = finetune_epochs * steps_per_epoch
    return {
        "dense": ZooModel("dense", "MLP 64-256-128-10", dense, [(dense, dense_steps)]),
        "unstructured": ZooModel("unstructured", f"dense MLP, {sparsity:.0%} of weights zeroed (global magnitude), "
                                 "stored dense", unstructured, [(dense, dense_steps), (dense, ft)]),
        "structured": ZooModel("structured", f"MLP 64-{hidden}-10: {removed:.0%} of hidden units removed",
                               structured, [(dense, dense_steps), (structured, ft)]),
        "moe": ZooModel("moe", "4 SwiGLU experts, top-1 routing", moe, [(moe, dense_steps)]),
    }


def _train_step(model: nn.Module, batch: Split):
    """A closure doing one Adam step on a private copy of ``model`` (the original is untouched)."""
    twin = copy.deepcopy(model).train()
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(twin(batch.x), batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def energy_rows(zoo: dict[str, ZooModel], test: Split, train_split: Split,
                batch_sizes: tuple[int, ...] = (1, 64)) -> list[dict]:
    """Per model: test accuracy, parameters, estimated joules per inference and for its training recipe.

    Every joule here is ``estimated`` (:func:`labkit.energy.estimate`): deterministic, for comparing
    models, not the joules a real machine draws.
    """
    from labkit.train import DEFAULT_BATCH_SIZE, evaluate

    _check_zoo_and_batches(zoo, test, batch_sizes)
    rows = []
    train_batch = Split(train_split.x[:DEFAULT_BATCH_SIZE], train_split.y[:DEFAULT_BATCH_SIZE])
    for entry in zoo.values():
        model = entry.model
        row = {"name": entry.name, "description": entry.description, "accuracy": evaluate(model, test),
               "parameters": sum(p.numel() for p in model.parameters()), "nonzero": _nonzero(model),
               "active": active_parameters(model), "kind": "estimated",
               "batch_sizes": list(batch_sizes)}
        with torch.no_grad():
            for b in batch_sizes:
                report = energy.estimate(functools.partial(model, test.x[:b]), items=b)
                row[f"j_per_inference_b{b}"] = report.joules_per_item
        row["train_steps"] = entry.train_steps
        row["j_training"] = sum(energy.estimate(_train_step(arch, train_batch)).joules * steps
                                for arch, steps in entry.recipe)
        rows.append(row)
    return rows


def batching_rows(zoo: dict[str, ZooModel], test: Split, batch_sizes: tuple[int, ...] = (1, 4, 16, 64, 256)
                  ) -> dict[str, list[float]]:
    """Estimated joules per inference of each model at each batch size (weights are read once per batch)."""
    _check_zoo_and_batches(zoo, test, batch_sizes)
    out = {}
    with torch.no_grad():
        for entry in zoo.values():
            out[entry.name] = [energy.estimate(functools.partial(entry.model, test.x[:b]), items=b).joules_per_item
                               for b in batch_sizes]
    return out


#: Torch threads :func:`measure_zoo` times the zoo with. These models are tiny (a batch-1 input is a few
#: thousand multiply-adds): a second thread only adds the wait at the end of every parallel operation,
#: and on a busy machine that wait, not the model, is what a 2-thread timing measures.
MEASURE_THREADS = 1


def measure_zoo(zoo: dict[str, ZooModel], test: Split, batch_sizes: tuple[int, ...] = (1, 64),
                min_window_s: float = 0.2) -> str:
    """Measure every model with :func:`labkit.energy.measure` on this machine; text lines with every label.

    Machine-dependent: wall time is measured, in :data:`MEASURE_THREADS` torch thread(s) (the count
    before is restored); joules are whatever the best available meter gives (estimated where there is
    no sensor) and say so.
    """
    _check_zoo_and_batches(zoo, test, batch_sizes)
    lines = []
    with torch.no_grad():
        for entry in zoo.values():
            for b in batch_sizes:
                with energy.measure(items=b, min_window_s=min_window_s, threads=MEASURE_THREADS) as m:
                    report = m.run(functools.partial(entry.model, test.x[:b]), warmup=3)
                assert report.wall_s is not None, "measure() times its window"
                us = 1e6 * report.wall_s / (b * report.repeats)
                lines.append(f"{entry.name:<13} batch {b:>3}: {us:8.2f} us per inference (MEASURED wall time, "
                             f"{report.repeats} repeats, torch threads: {MEASURE_THREADS}); "
                             f"{report.joules_per_item:.3g} J per inference {report.kind.upper()} "
                             f"({report.primary.scope})")
    return "\n".join(lines)
