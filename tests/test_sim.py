"""The event loop's mechanics, policies and validation (scalesim_course.sim)."""
from pathlib import Path

import numpy as np
import pytest

from scalesim_course import batching, costmodel, sim
from scalesim_course.workload import Workload, load_azure_trace, poisson_workload

# the shared traces sit next to the checkout (or next to a parent folder of a worktree)
CONV = next((p / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
             for p in Path(__file__).resolve().parents
             if (p / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv").exists()),
            Path(__file__).resolve().parents[2] / "shared" / "traces" / "missing.csv")


def ConstantStep(d=1.0):
    """Every engine step takes `d` seconds, whatever it does: makes timings easy to predict."""
    return costmodel.LinearStepCost(d, 0.0, 0.0, 0.0)


def test_same_seed_same_run_with_a_random_router():
    def random_router(request, replicas, rng):
        return int(rng.integers(len(replicas)))

    wl = poisson_workload(3.0, 5000, service_rate=1.0, seed=4)
    runs = [sim.simulate(wl, replicas=4, router=random_router, seed=9) for _ in range(2)]
    assert np.array_equal(runs[0].finish, runs[1].finish)
    assert np.array_equal(runs[0].replica, runs[1].replica)
    other = sim.simulate(wl, replicas=4, router=random_router, seed=10)
    assert not np.array_equal(runs[0].replica, other.replica)


def test_request_mode_serves_everyone_once_in_fifo_order():
    wl = poisson_workload(0.9, 3000, service_rate=1.0, seed=1)
    res = sim.simulate(wl)
    assert res.completed.all()
    assert np.all(res.start >= wl.arrival) and np.all(res.finish >= res.start)
    assert np.all(np.diff(res.start) >= 0)          # one server, FIFO: starts in arrival order
    assert np.allclose(res.finish - res.start, wl.service_time)


def test_least_outstanding_spreads_load():
    wl = poisson_workload(3.0, 6000, service_rate=1.0, seed=2)
    res = sim.simulate(wl, replicas=4)
    share = np.bincount(res.replica, minlength=4) / len(wl)
    assert np.all(np.abs(share - 0.25) < 0.05)


def test_batcher_hook_forms_batches_by_size_and_delay():
    wl = Workload.build([0.0, 0.1, 0.2, 5.0, 5.05, 5.1, 5.15, 9.0])
    res = sim.simulate(wl, cost=costmodel.FixedBatchCost(0.5, 0.0),
                       batcher=batching.dynamic_batcher(3, 1.0), record_steps=True)
    sizes = [s[3] for s in res.steps]
    assert sizes == [3, 3, 1, 1]
    assert res.start.tolist() == pytest.approx([0.2, 0.2, 0.2, 5.1, 5.1, 5.1, 6.15, 10.0])
    assert res.finish.tolist() == pytest.approx([0.7, 0.7, 0.7, 5.6, 5.6, 5.6, 6.65, 10.5])


def test_continuous_batching_exact_timeline():
    wl = Workload.build([0.0, 0.0, 0.5], prompt_tokens=[10, 10, 10], output_tokens=[3, 1, 2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), record_steps=True)
    # step 1 [0,1): prefill r0, r1 -> first tokens at 1; r1 (1 token) leaves; r2 waits
    # step 2 [1,2): r0 decodes, r2 joins and prefills -> r2 first token at 2
    # step 3 [2,3): r0 and r2 decode -> both done at 3
    assert res.first_token.tolist() == [1.0, 1.0, 2.0]
    assert res.finish.tolist() == [3.0, 1.0, 3.0]
    assert res.start.tolist() == [0.0, 0.0, 1.0]
    assert res.tpot[0] == pytest.approx(1.0)
    assert [(s[3], s[4], s[5]) for s in res.steps] == [(2, 20, 0), (2, 10, 1), (2, 0, 2)]


def test_scheduler_sees_tokens_generated_so_far():
    wl = Workload.build([0.0, 2.5], prompt_tokens=[10, 10], output_tokens=[6, 2])
    seen = []

    def recording_fcfs(view):
        seen.append([(r.request.id, r.generated) for r in view.running])
        return sim.fcfs_admission(view)

    sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), scheduler=recording_fcfs)
    # r1 arrives at 2.5; the scheduler is asked at 3.0, after r0's prefill (1) and 2 decodes
    assert seen[-1] == [(0, 3)]


