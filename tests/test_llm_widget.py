"""The LLM pruning explorer and figures, driven from Python over a small synthetic sweep."""
import copy
import math

import plotly.graph_objects as go
import pytest

from labkit.figures import llm as F
from labkit.widgets import llm as W


def _row(method, pattern, sparsity, ppl, sample="Paris."):
    """A sweep row in the new shape (no per-row speeds: those come only from the side-by-side block)."""
    dense_bytes = 538_000_000
    return {"method": method, "pattern": pattern, "sparsity": sparsity, "block_sparsity": sparsity,
            "model_sparsity": round(0.79 * sparsity, 4), "perplexity": ppl, "prune_seconds": 1.0,
            "bytes": {"dense_fp32": dense_bytes, "csr_fp32": int(dense_bytes * (1 - sparsity) * 2) + 1000,
                      "2:4_fp32": dense_bytes * 5 // 8 if pattern == "2:4" else None},
            "sample": sample}


def _speed(prefill, decode):
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}


#: The models timed in turns, as the sweep's side_by_side block names them.
SIDE_BY_SIDE = {"dense": _speed(400.0, 20.0), "unstructured 50%, dense kernels": _speed(396.0, 19.8),
                "2:4, dense kernels": _speed(404.0, 20.2), "unstructured 70%, torch CSR": _speed(100.0, 10.0),
                "structured, 75% of FFN channels kept": _speed(500.0, 25.0),
                "structured, 50% of FFN channels kept": _speed(600.0, 30.0)}


@pytest.fixture
def sweep():
    rows = [_row("dense", "unstructured", 0.0, 17.5, sample="The capital of France is Paris.")]
    for s, ppl in ((0.3, 30.0), (0.5, 263.0), (0.7, 56843.0)):
        rows.append(_row("magnitude", "unstructured", s, ppl, sample="the the the"))
    for s, ppl in ((0.3, 19.0), (0.5, 29.3), (0.7, 357.0)):
        rows.append(_row("wanda", "unstructured", s, ppl))
    rows.append(_row("wanda", "2:4", 0.5, 75.0))
    rows.append(_row("sparsegpt", "unstructured", 0.5, 24.8))
    for s, ppl in ((0.25, 40.0), (0.5, 120.0)):
        rows.append(_row("structured", "ffn_channels", s, ppl))
        rows[-1]["ffn_keep"] = 1 - s
    return {"schema": "llm_prune", "config": {"prompt": "What is the capital of France?"}, "rows": rows,
            "side_by_side": {"rounds": 3, "models": copy.deepcopy(SIDE_BY_SIDE)}}


def _with_intervals(sweep):
    """The sweep with the new per-row bootstrap intervals (perplexity_ci, ratio_ci), as SCHEMA_LLM describes."""
    sweep = copy.deepcopy(sweep)
    dense = sweep["rows"][0]["perplexity"]
    for r in sweep["rows"]:
        r["perplexity_ci"] = [round(0.9 * r["perplexity"], 2), round(1.2 * r["perplexity"], 2)]
        r["ratio"] = r["perplexity"] / dense
        r["ratio_ci"] = [round(0.95 * r["ratio"], 3), round(1.05 * r["ratio"], 3)]
    return sweep


def test_explorer_looks_up_every_control(sweep):
    ex = W.LLMExplorer(sweep)
    assert ex.method.value == "wanda" and ex.pattern.value == "unstructured"
    assert ex.sparsity.options == (("30%", 0.3), ("50%", 0.5), ("70%", 0.7))
    ex.sparsity.value = 0.5
    assert "29.30" in ex.status.value and "1.67x dense" in ex.status.value and "beyond 1.5x" in ex.status.value
    assert W.MASKED_NOTE in ex.status.value  # masked zeros: the speed differs from dense only by noise
    # any masked case shows the masked model timed in turns with dense, never a separately timed row
    assert ex.bars_fig.data[3].y == (20.0, 19.8, None) and "generation 0.99x dense" in ex.status.value
    assert "unstructured 50%, dense kernels</i>, timed in turns" in ex.status.value
    assert "CI" not in ex.status.value  # this sweep's rows have no intervals: none is shown
    star = ex.curve_fig.data[-1]
    assert star.name == "current" and star.x == (50.0,) and star.y == (29.3,)
    ex.pattern.value = "2:4"  # one sparsity only: the slider follows
    assert [v for _, v in ex.sparsity.options] == [0.5] and "75.00" in ex.status.value
    assert ex.bars_fig.data[3].y == (20.0, 20.2, None)  # the 2:4 mask timed in turns
    ex.method.value = "magnitude"
    assert ex.pattern.value == "unstructured" and ex.sparsity.value == 0.5
    assert "the the the" in ex.answer.value and "prompt:</b> What is the capital of France?" in ex.answer.value
    ex.method.value = "structured"
    assert ex.pattern.value == "ffn_channels" and ex.sparsity.value == 0.5
    decode = ex.bars_fig.data[3]  # bytes (dense, pruned), then prompt and generation tokens/s
    assert decode.y == (20.0, 30.0, None) and decode.hovertext[1] == "1.50x dense"  # the 50%-kept model, in turns
    assert len(decode.x) == 3 and decode.x[0] == "dense"  # fixed categories: the status names the case
    assert "structured (FFN channels), 50% kept" in ex.status.value
    assert "structured, 50% of FFN channels kept</i>, timed in turns" in ex.status.value
    assert W.MASKED_NOTE not in ex.status.value  # a smaller dense model really is faster
    ex.method.value = "wanda"
    ex.sparsity.value = 0.7  # timed through CSR in turns too: a third bar
    assert ex.bars_fig.data[3].y == (20.0, 19.8, 10.0) and ex.bars_fig.data[2].y[2] == 100.0
    assert "through torch CSR: generation 0.50x dense" in ex.status.value


