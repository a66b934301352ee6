"""What a run measured: `RunResult` (per-request timestamps and more) and its step log record."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from ..workload import Workload


class StepRecord(NamedTuple):
    """One batch (request mode) or engine step (iteration mode) of ``RunResult.steps``."""

    replica: int
    start: float
    end: float
    n_requests: int
    prefill_tokens: int
    decode_seqs: int


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
        n_steps: batches started (request mode) or engine steps run (iteration mode).
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
    n_steps: int = 0

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
