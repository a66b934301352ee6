"""Notebook 01's graded exercises: plausible wrong answers lose points, right ones earn them.

Every answer was written from the exercise's docstring alone. Each wrong one makes a mistake a
learner could plausibly make (comment: which promise it breaks); each right one is written
differently from the reference solution.
"""
from __future__ import annotations

import pytest
from answers import ExerciseNotebook, assert_caught_visibly, assert_fair

NB = "01_serving_fundamentals"


@pytest.fixture(scope="module")
def book():
    return ExerciseNotebook(NB)


# ----------------------------------------------------------------------------- Exercise 1
LATENCY_WRONG = {
    "keeps nan": '''
def latency_summary(latencies):
    x = np.asarray(latencies, dtype=float)
    if x.size == 0:
        raise ValueError("empty")
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}
''',
    "nearest rank": '''
def latency_summary(latencies):
    xs = sorted(v for v in latencies if not math.isnan(v))
    if not xs:
        raise ValueError("empty")
    pick = lambda p: float(xs[min(len(xs) - 1, int(len(xs) * p / 100))])
    return {"mean": sum(xs) / len(xs), "p50": pick(50), "p95": pick(95), "p99": pick(99)}
''',
    "sorts the caller's array in place": '''
def latency_summary(latencies):
    x = np.asarray(latencies, dtype=float)
    x.sort()                      # nan go to the end
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("empty")
    n = x.size
    def pct(p):
        h = (n - 1) * p / 100
        lo = int(math.floor(h))
        hi = min(lo + 1, n - 1)
        return float(x[lo] + (h - lo) * (x[hi] - x[lo]))
    return {"mean": float(x.mean()), "p50": pct(50), "p95": pct(95), "p99": pct(99)}
''',
    "all nan gives nan instead of raising": '''
def latency_summary(latencies):
    x = np.asarray(latencies, dtype=float)
    if len(x) == 0:
        raise ValueError("empty")
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p50, p95, p99 = np.nanpercentile(x, [50, 95, 99])
            return {"mean": float(np.nanmean(x)), "p50": float(p50), "p95": float(p95), "p99": float(p99)}
''',
    "another percentile definition (Weibull, n + 1)": '''
def latency_summary(latencies):
    x = np.asarray(latencies, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("empty")
    p50, p95, p99 = np.percentile(x, [50, 95, 99], method="weibull")
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}
''',
    "nan counted as 0": '''
def latency_summary(latencies):
    x = np.nan_to_num(np.asarray(latencies, dtype=float))
    if x.size == 0:
        raise ValueError("empty")
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}
''',
    "the package's percentile": '''
def latency_summary(latencies):
    x = [v for v in latencies if v == v]
    if not x:
        raise ValueError("empty")
    return {"mean": sum(x) / len(x), "p50": metrics.percentile(x, 50),
            "p95": metrics.percentile(x, 95), "p99": metrics.percentile(x, 99)}
''',
}

LATENCY_RIGHT = {
    "by hand, sorted copy": '''
def latency_summary(latencies):
    xs = sorted(float(v) for v in latencies if not math.isnan(v))
    if not xs:
        raise ValueError("no finished request")
    def pct(p):
        h = (len(xs) - 1) * p / 100
        lo = math.floor(h)
        hi = math.ceil(h)
        return xs[lo] + (h - lo) * (xs[hi] - xs[lo])
    return {"mean": sum(xs) / len(xs), "p50": pct(50), "p95": pct(95), "p99": pct(99)}
''',
    "nanpercentile after an explicit check": '''
def latency_summary(latencies):
    arr = np.array(latencies, dtype=float, copy=True)
    if np.isnan(arr).all():          # also true for an empty array
        raise ValueError("nothing finished")
    q = np.nanpercentile(arr, [50, 95, 99])
    return dict(mean=float(np.nanmean(arr)), p50=float(q[0]), p95=float(q[1]), p99=float(q[2]))
''',
}


def test_latency_summary_is_fair(book):
    assert_fair(book, "latency_summary", LATENCY_WRONG, LATENCY_RIGHT, explained=True)
    assert_caught_visibly(book, "latency_summary", LATENCY_WRONG,
                          ["keeps nan", "nearest rank", "nan counted as 0",
                           "all nan gives nan instead of raising"])


