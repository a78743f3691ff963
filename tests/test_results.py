"""The results layer: one envelope, checked on read, with errors that name the file, the field and the fix."""
from __future__ import annotations

import json

import numpy as np
import pytest

from labkit import results

ROW = {"model": "dense", "seed": 0, "steps": 10, "ffn": "dense", "d_ff": 8, "n_experts": 1, "val_loss": 1.5,
       "total_params": 100, "active_params": 100, "flops_per_token": 200.0, "tokens_per_s": 1e4}
COMMAND = results.SCHEMAS["moe_train"].command


def _write(tmp_path, rows=(ROW,), **kw):
    return results.write("train", list(rows), script="benchmarks/moe_train_sweep.py", schema="moe_train",
                         folder=tmp_path, **kw)


def test_round_trip(tmp_path):
    path = _write(tmp_path, extra={"note": "x"})
    assert path == tmp_path / "train.json"
    data = results.read(path, "moe_train")
    assert data["rows"] == [ROW]
    assert data["schema"] == "moe_train" and data["script"] == "benchmarks/moe_train_sweep.py"
    assert data["command"] == COMMAND and data["note"] == "x"
    assert data["versions"]["torch"] and data["machine"] and len(data["date"]) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["train.json"]  # no temporary file left behind


def test_name_is_looked_up_in_results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    _write(tmp_path)
    assert results.read("train", "moe_train")["rows"] == [ROW]


def test_truncated_file_names_file_and_command(tmp_path):
    path = _write(tmp_path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(results.ResultsFileError, match="not valid JSON") as e:
        results.read(path, "moe_train")
    assert str(path) in str(e.value) and COMMAND in str(e.value)


def test_missing_field_names_row_and_field(tmp_path):
    path = _write(tmp_path)
    data = json.loads(path.read_text())
    del data["rows"][0]["val_loss"]
    path.write_text(json.dumps(data))
    with pytest.raises(results.ResultsFileError, match=r"rows\[0\] has no field 'val_loss'") as e:
        results.read(path, "moe_train")
    assert str(path) in str(e.value) and COMMAND in str(e.value)


@pytest.mark.parametrize("field, value", [("seed", "0"), ("val_loss", "1.5"), ("d_ff", True), ("seed", 1.0)])
def test_wrong_type_names_field(tmp_path, field, value):
    path = _write(tmp_path)
    data = json.loads(path.read_text())
    data["rows"][0][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(results.ResultsFileError, match=rf"rows\[0\]\.{field} must be") as e:
        results.read(path, "moe_train")
    assert str(path) in str(e.value) and COMMAND in str(e.value)


def test_old_format_and_wrong_schema(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"script": "x", "rows": []}))
    with pytest.raises(results.ResultsFileError, match="field 'schema' is missing"):
        results.read(old, "moe_train")
    path = _write(tmp_path)
    with pytest.raises(results.ResultsFileError, match="expected 'pruning_sweep'|field 'config' is missing"):
        results.read(path, "pruning_sweep")
    bare = tmp_path / "bare.json"
    bare.write_text("[1, 2]")
    with pytest.raises(results.ResultsFileError, match="expected a JSON object"):
        results.read(bare, "moe_train")


def test_missing_file_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="moe_train_sweep.py --only train"):
        results.read(tmp_path / "nope.json", "moe_train")


def test_write_refuses_bad_rows_and_arguments(tmp_path):
    with pytest.raises(results.ResultsFileError, match=r"rows\[1\] has no field 'seed'"):
        _write(tmp_path, rows=[ROW, {k: v for k, v in ROW.items() if k != "seed"}])
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValueError, match="schema must be one of"):
        results.write("x", [], script="s.py", schema="nope", folder=tmp_path)
    with pytest.raises(ValueError, match="must not redefine"):
        _write(tmp_path, extra={"rows": []})
    with pytest.raises(ValueError):  # NaN is not JSON: never written as a silently odd number
        _write(tmp_path, rows=[dict(ROW, val_loss=float("nan"))])


@pytest.mark.parametrize("name, schema", [
    ("pruning_sweep_cpu", "pruning_sweep"), ("moe_train_cpu", "moe_train"), ("moe_routing_grid", "moe_routing_grid"),
    ("pytorch_baselines_h200_2026-11-28", "pytorch_baselines")])
