"""Embodied carbon: the bundled table, amortization arithmetic checked by hand, the BLOOM case, clear errors."""
from __future__ import annotations

import pytest

from labkit import carbon

# BLOOM's final training (Luccioni et al. 2022, arXiv:2211.02001): GPU-hours on 8-GPU nodes.
BLOOM_GPU_HOURS = 1_082_990
BLOOM_GPUS_PER_NODE = 8


def test_embodied_table_rows_are_cited_and_plausible():
    table = carbon.embodied_table()
    assert {"a100-gpu", "bloom-node", "hgx-h100", "macbook-air-m2"} <= set(table)
    assert carbon.devices() == list(table)
    for e in table.values():
        assert 0 < e.kg_co2e < 10_000, e
        assert 0 < e.manufacturing_share <= 1, e
        assert e.gpus >= 0, e
        assert len(e.scope) > 10 and len(e.cite) > 10, f"{e.device} needs a scope and a short citation"
        assert len(e.source) > 40, f"{e.device} needs a real source"


def test_kg_co2e_is_the_manufacturing_part_of_the_published_figure():
    laptop = carbon.embodied("macbook-air-m2")
    assert laptop.kg_co2e == pytest.approx(147 * 0.69)  # life-cycle total x production share (Apple's report)
    assert carbon.embodied("a100-gpu").kg_co2e == 150
    assert carbon.embodied("hgx-h100").kg_per_gpu == pytest.approx(1312 / 8)
    with pytest.raises(ValueError, match="covers no GPU"):
        _ = carbon.embodied("bloom-node").kg_per_gpu


def test_embodied_lookup_any_case_and_clear_errors():
    assert carbon.embodied(" A100-GPU ") == carbon.embodied_table()["a100-gpu"]
    with pytest.raises(ValueError) as e:
        carbon.embodied("tpu-v9")
    assert "tpu-v9" in str(e.value) and "a100-gpu (" in str(e.value)
    with pytest.raises(TypeError, match="device must be a string"):
        carbon.embodied(100)


def test_embodied_per_hour_by_hand():
    # 150 kg over 6 years x 8760 h x 85% = 44,676 hours of use
    assert carbon.embodied_per_hour(150, 6, 0.85) == pytest.approx(150_000 / 44_676)
    # twice the life or twice the use: half the grams per hour
    assert carbon.embodied_per_hour(150, 12, 0.85) == pytest.approx(carbon.embodied_per_hour(150, 6, 0.85) / 2)
    assert carbon.embodied_per_hour(150, 6, 0.425) == pytest.approx(carbon.embodied_per_hour(150, 6, 0.85) * 2)
    assert carbon.embodied_per_hour(0, 6, 0.85) == 0.0


def test_bloom_embodied_reproduced_from_its_stated_assumptions():
    """150 kg per GPU and 2,500 kg per node, 6 years at 85%: Luccioni et al. report about 11.2 t."""
    life, use = carbon.BLOOM_LIFETIME_YEARS, carbon.BLOOM_UTILIZATION
    assert (life, use) == (6.0, 0.85)
    gpus_kg = carbon.embodied_per_hour(carbon.embodied("a100-gpu").kg_co2e, life, use) * BLOOM_GPU_HOURS / 1000
    nodes_kg = (carbon.embodied_per_hour(carbon.embodied("bloom-node").kg_co2e, life, use)
                * BLOOM_GPU_HOURS / BLOOM_GPUS_PER_NODE / 1000)
    assert gpus_kg == pytest.approx(150 * 1_082_990 / 44_676)  # 3,636 kg
    assert nodes_kg == pytest.approx(2500 * 1_082_990 / 8 / 44_676)  # 7,575 kg
    assert (gpus_kg + nodes_kg) / 1000 == pytest.approx(11.2, rel=0.01)


def test_hour_of_use_an_a100_in_france_is_mostly_operational():
    h = carbon.hour_of_use("a100-gpu", 400, "FRA")
    g = carbon.intensity("FRA").g_per_kwh
    assert h.operational_g == pytest.approx(0.4 * g)
    assert h.embodied_g == pytest.approx(150_000 / 44_676)
    assert h.dominant == "operational"
    assert h.crossover_g_per_kwh == pytest.approx(150_000 / 44_676 / 0.4)
    assert h.embodied_share == pytest.approx(h.embodied_g / (h.embodied_g + h.operational_g))
    words = str(h)
    assert "operational dominates" in words and "France" in words and "Luccioni" in words
    assert "85% average utilization" in words  # the defaults name their source
    assert "your input" in str(carbon.hour_of_use("a100-gpu", 400, "FRA", utilization=0.5))


def test_embodied_dominates_on_a_clean_grid_or_a_lightly_used_device():
    busy = carbon.hour_of_use("a100-gpu", 400, "FRA")
    # on a grid exactly at the crossover the two terms are equal
    at_crossover = carbon.GridIntensity("X", "at crossover", busy.crossover_g_per_kwh, 2024, "test")
    assert carbon.hour_of_use("a100-gpu", 400, at_crossover).embodied_share == pytest.approx(0.5)
    # the same GPU busy 5% of its life carries 17x more manufacturing per hour of use
    idle = carbon.hour_of_use("a100-gpu", 400, "FRA", utilization=0.05)
    assert idle.embodied_g == pytest.approx(busy.embodied_g * 0.85 / 0.05)
    assert idle.dominant == "embodied"
    # a laptop used 8 hours a day for 4 years, on the French grid
    laptop = carbon.hour_of_use("macbook-air-m2", 30, "FRA", lifetime_years=4, utilization=8 / 24)
    assert laptop.embodied_g == pytest.approx(147 * 0.69 * 1000 / (4 * 8760 / 3))
    assert laptop.dominant == "embodied"
    # count multiplies the embodied term; watts is the power of all of them together
    two = carbon.hour_of_use("a100-gpu", 800, "FRA", count=2)
    assert two.embodied_g == pytest.approx(2 * busy.embodied_g) and two.operational_g == pytest.approx(
        2 * busy.operational_g)