# ----------------------------------------------------------------------------- Exercise 2
SLO_WRONG = {
    "strict < at the limit": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or not duration > 0:
        raise ValueError("bad input")
    met = (a < ttft_slo) & ((b < tpot_slo) | np.isnan(b))
    return float(met.mean()), float(met.sum() / duration)
''',
    "a one-token answer (nan TPOT) misses": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or not duration > 0:
        raise ValueError("bad input")
    met = (a <= ttft_slo) & (b <= tpot_slo)
    return float(met.mean()), float(met.sum() / duration)
''',
    "nan TTFT meets (negated comparisons)": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or not duration > 0:
        raise ValueError("bad input")
    met = ~(a > ttft_slo) & ~(b > tpot_slo)
    return float(met.mean()), float(met.sum() / duration)
''',
    "goodput as attainment per second": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or not duration > 0:
        raise ValueError("bad input")
    met = (a <= ttft_slo) & ((b <= tpot_slo) | np.isnan(b))
    return float(met.mean()), float(met.mean() / duration)
''',
    "nan duration accepted": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or duration <= 0:
        raise ValueError("bad input")
    met = (a <= ttft_slo) & ((b <= tpot_slo) | np.isnan(b))
    return float(met.mean()), float(met.sum() / duration)
''',
    "zero duration not refused": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or duration < 0:
        raise ValueError("bad input")
    met = (a <= ttft_slo) & ((b <= tpot_slo) | np.isnan(b))
    return float(met.mean()), float(met.sum()) / duration if duration else float("inf")
''',
    "empty input gives zeros": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.shape != b.shape or not duration > 0:
        raise ValueError("bad input")
    if a.size == 0:
        return 0.0, 0.0
    met = (a <= ttft_slo) & ((b <= tpot_slo) | np.isnan(b))
    return float(met.mean()), float(met.sum() / duration)
''',
    "marks nan in the caller's array": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a, b = np.asarray(ttft, float), np.asarray(tpot, float)
    if a.size == 0 or a.shape != b.shape or not duration > 0:
        raise ValueError("bad input")
    a[np.isnan(a)] = np.inf          # never answered: infinitely late
    b[np.isnan(b)] = 0.0             # one token: no gap
    met = (a <= ttft_slo) & (b <= tpot_slo)
    return float(met.mean()), float(met.sum() / duration)
''',
    "the package's private helper": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    if len(ttft) == 0 or not duration > 0:
        raise ValueError("bad input")
    met = metrics._meets_slo(ttft, tpot, ttft_slo, tpot_slo)
    return float(met.mean()), float(met.sum() / duration)
''',
}

SLO_RIGHT = {
    "a loop over pairs": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    ttft, tpot = list(ttft), list(tpot)
    if not ttft or len(ttft) != len(tpot):
        raise ValueError("need equally many ttft and tpot values, at least one")
    if not (duration > 0):
        raise ValueError("duration must be > 0")
    good = 0
    for first, per_token in zip(ttft, tpot):
        if first <= ttft_slo and (math.isnan(per_token) or per_token <= tpot_slo):
            good += 1
    return good / len(ttft), good / duration
''',
    "nan TPOT replaced by 0 in a copy": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    a = np.array(ttft, dtype=float)
    b = np.nan_to_num(np.array(tpot, dtype=float), nan=0.0)
    if a.size == 0 or a.size != b.size or np.isnan(duration) or duration <= 0:
        raise ValueError("bad input")
    met = np.where(np.isnan(a), False, a <= ttft_slo) & (b <= tpot_slo)
    return float(np.count_nonzero(met) / a.size), float(np.count_nonzero(met) / duration)
''',
}


def test_slo_report_is_fair(book):
    assert_fair(book, "slo_report", SLO_WRONG, SLO_RIGHT, explained=True)
    assert_caught_visibly(book, "slo_report", SLO_WRONG,
                          ["strict < at the limit", "a one-token answer (nan TPOT) misses",
                           "nan TTFT meets (negated comparisons)", "empty input gives zeros",
                           "zero duration not refused"])


# ----------------------------------------------------------------------------- Exercise 3
_HQ_BODY = '''
    rank = q * total
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[b]
    if b == 0 and upper <= 0:
        return upper
    lower, below = buckets[b - 1] if b > 0 else (0.0, 0.0)
    if count == below:
        return lower
    return lower + (upper - lower) * (rank - below) / (count - below)
'''
_HQ_CHECKS = '''
    if not 0.0 <= q <= 1.0:
        raise ValueError("q")
    if len(bucket_upper_bounds) != len(cumulative_counts):
        raise ValueError("lengths")
    buckets = sorted(zip(map(float, bucket_upper_bounds), map(float, cumulative_counts)))
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        raise ValueError("buckets")
    total = buckets[-1][1]
    if total <= 0:
        raise ValueError("empty")
'''
HQ_WRONG = {
    "assumes sorted buckets": '''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if not 0.0 <= q <= 1.0:
        raise ValueError("q")
    if len(bucket_upper_bounds) != len(cumulative_counts):
        raise ValueError("lengths")
    buckets = list(zip(map(float, bucket_upper_bounds), map(float, cumulative_counts)))
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        raise ValueError("buckets")
    total = buckets[-1][1]
    if total <= 0:
        raise ValueError("empty")
''' + _HQ_BODY,
    "+Inf bucket returns inf": ('''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):''' + _HQ_CHECKS
                                + _HQ_BODY.replace("return buckets[-2][0]", "return math.inf")),
    "count > rank instead of >=": ('''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):''' + _HQ_CHECKS
                                   + _HQ_BODY.replace(
                                       "b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)",
                                       "b = next((i for i, (_, count) in enumerate(buckets) if count > rank), len(buckets) - 1)")),
    "first bucket always from 0 (ignores bounds <= 0)": ('''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):''' + _HQ_CHECKS
                                                       + _HQ_BODY.replace(
                                                           "    if b == 0 and upper <= 0:\n        return upper\n", "")),
    "q = 0 refused": ('''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if not 0.0 < q <= 1.0:
        raise ValueError("q must be in (0, 1]")''' + _HQ_CHECKS + _HQ_BODY),
    "nan q accepted": ('''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if q < 0 or q > 1:
        raise ValueError("q")
    if len(bucket_upper_bounds) != len(cumulative_counts):
        raise ValueError("lengths")
    buckets = sorted(zip(map(float, bucket_upper_bounds), map(float, cumulative_counts)))
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        raise ValueError("buckets")
    total = buckets[-1][1]
    if total <= 0:
        raise ValueError("empty")
    if q != q:
        return math.nan
