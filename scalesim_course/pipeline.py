"""The whole serving pipeline, simulated: tokenise, response cache, route, batch, replicas, scale.

A request passes these stages, and every stage's time comes from a timestamp:

1. **tokenize**: the front end turns the prompt into tokens, at a stated cost per prompt token
   (`PipelineCosts.tokenize_per_token`), with no queue of its own (an assumption: the front end
   is never the bottleneck).
2. **cache**: a response-cache lookup (`PipelineCosts.cache_lookup` seconds). A request whose
   prompt was answered before and is still cached gets the stored answer at once: a *hit*
   skips every later stage. Prompts repeat with Zipf popularity (`workload.zipf_prompt_ids`),
   and a repeated prompt has the same lengths. An answer is stored when it is complete, so
   two copies of a prompt that arrive close together both reach the model.
3. **queue**, 4. **prefill**, 5. **decode**: the misses run through the discrete-event
   simulator (`sim.simulate`, iteration mode): a router picks a replica, the replica's
   continuous batcher admits the request within its batch and KV-cache budget (queue ends at
   admission), prefill ends at the first token, decode at the last. An autoscaler may add and
   remove replicas.

The cache and the simulator depend on each other: whether a request hits depends on when
earlier answers completed, and when they complete depends on which requests hit.
`run_pipeline` solves this exactly by iterating to a fixed point: simulate the misses, replay
the cache with those completion times, repeat until the set of hits no longer changes. Because
every cache decision depends only on earlier completions, the fixed point is the one causal
history (the function says how many rounds it took).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from typing import Callable, NamedTuple

import numpy as np

from . import metrics
from ._checks import (check_int, check_non_negative, check_positive, rng_from)
from .sim import ServingConfig, least_outstanding, simulate
from .workload import (AZURE_CONV_OUTPUT, AZURE_CONV_PROMPT, Workload, gamma_arrivals,
                       lognormal_lengths, zipf_prompt_ids)

STAGES = ("tokenize", "cache", "queue", "prefill", "decode")
MODEL_STAGES = ("queue", "prefill", "decode")   # a cache hit skips these
TIMESTAMPS = ("arrival", "tokenized", "looked_up", "admitted", "first_token", "finish")


# ----------------------------------------------------------------------------- the cache
class LRUCache:
    """A response cache: least-recently-used eviction and a time to live (the reference).

    An entry stored at time t is fresh while now < t + ttl; from t + ttl on, a get misses and
    removes it. A hit makes the entry the most recently used (its expiry stays). Storing a key
    that is held replaces its value, restarts its time to live and makes it the most recent,
    without evicting anything; storing a new key in a full cache first evicts the least
    recently used entry, fresh or expired. Capacity 0 stores nothing.

    Args:
        capacity: most entries held, an int >= 0.
        ttl: seconds an entry stays fresh, > 0 (math.inf: never expires).
    """

    def __init__(self, capacity: int, ttl: float = math.inf):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) \
                or capacity < 0:
            raise ValueError(f"capacity must be an int >= 0, got {capacity!r}")
        self.capacity = int(capacity)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"ttl must be a number > 0 (math.inf: no expiry), got {ttl!r}")
        self.ttl = float(ttl)
        self.entries: OrderedDict = OrderedDict()   # key -> (value, stored_at); last = newest
        self.hits = 0
        self.misses = 0

    def get(self, key, now: float):
        """The cached value of `key` at time `now`, or None on a miss (counted)."""
        entry = self.entries.get(key)
        if entry is not None and now < entry[1] + self.ttl:
            self.entries.move_to_end(key)
            self.hits += 1
            return entry[0]
        if entry is not None:
            del self.entries[key]
        self.misses += 1
        return None

    def put(self, key, value, now: float) -> None:
        """Store `value` under `key` at time `now` (value is never None)."""
        if self.capacity == 0:
            return
        if key in self.entries:
            self.entries.move_to_end(key)
        elif len(self.entries) >= self.capacity:
            self.entries.popitem(last=False)
        self.entries[key] = (value, now)

    def hit_rate(self) -> float:
        """hits / (hits + misses); 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


