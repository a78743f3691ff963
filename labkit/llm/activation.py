"""Activation sparsity: for each token, skip the weight columns that its small inputs would multiply.

Static pruning (:func:`labkit.llm.prune`) removes the same weights for every input. *Activation*
sparsity removes different ones for every token, and needs no training: the inputs of a linear layer
are heavy-tailed and mostly near zero, so setting those with ``|x_j| <= t`` to zero changes the output
little (TEAL, Liu et al. 2024; CATS, Lee et al. 2024; Deja Vu, Liu et al. 2023 predicts them instead).

Why it is faster. Generating text one token at a time (decode, batch 1) multiplies every weight matrix
by one vector: ``y = W x`` reads all of ``W`` once and does two FLOPs per weight read, so it waits on
memory, not arithmetic. An input ``x_j = 0`` multiplies column ``W[:, j]``: if it is zero, that column
need not be read at all. Stored as ``W^T`` (a column of ``W`` is a contiguous row of ``W^T``), the
kept columns are whole rows, and PyTorch already has the operation that reads only chosen rows and
sums them with weights: ``F.embedding_bag(kept, W^T, per_sample_weights=x[kept], mode="sum")``.
No custom kernel on the CPU; on a GPU see :mod:`labkit.kernels.sparse_gemv`.

What this module does, in the order a learner should read it:

* :func:`input_groups`: which linears read the *same* input (q, k, v; gate, up; o; down): they share
  one threshold and one set of kept columns, and their transposed weights are stored side by side,
  so a decode step gathers each kept row once for all of them.
* :class:`SparseGroup` and :class:`SparseInputLinear`: the wrapper. Many tokens (evaluation, prefill):
  the masked input through the ordinary dense product (the *reference*, exactly what the math says).
  One token (decode): the gather through ``embedding_bag`` (the *fast path*), which reads only kept rows.
* :class:`ActivationSparsity`: wraps a model in place, calibrates a threshold per group from the
  quantiles of ``|x|`` on calibration text, and sets a target sparsity, either **uniform** (every group
  skips the same share of its inputs) or **greedy** (TEAL's block-wise allocation: inside each block the
  groups whose sparsity hurts the block's output least get more of it, weighted by their weights).
  Sparsity 0 runs the original layers untouched: exactly the dense model.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import checks
from labkit.llm.evaluate import check_tokens, device_of
from labkit.llm.oneshot import prunable_layers

#: The methods :meth:`ActivationSparsity.set` accepts.
ALLOCATIONS = ("uniform", "greedy")
#: The greedy allocation raises one group's sparsity by this step at a time (TEAL uses 0.05; 0.1 halves the
#: time and still reaches any average, since one group moves at a time), up to GREEDY_TOP per group, until
#: the block's average reaches GREEDY_MAX.
GREEDY_STEP = 0.1
GREEDY_TOP = 0.9
GREEDY_MAX = 0.7
#: Calibration sequences the greedy allocation scores blocks on (each step runs a block once per candidate).
GREEDY_SEQUENCES = 2
#: Sorted samples of |x| kept per group to read any quantile from (a random subset, seeded).
SAMPLES = 65_536


class SparseGroup(nn.Module):
    """The linears that read one input: one threshold, one set of kept inputs per token.

    ``weight_t`` is the members' weights concatenated along the outputs and transposed, ``(in, sum of
    outs)``, contiguous: row ``j`` holds every weight that input ``j`` multiplies, in every member.
    ``threshold`` 0 means dense: the members' own layers run unchanged. ``fast`` switches the one-token
    path between the gather (True) and the masked dense product (False, the reference).
    """

    weight_t: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        if not linears or not all(isinstance(m, nn.Linear) for m in linears):
            raise TypeError("linears must be a non-empty list of nn.Linear reading the same input")
        width = linears[0].in_features
        if any(m.in_features != width for m in linears):
            raise ValueError(f"every linear of a group must read the same input width, got "
                             f"{[m.in_features for m in linears]}")
        with torch.no_grad():
            self.register_buffer("weight_t", torch.cat([m.weight.detach() for m in linears]).t().contiguous(),
                                 persistent=False)
        biases = [m.bias.detach() if m.bias is not None else
                  torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device) for m in linears]
        self.has_bias = any(m.bias is not None for m in linears)
        self.register_buffer("bias", torch.cat(biases).detach() if self.has_bias else None, persistent=False)
        self.splits = [m.out_features for m in linears]
        self.threshold = 0.0
        self.fast = True
        self.kept = 0  # inputs kept and inputs seen since the last reset: the measured sparsity
        self.seen = 0
        self._input: torch.Tensor | None = None
        self._output: Any = None
        self._offset_cache: dict[tuple, torch.Tensor] = {}

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with every entry ``|x_j| <= threshold`` set to zero (and counted)."""
        keep = x.abs() > self.threshold
        self.kept += int(keep.sum())
        self.seen += keep.numel()
        return x * keep

    def gather(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One token: every member's output from the kept rows of ``weight_t`` only (``embedding_bag``)."""
        flat = x.reshape(-1)
        kept = (flat.abs() > self.threshold).nonzero().flatten()
        n = kept.numel()
        self.kept += n
        self.seen += flat.numel()
        # sum over kept j of x_j * W^T[j, :]: reads n rows of W^T and skips the others. embedding_bag runs
        # its bags in parallel, one thread each: the kept rows go into one bag per thread, summed after.
        # (torch.embedding_bag is F.embedding_bag without its Python checks: a decode step calls it 120 times.)
        y = torch.embedding_bag(self.weight_t, kept, self._offsets(n, x.device), False, 0, False, flat[kept])[0]
        y = y.sum(0) if y.shape[0] > 1 else y[0]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1).split(self.splits, dim=-1)

    def _offsets(self, n: int, device: torch.device) -> torch.Tensor:
        """Where each thread's bag starts among ``n`` kept rows (cached: a new tensor per call costs time)."""
        bags = max(1, min(torch.get_num_threads(), n))
        key = (n, bags, device)
        if key not in self._offset_cache:
            self._offset_cache[key] = torch.tensor([n * b // bags for b in range(bags)], dtype=torch.long,
                                                   device=device)
        return self._offset_cache[key]

    def output(self, index: int, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """Member ``index``'s output for input ``x``: computed once per input for the whole group."""
        if x is not self._input:  # the first member to see this input does the group's work
            self._input = x
            if self.fast and x.shape[:-1].numel() == 1:
                self._output = self.gather(x)
            else:
                self._output = self.masked(x)
        if isinstance(self._output, tuple):
            return self._output[index]
        return linear(self._output)

    def forget(self) -> None:
        """Drop the cached input (it holds a tensor alive) and the counters."""
        self._input, self._output = None, None
        self.kept = self.seen = 0


class SparseInputLinear(nn.Module):
    """Stands where an ``nn.Linear`` stood; its output comes from its :class:`SparseGroup`."""

    group: SparseGroup

    def __init__(self, linear: nn.Linear, group: SparseGroup, index: int):
        super().__init__()
        self.linear = linear
        self.index = index
        # a plain attribute, not a submodule: the group is registered once, on the ActivationSparsity
        object.__setattr__(self, "group", group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group.threshold == 0:  # sparsity 0: the original layer, exactly
            return self.linear(x)
        return self.group.output(self.index, x, self.linear)


@torch.inference_mode()
def input_groups(model: nn.Module, tokens: torch.Tensor | None = None) -> list[list[str]]:
    """Names of the block linears, grouped by the input they read: ``[["...q_proj", "...k_proj", ...], ...]``.

    Found by running ``tokens`` (default: 4 tokens of id 1) once and noting which linears are called one
    after another with the very same input tensor. Works for any model built from ``nn.Linear``; a tied LM
    head is left out, as everywhere in :mod:`labkit.llm`.
    """
    layers = prunable_layers(model)
    tokens = torch.ones(1, 4, dtype=torch.long) if tokens is None else tokens
    calls: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: calls.append((name, args[0])))
             for name, m in layers.items()]
    try:
        model(tokens.to(device_of(model)))
    finally:
        for h in hooks:
            h.remove()
    groups: list[list[str]] = []
    previous: torch.Tensor | None = None
    for name, x in calls:
        if groups and x is previous and name not in groups[-1]:
            groups[-1].append(name)
        elif not any(name in g for g in groups):
            groups.append([name])
        previous = x
    return groups


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks: the longest ``nn.ModuleList`` (``model.model.layers`` for Llama)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"model ({type(model).__name__}) has no nn.ModuleList of blocks: greedy allocation "
                         "needs blocks to score; use allocation='uniform'")
    return max(lists, key=len)


