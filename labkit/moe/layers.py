"""Mixture-of-Experts building blocks: a top-k router, its auxiliary losses, capacity, and the MoE layer.

The idea in one paragraph: a dense feed-forward block (FFN) spends the same FLOPs on every token.
An MoE block keeps ``n_experts`` FFNs ("experts") and a tiny linear *router* that scores each token
against each expert; every token visits only its ``top_k`` best experts, and their outputs are
mixed with the router's probabilities ("gate weights"). Parameters grow with ``n_experts``, the
FLOPs per token only with ``top_k``: that gap between *total* and *active* parameters is
conditional computation.

Two things go wrong in practice, and this file has the standard fixes:

* **Collapse.** The router learns from the experts it already picked, so a slightly better expert
  gets more tokens, gets better still, and takes everything. The Switch Transformer's
  load-balancing loss ``E * sum_e f_e * P_e`` (``f_e``: share of routed slots that went to expert
  ``e``, ``P_e``: mean router probability of ``e``) is 1.0 when the load is uniform and grows
  with imbalance. The router z-loss ``mean(logsumexp(logits)^2)`` keeps logits small and stable.
* **Capacity.** On real hardware each expert gets a fixed buffer of
  ``ceil(capacity_factor * tokens * top_k / n_experts)`` slots. Tokens beyond it are *dropped*:
  their expert output is zero, and only the residual connection carries them on. ``dropless``
  mode (``capacity_factor=None``) never drops, at the price of uneven, data-dependent work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.utils import count_parameters


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    value = checks.nonneg_int(name, value) if low == 0 else checks.positive_int(name, value)
    if value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}")
    return value


def _check_nonneg_float(name: str, value: object) -> float:
    return checks.finite(name, value, low=0.0)


def _check_capacity_factor(value: object) -> float | None:
    if value is None:
        return None
    cf = checks.finite("capacity_factor", value)
    if cf <= 0:
        raise ValueError(f"capacity_factor must be > 0 (1.0 = exactly the average load) or None for dropless, "
                         f"got {value}")
    return cf


def _check_experts(experts: object, n_experts: int | None = None, name: str = "experts") -> torch.Tensor:
    """A (tokens, top_k) tensor of integer expert ids, each in [0, n_experts)."""
    experts = checks.tensor(name, experts, dim=2, dtypes=(torch.int64, torch.int32, torch.int16, torch.uint8))
    if n_experts is not None and experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= n_experts):
        raise ValueError(f"{name} must hold expert ids in [0, {n_experts}), got values from "
                         f"{int(experts.min())} to {int(experts.max())}")
    return experts


def _check_tokens(x: object, d_model: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != d_model:
        raise ValueError(f"x must have last dimension d_model={d_model}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    return x


class SwiGLU(nn.Module):
    """The feed-forward block of Llama/Mixtral: ``w2(silu(w1 x) * w3 x)``, no biases.

    It is both the dense baseline and one expert of the MoE layer.
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        _check_int("d_model", d_model, 1)
        _check_int("d_ff", d_ff, 1)
        self.d_model, self.d_ff = d_model, d_ff
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x, self.d_model)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@dataclass
class Routing:
    """What the router decided for ``T`` tokens.

    ``experts[t, j]`` is the j-th choice of token t and ``weights[t, j]`` its gate weight;
    ``probs`` are the full softmax probabilities (T, E) and ``logits`` the raw scores.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    weights: torch.Tensor
    experts: torch.Tensor


def top_k_route(logits: torch.Tensor, top_k: int, renormalize: bool = True) -> Routing:
    """Softmax over experts, keep the ``top_k`` best per token.

    With ``top_k > 1`` and ``renormalize`` the kept probabilities are rescaled to sum to 1
    (Mixtral). With ``top_k == 1`` the raw probability is kept (Switch): renormalizing would make
    every gate 1.0 and the router would get no gradient from the task loss.
    """
    checks.tensor("logits", logits, dim=2)
    _check_int("top_k", top_k, 1, logits.shape[1])
    probs = logits.float().softmax(dim=-1)
    weights, experts = probs.topk(top_k, dim=-1)
    if renormalize and top_k > 1:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return Routing(logits, probs, weights, experts)


class TopKRouter(nn.Module):
    """A linear router: scores each token against each expert, keeps the ``top_k`` best.

    ``noise_std > 0`` adds Gaussian noise to the logits while training (Shazeer et al. 2017), a
    cheap way to keep exploring experts early on.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int = 1, noise_std: float = 0.0,
                 renormalize: bool = True):
        super().__init__()
        _check_int("d_model", d_model, 1)
        _check_int("n_experts", n_experts, 1)
        _check_int("top_k", top_k, 1, n_experts)
        self.noise_std = _check_nonneg_float("noise_std", noise_std)
        self.n_experts, self.top_k, self.renormalize = n_experts, top_k, renormalize
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def forward(self, x: torch.Tensor) -> Routing:
        """Route ``x`` of shape (tokens, d_model)."""
        _check_tokens(x, self.gate.in_features)
        logits = self.gate(x)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        return top_k_route(logits, self.top_k, self.renormalize)


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch Transformer auxiliary loss ``E * sum_e f_e * P_e``; 1.0 when perfectly balanced.

    ``f_e`` counts routed slots (all ``top_k`` choices) and has no gradient; ``P_e`` is the
    mean router probability, which does, so the loss pushes probability away from busy experts.
    """
    checks.tensor("probs", probs, dim=2)
    _check_experts(experts, probs.shape[1])
    if experts.shape[0] != probs.shape[0]:
        raise ValueError(f"probs must be (T, E) and experts (T, k) with the same T, got "
                         f"{tuple(probs.shape)} and {tuple(experts.shape)}")
    n_experts = probs.shape[1]
    if probs.shape[0] == 0:
        return probs.sum() * 0.0  # no tokens, no imbalance: 0 (not NaN), still part of the graph
    counts = torch.bincount(experts.reshape(-1).long(), minlength=n_experts).to(probs.dtype)
    f = counts / experts.numel()
    p = probs.mean(dim=0)
    return n_experts * (f * p).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss ``mean(logsumexp(logits)^2)``: penalises large logits (keeps softmax stable)."""
    checks.tensor("logits", logits, dim=2)
    if logits.shape[0] == 0:
        return logits.float().sum() * 0.0  # mean over zero tokens: 0, not NaN
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float | None) -> int:
    """Slots per expert: ``ceil(capacity_factor * n_tokens * top_k / n_experts)``.

    ``capacity_factor=None`` (dropless) returns ``n_tokens``: no expert can receive more.
    Computed exactly: ``1.1`` is read as the decimal 11/10 (its shortest repr), not as the binary float
    just above it, so ``expert_capacity(50, 5, 1, 1.1)`` is 11 (float arithmetic gives 11.000000000000002 -> 12).
    """
    _check_int("n_tokens", n_tokens, 0)
    _check_int("n_experts", n_experts, 1)
    _check_int("top_k", top_k, 1, n_experts)
    cf = _check_capacity_factor(capacity_factor)
    if cf is None:
        return n_tokens
    return math.ceil(Fraction(repr(cf)) * n_tokens * top_k / n_experts)


