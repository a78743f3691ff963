"""A precomputed grid of trained routers, for the routing explorer widget.

The problem is small on purpose, so every combination trains in well under a second: tokens come
from 16 "token types" (clusters) with Zipf-like frequencies, like characters in text, and each
type needs its own function (a type-specific random linear map), so experts pay off when they
specialise. For every (experts, top-k, balancing weight) an MoE layer is trained, then its routing
of held-out tokens is replayed under each capacity factor to count the load and the dropped tokens.
The widget only looks results up.

Training all 42 combinations takes a minute or two on a 2-core CPU, too long for the notebook, so
``benchmarks/moe_train_sweep.py`` runs :func:`compute_routing_grid` once and commits the result as
``benchmarks/results/moe_routing_grid.json``; :func:`load_routing_grid` reads it back.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit import results
from labkit.moe.layers import MoEFeedForward, capacity_mask, count_parameters, expert_capacity
from labkit.results import RESULTS_DIR

EXPERTS = (2, 4, 8, 16)
TOP_K = (1, 2, 3, 4)
BALANCE_WEIGHTS = (0.0, 0.01, 0.1)
CAPACITY_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, None)  # None: dropless
D_MODEL, D_FF, N_TYPES = 16, 16, 16
GRID_JSON = RESULTS_DIR / "moe_routing_grid.json"


@dataclass(frozen=True)
class GridPoint:
    """One trained configuration and what its router does at each capacity factor."""

    n_experts: int
    top_k: int
    balance_weight: float
    routed: tuple[int, ...]  # slots per expert before dropping (held-out tokens)
    load: dict  # capacity factor -> tuple of slots processed per expert
    dropped: dict  # capacity factor -> dropped slots
    capacity: dict  # capacity factor -> slots per expert
    tokens: int
    total_params: int
    active_params: int
    flops_per_token: float
    final_loss: float


def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000)  # the task (centres, maps) is fixed; only samples vary
    centres = torch.randn(N_TYPES, D_MODEL, generator=g) * 2.0
    maps = torch.randn(N_TYPES, D_MODEL, D_MODEL, generator=g) / D_MODEL ** 0.5
    freq = 1.0 / torch.arange(1, N_TYPES + 1, dtype=torch.float)  # Zipf: a few types dominate
    gs = torch.Generator().manual_seed(seed)
    types = torch.multinomial(freq / freq.sum(), n, replacement=True, generator=gs)
    x = centres[types] + 0.5 * torch.randn(n, D_MODEL, generator=gs)
    y = torch.tanh(torch.einsum("nij,nj->ni", maps[types], x))
    return x, y


def _train_point(n_experts: int, top_k: int, balance_weight: float, steps: int, seed: int) -> GridPoint:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(seed)
    layer = MoEFeedForward(D_MODEL, D_FF, n_experts, top_k, balance_weight=balance_weight, z_weight=0.0)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x, y = _toy_data(256 * steps, seed)
    loss = torch.zeros(())
    for step in range(steps):
        xb, yb = x[step * 256:(step + 1) * 256], y[step * 256:(step + 1) * 256]
        loss = F.mse_loss(layer(xb), yb)
        opt.zero_grad(set_to_none=True)
        (loss + layer.aux_loss).backward()
        opt.step()
    xv, _ = _toy_data(1024, seed + 1)
    layer.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(xv)
    experts = layer.last_routing.experts
    loads, dropped, caps = {}, {}, {}
    for cf in CAPACITY_FACTORS:
        cap = expert_capacity(len(xv), n_experts, top_k, cf)
        keep = capacity_mask(experts, n_experts, cap)
        key = cf_key(cf)
        loads[key] = tuple(torch.bincount(experts[keep], minlength=n_experts).tolist())
        dropped[key] = int((~keep).sum())
        caps[key] = cap
    return GridPoint(n_experts, top_k, balance_weight,
                     tuple(torch.bincount(experts.reshape(-1), minlength=n_experts).tolist()), loads, dropped, caps,
                     len(xv), count_parameters(layer), layer.active_parameters(),
                     counter.get_total_flops() / len(xv), loss.item())


def cf_key(capacity_factor: float | None) -> str:
    """The JSON key of a capacity factor: ``"1.25"``, or ``"dropless"`` for None."""
    return "dropless" if capacity_factor is None else f"{capacity_factor:g}"


def compute_routing_grid(steps: int = 40, seed: int = 0) -> list[GridPoint]:
    """Train every (experts, top-k, balancing weight) with top-k <= experts; a minute or two on a CPU."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    from tqdm.auto import tqdm

    from labkit.moe.tiny_gpt import train_threads

    combos = [(e, k, w) for e in EXPERTS for k in TOP_K if k <= e for w in BALANCE_WEIGHTS]
    with train_threads():
        return [_train_point(e, k, w, steps=steps, seed=seed)
                for e, k, w in tqdm(combos, desc="routing grid", leave=False)]


def save_routing_grid(points: list[GridPoint], path: Path | str, **meta) -> None:
    """Write the grid as JSON (with ``meta``: steps, seed, versions)."""
    Path(path).write_text(json.dumps({"meta": meta, "points": [asdict(p) for p in points]}, indent=0) + "\n")


def load_routing_grid(path: Path | str | None = None) -> dict[tuple[int, int, float], GridPoint]:
    """The committed grid, keyed by ``(n_experts, top_k, balance_weight)``."""
    path = Path(path) if path is not None else GRID_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/moe_train_sweep.py --only grid` to make it")
    data = results.read(path, "moe_routing_grid")
    points = {}
    for p in data["rows"]:
        for name in ("routed",):
            p[name] = tuple(p[name])
        p["load"] = {k: tuple(v) for k, v in p["load"].items()}
        point = GridPoint(**p)
        points[(point.n_experts, point.top_k, point.balance_weight)] = point
    return points
