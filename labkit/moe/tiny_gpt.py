"""A tiny character-level GPT whose feed-forward blocks are dense or Mixture-of-Experts.

nanoGPT in one screen: token and position embeddings, ``n_layers`` pre-norm blocks of causal
self-attention and a feed-forward block, a final LayerNorm and a linear head. The only knob that
matters for this lab is ``ffn``:

* ``"dense"``: a SwiGLU FFN with ``d_ff`` hidden units;
* ``"moe"``: ``n_experts`` SwiGLU experts of ``d_ff`` hidden units each, ``top_k`` per token.

So ``dense(d_ff)`` and ``moe(d_ff, top_k=1)`` do the same work per token (same *active*
parameters), and ``dense(n_experts * d_ff)`` has the same *total* parameters as the MoE.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.cache import cached
from labkit.data import TextCorpus
from labkit.moe.layers import MoEFeedForward, SwiGLU, active_parameters, count_parameters

#: Bump when training code changes, so stale cached weights are never read.
CACHE_VERSION = 3
#: Training threads. These models are so small that Python overhead, not arithmetic, sets the pace: one
#: thread is as fast as two on an idle laptop, far faster on a busy one (no spinning OpenMP workers),
#: and it makes the trained weights independent of the machine's core count.
TRAIN_THREADS = 1


@dataclass(frozen=True)
class GPTConfig:
    """Model and training settings; the whole dataclass is the cache key."""

    vocab_size: int
    ffn: str = "dense"  # "dense" or "moe"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    block_size: int = 64
    d_ff: int = 128  # hidden units of the dense FFN, or of *each* expert
    n_experts: int = 4
    top_k: int = 1
    capacity_factor: float | None = None  # None: dropless
    balance_weight: float = 0.01
    z_weight: float = 0.001
    noise_std: float = 0.0
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        checks.choice("ffn", self.ffn, ("dense", "moe"))
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "block_size", "d_ff", "n_experts",
                     "top_k", "steps", "batch_size"):
            checks.positive_int(name, getattr(self, name))
        for name in ("balance_weight", "z_weight", "noise_std"):
            checks.finite(name, getattr(self, name), low=0.0)
        if checks.finite("lr", self.lr) <= 0:
            raise ValueError(f"lr must be > 0 such as 3e-3, got {self.lr!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        checks.nonneg_int("seed", self.seed)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + ffn(ln(x))``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        if cfg.ffn == "dense":
            self.ffn: nn.Module = SwiGLU(cfg.d_model, cfg.d_ff)
        else:
            self.ffn = MoEFeedForward(cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.top_k, cfg.capacity_factor,
                                      cfg.noise_std, cfg.balance_weight, cfg.z_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(self.ln2(x))


class TinyGPT(nn.Module):
    """The character-level language model."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, vocab); with ``targets`` also the mean cross-entropy."""
        if idx.ndim != 2 or idx.shape[1] > self.cfg.block_size:
            raise ValueError(f"idx must be (batch, <= {self.cfg.block_size}) token ids, got shape {tuple(idx.shape)}")
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def moe_layers(self) -> list[MoEFeedForward]:
        """The MoE feed-forward layers (empty for a dense model)."""
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoEFeedForward)]

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' auxiliary losses from the last forward pass."""
        return sum((m.aux_loss for m in self.moe_layers()), torch.zeros(()))


@dataclass
class TrainResult:
    """What :func:`train` returns (and caches)."""

    config: dict
    state_dict: dict
    train_loss: list[float]  # every ``log_every`` steps
    val_loss: float
    load_history: list[list[list[float]]] = field(default_factory=list)  # [log step][layer][expert]
    log_every: int = 10

    def model(self) -> TinyGPT:
        """Rebuild the trained model (eval mode)."""
        model = TinyGPT(GPTConfig(**self.config))
        model.load_state_dict(self.state_dict)
        return model.eval()


