"""Notebook 06's self-checks: None is 'not attempted', right answers pass, wrong ones raise with a hint."""
import copy

import pytest
import torch

from labkit import llm
from labkit.exercises import llm as ex


def my_wanda(weight, x):
    return weight.abs() * x.norm(dim=0)


MEASURED = {0.0: 17.5, 0.3: 20.1, 0.4: 23.9, 0.5: 29.3, 0.6: 68.0}


def test_model_constants_match_smollm2():
    assert ex.BLOCK_PARAMS == 106_168_320 and ex.HEAD_PARAMS == 28_311_552 and ex.TOTAL_PARAMS == 134_515_008


def test_unanswered_prints_and_returns_false(capsys):
    for check in (ex.check_wanda_score, ex.check_model_sparsity, ex.check_decode_cap, ex.check_highest_sparsity):
        assert check(None) is False
    assert capsys.readouterr().out.count("not attempted yet") == 4


def test_right_answers_pass():
    assert ex.check_wanda_score(my_wanda)
    assert ex.check_wanda_score(lambda w, x: w.abs() * x.pow(2).sum(0).sqrt().unsqueeze(0))
    assert ex.check_model_sparsity(0.3946)
    assert ex.check_decode_cap(4.75)


def test_the_labs_own_function_is_refused():
    from labkit.llm import oneshot

    with pytest.raises(AssertionError, match="lab's own function"):
        ex.check_wanda_score(oneshot.row_mask)


