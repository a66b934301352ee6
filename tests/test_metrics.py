"""Latency, throughput, SLO and Little's-law metrics (scalesim_course.metrics)."""
import math

import numpy as np
import pytest

from scalesim_course import metrics as m
from scalesim_course import sim
from scalesim_course.workload import Workload, poisson_workload


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


# ----------------------------------------------------------------------------- exact values
@pytest.mark.parametrize("q, want", [
    # 1, 2, 3, 4 sorted; position h = 3 q / 100 between ranks floor(h) and ceil(h)
    (0, 1.0), (100, 4.0), (50, 2.5), (25, 1.75), (95, 3.85), (99, 3.97), (10, 1.3),
])
def test_percentile_exact_values_by_hand(q, want):
    assert m.percentile([4.0, math.nan, 1.0, 3.0, 2.0], q) == pytest.approx(want, abs=1e-12)


def test_latency_summary_exact_values_by_hand():
    # 10 values 1..10: mean 5.5; p50 at h = 4.5 -> 5.5; p95 at h = 8.55 -> 9.55; p99 -> 9.91
    s = m.latency_summary([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, math.nan])
    assert s == pytest.approx({"mean": 5.5, "p50": 5.5, "p95": 9.55, "p99": 9.91}, abs=1e-12)


def test_percentile_of_nothing_finished_says_so():
    with pytest.raises(ValueError, match="no finished requests"):
        m.percentile([math.nan, math.nan], 50)


def _run(arrival, first, finish, outputs, *, stopped_at=None):
    """A RunResult with hand-chosen timestamps (one replica, one server)."""
    wl = Workload.build(arrival, output_tokens=outputs)
    n = len(arrival)
    res = sim.RunResult(wl, np.asarray(arrival, float), np.asarray(first, float),
                        np.asarray(finish, float), np.zeros(n, int), np.array([1.0]),
                        np.array([1.0]), 1, stopped_at if stopped_at is not None
                        else float(np.nanmax(finish)))
    if stopped_at is not None and hasattr(res, "stopped_at"):
        res.stopped_at = stopped_at
    return res


def test_a_request_running_at_the_stop_does_not_meet_its_slo():
    # Request 0 finished one token (nan TPOT): meets. Request 1 got its first token fast but
    # was still generating at the stop (nan finish, so nan TPOT): it has NOT met its SLO.
    res = _run([0.0, 1.0], [0.2, 1.1], [0.2, math.nan], [1, 50], stopped_at=4.0)
    assert math.isnan(res.tpot[0]) and math.isnan(res.tpot[1])
    assert m.slo_attainment(res.ttft, res.tpot, ttft_slo=0.5, tpot_slo=0.05,
                            finished=res.completed) == 0.5
    # the window runs from the first arrival (0) to the stop (4 s): 1 good request / 4 s
    assert m.window(res) == (0.0, 4.0)
    assert m.run_goodput(res, ttft_slo=0.5, tpot_slo=0.05) == pytest.approx(0.25)
    assert m.throughput(res)["requests_per_s"] == pytest.approx(0.25)
    s = m.summarize(res, ttft_slo=0.5, tpot_slo=0.05)
    assert (s["completed"], s["unfinished"], s["one_token"]) == (1, 1, 1)
    assert s["slo_attainment"] == 0.5


def test_goodput_and_throughput_share_one_window():
    # arrivals 0, 1, 2, 3; finishes 1.5, 2.5, 3.5, 5.0: window 0 to 5 s, 4 finished -> 0.8/s.
    # TTFTs 0.5, 0.5, 0.5, 1.5 with a 1 s limit: 3 good -> 0.6/s, never above throughput.
    res = _run([0, 1, 2, 3], [0.5, 1.5, 2.5, 4.5], [1.5, 2.5, 3.5, 5.0], [11, 11, 11, 11])
    assert m.window(res) == (0.0, 5.0)
    thru = m.throughput(res)
    assert thru["requests_per_s"] == pytest.approx(0.8)
    assert thru["tokens_per_s"] == pytest.approx(44 / 5)
    good = m.run_goodput(res, ttft_slo=1.0, tpot_slo=0.1)   # TPOT 1/10 = 0.1 s: on the limit
    assert good == pytest.approx(0.6)
    assert m.summarize(res, ttft_slo=1.0, tpot_slo=0.1)["goodput_rps"] <= thru["requests_per_s"]


def test_goodput_never_exceeds_throughput_on_a_simulated_overload():
    from scalesim_course.costmodel import RooflineCost
    from scalesim_course.workload import azure_like

    llm = RooflineCost("llama-3-8b", "a100-80gb-sxm")
    for rate in (2, 12):
        wl = azure_like(duration=30, rate=rate, seed=3)
        run = sim.simulate(wl, mode="iteration", cost=llm, max_batch=32,
                           kv_capacity=llm.max_kv_tokens(), seed=3)
        good = m.run_goodput(run, ttft_slo=1.0, tpot_slo=0.05)
        assert good <= m.throughput(run)["requests_per_s"] + 1e-12