def _check_model(model: object) -> None:
    if not isinstance(model, TinyGPT):
        raise TypeError("model must be a labkit.moe.tiny_gpt.TinyGPT (e.g. train(...).model()), "
                        f"got {type(model).__name__}")


@torch.no_grad()
def evaluate(model: TinyGPT, corpus: TextCorpus, batches: int = 8, batch_size: int = 32, seed: int = 1234) -> float:
    """Mean validation cross-entropy (nats per character) on fixed, seeded windows."""
    _check_model(model)
    batches = checks.positive_int("batches", batches)
    checks.nonneg_int("seed", seed)
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(batches):
        x, y = corpus.batch("val", batch_size, model.cfg.block_size, g)
        losses.append(model(x, y)[1].item())
    model.train(was_training)
    return sum(losses) / len(losses)


@contextmanager
def train_threads():
    """Run the block with ``TRAIN_THREADS`` torch threads, then restore the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(cfg: GPTConfig, corpus: TextCorpus, log_every: int, progress: bool) -> TrainResult:
    with train_threads():
        return _train_loop(cfg, corpus, log_every, progress)


def _train_loop(cfg: GPTConfig, corpus: TextCorpus, log_every: int, progress: bool) -> TrainResult:
    torch.manual_seed(cfg.seed)
    model = TinyGPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    losses, loads = [], []
    from tqdm.auto import tqdm

    # Off by default: a bar that appears only when the cache is cold would change a notebook's outputs
    # between runs. Notebooks show one bar over the models instead, present whether they train or load.
    for step in tqdm(range(cfg.steps), desc=f"train {cfg.ffn}", leave=False, disable=not progress):
        x, y = corpus.batch("train", cfg.batch_size, cfg.block_size, g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        (loss + model.aux_loss()).backward()
        opt.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            losses.append(loss.item())
            if model.moe_layers():
                loads.append([m.last_stats.load_fraction for m in model.moe_layers() if m.last_stats is not None])
    return TrainResult(asdict(cfg), {k: v.clone() for k, v in model.state_dict().items()}, losses,
                       evaluate(model, corpus), loads, log_every)


def train(cfg: GPTConfig, corpus: TextCorpus, log_every: int = 10, use_cache: bool = True,
          progress: bool = False) -> TrainResult:
    """Train a :class:`TinyGPT` on ``corpus`` (AdamW, seeded batches), cached on disk by config.

    ``progress`` shows a bar over the training steps. The first call trains (seconds to a minute on a
    CPU); later calls with the same config load the
    weights. Training runs on one thread (see ``TRAIN_THREADS``), so it is deterministic on any machine with the same
    torch build.
    """
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
    if not isinstance(corpus, TextCorpus):
        raise TypeError("corpus must be a labkit.data.TextCorpus (labkit.data.text_corpus()), "
                        f"got {type(corpus).__name__}")
    if cfg.vocab_size != corpus.vocab_size:
        raise ValueError(f"cfg.vocab_size ({cfg.vocab_size}) must equal corpus.vocab_size ({corpus.vocab_size})")
    checks.positive_int("log_every", log_every)
    if not use_cache:
        return _train(cfg, corpus, log_every, progress)
    key = {**asdict(cfg), "log_every": log_every, "corpus_chars": len(corpus.text), "threads": TRAIN_THREADS}
    # cached as a plain dict of its fields (safe to load), rebuilt into a TrainResult here
    fields = cached("tiny_gpt", CACHE_VERSION, key, lambda: vars(_train(cfg, corpus, log_every, progress)))
    return TrainResult(**fields)


def flops_per_token(model: TinyGPT, corpus: TextCorpus, batch_size: int = 4) -> float:
    """Forward FLOPs per token counted by ``torch.utils.flop_counter.FlopCounterMode``.

    It counts matrix multiplies and attention, the work that dominates; for an MoE it counts the
    experts each token actually visited.
    """
    from torch.utils.flop_counter import FlopCounterMode

    _check_model(model)
    g = torch.Generator().manual_seed(0)
    x, _ = corpus.batch("val", batch_size, model.cfg.block_size, g)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / x.numel()


def tokens_per_second(model: TinyGPT, corpus: TextCorpus, steps: int = 20, batch_size: int = 16,
                      warmup: int = 3) -> float:
    """Training throughput in tokens/s (forward + backward + AdamW step, ``TRAIN_THREADS`` threads), on a copy.

    The first ``warmup`` steps are not timed (allocations, lazy initialisation).
    """
    import copy

    _check_model(model)
    steps = checks.positive_int("steps", steps)
    warmup = checks.nonneg_int("warmup", warmup)
    batch_size = checks.positive_int("batch_size", batch_size)
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batches = [corpus.batch("train", batch_size, model.cfg.block_size, g) for _ in range(steps + warmup)]
    with train_threads():  # measured the way the models are trained
        for i, (x, y) in enumerate(batches):
            if i == warmup:
                start = time.perf_counter()
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            (loss + model.aux_loss()).backward()
            opt.step()
        elapsed = time.perf_counter() - start
    return steps * batch_size * model.cfg.block_size / elapsed


def summary(result: TrainResult, corpus: TextCorpus) -> dict:
    """Validation loss, parameters (total and active) and FLOPs per token of a trained model."""
    if not isinstance(result, TrainResult):
        raise TypeError(f"result must be a TrainResult (from train()), got {type(result).__name__}")
    model = result.model()
    n_experts = model.cfg.n_experts if model.cfg.ffn == "moe" else 1
    return {"ffn": model.cfg.ffn, "d_ff": model.cfg.d_ff, "n_experts": n_experts,
            "val_loss": result.val_loss, "total_params": count_parameters(model),
            "active_params": active_parameters(model), "flops_per_token": flops_per_token(model, corpus)}


def three_models(vocab_size: int, seed: int = 0, steps: int = 300, **overrides) -> dict[str, GPTConfig]:
    """The lab's comparison: dense, MoE with the same active parameters, dense with the same total."""
    moe = GPTConfig(vocab_size, ffn="moe", seed=seed, steps=steps, **overrides)
    return {
        "dense (same active)": GPTConfig(vocab_size, ffn="dense", d_ff=moe.d_ff, seed=seed, steps=steps,
                                         **{k: v for k, v in overrides.items() if k != "d_ff"}),
        f"MoE {moe.n_experts} experts, top-{moe.top_k}": moe,
        "dense (same total)": GPTConfig(vocab_size, ffn="dense", d_ff=moe.d_ff * moe.n_experts, seed=seed,
                                        steps=steps, **{k: v for k, v in overrides.items() if k != "d_ff"}),
    }


