"""The discrete-event simulator of a serving system: one event loop, policies plugged in.

A run takes a `Workload` and a `ServingConfig`. Each replica serves requests in one of two ways:

* ``mode="request"``: request-level service. A replica has ``servers`` identical servers and one
  FIFO queue; a free server takes a batch (by default one request) off the head of the queue and
  is busy for the batch's service time. With one request per batch and the workload's pre-drawn
  service times this is exactly an M/M/c (or M/D/c, G/G/c) queue.
* ``mode="iteration"``: iteration-level scheduling, as Orca and vLLM do. A replica runs engine
  steps back to back; before each step a scheduler admits waiting requests into the running
  batch (within a sequence and KV-token budget); a step prefills admitted prompts (in chunks if
  ``prefill_chunk`` is set) and decodes one token for every running sequence. A request leaves
  the batch at the end of the step that produces its last token.

Policies are plain callables that see read-only views and return a decision:

* router(request, replicas, rng) -> index into ``replicas`` (the replicas that are up)
* batcher(view: QueueView) -> int or BatchDecision            (request mode)
* scheduler(view: StepView) -> iterable of request ids to admit  (iteration mode)
* autoscaler(view: ClusterView) -> desired number of replicas
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from ._checks import (check_callable, check_int, check_non_negative, check_positive, rng_from)
from .workload import Request, Workload

# event kinds (small ints compare fast in heap tuples)
_DONE, _STEP, _RETRY, _READY, _TICK, _KICK = 0, 1, 2, 3, 4, 5
# replica states
STARTING, UP, DRAINING, STOPPED = "starting", "up", "draining", "stopped"


class BatchDecision(NamedTuple):
    """A batcher's answer: take `take` requests now; if 0, ask again at `retry_at` (or later)."""

    take: int
    retry_at: Optional[float] = None


@dataclass
class ServingConfig:
    """How the served system is built; every field has a default that runs.

    Args:
        mode: "request" (request-level service) or "iteration" (iteration-level batching).
        replicas: replicas up at time 0.
        servers: request mode: servers per replica sharing its queue (c in M/M/c).
        cost: request mode: an object with ``batch_timing(prompt_tokens, output_tokens) ->
            (first_token_offset, busy_seconds)``, or None to use each request's own
            ``service_time``; iteration mode: an object with ``step_time(prefill_tokens,
            decode_seqs, context_tokens) -> seconds`` (required).
        router: picks a replica for each arrival; None: least outstanding requests.
        batcher: request mode: forms batches from the queue; None: one request at a time.
        scheduler: iteration mode: admits waiting requests; None: `fcfs_admission`.
        max_batch: iteration mode: most sequences running at once on a replica.
        kv_capacity: iteration mode: KV-cache budget in tokens per replica; a request reserves
            prompt + output tokens while it runs. None: unlimited.
        prefill_chunk: iteration mode: most prompt tokens prefilled in one step (chunked
            prefill); None: a whole prompt in one step.
        autoscaler: called every ``autoscale_interval`` seconds; None: a fixed fleet.
        startup_delay: seconds from a scale-up decision until the new replica serves.
        min_replicas, max_replicas: bounds applied to the autoscaler's answer.
        record_steps: keep a log of every batch/step (for timelines); costs memory.
    """

    mode: str = "request"
    replicas: int = 1
    servers: int = 1
    cost: object = None
    router: Optional[Callable] = None
    batcher: Optional[Callable] = None
    scheduler: Optional[Callable] = None
    max_batch: int = 256
    kv_capacity: Optional[int] = None
    prefill_chunk: Optional[int] = None
    autoscaler: Optional[Callable] = None
    autoscale_interval: float = 10.0
    startup_delay: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 1_000
    record_steps: bool = False

    def validate(self) -> "ServingConfig":
        """Check every field, raising ValueError/TypeError that names the bad one."""
        if self.mode not in ("request", "iteration"):
            raise ValueError(f"mode must be 'request' or 'iteration', got {self.mode!r}")
        check_int("replicas", self.replicas, minimum=1)
        check_int("servers", self.servers, minimum=1)
        check_int("max_batch", self.max_batch, minimum=1)
        check_int("min_replicas", self.min_replicas, minimum=1)
        check_int("max_replicas", self.max_replicas, minimum=self.min_replicas)
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas={self.replicas} must lie within min_replicas="
                             f"{self.min_replicas} and max_replicas={self.max_replicas}")
        if self.kv_capacity is not None:
            check_int("kv_capacity", self.kv_capacity, minimum=1)
        if self.prefill_chunk is not None:
            check_int("prefill_chunk", self.prefill_chunk, minimum=1)
        check_positive("autoscale_interval", self.autoscale_interval)
        check_non_negative("startup_delay", self.startup_delay)
        for name in ("router", "batcher", "scheduler", "autoscaler"):
            if getattr(self, name) is not None:
                check_callable(name, getattr(self, name))
        if self.mode == "iteration" and not hasattr(self.cost, "step_time"):
            raise TypeError("mode='iteration' needs cost with a step_time(prefill_tokens, "
                            f"decode_seqs, context_tokens) method, got {self.cost!r}")
        if self.mode == "request" and self.cost is not None and not hasattr(self.cost,
                                                                             "batch_timing"):
            raise TypeError("mode='request' needs cost=None or an object with batch_timing("
                            f"prompt_tokens, output_tokens), got {self.cost!r}")
        return self


