"""CPU sweeps behind notebook 04 (Mixture-of-Experts), too long to run inside the notebook.

    python benchmarks/moe_train_sweep.py               # both outputs, ~5-10 minutes on a 2-core CPU
    python benchmarks/moe_train_sweep.py --only train  # or: --only grid
    python benchmarks/moe_train_sweep.py --quick --out-dir /tmp/moe   # smoke run: 1 seed, a few steps

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
import sys
from dataclasses import asdict
from pathlib import Path

import labkit  # noqa: F401
from labkit import results
from labkit.data import text_corpus
from labkit.moe import routing_grid as rg
from labkit.moe import tiny_gpt as tg
from labkit.utils import reproducible

RESULTS = Path(__file__).resolve().parent / "results"
SCRIPT = "benchmarks/moe_train_sweep.py"
STEPS = 600
GRID_STEPS = 40
#: --quick: the same code paths with one seed and a few training steps (a smoke test, not results).
QUICK = {"seeds": [0], "steps": 3, "grid_steps": 1}


def train_sweep(seeds: list[int], steps: int) -> list[dict]:
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
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["train", "grid"], default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps of each tiny GPT")
    parser.add_argument("--grid-steps", type=int, default=GRID_STEPS, help="training steps of each grid router")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK} (write it elsewhere with --out-dir)")
    args = parser.parse_args(argv)
    if args.quick:
        if args.out_dir.resolve() == RESULTS.resolve():
            parser.error("--quick must not overwrite the committed results: add --out-dir <folder>")
        args.seeds, args.steps, args.grid_steps = QUICK["seeds"], QUICK["steps"], QUICK["grid_steps"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "train"):
        rows = train_sweep(args.seeds, args.steps)
        results.write(args.out_dir / "moe_train_cpu.json", rows, script=SCRIPT, schema="moe_train",
                      machine_text=f"{results.machine()}, {tg.TRAIN_THREADS} torch thread(s) for training")
    if args.only in (None, "grid"):
        reproducible(0)
        points = rg.compute_routing_grid(steps=args.grid_steps, seed=0)
        # asdict keeps GridPoint's tuples; labkit.results writes them as the JSON lists it reads back
        results.write(args.out_dir / "moe_routing_grid.json", [asdict(p) for p in points], script=SCRIPT,
                      schema="moe_routing_grid", extra={"steps": args.grid_steps, "seed": 0})
        print(f"routing grid: {len(points)} configurations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
