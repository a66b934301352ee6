"""The event loop's exact rules (scalesim_course.sim.engine, fleet, config, views, result): same-
instant order, stops exactly at an event, scale up / cancel / drain / zero, the no-progress
thresholds, what every view shows. Tiny deterministic workloads; every expected value is
worked out by hand in the comments."""
import math
import re

import numpy as np
import pytest

from scalesim_course import costmodel, sim
from scalesim_course.sim import BatchDecision, NoProgressError, ReplicaSpec, ServingConfig
from scalesim_course.sim.result import RunResult
from scalesim_course.workload import Workload


def timed(arrival, service):
    """A workload with given arrival and service times (seconds)."""
    return Workload.build(arrival, service_time=service)


def route_to(k):
    """A router that always answers k (sends the run through the general, non-inline path)."""
    return lambda req, replicas, rng: k


def scripted(answers, then):
    """An autoscaler answering `answers` in turn, then `then` for ever.

    Returns:
        (autoscaler, list of the ClusterViews it was shown, list of what their live replica
        views showed at the call: [(id, state, index)] and (n_up, n_starting, outstanding))
    """
    views, live = [], []

    def scaler(view):
        views.append(view)
        live.append(([(r.id, r.state, r.index) for r in view.replicas],
                     (view.n_up, view.n_starting, view.outstanding)))
        return answers[len(views) - 1] if len(views) <= len(answers) else then

    return scaler, views, live


class Fixed:
    """A request cost answering a fixed (first token offset, busy seconds) pair."""

    def __init__(self, first, busy):
        self.answer = (first, busy)

    def batch_timing(self, prompt_tokens, output_tokens):
        return self.answer