def test_chunked_prefill_splits_long_prompts():
    wl = Workload.build([0.0], prompt_tokens=[1000], output_tokens=[2])
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), prefill_chunk=256)
    assert res.ttft[0] == 4.0 and res.latency[0] == 5.0


def test_iteration_mode_respects_batch_and_kv_budgets():
    rng = np.random.default_rng(0)
    n = 400
    wl = Workload.build(np.sort(rng.uniform(0, 20, n)), rng.integers(1, 60, n),
                        rng.integers(1, 40, n))
    seen = []

    def watching_fcfs(view):
        ids = sim.fcfs_admission(view)
        seen.append((view.n_running + len(ids), view.kv_used, view.kv_capacity))
        return ids

    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(0.01), max_batch=8,
                       kv_capacity=300, scheduler=watching_fcfs, record_steps=True)
    assert res.completed.all()
    assert max(s[3] for s in res.steps) <= 8
    assert all(used <= cap for _, used, cap in seen)
    assert np.all(res.first_token >= res.start) and np.all(res.start >= wl.arrival)
    assert np.all(np.diff(res.start) >= 0)      # FCFS admission keeps arrival order
    # the step log accounts for every prompt token
    assert sum(s[4] for s in res.steps) == wl.prompt_tokens.sum()


def test_autoscaler_adds_replicas_after_startup_delay_and_drains():
    wl = poisson_workload(6.0, 6000, service_rate=1.0, seed=5)

    def want_by_queue(view):
        return 1 + view.outstanding // 2

    res = sim.simulate(wl, autoscaler=want_by_queue, autoscale_interval=5.0, startup_delay=20.0,
                       max_replicas=12)
    assert res.completed.all()
    first_up = next(t for t, up, starting in res.fleet if up > 1)
    assert first_up >= 25.0                      # first tick at 5 s, then 20 s to start
    assert max(up for _, up, _ in res.fleet) > 4
    assert res.fleet[-1][1] < max(up for _, up, _ in res.fleet)   # scaled back down
    assert len(res.up_time) == len(res.busy_time) and 0 < res.utilization <= 1


def test_azure_like_replay_with_roofline_free_cost():
    wl = poisson_workload(5.0, 2000, seed=1)
    wl = Workload.build(wl.arrival, np.full(2000, 100), np.full(2000, 20))
    res = sim.simulate(wl, mode="iteration", cost=ConstantStep(0.01), max_batch=64)
    assert res.completed.all()
    assert np.nanmax(res.tpot) == pytest.approx(0.01)


@pytest.mark.skipif(not CONV.exists(), reason="shared Azure traces not present")
def test_hour_of_the_conversation_trace_replays():
    wl = load_azure_trace(CONV)
    cost = costmodel.LinearStepCost(0.005, 2e-5, 1e-4, 1e-8)
    res = sim.simulate(wl, mode="iteration", cost=cost, kv_capacity=200_000)
    assert res.completed.all() and len(wl) == 19_366


@pytest.mark.parametrize("settings, exc, name", [
    (dict(replicas=0), ValueError, "replicas"),
    (dict(servers=0), ValueError, "servers"),
    (dict(mode="batch"), ValueError, "mode"),
    (dict(mode="iteration"), TypeError, "step_time"),
    (dict(cost=object()), TypeError, "batch_timing"),
    (dict(router="round robin", replicas=2), TypeError, "router"),
    (dict(max_batch=0), ValueError, "max_batch"),
    (dict(startup_delay=-1.0), ValueError, "startup_delay"),
    (dict(colour="red"), TypeError, "colour"),
])
def test_bad_settings_name_the_parameter(settings, exc, name):
    wl = poisson_workload(1.0, 10, service_rate=2.0)
    with pytest.raises(exc, match=name):
        sim.simulate(wl, **settings)


def test_bad_policies_and_inputs_fail_clearly():
    wl = poisson_workload(1.0, 10, service_rate=2.0)
    with pytest.raises(ValueError, match="router .*returned 5"):
        sim.simulate(wl, replicas=2, router=lambda r, reps, rng: 5)
    with pytest.raises(ValueError, match="service_time"):
        sim.simulate(poisson_workload(1.0, 10))
    with pytest.raises(TypeError, match="Workload"):
        sim.simulate([1, 2, 3])
    big = Workload.build([0.0], prompt_tokens=[500], output_tokens=[10])
    with pytest.raises(ValueError, match="kv_capacity"):
        sim.simulate(big, mode="iteration", cost=ConstantStep(), kv_capacity=100)
    with pytest.raises(RuntimeError, match="admit"):
        sim.simulate(big, mode="iteration", cost=ConstantStep(), scheduler=lambda v: [])
    with pytest.raises(ValueError, match="retry_at"):
        sim.simulate(wl, batcher=lambda q: sim.BatchDecision(0, q.now))


