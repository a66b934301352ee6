"""The event loop: a heap of (time, priority, id, callable, argument), popped in order.

The loop never grows: a new behaviour schedules a callable (`Simulation.push`). Same-time
order is named, as SimPy's URGENT/NORMAL:

* ARRIVAL: arrivals come first at any instant (they join a batch formed at that instant);
  they are read from the sorted workload, not pushed, so they cost no heap operations;
* NORMAL: completions, engine steps, batcher retries, replicas coming up, in the order
  they were scheduled;
* LATE: autoscaler ticks, which see everything else that happened at their instant.

The default path (request mode, one replica, FIFO, no batcher, no cost model, no router) runs
inline in the same loop: its events carry no callable (None) and no `Request` objects are made.

Progress guarantee. A run ends when every request is done, when the clock passes ``until``, or
when nothing can happen any more. It raises `NoProgressError` (naming the policy, the simulated
time and the requests stuck) instead of looping or ending silently when:

* a batcher declines (take 0 with a retry) ``MAX_IDLE`` times in a row with no request
  starting or finishing in between (a batcher that always answers retry);
* the run runs out of events with requests waiting and no request was ever started (a
  batcher that always answers 0);
* a scheduler admits nothing into an empty batch while requests wait, or a KV manager refuses
  a request on an empty replica or cannot make room for a lone sequence;
* an autoscaler keeps zero replicas for ``fleet.IDLE_TICKS`` ticks while requests are held.

Requests a policy leaves waiting on purpose (a static batch that never fills) are reported as
unfinished (``RunResult.unfinished``), not as an error.
"""
from __future__ import annotations

import gc
import heapq
import math

import numpy as np

from .._checks import NoProgressError, policy_name, rng_from
from ..workload import Request, Workload
from .config import STARTING, STOPPED, UP, ServingConfig
from .fleet import LATE, Fleet
from .replica import NORMAL, RequestReplica
from .result import RunResult, StepRecord

ARRIVAL = 0   # arrivals win ties (documentation: they are not in the heap)
MAX_IDLE = 10_000   # consecutive batcher declines (retries) without progress


