"""python -m labkit doctor: a readable report with a verdict; non-zero exit only when the lab cannot run."""
import subprocess
import sys

from labkit import doctor


def test_doctor_runs_and_ends_with_a_verdict():
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "Sparse Models Lab doctor"
    assert lines[-1].startswith("READY")
    text = out.stdout
    for topic in ("python", "cpu", "torch", "triton", "jupyterlab", "ipywidgets", "plotly", "gpu", "kernels",
                  "energy: nvml", "energy: rapl", "widgets"):
        assert f"] {topic} " in text or f"] {topic}\n" in text, f"doctor does not report {topic}"


def test_verdict_fails_only_on_failures():
    ok = [doctor.Check("a", doctor.OK, "")]
    warn = ok + [doctor.Check("gpu", doctor.WARN, "none")]
    fail = warn + [doctor.Check("torch", doctor.FAIL, "not installed")]
    assert doctor.verdict(ok)[0] and doctor.verdict(warn)[0]
    can_run, sentence = doctor.verdict(fail)
    assert not can_run and "torch" in sentence


def test_missing_required_package_fails_the_report(monkeypatch):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "scikit-learn" else real(name))
    checks = doctor._packages()
    assert next(c for c in checks if c.topic == "scikit-learn").status == doctor.FAIL
    assert next(c for c in checks if c.topic == "plotly").status == doctor.OK


def test_main_exit_code_follows_the_verdict(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "run", lambda: [doctor.Check("torch", doctor.FAIL, "not installed")])
    assert doctor.main() == 1
    assert "NOT READY" in capsys.readouterr().out
