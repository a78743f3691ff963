"""Offline text for a language model: Python's own help topics, split into evaluation, calibration and training.

``labkit.data.pydoc_topics()`` is a pinned copy of ``pydoc_data.topics`` (the text behind ``help("if")``),
sorted by topic name. Evaluation uses the first 60 topics, calibration the others: the two parts never
share a topic. They do share a little text, because Python's help copies some sections between topics:
75 of the 4,096 tokens of the default 32 x 128 calibration set lie in 32-token runs that also occur in
the evaluation windows (measured; 44 distinct runs). The committed pruning results were calibrated
this way; the training text below removes such runs.

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

**Training** text (for healing a pruned model, :mod:`labkit.llm.heal`) must be disjoint from both.
:func:`training_split` takes the help topics after the evaluation ones *minus* the first
:data:`RESERVED_CALIBRATION` calibration windows (every calibration set the lab uses is among them,
the sets being nested) and *minus* the topics that repeat evaluation text (Python's help copies
sections between topics: ``specialnames`` holds the special-method sections of evaluation topics),
and adds the docstrings of 87 standard-library modules (:func:`labkit.data.stdlib_docstrings`): the
same kind of English about Python, never the evaluation text. :func:`training_batches` draws seeded
batches from it.
"""
from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import TypedDict

import torch

from labkit import checks
from labkit.data import pydoc_topics, stdlib_docstrings

#: Calibration domains that :func:`calibration_tokens` accepts.
DOMAINS = ("help", "sklearn", "random")
#: Calibration windows (of :data:`CALIBRATION_LENGTH` tokens, seed 0) kept out of the training text. The lab
#: calibrates on at most 128 sequences (the calibration study's largest set), and smaller sets are their start.
RESERVED_CALIBRATION = 128
#: The calibration length the lab uses everywhere (``calibration_tokens``' default).
CALIBRATION_LENGTH = 128
#: A help topic sharing a run of this many tokens with the evaluation topics repeats their text, and is kept
#: out of the training text (one shared sentence is shorter: "Traceback (most recent call last): ...").
REPEAT_RUN = 32


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


def calibration_order(windows: int, seed: int = 0) -> list[int]:
    """The seeded random order in which calibration takes the ``windows`` non-overlapping windows of a text.

    One home for the order, so :func:`training_split` can leave out exactly the windows calibration uses.
    """
    generator = torch.Generator().manual_seed(checks.nonneg_int("seed", seed))
    return torch.randperm(windows, generator=generator).tolist()


def _help_texts(eval_topics: int) -> tuple[list[str], list[str]]:
    """Names and texts of the help topics after the first ``eval_topics`` (the calibration topics)."""
    names = list(pydoc_topics())
    if not 0 < eval_topics < len(names):
        raise ValueError(f"eval_topics must be in 1..{len(names) - 1}, got {eval_topics}")
    return names[eval_topics:], [pydoc_topics()[name] for name in names[eval_topics:]]


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
    seed = checks.nonneg_int("seed", seed)
    if domain == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, len(tokenizer), (sequences, length), generator=generator)
    texts = _help_texts(eval_topics)[1] if domain == "help" else sklearn_texts()
    stream, _ = _stream(tokenizer, texts)
    available = stream.numel() // length
    if sequences > available:
        raise ValueError(f"the {domain!r} text holds {available} sequences of {length} tokens, fewer than "
                         f"{sequences}: ask for fewer or shorter calibration sequences")
    return _windows(stream, calibration_order(available, seed)[:sequences], length)


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


class TrainingSplit(TypedDict):
    """What :func:`training_split` returns: training windows and where their text comes from."""

    tokens: torch.Tensor
    help_windows: int
    help_topics: list[str]
    left_out_topics: list[str]
    modules: list[str]


def _runs(usable: torch.Tensor) -> list[tuple[int, int]]:
    """The maximal runs ``[(start, end), ...]`` of ``True`` in a 1-D bool tensor: ``[1,1,0,1]`` -> ``[(0,2),(3,4)]``."""
    padded = torch.cat([torch.tensor([False]), usable, torch.tensor([False])]).int()
    edges = (padded[1:] - padded[:-1]).nonzero().flatten().tolist()  # +1 where a run starts, -1 after it ends
    return list(zip(edges[0::2], edges[1::2], strict=True))


def _cut(segment: torch.Tensor, length: int) -> list[torch.Tensor]:
    """The non-overlapping ``length``-token windows of one contiguous run of text (the remainder is dropped)."""
    return [segment[i:i + length] for i in range(0, segment.numel() - length + 1, length)]


