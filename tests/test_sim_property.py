"""Seeded random runs: random valid and invalid policies, costs and workloads thrown at the
engine. Valid runs must terminate, serve every request at most once, keep timestamps ordered
and KV within budget; invalid policies must raise an error that names them."""
import math
import time

import numpy as np
import pytest

from scalesim_course import batching, costmodel, sim
from scalesim_course.sim import BatchDecision, NoProgressError
from scalesim_course.workload import Workload

CASES = 300


class OnDemand:
    """KV manager holding each sequence's context; preempts the newest sequences to fit."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.alloc = {}

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
        want = {s.id: max(self.alloc[s.id], s.context) for s in running}
        order, victims = list(running), []
        while sum(want.values()) > self.capacity and len(order) > 1:
            victims.append(order.pop().id)
            del want[victims[-1]]
        if sum(want.values()) > self.capacity:
            return [s.id for s in running]      # a lone sequence too big: the engine raises
        if not victims:
            self.alloc.update(want)
        return victims

    def free(self, seq_id):
        del self.alloc[seq_id]


# --- invalid policies: each name must appear in the error
def bad_float_batcher(queue):
    return 1.0


def bad_take_batcher(queue):
    return len(queue) + 1


def bad_retry_now_batcher(queue):
    return BatchDecision(0, queue.now)


def bad_forever_batcher(queue):
    return BatchDecision(0, queue.now + 0.5)


def bad_never_batcher(queue):
    return 0


def bad_index_router(request, replicas, rng):
    return len(replicas)


def bad_bool_router(request, replicas, rng):
    return True


def bad_float_autoscaler(view):
    return 2.0


def bad_ghost_scheduler(view):
    return [10_000]


def bad_empty_scheduler(view):
    return []


class BadNegativeCost:
    def batch_timing(self, prompt_tokens, output_tokens):
        return 0.0, -1.0

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        return -1.0


class BadNanCost:
    def batch_timing(self, prompt_tokens, output_tokens):
        return math.nan, 1.0

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        return math.nan


def random_router(request, replicas, rng):
    return int(rng.integers(len(replicas)))


def make_case(seed):
    """A random workload, config and expectation (None: valid, else the bad policy's name)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    arrival = np.sort(rng.uniform(0, 20, n))
    prompt = rng.integers(1, 40, n)
    output = rng.integers(1, 15, n)
    service = rng.uniform(0.1, 3.0, n)
    wl = Workload.build(arrival, prompt, output, service)
    mode = "request" if rng.random() < 0.5 else "iteration"
    settings = dict(mode=mode, replicas=int(rng.integers(1, 4)), record_steps=True)
    bad = None
    if rng.random() < 0.3:
        settings["autoscaler"] = (lambda v: 1 + v.outstanding // 3)
        settings["autoscale_interval"] = float(rng.uniform(0.5, 5))
        settings["startup_delay"] = float(rng.uniform(0, 3))
        settings["max_replicas"] = 4
        settings["replicas"] = min(settings["replicas"], 4)
    if rng.random() < 0.15:   # scale to zero and back
        settings.update(replicas=0, min_replicas=0, max_replicas=3,
                        autoscaler=(lambda v: min(3, (v.held + v.outstanding + 1) // 2)),
                        autoscale_interval=float(rng.uniform(0.5, 5)),
                        startup_delay=float(rng.uniform(0, 3)))
    if rng.random() < 0.3:
        settings["router"] = random_router
    if rng.random() < 0.2:
        settings["replica_specs"] = [sim.ReplicaSpec(speed=float(rng.uniform(0.5, 2)))
                                     for _ in range(int(rng.integers(1, 3)))]
    if rng.random() < 0.2:
        settings["view_staleness"] = float(rng.uniform(0.1, 3))
        settings["view_refresh"] = str(rng.choice(["periodic", "delayed"]))
    if mode == "request":
        settings["servers"] = int(rng.integers(1, 3))
        kind = int(rng.integers(0, 4))
        if kind == 1:
            settings["cost"] = costmodel.FixedBatchCost(float(rng.uniform(0.05, 1)),
                                                        float(rng.uniform(0, 0.1)))
        if kind >= 2:
            settings["batcher"] = batching.dynamic_batcher(int(rng.integers(1, 5)),
                                                           float(rng.uniform(0, 2)))
    else:
        settings["cost"] = costmodel.LinearStepCost(float(rng.uniform(0.01, 0.5)), 1e-3, 1e-3,
                                                    1e-5)
        settings["max_batch"] = int(rng.integers(1, 8))
        if rng.random() < 0.5:
            settings["prefill_chunk"] = int(rng.integers(1, 30))
        need = int((prompt + output).max())
        settings["kv_capacity"] = int(rng.integers(need, 3 * need + 2))
        if rng.random() < 0.5:
            settings["kv"] = OnDemand
    if rng.random() < 0.35:   # break one thing
        if mode == "request":
            options = [("batcher", bad_float_batcher), ("batcher", bad_take_batcher),
                       ("batcher", bad_retry_now_batcher), ("batcher", bad_forever_batcher),
                       ("batcher", bad_never_batcher), ("cost", BadNegativeCost()),
                       ("cost", BadNanCost())]
        else:
            options = [("scheduler", bad_ghost_scheduler), ("scheduler", bad_empty_scheduler),
                       ("cost", BadNegativeCost()), ("cost", BadNanCost())]
        if settings["replicas"] > 1 and "autoscaler" not in settings:
            options += [("router", bad_index_router), ("router", bad_bool_router)]
        if "autoscaler" in settings:
            options.append(("autoscaler", bad_float_autoscaler))
        field, policy = options[int(rng.integers(len(options)))]
        settings[field] = policy
        bad = getattr(policy, "__name__", type(policy).__name__)
    until = float(rng.uniform(1, 30)) if rng.random() < 0.2 else math.inf
    return wl, settings, until, bad


def check_valid_run(wl, settings, until, res):
    n = len(wl)
    done = res.completed
    started = ~np.isnan(res.start)
    a, s, f1, f = wl.arrival, res.start, res.first_token, res.finish
    # ordered timestamps (where they exist)
    assert np.all(s[started] >= a[started])
    has_first = ~np.isnan(f1)
    assert np.all(f1[has_first] >= s[has_first])
    assert np.all(f[done] >= f1[done]) and np.all(has_first[done]) and np.all(started[done])
    assert np.all(f[done] <= res.stopped_at)
    assert np.all(res.busy_time >= -1e-9)
    assert np.all(res.busy_time <= res.up_time * res.servers_by_replica + 1e-9)
    # served at most once
    if settings["mode"] == "request":
        assert sum(r.n_requests for r in res.steps) == int(started.sum())
        assert len({(r.replica, r.start) for r in res.steps}) == len(res.steps) or \
            settings.get("servers", 1) > 1
    else:
        assert all(stored <= used for _, _, used, stored in res.kv_log)
        cap = settings["kv_capacity"]
        assert all(used <= cap for _, _, used, _ in res.kv_log)
        assert all(0 <= p.generated < wl.output_tokens[p.request_id]
                   for p in res.preemptions)
        if math.isinf(until):   # every prompt prefilled once, plus at most each recompute
            recomputed = sum(wl.prompt_tokens[p.request_id] + p.generated
                             for p in res.preemptions)
            prefilled = sum(r.prefill_tokens for r in res.steps)
            assert wl.prompt_tokens.sum() <= prefilled <= wl.prompt_tokens.sum() + recomputed
            if not res.preemptions:
                assert prefilled == wl.prompt_tokens.sum()
        assert res.n_preemptions.sum() == len(res.preemptions)
    if math.isinf(until):
        assert done.all(), f"{res.unfinished} of {n} unfinished"
    else:
        assert res.stopped_at == until
        assert res.unfinished == int((~done).sum())


def test_random_runs():
    t0 = time.process_time()
    raised = broken = valid = 0
    for seed in range(CASES):
        wl, settings, until, bad = make_case(seed)
        if bad is None:
            valid += 1
            try:
                res = sim.simulate(wl, seed=seed, until=until, **settings)
            except Exception as err:   # pragma: no cover - shows the case
                raise AssertionError(f"seed {seed}: valid case raised {err!r}: {settings}")
            try:
                check_valid_run(wl, settings, until, res)
            except AssertionError as err:   # pragma: no cover
                raise AssertionError(f"seed {seed}: {err}: {settings}")
        else:
            broken += 1
            try:
                sim.simulate(wl, seed=seed, until=until, **settings)
            except (ValueError, TypeError, NoProgressError) as err:
                raised += 1
                assert bad in str(err), f"seed {seed}: error does not name {bad}: {err}"
            # else: the bad policy was never asked (every server free, or a stop before it)
    # not vacuous: most broken cases are caught, and valid cases of every kind ran
    assert broken >= 40 and raised >= 0.8 * broken and valid >= 100
    assert time.process_time() - t0 < 30   # CPU seconds (about 3 here)
