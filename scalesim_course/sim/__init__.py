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
* kv(capacity) -> a KV manager per replica (iteration mode; see `scalesim_course.sim.kv`)

A fleet may mix replicas (`ReplicaSpec`: speed, servers, max batch, KV, cost), routers may see
stale load (``view_staleness``), and a fleet may scale to zero (``min_replicas=0``).
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from .._checks import (check_callable, check_int, check_non_negative, check_positive, rng_from)
from ..workload import Request, Workload
from .kv import ExactReservation, KVSeq, Preempted, exact_reservation

# event kinds (small ints compare fast in heap tuples)
_DONE, _STEP, _RETRY, _READY, _TICK, _KICK = 0, 1, 2, 3, 4, 5
# replica states
STARTING, UP, DRAINING, STOPPED = "starting", "up", "draining", "stopped"


class NoProgressError(RuntimeError):
    """A run that cannot go on: a policy keeps the requests it holds from ever being served."""


def _policy_name(policy) -> str:
    """A readable name for a policy or cost object, for error messages."""
    name = getattr(policy, "__qualname__", None) or getattr(policy, "__name__", None)
    return name if isinstance(name, str) else repr(policy)


class BatchDecision(NamedTuple):
    """A batcher's answer: take `take` requests now; if 0, ask again at `retry_at` (or later)."""

    take: int
    retry_at: Optional[float] = None


@dataclass(frozen=True)
class ReplicaSpec:
    """How one replica of a mixed fleet differs from the ServingConfig's defaults.

    Args:
        speed: > 0; service times, ``batch_timing`` and ``step_time`` are divided by it.
        servers: request mode: parallel servers; None: inherit ``ServingConfig.servers``.
        max_batch: iteration mode: most running sequences; None: inherit.
        kv_capacity: iteration mode: KV token budget; None: inherit.
        cost: this replica's cost model; None: inherit ``ServingConfig.cost``.
    """

    speed: float = 1.0
    servers: Optional[int] = None
    max_batch: Optional[int] = None
    kv_capacity: Optional[int] = None
    cost: object = None

    def __post_init__(self):
        check_positive("ReplicaSpec.speed", self.speed)
        if self.servers is not None:
            check_int("ReplicaSpec.servers", self.servers, minimum=1)
        if self.max_batch is not None:
            check_int("ReplicaSpec.max_batch", self.max_batch, minimum=1)
        if self.kv_capacity is not None:
            check_int("ReplicaSpec.kv_capacity", self.kv_capacity, minimum=1)


