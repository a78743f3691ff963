"""Healing a pruned language model: a little training, with the pruning masks held fixed.

One-shot pruning (:func:`labkit.llm.prune`) costs quality. Much of it comes back when the pruned model
trains for a short while, and that training must keep the zeros **exactly zero**, or the model is no
longer sparse. Here the rule is: after every optimizer step, multiply each pruned matrix by its mask again
(:func:`apply_masks`). Without it, one AdamW step moves *every* pruned weight: Adam divides the gradient by
its own running size, so even a tiny gradient moves a weight by about the learning rate.

Two objectives (:data:`OBJECTIVES`):

* ``"distill"``: the pruned model (the *student*) learns to predict what the dense model (the *teacher*)
  predicts, ``KL(teacher || student)`` over the next-token distributions (temperature 1), averaged over
  positions (:func:`distillation_loss`). Its ceiling is the dense model: it repairs the cut and teaches
  nothing new, so no domain adaptation hides in the result. Minitron (Muralidharan et al. 2024) recovers its
  pruned models this way; Sheared-LLaMA (Xia et al. 2024) continues next-token training instead.
* ``"next_token"``: the plain next-token cross-entropy on the training text (:func:`next_token_loss`). It
  also *adapts* the model to help text, so it can pass the dense model on the help-text evaluation. The
  fair comparison is therefore the dense model fine-tuned the same way (:func:`finetune_dense`, the control).

Only the pruned matrices train (every layer of :func:`labkit.llm.prunable_layers`, weights only): the
token embedding (tied to the LM head), the norms and any biases stay as they were. AdamW, a small learning
rate, no weight decay (the run is short, and decay would only shrink the kept weights).

The curve (:func:`heal_pruned` with ``evaluation``): at chosen steps, the perplexity on the evaluation windows with
its 95% bootstrap interval (:mod:`labkit.llm.stats`), the paired ratio to a baseline (the dense model's
window losses), the tokens seen and the training time so far. Training time is counted two ways:
``cpu_seconds`` (:func:`time.process_time`, CPU time of this process summed over its threads: the "CPU-minutes"
of the curve, because on a shared machine wall time also counts the time other programs held the cores, while
CPU time grows only a little with their load) and ``wall_seconds`` (:func:`time.perf_counter`); both exclude
evaluation. On a quiet machine
``cpu_seconds`` is about ``threads x wall_seconds``; the result records the thread count.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import checks
from labkit.llm import stats
from labkit.llm.evaluate import check_tokens, device_of, logits_of, window_losses
from labkit.llm.oneshot import measure_sparsity, prunable_layers
from labkit.llm.text import training_batches

#: Healing objectives :func:`heal_pruned` accepts.
OBJECTIVES = ("distill", "next_token")


def keep_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer name: bool tensor}``: where each prunable matrix is not zero (``True`` = kept weight)."""
    return {name: layer.weight.detach() != 0 for name, layer in prunable_layers(model).items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Set every pruned weight (``False`` in ``masks``) back to exactly zero, in place."""
    layers = prunable_layers(model)
    for name, keep in masks.items():
        layers[name].weight.mul_(keep)


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]`` (nats per token)."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` of the next-token distributions, averaged over positions (nats per token).

    ``sum_v p_teacher(v) * (log p_teacher(v) - log p_student(v))`` at every position but the last (the same
    positions :func:`next_token_loss` scores). Zero exactly when the two models predict the same.
    """
    log_student = torch.log_softmax(student_logits[:, :-1].float(), dim=-1).flatten(0, 1)
    log_teacher = torch.log_softmax(teacher_logits[:, :-1].float(), dim=-1).flatten(0, 1)
    # "batchmean" divides the summed KL by the number of rows: here, the number of positions
    return nn.functional.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


@torch.inference_mode()
def kl_to_teacher(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor, batch_size: int = 4) -> float:
    """Mean ``KL(teacher || student)`` per position over ``tokens`` ``(sequences, length)``: how far apart they are."""
    tokens = check_tokens("tokens", tokens, student)
    batch_size = checks.positive_int("batch_size", batch_size)
    _check_teacher(teacher, student)
    total, positions = 0.0, 0
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start:start + batch_size].to(device_of(student))
        loss = distillation_loss(logits_of(student, batch), logits_of(teacher, batch))
        n = batch.shape[0] * (batch.shape[1] - 1)
        total, positions = total + float(loss) * n, positions + n
    return total / positions


