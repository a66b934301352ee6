"""The default policies: least-outstanding routing and first-come-first-served admission."""
from __future__ import annotations

import math
from typing import Sequence

from ..workload import Request
from .views import ReplicaView, StepView


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


def fcfs_slots(view: StepView) -> list[int]:
    """Propose the waiting requests in order, as many as there are batch slots (the KV manager
    then admits a prefix of them)."""
    return [r.id for r in view.head(view.max_batch - view.n_running)]
