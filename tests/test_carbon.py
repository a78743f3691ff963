"""Carbon accounting: the bundled grid table, arithmetic, and clear errors."""
from __future__ import annotations

import pytest

from labkit import carbon


def test_grid_table_rows_are_cited_and_plausible():
    table = carbon.grid_table()
    assert len(table) >= 15 and "WORLD" in table
    for g in table.values():
        assert 0 < g.g_per_kwh < 1200, g
        assert 2015 <= g.year <= 2030, g
        assert len(g.source) > 20, f"{g.region} needs a real source"
    assert carbon.regions()[0] == "NOR"  # cleanest first


def test_intensity_accepts_code_or_name_any_case():
    assert carbon.intensity("fra") == carbon.intensity("France") == carbon.grid_table()["FRA"]


def test_unknown_region_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        carbon.intensity("Atlantis")
    assert "Atlantis" in str(e.value) and "FRA (France)" in str(e.value) and "WORLD" in str(e.value)
    with pytest.raises(TypeError, match="region"):
        carbon.intensity(250)


def test_footprint_arithmetic():
    g = carbon.intensity("DEU").g_per_kwh
    fp = carbon.footprint(3.6e6, "DEU", pue=1.5, price_per_kwh=0.3, currency="EUR", energy_kind="measured")
    assert fp.it_kwh == pytest.approx(1.0)
    assert fp.facility_kwh == pytest.approx(1.5)
    assert fp.kg_co2e == pytest.approx(1.5 * g / 1000)
    assert fp.cost == pytest.approx(0.45)
    text = str(fp)
    assert "measured" in text and "PUE 1.5" in text and "Germany" in text and "EUR" in text


def test_by_region_spans_the_table():
    kg = carbon.by_region(3.6e9)
    assert list(kg) == carbon.regions()
    assert max(kg.values()) / min(kg.values()) > 5  # Patterson et al.: location changes CO2e 5-10x


def test_deployment_arithmetic_and_assumptions():
    d = carbon.deployment(1_000_000, 36.0, "USA", pue=1.2, idle_share=0.25, price_per_kwh=0.1)
    active = 1_000_000 * 365 * 36.0 / 3.6e6
    assert d.active_kwh_per_year == pytest.approx(active)
    assert d.device_kwh_per_year == pytest.approx(active / 0.75)
    assert d.kwh_per_year == pytest.approx(active / 0.75 * 1.2)
    assert d.tco2e_per_year == pytest.approx(d.kwh_per_year * carbon.intensity("USA").g_per_kwh / 1e6)
    assert d.cost_per_year == pytest.approx(d.kwh_per_year * 0.1)
    words = " ".join(d.assumptions())
    for needle in ("requests/day", "idle share 25%", "PUE 1.2", "United States", "USD/kWh", "estimated"):
        assert needle in words
    assert carbon.deployment(10, 1.0, "FRA").pue == carbon.PUE_UPTIME_2023


def test_joules_from_power():
    assert carbon.joules_from_power(8.0, 2.5) == 20.0
    assert carbon.joules_to_kwh(7.2e6) == pytest.approx(2.0)


@pytest.mark.parametrize("call, match", [
    (lambda: carbon.joules_from_power(10, 0), "seconds must be a positive duration"),
    (lambda: carbon.joules_from_power(10, -1.0), "seconds must be a positive duration"),
    (lambda: carbon.footprint(-1.0, "FRA"), "joules"),
    (lambda: carbon.footprint(1.0, "FRA", pue=0.9), "pue must be >= 1.0"),
    (lambda: carbon.footprint(1.0, "FRA", price_per_kwh=-0.1), "price_per_kwh"),
    (lambda: carbon.footprint(1.0, "FRA", energy_kind="guessed"), "energy_kind"),
    (lambda: carbon.deployment(1, 1.0, "FRA", energy_kind="typed"), "energy_kind"),
    (lambda: carbon.deployment(100, 0.0, "FRA"), "joules_per_request must be > 0"),
    (lambda: carbon.deployment(-5, 1.0, "FRA"), "requests_per_day"),
    (lambda: carbon.deployment(100, 1.0, "FRA", idle_share=1.0), r"idle_share must be in \[0, 1\)"),
    (lambda: carbon.deployment(100, 1.0, "Mars"), "unknown region"),
    (lambda: carbon.footprint(float("nan"), "FRA"), "finite"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_errors():
    with pytest.raises(TypeError, match="joules must be a real number"):
        carbon.footprint("1 J", "FRA")
