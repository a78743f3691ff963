"""Notebook 07's evidence: healing curves, quantization rows, and the map of every SmolLM2 model the lab makes.

Three committed results files, each written by a committed script:

* ``llm_prune_cpu.json`` (``benchmarks/llm_prune_sweep.py``): one-shot pruning and structured pruning;
* ``llm_heal_cpu.json`` (``benchmarks/llm_heal_sweep.py``): pruned models trained with their masks held fixed;
* ``llm_quant_cpu.json`` (``benchmarks/llm_quant_sweep.py``): RTN and GPTQ quantization, alone and with pruning,
  and its ``speed`` block: every form with a faster CPU kernel (bf16, int8, int4, structured) timed *in turns*
  with dense, so their speeds share one machine load.

All three score the same 64 evaluation windows, and their dense rows hold the same per-window losses
(:func:`load_all` checks it), so every model can be compared with every other by a *paired* bootstrap
(:func:`labkit.llm.stats.paired_ratio`). As in :mod:`labkit.experiments.llm_evidence`, an ordering or a
threshold is stated only when its whole 95% interval is on one side.

The map (:func:`map_points`): one point per model, its bytes in the smallest format the lab prices for it
(:func:`labkit.llm.quantized_bytes`, :func:`labkit.llm.model_bytes`), its perplexity ratio to dense with the
interval, and its decode speed where it was timed in turns. :func:`frontier` keeps the models no other model
*clearly* beats (no larger, and better by a resolved margin, or the same losses for fewer bytes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from labkit import results
from labkit.experiments import llm_evidence
from labkit.llm import stats

#: The three files notebook 07 reads: ``{key: (file name, schema)}``.
FILES = {"prune": ("llm_prune_cpu", "llm_prune"), "heal": ("llm_heal_cpu", "llm_heal"),
         "quant": ("llm_quant_cpu", "llm_quant")}
#: Families of models on the map, in legend order.
FAMILIES = ("dense", "quantized", "pruned", "healed", "pruned + quantized", "structured")


def load_all(folder=None) -> dict[str, dict]:
    """``{"prune", "heal", "quant"}``: the three results files, checked to share one dense model's window losses."""
    files = {key: results.read(results.path_of(name, folder), schema) for key, (name, schema) in FILES.items()}
    reference = torch.tensor(dense_losses(files["prune"]))
    for key in ("heal", "quant"):
        other = torch.tensor(dense_losses(files[key]))
        if other.shape != reference.shape or not torch.allclose(other, reference, atol=1e-4):
            raise ValueError(f"{FILES[key][0]}.json scores another dense model or other windows than "
                             f"{FILES['prune'][0]}.json: its ratios cannot be paired; rerun its script")
    return files


def dense_losses(file: Mapping) -> list[float]:
    """The dense model's per-window losses in one of the three files."""
    if "dense" in file and "window_losses" in file["dense"]:  # llm_heal keeps its dense model apart
        return list(file["dense"]["window_losses"])
    for r in file.get("rows", []):
        if r.get("method") == "dense":
            return list(r["window_losses"])
    raise ValueError("the results file has no dense row with window_losses: rerun its script")


def _paired(losses: Sequence[float], baseline: Sequence[float]) -> dict:
    """:func:`labkit.llm.stats.paired_ratio` of two models' window losses: ``{"ratio", "ci"}``."""
    return stats.paired_ratio(losses, baseline)


# ---------------------------------------------------------------------------------------------------- healing

def heal_row(heal: Mapping, method: str, pattern: str = "unstructured", sparsity: float = 0.5,
             objective: str = "distill") -> Mapping | None:
    """The healing run of ``method`` x ``pattern`` at ``sparsity`` with ``objective`` (``None`` if absent)."""
    for r in heal["rows"]:
        if (r["method"], r["pattern"], r["objective"]) == (method, pattern, objective) \
                and abs(r["sparsity"] - sparsity) < 1e-9:
            return r
    return None