def _sample(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """At most :data:`SAMPLES` entries of ``values`` (flattened), drawn without replacement, sorted."""
    flat = values.reshape(-1).float().cpu()
    if flat.numel() > SAMPLES:
        flat = flat[torch.randperm(flat.numel(), generator=generator)[:SAMPLES]]
    return flat.sort().values


def _quantile(sorted_values: torch.Tensor, share: float) -> float:
    """The value below which ``share`` of ``sorted_values`` lie (0 for share 0: the dense setting)."""
    if share <= 0:
        return 0.0
    index = min(int(math.ceil(share * sorted_values.numel())) - 1, sorted_values.numel() - 1)
    return float(sorted_values[max(index, 0)])


class ActivationSparsity:
    """Make ``model``'s block linears activation-sparse, in place, with thresholds calibrated on ``calibration``.

    ``calibration``: token ids ``(sequences, length)``, e.g. 4 x 128 of
    ``text_splits(tokenizer)["calibration"]``. ``greedy``: also compute TEAL's block-wise allocation
    (a couple of minutes for SmolLM2 on 2 cores; ``progress`` shows a bar). After construction the model
    is still exactly dense (sparsity 0): call :meth:`set`.

    Usage::

        act = ActivationSparsity(model, data["calibration"][:4])
        act.set(0.4)                      # 40% of every group's inputs skipped per token
        llm.perplexity(model, data["evaluation"])
        act.set(0.4, "greedy")            # 40% on average, allocated by each block's output error
        act.measured()                    # the share of inputs actually skipped since the last set()
        act.remove()                      # the original linears back
    """

    def __init__(self, model: nn.Module, calibration: torch.Tensor, *, greedy: bool = True, seed: int = 0,
                 progress: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if any(isinstance(m, SparseInputLinear) for m in model.modules()):
            raise ValueError("model is already activation-sparse: reuse its ActivationSparsity, or call remove() "
                             "on it first")
        calibration = check_tokens("calibration", calibration, model)
        seed = checks.nonneg_int("seed", seed)
        self.model = model
        layers = prunable_layers(model)
        self.names = input_groups(model, calibration[:1, :4])
        self.groups = [SparseGroup([layers[n] for n in names]) for names in self.names]
        self.weights = [sum(layers[n].weight.numel() for n in names) for names in self.names]
        self.samples = self._calibrate(calibration, layers, seed, progress)
        self.allocation, self.sparsity = "uniform", 0.0
        self.install()
        self.greedy_path: list[list[tuple[float, list[float]]]] | None = None
        if greedy:
            self.greedy_path = self._greedy(calibration, progress)
        self.set(0.0)

    # -- calibration -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _calibrate(self, calibration: torch.Tensor, layers: dict[str, nn.Linear], seed: int,
                   progress: bool) -> list[torch.Tensor]:
        """Sorted samples of |x| for each group, from the dense model on the calibration tokens."""
        generator = torch.Generator().manual_seed(seed)
        seen: list[list[torch.Tensor]] = [[] for _ in self.groups]
        hooks = [layers[names[0]].register_forward_pre_hook(
                 lambda mod, args, i=i: seen[i].append(args[0].detach().abs().reshape(-1, args[0].shape[-1])))
                 for i, names in enumerate(self.names)]
        try:
            for row in tqdm(calibration, desc="calibration", unit="sequence", disable=not progress, leave=False):
                self.model(row[None].to(device_of(self.model)))
        finally:
            for h in hooks:
                h.remove()
        return [_sample(torch.cat(s), generator) for s in seen]

    def install(self) -> None:
        """Put a :class:`SparseInputLinear` where each grouped linear is (done by the constructor; again after
        :meth:`remove`)."""
        for group, names in zip(self.groups, self.names, strict=False):
            for index, name in enumerate(names):
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name)
                linear = getattr(parent, child)
                if not isinstance(linear, SparseInputLinear):
                    setattr(parent, child, SparseInputLinear(linear, group, index))

    def remove(self) -> nn.Module:
        """Put the original linears back; returns the model (exactly as it was before). :meth:`install` undoes it."""
        for group, names in zip(self.groups, self.names, strict=False):
            group.forget()
            for name in names:
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name)
                wrapper = getattr(parent, child)
                if isinstance(wrapper, SparseInputLinear):
                    setattr(parent, child, wrapper.linear)
        return self.model

    # -- greedy allocation (TEAL, section 4.2) ---------------------------------------------------------------
    @torch.inference_mode()
    def _greedy(self, calibration: torch.Tensor, progress: bool) -> list[list[tuple[float, list[float]]]]:
        """For each block, the path of allocations from 0 to the highest sparsity: ``[(average, [share per group])]``.

        Start every group of the block at 0; at each step try raising each group by :data:`GREEDY_STEP` and
        keep the one that adds the least error per unit of the block's weight reads it removes (error: the
        relative squared error of what the block adds to the residual stream, against the dense block on the
        same inputs). The average is weighted by the groups' weights: it is the share of the block's
        weight reads skipped.
        """
        blocks = _blocks(self.model)
        of_block = {id(m.group): b for b, block in enumerate(blocks) for m in block.modules()
                    if isinstance(m, SparseInputLinear)}
        self._block_groups = [[i for i, g in enumerate(self.groups) if of_block.get(id(g)) == b]
                              for b in range(len(blocks))]
        inputs: list[tuple[tuple, dict]] = []
        hooks = [block.register_forward_pre_hook(lambda mod, args, kwargs: inputs.append((args, kwargs)),
                                                 with_kwargs=True) for block in blocks]
        try:
            self.model(calibration[:GREEDY_SEQUENCES].to(device_of(self.model)))
        finally:
            for h in hooks:
                h.remove()
        top = int(round(GREEDY_TOP / GREEDY_STEP))
        paths = []
        for b, block in enumerate(tqdm(blocks, desc="greedy allocation", unit="block", disable=not progress,
                                       leave=False)):
            mine = self._block_groups[b]
            args, kwargs = inputs[b]
            # the block's own contribution (output minus its input): the residual stream it adds to is large,
            # and an error measured against the whole output would look small everywhere
            residual = args[0].float()
            target = _first(block(*args, **kwargs)).float() - residual
            levels = {i: 0 for i in mine}
            total = sum(self.weights[i] for i in mine)
            current = 0.0  # the block's error at the current levels
            path = [(0.0, [0.0] * len(mine))]
            while path[-1][0] < GREEDY_MAX and any(levels[i] < top for i in mine):
                errors = {}
                for i in mine:
                    if levels[i] >= top:
                        continue
                    for j in mine:
                        self.groups[j].threshold = _quantile(self.samples[j], (levels[j] + (j == i)) * GREEDY_STEP)
                    out = _first(block(*args, **kwargs)).float() - residual
                    error = float((out - target).pow(2).sum() / target.pow(2).sum())
                    # the error this step adds, per unit of the block's weight reads it removes: a step on a
                    # small group removes little, so it must also cost little to be chosen
                    errors[i] = (error - current) / self.weights[i]
                best = min(errors, key=errors.__getitem__)
                current += errors[best] * self.weights[best]
                levels[best] += 1
                average = sum(levels[i] * GREEDY_STEP * self.weights[i] for i in mine) / total
                path.append((round(average, 6), [round(levels[i] * GREEDY_STEP, 4) for i in mine]))
            for i in mine:
                self.groups[i].threshold = 0.0
                self.groups[i].forget()
            paths.append(path)
        return paths

    # -- setting a sparsity --------------------------------------------------------------------------------------
    def shares(self, sparsity: float, allocation: str = "uniform") -> list[float]:
        """The share of inputs each group skips for a target ``sparsity`` (0 to 0.95) and ``allocation``."""
        sparsity = checks.fraction("sparsity", sparsity, high=0.95, include_high=True)
        allocation = checks.choice("allocation", allocation, ALLOCATIONS)
        if allocation == "uniform":
            return [sparsity] * len(self.groups)
        if self.greedy_path is None:
            raise ValueError("this ActivationSparsity was built with greedy=False: build it with greedy=True to "
                             "use allocation='greedy'")
        shares = [0.0] * len(self.groups)
        for mine, path in zip(self._block_groups, self.greedy_path, strict=False):
            # the first step of the path that reaches the target (the path's averages only go up)
            _, levels = next((p for p in path if p[0] >= sparsity - 1e-9), path[-1])
            for i, share in zip(mine, levels, strict=False):
                shares[i] = share
        return shares

    def set(self, sparsity: float, allocation: str = "uniform") -> dict:
        """Skip ``sparsity`` of the block linears' inputs per token (0: exactly dense). Returns the settings.

        ``allocation``: ``"uniform"`` (every group alike) or ``"greedy"`` (per block, see :meth:`_greedy`).
        The thresholds are the calibration quantiles of ``|x|`` for each group's share.
        """
        shares = self.shares(sparsity, allocation)
        for group, samples, share in zip(self.groups, self.samples, shares, strict=False):
            group.threshold = _quantile(samples, share)
            group.forget()
        self.sparsity, self.allocation = float(sparsity), allocation
        return {"sparsity": self.sparsity, "allocation": allocation, "weighted_share": self.weighted(shares)}

    def weighted(self, shares: Sequence[float]) -> float:
        """The share of block weight reads skipped when group ``i`` skips ``shares[i]`` of its inputs."""
        return sum(s * w for s, w in zip(shares, self.weights, strict=False)) / sum(self.weights)

    def fast(self, on: bool = True) -> None:
        """Decode through the gather (``True``, default) or through the masked dense product (the reference)."""
        for group in self.groups:
            group.fast = bool(on)
            group.forget()

    def measured(self) -> dict[str, float]:
        """``{"inputs_skipped", "weight_reads_skipped"}`` counted since the last :meth:`set` (or :meth:`reset`)."""
        if not any(g.seen for g in self.groups):
            raise ValueError("nothing has run since the thresholds were set: run the model first (sparsity 0 "
                             "runs the original layers, which count nothing)")
        skipped = [1 - g.kept / g.seen if g.seen else 0.0 for g in self.groups]
        return {"inputs_skipped": 1 - sum(g.kept for g in self.groups) / sum(g.seen for g in self.groups),
                "weight_reads_skipped": self.weighted(skipped)}

    def reset(self) -> None:
        """Zero the counters of :meth:`measured`."""
        for group in self.groups:
            group.forget()

    def thresholds(self) -> list[float]:
        """The current threshold of every group (in the order of :attr:`names`)."""
        return [g.threshold for g in self.groups]

    def __iter__(self) -> Iterator[SparseGroup]:
        return iter(self.groups)