def test_committed_files_are_valid_envelopes(name, schema):
    data = results.read(name, schema)
    assert data["rows"]
    assert results.SCHEMAS[schema].default_file == name


def test_baselines_have_structured_fields():
    rows = results.read("pytorch_baselines_h200_2026-11-28", "pytorch_baselines")["rows"]
    bsr = [r for r in rows if r["op"] == "bsr_dense_mm" and r["section"] == "bsr"]
    assert {(r["M"], r["block"]) for r in bsr} == {(8192, 32), (8192, 64), (16, 32), (16, 64)}
    assert sorted({r["density"] for r in bsr}) == [0.05, 0.1, 0.25, 0.5]
    # the re-shaped file kept the measured numbers (spot check against the original case strings)
    r = next(r for r in bsr if r["M"] == 8192 and r["block"] == 64 and r["density"] == 0.1)
    assert r["label"] == "torch bsr_dense_mm M=8192 bs=64 density=0.1" and r["speedup_vs_dense"] == 2.094


def test_every_benchmark_output_has_a_schema():
    assert {"pruning_sweep", "moe_train", "moe_routing_grid", "pytorch_baselines", "kernels", "energy",
            "llm_prune", "llm_heal", "llm_quant"} <= set(results.SCHEMAS)


def test_find_lists_files_of_one_schema(tmp_path):
    _write(tmp_path)
    (tmp_path / "other.json").write_text('{"schema": "kernels", "rows": []}')
    (tmp_path / "junk.json").write_text("{not json")
    assert results.find("moe_train", tmp_path) == [tmp_path / "train.json"]
    assert results.find("kernels", tmp_path) == [tmp_path / "other.json"]
    assert results.find("moe_train", tmp_path / "nowhere") == []


def test_one_selects_exactly_one_row():
    rows = [{"M": 1, "op": "a"}, {"M": 2, "op": "a"}, {"M": 2, "op": "a"}]
    assert results.one(rows, M=1) == {"M": 1, "op": "a"}
    with pytest.raises(ValueError, match="found 2"):
        results.one(rows, M=2)
    with pytest.raises(ValueError, match="found 0"):
        results.one(rows, M=3)


def test_reshape_script_parses_each_baseline_case_once():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "reshape_results.py"
    spec = importlib.util.spec_from_file_location("reshape_results", path)
    reshape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reshape)
    row = reshape.baseline_row({"section": "bsr", "case": "torch bsr_dense_mm M=16 bs=32 density=0.05", "ms": 0.26,
                                "speedup_vs_dense": 0.185, "ideal_speedup": 20.0, "rel_err": 4.11e-05})
    assert (row["op"], row["M"], row["N"], row["K"], row["block"], row["density"], row["dtype"]) == \
        ("bsr_dense_mm", 16, 8192, 8192, 32, 0.05, "bfloat16")
    assert row["ms"] == 0.26 and row["speedup_vs_dense"] == 0.185 and row["label"].startswith("torch bsr_dense_mm")
    csr = reshape.baseline_row({"section": "csr", "case": "cuSPARSE csr @ dense fp32 M=4096 density=0.01", "ms": 1.4})
    assert (csr["op"], csr["dtype"], csr["M"], csr["density"], csr["backend"]) == \
        ("csr_matmul", "float32", 4096, 0.01, "cuSPARSE")
    with pytest.raises(ValueError, match="unknown baseline case"):
        reshape.baseline_row({"section": "x", "case": "something new", "ms": 1.0})
    reshape.main()  # the committed files are envelopes already: nothing changes, every file reads back


# ---- adversarial files and rows (issue 21, section 8) ---------------------------------------------------

def _with(path, text_of_value: str, field: str = "val_loss") -> None:
    """Rewrite ``field`` of row 0 as the raw JSON text ``text_of_value`` (``NaN`` is what json.dumps writes)."""
    data = json.loads(path.read_text())
    data["rows"][0][field] = "@@"
    path.write_text(json.dumps(data).replace('"@@"', text_of_value))


def test_read_refuses_nan_naming_file_and_field(tmp_path):
    path = _write(tmp_path)
    _with(path, "NaN")
    with pytest.raises(results.ResultsFileError, match=r"rows\[0\]\.val_loss is nan") as e:
        results.read(path, "moe_train")
    assert str(path) in str(e.value) and COMMAND in str(e.value)


