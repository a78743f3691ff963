"""The pruning exercises' checkers: None is 'not attempted', right answers pass, wrong ones raise with a hint."""
import pytest
import torch

from labkit import prune
from labkit.exercises import pruning as ex


def test_unanswered_prints_and_returns_false(capsys):
    for check in (ex.check_magnitude_mask, ex.check_csr_breakeven, ex.check_masking_speedup,
                  ex.check_cubic_schedule, ex.check_nm_mask, ex.check_structured_weights):
        assert check(None) is False
    assert capsys.readouterr().out.count("not attempted yet") == 6


def test_right_answers_pass():
    assert ex.check_magnitude_mask(prune.magnitude_mask)
    assert ex.check_csr_breakeven(0.5)
    assert ex.check_masking_speedup(1.0)
    assert ex.check_cubic_schedule(lambda t, s, a, b: prune.cubic_sparsity(t, s, a, b))
    assert ex.check_nm_mask(lambda w: prune.nm_mask(w, 2, 4))
    assert ex.check_structured_weights(17024)


@pytest.mark.parametrize("check, wrong, hint", [
    (ex.check_magnitude_mask, lambda w, s: torch.ones_like(w, dtype=torch.bool), "exactly"),
    (ex.check_magnitude_mask, lambda w, s: prune.random_mask(w, s), "wrong weights"),
    (ex.check_magnitude_mask, lambda w, s: prune.magnitude_mask(w, s).flatten(), "shape"),
    (ex.check_magnitude_mask, 0.5, "expected a function"),
    (ex.check_csr_breakeven, 0.9, "4-byte column index"),
    (ex.check_csr_breakeven, 1.5, "fraction"),
    (ex.check_masking_speedup, 10.0, "dense matmul multiplies every entry"),
    (ex.check_cubic_schedule, lambda t, s, a, b: s * min(1.0, t / b), "expected"),
    (ex.check_nm_mask, lambda w: prune.magnitude_mask(w, 0.5), "exactly 2"),
    (ex.check_nm_mask, lambda w: torch.tensor([True, True, False, False]).repeat(w.numel() // 4).reshape(w.shape),
     "2 largest"),
    (ex.check_structured_weights, 50432, "dense count"),
    (ex.check_structured_weights, 25216, "both sides"),
    (ex.check_structured_weights, 1000, "64->128"),
    (ex.check_structured_weights, "17024", "int"),
])
def test_wrong_answers_raise_with_a_hint(check, wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check(wrong)
