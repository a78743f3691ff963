"""A response cache in front of a language model: time and energy per request against the hit rate.

Many requests to a deployed model repeat an earlier one (the same question asked again, a retry, a popular
prompt). A *response cache* answers a repeat from memory: a dictionary lookup (microseconds) instead of a
generation (about a second for SmolLM2-135M on a laptop CPU). With greedy decoding the cached answer is exactly
the answer the model would give again, so the saving costs nothing in quality.

* :class:`ResponseCache`: an exact-match cache keyed by the normalised prompt (:func:`normalize`), LRU
  eviction at ``max_size`` entries, hit/miss/eviction counters.
* :func:`prompt_pool` and :func:`repeated_prompts`: a workload of requests whose share of repeats is set exactly
  (which prompts recur follows a Zipf-like popularity), so the hit rate is the experiment's knob.
* :func:`predicted_seconds`: the model ``time per request = (1 - hit rate) x t_generate + t_lookup``.
* :func:`serve`: serve a workload with or without the cache, timed end to end, with the energy of the window;
  :func:`cache_sweep`: every hit rate, both ways, against the prediction (``benchmarks/llm_cache_sweep.py``).

**Energy is estimated here, not measured**, wherever the CPU has no readable energy counter (no RAPL, as on
most laptop VMs and CI runners): then the only reading is CodeCarbon's assumed 4 W per thread x the measured wall
time (:mod:`labkit.experiments.llm_energy`), labelled ``estimated``, which scales with time alone. Where RAPL can
be read, the CPU package (and DRAM) counters are the primary, ``measured``, reading. Rows say which.
"""
from __future__ import annotations

import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from labkit import checks, energy
from labkit.data import STDLIB_MODULES
from labkit.experiments.llm_energy import POWER_SOURCE, assumed_watts

#: The template of the workload's prompts: one short question per standard-library module.
PROMPT_TEMPLATE = "In one sentence, what is the Python module {name} for?"
#: The hit rates the sweep sets, and how many requests each workload has.
HIT_RATES = (0.0, 0.25, 0.5, 0.75, 0.9)
REQUESTS = 30
#: New tokens per answer: short answers keep the sweep to minutes; the cache's saving scales with this.
MAX_NEW_TOKENS = 16


