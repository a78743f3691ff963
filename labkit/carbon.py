"""From joules to kWh, kgCO2e and money: carbon accounting that shows every assumption.

* Grid carbon intensity comes from a small bundled table, ``labkit/tables/grid_intensity.csv``
  (region, gCO2e/kWh, year, source on every row). You name the region: nothing is geolocated.
* PUE (power usage effectiveness) scales IT energy up to facility energy: cooling, power
  conversion. 1.0 means IT energy only.
* Carbon is *derived*: it inherits the kind of the energy it came from (measured or estimated),
  and the result says which.

Location alone changes the carbon of the same work by about 5-10x (Patterson et al. 2021,
arXiv:2104.10350): compare regions with :func:`by_region`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from labkit import checks

JOULES_PER_KWH = 3.6e6
DAYS_PER_YEAR = 365

#: What a joules figure can be: the energy kinds of :mod:`labkit.energy`, plus "assumed" for a number
#: the user typed in.
ENERGY_KINDS = ("measured", "sampled", "estimated", "assumed")

#: Global average PUE from the Uptime Institute Global Data Center Survey 2023 (as used by
#: carbontracker's ``PUE_2023`` constant): a cited default for a data-centre deployment.
PUE_UPTIME_2023 = 1.58
PUE_SOURCE = "Uptime Institute Global Data Center Survey 2023 (average PUE), as used by carbontracker"


@dataclass(frozen=True)
class GridIntensity:
    """Carbon intensity of one region's electricity."""

    region: str
    name: str
    g_per_kwh: float
    year: int
    source: str


def grid_table() -> dict[str, GridIntensity]:
    """The bundled table, keyed by region code (ISO 3166 alpha-3, or ``WORLD``)."""
    text = resources.files("labkit").joinpath("tables/grid_intensity.csv").read_text()
    return {row["region"]: GridIntensity(row["region"], row["name"], float(row["g_co2e_per_kwh"]), int(row["year"]),
                                         row["source"]) for row in csv.DictReader(text.splitlines())}


def regions() -> list[str]:
    """Valid region codes, cleanest grid first."""
    return [g.region for g in sorted(grid_table().values(), key=lambda g: g.g_per_kwh)]


def intensity(region: str) -> GridIntensity:
    """The grid intensity of ``region`` (a code like ``"FRA"`` or a name like ``"France"``, any case)."""
    if not isinstance(region, str):
        raise TypeError(f"region must be a string such as 'FRA' or 'France', got {type(region).__name__}")
    table = grid_table()
    wanted = region.strip().upper()
    for g in table.values():
        if wanted in (g.region.upper(), g.name.upper()):
            return g
    valid = ", ".join(f"{g.region} ({g.name})" for g in table.values())
    raise ValueError(f"unknown region {region!r}. Valid regions: {valid}")


def _check_number(name: str, value: float, *, positive: bool = False, minimum: float | None = None) -> float:
    value = checks.finite(name, value, low=minimum)
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value:g}")
    return value


def joules_to_kwh(joules: float) -> float:
    """Kilowatt-hours in ``joules`` (1 kWh = 3.6 MJ)."""
    return _check_number("joules", joules, minimum=0.0) / JOULES_PER_KWH


def joules_from_power(watts: float, seconds: float) -> float:
    """Energy of a constant ``watts`` held for ``seconds`` (> 0): for assumed-power estimates."""
    watts = _check_number("watts", watts, minimum=0.0)
    seconds = _check_number("seconds", seconds)
    if not seconds > 0:
        raise ValueError(f"seconds must be a positive duration, got {seconds:g}")
    return watts * seconds


@dataclass(frozen=True)
class Footprint:
    """The carbon and cost of some energy, with every assumption that produced them."""

    it_kwh: float
    pue: float
    facility_kwh: float
    grid: GridIntensity
    kg_co2e: float
    price_per_kwh: float
    currency: str
    cost: float
    energy_kind: str

    def assumptions(self) -> list[str]:
        """Each input in words, to print next to the result."""
        g = self.grid
        return [f"energy: {self.it_kwh:.4g} kWh at the device ({self.energy_kind})",
                f"PUE {self.pue:g}: facility energy = {self.facility_kwh:.4g} kWh",
                f"grid: {g.name} ({g.region}) {g.g_per_kwh:g} gCO2e/kWh, {g.year} ({g.source})",
                f"price: {self.price_per_kwh:g} {self.currency}/kWh (your input)"]

    def __str__(self) -> str:
        head = (f"{self.kg_co2e:.4g} kgCO2e and {self.cost:.4g} {self.currency} "
                f"(derived from {self.energy_kind} energy)")
        return "\n".join([head] + ["  " + a for a in self.assumptions()])


