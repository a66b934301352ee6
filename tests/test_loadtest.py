"""Load-test metrics from hand-made records (the client itself runs in tests/test_serve.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scalesim_course import loadtest
from scalesim_course.loadtest import LoadTestResult, RequestRecord


def rec(sent, times, status=200, ok=True):
    r = RequestRecord(sent, 3, len(times), list(times), list(range(len(times))), status)
    r.done = r.well_formed = ok
    return r


def result():
    return LoadTestResult([rec(0.0, [0.5, 0.7, 1.1]),      # TTFT 0.5, TPOT 0.3, e2e 1.1
                           rec(1.0, [1.2]),                 # one token: TTFT 0.2, no TPOT
                           rec(2.0, [2.4, 2.5], ok=False)], # a malformed stream: failed
                          rate=1.0, cv=1.0, wall_time=3.0, timed_out=False)


def test_per_request_metrics_by_hand():
    r = result()
    assert r.completed.tolist() == [True, True, False]
    assert np.allclose(r.ttft[:2], [0.5, 0.2]) and math.isnan(r.ttft[2])
    assert r.tpot[0] == pytest.approx(0.3) and math.isnan(r.tpot[1])
    assert np.allclose(r.e2e[:2], [1.1, 0.2])
    assert np.allclose(np.sort(r.itl), [0.2, 0.4])
    assert r.span == pytest.approx(1.2)   # first send 0.0, last token of a completed one 1.2


def test_summary_throughput_and_goodput():
    s = result().summary(ttft_slo=0.4, tpot_slo=1.0)
    assert s["completed"] == 2 and s["failed"] == 1
    assert s["requests_per_s"] == pytest.approx(2 / 1.2)
    assert s["output_tokens_per_s"] == pytest.approx(4 / 1.2)
    # only the second request meets TTFT <= 0.4 (the failed one never does)
    assert s["goodput_rps"] == pytest.approx(1 / 1.2)
    assert s["slo_attainment"] == pytest.approx(1 / 3)
    assert s["ttft_median"] == pytest.approx(0.35)


def test_workload_for_the_simulator():
    wl = result().workload()
    assert wl.arrival.tolist() == [0.0, 1.0, 2.0] and wl.output_tokens.tolist() == [3, 1, 2]


def test_make_requests_is_reproducible_and_bounded():
    a, b = loadtest.make_requests(50, seed=5), loadtest.make_requests(50, seed=5)
    assert a == b
    assert all(1 <= q.max_tokens <= 64 and all(0 <= t < 256 for t in q.prompt) for q in a)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        loadtest.run_load_test("http://127.0.0.1:1", loadtest.make_requests(2), rate=-1.0)
    with pytest.raises(ValueError, match="2,000"):
        loadtest.run_load_test("http://127.0.0.1:1", loadtest.make_requests(2001), rate=1.0)
