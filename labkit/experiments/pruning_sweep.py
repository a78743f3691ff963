"""The multi-seed pruning sweep behind notebooks 01 and 02 and the pruning explorer: run it, read it.

**Running** (:func:`run`, called by ``benchmarks/pruning_sweep.py``). For the MLP and the small CNN on
digits, and for every seed, the data split *and* the initialisation change with the seed
(``digits(seed=seed)``, ``pretrained(seed=seed, data_seed=seed)``). For each seed it measures test and
validation accuracy of:

* a logistic regression (scikit-learn, 640 weights) on the same split: the linear reference. A
  pruned network that scores below it has lost everything its hidden layers added;
* the dense model, and the dense model trained as many extra epochs as fine-tuning takes (the fair control);
* every mask method (random, per-layer magnitude, global magnitude, block, structured) at every
  sparsity, one-shot *without* fine-tuning and gradual (Zhu & Gupta cubic schedule) *with* it.
  Blocks are 16x16 (``"block"``), the smallest tile the lab's BSR kernel takes, and 32x32
  (``"block32"``, MLP only), the GPU runs' size; a layer a block does not divide stays dense
  (:func:`block_layers` says which fit);
* N:M patterns (2:4, 1:4, 2:8, 1:8), one-shot, with and without fine-tuning;
* small dense models with as many weights as the sparse ones have nonzeros (large-sparse vs small-dense);
* lottery tickets: Frankle & Carbin (2019) reset the survivors to their *initial* weights and prune
  iteratively (``"lottery_iterative"``, 20 -> 54% of the remaining weights per round); Frankle et al.
  (2019, 2020) rewind to *early training* instead (``"lottery_rewind"``, one-shot, epoch 1), with a
  random re-initialisation of the same mask as the control (``"lottery_reinit"``);
* per-layer sparsity chosen by a one-layer-at-a-time sensitivity scan (validation, 1 point per layer)
  against uniform and global magnitude pruning at the same overall sparsity (``"per_layer_scan"``,
  ``"uniform_matched"``, ``"global_matched"``).

Test accuracy is only reported; nothing is chosen by it.

**Reading** (the committed ``benchmarks/results/pruning_sweep_cpu.json``): :func:`load_sweep`,
:func:`summarize` (mean, 95% confidence interval over seeds, and the binomial standard error of one
test set), :func:`paired_difference`, :func:`goal_at_90`, and the text tables notebook 02 prints.
The figures are in :mod:`labkit.figures.pruning_sweep`.
"""
from __future__ import annotations

import base64
import copy
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit import data, models, prune, results, train, utils

SCHEMA = "pruning_sweep"
#: The committed result, in :data:`labkit.results.RESULTS_DIR`.
SWEEP_NAME = "pruning_sweep_cpu"

CONFIG: dict[str, Any] = {
    "models": ["mlp", "cnn"],
    "seeds": [0, 1, 2],  # each seed: its own data split (digits(seed=seed)) and its own initialisation
    "sparsities": [0.5, 0.8, 0.9, 0.95, 0.98, 0.99],
    "methods": ["random", "magnitude", "global_magnitude", "block", "structured"],
    # 32x32 tiles fit no CNN layer (conv2 is 32 x 144, 144 = 4.5 x 32), so only the MLP runs them.
    "extra_methods": {"mlp": ["block32"], "cnn": []},
    # Block edge of each block method, per model: 16 is the smallest the lab's BSR kernel takes.
    "block": {"mlp": 16, "cnn": 16},
    "block32": {"mlp": 32, "cnn": 32},
    "nm_patterns": [[2, 4], [1, 4], [2, 8], [1, 8]],
    "dense": {"epochs": train.DEFAULT_EPOCHS, "lr": train.DEFAULT_LR},
    # Chosen on *validation* accuracy (mean of 3 seeds, global magnitude at 90%) among four recipes:
    # 15 or 30 epochs, lr 1e-3 or 3e-3, pruning over the first half or two thirds.
    "finetune": {"schedule": "gradual", "epochs": 30, "prune_epochs": 15, "lr": 3e-3, "updates_per_epoch": 2},
    "small_dense_sparsities": [0.9, 0.95, 0.98],
    "lottery": {"sparsities": [0.9, 0.98], "rewind_epoch": 1, "method": "global_magnitude",
                # Frankle & Carbin's iterative tickets: share of weights kept after each round (the
                # rounds reach 90% and 98% sparsity); every round retrains from the initial weights.
                "iterative_kept": [0.464, 0.215, 0.1, 0.045, 0.02]},
    "layerwise": {"scan_sparsities": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98], "max_drop": 0.01},
    "logistic_C": [0.1, 1.0, 10.0],  # inverse regularisation strengths, chosen on validation
    "explorer": {"model": "mlp", "seed": 0, "data_seed": 0},  # whose fine-tuned masks are stored for the explorer
}
QUICK = {"seeds": [0, 1], "sparsities": [0.5, 0.9], "nm_patterns": [[2, 4]], "small_dense_sparsities": [0.9],
         "lottery": {**CONFIG["lottery"], "sparsities": [0.9], "iterative_kept": [0.316, 0.1]}}