def ConstantStep(d=1.0):
    """Every engine step takes `d` seconds."""
    return costmodel.LinearStepCost(d, 0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- same-instant order
def test_an_arrival_comes_before_a_completion_at_the_same_instant():
    # r0 (10 s) -> replica 0, r1 (5 s) -> replica 1; r2 arrives at 5.0, when r1 ends. Arrival
    # first: both replicas hold 1 -> tie -> replica 0, where r2 waits for r0: [10, 11].
    # (Completion first would send it to the then empty replica 1: [5, 6].)
    res = sim.simulate(timed([0.0, 0.0, 5.0], [10.0, 5.0, 1.0]), replicas=2)
    assert res.replica.tolist() == [0, 1, 0]
    assert res.start.tolist() == [0.0, 0.0, 10.0]
    assert res.finish.tolist() == [10.0, 5.0, 11.0]
    assert res.busy_by_replica == {0: 11.0, 1: 5.0} and res.end_time == 11.0


def test_an_autoscaler_tick_sees_everything_else_at_its_instant():
    # r0 [0, 10]; r1 arrives at 10.0 (first), waits, and starts when r0 ends at 10.0; the tick
    # at 10.0 comes last: 2 arrivals, 1 completion, nothing queued, r1 in service.
    # busy: r0's 10 s of 10 -> 1.0; in system: 1 request over [0, 10] -> 1.0
    scaler, views, live = scripted([], 1)
    res = sim.simulate(timed([0.0, 10.0], [10.0, 2.0]), autoscaler=scaler,
                       autoscale_interval=10.0)
    v = views[0]
    assert (v.now, v.arrivals, v.completions, v.interval) == (10.0, 2, 1, 10.0)
    assert v.queue_lens == (0,) and live[0] == ([(0, "up", 0)], (1, 0, 1))
    assert v.busy_fraction == (1.0,) and v.concurrency == (1.0,)
    assert res.start.tolist() == [0.0, 10.0] and res.finish.tolist() == [10.0, 12.0]
    # the run ends at the next tick after the last completion (20.0): counts reset per tick
    assert [v.now for v in views] == [10.0, 20.0]
    assert (views[1].arrivals, views[1].completions) == (0, 1)
    assert views[1].busy_fraction == (0.2,) and views[1].concurrency == (0.2,)
    assert res.end_time == 20.0 and res.provisioned_replica_seconds == 20.0


def test_busy_fraction_is_per_server():
    # two servers: r0 [0, 10] on one, the other idle: busy 10 of 2 x 10 server-seconds -> 0.5
    scaler, views, live = scripted([], 1)
    sim.simulate(timed([0.0], [10.0]), servers=2, autoscaler=scaler, autoscale_interval=10.0)
    assert views[0].busy_fraction == (0.5,) and views[0].concurrency == (1.0,)


# ----------------------------------------------------------------------------- an honest stop
@pytest.mark.parametrize("router", [None, route_to(0)])
def test_a_stop_exactly_at_an_event_time_includes_that_instant(router):
    # r0 [0, 5]; r1 arrives at 5.0 and starts at 5.0 (3 s); stop at 5.0: r0's completion and
    # r1's arrival and start at 5.0 happen; r1's end (8.0) does not: busy 5 of 5 s up
    res = sim.simulate(timed([0.0, 5.0], [5.0, 3.0]), until=5.0, router=router)
    assert res.start.tolist() == [0.0, 5.0]
    assert res.finish[0] == 5.0 and math.isnan(res.finish[1])
    assert res.first_token[0] == 5.0 and math.isnan(res.first_token[1])   # 8.0 is after it
    assert res.unfinished == 1 and res.replica.tolist() == [0, 0]
    assert res.busy_time.tolist() == [5.0] and res.up_time.tolist() == [5.0]
    assert (res.stopped_at, res.end_time, res.n_steps) == (5.0, 5.0, 2)


def test_a_stop_before_a_start_leaves_the_request_unserved():
    # three 1 s requests at 0 on one server; stop at 1.5: r0 [0,1], r1 [1,2) cut, r2 never
    # started (replica -1); 2 batches began; busy 1 + 0.5
    res = sim.simulate(timed([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), until=1.5)
    assert res.start.tolist()[:2] == [0.0, 1.0] and math.isnan(res.start[2])
    assert res.replica.tolist() == [0, 0, -1] and res.n_steps == 2
    assert res.busy_time.tolist() == [1.5] and res.unfinished == 2


def test_a_stop_at_zero_and_integer_stops():
    res = sim.simulate(timed([0.0], [2.0]), until=0.0)
    # the arrival at 0.0 starts; nothing else happens; nothing was busy yet
    assert res.start.tolist() == [0.0] and math.isnan(res.finish[0])
    assert res.busy_time.tolist() == [0.0] and res.up_time.tolist() == [0.0]
    assert res.stopped_at == 0.0
    for until in (3, np.int64(3), np.float64(3.0)):
        res = sim.simulate(timed([0.0], [2.0]), until=until)
        assert res.stopped_at == 3.0 and res.finish.tolist() == [2.0]


@pytest.mark.parametrize("router", [None, route_to(0)])
def test_a_stop_before_the_first_arrival(router):
    # nothing happened: the clock never moved (end 0), the replica was up for the 2 s
    res = sim.simulate(timed([5.0], [1.0]), until=2.0, router=router)
    assert (res.end_time, res.stopped_at) == (0.0, 2.0)
    assert res.up_time.tolist() == [2.0] and res.busy_time.tolist() == [0.0]
    assert res.replica.tolist() == [-1] and res.unfinished == 1


def test_a_stop_while_a_batcher_waits_is_not_an_error():
    # declines at 0, 1, ..., 5 (retrying 1 s later); the stop at 5.5 comes first
    res = sim.simulate(timed([0.0], [1.0]), batcher=declining(100), until=5.5)
    assert res.unfinished == 1 and math.isnan(res.start[0]) and res.n_steps == 0


@pytest.mark.parametrize("until", [True, np.True_, [1.0]])
def test_until_refuses_bools_and_non_numbers(until):
    with pytest.raises(TypeError, match="until"):
        sim.simulate(timed([0.0], [1.0]), until=until)


def test_a_stop_after_the_last_event_counts_the_idle_time_up_to_it():
    # r0 [0, 2]; stop at 10: the replica was up 10 s, busy 2; without a stop it ends at 2
    res = sim.simulate(timed([0.0], [2.0]), until=10.0)
    assert (res.end_time, res.stopped_at) == (2.0, 10.0)
    assert res.up_time.tolist() == [10.0] and res.busy_time.tolist() == [2.0]
    assert res.utilization == 0.2
    res = sim.simulate(timed([0.0], [2.0]))
    assert res.stopped_at == res.end_time == 2.0 and res.up_time.tolist() == [2.0]


def test_busy_time_past_the_stop_is_cut_per_replica():
    # r0 (10 s) on replica 0, r1 (4 s) on replica 1, stop at 3: each busy 3 s, nothing done
    res = sim.simulate(timed([0.0, 0.0], [10.0, 4.0]), replicas=2, until=3.0)
    assert res.busy_time.tolist() == [3.0, 3.0] and res.busy_by_replica == {0: 3.0, 1: 3.0}
    assert res.up_time.tolist() == [3.0, 3.0] and res.unfinished == 2
    assert np.isnan(res.first_token).all()


def test_a_cost_models_first_token_before_the_stop_is_kept():
    # first token 1 s into a 4 s batch; stop at 2: first token at 1 is real, finish is not
    res = sim.simulate(timed([0.0], [9.0]), cost=Fixed(1.0, 4.0), until=2.0)
    assert res.first_token.tolist() == [1.0] and math.isnan(res.finish[0])
    assert res.busy_time.tolist() == [2.0]


# ----------------------------------------------------------------------------- the inline path
def test_the_inline_path_is_left_for_steps_a_spec_cost_and_speed():
    # record_steps: every request is a batch in the step log (prefill 1 token, 1 "decode")
    res = sim.simulate(timed([0.0, 0.0], [1.0, 2.0]), record_steps=True)
    assert [tuple(s) for s in res.steps] == [(0, 0.0, 1.0, 1, 1, 1), (0, 1.0, 3.0, 1, 1, 1)]
    # a spec's cost replaces the workload's service time (3 s): first token 0.25, done 0.5
    res = sim.simulate(timed([0.0], [3.0]), replica_specs=[ReplicaSpec(cost=Fixed(0.25, 0.5))])
    assert res.first_token.tolist() == [0.25] and res.finish.tolist() == [0.5]
    # speed 2 on the inline path: 3 s of work take 1.5 s
    res = sim.simulate(timed([0.0, 0.0], [3.0, 1.0]), replica_specs=[ReplicaSpec(speed=2.0)])
    assert res.finish.tolist() == [1.5, 2.0] and res.busy_time.tolist() == [2.0]


def test_service_times_are_needed_only_where_no_cost_is_given():
    no_service = Workload.build([0.0, 0.0])
    res = sim.simulate(no_service, replicas=2, replica_specs=[ReplicaSpec(cost=Fixed(0.5, 1.0))])
    assert res.finish.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="service_time"):
        sim.simulate(no_service, replicas=2,
                     replica_specs=[ReplicaSpec(cost=Fixed(0.5, 1.0)), ReplicaSpec()])


@pytest.mark.parametrize("bad", [-5.0, 0.0, math.inf])
def test_the_engine_rechecks_service_times_changed_after_the_workload_was_built(bad):
    # Workload checks its service times when built; the arrays stay writable, so the engine
    # checks again before it uses them, and names the first bad value
    wl = timed([0.0, 1.0, 2.0], [1.0, 1.0, 1.0])
    wl.service_time[1] = bad
    value = re.escape(repr(bad))     # as a Python float: -5.0, not np.float64(-5.0)
    with pytest.raises(ValueError, match=rf"^workload service_time must be finite and > 0 "
                       rf"seconds for cost=None, got {value}$"):
        sim.simulate(wl)


def test_simulate_overrides_a_config_without_changing_it():
    cfg = ServingConfig(replicas=2)
    res = sim.simulate(timed([0.0, 0.0], [1.0, 1.0]), cfg, replicas=1)
    assert res.finish.tolist() == [1.0, 2.0] and cfg.replicas == 2
    res = sim.simulate(timed([0.0, 0.0], [1.0, 1.0]), cfg)
    assert res.finish.tolist() == [1.0, 1.0]


def test_the_default_seed_is_zero():
    def draw(req, replicas, rng):
        draws.append(int(rng.integers(1_000_000)))
        return 0

    wl = timed([0.0, 1.0, 2.0], [0.5] * 3)
    runs = []
    for run in (lambda: sim.simulate(wl, router=draw), lambda: sim.simulate(wl, router=draw,
                                                                              seed=0),
                lambda: sim.Simulation(wl, ServingConfig(router=draw)).run(),
                lambda: sim.simulate(wl, router=draw, seed=1)):
        draws = []
        run()
        runs.append(draws)
    assert runs[0] == runs[1] == runs[2] != runs[3]


# ----------------------------------------------------------------------------- no progress
def declining(n_declines, first_take=False):
    """A batcher that (optionally takes one request first, then) declines `n_declines` times
    with a retry 1 s later, then takes one request each time."""
    calls = []

    def hesitant(queue):
        calls.append(queue.now)
        k = len(calls) - (2 if first_take else 1)
        if first_take and len(calls) == 1:
            return 1
        return BatchDecision(0, queue.now + 1.0) if k < n_declines else 1

    return hesitant


def test_a_batcher_may_decline_max_idle_minus_one_retries_in_a_row():
    # the call at the arrival (t=0) declines without counting; the retries at 1 .. 9999 decline
    # (9,999 in a row); the retry at 10000 takes the request: [10000, 10001]
    assert sim.MAX_IDLE == 10_000
    res = sim.simulate(timed([0.0], [1.0]), batcher=declining(10_000))
    assert res.start.tolist() == [10_000.0] and res.finish.tolist() == [10_001.0]


def test_the_max_idle_th_declined_retry_raises_naming_time_and_stuck_requests():
    # r0 taken at once [0, 1]; r1 (arrived 0.5) is declined at 1 (no count), then at the
    # retries 2 .. 10001: the 10,000th in a row, at t=10001, raises; 1 request waits
    with pytest.raises(NoProgressError, match=r"batcher hesitant made 10000 decisions in a row "
                       r".*t=10001 s\) while 1 requests wait"):
        sim.simulate(timed([0.0, 0.5], [1.0, 1.0]), batcher=declining(10_001, first_take=True))


def never(queue):
    return 0


def test_a_batcher_that_never_sends_raises_only_when_events_run_out():
    with pytest.raises(NoProgressError, match=r"batcher never never sent a batch.*t=1 s with 2 "):
        sim.simulate(timed([0.0, 1.0], [1.0, 1.0]), batcher=never, until=100.0)
    # an arrival after the stop: the run ran out of time, not of events
    res = sim.simulate(timed([0.0, 1.0, 200.0], [1.0] * 3), batcher=never, until=100.0)
    assert res.unfinished == 3 and res.replica.tolist() == [-1, -1, -1]
    # with an autoscaler the run ends at the first tick after the last arrival that has
    # nothing else to wait for (t=10)
    with pytest.raises(NoProgressError, match=r"never sent a batch.*t=10 s with 2 "):
        sim.simulate(timed([0.0, 1.0], [1.0, 1.0]), batcher=never, autoscaler=lambda v: 1)


@pytest.mark.parametrize("zeros", [99, 100])
def test_scale_to_zero_may_hold_requests_for_idle_ticks_minus_one_ticks(zeros):
    # replicas=0; r0 arrives at 0.5 and is held; ticks every 1 s answer 0 for `zeros` ticks.
    # 99: the tick at 100 asks for 1, up at once (no start-up delay): r0 [100, 101]; the tick
    # at 101 sees it done and ends the run. 100: the tick at 100 is the 100th with the
    # request held and nothing starting: NoProgressError.
    scaler, views, live = scripted([0] * zeros, 1)
    settings = dict(replicas=0, min_replicas=0, autoscaler=scaler, autoscale_interval=1.0)
    wl = timed([0.5], [1.0])
    if zeros == 100:
        with pytest.raises(NoProgressError, match=r"autoscaler scaler kept 0 replicas for 100 "
                           r"ticks \(until t=100 s\) while 1 requests wait for a replica"):
            sim.simulate(wl, **settings)
        return
    res = sim.simulate(wl, **settings)
    assert res.start.tolist() == [100.0] and res.finish.tolist() == [101.0]
    assert [v.held for v in views[98:]] == [1, 1, 0]
    # tick 101: up for the last 1 s of the interval and busy all of it
    assert views[100].busy_fraction == (1.0,) and views[100].concurrency == (1.0,)
    assert res.scale_events == [(100.0, 0, 1)]
    assert res.fleet_log == [(0.0, 0, 0), (100.0, 0, 1), (100.0, 1, 0)]
    assert res.provisioned_replica_seconds == 1.0 and res.end_time == 101.0


def test_idle_ticks_count_from_when_nothing_but_ticks_is_left():
    # r0 held from 0.5; tick 1 starts a replica (up at 5.5), tick 2 cancels it. Ticks 1 to 5
    # see an event pending (the start-up, its ready event at 5.5): no count. From tick 6 on
    # nothing but ticks is left: tick 6 is the 1st idle tick, tick 105 the 100th: it raises.
    scaler, _, _ = scripted([1], 0)
    with pytest.raises(NoProgressError, match=r"kept 0 replicas for 100 ticks \(until t=105 s\)"):
        sim.simulate(timed([0.5], [1.0]), replicas=0, min_replicas=0, autoscaler=scaler,
                     autoscale_interval=1.0, startup_delay=4.5)


# ----------------------------------------------------------------------------- the fleet
def test_a_cancelled_start_up_costs_its_provisioning_time_only():
    # r0 [0, 100] on replica 0. Tick 10 asks 2: replica 1 starts (up at 25). Tick 20 asks 1:
    # the start-up is cancelled first (not the busy replica). Its ready event at 25 does
    # nothing. The run ends at tick 100 (r0 done at 100, before the tick).
    scaler, views, live = scripted([2, 1], 1)
    res = sim.simulate(timed([0.0], [100.0]), autoscaler=scaler, autoscale_interval=10.0,
                       startup_delay=15.0)
    assert res.scale_events == [(10.0, 1, 2), (20.0, 2, 1)]
    assert res.fleet_log == [(0.0, 1, 0), (10.0, 1, 1), (20.0, 1, 0)]
    assert res.fleet[:4] == [(0.0, 1, 0), (10.0, 1, 1), (20.0, 1, 0), (30.0, 1, 0)]
    assert res.up_time.tolist() == [100.0, 0.0] and res.busy_time.tolist() == [100.0, 0.0]
    assert res.provisioned_replica_seconds == 110.0 and res.end_time == 100.0
    # tick 20 saw the starting replica (state, no busy share); tick 30 no longer does
    assert live[1] == ([(0, "up", 0), (1, "starting", -1)], (1, 1, 1))
    assert views[1].busy_fraction == (1.0, 0.0) and len(views[2].replicas) == 1


def test_a_stop_during_a_start_up_counts_provisioning_but_no_up_time():
    # tick 10 asks 2 (start-up 15 s): at the stop (20) replica 1 is still starting
    scaler, _, _ = scripted([2], 2)
    res = sim.simulate(timed([0.0], [100.0]), autoscaler=scaler, autoscale_interval=10.0,
                       startup_delay=15.0, until=20.0)
    assert res.up_time.tolist() == [20.0, 0.0] and res.busy_time.tolist() == [20.0, 0.0]
    assert res.provisioned_replica_seconds == 30.0 and res.stopped_at == 20.0
    assert res.fleet_log == [(0.0, 1, 0), (10.0, 1, 1)]


def test_replicas_started_together_come_up_in_order():
    # tick 10 asks 3: replicas 1 and 2 start, both up at 15 (ready in the order scheduled);
    # r1 at 20 sees ids 0, 1, 2 at indices 0, 1, 2 and goes to the first idle one
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.id, r.index, r.state) for r in replicas])
        return min(range(len(replicas)), key=lambda k: replicas[k].outstanding)

    scaler, _, live = scripted([3], 3)
    res = sim.simulate(timed([0.0, 20.0], [100.0, 1.0]), router=router, autoscaler=scaler,
                       autoscale_interval=10.0, startup_delay=5.0, until=25.0)
    assert seen[1] == [(0, 0, "up"), (1, 1, "up"), (2, 2, "up")]
    assert res.replica.tolist() == [0, 1] and res.finish[1] == 21.0
    assert live[1][0] == [(0, "up", 0), (1, "up", 1), (2, "up", 2)]
    assert res.fleet_log == [(0.0, 1, 0), (10.0, 1, 2), (15.0, 2, 1), (15.0, 3, 0)]
    assert res.up_time.tolist() == [25.0, 10.0, 10.0]
    assert res.provisioned_replica_seconds == 25.0 + 15.0 + 15.0