def test_decode_fast_forward_changes_nothing():
    # record_steps=True runs every step as an event; without it, decode-only stretches run
    # without events: every timestamp and busy second must be the same, stopped or not
    rng = np.random.default_rng(3)
    n = 300
    wl = Workload.build(np.sort(rng.uniform(0, 30, n)), rng.integers(1, 200, n),
                        rng.integers(1, 80, n))
    cost = costmodel.LinearStepCost(0.01, 1e-4, 1e-3, 1e-6)
    for extra in ({}, {"until": 17.3}, {"kv_capacity": 900, "max_batch": 6},
                  {"replicas": 2, "prefill_chunk": 64},
                  {"autoscaler": lambda v: 1 + v.outstanding // 10, "autoscale_interval": 2.5}):
        until = extra.pop("until", np.inf)
        a = sim.simulate(wl, mode="iteration", cost=cost, until=until, **extra)
        b = sim.simulate(wl, mode="iteration", cost=cost, until=until, record_steps=True,
                         **extra)
        for name in ("start", "first_token", "finish", "replica", "busy_time", "up_time"):
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
        assert a.n_steps == b.n_steps == len(b.steps)


def test_least_outstanding_breaks_ties_to_the_lowest_index():
    # three 10 s requests at 0 fill replicas 0, 1, 2 in order (each tie goes to the lowest
    # index); at 1 all three hold one request: the tie goes to replica 0; at 2 replica 0 has
    # two, 1 and 2 one each: replica 1. Highest-index tie-breaking would give [2, 1, 0, 2, 1].
    wl = Workload.build([0.0, 0.0, 0.0, 1.0, 2.0], service_time=[10.0] * 5)
    res = sim.simulate(wl, replicas=3)
    assert res.replica.tolist() == [0, 1, 2, 0, 1]
    # the same rule through the policy function itself (the engine inlines the default)
    res = sim.simulate(wl, replicas=3,
                       router=lambda r, reps, rng: sim.least_outstanding(r, reps, rng))
    assert res.replica.tolist() == [0, 1, 2, 0, 1]


def test_inline_fifo_path_matches_the_general_path():
    # the default path runs inline on request indices; a router (even one that always says 0)
    # sends the same run through the general path: both must agree exactly, stopped or not
    wl = poisson_workload(2.7, 4000, service_rate=1.0, seed=7)
    for extra in ({}, {"until": 311.5}, {"replica_specs": [sim.ReplicaSpec(speed=1.5,
                                                                           servers=2)]}):
        until = extra.pop("until", np.inf)
        a = sim.simulate(wl, servers=3, until=until, **extra)
        b = sim.simulate(wl, servers=3, until=until, router=lambda r, reps, rng: 0, **extra)
        for name in ("start", "first_token", "finish", "replica", "busy_time", "up_time"):
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
        assert (a.end_time, a.stopped_at, a.unfinished, a.n_steps) == (
            b.end_time, b.stopped_at, b.unfinished, b.n_steps)


def test_memory_per_simulated_request_stays_small():
    # a million-request run must fit in 500 MB: allow at most 400 bytes per request for the
    # run itself (timestamps, results; about 200 here), measured on 50,000 requests of both
    # paths
    import tracemalloc

    wl = poisson_workload(3.2, 50_000, service_rate=1.0, seed=0)
    for settings in ({"servers": 4}, {"replicas": 4}):
        tracemalloc.start()
        res = sim.simulate(wl, **settings)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert res.completed.all()
        assert peak / len(wl) < 400, (settings, peak / len(wl))


def test_fcfs_admission_admits_a_request_that_exactly_fills_the_kv_budget():
    # 16 KV tokens: two requests of 4 + 4 fill it exactly, so both run together (done at 4,
    # prefill + 3 decodes); one token less and the second waits for the first (done at 8)
    wl = Workload.build([0.0, 0.0], prompt_tokens=[4, 4], output_tokens=[4, 4])
    exact = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv_capacity=16)
    assert exact.finish.tolist() == [4.0, 4.0]
    short = sim.simulate(wl, mode="iteration", cost=ConstantStep(1.0), kv_capacity=15)
    assert short.finish.tolist() == [4.0, 8.0]
