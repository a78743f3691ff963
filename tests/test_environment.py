"""environment.yml (conda, Binder) must install what pyproject.toml asks for, at the pinned versions."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pin exact versions"
            pins[_norm(req.name)] = spec.version
    return pins


CONSTRAINTS = _pins((ROOT / "requirements" / "constraints.txt").read_text().splitlines())
PIP_SECTION = next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))
ENV_PINS = _pins(PIP_SECTION)


def _lab_requirements():
    deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["lab"]
    return [Requirement(d) for d in deps]


def test_environment_installs_every_lab_dependency():
    missing = [r.name for r in _lab_requirements() if _norm(r.name) not in ENV_PINS]
    assert not missing, f"environment.yml's pip section lacks {missing}: add them with the pins from constraints.txt"


def test_environment_pins_agree_with_constraints_and_pyproject_ranges():
    ranges = {_norm(r.name): r for r in _lab_requirements()}
    for name, version in ENV_PINS.items():
        assert name in ranges, f"environment.yml pins {name}, which pyproject.toml does not depend on"
        assert CONSTRAINTS.get(name) == version, (
            f"environment.yml pins {name}=={version} but requirements/constraints.txt has {CONSTRAINTS.get(name)}"
        )
        assert ranges[name].specifier.contains(version), f"{name}=={version} is outside pyproject's {ranges[name]}"


def test_environment_installs_the_lab_itself_and_a_supported_python():
    assert any(str(line).replace(" ", "") in ("-e.[lab]", ".[lab]") for line in PIP_SECTION)
    pythons = [d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons, "environment.yml must pin python"
    version = pythons[0].split("=")[-1]
    requires = PYPROJECT["project"]["requires-python"]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, requires.lstrip(">=").split("."))), requires


def test_constraints_pin_every_declared_dependency():
    deps = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        deps += extra
    missing = sorted({_norm(Requirement(d).name) for d in deps} - set(CONSTRAINTS))
    assert not missing, f"requirements/constraints.txt does not pin {missing}"
