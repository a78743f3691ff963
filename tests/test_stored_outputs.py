"""The committed notebook outputs come from a quiet machine.

The notebooks' stored outputs are also the docs site, so a page whose timings were taken while other
programs competed for the CPU teaches the wrong lesson (CSR "never" beating dense, structured pruning at
1.00x). nbval cannot catch that: timing cells are ``# NBVAL_IGNORE_OUTPUT``. This test reads the
committed ``.ipynb`` files from disk and fails when a stored output holds

* a ``BusyMachineWarning`` (:class:`labkit.latency.BusyMachineWarning`, printed on stderr), or
* a timing spread (a line with "spread" and a percentage, e.g. ``timing spread (interquartile range /
  median, worst path): 39088%``) above :data:`labkit.latency.BUSY_SPREAD` (25%). The bound is the lab's
  own definition of a busy machine: above it ``cpu_linear_latency`` warns that close calls are noise,
  so a stored page above it is, by the lab's rule, a page from a busy machine. On a quiet 2-core machine
  the worst path's spread stays well under it.

The fix for a failure is never to edit the output: re-execute the notebook on a quiet machine
(``python scripts/run_notebooks.py notebooks/NN_x.ipynb`` with the load average below 1).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from labkit.latency import BUSY_SPREAD

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

#: A percentage on a line that talks about a spread: "spread ...: 1421%", "spread by up to 39,088%".
SPREAD = re.compile(r"spread\b[^\n%]*?(\d[\d,]*(?:\.\d+)?)\s?%")


def output_texts(cell: dict) -> list[str]:
    """Every text a code cell's stored outputs show: streams, text/plain results, errors' tracebacks."""
    texts = []
    for out in cell.get("outputs", []):
        for value in (out.get("text"), out.get("data", {}).get("text/plain"), out.get("traceback")):
            if value:
                texts.append("".join(value) if isinstance(value, list) else value)
    return texts


def busy_outputs(notebook: dict) -> list[str]:
    """One line per stored output that shows a busy machine, naming the cell as nbval does ("Cell N")."""
    problems = []
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    for index, cell in enumerate(code_cells):
        first_line = "".join(cell["source"]).split("\n", 1)[0] if cell["source"] else ""
        where = f"Cell {index} (execution count {cell.get('execution_count')}, first line {first_line!r})"
        for text in output_texts(cell):
            if "BusyMachineWarning" in text:
                problems.append(f"{where}: a BusyMachineWarning")
            for match in SPREAD.finditer(text):
                percent = float(match.group(1).replace(",", ""))
                if percent > 100 * BUSY_SPREAD:
                    problems.append(f"{where}: a timing spread of {percent:,.0f}% (bound {100 * BUSY_SPREAD:.0f}%)")
    return list(dict.fromkeys(problems))  # the warning repeats the printed spread: say it once


def test_there_are_notebooks_to_check():
    assert len(NOTEBOOKS) >= 7, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_come_from_a_quiet_machine(path):
    problems = busy_outputs(json.loads(path.read_text(encoding="utf-8")))
    assert not problems, (f"{path.name} was executed on a busy machine; re-execute it on a quiet one "
                          "(load average below 1):\n  " + "\n  ".join(problems))


def _notebook(*outputs: dict, source: str = "rows = latency.cpu_linear_latency()") -> dict:
    return {"cells": [{"cell_type": "markdown", "source": ["# title"]},
                      {"cell_type": "code", "source": [source], "execution_count": 3, "outputs": list(outputs)}]}


def _stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": [text]}


def test_checker_finds_a_busy_machine_warning_and_a_wide_spread():
    notebook = _notebook(
        _stream("timing spread (interquartile range / median, worst path): 39,088%\n"),
        _stream("/tmp/ipykernel_1/2.py:2: BusyMachineWarning: timings spread by up to 1421% (interquartile range "
                "/ median): the machine looks busy.\n", name="stderr"))
    problems = busy_outputs(notebook)
    assert any("Cell 0" in p and "BusyMachineWarning" in p for p in problems), problems
    assert any("39,088%" in p for p in problems) and any("1,421%" in p for p in problems), problems


def test_checker_passes_a_quiet_spread_and_reads_results_too():
    quiet = _notebook(_stream("timing spread (interquartile range / median, worst path): 7%\n"),
                      {"output_type": "execute_result", "data": {"text/plain": "spread 12 %"}})
    assert busy_outputs(quiet) == []
    loud = _notebook({"output_type": "execute_result", "data": {"text/plain": ["spread: ", "60%"]}})
    assert len(busy_outputs(loud)) == 1
