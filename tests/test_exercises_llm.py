"""Notebook 06's self-checks: None is 'not attempted', right answers pass, wrong ones raise with a hint."""
import pytest

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
    assert ex.check_highest_sparsity(0.4, MEASURED)


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
    (ex.check_wanda_score, lambda w, x: w * x.norm(dim=0), "wrong scores"),
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


@pytest.mark.parametrize("answer, measured, hint", [
    (0.4, None, "pass your measurements"),
    (0.4, {0.0: 17.5, 0.3: 20.0, 0.5: 29.0}, "at least three"),
    (0.4, {0.0: 17.5, 0.3: 17.0, 0.4: 23.9, 0.5: 29.3}, "fresh"),
    (0.4, {0.0: 17.5, 0.5: 29.3, 0.6: 68.0, 0.7: 357.0}, "smaller ones"),
    (0.4, {0.0: 17.5, 0.1: 18.0, 0.2: 19.0, 0.3: 20.1}, "larger ones"),
    (0.5, MEASURED, "largest sparsity"),
    (True, MEASURED, "largest sparsity"),
])
def test_experiment_checks_the_measurements(answer, measured, hint):
    with pytest.raises(AssertionError, match=hint):
        ex.check_highest_sparsity(answer, measured)
