"""The results layer: one folder, one file shape, one reader for every benchmark and sweep result.

Scripts in ``benchmarks/`` measure or train and write a JSON *envelope* with :func:`write`;
notebooks, widgets and figures read it back with :func:`read`. Every file looks like::

    {"schema": "moe_train",                       # which Schema below its rows follow
     "script": "benchmarks/moe_train_sweep.py",   # the script that wrote it
     "command": "python benchmarks/moe_train_sweep.py --only train",   # how to rebuild it
     "date": "2026-11-28", "machine": "x86_64, 2 cores", "versions": {"python": ..., "torch": ...},
     "rows": [{...}, {...}],                      # one flat dict per measurement
     ...}                                         # extra top-level fields some schemas require

Rows are typed records with structured fields (``M``, ``N``, ``K``, ``density``, ``block``,
``dtype``...): a reader selects rows by comparing fields, never by parsing a label string.

A file that is missing, truncated, has a field of the wrong type, holds ``NaN`` or ``Infinity`` (which
Python's json reads without complaint) or nests deeper than any results file does raises
:class:`ResultsFileError` naming the file, the field and the command that rebuilds it, so a broken file
is never read as a silently wrong number. :func:`write` refuses the same values, naming the row and field.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import numbers
import os
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

#: Where benchmark and sweep scripts write their results and notebooks read them: ``benchmarks/results``
#: of this checkout, or ``$LABKIT_RESULTS`` (for an installed, non-editable copy of labkit).
RESULTS_DIR = Path(os.environ.get("LABKIT_RESULTS", Path(__file__).resolve().parent.parent / "benchmarks" / "results"))

#: PyTorch's own sparse paths measured on one NVIDIA H200 (2026-11-28) by ``benchmarks/pytorch_baselines.py``:
#: timings (sections dense, bsr, 2:4, csr, moe) and NVML joules (section energy). It cannot be re-measured
#: without that GPU, so it is committed; notebooks 03 and 05 read it.
PYTORCH_BASELINES = RESULTS_DIR / "pytorch_baselines_h200_2026-11-28.json"

#: Fields every envelope has, and their types.
ENVELOPE = {"schema": str, "script": str, "command": str, "date": str, "machine": str, "versions": dict,
            "rows": list}

# Field types. ``float`` accepts an int too (JSON writes 1.0 as 1.0, but a hand-made 1 is fine);
# ``bool`` is never accepted as a number, and ``None`` only where a schema says so.
NUMBER = (float, int)
OPT_NUMBER = (float, int, type(None))
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))


class ResultsFileError(ValueError):
    """A results file is missing, unreadable or does not match its schema (the message says how to rebuild it)."""


class ResultsFileMissing(ResultsFileError, FileNotFoundError):
    """A results file does not exist (the message says which command writes it)."""


@dataclass(frozen=True)
class Schema:
    """What one kind of results file holds.

    ``required_fields``: field -> type (or tuple of types) that every row must have.
    ``optional_fields``: field -> type checked only when a row has it.
    ``extra``: top-level fields (beside the envelope) the file must have, with their types.
    ``command``: the shell command that rebuilds the file, quoted in every error.
    """

    name: str
    required_fields: Mapping[str, Any]
    command: str
    optional_fields: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The usual file name in :data:`RESULTS_DIR` (without ``.json``), when the schema has one fixed file.
    default_file: str | None = None


SCHEMAS: dict[str, Schema] = {}


def register(schema: Schema) -> Schema:
    """Add ``schema`` to :data:`SCHEMAS` (a second schema of the same name is an error)."""
    if schema.name in SCHEMAS and SCHEMAS[schema.name] != schema:
        raise ValueError(f"a results schema named {schema.name!r} is already registered")
    SCHEMAS[schema.name] = schema
    return schema


# ------------------------------------------------------------------------------------------------
# The schemas of the files in benchmarks/results
# ------------------------------------------------------------------------------------------------

register(Schema(
    "pruning_sweep", default_file="pruning_sweep_cpu", command="python benchmarks/pruning_sweep.py",
    required_fields={"model": str, "seed": int, "method": str, "finetune": bool, "target_sparsity": NUMBER,
                     "sparsity": NUMBER, "nonzeros": int, "val_acc": NUMBER, "test_acc": NUMBER,
                     "layer_sparsity": dict},
    optional_fields={"widths": list},
    extra={"config": dict, "explorer_masks": dict}))

register(Schema(
    "moe_train", default_file="moe_train_cpu", command="python benchmarks/moe_train_sweep.py --only train",
    required_fields={"model": str, "seed": int, "steps": int, "ffn": str, "d_ff": int, "n_experts": int,
                     "val_loss": NUMBER, "total_params": int, "active_params": int, "flops_per_token": NUMBER,
                     "tokens_per_s": NUMBER},
    optional_fields={"final_load_layer0": list}))

register(Schema(
    "moe_routing_grid", default_file="moe_routing_grid", command="python benchmarks/moe_train_sweep.py --only grid",
    required_fields={"n_experts": int, "top_k": int, "balance_weight": NUMBER, "routed": list, "load": dict,
                     "dropped": dict, "capacity": dict, "tokens": int, "total_params": int, "active_params": int,
                     "flops_per_token": NUMBER, "final_loss": NUMBER},
    extra={"steps": int, "seed": int}))

# PyTorch's own sparse paths on an H200. ``op`` names the call timed; ``label`` is the original
# description, for printing only. Shape fields are None where they do not apply (the MoE rows).
register(Schema(
    "pytorch_baselines", default_file="pytorch_baselines_h200_2026-11-28",
    command="python benchmarks/pytorch_baselines.py (needs an NVIDIA GPU; this file was measured on an H200)",
    required_fields={"section": str, "op": str, "label": str, "ms": NUMBER, "M": OPT_INT, "N": OPT_INT,
                     "K": OPT_INT, "dtype": str, "density": OPT_NUMBER, "block": OPT_INT, "backend": OPT_STR},
    optional_fields={"speedup_vs_dense": NUMBER, "ideal_speedup": NUMBER, "rel_err": NUMBER, "tflops": NUMBER,
                     "joules_per_op": NUMBER, "avg_watts": NUMBER, "experts": int, "top_k": int, "d_model": int,
                     "d_ff": int, "cuda_graph": bool, "dense": str, "dense_ms": NUMBER},
    extra={"gpu": str}))

# benchmarks/kernels.py on a GPU (``<gpu-name>.json``), or its --smoke run on a CPU.
register(Schema(
    "kernels", command="python benchmarks/kernels.py (on an NVIDIA GPU; --smoke on a CPU)",
    required_fields={"kernel": str, "M": int, "N": int, "K": int, "dtype": str, "density": NUMBER,
                     "block": OPT_INT, "ms": OPT_NUMBER, "dense_ms": NUMBER, "baseline": OPT_STR,
                     "baseline_ms": OPT_NUMBER, "speedup_vs_dense": OPT_NUMBER, "speedup_vs_baseline": OPT_NUMBER},
    extra={"gpu": str, "smoke": bool}))

# benchmarks/sparse_gemv.py: the activation-sparse decode GEMV (TEAL) against dense F.linear at M=1
# (``sparse_gemv_<gpu>.json`` on a GPU, ``..._quick.json`` for --quick; --smoke on a CPU writes only where told).
# ``sparsity`` is the share of *inputs* skipped; ``kept`` the measured share kept; bytes and GB/s by the GEMV formula.
register(Schema(
    "sparse_gemv", command="python benchmarks/sparse_gemv.py (on an NVIDIA GPU; --smoke on a CPU)",
    required_fields={"kernel": str, "M": int, "N": int, "K": int, "dtype": str, "sparsity": NUMBER,
                     "kept": NUMBER, "threshold": NUMBER, "ms": OPT_NUMBER, "dense_ms": NUMBER, "bytes": NUMBER,
                     "GB_per_s": OPT_NUMBER, "dense_GB_per_s": NUMBER, "ideal_speedup": NUMBER,
                     "speedup_vs_dense": OPT_NUMBER},
    optional_fields={"rel_err": NUMBER, "share_of_copy": NUMBER, "block_n": OPT_INT, "split_k": OPT_INT},
    extra={"gpu": str, "smoke": bool, "quick": bool}))

# benchmarks/energy.py on an NVIDIA GPU with NVML (``energy_<gpu>.json``).
register(Schema(
    "energy", command="python benchmarks/energy.py (needs an NVIDIA GPU with NVML)",
    required_fields={"label": str, "kernel": str, "M": int, "N": int, "K": int, "density": NUMBER, "block": int,
                     "dtype": str, "kind": str, "scope": str, "joules_per_call": NUMBER, "ms_per_call": NUMBER,
                     "avg_watts": NUMBER},
    optional_fields={"energy_ratio_vs_dense": NUMBER, "dynamic_joules_per_call": OPT_NUMBER, "repeats": int,
                     "window_s": NUMBER, "source": str, "idle_watts": dict, "warnings": list},
    extra={"gpu": str}))

# benchmarks/moe.py (``moe_<gpu>.json`` on a GPU; --smoke on a CPU writes only where told).
register(Schema(
    "moe_kernels", command="python benchmarks/moe.py (on an NVIDIA GPU; --smoke on a CPU)",
    required_fields={"T": int, "ms": dict, "time_vs_dense": dict},
    extra={"benchmark": str, "device": str, "smoke": bool}))

# benchmarks/llm_quant_sweep.py: SmolLM2-135M quantized (RTN, GPTQ; 8/4/3 bits; per channel or per group), pruned
# and quantized (SparseGPT + GPTQ in one pass, Wanda then RTN). Perplexity as llm_prune (64 windows of 256 tokens,
# intervals, paired ratio to dense); bytes of the integer codes per format; on_file_grid: the loaded weights already
# lie on the row's grid (the Q4_1 trap). Speeds of the int8/int4 CPU kernels only in the top-level speed block.
register(Schema(
    "llm_quant", default_file="llm_quant_cpu", command="python benchmarks/llm_quant_sweep.py",
    required_fields={"method": str, "bits": OPT_INT, "group_size": OPT_INT, "symmetric": bool, "pattern": str,
                     "sparsity": NUMBER, "block_sparsity": NUMBER, "perplexity": NUMBER, "perplexity_ci": list,
                     "ratio": NUMBER, "ratio_ci": list, "window_losses": list, "quant_seconds": NUMBER,
                     "unchanged_share": NUMBER, "max_abs_change": NUMBER, "bytes": dict},
    optional_fields={"on_file_grid": bool, "model_sparsity": NUMBER, "sample": str, "load_average_1min": NUMBER},
    extra={"config": dict, "sizes": dict, "complete": bool}))

# benchmarks/llm_activation_sweep.py: SmolLM2-135M with activation sparsity (TEAL-style thresholds, uniform and greedy
# allocation) beside structured pruning; perplexity as llm_prune (64 windows, intervals, paired ratio to dense), the
# share of inputs and weight reads skipped measured on the evaluation text, block bytes per decode step; decode and
# prefill speeds of every form in the top-level speed block (timed in turns).
register(Schema(
    "llm_activation", default_file="llm_activation_cpu", command="python benchmarks/llm_activation_sweep.py",
    required_fields={"method": str, "allocation": OPT_STR, "sparsity": NUMBER, "perplexity": NUMBER,
                     "perplexity_ci": list, "ratio": NUMBER, "ratio_ci": list, "window_losses": list,
                     "bytes_per_token": dict},
    optional_fields={"ffn_keep": NUMBER, "inputs_skipped": NUMBER, "weight_reads_skipped": NUMBER, "sample": str,
                     "load_average_1min": NUMBER, "seconds": NUMBER},
    extra={"config": dict, "complete": bool}))

# benchmarks/llm_prune_sweep.py: SmolLM2-135M pruned by each method and pattern.
# Perplexity on 64 windows of 256 tokens with per-window losses, a 95% bootstrap interval (perplexity_ci) and
# the paired-bootstrap ratio to dense (ratio, ratio_ci); speeds only in the side_by_side block (timed in turns).
register(Schema(
    "llm_prune", default_file="llm_prune_cpu", command="python benchmarks/llm_prune_sweep.py",
    required_fields={"method": str, "pattern": str, "sparsity": NUMBER, "block_sparsity": NUMBER,
                     "model_sparsity": NUMBER, "perplexity": NUMBER, "perplexity_ci": list, "ratio": NUMBER,
                     "ratio_ci": list, "window_losses": list, "prune_seconds": NUMBER, "bytes": dict,
                     "sample": str},
    optional_fields={"seed": int, "ffn_keep": NUMBER, "cloze": dict, "runs_as": str, "parameters": int,
                     "load_average_1min": NUMBER},
    extra={"config": dict, "complete": bool}))

# benchmarks/llm_heal_sweep.py: pruned SmolLM2-135M models healed with their masks held fixed (distillation from the
# dense model, or next-token loss) and the dense model fine-tuned the same way (the control). Each row: the curve
# (perplexity with 95% interval, paired ratio to dense and window losses at a few steps, against tokens seen and
# CPU seconds) and the final numbers; the top-level "dense" block holds the dense model's window losses.
register(Schema(
    "llm_heal", default_file="llm_heal_cpu", command="python benchmarks/llm_heal_sweep.py",
    required_fields={"method": str, "pattern": str, "sparsity": NUMBER, "objective": str, "steps": int,
                     "batch_size": int, "length": int, "lr": NUMBER, "seed": int, "block_sparsity": NUMBER,
                     "masks_held": bool, "curve": list, "train_losses": list, "cpu_seconds": NUMBER,
                     "wall_seconds": NUMBER, "perplexity": NUMBER, "perplexity_ci": list, "ratio": NUMBER,
                     "ratio_ci": list, "prune_seconds": NUMBER},
    optional_fields={"sample": str, "threads": int, "eval_seconds": NUMBER, "load_average_1min": NUMBER},
    extra={"config": dict, "dense": dict, "complete": bool}))

# benchmarks/isoflop_sweep.py: the tiny character GPT of notebook 04 trained at fixed compute budgets C = 6 N D
# (N non-embedding parameters, D tokens), several sizes and seeds per budget: the IsoFLOP curves of Hoffmann et al.
# 2022 (labkit.experiments.isoflop). flop_check: 6ND against torch.utils.flop_counter for each size.
register(Schema(
    "isoflop", default_file="isoflop_cpu", command="python benchmarks/isoflop_sweep.py",
    required_fields={"budget": NUMBER, "size": str, "config": dict, "n_params": int, "total_params": int,
                     "tokens": int, "steps": int, "tokens_per_param": NUMBER, "tokens_per_param_total": NUMBER,
                     "epochs": NUMBER, "seed": int, "lr": NUMBER, "val_loss": NUMBER, "train_loss": NUMBER,
                     "train_seconds": NUMBER},
    optional_fields={"threads": int, "load_average_1min": NUMBER},
    extra={"config": dict, "flop_check": list, "complete": bool}))

# benchmarks/llm_cache_sweep.py: SmolLM2-135M behind an exact-match response cache, a workload of repeated prompts
# at each hit rate served without and with the cache (labkit.experiments.llm_cache). Energy per request is
# labelled: energy_kind "estimated" (assumed power x time) unless a RAPL counter could be read ("measured").
register(Schema(
    "llm_cache", default_file="llm_cache_cpu", command="python benchmarks/llm_cache_sweep.py",
    required_fields={"hit_rate": NUMBER, "cache": bool, "measured_hit_rate": NUMBER, "requests": int,
                     "distinct_prompts": int, "seconds_per_request": NUMBER, "predicted_seconds_per_request": NUMBER,
                     "joules_per_request": NUMBER, "energy_kind": str, "energy_scope": str, "energy_source": str},
    optional_fields={"load_average_1min": NUMBER},
    extra={"config": dict, "times": dict}))


# ------------------------------------------------------------------------------------------------
# Writing and reading
# ------------------------------------------------------------------------------------------------

def _schema(schema: str | Schema) -> Schema:
    if isinstance(schema, Schema):
        return schema
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {sorted(SCHEMAS)}, got {schema!r}")
    return SCHEMAS[schema]


def path_of(name_or_path: str | Path, folder: Path | str | None = None) -> Path:
    """``name`` -> ``<folder or RESULTS_DIR>/<name>.json``; a path (with a folder or ``.json``) is kept as is."""
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path):
        raise TypeError(f"name_or_path must be a file name or a path, got {name_or_path!r}")
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or os.sep in text or text.endswith(".json"):
        return Path(name_or_path)
    return Path(folder if folder is not None else RESULTS_DIR) / f"{text}.json"


def machine() -> str:
    """A short description of this machine: CPU architecture, cores and the GPU if there is one."""
    text = f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def versions() -> dict[str, str]:
    """Versions of python and of the libraries whose changes move the numbers."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "triton", "numpy", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    if torch is not None:  # the running torch (a local build may differ from the installed metadata)
        out["torch"] = torch.__version__
    return out


