"""The carbon figures people quote, traced to their primary source and recomputed with :mod:`labkit.carbon`.

A number travels: "training a large language model can emit 300+ tons of CO2" started as an
*estimate* of a neural architecture search on a hypothetical US data centre (Strubell et al. 2019),
not a measurement of training one language model. Each claim here has a row in
``labkit/tables/claims.csv`` (the claim as repeated, its primary source, what was measured or
estimated: model, hardware, grid, operational or embodied) and its inputs, each with its own
source, in ``labkit/tables/claim_inputs.csv``. :func:`recompute` redoes the source's arithmetic
from those inputs, energy x PUE x grid intensity through :func:`labkit.carbon.footprint`, so a
learner can see how close the stated result is and what the repeated version changed.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from labkit import carbon, checks

LBS_PER_KG = 1 / 0.45359237  # the international avoirdupois pound is exactly 0.45359237 kg
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Claim:
    """One quoted figure and what stands behind it (a row of ``claims.csv``)."""

    key: str
    claim: str
    source: str
    what: str
    model: str
    hardware: str
    grid: str
    scope: str
    kind: str
    stated_value: float | None
    stated_unit: str
    note: str


@dataclass(frozen=True)
class Input:
    """One number a claim's arithmetic starts from, with the place it was taken from."""

    claim: str
    name: str
    value: float
    unit: str
    source: str


@dataclass(frozen=True)
class Check:
    """A claim's arithmetic redone: the result, each step in words, and derived comparisons."""

    claim: Claim
    recomputed: float
    unit: str
    steps: tuple[str, ...]
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Recomputed / stated; None when the source states no number to compare with."""
        if self.claim.stated_value is None:
            return None
        return self.recomputed / self.claim.stated_value

    def agrees(self, tolerance: float = 0.01) -> bool | None:
        """Whether the recomputed value is within ``tolerance`` (relative) of the stated one."""
        if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be a relative tolerance in (0, 1), e.g. 0.01; got {tolerance!r}")
        r = self.ratio
        return None if r is None else abs(r - 1) <= tolerance

    def __str__(self) -> str:
        c = self.claim
        if c.stated_value is None:
            head = f"{c.key}: recomputed {_fmt(self.recomputed)} {self.unit} (the source states no number to compare)"
        else:
            head = (f"{c.key}: recomputed {_fmt(self.recomputed)} {self.unit}, stated {_fmt(c.stated_value)} "
                    f"{c.stated_unit} (ratio {self.ratio:.3f})")
        return "\n".join([head] + ["  " + s for s in self.steps])


def _fmt(x: float) -> str:
    """Whole numbers with thousands separators for big values, 4 significant digits for small ones."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files("labkit").joinpath(f"tables/{name}").read_text()
    return list(csv.DictReader(text.splitlines()))


def claims() -> dict[str, Claim]:
    """Every claim in ``labkit/tables/claims.csv``, keyed by its short name."""
    out = {}
    for row in _read("claims.csv"):
        stated = float(row["stated_value"]) if row["stated_value"].strip() else None
        out[row["key"]] = Claim(row["key"], row["claim"], row["source"], row["what"], row["model"], row["hardware"],
                                row["grid"], row["scope"], row["kind"], stated, row["stated_unit"], row["note"])
    return out


def claim(key: str) -> Claim:
    """The claim called ``key`` (see :func:`claims` for the names)."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a claim name such as 'strubell_nas', got {type(key).__name__}")
    table = claims()
    if key not in table:
        raise ValueError(f"unknown claim {key!r}. Valid claims: {', '.join(table)}")
    return table[key]


def inputs(key: str) -> dict[str, Input]:
    """The inputs of claim ``key``, by name, each with its source."""
    claim(key)  # a clear error for an unknown key
    return {row["name"]: Input(row["claim"], row["name"], float(row["value"]), row["unit"], row["source"])
            for row in _read("claim_inputs.csv") if row["claim"] == key}


def _values(key: str) -> dict[str, float]:
    return {name: i.value for name, i in inputs(key).items()}


def _grid(name: str, g_per_kwh: float, year: int, source: str) -> carbon.GridIntensity:
    """A paper's own grid figure, which the bundled grid table does not have."""
    return carbon.GridIntensity("PAPER", name, g_per_kwh, year, source)