def footprint(joules: float, region: str, *, pue: float = 1.0, price_per_kwh: float = 0.0,
              currency: str = "USD", energy_kind: str = "estimated") -> Footprint:
    """kgCO2e and money for ``joules`` of device energy run in ``region``.

    ``pue`` >= 1 scales device (IT) energy to facility energy. ``energy_kind`` is the kind of the
    joules (``measured``, ``sampled``, ``estimated`` or ``assumed``), carried into the result's label.
    """
    joules = _check_number("joules", joules, minimum=0.0)
    if not isinstance(currency, str) or not currency:
        raise TypeError(f"currency must be a currency code such as 'USD', got {currency!r}")
    pue = _check_number("pue", pue)
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1.0 (1.0 = device energy only; data centres average about 1.58), got {pue:g}")
    price = _check_number("price_per_kwh", price_per_kwh, minimum=0.0)
    checks.choice("energy_kind", energy_kind, ENERGY_KINDS)
    grid = intensity(region)
    it_kwh = joules / JOULES_PER_KWH
    facility = it_kwh * pue
    return Footprint(it_kwh, pue, facility, grid, facility * grid.g_per_kwh / 1000.0, price, currency,
                     facility * price, energy_kind)


def by_region(joules: float, region_codes: list[str] | None = None, pue: float = 1.0) -> dict[str, float]:
    """kgCO2e of the same ``joules`` in each region (all bundled regions by default)."""
    codes = region_codes if region_codes is not None else regions()
    if isinstance(codes, str) or not all(isinstance(c, str) for c in codes):
        raise TypeError(f"region_codes must be a list of region codes such as ['FRA', 'POL'], got {region_codes!r}")
    return {code: footprint(joules, code, pue=pue).kg_co2e for code in codes}


@dataclass(frozen=True)
class Deployment:
    """A model served for a year: energy, carbon and cost, and the assumptions behind them."""

    requests_per_day: float
    joules_per_request: float
    pue: float
    grid: GridIntensity
    idle_share: float
    price_per_kwh: float
    currency: str
    energy_kind: str

    @property
    def active_kwh_per_year(self) -> float:
        """Device energy spent answering requests."""
        return self.requests_per_day * DAYS_PER_YEAR * self.joules_per_request / JOULES_PER_KWH

    @property
    def device_kwh_per_year(self) -> float:
        """Active energy plus idle energy: idle is ``idle_share`` of the device total."""
        return self.active_kwh_per_year / (1.0 - self.idle_share)

    @property
    def kwh_per_year(self) -> float:
        """Facility energy: device energy times PUE."""
        return self.device_kwh_per_year * self.pue

    @property
    def tco2e_per_year(self) -> float:
        """Tonnes of CO2e per year."""
        return self.kwh_per_year * self.grid.g_per_kwh / 1e6

    @property
    def cost_per_year(self) -> float:
        """Electricity cost per year at ``price_per_kwh``."""
        return self.kwh_per_year * self.price_per_kwh

    def assumptions(self) -> list[str]:
        """Every input and step, in words."""
        g = self.grid
        return [
            f"{self.requests_per_day:,.0f} requests/day x {DAYS_PER_YEAR} days x "
            f"{self.joules_per_request:.4g} J/request "
            f"({self.energy_kind}) = {self.active_kwh_per_year:.4g} kWh/year active",
            f"idle share {self.idle_share:.0%} of device energy: device total = active / (1 - idle share) = "
            f"{self.device_kwh_per_year:.4g} kWh/year",
            f"PUE {self.pue:g}: facility energy = {self.kwh_per_year:.4g} kWh/year",
            f"grid: {g.name} ({g.region}) {g.g_per_kwh:g} gCO2e/kWh, {g.year} ({g.source})",
            f"price: {self.price_per_kwh:g} {self.currency}/kWh (your input)",
        ]

    def summary(self) -> str:
        """The three results on one line."""
        return (f"{self.kwh_per_year:,.4g} kWh/year, {self.tco2e_per_year:.4g} tCO2e/year, "
                f"{self.cost_per_year:,.4g} {self.currency}/year")


def deployment(requests_per_day: float, joules_per_request: float, region: str, *, pue: float = PUE_UPTIME_2023,
               idle_share: float = 0.0, price_per_kwh: float = 0.0, currency: str = "USD",
               energy_kind: str = "estimated") -> Deployment:
    """A year of serving: ``requests_per_day`` requests of ``joules_per_request`` each, in ``region``.

    ``idle_share`` in [0, 1) is the part of the device's energy spent waiting for requests.
    ``pue`` defaults to the Uptime Institute 2023 survey average (1.58).
    """
    requests = _check_number("requests_per_day", requests_per_day, minimum=0.0)
    jpr = _check_number("joules_per_request", joules_per_request, positive=True)
    pue = _check_number("pue", pue)
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1.0 (1.0 = device energy only), got {pue:g}")
    idle = checks.fraction("idle_share", idle_share)  # the share of device energy spent idle
    price = _check_number("price_per_kwh", price_per_kwh, minimum=0.0)
    checks.choice("energy_kind", energy_kind, ENERGY_KINDS)
    return Deployment(requests, jpr, pue, intensity(region), idle, price, currency, energy_kind)