@dataclass
class ServingConfig:
    """How the served system is built; every field has a default that runs.

    Args:
        mode: "request" (request-level service) or "iteration" (iteration-level batching).
        replicas: replicas up at time 0 (0 only with an autoscaler and min_replicas=0).
        servers: request mode: servers per replica sharing its queue (c in M/M/c).
        cost: request mode: an object with ``batch_timing(prompt_tokens, output_tokens) ->
            (first_token_offset, busy_seconds)``, or None to use each request's own
            ``service_time``; iteration mode: an object with ``step_time(prefill_tokens,
            decode_seqs, context_tokens) -> seconds`` (required).
        router: picks a replica for each arrival; None: least outstanding requests. A router
            given here is called even when only one replica is up.
        batcher: request mode: forms batches from the queue; None: one request at a time.
        scheduler: iteration mode: admits waiting requests; None: `fcfs_admission` (with a
            custom ``kv`` manager: the waiting queue in order, the manager deciding what fits).
        max_batch: iteration mode: most sequences running at once on a replica.
        kv_capacity: iteration mode: KV-cache budget in tokens per replica; None: unlimited.
        kv: iteration mode: KV manager factory, called once per replica with its kv_capacity
            (math.inf if None); None: `kv.exact_reservation` (prompt + output reserved at
            admission).
        prefill_chunk: iteration mode: most prompt tokens prefilled in one step (chunked
            prefill); None: a whole prompt in one step.
        replica_specs: per-replica differences; replica i uses replica_specs[i % len]. None: all
            replicas alike.
        view_staleness: seconds; routers see replica load as of a snapshot this old (0: live).
        view_refresh: "periodic" (snapshots at 0, T, 2T, ...) or "delayed" (exactly T ago).
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
    replica_specs: Optional[Sequence[ReplicaSpec]] = None
    view_staleness: float = 0.0
    view_refresh: str = "periodic"
    kv: Optional[Callable] = None

    def validate(self) -> "ServingConfig":
        """Check every field, raising ValueError/TypeError that names the bad one."""
        if self.mode not in ("request", "iteration"):
            raise ValueError(f"mode must be 'request' or 'iteration', got {self.mode!r}")
        check_int("replicas", self.replicas, minimum=0)
        check_int("servers", self.servers, minimum=1)
        check_int("max_batch", self.max_batch, minimum=1)
        check_int("min_replicas", self.min_replicas, minimum=0)
        check_int("max_replicas", self.max_replicas, minimum=max(1, self.min_replicas))
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas={self.replicas} must lie within min_replicas="
                             f"{self.min_replicas} and max_replicas={self.max_replicas}")
        if self.replicas == 0 and self.autoscaler is None:
            raise ValueError("replicas=0 needs an autoscaler to start replicas (and "
                             "min_replicas=0); a fixed fleet needs replicas >= 1")
        if self.kv_capacity is not None:
            check_int("kv_capacity", self.kv_capacity, minimum=1)
        if self.prefill_chunk is not None:
            check_int("prefill_chunk", self.prefill_chunk, minimum=1)
        check_positive("autoscale_interval", self.autoscale_interval)
        check_non_negative("startup_delay", self.startup_delay)
        check_non_negative("view_staleness", self.view_staleness)
        if self.view_refresh not in ("periodic", "delayed"):
            raise ValueError(f"view_refresh must be 'periodic' or 'delayed', got "
                             f"{self.view_refresh!r}")
        if not isinstance(self.record_steps, bool):
            raise TypeError(f"record_steps must be True or False, got {self.record_steps!r}")
        for name in ("router", "batcher", "scheduler", "autoscaler", "kv"):
            if getattr(self, name) is not None:
                check_callable(name, getattr(self, name))
        specs = self.replica_specs
        if specs is not None:
            if isinstance(specs, ReplicaSpec) or not hasattr(specs, "__len__") or not len(specs):
                raise TypeError(f"replica_specs must be a non-empty list of ReplicaSpec, got "
                                f"{specs!r}")
            for k, spec in enumerate(specs):
                if not isinstance(spec, ReplicaSpec):
                    raise TypeError(f"replica_specs[{k}] must be a ReplicaSpec, got {spec!r}")
        costs = [(f"replica_specs[{k}].cost", s.cost) for k, s in enumerate(specs or ())
                 if s.cost is not None]
        if not specs or any(s.cost is None for s in specs):
            costs.append(("cost", self.cost))
        for name, cost in costs:
            if self.mode == "iteration" and not hasattr(cost, "step_time"):
                raise TypeError(f"mode='iteration' needs {name} with a step_time(prefill_tokens"
                                f", decode_seqs, context_tokens) method, got {cost!r}")
            if self.mode == "request" and cost is not None and not hasattr(cost,
                                                                           "batch_timing"):
                raise TypeError(f"mode='request' needs {name}=None or an object with "
                                f"batch_timing(prompt_tokens, output_tokens), got {cost!r}")
        return self


# ----------------------------------------------------------------------------- read-only views
class ReplicaView:
    """What a policy may know about one replica (read-only, live)."""

    __slots__ = ("_r",)

    def __init__(self, replica: "_Replica"):
        self._r = replica

    id = property(lambda self: self._r.id, doc="replica number, unique within a run")
    index = property(lambda self: self._r.index,
                     doc="position in the router's `replicas` sequence (-1 if not up)")
    state = property(lambda self: self._r.state, doc="starting, up, draining or stopped")
    speed = property(lambda self: self._r.speed, doc="relative speed (costs are divided by it)")
    queue_len = property(lambda self: len(self._r.queue), doc="requests waiting")
    busy = property(lambda self: self._r.busy, doc="requests being served (or running)")
    outstanding = property(lambda self: len(self._r.queue) + self._r.busy,
                           doc="requests waiting or in service")
    servers = property(lambda self: self._r.servers, doc="request mode: parallel servers")
    kv_used = property(lambda self: self._r.kv_used(), doc="iteration mode: KV tokens in use")
    kv_capacity = property(lambda self: self._r.kv_capacity, doc="KV token budget (inf if none)")
    queued_tokens = property(lambda self: self._r.queued_tokens,
                             doc="prompt + output tokens of waiting requests")

    def __repr__(self):
        return (f"ReplicaView(id={self.id}, state={self.state!r}, queue_len={self.queue_len}, "
                f"busy={self.busy})")


class _StaleView:
    """A router's view of one replica whose load fields come from an older snapshot."""

    __slots__ = ("_r", "queue_len", "busy", "kv_used", "queued_tokens")

    def __init__(self, replica: "_Replica", values: tuple):
        self._r = replica
        self.queue_len, self.busy, self.kv_used, self.queued_tokens = values

    id = ReplicaView.id
    index = ReplicaView.index
    state = ReplicaView.state
    speed = ReplicaView.speed
    servers = ReplicaView.servers
    kv_capacity = ReplicaView.kv_capacity
    outstanding = property(lambda self: self.queue_len + self.busy,
                           doc="requests waiting or in service (as of the snapshot)")

    def __repr__(self):
        return (f"ReplicaView(id={self.id}, state={self.state!r}, queue_len={self.queue_len}, "
                f"busy={self.busy}, stale)")


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
    generated: int      # output tokens already produced (counts up by one per step)


