"""Bad input to the public functions of prune, data, models, carbon, latency, energy and formats (issue 11).

Each case must raise a TypeError or ValueError that names the argument, never an AttributeError, a NaN
result or a silent wrong answer.
"""
import pytest
import torch

from labkit import carbon, data, energy, formats, latency, models, prune

NAN, INF = float("nan"), float("inf")


def _row(**kw):
    return {"sparsity": 0.5, "dense_ms": 1.0, "masked_ms": 1.0, "structured_ms": 1.0, "csr_ms": 0.5, **kw}


@pytest.fixture(scope="module")
def corpus():
    return data.text_corpus(max_chars=2000)


CASES = [
    ("step", lambda: prune.cubic_sparsity("3", 0.5, 0, 10)),
    ("step", lambda: prune.cubic_sparsity(NAN, 0.5, 0, 10)),
    ("begin_step", lambda: prune.cubic_sparsity(3, 0.5, True, 10)),
    ("scan", lambda: prune.choose_layer_sparsity("abc", [0.5], 0.9)),
    (r"scan\['a'\]\[0\]", lambda: prune.choose_layer_sparsity({"a": [NAN]}, [0.5], 0.9)),
    ("sparsities", lambda: prune.choose_layer_sparsity({"a": [0.9]}, "0.5", 0.9)),
    ("rewind_epoch", lambda: prune.lottery_ticket("mlp", None, 0.5, epochs=3, rewind_epoch=NAN)),
    ("epochs", lambda: prune.lottery_ticket("mlp", None, 0.5, epochs="3")),
    ("x", lambda: models.MLP()([1.0] * 64)),
    ("x", lambda: models.SmallCNN()(None)),
    ("currency", lambda: carbon.footprint(1.0, "FRA", currency=5)),
    (r"rows\[0\]\['dense_ms'\]", lambda: latency.crossover([_row(dense_ms=NAN)])),
    (r"rows\[0\]\['csr_ms'\]", lambda: latency.crossover([_row(csr_ms=-1.0)])),
    (r"rows\[1\]\['sparsity'\]", lambda: latency.speedup_table([_row(), _row(sparsity=INF)])),
    ("value", lambda: energy.Reading(NAN, "J", "measured", "x", "y")),
    ("items", lambda: energy.EnergyReport((), 1.0, 1, 0)),
    ("repeats", lambda: energy.EnergyReport((), 1.0, True, 1)),
    ("weight must not be empty", lambda: formats.storage_bytes(torch.zeros(0, 4))),
]


@pytest.mark.parametrize("match, call", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_names_the_argument(match, call):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_text_corpus_encode_and_decode_check_their_input(corpus):
    with pytest.raises(TypeError, match="s must be a str"):
        corpus.encode(5)
    with pytest.raises(TypeError, match=r"ids\[0\] must be an int"):
        corpus.decode(["a"])
    with pytest.raises(TypeError, match="ids must be a 1-D integer tensor"):
        corpus.decode(torch.tensor([0.5]))
    assert corpus.decode(corpus.encode(corpus.text[:20])) == corpus.text[:20]
    assert corpus.decode([]) == ""  # zero items: the empty string


def test_schedule_arguments_are_checked_before_training():
    model, split = models.MLP(hidden=(8,)), data.digits(0).train
    with pytest.raises(TypeError, match="updates_per_epoch must be an int"):
        prune.prune_and_finetune(model, split, "magnitude", 0.5, epochs=3, updates_per_epoch=True)
    with pytest.raises(TypeError, match="prune_epochs must be an int"):
        prune.prune_and_finetune(model, split, "magnitude", 0.5, epochs=3, prune_epochs="2")
