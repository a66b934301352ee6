"""The simulator against closed-form queueing theory (scalesim_course.theory and sim).

Tolerance: each check runs R = 5 independent replications (seeds 1..5) of N requests, drops a
warm-up of the first 2% of requests, and compares the mean of the replications with theory.
The replications are independent, so their spread gives an honest standard error; the
assertion allows 4.6 standard errors (Student t, 4 degrees of freedom, two-sided 99.5%) and
separately caps the relative error, so a wide spread cannot make the test vacuous.
"""
import math

import numpy as np
import pytest

from scalesim_course import metrics, sim, theory
from scalesim_course.workload import poisson_workload

SEEDS = range(1, 6)
T_995_4DOF = 4.604


def replications(stat, *, lam, mu, c=1, n=100_000, scv=1.0):
    """stat(result, warm) for one run per seed."""
    out = []
    for seed in SEEDS:
        wl = poisson_workload(lam, n, service_rate=mu, scv=scv, seed=seed)
        res = sim.simulate(wl, servers=c, seed=seed)
        out.append(stat(res, slice(n // 50, None)))
    return np.array(out)


def assert_agrees(values, expected, max_rel):
    se = values.std(ddof=1) / math.sqrt(len(values))
    got = values.mean()
    assert abs(got - expected) <= T_995_4DOF * se, (got, expected, se)
    assert abs(got - expected) <= max_rel * expected, (got, expected)


def test_mm1_mean_sojourn():
    lam, mu = 0.8, 1.0
    got = replications(lambda r, w: r.latency[w].mean(), lam=lam, mu=mu)
    assert_agrees(got, theory.mm1_sojourn_mean(lam, mu), max_rel=0.05)


def test_mm1_p99_sojourn():
    lam, mu = 0.7, 1.0
    got = replications(lambda r, w: np.percentile(r.latency[w], 99), lam=lam, mu=mu)
    assert_agrees(got, theory.mm1_sojourn_quantile(lam, mu, 0.99), max_rel=0.05)


@pytest.mark.parametrize("c, rho, expected", [(4, 0.8, 0.7455), (8, 0.9, 0.8769)])
def test_mmc_wait_matches_erlang_c(c, rho, expected):
    assert theory.mmc_wait_mean(rho * c, 1.0, c) == pytest.approx(expected, abs=5e-5)
    got = replications(lambda r, w: r.queue_delay[w].mean(), lam=rho * c, mu=1.0, c=c)
    assert_agrees(got, expected, max_rel=0.06)


def test_md1_wait_matches_pollaczek_khinchine():
    lam, mu = 0.8, 1.0
    got = replications(lambda r, w: r.queue_delay[w].mean(), lam=lam, mu=mu, scv=0.0)
    assert_agrees(got, theory.md1_wait_mean(lam, mu), max_rel=0.05)
    # and P-K's general form agrees with the special case
    assert theory.mg1_wait_mean(lam, 1 / mu, 0.0) == pytest.approx(theory.md1_wait_mean(lam, mu))


def test_littles_law_on_mm1():
    lam, mu = 0.8, 1.0
    checks = [metrics.littles_law(sim.simulate(poisson_workload(lam, 50_000, service_rate=mu,
                                                                seed=s)))
              for s in SEEDS]
    # L is measured as a time average, independently of lambda * W: they agree up to the edge
    # effect of requests still in the system at the window's end (a few in 60,000 s here)
    assert max(c.rel_error for c in checks) < 0.01
    L = np.array([c.L for c in checks])
    assert_agrees(L, theory.mm1_number_mean(lam, mu), max_rel=0.06)


def test_utilization_is_rho():
    res = sim.simulate(poisson_workload(3.2, 50_000, service_rate=1.0, seed=3), servers=4)
    assert res.utilization == pytest.approx(0.8, rel=0.02)


def test_tail_at_scale_example():
    assert theory.tail_at_scale(0.01, 100) == pytest.approx(0.634, abs=1e-3)


@pytest.mark.parametrize("call", [
    lambda: theory.mm1_sojourn_mean(1.0, 1.0),
    lambda: theory.mmc_wait_mean(4.0, 1.0, 4),
    lambda: theory.mm1_sojourn_quantile(0.5, 1.0, 1.0),
    lambda: theory.erlang_c(0, 0.5),
    lambda: theory.mm1_sojourn_mean(-1.0, 1.0),
])
def test_theory_rejects_bad_input(call):
    with pytest.raises((ValueError, TypeError)):
        call()


def test_mg1_lognormal_wait_matches_pollaczek_khinchine():
    lam, scv = 0.7, 2.0
    got = replications(lambda r, w: r.queue_delay[w].mean(), lam=lam, mu=1.0, scv=scv)
    assert_agrees(got, theory.mg1_wait_mean(lam, 1.0, scv), max_rel=0.08)