def test_bytes_and_opacity_follow_the_case(sweep):
    ex = W.LLMExplorer(sweep)
    ex.sparsity.value = 0.7
    dense_mb, pruned_mb = ex.bars_fig.data[0].y, ex.bars_fig.data[1].y
    assert dense_mb[0] == pruned_mb[0] == 538.0 and pruned_mb[1] < dense_mb[1]
    assert dense_mb[2] is None and pruned_mb[2] is None  # an unstructured mask has no 2:4 packing
    ex.pattern.value = "2:4"
    assert ex.bars_fig.data[1].y[2] == 336.25
    opaque = [t.name for t in ex.curve_fig.data[:-1] if t.opacity == 1.0]
    assert opaque == ["Wanda, 2:4"]


def test_explorer_rejects_bad_sweeps(sweep):
    with pytest.raises(TypeError, match="rows"):
        W.LLMExplorer({"rows": []})
    broken = copy.deepcopy(sweep)
    del broken["rows"][3]["sample"]
    with pytest.raises(ValueError, match="sample"):
        W.LLMExplorer(broken)
    no_dense = copy.deepcopy(sweep)
    no_dense["rows"] = no_dense["rows"][1:]
    with pytest.raises(ValueError, match="dense row"):
        W.LLMExplorer(no_dense)
    no_turns = copy.deepcopy(sweep)
    del no_turns["side_by_side"]
    with pytest.raises(ValueError, match="side_by_side"):
        W.LLMExplorer(no_turns)
    half = copy.deepcopy(sweep)
    del half["side_by_side"]["models"]["2:4, dense kernels"]["decode_tokens_per_s"]
    with pytest.raises(ValueError, match="2:4, dense kernels"):
        W.LLMExplorer(half)


def test_in_turns_mapping(sweep):
    models = sweep["side_by_side"]["models"]
    rows = {W.figures.row_label(r): r for r in sweep["rows"][1:]}
    assert W.in_turns_speeds(rows["magnitude (per row) 30%"], models) == {
        "kernels": "unstructured 50%, dense kernels", "csr": None}  # any masked sparsity: the same dense kernels
    assert W.in_turns_speeds(rows["Wanda 70%"], models)["csr"] == "unstructured 70%, torch CSR"
    assert W.in_turns_speeds(rows["Wanda, 2:4"], models) == {"kernels": "2:4, dense kernels", "csr": None}
    keep = rows["structured (FFN channels), 75% kept"]
    assert W.in_turns_speeds(keep, models) == {"kernels": "structured, 75% of FFN channels kept", "csr": None}
    del models["structured, 75% of FFN channels kept"]  # not timed in turns: say so, show no other speed
    assert W.in_turns_speeds(keep, models)["kernels"] is None
    ex = W.LLMExplorer(sweep)
    ex.method.value = "structured"
    ex.sparsity.value = 0.25
    assert "no speed shown" in ex.status.value and ex.bars_fig.data[3].y == (20.0, None, None)


def test_intervals_shown_when_present(sweep):
    sweep = _with_intervals(sweep)
    ex = W.LLMExplorer(sweep)
    ex.sparsity.value = 0.5
    assert "(95% CI 26.37-35.16)" in ex.status.value and "95% CI 1.59-1.76x" in ex.status.value
    star = ex.curve_fig.data[-1]
    assert star.error_y.array == (5.86,) and star.error_y.arrayminus == (2.93,)
    wanda = next(t for t in ex.curve_fig.data if t.name == "Wanda")
    assert wanda.error_y.array == (3.8, 5.86, 71.4) and wanda.error_y.arrayminus == (1.9, 2.93, 35.7)
    bad = copy.deepcopy(sweep)
    bad["rows"][2]["perplexity_ci"] = [40.0, 50.0]  # does not hold its perplexity (30): refused, named
    with pytest.raises(ValueError, match="perplexity_ci"):
        F.perplexity_figure(bad["rows"][1:], 17.5)


