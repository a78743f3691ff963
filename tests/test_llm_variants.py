"""labkit.llm.variants on a tiny random Llama: the speed variants (masked, CSR, structured, and the GPU
rows with the lab's 2:4 and block-sparse kernels) are the models they claim to be, and the side-by-side
timing of benchmarks/llm_prune_sweep.py times each of them in turns."""
import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from labkit import llm
from labkit.kernels.semi24 import kept_positions
from labkit.sparse import SparseLinear

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("llm_prune_sweep", ROOT / "benchmarks" / "llm_prune_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _char_tokenizer(text, add_special_tokens=False):
    return {"input_ids": [ord(c) % 96 for c in text]}


@pytest.fixture(scope="module")
def sweep():
    return _load()


@pytest.fixture(scope="module")
def tiny():
    return llm.tiny_llama(seed=0)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))


def _logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens.to(llm.evaluate.device_of(model))).logits.float().cpu()


def test_gpu_variants_hold_the_patterns_and_compute_the_masked_model(tiny, tokens):
    models = llm.gpu_variants(tiny, device="cpu", dtype=torch.float32, block=16, block_sparsity=0.5)
    assert [info["kind"] for info, _ in models.values()] == ["dense", "2:4", "block"]
    (_, dense), (_, semi), (_, blocks) = models.values()
    torch.testing.assert_close(_logits(dense, tokens), _logits(tiny, tokens))
    n_layers = len(llm.prunable_layers(tiny))
    for model, fmt in ((semi, "2:4"), (blocks, "bsr")):
        layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
        assert len(layers) == n_layers and all(m.format == fmt for m in layers)
        assert model.lm_head.weight is model.model.embed_tokens.weight  # the tied head stays dense and tied
    for layer in (m for m in semi.modules() if isinstance(m, SparseLinear)):
        kept = (layer.dense_weight() != 0).reshape(layer.out_features, -1, 4).sum(-1)
        assert int(kept.max()) <= 2
        assert kept_positions(layer.s24_meta).shape[-1] == layer.in_features // 2
    for layer in (m for m in blocks.modules() if isinstance(m, SparseLinear)):
        tiles = (layer.dense_weight() != 0).reshape(layer.out_features // 16, 16, -1, 16).any(dim=(1, 3))
        assert int((~tiles).sum()) == round(0.5 * tiles.numel())  # half of the 16 x 16 tiles (rounded) are gone
    # Each sparse model computes what the same mask applied to the dense weights computes.
    reference = copy.deepcopy(tiny)
    llm.prune(reference, "magnitude", "2:4", None)
    torch.testing.assert_close(_logits(semi, tokens), _logits(reference, tokens), rtol=1e-4, atol=1e-4)


def test_side_by_side_times_every_kind_of_model_in_turns(sweep, tiny, tokens):
    speed_args = {"prompt_tokens": 16, "new_tokens": 4, "repeats": 3}
    result = sweep.side_by_side(tiny, _char_tokenizer, {"calibration": tokens}, speed_args, rounds=2)
    models = result["models"]
    assert list(models) == ["dense", "unstructured 50%, dense kernels", "2:4, dense kernels",
                            "unstructured 50%, torch CSR", "unstructured 90%, torch CSR",
                            "structured, 75% of FFN channels kept", "structured, 50% of FFN channels kept",
                            "structured, 25% of FFN channels kept"] + (
                               list(llm.gpu_variants(tiny)) if torch.cuda.is_available() else [])
    assert result["rounds"] == 2 and result["speed"]["repeats"] == 1  # one timing per model per round
    for name, row in models.items():
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0, name
    structured = [models[f"structured, {k:.0%} of FFN channels kept"] for k in (0.75, 0.5, 0.25)]
    assert [s["ffn_keep"] for s in structured] == [0.75, 0.5, 0.25]
    sizes = [models["dense"]["parameters"]] + [s["parameters"] for s in structured]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4  # physically smaller each time
    assert models["unstructured 90%, torch CSR"]["runs_as"] == "torch CSR"
    assert "CUDA-only" in models["2:4, dense kernels"]["runs_as"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU rows need CUDA")
def test_gpu_variants_run_the_lab_kernels_on_a_gpu(tiny, tokens):
    models = llm.gpu_variants(tiny, device="cuda", dtype=torch.float16, block=16, block_sparsity=0.5)
    reference = copy.deepcopy(tiny)
    llm.prune(reference, "magnitude", "2:4", None)
    expected = _logits(reference, tokens)
    got = _logits(models["GPU 2:4, lab kernel"][1], tokens)
    assert (got - expected).abs().max() <= 3e-2 * expected.abs().max()
    for _, model in models.values():
        speed = llm.speed(model, _char_tokenizer, prompt_tokens=16, new_tokens=4, repeats=1)
        assert speed["decode_tokens_per_s"] > 0


def test_speed_variants_are_what_their_labels_say(tiny, tokens):
    variants = llm.speed_variants(tiny, tokens, masked=[("unstructured", 0.5), ("4:8", None)], csr=[0.9],
                                  ffn_keep=[0.5])
    assert list(variants) == ["dense", "unstructured 50%, dense kernels", "4:8, dense kernels",
                              "unstructured 90%, torch CSR", "structured, 50% of FFN channels kept"]
    assert variants["dense"][1] is tiny  # no copy of the reference
    masked = variants["unstructured 50%, dense kernels"][1]
    assert llm.measure_sparsity(masked)["block_sparsity"] == pytest.approx(0.5, abs=0.01)
    weights = [m.weight for m in llm.prunable_layers(variants["4:8, dense kernels"][1]).values()]
    assert all(int((w != 0).reshape(w.shape[0], -1, 8).sum(-1).max()) <= 4 for w in weights)
    info, csr = variants["unstructured 90%, torch CSR"]
    assert info["block_sparsity"] == pytest.approx(0.9, abs=0.01)
    assert {m.format for m in csr.modules() if isinstance(m, SparseLinear)} == {"csr"}
    info, small = variants["structured, 50% of FFN channels kept"]
    assert small.model.layers[0].mlp.gate_proj.out_features == tiny.model.layers[0].mlp.gate_proj.out_features // 2
    assert llm.measure_sparsity(tiny)["block_sparsity"] == 0  # the reference itself was not pruned


def test_speed_variants_and_speeds_in_turns_reject_bad_input(tiny):
    with pytest.raises(ValueError, match="calibration"):
        llm.speed_variants(tiny, None, masked=(), csr=(), ffn_keep=(0.5,))
    with pytest.raises(TypeError, match="dense"):
        llm.speed_variants("model")
    with pytest.raises(ValueError, match="sparsity"):
        llm.speed_variants(tiny, masked=[("unstructured", 1.5)], csr=(), ffn_keep=())
    with pytest.raises(ValueError, match="variants"):
        llm.speeds_in_turns({}, _char_tokenizer)
    with pytest.raises(ValueError, match="rounds"):
        llm.speeds_in_turns({"dense": tiny}, _char_tokenizer, rounds=0)
    with pytest.raises(ValueError, match="block_sparsity"):
        llm.gpu_variants(tiny, device="cpu", block_sparsity=1.0)
    with pytest.raises(TypeError, match="dense"):
        llm.gpu_variants("model", device="cpu")
    with pytest.raises(ValueError, match="rounds=..., not repeats"):
        llm.speeds_in_turns({"dense": tiny}, _char_tokenizer, repeats=3)
    with pytest.raises(TypeError, match=r"variants\['dense'\]"):
        llm.speeds_in_turns({"dense": "not a model"}, _char_tokenizer)
