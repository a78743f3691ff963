"""tests/nbval_sanitize.cfg masks live timings but not the durations read from committed results files.

The rules are read with nbval's own parser and applied the way nbval applies them (``re.sub`` of each
rule, in file order), so these tests see what nbval compares.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
RULES = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8"))


def sanitize(text: str) -> str:
    for regex, replace in RULES:
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize("live", [
    "update time: max 3 ms (the lab's budget is 200 ms)",
    "dense  batch   1:    80.80 us per inference",
    "pruned in 9.9 s; perplexity 30.35",
    "took 1.4 min",
    "12ms",
    "1.5 µs per call",
    "7 ms (CPU)",  # a live timing that names this machine is still live
])
def test_live_timings_are_masked(live):
    masked = sanitize(live)
    assert "<T>" in masked and not re.search(r"\d\s?(ns|us|µs|ms|s|min)\b", masked), masked


@pytest.mark.parametrize("recorded", [
    "torch bsr_dense_mm M=8192 bs=32 density=0.5    5.827 ms (H200)   0.251x dense",
    "fp32 with TF32 off: 10.86 ms (H200), 50.6 TFLOP/s",
    "dense 1.735 ms (H200) at 700 W",
    "Wanda      50%: pruned all 210 matrices in 10 s (sweep machine)",
    "1.036 ms(H100)",
])
def test_durations_from_committed_files_are_compared(recorded):
    assert sanitize(recorded) == recorded


def test_only_the_marker_right_after_the_unit_counts():
    assert sanitize("5.827 ms, H200") == "<T>, H200"
    assert sanitize("5.827 ms per call (H200)") == "<T> per call (H200)"


#: A cell that reads a committed results file (its printed durations are recorded, not live).
READS_RESULTS = re.compile(r"results\.read\(|pytorch_baselines")


def test_durations_read_from_committed_files_are_printed_with_their_machine():
    """Every compared cell that reads a committed results file keeps its durations through the sanitizer."""
    masked = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        for index, cell in enumerate(cells):
            source = "".join(cell["source"])
            if source.startswith("# NBVAL_IGNORE_OUTPUT") or not READS_RESULTS.search(source):
                continue
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", []) if out.get("name") == "stdout" else [])
                if "<T>" in sanitize(text):
                    masked.append(f"{path.name} Cell {index}: " + next(
                        line for line in text.splitlines() if "<T>" in sanitize(line)).strip())
    assert not masked, ("durations read from a committed file are masked by nbval_sanitize.cfg; print them as "
                        "'<value> ms (H200)' (the recording machine right after the unit):\n  " + "\n  ".join(masked))
