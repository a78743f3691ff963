"""Expert parallelism: each process holds a slice of the experts, and tokens travel to them.

With ``W`` processes ("ranks") and ``E`` experts, rank ``r`` keeps experts
``[r * E / W, (r + 1) * E / W)`` and its own share of the tokens. One MoE layer then runs as:

1. **Route** locally (the small router is replicated on every rank).
2. **Dispatch**: sort the (token, choice) slots by expert, which also sorts them by the rank that
   owns the expert, tell every rank how many rows to expect (an all-to-all of counts), then send
   the rows with one ``all_to_all_single``: rank ``r`` sends ``send_counts[j]`` rows to rank ``j``.
3. **Compute**: each rank runs its local experts on the rows it received.
4. **Combine**: a second ``all_to_all_single`` sends the results back the way they came; each
   rank multiplies them by the gate weights and adds up each token's ``top_k`` results.

Autograd: the backward pass of an all-to-all is the same all-to-all in reverse (gradients flow
back to the rank that sent the rows), which :class:`_AllToAll` spells out in a few lines.

Run the self-check, which compares outputs and gradients with the single-process
:class:`~labkit.moe.layers.MoEFeedForward`, with::

    python -m labkit.moe.expert_parallel --nproc 2

It starts the ranks with ``torch.multiprocessing`` on this machine only: they meet through a file
(``init_method="file://..."``, no TCP rendezvous store listening on the network) and gloo talks over
the loopback interface (``GLOO_SOCKET_IFNAME``). The layer itself works with any process group
(gloo on CPUs, NCCL on GPUs; ``all_to_all_single`` works on both in this torch build).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.moe.layers import MoEFeedForward, load_balancing_loss, router_z_loss

#: The network interface the demo's processes talk over: loopback, never reachable from another machine.
LOOPBACK = "lo" if sys.platform.startswith("linux") else "lo0"


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with autograd: forward sends rows, backward sends their gradients back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send_counts: list[int], recv_counts: list[int], group) -> torch.Tensor:
        ctx.send_counts, ctx.recv_counts, ctx.group = send_counts, recv_counts, group
        out = x.new_empty((sum(recv_counts),) + tuple(x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv_counts, send_counts, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        back = grad.new_empty((sum(ctx.send_counts),) + tuple(grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.send_counts, ctx.recv_counts, group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, send_counts: list[int], recv_counts: list[int], group=None) -> torch.Tensor:
    """Send ``send_counts[j]`` leading rows of ``x`` to rank ``j``; receive ``recv_counts[j]`` from it.

    Differentiable: the gradient rows travel back the same routes.
    """
    return _AllToAll.apply(x, send_counts, recv_counts, group)


class ExpertParallelMoE(nn.Module):
    """An :class:`MoEFeedForward` whose experts are split across the ranks of a process group.

    Build it from a single-process layer (every rank passes an identical one, e.g. made with the
    same seed); this rank keeps its slice of the experts and a copy of the router. Dropless only:
    capacity limits would need a global count. ``aux_loss`` (balance + z-loss) is computed on this
    rank's tokens, as Megatron-style trainers do per micro-batch.
    """

    def __init__(self, layer: MoEFeedForward, group=None):
        super().__init__()
        if not isinstance(layer, MoEFeedForward):
            raise TypeError(f"layer must be a labkit.moe.MoEFeedForward, got {type(layer).__name__}")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: start the ranks (see main()) and call "
                               "dist.init_process_group('gloo' or 'nccl') first")
        if layer.capacity_factor is not None:
            raise ValueError("ExpertParallelMoE is dropless: build the layer with capacity_factor=None")
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        if layer.n_experts % self.world:
            raise ValueError(f"n_experts ({layer.n_experts}) must be divisible by the number of ranks ({self.world})")
        self.n_experts, self.top_k, self.d_model = layer.n_experts, layer.top_k, layer.d_model
        self.per_rank = layer.n_experts // self.world
        self.first_expert = self.rank * self.per_rank
        self.balance_weight, self.z_weight = layer.balance_weight, layer.z_weight
        self.router = type(layer.router)(layer.d_model, layer.n_experts, layer.top_k, layer.router.noise_std,
                                         layer.router.renormalize)
        self.router.load_state_dict(layer.router.state_dict())
        mine = slice(self.first_expert, self.first_expert + self.per_rank)
        self.w1 = nn.Parameter(layer.w1.detach()[mine].clone())
        self.w3 = nn.Parameter(layer.w3.detach()[mine].clone())
        self.w2 = nn.Parameter(layer.w2.detach()[mine].clone())
        self.aux_loss = torch.zeros(())
        self.last_exchange: dict[str, list[int]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's tokens ``(..., d_model)`` in, their MoE outputs out."""
        if not isinstance(x, torch.Tensor) or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be a tensor with last dimension d_model={self.d_model}")
        shape = x.shape
        flat = x.reshape(-1, self.d_model)
        routing = self.router(flat)
        self.aux_loss = (self.balance_weight * load_balancing_loss(routing.probs, routing.experts)
                         + self.z_weight * router_z_loss(routing.logits))

        # Dispatch: slots sorted by expert are also sorted by owner rank (experts are contiguous per rank).
        slot_expert = routing.experts.reshape(-1)
        order = torch.argsort(slot_expert, stable=True)
        sorted_expert = slot_expert[order]
        send_counts_t = torch.bincount(sorted_expert // self.per_rank, minlength=self.world)
        recv_counts_t = torch.empty_like(send_counts_t)
        dist.all_to_all_single(recv_counts_t, send_counts_t, group=self.group)  # one int per rank pair
        send_counts, recv_counts = send_counts_t.tolist(), recv_counts_t.tolist()
        rows = all_to_all(flat[order // self.top_k], send_counts, recv_counts, self.group)
        recv_expert = torch.empty(sum(recv_counts), dtype=sorted_expert.dtype, device=x.device)
        dist.all_to_all_single(recv_expert, sorted_expert.contiguous(), recv_counts, send_counts, group=self.group)

        # Compute: the local experts, each on the rows addressed to it.
        y = torch.zeros_like(rows)
        local = recv_expert - self.first_expert
        for e in range(self.per_rank):
            idx = torch.where(local == e)[0]
            if idx.numel():
                h = rows[idx]
                out = F.linear(F.silu(F.linear(h, self.w1[e])) * F.linear(h, self.w3[e]), self.w2[e])
                y = y.index_add(0, idx, out)

        # Combine: send results back along the same routes, weight them by the gates, sum per token.
        back = all_to_all(y, recv_counts, send_counts, self.group)
        gates = routing.weights.reshape(-1)[order].to(back.dtype)
        result = torch.zeros_like(flat).index_add(0, order // self.top_k, back * gates[:, None])
        self.last_exchange = {"send_counts": send_counts, "recv_counts": recv_counts}
        return result.reshape(shape)


# ------------------------------------------------------------------------------------------------
# Self-check: run in 2 (or more) processes on this machine
# ------------------------------------------------------------------------------------------------
def _grad(t: torch.Tensor) -> torch.Tensor:
    """The gradient that ``backward()`` left in ``t``; a clear error instead of a None further on."""
    if t.grad is None:
        raise RuntimeError("no gradient reached this tensor: run backward() through it first")
    return t.grad


def self_check(d_model: int = 16, d_ff: int = 32, n_experts: int = 4, top_k: int = 2, seed: int = 0,
               atol: float = 1e-5) -> bool:
    """Compare :class:`ExpertParallelMoE` with the single-process layer: outputs, input, expert and router gradients.

    Every rank builds the same layer and the same inputs for *all* ranks (rank ``r`` has ``5 + 3 r``
    tokens, so the exchange is uneven), runs the reference on all of them, and its expert-parallel
    share on its own. Rank 0 prints a report. Returns True when everything matches on every rank.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)
    layer = MoEFeedForward(d_model, d_ff, n_experts, top_k, balance_weight=0.0, z_weight=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    sizes = [5 + 3 * r for r in range(world)]
    xs = [torch.randn(n, d_model, generator=g) for n in sizes]
    grads_out = [torch.randn(n, d_model, generator=g) for n in sizes]

    # Reference: one process, all experts, everybody's tokens.
    x_all = torch.cat(xs).requires_grad_()
    y_all = layer(x_all)
    (y_all * torch.cat(grads_out)).sum().backward()
    start = sum(sizes[:rank])
    mine = slice(start, start + sizes[rank])

    ep = ExpertParallelMoE(layer)
    x = xs[rank].clone().requires_grad_()
    y = ep(x)
    (y * grads_out[rank]).sum().backward()
    router_grad = _grad(ep.router.gate.weight).clone()
    dist.all_reduce(router_grad)  # what data-parallel training does with replicated parameters
    experts = slice(ep.first_expert, ep.first_expert + ep.per_rank)

    pairs = {
        "output": (y, y_all[mine]),
        "input grad": (_grad(x), _grad(x_all)[mine]),
        "w1 grad": (_grad(ep.w1), _grad(layer.w1)[experts]),
        "w3 grad": (_grad(ep.w3), _grad(layer.w3)[experts]),
        "w2 grad": (_grad(ep.w2), _grad(layer.w2)[experts]),
        "router grad (all-reduced)": (router_grad, _grad(layer.router.gate.weight)),
    }
    errors = {name: float((a - b).detach().abs().max()) for name, (a, b) in pairs.items()}
    ok = all(e <= atol for e in errors.values())
    assert ep.last_exchange is not None, "forward() records the exchange it made"
    reports: list[Any] = [None] * world  # all_gather_object fills one report per rank
    dist.all_gather_object(reports, {"rank": rank, "tokens": sizes[rank], "experts": [experts.start, experts.stop - 1],
                                     "send": ep.last_exchange["send_counts"], "ok": ok, "errors": errors})
    if rank == 0:
        print(f"expert parallelism self-check: {world} ranks ({dist.get_backend()}), {n_experts} experts, top-{top_k}")
        for r in reports:
            print(f"  rank {r['rank']}: {r['tokens']} tokens, experts {r['experts'][0]}-{r['experts'][1]}, "
                  f"sends rows {r['send']} to ranks {list(range(world))}")
        for name in errors:
            worst = max(r["errors"][name] for r in reports)
            print(f"  {name:26s} matches the single-process layer: {worst <= atol}")
        print("PASS" if all(r["ok"] for r in reports) else f"FAIL (tolerance {atol}): {[r['errors'] for r in reports]}")
    return all(r["ok"] for r in reports)


def _worker(rank: int, world: int, rendezvous: str, hold_s: float) -> None:
    """One rank of :func:`main` (started by ``torch.multiprocessing``): join the group, run the self-check."""
    # gloo talks over the loopback interface only, and the ranks meet through a file, not a TCP
    # store: nothing this demo starts can be reached from another machine on the network.
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        ok = self_check()
        sys.stdout.flush()
        if hold_s:  # keep the ranks (and their sockets) alive, for the test that lists them
            time.sleep(hold_s)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if not ok:
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m labkit.moe.expert_parallel --nproc 2``: the self-check in fresh processes.

    The check runs on CPU tensors, so it uses gloo even on a GPU machine; the layer itself works with
    any process group (NCCL for CUDA tensors) since it only calls ``all_to_all_single``.
    """
    import argparse
    import tempfile

    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description="Expert-parallel self-check on this machine (loopback only).")
    parser.add_argument("--nproc", type=int, default=2, help="number of processes (ranks), default 2")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds the ranks stay up after the check")
    args = parser.parse_args(argv)
    if args.nproc < 1 or args.hold < 0:
        parser.error("--nproc must be >= 1 and --hold >= 0")
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK  # inherited by the spawned ranks too
    with tempfile.TemporaryDirectory(prefix="labkit-ep-") as folder:
        rendezvous = os.path.join(folder, "rendezvous")  # a fresh file: FileStore must not reuse an old one
        try:
            mp.start_processes(_worker, args=(args.nproc, rendezvous, args.hold), nprocs=args.nproc,
                               start_method="spawn")
        except mp.ProcessExitedException as e:
            print(f"rank {e.error_index} exited with code {e.exit_code}", file=sys.stderr)
            return 1
    return 0


def parse_send_counts(stdout: str) -> list[list[int]]:
    """The ``send_counts`` table (rows rank i sent to rank j) from the self-check's printed report."""
    import re

    table = [[int(v) for v in m.split(",")] for m in re.findall(r"sends rows \[([0-9, ]+)\]", stdout)]
    if not table:
        raise ValueError("stdout holds no 'sends rows [...]' lines: pass the self-check's output (run_demo().stdout)")
    return table


def run_demo(nproc: int = 2, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Run the self-check in ``nproc`` fresh processes (``python -m labkit.moe.expert_parallel``); the finished process.

    Used by the notebook and the tests. The ranks meet through a file and talk over loopback only.
    Raises ``RuntimeError`` (with the output) if it fails.
    """
    nproc = checks.positive_int("nproc", nproc)
    proc = subprocess.run(demo_command(nproc), capture_output=True, text=True, timeout=timeout, env=demo_env())
    if proc.returncode != 0:
        raise RuntimeError(f"the {nproc}-process self-check failed (exit {proc.returncode}):\n{proc.stdout}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def demo_command(nproc: int = 2, hold_s: float = 0.0) -> list[str]:
    """The command line :func:`run_demo` runs (``hold_s``: keep the ranks up that long after the check)."""
    return [sys.executable, "-m", "labkit.moe.expert_parallel", "--nproc", str(nproc), "--hold", str(hold_s)]


def demo_env() -> dict[str, str]:
    """The demo's environment: one thread per rank, unbuffered output, gloo on loopback."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GLOO_SOCKET_IFNAME": LOOPBACK}


if __name__ == "__main__":
    sys.exit(main())
