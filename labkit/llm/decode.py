"""A plain decode loop: one Llama block after another on a preallocated KV cache, nothing else.

``transformers`` runs every step through layers of general machinery (cache objects, mask builders,
attention dispatch, output records). For a 135M model on a laptop CPU that bookkeeping costs about as
much time per token as reading the block weights does, and so it hides what a sparse product saves.
:class:`Lean` runs the *same modules* of the *same model* (its embedding, norms, linears, rotary
embedding, LM head) in a loop short enough to read in one screen, the way llama.cpp or nanoGPT do it:

    h = embed(token)
    for each block:
        q, k, v = projections of norm(h)      # one group: one gather when activation-sparse
        rotate q, k; write k, v into the cache; attend over the cache
        h = h + o_proj(attention)
        g, u = gate_proj, up_proj of norm(h)   # one group again
        h = h + down_proj(silu(g) * u)
    logits = lm_head(norm(h))

A linear that is a :class:`labkit.llm.activation.SparseInputLinear` runs its group's gather once for all
the members; any other linear (dense, structured-pruned, int8 / int4) is simply called.

``transposed=True`` is the fair dense baseline. On a CPU, a one-token product ``x @ W^T`` with ``W^T``
stored row-major (the layout the activation-sparse gather reads) runs faster than ``F.linear(x, W)``
does on the ``(out, in)`` layout ``nn.Linear`` keeps: a speed-up that has nothing to do with sparsity.
With ``transposed=True`` every plain linear (and the LM head) decodes through a transposed copy, and an
activation-sparse group at sparsity 0 through its own ``W^T``, so a comparison measures the skipping
alone. The loop is for
timing decode, and it is tested to give the logits of ``transformers``' own forward pass.

It calls like a ``transformers`` model (``model(input_ids=..., cache=..., use_cache=True)`` returning
``.logits`` and ``.cache``), so :func:`labkit.llm.speed` and :func:`labkit.llm.speeds_in_turns` time it
unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from labkit.llm.activation import SparseInputLinear


@dataclass
class LeanCache:
    """Keys and values of every block, ``(blocks, 1, kv_heads, max_length, head_dim)``, and how many are filled."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0