def test_perplexity_labels_sit_on_their_lines(sweep):
    """On a log axis plotly reads an annotation's y as log10: the labels must be at log10 of their lines."""
    fig = F.perplexity_figure(sweep["rows"][1:], 17.5)
    lines = sorted(s.y0 for s in fig.layout.shapes)
    labels = sorted(a.y for a in fig.layout.annotations)
    assert lines == [17.5, 26.25]
    assert labels == pytest.approx([math.log10(17.5), math.log10(26.25)])
    assert all(a.yref == "y" and a.text in ("dense 17.50", "1.5x dense") for a in fig.layout.annotations)


def test_perplexity_figure(sweep):
    rows = sweep["rows"][1:]
    fig = F.perplexity_figure(rows, 17.5)
    names = [t.name for t in fig.data]
    assert names == ["magnitude (per row)", "Wanda", "Wanda, 2:4", "SparseGPT", "structured (FFN channels)"]
    assert fig.layout.yaxis.type == "log"
    assert [s.y0 for s in fig.layout.shapes] == [17.5, 26.25]
    assert fig.data[0].y[-1] == 56843.0 and fig.data[2].mode == "markers" and fig.data[1].mode == "lines+markers"
    with pytest.raises(ValueError, match="dense_perplexity"):
        F.perplexity_figure(rows, 0)
    with pytest.raises(ValueError, match="perplexity"):
        F.perplexity_figure([{"method": "wanda", "pattern": "2:4", "sparsity": 0.5}], 17.5)
    with pytest.raises(TypeError, match="list of sweep rows"):
        F.perplexity_figure(rows[0], 17.5)


def test_other_figures():
    norms = {"layers.0.q_proj": [1.0, 1.0, 2.0, 50.0], "layers.0.down_proj": [1.0, 2.0, 2.0, 2.0]}
    fig = F.input_norms_figure(norms)
    assert fig.data[0].y == (1.0, 1.0, 2.0, 50.0) and fig.data[1].y == (33.33, 1.0)
    # markers, the outlier larger and coloured, and labelled at log10 of its norm (log axis)
    assert fig.data[0].mode == "markers" and fig.data[0].marker.size == (4, 4, 4, 9)
    spike = next(a for a in fig.layout.annotations if a.text.startswith("feature"))
    assert spike.text == "feature 3: 50" and spike.x == 3 and spike.y == pytest.approx(math.log10(50))
    with pytest.raises(ValueError, match="layer must be"):
        F.input_norms_figure(norms, "nope")
    fig = F.bytes_figure({"dense": {"dense_fp32": 4e6, "dense_bf16": 2e6, "2:4_fp32": None},
                          "2:4": {"dense_fp32": 4e6, "2:4_fp32": 2.5e6}})
    assert list(fig.data[0].x) == ["dense_fp32", "dense_bf16", "2:4_fp32"]
    assert fig.data[0].y == (4.0, 2.0, None) and fig.data[1].y == (4.0, None, 2.5)
    fig = F.speed_figure({"dense": {"prefill_tokens_per_s": 100, "decode_tokens_per_s": 20},
                          "structured": {"prefill_tokens_per_s": 150, "decode_tokens_per_s": 26}})
    assert fig.data[1].hovertext == ("1.00x dense", "1.30x dense")
    with pytest.raises(ValueError, match="decode_tokens_per_s"):
        F.speed_figure({"dense": {"prefill_tokens_per_s": 1}})
    both = F.bytes_and_speed_figure({"dense": {"dense_fp32": 4e6}, "pruned": {"dense_fp32": 4e6, "csr_fp32": 3e6}},
                                    {"dense": {"prefill_tokens_per_s": 100, "decode_tokens_per_s": 20},
                                     "pruned": {"prefill_tokens_per_s": 150, "decode_tokens_per_s": 26}})
    assert [t.xaxis for t in both.data] == ["x", "x", "x2", "x3"]  # bytes, then prompt and generation columns
    assert both.data[1].y == (4.0, 3.0) and both.data[3].y == (20, 26) and both.data[2].hovertext[1] == "1.50x dense"
    fig = F.energy_figure([{"label": "dense", "power_time_j": 0.4, "model_j": 0.003}])
    assert isinstance(fig, go.Figure) and fig.data[0].y == (400.0,) and "ESTIMATED" in fig.layout.title.text


def test_committed_sweep_drives_the_explorer():
    sweep = W.load_sweep()  # benchmarks/results/llm_prune_cpu.json, validated by labkit.results
    assert W.dense_row(sweep)["method"] == "dense" and sweep["config"]["prompt"]
    ex = W.LLMExplorer(sweep)
    for key in ex.table:
        ex.method.value, ex.pattern.value, ex.sparsity.value = key
        assert ex.current() is ex.table[key] and f"{ex.current()['perplexity']:,.2f}" in ex.status.value
