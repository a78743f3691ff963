"""Self-checks for the notebooks' exercises, one module per notebook topic.

The pattern every exercise follows, so committed notebooks still run top to bottom:

* the learner's cell starts with ``answer = None`` (or a function that returns ``None``);
* the check cell calls a checker here. While the answer is ``None`` it prints that the exercise
  is not attempted yet and returns ``False``. A wrong answer raises ``AssertionError`` with a hint;
  a right one prints a short confirmation and returns ``True``;
* the solution sits in a collapsed ``<details>`` block below, for learners who want to peek.

A failed check raises :class:`ExerciseError`, an ``AssertionError`` that IPython shows as the hint alone:
no traceback through the checker, whose source would give the reference answer away. An error inside the
learner's own function is reported the same way, with only the learner's frames. Asked for a function, a
checker refuses the lab's own (``my_mask = prune.magnitude_mask``) with a short note.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


class ExerciseError(AssertionError):
    """A failed self-check: its message is the hint, and that is all a notebook shows of it."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of formatting the traceback (see IPython's InteractiveShell.showtraceback).
        first, *rest = str(self).splitlines() or [""]
        return ["\x1b[1;31mNot yet:\x1b[0m " + first, *rest]


def unanswered(answer: object, exercise: str) -> bool:
    """True (and a friendly note) while ``answer`` is still ``None``."""
    if answer is None:
        print(f"{exercise}: not attempted yet. Replace None with your answer and run the cell again.")
        return True
    return False


def expect(condition: bool, hint: str) -> None:
    """Raise :class:`ExerciseError` (an ``AssertionError``) with ``hint`` unless ``condition`` holds.

    A type checker cannot see through this call; where later lines rely on ``answer``'s type, the checkers
    write ``if not isinstance(...): raise ExerciseError(hint)`` instead, which narrows it.
    """
    if not condition:
        raise ExerciseError(hint)


def passed(exercise: str, detail: str = "") -> bool:
    """Print the confirmation for a correct answer and return True."""
    print(f"{exercise}: correct!" + (f" {detail}" if detail else ""))
    return True


def check_callable(answer: object, exercise: str) -> Callable | None:
    """For exercises that ask for a function: ``None`` while unanswered, else the callable.

    The lab's own functions are refused: the exercise is to write the few lines yourself.
    """
    if unanswered(answer, exercise):
        return None
    if not callable(answer):  # `if`, not expect(): mypy then knows `answer` is callable
        raise ExerciseError(f"{exercise}: expected a function, got {type(answer).__name__}")
    module = getattr(answer, "__module__", None) or ""
    expect(module != "labkit" and not module.startswith(("labkit.", "kernels.")),
           f"{exercise}: that is the lab's own function {module}.{getattr(answer, '__qualname__', '')}; "
           "the point is to write it yourself (a few lines). Compare with the lab's version after your own passes.")
    return answer


def labelled(answer: object, points: Sequence[Mapping], exercise: str, what: str) -> Mapping | None:
    """For exercises answered with one point's ``label``: ``None`` while unanswered, else that point.

    ``what`` says where the labels come from (e.g. "the map names it"), for the error on an unknown label.
    """
    if unanswered(answer, exercise):
        return None
    labels = {p["label"]: p for p in points}
    if not isinstance(answer, str) or answer not in labels:
        raise ExerciseError(f"{exercise}: answer with one label exactly as {what} (e.g. {next(iter(labels))!r}); "
                            f"got {answer!r}")
    return labels[answer]


def check_choice(answer: object, exercise: str, choices: dict[str, str], right: str, hint: str, detail: str) -> bool:
    """A multiple-choice exercise: ``answer`` is one letter of ``choices``; ``right`` passes, others get ``hint``."""
    if unanswered(answer, exercise):
        return False
    if not (isinstance(answer, str) and answer.strip().lower() in choices):  # `if`, not expect(): narrows to str
        raise ExerciseError(f"{exercise}: answer with one letter of {sorted(choices)}")
    expect(answer.strip().lower() == right, f"{exercise}: not quite. {hint}")
    return passed(exercise, detail)


def call(fn: Callable, *args: Any, exercise: str) -> Any:
    """``fn(*args)``; if the learner's function raises, an :class:`ExerciseError` with its own frames only."""
    try:
        return fn(*args)
    except ExerciseError:
        raise
    except Exception as e:  # the learner's bug: show where in *their* code, never the checker's lines
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if not Path(f.filename).resolve().is_relative_to(_HERE)]
        where = "".join(traceback.format_list(frames[-3:])).rstrip()
        raise ExerciseError(f"{exercise}: your function raised {type(e).__name__}: {e}" +
                            (f"\n{where}" if where else "")) from None
