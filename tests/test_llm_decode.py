"""The plain decode loop (labkit.llm.decode.Lean) gives transformers' logits: dense, transposed, activation-sparse."""
from __future__ import annotations

import copy

import pytest
import torch

from labkit import llm
from labkit.llm.activation import ActivationSparsity
from labkit.llm.decode import Lean


def lean_logits(lean: Lean, tokens: torch.Tensor, prompt: int) -> torch.Tensor:
    """Logits of ``tokens`` (1, n): the first ``prompt`` in one call, then one token per call on the cache."""
    out = lean(input_ids=tokens[:, :prompt])
    cache, logits = out.cache, [out.logits]
    for i in range(prompt, tokens.shape[1]):
        out = lean(input_ids=tokens[:, i:i + 1], cache=cache)
        logits.append(out.logits)
    assert out.cache.length == tokens.shape[1]
    return torch.cat(logits, dim=1)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(3, 96, (1, 20), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("transposed", [False, True])
def test_lean_decode_gives_the_logits_of_transformers(tokens, transposed):
    model = llm.tiny_llama(seed=2)
    with torch.inference_mode():
        expected = model(tokens).logits
    got = lean_logits(Lean(model, 32, transposed=transposed), tokens, 7)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_lean_decode_of_an_activation_sparse_model_equals_its_masked_reference(tokens):
    model = llm.tiny_llama(seed=2)
    act = ActivationSparsity(model, torch.randint(3, 96, (4, 16)), greedy=False, progress=False)
    act.set(0.5)
    with torch.inference_mode():
        reference = model(tokens).logits  # many tokens at once: the masked dense product
    lean = Lean(model, 32, transposed=True)
    got = lean_logits(lean, tokens, 7)  # one token at a time after the prompt: the gather of kept rows
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)
    assert act.measured()["inputs_skipped"] > 0.3


def test_lean_decode_runs_a_structured_model(tokens):
    model = llm.tiny_llama(seed=2)
    small = copy.deepcopy(model)
    llm.prune_structured(small, ffn_keep=0.5, calibration=torch.randint(3, 96, (2, 16)))
    with torch.inference_mode():
        expected = small(tokens).logits
    torch.testing.assert_close(lean_logits(Lean(small, 32, transposed=True), tokens, 5), expected,
                               rtol=1e-4, atol=1e-5)


def test_lean_speed_is_measured_by_the_lab_speed_function():
    model = llm.tiny_llama(seed=2)

    class Tok:  # speed() only needs a tokenizer that maps text to ids in the tiny vocabulary
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [3 + (ord(c) % 90) for c in text]}

    result = llm.speed(Lean(model, 64, transposed=True), Tok(), prompt_tokens=16, new_tokens=4, repeats=1)
    assert result["decode_tokens_per_s"] > 0 and result["prefill_tokens_per_s"] > 0


def test_bad_inputs_are_named(tokens):
    model = llm.tiny_llama()
    with pytest.raises(TypeError, match="Llama-style"):
        Lean(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="max_length"):
        Lean(model, 0)
    lean = Lean(model, 8)
    with pytest.raises(ValueError, match="exceed the cache"):
        lean(input_ids=tokens[:, :9])
    with pytest.raises(ValueError, match=r"\(1, tokens\)"):
        lean(input_ids=tokens.repeat(2, 1)[:, :4])
    out = lean(input_ids=tokens[:, :3])
    with pytest.raises(ValueError, match="empty cache"):
        lean(input_ids=tokens[:, 3:5], cache=out.cache)