def test_scale_down_drains_the_least_loaded_replica():
    # r0 [0, 100] on replica 0, replica 1 idle; tick 10 asks 1: replica 1 (load 0) is drained
    # and, idle, stops at once
    scaler, _, _ = scripted([1], 1)
    res = sim.simulate(timed([0.0], [100.0]), replicas=2, autoscaler=scaler,
                       autoscale_interval=10.0)
    assert res.up_time.tolist() == [100.0, 10.0] and res.provisioned_replica_seconds == 110.0
    assert res.fleet_log == [(0.0, 2, 0), (10.0, 1, 0)] and res.scale_events == [(10.0, 2, 1)]


def test_a_draining_replica_finishes_its_work_then_stops():
    # r0 (30 s) -> replica 0, r1 (25 s) -> replica 1, r2 (arrives 1, 5 s) -> replica 0 (tie).
    # Tick 10 asks 1: replica 1 holds less (1 vs 2) and drains; r3 (at 21) can only go to
    # replica 0: r2 [30, 35], r3 [35, 36]. Replica 1 stops when r1 ends (25). Tick 40 ends
    # the run (all done at 36).
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.id, r.index) for r in replicas])
        return min(range(len(replicas)), key=lambda k: replicas[k].outstanding)

    scaler, views, live = scripted([1], 1)
    res = sim.simulate(timed([0.0, 0.0, 1.0, 21.0], [30.0, 25.0, 5.0, 1.0]), replicas=2,
                       router=router, autoscaler=scaler, autoscale_interval=10.0)
    assert res.replica.tolist() == [0, 1, 0, 0]
    assert res.start.tolist() == [0.0, 0.0, 30.0, 35.0]
    assert res.finish.tolist() == [30.0, 25.0, 35.0, 36.0]
    assert seen[-1] == [(0, 0)]
    v = views[1]   # tick 20: replica 1 is draining, outside the router's list
    assert live[1] == ([(0, "up", 0), (1, "draining", -1)], (1, 0, 3))
    assert v.busy_fraction == (1.0, 1.0) and v.queue_lens == (1, 0)
    assert [r.id for r in views[2].replicas] == [0]
    assert res.up_time.tolist() == [40.0, 25.0] and res.busy_time.tolist() == [36.0, 25.0]
    assert res.provisioned_replica_seconds == 65.0 and res.end_time == 40.0


