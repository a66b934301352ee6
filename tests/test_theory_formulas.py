"""The closed forms of scalesim_course.theory, at values worked out by hand.

tests/test_theory.py checks the simulator against these formulas; this file checks the formulas
themselves, at non-unit rates and at the edges of their domains, so that a formula that drops a
parameter or moves a boundary is caught.
"""
import math

import pytest

from scalesim_course import theory


# ----------------------------------------------------------------------------- exact values
# Each worked by hand at non-unit rates, so a formula that drops mu (or c) is caught.
@pytest.mark.parametrize("call, expected", [
    (lambda: theory.mm1_sojourn_mean(3.0, 5.0), 1 / (5 - 3)),                    # 0.5
    (lambda: theory.mm1_sojourn_quantile(3.0, 5.0, 0.99), math.log(100) / 2),    # -ln(0.01)/(mu-lam)
    (lambda: theory.mm1_number_mean(3.0, 5.0), 0.6 / 0.4),                       # rho/(1-rho)
    (lambda: theory.md1_wait_mean(3.0, 5.0), 0.6 / (2 * 5 * 0.4)),               # 0.15
    # P-K: lam E[S^2] / (2 (1 - rho)), E[S^2] = (1 + scv) E[S]^2 = 3 * 0.04
    (lambda: theory.mg1_wait_mean(3.0, 0.2, 2.0), 3 * 0.12 / (2 * 0.4)),         # 0.45
    # Erlang C with c = 2, a = 1: (1/2 * 2) / (1 + 1 + 1/2 * 2) = 1/3
    (lambda: theory.erlang_c(2, 1.0), 1 / 3),
    # M/M/2, lam = 2, mu = 2: a = 1, Wq = C / (c mu - lam) = (1/3) / 2
    (lambda: theory.mmc_wait_mean(2.0, 2.0, 2), 1 / 6),
    (lambda: theory.tail_at_scale(0.05, 10), 1 - 0.95 ** 10),
])
def test_formulas_at_non_unit_rates(call, expected):
    assert call() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("call, error, message", [
    (lambda: theory.mm1_sojourn_mean(0.0, 1.0), ValueError, "lam must be > 0, got 0"),
    (lambda: theory.mm1_sojourn_mean(0.5, 0.0), ValueError, "mu must be > 0, got 0"),
    (lambda: theory.mmc_wait_mean(0.5, 1.0, 0), ValueError, "c must be >= 1, got 0"),
    (lambda: theory.mmc_wait_mean(0.5, 1.0, 1.5), TypeError, "c must be an integer"),
    (lambda: theory.mm1_sojourn_mean(1.0, 1.0), ValueError, r"rho = lam/\(c\*mu\) = 1.000"),
    (lambda: theory.mm1_sojourn_quantile(0.5, 1.0, 0.0), ValueError, r"q must be in \(0, 1\)"),
    (lambda: theory.mm1_sojourn_quantile(0.5, 1.0, 1.0), ValueError, r"q must be in \(0, 1\)"),
    (lambda: theory.erlang_c(0, 0.5), ValueError, "c must be >= 1, got 0"),
    (lambda: theory.erlang_c(2, 0.0), ValueError, "a must be > 0, got 0"),
    (lambda: theory.erlang_c(2, 2.0), ValueError, "offered load a=2.0 must be < c=2"),
    (lambda: theory.mg1_wait_mean(0.5, 0.0, 1.0), ValueError, "mean_service must be > 0"),
    (lambda: theory.mg1_wait_mean(0.5, 1.0, -0.1), ValueError, "scv must be >= 0, got -0.1"),
    (lambda: theory.tail_at_scale(-0.01, 10), ValueError, r"p_slow must be in \[0, 1\]"),
    (lambda: theory.tail_at_scale(1.01, 10), ValueError, r"p_slow must be in \[0, 1\]"),
    (lambda: theory.tail_at_scale(0.5, 0), ValueError, "fanout must be >= 1, got 0"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_boundaries_that_are_allowed():
    assert theory.tail_at_scale(0.0, 10) == 0.0          # no slow server: never slow
    assert theory.tail_at_scale(1.0, 1) == 1.0
    assert theory.mg1_wait_mean(0.5, 1.0, 0.0) == pytest.approx(0.5)   # M/D/1: 0.5*1*1/(2*0.5)
    assert theory.erlang_c(1, 0.5) == pytest.approx(0.5)   # M/M/1: P(wait) = rho
    assert theory.mmc_wait_mean(0.5, 1.0, 1) == pytest.approx(1.0)     # rho/(mu - lam) = 0.5/0.5
