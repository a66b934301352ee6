"""Batching policies, the exercise references and their adapters (scalesim_course.batching).

Notebook 02's graded cells against right and wrong answers: tests/notebooks/test_02_batching.py."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from scalesim_course import batching, costmodel, plots, sim  # noqa: E402
from scalesim_course.batching import Seq  # noqa: E402
from scalesim_course.workload import Workload  # noqa: E402


class ConstantStep:
    def __init__(self, d=0.01):
        self.d = d

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        return self.d


def start_groups(result):
    """Request ids grouped by identical start time, in time order."""
    groups = {}
    for i, s in enumerate(result.start.tolist()):
        groups.setdefault(s, []).append(i)
    return [groups[s] for s in sorted(groups)]


# ----------------------------------------------------------------------------- request-mode hooks
def test_static_batcher_waits_for_full_batches_and_can_flush():
    wl = Workload.build([0.0, 0.1, 0.2, 0.3, 5.0])
    cost = costmodel.FixedBatchCost(0.5, 0.0)
    res = sim.simulate(wl, cost=cost, batcher=batching.static_batcher(2), record_steps=True)
    assert batching.batch_sizes(res).tolist() == [2, 2]
    assert res.start[:4].tolist() == [0.1, 0.1, 0.6, 0.6]   # the second batch waits for the GPU
    assert math.isnan(res.finish[4])                         # never a full batch: never served
    flushed = sim.simulate(wl, cost=cost, batcher=batching.static_batcher(2, flush_after=1.0))
    assert flushed.completed.all() and flushed.start[4] == 6.0


def test_dynamic_batcher_matches_the_engine_example():
    wl = Workload.build([0.0, 0.1, 0.2, 5.0, 5.05, 5.1, 5.15, 9.0])
    res = sim.simulate(wl, cost=costmodel.FixedBatchCost(0.5, 0.0),
                       batcher=batching.dynamic_batcher(3, 1.0), record_steps=True)
    assert batching.batch_sizes(res).tolist() == [3, 3, 1, 1]
    assert res.start.tolist() == pytest.approx([0.2, 0.2, 0.2, 5.1, 5.1, 5.1, 6.15, 10.0])


def test_dynamic_batcher_never_asks_to_retry_in_the_past():
    # times whose sum with the delay rounds (0.1 + 0.2 != 0.3): the deadline check must use the
    # same sum as the retry time, or the engine rejects retry_at == now
    rng = np.random.default_rng(3)
    wl = Workload.build(np.round(np.cumsum(rng.exponential(0.07, 3000)), 2))
    for delay in (0.1, 0.2, 0.3, 0.7):
        res = sim.simulate(wl, cost=costmodel.FixedBatchCost(0.01, 0.001),
                           batcher=batching.dynamic_batcher(8, delay))
        assert res.completed.all()
        assert np.all(res.start - wl.arrival <= delay + 1e-9)  # nobody waits past the delay


def test_dynamic_batcher_with_zero_delay_is_work_conserving():
    wl = Workload.build(np.zeros(5))
    res = sim.simulate(wl, cost=costmodel.FixedBatchCost(1.0, 0.0),
                       batcher=batching.dynamic_batcher(4, 0.0), record_steps=True)
    # simultaneous arrivals reach the batcher one by one: the first goes alone, the rest queue
    assert batching.batch_sizes(res).tolist() == [1, 4]


@pytest.mark.parametrize("make, args, exc, name", [
    (batching.static_batcher, (0,), ValueError, "batch_size"),
    (batching.static_batcher, (2.5,), TypeError, "batch_size"),
    (batching.dynamic_batcher, (0, 0.1), ValueError, "max_batch"),
    (batching.dynamic_batcher, (4, -1.0), ValueError, "max_delay"),
    (batching.dynamic_batcher, (4, "1"), TypeError, "max_delay"),
    (batching.batcher_from_rule, ("rule", 4, 0.1), TypeError, "form_batches"),
    (batching.batcher_from_rule, (batching.form_dynamic_batches, 0, 0.1), ValueError, "max_batch"),
    (batching.batcher_from_rule, (batching.form_dynamic_batches, 2.5, 0.1), TypeError, "max_batch"),
    (batching.batcher_from_rule, (batching.form_dynamic_batches, 2, -0.1), ValueError, "max_delay"),
])
def test_hooks_name_their_bad_parameter(make, args, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        make(*args)


def test_hooks_accept_a_batch_of_one():
    assert batching.static_batcher(1)(["a request"]) == 1
    assert batching.dynamic_batcher(1, 0.5)(["a request"]) == 1
    batching.batcher_from_rule(batching.form_dynamic_batches, 1, 0.0)


# ----------------------------------------------------------------------------- exercise 1
def test_form_dynamic_batches_examples():
    f = batching.form_dynamic_batches
    assert f([], 4, 0.1) == ([], [])
    assert f([2.0], 4, 0.25) == ([[0]], [2.25])
    assert f([2.0], 1, 0.25) == ([[0]], [2.0])
    assert f([1.0] * 5, 2, 0.5) == ([[0, 1], [2, 3], [4]], [1.0, 1.0, 1.5])
    assert f([0.0, 0.5], 4, 0.5) == ([[0, 1]], [0.5])       # an arrival at the deadline joins
    assert f([0.0, 0, 1, 2, 2, 2], 2, 0.0) == ([[0, 1], [2], [3, 4], [5]], [0.0, 1.0, 2.0, 2.0])
    assert f(np.array([0.0, 0.1, 0.2]), 2, 1.0) == ([[0, 1], [2]], [0.1, 1.2])


@pytest.mark.parametrize("args, exc, name", [
    (([0.0], 0, 0.1), ValueError, r"\bmax_batch\b"),
    (([0.0], 1.5, 0.1), TypeError, r"\bmax_batch\b"),
    (([0.0], 2, -0.1), ValueError, r"\bmax_delay\b"),
    (([1.0, 0.0], 2, 0.1), ValueError, r"\barrivals\b.*sorted"),
    (([0.0, math.nan], 2, 0.1), ValueError, r"\barrivals\b.*finite"),
])
def test_form_dynamic_batches_refuses_bad_input(args, exc, name):
    with pytest.raises(exc, match=name):
        batching.form_dynamic_batches(*args)


@pytest.mark.parametrize("seed", range(6))
def test_form_dynamic_batches_invariants_on_random_workloads(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4000))
    arrivals = np.cumsum(rng.integers(0, 4, n)) / 64.0       # exact in floating point: many ties
    max_batch, max_delay = int(rng.integers(1, 24)), int(rng.integers(0, 16)) / 64.0
    batches, times = batching.form_dynamic_batches(arrivals, max_batch, max_delay)
    assert [i for b in batches for i in b] == list(range(n))  # each request once, order kept
    assert all(1 <= len(b) <= max_batch for b in batches)
    assert times == sorted(times)
    for k, (b, t) in enumerate(zip(batches, times)):
        assert arrivals[b[-1]] <= t <= arrivals[b[0]] + max_delay
        full = len(b) == max_batch
        assert t == (arrivals[b[-1]] if full else arrivals[b[0]] + max_delay)
        if not full and k + 1 < len(batches):
            assert arrivals[batches[k + 1][0]] > t              # nobody who fitted was left out


def test_batcher_from_rule_runs_the_rules_batches_in_the_simulator():
    rng = np.random.default_rng(7)
    arrivals = np.sort(rng.uniform(0, 50, 2000))
    wl = Workload.build(arrivals)
    batches, due = batching.form_dynamic_batches(arrivals, 6, 0.05)
    # a GPU so fast it is always free: every batch starts exactly at its dispatch time,
    # and so does the Triton-style batcher
    fast = costmodel.FixedBatchCost(1e-6, 0.0)
    for batcher in (batching.batcher_from_rule(batching.form_dynamic_batches, 6, 0.05),
                    batching.dynamic_batcher(6, 0.05)):
        res = sim.simulate(wl, cost=fast, batcher=batcher)
        assert start_groups(res) == batches
        assert [res.start[b[0]] for b in batches] == due
    # a slow GPU: the same batches, each started at its dispatch time or later
    slow = costmodel.FixedBatchCost(0.04, 0.002)
    res = sim.simulate(wl, cost=slow, batcher=batching.batcher_from_rule(
        batching.form_dynamic_batches, 6, 0.05))
    assert start_groups(res) == batches
    late = np.array([res.start[b[0]] for b in batches]) - np.array(due)
    assert late.min() >= 0 and late.max() > 0


def test_batcher_from_rule_rejects_a_rule_that_breaks_the_contract():
    wl = Workload.build([0.0, 0.1, 0.2])
    cost = costmodel.FixedBatchCost(0.01, 0.0)

    def skips_the_oldest(arrivals, max_batch, max_delay):
        return [list(range(1, len(arrivals) + 1))], [arrivals[-1]]

    def leaves_too_early(arrivals, max_batch, max_delay):
        return [list(range(len(arrivals)))], [arrivals[0] - 1.0]

    for rule, match in ((skips_the_oldest, "oldest"), (leaves_too_early, "before")):
        with pytest.raises(ValueError, match=match):
            sim.simulate(wl, cost=cost, batcher=batching.batcher_from_rule(rule, 3, 0.5))


# ----------------------------------------------------------------------------- exercise 2
def test_bucket_requests_boundaries_and_overflow():
    assert batching.bucket_requests([10, 64, 65, 300, 512, 513], [64, 128, 512]) == [0, 0, 1, 2,
                                                                                       2, 3]
    assert batching.bucket_requests([], [8]) == []
    assert batching.bucket_requests(np.array([5, 50, 500]), np.array([10, 100])) == [0, 1, 2]


@pytest.mark.parametrize("lengths, bounds, exc, name", [
    ([10], [], ValueError, r"\bbucket_bounds\b.*empty"),
    ([10], [64, 64], ValueError, "increasing"),
    ([10], [128, 64], ValueError, "increasing"),
    ([0], [64], ValueError, r"lengths\[0\]"),
    ([2.5], [64], TypeError, r"lengths\[0\]"),
    ([3], [0, 4], ValueError, r"bucket_bounds\[0\]"),
])
def test_bucket_requests_refuses_bad_input(lengths, bounds, exc, name):
    with pytest.raises(exc, match=name):
        batching.bucket_requests(lengths, bounds)


def test_padding_waste_definition():
    assert batching.padding_waste([[3, 5, 2]]) == pytest.approx(5 / 15)
    assert batching.padding_waste([[4, 4], [1, 3]]) == pytest.approx(2 / 14)  # pooled, not mean
    assert batching.padding_waste([]) == 0.0
    assert batching.padding_waste([[], [2, 4]]) == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match=r"batches\[0\]\[1\]"):
        batching.padding_waste([[3, 0]])


def test_padding_waste_against_brute_force():
    rng = np.random.default_rng(11)
    batches = [rng.integers(1, 500, int(rng.integers(1, 30))).tolist() for _ in range(300)]
    slots = sum(len(b) * max(b) for b in batches)
    assert batching.padding_waste(batches) == pytest.approx(1 - sum(map(sum, batches)) / slots)


def test_bucketed_batches_stay_within_a_bucket_and_cut_padding():
    wl = batching.scoring_workload(100, 3000, seed=4)
    lengths = wl.prompt_tokens.tolist()
    bounds = [32, 64, 128, 256]
    bucketed = batching.bucketed_batches(lengths, bounds, 16)
    assert sorted(i for b in bucketed for i in b) == list(range(len(lengths)))
    assignment = batching.bucket_requests(lengths, bounds)
    assert all(len({assignment[i] for i in b}) == 1 and len(b) <= 16 for b in bucketed)
    assert all(b == sorted(b) for b in bucketed)                    # arrival order within
    in_order = batching.batches_in_order(len(lengths), 16)

    def waste(batches):
        return batching.padding_waste([[lengths[i] for i in b] for b in batches])

    assert waste(bucketed) < waste(in_order) / 2


# ----------------------------------------------------------------------------- exercise 3
def test_continuous_step_example_from_the_notebook():
    running = [Seq(0, 30, 10, 10), Seq(1, 20, 20, 15)]
    waiting = [Seq(2, 25, 25), Seq(3, 40, 30), Seq(4, 5, 5)]
    admitted, still, finished = batching.continuous_batching_step(running, waiting, 100)
    assert ([s.id for s in admitted], [s.id for s in still], [s.id for s in finished]) == (
        [2], [1], [0])
    assert admitted[0] is waiting[0] and still[0] is running[1]     # the given records
    assert batching.continuous_batching_step(running, waiting, 100, max_batch=1)[0] == []
    assert batching.continuous_batching_step([], [], 100) == ([], [], [])
    assert batching.continuous_batching_step([], [], 1) == ([], [], [])
    # a request needing the whole budget fits
    assert batching.continuous_batching_step([], waiting[:1], 50) == ([waiting[0]], [], [])


@pytest.mark.parametrize("args, exc, name", [
    (([], [Seq(5, 90, 20)], 100), ValueError, "could never run"),
    (([], [Seq(1, 1, 1), Seq(5, 90, 20)], 100), ValueError, "request 5 needs 110 KV tokens"),
    (([], [], 0), ValueError, r"\bkv_budget\b"),
    (([], [], 10.0), TypeError, r"\bkv_budget\b"),
    (([], [], 10, 0), ValueError, r"\bmax_batch\b"),
])
def test_continuous_step_refuses_impossible_budgets(args, exc, name):
    with pytest.raises(exc, match=name):
        batching.continuous_batching_step(*args)


@pytest.mark.parametrize("seed", range(6))
def test_replay_of_the_reference_step_keeps_every_invariant(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 600))
    seqs = [Seq(int(i), int(rng.integers(1, 150)), int(rng.integers(1, 80)))
            for i in rng.permutation(n)]
    arrive = np.sort(rng.integers(0, 4 * n, n)).tolist()
    budget = int(rng.integers(230, 2000))
    max_batch = None if seed % 2 else int(rng.integers(1, 12))
    replay = batching.replay_steps(batching.continuous_batching_step, seqs, arrive, budget,
                                   max_batch)
    assert all(t >= 0 for t in replay.finished_at)
    assert np.all(np.diff(replay.admitted_at) >= 0)                 # FCFS: arrival order
    assert max(replay.kv_used) <= budget
    assert max_batch is None or max(replay.batch_sizes) <= max_batch
    for s, a, f, t in zip(seqs, replay.admitted_at, replay.finished_at, arrive):
        assert t <= a and f - a == s.output_tokens                  # one token per step
    assert sum(replay.batch_sizes) == sum(s.output_tokens for s in seqs)


def skips_ahead(running, waiting, kv_budget, max_batch=None):
    still = [s for s in running if s.generated < s.output_tokens]
    done = [s for s in running if s.generated >= s.output_tokens]
    free, admitted = kv_budget - sum(s.kv_tokens for s in still), []
    for s in waiting:
        if s.kv_tokens <= free and (max_batch is None or len(still) + len(admitted) < max_batch):
            admitted.append(s)
            free -= s.kv_tokens
    return admitted, still, done


def never_frees(running, waiting, kv_budget, max_batch=None):
    still = [s for s in running if s.generated < s.output_tokens]
    done = [s for s in running if s.generated >= s.output_tokens]
    free, admitted = kv_budget - sum(s.kv_tokens for s in running), []
    for s in waiting:
        if s.kv_tokens > free or (max_batch is not None and len(still) + len(admitted) >= max_batch):
            break
        admitted.append(s)
        free -= s.kv_tokens
    return admitted, still, done


@pytest.mark.parametrize("wrong, match", [(skips_ahead, "prefix"), (never_frees, "fits")])
def test_replay_catches_wrong_schedulers(wrong, match):
    rng = np.random.default_rng(1)
    seqs = [Seq(i, int(rng.integers(1, 80)), int(rng.integers(1, 30))) for i in range(500)]
    arrive = np.sort(rng.integers(0, 800, 500)).tolist()
    with pytest.raises(AssertionError, match=match):
        batching.replay_steps(wrong, seqs, arrive, 300, 8)


def test_scheduler_from_step_plugs_into_the_engine():
    rng = np.random.default_rng(0)
    wl = Workload.build(np.sort(rng.uniform(0, 20, 400)), rng.integers(1, 60, 400),
                        rng.integers(1, 40, 400))
    settings = dict(mode="iteration", cost=ConstantStep(0.01), max_batch=8, kv_capacity=300)
    ours = sim.simulate(wl, scheduler=batching.scheduler_from_step(
        batching.continuous_batching_step), **settings)
    assert np.array_equal(ours.finish, sim.simulate(wl, **settings).finish)
    with pytest.raises(ValueError, match="kv_capacity"):
        sim.simulate(wl, mode="iteration", cost=ConstantStep(), scheduler=batching.scheduler_from_step(
            batching.continuous_batching_step))


# ----------------------------------------------------------------------------- timelines and costs
def test_static_batch_cost_times_the_ride_along_schedule():
    cost = costmodel.LinearStepCost(a=1.0, b_prefill=0.1, c_decode=0.01, d_context=0.001)
    static = batching.StaticBatchCost(cost)
    firsts, dones = static.request_offsets([10, 20], [1, 3])
    # prefills one after another: 1 + 1.0, then 1 + 2.0
    assert firsts.tolist() == pytest.approx([2.0, 5.0])
    # request 0 (one token) is done after its own prefill; request 1 needs 2 decode steps
    # of both slots, contexts 30 and then 31 (only request 1 still grows)
    step1, step2 = 1 + 0.02 + 0.030, 1 + 0.02 + 0.031
    assert dones.tolist() == pytest.approx([2.0, 5.0 + step1 + step2])
    assert static.batch_timing([10, 20], [1, 3]) == pytest.approx((5.0, 5.0 + step1 + step2))


def test_request_offsets_of_padded_costs_sum_to_batch_timing():
    for cost in (costmodel.RooflineCost("llama-2-7b", "a100-80gb-sxm"),
                 costmodel.LinearStepCost(0.01, 1e-4, 1e-3, 1e-6)):
        prompts, outputs = [300, 1200, 50], [40, 7, 200]
        firsts, dones = batching.request_offsets(cost, prompts, outputs)
        first, busy = cost.batch_timing(prompts, outputs)
        assert np.allclose(firsts, first)
        assert dones.max() == pytest.approx(busy)
        assert np.all(np.diff(dones[np.argsort(outputs)]) >= 0)


def test_split_step_cost_charges_two_calls():
    cost = costmodel.LinearStepCost(a=1.0, b_prefill=0.1, c_decode=0.01, d_context=0.0)
    split = batching.SplitStepCost(cost)
    assert split.step_time(10, 0, 0) == pytest.approx(2.0)
    assert split.step_time(0, 5, 100) == pytest.approx(1.05)
    assert split.step_time(10, 5, 100) == pytest.approx(3.05)
    with pytest.raises(TypeError, match="step_time"):
        batching.SplitStepCost(object())


def test_slot_timelines_of_static_and_continuous_runs():
    wl = Workload.build(np.zeros(8), [100, 200, 50, 400, 80, 90, 10, 300],
                        [5, 30, 2, 12, 40, 3, 9, 1])
    cost = costmodel.LinearStepCost(0.01, 1e-4, 1e-3, 1e-6)
    static = sim.simulate(wl, cost=cost, batcher=batching.static_batcher(4))
    rows = batching.slot_timeline(static, "request", cost)
    assert sorted(r.id for r in rows) == list(range(8))
    for r in rows:
        assert r.start <= r.first_token <= r.done <= r.release
    assert {r.release for r in rows} == set(static.finish.tolist())
    assert max(r.done for r in rows if r.release == rows[0].release) == pytest.approx(
        rows[0].release)                                              # the longest ends the batch
    continuous = sim.simulate(wl, mode="iteration", cost=cost, max_batch=4)
    rows = batching.slot_timeline(continuous, "iteration")
    assert max(r.slot for r in rows) == 3
    for slot in range(4):  # a slot holds one request at a time
        spans = sorted((r.start, r.release) for r in rows if r.slot == slot)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    with pytest.raises(ValueError, match="mode"):
        batching.slot_timeline(continuous, "batch")


def test_the_figures_draw():
    plots.use_style()
    try:
        sizes = [1, 2, 4]
        plots.batch_cost_curves(sizes, {"a": [1.0, 1.1, 1.5]})
        plots.latency_vs_rate([1, 2], {"x": {"p50": [0.1, 0.2], "p99": [0.3, np.nan]}})
        plots.throughput_vs_delay([0, 0.01], {"r": {"per_busy_second": [1, 2], "p99": [0.1, 0.2]}})
        axes = plots.padding_bars([[3, 5, 2]], [[3, 2], [5, 4]])
        assert "33% padding" in axes[0].get_title()
        wl = Workload.build(np.zeros(4), [10, 20, 30, 40], [3, 1, 5, 2])
        cost = costmodel.LinearStepCost(0.01, 1e-4, 1e-3, 0)
        res = sim.simulate(wl, cost=cost, batcher=batching.static_batcher(2))
        axes = plots.slot_timeline({"static": batching.slot_timeline(res, "request", cost)})
        assert len(axes[0].patches) >= 8
        ax = plots.measured_vs_predicted({"a": [1.0, 2.0]}, {"a": [1.1, 1.9]})
        assert len(ax.get_lines()) == 2
    finally:
        plt.close("all")


def test_batching_explorer_reruns_quickly():
    import time

    from scalesim_course import widgets

    box = widgets.batching_explorer(n=2000)
    sliders = box.children[0].children[1:]
    assert [s.description for s in sliders] == ["max batch size", "max delay (ms)",
                                               "arrival rate (requests/s)"]
    start = time.perf_counter()
    sliders[1].value = 20.0
    assert time.perf_counter() - start < 1.0
    plt.close("all")
