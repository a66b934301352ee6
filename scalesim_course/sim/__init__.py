"""The discrete-event simulator of a serving system: one event loop, policies plugged in.

A run takes a `Workload` and a `ServingConfig`. Each replica serves requests in one of two ways:

* ``mode="request"``: request-level service. A replica has ``servers`` identical servers and one
  FIFO queue; a free server takes a batch (by default one request) off the head of the queue and
  is busy for the batch's service time. With one request per batch and the workload's pre-drawn
  service times this is exactly an M/M/c (or M/D/c, G/G/c) queue.
* ``mode="iteration"``: iteration-level scheduling, as Orca and vLLM do. A replica runs engine
  steps back to back; before each step a scheduler admits waiting requests into the running
  batch (within a sequence budget, the KV manager allocating memory); a step prefills admitted
  prompts (in chunks if ``prefill_chunk`` is set) and decodes one token for every running
  sequence. A request leaves the batch at the end of the step that produces its last token.

Policies are plain callables that see read-only views and return a decision, which the engine
checks (a bad answer raises an error naming the policy and the value):

* router(request, replicas, rng) -> index into ``replicas`` (the replicas that are up)
* batcher(view: QueueView) -> int or BatchDecision            (request mode)
* scheduler(view: StepView) -> iterable of request ids to admit  (iteration mode)
* autoscaler(view: ClusterView) -> desired number of replicas
* kv(capacity) -> a KV manager per replica (iteration mode; see `scalesim_course.sim.kv`)

A fleet may mix replicas (`ReplicaSpec`: speed, servers, max batch, KV, cost), routers may see
stale load (``view_staleness``), and a fleet may scale to zero (``min_replicas=0``).

The package, one module per part: `engine` (the loop, `simulate`), `config`, `views`,
`policies` (the defaults), `replica` (request- and iteration-level replicas on one base),
`kv` (KV memory managers), `fleet` (routing, autoscaling), `result` (`RunResult`).
"""
from .._checks import NoProgressError
from .config import (DRAINING, STARTING, STOPPED, UP, BatchDecision, ReplicaSpec,
                     ServingConfig)
from .engine import ARRIVAL, MAX_IDLE, Simulation, simulate
from .fleet import LATE
from .kv import KVManager, KVSeq, Preempted, exact_reservation
from .policies import fcfs_admission, fcfs_slots, least_outstanding
from .replica import NORMAL
from .result import RunResult, StepRecord
from .views import ClusterView, QueueView, ReplicaView, Running, StepView
from ..workload import Request, Workload

__all__ = ["ARRIVAL", "BatchDecision", "ClusterView", "DRAINING", "KVManager", "KVSeq", "LATE",
           "MAX_IDLE", "NORMAL", "NoProgressError", "Preempted", "QueueView", "ReplicaSpec",
           "ReplicaView", "Request", "RunResult", "Running", "STARTING", "STOPPED",
           "ServingConfig", "Simulation", "StepRecord", "StepView", "UP", "Workload",
           "exact_reservation", "fcfs_admission", "fcfs_slots", "least_outstanding",
           "simulate"]