def test_the_router_sees_indices_renumbered_after_a_drain():
    # replica 0 is drained at tick 10 (tie: both idle, the first goes); r1 at 15 sees only
    # replica 1, at index 0
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.id, r.index) for r in replicas])
        return 0

    scaler, _, _ = scripted([1], 1)
    res = sim.simulate(timed([0.0, 15.0], [1.0, 1.0]), replicas=2, router=router,
                       autoscaler=scaler, autoscale_interval=10.0)
    assert seen == [[(0, 0), (1, 1)], [(1, 0)]]
    assert res.replica.tolist() == [0, 1] and res.up_time.tolist() == [10.0, 20.0]


def test_autoscaler_answers_are_clipped_to_the_bounds():
    # max 2: asking 5 starts one replica; min 1: asking 0 afterwards drains back to 1
    scaler, _, _ = scripted([5, 0], 0)
    res = sim.simulate(timed([0.0, 25.0], [30.0, 1.0]), autoscaler=scaler,
                       autoscale_interval=10.0, max_replicas=2)
    assert res.scale_events == [(10.0, 1, 2), (20.0, 2, 1)]
    # no start-up delay: the replica is starting and up at the same instant
    assert res.fleet_log == [(0.0, 1, 0), (10.0, 1, 1), (10.0, 2, 0), (20.0, 1, 0)]
    # the new replica (idle) is drained at 20, not the busy one; r1 at 25 waits for r0
    assert res.up_time.tolist() == [40.0, 10.0] and res.start.tolist() == [0.0, 30.0]


