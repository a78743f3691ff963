"""Notebook hygiene: the rules every committed notebook must keep.

Under 1 MB, no saved widget state, code cells executed in order, no error outputs (unless the
cell is marked to raise), and a first cell that states learning objectives and minutes.
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted(p for p in (Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
MAX_BYTES = 1_000_000


def test_there_are_notebooks_named_nn_topic():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"
    assert NOTEBOOKS[0].name.startswith("00_"), "the first notebook must be 00_..."
    for p in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name), f"{p.name}: name notebooks NN_topic.ipynb"


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def _raises(cell):
    src = "".join(cell["source"])
    tags = cell.get("metadata", {}).get("tags", [])
    return "NBVAL_RAISES_EXCEPTION" in src or "raises-exception" in tags


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size / 1e6:.2f} MB; keep notebooks under 1 MB (no inlined plotly.js)"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert "widgets" not in nb.get("metadata", {}), (
        f"{path.name} stores widget state (metadata.widgets); re-run `make notebooks`, which strips it"
    )
    counts = [c.get("execution_count") for c in _code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: code cells must be executed top to bottom in one run (got {counts[:10]}...); "
        "run `make notebooks`"
    )
    for i, cell in enumerate(nb["cells"]):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors or _raises(cell), f"{path.name}: cell {i} has an error output: {errors[0].get('ename')}"
    first = "".join(nb["cells"][0]["source"]) if nb["cells"] else ""
    assert re.search(r"(?i)learn|objective", first), f"{path.name}: the first cell must list learning objectives"
    assert re.search(r"(?i)\b\d+\s*(min|minutes)\b", first), (
        f"{path.name}: the first cell must say how many minutes it takes"
    )
    assert re.search(r"(?i)prerequisite", first), f"{path.name}: the first cell must list prerequisites"
