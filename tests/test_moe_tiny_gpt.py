"""labkit.moe.tiny_gpt: the dense / MoE character model, its cache and its accounting."""
import pytest
import torch

from labkit.data import text_corpus
from labkit.moe import tiny_gpt as tg


@pytest.fixture(scope="module")
def corpus():
    return text_corpus(max_chars=20_000)


def _tiny(corpus, **kw):
    base = dict(d_model=16, n_layers=1, n_heads=2, block_size=16, d_ff=16, steps=4, batch_size=4)
    base.update(kw)
    return tg.GPTConfig(corpus.vocab_size, **base)


def test_training_is_deterministic_and_cached(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    cfg = _tiny(corpus, ffn="moe", n_experts=4, top_k=2)
    a = tg.train(cfg, corpus, log_every=2)
    assert len(list(tmp_path.iterdir())) == 1
    b = tg.train(cfg, corpus, log_every=2)  # from the cache
    c = tg.train(cfg, corpus, log_every=2, use_cache=False)  # trained again
    assert a.train_loss == b.train_loss == c.train_loss
    assert a.val_loss == c.val_loss
    assert len(a.load_history) == 3 and len(a.load_history[0]) == 1 and len(a.load_history[0][0]) == 4
    assert sum(a.load_history[-1][0]) == pytest.approx(1.0)
    for k, v in a.model().state_dict().items():
        torch.testing.assert_close(v, c.state_dict[k])


def test_three_models_match_active_and_total_parameters(corpus):
    cfgs = tg.three_models(corpus.vocab_size, d_model=16, n_layers=1, n_heads=2, block_size=16, d_ff=16, n_experts=4)
    dense, moe, wide = (tg.TinyGPT(c) for c in cfgs.values())
    router = 16 * 4
    assert tg.active_parameters(moe) == tg.count_parameters(dense) + router
    assert tg.count_parameters(moe) == tg.count_parameters(wide) + router
    assert tg.count_parameters(moe) - tg.active_parameters(moe) == 3 * (3 * 16 * 16)  # 3 idle experts


def test_flops_per_token_counts_only_active_experts(corpus):
    cfgs = tg.three_models(corpus.vocab_size, d_model=16, n_layers=1, n_heads=2, block_size=16, d_ff=16, n_experts=4)
    dense, moe, wide = (tg.flops_per_token(tg.TinyGPT(c), corpus) for c in cfgs.values())
    router = 2 * 16 * 4  # one (16 x 4) matmul per token
    assert moe == pytest.approx(dense + router)
    ffn = 2 * 3 * 16 * 16
    assert wide == pytest.approx(dense + 3 * ffn)


def test_bad_config_and_arguments(corpus):
    with pytest.raises(ValueError, match="ffn"):
        tg.GPTConfig(corpus.vocab_size, ffn="sparse")
    with pytest.raises(ValueError, match="n_heads"):
        tg.GPTConfig(corpus.vocab_size, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="top_k"):
        tg.GPTConfig(corpus.vocab_size, ffn="moe", n_experts=2, top_k=3)
    with pytest.raises(ValueError, match="vocab_size"):
        tg.train(tg.GPTConfig(10), corpus)
    with pytest.raises(TypeError, match="corpus"):
        tg.train(_tiny(corpus), "text")
    with pytest.raises(ValueError, match="idx"):
        tg.TinyGPT(_tiny(corpus))(torch.zeros(2, 40, dtype=torch.long))


def test_layer_inputs_feed_the_moe_layer(corpus):
    model = tg.TinyGPT(_tiny(corpus, ffn="moe", n_experts=4)).eval()
    idx = corpus.val[:32].view(2, 16)
    h = tg.layer_inputs(model, idx, layer=0)
    assert h.shape == (32, 16)
    layer = model.moe_layers()[0]
    with torch.no_grad():
        y = layer(h)
    assert y.shape == h.shape and layer.last_stats.tokens == 32
    with pytest.raises(ValueError, match="layer"):
        tg.layer_inputs(model, idx, layer=1)


def test_lab_models_and_throughput(corpus):
    cfgs = tg.lab_models(corpus.vocab_size, steps=5)
    assert len(cfgs) == 4
    nobal = cfgs["MoE without balancing loss"]
    assert nobal.balance_weight == 0.0 and nobal.z_weight == 0.0 and nobal.ffn == "moe"
    model = tg.TinyGPT(_tiny(corpus))
    assert tg.tokens_per_second(model, corpus, steps=1, batch_size=2, warmup=1) > 0
    with pytest.raises(ValueError, match="steps"):
        tg.tokens_per_second(model, corpus, steps=0)
    with pytest.raises(TypeError, match="TinyGPT"):
        tg.flops_per_token(torch.nn.Linear(2, 2), corpus)
    with pytest.raises(TypeError, match="TrainResult"):
        tg.summary(model, corpus)
