"""From joules to kWh, kgCO2e and money: carbon accounting that shows every assumption.

* Grid carbon intensity comes from a small bundled table, ``labkit/tables/grid_intensity.csv``
  (region, gCO2e/kWh, year, source on every row). You name the region: nothing is geolocated.
* PUE (power usage effectiveness) scales IT energy up to facility energy: cooling, power
  conversion. 1.0 means IT energy only.
* Carbon is *derived*: it inherits the kind of the energy it came from (measured or estimated),
  and the result says which.

Location alone changes the carbon of the same work by about 5-10x (Patterson et al. 2021,
arXiv:2104.10350): compare regions with :func:`by_region`.

* Embodied carbon is the manufacturing emissions of the hardware, from a second bundled table,
  ``labkit/tables/embodied_carbon.csv`` (device, kg CO2e, scope, source on every row). It is
  spread over the hours a device is used in its life (:func:`embodied_per_hour`) and always
  reported as its own term beside the operational carbon, never folded into it: on a clean grid,
  or on a device that sits idle most of its life, it is the larger of the two (:func:`hour_of_use`).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from labkit import checks

JOULES_PER_KWH = 3.6e6
DAYS_PER_YEAR = 365
HOURS_PER_YEAR = 24 * DAYS_PER_YEAR

#: What a joules figure can be: the energy kinds of :mod:`labkit.energy`, plus "assumed" for a number
#: the user typed in.
ENERGY_KINDS = ("measured", "sampled", "estimated", "assumed")

#: Global average PUE from the Uptime Institute Global Data Center Survey 2023 (as used by
#: carbontracker's ``PUE_2023`` constant): a cited default for a data-centre deployment.
PUE_UPTIME_2023 = 1.58
PUE_SOURCE = "Uptime Institute Global Data Center Survey 2023 (average PUE), as used by carbontracker"

#: The amortization assumptions of Luccioni, Viguier and Ligozat 2022 (arXiv:2211.02001) for BLOOM's
#: hardware: replaced every 6 years, in use 85% of the time. Cited defaults for the embodied term.
BLOOM_LIFETIME_YEARS = 6.0
BLOOM_UTILIZATION = 0.85
AMORTIZATION_SOURCE = ("Luccioni, Viguier, Ligozat 2022 (arXiv:2211.02001): 6-year replacement rate, "
                       "85% average utilization")


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


def intensity(region: str | GridIntensity) -> GridIntensity:
    """The grid intensity of ``region`` (a code like ``"FRA"`` or a name like ``"France"``, any case).

    A :class:`GridIntensity` is returned as it is: that is how a paper's own grid figure (one the
    bundled table does not have) goes into :func:`footprint`, with its source attached.
    """
    if isinstance(region, GridIntensity):
        checks.finite("region.g_per_kwh", region.g_per_kwh, low=0.0)
        return region
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


def footprint(joules: float, region: str | GridIntensity, *, pue: float = 1.0, price_per_kwh: float = 0.0,
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


# ---- embodied carbon: the hardware's manufacturing emissions, spread over its hours of use ----

@dataclass(frozen=True)
class Embodied:
    """The manufacturing emissions of one device, as a published figure and its scope.

    ``published_kg_co2e`` is the figure as its source gives it; ``manufacturing_share`` is the part
    of it that is manufacturing (1.0 when the figure is manufacturing only; a laptop's life-cycle
    report gives a total and a production percentage). ``gpus`` is how many GPUs the figure covers
    (0 for a server without its GPUs or a laptop). ``cite`` is a short citation for printing;
    ``source`` says exactly where the figure comes from.
    """

    device: str
    name: str
    published_kg_co2e: float
    manufacturing_share: float
    gpus: int
    scope: str
    cite: str
    source: str

    @property
    def kg_co2e(self) -> float:
        """Manufacturing emissions of one device, kg CO2e."""
        return self.published_kg_co2e * self.manufacturing_share

    @property
    def kg_per_gpu(self) -> float:
        """Manufacturing emissions per GPU the figure covers (an 8-GPU baseboard's figure / 8)."""
        if self.gpus < 1:
            raise ValueError(f"{self.device!r} covers no GPU ({self.scope}); use kg_co2e for the whole device")
        return self.kg_co2e / self.gpus


def embodied_table() -> dict[str, Embodied]:
    """The bundled table ``labkit/tables/embodied_carbon.csv``, keyed by device code."""
    text = resources.files("labkit").joinpath("tables/embodied_carbon.csv").read_text()
    return {row["device"]: Embodied(row["device"], row["name"], float(row["published_kg_co2e"]),
                                    float(row["manufacturing_share"]), int(row["gpus"]), row["scope"], row["cite"],
                                    row["source"])
            for row in csv.DictReader(text.splitlines())}


def devices() -> list[str]:
    """Valid device codes for :func:`embodied`, in table order."""
    return list(embodied_table())


def embodied(device: str) -> Embodied:
    """The manufacturing emissions of ``device`` (a code like ``"a100-gpu"``, any case)."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'a100-gpu', got {type(device).__name__}")
    table = embodied_table()
    wanted = device.strip().lower()
    if wanted in table:
        return table[wanted]
    valid = ", ".join(f"{e.device} ({e.name})" for e in table.values())
    raise ValueError(f"unknown device {device!r}. Valid devices: {valid}")


def _check_amortization(lifetime_years: float, utilization: float) -> tuple[float, float]:
    lifetime = _check_number("lifetime_years", lifetime_years, positive=True)
    # Utilization 0 would spread the emissions over no hours at all: the result would be infinite.
    use = checks.finite("utilization", utilization)
    if not 0 < use <= 1:
        raise ValueError(f"utilization must be in (0, 1]: the share of its lifetime the device is in use, "
                         f"e.g. 0.85; got {use:g}")
    return lifetime, use


def _amortization_words(lifetime_years: float, utilization: float) -> str:
    """Where the lifetime and utilization came from: the BLOOM paper's defaults, or the caller."""
    if (lifetime_years, utilization) == (BLOOM_LIFETIME_YEARS, BLOOM_UTILIZATION):
        return AMORTIZATION_SOURCE
    return "your input"


def embodied_per_hour(kg_co2e: float, lifetime_years: float, utilization: float) -> float:
    """Grams CO2e of manufacturing per hour of use.

    The device's ``kg_co2e`` is spread over the hours it is used in its life:
    ``lifetime_years`` x 8760 h x ``utilization`` (the share of those hours it is busy). A device
    used less carries more of its manufacturing per hour of use.
    """
    kg = _check_number("kg_co2e", kg_co2e, minimum=0.0)
    lifetime, use = _check_amortization(lifetime_years, utilization)
    return kg * 1000.0 / (lifetime * HOURS_PER_YEAR * use)


@dataclass(frozen=True)
class HourOfUse:
    """One hour of a device at work: operational and embodied carbon side by side, in grams."""

    device: Embodied
    count: int
    watts: float
    pue: float
    grid: GridIntensity
    lifetime_years: float
    utilization: float

    @property
    def operational_g(self) -> float:
        """Electricity: ``watts`` (all ``count`` devices) x PUE x grid intensity, for one hour."""
        return self.watts / 1000.0 * self.pue * self.grid.g_per_kwh

    @property
    def embodied_g(self) -> float:
        """Manufacturing of ``count`` devices, spread over their hours of use (:func:`embodied_per_hour`)."""
        return self.count * embodied_per_hour(self.device.kg_co2e, self.lifetime_years, self.utilization)

    @property
    def embodied_share(self) -> float:
        """Embodied / (embodied + operational): above 0.5 manufacturing is the larger term."""
        return embodied_share(self.operational_g, self.embodied_g)

    @property
    def dominant(self) -> str:
        """``"embodied"`` or ``"operational"``: the larger of the two terms."""
        return "embodied" if self.embodied_g > self.operational_g else "operational"

    @property
    def crossover_g_per_kwh(self) -> float:
        """The grid intensity at which both terms are equal: on any cleaner grid, embodied dominates."""
        return crossover_intensity(self.embodied_g, self.watts, self.pue)

    def assumptions(self) -> list[str]:
        """Each input in words, to print next to the result."""
        d, g = self.device, self.grid
        return [f"device: {self.count} x {d.name}, {d.kg_co2e:.4g} kg CO2e each ({d.scope}; {d.cite})",
                f"lifetime {self.lifetime_years:g} years, in use {self.utilization:.0%} of it "
                f"({_amortization_words(self.lifetime_years, self.utilization)}): "
                f"{self.embodied_g:.4g} g CO2e embodied per hour of use",
                f"power {self.watts:g} W, PUE {self.pue:g}, grid {g.name} ({g.region}) {g.g_per_kwh:g} gCO2e/kWh: "
                f"{self.operational_g:.4g} g CO2e operational per hour",
                f"embodied share {self.embodied_share:.0%}; embodied dominates below "
                f"{self.crossover_g_per_kwh:.4g} gCO2e/kWh"]

    def __str__(self) -> str:
        head = (f"{self.operational_g:.4g} g operational + {self.embodied_g:.4g} g embodied CO2e per hour "
                f"({self.dominant} dominates)")
        return "\n".join([head] + ["  " + a for a in self.assumptions()])


def embodied_share(operational: float, embodied_co2e: float) -> float:
    """The embodied part of a total: ``embodied / (operational + embodied)``, both in the same unit."""
    op = _check_number("operational", operational, minimum=0.0)
    em = _check_number("embodied_co2e", embodied_co2e, minimum=0.0)
    if op + em == 0:
        raise ValueError("operational and embodied_co2e are both 0: there is no total to take a share of")
    return em / (op + em)


def crossover_intensity(embodied_g_per_hour: float, watts: float, pue: float = 1.0) -> float:
    """Grid intensity (gCO2e/kWh) at which an hour's electricity emits as much as its embodied share.

    Solve ``watts / 1000 x pue x intensity = embodied_g_per_hour``: on a grid cleaner than this,
    manufacturing is the larger part of the device's footprint.
    """
    em = _check_number("embodied_g_per_hour", embodied_g_per_hour, minimum=0.0)
    w = _check_number("watts", watts, positive=True)
    pue = _check_number("pue", pue)
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1.0 (1.0 = device energy only), got {pue:g}")
    return em / (w / 1000.0 * pue)


def hour_of_use(device: str, watts: float, region: str | GridIntensity, *, count: int = 1, pue: float = 1.0,
                lifetime_years: float = BLOOM_LIFETIME_YEARS, utilization: float = BLOOM_UTILIZATION) -> HourOfUse:
    """Operational vs embodied carbon of one hour of ``count`` x ``device`` drawing ``watts`` in all.

    ``lifetime_years`` and ``utilization`` default to the BLOOM paper's assumptions (6 years, 85%);
    a lightly used device (a laptop, a GPU idle most of the day) has a much lower ``utilization``.
    """
    d = embodied(device)
    count = checks.positive_int("count", count)
    w = _check_number("watts", watts, positive=True)
    pue = _check_number("pue", pue)
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1.0 (1.0 = device energy only), got {pue:g}")
    lifetime, use = _check_amortization(lifetime_years, utilization)
    return HourOfUse(d, count, w, pue, intensity(region), lifetime, use)


@dataclass(frozen=True)
class EmbodiedTerm:
    """The embodied carbon a deployment carries: its devices' manufacturing, for the hours it uses them."""

    device: Embodied
    count: int
    lifetime_years: float
    utilization: float
    device_hours_per_year: float

    @property
    def g_per_device_hour(self) -> float:
        """Manufacturing per hour of use of one device (:func:`embodied_per_hour`)."""
        return embodied_per_hour(self.device.kg_co2e, self.lifetime_years, self.utilization)

    @property
    def tco2e_per_year(self) -> float:
        """Tonnes CO2e of manufacturing charged to one year of the deployment."""
        return self.count * self.device_hours_per_year * self.g_per_device_hour / 1e6

    def assumptions(self) -> list[str]:
        """The embodied inputs in words."""
        d = self.device
        return [f"embodied: {self.count} x {d.name}, {d.kg_co2e:.4g} kg CO2e each ({d.scope}; {d.cite})",
                f"amortized over {self.lifetime_years:g} years at {self.utilization:.0%} use "
                f"({_amortization_words(self.lifetime_years, self.utilization)}) = "
                f"{self.g_per_device_hour:.4g} g CO2e per device-hour; {self.device_hours_per_year:,.0f} "
                f"device-hours/year each = {self.tco2e_per_year:.4g} tCO2e/year embodied"]


@dataclass(frozen=True)
class Deployment:
    """A model served for a year: energy, carbon and cost, and the assumptions behind them.

    ``tco2e_per_year`` is operational carbon (electricity) only. The manufacturing of the hardware,
    when asked for, is its own labelled term, ``embodied`` (``embodied_tco2e_per_year``), and the
    two add up in ``total_tco2e_per_year``.
    """

    requests_per_day: float
    joules_per_request: float
    pue: float
    grid: GridIntensity
    idle_share: float
    price_per_kwh: float
    currency: str
    energy_kind: str
    embodied: EmbodiedTerm | None = None

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
        """Tonnes of CO2e per year from electricity (operational carbon)."""
        return self.kwh_per_year * self.grid.g_per_kwh / 1e6

    @property
    def embodied_tco2e_per_year(self) -> float:
        """Tonnes of CO2e per year from manufacturing the hardware; 0.0 when no embodied term was asked for."""
        return self.embodied.tco2e_per_year if self.embodied is not None else 0.0

    @property
    def total_tco2e_per_year(self) -> float:
        """Operational plus embodied tonnes of CO2e per year."""
        return self.tco2e_per_year + self.embodied_tco2e_per_year

    @property
    def embodied_share(self) -> float:
        """Embodied part of the total carbon (0.0 without an embodied term)."""
        if self.embodied is None:
            return 0.0
        return embodied_share(self.tco2e_per_year, self.embodied_tco2e_per_year)

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
        ] + (self.embodied.assumptions() if self.embodied is not None else [])

    def summary(self) -> str:
        """The three results on one line (four with an embodied term, labelled as such)."""
        text = (f"{self.kwh_per_year:,.4g} kWh/year, {self.tco2e_per_year:.4g} tCO2e/year, "
                f"{self.cost_per_year:,.4g} {self.currency}/year")
        if self.embodied is not None:
            text += (f"; + {self.embodied_tco2e_per_year:.4g} tCO2e/year embodied "
                     f"({self.embodied_share:.0%} of {self.total_tco2e_per_year:.4g} tCO2e/year in all)")
        return text


