"""labkit.figures.moe and labkit.experiments.moe_routing: figures and result loaders, on a tiny model trained
for a few steps."""
from pathlib import Path

import plotly.graph_objects as go
import pytest

from labkit.data import text_corpus
from labkit.experiments import moe_routing as routing
from labkit.figures import moe as figures
from labkit.moe import tiny_gpt as tg

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = text_corpus(max_chars=20_000)
    base = dict(d_model=16, n_layers=1, n_heads=2, block_size=16, d_ff=16, steps=3, batch_size=4)
    moe = tg.train(tg.GPTConfig(corpus.vocab_size, ffn="moe", n_experts=4, **base), corpus, log_every=1,
                   use_cache=False)
    dense = tg.train(tg.GPTConfig(corpus.vocab_size, **base), corpus, use_cache=False)
    return corpus, moe, dense


def test_load_during_training_has_one_trace_per_expert_and_run(setup):
    corpus, moe, dense = setup
    fig = figures.load_during_training({"a": moe, "b": moe})
    assert len(fig.data) == 8
    assert list(fig.data[0].x) == [0, 1, 2]
    with pytest.raises(ValueError, match="MoE models"):
        figures.load_during_training({"dense": dense})


def test_token_colouring_matches_routing(setup):
    corpus, moe, dense = setup
    model = moe.model()
    text = corpus.decode(corpus.val[:40])
    experts = routing.route_text(model, corpus, text)
    assert len(experts) == 40 and set(experts) <= set(range(4))
    fig = figures.token_colouring(model, corpus, text, width=16)
    z = fig.data[0].z
    assert len(z) == 3 and z[-1][:16] == experts[:16]  # rows are drawn top-down (reversed)
    with pytest.raises(ValueError, match="no MoE layers"):
        figures.token_colouring(dense.model(), corpus, text)
    with pytest.raises(ValueError, match="layer"):
        routing.route_text(model, corpus, text, layer=3)


def test_expert_preferences_are_shares(setup):
    corpus, moe, _ = setup
    table = routing.expert_preferences(moe.model(), corpus, n_chars=256)
    assert "space" in table and all(abs(sum(v) - 1) < 1e-9 for v in table.values())
    assert isinstance(figures.preferences_figure(table), go.Figure)
    with pytest.raises(ValueError, match="n_chars"):
        routing.expert_preferences(moe.model(), corpus, n_chars=3)


def test_exchange_diagram():
    fig = figures.exchange_diagram([[3, 7], [7, 0]])
    assert sum(1 for t in fig.data if t.mode == "lines+text") == 6  # 3 non-zero routes, dispatch and combine
    with pytest.raises(ValueError, match="square"):
        figures.exchange_diagram([[1, 2, 3]])


def test_sweep_table_and_comparison_figure():
    rows = [{"model": m, "seed": s, "val_loss": 2.0 + s / 10 + i, "total_params": 10 * (i + 1),
             "active_params": 5, "flops_per_token": 100.0 * (i + 1)} for i, m in enumerate("ab") for s in range(3)]
    table = routing.sweep_table({"rows": rows})
    assert [r["model"] for r in table] == ["a", "b"] and table[0]["val_loss_mean"] == 2.1 and table[0]["seeds"] == 3
    fig = figures.comparison_figure(rows, x="flops_per_token")
    assert len(fig.data) == 2 and fig.data[1].y[0] == 3.1
    with pytest.raises(ValueError, match="x must be"):
        figures.comparison_figure(rows, x="speed")


def test_committed_sweep_loads():
    sweep = routing.load_train_sweep()
    assert sweep["script"] == "benchmarks/moe_train_sweep.py"
    assert {r["model"] for r in sweep["rows"]} == set(tg.lab_models(10))
    with pytest.raises(FileNotFoundError, match="moe_train_sweep"):
        routing.load_train_sweep(ROOT / "nope.json")
