"""Self-checks for the notebooks' exercises, one module per notebook topic.

The pattern every exercise follows, so committed notebooks still run top to bottom:

* the learner's cell starts with ``answer = None`` (or a function that returns ``None``);
* the check cell calls a checker here. While the answer is ``None`` it prints that the exercise
  is not attempted yet and returns ``False``. A wrong answer raises ``AssertionError`` with a hint;
  a right one prints a short confirmation and returns ``True``;
* the solution sits in a collapsed ``<details>`` block below, for learners who want to peek.
"""
from __future__ import annotations

from collections.abc import Callable


def unanswered(answer: object, exercise: str) -> bool:
    """True (and a friendly note) while ``answer`` is still ``None``."""
    if answer is None:
        print(f"{exercise}: not attempted yet. Replace None with your answer and run the cell again.")
        return True
    return False


def expect(condition: bool, hint: str) -> None:
    """Raise ``AssertionError(hint)`` unless ``condition`` holds: the hint is what the learner sees."""
    if not condition:
        raise AssertionError(hint)


def passed(exercise: str, detail: str = "") -> bool:
    """Print the confirmation for a correct answer and return True."""
    print(f"{exercise}: correct!" + (f" {detail}" if detail else ""))
    return True


def check_callable(answer: object, exercise: str) -> Callable | None:
    """For exercises that ask for a function: ``None`` while unanswered, else the callable."""
    if unanswered(answer, exercise):
        return None
    expect(callable(answer), f"{exercise}: expected a function, got {type(answer).__name__}")
    return answer  # type: ignore[return-value]