def _strubell_nas() -> Check:
    v = _values("strubell_nas")
    grid = _grid("US average (Strubell et al. 2019)", v["lbs_per_kwh"] / LBS_PER_KG * 1000, int(v["grid_year"]),
                 "US EPA, as used by Strubell et al. 2019")
    fp = carbon.footprint(carbon.joules_from_power(v["power_w"], v["hours"] * 3600), grid, pue=v["pue"])
    lbs = fp.kg_co2e * LBS_PER_KG
    tonnes = fp.kg_co2e / 1000
    steps = (f"{v['power_w']:g} W x {v['hours']:,.0f} h = {fp.it_kwh:,.0f} kWh at the devices",
             f"x PUE {v['pue']:g} = {fp.facility_kwh:,.0f} kWh (the paper's kWh-PUE: {v['kwh_pue']:,.0f})",
             f"x {v['lbs_per_kwh']:g} lbs/kWh = {lbs:,.0f} lbs = {tonnes:,.1f} t CO2e",
             f"the claim's {v['claim_tonnes']:g} t / {v['claim_flights']:g} flights = "
             f"{v['claim_tonnes'] / v['claim_flights']:.2g} t per flight: a basis the source never states",
             f"the paper's own comparison: {lbs / v['flight_ny_sf_lbs']:,.0f} passenger round trips New York-"
             f"San Francisco, or {lbs / v['car_lifetime_lbs']:.1f} car lifetimes")
    extra = {"tonnes": tonnes, "kwh_pue": fp.facility_kwh,
             "claim_t_per_flight": v["claim_tonnes"] / v["claim_flights"],
             "ny_sf_passenger_round_trips": lbs / v["flight_ny_sf_lbs"],
             "car_lifetimes": lbs / v["car_lifetime_lbs"]}
    return Check(claim("strubell_nas"), lbs, "lbs CO2e", steps, extra)


def _accelerator_run(key: str) -> tuple[carbon.Footprint, dict[str, float]]:
    """Chips x measured watts x days x PUE x grid: Patterson et al.'s method for one column of Table 4."""
    v = _values(key)
    grid = _grid(f"{key} data centre (Patterson et al. 2021)", v["kg_per_kwh"] * 1000, int(v["grid_year"]),
                 "Patterson et al. 2021 Table 4")
    joules = carbon.joules_from_power(v["chips"] * v["watts"], v["days"] * SECONDS_PER_DAY)
    return carbon.footprint(joules, grid, pue=v["pue"]), v


def _run_steps(fp: carbon.Footprint, v: Mapping[str, float]) -> list[str]:
    return [f"{v['chips']:,.0f} chips x {v['watts']:g} W x {v['days']:g} days = {fp.it_kwh / 1000:,.4g} MWh",
            f"x PUE {v['pue']:g} = {fp.facility_kwh / 1000:,.4g} MWh (stated: {v['energy_mwh']:,.4g} MWh)",
            f"x {v['kg_per_kwh']:g} kg/kWh = {fp.kg_co2e / 1000:,.4g} t CO2e"]


def _patterson_nas() -> Check:
    fp, v = _accelerator_run("patterson_nas")
    tonnes = fp.kg_co2e / 1000
    steps = _run_steps(fp, v) + [f"Strubell et al.'s {v['strubell_t']:g} t / {tonnes:.3g} t = "
                                 f"{v['strubell_t'] / tonnes:.0f}x"]
    return Check(claim("patterson_nas"), tonnes, "tCO2e", tuple(steps),
                 {"energy_mwh": fp.facility_kwh / 1000, "strubell_over_actual": v["strubell_t"] / tonnes})


def _patterson_gpt3() -> Check:
    fp, v = _accelerator_run("patterson_gpt3")
    tonnes = fp.kg_co2e / 1000
    steps = _run_steps(fp, v) + [f"= {tonnes / v['plane_round_trip_t']:.2f} whole-plane San Francisco-New York "
                                 f"round trips ({v['plane_round_trip_t']:g} t each)"]
    return Check(claim("patterson_gpt3"), tonnes, "tCO2e", tuple(steps),
                 {"energy_mwh": fp.facility_kwh / 1000, "plane_round_trips": tonnes / v["plane_round_trip_t"]})


def _bloom_training() -> Check:
    v = _values("bloom_training")
    grid = _grid("France (Luccioni et al. 2022)", v["g_per_kwh"], int(v["grid_year"]), "Luccioni et al. 2022 Table 1")
    dynamic = carbon.footprint(carbon.joules_from_power(v["gpu_watts"], v["gpu_hours"] * 3600), grid)
    idle = carbon.footprint(v["idle_kwh"] * carbon.JOULES_PER_KWH, grid)
    gpu, node = carbon.embodied("a100-gpu"), carbon.embodied("bloom-node")
    life, use = carbon.BLOOM_LIFETIME_YEARS, carbon.BLOOM_UTILIZATION
    node_hours = v["gpu_hours"] / v["gpus_per_node"]
    embodied_kg = (carbon.embodied_per_hour(gpu.kg_co2e, life, use) * v["gpu_hours"]
                   + carbon.embodied_per_hour(node.kg_co2e, life, use) * node_hours) / 1000
    total_t = (dynamic.kg_co2e + idle.kg_co2e + embodied_kg) / 1000
    steps = (f"dynamic: {v['gpu_hours']:,.0f} GPU-h x {v['gpu_watts']:g} W = {dynamic.it_kwh:,.0f} kWh x "
             f"{v['g_per_kwh']:g} g/kWh = {dynamic.kg_co2e / 1000:.3g} t (stated {v['dynamic_t']:g} t)",
             f"idle and infrastructure: {v['idle_kwh']:,.0f} kWh x {v['g_per_kwh']:g} g/kWh = "
             f"{idle.kg_co2e / 1000:.3g} t",
             f"embodied: {gpu.kg_co2e:g} kg per GPU x {v['gpu_hours']:,.0f} GPU-h + {node.kg_co2e:g} kg per node x "
             f"{node_hours:,.0f} node-h, over {life:g} years at {use:.0%} use = {embodied_kg / 1000:.3g} t "
             f"(stated {v['embodied_t']:g} t)",
             f"total {total_t:.3g} t; embodied is {embodied_kg / 1000 / total_t:.0%} of it")
    extra = {"dynamic_t": dynamic.kg_co2e / 1000, "dynamic_kwh": dynamic.it_kwh, "idle_t": idle.kg_co2e / 1000,
             "embodied_t": embodied_kg / 1000}
    return Check(claim("bloom_training"), total_t, "tCO2e", steps, extra)


