"""labkit.models and labkit.train: shapes, seeding, training that learns, clear errors."""
import pytest
import torch

from labkit import data, models, train


@pytest.fixture(scope="module")
def digits():
    return data.digits(0)


def test_mlp_and_cnn_shapes_accept_flat_and_image_inputs():
    x = torch.rand(5, 64)
    for model in (models.MLP(), models.SmallCNN()):
        assert model(x).shape == (5, 10)
        assert model(x.reshape(5, 1, 8, 8)).shape == (5, 10)
    assert list(models.prunable_layers(models.MLP())) == ["net.0", "net.2", "net.4"]
    assert list(models.prunable_layers(models.SmallCNN())) == ["net.0", "net.2", "net.6"]
    assert models.count_parameters(models.MLP(hidden=(8,))) == 64 * 8 + 8 + 8 * 10 + 10


def test_seed_gives_same_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = models.MLP(seed=3), models.MLP(seed=3)
    assert torch.rand(1) == before  # building seeded models did not consume the global RNG
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(models.MLP(seed=4).net[0].weight, a.net[0].weight)


def test_training_learns_and_is_deterministic(digits):
    accs = []
    for _ in range(2):
        model = models.MLP(hidden=(32,), seed=0)
        losses = train.train(model, digits.train, epochs=8, seed=0)
        assert losses[-1] < losses[0]
        accs.append(train.evaluate(model, digits.val))
    assert accs[0] == accs[1]
    assert accs[0] > 0.85


def test_on_step_sees_every_step(digits):
    seen = []
    train.train(models.MLP(hidden=(8,), seed=0), digits.train, epochs=2, on_step=seen.append)
    assert seen == list(range(2 * train.steps_per_epoch(digits.train)))


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden": 256}, "hidden"), ({"hidden": (0,)}, "hidden"), ({"in_features": -1}, "in_features"),
])
def test_mlp_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        models.MLP(**kwargs)


def test_bad_arguments_name_the_argument(digits):
    with pytest.raises(ValueError, match="channels"):
        models.SmallCNN(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="kind"):
        models.build("transformer")
    with pytest.raises(ValueError, match="features"):
        models.MLP()(torch.rand(2, 10))
    model = models.MLP(hidden=(8,))
    with pytest.raises(ValueError, match="epochs"):
        train.train(model, digits.train, epochs=-1)
    with pytest.raises(ValueError, match="lr"):
        train.train(model, digits.train, lr=0)
    with pytest.raises(TypeError, match="split"):
        train.evaluate(model, digits.train.x)
    with pytest.raises(TypeError, match="model"):
        models.prunable_layers("mlp")


def test_pretrained_is_cached_and_returns_fresh_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    a = train.pretrained("mlp", seed=0, epochs=2)
    assert len(list(tmp_path.glob("pretrained_mlp-*.pt"))) == 1
    with torch.no_grad():
        a.net[0].weight.zero_()
    b = train.pretrained("mlp", seed=0, epochs=2)
    assert b.net[0].weight.abs().sum() > 0
