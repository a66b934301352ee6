"""Closed-form queueing results the simulator is checked against.

Notation: arrival rate lam (lambda), service rate mu per server, c servers, rho = lam / (c mu).
Sources: Kleinrock, "Queueing Systems, Vol. 1" (1975); Harchol-Balter, "Performance Modeling and
Design of Computer Systems" (2013), chapters 13-14 (M/M/1, M/M/c, Erlang C) and 23 (M/G/1, P-K).
"""
from __future__ import annotations

import math

from ._checks import check_int, check_positive


def _rho(lam: float, mu: float, c: int = 1) -> float:
    check_positive("lam", lam)
    check_positive("mu", mu)
    check_int("c", c, minimum=1)
    rho = lam / (c * mu)
    if rho >= 1:
        raise ValueError(f"unstable queue: rho = lam/(c*mu) = {rho:.3f} must be < 1")
    return rho


def mm1_sojourn_mean(lam: float, mu: float) -> float:
    """Mean time in an M/M/1 system: W = 1 / (mu - lam)."""
    _rho(lam, mu)
    return 1.0 / (mu - lam)


def mm1_sojourn_quantile(lam: float, mu: float, q: float) -> float:
    """Quantile q in (0, 1) of M/M/1 (FCFS) sojourn time, which is exponential with rate mu - lam."""
    _rho(lam, mu)
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    return -math.log(1.0 - q) / (mu - lam)


def mm1_number_mean(lam: float, mu: float) -> float:
    """Mean number in an M/M/1 system: L = rho / (1 - rho)."""
    rho = _rho(lam, mu)
    return rho / (1 - rho)


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c, with offered load a = lam/mu Erlangs (a < c).

    Computed through the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)), which is stable
    for large c, then C = B / (1 - (a/c)(1 - B)).
    """
    check_int("c", c, minimum=1)
    check_positive("a", a)
    if a >= c:
        raise ValueError(f"unstable queue: offered load a={a} must be < c={c}")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b / (1 - (a / c) * (1 - b))


def mmc_wait_mean(lam: float, mu: float, c: int) -> float:
    """Mean queueing delay (before service) in M/M/c: Wq = C(c, a) / (c mu - lam)."""
    _rho(lam, mu, c)
    return erlang_c(c, lam / mu) / (c * mu - lam)


def md1_wait_mean(lam: float, mu: float) -> float:
    """Mean queueing delay in M/D/1 by Pollaczek-Khinchine: Wq = rho / (2 mu (1 - rho))."""
    rho = _rho(lam, mu)
    return rho / (2 * mu * (1 - rho))


def mg1_wait_mean(lam: float, mean_service: float, scv: float) -> float:
    """Pollaczek-Khinchine mean wait in M/G/1: Wq = rho E[S] (1 + scv) / (2 (1 - rho)).

    Args:
        scv: squared coefficient of variation of service time (0 deterministic, 1 exponential).
    """
    check_positive("mean_service", mean_service)
    if scv < 0:
        raise ValueError(f"scv must be >= 0, got {scv!r}")
    rho = _rho(lam, 1.0 / mean_service)
    return rho * mean_service * (1 + scv) / (2 * (1 - rho))


def tail_at_scale(p_slow: float, fanout: int) -> float:
    """Chance that a request fanning out to `fanout` servers meets at least one slow one.

    1 - (1 - p)^n (Dean and Barroso, "The Tail at Scale", CACM 2013): p = 1%, n = 100 gives 63%.
    """
    if not 0 <= p_slow <= 1:
        raise ValueError(f"p_slow must be in [0, 1], got {p_slow!r}")
    check_int("fanout", fanout, minimum=1)
    return 1.0 - (1.0 - p_slow) ** fanout


# ----------------------------------------------------------------------------- load balancing
# N replicas, each one server with exponential service at rate 1, Poisson arrivals at N * lam.
# Power of d choices (supermarket model): as N -> infinity the fraction of queues holding at
# least i requests tends to s_i = lam ** ((d**i - 1) / (d - 1)) (lam ** i for d = 1).
# Sources: Vvedenskaya, Dobrushin and Karpelevich, Problems of Information Transmission 32(1),
# 1996; Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE TPDS 12(10),
# 2001, Theorem 3.


def supermarket_tail(lam: float, d: int, i: int) -> float:
    """Fixed point s_i of the supermarket model: the share of queues with >= i requests.

    Args:
        lam: arrival rate per replica (= utilisation, service rate 1), 0 < lam < 1.
        d: replicas sampled per arrival, an int >= 1 (d = 1 is random routing: s_i = lam^i).
        i: queue length, an int >= 0 (s_0 = 1).
    """
    _rho(lam, 1.0)
    check_int("d", d, minimum=1)
    check_int("i", i, minimum=0)
    exponent = i if d == 1 else (d ** i - 1) / (d - 1)
    return lam ** exponent


def supermarket_sojourn_mean(lam: float, d: int) -> float:
    """Mean time in system of the supermarket model's limit (N -> infinity), service rate 1.

    By Little's law W = (sum_{i>=1} s_i) / lam: lam = 0.9 gives 10 (d = 1), 2.614 (d = 2),
    2.028 (d = 3).
    """
    total, i = 0.0, 1
    while True:
        s = supermarket_tail(lam, d, i)
        total += s
        if s < 1e-16 * max(total, 1.0) or i > 100_000:
            return total / lam
        i += 1


def mmc_sojourn_mean(lam: float, mu: float, c: int) -> float:
    """Mean time in an M/M/c system, W = 1/mu + C(c, a) / (c mu - lam): the central queue that
    join-the-shortest-queue routing over c replicas approaches."""
    return 1.0 / mu + mmc_wait_mean(lam, mu, c)