def _check_teacher(teacher: object, student: nn.Module) -> nn.Module:
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be the dense model (a torch.nn.Module), got {type(teacher).__name__}")
    if teacher is student:
        raise ValueError("teacher is the student itself: pass a separate dense model, e.g. keep the dense model "
                         "and prune a copy.deepcopy of it")
    vocab = [getattr(getattr(m, "config", None), "vocab_size", None) for m in (teacher, student)]
    if None not in vocab and vocab[0] != vocab[1]:
        raise ValueError(f"teacher has a vocabulary of {vocab[0]} tokens, the student {vocab[1]}: distillation "
                         "compares next-token distributions, so both must use the same tokenizer")
    return teacher


def _check_eval_at(eval_at: Sequence[int] | None, steps: int, evaluation: torch.Tensor | None) -> list[int]:
    if evaluation is None:
        if eval_at:
            raise ValueError("eval_at needs evaluation tokens: pass evaluation=text_splits(tokenizer)['evaluation']")
        return []
    if eval_at is None:
        return [0, steps]
    if isinstance(eval_at, (str, bytes)) or not isinstance(eval_at, Sequence) or not eval_at:
        raise TypeError(f"eval_at must be a list of steps such as [0, 50, {steps}], got {eval_at!r}")
    points = [checks.nonneg_int(f"eval_at[{i}]", s) for i, s in enumerate(eval_at)]
    if points != sorted(set(points)) or points[-1] > steps:
        raise ValueError(f"eval_at must be increasing steps in 0..{steps} (steps), got {list(eval_at)}")
    return points


