"""Response caching (labkit.experiments.llm_cache): the cache, the workload's hit rate, the time model, serving a
tiny random Llama through labkit.llm.generate, and (slow, the real SmolLM2) the quick sweep's file."""
import importlib.util
from pathlib import Path

import pytest
import torch

from labkit import energy, llm, results
from labkit.experiments import llm_cache as lc

ROOT = Path(__file__).resolve().parents[1]


class CharChatTokenizer:
    """Just enough of a chat tokenizer for labkit.llm.generate on the tiny Llama (vocabulary 96): characters
    32..126 -> ids 3..97 folded into the vocabulary, a plain-text chat template."""

    eos_token_id = 2

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}> {m['content']}\n" for m in messages) + ("<assistant> " if add_generation_prompt
                                                                            else "")

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        ids = [3 + (ord(c) - 32) % 93 for c in text]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(32 + int(i) - 3) for i in ids if int(i) >= 3)


def test_cache_counts_hits_and_misses_on_normalized_prompts():
    cache = lc.ResponseCache(max_size=4)
    calls = []

    def generate(prompt):
        calls.append(prompt)
        return f"answer {len(calls)}"

    assert cache.respond("What is json?", generate) == ("answer 1", False)
    assert cache.respond("  what IS   json? ", generate) == ("answer 1", True)  # same key after normalize()
    assert cache.respond("What is csv?", generate) == ("answer 2", False)
    assert (cache.hits, cache.misses, cache.lookups, len(cache)) == (1, 2, 3, 2)
    assert cache.hit_rate == pytest.approx(1 / 3) and len(calls) == 2
    assert "WHAT is json?" in cache and "What is xml?" not in cache
    assert lc.normalize(" A\tb\n C ") == "a b c"
    cache.clear()
    assert (cache.hits, cache.misses, len(cache), cache.hit_rate) == (0, 0, 0, 0.0)


def test_cache_evicts_the_least_recently_used_entry():
    cache = lc.ResponseCache(max_size=2)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # a is now more recent than b
    cache.put("c", "3")
    assert cache.evictions == 1 and len(cache) == 2
    assert cache.get("b") is None and cache.get("a") == "1" and cache.get("c") == "3"


