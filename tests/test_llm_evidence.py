"""The language-model evidence (issue 18): evaluation windows spread over the topics, per-window losses,
paired-bootstrap intervals and the sentences they decide, the cloze task, calibration domains, the
per-layer magnitude and random baselines, and prune() never leaving a model half pruned."""
import copy
import math

import pytest
import torch
from torch import nn

from labkit import llm
from labkit.llm import cloze, stats
from labkit.llm.text import spread_windows

# --- per-window losses and the bootstrap -------------------------------------------------------------

def test_window_losses_give_the_perplexity(tiny, tokens):
    losses = llm.window_losses(tiny, tokens, batch_size=4, progress=False)
    assert losses.shape == (6,)
    assert math.exp(float(losses.mean())) == pytest.approx(llm.perplexity(tiny, tokens, progress=False), rel=1e-9)
    with torch.no_grad():
        logits = tiny(input_ids=tokens[2:3]).logits.double()
    nll = -torch.log_softmax(logits[0, :-1], -1).gather(-1, tokens[2, 1:, None]).mean()
    assert float(losses[2]) == pytest.approx(float(nll), rel=1e-5)


def test_perplexity_ci_brackets_the_estimate_and_narrows_with_more_windows():
    gen = torch.Generator().manual_seed(0)
    few = 3.0 + 0.5 * torch.randn(16, generator=gen, dtype=torch.float64)
    many = 3.0 + 0.5 * torch.randn(256, generator=gen, dtype=torch.float64)
    a, b = stats.perplexity_ci(few), stats.perplexity_ci(many)
    assert a["ci"][0] < a["perplexity"] < a["ci"][1]
    assert a["perplexity"] == pytest.approx(math.exp(float(few.mean())))
    assert (b["ci"][1] - b["ci"][0]) < (a["ci"][1] - a["ci"][0]) / 2  # 16x the windows: about 4x narrower
    assert stats.perplexity_ci(few) == a  # seeded: the same interval every time


def test_paired_interval_is_narrower_than_the_windows_variation():
    # Two models on the same windows: hard windows are hard for both. Model A is 10% worse everywhere.
    gen = torch.Generator().manual_seed(1)
    base = 3.0 + torch.randn(64, generator=gen, dtype=torch.float64)  # windows differ a lot
    worse = base + math.log(1.1) + 0.01 * torch.randn(64, generator=gen, dtype=torch.float64)
    paired = stats.paired_ratio(worse, base)
    assert paired["ratio"] == pytest.approx(1.1, rel=0.01)
    assert 1.09 < paired["ci"][0] < 1.1 < paired["ci"][1] < 1.11
    # Unpaired, each perplexity alone spans far more than 10%: only pairing resolves the comparison.
    alone = stats.perplexity_ci(base)["ci"]
    assert alone[1] / alone[0] > 1.3
    # Shuffling one model's windows breaks the pairing and widens the interval.
    shuffled = stats.paired_ratio(worse[torch.randperm(64, generator=gen)], base)
    assert shuffled["ci"][1] - shuffled["ci"][0] > 10 * (paired["ci"][1] - paired["ci"][0])


def test_verdicts_never_decide_on_a_straddling_interval():
    assert stats.verdict((1.2, 1.4), 1.5) == "below"
    assert stats.verdict((1.6, 1.7), 1.5) == "above"
    assert stats.verdict((1.33, 1.66), 1.5) == "not resolved"  # SparseGPT 50% on the old 1,024 tokens
    assert "not resolved by this evaluation" in stats.within_text("SparseGPT 50%", 1.49, (1.33, 1.66), 1.5)
    assert "within 1.5x dense" in stats.within_text("x", 1.3, (1.2, 1.4), 1.5)
    assert "worse than 1.5x" in stats.within_text("x", 1.64, (1.57, 1.71), 1.5)
    assert stats.beats_text("Wanda", "SparseGPT", 1.03, (0.98, 1.07)).endswith("not resolved by this evaluation")
    assert stats.beats_text("SparseGPT", "Wanda", 0.85, (0.8, 0.9)).endswith("SparseGPT beats Wanda")
    assert stats.beats_text("A", "B", 1.2, (1.1, 1.3)).endswith("B beats A")


def test_stats_reject_bad_input():
    with pytest.raises(ValueError, match="same windows"):
        stats.paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        stats.perplexity_ci([1.0])
    with pytest.raises(ValueError, match="losses"):
        stats.perplexity_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="NaN or infinite"):
        stats.perplexity_ci(torch.tensor([1.0, float("inf")]))
    with pytest.raises(TypeError, match="per-window losses"):
        stats.perplexity_ci("1.0 2.0")
    with pytest.raises(ValueError, match="low <= high"):
        stats.verdict((1.6, 1.4), 1.5)
    with pytest.raises(TypeError, match="pair"):
        stats.verdict(1.5, 1.5)
    with pytest.raises(ValueError, match="level"):
        stats.perplexity_ci([1.0, 2.0], level=1.5)


# --- evaluation windows ------------------------------------------------------------------------------

