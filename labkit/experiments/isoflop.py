"""Compute-optimal training on the lab's tiny character model: Chinchilla's IsoFLOP curves, in miniature.

Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models" (arXiv:2203.15556), trained many model
sizes at a fixed compute budget ``C ~ 6 N D`` (``N`` parameters, ``D`` training tokens) and found, for each
budget, the size whose loss is lowest (their approach 2, the IsoFLOP profiles). Over budgets the best size grew
as ``C^0.49`` and the tokens as ``C^0.51``: parameters and tokens should grow together, about 20 tokens per
parameter, so many large models of the day were under-trained. This module repeats the *procedure* on the tiny
GPT of notebook 04 (:mod:`labkit.moe.tiny_gpt`, dense SwiGLU FFN):

* :data:`SIZES`: model sizes, the width and depth of that model varied;
  :func:`parameter_counts` counts them two ways;
* :func:`train_at_budget`: one model trained for ``D = C / (6 N)`` tokens of notebook 04's text, with a cosine
  learning-rate schedule as long as the run; its loss on the whole held-out split (:func:`validation_loss`);
  :func:`train_budget`, every size and seed of one budget (a notebook's live curve);
* :func:`fit_isoflop`: a parabola in ``log10 N`` through one budget's losses, its minimum ``N*`` and
  ``D*/N*`` tokens per parameter; :func:`bootstrap_isoflop` its interval over seeds;
  :func:`isoflop_table` one such fit per budget of a sweep; :func:`fit_exponent`, ``N* ~ C^a`` across budgets;
* :func:`flop_check`: ``6 N D`` against ``torch.utils.flop_counter`` on one training step.

**Which N.** ``N`` here is the *non-embedding* parameter count (Kaplan et al. 2020's convention): every
parameter except the token and position embeddings and the output head (the vocabulary matrices). Hoffmann et
al. counted *all* parameters; at the scale of a few thousand parameters the vocabulary matrices are a large
share of the model (more than half of the smallest size here), and the two conventions give different tokens per
parameter: rows keep both counts, and :func:`isoflop_table` fits either. Pearce and Song (2024), "Reconciling
Kaplan and Chinchilla Scaling Laws" (arXiv:2406.12907), trace much of the gap between the two papers' answers
to this choice at small scale.

**What carries over to large language models, and what does not** (:data:`CARRY_OVER`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from labkit import checks
from labkit.data import TextCorpus, text_corpus
from labkit.moe.tiny_gpt import GPTConfig, TinyGPT

#: Hoffmann et al. 2022's answer, for comparison (never a number this lab measured).
CHINCHILLA = {
    "tokens_per_param": 20.0,
    "a": 0.49,  # N* ~ C^a, approach 2 (IsoFLOP profiles), Table 2
    "b": 0.51,  # D* ~ C^b
    "source": "Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models', arXiv:2203.15556: approach 2 "
              "(IsoFLOP profiles) gives N_opt ~ C^0.49 and D_opt ~ C^0.51 (Table 2); Chinchilla itself, 70B "
              "parameters trained on 1.4T tokens, is 20 tokens per parameter (Table 1). N counts all parameters.",
}

#: What the tiny model's answer can and cannot say about LLMs; the sweep writes it into its results file.
CARRY_OVER = (
    "Carries over: the procedure (fix C, vary N with D = C/(6N), fit loss against log N, read off the minimum) and "
    "the shape it finds: at a fixed budget a model can be too small (it cannot use the data) or too large (too few "
    "tokens to train it), so the loss has a minimum in between, and the best size grows with the budget.",
    "Carries over: 6ND counts the matrix multiplies of the blocks, and backward costs twice forward. flop_check "
    "shows what it leaves out: the output head and attention, a large share of a model this narrow and a small "
    "one of an LLM.",
    "Does not carry over: the number. 20 tokens per parameter was measured on models of 70M-16B parameters with a "
    "32k-token vocabulary; these have 10^3-10^5 non-embedding parameters, a 94-character vocabulary and a "
    "64-character context, and the best ratio drifts with scale, tokenizer, data and how N is counted.",
    "Does not carry over: the compute count. Budgets here are 6ND with non-embedding N, so the narrowest models "
    "get the most arithmetic beyond their 6ND (the head and attention), which tilts the optimum toward small "
    "models and many tokens per parameter; Hoffmann et al. counted every FLOP (their Appendix F) and all parameters.",
    "Does not carry over: the data regime. Chinchilla's tokens were (nearly) all unique; here the small models "
    "read notebook 04's 360k training characters many times over (rows record epochs).",
    "Does not carry over: the tuning. The peak learning rate follows 1/width from a small probe, with one batch "
    "size and no per-size search; Hoffmann et al. tuned at scale.",
    "Does not carry over: what 'optimal' means in practice. Compute-optimal minimises training compute only; a "
    "model served to many users is often trained far past 20 tokens per parameter (Llama 3 8B: 15T tokens, about "
    "1,900 per parameter; Meta, 'The Llama 3 Herd of Models', 2024), because a smaller model costs less energy "
    "per request for its whole life.",
)

#: Training settings, notebook 04's where it has them (batch, context, AdamW, no weight decay). The peak learning
#: rate falls as 1 / width (:func:`peak_lr`): ``LR_WIDTH / d_model``, 1e-2 at notebook 04's width 64. A probe of
#: 600-step runs at peaks 3e-3, 1e-2 and 3e-2 found 1e-2 best at width 64 and 3e-2 best at width 24, and notebook
#: 04's constant 3e-3 far too low once the rate decays: one rate for every size would favour the sizes it suits.
#: :func:`lr_at` warms the peak up and decays it along a cosine.
LR_WIDTH = 0.64
BATCH_SIZE = 16
BLOCK_SIZE = 64
#: The cosine ends at this share of the peak learning rate (Hoffmann et al. decay it 10x).
FINAL_LR_SHARE = 0.1
#: Gradient-norm clipping, as nanoGPT and Hoffmann et al. train: it keeps the short, high-learning-rate runs stable.
GRAD_CLIP = 1.0
#: Parameter names of the vocabulary matrices, left out of the non-embedding count.
EMBEDDING_PREFIXES = ("tok.", "pos.", "head.")


@dataclass(frozen=True)
class ModelSize:
    """One size of notebook 04's dense tiny GPT: width, depth, heads and FFN hidden units (default 2x width)."""

    d_model: int
    n_layers: int
    n_heads: int = 4
    d_ff: int = 0  # 0: 2 * d_model, notebook 04's ratio (64 -> 128)

    def __post_init__(self) -> None:
        checks.positive_int("d_model", self.d_model)
        checks.positive_int("n_layers", self.n_layers)
        checks.positive_int("n_heads", self.n_heads)
        if checks.nonneg_int("d_ff", self.d_ff) == 0:
            object.__setattr__(self, "d_ff", 2 * self.d_model)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def name(self) -> str:
        """``"d64xL2"``: width and depth, the key a sweep's rows are grouped by."""
        return f"d{self.d_model}xL{self.n_layers}"