# ----------------------------------------------------------------------------- workload
def pipeline_workload(rate: float, n: int, *, n_prompts: int = 2000, zipf_s: float = 1.0,
                      cv: float = 1.0, seed=0, prompt_len=AZURE_CONV_PROMPT,
                      output_len=AZURE_CONV_OUTPUT, max_prompt: int = 4096,
                      max_output: int = 1024) -> Workload:
    """Chat requests whose prompts repeat with Zipf popularity.

    Arrivals have gamma gaps (cv = 1: Poisson); each request repeats one of `n_prompts`
    distinct prompts with probability proportional to 1 / rank**zipf_s; every distinct prompt
    has one prompt length and one answer length, lognormal with the Azure 2023 conversation
    trace's mean and median (`workload.AZURE_CONV_PROMPT`, `AZURE_CONV_OUTPUT`).

    Args:
        rate: requests/s; n: number of requests; seed: int or Generator.
    """
    check_int("n", n, minimum=1)
    check_int("n_prompts", n_prompts, minimum=1)
    rng = rng_from(seed)
    arrival = gamma_arrivals(rate, n, cv, rng)
    ids = zipf_prompt_ids(n, n_prompts, zipf_s, rng)
    plen = lognormal_lengths(*prompt_len, n_prompts, rng, maximum=max_prompt)
    olen = lognormal_lengths(*output_len, n_prompts, rng, maximum=max_output)
    return Workload.build(arrival, plen[ids], olen[ids], prompt_id=ids)


# ----------------------------------------------------------------------------- configuration
ROUTERS = ("least_outstanding", "round_robin", "random")


@dataclass(frozen=True)
class PipelineConfig:
    """The levers of the pipeline. Every field has a default that runs.

    Args:
        replicas: replicas up at time 0 (also the fleet size if autoscale is False).
        max_batch: most sequences a replica decodes together.
        kv_capacity: KV-cache tokens per replica; None: what fits beside the weights
            (`costmodel.RooflineCost.max_kv_tokens`).
        router: "least_outstanding", "round_robin" or "random".
        cache_size: response-cache entries (0: no cache), at most `MAX_CACHE`.
        cache_ttl: seconds an answer stays fresh, > 0, at most `MAX_TTL`.
        autoscale: add and remove replicas to keep `target_outstanding` requests per replica.
        min_replicas, max_replicas: the autoscaler's bounds.
        target_outstanding: requests (waiting or running) per replica the autoscaler aims at.
        autoscale_interval: seconds between autoscaler decisions.
    """

    replicas: int = 2
    max_batch: int = 64
    kv_capacity: int | None = None
    router: str = "least_outstanding"
    cache_size: int = 0
    cache_ttl: float = 300.0
    autoscale: bool = False
    min_replicas: int = 1
    max_replicas: int = 8
    target_outstanding: float = 32.0
    autoscale_interval: float = 10.0

    def check(self) -> "PipelineConfig":
        """Raise a ValueError/TypeError naming the field that is out of range."""
        check_int("replicas", self.replicas, minimum=1)
        check_int("max_batch", self.max_batch, minimum=1)
        if self.kv_capacity is not None:
            check_int("kv_capacity", self.kv_capacity, minimum=1)
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {self.router!r}")
        check_int("cache_size", self.cache_size, minimum=0)
        if self.cache_size > MAX_CACHE:
            raise ValueError(f"cache_size={self.cache_size} is above MAX_CACHE={MAX_CACHE}")
        check_positive("cache_ttl", self.cache_ttl)
        if self.cache_ttl > MAX_TTL:
            raise ValueError(f"cache_ttl={self.cache_ttl} is above MAX_TTL={MAX_TTL} s: "
                             "answers that old are stale")
        if not isinstance(self.autoscale, bool):
            raise TypeError(f"autoscale must be True or False, got {self.autoscale!r}")
        check_int("min_replicas", self.min_replicas, minimum=1)
        check_int("max_replicas", self.max_replicas, minimum=self.min_replicas)
        if self.autoscale and not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas={self.replicas} must lie within min_replicas="
                             f"{self.min_replicas} and max_replicas={self.max_replicas}")
        check_positive("target_outstanding", self.target_outstanding)
        check_positive("autoscale_interval", self.autoscale_interval)
        return self