def _first(output: Any) -> torch.Tensor:
    """A block's hidden states (``transformers`` blocks return a tensor, older ones a tuple)."""
    return output[0] if isinstance(output, tuple) else output


class Setting(nn.Module):
    """``model`` at one setting of an :class:`ActivationSparsity`: every call sets the thresholds first.

    Lets one wrapped model (one copy of the weights) stand for several variants in
    :func:`labkit.llm.speeds_in_turns`, which times ``{label: model}`` in turns. ``model``: what to call
    instead of ``act.model`` itself, e.g. :class:`labkit.llm.decode.Lean` of it (the same weights).
    """

    act: ActivationSparsity
    inner: Any

    def __init__(self, act: ActivationSparsity, sparsity: float, allocation: str = "uniform", *,
                 model: nn.Module | None = None):
        super().__init__()
        act.shares(sparsity, allocation)  # checks the arguments now, not at the first call
        self.inner = act.model if model is None else model  # e.g. labkit.llm.decode.Lean(act.model)
        self.config = getattr(self.inner, "config", None)
        object.__setattr__(self, "act", act)
        self.key = (float(sparsity), allocation)

    def forward(self, *args, **kwargs):
        if (self.act.sparsity, self.act.allocation) != self.key:
            self.act.set(*self.key)
        return self.inner(*args, **kwargs)

    def generate(self, *args, **kwargs):
        self.act.set(*self.key)
        return self.inner.generate(*args, **kwargs)


def block_bytes_per_token(act: ActivationSparsity, shares: Sequence[float] | None = None) -> dict[str, float]:
    """Bytes of block weights a decode step reads: ``{"dense", "sparse"}``; ``shares`` per group skipped
    (default: the measured shares since the last :meth:`ActivationSparsity.set`)."""
    if shares is None:
        shares = [1 - g.kept / g.seen if g.seen else 0.0 for g in act.groups]
    size = [g.weight_t.element_size() * w for g, w in zip(act.groups, act.weights, strict=False)]
    return {"dense": float(sum(size)), "sparse": float(sum(b * (1 - s) for b, s in zip(size, shares, strict=False)))}
