"""Energy per generated token (both estimates) and carbon per million tokens, by hand."""
import pytest

from labkit import carbon
from labkit.energy import op_energy_table
from labkit.experiments import llm_energy as E


def test_power_times_time_by_hand():
    assert E.assumed_watts(2) == 8.0
    assert E.joules_per_token(20.0, 8.0) == pytest.approx(0.4)
    # twice as fast = half the joules: the only thing this estimate can credit
    assert E.joules_per_token(40.0, 8.0) == pytest.approx(0.2)


def test_model_prices_flops_and_bytes_with_horowitz():
    pj = op_energy_table()
    work = E.decode_work(weights_read=1000, weight_bytes=4000)
    assert (work.flops, work.bytes_moved) == (2000, 4000)
    want = 1000 * (pj["fp32 mult"] + pj["fp32 add"]) * 1e-12 + 4000 * pj["32b DRAM read"] / 4 * 1e-12
    assert E.model_joules(work) == pytest.approx(want)
    # bytes dominate a decode step: halving the bytes nearly halves the modelled energy
    half = E.model_joules(E.decode_work(1000, 2000))
    assert 0.45 < half / E.model_joules(work) < 0.55


def test_table_and_carbon():
    cases = [{"label": "dense", "decode_tokens_per_s": 20.0, "weights_read": 134_515_008, "weight_bytes": 538_060_032},
             {"label": "Wanda 50%, CSR", "decode_tokens_per_s": 10.0, "weights_read": 81_430_848,
              "weight_bytes": 538_060_032 // 2}]
    rows = E.energy_table(cases, threads=2, region="FRA")
    assert [r["label"] for r in rows] == ["dense", "Wanda 50%, CSR"]
    # slower, so more joules by power x time; fewer bytes, so fewer by the model
    assert rows[1]["power_time_j"] == pytest.approx(2 * rows[0]["power_time_j"])
    assert rows[1]["model_j"] < rows[0]["model_j"]
    g = carbon.intensity("FRA").g_per_kwh
    assert rows[0]["g_per_million_power_time"] == pytest.approx(0.4 * 1e6 / 3.6e6 * g)
    text = E.energy_text(rows, region="FRA")
    assert "ESTIMATED" in text and "CodeCarbon" in text and "Horowitz" in text


@pytest.mark.parametrize("call, match", [
    (lambda: E.joules_per_token(0.0, 8.0), "tokens_per_s must be > 0"),
    (lambda: E.joules_per_token(float("nan"), 8.0), "tokens_per_s"),
    (lambda: E.assumed_watts(0), "threads"),
    (lambda: E.decode_work(0, 10), "weights_read"),
    (lambda: E.energy_table([]), "non-empty list"),
    (lambda: E.energy_table([{"label": "x", "decode_tokens_per_s": 1.0}]), "weights_read"),
    (lambda: E.grams_per_million(1.0, "Atlantis"), "unknown region"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_side_by_side_cases_take_speeds_measured_in_turns_and_bytes_from_the_matching_rows():
    dense = {"method": "dense", "pattern": "dense", "sparsity": 0.0, "model_sparsity": 0.0, "parameters": 1000,
             "decode_tokens_per_s": 20.0, "bytes": {"dense_fp32": 4000, "csr_fp32": 8000}}
    magnitude90 = {"method": "magnitude", "pattern": "unstructured", "sparsity": 0.9, "model_sparsity": 0.75,
                   "parameters": 1000, "decode_tokens_per_s": 19.0, "bytes": {"dense_fp32": 4000, "csr_fp32": 1200}}
    wanda90 = {**magnitude90, "method": "wanda", "bytes": {"dense_fp32": 4000, "csr_fp32": 999}}
    small = {"method": "structured", "pattern": "ffn_channels", "sparsity": 0.5, "model_sparsity": 0.3,
             "parameters": 700, "ffn_keep": 0.5, "decode_tokens_per_s": 25.0,
             "bytes": {"dense_fp32": 2800, "csr_fp32": 5600}}
    models = {"dense": {"kind": "dense", "runs_as": "dense", "decode_tokens_per_s": 21.0},
              "unstructured 90%, torch CSR": {"kind": "unstructured", "block_sparsity": 0.8994,
                                              "runs_as": "torch CSR", "decode_tokens_per_s": 24.0},
              "structured, 50% of FFN channels kept": {"kind": "structured", "ffn_keep": 0.5,
                                                       "runs_as": "smaller dense", "decode_tokens_per_s": 26.0},
              "GPU dense": {"kind": "dense", "runs_as": "dense, torch.bfloat16", "decode_tokens_per_s": 900.0}}
    sweep = {"rows": [dense, wanda90, magnitude90, small], "side_by_side": {"models": models}}
    cases = E.side_by_side_cases(sweep)
    assert [c["label"] for c in cases] == list(models)[:3]  # the GPU model is no CPU estimate
    assert [c["decode_tokens_per_s"] for c in cases] == [21.0, 24.0, 26.0]  # the speeds measured in turns
    assert [c["weights_read"] for c in cases] == [1000, 250, 700]
    assert [c["weight_bytes"] for c in cases] == [4000, 1200, 2800]  # the magnitude row's CSR bytes
    with pytest.raises(ValueError, match="--side-by-side"):
        E.side_by_side_cases({"rows": [dense]})
    with pytest.raises(ValueError, match="no sweep row matches"):
        E.side_by_side_cases({"rows": [dense], "side_by_side": {"models": models}})
    # Rows need no speed of their own (speeds come from the in-turns block), but they need their bytes.
    no_speed = [{k: v for k, v in r.items() if k != "decode_tokens_per_s"} for r in sweep["rows"]]
    assert E.side_by_side_cases({**sweep, "rows": no_speed}) == cases
    with pytest.raises(ValueError, match="bytes"):
        E.side_by_side_cases({**sweep, "rows": [{k: v for k, v in dense.items() if k != "bytes"}]})
