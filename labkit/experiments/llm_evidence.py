"""What the language-model sweep supports, sentence by sentence, each with its 95% interval.

Notebook 06 and the README state only what these functions compute from
``benchmarks/results/llm_prune_cpu.json`` (``benchmarks/llm_prune_sweep.py``). Every row of that file keeps
its per-window losses, so any two models can be compared with a *paired* bootstrap
(:func:`labkit.llm.stats.paired_ratio`): both scored on the same resampled windows. A threshold ("within
1.5x dense") or an ordering ("SparseGPT beats Wanda") is decided only when the whole interval is on one
side; otherwise the sentence says "not resolved by this evaluation".
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import torch

from labkit.llm import stats

#: Names of the methods in sentences and tables.
LABELS = {"dense": "dense", "magnitude": "magnitude (per row)", "magnitude_layer": "magnitude (per layer)",
          "magnitude_global": "magnitude (global)", "random": "random mask", "wanda": "Wanda",
          "sparsegpt": "SparseGPT", "structured": "structured (FFN)"}
#: The unstructured methods in teaching order: the floor, the baselines, the language-model methods.
UNSTRUCTURED = ("random", "magnitude_layer", "magnitude", "magnitude_global", "wanda", "sparsegpt")


def _rows(sweep: Mapping) -> list[Mapping]:
    if not isinstance(sweep, Mapping) or not isinstance(sweep.get("rows"), list):
        raise TypeError("sweep must be the dict results.read('llm_prune_cpu', 'llm_prune') returns")
    missing = [r.get("method") for r in sweep["rows"] if "window_losses" not in r]
    if missing:
        raise ValueError(f"rows of {missing[:3]} have no window_losses: the file predates the paired evaluation; "
                         "rerun `python benchmarks/llm_prune_sweep.py`")
    return sweep["rows"]


def find(sweep: Mapping, method: str, pattern: str = "unstructured", sparsity: float = 0.5,
         seed: int | None = None) -> Mapping | None:
    """The row of ``method`` x ``pattern`` at ``sparsity`` (``ffn_keep`` for structured; the first seed of
    ``random`` unless ``seed`` is given), or ``None`` if the sweep has none."""
    for r in _rows(sweep):
        value = r.get("ffn_keep", r["sparsity"])
        if (r["method"] == method and r["pattern"] == pattern and abs(value - sparsity) < 1e-9
                and (seed is None or r.get("seed") == seed)):
            return r
    return None


def dense(sweep: Mapping) -> Mapping:
    """The unpruned model's row."""
    row = find(sweep, "dense", "dense", 0.0)
    if row is None:
        raise ValueError("the sweep has no dense row: rerun `python benchmarks/llm_prune_sweep.py`")
    return row


def label(row: Mapping) -> str:
    """``"Wanda 50%"``, ``"SparseGPT 2:4"``, ``"structured (FFN), 50% kept"``."""
    name = LABELS.get(row["method"], row["method"])
    if row["method"] == "dense":
        return name
    if "ffn_keep" in row:
        return f"{name}, {100 * row['ffn_keep']:g}% kept"
    if row["pattern"] != "unstructured":
        return f"{name} {row['pattern']}"
    return f"{name} {100 * row['sparsity']:g}%"


def compare(a: Mapping, b: Mapping) -> dict:
    """Perplexity of row ``a`` over row ``b``, paired over the same windows: ``{"ratio", "ci"}``."""
    return stats.paired_ratio(a["window_losses"], b["window_losses"])


def number(value: float) -> str:
    """A perplexity or ratio, readable at any size: ``1.64``, ``29.2``, ``1,927``, ``5.4e+07``."""
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}" if value < 1e6 else f"{value:.1e}"


def ratio_cell(row: Mapping) -> str:
    """``"29.2 (1.64x [1.57-1.71])"``: perplexity, then its ratio to dense with the paired 95% interval."""
    low, high = row["ratio_ci"]
    return f"{number(row['perplexity'])} ({number(row['ratio'])}x [{number(low)}-{number(high)}])"


