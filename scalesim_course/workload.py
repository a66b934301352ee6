"""Workloads: when requests arrive and how long their prompts and outputs are.

Every generator takes a seed (or a numpy ``Generator``) and is deterministic for it.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ._checks import (check_in_range, check_int, check_non_negative, check_number,
                      check_positive, rng_from)

# Published statistics of the Azure LLM inference trace 2023, conversation service
# (Patel et al., "Splitwise", ISCA 2024; Azure Public Dataset, AzureLLMInferenceTrace_conv.csv).
AZURE_CONV_RATE = 5.53            # requests per second over the ~58 min trace
AZURE_CONV_PROMPT = (1155, 1020)  # prompt tokens (mean, median)
AZURE_CONV_OUTPUT = (211, 129)    # generated tokens (mean, median)


class Request(NamedTuple):
    """One request as the policies see it: immutable, and known at arrival.

    ``service_time`` is a pre-drawn service demand for request-level theory runs (nan if unused);
    ``prompt_id`` names a repeated prompt (-1 if unique), for prefix/response caching.
    """

    id: int
    arrival: float
    prompt_tokens: int = 1
    output_tokens: int = 1
    prompt_id: int = -1
    service_time: float = math.nan


@dataclass(frozen=True)
class Workload:
    """A set of requests as parallel arrays, sorted by arrival time."""

    arrival: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    service_time: np.ndarray
    prompt_id: np.ndarray

    def __post_init__(self):
        n = len(self.arrival)
        if n == 0:
            raise ValueError("workload is empty: it needs at least one request")
        for name in ("prompt_tokens", "output_tokens", "service_time", "prompt_id"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, arrival has {n}")
        if not np.all(np.isfinite(self.arrival)) or np.any(self.arrival < 0):
            raise ValueError("arrival times must be finite and >= 0")
        if np.any(np.diff(self.arrival) < 0):
            raise ValueError("arrival times must be sorted (use Workload.build, which sorts)")
        if np.any(self.prompt_tokens < 1) or np.any(self.output_tokens < 1):
            raise ValueError("prompt_tokens and output_tokens must be >= 1 for every request")
        st = np.asarray(self.service_time, dtype=float)
        bad = ~np.isnan(st) & ~(np.isfinite(st) & (st > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"service_time must be > 0 and finite (or nan when unused), got "
                             f"{float(st[i])!r} for request {i}")

    @classmethod
    def build(cls, arrival, prompt_tokens=None, output_tokens=None, service_time=None,
              prompt_id=None) -> "Workload":
        """A workload from arrays (missing ones get defaults), sorted by arrival time."""
        arrival = np.asarray(arrival, dtype=float)
        n = len(arrival)
        if n == 0:
            raise ValueError("workload is empty: arrival has no entries")
        order = np.argsort(arrival, kind="stable")

        def col(name, values, default, dtype):
            if values is None:
                return np.full(n, default, dtype=dtype)
            raw = np.asarray(values)
            if raw.shape != (n,):
                raise ValueError(f"{name}: expected {n} values to match arrival, "
                                 f"got shape {raw.shape}")
            if dtype is not float:
                # Token counts and ids are whole numbers: refuse 1.5 or nan rather than
                # truncating them silently.
                if raw.dtype.kind == "b" or raw.dtype.kind not in "iuf":
                    raise TypeError(f"{name} must hold whole numbers, got dtype {raw.dtype}")
                if raw.dtype.kind == "f":
                    bad = ~np.isfinite(raw) | (raw != np.round(raw))
                    if bad.any():
                        i = int(np.argmax(bad))
                        raise ValueError(f"{name} must hold whole numbers, got {raw[i].item()!r} "
                                         f"at position {i}")
            return raw.astype(dtype)[order]

        return cls(arrival[order], col("prompt_tokens", prompt_tokens, 1, np.int64),
                   col("output_tokens", output_tokens, 1, np.int64),
                   col("service_time", service_time, math.nan, float),
                   col("prompt_id", prompt_id, -1, np.int64))

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def duration(self) -> float:
        """Seconds from time 0 to the last arrival."""
        return float(self.arrival[-1])

    @property
    def rate(self) -> float:
        """Mean arrival rate in requests per second."""
        return len(self) / self.duration if self.duration > 0 else math.inf

    def requests(self) -> list[Request]:
        """The requests as immutable records, in arrival order."""
        return list(map(Request, range(len(self)), self.arrival.tolist(),
                        self.prompt_tokens.tolist(), self.output_tokens.tolist(),
                        self.prompt_id.tolist(), self.service_time.tolist()))

    def head(self, n: int) -> "Workload":
        """The first n requests."""
        check_int("n", n, minimum=1)
        return Workload(*(getattr(self, f)[:n] for f in _FIELDS))

    def with_service(self, service_time) -> "Workload":
        """The same requests with the given per-request service times."""
        return Workload.build(self.arrival, self.prompt_tokens, self.output_tokens, service_time,
                              self.prompt_id)


_FIELDS = ("arrival", "prompt_tokens", "output_tokens", "service_time", "prompt_id")


# ----------------------------------------------------------------------------- arrivals
def poisson_arrivals(rate: float, n: int, seed=0) -> np.ndarray:
    """Arrival times of a Poisson process: n requests at `rate` per second, from time 0."""
    check_positive("rate", rate)
    check_int("n", n, minimum=1)
    return np.cumsum(rng_from(seed).exponential(1.0 / rate, n))


def gamma_arrivals(rate: float, n: int, cv: float = 1.0, seed=0) -> np.ndarray:
    """Arrival times whose gaps are Gamma distributed: mean 1/rate, coefficient of variation cv.

    cv = 1 is Poisson; cv > 1 is bursty (clumps of arrivals, then lulls); cv < 1 is smoother.
    """
    check_positive("rate", rate)
    check_positive("cv", cv)
    check_int("n", n, minimum=1)
    shape = 1.0 / cv**2
    return np.cumsum(rng_from(seed).gamma(shape, 1.0 / (rate * shape), n))


def thinned_arrivals(rate_fn: Callable[[np.ndarray], np.ndarray], max_rate: float,
                     duration: float, seed=0) -> np.ndarray:
    """Arrival times of a time-varying Poisson process, by thinning (Lewis and Shedler, 1979).

    Args:
        rate_fn: vectorised rate in requests/s at given times; must stay <= max_rate.
        max_rate: an upper bound of rate_fn over [0, duration].
        duration: seconds to generate.
    """
    check_positive("max_rate", max_rate)
    check_positive("duration", duration)
    rng = rng_from(seed)
    n = rng.poisson(max_rate * duration)
    candidates = np.sort(rng.uniform(0.0, duration, n))
    rates = np.asarray(rate_fn(candidates), dtype=float)
    if rates.shape != candidates.shape:
        raise ValueError(f"rate_fn must return one rate per time: {len(candidates)} times gave "
                         f"shape {rates.shape}")
    if (not np.all(np.isfinite(rates)) or np.any(rates > max_rate * (1 + 1e-9))
            or np.any(rates < 0)):
        raise ValueError(f"rate_fn must stay within [0, max_rate={max_rate}] on [0, {duration}]")
    kept = candidates[rng.uniform(0.0, max_rate, n) < rates]
    if len(kept) == 0:
        raise ValueError("thinning kept no arrival: raise the rate or the duration")
    return kept


def diurnal_rate(base: float, amplitude: float = 0.5, period: float = 86_400.0,
                 spikes: Sequence[tuple[float, float, float]] = ()) -> Callable:
    """A daily-cycle rate curve with optional spikes, for `thinned_arrivals`.

    rate(t) = base * (1 + amplitude * sin(2 pi t / period - pi/2)) plus, for each spike
    (start, length, extra_rate), extra_rate during [start, start + length). The minimum is at t=0.

    Returns:
        rate_fn(t) and, as attribute ``max_rate``, an upper bound for thinning.
    """
    check_positive("base", base)
    check_in_range("amplitude", amplitude, 0.0, 1.0)
    check_positive("period", period)
    spikes = tuple(spikes)
    for i, spike in enumerate(spikes):
        if len(spike) != 3:
            raise ValueError(f"spikes[{i}] must be (start, length, extra_rate), got {spike!r}")
        check_non_negative(f"spikes[{i}] start", spike[0])
        check_positive(f"spikes[{i}] length", spike[1])
        check_number(f"spikes[{i}] extra_rate", spike[2])
        if base * (1 - amplitude) + spike[2] < 0:
            raise ValueError(f"spikes[{i}] extra_rate={spike[2]!r} would make the rate negative")

    def rate(t):
        t = np.asarray(t, dtype=float)
        r = base * (1 + amplitude * np.sin(2 * np.pi * t / period - np.pi / 2))
        for start, length, extra in spikes:
            r = r + extra * ((t >= start) & (t < start + length))
        return r

    rate.max_rate = base * (1 + amplitude) + sum(max(0.0, s[2]) for s in spikes)
    return rate


# ----------------------------------------------------------------------------- lengths
def lognormal_lengths(mean: float, median: float, n: int, seed=0, maximum: int | None = None
                      ) -> np.ndarray:
    """Token counts from a lognormal with the given mean and median (rounded, at least 1).

    A lognormal with median m and mean M has mu = ln m and sigma = sqrt(2 ln(M / m)).
    """
    check_positive("mean", mean)
    check_positive("median", median)
    if maximum is not None:
        check_int("maximum", maximum, minimum=1)
    if mean < median:
        raise ValueError(f"mean={mean} must be >= median={median} for a lognormal")
    check_int("n", n, minimum=1)
    sigma = math.sqrt(2 * math.log(mean / median))
    x = rng_from(seed).lognormal(math.log(median), sigma, n)
    x = np.maximum(1, np.rint(x)).astype(np.int64)
    return np.minimum(x, maximum) if maximum is not None else x


def empirical_lengths(samples, n: int, seed=0) -> np.ndarray:
    """Token counts resampled (with replacement) from observed values."""
    raw = np.asarray(samples)
    if raw.size == 0:
        raise ValueError("samples is empty: need observed lengths to resample from")
    if raw.dtype.kind not in "iuf" or (raw.dtype.kind == "f" and not np.all(
            np.isfinite(raw) & (raw == np.round(raw)))):
        raise ValueError(f"samples must be whole token counts, got {raw.ravel()[:5]!r}...")
    samples = raw.astype(np.int64)
    if np.any(samples < 1):
        raise ValueError("samples must all be >= 1 token")
    check_int("n", n, minimum=1)
    return rng_from(seed).choice(samples, size=n, replace=True)


def zipf_prompt_ids(n: int, n_unique: int, s: float = 1.0, seed=0) -> np.ndarray:
    """Which of n_unique distinct prompts each of n requests repeats; popularity ~ 1 / rank**s."""
    check_int("n", n, minimum=1)
    check_int("n_unique", n_unique, minimum=1)
    check_positive("s", s)
    weights = 1.0 / np.arange(1, n_unique + 1) ** s
    return rng_from(seed).choice(n_unique, size=n, p=weights / weights.sum())


# ----------------------------------------------------------------------------- ready-made
def poisson_workload(rate: float, n: int, service_rate: float | None = None, scv: float = 1.0,
                     seed=0) -> Workload:
    """A queueing-theory workload: Poisson arrivals and i.i.d. service times.

    Args:
        rate: arrival rate lambda (requests/s).
        n: number of requests.
        service_rate: mu; each request needs 1/mu seconds on average. None: no service times.
        scv: squared coefficient of variation of service time: 1 exponential (M/M/c),
            0 deterministic (M/D/c), anything else lognormal (M/G/c).
    """
    from .costmodel import service_distribution

    rng = rng_from(seed)
    arrival = poisson_arrivals(rate, n, rng)
    service = None
    if service_rate is not None:
        check_positive("service_rate", service_rate)
        service = service_distribution(1.0 / service_rate, scv).sample(n, rng)
    return Workload.build(arrival, service_time=service)


def azure_like(duration: float = 3600.0, rate: float = AZURE_CONV_RATE, seed=0,
               max_tokens: int | None = 8192) -> Workload:
    """A synthetic LLM workload calibrated to the Azure 2023 conversation trace's statistics.

    Poisson arrivals at `rate` (the trace's mean, 5.53 req/s; its inter-arrival CV is 1.09),
    lognormal prompt tokens (mean 1155, median 1020) and output tokens (mean 211, median 129).
    """
    check_positive("duration", duration)
    check_positive("rate", rate)
    if max_tokens is not None:
        check_int("max_tokens", max_tokens, minimum=1)
    rng = rng_from(seed)
    n = int(rng.poisson(rate * duration))
    if n == 0:
        raise ValueError(f"no request arrived in duration={duration!r} s at rate={rate!r}/s: "
                         "raise the rate or the duration")
    arrival = np.sort(rng.uniform(0.0, duration, n))
    prompt = lognormal_lengths(*AZURE_CONV_PROMPT, n, rng, maximum=max_tokens)
    output = lognormal_lengths(*AZURE_CONV_OUTPUT, n, rng, maximum=max_tokens)
    return Workload.build(arrival, prompt, output)


def load_azure_trace(path, limit: int | None = None) -> Workload:
    """Read an Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens).

    Times are shifted so that the first request arrives at 0. A malformed row raises a
    ValueError naming its line number. Requests with 0 generated tokens are counted as 1.
    """
    path = Path(path)
    if limit is not None:
        check_int("limit", limit, minimum=1)
    times, prompts, outputs = [], [], []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != [
                "TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise ValueError(f"{path}: line 1 must be the header "
                             f"'TIMESTAMP,ContextTokens,GeneratedTokens', got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if limit is not None and len(times) >= limit:
                break
            try:
                stamp, ctx, gen = row
                times.append(_parse_timestamp(stamp))
                prompts.append(int(ctx))
                outputs.append(max(1, int(gen)))
                if prompts[-1] < 1 or int(gen) < 0:
                    raise ValueError("negative or zero token count")
            except ValueError as err:
                raise ValueError(f"{path}: line {line_no} is malformed ({err}): {row!r}") from None
    if not times:
        raise ValueError(f"{path}: the trace has no requests")
    t = np.asarray(times)
    return Workload.build(t - t.min(), prompts, outputs)


def _parse_timestamp(text: str) -> float:
    """Seconds since the epoch from '2023-11-16 18:15:46.6805900' (7 fractional digits)."""
    text = text.strip()
    base, dot, frac = text.partition(".")
    if dot and not frac.isdigit():
        raise ValueError(f"bad TIMESTAMP {text!r}")
    seconds = datetime.fromisoformat(base).replace(tzinfo=timezone.utc).timestamp()
    return seconds + (float("0." + frac) if frac else 0.0)