class StepView:
    """A scheduler's view of one replica before a step (read-only, live)."""

    __slots__ = ("_r", "now")

    def __init__(self, replica: "_Replica"):
        self._r = replica
        self.now = 0.0

    waiting = property(lambda self: tuple(self._r.queue), doc="waiting requests, FIFO order")
    running = property(lambda self: tuple(
        Running(s.req, min(s.req.prompt_tokens, s.prefill_total - s.prefill_left),
                s.tokens(self._r.steps))
        for s in self._r.running), doc="running sequences")
    n_waiting = property(lambda self: len(self._r.queue))
    n_running = property(lambda self: len(self._r.running))
    kv_used = property(lambda self: self._r.kv_used(), doc="KV tokens held by running requests")
    kv_capacity = property(lambda self: self._r.kv_capacity, doc="KV token budget (inf if none)")
    max_batch = property(lambda self: self._r.max_batch, doc="most sequences running at once")

    def head(self, n: int) -> list[Request]:
        """The first n waiting requests (cheap: no copy of the whole queue)."""
        q = self._r.queue
        return [q[i] for i in range(min(n, len(q)))]


class ClusterView(NamedTuple):
    """An autoscaler's view of the fleet at `now`.

    Per-replica tuples have one entry per replica in `replicas` order, measured over the last
    interval: ``busy_fraction`` is the time-average share of the replica's servers busy (in
    iteration mode: share of time stepping) while it was up during the interval;
    ``concurrency`` the time-average number of its outstanding requests over the whole
    interval; ``queue_lens`` and ``kv_fraction`` (KV used / capacity, 0 if unlimited) are taken
    now. ``held`` counts arrivals waiting for any replica to come up (scale to zero).
    """

    now: float
    replicas: tuple        # ReplicaView for every replica that is starting, up or draining
    arrivals: int          # requests that arrived in the last interval
    interval: float        # seconds since the previous call
    completions: int       # requests that finished in the last interval
    busy_fraction: tuple = ()
    concurrency: tuple = ()
    queue_lens: tuple = ()
    kv_fraction: tuple = ()
    held: int = 0

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

    A request fits if prompt + output tokens fit in the free KV budget (the default KV rule).
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


def _fcfs_slots(view: StepView) -> list[int]:
    """Propose the waiting requests in order, as many as there are batch slots (the KV manager
    then admits a prefix of them)."""
    return [r.id for r in view.head(view.max_batch - view.n_running)]


class StepRecord(NamedTuple):
    """One batch (request mode) or engine step (iteration mode) of ``RunResult.steps``."""

    replica: int
    start: float
    end: float
    n_requests: int
    prefill_tokens: int
    decode_seqs: int


# ----------------------------------------------------------------------------- engine state
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


class _Replica:
    """One replica's state (engine-internal)."""

    def __init__(self, rid: int, cfg: ServingConfig, state: str, now: float):
        spec = cfg.replica_specs[rid % len(cfg.replica_specs)] if cfg.replica_specs else None
        self.id = rid
        self.index = rid
        self.state = state
        self.speed = spec.speed if spec else 1.0
        self.cost = spec.cost if spec and spec.cost is not None else cfg.cost
        servers = spec.servers if spec and spec.servers is not None else cfg.servers
        self.servers = servers if cfg.mode == "request" else 1
        self.busy = 0
        self.queue: deque = deque()
        self.queued_tokens = 0
        self.busy_time = 0.0
        self.created = now
        self.started = now
        self.stopped = math.nan
        # iteration mode
        self.max_batch = spec.max_batch if spec and spec.max_batch is not None else cfg.max_batch
        cap = spec.kv_capacity if spec and spec.kv_capacity is not None else cfg.kv_capacity
        self.kv_capacity = cap if cap is not None else math.inf
        self.kv = None
        self.grows = False
        if cfg.mode == "iteration":
            factory = cfg.kv or exact_reservation
            self.kv = factory(self.kv_capacity)
            for method in ("admit", "grow", "free", "used", "stored"):
                if not callable(getattr(self.kv, method, None)):
                    raise TypeError(f"kv factory {_policy_name(factory)} returned "
                                    f"{self.kv!r}, which has no {method}() method (see "
                                    "scalesim_course.sim.kv.KVManager)")
            if not hasattr(self.kv, "capacity"):
                raise TypeError(f"KV manager {self.kv!r} has no capacity attribute")
            self.kv_capacity = self.kv.capacity
            self.grows = type(self.kv) is not ExactReservation
        self.resume: dict = {}       # preempted request id -> tokens generated before
        self.running: list[_Seq] = []
        self.prefilling: deque = deque()
        self.decoding = 0
        self.context = 0
        self.steps = 0
        self.finish_at: dict[int, list[_Seq]] = {}
        self.stepping = False
        self.step_work: tuple = ()
        # autoscaler bookkeeping
        self.in_system = 0           # requests routed here and not finished
        self.area = 0.0              # integral of in_system over time
        self.area_at = now
        self.area_mark = 0.0
        self.busy_mark = 0.0
        self.hist: deque = deque([(now, (0, 0, 0, 0))])   # stale views: (time, load values)
        self.view = ReplicaView(self)
        self.qview = QueueView(self)
        self.sview = StepView(self)

    def kv_used(self) -> int:
        return self.kv.used() if self.kv is not None else 0

    def load(self) -> tuple:
        return (len(self.queue), self.busy, self.kv_used(), self.queued_tokens)