MAX_CACHE = 5000     # entries: a front end's memory for answers (an assumption of the course)
MAX_TTL = 600.0      # seconds: older answers count as stale (an assumption of the course)


@dataclass(frozen=True)
class PipelineCosts:
    """The stated costs of the stages outside the model: assumptions of this course, not
    measurements. Replace them with measurements of your own front end.

    Args:
        tokenize_per_token: front-end seconds per prompt token (assumed 5 microseconds).
        cache_lookup: seconds per cache lookup (assumed 1 ms, a round trip to a key-value
            store on the same network).
        startup_delay: seconds from a scale-up decision until the replica serves (assumed
            30 s for loading Llama-2-7B's 13.5 GB of FP16 weights, 6.7 B parameters x 2
            bytes, and warming up).
        model, gpu: the served model and GPU (`costmodel.RooflineCost`, sourced there).
    """

    tokenize_per_token: float = 5e-6
    cache_lookup: float = 1e-3
    startup_delay: float = 30.0
    model: str = "llama-2-7b"
    gpu: str = "a100-80gb-sxm"

    def step_cost(self):
        from .costmodel import RooflineCost

        return RooflineCost(self.model, self.gpu)


@dataclass(frozen=True)
class Slo:
    """The pipeline's service-level objective.

    Args:
        p99_e2e: seconds; the 99th percentile of end-to-end latency must be at most this.
        ttft, tpot: per-request limits (seconds) that define goodput (`metrics.goodput`).
        min_goodput: goodput must be at least this share of the offered request rate.
    """

    p99_e2e: float = 20.0
    ttft: float = 2.0
    tpot: float = 0.1
    min_goodput: float = 0.95


# ----------------------------------------------------------------------------- policies
def make_router(name: str) -> Callable:
    """The router called `name` (see ROUTERS), as a `sim` router."""
    if name == "least_outstanding":
        return least_outstanding
    if name == "random":
        return lambda request, replicas, rng: int(rng.integers(len(replicas)))
    if name == "round_robin":
        count = [0]

        def round_robin(request, replicas, rng):
            count[0] += 1
            return (count[0] - 1) % len(replicas)
        return round_robin
    raise ValueError(f"router must be one of {ROUTERS}, got {name!r}")


def target_tracking(target_outstanding: float) -> Callable:
    """An autoscaler that wants ceil(outstanding requests / target) replicas (at least 1)."""
    check_positive("target_outstanding", target_outstanding)

    def autoscaler(view) -> int:
        return max(1, math.ceil(view.outstanding / target_outstanding))
    return autoscaler


