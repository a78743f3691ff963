"""Self-checks for notebook 06 (pruning a language model).

Each ``check_*`` prints "not attempted yet" while the answer is ``None``, raises ``AssertionError``
with a hint when it is wrong, and returns ``True`` when it is right.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from labkit.exercises import ExerciseError, call, check_callable, expect, passed, unanswered

# SmolLM2-135M's shapes (30 blocks, width 576, FFN 1536, 3 key-value heads of 64, vocabulary 49,152),
# so the checks below need no model.
WIDTH, FFN, KV_WIDTH, BLOCKS, VOCAB = 576, 1536, 3 * 64, 30, 49_152
BLOCK_PARAMS = BLOCKS * (2 * WIDTH * WIDTH + 2 * WIDTH * KV_WIDTH + 3 * WIDTH * FFN)  # q, o; k, v; gate, up, down
HEAD_PARAMS = VOCAB * WIDTH  # the tied embedding / LM head
NORM_PARAMS = (2 * BLOCKS + 1) * WIDTH  # RMSNorm gains
TOTAL_PARAMS = BLOCK_PARAMS + HEAD_PARAMS + NORM_PARAMS  # 134,515,008


def _wanda_reference(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return weight.abs() * x.pow(2).sum(dim=0).sqrt()


def check_wanda_score(answer) -> bool:
    """Exercise 6.1: ``answer(weight, x)`` returns Wanda's score ``|W_ij| * ||X_j||_2`` for every weight.

    ``weight`` is ``(out, in)``; ``x`` is the layer's calibration input, ``(tokens, in)``.
    """
    name = "Exercise 6.1 (Wanda's score)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(6)
    # a square layer, so scaling the wrong axis gives the right shape but the wrong numbers
    for out_f, in_f in ((8, 8), (4, 12), (6, 16)):
        weight = torch.randn(out_f, in_f, generator=g)
        x = torch.randn(32, in_f, generator=g)
        x[:, 1] *= 30.0  # one outlier feature, as in the real model
        got = call(fn, weight.clone(), x.clone(), exercise=name)
        expect(isinstance(got, torch.Tensor), f"{name}: return a torch.Tensor of scores, got {type(got).__name__}")
        expect(tuple(got.shape) == (out_f, in_f), f"{name}: the scores must have the weight's shape {(out_f, in_f)}, "
                                                  f"got {tuple(got.shape)}: one score per weight. Reconsider how the "
                                                  "input-feature norms (one per input feature) meet |W|.")
        want = _wanda_reference(weight, x)
        squared = weight.abs() * x.pow(2).sum(dim=0)
        expect(not torch.allclose(got, squared, rtol=1e-4), f"{name}: that is |W| times the *squared* norm. "
                                                            "Reconsider what the L2 norm of a vector is.")
        by_rows = out_f == in_f and torch.allclose(got, weight.abs() * x.norm(dim=0)[:, None], rtol=1e-4)
        expect(not by_rows, f"{name}: the norms scale the rows. Hint: feature j meets column j of W "
                            "(y = x @ W.T), so the norm vector must broadcast along the last axis.")
        expect(not torch.allclose(got, weight.abs()), f"{name}: that is plain magnitude |W|. Hint: multiply by the "
                                                     "norm of each input feature over the calibration tokens.")
        expect(not bool((got < 0).any()),
               f"{name}: some of your scores are negative. Reconsider the weight's factor: a score says how much a "
               "weight matters, whatever its sign.")
        expect(torch.allclose(got, want, rtol=1e-4, atol=1e-6),
               f"{name}: wrong scores for a {out_f}x{in_f} layer. Reconsider each factor of the formula in turn: "
               "the weight's size, and the norm of input feature j over the calibration tokens (which axis of x "
               "holds the tokens?).")
    return passed(name, "Scores scale every weight by how loud its input feature is: an outlier feature protects "
                        "its small weights, which magnitude pruning would have removed.")


def _number(answer: object, name: str, example: str) -> bool:
    """False while unanswered; raises with a hint unless ``answer`` is a plain number; True otherwise."""
    if unanswered(answer, name):
        return False
    expect(isinstance(answer, (int, float)) and not isinstance(answer, bool),
           f"{name}: answer with {example}, got {type(answer).__name__}")
    return True


def check_model_sparsity(answer) -> bool:
    """Exercise 6.2: the share of *all* SmolLM2-135M parameters removed when 50% of the block matrices are."""
    name = "Exercise 6.2 (whole-model sparsity)"
    if not _number(answer, name, "a fraction such as 0.25"):
        return False
    want = 0.5 * BLOCK_PARAMS / TOTAL_PARAMS
    expect(0.0 <= answer < 1.0, f"{name}: a sparsity is a fraction in [0, 1), got {answer}")
    expect(abs(answer - 0.5) > 0.01, f"{name}: 50% is the share of the block matrices, not of the model. Hint: "
                                     "the tied embedding / LM head (49,152 x 576) is not pruned.")
    expect(abs(answer - want) <= 0.005, f"{name}: {answer:.3f} is not it. Reconsider the two counts section 1 "
                                        "printed: how many parameters are removed, and out of how many in all (the "
                                        "28.3M-parameter embedding / LM head and the norms stay)?")
    return passed(name, f"{100 * want:.1f}%: a fifth of the model is the tied embedding / LM head, which stays "
                        "dense, so '50% sparse' blocks make a 39.5% sparse model. Papers report the first number.")


def check_decode_cap(answer) -> bool:
    """Exercise 6.3: the largest decode speed-up pruning the blocks can give, if decode time is weight reading."""
    name = "Exercise 6.3 (what caps the decode speed-up?)"
    if not _number(answer, name, "a speed-up factor such as 2.0"):
        return False
    want = (BLOCK_PARAMS + HEAD_PARAMS) / HEAD_PARAMS
    expect(answer > 1.0, f"{name}: a speed-up is a factor above 1, got {answer}")
    expect(abs(answer - want) / want <= 0.05,
           f"{name}: {answer:g}x is not it. Reconsider what one token still has to read when the block matrices "
           "cost nothing, and compare it with what it reads now (Amdahl's law: the part that does not speed up "
           "sets the limit).")
    return passed(name, f"{want:.2f}x at most, even at 100% sparsity of the blocks: the LM head is read for every "
                        "token. Real speed-ups are far smaller: sparse formats add index bytes and slower kernels.")


#: Exercise 6.4: how closely a repeated measurement must agree with yours. The same model, tokens and machine
#: repeat a perplexity to float rounding (far inside 0.001%); a number typed from a printout (one or two decimals),
#: from the sweep file of another machine, or from a model pruned twice over, is off by more.
REPEAT_TOLERANCE = 1e-5


def wanda_perplexity(model, data: Mapping, sparsity: float) -> float:
    """Exercise 6.4's measurement, as the solution makes it: a fresh copy of ``model`` pruned with Wanda at
    ``sparsity`` on ``data["calibration"]``, then its perplexity on ``data["evaluation"]``. ``model`` is untouched."""
    import copy

    from labkit import llm

    trial = copy.deepcopy(model)  # about 0.5 GB for SmolLM2, freed when this returns
    llm.prune(trial, "wanda", "unstructured", sparsity, data["calibration"])
    return llm.perplexity(trial, data["evaluation"], progress=False)


def check_highest_sparsity(answer, measured: Mapping[float, float] | None = None, model=None,
                           data: Mapping | None = None) -> bool:
    """Exercise 6.4 (an experiment): the highest sparsity you measured that keeps Wanda within 1.5x dense.

    ``measured`` maps each sparsity you tried to the perplexity you measured, with ``0.0`` (dense) included;
    ``model`` is the dense model and ``data`` the splits of :func:`labkit.llm.text_splits` you measured with.
    The answer is checked against your measurements, and your measurements against the model: the checker
    repeats the two that decide the answer (:func:`wanda_perplexity`, 10-30 s each on a laptop), so numbers
    typed in without running the experiment do not pass.
    """
    from torch import nn

    name = "Exercise 6.4 (how far can Wanda go?)"
    if unanswered(answer, name):
        return False
    if not isinstance(measured, Mapping) or 0.0 not in measured:
        raise ExerciseError(f"{name}: pass your measurements too: check_highest_sparsity(answer, measured, model, "
                            "data) with measured = {0.0: dense perplexity, 0.3: ..., ...}")
    if not (isinstance(model, nn.Module) and isinstance(data, Mapping) and {"calibration", "evaluation"} <= set(data)):
        raise ExerciseError(f"{name}: pass the dense model and the data you measured with too: "
                            "check_highest_sparsity(answer, measured, model, data), with data from llm.text_splits; "
                            "the checker repeats two of your measurements")
    for s, p in measured.items():
        expect(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1,
               f"{name}: the keys of measured are sparsities, fractions in [0, 1); got {s!r}")
        expect(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 1,
               f"{name}: measured[{s!r}] must be a perplexity (a number of at least 1), got {p!r}")
    pruned = {s: p for s, p in measured.items() if s > 0}
    expect(len(pruned) >= 3, f"{name}: measure at least three sparsities (you have {len(pruned)}), so the "
                             "1.5x line falls between two of them.")
    dense = measured[0.0]
    expect(all(p > dense for p in pruned.values()),
           f"{name}: a pruned model measured *better* than dense ({dense:.2f}): did every run start from a fresh "
           "copy of the dense model (copy.deepcopy) and use the same evaluation tokens?")
    within = [s for s, p in pruned.items() if p <= 1.5 * dense]
    expect(bool(within), f"{name}: none of your sparsities stays within 1.5x dense ({1.5 * dense:.2f}): add "
                         "smaller ones, such as 0.2 or 0.3.")
    want = max(within)
    beyond = [s for s in pruned if s > want]
    expect(bool(beyond), f"{name}: every sparsity you tried up to the largest stays within 1.5x dense: add larger "
                         "ones, so you know where it stops.")
    expect(isinstance(answer, (int, float)) and not isinstance(answer, bool) and abs(answer - want) < 1e-9,
           f"{name}: {answer!r} is not what your measurements say. Reconsider the rule: the *largest* sparsity "
           f"whose perplexity is at most 1.5x dense ({1.5 * dense:.2f}), among the ones you measured.")
    deciding = [want, min(beyond)]  # the last one within the line and the first one past it
    print(f"{name}: repeating your measurements at {' and '.join(f'{100 * s:g}%' for s in deciding)} on fresh "
          "copies of the model (10-30 s each on a laptop) ...")
    for s in deciding:
        again = wanda_perplexity(model, data, s)
        expect(abs(measured[s] / again - 1) <= REPEAT_TOLERANCE,
               f"{name}: your measured[{s:g}] = {measured[s]!r} is not what this machine measures for a fresh copy "
               f"of the model pruned with Wanda at {100 * s:g}%. Put in the numbers your own runs return, not typed "
               "ones: prune a fresh copy (copy.deepcopy(model)) with llm.prune(copy, 'wanda', 'unstructured', s, "
               "data['calibration']) and measure llm.perplexity(copy, data['evaluation']).")
    return passed(name, f"{100 * want:g}% of the block matrices, one-shot, without any retraining; your measurements "
                        f"at {' and '.join(f'{100 * s:g}%' for s in deciding)} repeat exactly. Compare SparseGPT "
                        "and 2:4 in the explorer of section 9.")