@pytest.mark.parametrize("text, where", [
    ("Infinity", r"rows\[0\]\.val_loss is inf"), ("-Infinity", r"rows\[0\]\.val_loss is -inf"),
    ("1e999", r"rows\[0\]\.val_loss is inf"),  # overflows to infinity when parsed
    ("[0.5, NaN]", r"rows\[0\]\.final_load_layer0\[1\] is nan"),  # inside an optional list field
])
def test_read_refuses_every_non_finite_number_anywhere(tmp_path, text, where):
    field = "final_load_layer0" if text.startswith("[") else "val_loss"
    path = _write(tmp_path)
    _with(path, text, field)
    with pytest.raises(results.ResultsFileError, match=where):
        results.read(path, "moe_train")
    # ... and in a nested dict or a top-level field, which the schema does not type-check
    data = json.loads(_write(tmp_path, extra={"note": {"a": [1]}}).read_text())
    data["note"]["a"][0] = "@@"
    path.write_text(json.dumps(data).replace('"@@"', "-Infinity"))
    with pytest.raises(results.ResultsFileError, match=r"note\.a\[0\] is -inf"):
        results.read(path, "moe_train")


def test_deeply_nested_file_is_a_results_file_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # deeper than Python's recursion limit
    with pytest.raises(results.ResultsFileError, match="too deeply") as e:
        results.read(path, "moe_train")
    assert str(path) in str(e.value) and COMMAND in str(e.value)
    assert results.find("moe_train", tmp_path) == []  # passed over, never a RecursionError


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a": ', "}")])
@pytest.mark.parametrize("levels", [results.MAX_DEPTH + 1, 500, 20_000])
def test_any_nesting_beyond_the_limit_is_refused_by_name(tmp_path, opening, closing, levels):
    """Lists or objects, shallower or deeper than the parser's own limit: a ResultsFileError every time."""
    path = _write(tmp_path)
    _with(path, opening * levels + "1" + closing * levels, "final_load_layer0")
    with pytest.raises(results.ResultsFileError, match=r"deep") as e:
        results.read(path, "moe_train")
    assert str(path) in str(e.value)
    assert results.find("moe_train", tmp_path) in ([], [path])  # never raises


def test_write_of_nan_names_row_field_and_file(tmp_path):
    with pytest.raises(results.ResultsFileError, match=r"rows\[1\]\.val_loss is nan") as e:
        _write(tmp_path, rows=[ROW, dict(ROW, val_loss=float("nan"))])
    assert str(tmp_path / "train.json") in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("row, extra, where", [
    (dict(ROW, val_loss=float("inf")), None, r"rows\[0\]\.val_loss is inf"),
    (dict(ROW, val_loss=float("-inf")), None, r"rows\[0\]\.val_loss is -inf"),
    (dict(ROW, val_loss=np.float32("nan")), None, r"rows\[0\]\.val_loss is nan"),
    (dict(ROW, final_load_layer0=[0.5, (1.0, float("nan"))]), None, r"rows\[0\]\.final_load_layer0\[1\]\[1\] is nan"),
    (ROW, {"note": {"1.25": float("nan")}}, r"note\['1.25'\] is nan"),
    (ROW, {"note": {1: 2}}, r"note has the key 1 \(int\)"),
    (ROW, {"note": object()}, r"note is a object"),
])
def test_write_names_every_unwritable_value(tmp_path, row, extra, where):
    with pytest.raises(results.ResultsFileError, match=where) as e:
        _write(tmp_path, rows=[row], extra=extra)
    assert "cannot write " + str(tmp_path / "train.json") in str(e.value)
    with pytest.raises(results.ResultsFileError, match=where):  # and the same through write_envelope
        results.write_envelope(tmp_path / "e.json", {"rows": [row], **(extra or {})})
    assert not list(tmp_path.iterdir())


def test_tuples_and_numpy_numbers_are_written_as_json_reads_them(tmp_path):
    """JSON has no tuples: a tuple in a row is written, and checked, as the list read() returns."""
    row = dict(ROW, seed=np.int64(3), val_loss=np.float32(1.5), final_load_layer0=(0.25, 0.75))
    data = results.read(_write(tmp_path, rows=[row]), "moe_train")
    assert data["rows"][0]["final_load_layer0"] == [0.25, 0.75] and data["rows"][0]["seed"] == 3
    assert type(data["rows"][0]["seed"]) is int and data["rows"][0]["val_loss"] == 1.5
