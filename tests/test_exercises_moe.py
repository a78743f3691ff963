"""Checkers of notebook 04's exercises: a right answer passes, a wrong one raises its hint, None is 'not attempted'."""
import pytest
import torch

from labkit.exercises import ExerciseError
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
        ex.check_top_k(lambda z, k: z.softmax(-1).topk(k, -1))
    with pytest.raises(AssertionError, match="Softmax over \\*all\\* experts"):
        ex.check_top_k(lambda z, k: (torch.ones(z.shape[0], k) / k, z.topk(k, -1).indices))
    with pytest.raises(AssertionError, match="raw softmax"):  # renormalising at k=1 too: the gate is always 1
        ex.check_top_k(lambda z, k: (z.softmax(-1).topk(k, -1).values / z.softmax(-1).topk(k, -1).values.sum(-1, True),
                                     z.topk(k, -1).indices))
    with pytest.raises(AssertionError, match="wrong experts"):
        ex.check_top_k(lambda z, k: right_top_k(-z, k))
    with pytest.raises(AssertionError, match="tuple"):
        ex.check_top_k(lambda z, k: z)
    with pytest.raises(AssertionError, match="expected a function"):
        ex.check_top_k(3)


def test_forgetting_the_softmax_gets_the_softmax_hint():
    for no_softmax in (lambda z, k: z.topk(k, -1),  # raw logits as gates
                       lambda z, k: (z.topk(k, -1).values / z.topk(k, -1).values.sum(-1, keepdim=True),
                                     z.topk(k, -1).indices)):  # raw logits, renormalised
        with pytest.raises(ExerciseError, match="softmax") as failure:
            ex.check_top_k(no_softmax)
        assert "renormalis" not in str(failure.value)


def test_the_labs_own_router_is_refused_and_hints_come_alone():
    from labkit.moe.layers import top_k_route

    with pytest.raises(ExerciseError, match="lab's own function labkit.moe"):
        ex.check_top_k(top_k_route)
    with pytest.raises(ExerciseError) as failure:
        ex.check_collapse("a")
    shown = failure.value._render_traceback_()
    assert shown[0].endswith("not quite. Look at the load plot without the balancing loss: which experts get better, "
                             "and why do they keep winning?") and len(shown) == 1


def test_capacity_choice_from_the_committed_grid():
    from labkit.moe.routing_grid import load_routing_grid

    grid = load_routing_grid()
    p = grid[(16, 2, 0.01)]
    slots = p.tokens * p.top_k
    under = [cf for cf in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0) if p.dropped[f"{cf:g}"] / slots < 0.01]
    assert ex.check_capacity_choice(None, grid=grid) is False
    assert ex.check_capacity_choice(min(under), grid=grid)
    with pytest.raises(ExerciseError, match="Go higher"):
        ex.check_capacity_choice(1.0, grid=grid)
    with pytest.raises(ExerciseError, match="dropless"):
        ex.check_capacity_choice("dropless", grid=grid)
    with pytest.raises(ExerciseError, match="one of"):
        ex.check_capacity_choice(2.2, grid=grid)
    # another configuration has another answer
    q = grid[(8, 2, 0.01)]
    best = min(cf for cf in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0) if q.dropped[f"{cf:g}"] / (q.tokens * 2) < 0.01)
    assert ex.check_capacity_choice(best, experts=8, top_k=2, grid=grid)
    if best < 3.0:
        with pytest.raises(ExerciseError, match="smaller factor"):
            ex.check_capacity_choice(3.0, experts=8, top_k=2, grid=grid)


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
