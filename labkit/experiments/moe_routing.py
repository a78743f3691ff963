"""What notebook 04 measures on trained MoE models for its figures: which expert each character goes to, what
each expert prefers, and the committed sweeps (the tiny GPT over seeds, GPU runs of ``benchmarks/moe.py``).

The figures that draw them are in :mod:`labkit.figures.moe`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from labkit import results
from labkit.data import TextCorpus
from labkit.moe.tiny_gpt import TinyGPT
from labkit.results import RESULTS_DIR

#: Character classes for "what each expert prefers".
CHAR_CLASSES = {
    "space": lambda c: c == " ",
    "newline": lambda c: c == "\n",
    "vowel": lambda c: c in "aeiou",
    "consonant": lambda c: c.isalpha() and c.islower() and c not in "aeiou",
    "upper case": lambda c: c.isalpha() and c.isupper(),
    "digit": lambda c: c.isdigit(),
    "punctuation": lambda c: not c.isalnum() and not c.isspace(),
}


def check_layer(model: TinyGPT, layer: int) -> None:
    n = len(model.moe_layers())
    if n == 0:
        raise ValueError("model has no MoE layers: train it with ffn='moe'")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in [0, {n - 1}], got {layer!r}")


@torch.no_grad()
def route_text(model: TinyGPT, corpus: TextCorpus, text: str, layer: int = 0) -> list[int]:
    """The first-choice expert of every character of ``text`` in MoE layer ``layer``.

    The text is cut into windows of ``block_size`` characters, each run with its own context.
    """
    check_layer(model, layer)
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    ids = corpus.encode(text)
    bs = model.cfg.block_size
    experts = []
    model.eval()
    n_full = len(ids) // bs
    chunks = [ids[:n_full * bs].view(n_full, bs)] if n_full else []
    if len(ids) % bs:
        chunks.append(ids[n_full * bs:][None])
    for chunk in chunks:  # all full windows in one batch, then the remainder
        model(chunk)
        experts += model.moe_layers()[layer].last_routing.experts[:, 0].tolist()
    return experts


@torch.no_grad()
def expert_preferences(model: TinyGPT, corpus: TextCorpus, layer: int = 0,
                       n_chars: int = 4096) -> dict[str, list[float]]:
    """For each character class, the share of its characters that each expert receives (first choice).

    Uses the first ``n_chars`` characters of the validation text.
    """
    check_layer(model, layer)
    if isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < model.cfg.block_size:
        raise ValueError(f"n_chars must be an int >= block_size ({model.cfg.block_size}), got {n_chars!r}")
    text = corpus.decode(corpus.val[:n_chars])
    experts = route_text(model, corpus, text, layer)
    n_exp = model.cfg.n_experts
    table = {}
    for name, test in CHAR_CLASSES.items():
        picked = [e for c, e in zip(text, experts, strict=True) if test(c)]
        if picked:
            counts = np.bincount(picked, minlength=n_exp)
            table[name] = (counts / counts.sum()).tolist()
    return table


def load_train_sweep(path: Path | str | None = None) -> dict:
    """``benchmarks/results/moe_train_cpu.json``: the tiny GPT over several seeds."""
    path = Path(path) if path is not None else RESULTS_DIR / "moe_train_cpu.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/moe_train_sweep.py --only train`")
    return results.read(path, "moe_train")


def sweep_table(sweep: Mapping) -> list[dict]:
    """Mean and spread over seeds of each model's validation loss, with its parameters and FLOPs."""
    rows = sweep["rows"]
    table = []
    for m in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == m]
        losses = np.array([r["val_loss"] for r in sel])
        table.append({"model": m, "seeds": len(sel), "val_loss_mean": round(float(losses.mean()), 3),
                      "val_loss_std": round(float(losses.std()), 3), "total_params": sel[0]["total_params"],
                      "active_params": sel[0]["active_params"], "flops_per_token": sel[0]["flops_per_token"]})
    return table


def gpu_benchmarks(results_dir: Path | str | None = None) -> list[dict]:
    """Every committed GPU run of ``benchmarks/moe.py`` (schema ``moe_kernels``, smoke and quick runs excluded)."""
    runs = [results.read(p, "moe_kernels") for p in results.find("moe_kernels", results_dir)]
    return [r for r in runs if not r.get("smoke") and not r.get("quick")]