def heal_label(row: Mapping) -> str:
    """``"Wanda 50%"``, ``"SparseGPT 2:4"``, ``"dense"`` (a healing run's starting model)."""
    if row["method"] == "dense":
        return "dense"
    name = llm_evidence.LABELS.get(row["method"], row["method"])
    return f"{name} {row['pattern']}" if row["pattern"] != "unstructured" else f"{name} {row['sparsity']:.0%}"


def _full(point: Mapping) -> bool:
    return point.get("windows") is None  # None: all evaluation windows were scored at this point


def heal_lines(heal: Mapping) -> list[str]:
    """One sentence per distillation run: start -> end ratio to dense, CPU-minutes, and whether the gain is resolved."""
    lines = []
    for r in heal["rows"]:
        if r["objective"] != "distill":
            continue
        first, last = r["curve"][0], r["curve"][-1]
        if not (_full(first) and _full(last)):
            raise ValueError(f"{heal_label(r)}: the first and last points of a curve must score all windows")
        gain = _paired(last["window_losses"], first["window_losses"])
        verdict = stats.verdict(gain["ci"], 1.0)
        said = {"below": "better, resolved", "above": "worse, resolved"}.get(verdict, "change not resolved")
        lines.append(f"{heal_label(r):<16} {stats.ratio_text(first['ratio'], first['ratio_ci'])} -> "
                     f"{stats.ratio_text(last['ratio'], last['ratio_ci'])} dense after {r['steps']} steps, "
                     f"{r['cpu_seconds'] / 60:.1f} CPU-min ({said})")
    return lines


def heal_comparisons(heal: Mapping) -> list[str]:
    """Which starting point heals best: the healed models compared pairwise, each comparison decided or not."""
    pairs = ((("sparsegpt", "unstructured", 0.5), ("wanda", "unstructured", 0.5)),
             (("sparsegpt", "2:4", 0.5), ("wanda", "2:4", 0.5)),
             (("magnitude", "unstructured", 0.5), ("wanda", "unstructured", 0.5)),
             (("sparsegpt", "unstructured", 0.7), ("wanda", "2:4", 0.5)))
    lines = []
    for a_key, b_key in pairs:
        a, b = heal_row(heal, *a_key), heal_row(heal, *b_key)
        if a is None or b is None:
            continue
        ratio = _paired(a["curve"][-1]["window_losses"], b["curve"][-1]["window_losses"])
        lines.append(stats.beats_text(f"healed {heal_label(a)}", f"healed {heal_label(b)}", ratio["ratio"],
                                      ratio["ci"]))
    return lines


def control_lines(heal: Mapping) -> list[str]:
    """The next-token objective against its control, the dense model fine-tuned the same way."""
    pruned = heal_row(heal, "wanda", objective="next_token")
    control = heal_row(heal, "dense", "dense", 0.0, objective="next_token")
    distilled = heal_row(heal, "wanda")
    if pruned is None or control is None:
        return []
    end = {k: r["curve"][-1] for k, r in (("pruned", pruned), ("control", control))}
    lines = [f"Wanda 50%, next-token loss: {stats.ratio_text(end['pruned']['ratio'], end['pruned']['ratio_ci'])} "
             "the original dense model",
             f"the dense model fine-tuned the same way (the control): "
             f"{stats.ratio_text(end['control']['ratio'], end['control']['ratio_ci'])} the original dense model"]
    versus = _paired(end["pruned"]["window_losses"], end["control"]["window_losses"])
    lines.append(f"so, against the control: Wanda 50% next-token is {stats.ratio_text(versus['ratio'], versus['ci'])} "
                 "the fine-tuned dense model")
    if distilled is not None:
        d = distilled["curve"][-1]
        lines.append(f"(Wanda 50% distilled: {stats.ratio_text(d['ratio'], d['ratio_ci'])} the original dense model, "
                     "whose quality is distillation's ceiling)")
    return lines


# --------------------------------------------------------------------------------------------------- quantization