# ----------------------------------------------------------------------------- the run
@dataclass
class PipelineResult:
    """One pipeline run: every request's timestamps, the engine's run and the bill.

    Attributes:
        workload: the requests; config, costs: what ran.
        hit: per request, True if the cache answered it.
        times: timestamp name (`TIMESTAMPS`) -> per-request array; admitted and first_token
            are nan for hits (those stages do not apply); finish = looked_up for hits.
        engine: the simulator's RunResult for the misses (engine_index maps them back).
        replica_seconds: what the fleet cost: replica-seconds from each replica's start-up
            decision (or time 0) until it stopped or the run ended.
        rounds: cache/simulator rounds until the fixed point.
    """

    workload: Workload
    config: PipelineConfig
    costs: PipelineCosts
    hit: np.ndarray
    times: dict
    engine: object
    engine_index: np.ndarray
    replica_seconds: float
    rounds: int

    @property
    def e2e(self) -> np.ndarray:
        return self.times["finish"] - self.times["arrival"]

    @property
    def ttft(self) -> np.ndarray:
        """Time to first token; a hit's whole answer comes at once."""
        first = np.where(self.hit, self.times["finish"], self.times["first_token"])
        return first - self.times["arrival"]

    @property
    def tpot(self) -> np.ndarray:
        """Seconds per output token after the first; nan for hits and one-token answers."""
        n = self.workload.output_tokens - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (self.times["finish"] - self.times["first_token"]) / np.maximum(n, 1)
        return np.where(self.hit | (n == 0), np.nan, t)

    @property
    def hit_rate(self) -> float:
        return float(self.hit.mean())

    def summary(self, slo: Slo | None = None) -> dict:
        """Hit rate, e2e percentiles, goodput and cost as one flat dict."""
        slo = slo or Slo()
        e2e = self.e2e
        duration = float(self.workload.arrival[-1] - self.workload.arrival[0])
        good = metrics.goodput(self.ttft, self.tpot, ttft_slo=slo.ttft, tpot_slo=slo.tpot,
                               duration=duration)
        offered = len(e2e) / duration
        out = {"hit_rate": self.hit_rate, "unfinished": int(np.isnan(e2e).sum()),
               "e2e_p50": float(np.percentile(e2e, 50)) if not np.isnan(e2e).any() else math.nan,
               "e2e_p99": float(np.percentile(e2e, 99)) if not np.isnan(e2e).any() else math.nan,
               "goodput_rps": good, "offered_rps": offered, "goodput_share": good / offered,
               "replica_seconds": self.replica_seconds,
               "mean_replicas": self.replica_seconds / duration, "rounds": self.rounds}
        out["meets_slo"] = bool(out["unfinished"] == 0 and out["e2e_p99"] <= slo.p99_e2e
                                and out["goodput_share"] >= slo.min_goodput)
        return out


def replay_cache(cache, prompt_id: np.ndarray, lookup_at: np.ndarray, stored_at: np.ndarray
                 ) -> np.ndarray:
    """Replay lookups and stores through a cache in time order; which lookups hit.

    Args:
        cache: an object with get(key, now) and put(key, value, now) (`LRUCache`).
        prompt_id: per request, the cache key (-1: unique prompt, never cached or looked up).
        lookup_at: per request, when it looks the cache up.
        stored_at: per request, when its answer is stored (nan: never, e.g. a hit).

    Returns:
        boolean array, True where the lookup hit. At equal times, stores come before
        lookups, and earlier requests before later ones.
    """
    n = len(prompt_id)
    events = []
    for i in range(n):
        if prompt_id[i] < 0:
            continue
        events.append((float(lookup_at[i]), 1, i))
        if not math.isnan(stored_at[i]):
            events.append((float(stored_at[i]), 0, i))
    events.sort()
    hit = np.zeros(n, dtype=bool)
    for t, kind, i in events:
        key = int(prompt_id[i])
        if kind == 0:
            cache.put(key, i, t)
        else:
            hit[i] = cache.get(key, t) is not None
    return hit