# ----------------------------------------------------------------------------- read-only views
class ReplicaView:
    """What a policy may know about one replica (read-only, live)."""

    __slots__ = ("_r",)

    def __init__(self, replica: "_Replica"):
        self._r = replica

    id = property(lambda self: self._r.id, doc="replica number, unique within a run")
    state = property(lambda self: self._r.state, doc="starting, up, draining or stopped")
    queue_len = property(lambda self: len(self._r.queue), doc="requests waiting")
    busy = property(lambda self: self._r.busy, doc="requests being served (or running)")
    outstanding = property(lambda self: len(self._r.queue) + self._r.busy,
                           doc="requests waiting or in service")
    servers = property(lambda self: self._r.servers, doc="request mode: parallel servers")
    kv_used = property(lambda self: self._r.kv_used, doc="iteration mode: KV tokens reserved")
    kv_capacity = property(lambda self: self._r.kv_capacity, doc="KV token budget (inf if none)")
    queued_tokens = property(lambda self: self._r.queued_tokens,
                             doc="prompt + output tokens of waiting requests")

    def __repr__(self):
        return (f"ReplicaView(id={self.id}, state={self.state!r}, queue_len={self.queue_len}, "
                f"busy={self.busy})")


class QueueView:
    """A batcher's view of one replica's queue at time `now` (read-only, live)."""

    __slots__ = ("_r", "now")

    def __init__(self, replica: "_Replica"):
        self._r = replica
        self.now = 0.0

    def __len__(self):
        return len(self._r.queue)

    def __getitem__(self, i) -> Request:
        return self._r.queue[i]

    def __iter__(self):
        return iter(self._r.queue)

    free_servers = property(lambda self: self._r.servers - self._r.busy,
                            doc="servers idle right now (at least 1 when asked)")


class Running(NamedTuple):
    """A sequence in a replica's running batch, as the scheduler sees it."""

    request: Request
    prefilled: int      # prompt tokens already prefilled
    generated: int      # output tokens already produced


class StepView:
    """A scheduler's view of one replica before a step (read-only, live)."""

    __slots__ = ("_r", "now")

    def __init__(self, replica: "_Replica"):
        self._r = replica
        self.now = 0.0

    waiting = property(lambda self: tuple(self._r.queue), doc="waiting requests, FIFO order")
    running = property(lambda self: tuple(
        Running(s.req, s.req.prompt_tokens - s.prefill_left,
                s.generated and s.generated + self._r.steps - s.decode_from)
        for s in self._r.running), doc="running sequences")
    n_waiting = property(lambda self: len(self._r.queue))
    n_running = property(lambda self: len(self._r.running))
    kv_used = property(lambda self: self._r.kv_used, doc="KV tokens reserved by running requests")
    kv_capacity = property(lambda self: self._r.kv_capacity, doc="KV token budget (inf if none)")
    max_batch = property(lambda self: self._r.max_batch, doc="most sequences running at once")

    def head(self, n: int) -> list[Request]:
        """The first n waiting requests (cheap: no copy of the whole queue)."""
        q = self._r.queue
        return [q[i] for i in range(min(n, len(q)))]