def test_spread_windows_cover_every_text_without_overlap():
    starts = [0, 50, 900, 1000, 1010, 3000, 3900]  # texts of very different lengths in a 4,000-token stream
    chosen = spread_windows(starts, 4000, 10, 256)
    assert len(chosen) == len(set(chosen)) == 10 and chosen == sorted(chosen)
    assert max(chosen) < 4000 // 256  # whole windows only
    ends = starts[1:] + [4000]
    for start, end in zip(starts, ends, strict=True):
        middle = (start + end) // 2
        if middle >= (4000 // 256) * 256:  # in the tail after the last whole window: cannot be covered
            continue
        assert any(i * 256 <= middle < (i + 1) * 256 for i in chosen), (start, end)
    with pytest.raises(ValueError, match="fewer than 20"):
        spread_windows(starts, 4000, 20, 256)


# --- the cloze task ------------------------------------------------------------------------------------

class PlusOne(nn.Module):
    """A 'model' that is sure each next token is the previous one plus 1 (mod the vocabulary)."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return nn.functional.one_hot((ids + 1) % self.vocab, self.vocab).float() * 20


def test_cloze_scores_the_continuation_tokens_only():
    # The context does not follow the +1 pattern (5 wrong transitions): if its positions were scored,
    # every candidate would lose 5 x 20 more. After ...8 the model expects 9, 10, 11.
    context = [3, 0, 7, 2, 5, 8]
    rows = [[context + [9, 9, 9], context + [9, 10, 12], context + [9, 10, 11], context + [4, 5, 6]],
            [context + [9, 10, 11], context + [7, 8, 9], context + [3, 4, 5], context + [9, 10, 9]]]
    items = {"tokens": torch.tensor(rows), "context_tokens": 6, "answer": torch.tensor([2, 0]), "topics": ["a", "b"]}
    scores = cloze.cloze_scores(PlusOne(), items, progress=False)
    assert scores.shape == (2, 4)
    # Each wrong candidate token costs 20 nats; the first candidate token is predicted from the context.
    assert scores[0].tolist() == pytest.approx([-40, -20, 0, -20], abs=1e-3)
    assert scores[1].tolist() == pytest.approx([0, -20, -20, -20], abs=1e-3)
    result = cloze.cloze_accuracy(PlusOne(), items, progress=False)
    assert result["accuracy"] == 1.0 and result["correct"] == [1, 1] and result["items"] == 2
    with pytest.raises(TypeError, match="cloze_items"):
        cloze.cloze_scores(PlusOne(), {"tokens": torch.zeros(3, 4), "context_tokens": 2})


# --- baselines and safety of prune() --------------------------------------------------------------------

def test_random_masks_are_seeded_and_exact(tiny, tokens):
    masks = []
    for seed in (0, 0, 1):
        model = copy.deepcopy(tiny)
        llm.prune(model, "random", "unstructured", 0.5, seed=seed)
        layer = llm.prunable_layers(model)["model.layers.0.mlp.down_proj"]
        assert bool(((layer.weight == 0).sum(1) == round(0.5 * layer.in_features)).all())
        masks.append(layer.weight == 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    # A random mask ignores magnitude: it removes about as many large weights as small ones.
    weight = llm.prunable_layers(tiny)["model.layers.0.mlp.down_proj"].weight
    large = weight.abs() > weight.abs().median()
    assert 0.4 < float(masks[0][large].float().mean()) < 0.6


def test_per_layer_magnitude_ranks_the_whole_matrix(tiny):
    model = copy.deepcopy(tiny)
    before = {n: m.weight.clone() for n, m in llm.prunable_layers(model).items()}
    llm.prune(model, "magnitude_layer", "unstructured", 0.5)
    for name, layer in llm.prunable_layers(model).items():
        kept, pruned = before[name][layer.weight != 0].abs(), before[name][layer.weight == 0].abs()
        assert kept.min() >= pruned.max(), name  # every kept weight is at least as large as every pruned one
        assert int((layer.weight == 0).sum()) == round(0.5 * layer.weight.numel())
    # Per row, some rows lose more than half: that is what distinguishes it from "magnitude".
    per_row = (llm.prunable_layers(model)["model.layers.0.self_attn.q_proj"].weight == 0).sum(1)
    assert int(per_row.max()) != int(per_row.min())


class SkipsALayer(nn.Module):
    """An embedding and two linear layers, the second never called in forward()."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.used = nn.Linear(16, 16)
        self.unused = nn.Linear(16, 16)

    def forward(self, ids):
        return self.used(self.embed(ids))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_prune_leaves_nothing_changed_when_a_layer_is_never_reached(method):
    torch.manual_seed(0)
    model = SkipsALayer()
    before = copy.deepcopy(model.state_dict())
    tokens = torch.randint(0, 20, (4, 8))
    with pytest.raises(RuntimeError, match="never reaches .*unused.*nothing was changed"):
        llm.prune(model, method, "unstructured", 0.5, tokens)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_structured_pruning_leaves_nothing_changed_when_a_block_is_skipped(tokens):
    model = llm.tiny_llama(seed=0)
    before = copy.deepcopy(model.state_dict())
    model.model.layers[1].mlp.forward = torch.zeros_like  # block 1's FFN is never called
    with pytest.raises(RuntimeError, match="never reaches .*layers.1.mlp.*nothing was changed"):
        llm.prune_structured(model, ffn_keep=0.5, calibration=tokens)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


class WithDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 32)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(32, 32)

    def forward(self, ids):
        return self.fc(self.drop(self.embed(ids)))