#: Human names of the sweep's methods, for legends and tables.
LABELS = {"random": "random", "magnitude": "magnitude (per layer)", "global_magnitude": "global magnitude",
          "block": "block 16x16", "block32": "block 32x32", "structured": "structured (units removed)",
          "small_dense": "small dense", "lottery_rewind": "lottery ticket (rewind to epoch 1)",
          "lottery_reinit": "random re-init, same mask",
          "lottery_iterative": "lottery ticket (iterative, reset to init)",
          "dense": "dense", "dense_long": "dense, trained longer", "logistic": "logistic regression",
          "per_layer_scan": "per-layer (sensitivity scan)", "uniform_matched": "uniform, same overall sparsity",
          "global_matched": "global magnitude, same overall sparsity"}
#: Methods compared at a matched overall sparsity (their ``target_sparsity`` is the scan's result, per seed).
MATCHED = ("per_layer_scan", "uniform_matched", "global_matched")
BLOCK_METHODS = ("block", "block32")


# ----------------------------------------------------------------------------------------------
# Running the sweep
# ----------------------------------------------------------------------------------------------

def pack_mask(mask: torch.Tensor) -> dict:
    """A bool mask as base64 of its packed bits, plus its shape (about 1 byte per 8 weights)."""
    bits = np.packbits(mask.detach().flatten().numpy().astype(bool))
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits.tobytes()).decode()}


def block_layers(kind: str, block: int) -> list[str]:
    """The prunable layers of ``kind`` whose weight matrix (rows x inputs) a ``block x block`` tile divides."""
    layers = models.prunable_layers(models.build(kind, seed=0))
    return [name for name, m in layers.items()
            if m.weight.shape[0] % block == 0 and m.weight[0].numel() % block == 0]


def methods_of(config: dict, kind: str) -> list[str]:
    """The mask methods run for model ``kind``."""
    return list(config["methods"]) + list(config.get("extra_methods", {}).get(kind, []))


def _record(model_kind, seed, method, finetune, target, model, dense_weights, split, **extra) -> dict:
    report = prune.sparsity_report(model)
    removed = 1.0 - report["nonzeros"] / dense_weights  # against the *original* model's weight count
    return {"model": model_kind, "seed": seed, "method": method, "finetune": finetune, "target_sparsity": target,
            "sparsity": round(removed, 6), "nonzeros": report["nonzeros"],
            "val_acc": round(train.evaluate(model, split.val), 6),
            "test_acc": round(train.evaluate(model, split.test), 6),
            "n_test": len(split.test), "layer_sparsity": {r["name"]: round(r["sparsity"], 6) for r in report["layers"]},
            **extra}


def logistic_reference(split: data.Digits, cs: Sequence[float] = (0.1, 1.0, 10.0)) -> dict:
    """A multinomial logistic regression on the flat pixels: the linear reference for the digits.

    ``C`` is chosen on validation accuracy. Returns ``C``, ``val_acc``, ``test_acc``, ``n_test`` and
    ``nonzeros`` (its 64 x 10 weights).
    """
    from sklearn.linear_model import LogisticRegression

    def fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=5000).fit(split.train.x.flatten(1).numpy(), split.train.y.numpy())

    def acc(clf: LogisticRegression, part: data.Split) -> float:
        return float(clf.score(part.x.flatten(1).numpy(), part.y.numpy()))

    fitted = {c: fit(c) for c in cs}
    best = max(cs, key=lambda c: acc(fitted[c], split.val))
    clf = fitted[best]
    return {"C": best, "val_acc": round(acc(clf, split.val), 6), "test_acc": round(acc(clf, split.test), 6),
            "n_test": len(split.test), "nonzeros": int(np.count_nonzero(clf.coef_))}


