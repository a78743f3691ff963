"""What the language-model sweeps (``benchmarks/llm_*_sweep.py``) share: how a row is scored and written.

* :func:`scored`: a model's perplexity on the evaluation windows, its 95% bootstrap interval, the per-window
  losses and the paired ratio to dense (:mod:`labkit.llm.stats`): the same numbers in every results file,
  so rows of different sweeps on the same windows compare.
* :func:`write_rows`: one results envelope, its config stating the machine load the rows were measured at.
"""
from __future__ import annotations

from typing import cast

import torch

from labkit import llm, results
from labkit.llm import stats


def scored(model: torch.nn.Module, evaluation: torch.Tensor, dense_losses: list[float] | None) -> dict:
    """Perplexity, its interval, the per-window losses and the paired ratio to dense (1 for dense itself).

    ``dense_losses``: the dense model's per-window losses on the same windows, or ``None`` when ``model`` is
    the dense model.
    """
    losses = llm.window_losses(model, evaluation)
    own = stats.perplexity_ci(losses)
    base = dense_losses if dense_losses is not None else losses
    ratio = stats.paired_ratio(losses, base)
    return {"perplexity": own["perplexity"], "perplexity_ci": list(cast(tuple, own["ci"])), "ratio": ratio["ratio"],
            "ratio_ci": list(cast(tuple, ratio["ci"])), "window_losses": [round(float(x), 6) for x in losses]}


def write_rows(out: str, rows: list[dict], extra: dict, complete: bool, *, script: str, schema: str) -> None:
    """Write ``rows`` and ``extra`` (with ``"complete"``) as one envelope of ``schema``, made by ``script``.

    The config gains ``load_average_1min``: the range of the rows' own ``load_average_1min`` (2 cores: above
    2, timings are slowed by other programs).
    """
    loads = [r["load_average_1min"] for r in rows if "load_average_1min" in r]
    config = dict(extra.get("config", {}))
    if loads:
        config["load_average_1min"] = (f"{min(loads):.1f} to {max(loads):.1f} while these rows were measured "
                                       "(2 cores: above 2, timings are slowed by other programs)")
    results.write(out, rows, script=script, schema=schema, extra={**extra, "config": config, "complete": complete})
