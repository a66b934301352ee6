"""The engine never hangs and never lies: every policy and cost output is checked where it
enters, in one message style naming the policy and the value; runs without progress raise
NoProgressError naming the policy, the simulated time and the stuck requests."""
import math

import numpy as np
import pytest

from scalesim_course import batching, costmodel, sim
from scalesim_course.sim import BatchDecision, NoProgressError
from scalesim_course.workload import Workload, poisson_workload


def timed(arrival, service):
    return Workload.build(arrival, service_time=service)


class Timing:
    """A request-level cost that answers a fixed (first, busy) pair."""

    def __init__(self, first, busy):
        self.answer = (first, busy)

    def batch_timing(self, prompt_tokens, output_tokens):
        return self.answer

    def __repr__(self):
        return f"Timing{self.answer}"


class Step:
    """A step cost that answers a fixed value."""

    def __init__(self, value):
        self.value = value

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        return self.value

    def __repr__(self):
        return f"Step({self.value!r})"


# ----------------------------------------------------------------------------- no progress
def test_batcher_that_always_retries_raises_instead_of_looping():
    def always_later(queue):
        return BatchDecision(0, queue.now + 1)

    with pytest.raises(NoProgressError, match=r"batcher always_later .*t=.* 3 requests wait"):
        sim.simulate(timed([0.0, 0.5, 1.0], [1.0] * 3), batcher=always_later)


def test_batcher_that_always_declines_raises_instead_of_ending_silently():
    def never(queue):
        return 0

    with pytest.raises(NoProgressError, match=r"batcher never never sent a batch.* 5 requests"):
        sim.simulate(timed(np.arange(5.0), [1.0] * 5), batcher=never)


def test_static_batcher_leftovers_are_reported_not_raised():
    # 18 requests in batches of 4: 16 served, 2 never (the policy's choice), with or without
    # an autoscaler (which used to tick for ever)
    wl = timed(np.arange(18.0), np.full(18, 0.5))
    for extra in ({}, {"autoscaler": lambda v: 1}):
        res = sim.simulate(wl, batcher=batching.static_batcher(4), **extra)
        assert res.unfinished == 2


def test_scheduler_that_admits_nothing_raises_no_progress():
    wl = Workload.build([0.0], prompt_tokens=[5], output_tokens=[2])
    with pytest.raises(NoProgressError, match=r"scheduler nothing admitted no request.*t=0"):
        def nothing(view):
            return []
        sim.simulate(wl, mode="iteration", cost=Step(1.0), scheduler=nothing)


# ----------------------------------------------------------------------------- policy outputs
@pytest.mark.parametrize("answer, exc", [(True, TypeError), (1.0, TypeError), ("0", TypeError),
                                         (None, TypeError), (2, ValueError), (-1, ValueError)])
def test_router_answers_must_be_int_indices(answer, exc):
    def pick(request, replicas, rng):
        return answer

    with pytest.raises(exc, match=rf"router pick returned {answer!r}"):
        sim.simulate(timed([0.0], [1.0]), replicas=2, router=pick)


def test_numpy_int_router_answers_are_fine():
    res = sim.simulate(timed([0.0, 0.0], [1.0, 1.0]), replicas=2,
                       router=lambda r, reps, rng: np.int64(r.id))
    assert res.replica.tolist() == [0, 1]


@pytest.mark.parametrize("answer, exc", [
    (1.0, TypeError), (True, TypeError), ("1", TypeError), ((1,), TypeError),
    (BatchDecision(1.0), TypeError), (5, ValueError), (-1, ValueError),
    (BatchDecision(0, math.inf), ValueError), (BatchDecision(0, math.nan), ValueError),
    (BatchDecision(0, 0.0), ValueError), (BatchDecision(1, 5.0), ValueError),
    (BatchDecision(0, "soon"), TypeError)])
def test_batcher_answers_are_checked(answer, exc):
    def batch(queue):
        return answer

    with pytest.raises(exc, match=r"batcher .*batch returned"):
        sim.simulate(timed([0.0], [1.0]), batcher=batch)


@pytest.mark.parametrize("timing, exc", [
    ((0.1, -5.0), ValueError), ((0.0, 0.0), ValueError), ((0.1, math.inf), ValueError),
    ((math.nan, 1.0), ValueError), ((-0.1, 1.0), ValueError), ((2.0, 1.0), ValueError),
    ((None, 1.0), TypeError), (1.0, TypeError)])
def test_request_costs_are_checked(timing, exc):
    class Bad(Timing):
        def batch_timing(self, prompt_tokens, output_tokens):
            return timing

    with pytest.raises(exc, match=r"cost .*batch_timing\(\) returned"):
        sim.simulate(timed([0.0], [1.0]), cost=Bad(0, 0))


@pytest.mark.parametrize("value, exc", [(-1.0, ValueError), (0.0, ValueError),
                                        (math.nan, ValueError), (math.inf, ValueError),
                                        ("1", TypeError), (None, TypeError)])
def test_step_costs_are_checked(value, exc):
    wl = Workload.build([0.0], prompt_tokens=[5], output_tokens=[2])
    with pytest.raises(exc, match=r"cost Step\(.*\)\.step_time\(\) returned"):
        sim.simulate(wl, mode="iteration", cost=Step(value))


@pytest.mark.parametrize("service", [-5.0, 0.0, math.inf])
def test_workload_service_times_are_checked(service):
    with pytest.raises(ValueError, match="service_time"):
        sim.simulate(timed([0.0, 1.0], [1.0, service]))


@pytest.mark.parametrize("answer, exc", [(None, TypeError), (5, TypeError), ([0.0], TypeError),
                                         ([True], TypeError), ([7], ValueError),
                                         ([0, 0], ValueError)])
def test_scheduler_answers_are_checked(answer, exc):
    wl = Workload.build([0.0], prompt_tokens=[5], output_tokens=[2])

    def admit(view):
        return answer

    if answer is None:   # None means "nothing": an empty batch, no progress
        exc = NoProgressError
    with pytest.raises(exc, match="admit"):
        sim.simulate(wl, mode="iteration", cost=Step(1.0), scheduler=admit)


def test_a_negative_cost_no_longer_gives_negative_latency():
    # used to finish at -5 with utilisation -2
    with pytest.raises(ValueError, match=r"returned \(0.0, -5.0\)"):
        sim.simulate(poisson_workload(1.0, 5, seed=1), cost=Timing(0.0, -5.0))


@pytest.mark.parametrize("timing, finish", [
    ((np.float64(0.0), np.float64(0.5)), 0.5), ((0, 2), 2.0), ((np.float32(0.25), 0.25), 0.25),
    ((1, 1), 1.0), ((np.int64(0), np.float64(0.75)), 0.75)])
def test_valid_timings_of_any_number_type_pass(timing, finish):
    # numpy and int answers take the slow check path: first token at 0, or equal to busy, fine
    res = sim.simulate(timed([0.0], [1.0]), cost=Timing(*timing))
    assert res.finish.tolist() == [finish]
