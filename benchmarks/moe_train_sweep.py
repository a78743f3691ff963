"""CPU sweeps behind notebook 04 (Mixture-of-Experts), too long to run inside the notebook.

    python benchmarks/moe_train_sweep.py               # both outputs, ~5-10 minutes on a 2-core CPU
    python benchmarks/moe_train_sweep.py --only train  # or: --only grid

* ``benchmarks/results/moe_train_cpu.json``: the tiny character GPT (labkit.moe.tiny_gpt) trained
  as dense, MoE with the same active parameters, dense with the same total parameters, and MoE
  without the balancing loss, over several seeds: validation loss, parameters, FLOPs per token
  (``torch.utils.flop_counter``) and training tokens per second on the machine that ran it.
* ``benchmarks/results/moe_routing_grid.json``: the trained-router grid the routing explorer widget
  looks up (labkit.moe.routing_grid).

Training is seeded and runs with 2 torch threads, as in the notebook.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import torch

import labkit  # noqa: F401
from labkit.data import text_corpus
from labkit.moe import routing_grid as rg
from labkit.moe import tiny_gpt as tg
from labkit.utils import reproducible

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = 600


def train_sweep(seeds: list[int], steps: int) -> dict:
    reproducible(0)
    corpus = text_corpus()
    rows = []
    for seed in seeds:
        for name, cfg in tg.lab_models(corpus.vocab_size, seed, steps).items():
            result = tg.train(cfg, corpus, progress=True)
            s = tg.summary(result, corpus)
            s.update(model=name, seed=seed, steps=steps,
                     tokens_per_s=round(tg.tokens_per_second(result.model(), corpus), 1))
            if result.load_history:
                s["final_load_layer0"] = [round(v, 4) for v in result.load_history[-1][0]]
            rows.append(s)
            print(f"seed {seed} {name:32s} val loss {s['val_loss']:.4f}  {s['tokens_per_s']:.0f} tok/s")
    return {"script": "benchmarks/moe_train_sweep.py", "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()} cpu, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__, "python": platform.python_version(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["train", "grid"], default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "train"):
        result = train_sweep(args.seeds, args.steps)
        (args.out_dir / "moe_train_cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.only in (None, "grid"):
        reproducible(0)
        points = rg.compute_routing_grid()
        rg.save_routing_grid(points, args.out_dir / "moe_routing_grid.json", script="benchmarks/moe_train_sweep.py",
                             date=dt.date.today().isoformat(), torch=torch.__version__, steps=40, seed=0)
        print(f"routing grid: {len(points)} configurations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
