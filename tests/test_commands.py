"""Every committed command that produces a file runs, in a quick mode, into a temporary folder.

Issue 21: ``python benchmarks/moe_train_sweep.py --only grid``, which the README advertises, had rotted
(``rows[0].routed must be list, got tuple``) and nothing noticed. Here each script of ``benchmarks/`` and
``scripts/`` that writes a file is run as a learner would type it, with its quick mode (the same code path
on fewer cases), writing under ``tmp_path`` (``--out``, and ``LABKIT_RESULTS``/``LABKIT_CACHE`` pointing
there); the files it writes must read back through ``labkit.results``, and the committed results must be
left untouched. A script added later without a case here (or a named test that runs it) fails
:func:`test_every_script_that_writes_files_is_run_somewhere`.

Slow: about 6 minutes in all on a 2-core machine (more when it is busy), most of it
``llm_prune_sweep.py --quick`` (SmolLM2-135M pruned and evaluated: 93 s measured, 228 s under load) and
``llm_quant_sweep.py --quick`` (quantized, evaluated and its kernels timed: 109 s measured, 196 s at a load of 3);
every other case takes seconds. Every case is marked ``slow``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from labkit import results

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Command:
    """``python <script> <args>``; ``{tmp}`` in an argument is the test's temporary folder."""

    script: str
    args: tuple[str, ...]
    #: file written (relative to the temporary folder) -> its labkit.results schema (None: not a results file)
    writes: dict[str, str | None] = field(default_factory=dict)
    timeout_s: int = 600


COMMANDS = [
    # The README's command, exactly the case that rotted (a tuple in the rows), on a one-step grid.
    Command("benchmarks/moe_train_sweep.py", ("--only", "grid", "--quick", "--out-dir", "{tmp}"),
            {"moe_routing_grid.json": "moe_routing_grid"}),
    Command("benchmarks/moe_train_sweep.py", ("--quick", "--out-dir", "{tmp}"),
            {"moe_train_cpu.json": "moe_train", "moe_routing_grid.json": "moe_routing_grid"}),
    Command("benchmarks/pruning_sweep.py", ("--smoke", "--out", "{tmp}/pruning_sweep.json"),
            {"pruning_sweep.json": "pruning_sweep"}),
    # Being rewritten by the lead (issue 21); its quick mode must keep writing a valid llm_prune file.
    Command("benchmarks/llm_prune_sweep.py", ("--quick", "--out", "{tmp}/x.json"), {"x.json": "llm_prune"},
            timeout_s=900),
    # SmolLM2-135M quantized (RTN, GPTQ, SparseGPT + GPTQ) on 8 windows and its kernels timed: 109-196 s.
    Command("benchmarks/llm_quant_sweep.py", ("--quick", "--out", "{tmp}/q.json"), {"q.json": "llm_quant"},
            timeout_s=900),
    # SmolLM2-135M activation-sparse (uniform 30% and 50%) and structured 90% on 8 windows, timed in one round.
    Command("benchmarks/llm_activation_sweep.py", ("--quick", "--out", "{tmp}/a.json"),
            {"a.json": "llm_activation"}, timeout_s=900),
    # Needs an NVIDIA GPU: without one it must say so and exit 0 writing nothing; with one, a short run.
    Command("benchmarks/energy.py", ("--window", "0.2", "--idle", "0.1", "--size", "1024"), {}),
    Command("scripts/run_notebooks.py", ("{tmp}/tiny.ipynb",), {"tiny.ipynb": None}),
]

#: Scripts that write files but are run by a test elsewhere with the same smoke command (not run twice).
RUN_ELSEWHERE = {
    "benchmarks/kernels.py": ("tests/test_benchmark_kernels.py", "--smoke"),
    "benchmarks/moe.py": ("tests/test_moe_benchmark.py", "--smoke"),
    "benchmarks/sparse_gemv.py": ("tests/test_benchmark_sparse_gemv.py", "--smoke"),
    # main() run on a tiny Llama (the model loader replaced), --quick and --resume
    "benchmarks/llm_heal_sweep.py": ("tests/test_heal.py", "--quick"),
    "benchmarks/pytorch_baselines.py": ("tests/test_pytorch_baselines.py", "--smoke"),
    # main() --quick (one tiny budget, 3 sizes) and --resume, into a temporary file
    "benchmarks/isoflop_sweep.py": ("tests/test_isoflop.py", "--quick"),
    # main() --quick on the real SmolLM2 (2 hit rates, 6 requests), marked slow there
    "benchmarks/llm_cache_sweep.py": ("tests/test_llm_cache.py", "--quick"),
    # A one-time migration of the committed files to the envelope format, run there as a no-op.
    "scripts/reshape_results.py": ("tests/test_results.py", "reshape.main()"),
}
#: The GPU session wrapper: it runs the benchmark scripts above on a GPU machine (needs a built wheel).
NOT_RUN = {"benchmarks/gpu_session.sh"}


