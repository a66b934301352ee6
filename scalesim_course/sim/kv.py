"""KV-cache memory managers for iteration-level replicas: the protocol and today's rule.

A replica in ``mode="iteration"`` asks its KV manager three things (one manager per replica):

* ``admit(seq) -> bool`` for each request the scheduler proposes, in order: allocate what the
  sequence needs to start, or answer False (nothing allocated; the request and every one behind
  it keep waiting);
* ``grow(running) -> list of ids`` before every engine step, with every running sequence: make
  room so each can hold ``seq.context`` tokens after the step, and name the sequences to preempt
  if that is impossible (the engine frees them and recomputes them later, as vLLM does);
* ``free(seq_id)`` when a sequence finishes or is preempted;

plus ``used()`` (token slots allocated), ``stored()`` (tokens actually holding KV, <= used) and
``capacity`` (token slots in the pool; ``math.inf`` if unlimited).

`exact_reservation` is the simulator's default: a request reserves prompt + output tokens at
admission and keeps them until it finishes, so it never grows and is never preempted. It is
exact only because the simulator knows each request's true output length; a real server cannot,
which is what notebook 03's managers (`kvcache.reserve_max`, `kvcache.paged`) are about.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol, Sequence, runtime_checkable


class KVSeq(NamedTuple):
    """A read-only view of one sequence, as the KV manager is asked about it."""

    id: int             # request id (unique within a run)
    prompt_tokens: int
    output_tokens: int  # TRUE output length (only an "exact" policy may use it)
    generated: int      # output tokens produced so far
    context: int        # tokens whose KV the sequence holds after the coming step
    prompt_id: int      # Request.prompt_id (-1: unique), for prefix sharing
    admitted_at: float  # time of (re)admission


class Preempted(NamedTuple):
    """One preemption: which request lost its KV memory, when, where, and why.

    Like SimPy's ``Preempted(by, usage_since)``, a record of the cause. The request goes back to
    the head of its replica's waiting queue and is recomputed (prompt + tokens generated so far
    prefilled again) when re-admitted.
    """

    request_id: int
    time: float
    replica: int
    generated: int      # output tokens it had produced (kept, not produced again)
    by: str = "kv"      # the cause: "kv" (its replica's KV manager needed the memory)


@runtime_checkable
class KVManager(Protocol):
    """What the engine calls on a replica's KV-cache memory (see the module docstring)."""

    capacity: float

    def used(self) -> int: ...

    def stored(self) -> int: ...

    def admit(self, seq: KVSeq) -> bool: ...

    def grow(self, running: Sequence[KVSeq]) -> list: ...

    def free(self, seq_id: int) -> None: ...


class ExactReservation:
    """Reserve prompt + output tokens at admission, hold them until the sequence finishes.

    Args:
        capacity: token slots in the pool (math.inf: unlimited).
    """

    def __init__(self, capacity: float = math.inf):
        self.capacity = capacity
        self._used = 0
        self._stored = {}   # seq id -> tokens reserved

    def used(self) -> int:
        """Token slots reserved by admitted sequences."""
        return self._used

    def stored(self) -> int:
        """The same as `used`: this rule counts reserved slots, not filled ones."""
        return self._used

    def admit(self, seq: KVSeq) -> bool:
        """Reserve prompt + output tokens if they fit."""
        need = seq.prompt_tokens + seq.output_tokens
        if self._used + need > self.capacity:
            return False
        self._used += need
        self._stored[seq.id] = need
        return True

    def grow(self, running: Sequence[KVSeq]) -> list:
        """Nothing to do: the whole response was reserved at admission."""
        return []

    def free(self, seq_id: int) -> None:
        """Release the reservation."""
        self._used -= self._stored.pop(seq_id)

    def __repr__(self) -> str:
        return f"exact_reservation(capacity={self.capacity})"


def exact_reservation(capacity: float = math.inf) -> ExactReservation:
    """The default KV manager factory: today's rule (prompt + output reserved at admission)."""
    return ExactReservation(capacity)