def quant_row(quant: Mapping, method: str, bits: int | None = None, group_size: int | None = None,
              symmetric: bool = False, pattern: str = "none") -> Mapping | None:
    """The quantization sweep's row for one case (``None`` if absent)."""
    for r in quant["rows"]:
        if (r["method"], r["bits"], r["group_size"], r["symmetric"], r["pattern"]) == (
                method, bits, group_size, symmetric, pattern):
            return r
    return None


def grid_label(bits: int | None, group_size: int | None, symmetric: bool = False) -> str:
    """``"4-bit, groups of 32"``, ``"8-bit, per channel, symmetric"``."""
    groups = "per channel" if group_size is None else f"groups of {group_size}"
    return f"{bits}-bit, {groups}" + (", symmetric" if symmetric else "")


def quant_label(row: Mapping) -> str:
    """A row of the quantization sweep in words: ``"GPTQ 3-bit, groups of 32"``, ``"SparseGPT 2:4 + GPTQ 4-bit..."``."""
    grid = grid_label(row["bits"], row["group_size"], row["symmetric"])
    if row["method"] == "dense":
        return "dense"
    if row["method"] in ("rtn", "gptq"):
        return f"{row['method'].upper()} {grid}"
    prune, quantizer = row["method"].split("+")
    cut = "50%" if row["pattern"] == "unstructured" else row["pattern"]
    return f"{llm_evidence.LABELS.get(prune, prune)} {cut} + {quantizer.upper()} {grid}"


def trap_line(quant: Mapping) -> str:
    """What RTN at the file's own grid (4-bit, scale + min, groups of 32) did to the weights."""
    r = quant_row(quant, "rtn", 4, 32)
    if r is None:
        raise ValueError("the quantization sweep has no RTN 4-bit row in groups of 32: rerun its script")
    return (f"RTN {grid_label(4, 32)} (the file's Q4_1 grid): {100 * r['unchanged_share']:.1f}% of the block weights "
            f"unchanged, perplexity {r['perplexity']:.2f} = {stats.ratio_text(r['ratio'], r['ratio_ci'])} dense")


def gptq_vs_rtn_lines(quant: Mapping) -> list[str]:
    """GPTQ against RTN at every grid both were run on, each ordering decided by a paired interval."""
    lines = []
    for r in quant["rows"]:
        if r["method"] != "gptq":
            continue
        rtn = quant_row(quant, "rtn", r["bits"], r["group_size"], r["symmetric"])
        if rtn is None:
            continue
        ratio = _paired(r["window_losses"], rtn["window_losses"])
        head = (f"{grid_label(r['bits'], r['group_size'], r['symmetric']):<32} RTN {rtn['ratio']:7.2f}x dense, "
                f"GPTQ {r['ratio']:5.2f}x: ")
        lines.append(head + stats.beats_text("GPTQ", "RTN", ratio["ratio"], ratio["ci"]))
    return lines


def joint_lines(quant: Mapping, prune: Mapping) -> list[str]:
    """Pruning and 4-bit quantization together, each next to the pruned float model it started from."""
    lines = []
    for r in quant["rows"]:
        if "+" not in r["method"]:
            continue
        method = r["method"].split("+")[0]
        alone = llm_evidence.find(prune, method, r["pattern"], 0.5)
        extra = ""
        if alone is not None:
            cost = _paired(r["window_losses"], alone["window_losses"])
            extra = f"; against {llm_evidence.label(alone)} unquantized: {stats.ratio_text(cost['ratio'], cost['ci'])}"
        lines.append(f"{quant_label(r):<48} {stats.ratio_text(r['ratio'], r['ratio_ci'])} dense{extra}")
    return lines


# ---------------------------------------------------------------------------------------------------------- speed

