"""Serving metrics: latency percentiles, TTFT/TPOT, throughput, goodput, SLOs, Little's law."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from ._checks import check_in_range, check_positive


def _finite(values, name: str = "values") -> np.ndarray:
    """A 1-d float array with nan (unfinished requests) dropped; ValueError if nothing is left."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError(f"{name} is empty: no finished requests to summarise")
    return x


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    This is numpy's default ("linear", Hyndman and Fan type 7): the value at rank
    (n - 1) * q / 100 of the sorted data, interpolated between its two neighbours.
    """
    check_in_range("q", q, 0.0, 100.0)
    return float(np.percentile(_finite(values), q))


def latency_summary(latencies) -> dict:
    """Mean, p50, p95 and p99 of latencies (percentiles by linear interpolation, as `percentile`).

    Raises:
        ValueError: if there are no (non-nan) latencies.
    """
    x = _finite(latencies, "latencies")
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def _meets_slo(ttft, tpot, ttft_slo: float, tpot_slo: float, finished=None) -> np.ndarray:
    check_positive("ttft_slo", ttft_slo)
    check_positive("tpot_slo", tpot_slo)
    ttft = np.asarray(ttft, dtype=float)
    tpot = np.asarray(tpot, dtype=float)
    if ttft.shape != tpot.shape:
        raise ValueError(f"ttft and tpot must have the same length, got {ttft.shape} and "
                         f"{tpot.shape}")
    # nan TTFT: never answered, fails. nan TPOT: a one-token answer has no inter-token time,
    # but only a finished request can be a one-token answer: one still running has no TPOT yet.
    done = np.ones(ttft.shape, bool) if finished is None else np.asarray(finished, dtype=bool)
    if done.shape != ttft.shape:
        raise ValueError(f"finished must have one entry per request, got {done.shape} for "
                         f"{ttft.shape}")
    return (ttft <= ttft_slo) & ((tpot <= tpot_slo) | (np.isnan(tpot) & done)) & ~np.isnan(ttft)


def slo_attainment(ttft, tpot, *, ttft_slo: float, tpot_slo: float, finished=None) -> float:
    """Fraction of requests whose TTFT and TPOT are both within their limits (<= counts as met).

    A nan TTFT misses; a nan TPOT meets the limit if the request finished (a one-token answer).

    Args:
        finished: optional mask of finished requests: a request still running when the run
            stopped has a nan TPOT too, and it has not met its SLO.
    """
    ok = _meets_slo(ttft, tpot, ttft_slo, tpot_slo, finished)
    if ok.size == 0:
        raise ValueError("no requests: SLO attainment of nothing is undefined")
    return float(ok.mean())


def goodput(ttft, tpot, *, ttft_slo: float, tpot_slo: float, duration: float,
            finished=None) -> float:
    """Requests per second that met every SLO, over `duration` seconds (DistServe's goodput).

    For a simulator run use `run_goodput`, which takes the duration from `window` (the same
    one `throughput` divides by) and leaves out requests unfinished at the stop.
    """
    check_positive("duration", duration)
    return float(_meets_slo(ttft, tpot, ttft_slo, tpot_slo, finished).sum() / duration)


def histogram_quantile(q: float, upper_bounds: Sequence[float], cumulative_counts) -> float:
    """Estimate the q-quantile from cumulative histogram buckets, as Prometheus does.

    Follows ``histogram_quantile`` (prometheus/promql/quantile.go): find the bucket whose
    cumulative count first reaches rank q * total and interpolate linearly inside it, assuming
    the lowest bucket starts at 0. If the rank falls in the +Inf bucket, the answer is the upper
    bound of the second-highest bucket. Where Prometheus returns NaN or +-Inf for bad input,
    this raises. q = 0 with an empty first bucket (Prometheus: 0 / 0, NaN) returns 0.0, the
    first bucket's lower end.

    Args:
        q: quantile in [0, 1] (0.99 for p99).
        upper_bounds: the buckets' ``le`` bounds, increasing, the last one +inf.
        cumulative_counts: observations <= each bound (non-decreasing).
    Raises:
        ValueError: q outside [0, 1], buckets malformed, or no observations.
    """
    check_in_range("q", q, 0.0, 1.0)
    le = [float(b) for b in upper_bounds]
    counts = [float(c) for c in cumulative_counts]
    if len(le) != len(counts):
        raise ValueError(f"upper_bounds has {len(le)} entries, cumulative_counts {len(counts)}")
    if len(le) < 2 or le[-1] != math.inf:
        raise ValueError("need at least two buckets and the last upper bound must be +inf")
    if any(b >= a for a, b in zip(le[1:], le)):
        raise ValueError("upper_bounds must be strictly increasing")
    if any(b < a for a, b in zip(counts, counts[1:])) or counts[0] < 0:
        raise ValueError("cumulative_counts must be >= 0 and non-decreasing")
    total = counts[-1]
    if total == 0:
        raise ValueError("the histogram has no observations")
    rank = q * total
    b = next((i for i in range(len(le) - 1) if counts[i] >= rank), len(le) - 1)
    if b == len(le) - 1:
        return le[-2]
    if b == 0 and le[0] <= 0:
        return le[0]
    start, below = (le[b - 1], counts[b - 1]) if b > 0 else (0.0, 0.0)
    if counts[b] == below:  # q = 0 over empty leading buckets: the lowest possible value
        return start
    return start + (le[b] - start) * (rank - below) / (counts[b] - below)


def error_budget_minutes(slo: float, days: float = 30.0) -> float:
    """Minutes of failure an availability SLO allows over `days` (99.9% over 30 days: 43.2)."""
    if not 0 < slo < 1:
        raise ValueError(f"slo must be a fraction in (0, 1), such as 0.999; got {slo!r}")
    check_positive("days", days)
    return (1 - slo) * days * 24 * 60


# ----------------------------------------------------------------------------- whole runs
def span(result) -> float:
    """Seconds from the first arrival to the last completion of a run."""
    done = result.finish[result.completed]
    if done.size == 0:
        raise ValueError("no request finished in this run")
    return float(done.max() - result.arrival.min())


def window(result) -> tuple[float, float]:
    """The measurement window (t0, t1) of a run, shared by `throughput` and `run_goodput`.

    From the first arrival to the last completion; if requests were still unfinished when the
    run stopped (``simulate(..., until=T)``), to the stop time instead, so that the requests
    the server could not finish count against its rate.
    """
    done = result.finish[result.completed]
    if done.size == 0:
        raise ValueError("no request finished in this run")
    t0, t1 = float(result.arrival.min()), float(done.max())
    if not result.completed.all():
        stop = getattr(result, "stopped_at", None)
        stop = result.end_time if stop is None or not np.isfinite(stop) else stop
        t1 = max(t1, float(stop))
    if not t1 > t0:
        raise ValueError(f"the run's measurement window is empty: {t0} to {t1}")
    return t0, t1


def throughput(result) -> dict:
    """Completed requests/s and generated tokens/s over the run's measurement `window`."""
    t0, t1 = window(result)
    ok = result.completed
    return {"requests_per_s": float(ok.sum() / (t1 - t0)),
            "tokens_per_s": float(result.workload.output_tokens[ok].sum() / (t1 - t0))}


def run_goodput(result, *, ttft_slo: float, tpot_slo: float) -> float:
    """Requests/s of a run that finished and met both SLOs, over the same `window` as
    `throughput`, so goodput never exceeds throughput."""
    t0, t1 = window(result)
    return goodput(result.ttft, result.tpot, ttft_slo=ttft_slo, tpot_slo=tpot_slo,
                   duration=t1 - t0, finished=result.completed)


def summarize(result, *, ttft_slo: float | None = None, tpot_slo: float | None = None) -> dict:
    """The headline numbers of a run as one flat dict (latencies in seconds).

    Latency, TTFT and TPOT statistics cover finished requests only: "unfinished" says how many
    were left out of them (and "one_token" how many had no TPOT).
    """
    completed = int(result.completed.sum())
    out = {"requests": len(result.finish), "completed": completed,
           "unfinished": len(result.finish) - completed}
    out.update(throughput(result))
    out.update({f"latency_{k}": v for k, v in latency_summary(result.latency).items()})
    done = result.completed
    out.update({f"ttft_{k}": v for k, v in latency_summary(result.ttft[done]).items()})
    out["one_token"] = int((result.workload.output_tokens[done] <= 1).sum())
    if (result.workload.output_tokens[done] > 1).any():
        out.update({f"tpot_{k}": v for k, v in latency_summary(result.tpot[done]).items()})
    out["utilization"] = result.utilization
    if ttft_slo is not None and tpot_slo is not None:
        out["slo_attainment"] = slo_attainment(result.ttft, result.tpot, ttft_slo=ttft_slo,
                                               tpot_slo=tpot_slo, finished=done)
        out["goodput_rps"] = run_goodput(result, ttft_slo=ttft_slo, tpot_slo=tpot_slo)
    return out


class LittleCheck(NamedTuple):
    """Little's law on a run: L measured as a time average, against lambda * W."""

    L: float          # time-average number of requests in the system over the window
    lam: float        # arrivals per second in the window
    W: float          # mean time in system of the window's arrivals that finished
    lam_W: float      # lambda * W
    rel_error: float  # |L - lambda W| / L
    left_out: int = 0  # arrivals in the window still unfinished when the run stopped (not in W)


def littles_law(result, window: tuple[float, float] | None = None) -> LittleCheck:
    """Measure L, lambda and W independently on a run and compare L with lambda * W.

    L integrates the number in system over the window (requests still in the system at its end
    count until then); lambda counts the requests that arrived in it, and W averages the time in
    system of those of them that finished. On a run stopped early (``simulate(..., until=T)``)
    the default window ends at the stop, and requests still unfinished there have no time in
    system to average: they are left out of W and counted in ``left_out``, so a large
    ``left_out`` says that W (and lambda * W) is biased low.

    Args:
        window: (t0, t1); default from time 0 to the last arrival, or to the stop if earlier.
    """
    a = result.arrival
    f = np.where(result.completed, result.finish, np.inf)
    if window is None:
        stop = getattr(result, "stopped_at", None)
        end = float(a.max())
        if stop is not None and np.isfinite(stop):
            end = min(end, float(stop))
        window = (0.0, end)
    t0, t1 = window
    if not t1 > t0:
        raise ValueError(f"window must have t1 > t0, got {(t0, t1)}")
    overlap = np.clip(np.minimum(f, t1) - np.maximum(a, t0), 0.0, None)
    L = float(overlap.sum() / (t1 - t0))
    inside = (a >= t0) & (a < t1)
    lam = float(inside.sum() / (t1 - t0))
    done = inside & result.completed
    W = float(np.mean(f[done] - a[done])) if done.any() else math.nan
    left_out = int((inside & ~result.completed).sum())
    return LittleCheck(L, lam, W, lam * W, abs(L - lam * W) / L if L > 0 else math.nan,
                       left_out)
