"""What a language model is worth after pruning: perplexity, a greedy answer, and its speed.

* :func:`perplexity`: ``exp`` of the mean next-token cross-entropy, the standard score of SparseGPT
  and Wanda; :func:`window_losses` keeps it per evaluation window, for error bars. 1 is perfect;
  a model guessing uniformly over SmolLM2's 49,152 tokens scores 49,152.
* :func:`generate`: the model's greedy answer to a prompt through its chat template.
* :func:`speed`: prompt processing ("prefill") and token-by-token decoding with a KV cache, in tokens/s.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import checks
from labkit.data import pydoc_topics


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model accepts (``config.max_position_embeddings``), or ``None`` if unknown."""
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def check_tokens(name: str, tokens: object, model: nn.Module) -> torch.Tensor:
    """``tokens`` must be a 2-D integer tensor ``(sequences, length)`` that fits the model's context."""
    tokens = checks.tensor(name, tokens, dim=2, dtypes=(torch.long, torch.int32), nonempty=True)
    limit = context_length(model)
    if limit is not None and tokens.shape[1] > limit:
        raise ValueError(f"{name} has sequences of {tokens.shape[1]} tokens, longer than the model's context of "
                         f"{limit}: cut them, e.g. tokens[:, :{limit}]")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"{name} holds token ids outside [0, {vocab}): were they made by this model's tokenizer?")
    return tokens.long()


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (inputs go there); the CPU for a model without any."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def logits_of(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Logits ``(batch, length, vocab)`` of a ``transformers`` model or of any module mapping ids to logits."""
    if getattr(model, "config", None) is not None and hasattr(model, "generate"):
        return model(input_ids=tokens, use_cache=False).logits
    out = model(tokens)
    return out.logits if hasattr(out, "logits") else out


@torch.inference_mode()
def window_losses(model: nn.Module, tokens: torch.Tensor, batch_size: int = 4, progress: bool = True) -> torch.Tensor:
    """Mean next-token loss (nats) of every sequence of ``tokens`` ``(sequences, length)``: a tensor ``(sequences,)``.

    Every sequence predicts its tokens 2..length from the ones before (length - 1 predictions each),
    ``batch_size`` sequences at a time. Keep these: they give a perplexity its error bar
    (:mod:`labkit.llm.stats`). Raises ``ValueError`` for a sequence longer than the context.
    """
    tokens = check_tokens("tokens", tokens, model)
    batch_size = checks.positive_int("batch_size", batch_size)
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens must hold at least 2 tokens per sequence (one to predict), got {tokens.shape[1]}")
    losses = []
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc="perplexity", unit="batch", disable=not progress, leave=False):
        batch = tokens[start:start + batch_size].to(device_of(model))
        logits = logits_of(model, batch)[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        losses.append(nll.double().mean(dim=1).cpu())
    return torch.cat(losses)


def perplexity(model: nn.Module, tokens: torch.Tensor, batch_size: int = 4, progress: bool = True) -> float:
    """Perplexity of ``model`` on ``tokens`` ``(sequences, length)``: ``exp(mean -log p(next token))``.

    The mean over every predicted token, which (all sequences having one length) is the mean of
    :func:`window_losses`. Raises ``ValueError`` for a sequence longer than the context.
    """
    return math.exp(float(window_losses(model, tokens, batch_size, progress).mean()))


def chat_ids(tokenizer, prompt: str) -> torch.Tensor:
    """The token ids ``(1, n)`` of ``prompt`` as a user message, ready for the assistant's answer."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return ids


@torch.inference_mode()
def generate(model: nn.Module, tokenizer, prompt: str = "What is the capital of France?",
             max_new_tokens: int = 32) -> str:
    """The model's greedy (deterministic) answer to ``prompt``, through the model's chat template.

    Uses ``transformers``' ``generate`` with a KV cache; stops at the end-of-turn token or after
    ``max_new_tokens``. Special tokens are removed from the answer.
    """
    max_new_tokens = checks.positive_int("max_new_tokens", max_new_tokens)
    ids = chat_ids(tokenizer, prompt).to(device_of(model))
    # nn.Module does not declare transformers' ``generate``; mypy would see a Tensor | Module attribute
    out = cast(Any, model).generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


@torch.inference_mode()
def _one_run(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """Seconds for the prefill of ``prompt`` and for ``new_tokens`` decode steps, greedy, with a KV cache."""
    sync = torch.cuda.synchronize if prompt.is_cuda else (lambda: None)  # GPU calls return before they finish
    sync()
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    sync()
    prefill = time.perf_counter() - start
    cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    # A plain loop rather than generate(): it times the model, not the framework's per-step bookkeeping.
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    sync()
    decode = time.perf_counter() - start
    return prefill, decode


def speed(model: nn.Module, tokenizer, prompt_tokens: int = 256, new_tokens: int = 32,
          repeats: int = 3) -> dict[str, float]:
    """Measured tokens/s on this machine: ``{"prefill_tokens_per_s", "decode_tokens_per_s", ...}``.

    Prefill: one forward pass over a ``prompt_tokens``-token text (the first of Python's help topics).
    Decode: ``new_tokens`` greedy steps, one token each, reusing the KV cache. The median of ``repeats``
    runs after one warm-up run. Timings depend on the machine and its load.
    """
    prompt_tokens = checks.positive_int("prompt_tokens", prompt_tokens)
    new_tokens = checks.positive_int("new_tokens", new_tokens)
    repeats = checks.positive_int("repeats", repeats)
    limit = context_length(model)
    if limit is not None and prompt_tokens + new_tokens + 1 > limit:
        raise ValueError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the model's context "
                         f"of {limit}: ask for fewer tokens")
    ids: list[int] = []
    for text in pydoc_topics().values():  # topic by topic until the prompt is long enough
        ids += tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= prompt_tokens:
            break
    else:
        raise ValueError(f"prompt_tokens={prompt_tokens} is more than the help topics hold: ask for fewer")
    prompt = torch.tensor([ids[:prompt_tokens]], dtype=torch.long, device=device_of(model))
    _one_run(model, prompt, 2)  # warm-up: first calls allocate memory and pick kernels
    runs = [_one_run(model, prompt, new_tokens) for _ in range(repeats)]
    prefill = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    return {"prefill_tokens_per_s": prompt_tokens / prefill, "decode_tokens_per_s": new_tokens / decode,
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats,
            "threads": torch.get_num_threads()}