#: The sizes the sweep draws from, about 2x apart in non-embedding parameters (2.7k to 280k); each budget of
#: ``benchmarks/isoflop_sweep.py`` trains the five that bracket its minimum.
SIZES: dict[str, ModelSize] = {s.name: s for s in (
    ModelSize(16, 1), ModelSize(24, 1), ModelSize(32, 1), ModelSize(32, 2), ModelSize(48, 2), ModelSize(64, 2),
    ModelSize(64, 4), ModelSize(96, 3))}


def _size(size: object) -> ModelSize:
    """``size`` as a :class:`ModelSize` (a name of :data:`SIZES` is accepted)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"size must be a ModelSize or one of {sorted(SIZES)}, got {size!r}")
        return SIZES[size]
    if not isinstance(size, ModelSize):
        raise TypeError(f"size must be a ModelSize (e.g. ModelSize(64, 2)) or a name of SIZES, got "
                        f"{type(size).__name__}")
    return size


def peak_lr(size: ModelSize | str) -> float:
    """The peak learning rate of a size: ``LR_WIDTH / d_model`` (wider models take smaller steps)."""
    return LR_WIDTH / _size(size).d_model


def gpt_config(size: ModelSize | str, vocab_size: int, steps: int = 1, seed: int = 0) -> GPTConfig:
    """Notebook 04's :class:`~labkit.moe.tiny_gpt.GPTConfig` (dense FFN) at this size, with :func:`peak_lr`."""
    s = _size(size)
    return GPTConfig(vocab_size, ffn="dense", d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                     block_size=BLOCK_SIZE, d_ff=s.d_ff, steps=steps, batch_size=BATCH_SIZE, lr=peak_lr(s), seed=seed)