# ----------------------------------------------------------------------------- stale views
def test_delayed_views_before_time_t_show_an_empty_replica():
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.queue_len, r.busy, r.kv_used, r.queued_tokens, r.outstanding)
                     for r in replicas])
        return 0

    # T = 2 delayed: at 0 and 1 the views are of times -2 and -1, before anything: all zero;
    # at 3 the view of time 1 shows r0 busy and r1 queued (1 prompt + 1 output token)
    sim.simulate(timed([0.0, 1.0, 3.0], [10.0] * 3), replicas=2, router=router,
                 view_staleness=2.0, view_refresh="delayed")
    assert seen[0] == seen[1] == [(0, 0, 0, 0, 0)] * 2
    assert seen[2] == [(1, 1, 0, 2, 2), (0, 0, 0, 0, 0)]


def test_delayed_views_keep_every_change_until_it_is_t_old():
    seen = []

    def router(req, replicas, rng):
        seen.append((replicas[0].queue_len, replicas[0].busy))
        return 0

    # one replica, T = 2 delayed; r0 (100 s) at 0 is served; r1 at 1 and r2, r3 at 2 queue.
    # The router sees the load as of 2 s earlier: at 0, 1 nothing; at 2 (both) the state of
    # 0 (r0 busy); at 3.5 that of 1.5 (r1 queued); at 4.5 that of 2.5 (3 queued: both
    # changes at 2 count, the later one last)
    sim.simulate(timed([0.0, 1.0, 2.0, 2.0, 3.5, 4.5], [100.0] * 6), router=router,
                 view_staleness=2.0, view_refresh="delayed", until=5.0)
    assert seen == [(0, 0), (0, 0), (0, 1), (0, 1), (1, 1), (3, 1)]


