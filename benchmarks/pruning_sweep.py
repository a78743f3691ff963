"""The multi-seed pruning sweep behind notebooks 01 and 02 and the pruning explorer.

For the MLP and the small CNN on digits, and for every seed, it trains the dense model
(``labkit.train.pretrained``) and then measures test and validation accuracy of:

* the dense model trained for as many extra epochs as fine-tuning takes (the fair comparison);
* every mask method (random, per-layer magnitude, global magnitude, block, structured) at every
  sparsity, one-shot *without* fine-tuning and gradual (Zhu & Gupta cubic schedule) *with* it;
  structured runs end with physical removal (a smaller dense model);
* N:M patterns (2:4, 1:4, 2:8, 1:8), one-shot, with and without fine-tuning;
* small dense models with as many weights as the sparse ones have nonzeros (large-sparse vs small-dense);
* lottery tickets: the gradual-pruned mask's survivors rewound to epoch 1 vs re-initialised at random.

Test accuracy is only reported; nothing here is chosen by it. The data split is the same
(``digits(seed=0)``) for every seed; the seed changes the initialisation and the batch order.

Usage (several minutes on a 2-core CPU, longer when the machine is busy; a progress bar shows the rest)::

    python benchmarks/pruning_sweep.py                 # writes benchmarks/results/pruning_sweep_cpu.json
    python benchmarks/pruning_sweep.py --quick --out /tmp/sweep.json   # a 1-seed smoke run
"""
from __future__ import annotations

import argparse
import base64
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit import data, models, prune, train, utils  # noqa: E402

CONFIG = {
    "models": ["mlp", "cnn"],
    "seeds": [0, 1, 2],
    "data_seed": 0,
    "sparsities": [0.5, 0.8, 0.9, 0.95, 0.98, 0.99],
    "methods": ["random", "magnitude", "global_magnitude", "block", "structured"],
    "nm_patterns": [[2, 4], [1, 4], [2, 8], [1, 8]],
    "block": {"mlp": 4, "cnn": 2},  # the CNN's classifier has 10 rows: 4 does not divide them
    "dense": {"epochs": train.DEFAULT_EPOCHS, "lr": train.DEFAULT_LR},
    # Chosen on *validation* accuracy (mean of 3 seeds, global magnitude at 90%) among four recipes:
    # 15 or 30 epochs, lr 1e-3 or 3e-3, pruning over the first half or two thirds.
    "finetune": {"schedule": "gradual", "epochs": 30, "prune_epochs": 15, "lr": 3e-3, "updates_per_epoch": 2},
    "small_dense_sparsities": [0.9, 0.95, 0.98],
    "lottery": {"sparsities": [0.9, 0.98], "rewind_epoch": 1, "method": "global_magnitude"},
    "explorer": {"model": "mlp", "seed": 0},  # whose fine-tuned masks are stored for the explorer
}
QUICK = {"seeds": [0], "sparsities": [0.5, 0.9], "nm_patterns": [[2, 4]], "small_dense_sparsities": [0.9],
         "lottery": {"sparsities": [0.9], "rewind_epoch": 1, "method": "global_magnitude"}}


def pack_mask(mask: torch.Tensor) -> dict:
    """A bool mask as base64 of its packed bits, plus its shape (about 1 byte per 8 weights)."""
    bits = np.packbits(mask.detach().flatten().numpy().astype(bool))
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits.tobytes()).decode()}


def _record(model_kind, seed, method, finetune, target, model, dense_weights, split, **extra) -> dict:
    report = prune.sparsity_report(model)
    removed = 1.0 - report["nonzeros"] / dense_weights  # against the *original* model's weight count
    return {"model": model_kind, "seed": seed, "method": method, "finetune": finetune, "target_sparsity": target,
            "sparsity": round(removed, 6), "nonzeros": report["nonzeros"],
            "val_acc": round(train.evaluate(model, split.val), 6), "test_acc": round(train.evaluate(model, split.test), 6),
            "layer_sparsity": {r["name"]: round(r["sparsity"], 6) for r in report["layers"]}, **extra}


def jobs(config: dict) -> list[tuple]:
    """Every (model, seed, kind, args) the sweep runs, so the progress bar knows the total."""
    out = []
    for kind in config["models"]:
        for seed in config["seeds"]:
            out.append((kind, seed, "dense", None))
            out.append((kind, seed, "dense_long", None))
            for method in config["methods"]:
                for s in config["sparsities"]:
                    out.append((kind, seed, "mask", (method, s)))
            for n, m in config["nm_patterns"]:
                out.append((kind, seed, "nm", (n, m)))
            for s in config["small_dense_sparsities"]:
                out.append((kind, seed, "small_dense", s))
            for s in config["lottery"]["sparsities"]:
                out.append((kind, seed, "lottery", s))
    return out


