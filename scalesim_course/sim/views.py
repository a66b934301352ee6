"""Read-only views: what a policy may know when it decides (the engine owns all state)."""
from __future__ import annotations

from typing import NamedTuple

from ..workload import Request
from .config import STARTING, UP


class ReplicaView:
    """What a policy may know about one replica (read-only, live)."""

    __slots__ = ("_r",)

    def __init__(self, replica: "Replica"):
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


class StaleReplicaView:
    """A router's view of one replica whose load fields come from an older snapshot."""

    __slots__ = ("_r", "queue_len", "busy", "kv_used", "queued_tokens")

    def __init__(self, replica: "Replica", values: tuple):
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

    def __init__(self, replica: "Replica"):
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

    def __init__(self, replica: "Replica"):
        self._r = replica
        self.now = 0.0

    waiting = property(lambda self: tuple(self._r.queue), doc="waiting requests, FIFO order")
    running = property(lambda self: tuple(
        Running(s.req, min(s.req.prompt_tokens, s.prefill_total - s.prefill_left),
                s.tokens(self._r.steps))
        for s in self._r.running.values()), doc="running sequences")
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
