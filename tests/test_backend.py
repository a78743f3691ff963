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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
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