def iterative_lottery(kind: str, dense: torch.nn.Module, train_split: data.Split, kept: Sequence[float], *,
                      epochs: int, lr: float, seed: int):
    """Frankle & Carbin (2019): prune the trained model (global magnitude), reset the survivors to their
    *initial* weights, retrain, and repeat, keeping ``kept[r]`` of all weights after round ``r``.

    ``dense`` is ``models.build(kind, seed=seed)`` trained for ``epochs`` (round 0). Yields
    ``(kept_share, ticket)`` after each round: the ticket retrained from the initial weights with that mask.
    """
    initial = models.build(kind, seed=seed).state_dict()
    trained = dense
    for r, share in enumerate(kept):
        # rank the trained (masked) weights: already pruned ones are zeros, so each mask nests in the last
        masks = prune.global_magnitude_masks(prune.current_weights(trained), 1.0 - share)
        ticket = models.build(kind, seed=seed)
        ticket.load_state_dict(initial)
        for name, module in models.prunable_layers(ticket).items():
            prune.apply_mask(module, masks[name])
        train.train(ticket, train_split, epochs=epochs, lr=lr, seed=seed + 100 + r)
        trained = ticket
        yield share, ticket


def jobs(config: dict) -> list[tuple]:
    """Every (model, seed, kind, args) the sweep runs, so the progress bar knows the total."""
    out: list[tuple[str, int, str, Any]] = []
    for kind in config["models"]:
        for seed in config["seeds"]:
            out += [(kind, seed, "dense", None), (kind, seed, "logistic", None), (kind, seed, "dense_long", None)]
            out += [(kind, seed, "mask", (method, s)) for method in methods_of(config, kind)
                    for s in config["sparsities"]]
            out += [(kind, seed, "nm", (n, m)) for n, m in config["nm_patterns"]]
            out += [(kind, seed, "small_dense", s) for s in config["small_dense_sparsities"]]
            out += [(kind, seed, "lottery", s) for s in config["lottery"]["sparsities"]]
            out += [(kind, seed, "lottery_iterative", None), (kind, seed, "layerwise", None)]
    return out


def _mask_options(config: dict, kind: str, method: str) -> tuple[str, dict]:
    """The prune_model method name and options of a sweep method (block sizes live in the config)."""
    if method in BLOCK_METHODS:
        return "block", {"block": config[method][kind], "skip_incompatible": True}
    return method, {}


