"""Offline text for a language model: Python's own help topics, split into evaluation and calibration.

``labkit.data.pydoc_topics()`` is a pinned copy of ``pydoc_data.topics`` (the text behind ``help("if")``),
sorted by topic name. Evaluation uses the first 60 topics, calibration the others: the two parts never
share a topic, so pruning never sees the text it is scored on.

**Evaluation is a sample of text**, so its windows are spread over all 60 evaluation topics (not the
first few thousand tokens, which would be two topics): the topics are tokenized one after another into
one stream, cut into non-overlapping windows of ``eval_length`` tokens, and the windows chosen so that
every topic has its middle token in one of them, topped up with evenly spaced windows. Per-window losses
then give every perplexity an error bar (:mod:`labkit.llm.stats`). No window starts with a BOS token:
the model sees plain text mid-stream, as in the papers' WikiText-2 protocol.

**Calibration** (the inputs Wanda and SparseGPT look at) comes from one of three *domains*:

* ``"help"``: the help topics after the evaluation ones (same domain as the evaluation text);
* ``"sklearn"``: scikit-learn's dataset descriptions (another domain, shipped with scikit-learn);
* ``"random"``: uniformly random token ids (no language at all).

Calibration sequences are drawn in a seeded random order from all the non-overlapping windows of the
domain's text, so 4 sequences are the first 4 of the 16 and the sizes of a calibration study are nested.
"""
from __future__ import annotations

from importlib import resources
from typing import TypedDict

import torch

from labkit import checks
from labkit.data import pydoc_topics

#: Calibration domains that :func:`calibration_tokens` accepts.
DOMAINS = ("help", "sklearn", "random")


class TextSplits(TypedDict):
    """What :func:`text_splits` returns: token tensors and the topic names behind them."""

    evaluation: torch.Tensor
    calibration: torch.Tensor
    evaluation_topics: list[str]
    evaluation_covered: list[str]
    calibration_topics: list[str]


def _stream(tokenizer, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
    """The texts tokenized one after another (each followed by a blank line) and each one's first position."""
    ids: list[int] = []
    starts: list[int] = []
    for text in texts:
        starts.append(len(ids))
        ids += tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long), starts


def spread_windows(starts: list[int], total: int, count: int, length: int) -> list[int]:
    """Indices of ``count`` non-overlapping ``length``-token windows of a ``total``-token stream of texts
    starting at ``starts``: first the window holding each text's middle token, then evenly spaced ones.

    Windows are the consecutive cuts ``[i * length, (i + 1) * length)``, so any two chosen ones never overlap.
    """
    available = total // length
    if count > available:
        raise ValueError(f"the text holds {available} windows of {length} tokens, fewer than {count}: "
                         "ask for fewer or shorter windows")
    ends = starts[1:] + [total]
    chosen = {min((start + end) // 2 // length, available - 1) for start, end in zip(starts, ends, strict=True)}
    chosen = set(sorted(chosen)[:count])  # more texts than windows: the first ones
    rest = [i for i in range(available) if i not in chosen]
    need = count - len(chosen)
    chosen |= {rest[(j * len(rest)) // need] for j in range(need)} if need else set()
    return sorted(chosen)


def _windows(stream: torch.Tensor, indices: list[int], length: int) -> torch.Tensor:
    return torch.stack([stream[i * length:(i + 1) * length] for i in indices])


def sklearn_texts() -> list[str]:
    """scikit-learn's dataset descriptions (``sklearn/datasets/descr/*.rst``): English prose on another subject."""
    folder = resources.files("sklearn.datasets.descr")
    return [p.read_text(encoding="utf-8") for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".rst")]


def calibration_tokens(tokenizer, domain: str = "help", sequences: int = 32, length: int = 128, *,
                       eval_topics: int = 60, seed: int = 0) -> torch.Tensor:
    """Calibration token ids ``(sequences, length)`` from ``domain`` (``"help"``, ``"sklearn"`` or ``"random"``).

    Sequences are non-overlapping windows of the domain's text taken in a seeded random order, so a
    smaller set is always the start of a larger one. ``"help"`` uses only topics after the first
    ``eval_topics`` (never the evaluation text). ``"random"`` draws ids uniformly from the vocabulary.
    """
    domain = checks.choice("domain", domain, DOMAINS)
    sequences = checks.positive_int("sequences", sequences)
    length = checks.positive_int("length", length)
    generator = torch.Generator().manual_seed(checks.nonneg_int("seed", seed))
    if domain == "random":
        return torch.randint(0, len(tokenizer), (sequences, length), generator=generator)
    if domain == "help":
        names = list(pydoc_topics())
        if not 0 < eval_topics < len(names):
            raise ValueError(f"eval_topics must be in 1..{len(names) - 1}, got {eval_topics}")
        texts = [pydoc_topics()[name] for name in names[eval_topics:]]
    else:
        texts = sklearn_texts()
    stream, _ = _stream(tokenizer, texts)
    available = stream.numel() // length
    if sequences > available:
        raise ValueError(f"the {domain!r} text holds {available} sequences of {length} tokens, fewer than "
                         f"{sequences}: ask for fewer or shorter calibration sequences")
    order = torch.randperm(available, generator=generator)[:sequences].tolist()
    return _windows(stream, order, length)


def text_splits(tokenizer, *, eval_topics: int = 60, eval_windows: int = 64, eval_length: int = 256,
                calibration_sequences: int = 32, calibration_length: int = 128,
                calibration_domain: str = "help") -> TextSplits:
    """Evaluation and calibration tokens and the topics behind them.

    ``"evaluation"``: ``(eval_windows, eval_length)`` token ids, windows spread over the first
    ``eval_topics`` help topics (see the module docstring); ``"evaluation_covered"`` names the topics
    that have tokens in them. ``"calibration"``: ``(calibration_sequences, calibration_length)`` from
    :func:`calibration_tokens`. Raises ``ValueError`` if the text is too short.
    """
    eval_topics = checks.positive_int("eval_topics", eval_topics)
    eval_windows = checks.positive_int("eval_windows", eval_windows)
    eval_length = checks.positive_int("eval_length", eval_length)
    names = list(pydoc_topics())
    if eval_topics >= len(names):
        raise ValueError(f"eval_topics must be below {len(names)} (the number of help topics), got {eval_topics}")
    evaluation_names = names[:eval_topics]
    stream, starts = _stream(tokenizer, [pydoc_topics()[name] for name in evaluation_names])
    indices = spread_windows(starts, stream.numel(), eval_windows, eval_length)
    covered = sorted({evaluation_names[t] for i in indices for t in range(len(starts))
                      if starts[t] < (i + 1) * eval_length and (starts + [stream.numel()])[t + 1] > i * eval_length})
    calibration = calibration_tokens(tokenizer, calibration_domain, calibration_sequences, calibration_length,
                                     eval_topics=eval_topics)
    return {
        "evaluation": _windows(stream, indices, eval_length),
        "calibration": calibration,
        "evaluation_topics": evaluation_names,
        "evaluation_covered": covered,
        "calibration_topics": names[eval_topics:] if calibration_domain == "help" else [],
    }
