"""The multi-seed pruning sweep behind notebooks 01 and 02 and the pruning explorer.

What it runs and why is described in :mod:`labkit.experiments.pruning_sweep`; this script only
parses the command line and writes the results envelope (``labkit.results``).

Usage (54 minutes measured on a busy, shared 2-core machine; a progress bar shows the rest)::

    python benchmarks/pruning_sweep.py                 # writes benchmarks/results/pruning_sweep_cpu.json
    python benchmarks/pruning_sweep.py --quick --out /tmp/sweep.json   # a 2-seed smoke run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.experiments import pruning_sweep  # noqa: E402 (after the path insert)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: benchmarks/results/pruning_sweep_cpu.json)")
    parser.add_argument("--quick", action="store_true", help="two seeds, two sparsities: a smoke test")
    args = parser.parse_args(argv)
    config = {**pruning_sweep.CONFIG, **pruning_sweep.QUICK} if args.quick else pruning_sweep.CONFIG
    rows, extra = pruning_sweep.run(config)
    path = pruning_sweep.save(rows, extra, args.out or pruning_sweep.SWEEP_NAME)
    print(f"wrote {path} ({len(rows)} runs, {extra['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