class ClusterView(NamedTuple):
    """An autoscaler's view of the fleet at `now`."""

    now: float
    replicas: tuple        # ReplicaView for every replica that is starting, up or draining
    arrivals: int          # requests that arrived in the last interval
    interval: float        # seconds since the previous call
    completions: int       # requests that finished in the last interval

    @property
    def n_up(self) -> int:
        return sum(r.state == UP for r in self.replicas)

    @property
    def n_starting(self) -> int:
        return sum(r.state == STARTING for r in self.replicas)

    @property
    def outstanding(self) -> int:
        return sum(r.outstanding for r in self.replicas)


# ----------------------------------------------------------------------------- default policies
def least_outstanding(request: Request, replicas: Sequence[ReplicaView], rng) -> int:
    """Route to the replica with the fewest requests waiting or in service (lowest index on ties)."""
    best, best_load = 0, math.inf
    for i, r in enumerate(replicas):
        load = r.outstanding
        if load < best_load:
            best, best_load = i, load
    return best


def fcfs_admission(view: StepView) -> list[int]:
    """Admit waiting requests in arrival order while they fit; stop at the first that doesn't.

    Stopping (rather than skipping to smaller requests) keeps the order first-come-first-served,
    so a long request cannot be starved by a stream of short ones.
    """
    room = view.max_batch - view.n_running
    free_kv = view.kv_capacity - view.kv_used
    admitted = []
    for req in view.head(room):
        need = req.prompt_tokens + req.output_tokens
        if need > free_kv:
            break
        free_kv -= need
        admitted.append(req.id)
    return admitted


# ----------------------------------------------------------------------------- engine state
class _Seq:
    """A running sequence on an iteration-level replica (engine-internal, mutable)."""

    __slots__ = ("req", "prefill_left", "generated", "reserved", "decode_from")

    def __init__(self, req: Request, reserved: int):
        self.req = req
        self.prefill_left = req.prompt_tokens
        self.generated = 0        # 1 once prefilled; later tokens are counted by decode_from
        self.reserved = reserved
        self.decode_from = 0      # the replica's step count when this sequence began decoding


class _Replica:
    """One replica's state (engine-internal)."""

    def __init__(self, rid: int, cfg: ServingConfig, state: str, now: float):
        self.id = rid
        self.state = state
        self.servers = cfg.servers if cfg.mode == "request" else 1
        self.busy = 0
        self.queue: deque = deque()
        self.queued_tokens = 0
        self.busy_time = 0.0
        self.started = now
        self.stopped = math.nan
        # iteration mode
        self.max_batch = cfg.max_batch
        self.kv_capacity = cfg.kv_capacity if cfg.kv_capacity is not None else math.inf
        self.kv_used = 0
        self.running: list[_Seq] = []
        self.prefilling: deque = deque()
        self.decoding = 0
        self.context = 0
        self.steps = 0
        self.finish_at: dict[int, list[_Seq]] = {}
        self.stepping = False
        self.step_work: tuple = ()
        self.view = ReplicaView(self)
        self.qview = QueueView(self)
        self.sview = StepView(self)