def perplexity_table(sweep: Mapping, methods: Sequence[str] = UNSTRUCTURED,
                     sparsities: Sequence[float] = (0.3, 0.5, 0.7, 0.9)) -> str:
    """A text table: for each method and sparsity, the perplexity and its ratio to dense [paired 95% CI]."""
    d = dense(sweep)
    lines = [f"dense: perplexity {d['perplexity']:.2f} (95% CI {d['perplexity_ci'][0]:.2f}-{d['perplexity_ci'][1]:.2f})"
             f" on {len(d['window_losses'])} windows",
             f"{'method':<24}{'sparsity':>9}{'perplexity':>12}   x dense [95% CI, paired]"]
    for method in methods:
        for s in sparsities:
            r = find(sweep, method, "unstructured", s)
            if r:
                low, high = r["ratio_ci"]
                lines.append(f"{LABELS[method]:<24}{f'{100 * s:g}%':>9}{number(r['perplexity']):>12}   "
                             f"{number(r['ratio'])} [{number(low)}-{number(high)}]")
    return "\n".join(lines)


def random_floor(sweep: Mapping, pattern: str = "unstructured", sparsity: float = 0.5) -> dict | None:
    """The random masks' perplexities at one setting, over their seeds: ``{"seeds", "min", "max", "median"}``."""
    values = [r["perplexity"] for r in _rows(sweep)
              if r["method"] == "random" and r["pattern"] == pattern and abs(r["sparsity"] - sparsity) < 1e-9]
    if not values:
        return None
    return {"seeds": len(values), "min": min(values), "max": max(values), "median": statistics.median(values)}


def ordering_lines(sweep: Mapping, pairs: Sequence[tuple[str, str]] = (
        ("sparsegpt", "wanda"), ("wanda", "magnitude"), ("magnitude", "magnitude_layer"), ("magnitude", "random")),
        settings: Sequence[tuple[str, float]] = (("unstructured", 0.3), ("unstructured", 0.5), ("2:4", 0.5),
                                                 ("4:8", 0.5), ("unstructured", 0.7))) -> list[str]:
    """"A beats B" sentences, paired over windows, for each pair at each setting both rows exist."""
    lines = []
    for pattern, sparsity in settings:
        for a_name, b_name in pairs:
            a, b = find(sweep, a_name, pattern, sparsity), find(sweep, b_name, pattern, sparsity)
            if a and b:
                ratio = compare(a, b)
                lines.append(stats.beats_text(label(a), label(b), ratio["ratio"], ratio["ci"]))
    return lines


def highest_within(sweep: Mapping, method: str, threshold: float = 1.5) -> dict:
    """The highest swept sparsity at which ``method`` is *resolved* within ``threshold`` x dense, and the
    sparsities where the evaluation cannot tell: ``{"resolved": s or None, "unresolved": [s, ...]}``."""
    verdicts = {r["sparsity"]: stats.verdict(r["ratio_ci"], threshold) for r in _rows(sweep)
                if r["method"] == method and r["pattern"] == "unstructured" and r.get("seed") in (None, 0)}
    below = [s for s, v in verdicts.items() if v == "below"]
    return {"resolved": max(below) if below else None,
            "unresolved": sorted(s for s, v in verdicts.items() if v == "not resolved")}


def threshold_lines(sweep: Mapping, threshold: float = 1.5,
                    methods: Sequence[str] = ("magnitude", "magnitude_layer", "wanda", "sparsegpt")) -> list[str]:
    """For each method: the highest swept sparsity resolved within ``threshold`` x dense, and the settings
    this evaluation cannot decide (their intervals straddle the threshold)."""
    lines = []
    for method in methods:
        found = highest_within(sweep, method, threshold)
        best = f"{100 * found['resolved']:g}%" if found["resolved"] is not None else "none of the swept sparsities"
        line = f"{LABELS[method]}: highest sparsity within {threshold:g}x dense: {best}"
        if found["unresolved"]:
            line += ("; not resolved by this evaluation at " +
                     ", ".join(f"{100 * s:g}%" for s in found["unresolved"]))
        lines.append(line)
    for pattern in ("2:4", "4:8"):
        for method in ("magnitude", "wanda", "sparsegpt"):
            r = find(sweep, method, pattern)
            if r:
                lines.append(stats.within_text(label(r), r["ratio"], r["ratio_ci"], threshold))
    return lines