def test_histogram_quantile_q0_over_an_empty_first_bucket_is_its_lower_end():
    # Prometheus computes 0 / 0 there (NaN); the course settles it as the bucket's lower end, 0.
    assert m.histogram_quantile(0.0, [1.0, 2.0, math.inf], [0, 3, 3]) == 0.0
    # and by hand elsewhere: rank 0.5 * 8 = 4 in (1, 2] holding 6 - 2 = 4: 1 + (4 - 2) / 4 = 1.5
    assert m.histogram_quantile(0.5, [1.0, 2.0, math.inf], [2, 6, 8]) == pytest.approx(1.5)


# ----------------------------------------------------------------------------- edges, exactly
def test_littles_law_on_a_stopped_run_says_what_it_left_out():
    # arrivals 0, 1, 2; request 0 in system [0, 3], request 1 [1, 2], request 2 unfinished at
    # the stop (t = 4). Default window: 0 to the last arrival (2). L = (2 + 1 + 0) / 2 = 1.5;
    # lambda = 2 arrivals in [0, 2) / 2 s = 1; W over the finished ones = (3 + 1) / 2 = 2.
    res = _run([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], [3.0, 2.0, math.nan], [2, 2, 2], stopped_at=4.0)
    c = m.littles_law(res)
    assert (c.L, c.lam, c.W, c.lam_W, c.left_out) == (1.5, 1.0, 2.0, 2.0, 0)
    assert c.rel_error == pytest.approx(0.5 / 1.5)
    # window to the stop: L = (3 + 1 + 2) / 4; 3 arrivals / 4 s; W still over the two finished
    c = m.littles_law(res, window=(0.0, 4.0))
    assert (c.L, c.lam, c.W, c.left_out) == (1.5, 0.75, 2.0, 1)
    # stopped before the last arrival: the default window ends at the stop
    early = _run([0.0, 1.0, 5.0], [0.5, 1.5, math.nan], [1.0, 2.0, math.nan], [2, 2, 2],
                 stopped_at=3.0)
    c = m.littles_law(early)
    assert (c.L, c.lam, c.W, c.left_out) == (2.0 / 3.0, 2.0 / 3.0, 1.0, 0)
    nothing = _run([0.0, 1.0], [math.nan, math.nan], [math.nan, math.nan], [2, 2], stopped_at=2.0)
    c = m.littles_law(nothing)
    assert math.isnan(c.W) and c.left_out == 1 and c.L == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: m.percentile([1.0], 101), r"^q must be in \[0.0, 100.0\], got 101$"),
    (lambda: m.latency_summary([math.nan]), "^latencies is empty: no finished requests"),
    (lambda: m.percentile([], 50), "^values is empty: no finished requests"),
    (lambda: m.slo_attainment([1.0], [1.0], ttft_slo=0, tpot_slo=1), "^ttft_slo must be > 0"),
    (lambda: m.slo_attainment([1.0], [1.0], ttft_slo=1, tpot_slo=-1), "^tpot_slo must be > 0"),
    (lambda: m.slo_attainment([1.0, 2.0], [1.0], ttft_slo=1, tpot_slo=1),
     r"^ttft and tpot must have the same length, got \(2,\) and \(1,\)$"),
    (lambda: m.slo_attainment([1.0], [1.0], ttft_slo=1, tpot_slo=1, finished=[True, False]),
     r"^finished must have one entry per request, got \(2,\) for \(1,\)$"),
    (lambda: m.slo_attainment([], [], ttft_slo=1, tpot_slo=1),
     "^no requests: SLO attainment of nothing is undefined$"),
    (lambda: m.goodput([1.0], [1.0], ttft_slo=1, tpot_slo=1, duration=0),
     "^duration must be > 0, got 0$"),
    (lambda: m.histogram_quantile(-0.1, [1, math.inf], [1, 2]), r"^q must be in \[0.0, 1.0\]"),
    (lambda: m.histogram_quantile(0.5, [1, math.inf], [1]),
     "^upper_bounds has 2 entries, cumulative_counts 1$"),
    (lambda: m.histogram_quantile(0.5, [math.inf], [1]),
     r"^need at least two buckets and the last upper bound must be \+inf$"),
    (lambda: m.histogram_quantile(0.5, [1.0, 1.0, math.inf], [1, 1, 2]),
     "^upper_bounds must be strictly increasing$"),
    (lambda: m.histogram_quantile(0.5, [1.0, 2.0, 1.5, math.inf], [1, 1, 1, 2]),
     "^upper_bounds must be strictly increasing$"),
    (lambda: m.histogram_quantile(0.5, [1.0, 2.0, math.inf], [1, 3, 2]),
     "^cumulative_counts must be >= 0 and non-decreasing$"),
    (lambda: m.histogram_quantile(0.5, [1.0, 2.0, 3.0, math.inf], [1, 2, 1, 2]),
     "^cumulative_counts must be >= 0 and non-decreasing$"),
    (lambda: m.histogram_quantile(0.5, [1.0, 2.0, math.inf], [-1, 0, 0]),
     "^cumulative_counts must be >= 0 and non-decreasing$"),
    (lambda: m.histogram_quantile(0.5, [1.0, math.inf], [0, 0]),
     "^the histogram has no observations$"),
    (lambda: m.error_budget_minutes(0.0), r"^slo must be a fraction in \(0, 1\)"),
    (lambda: m.error_budget_minutes(1.0), r"^slo must be a fraction in \(0, 1\)"),
    (lambda: m.error_budget_minutes(0.99, days=0), "^days must be > 0, got 0$"),
])
def test_bad_input_is_named_exactly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_histogram_quantile_bucket_by_bucket():
    le = [0.1, 0.5, 1.0, math.inf]
    counts = [10, 30, 40, 40]
    # rank 0.5 * 40 = 20 falls in (0.1, 0.5]: 0.1 + 0.4 * (20 - 10) / 20 = 0.3
    assert m.histogram_quantile(0.5, le, counts) == pytest.approx(0.3)
    # rank 0.2 * 40 = 8 in the first bucket, from 0: 0.1 * 8 / 10
    assert m.histogram_quantile(0.2, le, counts) == pytest.approx(0.08)
    # rank 0.9 * 40 = 36 in (0.5, 1.0]: 0.5 + 0.5 * 6 / 10
    assert m.histogram_quantile(0.9, le, counts) == pytest.approx(0.8)
    # rank in the +Inf bucket: the second-highest bound
    assert m.histogram_quantile(0.99, [0.1, 0.5, math.inf], [10, 30, 40]) == 0.5
    assert m.histogram_quantile(1.0, [0.1, 0.5, 1.0, math.inf], [10, 30, 40, 41]) == 1.0
    # a first bucket with a bound <= 0 answers that bound
    assert m.histogram_quantile(0.1, [-1.0, 0.5, math.inf], [5, 10, 10]) == -1.0
    assert m.histogram_quantile(0.1, [0.0, 0.5, math.inf], [5, 10, 10]) == 0.0
    # with only two buckets, the rank in the first one still interpolates from 0
    assert m.histogram_quantile(0.25, [2.0, math.inf], [4, 4]) == pytest.approx(0.5)