@dataclass
class RunResult:
    """Everything a run measured: per-request timestamps (arrays, nan if unfinished) and more.

    Attributes:
        workload: the input.
        start: when service began (request mode) or the request was first admitted (iteration).
        first_token, finish: when the first token / the whole response was produced.
        replica: which replica served each request (-1 if never routed).
        busy_time: per replica, server-seconds (request mode) or step-seconds busy, counted only
            up to the stop time.
        up_time: per replica, seconds from start-up (or time 0) until it stopped or the run ended.
        servers: servers per replica (ServingConfig.servers).
        end_time: when the last event happened.
        steps: the batch/step log if ``record_steps``: `StepRecord` tuples
            (replica, start, end, n_requests, prefill_tokens, decode_seqs).
        fleet: (time, replicas up, replicas starting) after every autoscaler tick and change.
        stopped_at: when the clock stopped: ``until`` if it was given, else ``end_time``.
        busy_by_replica: {replica id: busy seconds up to the stop}.
        servers_by_replica: servers of each replica (mixed fleets differ).
        preemptions: every `Preempted` record (iteration mode with a preempting KV manager).
        n_preemptions: per request, how often it was preempted.
        kv_log: if ``record_steps`` (iteration mode): per step (time, replica, used, stored).
        provisioned_replica_seconds: sum over replicas of the time from the scale-up decision
            (or 0) until it stopped or the run stopped, start-up time included.
        fleet_log: (time, replicas up, replicas starting) at every change only.
        scale_events: (time, old desired, new desired) whenever the autoscaler's (clipped)
            answer changed.
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
    stopped_at: float = math.nan
    busy_by_replica: dict = field(default_factory=dict)
    servers_by_replica: Optional[np.ndarray] = None
    preemptions: list = field(default_factory=list)
    n_preemptions: Optional[np.ndarray] = None
    kv_log: list = field(default_factory=list)
    provisioned_replica_seconds: float = 0.0
    fleet_log: list = field(default_factory=list)
    scale_events: list = field(default_factory=list)

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
    def unfinished(self) -> int:
        """Requests with no finish time: still waiting or running at the stop, or never served."""
        return int(np.isnan(self.finish).sum())

    @property
    def utilization(self) -> float:
        """Busy fraction of the capacity that was up (server-seconds busy / server-seconds up)."""
        servers = self.servers_by_replica
        if servers is None or len(servers) == 0 or np.all(servers == self.servers):
            return float(self.busy_time.sum() / (self.up_time.sum() * self.servers))
        return float(self.busy_time.sum() / (self.up_time * servers).sum())


# ----------------------------------------------------------------------------- the engine
class Simulation:
    """One run of the event loop. Use `simulate(...)`; this class keeps the state."""

    def __init__(self, workload: Workload, config: ServingConfig, seed=0):
        if not isinstance(workload, Workload):
            raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
        self.cfg = config.validate()
        self.wl = workload
        self.rng = rng_from(seed)
        if config.mode == "request" and np.isnan(workload.service_time).any() and (
                config.cost is None if not config.replica_specs
                else any(s.cost is None and config.cost is None for s in config.replica_specs)):
            raise ValueError("cost=None uses each request's service_time, but this workload has "
                             "none: give service times (poisson_workload(..., service_rate=...)) "
                             "or a cost model")
        n = len(workload)
        self.requests = workload.requests()
        self.start = [math.nan] * n
        self.first = [math.nan] * n
        self.finish = [math.nan] * n
        self.where = [-1] * n
        self.n_pre = [0] * n
        self.preemptions: list = []
        self.kv_log: list = []
        self.heap: list = []
        self.seq = 0
        self.now = 0.0
        self.replicas: list[_Replica] = [_Replica(i, config, UP, 0.0)
                                         for i in range(config.replicas)]
        self.up: list[_Replica] = list(self.replicas)
        self.up_views = tuple(r.view for r in self.up)
        self.steps: list = []
        self.fleet: list = [(0.0, config.replicas, 0)]
        self.fleet_log: list = [(0.0, config.replicas, 0)]
        self.scale_events: list = []
        self.desired = config.replicas
        self.held: deque = deque()
        self.track = config.autoscaler is not None
        self.stale = config.view_staleness > 0
        self.arrived_since_tick = 0
        self.done_since_tick = 0
        self.n_done = 0
        self.i = 0
        self.idle_ticks = 0
        self.stopped_at = math.nan

    # --- scheduling helpers
    def _push(self, t: float, kind: int, data) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, data))

    # --- the loop
    def run(self, until: float = math.inf) -> RunResult:
        """Process events in time order until every request is done (or time `until`)."""
        if isinstance(until, bool) or not isinstance(until, (int, float, np.integer,
                                                             np.floating)) or math.isnan(until):
            raise TypeError(f"until must be a number of seconds (or math.inf), got {until!r}")
        cfg, heap, reqs = self.cfg, self.heap, self.requests
        arrivals = self.wl.arrival.tolist()
        n, i = len(arrivals), 0
        single = cfg.replicas == 1 and cfg.autoscaler is None and cfg.router is None
        handlers = {_DONE: self._batch_done, _STEP: self._step_done, _RETRY: self._retry,
                    _READY: self._replica_ready, _TICK: self._tick, _KICK: self._start_step}
        if cfg.autoscaler is not None:
            self._push(cfg.autoscale_interval, _TICK, None)
        heappop = heapq.heappop
        inf = math.inf
        stale = self.stale
        track = self.track
        while True:
            ta = arrivals[i] if i < n else inf
            th = heap[0][0] if heap else inf
            if ta <= th:  # on a tie, arrivals first: they join a batch formed at that instant
                if ta > until or ta == inf:
                    break
                self.now = ta
                req = reqs[i]
                i += 1
                self.i = i
                self.arrived_since_tick += 1
                if single:
                    rep = self.up[0]
                    self.where[req.id] = rep.id
                    self._arrive(rep, req)
                else:
                    self._route(req)
            else:
                if th > until:
                    break
                t, _, kind, data = heappop(heap)
                self.now = t
                handlers[kind](data)
                if kind == _TICK and self._tick_ends_run():
                    break
            if stale:
                self._record_loads()
        self.stopped_at = until if until < inf else self.now
        return self._result()

    def _route(self, req: Request) -> None:
        """Send an arrival to a replica chosen by the router (or hold it if none is up)."""
        if not self.up:
            self.held.append(req)
            return
        route = self.cfg.router or least_outstanding
        views = self._stale_views() if self.stale else self.up_views
        k = route(req, views, self.rng)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not \
                0 <= k < len(self.up):
            raise ValueError(f"router {_policy_name(route)} returned {k!r}; it must be an int "
                             f"index in 0..{len(self.up) - 1} into the replicas it was given")
        rep = self.up[k]
        self.where[req.id] = rep.id
        self._arrive(rep, req)

    def _arrive(self, rep: _Replica, req: Request) -> None:
        if self.track:
            self._count(rep, 1)
        if self.cfg.mode == "request":
            self._enqueue_request(rep, req)
        else:
            self._enqueue_iteration(rep, req)

    def _count(self, rep: _Replica, change: int) -> None:
        """Autoscaler bookkeeping: integrate the replica's outstanding requests over time."""
        now = self.now
        rep.area += rep.in_system * (now - rep.area_at)
        rep.area_at = now
        rep.in_system += change

    # --- stale views
    def _record_loads(self) -> None:
        now = self.now
        for rep in self.replicas:
            if rep.state == STOPPED:
                continue
            values = rep.load()
            hist = rep.hist
            if values != hist[-1][1]:
                if hist[-1][0] == now and len(hist) > 1:
                    hist[-1] = (now, values)
                else:
                    hist.append((now, values))

    def _stale_views(self) -> tuple:
        cfg = self.cfg
        T = cfg.view_staleness
        if cfg.view_refresh == "periodic":
            at = math.floor(self.now / T) * T
        else:
            at = self.now - T
        views = []
        for rep in self.up:
            hist = rep.hist
            while len(hist) > 1 and hist[1][0] <= at:
                hist.popleft()
            values = hist[0][1] if hist[0][0] <= at else (0, 0, 0, 0)
            views.append(_StaleView(rep, values))
        return tuple(views)

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
        now, cost = self.now, rep.cost
        if cost is not None:
            first, busy = cost.batch_timing([r.prompt_tokens for r in batch],
                                            [r.output_tokens for r in batch])
        elif len(batch) == 1:
            first = busy = batch[0].service_time
        else:  # sampled service: a batch takes as long as its slowest request
            first = busy = max(r.service_time for r in batch)
        if rep.speed != 1.0:
            first, busy = first / rep.speed, busy / rep.speed
        rep.busy += 1
        rep.busy_time += busy
        start, first_token = self.start, self.first
        for r in batch:
            start[r.id] = now
            first_token[r.id] = now + first
        if self.cfg.record_steps:
            prefill = len(batch) * max(r.prompt_tokens for r in batch)
            self.steps.append(StepRecord(rep.id, now, now + busy, len(batch), prefill,
                                         len(batch)))
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
        if self.track:
            self._count(rep, -len(batch))
        if rep.queue:
            self._dispatch(rep)
        elif rep.state == DRAINING and rep.busy == 0:
            self._stop(rep)

    def _retry(self, rep: _Replica) -> None:
        if rep.queue:
            self._dispatch(rep)

    # --- iteration mode
    def _enqueue_iteration(self, rep: _Replica, req: Request) -> None:
        if not rep.grows and req.prompt_tokens + req.output_tokens > rep.kv_capacity:
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
        ids = (self.cfg.scheduler or (_fcfs_slots if rep.grows else fcfs_admission))(rep.sview)
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
        prefix = len(ids) <= len(q) and all(q[j].id == x for j, x in enumerate(ids))
        if prefix:
            picked = [q[j] for j in range(len(ids))]  # the usual case: a prefix of the queue
        else:
            by_id = {r.id: r for r in q if r.id in chosen}
            if len(by_id) != len(ids):
                raise ValueError(f"scheduler admitted ids that are not waiting here: "
                                 f"{sorted(chosen - set(by_id))}")
            picked = [by_id[x] for x in ids]
        kv, now = rep.kv, self.now
        if not rep.grows:
            need = sum(r.prompt_tokens + r.output_tokens for r in picked)
            if kv.used() + need > rep.kv_capacity:
                raise ValueError(f"scheduler admitted {need} KV tokens but only "
                                 f"{rep.kv_capacity - kv.used()} are free (kv_capacity)")
        resume = rep.resume
        accepted = []
        for r in picked:
            g = resume.get(r.id, 0) if resume else 0
            ok = kv.admit(KVSeq(r.id, r.prompt_tokens, r.output_tokens, g, r.prompt_tokens + g,
                                r.prompt_id, now))
            if ok is not True and ok is not False and not isinstance(ok, np.bool_):
                raise TypeError(f"KV manager {kv!r}: admit() must return True or False, got "
                                f"{ok!r}")
            if not ok:
                break
            accepted.append(r)
        if not accepted:
            return
        if prefix:
            for _ in accepted:
                q.popleft()
        else:
            gone = {r.id for r in accepted}
            rep.queue = deque(r for r in q if r.id not in gone)
        rep.queued_tokens -= sum(r.prompt_tokens + r.output_tokens for r in accepted)
        start = self.start
        for r in accepted:
            if resume and r.id in resume:
                s = _Seq(r, resume.pop(r.id), now)
            else:
                s = _Seq(r)
                start[r.id] = now
            rep.running.append(s)
            rep.prefilling.append(s)

    def _plan(self, rep: _Replica) -> tuple:
        """The prefill work of the coming step: (prefill tokens, [(seq, tokens)])."""
        chunk = self.cfg.prefill_chunk or math.inf
        budget, prefill_tokens, work = chunk, 0, []
        for s in rep.prefilling:
            if budget <= 0:
                break
            take = min(s.prefill_left, budget)
            budget -= take
            prefill_tokens += take
            work.append((s, take))
        return prefill_tokens, work

    def _start_step(self, rep: _Replica) -> None:
        if rep.queue and len(rep.running) < rep.max_batch:
            self._admit(rep)
        if not rep.running:
            rep.stepping = False
            rep.busy = 0
            if rep.queue:
                if rep.grows:
                    r = rep.queue[0]
                    raise RuntimeError(
                        f"replica {rep.id}: KV manager {rep.kv!r} refused request {r.id} "
                        f"({r.prompt_tokens} prompt + {r.output_tokens} output tokens) on an "
                        f"empty replica with capacity {rep.kv_capacity}: it can never run")
                raise RuntimeError(f"replica {rep.id}: requests wait but none was admitted into "
                                   "an empty batch; the scheduler must admit at least one")
            if rep.state == DRAINING:
                self._stop(rep)
            return
        prefill_tokens, work = self._plan(rep)
        if rep.grows:
            prefill_tokens, work = self._grow(rep, work, prefill_tokens)
        decode = rep.decoding
        dt = rep.cost.step_time(prefill_tokens, decode, rep.context)
        if not dt > 0:
            raise ValueError(f"cost.step_time returned {dt!r}; a step must take > 0 seconds")
        if rep.speed != 1.0:
            dt = dt / rep.speed
        rep.stepping = True
        rep.step_work = work
        rep.busy = len(rep.running)
        rep.busy_time += dt
        if self.cfg.record_steps:
            self.steps.append(StepRecord(rep.id, self.now, self.now + dt, len(rep.running),
                                         prefill_tokens, decode))
            self.kv_log.append((self.now, rep.id, rep.kv.used(), rep.kv.stored()))
        self._push(self.now + dt, _STEP, rep)

    def _grow(self, rep: _Replica, work: list, prefill_tokens: int) -> tuple:
        """Ask the KV manager for room for the coming step; preempt the victims it names."""
        kv = rep.kv
        while True:
            taking = {id(s): take for s, take in work}
            steps = rep.steps
            seqs = []
            for s in rep.running:
                r = s.req
                g = s.tokens(steps)
                if s.decoding:
                    context = r.prompt_tokens + g
                else:
                    context = s.prefill_total - s.prefill_left + taking.get(id(s), 0)
                seqs.append(KVSeq(r.id, r.prompt_tokens, r.output_tokens, g, context,
                                  r.prompt_id, s.admitted_at))
            victims = kv.grow(seqs)
            if not victims:
                break
            victims = list(victims)
            by_id = {s.req.id: s for s in rep.running}
            if len(set(victims)) != len(victims) or any(
                    isinstance(v, bool) or v not in by_id for v in victims):
                raise ValueError(f"KV manager {kv!r}: grow() must name running sequence ids, "
                                 f"each at most once, got {victims!r} (running: "
                                 f"{sorted(by_id)})")
            if len(victims) == len(rep.running):
                big = max(seqs, key=lambda q: q.context)
                raise RuntimeError(
                    f"replica {rep.id}: KV manager {kv!r} cannot make room even after "
                    f"preempting every other sequence: request {big.id} needs {big.context} "
                    f"tokens of KV, capacity {rep.kv_capacity}")
            for v in sorted(victims, reverse=True):
                self._preempt(rep, by_id[v])
            prefill_tokens, work = self._plan(rep)
        if kv.used() > rep.kv_capacity:
            raise ValueError(f"KV manager {kv!r} uses {kv.used()} token slots, more than its "
                             f"capacity {rep.kv_capacity}")
        return prefill_tokens, work

    def _preempt(self, rep: _Replica, s: _Seq) -> None:
        """Free a running sequence's KV and put it back at the head of the waiting queue."""
        r = s.req
        g = s.tokens(rep.steps)
        if s.decoding:
            rep.decoding -= 1
            rep.context -= r.prompt_tokens + g
            due = rep.finish_at[s.finish_step]
            due.remove(s)
            if not due:
                del rep.finish_at[s.finish_step]
        else:
            rep.prefilling.remove(s)
        rep.running.remove(s)
        rep.kv.free(r.id)
        rep.resume[r.id] = g
        rep.queue.appendleft(r)
        rep.queued_tokens += r.prompt_tokens + r.output_tokens
        self.n_pre[r.id] += 1
        self.preemptions.append(Preempted(r.id, self.now, rep.id, g, "kv"))

    def _step_done(self, rep: _Replica) -> None:
        now = self.now
        # every sequence that was decoding produced one more token
        rep.context += rep.decoding
        rep.steps += 1
        finished = rep.finish_at.pop(rep.steps, [])
        # prefills that completed this step produce a token (the first, or the next after a
        # recompute)
        for s, take in rep.step_work:
            s.prefill_left -= take
            if s.prefill_left == 0:
                rep.prefilling.popleft()  # prefill runs in FIFO order, so it is the head
                r = s.req
                if s.generated == 0:
                    self.first[r.id] = now
                g = s.generated + 1
                s.generated = g
                s.decode_from = rep.steps
                if g >= r.output_tokens:
                    finished.append(s)
                else:
                    s.decoding = True
                    rep.decoding += 1
                    rep.context += r.prompt_tokens + g
                    s.finish_step = rep.steps + r.output_tokens - g
                    rep.finish_at.setdefault(s.finish_step, []).append(s)
        if finished:
            self._finish_seqs(rep, finished)
        self._start_step(rep)

    def _finish_seqs(self, rep: _Replica, finished: list) -> None:
        now = self.now
        gone = set()
        kv = rep.kv
        for s in finished:
            r = s.req
            self.finish[r.id] = now
            kv.free(r.id)
            if s.decoding:
                rep.decoding -= 1
                rep.context -= r.prompt_tokens + r.output_tokens
            gone.add(id(s))
        rep.running = [s for s in rep.running if id(s) not in gone]
        self.n_done += len(finished)
        self.done_since_tick += len(finished)
        if self.track:
            self._count(rep, -len(finished))

    # --- fleet changes
    def _inflight(self, rep: _Replica, t: float) -> float:
        """Busy seconds of `rep` already counted in busy_time but falling after time t."""
        extra = 0.0
        for when, _, kind, data in self.heap:
            if when > t and ((kind == _DONE and data[0] is rep) or
                             (kind == _STEP and data is rep)):
                extra += when - t
        return extra

    def _tick(self, _) -> None:
        cfg, now = self.cfg, self.now
        live = [r for r in self.replicas if r.state in (STARTING, UP, DRAINING)]
        interval = cfg.autoscale_interval
        since = now - interval
        busy, conc = [], []
        for r in live:
            done = r.busy_time - self._inflight(r, now)
            span = now - max(since, r.started) if r.state != STARTING else 0.0
            busy.append(min(1.0, max(0.0, (done - r.busy_mark) / (span * r.servers)))
                        if span > 0 else 0.0)
            r.busy_mark = done
            self._count(r, 0)
            conc.append((r.area - r.area_mark) / interval)
            r.area_mark = r.area
        view = ClusterView(now, tuple(r.view for r in live), self.arrived_since_tick,
                           interval, self.done_since_tick, tuple(busy), tuple(conc),
                           tuple(len(r.queue) for r in live),
                           tuple(r.kv_used() / r.kv_capacity if math.isfinite(r.kv_capacity)
                                 else 0.0 for r in live),
                           len(self.held))
        self.arrived_since_tick = self.done_since_tick = 0
        want = cfg.autoscaler(view)
        if isinstance(want, bool) or not isinstance(want, (int, np.integer)) or want < 0:
            raise TypeError(f"autoscaler {_policy_name(cfg.autoscaler)} must return an int >= 0 "
                            f"(desired replicas), got {want!r}")
        want = min(max(int(want), cfg.min_replicas), cfg.max_replicas)
        if want != self.desired:
            self.scale_events.append((now, self.desired, want))
            self.desired = want
        active = [r for r in live if r.state in (STARTING, UP)]
        if want > len(active):
            for _ in range(want - len(active)):
                rep = _Replica(len(self.replicas), cfg, STARTING, now)
                self.replicas.append(rep)
                self._push(now + cfg.startup_delay, _READY, rep)
        elif want < len(active):
            # cancel start-ups first, then drain the least loaded replicas
            victims = sorted(active, key=lambda r: (r.state == UP, len(r.queue) + r.busy))
            for rep in victims[: len(active) - want]:
                self._drain(rep)
        self._fleet_changed()
        self._push(now + interval, _TICK, None)

    def _tick_ends_run(self) -> bool:
        """After a tick: stop when all is done, or when nothing but ticks can ever happen."""
        if self.i < len(self.requests):
            return False
        if self.n_done == len(self.requests):
            return True
        if len(self.heap) > 1 or any(r.state == STARTING for r in self.replicas):
            self.idle_ticks = 0
            return False
        if not self.held:
            return True   # what is left waits in queues for a batcher that will never send it
        self.idle_ticks += 1
        if self.idle_ticks >= 100:
            raise NoProgressError(
                f"autoscaler {_policy_name(self.cfg.autoscaler)} kept 0 replicas for 100 ticks "
                f"(until t={self.now:g} s) while {len(self.held)} requests wait for a replica")
        return False

    def _replica_ready(self, rep: _Replica) -> None:
        if rep.state == STARTING:
            rep.state = UP
            rep.started = self.now
            rep.area_at = self.now
            self.up.append(rep)
            self._fleet_changed()
            if self.held:
                held, self.held = self.held, deque()
                for req in held:
                    self._route(req)

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
        for k, r in enumerate(self.up):
            r.index = k
        self.up_views = tuple(r.view for r in self.up)
        starting = sum(r.state == STARTING for r in self.replicas)
        entry = (self.now, len(self.up), starting)
        self.fleet.append(entry)
        if entry[1:] != self.fleet_log[-1][1:]:
            self.fleet_log.append(entry)

    def _result(self) -> RunResult:
        end = self.stopped_at
        for r in self.replicas:   # work scheduled past the stop does not count as busy
            if r.state != STOPPED or r.stopped > end:
                r.busy_time -= self._inflight(r, end)
            if r.state != STOPPED and r.state != STARTING:
                r.index = r.index if r.state == UP else -1
        up_time = np.array([(r.stopped if r.state == STOPPED else end) - r.started
                            if r.state != STARTING else 0.0 for r in self.replicas])
        provisioned = sum((r.stopped if r.state == STOPPED else end) - r.created
                          for r in self.replicas)
        busy = np.array([r.busy_time for r in self.replicas])
        return RunResult(self.wl, np.array(self.start), np.array(self.first),
                         np.array(self.finish), np.array(self.where), busy, up_time,
                         self.cfg.servers if self.cfg.mode == "request" else 1, self.now,
                         self.steps, self.fleet, end,
                         {r.id: float(b) for r, b in zip(self.replicas, busy)},
                         np.array([r.servers for r in self.replicas]), self.preemptions,
                         np.array(self.n_pre), self.kv_log, float(provisioned),
                         self.fleet_log, self.scale_events)


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
    config = replace(config, **settings) if config is not None else ServingConfig(**settings)
    return Simulation(workload, config, seed).run(until)
