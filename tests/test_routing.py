"""Routers and the load-balancing theory: exact sequences worked out by hand, distributions
against closed forms, and the simulator against the supermarket model's fixed point."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from scalesim_course import routing, sim, theory, workload
from scalesim_course.workload import Request

REQ = Request(0, 0.0)


def counts(router, reps, n=6000, seed=0):
    rng = np.random.default_rng(seed)
    return Counter(int(router(REQ, reps, rng)) for _ in range(n))


# ----------------------------------------------------------------------------- theory
def test_supermarket_limits_match_the_hand_sums():
    # d = 1: sum lam^i / lam = 1 / (1 - lam) = 10 at lam = 0.9
    assert theory.supermarket_sojourn_mean(0.9, 1) == pytest.approx(10.0, rel=1e-9)
    # d = 2: s_i = 0.9^(2^i - 1): W = 1 + 0.9^2 + 0.9^6 + 0.9^14 + 0.9^30 + 0.9^62 + ...
    by_hand = sum(0.9 ** (2 ** i - 2) for i in range(1, 12))
    assert by_hand == pytest.approx(2.614057, abs=1e-6)
    assert theory.supermarket_sojourn_mean(0.9, 2) == pytest.approx(by_hand, rel=1e-12)
    # d = 3: s_i = 0.9^((3^i - 1) / 2): W = 1 + 0.9^3 + 0.9^12 + 0.9^39 + ...
    assert theory.supermarket_sojourn_mean(0.9, 3) == pytest.approx(
        1 + 0.9 ** 3 + 0.9 ** 12 + 0.9 ** 39 + 0.9 ** 120, rel=1e-12)
    assert theory.supermarket_tail(0.5, 2, 0) == 1.0
    assert theory.supermarket_tail(0.5, 2, 3) == 0.5 ** 7


def test_mmc_sojourn_is_service_plus_erlang_c_wait():
    # M/M/2 with lam = 1, mu = 1: C(2, 1) = 1/3, Wq = (1/3) / (2 - 1), W = 1 + 1/3
    assert theory.mmc_sojourn_mean(1.0, 1.0, 2) == pytest.approx(4 / 3, rel=1e-12)
    assert theory.mmc_sojourn_mean(0.5, 1.0, 1) == pytest.approx(2.0, rel=1e-12)


def test_theory_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unstable"):
        theory.supermarket_sojourn_mean(1.0, 2)
    with pytest.raises(ValueError, match="d must be >= 1"):
        theory.supermarket_tail(0.5, 0, 1)


# ----------------------------------------------------------------------------- routers
def test_round_robin_cycles_and_random_is_uniform():
    rr = routing.RoundRobin()
    reps = routing.replicas([5, 0, 0])
    assert [rr(REQ, reps, None) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    c = counts(routing.random_choice, reps, n=6000)
    assert all(abs(c[k] / 6000 - 1 / 3) < 0.03 for k in range(3))


def test_smooth_weighted_round_robin_is_nginx_sequence():
    rng = np.random.default_rng(0)
    router = routing.smooth_weighted_round_robin([5, 1, 1])
    reps = routing.replicas([0, 0, 0])
    # worked by hand in the module docstring of nginx: a a b a c a a, then again
    assert [router(REQ, reps, rng) for _ in range(14)] == [0, 0, 1, 0, 2, 0, 0] * 2
    two = routing.smooth_weighted_round_robin([2, 1])
    # current (0,0) -> (2,1) pick a -> (-1,1) -> (1,2) pick b -> (1,-1) -> (3,0) pick a -> (0,0)
    assert [two(REQ, reps[:2], rng) for _ in range(6)] == [0, 1, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="weight"):
        routing.smooth_weighted_round_robin([1, 0])
    with pytest.raises(ValueError, match="empty"):
        routing.smooth_weighted_round_robin([])
    with pytest.raises(ValueError, match="2 weights"):
        two(REQ, reps, rng)


def test_least_outstanding_breaks_ties_at_random():
    assert routing.least_outstanding(REQ, routing.replicas([3, 1, 2]), None) == 1
    c = counts(routing.least_outstanding, routing.replicas([1, 0, 4, 0]))
    assert set(c) == {1, 3} and abs(c[1] / 6000 - 0.5) < 0.03
    with pytest.raises(ValueError, match="empty"):
        routing.least_outstanding(REQ, (), np.random.default_rng(0))


def test_power_of_two_matches_the_distinct_sample_formula():
    # loads 0 < 1 < 2 < 3: replica k wins iff it is the lowest of a uniform pair:
    # P(k) = (n - 1 - k) / C(n, 2) = 3/6, 2/6, 1/6, 0
    c = counts(lambda q, r, g: routing.power_of_d(q, r, g, 2), routing.replicas([0, 1, 2, 3]))
    for k, p in enumerate([3 / 6, 2 / 6, 1 / 6, 0.0]):
        assert abs(c[k] / 6000 - p) < 0.03
    # all tied: uniform; d >= n: join the shortest queue
    c = counts(lambda q, r, g: routing.power_of_d(q, r, g, 2), routing.replicas([2, 2, 2, 2]))
    assert all(abs(c[k] / 6000 - 0.25) < 0.03 for k in range(4))
    assert set(counts(lambda q, r, g: routing.power_of_d(q, r, g, 9),
                      routing.replicas([2, 1, 3]), n=200)) == {1}
    with pytest.raises(ValueError, match="d must be"):
        routing.power_of_d(REQ, routing.replicas([0]), np.random.default_rng(0), 0)


def test_weighted_least_outstanding_uses_speed():
    reps = routing.replicas([3, 0], speed=[4.0, 1.0])
    # (3 + 1) / 4 = 1 against (0 + 1) / 1 = 1: a tie; with 2 outstanding the fast one wins
    assert routing.weighted_least_outstanding(REQ, routing.replicas([2, 0], [4.0, 1.0]), None) == 0
    assert set(counts(routing.weighted_least_outstanding, reps, n=400)) == {0, 1}


def test_least_tokens_counts_kv_and_queued_tokens():
    reps = (routing.Replica(0, outstanding=1, kv_used=900, queued_tokens=0),
            routing.Replica(1, outstanding=5, kv_used=100, queued_tokens=300),
            routing.Replica(2, outstanding=0, kv_used=0, queued_tokens=1000))
    # loads in tokens: 900, 400, 1000 -> replica 1, although it has the most requests
    assert routing.least_tokens(REQ, reps, np.random.default_rng(0)) == 1


def test_consistent_hash_sticks_and_respects_its_bound():
    ch = routing.ConsistentHash(c=1.25)
    reps = routing.replicas([0] * 8)
    homes = {p: ch(Request(p, 0.0, prompt_id=p), reps, None) for p in range(200)}
    assert all(ch(Request(1000 + p, 1.0, prompt_id=p), reps, None) == k for p, k in homes.items())
    assert len(set(homes.values())) == 8  # 64 points per replica spread the keys
    loaded = routing.replicas([9, 0, 0, 0, 0, 0, 0, 0])
    # cap = ceil(1.25 * (9 + 1) / 8) = 2: the loaded replica is skipped for every key
    assert all(ch(Request(p, 0.0, prompt_id=p), loaded, None) != 0 for p in range(200))
    with pytest.raises(ValueError, match="c must be"):
        routing.ConsistentHash(c=1.0)


def test_peak_ewma_learns_the_fast_replica():
    wl = workload.poisson_workload(4.0, 8000, service_rate=1.0, seed=3)
    specs = getattr(sim, "ReplicaSpec", None)
    if specs is None:
        pytest.skip("needs sim.ReplicaSpec (engine-1)")
    res = sim.simulate(wl, replicas=2, router=routing.PeakEWMA(),
                       replica_specs=[specs(speed=4.0), specs(speed=1.0)], seed=3)
    share_fast = np.mean(res.replica == 0)
    assert share_fast > 0.7, share_fast  # capacity split 4:1 = 0.8


def test_prefix_hits_follow_an_lru_per_replica():
    wl = workload.Workload.build([0.0, 1.0, 2.0, 3.0, 4.0], service_time=[0.1] * 5,
                                 prompt_id=[7, 7, 8, 7, -1])
    res = sim.simulate(wl, replicas=2, router=lambda q, r, g: 0)
    # cache of 1 prompt: 7 miss, 7 hit, 8 miss (evicts 7), 7 miss, unique never hits
    assert routing.prefix_hits(res, 1).tolist() == [False, True, False, False, False]
    assert routing.prefix_hits(res, 2).tolist() == [False, True, False, True, False]


def test_outstanding_over_time_counts_by_hand():
    wl = workload.Workload.build([0.0, 0.5, 0.6], service_time=[1.0, 1.0, 1.0])
    res = sim.simulate(wl, replicas=2, router=lambda q, r, g: 0 if q.id < 2 else 1)
    # replica 0: arrivals 0.0, 0.5; finishes 1.0, 2.0. replica 1: arrival 0.6, finish 1.6
    got = routing.outstanding_over_time(res, [0.25, 0.75, 1.5, 1.75, 2.5])
    assert got.tolist() == [[1, 0], [2, 1], [1, 1], [1, 0], [0, 0]]


# ----------------------------------------------------------------------------- simulator vs theory
def test_random_routing_makes_each_replica_mm1():
    wl = workload.poisson_workload(0.5 * 20, 60_000, service_rate=1.0, seed=4)
    res = sim.simulate(wl, replicas=20, router=routing.random_choice, seed=4)
    mean, se = routing.mean_sojourn(res, warmup=100.0)
    assert abs(mean - theory.mm1_sojourn_mean(0.5, 1.0)) < 4 * se + 0.01


def test_power_of_two_converges_to_the_supermarket_fixed_point():
    # N = 1000 at lam = 0.9: the limit is 2.614 s; the tolerance is 4 standard errors (batch
    # means over the run after a 60 s warm-up: an empty fleet takes about a minute to fill its
    # queues, whatever N) plus 2% for the finite N.
    n, lam = 1000, 0.9
    wl = workload.poisson_workload(lam * n, 120_000, service_rate=1.0, seed=5)
    res = sim.simulate(wl, replicas=n, router=lambda q, r, g: routing.power_of_d(q, r, g, 2), seed=5)
    mean, se = routing.mean_sojourn(res, warmup=60.0)
    limit = theory.supermarket_sojourn_mean(lam, 2)
    assert se < 0.1
    assert abs(mean - limit) < 4 * se + 0.02 * limit, (mean, se, limit)
    # and power of two beats random by far: the random limit is 10 s
    assert mean < 0.35 * theory.supermarket_sojourn_mean(lam, 1)