def lab_models(vocab_size: int, seed: int = 0, steps: int = 600) -> dict[str, GPTConfig]:
    """The notebook's four models: :func:`three_models` plus the MoE without balancing or z-loss (to show collapse)."""
    from dataclasses import replace

    cfgs = three_models(vocab_size, seed=seed, steps=steps)
    moe = next(c for c in cfgs.values() if c.ffn == "moe")
    cfgs["MoE without balancing loss"] = replace(moe, balance_weight=0.0, z_weight=0.0)
    return cfgs


def layer_inputs(model: TinyGPT, idx: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """The hidden states (tokens, d_model) that MoE layer ``layer`` receives for the batch ``idx``."""
    _check_model(model)
    moe = model.moe_layers()
    if not moe:
        raise ValueError("model has no MoE layer (cfg.ffn is 'dense'): pass a model built with ffn='moe'")
    if not 0 <= checks.nonneg_int("layer", layer) < len(moe):
        raise ValueError(f"layer must be in [0, {len(moe) - 1}] (the model's MoE layers), got {layer}")
    captured = []
    handle = moe[layer].register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach()))
    try:
        model.eval()
        with torch.no_grad():
            model(idx)
    finally:
        handle.remove()
    return captured[0].reshape(-1, model.cfg.d_model)
