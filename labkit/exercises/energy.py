"""Self-checks for notebook 05 (energy and carbon). See :mod:`labkit.exercises` for the pattern."""
from __future__ import annotations

import math

from labkit import carbon, energy
from labkit.exercises import ExerciseError, check_choice, expect, passed, unanswered


def _number(answer: object, exercise: str) -> float:
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        raise ExerciseError(f"{exercise}: expected a number, got {type(answer).__name__}")
    expect(math.isfinite(answer), f"{exercise}: expected a finite number, got {answer}")
    return float(answer)


def expected_kind(statuses: list[energy.SensorStatus] | None = None) -> str:
    """The kind :func:`labkit.energy.measure` reports as primary here, from the sensor statuses."""
    statuses = energy.sensor_status() if statuses is None else statuses
    by_name = {s.name: s for s in statuses}
    nvml = by_name.get("nvml")
    if nvml is not None and nvml.available:
        return "sampled" if "sampled" in nvml.reason else "measured"
    rapl = by_name.get("rapl")
    if rapl is not None and rapl.available:
        return "measured"
    return "estimated"


def check_primary_kind(answer: object, statuses: list[energy.SensorStatus] | None = None) -> bool:
    """Exercise 1: which kind ('measured', 'sampled' or 'estimated') will the primary reading be here?"""
    name = "Exercise 1 (what can this machine measure?)"
    if unanswered(answer, name):
        return False
    expect(answer in energy.KINDS, f"{name}: answer with one of {energy.KINDS}, got {answer!r}")
    truth = expected_kind(statuses)
    expect(answer == truth, f"{name}: not quite. Read the sensor list above: the first *available* meter in the "
                            "order NVML, RAPL, model decides. A model is never 'measured'.")
    return passed(name, f"Here the primary reading is {truth}.")


def check_zero_skipping(answer: object, dense_compute_joules: float, weight_density: float) -> bool:
    """Exercise 2: estimated arithmetic joules if a kernel skipped every zero of the unstructured model."""
    name = "Exercise 2 (what would skipping zeros save?)"
    if unanswered(answer, name):
        return False
    value = _number(answer, name)
    truth = dense_compute_joules * weight_density
    expect(value != dense_compute_joules, f"{name}: that is the dense figure. Stored densely, zeros are still "
                                          "multiplied; a zero-skipping kernel does only the non-zero share.")
    expect(math.isclose(value, truth, rel_tol=0.02),
           f"{name}: not it. Reconsider which multiplications a zero-skipping kernel still does: the share of "
           f"non-zero weights ({weight_density:.2%}) was printed above, next to the dense figure.")
    return passed(name, f"{truth:.3g} J. DRAM traffic is another matter: sparse formats store indices too.")


def check_greenest_region(answer: object, joules: float) -> bool:
    """Exercise 3: ``(region_code, ratio)``: the cleanest bundled region, and dirtiest/cleanest kgCO2e."""
    name = "Exercise 3 (where to run it?)"
    if unanswered(answer, name):
        return False
    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise ExerciseError(f"{name}: answer with a tuple (region_code, ratio), e.g. ('XYZ', 3.0), got {answer!r}")
    code, ratio = answer
    kg = carbon.by_region(joules)
    best, worst = min(kg, key=kg.__getitem__), max(kg, key=kg.__getitem__)
    expect(isinstance(code, str) and code.upper() == best,
           f"{name}: {code!r} is not the cleanest. Look at carbon.by_region(...) or carbon.regions() (cleanest first).")
    ratio = _number(ratio, name)
    truth = kg[worst] / kg[best]
    expect(math.isclose(ratio, truth, rel_tol=0.02),
           f"{name}: the ratio should be the dirtiest region's kgCO2e divided by the cleanest's ({worst} / {best}).")
    return passed(name, f"{best}; {worst} would emit {truth:.0f}x more for the same joules.")


