"""Quoted carbon claims: every row sourced, every recomputation matches its source's stated result."""
from __future__ import annotations

import pytest

from labkit import claims

#: Relative tolerance per claim with a stated value. The sources round (7.5 MWh, 3.2 t, 14.8 days),
#: so recomputing from their rounded inputs lands within these bounds; a claim added without an
#: entry here fails test_every_stated_claim_has_a_tolerance.
TOLERANCE = {
    "strubell_nas": 0.0001,  # the paper's own figures reproduce to the pound
    "patterson_nas": 0.01,  # 7,468 kWh x 0.431 = 3.22 t vs the rounded 3.2 t
    "patterson_gpt3": 0.005,  # 14.8 days is itself rounded from FLOPs / (10,000 x 24.6 TFLOPS)
    "bloom_training": 0.005,
    "google_ml_share": 0.001,
}


def test_every_claim_has_a_source_and_says_what_was_measured():
    table = claims.claims()
    assert len(table) >= 6
    for c in table.values():
        for name in ("claim", "what", "model", "hardware", "grid", "kind"):
            assert getattr(c, name).strip(), f"{c.key} has no {name}"
        assert len(c.source) > 40, f"{c.key} needs a real primary source"
        assert c.scope in ("operational", "embodied", "operational and embodied"), c
        if c.stated_value is None:  # no number to compare: the row must say why
            assert "not" in c.what or "not" in c.note, c.key
        else:
            assert c.stated_unit.strip(), c.key


def test_every_input_has_a_source_and_every_claim_recomputes():
    for key in claims.claims():
        found = claims.inputs(key)
        assert found, f"{key} has no inputs in claim_inputs.csv"
        for i in found.values():
            assert len(i.source) > 15, f"{key}.{i.name} needs a source"
        check = claims.recompute(key)
        assert check.claim.key == key and check.steps and check.unit


def test_every_stated_claim_has_a_tolerance():
    stated = {k for k, c in claims.claims().items() if c.stated_value is not None}
    assert stated == set(TOLERANCE)


@pytest.mark.parametrize("key", sorted(TOLERANCE))
def test_recomputation_matches_the_stated_result(key):
    check = claims.recompute(key)
    assert check.agrees(TOLERANCE[key]), str(check)
    assert check.ratio == pytest.approx(1.0, abs=TOLERANCE[key])


def test_strubell_arithmetic_and_the_flight_comparison():
    c = claims.recompute("strubell_nas")
    v = {n: i.value for n, i in claims.inputs("strubell_nas").items()}
    assert c.extra["kwh_pue"] == pytest.approx(v["kwh_pue"], rel=1e-5)  # Table 3's own kWh-PUE column
    assert c.extra["tonnes"] == pytest.approx(284.0, rel=0.001)  # Patterson et al.: "626,155 pounds (284 tCO2e)"
    assert c.extra["claim_t_per_flight"] == pytest.approx(300 / 125)
    assert c.extra["car_lifetimes"] == pytest.approx(626_155 / 126_000, rel=1e-4)  # "five cars"
    assert "basis the source never states" in str(c)


def test_patterson_re_estimates():
    nas = claims.recompute("patterson_nas")
    assert nas.extra["energy_mwh"] == pytest.approx(7.5, rel=0.01)
    assert round(nas.extra["strubell_over_actual"]) == 88  # "88X"
    gpt3 = claims.recompute("patterson_gpt3")
    assert gpt3.extra["energy_mwh"] == pytest.approx(1287, rel=0.005)
    assert gpt3.extra["plane_round_trips"] == pytest.approx(3.054, rel=0.01)  # Table 4's own ratio


def test_bloom_terms_match_the_paper():
    b = claims.recompute("bloom_training")
    assert b.extra["dynamic_kwh"] == pytest.approx(433_196)
    assert b.extra["dynamic_t"] == pytest.approx(24.7, rel=0.005)
    assert b.extra["embodied_t"] == pytest.approx(11.2, rel=0.01)
    assert b.recomputed == pytest.approx(b.extra["dynamic_t"] + b.extra["idle_t"] + b.extra["embodied_t"])


def test_inference_breakeven_by_hand():
    c = claims.recompute("inference_dominates")
    assert c.ratio is None and c.agrees() is None
    api_kwh = 340.514153674 / 0.394
    assert c.extra["api_kwh"] == pytest.approx(api_kwh)
    assert c.recomputed == pytest.approx(433_196 / (api_kwh / 230_768))
    assert c.extra["breakeven_days"] == pytest.approx(c.recomputed / (230_768 / 18))
    assert claims.breakeven_requests(1.0, 3600.0) == pytest.approx(1000)  # 1 kWh / 3.6 kJ per request


@pytest.mark.parametrize("call, error, match", [
    (lambda: claims.claim("ted_talk"), ValueError, "unknown claim 'ted_talk'. Valid claims: strubell_nas"),
    (lambda: claims.recompute("ted_talk"), ValueError, "unknown claim"),
    (lambda: claims.inputs("ted_talk"), ValueError, "unknown claim"),
    (lambda: claims.claim(3), TypeError, "key must be a claim name"),
    (lambda: claims.recompute("strubell_nas").agrees(2), ValueError, "tolerance must be"),
    (lambda: claims.breakeven_requests(10.0, 0.0), ValueError, "joules_per_request must be > 0"),
    (lambda: claims.breakeven_requests(-1.0, 5.0), ValueError, "training_kwh must be >= 0"),
    (lambda: claims.breakeven_requests("10", 5.0), TypeError, "training_kwh must be a real number"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