def speed_models(quant: Mapping) -> dict[str, Mapping]:
    """The models of the quantization sweep's speed block (timed in turns), by label."""
    block = quant.get("speed")
    if not isinstance(block, Mapping) or not block.get("models"):
        raise ValueError("llm_quant_cpu.json has no speed block: run "
                         "`python benchmarks/llm_quant_sweep.py --only speed`")
    return dict(block["models"])


def speed_lines(quant: Mapping) -> list[str]:
    """Each timed model's prompt and generation speed, and its speed-up over dense float32 in the same turns."""
    models = speed_models(quant)
    base = models["dense"]
    lines = []
    for label, m in models.items():
        lines.append(f"{label:<42} {m['held_bytes'] / 1e6:6.1f} MB held   prompt {m['prefill_tokens_per_s']:6.1f} "
                     f"tokens/s ({m['prefill_tokens_per_s'] / base['prefill_tokens_per_s']:.2f}x)   generation "
                     f"{m['decode_tokens_per_s']:5.1f} tokens/s "
                     f"({m['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x)")
    return lines


def speed_cases(quant: Mapping) -> list[dict]:
    """Cases for :func:`labkit.experiments.llm_energy.energy_table`: every model of the speed block.

    Weights multiplied per token: every weight of the dense model for the dense and weight-only kernels
    (int8/int4 multiply every weight, from fewer bytes), the smaller model's for structured pruning. Bytes:
    what each running model holds (its float32 embedding / LM head included), all read once per token.
    """
    models = speed_models(quant)
    dense_weights = models["dense"]["parameters"]
    return [{"label": label, "decode_tokens_per_s": m["decode_tokens_per_s"],
             "weights_read": m["parameters"] if m.get("kind") == "structured" else dense_weights,
             "weight_bytes": m["held_bytes"]} for label, m in models.items()]


# ------------------------------------------------------------------------------------------------------------ map

def _smallest(byte_table: Mapping[str, int | None], suffixes: Sequence[str]) -> tuple[str, int]:
    """The smallest format among ``byte_table``'s entries ending in one of ``suffixes``: ``(format, bytes)``."""
    options = {k: v for k, v in byte_table.items() if v is not None and k.endswith(tuple(suffixes))}
    if not options:
        raise ValueError(f"no format ending in {list(suffixes)} among {sorted(byte_table)}")
    key = min(options, key=lambda k: options[k])
    return key, int(options[key])


def _point(label: str, family: str, storage: tuple[str, int], ratio: float, ci: Sequence[float],
           losses: Sequence[float], source: str, speed: str | None = None) -> dict:
    return {"label": label, "family": family, "format": storage[0], "bytes": storage[1], "ratio": ratio,
            "ratio_ci": [float(ci[0]), float(ci[1])], "window_losses": list(losses), "source": source, "speed": speed}