def _grams(ids: torch.Tensor, n: int) -> set[tuple[int, ...]]:
    """Every run of ``n`` consecutive token ids in ``ids`` (1-D)."""
    return set(map(tuple, ids.unfold(0, n, 1).tolist())) if ids.numel() >= n else set()


def training_split(tokenizer, length: int = 128, *, eval_topics: int = 60,
                   reserved_calibration: int = RESERVED_CALIBRATION) -> TrainingSplit:
    """Training token windows ``(windows, length)``, disjoint from the evaluation and calibration text.

    Two sources, in this order:

    1. the help topics after the first ``eval_topics`` (the calibration topics), without

       * the first ``reserved_calibration`` windows of :func:`calibration_tokens`' order (windows of
         :data:`CALIBRATION_LENGTH` tokens): every calibration set the lab uses;
       * the topics that share a run of :data:`REPEAT_RUN` tokens with the evaluation topics
         (``"left_out_topics"``): Python's help copies sections between topics, so a topic can hold
         evaluation text under another name;

       the text between, cut into windows that never cross a left-out part, less any window sharing a run
       of :data:`REPEAT_RUN` tokens with a reserved calibration window (``"help_windows"`` of them);
    2. the pinned docstrings of Python's standard-library modules (``"modules"``), one stream.

    Windows do not overlap; :func:`training_batches` draws batches from them.
    """
    length = checks.positive_int("length", length)
    reserved_calibration = checks.nonneg_int("reserved_calibration", reserved_calibration)
    eval_topics = checks.positive_int("eval_topics", eval_topics)
    topics, texts = _help_texts(eval_topics)
    help_stream, starts = _stream(tokenizer, texts)
    available = help_stream.numel() // CALIBRATION_LENGTH
    if reserved_calibration >= available:
        raise ValueError(f"reserved_calibration must be below {available} (the calibration windows the help text "
                         f"holds), got {reserved_calibration}")
    usable = torch.ones(help_stream.numel(), dtype=torch.bool)
    calibration_runs: set[tuple[int, ...]] = set()
    for i in calibration_order(available)[:reserved_calibration]:
        usable[i * CALIBRATION_LENGTH:(i + 1) * CALIBRATION_LENGTH] = False
        calibration_runs |= _grams(help_stream[i * CALIBRATION_LENGTH:(i + 1) * CALIBRATION_LENGTH], REPEAT_RUN)
    evaluation_stream, _ = _stream(tokenizer, [pydoc_topics()[name] for name in list(pydoc_topics())[:eval_topics]])
    evaluation_runs = _grams(evaluation_stream, REPEAT_RUN)
    left_out = []
    for name, start, end in zip(topics, starts, starts[1:] + [help_stream.numel()], strict=True):
        if _grams(help_stream[start:end], REPEAT_RUN) & evaluation_runs:
            usable[start:end] = False
            left_out.append(name)
    help_windows = [w for start, end in _runs(usable) for w in _cut(help_stream[start:end], length)]
    # A table repeated between two topics (typesseq and typesseq-mutable) can hold a calibration window's text.
    help_windows = [w for w in help_windows if not _grams(w, REPEAT_RUN) & calibration_runs]
    docstrings = stdlib_docstrings()
    doc_stream, _ = _stream(tokenizer, list(docstrings.values()))
    windows = help_windows + _cut(doc_stream, length)
    if not windows:
        raise ValueError(f"length={length} is longer than any run of training text: ask for shorter windows")
    return {"tokens": torch.stack(windows), "help_windows": len(help_windows),
            "help_topics": [name for name in topics if name not in left_out], "left_out_topics": left_out,
            "modules": list(docstrings)}


def training_batches(tokens: torch.Tensor, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Endless seeded batches ``(batch_size, length)`` of the rows of ``tokens`` ``(windows, length)``.

    Epoch by epoch: the rows in a seeded random order, ``batch_size`` at a time, then a new order. The same
    ``tokens``, ``batch_size`` and ``seed`` always give the same batches, so two healing runs see the same
    text. A batch never repeats a row; the rows left at the end of an epoch (fewer than a batch) wait for
    a later epoch.
    """
    tokens = checks.tensor("tokens", tokens, dim=2, dtypes=(torch.long, torch.int32), nonempty=True)
    batch_size = checks.positive_int("batch_size", batch_size)
    if batch_size > tokens.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) is more than the {tokens.shape[0]} training sequences: "
                         "ask for a smaller batch or more training text")
    generator = torch.Generator().manual_seed(checks.nonneg_int("seed", seed))
    while True:
        order = torch.randperm(tokens.shape[0], generator=generator)
        for start in range(0, tokens.shape[0] - batch_size + 1, batch_size):
            yield tokens[order[start:start + batch_size]]
