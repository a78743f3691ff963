"""Self-checks for notebook 04 (Mixture-of-Experts). See :mod:`labkit.exercises` for the pattern."""
from __future__ import annotations

import math

import torch

from labkit.exercises import check_callable, expect, passed, unanswered
from labkit.moe.layers import top_k_route

# Exercise 2's scenario: the first-choice expert of 12 tokens, 4 experts, top-1, capacity factor 1.0.
CAPACITY_SCENARIO = {"experts": [0, 0, 1, 0, 2, 0, 0, 1, 3, 0, 1, 0], "n_experts": 4, "top_k": 1, "capacity_factor": 1.0}

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
    for k in (1, 2, 3):
        out = fn(logits.clone(), k)
        expect(isinstance(out, tuple) and len(out) == 2, f"{name}: return a tuple (weights, experts), got {type(out).__name__}")
        weights, experts = (torch.as_tensor(t) for t in out)
        ref = top_k_route(logits, k)
        expect(tuple(experts.shape) == (6, k), f"{name}: experts should have shape (tokens, k) = (6, {k}), got {tuple(experts.shape)}")
        expect(torch.equal(experts.long().sort(-1).values, ref.experts.sort(-1).values),
               f"{name}: with k={k} you picked the wrong experts. Take the k largest probabilities per token (torch.topk on dim=-1).")
        same_order = torch.equal(experts.long(), ref.experts)
        expect(same_order, f"{name}: the right experts, but list them best first (torch.topk does this).")
        if k == 1:
            expect(torch.allclose(weights.float(), ref.weights, atol=1e-5),
                   f"{name}: with k=1 keep the raw softmax probability as the gate (do not renormalise: it would always be 1).")
        else:
            expect(torch.allclose(weights.float().sum(-1), torch.ones(6), atol=1e-5),
                   f"{name}: with k={k} the gate weights of a token should be renormalised to sum to 1.")
            expect(torch.allclose(weights.float(), ref.weights, atol=1e-5),
                   f"{name}: gate weights are off. Softmax over *all* experts first, then keep the top k and renormalise.")
    return passed(name, "This is exactly labkit.moe.top_k_route.")


def check_capacity(answer: object) -> bool:
    """Exercise 2: ``(capacity, dropped)`` for :data:`CAPACITY_SCENARIO`."""
    name = "Exercise 2 (capacity and dropped tokens)"
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, (tuple, list)) and len(answer) == 2,
           f"{name}: answer with a pair (capacity, dropped), e.g. (5, 2)")
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
    name = "Exercise 3 (why routers collapse)"
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, str) and answer.strip().lower() in COLLAPSE_CHOICES,
           f"{name}: answer with one letter of {sorted(COLLAPSE_CHOICES)}")
    expect(answer.strip().lower() == "b", f"{name}: not quite. Look at the load plot without the balancing loss: "
                                          "which experts get better, and why do they keep winning?")
    return passed(name, "The balancing loss breaks the loop by making busy experts slightly less attractive.")


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