#: How deeply a results file may nest lists and objects. Rows are flat records holding a few small lists
#: and dicts (the committed files nest 5 levels at most); anything deeper is a damaged or hostile file,
#: refused with a clear error before it can exhaust Python's stack.
MAX_DEPTH = 32


class _Unfit(Exception):
    """``value`` at ``where`` cannot be stored faithfully in a results file (internal: callers re-raise it)."""

    def __init__(self, where: str, what: str):
        where = where if len(where) <= 100 else where[:97] + "..."
        super().__init__(f"{where or 'the envelope'} {what}")


def _at(where: str, key: object) -> str:
    """The place of ``key`` inside ``where``, written as in the errors: ``rows[3].val_loss``, ``load['1.25']``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if isinstance(key, str) and key.isidentifier():
        return f"{where}.{key}" if where else key
    return f"{where}[{key!r}]"


def _plain(value: Any, where: str = "", depth: int = 0) -> Any:
    """``value`` as the plain JSON data a results file holds, or :class:`_Unfit` naming the first bad place.

    Tuples become lists (JSON has no tuples, so ``read`` returns lists anyway) and numpy floats and ints
    Python ones. Refused: NaN and +-Infinity (JSON has no such numbers; where they appear, a run failed),
    dict keys that are not strings (JSON would turn ``1`` into ``"1"``), nesting deeper than
    :data:`MAX_DEPTH`, and anything that is not a number, string, bool, None, list, tuple or dict.
    """
    if depth > MAX_DEPTH:
        raise _Unfit(where, f"nests lists or objects more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):  # int, numpy ints
        return int(value)
    if isinstance(value, numbers.Real):  # float, numpy floats
        x = float(value)
        if not math.isfinite(x):
            raise _Unfit(where, f"is {x} (NaN and Infinity are not numbers a results file may hold)")
        return x
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise _Unfit(where, f"has the key {bad[0]!r} ({type(bad[0]).__name__}); JSON keys are strings")
        return {k: _plain(v, _at(where, k), depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, _at(where, i), depth + 1) for i, v in enumerate(value)]
    raise _Unfit(where, f"is a {type(value).__name__} ({str(value)[:40]!r}); a results file holds numbers, "
                 "strings, booleans, None, lists and dicts only (convert it, e.g. with float() or .tolist())")


def _is(value: Any, types: Any) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int in Python, never a number in a results file
    return isinstance(value, types)


def _type_names(types: Any) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def check(data: Any, schema: str | Schema, source: str = "<data>") -> dict:
    """Validate an envelope against ``schema``; return it, or raise :class:`ResultsFileError`."""
    s = _schema(schema)

    def fail(what: str) -> ResultsFileError:
        return ResultsFileError(f"{source}: {what}. Rebuild it with: {s.command}")

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object (a results envelope), got {type(data).__name__}")
    try:  # NaN, Infinity and 1e999 parse as floats: a broken file must never be read as a silently wrong number
        _plain(data)
    except _Unfit as e:
        raise fail(str(e)) from None
    for name, types in {**ENVELOPE, **s.extra}.items():
        if name not in data:
            raise fail(f"field {name!r} is missing (old file format, or not a {s.name!r} results file)")
        if not _is(data[name], types):
            raise fail(f"field {name!r} must be {_type_names(types)}, got {type(data[name]).__name__} "
                       f"({str(data[name])[:40]!r})")
    if data["schema"] != s.name:
        raise fail(f"field 'schema' is {data['schema']!r}, expected {s.name!r}")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise fail(f"rows[{i}] must be an object, got {type(row).__name__}")
        for name, types in s.required_fields.items():
            if name not in row:
                raise fail(f"rows[{i}] has no field {name!r}")
            if not _is(row[name], types):
                raise fail(f"rows[{i}].{name} must be {_type_names(types)}, got {type(row[name]).__name__} "
                           f"({str(row[name])[:40]!r})")
        for name, types in s.optional_fields.items():
            if name in row and not _is(row[name], types):
                raise fail(f"rows[{i}].{name} must be {_type_names(types)}, got {type(row[name]).__name__} "
                           f"({str(row[name])[:40]!r})")
    return data


def read(name_or_path: str | Path, schema: str | Schema) -> dict:
    """Read and validate a results envelope (``name`` is looked up in :data:`RESULTS_DIR`).

    Raises :class:`ResultsFileMissing` when the file does not exist and :class:`ResultsFileError`
    when it is not valid JSON or a field is missing or of the wrong type; both name the file, the
    field and the command that rebuilds it.
    """
    s = _schema(schema)
    path = path_of(name_or_path)
    if not path.exists():
        raise ResultsFileMissing(f"{path} is missing. Build it with: {s.command}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsFileError(f"{path}: not valid JSON (truncated or damaged: {e}). Rebuild it with: {s.command}") \
            from None
    except RecursionError:  # json's parser recurses once per level of nesting
        raise ResultsFileError(f"{path}: nests lists or objects too deeply to be a results file (more than "
                               f"{MAX_DEPTH} levels; damaged?). Rebuild it with: {s.command}") from None
    return check(data, s, str(path))


def envelope(rows: Sequence[Mapping], *, script: str, schema: str | Schema, extra: Mapping | None = None,
             command: str | None = None, date: str | None = None, machine_text: str | None = None,
             versions_used: Mapping | None = None) -> dict:
    """The envelope :func:`write` writes, checked against ``schema`` (for a script that also returns it).

    ``script``: the script that produced the rows (relative to the repository). ``extra``: further
    top-level fields (the schema says which are required). ``command``: how to rebuild the file
    (default: the schema's). ``date``, ``machine_text`` and ``versions_used`` default to today, this
    machine and the running versions; they are given only when re-shaping a file measured elsewhere
    (``scripts/reshape_results.py``).
    """
    s = _schema(schema)
    if not isinstance(script, str) or not script:
        raise TypeError(f"script must be the path of the script that made the rows, got {script!r}")
    return _envelope(rows, s, script, extra, command, date, machine_text, versions_used,
                     f"<{s.name} results from {script}>")


def _envelope(rows: Sequence[Mapping], s: Schema, script: str, extra: Mapping | None, command: str | None,
              date: str | None, machine_text: str | None, versions_used: Mapping | None, target: str) -> dict:
    """:func:`envelope`; ``target`` (the file, or a description) is named in every error."""
    extra = dict(extra or {})
    clash = set(extra) & set(ENVELOPE)
    if clash:
        raise ValueError(f"extra must not redefine the envelope fields {sorted(clash)}")
    data = {"schema": s.name, "script": script, "command": command or s.command,
            "date": date or dt.date.today().isoformat(), "machine": machine_text or machine(),
            "versions": dict(versions_used) if versions_used is not None else versions(),
            "rows": [dict(r) for r in rows], **extra}
    return check(_writable(data, target), s, target)  # never build what read() would refuse


def _writable(data: Mapping, target: str) -> dict:
    """``data`` as plain JSON data (tuples as lists), or a :class:`ResultsFileError` naming ``target`` and the place."""
    try:
        return _plain(data)
    except _Unfit as e:
        raise ResultsFileError(f"cannot write {target}: {e}") from None


def write(name: str | Path, rows: Sequence[Mapping], *, script: str, schema: str | Schema,
          extra: Mapping | None = None, command: str | None = None, folder: Path | str | None = None,
          date: str | None = None, machine_text: str | None = None, versions_used: Mapping | None = None) -> Path:
    """Validate ``rows`` and write them as one envelope (see :func:`envelope`); return the path written.

    ``name``: a file name in ``folder`` (default :data:`RESULTS_DIR`), or a path. The write is atomic
    (a unique temporary file, then a rename), so a reader never sees half a file.
    """
    path = path_of(name, folder)
    s = _schema(schema)
    if not isinstance(script, str) or not script:
        raise TypeError(f"script must be the path of the script that made the rows, got {script!r}")
    data = _envelope(rows, s, script, extra, command, date, machine_text, versions_used, str(path))
    write_envelope(path, data)
    return path


def write_envelope(path: Path | str, data: Mapping) -> None:
    """Write an envelope made by :func:`envelope` to ``path``, atomically (unique temporary file, then rename)."""
    path = Path(path)
    text = json.dumps(_writable(data, str(path)), indent=1, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find(schema: str | Schema, folder: Path | str | None = None, pattern: str = "*.json") -> list[Path]:
    """Files in ``folder`` (default :data:`RESULTS_DIR`) whose envelope says ``schema``, by name.

    Other JSON files are passed over; a file of this schema is not checked here (:func:`read` does that).
    """
    s = _schema(schema)
    found = []
    for path in sorted(Path(folder if folder is not None else RESULTS_DIR).glob(pattern)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue  # not a results envelope of any kind
        if isinstance(data, dict) and data.get("schema") == s.name:
            found.append(path)
    return found


def one(rows: Sequence[Mapping], **fields) -> dict:
    """The one row whose fields equal ``fields``; a missing or doubled row is an error, never a wrong number."""
    sel = [r for r in rows if all(r.get(k) == v for k, v in fields.items())]
    if len(sel) != 1:
        raise ValueError(f"expected exactly one row with {fields}, found {len(sel)}")
    return dict(sel[0])


def pytorch_baselines(path: Path | str = PYTORCH_BASELINES) -> list[dict]:
    """The rows of the committed PyTorch-baseline file (:data:`PYTORCH_BASELINES`), checked."""
    return read(path, "pytorch_baselines")["rows"]