def run(config: dict, progress: bool = True) -> dict:
    """Run every job of ``config``; return the JSON-ready result."""
    from tqdm.auto import tqdm

    # One thread: these models are too small to gain from two, and on a busy machine a second
    # OpenMP thread spinning at every barrier made runs 10-20x slower.
    utils.reproducible(0, threads=1)
    split = data.digits(config["data_seed"])
    ft = config["finetune"]
    runs, explorer_masks, dense_models = [], {}, {}
    bar = tqdm(jobs(config), desc="pruning sweep", disable=not progress)
    for kind, seed, job, args in bar:
        bar.set_postfix_str(f"{kind} seed {seed} {job} {args}")
        if job == "dense":
            dense = train.pretrained(kind, seed=seed, epochs=config["dense"]["epochs"], lr=config["dense"]["lr"],
                                     data_seed=config["data_seed"])
            dense_models[(kind, seed)] = dense
            n_dense = prune.count_weights(dense)
            runs.append(_record(kind, seed, "dense", False, 0.0, dense, n_dense, split))
            continue
        dense = dense_models[(kind, seed)]
        n_dense = prune.count_weights(dense)
        if job == "dense_long":
            # The control for fine-tuning: the dense model trained as many extra epochs as the pruned ones get.
            longer = copy.deepcopy(dense)
            train.train(longer, split.train, epochs=ft["epochs"], lr=ft["lr"], seed=seed)
            runs.append(_record(kind, seed, "dense_long", True, 0.0, longer, n_dense, split))
            continue
        options = {"block": config["block"][kind], "skip_incompatible": True} if job == "mask" and args[0] == "block" else {}
        if job == "mask":
            method, s = args
            one_shot = copy.deepcopy(dense)
            prune.prune_model(one_shot, method, s, seed=seed, **options)
            if method == "structured":
                one_shot = prune.remove_units(one_shot, s)
            runs.append(_record(kind, seed, method, False, s, one_shot, n_dense, split))
            tuned = copy.deepcopy(dense)
            prune.prune_and_finetune(tuned, split.train, method, s, schedule=ft["schedule"], epochs=ft["epochs"],
                                     prune_epochs=ft["prune_epochs"], lr=ft["lr"], seed=seed,
                                     updates_per_epoch=ft["updates_per_epoch"], **options)
            if (kind, seed) == (config["explorer"]["model"], config["explorer"]["seed"]):
                explorer_masks[f"{method}|{s}"] = {name: pack_mask(layer.weight != 0)
                                                   for name, layer in models.prunable_layers(tuned).items()}
            if method == "structured":
                masked_acc = train.evaluate(tuned, split.test)
                tuned = prune.remove_units(tuned, s)
                # physical removal must not change what the model computes
                assert abs(train.evaluate(tuned, split.test) - masked_acc) < 1e-9, (kind, seed, s)
            runs.append(_record(kind, seed, method, True, s, tuned, n_dense, split))
        elif job == "nm":
            n, m = args
            for finetune in (False, True):
                model = copy.deepcopy(dense)
                prune.prune_and_finetune(model, split.train, "nm", None, schedule="one_shot",
                                         epochs=ft["epochs"] if finetune else 0, lr=ft["lr"], seed=seed, n=n, m=m,
                                         skip_incompatible=True)
                runs.append(_record(kind, seed, f"{n}:{m}", finetune, 1 - n / m, model, n_dense, split))
        elif job == "small_dense":
            s = args
            widths = prune.dense_hidden_for_nonzeros(kind, round((1 - s) * n_dense))
            key = "hidden" if kind == "mlp" else "channels"
            model = models.build(kind, seed=seed, **{key: widths})
            # same training budget as the sparse model: dense epochs + fine-tuning epochs
            train.train(model, split.train, epochs=config["dense"]["epochs"] + ft["epochs"], lr=config["dense"]["lr"],
                        seed=seed)
            runs.append(_record(kind, seed, "small_dense", True, s, model, n_dense, split, widths=list(widths)))
        elif job == "lottery":
            s, lt = args, config["lottery"]
            for reinit in (False, True):
                model = prune.lottery_ticket(kind, split.train, s, epochs=config["dense"]["epochs"],
                                             rewind_epoch=lt["rewind_epoch"], lr=config["dense"]["lr"], seed=seed,
                                             reinit=reinit, method=lt["method"])
                runs.append(_record(kind, seed, "lottery_reinit" if reinit else "lottery_rewind", True, s, model,
                                    n_dense, split))
    return {
        "script": "benchmarks/pruning_sweep.py",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "config": config,
        "runs": runs,
        "explorer_masks": explorer_masks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pruning_sweep_cpu.json")
    parser.add_argument("--quick", action="store_true", help="one seed, two sparsities: a smoke test")
    args = parser.parse_args(argv)
    config = {**CONFIG, **QUICK} if args.quick else CONFIG
    start = time.perf_counter()
    result = run(config)
    result["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({len(result['runs'])} runs, {result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