def deployment(requests_per_day: float, joules_per_request: float, region: str | GridIntensity, *,
               pue: float = PUE_UPTIME_2023, idle_share: float = 0.0, price_per_kwh: float = 0.0,
               currency: str = "USD", energy_kind: str = "estimated", embodied_device: str | None = None,
               device_count: int = 1, lifetime_years: float = BLOOM_LIFETIME_YEARS,
               utilization: float = BLOOM_UTILIZATION, device_hours_per_year: float | None = None) -> Deployment:
    """A year of serving: ``requests_per_day`` requests of ``joules_per_request`` each, in ``region``.

    ``idle_share`` in [0, 1) is the part of the device's energy spent waiting for requests.
    ``pue`` defaults to the Uptime Institute 2023 survey average (1.58).

    Embodied carbon is off unless ``embodied_device`` names a row of :func:`embodied_table`. Then
    ``device_count`` such devices carry their manufacturing, amortized over ``lifetime_years`` at
    ``utilization`` (defaults: the BLOOM paper's 6 years and 85%), for ``device_hours_per_year``
    hours of use each. Left as None, that is a device given to this deployment alone:
    8760 h x ``utilization``, which charges the deployment 1/``lifetime_years`` of the device each year.
    """
    requests = _check_number("requests_per_day", requests_per_day, minimum=0.0)
    jpr = _check_number("joules_per_request", joules_per_request, positive=True)
    pue = _check_number("pue", pue)
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1.0 (1.0 = device energy only), got {pue:g}")
    idle = checks.fraction("idle_share", idle_share)  # the share of device energy spent idle
    price = _check_number("price_per_kwh", price_per_kwh, minimum=0.0)
    checks.choice("energy_kind", energy_kind, ENERGY_KINDS)
    term = None
    if embodied_device is not None:
        device = embodied(embodied_device)
        count = checks.positive_int("device_count", device_count)
        lifetime, use = _check_amortization(lifetime_years, utilization)
        if device_hours_per_year is None:
            hours = HOURS_PER_YEAR * use
        else:
            hours = _check_number("device_hours_per_year", device_hours_per_year, minimum=0.0)
            if hours > HOURS_PER_YEAR:
                raise ValueError(f"device_hours_per_year must be <= {HOURS_PER_YEAR} (the hours in a year), "
                                 f"got {hours:g}")
        term = EmbodiedTerm(device, count, lifetime, use, hours)
    return Deployment(requests, jpr, pue, intensity(region), idle, price, currency, energy_kind, term)
