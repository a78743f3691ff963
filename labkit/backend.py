"""How the lab's kernels run on this machine: compiled Triton, the Triton interpreter, or plain torch.

Triton compiles kernels for NVIDIA GPUs. Without a GPU it can still *simulate* them with numpy
(``TRITON_INTERPRET=1``), slowly but faithfully enough to test them. Where triton is not installed
at all (macOS, Windows) every kernel has a plain-torch reference that gives the same answer.

The interpreter switch is read when triton is first imported, so :func:`configure` must run
before anything imports triton. ``import labkit`` calls it for you.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

#: The three ways a kernel can run, fastest first.
BACKENDS = ("triton", "triton-interpreter", "torch")


@dataclass(frozen=True)
class Backend:
    """The kernel backend chosen for this process, and why."""

    name: str  # one of BACKENDS
    device: str  # "cuda" or "cpu": where kernel inputs must live
    reason: str

    @property
    def uses_triton(self) -> bool:
        return self.name != "torch"


_notice_shown = False


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


_triton_probe: dict[str, str | None] = {}


def triton_problem() -> str | None:
    """None when ``import triton`` and ``triton.language`` work here, else why not (checked once).

    The import is actually tried, not just looked up: a folder called ``triton`` shadowing the
    package, or a broken install, must mean "no triton" (plain-torch references), not a crash in
    the middle of a kernel call.
    """
    if "result" not in _triton_probe:
        configure()  # the interpreter switch must be set before the first import of triton
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401
        except Exception as e:  # noqa: BLE001  (a broken install raises more than ImportError)
            _triton_probe["result"] = f"import triton failed ({type(e).__name__}: {str(e)[:120]})"
        else:
            _triton_probe["result"] = None
    return _triton_probe["result"]


def _triton_installed() -> bool:
    return triton_problem() is None


def configure() -> None:
    """Turn the Triton interpreter on when there is no GPU, before triton is imported.

    Respects a ``TRITON_INTERPRET`` the user already set. Safe to call many times.
    """
    if "TRITON_INTERPRET" in os.environ:
        return
    if "triton" in sys.modules:
        # Too late to switch: triton read the variable at import time.
        return
    if not _cuda_available():
        os.environ["TRITON_INTERPRET"] = "1"


def detect(requested: str | None = None) -> Backend:
    """Decide how kernels run here.

    Args:
        requested: force ``"triton"``, ``"triton-interpreter"`` or ``"torch"``; ``None`` (or the
            environment variable ``LABKIT_BACKEND``) picks the best that works.
    """
    requested = requested or os.environ.get("LABKIT_BACKEND") or None
    if requested is not None and requested not in BACKENDS:
        raise ValueError(f"backend={requested!r} is not one of {BACKENDS}; leave it unset to auto-detect")
    configure()
    interpreting = os.environ.get("TRITON_INTERPRET", "0") == "1"
    cuda = _cuda_available()
    triton_ok = _triton_installed()

    if requested == "torch":
        return Backend("torch", "cuda" if cuda else "cpu", "pure torch requested")
    if not triton_ok:
        if requested is not None:
            raise RuntimeError(f"backend={requested!r} needs triton, which is not installed here "
                               f"({triton_problem() or 'not importable'}); use 'torch'")
        return Backend("torch", "cuda" if cuda else "cpu",
                       f"triton cannot be used here ({triton_problem() or 'not installed'}; it ships for Linux only): "
                       "using the plain-torch reference kernels")
    if requested == "triton" or (requested is None and cuda and not interpreting):
        if not cuda:
            raise RuntimeError("backend='triton' needs an NVIDIA GPU; none is visible. Use 'triton-interpreter'")
        if interpreting:
            raise RuntimeError("backend='triton' was requested but TRITON_INTERPRET=1 is set; unset it")
        import torch

        name = torch.cuda.get_device_name()
        return Backend("triton", "cuda", f"compiled Triton on {name}")
    if not interpreting:
        raise RuntimeError("the Triton interpreter needs TRITON_INTERPRET=1 set before triton is imported; "
                           "import labkit first, or set it in the environment")
    why = "no CUDA GPU" if not cuda else "TRITON_INTERPRET=1 is set"
    return Backend("triton-interpreter", "cpu", f"{why}: Triton kernels are simulated on the CPU (slow, for learning)")


def current() -> Backend:
    """The backend for this process; prints one notice the first time it falls back from a GPU."""
    global _notice_shown
    backend = detect()
    if backend.name != "triton" and not _notice_shown:
        _notice_shown = True
        warnings.warn(f"labkit kernels run on '{backend.name}': {backend.reason}", stacklevel=2)
    return backend