def test_prune_calibrates_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (8, 8))
    masks = {}
    for training in (True, False):
        torch.manual_seed(1)  # the same weights both times
        model = WithDropout()
        model.train(training)
        llm.prune(model, "wanda", "unstructured", 0.5, tokens)
        assert model.training is training  # the caller's mode is restored
        masks[training] = model.fc.weight == 0
    assert torch.equal(masks[True], masks[False])  # dropout did not change what Wanda saw


# --- the real model's text (slow: needs the tokenizer of the installed SmolLM2) -------------------------

@pytest.fixture(scope="module")
def tokenizer():
    return llm.load()[1]


@pytest.mark.slow
def test_evaluation_set_is_large_spread_and_disjoint(tokenizer):
    data = llm.text_splits(tokenizer)
    assert data["evaluation"].shape == (64, 256) and data["evaluation"].numel() >= 16_384
    assert len(data["evaluation_covered"]) >= 40
    assert set(data["evaluation_covered"]) <= set(data["evaluation_topics"])
    assert not set(data["evaluation_topics"]) & set(data["calibration_topics"])
    assert tokenizer.bos_token_id not in data["evaluation"][:, 0].tolist()  # no BOS: plain text mid-stream
    rows = {tuple(r) for r in data["evaluation"].tolist()}
    assert len(rows) == 64  # no window twice
    assert data["calibration"].shape == (32, 128)


@pytest.mark.slow
def test_calibration_sets_are_nested_and_from_their_domain(tokenizer):
    small = llm.calibration_tokens(tokenizer, "help", 4)
    large = llm.calibration_tokens(tokenizer, "help", 16)
    assert torch.equal(small, large[:4])
    sklearn = llm.calibration_tokens(tokenizer, "sklearn", 8)
    assert "dataset" in tokenizer.decode(sklearn.flatten()).lower()
    noise = llm.calibration_tokens(tokenizer, "random", 8, 64)
    assert noise.shape == (8, 64) and int(noise.max()) < len(tokenizer)
    with pytest.raises(ValueError, match="domain"):
        llm.calibration_tokens(tokenizer, "wikipedia", 8)
    with pytest.raises(ValueError, match="fewer than"):
        llm.calibration_tokens(tokenizer, "sklearn", 10_000)


@pytest.mark.slow
def test_cloze_items_hold_the_true_next_sentence(tokenizer):
    items = cloze.cloze_items(tokenizer, items=20)
    assert items["tokens"].shape == (20, 4, 64)
    assert set(items["answer"].tolist()) <= {0, 1, 2, 3} and len(set(items["answer"].tolist())) > 1
    for i in range(20):
        choices = items["tokens"][i, :, 48:]
        assert len({tuple(c) for c in choices.tolist()}) == 4  # four different candidates
        passage = tokenizer.decode(items["tokens"][i, items["answer"][i]])
        source = llm.text.pydoc_topics()[items["topics"][i]]
        assert " ".join(passage.split())[-40:] in " ".join(source.split())  # passage + true sentence: real text


# --- prose that was wrong once (issue 18, section 5) -------------------------------------------------------

def test_corrected_statements_stay_corrected():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    notebook = json.loads((root / "notebooks" / "06_pruning_a_language_model.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in notebook["cells"])
    # The OBS saliency divides by [H^-1]_jj, not its square; the code's U_jj^2 is that diagonal.
    assert "[H^{-1}]_{jj}^2" not in text and "w_{ij}^2 / [H^{-1}]_{jj}" in text and "U_{jj}^2" in text
    # FLAP needs no retraining (it compensates with a bias).
    assert "all retrain" not in text and "FLAP (An et al. 2024) without any retraining" in text
    structured = (root / "labkit" / "llm" / "structured.py").read_text()
    assert "all retrain" not in structured and "FLAP" in structured
    # The papers support "comparable, SparseGPT ahead at N:M", not "SparseGPT <= Wanda".
    assert "The papers report SparseGPT <= Wanda" not in text and "6.15 against 6.21" in text
    # Per output row holds for magnitude and Wanda only; the lab's order is sublayer by sublayer.
    assert "each matrix pruned per output row" not in text
    oneshot = (root / "labkit" / "llm" / "oneshot.py").read_text()
    assert "Sequential, as in the papers" not in oneshot and "true sequential" in oneshot
    # The setup is stated where the numbers first appear.
    for fact in ("Instruct", "Q4_1", "Q8_0", "256-token windows", "WikiText-2"):
        assert fact in text, fact