def test_stale_views_keep_recording_after_a_replica_stops():
    # replica 0 is drained and stops at tick 10 (both idle: the first goes); r0 at 11 goes to
    # replica 1; at 13 the snapshot of 13 shows it busy
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.id, r.busy) for r in replicas])
        return 0

    scaler, _, _ = scripted([1], 1)
    sim.simulate(timed([11.0, 13.0], [100.0, 1.0]), replicas=2, router=router,
                 autoscaler=scaler, autoscale_interval=10.0, view_staleness=1.0, until=14.0)
    assert seen == [[(1, 0)], [(1, 1)]]


def test_a_staleness_under_a_second_is_stale():
    # T = 0.5 periodic: at 0.2 the router sees the snapshot of 0, before r0 arrived (0.1):
    # both replicas empty, the tie goes to replica 0 (live views would say replica 1)
    res = sim.simulate(timed([0.1, 0.2], [10.0, 10.0]), replicas=2, view_staleness=0.5)
    assert res.replica.tolist() == [0, 0]


def test_a_bad_router_answer_names_the_valid_range():
    with pytest.raises(ValueError, match=r"^router <lambda> returned 3: it must be an int index "
                       r"in 0\.\.2 into the replicas it was given$"):
        sim.simulate(timed([0.0], [1.0]), replicas=3, router=route_to(3))


# ----------------------------------------------------------------------------- views
def test_replica_views_show_the_live_replica():
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.id, r.index, r.state, r.speed, r.queue_len, r.busy, r.outstanding,
                      r.servers, r.kv_used, r.kv_capacity, r.queued_tokens) for r in replicas])
        return 0

    # three 5 s requests (prompt 3 + output 4 tokens) at 0, 1, 2 on replica 0 (2 servers)
    wl = Workload.build([0.0, 1.0, 2.0], prompt_tokens=[3] * 3, output_tokens=[4] * 3,
                        service_time=[5.0] * 3)
    sim.simulate(wl, replicas=2, router=router,
                 replica_specs=[ReplicaSpec(servers=2, speed=0.5), ReplicaSpec()])
    assert seen[2] == [(0, 0, "up", 0.5, 0, 2, 2, 2, 0, math.inf, 0),
                       (1, 1, "up", 1.0, 0, 0, 0, 1, 0, math.inf, 0)]
    fake = type("R", (), dict(id=3, state="up", queue=[1, 2], busy=1))()
    assert repr(sim.ReplicaView(fake)) == "ReplicaView(id=3, state='up', queue_len=2, busy=1)"


def test_a_stale_view_shows_its_snapshot_and_says_so():
    seen = []

    def router(req, replicas, rng):
        seen.append([(r.queue_len, r.busy, r.outstanding, r.id, r.state) for r in replicas])
        if req.id == 2:
            seen.append(repr(replicas[0]))
        return 0

    # T = 10: at 12 the snapshot of 10 shows r0 busy and r1 queued on replica 0
    sim.simulate(timed([0.0, 1.0, 12.0], [100.0] * 3), replicas=2, router=router,
                 view_staleness=10.0)
    assert seen[2] == [(1, 1, 2, 0, "up"), (0, 0, 0, 1, "up")]
    assert seen[3] == "ReplicaView(id=0, state='up', queue_len=1, busy=1, stale)"


