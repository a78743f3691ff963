"""Energy per generated token of a (pruned) language model on a CPU, and its carbon per million tokens.

A CPU without a readable energy sensor (no RAPL, as on most laptops' VMs and CI runners) cannot
*measure* joules, so both figures here are **estimates**, side by side, because they fail differently:

* **assumed power x time**: ``watts / (tokens per second)``. The wattage is an assumption, stated and
  cited (:data:`POWER_SOURCE`); it scales with time only, so it credits pruning exactly with the
  speed-up it gave, and nothing else.
* **the FLOP/byte model** of :mod:`labkit.energy` (Horowitz, ISSCC 2014, 45 nm): the multiply-adds and
  the weight bytes one generated token executes, priced per operation. Decoding one token reads every
  weight once, so bytes dominate: a format that stores fewer bytes saves energy in this model even
  where the CPU runs no faster.

Carbon per million tokens uses :func:`labkit.carbon.footprint`, with the region and PUE stated.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from labkit import carbon, checks
from labkit.energy import WorkCounts

#: CodeCarbon's fallback when its table of processors does not know the CPU: 4 W per thread.
ASSUMED_WATTS_PER_THREAD = 4.0
POWER_SOURCE = ("CodeCarbon 3.3.2 (mlco2/codecarbon) fallback for a CPU missing from its power table: "
                "4 W per thread ('default power consumption of 4 W per thread')")
TOKENS_PER_MILLION = 1_000_000


def assumed_watts(threads: int) -> float:
    """The assumed CPU power for ``threads`` busy threads (:data:`ASSUMED_WATTS_PER_THREAD` each)."""
    return ASSUMED_WATTS_PER_THREAD * checks.positive_int("threads", threads)


def joules_per_token(tokens_per_s: float, watts: float) -> float:
    """Assumed power x time: ``watts`` held for the ``1 / tokens_per_s`` seconds one token takes."""
    tokens_per_s = checks.finite("tokens_per_s", tokens_per_s, low=0.0)
    watts = checks.finite("watts", watts, low=0.0)
    if tokens_per_s == 0:
        raise ValueError("tokens_per_s must be > 0: a model that generates nothing has no energy per token")
    return watts / tokens_per_s


def decode_work(weights_read: int, weight_bytes: int) -> WorkCounts:
    """FLOPs and bytes of one generated token: one multiply-add per weight the kernel multiplies
    (``weights_read``, zeros included when it runs dense), every stored weight byte read once.

    Attention over the KV cache and the norms add under 1% at the lab's short contexts: left out, and said so.
    """
    weights_read = checks.positive_int("weights_read", weights_read)
    weight_bytes = checks.positive_int("weight_bytes", weight_bytes)
    return WorkCounts(flops=2 * weights_read, bytes_moved=weight_bytes)


def model_joules(work: WorkCounts) -> float:
    """The FLOP/byte model's joules for ``work`` (arithmetic + DRAM traffic, fp32)."""
    return sum(r.value for r in work.readings())


def grams_per_million(joules: float, region: str, pue: float = 1.0) -> float:
    """gCO2e of ``TOKENS_PER_MILLION`` tokens at ``joules`` each, in ``region`` (estimated energy)."""
    joules = checks.finite("joules", joules, low=0.0)
    return 1000 * carbon.footprint(joules * TOKENS_PER_MILLION, region, pue=pue, energy_kind="estimated").kg_co2e


#: What a sweep row must hold to price a case (its speed comes from the side_by_side block, timed in turns).
ROW_FIELDS = ("method", "pattern", "sparsity", "parameters", "model_sparsity", "bytes")


def _check_row(row: Mapping) -> Mapping:
    missing = [k for k in ROW_FIELDS if k not in row]
    if missing:
        raise ValueError(f"sweep row {row.get('method')!r} {row.get('pattern')!r} lacks {missing}: rerun "
                         "`python benchmarks/llm_prune_sweep.py`")
    return row


def _case(label: str, tokens_per_s: float, row: Mapping, csr: bool) -> dict:
    """A case run through dense kernels (every stored weight multiplied, fp32 bytes of the model as it is:
    zeros included; structured: the smaller model), or through CSR (only the nonzeros multiplied, the CSR bytes)."""
    if csr:
        return {"label": label, "decode_tokens_per_s": tokens_per_s,
                "weights_read": round((1 - row["model_sparsity"]) * row["parameters"]),
                "weight_bytes": row["bytes"]["csr_fp32"]}
    return {"label": label, "decode_tokens_per_s": tokens_per_s, "weights_read": row["parameters"],
            "weight_bytes": row["bytes"]["dense_fp32"]}