@pytest.mark.parametrize("check, wrong, hint", [
    (ex.check_wanda_score, lambda w, x: w.abs(), "plain magnitude"),
    (ex.check_wanda_score, lambda w, x: w.abs() * x.pow(2).sum(0), "squared"),
    (ex.check_wanda_score, lambda w, x: w.abs() * x.norm(dim=0)[:, None] if w.shape[0] == w.shape[1]
     else w.abs() * x.norm(dim=0), "scale the rows"),
    (ex.check_wanda_score, lambda w, x: (w.abs() * x.norm(dim=0)).flatten(), "shape"),
    (ex.check_wanda_score, lambda w, x: w * x.norm(dim=0), "negative"),
    (ex.check_wanda_score, lambda w, x: w.abs() * x.norm(dim=0) + 1, "wrong scores"),
    (ex.check_wanda_score, lambda w, x: [1.0], "torch.Tensor"),
    (ex.check_wanda_score, lambda w, x: w.abs() * x.norm(dim=1), "your function raised RuntimeError"),
    (ex.check_wanda_score, 3, "expected a function"),
    (ex.check_model_sparsity, 0.5, "not of the model"),
    (ex.check_model_sparsity, 0.42, "28.3M"),
    (ex.check_model_sparsity, "0.39", "fraction"),
    (ex.check_decode_cap, 2.0, "Amdahl"),
    (ex.check_decode_cap, 0.5, "above 1"),
])
def test_wrong_answers_raise_with_a_hint(check, wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check(wrong)


def test_wanda_hints_never_give_the_code_away():
    wrong = [lambda w, x: w.abs(), lambda w, x: w.abs() * x.pow(2).sum(0), lambda w, x: w * x.norm(dim=0),
             lambda w, x: w.abs() * x.norm(dim=0) + 1, lambda w, x: (w.abs() * x.norm(dim=0)).flatten(),
             lambda w, x: w.abs() * x.norm(dim=0)[:, None] if w.shape[0] == w.shape[1] else w.abs() * x.norm(dim=0)]
    for fn in wrong:
        with pytest.raises(AssertionError) as failure:
            ex.check_wanda_score(fn)
        hint = str(failure.value)
        assert not any(code in hint for code in ("norm(dim=0)", "abs() *", "pow(2)", "sqrt(", "x.norm")), hint


def test_count_hints_do_not_state_the_answer():
    for check, wrong, right in [(ex.check_model_sparsity, 0.42, 0.5 * ex.BLOCK_PARAMS / ex.TOTAL_PARAMS),
                                (ex.check_decode_cap, 2.0, (ex.BLOCK_PARAMS + ex.HEAD_PARAMS) / ex.HEAD_PARAMS)]:
        with pytest.raises(AssertionError) as failure:
            check(wrong)
        hint = str(failure.value)
        assert f"{right:.3g}" not in hint and f"{right:.2f}" not in hint and "106.2M" not in hint, hint


# --- exercise 6.4: the experiment, checked against the learner's own measurements -----------------------------

def _sequences(generator, n):
    """Token sequences that count up in steps of 1-3: a pattern a tiny model learns in a few seconds."""
    start = torch.randint(0, 96, (n, 1), generator=generator)
    step = torch.randint(1, 4, (n, 1), generator=generator)
    return (start + step * torch.arange(32)) % 96


@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny Llama trained briefly, so that pruning it more costs more perplexity (a random one does not)."""
    g = torch.Generator().manual_seed(1)
    model = llm.tiny_llama(seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        x = _sequences(g, 16)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    data = {"calibration": _sequences(g, 8), "evaluation": _sequences(g, 8)}
    return model.eval(), data


@pytest.fixture(scope="module")
def own_measurements(trained_tiny):
    """The learner's experiment, written as the notebook's solution does it."""
    model, data = trained_tiny
    measured = {0.0: llm.perplexity(model, data["evaluation"], progress=False)}
    for s in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        trial = copy.deepcopy(model)
        llm.prune(trial, "wanda", "unstructured", s, data["calibration"])
        measured[s] = llm.perplexity(trial, data["evaluation"], progress=False)
    within = [s for s, p in measured.items() if s > 0 and p <= 1.5 * measured[0.0]]
    assert within and max(within) < 0.7, f"the 1.5x line must fall inside the grid for this test: {measured}"
    return measured, max(within)


def test_experiment_passes_with_the_learners_own_measurements(trained_tiny, own_measurements, capsys):
    model, data = trained_tiny
    measured, highest = own_measurements
    before = [p.clone() for p in model.parameters()]
    assert ex.check_highest_sparsity(highest, measured, model, data)
    assert "repeating your measurements" in capsys.readouterr().out
    after = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), "the checker must not prune the model"


def test_experiment_fails_with_typed_in_numbers(trained_tiny, own_measurements):
    model, data = trained_tiny
    measured, highest = own_measurements
    # The sweep's numbers (another model, another machine), typed in: the answer they imply is refused.
    with pytest.raises(AssertionError, match="not what this machine measures"):
        ex.check_highest_sparsity(0.4, MEASURED, model, data)
    # The learner's own numbers as a printout shows them (two decimals), or 0.1% off: refused too.
    for typed in ({s: round(p, 2) for s, p in measured.items()}, {s: p * 1.001 for s, p in measured.items()}):
        with pytest.raises(AssertionError, match="not what this machine measures"):
            ex.check_highest_sparsity(highest, typed, model, data)


@pytest.mark.parametrize("answer, measured, hint", [
    (0.4, None, "pass your measurements"),
    (0.4, {0.0: 17.5, 0.3: 20.0, 0.5: 29.0}, "at least three"),
    (0.4, {0.0: 17.5, 0.3: 17.0, 0.4: 23.9, 0.5: 29.3}, "fresh"),
    (0.4, {0.0: 17.5, 0.5: 29.3, 0.6: 68.0, 0.7: 357.0}, "smaller ones"),
    (0.4, {0.0: 17.5, 0.1: 18.0, 0.2: 19.0, 0.3: 20.1}, "larger ones"),
    (0.4, {0.0: 17.5, 0.1: 30.0, 0.2: 19.0, 0.3: 20.1}, "larger ones"),  # the only one past the line is below
    (0.5, MEASURED, r"\*largest\* sparsity"),
    (True, MEASURED, r"\*largest\* sparsity"),
    (0.4, {0.0: 17.5, 0.3: 20.1, 1.4: 23.9, 0.5: 29.3}, "fractions"),
    (0.4, {0.0: 17.5, 0.3: "20.1", 0.4: 23.9, 0.5: 29.3}, "perplexity"),
])
def test_experiment_checks_the_measurements(trained_tiny, answer, measured, hint):
    model, data = trained_tiny
    with pytest.raises(AssertionError, match=hint):
        ex.check_highest_sparsity(answer, measured, model, data)


def test_experiment_needs_the_model_and_data():
    with pytest.raises(AssertionError, match="dense model and the data"):
        ex.check_highest_sparsity(0.4, MEASURED)
    with pytest.raises(AssertionError, match="dense model and the data"):
        ex.check_highest_sparsity(0.4, MEASURED, torch.nn.Linear(2, 2), {"evaluation": None})
