"""Fixtures shared by the language-model tests: a tiny random Llama and a batch of its token ids."""
import pytest
import torch

from labkit import llm


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama (tied embedding, grouped heads) in the shape of SmolLM2."""
    return llm.tiny_llama(seed=0)


@pytest.fixture(scope="module")
def tokens():
    """6 sequences of 24 token ids of the tiny Llama's 96-token vocabulary (seeded)."""
    return torch.randint(0, 96, (6, 24), generator=torch.Generator().manual_seed(1))
