"""Convert the committed files in benchmarks/results to the results envelope (labkit.results), once.

    python scripts/reshape_results.py            # rewrites the files that are not envelopes yet

Every number is copied unchanged; only the layout changes:

* ``pruning_sweep_cpu.json``: ``runs`` -> ``rows``; ``torch``/``python`` -> ``versions``.
* ``moe_train_cpu.json``: ``torch``/``python`` -> ``versions``.
* ``moe_routing_grid.json``: ``points`` -> ``rows``; ``meta`` -> the envelope (``steps``, ``seed`` kept).
* ``pytorch_baselines_h200_2026-11-28.json``: a bare list of rows whose shape lived in a ``case``
  string (``"torch bsr_dense_mm M=8192 bs=32 density=0.5"``). That H200 run cannot be repeated
  here, so its strings are parsed in this script, once, into typed fields (``op``, ``M``, ``N``,
  ``K``, ``dtype``, ``density``, ``block``, ``backend``); the string stays as ``label`` for printing.
  Shapes, dtypes and ops not written in the strings come from ``benchmarks/pytorch_baselines.py``,
  the script that measured them (bsr, 2:4, csr and energy weights are 8192x8192; bsr, 2:4, MoE and
  energy ran in bf16, csr in fp32).

A file that already is an envelope is left alone, so running the script twice changes nothing.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit import results  # noqa: E402

FOLDER = ROOT / "benchmarks" / "results"
BASELINES = "pytorch_baselines_h200_2026-11-28"
#: Numbers measured per row in the baselines file: copied as they are.
MEASURED = ("ms", "speedup_vs_dense", "ideal_speedup", "rel_err", "tflops", "joules_per_op", "avg_watts")


def _load(name: str):
    return json.loads((FOLDER / f"{name}.json").read_text())


def _is_envelope(data) -> bool:
    return isinstance(data, dict) and "schema" in data


def _versions(old: dict) -> dict:
    return {k: old[k] for k in ("python", "torch") if k in old}


def reshape_pruning_sweep() -> None:
    old = _load("pruning_sweep_cpu")
    if _is_envelope(old):
        return
    results.write("pruning_sweep_cpu", old["runs"], script=old["script"], schema="pruning_sweep", folder=FOLDER,
                  date=old["date"], machine_text=f"{old['machine']}, {old['threads']} torch threads",
                  versions_used=_versions(old),
                  extra={"threads": old["threads"], "seconds": old["seconds"], "config": old["config"],
                         "explorer_masks": old["explorer_masks"]})


def reshape_moe_train() -> None:
    old = _load("moe_train_cpu")
    if _is_envelope(old):
        return
    results.write("moe_train_cpu", old["rows"], script=old["script"], schema="moe_train", folder=FOLDER,
                  date=old["date"], machine_text=old["machine"], versions_used=_versions(old))


def reshape_routing_grid() -> None:
    old = _load("moe_routing_grid")
    if _is_envelope(old):
        return
    meta = old["meta"]
    results.write("moe_routing_grid", old["points"], script=meta["script"], schema="moe_routing_grid", folder=FOLDER,
                  date=meta["date"], machine_text="x86_64 cpu (not recorded)", versions_used={"torch": meta["torch"]},
                  extra={"steps": meta["steps"], "seed": meta["seed"]})


def baseline_row(r: dict) -> dict:
    """One row of the H200 baselines with its ``case`` string turned into typed fields."""
    case, section = r["case"], r["section"]
    shape = dict(M=None, N=None, K=None, dtype="bfloat16", density=None, block=None, backend=None)
    if m := re.fullmatch(r"linear M=(\d+) K=N=(\d+) bf16", case):
        shape.update(op="linear", M=int(m[1]), N=int(m[2]), K=int(m[2]), density=1.0)
    elif m := re.fullmatch(r"torch bsr_dense_mm M=(\d+) bs=(\d+) density=([\d.]+)", case):
        shape.update(op="bsr_dense_mm", M=int(m[1]), N=8192, K=8192, block=int(m[2]), density=float(m[3]),
                     backend="torch.sparse._triton_ops")
    elif m := re.fullmatch(r"torch bsr @ dense \(dispatch\) M=(\d+) bs=(\d+) density=([\d.]+)", case):
        shape.update(op="bsr_matmul", M=int(m[1]), N=8192, K=8192, block=int(m[2]), density=float(m[3]),
                     backend="torch dispatch (bsr @ dense)")
    elif m := re.fullmatch(r"default\(cusparselt\?\) linear M=(\d+) K=N=(\d+) bf16", case):
        shape.update(op="semi_structured_linear", M=int(m[1]), N=int(m[2]), K=int(m[2]), density=0.5,
                     backend="to_sparse_semi_structured default (cuSPARSELt or CUTLASS: unconfirmed)")
    elif m := re.fullmatch(r"cuSPARSE csr @ dense fp32 M=(\d+) density=([\d.]+)", case):
        shape.update(op="csr_matmul", M=int(m[1]), N=8192, K=8192, dtype="float32", density=float(m[2]),
                     backend="cuSPARSE")
    elif m := re.fullmatch(r"naive loop E=(\d+) top(\d+) d=(\d+) ff=(\d+) T=(\d+)", case):
        shape.update(op="moe_naive_loop", M=int(m[5]), experts=int(m[1]), top_k=int(m[2]), d_model=int(m[3]),
                     d_ff=int(m[4]))
    elif case == "dense FFN with the same active FLOPs":
        shape.update(op="moe_dense_equivalent", M=4096, experts=8, top_k=2, d_model=4096, d_ff=14336)
    elif case == "torch._grouped_mm expert GEMMs only (no permute)":
        shape.update(op="grouped_mm", M=4096, experts=8, top_k=2, d_model=4096, d_ff=14336, backend="torch._grouped_mm")
    elif case == "dense 8192^3 bf16":
        shape.update(op="matmul", M=8192, N=8192, K=8192, density=1.0)
    elif m := re.fullmatch(r"torch bsr_dense_mm density ([\d.]+) bs(\d+)", case):
        shape.update(op="bsr_dense_mm", M=8192, N=8192, K=8192, density=float(m[1]), block=int(m[2]),
                     backend="torch.sparse._triton_ops")
    else:
        raise ValueError(f"unknown baseline case {case!r}: add its pattern to {__file__}")
    row = {"section": section, "op": shape.pop("op"), "label": case, **shape}
    row.update({k: r[k] for k in MEASURED if k in r})
    # every number and every field of the measured row survives unchanged
    assert all(row[k] == r[k] for k in MEASURED if k in r) and set(r) - {"case"} <= set(row), r
    return row


def reshape_baselines() -> None:
    old = _load(BASELINES)
    if _is_envelope(old):
        return
    rows = [baseline_row(r) for r in old]
    results.write(BASELINES, rows, script="benchmarks/pytorch_baselines.py", schema="pytorch_baselines",
                  folder=FOLDER, date="2026-11-28", machine_text="NVIDIA H200 (one GPU)",
                  versions_used={"torch": "2.11", "triton": "3.6"},
                  command="OUT=. python benchmarks/pytorch_baselines.py (on an NVIDIA GPU)",
                  extra={"gpu": "NVIDIA H200"})


def main() -> int:
    for fn in (reshape_pruning_sweep, reshape_moe_train, reshape_routing_grid, reshape_baselines):
        fn()
    for name, schema in (("pruning_sweep_cpu", "pruning_sweep"), ("moe_train_cpu", "moe_train"),
                         ("moe_routing_grid", "moe_routing_grid"), (BASELINES, "pytorch_baselines")):
        data = results.read(FOLDER / f"{name}.json", schema)
        print(f"{name}.json: {len(data['rows'])} rows, schema {schema!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
