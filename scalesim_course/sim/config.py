"""How a served system is built: `ServingConfig`, per-replica `ReplicaSpec`, `BatchDecision`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

from .._checks import check_callable, check_int, check_non_negative, check_positive

# replica states
STARTING, UP, DRAINING, STOPPED = "starting", "up", "draining", "stopped"


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
