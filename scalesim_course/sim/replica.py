"""The two kinds of replica, on one small base: request-level service and iteration-level steps.

A replica owns its queue and in-service work and reacts to the engine's events; the engine
(`engine.Simulation`) owns the clock, the heap and the per-request timestamps.
"""
from __future__ import annotations

import math
from collections import deque
from heapq import heappush

import numpy as np

from .._checks import NoProgressError, bad_output, check_duration, is_int, policy_name
from ..workload import Request
from .config import DRAINING, STOPPED, UP
from .kv import ExactReservation, KVSeq, Preempted, exact_reservation
from .policies import fcfs_admission, fcfs_slots
from .views import QueueView, ReplicaView, StepView

_INF = math.inf
NORMAL = 1   # same-time priority of replica events (see engine: ARRIVAL < NORMAL < LATE)


class Replica:
    """What every replica has: an id, a state, a spec (speed, servers, cost), a FIFO queue of
    waiting requests, busy-time accounting and the views policies get of it."""

    def __init__(self, sim, rid: int, state: str, now: float):
        cfg = sim.cfg
        spec = cfg.replica_specs[rid % len(cfg.replica_specs)] if cfg.replica_specs else None
        self.sim = sim
        self.id = rid
        self.index = rid if state == UP else -1   # position among the replicas that are up
        self.state = state
        self.speed = spec.speed if spec else 1.0
        self.cost = spec.cost if spec and spec.cost is not None else cfg.cost
        self.servers = 1
        self.max_batch = spec.max_batch if spec and spec.max_batch is not None else cfg.max_batch
        cap = spec.kv_capacity if spec and spec.kv_capacity is not None else cfg.kv_capacity
        self.kv_capacity = cap if cap is not None else math.inf
        self.spec = spec
        self.busy = 0
        self.queue: deque = deque()
        self.queued_tokens = 0
        self.running: dict = {}
        self.busy_time = 0.0
        self.created = now
        self.started = now
        self.stopped = math.nan
        # autoscaler bookkeeping
        self.in_system = 0            # requests routed here and not finished
        self.area = 0.0               # integral of in_system over time
        self.area_at = now
        self.area_mark = 0.0
        self.busy_mark = 0.0
        self.hist: deque = deque([(now, (0, 0, 0, 0))])   # stale views: (time, load values)
        self.view = ReplicaView(self)

    def kv_used(self) -> int:
        return 0

    def load(self) -> tuple:
        """The load fields a (stale) router view shows."""
        return (len(self.queue), self.busy, self.kv_used(), self.queued_tokens)

    def idle(self) -> bool:
        return self.busy == 0 and not self.queue and not self.running

    def count(self, change: int) -> None:
        """Autoscaler bookkeeping: integrate the outstanding requests over time."""
        now = self.sim.now
        self.area += self.in_system * (now - self.area_at)
        self.area_at = now
        self.in_system += change

    def finished(self, n: int) -> None:
        sim = self.sim
        sim.n_done += n
        sim.done_since_tick += n
        sim.idle = 0
        if sim.track:
            self.count(-n)

    def arrive(self, req: Request) -> None:
        raise NotImplementedError