def _scripts() -> set[str]:
    found = {p for folder in ("benchmarks", "scripts") for p in (ROOT / folder).iterdir() if p.is_file()}
    return {str(p.relative_to(ROOT)) for p in found if p.suffix in (".py", ".sh")}


def test_every_script_that_writes_files_is_run_somewhere():
    run_here = {c.script for c in COMMANDS}
    unaccounted = sorted(_scripts() - run_here - set(RUN_ELSEWHERE) - NOT_RUN)
    assert not unaccounted, f"add a quick-mode case to tests/test_commands.py for {unaccounted}"
    for script, (test_file, marker) in RUN_ELSEWHERE.items():
        source = (ROOT / test_file).read_text()
        assert Path(script).name in source and marker in source, f"{test_file} no longer runs {script} ({marker})"
    for step in ("benchmarks/kernels.py", "benchmarks/sparse_gemv.py", "benchmarks/moe.py",
                 "benchmarks/energy.py"):  # what the wrapper runs
        assert step in (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_session.sh")], check=True)  # at least it parses


def _committed_state() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(COMMITTED.iterdir()) if p.is_file()}


def _tiny_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import labkit\nprint(6 * 7)")]
    nbformat.write(nb, path)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.script} {' '.join(c.args)}")
def test_command_runs_in_quick_mode_and_writes_readable_files(command, tmp_path):
    if command.script == "scripts/run_notebooks.py":
        _tiny_notebook(tmp_path / "tiny.ipynb")
    before = _committed_state()
    env = dict(os.environ, LABKIT_RESULTS=str(tmp_path / "results"), LABKIT_CACHE=str(tmp_path / "cache"),
               OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    args = [a.replace("{tmp}", str(tmp_path)) for a in command.args]
    proc = subprocess.run([sys.executable, command.script, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=command.timeout_s)
    output = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"{command.script} {' '.join(args)} failed:\n{output}"
    assert _committed_state() == before, "a quick run changed the committed files in benchmarks/results"
    for name, schema in command.writes.items():
        path = tmp_path / name
        assert path.is_file(), f"{command.script} did not write {name}:\n{output}"
        if schema is not None:
            assert results.read(path, schema)["rows"], f"{name} has no rows"
    if command.script == "benchmarks/energy.py":
        written = sorted((tmp_path / "results").glob("energy_*.json"))
        if torch.cuda.is_available():
            assert written and all(results.read(p, "energy")["rows"] for p in written), output
        else:
            assert not written and "no CUDA GPU" in output
    if command.script == "benchmarks/moe_train_sweep.py":
        from labkit.moe.routing_grid import load_routing_grid

        assert len(load_routing_grid(tmp_path / "moe_routing_grid.json")) == 42  # what the widget reads
        assert results.read(tmp_path / "moe_routing_grid.json", "moe_routing_grid")["steps"] == 1  # as run
    if command.script == "scripts/run_notebooks.py":
        cell = json.loads((tmp_path / "tiny.ipynb").read_text())["cells"][0]
        assert "".join(cell["outputs"][0]["text"]) == "42\n"  # nbformat may store text as a list of lines


@pytest.mark.parametrize("script, flag", [("benchmarks/pruning_sweep.py", "--quick"),
                                          ("benchmarks/pruning_sweep.py", "--smoke"),
                                          ("benchmarks/moe_train_sweep.py", "--quick"),
                                          ("benchmarks/llm_quant_sweep.py", "--quick")])
def test_quick_modes_refuse_to_overwrite_the_committed_results(script, flag):
    before = _committed_state()
    proc = subprocess.run([sys.executable, script, flag], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "must not overwrite the committed results" in proc.stderr, proc.stderr
    assert _committed_state() == before
