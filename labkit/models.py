"""The two small models every pruning notebook uses, sized for scikit-learn's 8x8 digits.

* :class:`MLP` - a multilayer perceptron ``64 -> 256 -> 128 -> 10`` (about 50k weights): fully
  connected layers are where unstructured, N:M and block sparsity are easiest to see.
* :class:`SmallCNN` - two 3x3 convolutions and a linear classifier: the place to prune whole channels.

Both keep their layers in a plain ``nn.Sequential`` called ``net`` and record the widths they were
built with, so structured pruning (:func:`labkit.prune.remove_units`) can build a smaller copy of
the same class and copy the surviving weights over.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

from labkit import checks
from labkit.utils import count_parameters  # noqa: F401 - re-exported: models.count_parameters


def _check_width(name: str, value: int) -> int:
    return checks.positive_int(name, value)


def _check_widths(name: str, values: Sequence[int], allow_empty: bool = False) -> tuple[int, ...]:
    if isinstance(values, int) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a tuple of ints such as (256, 128), got {values!r}")
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} must hold at least one width, got ()")
    return tuple(_check_width(f"{name}[{i}]", v) for i, v in enumerate(values))


class _Seeded:
    """Context manager: initialise weights from ``seed`` without touching the global RNG state."""

    def __init__(self, seed: int | None):
        self.seed = None if seed is None else checks.nonneg_int("seed", seed)
        self._fork: AbstractContextManager | None = None

    def __enter__(self):
        if self.seed is not None:
            self._fork = torch.random.fork_rng(devices=[])
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        if self._fork is not None:
            self._fork.__exit__(*exc)


class MLP(nn.Module):
    """Fully connected classifier: ``in_features -> hidden[0] -> ... -> n_classes`` with ReLU between.

    Args:
        in_features: input size (64 for flattened 8x8 digits).
        hidden: widths of the hidden layers, e.g. ``(256, 128)``; ``()`` gives a linear classifier.
        n_classes: number of output classes.
        seed: if given, initialise the weights from this seed (the global RNG is left alone).
    """

    def __init__(self, in_features: int = 64, hidden: Sequence[int] = (256, 128), n_classes: int = 10,
                 seed: int | None = None):
        super().__init__()
        self.in_features = _check_width("in_features", in_features)
        self.hidden = _check_widths("hidden", hidden, allow_empty=True)
        self.n_classes = _check_width("n_classes", n_classes)
        widths = (self.in_features, *self.hidden, self.n_classes)
        layers: list[nn.Module] = []
        with _Seeded(seed):
            for i, (a, b) in enumerate(pairwise(widths)):
                layers.append(nn.Linear(a, b))
                if i < len(widths) - 2:
                    layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.tensor("x", x)
        if x.dim() > 2:  # accept images (n, 1, 8, 8) as well as flat rows (n, 64)
            x = x.flatten(1)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features per row, got shape {tuple(x.shape)}")
        return self.net(x)

    def config(self) -> dict:
        """The constructor arguments (without the seed): enough to build a same-shaped model."""
        return {"in_features": self.in_features, "hidden": self.hidden, "n_classes": self.n_classes}


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (padding 1, ReLU), a 2x2 max-pool and a linear classifier, for 1x8x8 images.

    Shapes: ``(n, 1, 8, 8) -> conv (channels[0]) -> conv (channels[1]) -> pool -> (n, channels[1]*4*4) -> n_classes``.

    Args:
        channels: output channels of the two convolutions, e.g. ``(16, 32)``.
        n_classes: number of output classes.
        image_size: side of the square input image (8 for digits); must be even for the pool.
        seed: if given, initialise the weights from this seed (the global RNG is left alone).
    """

    def __init__(self, channels: Sequence[int] = (16, 32), n_classes: int = 10, image_size: int = 8,
                 seed: int | None = None):
        super().__init__()
        self.channels = _check_widths("channels", channels)
        if len(self.channels) != 2:
            raise ValueError(f"channels must hold exactly two widths (conv1, conv2), got {self.channels}")
        self.n_classes = _check_width("n_classes", n_classes)
        self.image_size = _check_width("image_size", image_size)
        if image_size % 2:
            raise ValueError(f"image_size must be even (the 2x2 pool halves it), got {image_size}")
        c1, c2 = self.channels
        pooled = (image_size // 2) ** 2
        with _Seeded(seed):
            self.net = nn.Sequential(
                nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(c2 * pooled, self.n_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checks.tensor("x", x)
        if x.dim() == 2:  # accept flat rows (n, 64) as well as images (n, 1, 8, 8)
            x = x.reshape(-1, 1, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != (1, self.image_size, self.image_size):
            raise ValueError(f"x must have shape (n, 1, {self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        return self.net(x)

    def config(self) -> dict:
        """The constructor arguments (without the seed): enough to build a same-shaped model."""
        return {"channels": self.channels, "n_classes": self.n_classes, "image_size": self.image_size}


#: Names accepted by :func:`build`.
MODEL_KINDS = ("mlp", "cnn")


def build(kind: str, seed: int | None = 0, **kwargs) -> MLP | SmallCNN:
    """Build ``"mlp"`` (:class:`MLP`) or ``"cnn"`` (:class:`SmallCNN`) with the lab's default sizes."""
    kind = checks.choice("kind", kind, MODEL_KINDS)
    return MLP(seed=seed, **kwargs) if kind == "mlp" else SmallCNN(seed=seed, **kwargs)


def prunable_layers(model: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    """The ``nn.Linear`` and ``nn.Conv2d`` layers of ``model`` by name, in forward order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


class MoEClassifier(nn.Module):
    """A digit classifier with one Mixture-of-Experts block: ``64 -> d_model -> MoE (residual) -> 10``.

    Each input is one token routed to ``top_k`` of ``n_experts`` SwiGLU experts
    (:class:`labkit.moe.MoEFeedForward`), so only part of the weights work for any one input.
    """

    def __init__(self, in_features: int = 64, d_model: int = 64, d_ff: int = 64, n_experts: int = 4,
                 top_k: int = 1, n_classes: int = 10, seed: int = 0):
        super().__init__()
        from labkit.moe import MoEFeedForward

        checks.nonneg_int("seed", seed)
        for name, v in (("in_features", in_features), ("d_model", d_model), ("n_classes", n_classes)):
            checks.positive_int(name, v)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Linear(in_features, d_model)
            self.moe = MoEFeedForward(d_model, d_ff, n_experts, top_k)
            self.head = nn.Linear(d_model, n_classes)
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        h = F.relu(self.embed(x))
        return self.head(h + self.moe(h))

    def active_parameters(self) -> int:
        """Parameters one input touches: embedding, router, ``top_k`` experts and head."""
        return (sum(p.numel() for p in self.embed.parameters()) + self.moe.active_parameters()
                + sum(p.numel() for p in self.head.parameters()))