def run(config: dict, progress: bool = True) -> tuple[list[dict], dict]:
    """Run every job of ``config``; return the rows and the extra fields of the results file."""
    from tqdm.auto import tqdm

    # One thread: these models are too small to gain from two, and on a busy machine a second
    # OpenMP thread spinning at every barrier made runs 10-20x slower.
    utils.reproducible(0, threads=1)
    ft, dense_cfg = config["finetune"], config["dense"]
    rows, explorer_masks, dense_models, splits = [], {}, {}, {}
    start = time.perf_counter()
    bar = tqdm(jobs(config), desc="pruning sweep", disable=not progress)
    for kind, seed, job, args in bar:
        bar.set_postfix_str(f"{kind} seed {seed} {job} {args}")
        if seed not in splits:
            splits[seed] = data.digits(seed)
        split = splits[seed]
        if job == "dense":
            dense = train.pretrained(kind, seed=seed, epochs=dense_cfg["epochs"], lr=dense_cfg["lr"], data_seed=seed)
            dense_models[(kind, seed)] = dense
            rows.append(_record(kind, seed, "dense", False, 0.0, dense, prune.count_weights(dense), split))
            continue
        dense = dense_models[(kind, seed)]
        n_dense = prune.count_weights(dense)
        if job == "logistic":
            ref = logistic_reference(split, config["logistic_C"])
            rows.append({"model": kind, "seed": seed, "method": "logistic", "finetune": False, "target_sparsity": 0.0,
                         "sparsity": 0.0, "layer_sparsity": {}, **ref})
        elif job == "dense_long":
            # The control for fine-tuning: the dense model trained as many extra epochs as the pruned ones get.
            longer = copy.deepcopy(dense)
            train.train(longer, split.train, epochs=ft["epochs"], lr=ft["lr"], seed=seed)
            rows.append(_record(kind, seed, "dense_long", True, 0.0, longer, n_dense, split))
        elif job == "mask":
            method, s = args
            how, options = _mask_options(config, kind, method)
            one_shot = copy.deepcopy(dense)
            prune.prune_model(one_shot, how, s, seed=seed, **options)
            if method == "structured":
                # the sweep's models are built by models.build / train.pretrained: always an MLP or a SmallCNN
                assert isinstance(one_shot, (models.MLP, models.SmallCNN)), type(one_shot)
                one_shot = prune.remove_units(one_shot, s)
            rows.append(_record(kind, seed, method, False, s, one_shot, n_dense, split))
            tuned = copy.deepcopy(dense)
            prune.prune_and_finetune(tuned, split.train, how, s, schedule=ft["schedule"], epochs=ft["epochs"],
                                     prune_epochs=ft["prune_epochs"], lr=ft["lr"], seed=seed,
                                     updates_per_epoch=ft["updates_per_epoch"], **options)
            if (kind, seed) == (config["explorer"]["model"], config["explorer"]["seed"]):
                explorer_masks[f"{method}|{s}"] = {name: pack_mask(layer.weight != 0)
                                                   for name, layer in models.prunable_layers(tuned).items()}
            if method == "structured":
                masked_acc = train.evaluate(tuned, split.test)
                # the sweep's models are built by models.build / train.pretrained: always an MLP or a SmallCNN
                assert isinstance(tuned, (models.MLP, models.SmallCNN)), type(tuned)
                tuned = prune.remove_units(tuned, s)
                # physical removal must not change what the model computes
                assert abs(train.evaluate(tuned, split.test) - masked_acc) < 1e-9, (kind, seed, s)
            rows.append(_record(kind, seed, method, True, s, tuned, n_dense, split))
        elif job == "nm":
            n, m = args
            for finetune in (False, True):
                model = copy.deepcopy(dense)
                prune.prune_and_finetune(model, split.train, "nm", None, schedule="one_shot",
                                         epochs=ft["epochs"] if finetune else 0, lr=ft["lr"], seed=seed, n=n, m=m,
                                         skip_incompatible=True)
                rows.append(_record(kind, seed, f"{n}:{m}", finetune, 1 - n / m, model, n_dense, split))
        elif job == "small_dense":
            s = args
            widths = prune.dense_hidden_for_nonzeros(kind, round((1 - s) * n_dense))
            key = "hidden" if kind == "mlp" else "channels"
            model = models.build(kind, seed=seed, **{key: widths})
            # same training budget as the sparse model: dense epochs + fine-tuning epochs
            train.train(model, split.train, epochs=dense_cfg["epochs"] + ft["epochs"], lr=dense_cfg["lr"], seed=seed)
            rows.append(_record(kind, seed, "small_dense", True, s, model, n_dense, split, widths=list(widths)))
        elif job == "lottery":
            s, lt = args, config["lottery"]
            for reinit in (False, True):
                model = prune.lottery_ticket(kind, split.train, s, epochs=dense_cfg["epochs"],
                                             rewind_epoch=lt["rewind_epoch"], lr=dense_cfg["lr"], seed=seed,
                                             reinit=reinit, method=lt["method"])
                rows.append(_record(kind, seed, "lottery_reinit" if reinit else "lottery_rewind", True, s, model,
                                    n_dense, split))
        elif job == "lottery_iterative":
            lt = config["lottery"]
            for share, ticket in iterative_lottery(kind, dense, split.train, lt["iterative_kept"],
                                                   epochs=dense_cfg["epochs"], lr=dense_cfg["lr"], seed=seed):
                target = round(1.0 - share, 6)
                if any(abs(target - s) < 1e-6 for s in lt["sparsities"]):
                    rows.append(_record(kind, seed, "lottery_iterative", True, target, ticket, n_dense, split,
                                        rounds=lt["iterative_kept"].index(share) + 1))
        elif job == "layerwise":
            rows += _layerwise(config, kind, seed, dense, split)
    extra = {"threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - start, 1), "config": config,
             "block_layers": {kind: {str(config[m][kind]): block_layers(kind, config[m][kind]) for m in BLOCK_METHODS}
                              for kind in config["models"]},
             "explorer_masks": explorer_masks}
    return rows, extra


