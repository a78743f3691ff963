"""Self-checks for notebook 00 (welcome): sparsity of a tensor, zeros in the digits, kernels without a GPU.

See :mod:`labkit.exercises` for the pattern (``None`` = not attempted, a hint when wrong, ``True`` when right).
"""
from __future__ import annotations

import math

import torch

from labkit.exercises import ExerciseError, call, check_callable, check_choice, expect, passed, unanswered

#: Exercise 0.3's choices: how do the lab's Triton kernels run on a machine without an NVIDIA GPU?
KERNEL_CHOICES = {
    "a": "They do not run: every kernel cell is skipped without a GPU.",
    "b": "Triton's interpreter (TRITON_INTERPRET=1, set by `import labkit`) simulates the same kernel code on the "
         "CPU with numpy; where Triton is not installed at all, PyTorch reference functions give the same answers.",
    "c": "Triton compiles them to fast CPU machine code, so they run as fast as on a GPU.",
    "d": "They are sent to a GPU in the cloud.",
}


def check_sparsity_of(answer: object) -> bool:
    """Exercise 0.1: ``answer(tensor)`` returns the share of entries that are exactly zero, as a float in [0, 1]."""
    name = "Exercise 0.1 (sparsity of a tensor)"
    fn = check_callable(answer, name)
    if fn is None:
        return False
    g = torch.Generator().manual_seed(0)
    cases = [torch.zeros(3, 4), torch.ones(5), torch.tensor([0.0, 1.5, 0.0, -2.0]),
             torch.randn(16, 32, generator=g).relu(), torch.tensor([[0, 0, 0], [0, 7, 0]], dtype=torch.int64)]
    for t in cases:
        got = call(fn, t.clone(), exercise=name)
        if isinstance(got, torch.Tensor):
            expect(got.numel() == 1, f"{name}: return one number, got a tensor of shape {tuple(got.shape)}")
            got = got.item()
        expect(isinstance(got, (int, float)) and not isinstance(got, bool),
               f"{name}: return a number (a float such as 0.5), got {type(got).__name__}")
        want = float((t == 0).sum()) / t.numel()
        nonzero_share = 1 - want
        expect(not (math.isclose(got, nonzero_share, abs_tol=1e-6) and not math.isclose(want, nonzero_share)),
               f"{name}: that is the share of *non*-zero entries (the density). Sparsity counts the zeros.")
        expect(not (math.isclose(got, float((t == 0).sum()), abs_tol=1e-6) and t.numel() > 1 and want > 0),
               f"{name}: that is the *number* of zeros. Divide by the number of entries, t.numel().")
        expect(math.isclose(got, want, abs_tol=1e-6),
               f"{name}: for a tensor of shape {tuple(t.shape)} with {int((t == 0).sum())} zeros expected {want:.4g}, "
               f"got {got:.4g}. Reconsider which entries you count (exactly zero) and what you divide by; your "
               "function must work for integer tensors too.")
    return passed(name, "Sparsity = zeros / entries; density = 1 - sparsity. Every notebook uses both words.")


def check_zero_pixels(answer: object, digits=None) -> bool:
    """Exercise 0.2: the share of the training images' pixels that are exactly zero (``digits``: data.digits(0))."""
    from labkit import data

    name = "Exercise 0.2 (how sparse are the inputs?)"
    if unanswered(answer, name):
        return False
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        raise ExerciseError(f"{name}: answer with a number between 0 and 1, e.g. 0.25")
    x = (data.digits(0) if digits is None else digits).train.x
    want = float((x == 0).float().mean())
    expect(0.0 <= answer <= 1.0, f"{name}: a share is a fraction in [0, 1], got {answer}. (Percent? Divide by 100.)")
    expect(not math.isclose(answer, 1 - want, abs_tol=0.005),
           f"{name}: that is the share of non-zero pixels. Sparsity counts the zeros.")
    expect(math.isclose(answer, want, abs_tol=0.005),
           f"{name}: {answer:.3f} is not it. Reconsider what you averaged over: every pixel of every image of the "
           "*training* split, data.digits(seed=0).train.x, counting only pixels exactly equal to zero.")
    return passed(name, f"{100 * want:.1f}% of the input pixels are zero: sparsity is not only in weights. "
                        "A layer could skip those inputs, if a kernel exploited it.")


def check_kernels_without_gpu(answer: object) -> bool:
    """Exercise 0.3: which of :data:`KERNEL_CHOICES` says how the lab's kernels run without an NVIDIA GPU?"""
    return check_choice(answer, "Exercise 0.3 (kernels without a GPU)", KERNEL_CHOICES, "b",
                        "Re-read section 1: what does `TRITON_INTERPRET=1` do, and what does the lab use where "
                        "Triton is not installed at all?",
                        "Same code, simulated: slow, but every kernel can be read, run and tested on a laptop. "
                        "Its speed is only known on a GPU.")
