"""Offline text for a language model: Python's own help topics, split into evaluation and calibration.

``labkit.data.pydoc_topics()`` is a pinned copy of ``pydoc_data.topics`` (the text behind ``help("if")``),
sorted by topic name. Evaluation uses the first topics, calibration the last ones: the two parts never
share a topic, so pruning never sees the text it is scored on.
"""
from __future__ import annotations

from typing import TypedDict

import torch

from labkit import checks
from labkit.data import pydoc_topics


class TextSplits(TypedDict):
    """What :func:`text_splits` returns: token tensors and the topic names behind them."""

    evaluation: torch.Tensor
    calibration: torch.Tensor
    evaluation_topics: list[str]
    calibration_topics: list[str]


def _tokens(tokenizer, topics: list[str]) -> torch.Tensor:
    texts = pydoc_topics()
    ids = tokenizer("\n\n".join(texts[name] for name in topics), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def text_splits(tokenizer, *, eval_topics: int = 60, eval_sequences: int = 4, eval_length: int = 256,
                calibration_sequences: int = 32, calibration_length: int = 128) -> TextSplits:
    """Token tensors ``{"evaluation": (eval_sequences, eval_length), "calibration": (calibration_sequences,
    calibration_length)}`` and the topic names used (``"evaluation_topics"``, ``"calibration_topics"``).

    Evaluation: the first ``eval_topics`` help topics joined with blank lines, cut into consecutive
    sequences. Calibration: topics taken from the end of the list until there are enough tokens. Raises
    ``ValueError`` if the text is too short or the two parts would overlap.
    """
    eval_topics = checks.positive_int("eval_topics", eval_topics)
    eval_sequences = checks.positive_int("eval_sequences", eval_sequences)
    eval_length = checks.positive_int("eval_length", eval_length)
    calibration_sequences = checks.positive_int("calibration_sequences", calibration_sequences)
    calibration_length = checks.positive_int("calibration_length", calibration_length)
    names = list(pydoc_topics())
    if eval_topics >= len(names):
        raise ValueError(f"eval_topics must be below {len(names)} (the number of help topics), got {eval_topics}")
    evaluation_names = names[:eval_topics]
    evaluation = _tokens(tokenizer, evaluation_names)
    need = eval_sequences * eval_length
    if evaluation.numel() < need:
        raise ValueError(f"the first {eval_topics} topics give {evaluation.numel()} tokens, fewer than "
                         f"eval_sequences x eval_length = {need}: raise eval_topics or ask for fewer tokens")
    # Calibration: add topics from the end until the tokens suffice, never reaching the evaluation topics.
    need_cal = calibration_sequences * calibration_length
    start = len(names)
    calibration = torch.empty(0, dtype=torch.long)
    step = 8
    while calibration.numel() < need_cal:
        start -= step
        if start < eval_topics:
            raise ValueError(f"not enough text for {calibration_sequences} x {calibration_length} calibration "
                             f"tokens outside the {eval_topics} evaluation topics: ask for fewer")
        calibration = _tokens(tokenizer, names[start:])
    return {
        "evaluation": evaluation[:need].reshape(eval_sequences, eval_length),
        "calibration": calibration[:need_cal].reshape(calibration_sequences, calibration_length),
        "evaluation_topics": evaluation_names,
        "calibration_topics": names[start:],
    }
