"""Notebook 08's evidence: activation sparsity against structured pruning, read from ``llm_activation_cpu.json``.

``benchmarks/llm_activation_sweep.py`` writes the file: perplexity rows (with per-window losses and paired
ratios to dense) for uniform and greedy activation sparsity and for structured pruning, and a ``speed`` block
of decode speeds timed in turns. This module joins the two:

* :func:`trade_points`: one point per row that was timed: quality (ratio to dense, 95% CI), decode tokens/s,
  the speed-up over the dense model as ``transformers`` runs it and over the *fair* dense baseline (the plain
  loop with the transposed layout, the layout the sparse gather reads), bytes read per token.
* :func:`best_within`: per technique, the fastest point whose whole interval lies within ``threshold`` x
  dense perplexity; points whose interval straddles the threshold are listed apart, never counted.
* :func:`explorer_table`: everything the explorer shows, per setting, computed once.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from labkit import results
from labkit.llm import stats

FILE = "llm_activation_cpu"
#: The two dense baselines of the speed block: as shipped, and the fair one (same layout as the gather).
SHIPPED = "dense, transformers"
FAIR = "dense, plain loop, W^T"
TECHNIQUES = ("activation uniform", "activation greedy", "structured")


def load(folder=None) -> dict:
    """The committed sweep (schema ``llm_activation``; ``folder``: where the results files are, default the
    lab's); raises with the command that rebuilds it."""
    sweep = results.read(results.path_of(FILE, folder), "llm_activation")
    if "speed" not in sweep or SHIPPED not in sweep["speed"].get("models", {}):
        raise ValueError(f"{FILE}.json has no speed block with {SHIPPED!r}: rerun "
                         "`python benchmarks/llm_activation_sweep.py`")
    return sweep


def technique(row: Mapping) -> str:
    """``"dense"``, ``"activation uniform"``, ``"activation greedy"`` or ``"structured"``."""
    if row.get("method") == "activation":
        return f"activation {row['allocation']}"
    return str(row.get("method"))


def label(row: Mapping) -> str:
    """The row's label in the speed block (the same words the sweep timed it under)."""
    if row["method"] == "dense":
        return SHIPPED
    if row["method"] == "activation":
        return f"activation {row['allocation']} {row['sparsity']:.0%}"
    return f"structured {row['ffn_keep']:.0%} of FFN kept"


def dense_row(sweep: Mapping) -> Mapping:
    """The dense row (the baseline of every ratio)."""
    for row in sweep["rows"]:
        if row["method"] == "dense":
            return row
    raise ValueError("the sweep has no dense row: rerun `python benchmarks/llm_activation_sweep.py`")


def trade_points(sweep: Mapping) -> list[dict]:
    """Every row with a decode speed in the speed block, as a point of the quality-speed trade (dense first)."""
    models = sweep["speed"]["models"]
    shipped, fair = models[SHIPPED]["decode_tokens_per_s"], models[FAIR]["decode_tokens_per_s"]
    points = []
    for row in sweep["rows"]:
        name = label(row)
        if name not in models:
            continue
        speed = models[name]["decode_tokens_per_s"]
        points.append({"label": name, "technique": technique(row), "sparsity": row["sparsity"],
                       "ratio": row["ratio"], "ratio_ci": list(row["ratio_ci"]), "perplexity": row["perplexity"],
                       "decode_tokens_per_s": speed, "speedup": speed / shipped, "speedup_fair": speed / fair,
                       "bytes_per_token": row["bytes_per_token"]["total"],
                       "weight_reads_skipped": row.get("weight_reads_skipped")})
    return points


def best_within(points: Sequence[Mapping], threshold: float = 1.2) -> dict[str, dict]:
    """``{technique: {"best": fastest point resolved within threshold or None, "unresolved": [labels]}}``."""
    out: dict[str, dict] = {}
    for name in TECHNIQUES:
        mine = [p for p in points if p["technique"] == name]
        within = [p for p in mine if stats.verdict(p["ratio_ci"], threshold) == "below"]
        out[name] = {"best": max(within, key=lambda p: p["decode_tokens_per_s"]) if within else None,
                     "unresolved": [p["label"] for p in mine if stats.verdict(p["ratio_ci"], threshold)
                                    == "not resolved"]}
    return out


def best_within_lines(points: Sequence[Mapping], threshold: float = 1.2) -> list[str]:
    """One sentence per technique: its fastest setting within ``threshold`` x dense, decided on the interval."""
    lines = []
    for name, entry in best_within(points, threshold).items():
        best = entry["best"]
        if best is None:
            head = f"{name}: no setting resolved within {threshold:g}x dense perplexity"
        else:
            head = (f"{name}: fastest within {threshold:g}x dense is {best['label']}: perplexity "
                    f"{stats.ratio_text(best['ratio'], best['ratio_ci'])} dense, decode "
                    f"{best['decode_tokens_per_s']:.1f} tokens/s = {best['speedup']:.2f}x the shipped dense, "
                    f"{best['speedup_fair']:.2f}x the fair dense")
        if entry["unresolved"]:
            head += f" (not resolved against {threshold:g}x: {', '.join(entry['unresolved'])})"
        lines.append(head)
    return lines


def explorer_table(sweep: Mapping) -> dict[tuple[str, float], dict]:
    """``{(allocation, sparsity): entry}`` for every activation row (and ``("uniform", 0.0)`` for dense).

    Each entry: ``text`` (perplexity with interval, ratio, share skipped, bytes per token, decode speed where
    timed) and ``sample`` (the greedy answer to the sweep's prompt), computed once for the explorer.
    """
    models = sweep["speed"]["models"]
    shipped, fair = models[SHIPPED]["decode_tokens_per_s"], models[FAIR]["decode_tokens_per_s"]
    table = {}
    for row in sweep["rows"]:
        if row["method"] == "structured":
            continue
        key = ("uniform", 0.0) if row["method"] == "dense" else (row["allocation"], row["sparsity"])
        speed = models.get(label(row), {}).get("decode_tokens_per_s")
        if row["method"] == "dense":
            speed = shipped
        pieces = [f"perplexity {row['perplexity']:.2f} (95% CI {row['perplexity_ci'][0]:.2f}-"
                  f"{row['perplexity_ci'][1]:.2f}), {stats.ratio_text(row['ratio'], row['ratio_ci'])} dense"]
        if row.get("weight_reads_skipped") is not None:
            pieces.append(f"{row['weight_reads_skipped']:.0%} of block weight reads skipped on the evaluation text")
        pieces.append(f"{row['bytes_per_token']['total'] / 1e6:.0f} MB of weights read per token")
        pieces.append("decode not timed at this setting" if speed is None else
                      f"decode {speed:.1f} tokens/s ({speed / shipped:.2f}x shipped dense, {speed / fair:.2f}x "
                      "fair dense)")
        table[key] = {"text": "; ".join(pieces), "sample": row.get("sample", "")}
    return table
