"""labkit.backend: the interpreter is on before triton is imported, and the choice is explained."""
import os
import subprocess
import sys

import pytest
import torch

from labkit import backend


def test_interpreter_is_configured_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: Triton compiles instead")
    assert os.environ.get("TRITON_INTERPRET") == "1"
    b = backend.detect()
    assert b.name == "triton-interpreter" and b.device == "cpu" and "simulated" in b.reason


def test_importing_labkit_sets_the_interpreter_before_triton(tmp_path):
    code = "import os, sys, labkit; print(os.environ.get('TRITON_INTERPRET'), 'triton' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=tmp_path)
    expected = "None False" if torch.cuda.is_available() else "1 False"
    assert out.stdout.strip() == expected


def test_torch_backend_can_be_forced():
    b = backend.detect("torch")
    assert b.name == "torch" and not b.uses_triton


def test_unknown_backend_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="triton-interpreter"):
        backend.detect("cuda-magic")


def test_compiled_triton_without_gpu_explains_itself():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="GPU"):
        backend.detect("triton")


def test_missing_triton_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(backend, "_triton_installed", lambda: False)
    b = backend.detect()
    assert b.name == "torch" and "not installed" in b.reason
    with pytest.raises(RuntimeError, match="not installed"):
        backend.detect("triton-interpreter")


def test_fallback_notice_is_shown_once(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("no fallback on a GPU")
    monkeypatch.setattr(backend, "_notice_shown", False)
    with pytest.warns(UserWarning, match="labkit kernels run on"):
        backend.current()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.current()  # second call: silent


def test_a_shadowed_triton_means_torch_references(tmp_path):
    """A folder called triton ahead of the real one (or a broken install): the import is tried, fails,
    and every kernel falls back to its torch reference instead of crashing."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text("raise ImportError('shadowed on purpose')\n")
    code = ("import torch, labkit\n"
            "from labkit import backend\n"
            "from labkit.kernels import runtime as rt, moe as km\n"
            "from labkit.kernels.bsr_linear import bsr_linear\n"
            "w = torch.zeros(32, 32); w[:16, :16] = 1.0\n"
            "x = torch.ones(2, 32)\n"
            "y = bsr_linear(x, w.to_sparse_bsr((16, 16)))\n"
            "print(rt.HAS_TRITON, rt.can_launch(x), backend.detect().name, float(y.sum()))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "torch", "512.0"]


def test_every_kernel_asks_one_function(monkeypatch):
    """LABKIT_BACKEND=torch is seen by can_launch (and so by every kernel) and by labkit.sparse."""
    from labkit.kernels import runtime as rt

    x = torch.zeros(1, 16)
    monkeypatch.setenv("LABKIT_BACKEND", "torch")
    assert not rt.can_launch(x) and not rt.can_launch(torch.device("cpu"))
    assert rt.kernel_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.delenv("LABKIT_BACKEND")
    assert rt.can_launch(x) == (rt.HAS_TRITON and not torch.cuda.is_available())
