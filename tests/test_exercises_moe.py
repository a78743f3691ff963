"""Checkers of notebook 04's exercises: a right answer passes, a wrong one raises its hint, None is 'not attempted'."""
import pytest
import torch

from labkit.exercises import moe as ex


def right_top_k(logits, k):
    probs = logits.softmax(-1)
    w, e = probs.topk(k, -1)
    if k > 1:
        w = w / w.sum(-1, keepdim=True)
    return w, e


def test_none_is_not_attempted(capsys):
    for check in (ex.check_top_k, ex.check_capacity, ex.check_collapse, ex.check_active_parameters):
        assert check(None) is False
    assert capsys.readouterr().out.count("not attempted yet") == 4


def test_top_k():
    assert ex.check_top_k(right_top_k)
    with pytest.raises(AssertionError, match="renormalised"):
        ex.check_top_k(lambda l, k: l.softmax(-1).topk(k, -1))
    with pytest.raises(AssertionError, match="raw softmax"):
        ex.check_top_k(lambda l, k: (torch.ones(l.shape[0], k) / k, l.topk(k, -1).indices))
    with pytest.raises(AssertionError, match="wrong experts"):
        ex.check_top_k(lambda l, k: right_top_k(-l, k))
    with pytest.raises(AssertionError, match="tuple"):
        ex.check_top_k(lambda l, k: l)
    with pytest.raises(AssertionError, match="expected a function"):
        ex.check_top_k(3)


def test_capacity():
    assert ex.check_capacity((3, 4))
    with pytest.raises(AssertionError, match="ceil"):
        ex.check_capacity((4, 3))
    with pytest.raises(AssertionError, match="beyond the capacity"):
        ex.check_capacity((3, 5))
    with pytest.raises(AssertionError, match="pair"):
        ex.check_capacity(3)


def test_collapse():
    assert ex.check_collapse("b")
    assert ex.check_collapse(" B ")
    with pytest.raises(AssertionError, match="not quite"):
        ex.check_collapse("a")
    with pytest.raises(AssertionError, match="one letter"):
        ex.check_collapse("e")


def test_active_parameters():
    d, ff = 4096, 14336
    assert ex.check_active_parameters(2 * 3 * d * ff + d * 8)
    with pytest.raises(AssertionError, match="total"):
        ex.check_active_parameters(8 * 3 * d * ff + d * 8)
    with pytest.raises(AssertionError, match="router"):
        ex.check_active_parameters(2 * 3 * d * ff)
    with pytest.raises(AssertionError, match="three"):
        ex.check_active_parameters(2 * 2 * d * ff + d * 8)
    with pytest.raises(AssertionError, match="number"):
        ex.check_active_parameters("lots")
