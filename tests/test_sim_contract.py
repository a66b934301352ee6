"""The engine contract of /work/notes/INTERFACES.md: mixed fleets, stale views, KV managers with
preemption, autoscaler views, scale to zero and an honest stop. Every expected value below is
worked out by hand in the comments (tiny deterministic workloads)."""
import math
import re

import numpy as np
import pytest

from scalesim_course import batching, costmodel, sim
from scalesim_course.sim import ReplicaSpec
from scalesim_course.sim.kv import KVSeq, Preempted, exact_reservation
from scalesim_course.workload import Workload


def ConstantStep(d=1.0):
    """Every engine step takes `d` seconds, whatever it does."""
    return costmodel.LinearStepCost(d, 0.0, 0.0, 0.0)


def timed(arrival, service):
    return Workload.build(arrival, service_time=service)


# ----------------------------------------------------------------------------- 1. mixed fleets
def test_replica_speed_divides_service_time():
    # both arrive at 0: r0 -> replica 0 (tie, lowest index), r1 -> replica 1 (replica 0 busy);
    # replica 1 is twice as fast: 2 s of work take 1 s
    res = sim.simulate(timed([0.0, 0.0], [2.0, 2.0]), replicas=2,
                       replica_specs=[ReplicaSpec(speed=1.0), ReplicaSpec(speed=2.0)])
    assert res.replica.tolist() == [0, 1]
    assert res.finish.tolist() == [2.0, 1.0]
    assert res.busy_by_replica == {0: 2.0, 1: 1.0}


def test_mixed_servers_count_in_utilization():
    # replica 0 has 2 servers, replica 1 one; three 1 s requests at 0: r0 -> 0, r1 -> 1 (0 has
    # one outstanding), r2 -> 0 (tie 1:1, lowest index) on its second server. All end at 1.0:
    # 3 server-seconds busy of (2 + 1) servers x 1 s up = 1.0
    res = sim.simulate(timed([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), replicas=2,
                       replica_specs=[ReplicaSpec(servers=2), ReplicaSpec()])
    assert res.replica.tolist() == [0, 1, 0]
    assert res.finish.tolist() == [1.0, 1.0, 1.0]
    assert res.servers_by_replica.tolist() == [2, 1]
    assert res.utilization == 1.0


def test_iteration_replica_speed_and_spec_cost():
    wl = Workload.build([0.0], prompt_tokens=[10], output_tokens=[2])
    # two steps (prefill, one decode) of 1 s each at speed 2: first token 0.5, done 1.0
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0),
                       replica_specs=[ReplicaSpec(speed=2.0)])
    assert res.first_token.tolist() == [0.5] and res.finish.tolist() == [1.0]
    # a spec's own cost replaces the config's: 3 s steps, no config cost needed
    res = sim.simulate(wl, mode="iteration", replica_specs=[ReplicaSpec(cost=ConstantStep(3.0))])
    assert res.finish.tolist() == [6.0]


def test_router_sees_speed_and_index():
    seen = []

    def router(req, replicas, rng):
        seen.append([(v.index, v.speed, v.id) for v in replicas])
        return 1

    sim.simulate(timed([0.0], [1.0]), replicas=2, router=router,
                 replica_specs=[ReplicaSpec(speed=0.5), ReplicaSpec(speed=3.0)])
    assert seen == [[(0, 0.5, 0), (1, 3.0, 1)]]


def test_a_custom_router_is_called_with_one_replica():
    calls = []
    sim.simulate(timed([0.0, 1.0, 2.0], [0.5] * 3),
                 router=lambda req, reps, rng: calls.append(req.id) or 0)
    assert calls == [0, 1, 2]


# ----------------------------------------------------------------------------- 2. stale views
def test_periodic_views_route_on_the_last_snapshot():
    # snapshots at 0, 10, 20: at t=1,2,3 the router sees the empty fleet of t=0 and sends all
    # three to replica 0 (ties -> lowest); at t=11, 12 it sees replica 0 with 3 outstanding
    # (1 busy + 2 queued) and replica 1 empty, both times (the t=11 arrival is not seen yet)
    wl = timed([1.0, 2.0, 3.0, 11.0, 12.0], [100.0] * 5)
    res = sim.simulate(wl, replicas=2, view_staleness=10.0, view_refresh="periodic")
    assert res.replica.tolist() == [0, 0, 0, 1, 1]
    live = sim.simulate(wl, replicas=2)
    assert live.replica.tolist() == [0, 1, 0, 1, 0]