def _subset(windows: int, count: int | None) -> list[int] | None:
    """``count`` evenly spaced window indices of ``windows`` (``None``: all of them)."""
    if count is None or count >= windows:
        return None
    return [(j * windows) // count for j in range(count)]


def heal_pruned(student: nn.Module, train_tokens: torch.Tensor, *, objective: str = "distill",
                teacher: nn.Module | None = None, steps: int = 100, batch_size: int = 4, lr: float = 2e-5,
                seed: int = 0, evaluation: torch.Tensor | None = None, eval_at: Sequence[int] | None = None,
                eval_windows: int | None = None, baseline_losses: Sequence[float] | torch.Tensor | None = None,
                on_step: Callable[[int, float], None] | None = None, progress: bool = True) -> dict:
    """Train the pruned ``student`` in place for ``steps`` AdamW steps, its zeros held exactly zero; returns the curve.

    ``train_tokens``: ``(sequences, length)`` token ids (:func:`labkit.llm.text.training_split`), drawn in
    seeded batches of ``batch_size`` (:func:`labkit.llm.text.training_batches`). ``objective``:
    ``"distill"`` (needs ``teacher``, the dense model) or ``"next_token"``. The masks are the student's zeros
    when the call starts (:func:`keep_masks`); after each step they are re-applied, then
    ``on_step(step, loss)`` is called (a test can check the zeros there).

    The curve: with ``evaluation`` tokens, the model is scored at the steps in ``eval_at`` (default: 0 and
    ``steps``). ``eval_windows``: how many evenly spaced evaluation windows to score at points other than the
    first and the last, which always use all (fewer windows save time; their interval is wider).
    ``baseline_losses`` (the dense model's :func:`labkit.llm.window_losses` on ``evaluation``) adds a paired
    ratio to every point.

    Returns ``{"objective", "steps", "batch_size", "length", "lr", "seed", "threads", "masked_weights",
    "block_sparsity", "train_losses", "cpu_seconds", "wall_seconds", "points"}``; each point holds
    ``step``, ``tokens_seen``, ``cpu_seconds``, ``wall_seconds``, ``windows`` (indices, or ``None`` for all),
    ``window_losses``, ``perplexity``, ``perplexity_ci``, ``eval_seconds`` and, with a baseline, ``ratio`` and
    ``ratio_ci``.
    """
    objective = checks.choice("objective", objective, OBJECTIVES)
    if objective == "distill":
        if teacher is None:
            raise ValueError("objective='distill' needs teacher=the dense model (the student learns its predictions); "
                             "or use objective='next_token'")
        _check_teacher(teacher, student)
    elif teacher is not None:
        raise ValueError("teacher is used only by objective='distill': drop teacher=..., or pass objective='distill'")
    return _train(student, train_tokens, objective=objective, teacher=teacher, masks=keep_masks(student),
                  steps=steps, batch_size=batch_size, lr=lr, seed=seed, evaluation=evaluation, eval_at=eval_at,
                  eval_windows=eval_windows, baseline_losses=baseline_losses, on_step=on_step, progress=progress)


def finetune_dense(model: nn.Module, train_tokens: torch.Tensor, *, steps: int = 100, batch_size: int = 4,
                   lr: float = 2e-5, seed: int = 0, evaluation: torch.Tensor | None = None,
                   eval_at: Sequence[int] | None = None, eval_windows: int | None = None,
                   baseline_losses: Sequence[float] | torch.Tensor | None = None,
                   on_step: Callable[[int, float], None] | None = None, progress: bool = True) -> dict:
    """The control: fine-tune the *dense* ``model`` in place exactly as :func:`heal_pruned` trains a pruned one with
    ``objective="next_token"`` (same matrices, optimizer, batches and curve), but with no masks.

    Plain next-token training on help text also adapts a model to help text; the dense model trained the
    same way shows how much of a healed model's gain is that adaptation. Returns :func:`heal_pruned`'s dict.
    """
    return _train(model, train_tokens, objective="next_token", teacher=None, masks=None, steps=steps,
                  batch_size=batch_size, lr=lr, seed=seed, evaluation=evaluation, eval_at=eval_at,
                  eval_windows=eval_windows, baseline_losses=baseline_losses, on_step=on_step, progress=progress)


def _train(model: nn.Module, train_tokens: torch.Tensor, *, objective: str, teacher: nn.Module | None,
           masks: dict[str, torch.Tensor] | None, steps: int, batch_size: int, lr: float, seed: int,
           evaluation: torch.Tensor | None, eval_at: Sequence[int] | None, eval_windows: int | None,
           baseline_losses: Sequence[float] | torch.Tensor | None,
           on_step: Callable[[int, float], None] | None, progress: bool) -> dict:
    """The loop behind :func:`heal_pruned` and :func:`finetune_dense` (``masks=None``: nothing held at zero)."""
    layers = prunable_layers(model)
    train_tokens = check_tokens("train_tokens", train_tokens, model)
    if train_tokens.shape[1] < 2:
        raise ValueError(f"train_tokens must hold at least 2 tokens per sequence (one to predict), "
                         f"got {train_tokens.shape[1]}")
    steps = checks.positive_int("steps", steps)
    batch_size = checks.positive_int("batch_size", batch_size)
    lr = checks.finite("lr", lr)
    if lr <= 0:
        raise ValueError(f"lr must be a positive learning rate such as 2e-5, got {lr:g}")
    seed = checks.nonneg_int("seed", seed)
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be a function on_step(step, loss), got {type(on_step).__name__}")
    if evaluation is not None:
        evaluation = check_tokens("evaluation", evaluation, model)
    points_at = _check_eval_at(eval_at, steps, evaluation)
    if eval_windows is not None:
        eval_windows = checks.positive_int("eval_windows", eval_windows)
        if eval_windows < 2:
            raise ValueError(f"eval_windows must be at least 2 (an interval resamples windows), got {eval_windows}")
    baseline = None
    if baseline_losses is not None:
        if evaluation is None:
            raise ValueError("baseline_losses needs evaluation tokens: they are the baseline's losses on those windows")
        baseline = torch.as_tensor(baseline_losses, dtype=torch.float64).flatten()
        if baseline.numel() != evaluation.shape[0]:
            raise ValueError(f"baseline_losses holds {baseline.numel()} losses, evaluation {evaluation.shape[0]} "
                             "windows: pass the baseline's window_losses on the same evaluation tokens")
    batches = training_batches(train_tokens, batch_size, seed)  # checks batch_size against the sequences
    clock = {"cpu": 0.0, "wall": 0.0}  # training time so far (evaluation excluded)

    def score(step: int) -> dict:
        """One point of the curve: the model scored now on the evaluation windows (or an evenly spaced subset)."""
        assert evaluation is not None  # score() is called only at eval_at points, which need evaluation
        start = time.perf_counter()
        subset = None if step in (points_at[0], points_at[-1]) else _subset(evaluation.shape[0], eval_windows)
        windows = evaluation if subset is None else evaluation[subset]
        losses = window_losses(model, windows, progress=False)
        own = stats.perplexity_ci(losses)
        point = {"step": step, "tokens_seen": step * batch_size * train_tokens.shape[1],
                 "cpu_seconds": clock["cpu"], "wall_seconds": clock["wall"], "windows": subset,
                 "window_losses": [round(float(x), 6) for x in losses], "perplexity": own["perplexity"],
                 "perplexity_ci": list(cast(tuple, own["ci"]))}
        if baseline is not None:
            ratio = stats.paired_ratio(losses, baseline if subset is None else baseline[subset])
            point.update(ratio=ratio["ratio"], ratio_ci=list(cast(tuple, ratio["ci"])))
        point["eval_seconds"] = time.perf_counter() - start
        return point

    # Only the pruned matrices learn; remember every flag so the model is handed back as it came.
    flags = {p: p.requires_grad for p in model.parameters()}
    training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    weights = [layer.weight for layer in layers.values()]
    for w in weights:
        w.requires_grad_(True)
    optimizer = torch.optim.AdamW(weights, lr=lr, weight_decay=0.0)
    teacher_training = teacher is not None and teacher.training
    if teacher is not None:
        teacher.eval()  # the teacher only predicts: eval mode (no dropout), no gradients
    points: list[dict] = []
    train_losses: list[float] = []
    try:
        model.eval()
        if points_at and points_at[0] == 0:
            points.append(score(0))
        bar = tqdm(range(1, steps + 1), desc=f"heal ({objective})", unit="step", disable=not progress, leave=False)
        for step in bar:
            cpu, wall = time.process_time(), time.perf_counter()
            model.train()
            batch = next(batches).to(device_of(model))
            logits = logits_of(model, batch)
            if teacher is None:
                loss = next_token_loss(logits, batch)
            else:
                with torch.no_grad():
                    teacher_logits = logits_of(teacher, batch)
                if teacher_logits.shape != logits.shape:
                    raise ValueError(f"teacher gives logits of shape {tuple(teacher_logits.shape)}, the student "
                                     f"{tuple(logits.shape)}: both must share one tokenizer")
                loss = distillation_loss(logits, teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks is not None:
                apply_masks(model, masks)  # the step moved the pruned weights too: put them back to exactly zero
            model.eval()
            clock["cpu"] += time.process_time() - cpu
            clock["wall"] += time.perf_counter() - wall
            train_losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{train_losses[-1]:.4f}")
            if on_step is not None:
                on_step(step, train_losses[-1])
            if step in points_at:
                points.append(score(step))
        bar.close()
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(training)
        if teacher is not None:
            teacher.train(teacher_training)
    return {"objective": objective, "steps": steps, "batch_size": batch_size, "length": train_tokens.shape[1],
            "lr": lr, "seed": seed, "threads": torch.get_num_threads(),
            "masked_weights": 0 if masks is None else int(sum(int((~keep).sum()) for keep in masks.values())),
            "block_sparsity": measure_sparsity(model)["block_sparsity"], "train_losses": train_losses,
            "cpu_seconds": clock["cpu"], "wall_seconds": clock["wall"], "points": points}