def map_points(files: Mapping[str, Mapping]) -> list[dict]:
    """Every model the three files hold, one point each: bytes, ratio to dense (95% CI), losses, source, speed label.

    Float models are priced in float32, the precision their perplexity was measured in (bfloat16 would halve
    their bytes, but no bfloat16 model was scored), quantized ones with their integer codes and scales; each in
    the smallest format that holds it (dense, bitmask, 2:4; CSR never wins at 50%). Of the 8-bit rows (all within
    1% of dense) only the int8 kernel's grid is kept: symmetric, per channel. ``speed``: the label of the model
    timed in turns in the quantization sweep that runs this one, or
    ``None`` when no faster CPU kernel runs it (masked zeros run at dense speed). Next-token healing is left out:
    it adapts the model to help text, so its ratio is not comparable (see :func:`control_lines`).
    """
    prune, heal, quant = files["prune"], files["heal"], files["quant"]
    dense = llm_evidence.dense(prune)
    losses = dense["window_losses"]
    points = [_point("dense fp32", "dense", ("dense_fp32", dense["bytes"]["dense_fp32"]), 1.0, (1.0, 1.0), losses,
                     FILES["prune"][0], "dense")]
    models = speed_models(quant)
    int4 = next((k for k, m in models.items() if m.get("kind") == "int4"), None)
    int8 = next((k for k, m in models.items() if m.get("kind") == "int8"), None)
    for r in quant["rows"]:
        if r["method"] == "dense" or (r["method"] == "gptq" and r["unchanged_share"] == 1.0):
            continue  # dense is above; GPTQ at the file's own grid is the very same model as RTN there
        if r["bits"] == 8 and (r["group_size"], r["symmetric"]) != (None, True):
            continue  # 8 bits is lossless here whatever the groups: the map keeps the int8 kernel's grid only
        sparse = r["pattern"] != "none"
        storage = _smallest(r["bytes"], (f"int{r['bits']}",) if sparse else (f"dense_int{r['bits']}",))
        label = quant_label(r)
        speed = None
        if not sparse and r["method"] == "rtn" and (r["bits"], r["group_size"], r["symmetric"]) == (4, 32, False):
            label, speed = "4-bit Q4_1 as shipped (= RTN 4-bit, groups of 32)", int4
        elif not sparse and r["method"] == "rtn" and (r["bits"], r["group_size"], r["symmetric"]) == (8, None, True):
            speed = int8
        points.append(_point(label, "pruned + quantized" if sparse else "quantized", storage, r["ratio"],
                             r["ratio_ci"], r["window_losses"], FILES["quant"][0], speed))
    one_shot = {("wanda", "unstructured", 0.5), ("wanda", "2:4", 0.5), ("sparsegpt", "unstructured", 0.5),
                ("sparsegpt", "2:4", 0.5), ("sparsegpt", "unstructured", 0.7), ("magnitude", "unstructured", 0.5)}
    for method, pattern, sparsity in sorted(one_shot):
        r = llm_evidence.find(prune, method, pattern, sparsity)
        if r is None:
            continue
        storage = _smallest(r["bytes"], ("_fp32",))
        points.append(_point(llm_evidence.label(r), "pruned", storage, r["ratio"], r["ratio_ci"], r["window_losses"],
                             FILES["prune"][0]))
        healed = heal_row(heal, method, pattern, sparsity)
        if healed is not None:
            end = healed["curve"][-1]
            points.append(_point(f"{llm_evidence.label(r)}, healed {healed['cpu_seconds'] / 60:.0f} CPU-min",
                                 "healed", storage, end["ratio"], end["ratio_ci"], end["window_losses"],
                                 FILES["heal"][0]))
    structured_speed = {m.get("ffn_keep"): k for k, m in models.items() if m.get("kind") == "structured"}
    for r in prune["rows"]:
        if r["method"] == "structured":
            points.append(_point(llm_evidence.label(r), "structured", ("dense_fp32", r["bytes"]["dense_fp32"]),
                                 r["ratio"], r["ratio_ci"], r["window_losses"], FILES["prune"][0],
                                 structured_speed.get(r["ffn_keep"])))
    return points


#: Two models whose paired ratio stays this close to 1 over the whole interval score the same (float rounding of
#: the stored losses: the file's own 4-bit grid gives back the dense model's losses to about 1e-7).
SAME = 1e-5


def _compare(a: Mapping, b: Mapping) -> str:
    """``"same"`` (equal losses up to float rounding), or the verdict of the paired ratio ``a / b`` against 1."""
    ci = _paired(a["window_losses"], b["window_losses"])["ci"]
    if abs(ci[0] - 1) < SAME and abs(ci[1] - 1) < SAME:
        return "same"
    return stats.verdict(ci, 1.0)


def dominates(a: Mapping, b: Mapping) -> bool:
    """Does model ``a`` clearly beat ``b``? No more bytes, and a paired ratio ``a / b`` whose whole interval is
    below 1 (better, resolved), or the same window losses (up to float rounding, :data:`SAME`) in fewer bytes."""
    if a is b or a["bytes"] > b["bytes"]:
        return False
    verdict = _compare(a, b)
    return verdict == "below" or (verdict == "same" and a["bytes"] < b["bytes"])


