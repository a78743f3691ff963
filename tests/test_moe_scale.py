"""The MoE-at-scale table: parameters from published configurations, FLOPs, memory, and what sparsity saves."""
from __future__ import annotations

import pytest

from labkit import results
from labkit.moe import scale

#: Counting from a configuration leaves out norms and biases (and rounds nothing), while published
#: counts are rounded ("70B", "37B"); 2% covers both for every row of the table.
COUNT_TOLERANCE = 0.02


def test_every_row_is_cited_and_shaped():
    table = scale.models()
    assert {"switch-c", "glam", "mixtral-8x7b", "deepseek-v3", "llama-2-13b", "gpt-3"} <= set(table)
    for c in table.values():
        assert c.kind in ("moe", "dense"), c
        assert len(c.published_source) > 30 and len(c.config_source) > 30, f"{c.key} needs sources"
        assert c.published_active_b <= c.published_total_b
        if c.kind == "moe":
            assert c.experts and c.top_k and c.top_k < c.experts, c
        else:
            assert c.published_active_b == c.published_total_b and not c.experts
    for a, b in scale.PAIRS:
        assert table[a].kind == "moe" and table[b].kind == "dense"


@pytest.mark.parametrize("key", [k for k, c in scale.models().items() if c.computable])
def test_counts_from_the_configuration_match_the_published_ones(key):
    c = scale.model(key)
    total, active = scale.parameter_counts(c)
    assert total == pytest.approx(c.published_total_b * 1e9, rel=COUNT_TOLERANCE)
    assert active == pytest.approx(c.published_active_b * 1e9, rel=COUNT_TOLERANCE)


def test_mixtral_count_by_hand():
    d, layers, vocab = 4096, 32, 32000
    attention = d * d + 2 * d * 1024 + d * d  # 32 query heads, 8 KV heads of 128
    expert = 3 * d * 14336  # SwiGLU: gate, up, down
    total = 2 * vocab * d + layers * (attention + 8 * expert + d * 8)
    active = 2 * vocab * d + layers * (attention + 2 * expert + d * 8)
    assert scale.parameter_counts(scale.model("mixtral-8x7b")) == (total, active)


def test_deepseek_v3_counts_with_latent_attention():
    total, active = scale.parameter_counts(scale.model("deepseek-v3"))
    assert total == pytest.approx(671e9, rel=0.002)
    assert active == pytest.approx(37e9, rel=COUNT_TOLERANCE)
    assert scale.model("deepseek-v3").moe_layers == 58  # 61 layers, the first 3 dense


def test_rows_flops_memory_and_published_only_models():
    r = scale.scale_row("gpt-3")
    assert r.flops_per_token == 2 * r.active_params and r.weight_bytes == 2 * r.total_params
    assert r.active_share == 1.0 and r.traffic_bytes_per_token == 0.0
    s = scale.scale_row("switch-c")
    assert s.params_from == "published" and s.total_params == 1571e9 and s.active_params == 1.5e9
    assert s.traffic_bytes_per_token is None
    assert scale.scale_row("mixtral-8x7b", bytes_per_param=1).weight_bytes == pytest.approx(46.7e9, rel=0.01)
    with pytest.raises(ValueError, match="no full configuration"):
        scale.parameter_counts(scale.model("glam"))
    assert [row.key for row in scale.scale_table()] == list(scale.models())


def test_expert_traffic_by_hand():
    # dispatch + combine of a 4096-wide bf16 vector to 2 experts, in 32 MoE layers
    assert scale.expert_traffic_bytes(scale.model("mixtral-8x7b")) == 2 * 2 * 4096 * 2 * 32
    assert scale.expert_traffic_bytes(scale.model("deepseek-v3")) == 2 * 8 * 7168 * 2 * 58


def test_what_sparsity_saves_and_what_it_does_not():
    mix = scale.compare("mixtral-8x7b", "llama-2-13b")
    assert mix.flops_ratio == pytest.approx(1.0, abs=0.05)  # about the same work per token ...
    assert mix.memory_ratio > 3.5  # ... from 3.6x the weights
    qwen = scale.compare("qwen3-30b-a3b", "qwen3-32b")
    assert qwen.flops_ratio > 9 and qwen.memory_ratio < 1  # same size in memory, a tenth of the FLOPs
    text = "\n".join(mix.lines())
    assert "fewer FLOPs" in text and "weight memory" in text and "between devices" in text


def test_measured_energy_saves_less_than_flops():
    m = scale.measured_energy()
    assert m.energy_ratio == pytest.approx(0.624 / 0.336)  # ML.ENERGY, H100, batch cap 32
    assert 1 < m.energy_ratio < m.savings.flops_ratio / 4
    assert "ML.ENERGY" in m.source


def test_tiny_table_puts_notebook_04_in_the_same_form():
    rows = {r.name: r for r in scale.tiny_table()}
    moe, same_active, same_total = (rows["MoE 4 experts, top-1"], rows["dense (same active)"],
                                    rows["dense (same total)"])
    assert moe.kind == "moe" and moe.active_params < moe.total_params
    assert moe.flops_from.startswith("measured")
    # the tiny MoE: the memory of the big dense model at the FLOPs of the small one
    assert scale.compare(moe, same_total).flops_ratio > 2
    assert scale.compare(moe, same_total).memory_ratio == pytest.approx(1.0, abs=0.01)
    assert scale.compare(moe, same_active).memory_ratio > 2


@pytest.mark.parametrize("call, error, match", [
    (lambda: scale.model("gpt-5"), ValueError, "unknown model 'gpt-5'. Valid models: switch-c"),
    (lambda: scale.model(None), TypeError, "key must be a model name"),
    (lambda: scale.compare("gpt-3", "mixtral-8x7b"), ValueError, "compare an MoE model with a dense one"),
    (lambda: scale.compare(3, "gpt-3"), TypeError, "moe must be a model key"),
    (lambda: scale.scale_row("gpt-3", bytes_per_param=0), ValueError, "bytes_per_param must be a positive int"),
    (lambda: scale.measured_energy(gpu="a100"), ValueError, "no measured energy for qwen3-30b-a3b on a100"),
    (lambda: scale.tiny_table("/nonexistent/moe_train_cpu.json"), results.ResultsFileMissing, "moe_train_sweep"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
