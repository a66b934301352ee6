"""The adapters and notebook helpers of scalesim_course.batching, on small hand-worked cases.

Every expected value below was worked out by hand (the comments show how); the fake run
results are plain namespaces, so no simulator behaviour is assumed where none is needed."""
import re
from types import SimpleNamespace

import numpy as np
import pytest

from scalesim_course import batching, costmodel, sim
from scalesim_course.batching import Seq, SlotRow
from scalesim_course.sim.result import StepRecord
from scalesim_course.workload import Workload

nan = float("nan")


class ConstantStep:
    def __init__(self, d):
        self.d = d

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        return self.d


class Unnamed:
    """A callable without a __name__."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


# ----------------------------------------------------------------------------- batcher_from_rule
def test_batcher_from_rule_checks_the_last_arrival_and_the_counts():
    wl = Workload.build([0.0, 0.25, 0.5])
    cost = costmodel.FixedBatchCost(0.01, 0.0)

    def run(rule, max_batch=3):
        return sim.simulate(wl, cost=cost, batcher=batching.batcher_from_rule(rule, max_batch, 1.0))

    # one request per batch, due at its arrival; a batch takes 1 s, so 1 and 2 wait together
    # from 0.25 and 0.5 until 1.0: the first batch [1] is due at 0.25, though 2 came later
    slow = costmodel.FixedBatchCost(1.0, 0.0)
    res = sim.simulate(wl, cost=slow, batcher=batching.batcher_from_rule(
        lambda a, b, d: ([[i] for i in range(len(a))], list(a)), 3, 1.0))
    assert res.start.tolist() == [0.0, 1.0, 2.0]
    # a batch of two due when its first (not its last) request arrives: named with both times
    with pytest.raises(ValueError, match=re.escape("at 0.0 before its last request arrives at "
                                                   "0.25")):
        run(lambda a, b, d: ([[0, 1]], [a[0]]) if len(a) > 1 else ([[0]], [a[0] + 1.0]))
    with pytest.raises(ValueError, match="returned 0 batches and 0 dispatch times for 1 waiting"):
        run(lambda a, b, d: ([], []))
    with pytest.raises(ValueError, match="returned 1 batches and 2 dispatch times for 1 waiting"):
        run(lambda a, b, d: ([[0]], [a[0], a[0]]))


def test_adapters_are_named_after_what_they_wrap():
    rule, step = batching.form_dynamic_batches, batching.continuous_batching_step
    assert batching.batcher_from_rule(rule, 2, 0.1).__qualname__ == (
        "batcher_from_rule(form_dynamic_batches)")
    assert batching.batcher_from_rule(Unnamed(rule), 2, 0.1).__qualname__ == (
        "batcher_from_rule(rule)")
    assert batching.scheduler_from_step(step).__qualname__ == (
        "scheduler_from_step(continuous_batching_step)")
    assert batching.scheduler_from_step(Unnamed(step)).__qualname__ == "scheduler_from_step(step)"
    with pytest.raises(TypeError, match=r"\bstep must be callable, got str\b"):
        batching.scheduler_from_step("step")
    with pytest.raises(TypeError, match=r"\bform_batches must be callable, got int\b"):
        batching.batcher_from_rule(3, 2, 0.1)


# ----------------------------------------------------------------------------- scheduler_from_step
def test_scheduler_from_step_shows_the_step_function_the_engine_state():
    # 0 arrives alone at 0; 1, 2, 3 arrive at 0.5, during 0's first step (each step 1 s)
    wl = Workload.build([0.0, 0.5, 0.5, 0.5], [2, 3, 4, 5], [3, 2, 1, 1])
    calls = []

    def recording(running, waiting, kv_budget, max_batch):
        calls.append((running, waiting, kv_budget, max_batch))
        return batching.continuous_batching_step(running, waiting, kv_budget, max_batch)

    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), max_batch=2, kv_capacity=100,
                       scheduler=batching.scheduler_from_step(recording))
    assert calls == [
        ([], [Seq(0, 2, 3, 0)], 100, 2),                  # t=0: only 0 is there
        ([Seq(0, 2, 3, 1)], [Seq(1, 3, 2, 0)], 100, 2),   # t=1: 0 has its first token; 1 slot free
        # t=2: both slots busy, no call; t=3: 0 (3 tokens) and 1 (2 tokens) have finished
        ([], [Seq(2, 4, 1, 0), Seq(3, 5, 1, 0)], 100, 2),
    ]
    assert all(type(c[2]) is int for c in calls)
    assert res.finish.tolist() == [3.0, 3.0, 4.0, 4.0]


# ----------------------------------------------------------------------------- replay_steps
# budget 10, at most 2 in the batch; ids not in arrival order
REQS = [Seq(7, 2, 2), Seq(3, 3, 1), Seq(5, 4, 2), Seq(9, 1, 1)]
ARRIVE = [0, 0, 1, 6]


def test_replay_steps_by_hand():
    # step 0: 7 and 3 join (KV 4 + 4); step 1: 3 is done, 5 (KV 6) fills the budget exactly;
    # step 2: 7 is done, 5 runs alone; step 3: 5 is done, idle until 9 arrives at step 6;
    # step 6: 9 runs; step 7: 9 is reported done
    r = batching.replay_steps(batching.continuous_batching_step, REQS, ARRIVE, 10, 2)
    assert r == batching.StepReplay(admitted_at=[0, 0, 1, 6], finished_at=[2, 1, 3, 7],
                                    batch_sizes=[2, 2, 1, 1], kv_used=[8, 10, 6, 2], steps=7)
    assert batching.replay_steps(batching.continuous_batching_step, [], [], 10) == (
        batching.StepReplay([], [], [], [], 0))


def test_replay_steps_gives_up_after_max_steps():
    step = batching.continuous_batching_step
    assert batching.replay_steps(step, REQS, ARRIVE, 10, 2, max_steps=7).steps == 7
    with pytest.raises(AssertionError, match="not done after 6 steps"):
        batching.replay_steps(step, REQS, ARRIVE, 10, 2, max_steps=6)


def lazy(running, waiting, kv_budget, max_batch=None):
    """Admits nobody."""
    return ([], [s for s in running if s.generated < s.output_tokens],
            [s for s in running if s.generated >= s.output_tokens])


def second_only(running, waiting, kv_budget, max_batch=None):
    """Admits the second waiting request (out of order)."""
    return waiting[1:2], list(running), []


@pytest.mark.parametrize("step, reqs, arrive, budget, match", [
    # a request that exactly fills the budget fits
    (lazy, [Seq(0, 5, 5)], [0], 10, "step 0: request 0 fits but was not admitted"),
    (second_only, [Seq(0, 1, 1), Seq(1, 1, 1), Seq(2, 1, 1)], [0, 0, 0], 10,
     re.escape("step 0: admitted [1], but first-come-first-served admits a prefix of the "
               "waiting list [0, 1]") + "$"),
])
def test_replay_steps_reports_the_offending_step(step, reqs, arrive, budget, match):
    with pytest.raises(AssertionError, match=match):
        batching.replay_steps(step, reqs, arrive, budget)


@pytest.mark.parametrize("reqs, arrive, match", [
    ([Seq(0, 1, 1)], [0, 1], r"\barrival_step has 2 entries, requests has 1"),
    ([Seq(0, 1, 1), Seq(1, 1, 1), Seq(2, 1, 1)], [0, 2, 1], r"\barrival_step must be"),
    ([Seq(0, 1, 1), Seq(0, 2, 2)], [0, 1], "unique"),
])
def test_replay_steps_refuses_bad_input(reqs, arrive, match):
    with pytest.raises(ValueError, match=match):
        batching.replay_steps(batching.continuous_batching_step, reqs, arrive, 10)


# ----------------------------------------------------------------------------- batches by hand
def test_batches_in_order():
    f = batching.batches_in_order
    assert f(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert f(6, 3) == [[0, 1, 2], [3, 4, 5]]
    assert f(2, 1) == [[0], [1]]
    assert f(2, 5) == [[0, 1]]
    assert f(0, 4) == []


@pytest.mark.parametrize("make, args, exc, name", [
    (batching.batches_in_order, (-1, 2), ValueError, "n"),
    (batching.batches_in_order, (2.0, 2), TypeError, "n"),
    (batching.batches_in_order, (3, 0), ValueError, "batch_size"),
    (batching.batches_in_order, (3, 1.0), TypeError, "batch_size"),
    (batching.bucketed_batches, ([3], [4], 0), ValueError, "batch_size"),
    (batching.bucketed_batches, ([3], [4], 2.0), TypeError, "batch_size"),
    (batching.scoring_workload, (0.0, 10), ValueError, "rate"),
])
def test_helpers_name_their_bad_parameter(make, args, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        make(*args)


def test_bucketed_batches_by_hand():
    lengths = [5, 50, 7, 300, 60, 8, 9]     # buckets (<= 10, <= 100, overflow): 0 1 0 2 1 0 0
    assert batching.bucketed_batches(lengths, [10, 100], 2) == [[0, 2], [5, 6], [1, 4], [3]]
    assert batching.bucketed_batches(lengths, [10, 100], 1) == [[0], [2], [5], [6], [1], [4], [3]]
    # a learner's bucketing function is used as given
    assert batching.bucketed_batches([1, 2, 3], [8], 2, lambda ls, b: [1, 0, 1]) == [[1], [0, 2]]
    with pytest.raises(ValueError, match="bucket_fn returned 1 buckets for 3 requests"):
        batching.bucketed_batches([1, 2, 3], [8], 2, lambda ls, b: [0])


def test_dynamic_batches_per_queue_by_hand():
    arrival = [0.0, 0.25, 0.5, 0.75, 2.0, 2.25]
    queues = [[0, 2, 4], [1, 3, 5], []]
    # queue 0 (0.0, 0.5, 2.0), at most 2, 1 s: [0, 2] full at 0.5, [4] alone due at 3.0
    # queue 1 (0.25, 0.75, 2.25): [1, 3] full at 0.75, [5] due at 3.25; queue 2: nothing
    batches, waits = batching.dynamic_batches_per_queue(arrival, queues, 2, 1.0)
    assert batches == [[0, 2], [4], [1, 3], [5]]
    assert isinstance(waits, np.ndarray)
    assert waits.tolist() == [0.5, 0.0, 1.0, 0.5, 0.0, 1.0]

    seen = []

    def all_at_once(arrivals, max_batch, max_delay):
        seen.append((list(arrivals), max_batch, max_delay))
        if len(arrivals) == 0:
            return [], []
        return [list(range(len(arrivals)))], [arrivals[-1] + max_delay]

    batches, waits = batching.dynamic_batches_per_queue(arrival, queues, 2, 1.0, all_at_once)
    assert seen == [([0.0, 0.5, 2.0], 2, 1.0), ([0.25, 0.75, 2.25], 2, 1.0), ([], 2, 1.0)]
    assert batches == [[0, 2, 4], [1, 3, 5]]
    assert waits.tolist() == [3.0, 2.5, 1.0, 3.0, 2.5, 1.0]


def test_form_dynamic_batches_dispatch_times_are_floats():
    batches, due = batching.form_dynamic_batches([0, 1, 3], 1, 0)
    assert batches == [[0], [1], [2]] and due == [0.0, 1.0, 3.0]
    assert all(type(t) is float for t in due)


# ----------------------------------------------------------------------------- run helpers
def test_scoring_workload():
    wl = batching.scoring_workload(200.0, 400, seed=3)
    assert len(wl.arrival) == 400 and np.all(np.diff(wl.arrival) >= 0)
    assert wl.output_tokens.tolist() == [1] * 400
    assert 1 <= wl.prompt_tokens.min() and wl.prompt_tokens.max() <= 512
    again = batching.scoring_workload(200.0, 400, seed=3)
    other = batching.scoring_workload(200.0, 400, seed=4)
    assert np.array_equal(wl.arrival, again.arrival)                 # reproducible
    assert np.array_equal(wl.prompt_tokens, again.prompt_tokens)
    assert not np.array_equal(wl.arrival, other.arrival)             # the seed matters ...
    assert not np.array_equal(wl.prompt_tokens, other.prompt_tokens)  # ... to both
    # the defaults; 4000 draws so that a few (P(> 512) = 0.1%) reach the cap
    default = batching.scoring_workload(200.0, 4000)
    explicit = batching.scoring_workload(200.0, 4000, seed=0, mean_tokens=48.0, median_tokens=32.0,
                                         max_tokens=512)
    assert np.array_equal(default.arrival, explicit.arrival)
    assert np.array_equal(default.prompt_tokens, explicit.prompt_tokens)
    assert default.prompt_tokens.max() == 512
    # median 32, mean 48: far more than 1 in 400 are longer than 40, so the cap is reached
    capped = batching.scoring_workload(200.0, 400, seed=3, max_tokens=40)
    assert capped.prompt_tokens.max() == 40


def test_batch_sizes_reads_the_step_log():
    res = SimpleNamespace(steps=[StepRecord(0, 0.0, 1.0, 3, 30, 0),
                                 StepRecord(0, 1.0, 2.0, 2, 7, 1)])
    assert batching.batch_sizes(res).tolist() == [3, 2]
    with pytest.raises(ValueError, match=r"record_steps=True\b"):
        batching.batch_sizes(SimpleNamespace(steps=[]))


# ----------------------------------------------------------------------------- slot_timeline
def fake_run(start, first, finish, prompts=None, outputs=None):
    start = np.array(start, dtype=float)
    n = len(start)
    wl = SimpleNamespace(prompt_tokens=np.array(prompts or [1] * n),
                         output_tokens=np.array(outputs or [1] * n))
    return SimpleNamespace(workload=wl, start=start, first_token=np.array(first, dtype=float),
                           finish=np.array(finish, dtype=float), completed=~np.isnan(start))


# batch A = requests 0 and 1 (1.0 to 3.0), batch B = request 2 alone (3.0 to 4.5); 3 never ran
STATIC = dict(start=[1.0, 1.0, 3.0, nan], first=[2.0, 2.5, 3.5, nan], finish=[3.0, 3.0, 4.5, nan],
              prompts=[5, 10, 10, 1], outputs=[1, 4, 1, 1])


class HalfOffsets:
    """First token after prompt / 10 s, last after output s (as a cost's request_offsets)."""

    def request_offsets(self, prompts, outputs):
        return np.asarray(prompts) / 10, np.asarray(outputs, dtype=float)


def test_slot_timeline_of_static_batches():
    res = fake_run(**STATIC)
    assert batching.slot_timeline(res, "request") == [
        SlotRow(0, 0, 1.0, 2.0, 3.0, 3.0), SlotRow(1, 1, 1.0, 2.5, 3.0, 3.0),
        SlotRow(2, 0, 3.0, 3.5, 4.5, 4.5)]
    # with the cost: first at start + prompt / 10, done at start + output (at most the batch end)
    assert batching.slot_timeline(res, "request", HalfOffsets()) == [
        SlotRow(0, 0, 1.0, 1.5, 2.0, 3.0), SlotRow(1, 1, 1.0, 2.0, 3.0, 3.0),
        SlotRow(2, 0, 3.0, 4.0, 4.0, 4.5)]


def test_slot_timeline_of_continuous_batching():
    # taken by (start, id): 0 -> slot 0, 1 -> slot 1, 3 (0.5) -> new slot 2, 2 (1.0) -> slot 1
    # (free at 1.0 exactly), 5 (2.0) -> slot 0 (the lowest free: slot 2 is free too); 4 never ran
    res = fake_run(start=[0.0, 0.0, 1.0, 0.5, nan, 2.0], first=[0.5, 0.4, 1.2, 0.7, nan, 2.1],
                   finish=[2.0, 1.0, 3.0, 1.5, nan, 2.5])
    assert batching.slot_timeline(res, "iteration") == [
        SlotRow(0, 0, 0.0, 0.5, 2.0, 2.0), SlotRow(1, 1, 0.0, 0.4, 1.0, 1.0),
        SlotRow(3, 2, 0.5, 0.7, 1.5, 1.5), SlotRow(2, 1, 1.0, 1.2, 3.0, 3.0),
        SlotRow(5, 0, 2.0, 2.1, 2.5, 2.5)]


def test_slot_timeline_needs_a_finished_request():
    one = fake_run(start=[nan, 2.0], first=[nan, 2.5], finish=[nan, 3.0])
    assert batching.slot_timeline(one, "iteration") == [SlotRow(1, 0, 2.0, 2.5, 3.0, 3.0)]
    with pytest.raises(ValueError, match="finished"):
        batching.slot_timeline(fake_run(start=[nan], first=[nan], finish=[nan]), "request")


# ----------------------------------------------------------------------------- request_offsets
def test_request_offsets_of_a_cost_with_its_own():
    # as in test_static_batch_cost_times_the_ride_along_schedule: prefills 1 + 1.0 and 1 + 2.0
    # one after the other; request 1 then decodes 2 steps, contexts 30 and 31
    static = batching.StaticBatchCost(costmodel.LinearStepCost(1.0, 0.1, 0.01, 0.001))
    firsts, dones = batching.request_offsets(static, [10, 20], [1, 3])
    assert firsts.tolist() == pytest.approx([2.0, 5.0])
    assert dones.tolist() == pytest.approx([2.0, 5.0 + 1.05 + 1.051])


def test_request_offsets_of_a_padded_batch_by_hand():
    # b = 2, longest prompt P = 3: prefill step_time(6, 0, 0) = 1 + 0.5 * 6 = 4.0; decode step k
    # = step_time(0, 2, 2 * (3 + k)) = 1 + 0.25 * 2 + 0.125 * 2 * (3 + k): 2.5, then 2.75.
    # Request 0 (2 tokens) is done after 1 decode step: 6.5; request 1 (3 tokens) after 2: 9.25
    cost = costmodel.LinearStepCost(1.0, 0.5, 0.25, 0.125)
    for prompts, outputs in (([3, 1], [2, 3]), (np.array([3.0, 1.0]), np.array([2.0, 3.0]))):
        firsts, dones = batching.request_offsets(cost, prompts, outputs)
        assert firsts.tolist() == [4.0, 4.0]
        assert dones.tolist() == [6.5, 9.25]
    # a one-token request is done with its first token
    assert batching.request_offsets(cost, [3, 1], [1, 3])[1].tolist() == [4.0, 9.25]


def test_request_offsets_of_a_cost_with_batch_timing_only():
    class TwoOffsets:
        def batch_timing(self, prompt_tokens, output_tokens):
            return 0.5, 2.0

    firsts, dones = batching.request_offsets(TwoOffsets(), [3, 1, 4], [1, 5, 9])
    assert firsts.tolist() == [0.5, 0.5, 0.5] and dones.tolist() == [2.0, 2.0, 2.0]
