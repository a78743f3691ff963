"""Every number in the README's results section is found in the source it names.

The section is "### What the lab measured on a CPU (committed results)" and "### GPU results" (up to the
next ``## `` heading). The rule, kept simple and strict:

1. **Items.** The section is split into items: a top-level bullet (``- `` and its indented or blank
   continuation lines, tables included), a paragraph, or a fenced code block.
2. **Sources.** An item that holds a number must name its source(s): a committed results file
   ``benchmarks/results/<name>.json`` and/or a notebook ("notebook 05", "notebooks 02 and 03": its
   committed outputs). An item without numbers needs none.
3. **Numbers.** Every number of the item's text is a claim, except: inline code (paths, commands), the
   source references themselves ("notebook 05", "section 6"), names that contain digits (``H200``,
   ``fp32``, ``SmolLM2-135M``) and configuration names written ``N:M`` (2:4) or ``NxM`` (1024x1024,
   16x16). Handled forms: ``1,024``, ``2.5M`` (x 10^6), ``97.8 ± 1.6%``, ``1.3x``, ranges
   ``7.8-10.3`` (each end is a number), percentages.
4. **Found.** A number shown with ``d`` decimals is found when a value of a named source rounds to it
   (within half a unit of its last digit). Values of a results file: every number in it (leaves, numbers
   inside its strings and numeric keys) and every number of the lab's own summary of that schema
   (:data:`SUMMARIES`: ``pruning_sweep.summarize`` means and 95% intervals, ``moe_routing.sweep_table``).
   Values of a notebook: every number in its committed text outputs. Known conversions, and only these:
   a percentage may be a fraction (``0.978`` -> 97.8%) or one minus a fraction (density 0.1 -> 90%
   sparsity); a duration in minutes must be seconds / 60 of a value. A multiplier ``Nx`` not found so
   is *derived*: it must be the ratio of two other numbers shown in the same item, each found in the
   sources ("26.0 ... 17.47 dense ... 1.49x dense"), so a ratio is never found by searching every pair
   of values of a large file.

Anything else (a threshold chosen in prose, a run time nobody recorded) has no source and fails: record
it in the results file, or print it in the notebook the item names. The failure lists each item with
its sources and every number not found, so a re-run that changed a result shows which sentence to edit.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADINGS = ("### What the lab measured on a CPU (committed results)", "### GPU results")


# ------------------------------------------------------------------------------------------ the README


def results_section(text: str) -> str:
    """The README's results section: from the first of :data:`HEADINGS` to the next ``## `` heading."""
    start = text.index(HEADINGS[0])
    end = text.find("\n## ", start)
    section = text[start:] if end < 0 else text[start:end]
    assert HEADINGS[1] in section, f"the README's results section lost its heading {HEADINGS[1]!r}"
    return section


def items(section: str) -> list[str]:
    """Bullets (with their indented continuation), paragraphs and fenced code blocks, headings left out."""
    out: list[list[str]] = []
    kind = None  # "bullet", "paragraph", "code"
    for line in section.splitlines():
        if kind == "code":
            out[-1].append(line)
            if line.startswith("```"):
                kind = None
            continue
        if line.startswith("```"):
            out.append([line])
            kind = "code"
        elif line.startswith("#"):
            kind = None
        elif line.startswith("- "):
            out.append([line])
            kind = "bullet"
        elif not line.strip():
            if kind == "paragraph":
                kind = None
            elif kind == "bullet":
                out[-1].append(line)
        elif kind == "bullet" and line.startswith((" ", "\t")):
            out[-1].append(line)
        elif kind == "paragraph":
            out[-1].append(line)
        else:
            out.append([line])
            kind = "paragraph"
    return ["\n".join(lines).strip() for lines in out]


# ---------------------------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Number:
    """A number as shown: its text, value, the half-width of its last digit, and what follows it."""

    text: str
    value: float
    half_unit: float
    percent: bool = False
    multiplier: bool = False
    minutes: bool = False


NOT_CLAIMS = [
    re.compile(r"`[^`]*`"),  # inline code: paths, commands, identifiers
    re.compile(r"\bnotebooks?\s+\d\d(?:(?:\s*,\s*|\s+and\s+)\d\d)*"),  # source references
    re.compile(r"\bsections?\s+\d+"),
    re.compile(r"\b[A-Za-z]\w*\d\w*(?:-\w+)*"),  # names holding digits: H200, fp32, SmolLM2-135M
    re.compile(r"\b\d+[:x]\d+\b"),  # configuration names: 2:4, 1024x1024, 16x16
]
NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(M\b)?")
PERCENT_AFTER = re.compile(r"\s*(?:±\s*[\d.,]+\s*)?%")  # "97.8 ± 1.6%": both numbers are percentages