@dataclass
class RunResult:
    """Everything a run measured: per-request timestamps (arrays, nan if unfinished) and more.

    Attributes:
        workload: the input.
        start: when service began (request mode) or the request was admitted (iteration mode).
        first_token, finish: when the first token / the whole response was produced.
        replica: which replica served each request (-1 if never routed).
        busy_time: per replica, server-seconds (request mode) or step-seconds busy.
        up_time: per replica, seconds from start-up (or time 0) until it stopped or the run ended.
        servers: servers per replica.
        end_time: when the last event happened.
        steps: the batch/step log if ``record_steps``: tuples
            (replica, start, end, n_requests, prefill_tokens, decode_seqs).
        fleet: (time, replicas up, replicas starting) after every change of the fleet.
    """

    workload: Workload
    start: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    replica: np.ndarray
    busy_time: np.ndarray
    up_time: np.ndarray
    servers: int
    end_time: float
    steps: list = field(default_factory=list)
    fleet: list = field(default_factory=list)

    @property
    def arrival(self) -> np.ndarray:
        return self.workload.arrival

    @property
    def latency(self) -> np.ndarray:
        """End-to-end latency (sojourn time) of each request."""
        return self.finish - self.workload.arrival

    @property
    def queue_delay(self) -> np.ndarray:
        """Time each request waited before its service (or admission) began."""
        return self.start - self.workload.arrival

    @property
    def ttft(self) -> np.ndarray:
        """Time to first token."""
        return self.first_token - self.workload.arrival

    @property
    def tpot(self) -> np.ndarray:
        """Time per output token after the first: (e2e - TTFT) / (output tokens - 1); nan if 1."""
        n = self.workload.output_tokens - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (self.finish - self.first_token) / np.maximum(n, 1), np.nan)

    @property
    def completed(self) -> np.ndarray:
        """Mask of requests that finished."""
        return ~np.isnan(self.finish)

    @property
    def utilization(self) -> float:
        """Busy fraction of the capacity that was up (server-seconds busy / server-seconds up)."""
        return float(self.busy_time.sum() / (self.up_time.sum() * self.servers))


