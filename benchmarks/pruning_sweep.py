"""The multi-seed pruning sweep behind notebooks 01 and 02 and the pruning explorer.

What it runs and why is described in :mod:`labkit.experiments.pruning_sweep`; this script only
parses the command line and writes the results envelope (``labkit.results``).

Usage (54 minutes measured on a busy, shared 2-core machine; a progress bar shows the rest)::

    python benchmarks/pruning_sweep.py                 # writes benchmarks/results/pruning_sweep_cpu.json
    python benchmarks/pruning_sweep.py --quick --out /tmp/sweep.json   # a 2-seed smoke run
    python benchmarks/pruning_sweep.py --smoke --out /tmp/sweep.json   # every job once, 1 seed, few epochs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.experiments import pruning_sweep  # noqa: E402 (after the path insert)

_C = pruning_sweep.CONFIG
#: --smoke: every kind of job of the sweep once (both models, every method and reference), on one seed and
#: one sparsity with a few epochs: the same code path as the real sweep, fast enough for a test
#: (tests/test_commands.py). Its numbers mean nothing.
SMOKE = {**_C, **pruning_sweep.QUICK, "seeds": [0], "sparsities": [0.9], "dense": {**_C["dense"], "epochs": 2},
         "finetune": {**_C["finetune"], "epochs": 2, "prune_epochs": 1},
         "layerwise": {**_C["layerwise"], "scan_sparsities": [0.5, 0.9]}, "logistic_C": [1.0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: benchmarks/results/pruning_sweep_cpu.json)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--quick", action="store_true", help="two seeds, two sparsities: a smoke test")
    how.add_argument("--smoke", action="store_true", help="every job once, one seed, a few epochs (seconds)")
    args = parser.parse_args(argv)
    if (args.quick or args.smoke) and args.out is None:
        parser.error("--quick and --smoke must not overwrite the committed results: add --out <file.json>")
    config = (SMOKE if args.smoke else {**pruning_sweep.CONFIG, **pruning_sweep.QUICK} if args.quick
              else pruning_sweep.CONFIG)
    rows, extra = pruning_sweep.run(config)
    path = pruning_sweep.save(rows, extra, args.out or pruning_sweep.SWEEP_NAME)
    print(f"wrote {path} ({len(rows)} runs, {extra['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
