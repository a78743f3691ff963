"""Mixture-of-Experts: routers, auxiliary losses, capacity, MoE layers and a tiny MoE language model.

Start with :mod:`labkit.moe.layers` (the concepts), then :mod:`labkit.moe.tiny_gpt` (training),
:mod:`labkit.moe.expert_parallel` (experts across processes); the pictures are :mod:`labkit.figures.moe`.
"""
from labkit.moe.layers import (
    MoEFeedForward,
    MoEStats,
    Routing,
    SwiGLU,
    TopKRouter,
    active_parameters,
    capacity_mask,
    count_parameters,
    expert_capacity,
    load_balancing_loss,
    router_entropy,
    router_z_loss,
    top_k_route,
)

__all__ = ["MoEFeedForward", "MoEStats", "Routing", "SwiGLU", "TopKRouter", "active_parameters",
           "capacity_mask", "count_parameters", "expert_capacity", "load_balancing_loss",
           "router_entropy", "router_z_loss", "top_k_route"]
