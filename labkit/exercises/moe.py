"""Self-checks for notebook 04 (Mixture-of-Experts). See :mod:`labkit.exercises` for the pattern."""
from __future__ import annotations

import math
from typing import Any

import torch

from labkit.exercises import ExerciseError, call, check_callable, check_choice, expect, passed, unanswered
from labkit.moe.layers import top_k_route

# Exercise 2's scenario: the first-choice expert of 12 tokens, 4 experts, top-1, capacity factor 1.0.
CAPACITY_SCENARIO: dict[str, Any] = {"experts": [0, 0, 1, 0, 2, 0, 0, 1, 3, 0, 1, 0], "n_experts": 4, "top_k": 1,
                                     "capacity_factor": 1.0}

COLLAPSE_CHOICES = {
    "a": "The softmax saturates, so gradients vanish for every expert equally.",
    "b": "An expert that gets more tokens gets more gradient updates, becomes better, and so is chosen even more: "
         "a rich-get-richer loop; the balancing loss adds a gradient that pushes probability away from busy experts.",
    "c": "Experts with no tokens are deleted by the optimizer.",
    "d": "Capacity limits force all tokens onto one expert.",
}


def check_top_k(fn: object) -> bool:
    """Exercise 1: ``fn(logits, k) -> (weights, experts)`` as in :func:`labkit.moe.top_k_route`."""
    name = "Exercise 1 (top-k routing)"
    fn = check_callable(fn, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 5, generator=g)
    for k in (2, 3, 1):  # k=1 last: there a renormalised gate is 1 whatever it came from
        out = call(fn, logits.clone(), k, exercise=name)
        expect(isinstance(out, tuple) and len(out) == 2,
               f"{name}: return a tuple (weights, experts), got {type(out).__name__}")
        weights, experts = (torch.as_tensor(t) for t in out)
        ref = top_k_route(logits, k)
        expect(tuple(experts.shape) == (6, k),
               f"{name}: experts should have shape (tokens, k) = (6, {k}), got {tuple(experts.shape)}")
        expect(torch.equal(experts.long().sort(-1).values, ref.experts.sort(-1).values),
               f"{name}: with k={k} you picked the wrong experts. Take the k largest probabilities per token "
               "(torch.topk on dim=-1).")
        same_order = torch.equal(experts.long(), ref.experts)
        expect(same_order, f"{name}: the right experts, but list them best first (torch.topk does this).")
        weights = weights.float()
        raw = logits.topk(k, dim=-1).values
        # Gate weights taken from the logits themselves (no softmax), renormalised or not, are the softmax mistake.
        # (With k=1 a renormalised gate is always 1, whatever it came from: the k=1 branch below explains that.)
        renormalised_raw = k > 1 and torch.allclose(weights, raw / raw.sum(-1, keepdim=True), atol=1e-5)
        expect(not (torch.allclose(weights, raw, atol=1e-5) or renormalised_raw),
               f"{name}: your gate weights are the raw logits, which can be negative and do not add up to 1. "
               "Turn the logits into probabilities first: probs = logits.softmax(dim=-1), then take the top k "
               "of probs.")
        expect(bool(((weights >= 0) & (weights <= 1 + 1e-6)).all()),
               f"{name}: gate weights must be probabilities in [0, 1]; yours range from {weights.min():.3g} to "
               f"{weights.max():.3g}. Apply logits.softmax(dim=-1) over all experts before taking the top k.")
        if k == 1:
            expect(torch.allclose(weights.float(), ref.weights, atol=1e-5),
                   f"{name}: with k=1 keep the raw softmax probability as the gate (do not renormalise: it would "
                   "always be 1).")
        else:
            expect(torch.allclose(weights.float().sum(-1), torch.ones(6), atol=1e-5),
                   f"{name}: with k={k} the gate weights of a token should be renormalised to sum to 1.")
            expect(torch.allclose(weights.float(), ref.weights, atol=1e-5),
                   f"{name}: gate weights are off. Softmax over *all* experts first, then keep the top k and "
                   "renormalise.")
    return passed(name, "This is exactly labkit.moe.top_k_route.")