# ----------------------------------------------------------------------------- the engine
class Simulation:
    """One run of the event loop. Use `simulate(...)`; this class keeps the state."""

    def __init__(self, workload: Workload, config: ServingConfig, seed=0):
        if not isinstance(workload, Workload):
            raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
        self.cfg = config.validate()
        self.wl = workload
        self.rng = rng_from(seed)
        if config.mode == "request" and config.cost is None and np.isnan(
                workload.service_time).any():
            raise ValueError("cost=None uses each request's service_time, but this workload has "
                             "none: give service times (poisson_workload(..., service_rate=...)) "
                             "or a cost model")
        n = len(workload)
        self.requests = workload.requests()
        self.start = [math.nan] * n
        self.first = [math.nan] * n
        self.finish = [math.nan] * n
        self.where = [-1] * n
        self.heap: list = []
        self.seq = 0
        self.now = 0.0
        self.replicas: list[_Replica] = [_Replica(i, config, UP, 0.0)
                                         for i in range(config.replicas)]
        self.up: list[_Replica] = list(self.replicas)
        self.up_views = tuple(r.view for r in self.up)
        self.steps: list = []
        self.fleet: list = [(0.0, config.replicas, 0)]
        self.arrived_since_tick = 0
        self.done_since_tick = 0
        self.n_done = 0

    # --- scheduling helpers
    def _push(self, t: float, kind: int, data) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, data))

    # --- the loop
    def run(self, until: float = math.inf) -> RunResult:
        """Process events in time order until every request is done (or time `until`)."""
        cfg, heap, reqs = self.cfg, self.heap, self.requests
        arrivals = self.wl.arrival.tolist()
        n, i = len(arrivals), 0
        route = cfg.router or least_outstanding
        single = cfg.replicas == 1 and cfg.autoscaler is None
        on_arrival = self._enqueue_request if cfg.mode == "request" else self._enqueue_iteration
        handlers = {_DONE: self._batch_done, _STEP: self._step_done, _RETRY: self._retry,
                    _READY: self._replica_ready, _TICK: self._tick, _KICK: self._start_step}
        if cfg.autoscaler is not None:
            self._push(cfg.autoscale_interval, _TICK, None)
        heappop = heapq.heappop
        inf = math.inf
        while True:
            ta = arrivals[i] if i < n else inf
            th = heap[0][0] if heap else inf
            if ta <= th:  # on a tie, arrivals first: they join a batch formed at that instant
                if ta > until or ta == inf:
                    break
                self.now = ta
                req = reqs[i]
                i += 1
                self.arrived_since_tick += 1
                if single:
                    rep = self.up[0]
                else:
                    k = route(req, self.up_views, self.rng)
                    if not (isinstance(k, (int, np.integer)) and 0 <= k < len(self.up)):
                        raise ValueError(f"router returned {k!r}; it must be an index in "
                                         f"0..{len(self.up) - 1} into the replicas it was given")
                    rep = self.up[k]
                self.where[req.id] = rep.id
                on_arrival(rep, req)
            else:
                if th > until:
                    break
                t, _, kind, data = heappop(heap)
                self.now = t
                handlers[kind](data)
                if kind == _TICK and i >= n and self.n_done == n:
                    break
        return self._result()

    # --- request mode
    def _enqueue_request(self, rep: _Replica, req: Request) -> None:
        if rep.busy < rep.servers and not rep.queue and self.cfg.batcher is None:
            self._serve(rep, (req,))  # the common fast path: an idle server takes it at once
            return
        rep.queue.append(req)
        rep.queued_tokens += req.prompt_tokens + req.output_tokens
        self._dispatch(rep)

    def _dispatch(self, rep: _Replica) -> None:
        batcher = self.cfg.batcher
        while rep.busy < rep.servers and rep.queue:
            if batcher is None:
                take = 1
            else:
                rep.qview.now = self.now
                decision = batcher(rep.qview)
                take, retry = ((decision, None) if isinstance(decision, (int, np.integer))
                               else decision)
                if not 0 <= take <= len(rep.queue):
                    raise ValueError(f"batcher returned take={take!r}; it must be in "
                                     f"0..{len(rep.queue)} (the queue length)")
                if take == 0:
                    if retry is not None:
                        if not retry > self.now:
                            raise ValueError(f"batcher returned retry_at={retry!r}, which is not "
                                             f"after now={self.now!r}")
                        self._push(retry, _RETRY, rep)
                    return
            batch = tuple(rep.queue.popleft() for _ in range(take)) if take > 1 else (
                rep.queue.popleft(),)
            rep.queued_tokens -= sum(r.prompt_tokens + r.output_tokens for r in batch)
            self._serve(rep, batch)

    def _serve(self, rep: _Replica, batch: tuple) -> None:
        now, cost = self.now, self.cfg.cost
        if cost is not None:
            first, busy = cost.batch_timing([r.prompt_tokens for r in batch],
                                            [r.output_tokens for r in batch])
        elif len(batch) == 1:
            first = busy = batch[0].service_time
        else:  # sampled service: a batch takes as long as its slowest request
            first = busy = max(r.service_time for r in batch)
        rep.busy += 1
        rep.busy_time += busy
        start, first_token = self.start, self.first
        for r in batch:
            start[r.id] = now
            first_token[r.id] = now + first
        if self.cfg.record_steps:
            prefill = len(batch) * max(r.prompt_tokens for r in batch)
            self.steps.append((rep.id, now, now + busy, len(batch), prefill, len(batch)))
        self.seq += 1
        heapq.heappush(self.heap, (now + busy, self.seq, _DONE, (rep, batch)))

    def _batch_done(self, data) -> None:
        rep, batch = data
        rep.busy -= 1
        now, finish = self.now, self.finish
        for r in batch:
            finish[r.id] = now
        self.n_done += len(batch)
        self.done_since_tick += len(batch)
        if rep.queue:
            self._dispatch(rep)
        elif rep.state == DRAINING and rep.busy == 0:
            self._stop(rep)

    def _retry(self, rep: _Replica) -> None:
        if rep.queue:
            self._dispatch(rep)

    # --- iteration mode
    def _enqueue_iteration(self, rep: _Replica, req: Request) -> None:
        if req.prompt_tokens + req.output_tokens > rep.kv_capacity:
            raise ValueError(f"request {req.id} needs {req.prompt_tokens + req.output_tokens} KV "
                             f"tokens but kv_capacity is {rep.kv_capacity}: it can never run")
        rep.queue.append(req)
        rep.queued_tokens += req.prompt_tokens + req.output_tokens
        if not rep.stepping:
            # start at this instant, but after any other arrival at the same instant
            rep.stepping = True
            self._push(self.now, _KICK, rep)

    def _admit(self, rep: _Replica) -> None:
        rep.sview.now = self.now
        ids = (self.cfg.scheduler or fcfs_admission)(rep.sview)
        if not ids:
            return
        ids = list(ids)
        chosen = set(ids)
        if len(chosen) != len(ids):
            raise ValueError(f"scheduler admitted a request twice: {ids}")
        if len(rep.running) + len(ids) > rep.max_batch:
            raise ValueError(f"scheduler admitted {len(ids)} requests but only "
                             f"{rep.max_batch - len(rep.running)} slots are free (max_batch)")
        q = rep.queue
        if len(ids) <= len(q) and all(q[j].id == x for j, x in enumerate(ids)):
            picked = [q.popleft() for _ in ids]  # the usual case: a prefix of the queue
        else:
            picked = [r for r in rep.queue if r.id in chosen]
            if len(picked) != len(ids):
                raise ValueError(f"scheduler admitted ids that are not waiting here: "
                                 f"{sorted(chosen - {r.id for r in picked})}")
            rep.queue = deque(r for r in rep.queue if r.id not in chosen)
        need = sum(r.prompt_tokens + r.output_tokens for r in picked)
        if rep.kv_used + need > rep.kv_capacity:
            raise ValueError(f"scheduler admitted {need} KV tokens but only "
                             f"{rep.kv_capacity - rep.kv_used} are free (kv_capacity)")
        rep.kv_used += need
        rep.queued_tokens -= need
        now = self.now
        for r in picked:
            s = _Seq(r, r.prompt_tokens + r.output_tokens)
            rep.running.append(s)
            rep.prefilling.append(s)
            self.start[r.id] = now

    def _start_step(self, rep: _Replica) -> None:
        if rep.queue and len(rep.running) < rep.max_batch:
            self._admit(rep)
        if not rep.running:
            rep.stepping = False
            rep.busy = 0
            if rep.queue:
                raise RuntimeError(f"replica {rep.id}: requests wait but none was admitted into "
                                   "an empty batch; the scheduler must admit at least one")
            if rep.state == DRAINING:
                self._stop(rep)
            return
        chunk = self.cfg.prefill_chunk or math.inf
        budget, prefill_tokens, work = chunk, 0, []
        for s in rep.prefilling:
            if budget <= 0:
                break
            take = min(s.prefill_left, budget)
            budget -= take
            prefill_tokens += take
            work.append((s, take))
        decode = rep.decoding
        dt = self.cfg.cost.step_time(prefill_tokens, decode, rep.context)
        if not dt > 0:
            raise ValueError(f"cost.step_time returned {dt!r}; a step must take > 0 seconds")
        rep.stepping = True
        rep.step_work = work
        rep.busy = len(rep.running)
        rep.busy_time += dt
        if self.cfg.record_steps:
            self.steps.append((rep.id, self.now, self.now + dt, len(rep.running),
                               prefill_tokens, decode))
        self._push(self.now + dt, _STEP, rep)

    def _step_done(self, rep: _Replica) -> None:
        now = self.now
        # every sequence that was decoding produced one more token
        rep.context += rep.decoding
        rep.steps += 1
        finished = rep.finish_at.pop(rep.steps, [])
        # prefills that completed this step produce their first token
        for s, take in rep.step_work:
            s.prefill_left -= take
            if s.prefill_left == 0:
                rep.prefilling.popleft()  # prefill runs in FIFO order, so it is the head
                r = s.req
                self.first[r.id] = now
                s.generated = 1
                s.decode_from = rep.steps
                if r.output_tokens == 1:
                    finished.append(s)
                else:
                    rep.decoding += 1
                    rep.context += r.prompt_tokens + 1
                    rep.finish_at.setdefault(rep.steps + r.output_tokens - 1, []).append(s)
        if finished:
            self._finish_seqs(rep, finished)
        self._start_step(rep)

    def _finish_seqs(self, rep: _Replica, finished: list) -> None:
        now = self.now
        gone = set()
        for s in finished:
            r = s.req
            self.finish[r.id] = now
            rep.kv_used -= s.reserved
            if r.output_tokens > 1:
                rep.decoding -= 1
                rep.context -= r.prompt_tokens + r.output_tokens
            gone.add(id(s))
        rep.running = [s for s in rep.running if id(s) not in gone]
        self.n_done += len(finished)
        self.done_since_tick += len(finished)

    # --- fleet changes
    def _tick(self, _) -> None:
        cfg = self.cfg
        live = [r for r in self.replicas if r.state in (STARTING, UP, DRAINING)]
        view = ClusterView(self.now, tuple(r.view for r in live), self.arrived_since_tick,
                           cfg.autoscale_interval, self.done_since_tick)
        self.arrived_since_tick = self.done_since_tick = 0
        want = cfg.autoscaler(view)
        if isinstance(want, bool) or not isinstance(want, (int, np.integer)):
            raise TypeError(f"autoscaler must return an int (desired replicas), got {want!r}")
        want = min(max(int(want), cfg.min_replicas), cfg.max_replicas)
        active = [r for r in live if r.state in (STARTING, UP)]
        if want > len(active):
            for _ in range(want - len(active)):
                rep = _Replica(len(self.replicas), cfg, STARTING, self.now)
                self.replicas.append(rep)
                self._push(self.now + cfg.startup_delay, _READY, rep)
        elif want < len(active):
            # cancel start-ups first, then drain the least loaded replicas
            victims = sorted(active, key=lambda r: (r.state == UP, len(r.queue) + r.busy))
            for rep in victims[: len(active) - want]:
                self._drain(rep)
        self._fleet_changed()
        self._push(self.now + cfg.autoscale_interval, _TICK, None)

    def _replica_ready(self, rep: _Replica) -> None:
        if rep.state == STARTING:
            rep.state = UP
            rep.started = self.now
            self.up.append(rep)
            self._fleet_changed()

    def _drain(self, rep: _Replica) -> None:
        if rep.state == STARTING:
            rep.state = STOPPED
            rep.started = rep.stopped = self.now  # never served: costs nothing
            return
        rep.state = DRAINING
        self.up.remove(rep)
        if rep.busy == 0 and not rep.queue and not rep.running:
            self._stop(rep)

    def _stop(self, rep: _Replica) -> None:
        rep.state = STOPPED
        rep.stopped = self.now

    def _fleet_changed(self) -> None:
        self.up_views = tuple(r.view for r in self.up)
        starting = sum(r.state == STARTING for r in self.replicas)
        self.fleet.append((self.now, len(self.up), starting))

    def _result(self) -> RunResult:
        end = self.now
        up_time = np.array([(r.stopped if r.state == STOPPED else end) - r.started
                            if r.state != STARTING else 0.0 for r in self.replicas])
        return RunResult(self.wl, np.array(self.start), np.array(self.first),
                         np.array(self.finish), np.array(self.where),
                         np.array([r.busy_time for r in self.replicas]), up_time,
                         self.cfg.servers if self.cfg.mode == "request" else 1, end,
                         self.steps, self.fleet)


def simulate(workload: Workload, config: ServingConfig | None = None, *, seed=0,
             until: float = math.inf, **settings) -> RunResult:
    """Run `workload` through a serving system and return what happened to every request.

    Args:
        workload: the requests (see `scalesim_course.workload`).
        config: a ServingConfig; keyword `settings` override its fields (or build one).
        seed: seeds the generator that policies receive; same seed, same result.
        until: stop the clock at this time (unfinished requests have nan timestamps).

    Example:
        >>> wl = poisson_workload(rate=0.8, n=10_000, service_rate=1.0, seed=1)
        >>> res = simulate(wl, servers=1)            # an M/M/1 queue
    """
    config = replace(config, **settings) if config is not None else ServingConfig(**settings)
    return Simulation(workload, config, seed).run(until)
