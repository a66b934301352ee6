"""Latency, throughput, SLO and Little's-law metrics (scalesim_course.metrics)."""
import math

import numpy as np
import pytest

from scalesim_course import metrics as m
from scalesim_course import sim
from scalesim_course.workload import poisson_workload


def test_latency_summary_uses_linear_interpolation():
    s = m.latency_summary([4, 1, 3, 2, 100])
    assert s["mean"] == pytest.approx(22.0)
    assert s["p50"] == 3.0
    assert s["p99"] == pytest.approx(4 + 0.96 * 96)      # rank 0.99 * 4 = 3.96
    assert m.latency_summary([7.0]) == {"mean": 7.0, "p50": 7.0, "p95": 7.0, "p99": 7.0}


def test_mean_hides_the_tail():
    x = np.r_[np.full(98, 0.1), 10.0, 10.0]   # 2% of requests are 100x slower
    s = m.latency_summary(x)
    assert s["mean"] < 0.3 and s["p99"] == 10.0


@pytest.mark.parametrize("bad", [[], [math.nan]])
def test_empty_latencies_raise(bad):
    with pytest.raises(ValueError, match="empty"):
        m.latency_summary(bad)


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_range(q):
    with pytest.raises(ValueError, match="q"):
        m.percentile([1, 2, 3], q)


def test_slo_attainment_and_goodput():
    ttft = [0.1, 0.5, 0.2, math.nan, 0.2]
    tpot = [0.01, 0.01, 0.09, 0.01, math.nan]   # nan TPOT: a one-token answer
    assert m.slo_attainment(ttft, tpot, ttft_slo=0.2, tpot_slo=0.05) == pytest.approx(2 / 5)
    assert m.goodput(ttft, tpot, ttft_slo=0.2, tpot_slo=0.05, duration=4.0) == pytest.approx(0.5)
    # the limit itself counts as met
    assert m.slo_attainment([0.2], [0.05], ttft_slo=0.2, tpot_slo=0.05) == 1.0
    with pytest.raises(ValueError, match="ttft_slo"):
        m.slo_attainment(ttft, tpot, ttft_slo=0, tpot_slo=1)
    with pytest.raises(ValueError, match="duration"):
        m.goodput(ttft, tpot, ttft_slo=1, tpot_slo=1, duration=0)


def test_histogram_quantile_like_prometheus():
    le = [0.1, 0.5, 1.0, math.inf]
    counts = [10, 60, 90, 100]
    assert m.histogram_quantile(0.5, le, counts) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert m.histogram_quantile(0.05, le, counts) == pytest.approx(0.05)
    assert m.histogram_quantile(0.95, le, counts) == 1.0      # rank in +Inf bucket
    assert m.histogram_quantile(0.0, le, counts) == 0.0
    assert m.histogram_quantile(0.9, le, counts) == pytest.approx(1.0)
    assert m.histogram_quantile(0.0, le, [0, 0, 90, 100]) == 0.0   # no 0/0 on empty buckets
    with pytest.raises(ValueError, match="q"):
        m.histogram_quantile(1.5, le, counts)
    with pytest.raises(ValueError, match="inf"):
        m.histogram_quantile(0.5, [0.1, 1.0], [1, 2])
    with pytest.raises(ValueError, match="no observations"):
        m.histogram_quantile(0.5, le, [0, 0, 0, 0])


def test_error_budget():
    assert m.error_budget_minutes(0.999) == pytest.approx(43.2)
    with pytest.raises(ValueError, match="slo"):
        m.error_budget_minutes(99.9)


def test_summary_of_a_run():
    res = sim.simulate(poisson_workload(0.5, 2000, service_rate=1.0, seed=1))
    s = m.summarize(res)
    assert s["completed"] == 2000
    assert s["requests_per_s"] == pytest.approx(0.5, rel=0.05)
    assert s["latency_p50"] <= s["latency_p99"]
    assert 0.4 < s["utilization"] < 0.6


def test_littles_law_with_unfinished_requests():
    res = sim.simulate(poisson_workload(0.9, 5000, service_rate=1.0, seed=2), until=2000.0)
    check = m.littles_law(res, window=(100.0, 1900.0))
    assert check.rel_error < 0.1
    with pytest.raises(ValueError, match="window"):
        m.littles_law(res, window=(5.0, 5.0))
