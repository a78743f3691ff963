"""A small task beyond perplexity: which sentence comes next? (a multiple-choice cloze test)

Perplexity averages over every token; a task asks whether the model still *uses* the text. Each item
is a passage from one of the evaluation help topics, cut just before a sentence, and four candidate
next sentences: the true one and three sentences from *other* topics. The model picks the candidate it
finds most likely after the passage (the sum of its log-probabilities; every candidate has the same
number of tokens, so no length bias). Chance is 1 in 4.

* :func:`cloze_items`: the items, built once from the help text (seeded, offline).
* :func:`cloze_accuracy`: a model's share of right answers, per item, with a 95% bootstrap interval.

Every sequence is exactly ``context_tokens + candidate_tokens`` long, so items are scored in batches.
"""
from __future__ import annotations

import re
from typing import TypedDict

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import checks
from labkit.data import pydoc_topics
from labkit.llm.evaluate import check_tokens, logits_of

#: A sentence starts after ". " (or "? "/"! ") and a capital letter.
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


class ClozeItems(TypedDict):
    """What :func:`cloze_items` returns."""

    tokens: torch.Tensor       # (items, choices, context + candidate) token ids
    context_tokens: int
    answer: torch.Tensor       # (items,) index of the true sentence among the choices
    topics: list[str]          # the topic of each item's passage


def _sentences(text: str) -> list[tuple[int, str]]:
    """``(position, sentence)`` of every prose sentence: capitalised, ends with a full stop, no code."""
    found = []
    starts = [0] + [m.end() for m in _SENTENCE.finditer(text)]
    for begin, end in zip(starts, starts[1:] + [len(text)], strict=True):
        sentence = text[begin:end].strip()
        first_line = sentence.split("\n\n")[0]
        if (first_line == sentence and sentence.endswith(".") and 40 <= len(sentence) <= 300
                and ">>>" not in sentence and "\n " not in sentence):
            found.append((begin, " ".join(sentence.split())))
    return found


def cloze_items(tokenizer, *, items: int = 100, eval_topics: int = 60, choices: int = 4, context_tokens: int = 48,
                candidate_tokens: int = 16, seed: int = 0) -> ClozeItems:
    """``items`` multiple-choice items from the first ``eval_topics`` help topics (the evaluation text).

    Each passage is the ``context_tokens`` tokens before a prose sentence of that topic; the candidates
    are the first ``candidate_tokens`` tokens of the true sentence and of ``choices - 1`` sentences of other
    topics, each read after a space, in a seeded random order.
    """
    items = checks.positive_int("items", items)
    choices = checks.positive_int("choices", choices)
    if choices < 2:
        raise ValueError(f"choices must be at least 2 (the true sentence and a distractor), got {choices}")
    context_tokens = checks.positive_int("context_tokens", context_tokens)
    candidate_tokens = checks.positive_int("candidate_tokens", candidate_tokens)
    names = list(pydoc_topics())[:checks.positive_int("eval_topics", eval_topics)]

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    pool: list[tuple[str, list[int], list[int]]] = []  # (topic, context ids, candidate ids)
    for name in names:
        text = pydoc_topics()[name]
        for position, sentence in _sentences(text):
            candidate = ids(" " + sentence)
            context = ids(text[:position].rstrip()) if position else []
            if len(candidate) >= candidate_tokens:
                pool.append((name, context[-context_tokens:], candidate[:candidate_tokens]))
    # A sentence that occurs in two topics (help texts share some) would make an item with two right
    # answers: keep only candidates whose tokens are unique in the pool.
    counts: dict[tuple[int, ...], int] = {}
    for _, _, candidate in pool:
        counts[tuple(candidate)] = counts.get(tuple(candidate), 0) + 1
    pool = [entry for entry in pool if counts[tuple(entry[2])] == 1]
    usable = [i for i, (_, context, _) in enumerate(pool) if len(context) == context_tokens]
    if len(usable) < items:
        raise ValueError(f"the help text gives {len(usable)} usable passages, fewer than items={items}: ask for fewer")
    generator = torch.Generator().manual_seed(checks.nonneg_int("seed", seed))
    chosen = [usable[i] for i in torch.randperm(len(usable), generator=generator)[:items].tolist()]
    rows, answers = [], []
    for index in chosen:
        topic, context, true = pool[index]
        others = [i for i, entry in enumerate(pool) if entry[0] != topic]
        picks = torch.randperm(len(others), generator=generator)[:choices - 1].tolist()
        candidates = [true] + [pool[others[i]][2] for i in picks]
        order = torch.randperm(choices, generator=generator).tolist()
        rows.append([context + candidates[j] for j in order])
        answers.append(order.index(0))
    return {"tokens": torch.tensor(rows, dtype=torch.long), "context_tokens": context_tokens,
            "answer": torch.tensor(answers), "topics": [pool[i][0] for i in chosen]}


@torch.inference_mode()
def cloze_scores(model: nn.Module, items: ClozeItems, batch_items: int = 8, progress: bool = True) -> torch.Tensor:
    """Log-probability ``(items, choices)`` that ``model`` gives each candidate after its passage."""
    tokens = items["tokens"]
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise TypeError("items must be what cloze_items() returns (tokens of shape (items, choices, length))")
    n, choices, length = tokens.shape
    flat = check_tokens("items['tokens']", tokens.reshape(n * choices, length), model)
    context = items["context_tokens"]
    scores = []
    step = checks.positive_int("batch_items", batch_items) * choices
    for start in tqdm(range(0, flat.shape[0], step), desc="cloze", unit="batch", disable=not progress, leave=False):
        batch = flat[start:start + step].to(next(model.parameters()).device)
        logp = logits_of(model, batch)[:, context - 1:-1].float().log_softmax(-1)
        scores.append(logp.gather(-1, batch[:, context:, None]).squeeze(-1).sum(-1).double().cpu())
    return torch.cat(scores).reshape(n, choices)


def cloze_accuracy(model: nn.Module, items: ClozeItems, *, progress: bool = True, resamples: int = 2000,
                   seed: int = 0) -> dict:
    """``{"accuracy", "ci": (low, high), "items", "correct": [0/1 per item]}``: the share of items where
    the true sentence scores highest, with a 95% percentile-bootstrap interval over items."""
    correct = (cloze_scores(model, items, progress=progress).argmax(dim=1) == items["answer"]).double()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, correct.numel(), (checks.positive_int("resamples", resamples), correct.numel()),
                          generator=generator)
    low, high = torch.quantile(correct[index].mean(dim=1), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"accuracy": float(correct.mean()), "ci": (low, high), "items": correct.numel(),
            "correct": [int(c) for c in correct.tolist()]}