@pytest.mark.parametrize("hit_rate", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_workload_repeats_exactly_the_share_asked_for(hit_rate):
    pool = lc.prompt_pool(40)
    prompts = lc.repeated_prompts(pool, 40, hit_rate, seed=1)
    assert len(prompts) == 40 and set(prompts) <= set(pool)
    assert lc.ideal_hit_rate(prompts) == pytest.approx(round(hit_rate * 40) / 40)
    cache = lc.ResponseCache(max_size=40)  # holds every distinct prompt: it hits exactly the repeats
    for p in prompts:
        cache.respond(p, lambda q: q.upper())
    assert cache.hit_rate == pytest.approx(hit_rate, abs=1 / 40)
    assert lc.repeated_prompts(pool, 40, hit_rate, seed=1) == prompts  # seeded


def test_workload_repeats_popular_prompts_most_and_a_small_cache_hits_less():
    pool = lc.prompt_pool(40)
    prompts = lc.repeated_prompts(pool, 400, 0.9, seed=0)
    counts = sorted((prompts.count(p) for p in set(prompts)), reverse=True)
    assert counts[0] > 10 * counts[len(counts) // 2]  # Zipf: the most asked prompt dominates the median one
    small = lc.ResponseCache(max_size=2)
    for p in prompts:
        small.respond(p, str.upper)
    assert small.evictions > 0 and small.hit_rate < lc.ideal_hit_rate(prompts)


def test_predicted_seconds_is_the_miss_share_of_generation_plus_a_lookup():
    assert lc.predicted_seconds(0.0, 1.0, 1e-6) == pytest.approx(1.0 + 1e-6)
    assert lc.predicted_seconds(0.75, 0.8, 0.0) == pytest.approx(0.2)
    assert lc.predicted_seconds(1.0, 0.8, 2e-6) == pytest.approx(2e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda: lc.ResponseCache(max_size=0), ValueError, "max_size must be a positive int"),
    (lambda: lc.normalize("   "), ValueError, "prompt must not be empty"),
    (lambda: lc.normalize(3), TypeError, "prompt must be a str"),
    (lambda: lc.ResponseCache().put("a", None), TypeError, "response must be a str"),
    (lambda: lc.ResponseCache().respond("a", "not a function"), TypeError, "generate must be a function"),
    (lambda: lc.repeated_prompts(lc.prompt_pool(10), 40, 0.5), ValueError, "needs 20 distinct"),
    (lambda: lc.repeated_prompts(["a", "A "], 2, 0.0), ValueError, "distinct prompts"),
    (lambda: lc.repeated_prompts("abc", 2, 0.0), TypeError, "pool must be a list"),
    (lambda: lc.repeated_prompts(lc.prompt_pool(10), 5, 1.0), ValueError, r"hit_rate must be in \[0, 1\)"),
    (lambda: lc.prompt_pool(10_000), ValueError, "size must be at most"),
    (lambda: lc.predicted_seconds(1.5, 1.0, 0.0), ValueError, "hit_rate must be in"),
    (lambda: lc.predicted_seconds(0.5, -1.0, 0.0), ValueError, "t_generate must be >= 0"),
    (lambda: lc.serve([], str.upper), ValueError, "prompts must be a non-empty list"),
    (lambda: lc.serve(["a"], str.upper, cache={}), TypeError, "cache must be a ResponseCache"),
    (lambda: lc.cache_sweep(str.upper, hit_rates=[0.5, 2.0]), ValueError, r"hit_rates\[1\]"),
])
def test_bad_input_is_refused_with_the_fix(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_serving_a_tiny_llama_through_the_cache_gives_the_same_answers_and_labels_energy():
    model = llm.tiny_llama(seed=0)
    tokenizer = CharChatTokenizer()

    def respond(prompt):
        return llm.generate(model, tokenizer, prompt, max_new_tokens=3)

    prompts = lc.repeated_prompts(lc.prompt_pool(8), 8, 0.5, seed=0)
    meters = [energy.AssumedPowerMeter(8.0, "CPU, 2 busy threads", lc.POWER_SOURCE)]
    plain = lc.serve(prompts, respond, meters=meters)
    cached = lc.serve(prompts, respond, lc.ResponseCache(), meters=meters)
    assert cached["responses"] == plain["responses"]  # greedy decoding: a cached answer is the answer
    assert (plain["hits"], plain["misses"], cached["hits"], cached["misses"]) == (0, 8, 4, 4)
    assert cached["hit_rate"] == 0.5
    for got in (plain, cached):
        assert got["energy_kind"] == "estimated" and "assumed" in got["energy_scope"]
        # assumed power x time: joules per request = watts x seconds per request
        assert got["joules_per_request"] == pytest.approx(8.0 * got["seconds_per_request"], rel=0.05)


def test_cache_sweep_rows_pair_each_hit_rate_with_and_without_the_cache():
    model = llm.tiny_llama(seed=0)
    tokenizer = CharChatTokenizer()
    rows, times = lc.cache_sweep(lambda p: llm.generate(model, tokenizer, p, max_new_tokens=2), [0.0, 0.5],
                                 requests=4, timing_prompts=2,
                                 meters=[energy.AssumedPowerMeter(8.0, "CPU", "a test")], progress=None)
    assert [(r["hit_rate"], r["cache"]) for r in rows] == [(0.0, False), (0.0, True), (0.5, False), (0.5, True)]
    assert [r["measured_hit_rate"] for r in rows] == [0.0, 0.0, 0.0, 0.5]
    assert [r["distinct_prompts"] for r in rows] == [4, 4, 2, 2]
    assert rows[3]["predicted_seconds_per_request"] == pytest.approx(
        0.5 * times["t_generate"]["mean"] + times["t_lookup"])
    assert len(times["t_generate"]["samples"]) == 2 and times["t_lookup"] > 0


@pytest.mark.slow
def test_quick_sweep_on_smollm2_writes_a_valid_file(tmp_path):
    spec = importlib.util.spec_from_file_location("llm_cache_sweep", ROOT / "benchmarks" / "llm_cache_sweep.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "llm_cache_quick.json"
    assert script.main(["--quick", "--out", str(out)]) == 0
    data = results.read(out, "llm_cache")
    assert len(data["rows"]) == 2 * len(script.QUICK["hit_rates"])
    assert {r["energy_kind"] for r in data["rows"]} <= {"estimated", "measured"}
    assert results.one(data["rows"], hit_rate=0.5, cache=True)["measured_hit_rate"] == 0.5