def test_embodied_share_and_crossover_by_hand():
    assert carbon.embodied_share(3.0, 1.0) == 0.25
    assert carbon.embodied_share(0.0, 2.0) == 1.0
    assert carbon.crossover_intensity(10.0, 500, pue=2.0) == pytest.approx(10.0 / (0.5 * 2.0))


def test_deployment_without_embodied_is_unchanged():
    d = carbon.deployment(1_000_000, 36.0, "USA", pue=1.2, idle_share=0.25, price_per_kwh=0.1)
    assert d.embodied is None and d.embodied_tco2e_per_year == 0.0 and d.embodied_share == 0.0
    assert d.total_tco2e_per_year == d.tco2e_per_year
    assert d.summary() == (f"{d.kwh_per_year:,.4g} kWh/year, {d.tco2e_per_year:.4g} tCO2e/year, "
                           f"{d.cost_per_year:,.4g} USD/year")
    assert len(d.assumptions()) == 5 and "embodied" not in " ".join(d.assumptions())


def test_deployment_with_embodied_term_by_hand():
    d = carbon.deployment(1_000_000, 36.0, "USA", embodied_device="hgx-h100", device_count=2)
    # a device given to this deployment alone: 1/6 of two 1,312 kg baseboards a year
    assert d.embodied_tco2e_per_year == pytest.approx(2 * 1312 / 6 / 1000)
    assert d.total_tco2e_per_year == pytest.approx(d.tco2e_per_year + d.embodied_tco2e_per_year)
    assert d.embodied_share == pytest.approx(d.embodied_tco2e_per_year / d.total_tco2e_per_year)
    assert "embodied" in d.summary() and any(a.startswith("embodied: 2 x NVIDIA HGX H100") for a in d.assumptions())
    # the operational numbers do not move
    plain = carbon.deployment(1_000_000, 36.0, "USA")
    assert d.tco2e_per_year == plain.tco2e_per_year and d.kwh_per_year == plain.kwh_per_year
    # a shared device charged for 1,000 of its hours a year, over 4 years at 50% use
    s = carbon.deployment(10, 1.0, "FRA", embodied_device="a100-gpu", device_hours_per_year=1000,
                          lifetime_years=4, utilization=0.5)
    assert s.embodied_tco2e_per_year == pytest.approx(150_000 / (4 * 8760 * 0.5) * 1000 / 1e6)


def test_intensity_accepts_a_papers_own_grid():
    grid = carbon.GridIntensity("PAPER", "US average 2020", 429.0, 2020, "Patterson et al. 2021")
    assert carbon.intensity(grid) is grid
    assert carbon.footprint(3.6e9, grid, pue=1.1).kg_co2e == pytest.approx(1000 * 1.1 * 0.429)


@pytest.mark.parametrize("call, error, match", [
    (lambda: carbon.embodied_per_hour(150, 0, 0.85), ValueError, "lifetime_years must be > 0"),
    (lambda: carbon.embodied_per_hour(150, -1, 0.85), ValueError, "lifetime_years must be > 0"),
    (lambda: carbon.embodied_per_hour(150, 6, 0), ValueError, r"utilization must be in \(0, 1\]"),
    (lambda: carbon.embodied_per_hour(150, 6, 1.5), ValueError, r"utilization must be in \(0, 1\]"),
    (lambda: carbon.embodied_per_hour(-5, 6, 0.5), ValueError, "kg_co2e must be >= 0"),
    (lambda: carbon.embodied_per_hour(float("nan"), 6, 0.5), ValueError, "kg_co2e must be a finite"),
    (lambda: carbon.embodied_per_hour("150", 6, 0.5), TypeError, "kg_co2e must be a real number"),
    (lambda: carbon.embodied_per_hour(150, 6, True), TypeError, "utilization must be a real number"),
    (lambda: carbon.hour_of_use("a100-gpu", 0, "FRA"), ValueError, "watts must be > 0"),
    (lambda: carbon.hour_of_use("a100-gpu", 400, "FRA", pue=0.9), ValueError, "pue must be >= 1.0"),
    (lambda: carbon.hour_of_use("a100-gpu", 400, "FRA", count=0), ValueError, "count must be a positive int"),
    (lambda: carbon.hour_of_use("a100-gpu", 400, "Mars"), ValueError, "unknown region"),
    (lambda: carbon.embodied_share(0, 0), ValueError, "both 0"),
    (lambda: carbon.embodied_share(-1, 2), ValueError, "operational must be >= 0"),
    (lambda: carbon.crossover_intensity(3.0, 0), ValueError, "watts must be > 0"),
    (lambda: carbon.deployment(10, 1.0, "FRA", embodied_device="tpu-v9"), ValueError, "unknown device"),
    (lambda: carbon.deployment(10, 1.0, "FRA", embodied_device="a100-gpu", device_count=0), ValueError,
     "device_count must be a positive int"),
    (lambda: carbon.deployment(10, 1.0, "FRA", embodied_device="a100-gpu", device_hours_per_year=9000), ValueError,
     "device_hours_per_year must be <= 8760"),
    (lambda: carbon.deployment(10, 1.0, "FRA", embodied_device="a100-gpu", utilization=0), ValueError,
     r"utilization must be in \(0, 1\]"),
    (lambda: carbon.intensity(carbon.GridIntensity("X", "x", float("inf"), 2024, "t")), ValueError,
     "region.g_per_kwh must be a finite"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