def test_delayed_views_are_exactly_t_old():
    # T = 1.5: at t=0 and t=1 the router sees times -1.5 and -0.5 (empty) -> replica 0 twice;
    # at t=2 it sees t=0.5 (replica 0: 1, replica 1: 0) -> 1; at t=3 sees 1.5 (2 vs 0) -> 1
    wl = timed([0.0, 1.0, 2.0, 3.0], [100.0] * 4)
    res = sim.simulate(wl, replicas=2, view_staleness=1.5, view_refresh="delayed")
    assert res.replica.tolist() == [0, 0, 1, 1]


def test_stale_view_fields():
    seen = []

    def router(req, replicas, rng):
        seen.append([(v.outstanding, v.queue_len, v.busy, v.state) for v in replicas])
        return 0

    sim.simulate(timed([0.0, 1.0, 12.0], [100.0] * 3), replicas=2, router=router,
                 view_staleness=10.0)
    # a snapshot at time kT includes the events at kT: at 1 the router sees r0 (arrived at 0)
    # in service; at 12 the snapshot of t=10 shows replica 0 with r0 busy and r1 queued
    assert seen == [[(0, 0, 0, "up")] * 2, [(1, 0, 1, "up"), (0, 0, 0, "up")],
                    [(2, 1, 1, "up"), (0, 0, 0, "up")]]