def capacity_mask(experts: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Which (token, choice) slots fit in their expert's buffer of ``capacity`` slots.

    Priority as in GShard/Switch: every token's first choice before any second choice, and
    earlier tokens before later ones. Returns a bool tensor shaped like ``experts``.
    """
    n_experts = _check_int("n_experts", n_experts, 1)
    _check_experts(experts, n_experts)
    _check_int("capacity", capacity, 0)
    slot_major = experts.t().reshape(-1).long()  # all first choices, then all second choices, ...
    one_hot = F.one_hot(slot_major, n_experts)
    position = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1  # place in its expert's queue
    keep = position < capacity
    return keep.reshape(experts.shape[1], experts.shape[0]).t()


@dataclass
class MoEStats:
    """Statistics of one MoE forward pass (plain Python numbers, cheap to log)."""

    tokens: int
    load: list[int]  # slots processed per expert (after dropping)
    routed: list[int]  # slots the router sent per expert (before dropping)
    dropped: int  # slots dropped for lack of capacity
    capacity: int
    router_entropy: float  # mean entropy of the router's distribution, in nats
    balance_loss: float
    z_loss: float

    @property
    def dropped_fraction(self) -> float:
        total = sum(self.routed)
        return self.dropped / total if total else 0.0

    @property
    def load_fraction(self) -> list[float]:
        total = sum(self.routed)
        return [r / total if total else 0.0 for r in self.routed]


def router_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of each token's expert distribution: ``log(E)`` is undecided, 0 is certain.

    Zero tokens have zero mean entropy (nothing was undecided), not NaN.
    """
    checks.tensor("probs", probs, dim=2)
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()


class MoEFeedForward(nn.Module):
    """A Mixture-of-Experts SwiGLU feed-forward layer.

    Experts are stored as stacked weights ``w1, w3: (E, d_ff, d_model)`` and ``w2: (E, d_model,
    d_ff)`` (the layout the fused kernel in ``labkit.kernels.moe`` reads). The forward pass is the
    plain, readable loop over experts. After each call ``aux_loss`` holds
    ``balance_weight * load_balancing_loss + z_weight * router_z_loss`` (add it to the task loss)
    and ``last_stats`` the :class:`MoEStats`.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int = 1,
                 capacity_factor: float | None = None, noise_std: float = 0.0,
                 balance_weight: float = 0.01, z_weight: float = 0.001):
        super().__init__()
        _check_int("d_model", d_model, 1)
        _check_int("d_ff", d_ff, 1)
        _check_int("n_experts", n_experts, 1)
        _check_int("top_k", top_k, 1, n_experts)
        self.d_model, self.d_ff, self.n_experts, self.top_k = d_model, d_ff, n_experts, top_k
        self.capacity_factor = _check_capacity_factor(capacity_factor)
        self.balance_weight = _check_nonneg_float("balance_weight", balance_weight)
        self.z_weight = _check_nonneg_float("z_weight", z_weight)
        self.router = TopKRouter(d_model, n_experts, top_k, noise_std)
        # Initialise each expert like an nn.Linear (uniform, bound 1/sqrt(fan_in)).
        def init(*shape: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(shape[-1])
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))
        self.w1 = init(n_experts, d_ff, d_model)
        self.w3 = init(n_experts, d_ff, d_model)
        self.w2 = init(n_experts, d_model, d_ff)
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.last_stats: MoEStats | None = None

    def expert(self, e: int, h: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s SwiGLU applied to rows ``h``."""
        return F.linear(F.silu(F.linear(h, self.w1[e])) * F.linear(h, self.w3[e]), self.w2[e])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (..., d_model) -> the same shape; routing is per token."""
        _check_tokens(x, self.d_model)
        shape = x.shape
        flat = x.reshape(-1, self.d_model)
        n_tokens = flat.shape[0]
        routing = self.router(flat)
        capacity = expert_capacity(n_tokens, self.n_experts, self.top_k, self.capacity_factor)
        keep = capacity_mask(routing.experts, self.n_experts, capacity)
        gates = routing.weights * keep  # a dropped slot contributes nothing

        out = torch.zeros_like(flat)
        for e in range(self.n_experts):
            token, choice = torch.where((routing.experts == e) & keep)
            if token.numel() == 0:
                continue
            y = self.expert(e, flat[token])
            out = out.index_add(0, token, y * gates[token, choice, None].to(y.dtype))

        balance = load_balancing_loss(routing.probs, routing.experts)
        z = router_z_loss(routing.logits)
        self.aux_loss = self.balance_weight * balance + self.z_weight * z
        with torch.no_grad():
            routed = torch.bincount(routing.experts.reshape(-1), minlength=self.n_experts)
            load = torch.bincount(routing.experts[keep], minlength=self.n_experts)
            self.last_stats = MoEStats(
                tokens=n_tokens, load=load.tolist(), routed=routed.tolist(),
                dropped=int((~keep).sum()), capacity=capacity,
                router_entropy=float(router_entropy(routing.probs)),
                balance_loss=float(balance), z_loss=float(z))
        self.last_routing = routing
        return out.reshape(shape)

    def expert_parameters(self) -> int:
        """Parameters of one expert."""
        return 3 * self.d_model * self.d_ff

    def active_parameters(self) -> int:
        """Parameters a single token touches: the router plus ``top_k`` experts."""
        return self.router.gate.weight.numel() + self.top_k * self.expert_parameters()


def active_parameters(module: nn.Module) -> int:
    """Parameters one token touches: every parameter outside MoE layers plus each MoE layer's active share."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    total = count_parameters(module)
    for m in module.modules():
        if isinstance(m, MoEFeedForward):
            total += m.active_parameters() - count_parameters(m)
    return total