def run_pipeline(workload: Workload, config: PipelineConfig | None = None,
                 costs: PipelineCosts | None = None, *, seed=0, cache_factory=None,
                 max_rounds: int = 40) -> PipelineResult:
    """Run `workload` through the whole pipeline; every stage's time from timestamps.

    Args:
        workload: requests with prompt_id (`pipeline_workload`).
        config: the levers (`PipelineConfig`); costs: stated stage costs (`PipelineCosts`).
        seed: seeds the simulator's policies.
        cache_factory: cache_factory(capacity, ttl) -> a cache with get/put (default
            `LRUCache`); plug your own in here.
        max_rounds: give up (RuntimeError) if the cache and simulator do not agree by then.

    Returns:
        a `PipelineResult`.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
    config = (config or PipelineConfig()).check()
    costs = costs or PipelineCosts()
    check_non_negative("tokenize_per_token", costs.tokenize_per_token)
    check_non_negative("cache_lookup", costs.cache_lookup)
    make_cache = cache_factory or LRUCache
    step = costs.step_cost()
    kv = config.kv_capacity if config.kv_capacity is not None else step.max_kv_tokens()
    arrival = workload.arrival
    tokenized = arrival + costs.tokenize_per_token * workload.prompt_tokens
    looked_up = tokenized + costs.cache_lookup
    pid = workload.prompt_id if config.cache_size > 0 else np.full(len(workload), -1)
    n = len(workload)
    # round 0: as if answers were stored the moment they were looked up (the most hits)
    hit = replay_cache(make_cache(config.cache_size, config.cache_ttl), pid, tokenized,
                       np.where(pid >= 0, looked_up, np.nan)) if config.cache_size else \
        np.zeros(n, dtype=bool)
    for rounds in range(1, max_rounds + 1):
        engine, index = _simulate_misses(workload, ~hit, looked_up, config, costs, step, kv,
                                         seed)
        finish = np.full(n, np.nan)
        finish[index] = engine.finish
        if not config.cache_size:
            break
        new_hit = replay_cache(make_cache(config.cache_size, config.cache_ttl), pid, tokenized,
                               finish)
        if np.array_equal(new_hit, hit):
            break
        hit = new_hit
    else:
        raise RuntimeError(f"the cache and the simulator did not agree within max_rounds="
                           f"{max_rounds} rounds")
    times = {"arrival": arrival.copy(), "tokenized": tokenized, "looked_up": looked_up}
    for name, values in (("admitted", engine.start), ("first_token", engine.first_token),
                         ("finish", engine.finish)):
        full = np.full(n, np.nan)
        full[index] = values
        times[name] = full
    times["finish"] = np.where(hit, looked_up, times["finish"])
    bill = _replica_seconds(engine, config, costs)
    return PipelineResult(workload, config, costs, hit, times, engine, index, bill, rounds)


def _simulate_misses(workload, miss, looked_up, config, costs, step, kv, seed):
    index = np.flatnonzero(miss)
    at = looked_up[index]
    order = np.argsort(at, kind="stable")
    index = index[order]
    wl = Workload(looked_up[index], workload.prompt_tokens[index],
                  workload.output_tokens[index], workload.service_time[index],
                  workload.prompt_id[index])
    settings = dict(mode="iteration", cost=step, replicas=config.replicas,
                    max_batch=config.max_batch, kv_capacity=kv,
                    router=make_router(config.router), startup_delay=costs.startup_delay)
    if config.autoscale:
        settings.update(autoscaler=target_tracking(config.target_outstanding),
                        autoscale_interval=config.autoscale_interval,
                        min_replicas=config.min_replicas, max_replicas=config.max_replicas)
    return simulate(wl, ServingConfig(**settings), seed=seed), index


def _replica_seconds(engine, config: PipelineConfig, costs: PipelineCosts) -> float:
    """Replica-seconds billed: the engine's provisioned time (from each replica's scale-up
    decision, or time 0, until it stopped or the run ended, start-up included)."""
    return float(engine.provisioned_replica_seconds)


# ----------------------------------------------------------------------------- accounting
def stage_times(times: dict, hit) -> dict:
    """Per-stage durations per request from timestamps; nan where a stage does not apply."""
    t = {k: np.asarray(times[k], dtype=float) for k in TIMESTAMPS}
    hit = np.asarray(hit, dtype=bool)
    d = {"tokenize": t["tokenized"] - t["arrival"], "cache": t["looked_up"] - t["tokenized"],
         "queue": t["admitted"] - t["looked_up"], "prefill": t["first_token"] - t["admitted"],
         "decode": t["finish"] - t["first_token"]}
    for s in MODEL_STAGES:
        d[s] = np.where(hit, np.nan, d[s])
    return d


def stage_breakdown(timestamps: dict) -> dict:
    """Mean and p99 of each stage over the requests it applies to, and its share of all time.

    The reference of the notebook's exercise; see its docstring there.
    """
    for key in TIMESTAMPS + ("hit",):
        if key not in timestamps:
            raise ValueError(f"timestamps has no {key!r}: need {', '.join(TIMESTAMPS)} and hit")
    t = {k: np.asarray(timestamps[k], dtype=float).ravel() for k in TIMESTAMPS}
    hit = np.asarray(timestamps["hit"], dtype=bool).ravel()
    n = len(hit)
    if n == 0:
        raise ValueError("timestamps holds no requests")
    for k, v in t.items():
        if len(v) != n:
            raise ValueError(f"timestamps[{k!r}] has {len(v)} entries, hit has {n}")
        need = np.ones(n, bool) if k not in ("admitted", "first_token") else ~hit
        if np.isnan(v[need]).any():
            i = int(np.flatnonzero(np.isnan(v) & need)[0])
            raise ValueError(f"timestamps[{k!r}] is missing (nan) for request {i}")
    d = stage_times(t, hit)
    for s, v in d.items():
        if (v[~np.isnan(v)] < 0).any():
            raise ValueError(f"stage {s!r} has a negative duration: timestamps out of order")
    total = float(np.sum(t["finish"] - t["arrival"]))
    out = {}
    for s in STAGES:
        v = d[s][~np.isnan(d[s])]
        out[s] = {"mean": float(v.mean()) if v.size else math.nan,
                  "p99": float(np.percentile(v, 99)) if v.size else math.nan,
                  "share": float(v.sum() / total) if total > 0 else 0.0}
    return out


def where_time_goes(result: PipelineResult, quantiles=(50, 99), band: float = 1.0) -> dict:
    """Mean stage times of the requests near each e2e percentile (a stacked-bar input).

    For percentile q, takes the requests whose e2e lies between the (q - band)-th and the
    (q + band)-th percentile (clipped to 0..100), and averages each stage over them, counting
    a stage that does not apply (a hit's queue, prefill, decode) as 0.

    Returns:
        {q: {stage: seconds}}.
    """
    e2e = result.e2e
    d = stage_times(result.times, result.hit)
    out = {}
    for q in quantiles:
        lo, hi = np.percentile(e2e, [max(0, q - band), min(100, q + band)])
        near = (e2e >= lo) & (e2e <= hi)
        out[q] = {s: float(np.nan_to_num(d[s][near]).mean()) for s in STAGES}
    return out


# ----------------------------------------------------------------------------- the capstone
class Capstone(NamedTuple):
    """The capstone's task: a workload family, an SLO and a cost ceiling."""

    rate: float
    n: int
    n_prompts: int
    zipf_s: float
    cv: float
    slo: Slo
    max_replica_seconds: float


CAPSTONE = Capstone(rate=8.0, n=2400, n_prompts=20_000, zipf_s=0.9, cv=1.0,
                    slo=Slo(p99_e2e=25.0, ttft=2.0, tpot=0.1, min_goodput=0.95),
                    max_replica_seconds=800.0)


def capstone_workload(seed: int, *, held_out: bool = False, task: Capstone = CAPSTONE
                      ) -> Workload:
    """The capstone workload for `seed`; held_out: burstier arrivals (cv 1.5), same rate."""
    return pipeline_workload(task.rate, task.n, n_prompts=task.n_prompts, zipf_s=task.zipf_s,
                             cv=1.5 if held_out else task.cv, seed=seed)


def evaluate(config: PipelineConfig, seeds=(0,), *, held_out: bool = False,
             task: Capstone = CAPSTONE, cache_factory=None) -> list[dict]:
    """Run the capstone workload for each seed; each summary says if the SLO and ceiling hold.

    Returns:
        one `PipelineResult.summary` per seed, plus "within_budget" and "passes".
    """
    if not isinstance(config, PipelineConfig):
        raise TypeError(f"config must be a PipelineConfig, got {type(config).__name__}")
    out = []
    for seed in seeds:
        wl = capstone_workload(seed, held_out=held_out, task=task)
        s = run_pipeline(wl, config, seed=seed, cache_factory=cache_factory).summary(task.slo)
        s["seed"] = seed
        s["within_budget"] = s["replica_seconds"] <= task.max_replica_seconds
        s["passes"] = s["meets_slo"] and s["within_budget"]
        out.append(s)
    return out


# ----------------------------------------------------------------------------- figures
def plot_where_time_goes(where: dict, ax=None, unit: str = "s",
                         title: str = "Where the time goes"):
    """Stacked bars, one per percentile, of the mean stage times (`where_time_goes`).

    Args:
        where: {percentile: {stage: seconds}}.
    Returns:
        the axes.
    """
    from .plots import PALETTE, _axes

    ax = _axes(ax, title, "requests near the percentile of end-to-end latency",
               f"mean time per stage ({unit})")
    scale = 1e3 if unit == "ms" else 1.0
    labels = [f"p{q:g}" for q in where]
    bottom = np.zeros(len(where))
    for k, stage in enumerate(STAGES):
        h = np.array([where[q][stage] for q in where]) * scale
        ax.bar(labels, h, bottom=bottom, color=PALETTE[k % len(PALETTE)], label=stage, width=0.5)
        bottom += h
    ax.legend(fontsize=9, loc="upper left")
    return ax


def plot_cache_sweep(sizes, hit_rates, p99s, slo: float | None = None, axes=None,
                     title: str = "A bigger cache: more hits, a shorter tail"):
    """Hit rate (left) and p99 end-to-end latency (right) against cache size.

    Returns:
        the two axes.
    """
    import matplotlib.pyplot as plt

    from .plots import PALETTE

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.maximum(np.asarray(sizes, dtype=float), 0.5)  # size 0 drawn at the left edge
    axes[0].plot(x, np.asarray(hit_rates) * 100, "o-", color=PALETTE[0])
    axes[0].set(xscale="log", xlabel="cache size (entries; 0 drawn at 0.5)",
                ylabel="hit rate (%)", title="Hit rate")
    axes[0].set_ylim(0, 100)
    axes[1].plot(x, p99s, "o-", color=PALETTE[3], label="p99 end-to-end")
    if slo is not None:
        axes[1].axhline(slo, ls="--", color="#777777", lw=1, label=f"SLO {slo:g} s")
    axes[1].set(xscale="log", xlabel="cache size (entries; 0 drawn at 0.5)",
                ylabel="seconds", title="p99 end-to-end latency")
    axes[1].set_ylim(0, None)
    axes[1].legend(fontsize=9)
    axes[0].figure.suptitle(title, fontweight="bold")
    return axes


def explorer(seed: int = 0, task: Capstone = CAPSTONE):
    """ipywidgets: replicas, cache size, TTL and router; the stage bars and the verdict update."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .widgets import explorer as make

    wl = capstone_workload(seed, task=task)

    def render(replicas, cache_size, cache_ttl, router):
        cfg = PipelineConfig(replicas=replicas, cache_size=cache_size, cache_ttl=cache_ttl,
                             router=router)
        res = run_pipeline(wl, cfg, seed=seed)
        s = res.summary(task.slo)
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_where_time_goes(where_time_goes(res), ax=ax)
        ax.set_ylim(0, max(task.slo.p99_e2e * 1.6, ax.get_ylim()[1]))
        ax.axhline(task.slo.p99_e2e, ls="--", color="#777777", lw=1)
        plt.show()
        ok = s["replica_seconds"] <= task.max_replica_seconds
        print(f"hit rate {s['hit_rate']:.0%}, p99 e2e {s['e2e_p99']:.1f} s (SLO "
              f"{task.slo.p99_e2e:g}), goodput {s['goodput_share']:.0%} of offered, cost "
              f"{s['replica_seconds']:.0f} replica-s (ceiling {task.max_replica_seconds:g}): "
              f"{'meets the SLO' if s['meets_slo'] else 'misses the SLO'}, "
              f"{'within' if ok else 'over'} budget")

    controls = {"replicas": w.IntSlider(value=2, min=1, max=5, description="replicas"),
                "cache_size": w.SelectionSlider(options=[0, 30, 100, 300, 1000, 3000, 5000],
                                                value=300, description="cache entries"),
                "cache_ttl": w.SelectionSlider(options=[10, 30, 60, 120, 300, 600], value=300,
                                               description="TTL (s)"),
                "router": w.Dropdown(options=list(ROUTERS), value="least_outstanding",
                                     description="router")}
    return make(controls, render, title="The pipeline against the capstone's SLO")