# ----------------------------------------------------------------------------- 3. KV managers
class OnDemand:
    """Test KV manager: holds exactly each sequence's context; preempts the newest to fit."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.alloc = {}
        self.asked = []

    def used(self):
        return sum(self.alloc.values())

    def stored(self):
        return self.used()

    def admit(self, seq):
        if self.used() + seq.context > self.capacity:
            return False
        self.alloc[seq.id] = seq.context
        return True

    def grow(self, running):
        self.asked.append([(s.id, s.generated, s.context) for s in running])
        want = {s.id: max(self.alloc[s.id], s.context) for s in running}
        order, victims = list(running), []
        while sum(want.values()) > self.capacity:
            v = order.pop()
            victims.append(v.id)
            del want[v.id]
        if not victims:
            self.alloc.update(want)
        return victims

    def free(self, seq_id):
        del self.alloc[seq_id]


def test_preemption_by_recompute_exact_timeline():
    # capacity 10, two requests of prompt 4 / output 4 at 0, 1 s steps.
    # step 1 [0,1): both prefill (8 tokens) -> first tokens at 1 (generated 1 each)
    # step 2 [1,2): contexts 5 + 5 = 10 fit; both decode (generated 2)
    # step 3 [2,3): contexts 6 + 6 = 12 > 10: B (newest) preempted with 2 tokens; A decodes
    # step 4 [3,4): B re-admission needs 4 + 2 = 6, A holds 6: refused; A decodes -> done at 4
    # step 5 [4,5): B recomputes 6 tokens -> its 3rd token (first token time kept at 1)
    # step 6 [5,6): B decodes its 4th token -> done at 6
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    managers = []

    def factory(capacity):
        managers.append(OnDemand(capacity))
        return managers[-1]

    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv=factory,
                       kv_capacity=10, record_steps=True)
    assert res.start.tolist() == [0.0, 0.0]
    assert res.first_token.tolist() == [1.0, 1.0]
    assert res.finish.tolist() == [4.0, 6.0]
    assert res.preemptions == [Preempted(1, 2.0, 0, 2, "kv")]
    assert res.n_preemptions.tolist() == [0, 1]
    assert [tuple(s) for s in res.steps] == [
        (0, 0.0, 1.0, 2, 8, 0), (0, 1.0, 2.0, 2, 0, 2), (0, 2.0, 3.0, 1, 0, 1),
        (0, 3.0, 4.0, 1, 0, 1), (0, 4.0, 5.0, 1, 6, 0), (0, 5.0, 6.0, 1, 0, 1)]
    assert [u for _, _, u, _ in res.kv_log] == [8, 10, 6, 7, 6, 7]
    assert managers[0].capacity == 10
    # what grow was told: (id, generated, context after the step)
    assert managers[0].asked[:3] == [[(0, 0, 4), (1, 0, 4)], [(0, 1, 5), (1, 1, 5)],
                                     [(0, 2, 6), (1, 2, 6)]]


def test_kv_manager_defaults_to_exact_reservation():
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    a = sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv_capacity=10)
    b = sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv_capacity=10,
                     kv=exact_reservation)
    # 8 + 8 > 10: B waits for A (done at 4: prefill + 3 decodes), then runs 4..8
    assert a.finish.tolist() == b.finish.tolist() == [4.0, 8.0]
    assert a.preemptions == [] and a.n_preemptions.tolist() == [0, 0]
    m = exact_reservation(10)
    assert m.admit(KVSeq(0, 4, 4, 0, 4, -1, 0.0)) and m.used() == 8
    assert not m.admit(KVSeq(1, 4, 4, 0, 4, -1, 0.0)) and m.used() == 8
    m.free(0)
    assert m.used() == 0
    m = exact_reservation(20)   # reservations add up and are freed one by one
    assert m.admit(KVSeq(0, 4, 4, 0, 4, -1, 0.0)) and m.admit(KVSeq(1, 3, 2, 0, 3, -1, 0.0))
    assert m.used() == m.stored() == 13
    m.free(0)
    assert m.used() == 5


def test_kv_too_small_for_one_sequence_raises():
    wl = Workload.build([0.0], prompt_tokens=[4], output_tokens=[4])
    # context grows 4, 5, 6: at the third step nothing else is left to preempt
    with pytest.raises(RuntimeError, match=r"request 0 needs 6 .*capacity 5"):
        sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv=OnDemand, kv_capacity=5)
    with pytest.raises(RuntimeError, match="refused request 0"):
        sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv=OnDemand, kv_capacity=3)


def test_bad_kv_managers_are_named():
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])

    class Liar(OnDemand):
        def grow(self, running):
            return [99]

    with pytest.raises(ValueError, match="grow.*99"):
        sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv=Liar, kv_capacity=10)

    class Hog(OnDemand):
        def grow(self, running):
            for s in running:
                self.alloc[s.id] = 100
            return []

    with pytest.raises(ValueError, match="more than its capacity"):
        sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv=Hog, kv_capacity=10)
    with pytest.raises(TypeError, match="no admit"):
        sim.simulate(wl, mode="iteration", cost=ConstantStep(), kv=lambda c: object())


# ----------------------------------------------------------------------------- 4. autoscaler view
def test_cluster_view_busy_fraction_and_concurrency():
    # one server: r0 [0,4], r1 (arrives 1) served [4,6], r2 [7,17]
    # tick 10: busy 4 + 2 + 3 = 9 of 10 s -> 0.9; in system 4 + 5 + 3 = 12 -> 1.2
    # tick 20: busy 7 -> 0.7; in system 7 -> 0.7
    views = []

    def keep_one(view):
        views.append(view)
        return 1

    res = sim.simulate(timed([0.0, 1.0, 7.0], [4.0, 2.0, 10.0]), autoscaler=keep_one,
                       autoscale_interval=10.0)
    assert [v.now for v in views] == [10.0, 20.0]
    assert views[0].busy_fraction == pytest.approx((0.9,))
    assert views[0].concurrency == pytest.approx((1.2,))
    assert views[1].busy_fraction == pytest.approx((0.7,))
    assert views[1].concurrency == pytest.approx((0.7,))
    assert views[0].queue_lens == (0,) and views[0].kv_fraction == (0.0,)
    assert (views[0].arrivals, views[0].completions, views[1].completions) == (3, 2, 1)
    assert views[0].held == 0
    assert res.scale_events == [] and res.provisioned_replica_seconds == 20.0


def test_kv_fraction_in_the_cluster_view():
    views = []
    wl = Workload.build([0.0], prompt_tokens=[30], output_tokens=[20])
    sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv_capacity=200,
                 autoscaler=lambda v: views.append(v) or 1, autoscale_interval=5.0)
    # at 5 the request (30 + 20 reserved of 200) is still decoding
    assert views[0].kv_fraction == (0.25,) and views[0].busy_fraction == (1.0,)


def test_scale_from_zero_holds_arrivals_until_a_replica_is_up():
    # replicas=0; arrivals at 1 and 2 are held; tick 10 sees held=2 and asks for 1 replica,
    # up at 15 (startup 5): r0 [15,18], r1 [18,21]; tick 20: 1 outstanding -> keep 1;
    # tick 30: 0 outstanding -> 0 replicas; all done: the run stops at 30
    views = []

    def on_demand(view):
        views.append(view)
        return 1 if view.held or view.outstanding else 0

    res = sim.simulate(timed([1.0, 2.0], [3.0, 3.0]), replicas=0, min_replicas=0,
                       autoscaler=on_demand, autoscale_interval=10.0, startup_delay=5.0)
    assert [v.held for v in views] == [2, 0, 0]
    assert res.start.tolist() == [15.0, 18.0]
    assert res.latency.tolist() == [17.0, 19.0]
    assert res.scale_events == [(10.0, 0, 1), (30.0, 1, 0)]
    assert res.fleet_log == [(0.0, 0, 0), (10.0, 0, 1), (15.0, 1, 0), (30.0, 0, 0)]
    assert res.provisioned_replica_seconds == 20.0     # decided at 10, stopped at 30
    # tick 20: the replica was up 5 s of the interval, busy all 5 (r0 15-18, r1 18-20)
    assert views[1].busy_fraction == (1.0,)


def test_autoscaler_that_never_scales_up_from_zero_raises():
    with pytest.raises(sim.NoProgressError, match="never_up"):
        def never_up(view):
            return 0
        sim.simulate(timed([1.0], [1.0]), replicas=0, min_replicas=0, autoscaler=never_up)


@pytest.mark.parametrize("answer, shown", [(1.0, "1.0"), (-1, "-1"), (math.nan, "nan"),
                                           (True, "True"), (None, "None"),
                                           (np.float64(1.5), "1.5"), (np.int64(-1), "-1")])
def test_bad_autoscaler_answers_are_named(answer, shown):
    def scaler(view):
        return answer

    # the message names the policy, the value it returned (numpy scalars as plain numbers) and
    # the rule
    with pytest.raises(TypeError, match=rf"^autoscaler scaler returned {re.escape(shown)}: "
                                        r"it must be an int >= 0 \(desired replicas\)"):
        sim.simulate(timed([0.0, 20.0], [1.0, 1.0]), autoscaler=scaler)


def test_static_batcher_with_autoscaler_ends():
    # 18 requests, batches of 4: 16 served, 2 wait for ever; the run must end (it looped)
    wl = timed(np.arange(18.0), np.full(18, 0.5))
    res = sim.simulate(wl, batcher=batching.static_batcher(4), autoscaler=lambda v: 1)
    assert res.unfinished == 2 and np.isnan(res.finish[16:]).all()


# ----------------------------------------------------------------------------- 5. honest stop
def test_stop_at_until_counts_busy_time_only_up_to_the_stop():
    # r0 [0,4], r1 [4,6], r2 [7,17]; stop at 12: busy 4 + 2 + 5 = 11 of 12 s up
    res = sim.simulate(timed([0.0, 1.0, 7.0], [4.0, 2.0, 10.0]), until=12.0)
    assert res.stopped_at == 12.0
    assert res.busy_time.tolist() == [11.0] and res.busy_by_replica == {0: 11.0}
    assert res.up_time.tolist() == [12.0]
    assert res.utilization == pytest.approx(11 / 12)
    assert res.unfinished == 1 and np.isnan(res.finish[2]) and res.start[2] == 7.0


def test_stop_in_iteration_mode():
    wl = Workload.build([0.0], prompt_tokens=[10], output_tokens=[10])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), until=3.5)
    # steps [0,1) [1,2) [2,3) [3,4): the last counts 0.5 s
    assert res.busy_time.tolist() == [3.5] and res.unfinished == 1
    assert res.first_token.tolist() == [1.0]


@pytest.mark.parametrize("until, exc", [(math.nan, TypeError), ("10", TypeError),
                                        (None, TypeError), (-1.0, ValueError)])
def test_until_must_be_a_number(until, exc):
    with pytest.raises(exc, match="until"):
        sim.simulate(timed([0.0], [1.0]), until=until)


def test_bad_contract_settings_name_the_parameter():
    wl = timed([0.0], [1.0])
    with pytest.raises(ValueError, match="speed"):
        ReplicaSpec(speed=0)
    with pytest.raises(TypeError, match="replica_specs"):
        sim.simulate(wl, replica_specs=ReplicaSpec())
    with pytest.raises(ValueError, match="view_refresh"):
        sim.simulate(wl, view_refresh="sometimes")
    with pytest.raises(ValueError, match="view_staleness"):
        sim.simulate(wl, view_staleness=-1.0)
    with pytest.raises(ValueError, match="autoscaler"):
        sim.simulate(wl, replicas=0, min_replicas=0)


def test_replica_is_minus_one_for_requests_never_served():
    # batches of 2 on one replica: requests 0-1 and 2-3 served, 4 waits for ever
    wl = timed([0.0, 0.1, 0.2, 0.3, 5.0], [0.5] * 5)
    res = sim.simulate(wl, replicas=2, router=lambda r, reps, rng: 1,
                       batcher=batching.static_batcher(2))
    assert res.replica.tolist() == [1, 1, 1, 1, -1]


def test_iteration_replica_drains_then_stops():
    # 1 s steps; r0 (output 4) on replica 0, r1 (output 6) on replica 1, both at 0.
    # tick 2: the autoscaler wants 1: both have 1 running, the tie drains replica 0, which
    # finishes r0 at 4 (prefill + 3 decodes) and stops. r2 (arrives 2.5, output 2) goes to
    # replica 1, joins at the step boundary 3, first token 4, done 5; r1 done at 6.
    wl = Workload.build([0.0, 0.0, 2.5], prompt_tokens=[5, 5, 5], output_tokens=[4, 6, 2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), replicas=2,
                       autoscaler=lambda v: 1, autoscale_interval=2.0)
    assert res.replica.tolist() == [0, 1, 1]
    assert res.finish.tolist() == [4.0, 6.0, 5.0]
    assert res.first_token.tolist() == [1.0, 1.0, 4.0]
    assert res.up_time.tolist() == [4.0, 6.0] and res.busy_time.tolist() == [4.0, 6.0]
    assert res.scale_events == [(2.0, 2, 1)]
    assert res.fleet_log == [(0.0, 2, 0), (2.0, 1, 0)]
    assert res.provisioned_replica_seconds == 10.0 and res.end_time == 6.0


def test_spec_max_batch_and_kv_capacity_apply_per_replica():
    # one sequence at a time (max_batch=1 from the spec): r0 runs [0,2), r1 [2,4)
    wl = Workload.build([0.0, 0.0], prompt_tokens=[5, 5], output_tokens=[2, 2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), max_batch=8,
                       replica_specs=[ReplicaSpec(max_batch=1)])
    assert res.finish.tolist() == [2.0, 4.0]
    # the spec's KV budget (10 tokens: one request of 5 + 2 at a time) overrides the config's
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv_capacity=1000,
                       replica_specs=[ReplicaSpec(kv_capacity=10)])
    assert res.finish.tolist() == [2.0, 4.0]
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv_capacity=1000)
    assert res.finish.tolist() == [2.0, 2.0]


def test_default_scheduler_with_a_kv_manager_proposes_only_free_slots():
    # max_batch 1 and a preempting manager: the default proposes one request at a time, so
    # the three run one after another (2 steps each)
    wl = Workload.build([0.0, 0.0, 0.0], prompt_tokens=[4, 4, 4], output_tokens=[2, 2, 2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv=OnDemand,
                       kv_capacity=100, max_batch=1)
    assert res.finish.tolist() == [2.0, 4.0, 6.0] and res.preemptions == []
    # max_batch 2: r0 runs [0,5); r1, r2 arrive at 1.5; at 2 one slot is free: only r1 is
    # proposed (prefill [2,3), done at 4); r2 takes the slot at 4 (done at 6)
    wl = Workload.build([0.0, 1.5, 1.5], prompt_tokens=[4, 4, 4], output_tokens=[5, 2, 2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv=OnDemand,
                       kv_capacity=100, max_batch=2)
    assert res.start.tolist() == [0.0, 2.0, 4.0] and res.finish.tolist() == [5.0, 4.0, 6.0]


class Recording:
    """A step cost of 1 s that remembers what each step was asked to do."""

    def __init__(self):
        self.calls = []

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        self.calls.append((prefill_tokens, decode_seqs, context_tokens))
        return 1.0


def test_preemption_keeps_the_step_inputs_exact():
    # the timeline of test_preemption_by_recompute_exact_timeline, seen by the cost model:
    # (prefill tokens, decoding sequences, context tokens of the decoders) per step.
    # After step 1 both hold 4 + 1; step 3 runs A alone (B's 4 + 2 freed): context 6, then 7;
    # step 5 recomputes B's 4 + 2 tokens; step 6 decodes B with 4 + 3.
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    cost = Recording()
    sim.simulate(wl, mode="iteration", cost=cost, kv=OnDemand, kv_capacity=10)
    assert cost.calls == [(8, 0, 0), (0, 2, 10), (0, 1, 6), (0, 1, 7), (6, 0, 0), (0, 1, 7)]


@pytest.mark.parametrize("record", [False, True])
def test_an_arrival_at_a_step_boundary_joins_the_next_step(record):
    # r0 decodes alone in 1 s steps (steps end at 1, 2, ...); r1 arrives exactly at 3.0,
    # when a step ends: arrivals come first at an instant, so it is admitted at 3.0 and its
    # prefill step ends at 4.0 (with or without decode fast-forward)
    wl = Workload.build([0.0, 3.0], prompt_tokens=[5, 5], output_tokens=[8, 2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), record_steps=record)
    assert res.start.tolist() == [0.0, 3.0]
    assert res.first_token.tolist() == [1.0, 4.0] and res.finish.tolist() == [8.0, 5.0]


def test_grow_sees_chunked_prefill_contexts_and_full_records():
    # prefill_chunk 4, two prompts of 6 at 0 (3 output tokens each), 1 s steps:
    # step 1: A prefills 4; step 2: A 2 (first token at 2), B 2; step 3: B 4 (first token
    # at 3), A decodes; step 4: both decode (A done at 4); step 5: B decodes (done at 5).
    # grow is told (id, generated, context after the step) for each running sequence.
    wl = Workload.build([0.0, 0.0], prompt_tokens=[6, 6], output_tokens=[3, 3],
                        prompt_id=[7, -1])
    managers = []

    def factory(capacity):
        managers.append(OnDemand(capacity))
        return managers[-1]

    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv=factory,
                       kv_capacity=100, prefill_chunk=4)
    assert res.first_token.tolist() == [2.0, 3.0] and res.finish.tolist() == [4.0, 5.0]
    assert managers[0].asked == [[(0, 0, 4), (1, 0, 0)], [(0, 0, 6), (1, 0, 2)],
                                 [(0, 1, 7), (1, 0, 6)], [(0, 2, 8), (1, 1, 7)], [(1, 2, 8)]]
    seen = []

    class Keeping(OnDemand):
        def grow(self, running):
            seen.extend(running)
            return super().grow(running)

    sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv=Keeping, kv_capacity=100)
    assert seen[:2] == [KVSeq(0, 6, 3, 0, 6, 7, 0.0), KVSeq(1, 6, 3, 0, 6, -1, 0.0)]


def test_victims_return_to_the_queue_head_in_request_order():
    # a manager that, when over capacity, preempts every sequence but the oldest at once:
    # B and C go back to the head of the queue as [B, C] and are re-admitted in that order
    admitted = []

    class AllButOldest(OnDemand):
        def admit(self, seq):
            ok = super().admit(seq)
            if ok:
                admitted.append(seq.id)
            return ok

        def grow(self, running):
            want = {s.id: max(self.alloc[s.id], s.context) for s in running}
            if sum(want.values()) > self.capacity and len(running) > 1:
                return [s.id for s in running[1:]]
            self.alloc.update(want)
            return []

    wl = Workload.build([0.0, 0.0, 0.0], prompt_tokens=[4, 4, 4], output_tokens=[4, 4, 4])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv=AllButOldest,
                       kv_capacity=15)
    assert sorted((p.request_id, p.time) for p in res.preemptions)[:2] == [(1, 2.0), (2, 2.0)]
    assert admitted[:5] == [0, 1, 2, 1, 2]
    assert res.completed.all()