def _layerwise(config: dict, kind: str, seed: int, dense: torch.nn.Module, split: data.Digits) -> list[dict]:
    """Per-layer sparsity from a sensitivity scan vs uniform and global magnitude at the same overall sparsity.

    Each layer alone may cost ``max_drop`` of validation accuracy; pruned together the drops add up.
    """
    lw, ft = config["layerwise"], config["finetune"]
    n_dense = prune.count_weights(dense)
    dense_val = train.evaluate(dense, split.val)
    scan = prune.sensitivity_scan(dense, split.val, lw["scan_sparsities"])
    chosen = prune.choose_layer_sparsity(scan, lw["scan_sparsities"], dense_val, max_drop=lw["max_drop"])
    probe = copy.deepcopy(dense)
    prune.prune_model(probe, "magnitude", chosen)
    overall = round(prune.sparsity_report(probe)["overall"], 6)
    out = []
    for method, how, sparsity in (("per_layer_scan", "magnitude", chosen), ("uniform_matched", "magnitude", overall),
                                  ("global_matched", "global_magnitude", overall)):
        for finetune in (False, True):
            model = copy.deepcopy(dense)
            prune.prune_model(model, how, sparsity)
            if finetune:  # one-shot, then the masked model trains as long as the sweep's fine-tuning
                train.train(model, split.train, epochs=ft["epochs"], lr=ft["lr"], seed=seed)
            out.append(_record(kind, seed, method, finetune, overall, model, n_dense, split,
                               chosen=chosen, max_drop=lw["max_drop"]))
    return out


def save(rows: list[dict], extra: dict, out: str | Path = SWEEP_NAME) -> Path:
    """Write the sweep as a results envelope (``labkit.results``); returns the path."""
    return results.write(out, rows, script="benchmarks/pruning_sweep.py", schema=SCHEMA, extra=extra)


# ----------------------------------------------------------------------------------------------
# Reading and summarizing the sweep
# ----------------------------------------------------------------------------------------------

def load_sweep(path: str | Path | None = None) -> dict:
    """The sweep results envelope (default: the committed ``benchmarks/results/pruning_sweep_cpu.json``).

    Its ``rows`` are the runs, ``config`` the settings they ran with.
    """
    return results.read(SWEEP_NAME if path is None else Path(path), SCHEMA)


def _check_model(sweep: dict, model: str) -> None:
    if model not in sweep["config"]["models"]:
        raise ValueError(f"model must be one of {sweep['config']['models']}, got {model!r}")