def test_error_budget_edges():
    assert m.error_budget_minutes(0.99, days=1) == pytest.approx(14.4)
    assert m.error_budget_minutes(0.5, days=2) == pytest.approx(1440.0)


def test_summary_counts_one_token_answers_and_its_keys():
    res = _run([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], [0.5, 2.5, 4.5], [1, 2, 3])
    s = m.summarize(res)
    assert (s["requests"], s["completed"], s["unfinished"], s["one_token"]) == (3, 3, 0, 1)
    assert s["tpot_mean"] == pytest.approx(1.0)         # (1.0 / 1 + 2.0 / 2) / 2
    assert "slo_attainment" not in m.summarize(res, ttft_slo=1.0)
    assert m.summarize(res, ttft_slo=1.0, tpot_slo=1.0)["slo_attainment"] == 1.0
    two = _run([0.0, 1.0], [0.5, 1.5], [0.5, 3.5], [1, 2])
    assert "tpot_mean" in m.summarize(two) and m.summarize(two)["one_token"] == 1
    ones = _run([0.0, 1.0], [0.5, 1.5], [0.5, 1.5], [1, 1])
    assert "tpot_mean" not in m.summarize(ones)


def test_throughput_and_goodput_divide_by_the_window_length():
    # window 2 s to 6 s: 2 requests, 3 + 5 tokens
    res = _run([2.0, 3.0], [2.5, 3.5], [4.0, 6.0], [3, 5])
    assert m.window(res) == (2.0, 6.0)
    assert m.throughput(res) == {"requests_per_s": 0.5, "tokens_per_s": 2.0}
    assert m.run_goodput(res, ttft_slo=1.0, tpot_slo=1.0) == pytest.approx(0.5)
    stopped = _run([2.0, 3.0], [2.5, math.nan], [4.0, math.nan], [3, 5], stopped_at=8.0)
    assert m.window(stopped) == (2.0, 8.0)
    with pytest.raises(ValueError, match="^no request finished in this run$"):
        m.window(_run([0.0], [math.nan], [math.nan], [2], stopped_at=1.0))
    with pytest.raises(ValueError, match="measurement window is empty"):
        m.window(_run([1.0], [1.0], [1.0], [1]))


def test_span_runs_from_first_arrival_to_last_completion():
    assert m.span(_run([2.0, 3.0], [2.5, 3.5], [4.0, 6.0], [3, 5])) == 4.0
    assert m.span(_run([2.0, 3.0], [2.5, math.nan], [4.0, math.nan], [3, 5],
                       stopped_at=9.0)) == 2.0
    with pytest.raises(ValueError, match="^no request finished in this run$"):
        m.span(_run([0.0], [math.nan], [math.nan], [2], stopped_at=1.0))