def deployment_hint(value: float, requests_per_day: float, joules_per_request: float, pue: float,
                    idle_share: float) -> str:
    """Exercise 4's hint for a wrong ``value``: which step to reconsider, recognised from the usual slips.

    It never states the expected kWh, nor the whole formula: only the step that went wrong.
    """
    d = carbon.deployment(requests_per_day, joules_per_request, "WORLD", pue=pue, idle_share=idle_share)
    active, right = d.active_kwh_per_year, d.kwh_per_year
    slips = [  # (what the slip gives, what to reconsider)
        (active, "that is the energy of serving the requests only. Reconsider what else the servers and the "
                 "building draw energy for over a year."),
        (active / (1 - idle_share), "the servers' energy is right. Reconsider what PUE describes: does the whole "
                                    "facility draw more or less than its IT equipment?"),
        (active * pue, "reconsider the idle share: the devices also draw energy between requests."),
        (active * (1 + idle_share) * pue, "reconsider how the idle share is defined: it is the idle part of *all* "
                                          "device energy, not an extra share on top of the active energy."),
        (active * (1 - idle_share) * pue, "reconsider the idle share: idling adds energy, it does not remove any."),
        (right / 365, "that is about one day. The question asks for a year."),
        (right * 3.6e6, "reconsider the units: that looks like joules, and the question asks for kWh."),
        (right * 3.6, "reconsider the units: how many joules are in one kWh (a kilowatt for an hour)?"),
        (right * 3.6e3, "reconsider the units: how many joules are in one kWh (a kilowatt for an hour)?"),
    ]
    for slip, hint in slips:
        if math.isclose(value, slip, rel_tol=0.02):
            return hint
    return ("not it. Reconsider each step in turn: the requests in a year, joules into kWh, the idle share, then "
            "the PUE. The calculator above lists the same steps under its result.")


def check_deployment_kwh(answer: object, requests_per_day: float, joules_per_request: float, pue: float,
                         idle_share: float) -> bool:
    """Exercise 4: facility kWh per year for a deployment, by hand."""
    name = "Exercise 4 (a year of serving)"
    if unanswered(answer, name):
        return False
    value = _number(answer, name)
    d = carbon.deployment(requests_per_day, joules_per_request, "WORLD", pue=pue, idle_share=idle_share)
    expect(math.isclose(value, d.kwh_per_year, rel_tol=0.02),
           f"{name}: {deployment_hint(value, requests_per_day, joules_per_request, pue, idle_share)}")
    return passed(name, f"{d.kwh_per_year:.4g} kWh per year.")


#: Exercise 5's choices: why is a joule figure on this CPU an estimate?
CPU_ESTIMATE_CHOICES = {
    "a": "CPUs use the same power whatever they run, so there is nothing to measure.",
    "b": "No energy counter the lab can read covers this work (no NVIDIA GPU for NVML; RAPL absent or not readable "
         "without root, and it counts the whole package, other programs included), so the joules come from a "
         "model: counted FLOPs and bytes times assumed energies per operation, or an assumed power times time.",
    "c": "The energy is measured exactly, but rounded for display.",
    "d": "Python code uses no measurable energy; only compiled kernels do.",
}


def check_cpu_estimate(answer: object) -> bool:
    """Exercise 5: which of :data:`CPU_ESTIMATE_CHOICES` explains why a CPU reading here is an estimate?"""
    return check_choice(answer, "Exercise 5 (why is a CPU reading an estimate?)", CPU_ESTIMATE_CHOICES, "b",
                        "Look at the sensor list: which meters are available here, and what does the lab fall "
                        "back to when none is?",
                        "An estimate is only as good as its assumed energies or power: label it, and never grade "
                        "a machine by it.")


def check_idle_subtraction(answer: object, total_joules: float, seconds: float, idle_watts: float,
                           calls: int = 1) -> bool:
    """Exercise 6 (on a GPU): the dynamic joules per call, after subtracting what the idle GPU draws anyway."""
    name = "Exercise 6 (subtract the idle power)"
    if unanswered(answer, name):
        return False
    value = _number(answer, name)
    for arg, v in (("total_joules", total_joules), ("seconds", seconds), ("idle_watts", idle_watts)):
        expect(isinstance(v, (int, float)) and v >= 0, f"{name}: {arg} must be a non-negative number, got {v!r}")
    expect(isinstance(calls, int) and calls >= 1, f"{name}: calls must be a positive int, got {calls!r}")
    truth = (total_joules - idle_watts * seconds) / calls
    expect(not math.isclose(value, total_joules / calls, rel_tol=0.01) or math.isclose(truth, total_joules / calls),
           f"{name}: that still includes the idle draw. Subtract idle watts x seconds of the window first.")
    expect(not math.isclose(value, total_joules - idle_watts * seconds, rel_tol=0.01) or calls == 1,
           f"{name}: that is the dynamic energy of the whole window; divide by the {calls} calls.")
    expect(math.isclose(value, truth, rel_tol=0.01),
           f"{name}: not it. Reconsider the two steps: what the idle GPU would have drawn during the whole window "
           "(watts are joules per second), and how many calls share what is left.")
    return passed(name, f"{truth:.4g} J per call above idle: the part the kernel itself costs.")