def frontier(points: Sequence[Mapping]) -> list[Mapping]:
    """The models no other model clearly beats (:func:`dominates`), smallest first: the map's frontier.

    A model whose difference from a smaller one is not resolved stays on it: the evaluation cannot tell them apart.
    """
    kept = [p for p in points if not any(q is not p and dominates(q, p) for q in points)]
    return sorted(kept, key=lambda p: (p["bytes"], p["ratio"]))


def best_within(points: Sequence[Mapping], budget_bytes: float) -> dict | None:
    """The best model (lowest ratio) of at most ``budget_bytes``, and those the evaluation cannot tell from it.

    Returns ``{"best", "ties"}`` (``ties``: models within the budget whose paired ratio to the best has an
    interval containing 1, or that score the same), or ``None`` when no model fits.
    """
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float)) or budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be a positive number of bytes (e.g. 100e6), got {budget_bytes!r}")
    fits = [p for p in points if p["bytes"] <= budget_bytes]
    if not fits:
        return None
    best = min(fits, key=lambda p: (p["ratio"], p["bytes"]))
    ties = [p for p in fits if p is not best and _compare(p, best) in ("same", "not resolved")]
    return {"best": best, "ties": ties}


def budget_text(points: Sequence[Mapping], budget_bytes: float, speeds: Mapping[str, Mapping] | None = None) -> str:
    """A sentence on the best model within ``budget_bytes`` (with its interval, ties and speed where timed)."""
    pick = best_within(points, budget_bytes)
    if pick is None:
        smallest = min(points, key=lambda p: p["bytes"])
        return (f"no model of the map fits in {budget_bytes / 1e6:.0f} MB "
                f"(the smallest: {smallest['bytes'] / 1e6:.1f} MB)")
    best = pick["best"]
    text = (f"best within {budget_bytes / 1e6:.0f} MB: {best['label']} "
            f"({best['bytes'] / 1e6:.1f} MB as {best['format']}), "
            f"perplexity {stats.ratio_text(best['ratio'], best['ratio_ci'])} dense")
    if pick["ties"]:
        text += "; not resolved from it: " + ", ".join(p["label"] for p in pick["ties"])
    if speeds is not None and best["speed"] is not None:
        base, own = speeds["dense"], speeds[best["speed"]]
        text += f"; generation {own['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x dense fp32 (in turns)"
    elif speeds is not None:
        text += ("; its speed was not timed (the speed block times dense, bf16, int8 by RTN, int4 at the file's "
                 "grid and structured models; masked zeros run at dense speed)")
    return text


def frontier_lines(points: Sequence[Mapping]) -> list[str]:
    """The frontier, model by model, then each family's standing: how many of its models are on the frontier, and
    for a family with none, its best model and a model that clearly beats it (no larger, resolved better)."""
    front = frontier(points)
    lines = [f"{len(points)} models on the map, {len(front)} on the frontier:"]
    lines += [f"{p['label']:<52} {p['bytes'] / 1e6:6.1f} MB  {stats.ratio_text(p['ratio'], p['ratio_ci'])} dense"
             f"  [{p['family']}]" for p in front]
    lines.append("")
    for family in FAMILIES:
        members = [p for p in points if p["family"] == family]
        if not members:
            continue
        on = [p for p in members if any(p is q for q in front)]
        if on:
            lines.append(f"{family}: {len(on)} of {len(members)} on the frontier")
            continue
        best = min(members, key=lambda p: (p["ratio"], p["bytes"]))
        beaters = [q for q in points if dominates(q, best)]
        beater = min(beaters, key=lambda q: q["bytes"])
        lines.append(f"{family}: none of {len(members)} on the frontier; its best, {best['label']} "
                     f"({best['bytes'] / 1e6:.0f} MB, {best['ratio']:.2f}x), is beaten by {beater['label']} "
                     f"({beater['bytes'] / 1e6:.0f} MB, {beater['ratio']:.2f}x)")
    return lines