def normalize(prompt: str) -> str:
    """The cache key of ``prompt``: surrounding space stripped, runs of whitespace made one space, case folded.

    So ``"What is  json?"`` and ``"what is json?"`` share one entry. Anything more (synonyms, reordering) would be
    a *semantic* cache, which can return a wrong answer; an exact-match cache never does, for a deterministic model.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    key = " ".join(prompt.split()).casefold()
    if not key:
        raise ValueError("prompt must not be empty or whitespace only")
    return key


class ResponseCache:
    """Exact-match responses keyed by :func:`normalize` (prompt), least recently used evicted past ``max_size``.

    ``get`` counts a hit or a miss; ``put`` stores (and may evict); :meth:`respond` does both around a
    generation function. ``hit_rate`` is hits / lookups so far.
    """

    def __init__(self, max_size: int = 1024):
        self.max_size = checks.positive_int("max_size", max_size)
        self._entries: OrderedDict[str, str] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt: object) -> bool:
        return isinstance(prompt, str) and bool(prompt.strip()) and normalize(prompt) in self._entries

    def get(self, prompt: str) -> str | None:
        """The stored response for ``prompt`` (a hit, now the most recently used), or ``None`` (a miss)."""
        key = normalize(prompt)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        return None

    def put(self, prompt: str, response: str) -> None:
        """Store ``response`` for ``prompt``; past ``max_size`` entries the least recently used one goes."""
        if not isinstance(response, str):
            raise TypeError(f"response must be a str, got {type(response).__name__}")
        key = normalize(prompt)
        self._entries[key] = response
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self.evictions += 1

    def respond(self, prompt: str, generate: Callable[[str], str]) -> tuple[str, bool]:
        """``(response, hit)``: from the cache on a hit, else ``generate(prompt)``, stored for next time."""
        if not callable(generate):
            raise TypeError(f"generate must be a function prompt -> response, got {type(generate).__name__}")
        cached = self.get(prompt)
        if cached is not None:
            return cached, True
        response = generate(prompt)
        self.put(prompt, response)
        return response, False

    @property
    def lookups(self) -> int:
        """Hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits / lookups (0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        self._entries.clear()
        self.hits = self.misses = self.evictions = 0


# ------------------------------------------------------------------------------------------------
# The workload
# ------------------------------------------------------------------------------------------------

def prompt_pool(size: int = REQUESTS) -> list[str]:
    """``size`` distinct prompts (:data:`PROMPT_TEMPLATE` over the standard-library modules), the same everywhere."""
    size = checks.positive_int("size", size)
    if size > len(STDLIB_MODULES):
        raise ValueError(f"size must be at most {len(STDLIB_MODULES)} (the modules in labkit.data.STDLIB_MODULES), "
                         f"got {size}")
    return [PROMPT_TEMPLATE.format(name=name) for name in STDLIB_MODULES[:size]]


def repeated_prompts(pool: Sequence[str], requests: int, hit_rate: float, seed: int = 0,
                     zipf_s: float = 1.0) -> list[str]:
    """``requests`` prompts of which exactly ``round(hit_rate x requests)`` repeat an earlier one.

    The repeats sit at seeded random positions (never the first request). Each repeat picks one of the prompts
    already asked with Zipf-like popularity: the ``k``-th prompt introduced is chosen with weight ``1 / k^zipf_s``,
    so a few prompts recur often and most rarely, as in real traffic. The first occurrences walk through
    ``pool`` in order, so the pool must hold at least ``requests - round(hit_rate x requests)`` distinct prompts.
    A cache large enough to hold them all (:func:`ideal_hit_rate`) then hits exactly that share.
    """
    if isinstance(pool, (str, bytes)) or not isinstance(pool, Sequence):
        raise TypeError(f"pool must be a list of prompts (e.g. prompt_pool()), got {type(pool).__name__}")
    requests = checks.positive_int("requests", requests)
    hit_rate = checks.fraction("hit_rate", hit_rate)
    seed = checks.nonneg_int("seed", seed)
    zipf_s = checks.finite("zipf_s", zipf_s, low=0.0)
    keys = [normalize(p) for p in pool]
    if len(set(keys)) != len(keys):
        raise ValueError("pool must hold distinct prompts (after normalize()): a duplicate would be an unplanned hit")
    repeats = round(hit_rate * requests)
    if repeats > requests - 1:
        repeats = requests - 1  # the first request can never be a repeat
    fresh = requests - repeats
    if fresh > len(pool):
        raise ValueError(f"pool has {len(pool)} prompts but the workload needs {fresh} distinct ones "
                         f"({requests} requests at hit rate {hit_rate:g}): pass a larger pool or fewer requests")
    rng = np.random.default_rng(seed)
    is_repeat = np.zeros(requests, dtype=bool)
    is_repeat[1 + rng.choice(requests - 1, size=repeats, replace=False)] = True
    out: list[str] = []
    seen = 0
    for repeat in is_repeat:
        if repeat:
            weights = 1.0 / np.arange(1, seen + 1) ** zipf_s
            out.append(pool[int(rng.choice(seen, p=weights / weights.sum()))])
        else:
            out.append(pool[seen])
            seen += 1
    return out


def ideal_hit_rate(prompts: Sequence[str]) -> float:
    """The share of ``prompts`` that repeat an earlier one (after :func:`normalize`): an unbounded cache's hit rate."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts")
    keys = [normalize(p) for p in prompts]
    return 1 - len(set(keys)) / len(keys)


def predicted_seconds(hit_rate: float, t_generate: float, t_lookup: float) -> float:
    """Seconds per request with a cache: ``(1 - hit_rate) x t_generate + t_lookup``.

    Every request pays one lookup; only the misses pay a generation (storing the answer is another dictionary
    operation, within ``t_lookup``). Without a cache every request costs ``t_generate``.
    """
    hit_rate = checks.fraction("hit_rate", hit_rate, include_high=True)
    t_generate = checks.finite("t_generate", t_generate, low=0.0)
    t_lookup = checks.finite("t_lookup", t_lookup, low=0.0)
    return (1 - hit_rate) * t_generate + t_lookup


# ------------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------------

def cpu_meters(threads: int) -> list:
    """The meters for a CPU: RAPL where it can be read (measured), and assumed power x time (estimated), always."""
    watts = assumed_watts(threads)
    return [energy.RaplMeter(), energy.AssumedPowerMeter(watts, f"CPU, {threads} busy threads", POWER_SOURCE)]


def time_generate(respond: Callable[[str], str], prompts: Sequence[str]) -> dict:
    """Seconds of one ``respond(prompt)`` for each of ``prompts`` (after one untimed warm-up): mean, std, each."""
    if not callable(respond):
        raise TypeError(f"respond must be a function prompt -> response, got {type(respond).__name__}")
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts")
    respond(prompts[0])  # first calls allocate memory and pick kernels
    samples = []
    for p in prompts:
        start = time.perf_counter()
        respond(p)
        samples.append(time.perf_counter() - start)
    return {"mean": statistics.fmean(samples), "std": statistics.pstdev(samples), "samples": samples}


def time_lookup(prompt: str = "In one sentence, what is the Python module json for?", repeats: int = 20_000) -> float:
    """Seconds of one cache hit (:meth:`ResponseCache.get` of a stored prompt), averaged over ``repeats`` calls."""
    repeats = checks.positive_int("repeats", repeats)
    cache = ResponseCache()
    cache.put(prompt, "a stored answer")
    start = time.perf_counter()
    for _ in range(repeats):
        cache.get(prompt)
    return (time.perf_counter() - start) / repeats


def serve(prompts: Sequence[str], respond: Callable[[str], str], cache: ResponseCache | None = None,
          meters: Sequence | None = None) -> dict:
    """Serve ``prompts`` one after another, through ``cache`` (``None``: every request generates); one window.

    Returns ``seconds`` (wall, end to end), ``seconds_per_request``, ``joules_per_request`` with its
    ``energy_kind`` / ``energy_scope`` / ``energy_source`` (from :func:`labkit.energy.measure` with ``meters``,
    default :func:`cpu_meters` for 2 threads), ``hits``, ``misses`` and ``hit_rate`` (0 without a cache), and
    ``responses``.
    """
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts (e.g. repeated_prompts(...))")
    if not callable(respond):
        raise TypeError(f"respond must be a function prompt -> response, got {type(respond).__name__}")
    if cache is not None and not isinstance(cache, ResponseCache):
        raise TypeError(f"cache must be a ResponseCache or None, got {type(cache).__name__}")
    hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    responses = []
    with energy.measure(items=len(prompts), meters=list(meters) if meters is not None else cpu_meters(2),
                        min_window_s=1e-6) as m:
        for p in prompts:
            responses.append(cache.respond(p, respond)[0] if cache is not None else respond(p))
    report = m.report
    assert report is not None and report.wall_s is not None, "measure() reports its window when the block ends"
    primary = report.primary
    hits = cache.hits - hits0 if cache is not None else 0
    misses = cache.misses - misses0 if cache is not None else len(prompts)
    return {"seconds": report.wall_s, "seconds_per_request": report.wall_s / len(prompts),
            "joules_per_request": report.joules_per_item, "energy_kind": primary.kind,
            "energy_scope": primary.scope, "energy_source": primary.source, "hits": hits, "misses": misses,
            "hit_rate": hits / len(prompts), "responses": responses}


def cache_sweep(respond: Callable[[str], str], hit_rates: Sequence[float] = HIT_RATES, requests: int = REQUESTS,
                timing_prompts: int = 6, seed: int = 0, meters: Sequence | None = None,
                progress: Callable[[str], object] | None = print) -> tuple[list[dict], dict]:
    """Every hit rate served without and with a fresh cache, against :func:`predicted_seconds`; ``(rows, times)``.

    First ``t_generate`` is measured on ``timing_prompts`` prompts from the end of the pool (:func:`time_generate`)
    and ``t_lookup`` (:func:`time_lookup`); then, for each hit rate, the workload :func:`repeated_prompts` is
    served without a cache and with one (big enough never to evict), end to end. One row per (hit rate, cache):
    ``hit_rate`` (asked), ``cache``, ``measured_hit_rate``, ``requests``, ``distinct_prompts``,
    ``seconds_per_request``, ``predicted_seconds_per_request``, ``joules_per_request`` and its energy labels.
    ``times``: ``t_generate`` (mean, std, samples) and ``t_lookup``.
    """
    requests = checks.positive_int("requests", requests)
    timing_prompts = checks.positive_int("timing_prompts", timing_prompts)
    if isinstance(hit_rates, (str, bytes)) or not isinstance(hit_rates, Sequence) or not hit_rates:
        raise ValueError("hit_rates must be a non-empty list of rates in [0, 1)")
    rates = [checks.fraction(f"hit_rates[{i}]", h) for i, h in enumerate(hit_rates)]
    say = progress or (lambda _: None)
    pool = prompt_pool(len(STDLIB_MODULES))
    if requests + timing_prompts > len(pool):
        raise ValueError(f"requests + timing_prompts must be at most {len(pool)} (the prompt pool), got "
                         f"{requests + timing_prompts}")
    t_gen = time_generate(respond, pool[-timing_prompts:])  # prompts the workloads never ask
    t_lookup = time_lookup(pool[0])
    say(f"t_generate {t_gen['mean']:.3f} s (std {t_gen['std']:.3f}, {timing_prompts} prompts), "
        f"t_lookup {1e6 * t_lookup:.2f} us")
    rows = []
    for rate in rates:
        prompts = repeated_prompts(pool[:requests], requests, rate, seed=seed)
        distinct = len({normalize(p) for p in prompts})
        for use_cache in (False, True):
            cache = ResponseCache(max_size=max(1, distinct)) if use_cache else None
            got = serve(prompts, respond, cache, meters)
            predicted = predicted_seconds(ideal_hit_rate(prompts), t_gen["mean"], t_lookup) if use_cache \
                else t_gen["mean"]
            rows.append({"hit_rate": rate, "cache": use_cache, "measured_hit_rate": got["hit_rate"],
                         "requests": requests, "distinct_prompts": distinct,
                         "seconds_per_request": got["seconds_per_request"],
                         "predicted_seconds_per_request": predicted,
                         "joules_per_request": got["joules_per_request"], "energy_kind": got["energy_kind"],
                         "energy_scope": got["energy_scope"], "energy_source": got["energy_source"]})
            say(f"hit rate {rate:.2f} {'cache   ' if use_cache else 'no cache'}: {got['seconds_per_request']:.3f} "
                f"s/request (predicted {predicted:.3f}), {got['joules_per_request']:.2f} J/request "
                f"{got['energy_kind'].upper()}, {got['hits']} hits")
    return rows, {"t_generate": t_gen, "t_lookup": t_lookup}