class Simulation:
    """One run of the event loop. Use `simulate(...)`; this class keeps the state."""

    def __init__(self, workload: Workload, config: ServingConfig, seed=0):
        if not isinstance(workload, Workload):
            raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
        cfg = self.cfg = config.validate()
        self.wl = workload
        self.rng = rng_from(seed)
        if cfg.mode == "request":
            specs = cfg.replica_specs or ()
            uses_service = cfg.cost is None if not specs else any(
                s.cost is None and cfg.cost is None for s in specs)
            if uses_service:
                st = workload.service_time
                if np.isnan(st).any():
                    raise ValueError(
                        "cost=None uses each request's service_time, but this workload has none: "
                        "give service times (poisson_workload(..., service_rate=...)) or a cost "
                        "model")
                if not (np.isfinite(st).all() and (st > 0).all()):
                    bad = st[~(np.isfinite(st) & (st > 0))][0]
                    raise ValueError(f"workload service_time must be finite and > 0 seconds for "
                                     f"cost=None, got {float(bad)!r}")
        n = len(workload)
        self.start = [math.nan] * n
        self.first = [math.nan] * n
        self.finish = [math.nan] * n
        self.where = [-1] * n
        self.n_pre = [0] * n
        self.preemptions: list = []
        self.kv_log: list = []
        self.steps: list = []
        self.heap: list = []
        self.seq = 0
        self.now = 0.0
        self.track = cfg.autoscaler is not None
        self.arrived = 0
        self.arrived_since_tick = 0
        self.done_since_tick = 0
        self.n_done = 0
        self.n_started = 0
        self.n_batches = 0    # request mode: batches started
        self.idle = 0
        self.ended = False
        self.stopped_at = math.nan
        self.arrivals: list = []
        self.until = math.inf
        self.fleet = Fleet(self)
        spec0 = cfg.replica_specs[0] if cfg.replica_specs else None
        self.fast = (cfg.mode == "request" and cfg.replicas == 1 and cfg.autoscaler is None
                     and cfg.router is None and cfg.batcher is None and not cfg.record_steps
                     and (spec0 is None or spec0.cost is None) and cfg.cost is None)

    # --- scheduling
    def push(self, t: float, priority: int, fn, arg) -> None:
        """Schedule fn(arg) at time t (same-time order: priority, then scheduling order)."""
        self.seq += 1
        heapq.heappush(self.heap, (t, priority, self.seq, fn, arg))

    def record(self, rep, start: float, end: float, n: int, prefill: int, decode: int) -> None:
        self.steps.append(StepRecord(rep.id, start, end, n, prefill, decode))

    def no_progress(self, role: str, policy) -> None:
        """Count a policy decision that moved nothing; raise after MAX_IDLE in a row."""
        self.idle += 1
        if self.idle >= MAX_IDLE:
            raise NoProgressError(
                f"{role} {policy_name(policy)} made {MAX_IDLE} decisions in a row that started "
                f"no request (last at t={self.now:g} s) while {self.stuck()} requests wait")

    def stuck(self) -> int:
        """Requests that arrived and are not finished."""
        return self.arrived - self.n_done

    def inflight(self, rep, t: float) -> float:
        """Busy seconds of `rep` already counted in its busy_time but falling after time t."""
        extra = 0.0
        for when, _, _, fn, arg in self.heap:
            if when > t and (getattr(fn, "__self__", None) is rep and fn.__name__ in (
                    "done", "step_done") or fn is None and rep.id == 0):
                extra += when - t
        return extra

    # --- the loop
    def run(self, until: float = math.inf) -> RunResult:
        """Process events in time order until every request is done (or time `until`)."""
        if isinstance(until, (bool, np.bool_)) or not isinstance(
                until, (int, float, np.integer, np.floating)) or math.isnan(until):
            raise TypeError(f"until must be a number of seconds (or math.inf), got {until!r}")
        if until < 0:
            raise ValueError(f"until must be >= 0 seconds, got {until!r}")
        cfg, heap, wl = self.cfg, self.heap, self.wl
        arrivals = self.arrivals = wl.arrival.tolist()
        self.until = until
        n, i = len(arrivals), 0
        fleet = self.fleet
        if cfg.autoscaler is not None:
            self.push(cfg.autoscale_interval, LATE, fleet.tick, None)
        heappop, heappush = heapq.heappop, heapq.heappush
        inf = math.inf
        stale = fleet.stale
        fast = self.fast
        if fast:   # the inline FIFO path: request indices, one replica's free servers
            rep0 = fleet.replicas[0]
            service = wl.service_time.tolist() if rep0.speed == 1.0 else (
                wl.service_time / rep0.speed).tolist()
            free = rep0.servers
            waiting = []       # FIFO of request indices, read from `head`
            head = 0
            start, first, finish = self.start, self.first, self.finish
            seq = self.seq
            n_done = 0
        else:
            columns = (wl.prompt_tokens.tolist(), wl.output_tokens.tolist(),
                       wl.prompt_id.tolist(), wl.service_time.tolist())
        # the run does not pay for walking objects it did not create; objects a caller froze
        # stay frozen (only a freeze made here is undone)
        frozen = gc.isenabled() and gc.get_freeze_count() == 0
        if gc.isenabled():
            gc.freeze()
        now = 0.0
        natural = False
        try:
            while True:
                ta = arrivals[i] if i < n else inf
                th = heap[0][0] if heap else inf
                if ta <= th:   # ARRIVAL first on a tie
                    if ta > until or ta == inf:
                        natural = ta == inf
                        break
                    if fast:
                        now = ta
                        if free:
                            free -= 1
                            start[i] = ta
                            f = ta + service[i]
                            first[i] = f
                            seq += 1
                            heappush(heap, (f, NORMAL, seq, None, i))
                        else:
                            waiting.append(i)
                        i += 1
                        continue
                    self.now = ta
                    pt, ot, pid, st = columns
                    req = Request(i, ta, pt[i], ot[i], pid[i], st[i])
                    i += 1
                    self.arrived = i
                    self.arrived_since_tick += 1
                    fleet.route(req)
                else:
                    if th > until:
                        break
                    t, _, _, fn, arg = heappop(heap)
                    if fn is None:   # inline FIFO: request `arg` is done
                        now = t
                        finish[arg] = t
                        n_done += 1
                        if head < len(waiting):
                            j = waiting[head]
                            head += 1
                            start[j] = t
                            f = t + service[j]
                            first[j] = f
                            seq += 1
                            heappush(heap, (f, NORMAL, seq, None, j))
                        else:
                            free += 1
                        continue
                    self.now = t
                    fn(arg)
                    if self.ended:
                        break
                if stale:
                    fleet.record_loads()
        finally:
            if frozen:
                gc.unfreeze()
        if fast:
            self.now, self.seq, self.arrived, self.n_done = now, seq, i, n_done
            self.n_started = self.n_batches = started = i - (len(waiting) - head)
            rep0.busy_time = sum(service[:started])   # FIFO: starts in arrival order
            rep0.busy = rep0.servers - free
            self.where[:i] = [0] * i
        if (natural or self.ended) and self.stuck() and not self.n_started:
            raise NoProgressError(
                f"batcher {policy_name(cfg.batcher)} never sent a batch: the run ran out of "
                f"events at t={self.now:g} s with {self.stuck()} requests waiting")
        self.stopped_at = until if until < inf else self.now
        return self._result()

    def _result(self) -> RunResult:
        end = self.stopped_at
        replicas = self.fleet.replicas
        for r in replicas:   # work scheduled past the stop does not count as busy
            if r.state != STOPPED or r.stopped > end:
                r.busy_time -= self.inflight(r, end)
        up_time = np.array([(r.stopped if r.state == STOPPED else end) - r.started
                            if r.state != STARTING else 0.0 for r in replicas])
        provisioned = sum((r.stopped if r.state == STOPPED else end) - r.created
                          for r in replicas)
        busy = np.array([r.busy_time for r in replicas])
        cfg = self.cfg
        start = np.array(self.start)
        first = np.array(self.first)
        first[first > end] = math.nan   # a first token due after the stop has not come yet
        where = np.array(self.where)
        where[np.isnan(start)] = -1     # routed but never served: not "served by" anyone
        return RunResult(self.wl, start, first,
                         np.array(self.finish), where, busy, up_time,
                         cfg.servers if cfg.mode == "request" else 1, self.now,
                         self.steps, self.fleet.fleet, end,
                         {r.id: float(b) for r, b in zip(replicas, busy)},
                         np.array([r.servers for r in replicas]), self.preemptions,
                         np.array(self.n_pre), self.kv_log, float(provisioned),
                         self.fleet.fleet_log, self.fleet.scale_events,
                         sum(getattr(r, "begun", 0) for r in replicas) + self.n_batches)


def simulate(workload: Workload, config: ServingConfig | None = None, *, seed=0,
             until: float = math.inf, **settings) -> RunResult:
    """Run `workload` through a serving system and return what happened to every request.

    Args:
        workload: the requests (see `scalesim_course.workload`).
        config: a ServingConfig; keyword `settings` override its fields (or build one).
        seed: seeds the generator that policies receive; same seed, same result.
        until: stop the clock at this time (unfinished requests have nan timestamps; busy and
            up time count only up to it; see ``RunResult.stopped_at`` and ``unfinished``).

    Example:
        >>> wl = poisson_workload(rate=0.8, n=10_000, service_rate=1.0, seed=1)
        >>> res = simulate(wl, servers=1)            # an M/M/1 queue
    """
    from dataclasses import replace
    config = replace(config, **settings) if config is not None else ServingConfig(**settings)
    return Simulation(workload, config, seed).run(until)