def test_a_batchers_queue_view():
    seen = []

    def batcher(queue):
        seen.append((queue.now, len(queue), [tuple(r) for r in queue], queue[-1].id,
                     queue.free_servers))
        if len(queue) >= 2:
            return len(queue)
        return 1 if queue.free_servers == 2 else 0

    # 2 servers; r0 (10 s) at 0 is taken at once (2 free); r1 at 1 waits (1 free, alone);
    # r2 at 2 makes 2 waiting: both go as one batch [2, 3]
    wl = Workload.build([0.0, 1.0, 2.0], prompt_tokens=[3, 4, 5], output_tokens=[6, 7, 8],
                        prompt_id=[9, -1, 9], service_time=[10.0, 1.0, 1.0])
    res = sim.simulate(wl, servers=2, batcher=batcher)
    r0, r1, r2 = (0, 0.0, 3, 6, 9, 10.0), (1, 1.0, 4, 7, -1, 1.0), (2, 2.0, 5, 8, 9, 1.0)
    assert seen == [(0.0, 1, [r0], 0, 2), (1.0, 1, [r1], 1, 1), (2.0, 2, [r1, r2], 2, 1)]
    assert res.start.tolist() == [0.0, 2.0, 2.0] and res.finish.tolist() == [10.0, 3.0, 3.0]
    assert res.servers == 2 and res.servers_by_replica.tolist() == [2]


def test_a_running_sequence_shows_its_prefill_progress():
    seen = []

    def scheduler(view):
        seen.append([tuple(s)[1:] for s in view.running])
        return [r.id for r in view.head(1)]

    # chunks of 2 tokens: after step 1 r0 (prompt 4) has prefilled 2, no token yet
    wl = Workload.build([0.0, 0.5], prompt_tokens=[4, 1], output_tokens=[2, 1])
    sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), prefill_chunk=2,
                 scheduler=scheduler)
    assert seen[:2] == [[], [(2, 0)]]


def test_a_schedulers_step_view():
    seen = []

    def scheduler(view):
        seen.append((view.now, [r.id for r in view.waiting],
                     [(s.request.id, s.prefilled, s.generated) for s in view.running],
                     view.n_waiting, view.n_running, view.kv_used, view.kv_capacity,
                     view.max_batch, [r.id for r in view.head(1)],
                     [r.id for r in view.head(9)]))
        return [r.id for r in view.head(view.max_batch - view.n_running)]

    # 1 s steps, max_batch 2, KV 100; r0 (prompt 4, output 3) at 0; r1, r2 (prompt 5,
    # output 2) at 1.5. Asked at 0 (r0 alone), at 1 (nothing waits: not asked), at 2: r0 has
    # prefilled 4 and made 2 tokens (1 after the prefill step, 1 decode); 7 KV tokens held
    wl = Workload.build([0.0, 1.5, 1.5], prompt_tokens=[4, 5, 5], output_tokens=[3, 2, 2])
    sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), max_batch=2, kv_capacity=100,
                 scheduler=scheduler)
    assert seen[0] == (0.0, [0], [], 1, 0, 0, 100, 2, [0], [0])
    assert seen[1] == (2.0, [1, 2], [(0, 4, 2)], 2, 1, 7, 100, 2, [1], [1, 2])


def test_cluster_view_totals():
    v = sim.ClusterView(0.0, (), 0, 1.0, 0)
    assert (v.n_up, v.n_starting, v.outstanding, v.held) == (0, 0, 0, 0)
    assert v.busy_fraction == v.concurrency == v.queue_lens == v.kv_fraction == ()


# ----------------------------------------------------------------------------- result
def test_run_result_derived_columns():
    wl = Workload.build([0.0, 1.0, 2.0], prompt_tokens=[5, 5, 5], output_tokens=[1, 3, 2])
    res = RunResult(wl, start=np.array([0.5, 2.0, np.nan]),
                    first_token=np.array([1.0, 3.0, np.nan]),
                    finish=np.array([1.0, 7.0, np.nan]), replica=np.array([0, 1, -1]),
                    busy_time=np.array([3.0, 2.0]), up_time=np.array([4.0, 2.0]), servers=1,
                    end_time=7.0)
    assert res.arrival.tolist() == [0.0, 1.0, 2.0]
    assert res.latency.tolist()[:2] == [1.0, 6.0] and math.isnan(res.latency[2])
    assert res.queue_delay.tolist()[:2] == [0.5, 1.0]
    assert res.ttft.tolist()[:2] == [1.0, 2.0]
    tpot = res.tpot     # 1 output token: no time per output token; (7 - 3) / 2 = 2
    assert math.isnan(tpot[0]) and tpot[1] == 2.0 and math.isnan(tpot[2])
    assert res.completed.tolist() == [True, True, False] and res.unfinished == 1
    # busy 5 server-seconds; up 4 + 2 replica-seconds
    assert res.utilization == 5.0 / 6.0                       # no per-replica servers
    res.servers = 2
    for alike in (np.array([2, 2]), np.array([], dtype=int)):  # busy / (up x 2)
        res.servers_by_replica = alike
        assert res.utilization == 5.0 / 12.0
    res.servers_by_replica = np.array([3, 1])                 # mixed: 5 / (4 x 3 + 2 x 1)
    assert res.utilization == 5.0 / 14.0
    res.servers_by_replica = np.array([2, 1])                 # mixed: 5 / (4 x 2 + 2 x 1)
    assert res.utilization == 0.5