''' + _HQ_BODY),
    "sorts the caller's lists in place": '''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if not 0.0 <= q <= 1.0:
        raise ValueError("q")
    if len(bucket_upper_bounds) != len(cumulative_counts):
        raise ValueError("lengths")
    le, counts = bucket_upper_bounds, cumulative_counts
    if isinstance(le, list):
        le.sort()                    # counts never decrease with the bound: sort both
        counts.sort()
    else:
        le, counts = np.sort(le), np.sort(counts)
    buckets = [(float(a), float(b)) for a, b in zip(le, counts)]
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        raise ValueError("buckets")
    total = buckets[-1][1]
    if total <= 0:
        raise ValueError("empty")
''' + _HQ_BODY,
    "q = 0 over an empty first bucket gives nan": ('''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):''' + _HQ_CHECKS
                                                   + _HQ_BODY.replace("        return lower\n",
                                                                      "        return math.nan\n")),
    "the package's own": '''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    pairs = sorted(zip(bucket_upper_bounds, cumulative_counts))
    return metrics.histogram_quantile(q, [b for b, _ in pairs], [c for _, c in pairs])
''',
}

HQ_RIGHT = {
    "numpy with argsort and searchsorted": '''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if math.isnan(q) or q < 0 or q > 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    le = np.asarray(bucket_upper_bounds, dtype=float)
    cnt = np.asarray(cumulative_counts, dtype=float)
    if le.shape != cnt.shape or le.size < 2 or not np.isinf(le).any():
        raise ValueError("need two or more buckets of the same length, one of them +inf")
    order = np.argsort(le)
    le, cnt = le[order], cnt[order]
    if cnt[-1] == 0:
        raise ValueError("no observations")
    rank = q * cnt[-1]
    b = int(np.searchsorted(cnt[:-1], rank, side="left"))
    if b == le.size - 1:
        return float(le[-2])
    if b == 0 and le[0] <= 0:
        return float(le[0])
    lo, below = (le[b - 1], cnt[b - 1]) if b else (0.0, 0.0)
    inside = cnt[b] - below
    return float(lo if inside == 0 else lo + (le[b] - lo) * (rank - below) / inside)
''',
    "dict of buckets and a loop": '''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if not (q >= 0 and q <= 1):
        raise ValueError("bad q")
    bounds, counts = list(bucket_upper_bounds), list(cumulative_counts)
    if len(bounds) != len(counts):
        raise ValueError("lists differ in length")
    table = dict(zip((float(b) for b in bounds), (float(c) for c in counts)))
    keys = sorted(table)
    if len(keys) < 2 or keys[-1] != float("inf"):
        raise ValueError("need 2+ buckets and +inf")
    total = table[keys[-1]]
    if not total > 0:
        raise ValueError("empty histogram")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, bound in enumerate(keys):
        count = table[bound]
        if count >= rank:
            if i == len(keys) - 1:
                return keys[-2]
            if i == 0 and bound <= 0:
                return bound
            if count == prev_count:
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return keys[-2]
''',
}


def test_histogram_quantile_is_fair(book):
    assert_fair(book, "histogram_quantile", HQ_WRONG, HQ_RIGHT, explained=True)
    assert_caught_visibly(book, "histogram_quantile", HQ_WRONG,
                          ["assumes sorted buckets", "+Inf bucket returns inf",
                           "count > rank instead of >="])