def equal_size_lines(sweep: Mapping, methods: Sequence[str] = ("wanda", "sparsegpt")) -> list[str]:
    """Same number of weights removed, different cut: each structured row against the unstructured rows
    of ``methods`` at the same share of the block matrices, paired over windows."""
    lines = []
    for s in sorted((r for r in _rows(sweep) if r["method"] == "structured"), key=lambda r: -r["ffn_keep"]):
        head = f"{label(s)} = {100 * s['block_sparsity']:g}% of the block weights: {ratio_cell(s)}"
        lines.append(head)
        for method in methods:
            u = find(sweep, method, "unstructured", s["block_sparsity"])
            if u:
                ratio = compare(s, u)
                lines.append(f"  vs {label(u)}: {ratio_cell(u)}; "
                             + stats.beats_text("structured", LABELS[method], ratio["ratio"], ratio["ci"]))
    return lines


def calibration_lines(sweep: Mapping) -> list[str]:
    """The calibration study: perplexity (x dense [CI]) by calibration size and domain, per method and pattern,
    with the main rows (32 help-text sequences) in place."""
    study = sweep.get("calibration_study")
    if not isinstance(study, Mapping) or not study.get("rows"):
        raise ValueError("the sweep has no calibration_study block: rerun "
                         "`python benchmarks/llm_prune_sweep.py --only calibration`")
    main = study.get("main_calibration", {"domain": "help", "sequences": 32})
    lines = []
    for method in ("wanda", "sparsegpt"):
        for pattern in ("unstructured", "2:4"):
            cells = {(r["domain"], r["sequences"]): r for r in study["rows"]
                     if r["method"] == method and r["pattern"] == pattern}
            row = find(sweep, method, pattern)
            if row:
                cells[(main["domain"], main["sequences"])] = row
            if not cells:
                continue
            name = f"{LABELS[method]} {'50%' if pattern == 'unstructured' else pattern}"
            lines.append(f"{name}:")
            for (domain, n), r in sorted(cells.items(), key=lambda kv: (kv[0][0] != "help", kv[0][0], kv[0][1])):
                lines.append(f"  {domain:<8} {n:>4} x 128 tokens: {ratio_cell(r)}")
    return lines


def cloze_lines(sweep: Mapping, resamples: int = stats.RESAMPLES, seed: int = 0) -> list[str]:
    """Cloze accuracy of every row that has it, with its 95% interval and the paired difference from dense."""
    d = dense(sweep)
    if "cloze" not in d:
        raise ValueError("the dense row has no cloze result: rerun `python benchmarks/llm_prune_sweep.py`")
    base = torch.tensor(d["cloze"]["correct"], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, base.numel(), (resamples, base.numel()), generator=generator)
    lines = [f"{'model':<26}{'accuracy [95% CI]':>22}{'minus dense [95% CI, paired]':>34}"]
    for r in _rows(sweep):
        if "cloze" not in r:
            continue
        c = r["cloze"]
        own = f"{100 * c['accuracy']:.0f}% [{100 * c['ci'][0]:.0f}-{100 * c['ci'][1]:.0f}]"
        diff = ""
        if r is not d:
            mine = torch.tensor(c["correct"], dtype=torch.float64)
            deltas = (mine[index] - base[index]).mean(dim=1)
            low, high = torch.quantile(deltas, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
            diff = f"{100 * float((mine - base).mean()):+.0f} points [{100 * low:+.0f} to {100 * high:+.0f}]"
        lines.append(f"{label(r):<26}{own:>22}{diff:>34}")
    return lines