def test_iteration_results_count_one_server_per_replica():
    wl = Workload.build([0.0], prompt_tokens=[5], output_tokens=[2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), servers=3)
    assert res.servers == 1 and res.utilization == 1.0 and res.n_steps == 2


# ----------------------------------------------------------------------------- config checks
@pytest.mark.parametrize("settings, exc, match", [
    (dict(max_replicas=0), ValueError, "max_replicas"),
    (dict(min_replicas=3, max_replicas=2, replicas=3), ValueError, "max_replicas"),
    (dict(replicas=5, max_replicas=4), ValueError, "replicas=5"),
    (dict(replicas=1, min_replicas=2), ValueError, "replicas=1"),
    (dict(min_replicas=-1), ValueError, "min_replicas"),
    (dict(replicas=-1), ValueError, "replicas"),
    (dict(kv_capacity=0), ValueError, "kv_capacity"),
    (dict(prefill_chunk=0), ValueError, "prefill_chunk"),
    (dict(autoscale_interval=0.0), ValueError, "autoscale_interval"),
    (dict(record_steps=1), TypeError, "record_steps"),
    (dict(batcher="fifo"), TypeError, "batcher"),
    (dict(scheduler=3), TypeError, "scheduler"),
    (dict(autoscaler=1), TypeError, "autoscaler"),
    (dict(kv="paged"), TypeError, "kv"),
    (dict(replica_specs=[]), TypeError, "replica_specs"),
    (dict(replica_specs=3), TypeError, "replica_specs"),
    (dict(replica_specs=[ReplicaSpec(), "fast"]), TypeError, r"replica_specs\[1\]"),
    (dict(replica_specs=[ReplicaSpec(cost=object())]), TypeError, r"replica_specs\[0\]\.cost"),
    (dict(mode="iteration", replica_specs=[ReplicaSpec(cost=ConstantStep()), ReplicaSpec()]),
     TypeError, "needs cost with a step_time"),
])
def test_bad_configs_name_the_field(settings, exc, match):
    with pytest.raises(exc, match=match):
        ServingConfig(**settings).validate()


@pytest.mark.parametrize("settings, message", [
    (dict(replicas=-1), r"replicas must be >= 0, got -1"),
    (dict(servers=0), r"servers must be >= 1, got 0"),
    (dict(max_batch=0), r"max_batch must be >= 1, got 0"),
    (dict(min_replicas=-1), r"min_replicas must be >= 0, got -1"),
    (dict(max_replicas=0), r"max_replicas must be >= 1, got 0"),
    (dict(replicas=0, min_replicas=0), r"replicas=0 needs an autoscaler to start replicas \(and "
     r"min_replicas=0\); a fixed fleet needs replicas >= 1"),
    (dict(kv_capacity=0), r"kv_capacity must be >= 1, got 0"),
    (dict(prefill_chunk=0), r"prefill_chunk must be >= 1, got 0"),
    (dict(autoscale_interval=0.0), r"autoscale_interval must be > 0, got 0\.0"),
    (dict(startup_delay=-1.0), r"startup_delay must be >= 0, got -1\.0"),
    (dict(view_staleness=-1.0), r"view_staleness must be >= 0, got -1\.0"),
])
def test_config_errors_start_with_the_field_and_its_rule(settings, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        ServingConfig(**settings).validate()


@pytest.mark.parametrize("settings", [
    dict(replicas=0, min_replicas=0, autoscaler=lambda v: 1),
    dict(replicas=4, min_replicas=4, max_replicas=4),
    dict(max_replicas=1), dict(kv_capacity=1, prefill_chunk=1), dict(startup_delay=0.0),
    dict(record_steps=True), dict(view_refresh="delayed"),
    dict(mode="iteration", replica_specs=[ReplicaSpec(cost=ConstantStep())]),
    dict(mode="iteration", cost=ConstantStep(), replica_specs=[ReplicaSpec()]),
    dict(replica_specs=(ReplicaSpec(cost=Fixed(0.0, 1.0)), ReplicaSpec())),
])
def test_good_configs_pass(settings):
    cfg = ServingConfig(**settings)
    assert cfg.validate() is cfg


@pytest.mark.parametrize("field", ["servers", "max_batch", "kv_capacity"])
def test_replica_spec_counts_must_be_at_least_one(field):
    with pytest.raises(ValueError, match=rf"^ReplicaSpec\.{field} must be >= 1, got 0"):
        ReplicaSpec(**{field: 0})
    assert getattr(ReplicaSpec(**{field: 1}), field) == 1


def test_replica_spec_speed_must_be_positive():
    with pytest.raises(ValueError, match=r"^ReplicaSpec\.speed must be > 0, got -1"):
        ReplicaSpec(speed=-1.0)
    assert ReplicaSpec().speed == 1.0


def test_batch_decision_defaults_to_no_retry():
    assert BatchDecision(2) == (2, None)