def check_capacity(answer: object) -> bool:
    """Exercise 2: ``(capacity, dropped)`` for :data:`CAPACITY_SCENARIO`."""
    name = "Exercise 2 (capacity and dropped tokens)"
    if unanswered(answer, name):
        return False
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise ExerciseError(f"{name}: answer with a pair (capacity, dropped), e.g. (5, 2)")
    capacity, dropped = answer
    s = CAPACITY_SCENARIO
    n_tokens = len(s["experts"])
    right_cap = math.ceil(s["capacity_factor"] * n_tokens * s["top_k"] / s["n_experts"])
    counts = [s["experts"].count(e) for e in range(s["n_experts"])]
    right_drop = sum(max(0, c - right_cap) for c in counts)
    expect(capacity == right_cap, f"{name}: capacity = ceil(capacity_factor * tokens * top_k / experts); "
                                  f"here {s['capacity_factor']} * {n_tokens} * {s['top_k']} / {s['n_experts']}.")
    expect(dropped == right_drop, f"{name}: count each expert's tokens; every token beyond the capacity is dropped. "
                                  f"Only over-full experts drop anything.")
    return passed(name, f"Expert loads {counts}: the busiest expert overflows while two sit mostly idle.")


def check_collapse(answer: object) -> bool:
    """Exercise 3: which of :data:`COLLAPSE_CHOICES` explains router collapse."""
    return check_choice(answer, "Exercise 3 (why routers collapse)", COLLAPSE_CHOICES, "b",
                        "Look at the load plot without the balancing loss: which experts get better, and why do "
                        "they keep winning?",
                        "The balancing loss breaks the loop by making busy experts slightly less attractive.")


def check_active_parameters(answer: object) -> bool:
    """Exercise 4: active parameters of one Mixtral-8x7B MoE layer (E=8, top-2, d=4096, d_ff=14336, SwiGLU, router)."""
    name = "Exercise 4 (active parameters)"
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, (int, float)) and not isinstance(answer, bool), f"{name}: answer with a number")
    d, ff, E, k = 4096, 14336, 8, 2
    expert = 3 * d * ff
    right = k * expert + d * E
    expect(answer != E * expert + d * E, f"{name}: that is the *total*; a token only visits top_k = {k} experts.")
    expect(answer != k * expert, f"{name}: close: every token also goes through the router (d x E weights).")
    expect(answer == right, f"{name}: a SwiGLU expert has three d x d_ff matrices (w1, w3, w2). "
                            "Active = top_k experts + the router.")
    return passed(name, f"{right:,} active of {E * expert + d * E:,} total: {right / (E * expert + d * E):.0%}.")


def check_capacity_choice(answer: object, experts: int = 16, top_k: int = 2, balance_weight: float = 0.01,
                          grid: dict | None = None) -> bool:
    """Exercise 5: with the routing explorer, the smallest capacity factor dropping under 1% of the token slots.

    ``grid``: :func:`labkit.moe.routing_grid.load_routing_grid` (the committed one by default).
    """
    from labkit.moe.routing_grid import CAPACITY_FACTORS, cf_key, load_routing_grid

    name = "Exercise 5 (choose a capacity factor)"
    if unanswered(answer, name):
        return False
    grid = load_routing_grid() if grid is None else grid
    point = grid[(experts, top_k, balance_weight)]
    factors = [cf for cf in CAPACITY_FACTORS if cf is not None]
    expect(answer != "dropless", f"{name}: dropless has no capacity limit (and no fixed memory per expert); "
                                 f"pick one of the capacity factors {factors}")
    if not (isinstance(answer, (int, float)) and not isinstance(answer, bool) and answer in factors):
        raise ExerciseError(f"{name}: answer with one of the explorer's capacity factors {factors}, got {answer!r}")
    slots = point.tokens * point.top_k
    share = {cf: point.dropped[cf_key(cf)] / slots for cf in factors}
    smallest = min(cf for cf in factors if share[cf] < 0.01)
    expect(share[answer] < 0.01, f"{name}: at capacity factor {answer:g} the explorer drops {share[answer]:.1%} "
                                 "of the token slots (the summary line under the chart). Go higher.")
    expect(answer == smallest, f"{name}: {answer:g} drops {share[answer]:.1%}, but a smaller factor also stays "
                               "under 1%. Every slot above the load is padding the GPU computes and memory it holds.")
    return passed(name, f"{smallest:g}: the busiest expert gets about {smallest:g}x its fair share of tokens, so "
                        "the capacity must cover the imbalance, not the average.")