class RequestReplica(Replica):
    """Request-level service: `servers` servers share one FIFO queue; a free server takes a batch
    (one request unless a batcher says otherwise) and is busy for its service time."""

    def __init__(self, sim, rid: int, state: str, now: float):
        super().__init__(sim, rid, state, now)
        spec = self.spec
        self.servers = spec.servers if spec and spec.servers is not None else sim.cfg.servers
        self.batcher = sim.cfg.batcher
        self.record = sim.cfg.record_steps
        self._done = self.done
        self.qview = QueueView(self)

    def arrive(self, req: Request) -> None:
        if self.busy < self.servers and not self.queue and self.batcher is None:
            self.serve((req,))  # the common path: an idle server takes it at once
            return
        self.queue.append(req)
        self.queued_tokens += req.prompt_tokens + req.output_tokens
        self.dispatch()

    def dispatch(self) -> bool:
        """Start batches while a server is free and the batcher sends one; True if one started."""
        batcher = self.batcher
        started = False
        while self.busy < self.servers and self.queue:
            if batcher is None:
                take = 1
            else:
                self.qview.now = now = self.sim.now
                take, retry = self._decision(batcher, batcher(self.qview), now)
                if take == 0:
                    if retry is not None:
                        self.sim.push(retry, NORMAL, self.retry, None)
                    return started
            q = self.queue
            batch = tuple(q.popleft() for _ in range(take)) if take > 1 else (q.popleft(),)
            self.queued_tokens -= sum(r.prompt_tokens + r.output_tokens for r in batch)
            self.serve(batch)
            started = True
        return started

    def _decision(self, batcher, decision, now) -> tuple:
        """Check a batcher's answer: (take, retry_at or None)."""
        if is_int(decision):
            take, retry = decision, None
        elif isinstance(decision, tuple) and len(decision) == 2:
            take, retry = decision
        else:
            bad_output("batcher", batcher, decision, "it must be an int (requests to take) or "
                       "BatchDecision(take, retry_at)", TypeError)
        if not is_int(take):
            bad_output("batcher", batcher, decision, "take must be an int", TypeError)
        if not 0 <= take <= len(self.queue):
            bad_output("batcher", batcher, decision, f"take must be in 0..{len(self.queue)} "
                       "(the queue length)")
        if retry is not None:
            if take != 0:
                bad_output("batcher", batcher, decision, "retry_at goes only with take=0")
            if isinstance(retry, (bool, np.bool_)) or not isinstance(retry, (int, float,
                                                                              np.number)):
                bad_output("batcher", batcher, decision, "retry_at must be a time in seconds",
                           TypeError)
            if not (math.isfinite(retry) and retry > now):
                bad_output("batcher", batcher, decision, f"retry_at must be finite and after "
                           f"now={now!r}")
        return int(take), retry

    def serve(self, batch: tuple) -> None:
        sim = self.sim
        now, cost = sim.now, self.cost
        if cost is not None:
            timing = cost.batch_timing([r.prompt_tokens for r in batch],
                                       [r.output_tokens for r in batch])
            if not (isinstance(timing, (tuple, list)) and len(timing) == 2):
                bad_output("cost", cost, timing, "it must be a pair "
                           "(first_token_offset, busy_seconds)", TypeError, "batch_timing")
            first, busy = timing
            if not (type(first) is float and type(busy) is float and 0.0 <= first <= busy
                    and 0.0 < busy < math.inf):
                self._check_timing(cost, timing)
        elif len(batch) == 1:
            first = busy = batch[0].service_time
        else:  # sampled service: a batch takes as long as its slowest request
            first = busy = max(r.service_time for r in batch)
        if self.speed != 1.0:
            first, busy = first / self.speed, busy / self.speed
        self.busy += 1
        self.busy_time += busy
        start, first_token = sim.start, sim.first
        for r in batch:
            start[r.id] = now
            first_token[r.id] = now + first
        sim.n_started += len(batch)
        sim.n_batches += 1
        sim.idle = 0
        if self.record:
            sim.record(self, now, now + busy, len(batch),
                       len(batch) * max(r.prompt_tokens for r in batch), len(batch))
        sim.seq += 1
        heappush(sim.heap, (now + busy, NORMAL, sim.seq, self._done, batch))

    @staticmethod
    def _check_timing(cost, timing) -> None:
        """Raise the one-style error for a bad (first_token_offset, busy_seconds) pair."""
        for value in timing:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float,
                                                                              np.number)):
                bad_output("cost", cost, timing, "both must be numbers of seconds", TypeError,
                           "batch_timing")
        first, busy = timing
        if not (math.isfinite(first) and math.isfinite(busy) and busy > 0 and first >= 0):
            bad_output("cost", cost, timing, "busy seconds must be finite and > 0, the first "
                       "token offset finite and >= 0", ValueError, "batch_timing")
        if first > busy:
            bad_output("cost", cost, timing, "the first token cannot come after the batch ends",
                       ValueError, "batch_timing")

    def done(self, batch: tuple) -> None:
        self.busy -= 1
        now, finish = self.sim.now, self.sim.finish
        for r in batch:
            finish[r.id] = now
        self.finished(len(batch))
        if self.queue:
            self.dispatch()
        elif self.state == DRAINING and self.busy == 0:
            self.sim.fleet.stop(self)

    def retry(self, _) -> None:
        if self.queue and not self.dispatch():
            self.sim.no_progress("batcher", self.batcher)