def numbers(text: str) -> list[Number]:
    """Every number claim of ``text`` (see the module docstring for what is not a claim)."""
    text = re.sub(r"^```.*$", " ", text, flags=re.MULTILINE)  # a code block's fences; its text is read
    for pattern in NOT_CLAIMS:
        text = pattern.sub(" ", text)
    found = []
    for m in NUMBER.finditer(text):
        whole, frac, mega = m.group(1).replace(",", ""), m.group(2) or "", m.group(3)
        scale = 1e6 if mega else 1.0
        decimals = len(frac) - 1 if frac else 0
        after = text[m.end():]
        found.append(Number(m.group(0), float(whole + frac) * scale, 0.5 * 10.0 ** -decimals * scale,
                            percent=bool(PERCENT_AFTER.match(after)),
                            multiplier=after.startswith("x") and not after[1:2].isalnum(),
                            minutes=bool(re.match(r"\s*min(?:ute)?s?\b", after))))
    return found


def string_numbers(text: str) -> list[float]:
    """The numbers written in a string of a results file or a notebook output (all of them, as values)."""
    return [float(m.group(1).replace(",", "") + (m.group(2) or "")) for m in
            re.finditer(r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?", text)]


# ---------------------------------------------------------------------------------------------- sources


def _pruning_summary(data: dict) -> object:
    from labkit.experiments import pruning_sweep

    return [pruning_sweep.summarize(data, model) for model in data["config"]["models"]]


def _moe_summary(data: dict) -> object:
    from labkit.experiments import moe_routing

    return moe_routing.sweep_table(data)


#: The lab's own summary of a results schema: the README may quote its numbers (means, intervals).
SUMMARIES: dict[str, Callable[[dict], object]] = {"pruning_sweep": _pruning_summary, "moe_train": _moe_summary}


@dataclass
class Source:
    """The values a source holds."""

    name: str
    values: np.ndarray


#: Raw per-sample data in a results file (per-window losses, per-item answers): thousands of numbers that
#: no sentence quotes, which would let almost any small number be "found" by coincidence.
RAW_DATA_KEYS = {"window_losses", "correct"}


def _walk(node: object, values: list[float]) -> None:
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, (int, float)):
        values.append(float(node))
    elif isinstance(node, str):
        values.extend(string_numbers(node))
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in RAW_DATA_KEYS:
                continue
            values.extend(string_numbers(str(k)))
            _walk(v, values)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _walk(v, values)


def results_source(path: Path) -> Source:
    data = json.loads(path.read_text(encoding="utf-8"))
    values: list[float] = []
    _walk(data, values)
    summary = SUMMARIES.get(data.get("schema", ""))
    if summary is not None:
        _walk(summary(data), values)
    return Source(path.name, np.array(values))


def notebook_source(path: Path) -> Source:
    values: list[float] = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        for out in cell.get("outputs", []):
            for text in (out.get("text"), out.get("data", {}).get("text/plain")):
                if text:
                    values.extend(string_numbers("".join(text)))
    return Source(f"notebook {path.name}", np.array(values))


def sources_named(item: str) -> list[Source]:
    """The results files and notebooks an item names."""
    found = []
    for name in dict.fromkeys(re.findall(r"benchmarks/results/[\w.\-]+\.json", item)):
        path = ROOT / name
        assert path.exists(), f"the README names {name}, which is not committed"
        found.append(results_source(path))
    for ref in re.findall(r"\bnotebooks?\s+(\d\d(?:(?:\s*,\s*|\s+and\s+)\d\d)*)", item):
        for nn in re.findall(r"\d\d", ref):
            paths = sorted((ROOT / "notebooks").glob(f"{nn}_*.ipynb"))
            assert paths, f"the README names notebook {nn}, which does not exist"
            found.append(notebook_source(paths[0]))
    return found


# ------------------------------------------------------------------------------------------ the matching


def _near(values: np.ndarray, target: float, half_unit: float) -> bool:
    return bool(values.size) and bool(np.any(np.abs(values - target) <= half_unit * (1 + 1e-9) + 1e-12))


def is_found(number: Number, sources: list[Source]) -> bool:
    """True when some value of ``sources`` shows as ``number`` (with the conversions of the docstring)."""
    for s in sources:
        candidates = [s.values / 60] if number.minutes else [s.values]
        if number.percent:
            candidates += [100 * s.values, 100 * (1 - s.values)]
        if any(_near(c, number.value, number.half_unit) for c in candidates):
            return True
    return False


def is_ratio_of(number: Number, shown: list[Number]) -> bool:
    """True when ``number`` is a / b for two of the ``shown`` numbers, allowing for their own rounding
    as long as that rounding moves the ratio by less than ``number``'s own last digit."""
    for a in shown:
        for b in shown:
            if a is b or b.value == 0 or a is number or b is number:
                continue
            ratio = a.value / b.value
            slack = a.half_unit / abs(b.value) + abs(a.value) * b.half_unit / b.value ** 2
            # Operands too coarse to give the ratio to its shown precision (0.03 / 0.01) derive nothing.
            if slack <= number.half_unit and abs(ratio - number.value) <= number.half_unit + slack + 1e-12:
                return True
    return False


@dataclass
class Finding:
    item: str
    sources: list[str]
    missing: list[str]

    def __str__(self) -> str:
        head = self.item.splitlines()[0][:90]
        named = ", ".join(self.sources) if self.sources else "NO SOURCE NAMED"
        return f"- {head!r}\n    sources: {named}\n    not found: {', '.join(self.missing)}"


def check(section: str) -> Iterator[Finding]:
    """One finding per item with a number that its named sources do not hold."""
    for item in items(section):
        claims = numbers(item)
        if not claims:
            continue
        sources = sources_named(item)
        found = [n for n in claims if is_found(n, sources)]
        operands = [n for n in found if not n.multiplier]
        missing = [n.text + ("%" if n.percent else "x" if n.multiplier else "") for n in claims
                   if n not in found and not (n.multiplier and is_ratio_of(n, operands))]
        if missing:
            yield Finding(item, [s.name for s in sources], missing)


# ---------------------------------------------------------------------------------------------- the tests


def test_every_number_of_the_readme_results_section_is_in_its_named_source():
    findings = list(check(results_section(README.read_text(encoding="utf-8"))))
    assert not findings, ("README results section: numbers without a source (name a benchmarks/results/*.json "
                          "file or a notebook in the item, and make sure it holds them):\n"
                          + "\n".join(map(str, findings)))


def test_number_forms():
    shown = {n.text: n for n in numbers("a 1,024-token layer at 97.8 ± 1.6% and 2.5M, 1.3x, 7.8-10.3 s, 54 minutes")}
    assert shown["1,024"].value == 1024 and shown["1,024"].half_unit == 0.5
    assert shown["97.8"].percent and shown["1.6"].percent and abs(shown["1.6"].half_unit - 0.05) < 1e-12
    assert shown["2.5M"].value == 2.5e6 and shown["2.5M"].half_unit == pytest.approx(5e4)
    assert shown["1.3"].multiplier and not shown["7.8"].multiplier
    assert shown["7.8"].value == 7.8 and shown["10.3"].value == 10.3 and shown["54"].minutes


def test_names_references_and_code_are_not_claims():
    text = ("SmolLM2-135M on an H200 in fp32 with 2:4 and 16x16 blocks, notebooks 02 and 03, section 6, "
            "`benchmarks/results/x_2026.json`")
    assert numbers(text) == []


def test_matching_rounds_converts_and_refuses():
    source = Source("s.json", np.array([0.9783, 0.1, 3233.4, 26.04, 17.47, 2.094]))
    found = {n.text: is_found(n, [source]) for n in numbers("97.8% 90% 54 minutes 2.1x 26.0 17.5 97.9% 3233 minutes")}
    assert found == {"97.8": True, "90": True, "54": True, "2.1": True, "26.0": True, "17.5": True,
                     "97.9": False, "3233": False}
    assert not is_found(numbers("26.0")[0], [])  # no source: nothing is found


def test_a_derived_multiplier_is_the_ratio_of_numbers_shown_beside_it():
    shown = numbers("26.0 against 17.47 dense: 1.49x dense, not 1.6x")
    assert is_ratio_of(shown[2], shown[:2]) and not is_ratio_of(shown[3], shown[:2])
    coarse = numbers("0.03 and 0.01: 2.7x")
    assert not is_ratio_of(coarse[2], coarse[:2])  # 0.03 / 0.01 could be anything from 2.5 to 7
    section = (f"{HEADINGS[0]}\n\n- SparseGPT 27.4, dense 18.09: 1.51x dense, and 9.731x the FLOPs "
               f"(`benchmarks/results/llm_prune_cpu.json`).\n\n{HEADINGS[1]}\n")
    assert [f.missing for f in check(section)] == [["9.731x"]]


def test_items_need_a_source_and_report_what_is_missing():
    section = (f"{HEADINGS[0]}\n\n- **A claim.** 42.5 with no source\n  and a second line.\n\n"
               f"- No numbers here, so no source is needed.\n\n{HEADINGS[1]}\n\nA paragraph: 7 things.\n")
    findings = list(check(section))
    assert [f.missing for f in findings] == [["42.5"], ["7"]]
    assert "NO SOURCE NAMED" in str(findings[0]) and "A claim" in str(findings[0])
