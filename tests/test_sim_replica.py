"""The two replica kinds of the simulator (scalesim_course.sim.replica), timed exactly.

Each test runs a hand-made workload of two to four requests through a cost whose every step or
batch time is known (a constant, or a few exact binary fractions), so each start, first-token
and finish time is worked out by hand in the comments, never read back from the engine.
"""
import math
import re

import pytest

from scalesim_course import costmodel, sim
from scalesim_course.sim import BatchDecision, NoProgressError, ReplicaSpec
from scalesim_course.sim.kv import KVSeq, Preempted, exact_reservation
from scalesim_course.workload import Workload


def constant_step(d=1.0):
    """Every engine step takes `d` seconds, whatever it does."""
    return costmodel.LinearStepCost(d, 0.0, 0.0, 0.0)


class Recording:
    """A step cost of 1 s that remembers (prefill tokens, decoding sequences, context)."""

    def __init__(self):
        self.calls = []

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        self.calls.append((prefill_tokens, decode_seqs, context_tokens))
        return 1.0


class TokenTiming:
    """A request-level cost: first token after sum(prompts)/4 s, busy that plus max(outputs)."""

    def __init__(self):
        self.calls = []

    def batch_timing(self, prompt_tokens, output_tokens):
        self.calls.append((list(prompt_tokens), list(output_tokens)))
        first = sum(prompt_tokens) / 4
        return first, first + max(output_tokens)