class _Seq:
    """A running sequence on an iteration-level replica (engine-internal, mutable)."""

    __slots__ = ("req", "prefill_left", "prefill_total", "generated", "decoding",
                 "decode_from", "finish_step", "admitted_at")

    def __init__(self, req: Request, generated: int = 0, now: float = 0.0):
        self.req = req
        self.prefill_total = self.prefill_left = req.prompt_tokens + generated
        self.generated = generated  # tokens produced before decoding (re)started
        self.decoding = False
        self.decode_from = 0      # the replica's step count when this sequence began decoding
        self.finish_step = 0
        self.admitted_at = now

    def tokens(self, steps: int) -> int:
        """Output tokens produced so far, given the replica's step count."""
        return self.generated + steps - self.decode_from if self.decoding else self.generated


class IterationReplica(Replica):
    """Iteration-level scheduling (Orca, vLLM): engine steps back to back; before each step the
    scheduler admits waiting requests (the KV manager allocating their memory) and the KV
    manager makes room for the step, naming sequences to preempt; a step prefills admitted
    prompts (in chunks if ``prefill_chunk``) and decodes one token for every running sequence.
    A request leaves at the end of the step that produces its last token."""

    def __init__(self, sim, rid: int, state: str, now: float):
        super().__init__(sim, rid, state, now)
        cfg = sim.cfg
        factory = cfg.kv or exact_reservation
        kv = factory(self.kv_capacity)
        for method in ("admit", "grow", "free", "used", "stored"):
            if not callable(getattr(kv, method, None)):
                raise TypeError(f"kv factory {policy_name(factory)} returned {kv!r}, which has "
                                f"no {method}() method (see scalesim_course.sim.kv.KVManager)")
        if not hasattr(kv, "capacity"):
            raise TypeError(f"KV manager {kv!r} has no capacity attribute")
        self.kv = kv
        self.kv_capacity = kv.capacity
        self.grows = type(kv) is not ExactReservation   # the default never grows or preempts
        self.scheduler = cfg.scheduler or (fcfs_slots if self.grows else fcfs_admission)
        self.skip_when_blocked = cfg.scheduler is None   # default admission depends on state only
        self.blocked = False         # the head did not fit and nothing was freed since
        self.refused = False         # the KV manager refused a request the scheduler proposed
        self.resume: dict = {}       # preempted request id -> tokens generated before
        self.prefilling: deque = deque()
        self.decoding = 0
        self.context = 0
        self.steps = 0               # steps completed
        self.begun = 0               # steps started
        self.finish_at: dict = {}
        self.stepping = False
        self.step_work: list = []
        self.chunk = cfg.prefill_chunk or math.inf
        self.record = cfg.record_steps
        self.fast_forward = not cfg.record_steps
        self.step_time = None if self.cost is None else self.cost.step_time
        self._step_done = self.step_done
        self.sview = StepView(self)

    def kv_used(self) -> int:
        return self.kv.used()

    def arrive(self, req: Request) -> None:
        if not self.grows and req.prompt_tokens + req.output_tokens > self.kv_capacity:
            raise ValueError(f"request {req.id} needs {req.prompt_tokens + req.output_tokens} KV "
                             f"tokens but kv_capacity is {self.kv_capacity}: it can never run")
        self.queue.append(req)
        self.queued_tokens += req.prompt_tokens + req.output_tokens
        self.blocked = False
        if not self.stepping:
            # start at this instant, but after any other arrival at the same instant
            self.stepping = True
            self.sim.push(self.sim.now, NORMAL, self.start_step, None)

    def admit(self) -> None:
        sim = self.sim
        self.sview.now = now = sim.now
        scheduler = self.scheduler
        ids = scheduler(self.sview)
        try:
            ids = list(ids) if ids is not None else []
        except TypeError:
            bad_output("scheduler", scheduler, ids, "it must return a list of request ids",
                       TypeError)
        q = self.queue
        if ids:
            if not all(is_int(x) for x in ids):
                bad_output("scheduler", scheduler, ids, "request ids must be ints", TypeError)
            chosen = set(ids)
            if len(chosen) != len(ids):
                bad_output("scheduler", scheduler, ids, "it admitted a request twice")
            if len(self.running) + len(ids) > self.max_batch:
                bad_output("scheduler", scheduler, ids, f"only {self.max_batch - len(self.running)}"
                           " batch slots are free (max_batch)")
            prefix = len(ids) <= len(q) and all(q[j].id == x for j, x in enumerate(ids))
            if prefix:
                picked = [q[j] for j in range(len(ids))]  # the usual case: a prefix of the queue
            else:
                by_id = {r.id: r for r in q if r.id in chosen}
                if len(by_id) != len(ids):
                    bad_output("scheduler", scheduler, ids, "ids "
                               f"{sorted(chosen - set(by_id))} are not waiting here")
                picked = [by_id[x] for x in ids]
            accepted = self._allocate(picked, scheduler, now)
            self.refused = len(accepted) < len(picked)
        else:
            accepted, prefix = [], True
            self.refused = False
        if self.skip_when_blocked and len(accepted) < min(len(q), self.max_batch
                                                          - len(self.running)):
            self.blocked = True   # the head does not fit: retry only after a free or arrival
        if not accepted:
            return
        if prefix:
            for _ in accepted:
                q.popleft()
        else:
            gone = {r.id for r in accepted}
            self.queue = deque(r for r in q if r.id not in gone)
        self.queued_tokens -= sum(r.prompt_tokens + r.output_tokens for r in accepted)
        start, resume, running, prefilling = sim.start, self.resume, self.running, \
            self.prefilling
        for r in accepted:
            if resume and r.id in resume:
                s = _Seq(r, resume.pop(r.id), now)
            else:
                s = _Seq(r, 0, now)
                start[r.id] = now
                sim.n_started += 1
            running[r.id] = s
            prefilling.append(s)
        sim.idle = 0

    def _allocate(self, picked: list, scheduler, now: float) -> list:
        """Ask the KV manager to admit each proposed request in order; the accepted prefix."""
        kv = self.kv
        if not self.grows:
            need = sum(r.prompt_tokens + r.output_tokens for r in picked)
            if kv.used() + need > self.kv_capacity:
                bad_output("scheduler", scheduler, [r.id for r in picked], f"they reserve {need}"
                           f" KV tokens but only {self.kv_capacity - kv.used()} are free "
                           "(kv_capacity)")
        resume = self.resume
        accepted = []
        for r in picked:
            g = resume.get(r.id, 0) if resume else 0
            ok = kv.admit(KVSeq(r.id, r.prompt_tokens, r.output_tokens, g, r.prompt_tokens + g,
                                r.prompt_id, now))
            if not isinstance(ok, (bool, np.bool_)):
                bad_output("KV manager", kv, ok, "it must be True or False", TypeError, "admit")
            if not ok:
                break
            accepted.append(r)
        return accepted

    def plan(self) -> tuple:
        """The prefill work of the coming step: (prefill tokens, [(seq, tokens)])."""
        budget, prefill_tokens, work = self.chunk, 0, []
        for s in self.prefilling:
            if budget <= 0:
                break
            take = min(s.prefill_left, budget)
            budget -= take
            prefill_tokens += take
            work.append((s, take))
        return prefill_tokens, work

    def start_step(self, _=None) -> None:
        """Admit (unless the head is known not to fit), make KV room, run one engine step."""
        running = self.running
        if self.queue and not self.blocked and len(running) < self.max_batch:
            self.admit()
        if not running:
            self._stop_stepping()
            return
        if self.prefilling:
            prefill_tokens, work = self.plan()
        else:
            prefill_tokens, work = 0, ()
        if self.grows:
            prefill_tokens, work = self.grow(work, prefill_tokens)
            self.fast_forward = False   # the KV manager is asked before every step
        decode = self.decoding
        dt = self.step_time(prefill_tokens, decode, self.context)
        if not (type(dt) is float and 0.0 < dt < _INF):
            check_duration("cost", self.cost, dt, method="step_time")
        if self.speed != 1.0:
            dt = dt / self.speed
        sim = self.sim
        now = sim.now
        self.stepping = True
        self.step_work = work
        self.busy = len(running)
        self.busy_time += dt
        self.begun += 1
        if not work and self.fast_forward and (not self.queue or self.blocked
                                               or len(running) >= self.max_batch):
            now, dt = self._fast_forward(now, dt)
        if self.record:
            sim.record(self, now, now + dt, len(running), prefill_tokens, decode)
            sim.kv_log.append((now, self.id, self.kv.used(), self.kv.stored()))
        sim.seq += 1
        heappush(sim.heap, (now + dt, NORMAL, sim.seq, self._step_done, None))

    def _fast_forward(self, now: float, dt: float) -> tuple:
        """Run decode-only steps that nothing can interrupt without scheduling their events.

        While no sequence finishes, no request arrives, no other event is due and nobody may
        be admitted, every step is step_time(0, d, context) and only the context grows: the
        same arithmetic as the event-by-event path, so the result is identical. Returns the
        (start, duration) of the first step that ends at or after something else happens.
        """
        sim = self.sim
        arrivals, heap = sim.arrivals, sim.heap
        horizon = arrivals[sim.arrived] if sim.arrived < len(arrivals) else _INF
        if heap and heap[0][0] < horizon:
            horizon = heap[0][0]
        stop = min(self.finish_at) if self.finish_at else _INF   # the next step with a finish
        until = sim.until
        end = now + dt
        if not (end < horizon and end <= until and self.steps + 1 < stop):
            return now, dt
        step_time, d, speed = self.step_time, self.decoding, self.speed
        steps, context, busy, begun = self.steps, self.context, self.busy_time, self.begun
        while end < horizon and end <= until and steps + 1 < stop:
            steps += 1          # the step [now, end) is done: every sequence decoded a token
            begun += 1
            context += d
            now = end
            dt = step_time(0, d, context)
            if not (type(dt) is float and 0.0 < dt < _INF):
                check_duration("cost", self.cost, dt, method="step_time")
            if speed != 1.0:
                dt = dt / speed
            busy += dt
            end = now + dt
        self.steps, self.context, self.busy_time, self.begun = steps, context, busy, begun
        sim.now = now
        return now, dt

    def _stop_stepping(self) -> None:
        """Nothing runs: go idle (or stop, if draining); requests left waiting are stuck."""
        sim = self.sim
        self.stepping = False
        self.busy = 0
        if self.queue:
            r = self.queue[0]
            if self.refused:
                raise NoProgressError(
                    f"replica {self.id}: KV manager {policy_name(self.kv)} refused request "
                    f"{r.id} ({r.prompt_tokens} prompt + {r.output_tokens} output tokens) on an "
                    f"empty replica with capacity {self.kv_capacity} at t={sim.now:g} s: it "
                    f"can never run ({len(self.queue)} requests stuck)")
            raise NoProgressError(
                f"scheduler {policy_name(self.scheduler)} admitted no request into an empty "
                f"batch at t={sim.now:g} s while {len(self.queue)} wait on replica {self.id}: "
                "it must admit at least one")
        if self.state == DRAINING:
            sim.fleet.stop(self)

    def grow(self, work: list, prefill_tokens: int) -> tuple:
        """Ask the KV manager for room for the coming step; preempt the victims it names."""
        kv = self.kv
        while True:
            taking = {id(s): take for s, take in work}
            steps = self.steps
            seqs = []
            for s in self.running.values():
                r = s.req
                g = s.tokens(steps)
                if s.decoding:
                    context = r.prompt_tokens + g
                else:
                    context = s.prefill_total - s.prefill_left + taking.get(id(s), 0)
                seqs.append(KVSeq(r.id, r.prompt_tokens, r.output_tokens, g, context,
                                  r.prompt_id, s.admitted_at))
            victims = kv.grow(seqs)
            if victims is None or len(victims) == 0:
                break
            victims = list(victims)
            if len(set(victims)) != len(victims) or any(
                    not is_int(v) or v not in self.running for v in victims):
                bad_output("KV manager", kv, victims, "it must name running sequence ids, "
                           f"each at most once (running: {sorted(self.running)})", ValueError,
                           "grow")
            if len(victims) == len(self.running):
                big = max(seqs, key=lambda q: q.context)
                raise NoProgressError(
                    f"replica {self.id}: KV manager {policy_name(kv)} cannot make room at t="
                    f"{self.sim.now:g} s even after preempting every other sequence: request "
                    f"{big.id} needs {big.context} tokens of KV, capacity {self.kv_capacity}")
            for v in sorted(victims, reverse=True):
                self.preempt(self.running[v])
            prefill_tokens, work = self.plan()
        if kv.used() > self.kv_capacity:
            bad_output("KV manager", kv, kv.used(), "it uses more than its capacity "
                       f"{self.kv_capacity}", ValueError, "used")
        return prefill_tokens, work

    def preempt(self, s: _Seq) -> None:
        """Free a running sequence's KV and put it back at the head of the waiting queue."""
        r = s.req
        g = s.tokens(self.steps)
        if s.decoding:
            self.decoding -= 1
            self.context -= r.prompt_tokens + g
            due = self.finish_at[s.finish_step]
            due.remove(s)
            if not due:
                del self.finish_at[s.finish_step]
        else:
            self.prefilling.remove(s)
        del self.running[r.id]
        self.kv.free(r.id)
        self.blocked = False
        self.resume[r.id] = g
        self.queue.appendleft(r)
        self.queued_tokens += r.prompt_tokens + r.output_tokens
        sim = self.sim
        sim.n_pre[r.id] += 1
        sim.preemptions.append(Preempted(r.id, sim.now, self.id, g, "kv"))

    def step_done(self, _=None) -> None:
        # every sequence that was decoding produced one more token
        self.context += self.decoding
        steps = self.steps = self.steps + 1
        finished = self.finish_at.pop(steps, None)
        # prefills that completed produce a token (the first, or the next after a recompute)
        if self.step_work:
            now = self.sim.now
            for s, take in self.step_work:
                s.prefill_left -= take
                if s.prefill_left == 0:
                    self.prefilling.popleft()  # prefill runs in FIFO order: it is the head
                    r = s.req
                    if s.generated == 0:
                        self.sim.first[r.id] = now
                    g = s.generated + 1
                    s.generated = g
                    s.decode_from = steps
                    if g >= r.output_tokens:
                        if finished is None:
                            finished = []
                        finished.append(s)
                    else:
                        s.decoding = True
                        self.decoding += 1
                        self.context += r.prompt_tokens + g
                        s.finish_step = steps + r.output_tokens - g
                        self.finish_at.setdefault(s.finish_step, []).append(s)
        if finished:
            self.finish_seqs(finished)
        self.start_step()

    def finish_seqs(self, finished: list) -> None:
        finish, now, kv, running = self.sim.finish, self.sim.now, self.kv, self.running
        for s in finished:
            r = s.req
            finish[r.id] = now
            kv.free(r.id)
            del running[r.id]
            if s.decoding:
                self.decoding -= 1
                self.context -= r.prompt_tokens + r.output_tokens
        self.blocked = False
        self.finished(len(finished))