def t_quantile(n: int) -> float:
    """The two-sided 95% quantile of Student's t with ``n - 1`` degrees of freedom (``n`` >= 2 values)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its t-based 95% confidence interval (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("values is empty: a confidence interval needs at least one value")
    if array.size == 1:
        return float(array[0]), 0.0
    return float(array.mean()), t_quantile(array.size) * float(array.std(ddof=1)) / math.sqrt(array.size)


def binomial_se(accuracy: float, n_test: int) -> float:
    """Standard error of an accuracy measured on ``n_test`` images: sqrt(p (1 - p) / n)."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if n_test < 1:
        raise ValueError(f"n_test must be a positive number of test images, got {n_test}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n_test)


def summarize(sweep: dict, model: str = "mlp", metric: str = "test_acc") -> list[dict]:
    """Mean, spread and 95% confidence interval over seeds for every (method, fine-tuned, target sparsity).

    Each row: ``method, finetune, target_sparsity, sparsity`` (achieved share of weights removed),
    ``mean, std, ci95, n`` of ``metric`` (``"test_acc"`` or ``"val_acc"``), as fractions, and
    ``se_test``: the binomial standard error of one test set of ``n_test`` images at that accuracy.
    ``ci95`` covers the seed-to-seed spread (split and initialisation); ``se_test`` is the noise of a
    single test set. The matched-sparsity comparison (:data:`MATCHED`) is read by :func:`layerwise_table`.
    """
    _check_model(sweep, model)
    if metric not in ("test_acc", "val_acc"):
        raise ValueError(f"metric must be 'test_acc' or 'val_acc', got {metric!r}")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in sweep["rows"]:
        if r["model"] == model and r["method"] not in MATCHED:
            groups[(r["method"], r["finetune"], r["target_sparsity"])].append(r)
    rows = []
    for (method, finetune, target), runs in groups.items():
        values = [r[metric] for r in runs]
        mean, ci = mean_ci(values)
        n_test = runs[0].get("n_test", 270)
        rows.append({"method": method, "finetune": finetune, "target_sparsity": target,
                     "sparsity": float(np.mean([r["sparsity"] for r in runs])), "mean": mean,
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "ci95": ci, "n": len(values),
                     "se_test": binomial_se(mean, n_test), "n_test": n_test})
    return sorted(rows, key=lambda r: (r["method"], r["finetune"], r["target_sparsity"]))


def find(rows: list[dict], method: str, finetune: bool, target: float) -> dict | None:
    """The summary row of ``method`` (fine-tuned or not) at ``target`` sparsity, or None."""
    for r in rows:
        if r["method"] == method and r["finetune"] == finetune and abs(r["target_sparsity"] - target) < 1e-9:
            return r
    return None


def require(rows: list[dict], method: str, finetune: bool, target: float) -> dict:
    """Like :func:`find`, but raise ``ValueError`` when the summary has no such row."""
    row = find(rows, method, finetune, target)
    if row is None:
        raise ValueError(f"the summary has no {method!r} row (finetune={finetune}) at target sparsity {target}: "
                         f"re-run benchmarks/pruning_sweep.py")
    return row


def _runs(sweep: dict, model: str, method: str, finetune: bool, target: float | None = None) -> dict[int, dict]:
    return {r["seed"]: r for r in sweep["rows"] if r["model"] == model and r["method"] == method
            and r["finetune"] == finetune and (target is None or abs(r["target_sparsity"] - target) < 1e-9)}


def paired_difference(sweep: dict, model: str, a: tuple, b: tuple, metric: str = "test_acc") -> dict:
    """``a`` minus ``b`` per seed (same split, same initialisation), with a t-based 95% CI.

    ``a`` and ``b`` are ``(method, finetune, target_sparsity)``; target ``None`` matches any (the
    matched-sparsity methods). Returns ``mean, ci95, n`` (fractions) and ``verdict``: ``"a"`` or ``"b"``
    when the interval excludes zero, else ``"within noise"``.
    """
    _check_model(sweep, model)
    ra, rb = _runs(sweep, model, *a), _runs(sweep, model, *b)
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        raise ValueError(f"the sweep has no seed with both {a} and {b} for model {model!r}")
    diffs = [ra[s][metric] - rb[s][metric] for s in seeds]
    mean, ci = mean_ci(diffs)
    verdict = "within noise" if len(seeds) < 2 or abs(mean) <= ci else ("a" if mean > 0 else "b")
    return {"mean": mean, "ci95": ci, "n": len(seeds), "verdict": verdict}


def goal_at_90(sweep: dict, model: str = "mlp", sparsity: float = 0.9, tolerance: float = 0.01) -> dict:
    """Is fine-tuned unstructured pruning at ``sparsity`` within ``tolerance`` of dense test accuracy?

    The method (per-layer or global magnitude) is picked by *validation* accuracy, then its *test*
    accuracy is compared with the dense model's: the test split never chooses anything. ``drop_ci``
    is the 95% interval of the per-seed drop.
    """
    test = summarize(sweep, model, "test_acc")
    val = summarize(sweep, model, "val_acc")
    candidates = [m for m in ("magnitude", "global_magnitude") if find(val, m, True, sparsity)]
    if not candidates:
        raise ValueError(f"the sweep has no fine-tuned magnitude run at sparsity {sparsity}")
    method = max(candidates, key=lambda m: require(val, m, True, sparsity)["mean"])
    dense, pruned = require(test, "dense", False, 0.0), require(test, method, True, sparsity)
    longer, linear = find(test, "dense_long", True, 0.0), find(test, "logistic", False, 0.0)
    drop = paired_difference(sweep, model, ("dense", False, 0.0), (method, True, sparsity))
    return {"model": model, "method": method, "sparsity": sparsity, "dense": dense["mean"], "dense_ci": dense["ci95"],
            "pruned": pruned["mean"], "pruned_ci": pruned["ci95"], "drop_points": 100 * drop["mean"],
            "drop_ci_points": 100 * drop["ci95"], "met": bool(drop["mean"] <= tolerance), "seeds": pruned["n"],
            "se_test_points": 100 * pruned["se_test"],
            "dense_long": None if longer is None else longer["mean"],
            "dense_long_ci": None if longer is None else longer["ci95"],
            "logistic": None if linear is None else linear["mean"]}


def goal_text(goal: dict) -> str:
    """One line stating the 90% result, met or not, with the numbers and their uncertainty."""
    verdict = "MET" if goal["met"] else "NOT met"
    change = (f"drop {goal['drop_points']:.1f} ± {goal['drop_ci_points']:.1f} points" if goal["drop_points"] >= 0
              else f"gain {-goal['drop_points']:.1f} ± {goal['drop_ci_points']:.1f} points")
    longer = ("" if goal.get("dense_long") is None else f"; dense trained as many extra epochs "
              f"{100 * goal['dense_long']:.1f} ± {100 * goal['dense_long_ci']:.1f}%")
    linear = "" if goal.get("logistic") is None else f"; logistic regression {100 * goal['logistic']:.1f}%"
    return (f"{goal['model']}: dense {100 * goal['dense']:.1f} ± {100 * goal['dense_ci']:.1f}%, "
            f"{LABELS[goal['method']]} at {100 * goal['sparsity']:.0f}% sparsity (gradual pruning + fine-tuning) "
            f"{100 * goal['pruned']:.1f} ± {100 * goal['pruned_ci']:.1f}% ({goal['seeds']} seeds, 95% CI): "
            f"{change}{longer}{linear} -> goal (mean drop within 1 point of dense) {verdict}")


def _cell(r: dict | None) -> str:
    return f"{100 * r['mean']:>7.1f} ± {100 * r['ci95']:3.1f}" if r else f"{'-':>13}"


def accuracy_table(sweep: dict, model: str, methods: list[str], finetune: bool) -> str:
    """A text table: test accuracy mean ± 95% CI (%) per method (rows) and target sparsity (columns)."""
    rows = summarize(sweep, model)
    targets = sorted({r["target_sparsity"] for r in rows if r["method"] in methods and r["finetune"] == finetune})
    lines = [f"{'method':<28}" + "".join(f"{100 * t:>13.0f}%" for t in targets)]
    for m in methods:
        lines.append(f"{LABELS.get(m, m):<28}" + " ".join(_cell(find(rows, m, finetune, t)) for t in targets))
    lines.append(reference_line(sweep, model))
    if "structured" in methods or any(m in BLOCK_METHODS for m in methods):
        lines.append("(columns are target sparsities; structured: share of hidden units removed, block: of the layers "
                     "the block fits; the figures plot the share of all weights removed)")
    return "\n".join(lines)


def reference_line(sweep: dict, model: str) -> str:
    """One line: dense and logistic-regression test accuracy with their 95% CI, and the test set's noise."""
    rows = summarize(sweep, model)
    dense, linear = require(rows, "dense", False, 0.0), find(rows, "logistic", False, 0.0)
    text = f"dense {100 * dense['mean']:.1f} ± {100 * dense['ci95']:.1f}%"
    if linear is not None:
        text += f", logistic regression (640 weights) {100 * linear['mean']:.1f} ± {100 * linear['ci95']:.1f}%"
    return (f"{text}; ± is a 95% CI over {dense['n']} seeds (split + init); one test set of {dense['n_test']} images "
            f"alone has a standard error of {100 * dense['se_test']:.1f} points at {100 * dense['mean']:.0f}%")


def small_dense_table(sweep: dict, model: str = "mlp") -> str:
    """Large-sparse (global magnitude, fine-tuned) against small-dense with about as many weights as it has nonzeros."""
    rows = summarize(sweep, model)
    small_runs = [r for r in sweep["rows"] if r["model"] == model and r["method"] == "small_dense"]
    targets = sorted({r["target_sparsity"] for r in small_runs})
    lines = [(f"{'sparsity':>9} {'sparse nonzeros':>16} {'dense weights':>14} {'large sparse':>14} {'small dense':>14}"
              f" {'difference':>14}  {'verdict':<13} small-dense widths")]
    for t in targets:
        big, small = find(rows, "global_magnitude", True, t), find(rows, "small_dense", True, t)
        sparse_nz = int(np.mean([r["nonzeros"] for r in _runs(sweep, model, "global_magnitude", True, t).values()]))
        run = next(r for r in small_runs if r["target_sparsity"] == t)
        diff = paired_difference(sweep, model, ("global_magnitude", True, t), ("small_dense", True, t))
        verdict = {"a": "large sparse", "b": "small dense"}.get(diff["verdict"], diff["verdict"])
        lines.append(f"{100 * t:>8.0f}% {sparse_nz:>16} {run['nonzeros']:>14} {_cell(big):>14} {_cell(small):>14}"
                     f" {100 * diff['mean']:>+7.1f} ± {100 * diff['ci95']:.1f}  {verdict:<13} {tuple(run['widths'])}")
    lines.append("(difference = large sparse - small dense per seed, 95% CI; a verdict only when it excludes 0)")
    return "\n".join(lines)


def lottery_table(sweep: dict, model: str = "mlp") -> str:
    """Lottery tickets: iterative reset-to-init, one-shot rewind to epoch 1, and random re-init of the same mask."""
    rows = summarize(sweep, model)
    targets = sorted({r["target_sparsity"] for r in rows if r["method"] == "lottery_rewind"})
    methods = ["lottery_iterative", "lottery_rewind", "lottery_reinit"]
    lines = [f"{'sparsity':>9}" + "".join(f"{name:>18}" for name in ("iterative, init", "rewind, epoch 1",
                                                                     "random re-init")) + f" {'rewind - re-init':>18}"]
    for t in targets:
        diff = paired_difference(sweep, model, ("lottery_rewind", True, t), ("lottery_reinit", True, t))
        lines.append(f"{100 * t:>8.0f}%" + "".join(f"{_cell(find(rows, m, True, t)):>18}" for m in methods)
                     + f" {100 * diff['mean']:>+10.1f} ± {100 * diff['ci95']:.1f}")
    lines.append(reference_line(sweep, model))
    return "\n".join(lines)


def nm_table(sweep: dict, model: str = "mlp") -> str:
    """N:M patterns (one-shot), test accuracy mean ± 95% CI with and without fine-tuning."""
    rows = summarize(sweep, model)
    lines = [f"{'pattern':>8} {'removed':>8} {'no fine-tuning':>15} {'fine-tuned':>14}"]
    for n, m in sweep["config"]["nm_patterns"]:
        raw, tuned = require(rows, f"{n}:{m}", False, 1 - n / m), find(rows, f"{n}:{m}", True, 1 - n / m)
        lines.append(f"{f'{n}:{m}':>8} {100 * raw['sparsity']:>7.1f}% {_cell(raw):>15} {_cell(tuned):>14}")
    return "\n".join(lines)


def block_table(sweep: dict, model: str = "mlp", finetune: bool = True) -> str:
    """Block pruning at the kernels' block sizes: which layers each block fits, and the accuracy it keeps."""
    _check_model(sweep, model)
    cfg = sweep["config"]
    lines = []
    for method in BLOCK_METHODS:
        if method not in methods_of(cfg, model):
            fits = sweep["block_layers"][model][str(cfg[method][model])]
            lines.append(f"{LABELS[method]}: fits {fits or 'no layer'} of the {model.upper()}: not run")
            continue
        fits = sweep["block_layers"][model][str(cfg[method][model])]
        lines.append(f"{LABELS[method]}: fits {fits}; the other layers stay dense")
    lines.append(accuracy_table(sweep, model, [m for m in ("global_magnitude", *BLOCK_METHODS)
                                               if m in methods_of(cfg, model)], finetune))
    return "\n".join(lines)


def layerwise_table(sweep: dict, model: str = "mlp") -> str:
    """Per-layer sparsities from the sensitivity scan against uniform and global pruning at the same overall sparsity.

    Validation and test accuracy (mean ± 95% CI over seeds), one-shot and fine-tuned.
    """
    _check_model(sweep, model)
    lines = [f"{'method':<40} {'sparsity':>9} {'val, one-shot':>14} {'test, one-shot':>15} {'test, fine-tuned':>17}"]
    for method in MATCHED:
        raw, tuned = _runs(sweep, model, method, False), _runs(sweep, model, method, True)
        if not raw:
            raise ValueError(f"the sweep has no {method!r} runs for model {model!r}: "
                             f"re-run benchmarks/pruning_sweep.py")
        cells = [mean_ci([r[k] for r in runs.values()]) for runs, k in ((raw, "val_acc"), (raw, "test_acc"),
                                                                        (tuned, "test_acc"))]
        sparsity = np.mean([r["sparsity"] for r in raw.values()])
        lines.append(f"{LABELS[method]:<40} {100 * sparsity:>8.1f}%"
                     + "".join(f" {100 * m:>9.1f} ± {100 * c:.1f}" for m, c in cells))
    dense = summarize(sweep, model, "val_acc")
    d = require(dense, "dense", False, 0.0)
    lines.append(f"dense validation accuracy {100 * d['mean']:.1f} ± {100 * d['ci95']:.1f}%; each layer alone was "
                 f"allowed to cost {100 * sweep['config']['layerwise']['max_drop']:g} point")
    return "\n".join(lines)