@dataclass
class LeanOutput:
    """What a call returns: the logits of the new tokens and the cache to pass to the next call."""

    logits: torch.Tensor
    cache: LeanCache


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Lean(nn.Module):
    """``model`` (a ``transformers`` Llama, e.g. SmolLM2) decoded by the plain loop of the module docstring.

    ``max_length``: the cache's size in tokens (prompt + generated). Batch size 1 only: this is the decode
    of one conversation, the case where a step is a matrix-vector product. ``transposed``: decode dense
    products as ``x @ W^T`` (see the module docstring); the transposed copies are made at the first call,
    from the weights as they are then (build a new ``Lean`` after changing weights).
    """

    inner: Any  # a transformers model: its submodules are reached by name

    def __init__(self, model: nn.Module, max_length: int = 512, *, transposed: bool = False):
        super().__init__()
        if not hasattr(model, "model") or not hasattr(model.model, "layers"):
            raise TypeError(f"model must be a transformers Llama-style model (model.model.layers), got "
                            f"{type(model).__name__}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int (tokens the cache holds), got {max_length!r}")
        self.inner = model
        self.config: Any = model.config
        self.max_length = max_length
        self.transposed = bool(transposed)
        self._t: dict[tuple[int, ...], tuple[torch.Tensor, list[int]]] = {}  # fused W^T of plain linears

    def _transposed(self, linears: list[nn.Module]) -> tuple[torch.Tensor, list[int]] | None:
        """The fused ``W^T`` of plain bias-free ``nn.Linear`` s reading one input (made once), else ``None``."""
        key = tuple(id(m) for m in linears)
        if key not in self._t:
            # exactly nn.Linear: a subclass (Int8Linear...) keeps its own product
            plain: list[nn.Linear] = []
            for m in linears:
                if type(m) is not nn.Linear or cast(nn.Linear, m).bias is not None:
                    return None
                plain.append(cast(nn.Linear, m))
            with torch.no_grad():
                self._t[key] = (torch.cat([m.weight.detach() for m in plain]).t().contiguous(),
                                [m.out_features for m in plain])
        return self._t[key]

    def _project(self, linears: list[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of linears that read the same ``x``, for one token by the fastest path that applies."""
        if x.shape[:-1].numel() == 1:
            first = linears[0]
            if isinstance(first, SparseInputLinear) and len(first.group.splits) == len(linears):
                group = first.group
                if group.threshold != 0 and group.fast:
                    return group.gather(x)  # activation-sparse: only the kept rows of W^T
                if self.transposed:
                    return (x.reshape(1, -1) @ group.weight_t).reshape(*x.shape[:-1], -1).split(group.splits, -1)
            elif self.transposed:
                fused = self._transposed(linears)
                if fused is not None:
                    return (x.reshape(1, -1) @ fused[0]).reshape(*x.shape[:-1], -1).split(fused[1], -1)
        return tuple(m(x) for m in linears)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The LM head, through its transposed copy when ``transposed`` and one token."""
        if self.transposed and x.shape[:-1].numel() == 1:
            return self._project([self.inner.lm_head], x)[0]
        return self.inner.lm_head(x)

    def new_cache(self) -> LeanCache:
        """An empty cache for one sequence of up to ``max_length`` tokens."""
        attn = self.inner.model.layers[0].self_attn
        kv_heads = self.config.num_key_value_heads
        weight = self.inner.model.embed_tokens.weight
        shape = (len(self.inner.model.layers), 1, kv_heads, self.max_length, attn.head_dim)
        return LeanCache(torch.zeros(shape, dtype=weight.dtype, device=weight.device),
                         torch.zeros(shape, dtype=weight.dtype, device=weight.device))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: LeanCache | None = None, use_cache: bool = True,
                **_: object) -> LeanOutput:
        """Logits ``(1, T, vocab)`` of ``input_ids`` ``(1, T)`` after the tokens already in ``cache``."""
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"input_ids must be (1, tokens): the lean loop decodes one sequence, got "
                             f"{tuple(input_ids.shape)}")
        cache = self.new_cache() if cache is None else cache
        start, steps = cache.length, input_ids.shape[1]
        if start + steps > self.max_length:
            raise ValueError(f"{start + steps} tokens exceed the cache of {self.max_length}: build Lean(model, "
                             f"max_length={start + steps}) or more")
        body = self.inner.model
        h = body.embed_tokens(input_ids)
        positions = torch.arange(start, start + steps, device=h.device)[None]
        cos, sin = body.rotary_emb(h, positions)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        end = start + steps
        if steps > 1 and start > 0:
            raise ValueError("the lean loop takes a prompt only into an empty cache, then one token at a time")
        for i, block in enumerate(body.layers):
            attn = block.self_attn
            x = block.input_layernorm(h)
            q, k, v = self._project([attn.q_proj, attn.k_proj, attn.v_proj], x)
            q = q.view(1, steps, -1, attn.head_dim).transpose(1, 2)
            k = k.view(1, steps, -1, attn.head_dim).transpose(1, 2)
            v = v.view(1, steps, -1, attn.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.keys[i, :, :, start:end] = k
            cache.values[i, :, :, start:end] = v
            # a prompt attends causally to itself; a single new token attends to everything before it
            out = F.scaled_dot_product_attention(q, cache.keys[i, :, :, :end], cache.values[i, :, :, :end],
                                                 is_causal=steps > 1 and start == 0, scale=attn.scaling,
                                                 enable_gqa=True)
            h = h + self._project([attn.o_proj], out.transpose(1, 2).reshape(1, steps, -1))[0]
            mlp = block.mlp
            x = block.post_attention_layernorm(h)
            gate, up = self._project([mlp.gate_proj, mlp.up_proj], x)
            h = h + self._project([mlp.down_proj], mlp.act_fn(gate) * up)[0]
        cache.length = end
        return LeanOutput(self._head(body.norm(h)), cache)