def side_by_side_cases(sweep: Mapping) -> list[dict]:
    """Energy-table cases for the CPU models of the sweep's ``side_by_side`` block, in its order.

    Those models were timed in turns, under the same machine load, so their speeds compare fairly (the
    sweep's rows were timed minutes apart). Each takes its weights and bytes from the sweep row with
    the same magnitude mask (``magnitude`` at that pattern and sparsity; structured: the same share of
    FFN channels kept): the side-by-side models were pruned the same way.
    """
    block = sweep.get("side_by_side") if isinstance(sweep, Mapping) else None
    if not isinstance(block, Mapping) or not block.get("models"):
        raise ValueError("the sweep has no side_by_side block of speeds measured in turns: run "
                         "`python benchmarks/llm_prune_sweep.py --side-by-side`")
    rows = [_check_row(r) for r in sweep["rows"]]

    def row_for(model: Mapping) -> Mapping:
        kind = model.get("kind")
        for r in rows:
            if ((kind == "dense" and r["method"] == "dense")
                    or (kind == "structured" and r.get("ffn_keep") == model.get("ffn_keep"))
                    or (r["method"] == "magnitude" and r["pattern"] == kind
                        and (kind != "unstructured" or abs(r["sparsity"] - model["block_sparsity"]) < 0.01))):
                return r
        raise ValueError(f"no sweep row matches the side-by-side model {model}: rerun "
                         "`python benchmarks/llm_prune_sweep.py`")

    return [_case(label, m["decode_tokens_per_s"], row_for(m), csr=m.get("runs_as") == "torch CSR")
            for label, m in block["models"].items() if m.get("kind") != "block" and not label.startswith("GPU")]


def energy_table(cases: Sequence[Mapping], *, threads: int = 2, region: str = "WORLD",
                 pue: float = 1.0) -> list[dict]:
    """One row per case: both energy estimates per generated token and carbon per million tokens.

    Each case gives ``label``, ``decode_tokens_per_s`` (measured), ``weights_read`` (weights the
    kernel multiplies per token) and ``weight_bytes`` (bytes of the weights in the format it runs).
    """
    if isinstance(cases, Mapping) or not isinstance(cases, Sequence) or not cases:
        raise TypeError("cases must be a non-empty list of dicts with label, decode_tokens_per_s, weights_read, "
                        "weight_bytes")
    watts = assumed_watts(threads)
    rows = []
    for case in cases:
        missing = [k for k in ("label", "decode_tokens_per_s", "weights_read", "weight_bytes") if k not in case]
        if missing:
            raise ValueError(f"case {case.get('label', case)!r} lacks {missing}")
        work = decode_work(case["weights_read"], case["weight_bytes"])
        timed, modeled = joules_per_token(case["decode_tokens_per_s"], watts), model_joules(work)
        rows.append({"label": case["label"], "decode_tokens_per_s": case["decode_tokens_per_s"], "watts": watts,
                     "power_time_j": timed, "model_j": modeled, "flops": work.flops, "bytes": work.bytes_moved,
                     "g_per_million_power_time": grams_per_million(timed, region, pue),
                     "g_per_million_model": grams_per_million(modeled, region, pue)})
    return rows


def energy_text(rows: Sequence[Mapping], region: str = "WORLD", pue: float = 1.0) -> str:
    """The table as text, every number labelled *estimated*, with its assumptions underneath."""
    w = max(28, 2 + max(len(r["label"]) for r in rows))  # the case column fits the longest label
    lines = [f"{'case':<{w}}{'tokens/s':>9}{'mJ/token':>10}{'mJ/token':>10}{'gCO2e per 1M tokens':>22}",
             f"{'':<{w}}{'measured':>9}{'P x t':>10}{'model':>10}{'P x t':>11}{'model':>11}"]
    for r in rows:
        lines.append(f"{r['label']:<{w}}{r['decode_tokens_per_s']:>9.1f}{1000 * r['power_time_j']:>10.1f}"
                     f"{1000 * r['model_j']:>10.2f}{r['g_per_million_power_time']:>11.1f}"
                     f"{r['g_per_million_model']:>11.2f}")
    grid = carbon.intensity(region)
    lines += ["ESTIMATED, not measured (no CPU energy sensor used):",
              f"  P x t: {rows[0]['watts']:g} W assumed ({POWER_SOURCE}) / measured tokens per second",
              "  model: 2 FLOPs per weight multiplied + every weight byte read once per token, priced with "
              "Horowitz (ISSCC 2014, 45 nm); attention and norms left out",
              f"  carbon: {grid.name} grid {grid.g_per_kwh:g} gCO2e/kWh ({grid.year}), PUE {pue:g}"]
    return "\n".join(lines)
