"""IsoFLOP sweep: the tiny character GPT of notebook 04 trained at fixed compute budgets (Hoffmann et al. 2022).

For each budget C (FLOPs, counted as 6 N D with N the non-embedding parameters), five model sizes are trained
on D = C / (6N) tokens each, for several seeds; labkit.experiments.isoflop.isoflop_table fits each budget's
loss against log N and reads off the best size and its tokens per parameter. Sizes per budget were chosen from
timing and shape probes so that the smallest and largest model lose to the middle ones (that is the curve).

Usage (on a quiet 2-core CPU; each finished run is written at once, so --resume continues a run cut short)::

    python benchmarks/isoflop_sweep.py                 # ~25 minutes: writes benchmarks/results/isoflop_cpu.json
    python benchmarks/isoflop_sweep.py --resume        # skip the runs already in the file
    python benchmarks/isoflop_sweep.py --quick --out /tmp/isoflop_quick.json   # seconds: a smoke run

Each run trains with one torch thread (these models are too small to gain from two; one thread has no
other thread to wait for on a busy machine) and ``--jobs`` runs (default 2: one per core) train side by side.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

import labkit  # noqa: F401
from labkit import results
from labkit.data import text_corpus
from labkit.experiments import isoflop as iso

SCRIPT = "benchmarks/isoflop_sweep.py"
#: budget (FLOPs) -> the five sizes (names of iso.SIZES) trained at it. Chosen from one-seed probes: at each budget
#: the smallest and the largest size listed lost to a size between them (where probed, the sizes past them lost by
#: more). Half a decade apart, so N* ~ C^a spans one decade of compute. At 3e10 the smallest size was still the best
#: (the curve's minimum lies below 2.7k parameters), so the sweep starts at 1e11.
PLAN: dict[float, tuple[str, ...]] = {
    1e11: ("d16xL1", "d24xL1", "d32xL1", "d32xL2", "d48xL2"),
    3e11: ("d24xL1", "d32xL1", "d32xL2", "d48xL2", "d64xL2"),
    1e12: ("d32xL2", "d48xL2", "d64xL2", "d64xL4", "d96xL3"),
}
SEEDS = (0, 1, 2)
#: --quick: three small sizes, one tiny budget (about 10-40 steps each), one seed: a smoke run, not results.
QUICK_PLAN: dict[float, tuple[str, ...]] = {6e8: ("d16xL1", "d24xL1", "d32xL1")}
QUICK_SEEDS = (0,)
THREADS = 1


def _key(row: dict) -> tuple[float, str, int]:
    return float(row["budget"]), row["size"], row["seed"]


def _config(plan: dict[float, tuple[str, ...]], seeds: tuple[int, ...], jobs: int) -> dict:
    corpus = text_corpus()
    return {
        "plan": {f"{budget:g}": list(sizes) for budget, sizes in plan.items()}, "seeds": list(seeds),
        "model": "labkit.moe.tiny_gpt.TinyGPT, dense SwiGLU FFN (d_ff = 2 d_model), 4 heads, context "
                 f"{iso.BLOCK_SIZE}; sizes: " + ", ".join(f"{n} = {s}" for n, s in iso.SIZES.items()),
        "training": f"AdamW, peak lr {iso.LR_WIDTH:g} / d_model (no weight decay), 5% linear warm-up then cosine to "
                    f"{iso.FINAL_LR_SHARE:g}x over exactly the run, gradient clip {iso.GRAD_CLIP:g}, batches of "
                    f"{iso.BATCH_SIZE} x {iso.BLOCK_SIZE} characters, D = C / (6 N) rounded down to whole batches",
        "data": f"labkit.data.text_corpus() as notebook 04: {len(corpus.train)} training characters, validation "
                f"loss over all {len(corpus.val)} held-out characters in non-overlapping windows",
        "n_params": "non-embedding parameters (Kaplan et al. 2020): all but the token and position embeddings and "
                    "the output head; total_params counts everything (Hoffmann et al. 2022's convention)",
        "clock": f"train_seconds: wall time of the training loop, {THREADS} torch thread per run, {jobs} run(s) side "
                 "by side",
        "chinchilla": iso.CHINCHILLA, "carry_over": list(iso.CARRY_OVER)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny budget, 3 sizes, 1 seed: a smoke run "
                                                             "(needs --out)")
    parser.add_argument("--out", help="results file name or path (default isoflop_cpu in benchmarks/results)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out, train the rest")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained side by side (default 2, one per core)")
    args = parser.parse_args(argv)
    if args.quick and not args.out:
        parser.error("--quick must not overwrite the committed results: add --out <file>")
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    out = args.out or "isoflop_cpu"
    path = results.path_of(out)
    plan, seeds = (QUICK_PLAN, QUICK_SEEDS) if args.quick else (PLAN, SEEDS)
    config = _config(plan, seeds, args.jobs)
    previous = results.read(out, "isoflop") if args.resume and path.exists() else None
    if previous and previous["config"].get("training") != config["training"]:
        raise SystemExit(f"{path} was trained another way ({previous['config'].get('training')!r}): its rows would "
                         "not compare with this run's; run without --resume (or with another --out)")
    rows: list[dict] = previous["rows"] if previous else []
    done = {_key(r) for r in rows}
    todo = [(b, s, seed) for seed in seeds for b, sizes in plan.items() for s in sizes if (b, s, seed) not in done]
    # the most tokens first, so the last runs to finish are short ones and no core waits idle at the end
    vocab_size = text_corpus().vocab_size
    n_params = {s: iso.parameter_counts(s, vocab_size)["non_embedding"] for s in iso.SIZES}
    todo.sort(key=lambda job: -iso.tokens_for(job[0], n_params[job[1]]))
    print(f"{len(done)} runs kept, {len(todo)} to train", flush=True)
    checked = [iso.flop_check(s) for s in dict.fromkeys(s for sizes in plan.values() for s in sizes)]
    for c in checked:
        print(f"{c['size']:8s} N = {c['n_params']:7d}: flop_counter / 6ND = {c['ratio']:.2f} "
              f"(backward / forward {c['backward_over_forward']:.2f})", flush=True)

    start = time.perf_counter()
    earlier = float(previous["config"].get("sweep_minutes", 0.0)) if previous else 0.0

    def write(complete: bool) -> None:
        config["sweep_minutes"] = round(earlier + (time.perf_counter() - start) / 60, 1)
        results.write(out, sorted(rows, key=_key), script=SCRIPT, schema="isoflop",
                      extra={"config": config, "flop_check": checked, "complete": complete})

    # each worker process trains with THREADS torch thread(s)
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=torch.set_num_threads, initargs=(THREADS,)) as pool:
        # train_at_budget lives in labkit, so the worker processes can import it (a function of this script could
        # not be sent to them when the script is loaded by path, as the tests do); each reads the corpus (0.1 s)
        futures = [pool.submit(iso.train_at_budget, size, budget, seed, None, THREADS) for budget, size, seed in todo]
        for i, future in enumerate(as_completed(futures), 1):
            row = future.result()
            row.update(threads=THREADS, load_average_1min=round(os.getloadavg()[0], 2))
            rows.append(row)
            print(f"[{i}/{len(todo)}] C={row['budget']:.0e} {row['size']:7s} seed {row['seed']}: val loss "
                  f"{row['val_loss']:.4f}, {row['tokens_per_param']:.0f} tokens/param, {row['epochs']:.1f} epochs, "
                  f"{row['train_seconds']:.0f} s", flush=True)
            write(complete=False)  # a run cut short still leaves a valid file to --resume
    write(complete=True)
    for fit in iso.isoflop_table(rows, resamples=500 if args.quick else 2000):
        n_opt = f"{fit['n_opt']:.3g}" if fit["n_opt"] else "none (no minimum)"
        tpp = f"{fit['tokens_per_param']:.0f}" if fit["tokens_per_param"] else "-"
        ci = (f"{fit['level']:.0%} interval {fit['tokens_per_param_ci'][0]:.0f}-{fit['tokens_per_param_ci'][1]:.0f}"
              if fit["tokens_per_param_ci"] else "no interval (1 seed)")
        print(f"C={fit['budget']:.0e}: N* = {n_opt}, D*/N* = {tpp} tokens/param ({ci}); minimum bracketed: "
              f"{fit['bracketed']}, smallest and largest sizes worse: {fit['ends_worse']}")
    print(f"wrote {path} ({config['sweep_minutes']} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
