"""The deployment calculator of notebook 05: serve a model for a year, see energy, carbon and cost.

:class:`DeploymentCalculator` - requests per day, joules per request, PUE, region, idle share and
price in; kWh, tCO2e and cost per year out, with every assumption written below.

The energy notebook's models are built by :mod:`labkit.experiments.energy_zoo` and drawn by
:mod:`labkit.figures.energy`; this module only holds the widget.
"""
from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from labkit import carbon
from labkit.figures import COLORS, significant, style
from labkit.widgets import leave_room_for_toolbar, redraw

#: Units for the carbon chart, largest first, as (name, tonnes per unit): the chart takes the largest unit in
#: which the biggest bar is at least 1, so a small digits model is not rounded to 0 tonnes.
CARBON_UNITS = (("tCO2e", 1.0), ("kg CO2e", 1e-3), ("g CO2e", 1e-6), ("mg CO2e", 1e-9))


def carbon_unit(tonnes_max: float) -> tuple[str, float]:
    """The unit (name, tonnes per unit) in which ``tonnes_max`` is at least 1 (mg CO2e below that)."""
    if isinstance(tonnes_max, bool) or not isinstance(tonnes_max, (int, float)) or not tonnes_max >= 0:
        raise ValueError(f"tonnes_max must be a number >= 0, got {tonnes_max!r}")
    return next(((name, t) for name, t in CARBON_UNITS if tonnes_max >= t), CARBON_UNITS[-1])


class DeploymentCalculator(widgets.VBox):
    """Serve a model for a year: energy, carbon and cost, with every assumption shown.

    Controls (attributes): ``preset``, ``requests``, ``joules``, ``pue``, ``region``, ``idle_share``, ``price``.
    ``presets`` maps a name to ``(joules_per_request, kind)``; choosing one sets both, and the kind
    is shown in the assumptions. A value typed by hand is labelled ``assumed``.
    Outputs: ``result`` (an HTML widget with the numbers and assumptions) and ``figure`` (CO2e per year
    in every bundled region, the chosen one highlighted, in the unit that suits the numbers: tonnes down to
    milligrams, three significant figures, named in the title and axis). ``deployment`` is the current
    :class:`labkit.carbon.Deployment`.
    """

    def __init__(self, joules_per_request: float = 1.0, requests_per_day: float = 1e6, region: str = "USA",
                 pue: float = carbon.PUE_UPTIME_2023, idle_share: float = 0.3, price_per_kwh: float = 0.15,
                 energy_kind: str = "assumed", presets: dict[str, tuple[float, str]] | None = None):
        # Validate once through the calculator itself: bad input fails here, with its message.
        carbon.deployment(requests_per_day, joules_per_request, region, pue=pue, idle_share=idle_share,
                          price_per_kwh=price_per_kwh, energy_kind=energy_kind)
        self.presets = dict(presets or {})
        for name, preset in self.presets.items():
            if not (isinstance(preset, tuple) and len(preset) == 2 and preset[1] in carbon.ENERGY_KINDS):
                raise ValueError(f"presets[{name!r}] must be (joules_per_request, kind) with kind in "
                                 f"{carbon.ENERGY_KINDS}, got {preset!r}")
        self.energy_kind = energy_kind
        self._grid = carbon.grid_table()
        self._order = carbon.regions()
        style_ = {"description_width": "150px"}
        layout = widgets.Layout(width="460px")
        self.requests = widgets.FloatLogSlider(value=requests_per_day, base=10, min=0, max=10, step=0.1,
                                               description="requests per day", style=style_, layout=layout)
        self.joules = widgets.BoundedFloatText(value=joules_per_request, min=1e-12, max=1e9,
                                               description="joules per request", style=style_, layout=layout)
        self.preset = widgets.Dropdown(options=["(type a value)"] + list(self.presets), description="from model",
                                       style=style_, layout=layout)
        self.pue = widgets.FloatSlider(value=pue, min=1.0, max=2.5, step=0.01, description="PUE", style=style_,
                                       layout=layout)
        self.region = widgets.Dropdown(options=[(f"{self._grid[c].name} ({c})", c) for c in self._order],
                                       value=carbon.intensity(region).region, description="region", style=style_,
                                       layout=layout)
        self.idle_share = widgets.FloatSlider(value=idle_share, min=0.0, max=0.9, step=0.05,
                                              description="idle share", style=style_, layout=layout)
        self.price = widgets.BoundedFloatText(value=price_per_kwh, min=0.0, max=10.0, step=0.01,
                                              description="price per kWh", style=style_, layout=layout)
        self.result = widgets.HTML()
        self.figure = go.FigureWidget()
        self.figure.add_bar(x=[f"{c}" for c in self._order], y=[0.0] * len(self._order),
                            marker_color=[COLORS[0]] * len(self._order))
        style(self.figure, "CO2e per year if served from each region", height=320)
        leave_room_for_toolbar(self.figure)
        self.joules.observe(self._joules_typed, names="value")
        for control in (self.requests, self.joules, self.pue, self.region, self.idle_share, self.price):
            control.observe(self._update, names="value")
        self.preset.observe(self._use_preset, names="value")
        self.deployment: carbon.Deployment | None = None
        self._update()
        super().__init__([widgets.HTML("<b>Deployment calculator</b>"), self.preset, self.joules, self.requests,
                          self.idle_share, self.pue, self.region, self.price, self.result, self.figure])

    def _use_preset(self, change) -> None:
        if change["new"] in self.presets:
            joules, kind = self.presets[change["new"]]
            self.energy_kind = kind
            if self.joules.value == joules:
                self._update()
            self.joules.value = joules  # triggers _update
        else:
            self.energy_kind = "assumed"
            self._update()

    def _joules_typed(self, change) -> None:
        """A value typed by hand is an assumption, whatever preset it started from."""
        preset = self.presets.get(self.preset.value)
        if preset is not None and change["new"] != preset[0]:
            self.energy_kind = "assumed"
            self.preset.value = "(type a value)"

    def _calc(self, region: str) -> carbon.Deployment:
        return carbon.deployment(self.requests.value, self.joules.value, region, pue=self.pue.value,
                                 idle_share=self.idle_share.value, price_per_kwh=self.price.value,
                                 energy_kind=self.energy_kind)

    def _update(self, change=None) -> None:
        self.deployment = d = self._calc(self.region.value)
        items = "".join(f"<li>{html.escape(a)}</li>" for a in d.assumptions())
        self.result.value = (f"<div style='font-family:sans-serif'><b>{html.escape(d.summary())}</b>"
                             f"<br>Assumptions:<ul>{items}</ul></div>")
        per_region = [self._calc(c).tco2e_per_year for c in self._order]
        unit, tonnes = carbon_unit(max(per_region))
        with redraw(self.figure):
            self.figure.data[0].y = significant([t / tonnes for t in per_region], 3)
            self.figure.layout.title.text = f"{unit} per year if served from each region"
            self.figure.layout.yaxis.title.text = f"{unit} per year"
            self.figure.data[0].marker.color = [COLORS[3] if c == self.region.value else COLORS[0]
                                                for c in self._order]


def deployment_calculator(joules_per_request: float = 1.0, **kwargs) -> DeploymentCalculator:
    """A :class:`DeploymentCalculator` starting at ``joules_per_request`` (other settings as keywords)."""
    return DeploymentCalculator(joules_per_request, **kwargs)
