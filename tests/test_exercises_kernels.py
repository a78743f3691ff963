"""Exercise checkers of notebook 03: right answers pass, wrong ones raise with a hint, None is reported."""
import pytest

from labkit.exercises import kernels as ex


def test_24_bytes(capsys):
    assert ex.check_24_bytes(None) is False
    assert "not attempted" in capsys.readouterr().out
    assert ex.check_24_bytes(4096 * 2048 * 2 + 4096 * 512)
    with pytest.raises(AssertionError, match="dense size"):
        ex.check_24_bytes(4096 * 4096 * 2)
    with pytest.raises(AssertionError, match="metadata"):
        ex.check_24_bytes(4096 * 2048 * 2)
    with pytest.raises(AssertionError, match="groups"):
        ex.check_24_bytes(123)
    with pytest.raises(AssertionError, match="number"):
        ex.check_24_bytes("lots")


def test_intensity(capsys):
    assert ex.check_intensity(None) is False
    right = 2 * 16 * 4096 * 4096 / (2 * (4096 * 4096 + 2 * 16 * 4096))
    assert ex.check_intensity(right)
    assert "FLOPs per byte" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="x \\(16 x 4096\\)"):
        ex.check_intensity(16.0)  # weight bytes only
    with pytest.raises(AssertionError, match="2 FLOPs"):
        ex.check_intensity(right / 2)
    with pytest.raises(AssertionError, match="Divide"):
        ex.check_intensity(100.0)


def test_format_choice(capsys):
    assert ex.check_format_choice(None) is False
    assert ex.check_format_choice("dense")
    for wrong, hint in (("csr", "95%"), ("bsr", "block"), ("2:4", "group of 4")):
        with pytest.raises(AssertionError, match=hint):
            ex.check_format_choice(wrong)
    with pytest.raises(AssertionError, match="one of"):
        ex.check_format_choice("coo")


def test_csr_breakeven():
    assert ex.check_csr_breakeven(None) is False
    assert ex.check_csr_breakeven(1 / 3)
    assert ex.check_csr_breakeven(0.333)
    with pytest.raises(AssertionError, match="index"):
        ex.check_csr_breakeven(0.5)
    with pytest.raises(AssertionError, match="Solve"):
        ex.check_csr_breakeven(0.2)
    with pytest.raises(AssertionError, match="fraction"):
        ex.check_csr_breakeven(33)
