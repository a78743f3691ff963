"""Notebook 00's checkers: None is 'not attempted', right answers pass, wrong ones raise their hint."""
import pytest
import torch

from labkit import data
from labkit.exercises import ExerciseError
from labkit.exercises import welcome as ex


def my_sparsity_of(t):
    return float((t == 0).sum()) / t.numel()


def test_unanswered(capsys):
    for check in (ex.check_sparsity_of, ex.check_zero_pixels, ex.check_kernels_without_gpu):
        assert check(None) is False
    assert capsys.readouterr().out.count("not attempted yet") == 3


def test_sparsity_of():
    assert ex.check_sparsity_of(my_sparsity_of)
    assert ex.check_sparsity_of(lambda t: (t == 0).float().mean())  # a 0-d tensor is fine too
    for wrong, hint in [(lambda t: 1 - my_sparsity_of(t), "density"),
                        (lambda t: float((t == 0).sum()), r"\*number\* of zeros"),
                        (lambda t: (t == 0).float(), "one number"), (lambda t: "half", "return a number"),
                        (lambda t: (t.abs() < 1).float().mean().item(), "expected"),
                        (lambda t: t.float().mean(-1), "one number"), (3, "expected a function")]:
        with pytest.raises(ExerciseError, match=hint):
            ex.check_sparsity_of(wrong)


def test_sparsity_of_reports_the_learners_own_error():
    def sparsity_of(t):
        return (t == 0).sum() / t.size  # a bug: size is a method

    with pytest.raises(ExerciseError, match="TypeError") as failure:
        ex.check_sparsity_of(sparsity_of)
    assert "labkit/exercises" not in "\n".join(failure.value._render_traceback_())


def test_zero_pixels():
    ds = data.digits(0)
    share = float((ds.train.x == 0).float().mean())
    assert 0.3 < share < 0.7  # the digits really are about half zeros
    assert ex.check_zero_pixels(share, ds) and ex.check_zero_pixels(torch.tensor(share), ds)
    with pytest.raises(ExerciseError, match="non-zero"):
        ex.check_zero_pixels(1 - share, ds)
    with pytest.raises(ExerciseError, match="Percent"):
        ex.check_zero_pixels(100 * share, ds)
    with pytest.raises(ExerciseError, match="not it"):
        ex.check_zero_pixels(share + 0.05, ds)
    with pytest.raises(ExerciseError, match="number"):
        ex.check_zero_pixels("half", ds)


def test_hints_do_not_give_the_code_away():
    with pytest.raises(ExerciseError) as failure:
        ex.check_sparsity_of(lambda t: (t.abs() < 1).float().mean().item())
    assert "(t == 0)" not in str(failure.value) and "numel()" not in str(failure.value)
    ds = data.digits(0)
    share = float((ds.train.x == 0).float().mean())
    for wrong in (1 - share, share + 0.05):
        with pytest.raises(ExerciseError) as failure:
            ex.check_zero_pixels(wrong, ds)
        assert "== 0)" not in str(failure.value) and f"{share:.3f}" not in str(failure.value)


def test_kernels_without_gpu():
    assert ex.check_kernels_without_gpu("b") and ex.check_kernels_without_gpu(" B ")
    with pytest.raises(ExerciseError, match="TRITON_INTERPRET"):
        ex.check_kernels_without_gpu("c")
    with pytest.raises(ExerciseError, match="one letter"):
        ex.check_kernels_without_gpu("e")