def _google_ml_share() -> Check:
    v = _values("google_ml_share")
    google_mwh = v["google_2019_twh"] * 1e6
    share = v["gpt3_mwh"] / google_mwh * 100
    ml_max_mwh = v["ml_share_max"] * google_mwh
    steps = (f"GPT-3 training {v['gpt3_mwh']:,.0f} MWh / Google 2019 {v['google_2019_twh']:g} TWh = {share:.4g}%",
             f"all ML at most {v['ml_share_max']:.0%} of {v['google_2019_twh']:g} TWh = "
             f"{ml_max_mwh / 1e6:.3g} TWh; GPT-3's training would be {v['gpt3_mwh'] / ml_max_mwh:.2%} of that")
    return Check(claim("google_ml_share"), share, "% of Google's 2019 energy", steps,
                 {"ml_max_twh": ml_max_mwh / 1e6, "gpt3_share_of_ml_max": v["gpt3_mwh"] / ml_max_mwh})


def _inference_dominates() -> Check:
    v = _values("inference_dominates")
    api_kwh = v["api_kg"] * 1000 / v["api_g_per_kwh"]
    kwh_per_request = api_kwh / v["api_requests"]
    requests = breakeven_requests(v["training_kwh"], kwh_per_request * carbon.JOULES_PER_KWH)
    per_day = v["api_requests"] / v["api_days"]
    days = requests / per_day
    steps = (f"endpoint: {v['api_kg']:.4g} kg / {v['api_g_per_kwh']:g} g/kWh = {api_kwh:,.4g} kWh for "
             f"{v['api_requests']:,.0f} requests = {kwh_per_request * 1000:.3g} Wh per request (idle time included)",
             f"training {v['training_kwh']:,.0f} kWh / {kwh_per_request * 1000:.3g} Wh = {requests:,.3g} requests",
             f"at the endpoint's {per_day:,.0f} requests/day that is {days:,.0f} days ({days / 365:.1f} years); "
             f"at 100x the traffic, {days / 100:,.0f} days")
    extra = {"api_kwh": api_kwh, "wh_per_request": kwh_per_request * 1000, "requests_per_day": per_day,
             "breakeven_days": days}
    return Check(claim("inference_dominates"), requests, "requests to match training energy", steps, extra)


def breakeven_requests(training_kwh: float, joules_per_request: float) -> float:
    """How many requests of ``joules_per_request`` spend as much energy as ``training_kwh`` of training.

    Past this many, inference has used more energy than the training run: "inference dominates"
    is a statement about traffic, and this is the traffic it needs.
    """
    kwh = checks.finite("training_kwh", training_kwh, low=0.0)
    jpr = checks.finite("joules_per_request", joules_per_request)
    if not jpr > 0:
        raise ValueError(f"joules_per_request must be > 0 (energy of one request, in joules), got {jpr:g}")
    return kwh * carbon.JOULES_PER_KWH / jpr


_RECOMPUTE: dict[str, Callable[[], Check]] = {
    "strubell_nas": _strubell_nas,
    "patterson_nas": _patterson_nas,
    "patterson_gpt3": _patterson_gpt3,
    "bloom_training": _bloom_training,
    "google_ml_share": _google_ml_share,
    "inference_dominates": _inference_dominates,
}


def recompute(key: str) -> Check:
    """Redo claim ``key``'s arithmetic from its source's own inputs with :mod:`labkit.carbon`."""
    claim(key)  # a clear error for an unknown key
    if key not in _RECOMPUTE:
        raise ValueError(f"claim {key!r} has no recomputation yet; recomputable: {', '.join(_RECOMPUTE)}")
    check = _RECOMPUTE[key]()
    if not math.isfinite(check.recomputed):
        raise ArithmeticError(f"claim {key!r} recomputed to {check.recomputed}: check its inputs in claim_inputs.csv")
    return check


def recompute_all() -> list[Check]:
    """Every claim, recomputed, in table order."""
    return [recompute(key) for key in claims()]