def parameter_counts(size: ModelSize | str, vocab_size: int) -> dict[str, int]:
    """``{"non_embedding", "embedding", "total"}`` parameters of the model at ``size``.

    Embedding: the token and position embeddings and the output head (:data:`EMBEDDING_PREFIXES`); the rest
    (attention, FFN, LayerNorms) is the non-embedding count ``N`` that :func:`train_at_budget` divides by.
    """
    model = TinyGPT(gpt_config(size, checks.positive_int("vocab_size", vocab_size)))
    embedding = sum(p.numel() for n, p in model.named_parameters() if n.startswith(EMBEDDING_PREFIXES))
    total = sum(p.numel() for p in model.parameters())
    return {"non_embedding": total - embedding, "embedding": embedding, "total": total}


def lr_at(step: int, steps: int, peak: float = 1e-2) -> float:
    """The learning rate at ``step`` of ``steps``: linear warm-up, then a cosine down to ``FINAL_LR_SHARE``.

    The cosine spans exactly this run. Hoffmann et al. (Fig. A1) found that a schedule longer than the run
    overstates the loss of short runs, which is one reason Kaplan et al. favoured larger models.
    Warm-up: the first 5% of steps (at least 1).
    """
    steps = checks.positive_int("steps", steps)
    if not 0 <= checks.nonneg_int("step", step) < steps:
        raise ValueError(f"step must be in [0, {steps - 1}], got {step}")
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return peak * (FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validation_loss(model: TinyGPT, corpus: TextCorpus, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per character) over the whole held-out split, cut into non-overlapping windows.

    Every character of the split is predicted once (the tail shorter than a window is dropped): the same
    held-out set for every model and seed, with no sampling noise of its own, so only training differs between rows.
    """
    if not isinstance(model, TinyGPT):
        raise TypeError(f"model must be a labkit.moe.tiny_gpt.TinyGPT, got {type(model).__name__}")
    block = model.cfg.block_size
    windows = (len(corpus.val) - 1) // block
    if windows < 1:
        raise ValueError(f"the held-out split ({len(corpus.val)} characters) is shorter than one window of {block}")
    x = corpus.val[:windows * block].view(windows, block)
    y = corpus.val[1:windows * block + 1].view(windows, block)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, windows, checks.positive_int("batch_size", batch_size)):
        _, loss = model(x[start:start + batch_size], y[start:start + batch_size])
        total += loss.item() * len(x[start:start + batch_size])
    model.train(was_training)
    return total / windows


def tokens_for(flops: float, n_params: int) -> int:
    """``D = C / (6 N)``: the training tokens a budget of ``flops`` buys a model of ``n_params`` parameters."""
    flops = checks.finite("flops", flops)
    if flops <= 0:
        raise ValueError(f"flops must be a positive compute budget such as 3e11, got {flops!r}")
    return int(flops / (6 * checks.positive_int("n_params", n_params)))


def train_at_budget(size: ModelSize | str, flops: float, seed: int = 0, corpus: TextCorpus | None = None,
                    threads: int | None = None, lr: float | None = None) -> dict:
    """Train the tiny GPT at ``size`` on ``D = flops / (6 N)`` tokens; return one sweep row.

    ``N`` is the non-embedding parameter count (:func:`parameter_counts`). Training follows notebook 04
    (batches of 16 windows of 64 characters from ``corpus``, default :func:`labkit.data.text_corpus`, AdamW,
    no weight decay, the model's own seed) with a cosine schedule over exactly ``D`` tokens (:func:`lr_at`) from
    the peak ``lr`` (default :func:`peak_lr` of the size).
    ``D`` is rounded down to whole batches, and the row records the tokens actually trained on. ``threads``:
    torch threads for the run (``None`` keeps the current count), restored afterwards.

    The row: budget, size name and config, ``n_params`` (non-embedding) and ``total_params``, ``tokens``,
    ``steps``, ``tokens_per_param`` (both counts), ``epochs`` over the training text, ``seed``, peak ``lr``,
    ``val_loss`` (:func:`validation_loss`), ``train_loss`` (mean minibatch loss of the last 10% of steps),
    ``train_seconds`` (wall time of the training loop alone).
    """
    s = _size(size)
    seed = checks.nonneg_int("seed", seed)
    if corpus is None:
        corpus = text_corpus()
    if not isinstance(corpus, TextCorpus):
        raise TypeError(f"corpus must be a labkit.data.TextCorpus (labkit.data.text_corpus()), got "
                        f"{type(corpus).__name__}")
    counts = parameter_counts(s, corpus.vocab_size)
    per_step = BATCH_SIZE * BLOCK_SIZE
    steps = tokens_for(flops, counts["non_embedding"]) // per_step
    if steps < 1:
        raise ValueError(f"flops={flops:g} buys {size!r} less than one batch of {per_step} tokens: raise the budget "
                         f"to at least {6 * counts['non_embedding'] * per_step:.3g}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(checks.positive_int("threads", threads))
    try:
        cfg = gpt_config(s, corpus.vocab_size, steps, seed)
        if lr is not None:
            cfg = replace(cfg, lr=lr)  # GPTConfig checks lr > 0
        val_loss, train_loss, seconds = _train(cfg, corpus)
    finally:
        torch.set_num_threads(previous)
    tokens = steps * per_step
    return {"budget": float(flops), "size": s.name, "config": asdict(s), "n_params": counts["non_embedding"],
            "total_params": counts["total"], "tokens": tokens, "steps": steps,
            "tokens_per_param": tokens / counts["non_embedding"],
            "tokens_per_param_total": tokens / counts["total"], "epochs": tokens / len(corpus.train),
            "seed": seed, "lr": cfg.lr, "val_loss": val_loss, "train_loss": train_loss, "train_seconds": seconds}


def train_budget(flops: float, sizes: Sequence[ModelSize | str], seeds: Sequence[int] = (0,),
                 corpus: TextCorpus | None = None, threads: int | None = 1) -> list[dict]:
    """:func:`train_at_budget` for every size and seed at one budget: the rows of one IsoFLOP curve.

    For a notebook's live run of one small budget; ``threads=1`` as the sweep trains (these models gain
    nothing from a second thread).
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 3:
        raise ValueError(f"sizes must be a list of 3+ sizes (names of SIZES or ModelSize), got {sizes!r}")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of seeds, got {seeds!r}")
    corpus = corpus if corpus is not None else text_corpus()
    return [train_at_budget(s, flops, seed, corpus, threads) for seed in seeds for s in sizes]


def _train(cfg: GPTConfig, corpus: TextCorpus) -> tuple[float, float, float]:
    """Validation loss, final training loss and training seconds of one run of ``cfg.steps`` steps."""
    torch.manual_seed(cfg.seed)
    model = TinyGPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    tail = max(1, cfg.steps // 10)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr)
        x, y = corpus.batch("train", cfg.batch_size, cfg.block_size, g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        if step >= cfg.steps - tail:
            losses.append(loss.item())
    seconds = time.perf_counter() - start
    return validation_loss(model, corpus), sum(losses) / len(losses), seconds


# ------------------------------------------------------------------------------------------------
# Fitting the IsoFLOP curve
# ------------------------------------------------------------------------------------------------

def _numbers(name: str, values: object) -> np.ndarray:
    """``values`` (a list or array of finite numbers) as a float array; errors name the argument and the index."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of numbers, got {type(values).__name__}")
    return np.array([checks.finite(f"{name}[{i}]", v) for i, v in enumerate(values)], dtype=float)


def _points(sizes: object, losses: object) -> tuple[np.ndarray, np.ndarray]:
    """``sizes`` and ``losses`` as float arrays, checked: same length, 3+ distinct positive sizes, finite losses."""
    n, y = _numbers("sizes", sizes), _numbers("losses", losses)
    if len(n) != len(y):
        raise ValueError(f"sizes and losses must have the same length, got {len(n)} and {len(y)}")
    if (n <= 0).any():
        raise ValueError(f"sizes must be positive parameter counts, got {n[n <= 0].tolist()}")
    if len(np.unique(n)) < 3:
        raise ValueError(f"a parabola needs at least 3 distinct sizes, got {len(np.unique(n))}: train more sizes")
    return n, y


def fit_isoflop(sizes: Sequence[float], losses: Sequence[float], flops: float | None = None) -> dict:
    """A parabola ``loss = a x^2 + b x + c`` in ``x = log10 N`` through one budget's points, and its minimum.

    ``sizes``: parameter counts ``N``; ``losses``: the loss of each (a mean over seeds, or every seed's point).
    Returns ``coefficients`` ``[a, b, c]``; ``n_opt`` (the vertex ``10^(-b / 2a)``, ``None`` when ``a <= 0``:
    the points curve downwards and have no minimum); ``loss_opt``; ``bracketed`` (the vertex lies inside the
    sizes trained: otherwise it is an extrapolation and the budgets should be moved). With ``flops`` also
    ``d_opt = flops / (6 n_opt)`` and ``tokens_per_param = d_opt / n_opt``.
    """
    n, y = _points(sizes, losses)
    if flops is not None and checks.finite("flops", flops) <= 0:
        raise ValueError(f"flops must be a positive compute budget, got {flops!r}")
    x = np.log10(n)
    a, b, c = (float(v) for v in np.polyfit(x, y, 2))
    fit: dict = {"coefficients": [a, b, c], "n_opt": None, "loss_opt": None, "bracketed": False,
                 "d_opt": None, "tokens_per_param": None}
    if a > 0:
        x_opt = -b / (2 * a)
        fit.update(n_opt=float(10 ** x_opt), loss_opt=float(c - b * b / (4 * a)),
                   bracketed=bool(x.min() <= x_opt <= x.max()))
        if flops is not None:
            d_opt = float(flops) / (6 * fit["n_opt"])
            fit.update(d_opt=d_opt, tokens_per_param=d_opt / fit["n_opt"])
    return fit


def bootstrap_isoflop(sizes: Sequence[float], losses: Sequence[Sequence[float]], flops: float,
                      resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """:func:`fit_isoflop` on the seed means, with percentile intervals of ``N*`` and ``D*/N*`` over seeds.

    ``losses[i]`` holds size ``i``'s loss for every seed. Each resample draws, for every size independently, as
    many seeds as it has with replacement, averages them and refits. A resample whose parabola has no minimum
    gives no ``N*``: ``valid_share`` says how many had one, and the intervals come from those. With 3 seeds the
    interval is too narrow: a bootstrap cannot see spread the seeds never showed, so a 95% interval covers the
    true minimum less often than 95% (``tests/test_isoflop.py`` simulates it). Read it as a rough range. With
    one seed for some size there is no interval (``None``).
    """
    resamples = checks.positive_int("resamples", resamples)
    level = checks.fraction("level", level, low=0.5)
    seed = checks.nonneg_int("seed", seed)
    if isinstance(losses, (str, bytes)) or not isinstance(losses, Sequence):
        raise TypeError(f"losses must be a list with one list of per-seed losses per size, got {type(losses).__name__}")
    per_size = []
    for i, seeds in enumerate(losses):
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or len(seeds) == 0:
            raise ValueError(f"losses[{i}] must be a non-empty list of per-seed losses, got {seeds!r}")
        per_size.append(np.array([checks.finite(f"losses[{i}][{j}]", v) for j, v in enumerate(seeds)]))
    fit = fit_isoflop(sizes, [float(v.mean()) for v in per_size], flops)
    rng = np.random.default_rng(seed)
    n_opts = []
    for _ in range(resamples):
        means = [float(v[rng.integers(0, len(v), len(v))].mean()) for v in per_size]
        one = fit_isoflop(sizes, means, flops)
        if one["n_opt"] is not None:
            n_opts.append(one["n_opt"])
    tail = 100 * (1 - level) / 2
    fit.update(resamples=resamples, level=level, valid_share=len(n_opts) / resamples, seeds=min(map(len, per_size)),
               n_opt_ci=None, tokens_per_param_ci=None)
    if n_opts and fit["seeds"] >= 2:  # one seed has no spread to resample: no interval rather than a false one
        lo, hi = (float(v) for v in np.percentile(n_opts, [tail, 100 - tail]))
        # tokens per parameter falls as N* grows (C / 6N^2), so the interval's ends swap
        fit.update(n_opt_ci=[lo, hi], tokens_per_param_ci=[float(flops) / (6 * hi * hi), float(flops) / (6 * lo * lo)])
    return fit


def isoflop_table(rows: Sequence[Mapping], params: str = "n_params", resamples: int = 2000) -> list[dict]:
    """One :func:`bootstrap_isoflop` fit per budget of a sweep's rows (``benchmarks/results/isoflop_cpu.json``).

    ``params``: ``"n_params"`` (non-embedding, the budget's own ``N``) or ``"total_params"`` (Hoffmann et al.'s
    convention; then ``D*/N*`` is tokens per *total* parameter at the fitted size). Each entry adds the budget,
    the sizes and their mean losses, in order of size, and ``ends_worse``: the smallest and the largest size
    both lost to a size between them (the budget brackets its minimum; otherwise move its sizes).
    """
    params = checks.choice("params", params, ("n_params", "total_params"))
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty list of sweep rows (results.read(...)['rows'])")
    table = []
    for budget in sorted({float(r["budget"]) for r in rows}):
        sel = [r for r in rows if float(r["budget"]) == budget]
        names = sorted({r["size"] for r in sel}, key=lambda s: next(r[params] for r in sel if r["size"] == s))
        sizes = [next(r[params] for r in sel if r["size"] == s) for s in names]
        losses = [[r["val_loss"] for r in sel if r["size"] == s] for s in names]
        if len(names) < 3:
            raise ValueError(f"budget {budget:g} has {len(names)} size(s) in rows, and a fit needs 3 or more: finish "
                             "the sweep (python benchmarks/isoflop_sweep.py --resume) or leave that budget out")
        fit = bootstrap_isoflop(sizes, losses, budget, resamples=resamples)
        if params == "total_params" and fit["n_opt"] is not None:
            # D was set by the non-embedding count: convert the fitted total size back through the rows' ratio
            fit.update(_total_convention(sel, fit))
        means = [float(np.mean(v)) for v in losses]
        fit.update(budget=budget, sizes=names, params=sizes, mean_losses=means,
                   ends_worse=len(means) >= 3 and min(means[1:-1]) < min(means[0], means[-1]))
        table.append(fit)
    return table


def _total_convention(rows: Sequence[Mapping], fit: Mapping) -> dict:
    """``d_opt`` and tokens per total parameter at the fitted total size: ``D`` interpolated in log-log."""
    pts = sorted({(r["total_params"], r["tokens"]) for r in rows})
    log_n = np.log([p[0] for p in pts])
    log_d = np.log([p[1] for p in pts])
    slope, icept = np.polyfit(log_n, log_d, 1)

    def d_at(n: float) -> float:
        return float(np.exp(icept + slope * math.log(n)))

    out = {"d_opt": d_at(fit["n_opt"]), "tokens_per_param": d_at(fit["n_opt"]) / fit["n_opt"]}
    if fit.get("n_opt_ci"):
        lo, hi = fit["n_opt_ci"]
        out["tokens_per_param_ci"] = sorted([d_at(lo) / lo, d_at(hi) / hi])
    return out


def fit_exponent(budgets: Sequence[float], n_opts: Sequence[float]) -> dict:
    """``N* ~ C^a`` across budgets (a straight line in log-log): ``a``, and ``b = 1 - a`` for ``D* ~ C^b``.

    Hoffmann et al.'s approach 2 found ``a = 0.49`` (:data:`CHINCHILLA`). Needs 2+ budgets; with 2 or 3 the
    exponent is a sketch, not a measurement.
    """
    c, n = _numbers("budgets", budgets), _numbers("n_opts", n_opts)
    if len(c) != len(n) or len(np.unique(c)) < 2:
        raise ValueError(f"budgets and n_opts must pair 2+ distinct budgets with their N*, got {len(c)} and {len(n)}")
    if (c <= 0).any() or (n <= 0).any():
        raise ValueError("budgets and n_opts must be positive")
    a, _ = np.polyfit(np.log(c), np.log(n), 1)
    return {"a": float(a), "b": float(1 - a)}


# ------------------------------------------------------------------------------------------------
# How good is C = 6 N D here?
# ------------------------------------------------------------------------------------------------

def flop_check(size: ModelSize | str, vocab_size: int | None = None, batch_size: int = BATCH_SIZE) -> dict:
    """``torch.utils.flop_counter`` on one training step (forward + backward) against ``6 N D``.

    ``6 N D``: 2 FLOPs per parameter per token forward (a multiply and an add), 4 backward (gradients of the
    inputs and of the weights), with ``N`` the non-embedding count. The counter counts every matrix multiply,
    so it also sees the output head (``6 d V`` per token) and attention's scores and weighted sums
    (``12 L T d`` per token at context ``T``), which ``6 N D`` leaves out; LayerNorms and softmax are not
    matrix multiplies and count 0 in both. Attention runs through PyTorch's plain-math kernel here: the
    counter does not see the fused CPU kernel. Returns ``counted``, ``six_nd``, ``ratio = counted / six_nd``
    (about 1 for an LLM, above 1 for these narrow models), ``backward_over_forward`` (about 2),
    ``accounted = 6N' + 6dV + 12LTd`` per step (``N'`` the block matrices alone) and ``unexplained``,
    ``counted / accounted - 1``.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    s = _size(size)
    vocab_size = checks.positive_int("vocab_size", vocab_size if vocab_size is not None else text_corpus().vocab_size)
    batch_size = checks.positive_int("batch_size", batch_size)
    model = TinyGPT(gpt_config(s, vocab_size))
    tokens = batch_size * BLOCK_SIZE
    g = torch.Generator().manual_seed(0)
    x = torch.randint(vocab_size, (batch_size, BLOCK_SIZE), generator=g)
    y = torch.randint(vocab_size, (batch_size, BLOCK_SIZE), generator=g)
    with sdpa_kernel([SDPBackend.MATH]):
        with FlopCounterMode(display=False) as fwd:
            model(x, y)
        with FlopCounterMode(display=False) as step:
            _, loss = model(x, y)
            loss.backward()
    n = parameter_counts(s, vocab_size)["non_embedding"]
    matrices = sum(p.numel() for name, p in model.named_parameters()
                   if p.ndim == 2 and not name.startswith(EMBEDDING_PREFIXES))
    counted, forward = int(step.get_total_flops()), int(fwd.get_total_flops())
    accounted = tokens * (6 * matrices + 6 * s.d_model * vocab_size + 12 * s.n_layers * BLOCK_SIZE * s.d_model)
    six_nd = 6 * n * tokens
    return {"size": s.name, "n_params": n, "tokens": tokens, "counted": counted, "six_nd": six_nd,
            "ratio": counted / six_nd, "backward_over_forward": (counted - forward) / forward,
            "accounted": accounted, "unexplained": counted / accounted - 1}