class Lazy:
    """Test KV manager: admits with nothing allocated, holds each sequence's context after
    grow, and preempts the newest sequences when they do not all fit."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.alloc = {}
        self.admitted = []
        self.asked = []

    def used(self):
        return sum(self.alloc.values())

    def stored(self):
        return self.used()

    def admit(self, seq):
        self.admitted.append(seq)
        self.alloc[seq.id] = 0
        return True

    def grow(self, running):
        self.asked.append(list(running))
        want = {s.id: s.context for s in running}
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


class Holding(Lazy):
    """Like Lazy, but admission allocates the whole prefill and refuses what does not fit."""

    def admit(self, seq):
        self.admitted.append(seq)
        if self.used() + seq.context > self.capacity:
            return False
        self.alloc[seq.id] = seq.context
        return True


def kept(manager_class):
    """A KV factory building `manager_class`, and the list of the managers it built."""
    managers = []

    def factory(capacity):
        managers.append(manager_class(capacity))
        return managers[-1]

    return factory, managers


def watch(seen, index=0):
    """A router that always picks `index` and records (queue_len, busy, kv_used,
    queued_tokens) of the replica it picks, as it is just before the arrival joins."""
    def router(req, replicas, rng):
        v = replicas[index]
        seen.append((v.queue_len, v.busy, v.kv_used, v.queued_tokens))
        return index
    return router


# ----------------------------------------------------------------------------- request level
def test_request_batches_give_the_cost_their_tokens_and_speed_divides():
    # batches of two only; cost: first token after sum(prompts)/4 s, busy + max(outputs) s;
    # the replica runs at speed 2.
    # t=0 r0 waits alone. t=1 r1 makes a pair: prompts [4, 2] -> first 1.5, busy 4.5, halved:
    # first token 1.75, done 3.25; r2 (also t=1) waits (the one server is busy); at 3.25 it is
    # alone again. t=5 r3 pairs with r2: prompts [6, 8] -> first 3.5, busy 7.5 -> 1.75, 3.75:
    # first token 6.75, done 8.75. Busy 2.25 + 3.75 = 6 s.
    wl = Workload.build([0.0, 1.0, 1.0, 5.0], prompt_tokens=[4, 2, 6, 8],
                        output_tokens=[1, 3, 2, 4])
    cost, seen = TokenTiming(), []
    res = sim.simulate(wl, cost=cost, batcher=lambda q: 2 if len(q) >= 2 else 0,
                       router=watch(seen), replica_specs=[ReplicaSpec(speed=2.0)],
                       record_steps=True)
    assert cost.calls == [([4, 2], [1, 3]), ([6, 8], [2, 4])]
    assert res.start.tolist() == [1.0, 1.0, 5.0, 5.0]
    assert res.first_token.tolist() == [1.75, 1.75, 6.75, 6.75]
    assert res.finish.tolist() == [3.25, 3.25, 8.75, 8.75]
    # (replica, start, end, batch size, size x longest prompt, size)
    assert [tuple(s) for s in res.steps] == [(0, 1.0, 3.25, 2, 8, 2), (0, 5.0, 8.75, 2, 16, 2)]
    assert res.busy_time.tolist() == [6.0] and res.n_steps == 2
    # what the router saw: (waiting, busy servers, KV, prompt + output tokens waiting)
    assert seen == [(0, 0, 0, 0), (1, 0, 0, 5), (0, 1, 0, 0), (1, 0, 0, 8)]


def test_a_sampled_batch_lasts_as_long_as_its_slowest_request():
    # no cost model: each request's own service time, at speed 0.5 (twice as long).
    # r0 starts alone at 0: 1 s -> done at 2. r1 and r2 wait, then go as one batch at 2:
    # max(2, 3) = 3 s -> 6 s: done at 8 (first token = finish without a cost model)
    wl = Workload.build([0.0, 0.0, 0.0], service_time=[1.0, 2.0, 3.0])
    res = sim.simulate(wl, batcher=lambda q: len(q), replica_specs=[ReplicaSpec(speed=0.5)],
                       record_steps=True)
    assert res.start.tolist() == [0.0, 2.0, 2.0]
    assert res.finish.tolist() == res.first_token.tolist() == [2.0, 8.0, 8.0]
    assert [tuple(s) for s in res.steps] == [(0, 0.0, 2.0, 1, 1, 1), (0, 2.0, 8.0, 2, 2, 2)]
    assert res.busy_time.tolist() == [8.0]


@pytest.mark.parametrize("policy", ["batcher", "router"])
def test_two_servers_share_one_queue(policy):
    # three 2 s requests at 0 on two servers: two start at once, the third when one frees
    wl = Workload.build([0.0, 0.0, 0.0], service_time=[2.0, 2.0, 2.0])
    extra = ({"batcher": lambda q: 1} if policy == "batcher"
             else {"router": lambda r, reps, rng: 0})
    res = sim.simulate(wl, servers=2, **extra)
    assert res.start.tolist() == [0.0, 0.0, 2.0]
    assert res.finish.tolist() == [2.0, 2.0, 4.0]
    assert res.busy_time.tolist() == [6.0]


def test_a_batcher_retry_starts_a_batch_later():
    # wait up to 1 s for a second request: r0 (t=0) waits alone until its retry at 1 and runs
    # [1, 2]; r1 (t=3) asks for a retry at 4, but r2 arrives at 3.5 and the pair runs
    # [3.5, 4] (0.5 s each); the retry at 4 (due before the pair's end, also at 4) finds the
    # queue empty and does nothing
    def within_a_second(q):
        if len(q) >= 2 or q.now >= q[0].arrival + 1.0:
            return len(q)
        return BatchDecision(0, q[0].arrival + 1.0)

    wl = Workload.build([0.0, 3.0, 3.5], service_time=[1.0, 0.5, 0.5])
    res = sim.simulate(wl, batcher=within_a_second)
    assert res.start.tolist() == [1.0, 3.5, 3.5]
    assert res.finish.tolist() == [2.0, 4.0, 4.0]


def test_a_draining_request_replica_stops_when_its_last_server_frees():
    # two replicas of two servers; r0, r1 -> replica 0 (3 s, 4 s), r2, r3 -> replica 1 (10 s).
    # The tick at 2 wants one replica: both hold two, the tie drains replica 0, which keeps
    # serving: r0 ends at 3 (one server still busy), r1 at 4: replica 0 stops at 4
    wl = Workload.build([0.0] * 4, service_time=[3.0, 4.0, 10.0, 10.0])
    res = sim.simulate(wl, replicas=2, servers=2, router=lambda r, reps, rng: r.id // 2,
                       autoscaler=lambda v: 1, autoscale_interval=2.0)
    assert res.finish.tolist() == [3.0, 4.0, 10.0, 10.0]
    assert res.up_time.tolist() == [4.0, 10.0]
    assert res.busy_time.tolist() == [7.0, 20.0]
    assert res.fleet_log == [(0.0, 2, 0), (2.0, 1, 0)]
    # an idle replica stops as soon as it is drained: replica 1 never serves and stops at 2
    res = sim.simulate(Workload.build([0.0], service_time=[10.0]), replicas=2,
                       autoscaler=lambda v: 1, autoscale_interval=2.0)
    assert res.up_time.tolist() == [10.0, 2.0] and res.finish.tolist() == [10.0]


@pytest.mark.parametrize("timing", [(True, 1.0), (0.0, False), (0.5, "1")])
def test_request_cost_answers_that_are_not_numbers_are_refused(timing):
    class Odd:
        def batch_timing(self, prompt_tokens, output_tokens):
            return timing

    with pytest.raises(TypeError, match=r"cost .*Odd.batch_timing\(\) returned"):
        sim.simulate(Workload.build([0.0]), cost=Odd())


# ----------------------------------------------------------------------------- iteration level
def test_iteration_views_and_kv_admission_exact_timeline():
    # KV 12 tokens, 1 s steps. r0 (4 + 2) and r1 (5 + 3) at 0: r0 fits (6), r1 (8) does not.
    # r0: prefill [0,1) (first token 1), decode [1,2) -> done at 2, freeing 6.
    # r2 (2 + 2) arrives at 1.5 behind r1. At 2 both fit (8 + 4 = 12): prefill [2,3), first
    # tokens at 3; r2 done at 4, r1 at 5. r3 (1 + 1, at 3.5) waits for r2's 4 tokens: admitted
    # at 4, its prefill [4,5) is also its last token: done at 5.
    wl = Workload.build([0.0, 0.0, 1.5, 3.5], prompt_tokens=[4, 5, 2, 1],
                        output_tokens=[2, 3, 2, 1])
    seen = []
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv_capacity=12,
                       router=watch(seen))
    assert res.start.tolist() == [0.0, 2.0, 2.0, 4.0]
    assert res.first_token.tolist() == [1.0, 3.0, 3.0, 5.0]
    assert res.finish.tolist() == [2.0, 5.0, 4.0, 5.0]
    # (waiting, running, KV used, tokens waiting) just before each arrival
    assert seen == [(0, 0, 0, 0), (1, 0, 0, 6), (1, 1, 6, 8), (0, 2, 12, 0)]
    assert res.busy_time.tolist() == [5.0]


def test_step_inputs_count_only_decoding_sequences():
    # r0 (5 + 3) and r1 (7 + 1) prefill together (12 tokens); r1's only token is its first, so
    # it never decodes. r0 decodes holding 5 + 1, then 5 + 2 tokens, done at 3.
    wl = Workload.build([0.0, 0.0], prompt_tokens=[5, 7], output_tokens=[3, 1])
    cost = Recording()
    res = sim.simulate(wl, mode="iteration", cost=cost)
    assert cost.calls == [(12, 0, 0), (0, 1, 6), (0, 1, 7)]
    assert res.first_token.tolist() == [1.0, 1.0] and res.finish.tolist() == [3.0, 1.0]


def test_chunked_prefill_shares_the_chunk_in_order():
    # chunk 4: step 1 prefills r0's 3 tokens and 1 of r1's 6 (r0's first token at 1); step 2
    # r0 decodes its last token (done at 2) while r1 prefills 4; step 3 r1's last 1 (first
    # token at 3); step 4 r1 decodes (done at 4), holding 6 + 1 tokens
    wl = Workload.build([0.0, 0.0], prompt_tokens=[3, 6], output_tokens=[2, 2])
    cost = Recording()
    res = sim.simulate(wl, mode="iteration", cost=cost, prefill_chunk=4, record_steps=True)
    assert cost.calls == [(4, 0, 0), (4, 1, 4), (1, 0, 0), (0, 1, 7)]
    assert res.first_token.tolist() == [1.0, 3.0] and res.finish.tolist() == [2.0, 4.0]
    assert [tuple(s) for s in res.steps] == [(0, 0.0, 1.0, 2, 4, 0), (0, 1.0, 2.0, 2, 4, 1),
                                             (0, 2.0, 3.0, 1, 1, 0), (0, 3.0, 4.0, 1, 0, 1)]


@pytest.mark.parametrize("record", [False, True])
def test_decode_stretch_at_non_unit_speed(record):
    # step = 0.5 + 0.25 per decoding sequence + 0.125 per context token, at speed 2.
    # Two requests of 4 + 6 tokens: prefill (8 tokens, nobody decoding) 0.5 s; then five
    # decode steps of two sequences holding 10, 12, 14, 16, 18 tokens:
    # 2.25, 2.5, 2.75, 3.0, 3.25 s. Halved: first token 0.25, steps end at 1.375, 2.625, 4.0,
    # 5.5, 7.125 (without a step log these decode steps run without events: same result)
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[6, 6])
    res = sim.simulate(wl, mode="iteration", cost=costmodel.LinearStepCost(0.5, 0.0, 0.25, 0.125),
                       replica_specs=[ReplicaSpec(speed=2.0)], record_steps=record)
    assert res.first_token.tolist() == [0.25, 0.25]
    assert res.finish.tolist() == [7.125, 7.125]
    assert res.busy_time.tolist() == [7.125] and res.n_steps == 6
    if record:
        ends = [0.25, 1.375, 2.625, 4.0, 5.5, 7.125]
        assert [tuple(s) for s in res.steps] == [(0, 0.0, 0.25, 2, 8, 0)] + [
            (0, a, b, 2, 0, 2) for a, b in zip(ends, ends[1:])]


@pytest.mark.parametrize("record", [False, True])
def test_a_mid_step_arrival_and_a_stop_end_a_decode_stretch(record):
    # r0 (4 + 8) decodes alone in 1 s steps; r1 (4 + 2) arrives at 3.5, mid-step: it joins at
    # the boundary 4, first token 5, done 6; r0 is done at 8
    wl = Workload.build([0.0, 3.5], prompt_tokens=[4, 4], output_tokens=[8, 2])
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), record_steps=record)
    assert res.start.tolist() == [0.0, 4.0]
    assert res.first_token.tolist() == [1.0, 5.0] and res.finish.tolist() == [8.0, 6.0]
    # stopped at 5.5: steps [0,1) ... [5,6) began (6 of them), the last one counts half
    one = Workload.build([0.0], prompt_tokens=[4], output_tokens=[8])
    res = sim.simulate(one, mode="iteration", cost=constant_step(1.0), until=5.5,
                       record_steps=record)
    assert res.n_steps == 6 and res.end_time == 5.0
    assert res.busy_time.tolist() == [5.5] and res.unfinished == 1


def test_preempting_a_sequence_in_mid_prefill():
    # chunk 4, 8 KV tokens held only as contexts grow (Lazy), two prompts of 6 (+ 2 output).
    # step 1 [0,1): r0 prefills 4 (contexts 4 + 0); step 2 [1,2): r0 its last 2 (first token
    # at 2), r1 2 (contexts 6 + 2 = 8); step 3: r0 needs 7, r1 2 + 4 = 6: 13 > 8, r1 (newest,
    # still prefilling, no token yet) is preempted at 2 and r0 decodes its last token alone
    # (done at 3). r1 is re-admitted at 3 with nothing generated: prefill 4 [3,4), 2 [4,5)
    # (first token at 5), decode [5,6): done at 6.
    wl = Workload.build([0.0, 0.0], prompt_tokens=[6, 6], output_tokens=[2, 2])
    factory, managers = kept(Lazy)

    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=factory,
                       kv_capacity=8, prefill_chunk=4, record_steps=True)
    assert res.start.tolist() == [0.0, 0.0]
    assert res.first_token.tolist() == [2.0, 5.0] and res.finish.tolist() == [3.0, 6.0]
    assert res.preemptions == [Preempted(1, 2.0, 0, 0, "kv")]
    assert res.n_preemptions.tolist() == [0, 1]
    assert [tuple(s) for s in res.steps] == [
        (0, 0.0, 1.0, 2, 4, 0), (0, 1.0, 2.0, 2, 4, 0), (0, 2.0, 3.0, 1, 0, 1),
        (0, 3.0, 4.0, 1, 4, 0), (0, 4.0, 5.0, 1, 2, 0), (0, 5.0, 6.0, 1, 0, 1)]
    assert [u for _, _, u, _ in res.kv_log] == [4, 8, 7, 4, 6, 7]
    assert managers[0].admitted == [KVSeq(0, 6, 2, 0, 6, -1, 0.0), KVSeq(1, 6, 2, 0, 6, -1, 0.0),
                                    KVSeq(1, 6, 2, 0, 6, -1, 3.0)]


def test_readmission_tells_the_manager_what_was_generated():
    # capacity 10, two requests of 4 + 4, 1 s steps (the timeline of the contract test):
    # r1 is preempted at 2 holding 2 tokens; at 3 it asks for 4 + 2 = 6 while r0 holds 6:
    # refused; at 4 (r0 done) admitted
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    factory, managers = kept(Holding)

    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=factory,
                       kv_capacity=10)
    assert res.finish.tolist() == [4.0, 6.0]
    assert managers[0].admitted == [KVSeq(0, 4, 4, 0, 4, -1, 0.0), KVSeq(1, 4, 4, 0, 4, -1, 0.0),
                                    KVSeq(1, 4, 4, 2, 6, -1, 3.0), KVSeq(1, 4, 4, 2, 6, -1, 4.0)]


def test_grow_sees_when_each_sequence_was_admitted():
    # r0 at 0 (2 + 3 tokens), r1 at 1.5 (2 + 2) joins at the step boundary 2; the manager is
    # told each running sequence's admission time
    wl = Workload.build([0.0, 1.5], prompt_tokens=[2, 2], output_tokens=[3, 2])
    factory, managers = kept(Lazy)

    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=factory)
    assert res.start.tolist() == [0.0, 2.0] and res.finish.tolist() == [3.0, 4.0]
    asked = [[(s.id, s.admitted_at) for s in step] for step in managers[0].asked]
    assert asked == [[(0, 0.0)], [(0, 0.0)], [(0, 0.0), (1, 2.0)], [(1, 2.0)]]


def test_a_scheduler_may_admit_out_of_arrival_order():
    # newest first, one per step, 1 s steps, 2 + 2 tokens each: r2 runs [0,2), r1 [1,3),
    # r0 [2,4)
    wl = Workload.build([0.0, 0.0, 0.0], prompt_tokens=[2, 2, 2], output_tokens=[2, 2, 2])
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0),
                       scheduler=lambda v: [v.waiting[-1].id])
    assert res.start.tolist() == [2.0, 1.0, 0.0]
    assert res.first_token.tolist() == [3.0, 2.0, 1.0]
    assert res.finish.tolist() == [4.0, 3.0, 2.0]
    # both at once, in reverse order: with a chunk of 2 r1 is prefilled first (its only token
    # at 1), r0 next (at 2)
    wl = Workload.build([0.0, 0.0], prompt_tokens=[2, 2], output_tokens=[1, 1])
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), prefill_chunk=2,
                       scheduler=lambda v: [r.id for r in reversed(v.waiting)])
    assert res.first_token.tolist() == res.finish.tolist() == [2.0, 1.0]


def test_a_custom_scheduler_is_asked_again_at_every_step():
    # admits only into an empty batch, or from t=2 on. r1 (t=0.5) is refused at 1 and admitted
    # at 2 (not held back until something frees): first token 3, done 4; r0 (3 + 5) done at 5
    def patient(view):
        return [r.id for r in view.head(1)] if view.n_running == 0 or view.now >= 2.0 else []

    wl = Workload.build([0.0, 0.5], prompt_tokens=[3, 3], output_tokens=[5, 2])
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), scheduler=patient)
    assert res.start.tolist() == [0.0, 2.0]
    assert res.first_token.tolist() == [1.0, 3.0] and res.finish.tolist() == [5.0, 4.0]


def test_custom_schedulers_must_respect_batch_slots_and_kv():
    def greedy(view):
        return [r.id for r in view.waiting]

    wl = Workload.build([0.0, 0.0, 0.0], prompt_tokens=[2, 2, 2], output_tokens=[2, 2, 2])
    # exactly max_batch and exactly the KV budget are fine: all three run [0, 2)
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), scheduler=greedy,
                       max_batch=3, kv_capacity=12)
    assert res.finish.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match=r"scheduler greedy returned \[0, 1, 2\].* 2 batch slot"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), scheduler=greedy,
                     max_batch=2)
    # KV 11: r0 (2 + 2) alone at 0; at 1 r1 and r2 (t=0.5) would reserve 8 of the 7 left
    later = Workload.build([0.0, 0.5, 0.5], prompt_tokens=[2, 2, 2], output_tokens=[2, 2, 2])
    with pytest.raises(ValueError, match=r"scheduler greedy returned \[1, 2\]: they reserve 8 KV "
                                         r"tokens but only 7 are free"):
        sim.simulate(later, mode="iteration", cost=constant_step(1.0), scheduler=greedy,
                     kv_capacity=11)


def test_a_request_that_exactly_fills_the_kv_budget_runs():
    wl = Workload.build([0.0], prompt_tokens=[6], output_tokens=[4])
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv_capacity=10)
    assert res.finish.tolist() == [4.0]
    with pytest.raises(ValueError, match="request 0 needs 10 KV tokens but kv_capacity is 9"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv_capacity=9)


def test_the_kv_factory_gets_the_budget_and_its_manager_sets_it():
    wl = Workload.build([0.0, 0.0], prompt_tokens=[5, 5], output_tokens=[5, 5])
    got = []

    def factory(capacity):
        got.append(capacity)
        return exact_reservation(capacity)

    sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=factory, replicas=3,
                 replica_specs=[ReplicaSpec(kv_capacity=20), ReplicaSpec()])
    assert got == [20, math.inf, 20]     # replica 2 uses spec 0 again
    got.clear()     # a spec without a budget inherits the config's
    sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=factory, replicas=2,
                 kv_capacity=30, replica_specs=[ReplicaSpec(kv_capacity=20), ReplicaSpec()])
    assert got == [20, 30]
    # a manager that ignores the budget it is given sets the replica's capacity (and views)
    seen = []
    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), router=watch(seen),
                       kv=lambda capacity: exact_reservation(10))
    assert res.finish.tolist() == [5.0, 10.0]       # 10 tokens: one at a time
    assert seen == [(0, 0, 0, 0), (1, 0, 0, 10)]
    big = Workload.build([0.0], prompt_tokens=[6], output_tokens=[5])
    with pytest.raises(ValueError, match="kv_capacity is 10"):
        sim.simulate(big, mode="iteration", cost=constant_step(1.0),
                     kv=lambda capacity: exact_reservation(10))


@pytest.mark.parametrize("missing", ["admit", "grow", "free", "used", "stored", "capacity"])
def test_a_kv_manager_missing_a_part_is_named(missing):
    class Partial(Lazy):
        pass

    manager = Partial(100)
    if missing == "capacity":
        del manager.capacity
    else:
        setattr(Partial, missing, None)
    wl = Workload.build([0.0], prompt_tokens=[2], output_tokens=[2])
    with pytest.raises(TypeError, match=rf"no {missing}\b"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=lambda c: manager)


@pytest.mark.parametrize("answer", [[1, 1], [True], [1.0]])
def test_grow_victims_must_be_distinct_running_ids(answer):
    class Odd(Holding):
        def grow(self, running):
            return answer if super().grow(running) else []

    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    with pytest.raises(ValueError, match=r"KV manager .*Odd.grow\(\) returned .*running: \[0, 1\]"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=Odd, kv_capacity=10)


def test_a_manager_that_names_every_sequence_raises_no_progress():
    class All(Holding):
        def grow(self, running):
            return [s.id for s in running] if super().grow(running) else []

    # contexts 5 + 4 fit 10; after one step 6 + 5 = 11 do not: the biggest is r0 with 6
    wl = Workload.build([0.0, 0.0], prompt_tokens=[5, 4], output_tokens=[4, 4])
    with pytest.raises(NoProgressError, match=r"KV manager .*All cannot make room .*request 0 "
                                              r"needs 6 tokens of KV, capacity 10"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=All, kv_capacity=10)


@pytest.mark.parametrize("answer, ok", [(1, False), (None, False), (True, True)])
def test_admit_answers_must_be_booleans(answer, ok):
    import numpy as np

    class Answer(Lazy):
        def admit(self, seq):
            super().admit(seq)
            return np.bool_(answer) if ok else answer

    wl = Workload.build([0.0], prompt_tokens=[2], output_tokens=[2])
    if ok:
        res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=Answer)
        assert res.finish.tolist() == [2.0]
    else:
        with pytest.raises(TypeError, match=rf"KV manager .*Answer.admit\(\) returned {answer}"):
            sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=Answer)


def test_a_replica_that_is_starting_has_no_index():
    # the tick at 2 starts a second replica (up at 7); the tick at 4 sees it starting, with
    # index -1; the tick at 8 sees it up, at index 1
    views = []

    def two(view):
        views.append([(v.id, v.index, v.state) for v in view.replicas])
        return 2

    wl = Workload.build([0.0], service_time=[9.0])
    sim.simulate(wl, autoscaler=two, autoscale_interval=2.0, startup_delay=5.0)
    assert views[:4] == [[(0, 0, "up")], [(0, 0, "up"), (1, -1, "starting")],
                         [(0, 0, "up"), (1, -1, "starting")], [(0, 0, "up"), (1, 1, "up")]]


def test_a_victim_is_offered_again_at_the_next_step():
    # chunk 4, 9 KV tokens held as contexts grow (Lazy); r0 (6 + 4), r1 (6 + 2) at 0.
    # step 1: r0 prefills 4; step 2: r0 2 (first token at 2), r1 2 (6 + 2 = 8 fit).
    # Before steps 3, 4 and 5, r1 (re-admitted each time: Lazy admits anything) would need 6,
    # then 4 and 4 more tokens next to r0's 7, 8, 9: it is preempted at 2, 3 and 4.
    # r0 ends at 5 (its 4th token); r1 prefills 4 [5,6), 2 [6,7) (first token 7), done at 8.
    # An autoscaler that keeps one replica looks at the replica every 2.5 s.
    wl = Workload.build([0.0, 0.0], prompt_tokens=[6, 6], output_tokens=[4, 2])
    views = []

    def look(view):
        v = view.replicas[0]
        views.append((view.now, v.queue_len, v.busy, v.kv_used, v.queued_tokens))
        return 1

    res = sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=Lazy, kv_capacity=9,
                       prefill_chunk=4, record_steps=True, autoscaler=look,
                       autoscale_interval=2.5)
    assert res.first_token.tolist() == [2.0, 7.0] and res.finish.tolist() == [5.0, 8.0]
    assert res.preemptions == [Preempted(1, t, 0, 0, "kv") for t in (2.0, 3.0, 4.0)]
    assert res.n_preemptions.tolist() == [0, 3]
    assert [(s[1], s[3], s[4], s[5]) for s in res.steps] == [
        (0.0, 2, 4, 0), (1.0, 2, 4, 0), (2.0, 1, 0, 1), (3.0, 1, 0, 1), (4.0, 1, 0, 1),
        (5.0, 1, 4, 0), (6.0, 1, 2, 0), (7.0, 1, 0, 1)]
    # (now, waiting, running, KV used, tokens waiting): at 2.5 r1 waits (6 + 2 tokens) while
    # r0 holds 7; at 5 r1 runs holding 4; at 7.5 it holds 7; at 10 all is done
    assert views == [(2.5, 1, 1, 7, 8), (5.0, 0, 1, 4, 0), (7.5, 0, 1, 7, 0),
                     (10.0, 0, 0, 0, 0)]


@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("bad, exc", [(math.inf, ValueError), (None, TypeError)])
def test_a_bad_step_time_in_a_decode_stretch_is_named(record, bad, exc):
    # 1 s steps except when the decoders hold 7 tokens (r0: 4 + 8, its 3rd decode step): that
    # step's time is refused, with or without the step log (decode steps then run without
    # events)
    class Wall:
        def step_time(self, prefill_tokens, decode_seqs, context_tokens):
            return bad if context_tokens == 7 else 1.0

    wl = Workload.build([0.0], prompt_tokens=[4], output_tokens=[8])
    with pytest.raises(exc, match=rf"cost .*Wall.step_time\(\) returned {bad}"):
        sim.simulate(wl, mode="iteration", cost=Wall(), record_steps=record)


@pytest.mark.parametrize("answer, exc", [(5, TypeError), ([0.0], TypeError), ([True], TypeError),
                                         ([7], ValueError), ([0, 0], ValueError)])
def test_scheduler_errors_name_the_scheduler_and_its_answer(answer, exc):
    def admit(view):
        return answer

    wl = Workload.build([0.0], prompt_tokens=[5], output_tokens=[2])
    with pytest.raises(exc, match=f"^scheduler admit returned {re.escape(repr(answer))}: "):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), scheduler=admit)
    if answer == [7]:   # the ids that are not waiting are named
        with pytest.raises(exc, match=r"ids \[7\]"):
            sim.simulate(wl, mode="iteration", cost=constant_step(1.0), scheduler=admit)


@pytest.mark.parametrize("answer, exc", [
    (1.0, TypeError), (BatchDecision(1.0), TypeError), (5, ValueError),
    (BatchDecision(1, 5.0), ValueError), (BatchDecision(0, "soon"), TypeError),
    (BatchDecision(0, 0.0), ValueError)])
def test_batcher_errors_name_the_batcher_and_its_answer(answer, exc):
    def batch(queue):
        return answer

    with pytest.raises(exc, match=f"^batcher batch returned {re.escape(repr(answer))}: "):
        sim.simulate(Workload.build([0.0], service_time=[1.0]), batcher=batch)


def test_a_refused_lone_request_names_the_manager_and_the_request():
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 1], output_tokens=[4, 1])
    with pytest.raises(NoProgressError, match=r"replica 0: KV manager .*Holding refused request "
                                              r"0 \(4 prompt \+ 4 output tokens\).* capacity 3 "
                                              r"at t=0 s.*\(2 requests stuck\)"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=Holding, kv_capacity=3)


def test_batcher_retries_count_from_the_last_start_or_finish():
    # MAX_IDLE = 10,000 retries in a row with no request starting or finishing raise. The
    # batcher takes r0 at once, and declines r1 (asking again 1 ms later) `declines` times.
    # One server: r1 waits for r0's finish at 1, where the batcher is asked (not a retry) and
    # declines; 9,999 retries then decline too, and the next takes r1 (at 1 + 10,000 ms).
    # Two servers: r1 is asked on arrival at 0.5, right after r0 started: the same count.
    def hesitant(declines):
        calls = []

        def batcher(q):
            if q[0].id == 0:
                return 1
            calls.append(q.now)
            return 1 if len(calls) > declines else BatchDecision(0, q.now + 0.001)
        return batcher

    wl = Workload.build([0.0, 0.5], service_time=[1.0, 1.0])
    res = sim.simulate(wl, batcher=hesitant(10_000))
    assert res.start[1] == pytest.approx(11.0) and res.completed.all()
    with pytest.raises(NoProgressError, match="batcher batcher made 10000 decisions"):
        sim.simulate(wl, batcher=hesitant(10_001))
    long_first = Workload.build([0.0, 0.5], service_time=[100.0, 1.0])
    res = sim.simulate(long_first, servers=2, batcher=hesitant(10_000))
    assert res.start[1] == pytest.approx(10.5) and res.completed.all()


def test_a_retry_that_starts_a_batch_is_progress():
    # three servers; r0 (t=0) starts at once. r1 and r2 arrive at 0.5; the batcher keeps one
    # retry pending (answering 0 while one is due). r1 is declined 5 times (on arrival, on
    # r2's arrival, then by the retries at 0.501, 0.502, 0.503) and taken by the retry at
    # 0.504, which asks about r2 next: a decline, then 9,999 declining retries (1 ms apart),
    # then r2 starts at 0.504 + 10 s. The retry at 0.504 started r1, so it does not count
    # towards the 10,000 retries in a row that raise.
    asked, due = {}, [-1.0]
    limit = {1: 5, 2: 10_000}

    def batcher(q):
        head = q[0].id
        if head == 0:
            return 1
        asked[head] = asked.get(head, 0) + 1
        if asked[head] > limit[head]:
            return 1
        if due[0] > q.now:
            return 0
        due[0] = q.now + 0.001
        return BatchDecision(0, due[0])

    wl = Workload.build([0.0, 0.5, 0.5], service_time=[100.0, 100.0, 1.0])
    res = sim.simulate(wl, servers=3, batcher=batcher)
    assert res.start.tolist() == pytest.approx([0.0, 0.504, 10.504])
    assert res.completed.all()


def test_a_manager_that_overfills_is_named_with_what_it_uses():
    class Hog(Lazy):
        def grow(self, running):
            for s in running:
                self.alloc[s.id] = 50
            return []

    # two sequences of 50 slots each in a pool of 60
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    with pytest.raises(ValueError, match=r"KV manager .*Hog.used\(\) returned 100: .*60"):
        sim.simulate(wl, mode="iteration", cost=constant_step(1.0), kv=Hog, kv_capacity=60)


def test_events_due_at_the_same_instant_run_in_the_order_they_were_scheduled():
    # two servers, 5 s requests; the batcher takes one request when three wait or from t=5
    # on, and otherwise asks again at 5. At 0: r0 waits (retry 1 due at 5), r1 too (retry 2),
    # r2 makes three: r0 starts (its end is due at 5), then two wait again (retry 3). At 5,
    # in that order: retry 1 starts r1; retry 2 finds both servers busy; r0 ends and r2
    # starts on its server; retry 3 finds the queue empty.
    def three_or_at_five(q):
        if len(q) >= 3 or q.now >= 5.0:
            return 1
        return BatchDecision(0, 5.0)

    wl = Workload.build([0.0, 0.0, 0.0], service_time=[5.0, 5.0, 5.0])
    res = sim.simulate(wl, servers=2, batcher=three_or_at_five)
    assert res.start.tolist() == [0.0, 5.0, 5.0] and res.finish.tolist() == [5.0, 10.0, 10.0]
