"""Batching policies: static, dynamic, by length bucket, and continuous (iteration-level).

Three kinds of function live here, and notebook 02 asks learners to write the middle kind:

* **hooks for the simulator** (`scalesim_course.sim`): `static_batcher` and `dynamic_batcher`
  make the ``batcher`` of request mode; `fcfs_admission` in sim is the ``scheduler`` of
  iteration mode (continuous batching);
* **exercise references**, plain functions on plain data: `form_dynamic_batches`,
  `bucket_requests`, `padding_waste` and `continuous_batching_step`;
* **adapters** that plug a function with an exercise's signature into the simulator:
  `batcher_from_rule` and `scheduler_from_step`, plus `replay_steps`, which drives a step
  function through a whole workload without the simulator and checks every invariant;
* **helpers for the notebook**: `scoring_workload` (short one-pass requests), `batches_in_order`
  and `bucketed_batches`, `batch_sizes` and `request_batches` of a run, `slot_timeline` (who held
  which batch slot when, for `plots.slot_timeline`), and `request_offsets`. The two costs that
  time a batch the way `tinymodel` runs it, `StaticBatchCost` and `SplitStepCost`, live with
  the cost models in `costmodel` and are re-exported here.

Conventions: a request's "length" is its number of prompt tokens; a sequence's KV reservation
is prompt + output tokens, held from admission until it finishes (as the simulator reserves it).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np

from ._checks import check_int, check_non_negative, check_positive, rng_from
from .costmodel import SplitStepCost, StaticBatchCost, _WrapsStepCost  # noqa: F401 (moved)
from .sim import BatchDecision
from .workload import Workload, lognormal_lengths, poisson_arrivals

BatcherDecision = Union[int, BatchDecision]


# ----------------------------------------------------------------------------- request-mode hooks
def static_batcher(batch_size: int, flush_after: Optional[float] = None) -> Callable:
    """A request-mode batcher that waits for a full batch of `batch_size` requests.

    The batch is dispatched the moment the queue holds `batch_size` requests and a server is
    free. Without `flush_after`, a partial batch waits for ever: the last few requests of a
    finite run never finish (their timestamps stay nan). With it, a partial batch also leaves
    once its oldest request has waited `flush_after` seconds, which is exactly
    ``dynamic_batcher(batch_size, flush_after)``.

    Args:
        batch_size: requests per batch, >= 1.
        flush_after: seconds after which a partial batch leaves anyway; None: never.
    Returns:
        batcher(view) for ``simulate(..., batcher=...)``.
    """
    check_int("batch_size", batch_size, minimum=1)
    if flush_after is not None:
        return dynamic_batcher(batch_size, flush_after)

    def batcher(queue) -> int:
        return batch_size if len(queue) >= batch_size else 0

    batcher.__qualname__ = f"static_batcher({batch_size})"
    return batcher


def dynamic_batcher(max_batch: int, max_delay: float) -> Callable:
    """A request-mode batcher with a maximum batch size and a maximum queueing delay.

    As Triton's dynamic batcher (``max_batch_size``, ``max_queue_delay_microseconds``) and TF
    Serving's (``max_batch_size``, ``batch_timeout_micros``): whenever a server is free, send a
    full batch at once; otherwise hold the requests until the oldest has waited `max_delay`
    seconds, then send whatever is queued. A batch that is due while every server is busy
    leaves when one frees up, with everything that arrived meanwhile (up to `max_batch`).
    ``max_delay=0`` never waits: a free server takes whatever is queued.

    Args:
        max_batch: most requests per batch, >= 1.
        max_delay: seconds the oldest queued request may wait for company, >= 0.
    Returns:
        batcher(view) for ``simulate(..., batcher=...)``.
    """
    check_int("max_batch", max_batch, minimum=1)
    max_delay = check_non_negative("max_delay", max_delay)

    def batcher(queue) -> BatcherDecision:
        n = len(queue)
        if n >= max_batch:
            return max_batch
        due = queue[0].arrival + max_delay  # the same sum as the retry time: no rounding gap
        if queue.now >= due:
            return n
        return BatchDecision(0, due)

    batcher.__qualname__ = f"dynamic_batcher({max_batch}, {max_delay:g})"
    return batcher


# ----------------------------------------------------------------------------- exercise 1
def _arrival_list(arrivals) -> list[float]:
    """Arrival times as floats, checked finite and sorted."""
    times = np.asarray(arrivals, dtype=float).ravel() if len(arrivals) else np.zeros(0)
    if not np.all(np.isfinite(times)):
        raise ValueError("arrivals must all be finite numbers")
    if np.any(np.diff(times) < 0):
        raise ValueError("arrivals must be sorted in time (non-decreasing)")
    return times.tolist()


def form_dynamic_batches(arrivals: Sequence[float], max_batch: int, max_delay: float
                         ) -> tuple[list[list[int]], list[float]]:
    """Group requests into dynamic batches from their arrival times alone.

    Requests are taken in arrival order. A batch opens with the first request not yet in a
    batch, at its arrival time a0, and is dispatched at the earlier of

    * the arrival of its `max_batch`-th request (the batch is full), and
    * a0 + max_delay (its oldest request has waited long enough);

    a request arriving exactly at a0 + max_delay still joins (if there is room). This assumes
    a server that is always free when a batch is due, so no batch ever waits for the previous
    one: real servers are sometimes busy, which `batcher_from_rule` handles when this rule runs
    inside the simulator.

    Args:
        arrivals: arrival times in seconds, sorted (a list or 1-D array; may be empty).
        max_batch: most requests per batch, >= 1.
        max_delay: seconds the oldest request of a batch may wait, >= 0.
    Returns:
        (batches, dispatch_times): batches[k] lists the indices (into `arrivals`) of the k-th
        batch, in arrival order; dispatch_times[k] is when it leaves. Every index appears in
        exactly one batch, and batches come in the order they open.
    Raises:
        TypeError: max_batch is not an integer, or max_delay not a number.
        ValueError: max_batch < 1, max_delay < 0, or arrivals unsorted or not finite.
    """
    check_int("max_batch", max_batch, minimum=1)
    max_delay = check_non_negative("max_delay", max_delay)
    times = _arrival_list(arrivals)
    batches, dispatch = [], []
    i, n = 0, len(times)
    while i < n:
        deadline = times[i] + max_delay
        j = i + 1
        while j < n and j - i < max_batch and times[j] <= deadline:
            j += 1
        batches.append(list(range(i, j)))
        dispatch.append(times[j - 1] if j - i == max_batch else deadline)
        i = j
    return batches, dispatch


def batcher_from_rule(form_batches: Callable, max_batch: int, max_delay: float) -> Callable:
    """Run an offline batching rule, such as `form_dynamic_batches`, as a simulator batcher.

    Whenever a server is free, the rule is applied to the arrival times of the requests at the
    head of the queue; its first batch is sent if its dispatch time has come, otherwise the
    batcher asks to be called again at that time. So the simulator sends exactly the batches
    the rule forms, each at its dispatch time, or later if every server is still busy then.
    (A batch that had to wait for a server does not grow meanwhile: unlike `dynamic_batcher`,
    the rule decided its members from arrival times alone.)

    Args:
        form_batches: (arrivals, max_batch, max_delay) -> (batches, dispatch_times).
        max_batch: most requests per batch, >= 1.
        max_delay: seconds, >= 0.
    Returns:
        batcher(view) for ``simulate(..., batcher=...)``.
    """
    if not callable(form_batches):
        raise TypeError(f"form_batches must be callable, got {type(form_batches).__name__}")
    check_int("max_batch", max_batch, minimum=1)
    check_non_negative("max_delay", max_delay)

    def batcher(queue) -> BatcherDecision:
        head = [queue[i].arrival for i in range(min(len(queue), max_batch))]
        batches, times = form_batches(head, max_batch, max_delay)
        if len(batches) == 0 or len(batches) != len(times):
            raise ValueError(f"the rule returned {len(batches)} batches and {len(times)} "
                             f"dispatch times for {len(head)} waiting requests")
        first = [int(i) for i in batches[0]]
        if first != list(range(len(first))) or not first:
            raise ValueError(f"the rule's first batch must be the oldest requests 0..k-1 in "
                             f"order, got {first}")
        due = float(times[0])
        if due < head[len(first) - 1]:
            raise ValueError(f"the rule dispatches a batch at {due} before its last request "
                             f"arrives at {head[len(first) - 1]}")
        return len(first) if queue.now >= due else BatchDecision(0, due)

    batcher.__qualname__ = f"batcher_from_rule({getattr(form_batches, '__name__', 'rule')})"
    return batcher


# ----------------------------------------------------------------------------- exercise 2
def _lengths(name: str, values) -> list[int]:
    """Token counts as ints >= 1."""
    out = []
    for i, v in enumerate(np.asarray(values).ravel().tolist() if len(values) else []):
        if isinstance(v, bool) or not float(v).is_integer():
            raise TypeError(f"{name}[{i}] must be a whole number of tokens, got {v!r}")
        if v < 1:
            raise ValueError(f"{name}[{i}] must be >= 1 token, got {v!r}")
        out.append(int(v))
    return out


def bucket_requests(lengths: Sequence[int], bucket_bounds: Sequence[int]) -> list[int]:
    """Which length bucket each request goes to.

    Bucket k holds the requests with bucket_bounds[k-1] < length <= bucket_bounds[k] (bucket 0:
    length <= bucket_bounds[0]). A request longer than every bound goes to the **overflow
    bucket**, number len(bucket_bounds), as TensorFlow's ``bucket_by_sequence_length`` keeps a
    last bucket for lengths past its final boundary.

    Args:
        lengths: each request's length in tokens (ints >= 1; may be empty).
        bucket_bounds: the buckets' largest lengths, strictly increasing ints >= 1.
    Returns:
        a list with one bucket number per request, in the order of `lengths`.
    Raises:
        ValueError: bucket_bounds empty or not strictly increasing, or a length < 1.
    """
    bounds = _lengths("bucket_bounds", bucket_bounds)
    if not bounds:
        raise ValueError("bucket_bounds is empty: give at least one bucket's largest length")
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"bucket_bounds must be strictly increasing, got {bounds}")
    return np.searchsorted(bounds, _lengths("lengths", lengths), side="left").tolist()


def padding_waste(batches: Iterable[Sequence[int]]) -> float:
    """The fraction of computed token slots that are padding, over some batches.

    A batch is padded to its longest request: a batch of lengths [3, 5, 2] computes 3 x 5 = 15
    token slots, of which 10 are real and 5 are padding. Over several batches,

        waste = sum of padding slots / sum of slots (real + padding),

    a number in [0, 1). Empty batches compute nothing and count for nothing; with no tokens at
    all (no batches) the waste is 0.0.

    Args:
        batches: each batch as the lengths (ints >= 1) of the requests actually in it.
    Returns:
        the padding fraction, a float.
    Raises:
        ValueError: a length < 1.
    """
    slots = real = 0
    for k, batch in enumerate(batches):
        lengths = _lengths(f"batches[{k}]", batch)
        if lengths:
            slots += len(lengths) * max(lengths)
            real += sum(lengths)
    return (slots - real) / slots if slots else 0.0


def batches_in_order(n: int, batch_size: int) -> list[list[int]]:
    """Indices 0..n-1 cut into consecutive batches of `batch_size` (the last may be short)."""
    check_int("n", n, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def bucketed_batches(lengths: Sequence[int], bucket_bounds: Sequence[int], batch_size: int,
                     bucket_fn: Callable = bucket_requests) -> list[list[int]]:
    """Batches formed within each length bucket, in arrival order inside every bucket.

    Args:
        lengths: each request's length in tokens.
        bucket_bounds: as in `bucket_requests`.
        batch_size: most requests per batch.
        bucket_fn: the bucketing function (a learner's may replace the reference).
    Returns:
        batches of request indices, bucket by bucket (overflow bucket last).
    """
    check_int("batch_size", batch_size, minimum=1)
    assignment = [int(b) for b in bucket_fn(lengths, bucket_bounds)]
    if len(assignment) != len(lengths):
        raise ValueError(f"bucket_fn returned {len(assignment)} buckets for {len(lengths)} requests")
    out = []
    for bucket in sorted(set(assignment)):
        members = [i for i, b in enumerate(assignment) if b == bucket]
        out += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return out


def dynamic_batches_per_queue(arrival: Sequence[float], queues, max_batch: int,
                              max_delay: float, form_fn: Callable | None = None
                              ) -> tuple[list[list[int]], np.ndarray]:
    """Dynamic batches formed separately in each queue (e.g. one queue per length bucket).

    Args:
        arrival: every request's arrival time.
        queues: for each queue, the indices of its requests in arrival order.
        max_batch, max_delay: as in `form_dynamic_batches`.
        form_fn: the batch-forming function (a learner's may replace the reference).
    Returns:
        (batches of request indices, each request's wait from arrival to dispatch, in the
        order the batches list them).
    """
    form_fn = form_fn or form_dynamic_batches
    arrival = np.asarray(arrival, dtype=float)
    batches, waits = [], []
    for queue in queues:
        queue = np.asarray(queue, dtype=int)
        formed, due = form_fn(arrival[queue], max_batch, max_delay)
        for members, t in zip(formed, due):
            batches.append([int(queue[i]) for i in members])
            waits += [t - arrival[queue[i]] for i in members]
    return batches, np.array(waits)


# ----------------------------------------------------------------------------- exercise 3
class Seq(NamedTuple):
    """A request as the continuous-batching step sees it.

    ``generated`` counts output tokens produced so far (0 while waiting); the sequence is done
    when generated >= output_tokens. It reserves prompt + output tokens of the KV budget from
    admission until it finishes.
    """

    id: int
    prompt_tokens: int
    output_tokens: int
    generated: int = 0

    @property
    def kv_tokens(self) -> int:
        """KV-cache tokens reserved while it runs: prompt + output."""
        return self.prompt_tokens + self.output_tokens


def continuous_batching_step(running: Sequence[Seq], waiting: Sequence[Seq], kv_budget: int,
                             max_batch: Optional[int] = None
                             ) -> tuple[list[Seq], list[Seq], list[Seq]]:
    """One scheduling decision of iteration-level (continuous) batching, between two steps.

    1. Every running sequence that has produced all its tokens (generated >= output_tokens)
       finishes and frees its KV reservation; the others keep running.
    2. Waiting requests are admitted in arrival (list) order while each one's reservation
       (prompt + output tokens) fits in what is left of `kv_budget`, and while the batch holds
       fewer than `max_batch` sequences. Admission stops at the first request that does not
       fit: a later, smaller request never jumps ahead of it, so no request can be starved.

    Args:
        running: sequences in the batch after the last step, in batch order.
        waiting: requests waiting to join, oldest first.
        kv_budget: KV-cache tokens the batch may reserve in all, >= 1.
        max_batch: most sequences in the batch; None: no limit but the budget.
    Returns:
        (admitted, still_running, finished): lists of the given records (not copies);
        admitted in waiting order, the other two in running order. The next step runs
        still_running + admitted.
    Raises:
        ValueError: a waiting request needs more than the whole kv_budget (it could never
            run), kv_budget < 1 or max_batch < 1.
        TypeError: kv_budget or max_batch is not an integer.
    """
    check_int("kv_budget", kv_budget, minimum=1)
    if max_batch is not None:
        check_int("max_batch", max_batch, minimum=1)
    for seq in waiting:
        if seq.prompt_tokens + seq.output_tokens > kv_budget:
            raise ValueError(f"request {seq.id} needs {seq.prompt_tokens + seq.output_tokens} "
                             f"KV tokens but kv_budget is {kv_budget}: it could never run")
    still_running = [s for s in running if s.generated < s.output_tokens]
    finished = [s for s in running if s.generated >= s.output_tokens]
    free = kv_budget - sum(s.prompt_tokens + s.output_tokens for s in still_running)
    room = math.inf if max_batch is None else max_batch - len(still_running)
    admitted = []
    for seq in waiting:
        need = seq.prompt_tokens + seq.output_tokens
        if len(admitted) >= room or need > free:
            break
        admitted.append(seq)
        free -= need
    return admitted, still_running, finished


def scheduler_from_step(step: Callable) -> Callable:
    """Make a step function with `continuous_batching_step`'s signature the simulator's scheduler.

    Before every engine step the simulator has already retired the sequences that finished,
    so the step function is asked only whom to admit: it gets the running sequences, the
    requests at the head of the queue that could fit in the free batch slots, the replica's
    ``kv_capacity`` as the budget and its ``max_batch``. Use it as
    ``simulate(wl, mode="iteration", kv_capacity=..., scheduler=scheduler_from_step(step))``;
    kv_capacity must be set.

    The running sequences carry `Running.generated`, the output tokens produced so far
    (it counts up by one per step from the first token on); since finished sequences have
    already left, every one the step function sees has generated < output_tokens.
    """
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")

    def scheduler(view) -> list[int]:
        if math.isinf(view.kv_capacity):
            raise ValueError("scheduler_from_step needs a KV budget: pass kv_capacity=... to "
                             "simulate")
        running = [Seq(r.request.id, r.request.prompt_tokens, r.request.output_tokens,
                       r.generated) for r in view.running]
        room = view.max_batch - view.n_running
        waiting = [Seq(q.id, q.prompt_tokens, q.output_tokens, 0) for q in view.head(room)]
        admitted, _, _ = step(running, waiting, int(view.kv_capacity), view.max_batch)
        return [int(s.id) for s in admitted]

    scheduler.__qualname__ = f"scheduler_from_step({getattr(step, '__name__', 'step')})"
    return scheduler


class StepReplay(NamedTuple):
    """What `replay_steps` saw: per request, the step it joined and the step it finished."""

    admitted_at: list[int]   # step number at whose start the request joined (-1 never)
    finished_at: list[int]   # step number at whose start it was reported finished (-1 never)
    batch_sizes: list[int]   # sequences in each step
    kv_used: list[int]       # KV tokens reserved during each step
    steps: int


def replay_steps(step: Callable, requests: Sequence[Seq], arrival_step: Sequence[int],
                 kv_budget: int, max_batch: Optional[int] = None, max_steps: int = 1_000_000
                 ) -> StepReplay:
    """Drive a step function through a whole workload, checking what it returns at every step.

    Time is counted in steps: request i joins the waiting list before step arrival_step[i]
    (sorted). Before each step the step function is called; then every sequence in the batch
    produces one token. Raises AssertionError, saying which step and why, if the step
    function loses, duplicates or invents a request, admits out of arrival order, skips a
    request that fits, keeps a finished sequence, finishes an unfinished one, overfills the
    budget or the batch, or leaves the batch empty while requests wait.

    Args:
        step: a function with `continuous_batching_step`'s signature.
        requests: the requests (generated = 0), in arrival order.
        arrival_step: when each arrives, in steps, non-decreasing.
        kv_budget, max_batch: as for the step function.
        max_steps: give up (AssertionError) after this many steps.
    Returns:
        a StepReplay.
    """
    n = len(requests)
    if len(arrival_step) != n:
        raise ValueError(f"arrival_step has {len(arrival_step)} entries, requests has {n}")
    if any(b < a for a, b in zip(arrival_step, list(arrival_step)[1:])):
        raise ValueError("arrival_step must be non-decreasing")
    index = {r.id: i for i, r in enumerate(requests)}
    if len(index) != n:
        raise ValueError("request ids must be unique")
    admitted_at, finished_at = [-1] * n, [-1] * n
    sizes, used = [], []
    running: list[Seq] = []
    waiting: list[Seq] = []
    arrived = 0
    t = 0
    while True:
        while arrived < n and arrival_step[arrived] <= t:
            waiting.append(requests[arrived])
            arrived += 1
        if arrived == n and not running and not waiting:
            break
        admitted, still, finished = step(list(running), list(waiting), kv_budget, max_batch)
        admitted, still, finished = list(admitted), list(still), list(finished)
        done = [s for s in running if s.generated >= s.output_tokens]
        assert [s.id for s in finished] == [s.id for s in done], (
            f"step {t}: finished should be {[s.id for s in done]}, got {[s.id for s in finished]}")
        assert [s.id for s in still] == [s.id for s in running if s.generated < s.output_tokens], (
            f"step {t}: still_running should keep every unfinished sequence in order")
        k = len(admitted)
        assert [s.id for s in admitted] == [s.id for s in waiting[:k]], (
            f"step {t}: admitted {[s.id for s in admitted]}, but first-come-first-served admits "
            f"a prefix of the waiting list {[s.id for s in waiting[:k + 1]]}")
        batch = still + admitted
        kv = sum(s.prompt_tokens + s.output_tokens for s in batch)
        assert kv <= kv_budget, f"step {t}: {kv} KV tokens reserved, budget {kv_budget}"
        assert max_batch is None or len(batch) <= max_batch, (
            f"step {t}: {len(batch)} sequences, max_batch {max_batch}")
        if k < len(waiting):
            nxt = waiting[k]
            fits = kv + nxt.prompt_tokens + nxt.output_tokens <= kv_budget
            roomy = max_batch is None or len(batch) < max_batch
            assert not (fits and roomy), f"step {t}: request {nxt.id} fits but was not admitted"
        for s in finished:
            finished_at[index[s.id]] = t
        for s in admitted:
            admitted_at[index[s.id]] = t
        waiting = waiting[k:]
        if not batch:
            assert not waiting, f"step {t}: requests wait but the batch is empty"
            running = []
            if arrived < n:
                t = max(t, arrival_step[arrived])  # idle until the next arrival
            continue
        assert t < max_steps, f"not done after {max_steps} steps"
        running = [s._replace(generated=s.generated + 1) for s in batch]
        sizes.append(len(batch))
        used.append(kv)
        t += 1
    return StepReplay(admitted_at, finished_at, sizes, used, t)


# ----------------------------------------------------------------------------- run helpers
def scoring_workload(rate: float, n: int, seed=0, mean_tokens: float = 48.0,
                     median_tokens: float = 32.0, max_tokens: int = 512) -> Workload:
    """Short one-pass requests (a classifier, reranker or embedding endpoint): Poisson arrivals,
    lognormal prompt lengths, one output each, so a batch is a single forward pass."""
    check_positive("rate", rate)
    rng = rng_from(seed)
    arrival = poisson_arrivals(rate, n, rng)
    return Workload.build(arrival, lognormal_lengths(mean_tokens, median_tokens, n, rng,
                                                     maximum=max_tokens))


def batch_sizes(result) -> np.ndarray:
    """Requests in each batch (request mode) or sequences in each step (iteration mode) of a run
    made with ``record_steps=True``."""
    if not result.steps:
        raise ValueError("the run has no step log: simulate with record_steps=True")
    return np.array([s[3] for s in result.steps])


def request_batches(result) -> list[np.ndarray]:
    """The batches of a single-replica request-mode run: the finished requests that started and
    finished together, as index arrays in id order, batches in the order they ran."""
    ok = np.flatnonzero(result.completed)
    groups: dict = {}
    for i in ok.tolist():
        groups.setdefault((result.start[i], result.finish[i]), []).append(i)
    return [np.array(members) for _, members in sorted(groups.items())]


class SlotRow(NamedTuple):
    """One request's stay in a batch slot, for `plots.slot_timeline`."""

    id: int
    slot: int
    start: float        # joined the batch
    first_token: float  # its first token
    done: float         # its last token
    release: float      # the slot is free again (after `done` only in static batching)


def slot_timeline(result, mode: str, cost=None) -> list[SlotRow]:
    """Which batch slot each finished request of a single-replica run held, and when.

    mode="request" (static or dynamic batches): the requests that started and finished
    together form a batch and take slots 0, 1, ... in id order. The slot is held until the
    batch ends, but a request's own tokens can come earlier: pass the `cost` that timed the
    run and each request's first and last token come from `request_offsets`; without it, every
    request of a batch gets the batch's first-token time and ends with the batch.

    mode="iteration": a request holds a slot from admission to its last token; a freed slot
    is reused by the next request admitted (lowest free slot first).
    """
    if mode not in ("request", "iteration"):
        raise ValueError(f"mode must be 'request' or 'iteration', got {mode!r}")
    ok = np.flatnonzero(result.completed)
    if ok.size == 0:
        raise ValueError("no request finished in this run")
    wl = result.workload
    start, first, finish = result.start, result.first_token, result.finish
    rows: list[SlotRow] = []
    if mode == "request":
        for members in request_batches(result):
            s0, end = start[members[0]], finish[members[0]]
            if cost is None:
                firsts, dones = first[members] - s0, np.full(len(members), end - s0)
            else:
                firsts, dones = request_offsets(cost, wl.prompt_tokens[members],
                                                wl.output_tokens[members])
            for slot, (i, f, d) in enumerate(zip(members, firsts, dones)):
                rows.append(SlotRow(i, slot, float(s0), float(s0 + f), float(min(end, s0 + d)),
                                    float(end)))
        return rows
    free_at: list[float] = []
    for i in sorted(ok.tolist(), key=lambda j: (start[j], j)):
        slot = next((k for k, t in enumerate(free_at) if t <= start[i]), None)
        if slot is None:
            free_at.append(0.0)
            slot = len(free_at) - 1
        free_at[slot] = finish[i]
        rows.append(SlotRow(i, slot, float(start[i]), float(first[i]), float(finish[i]),
                            float(finish[i])))
    return rows


def request_offsets(cost, prompt_tokens, output_tokens) -> tuple[np.ndarray, np.ndarray]:
    """Per request of one static batch, seconds from the batch's start to its first and last token.

    * a cost with its own ``request_offsets`` (`StaticBatchCost`) answers itself;
    * a cost with ``step_time`` and ``batch_timing`` (RooflineCost, LinearStepCost) prefills the
      padded batch in one pass, so every first token comes at batch_timing's first offset,
      and request i's last token ends decode step O_i - 1, each step k costing
      step_time(0, b, b * (P + k)) with P the longest prompt (the sum batch_timing makes);
    * any other cost: every request gets batch_timing's two offsets.
    """
    prompts = np.asarray(prompt_tokens, dtype=np.int64)
    outputs = np.asarray(output_tokens, dtype=np.int64)
    if hasattr(cost, "request_offsets"):
        return cost.request_offsets(prompts, outputs)
    first, busy = cost.batch_timing(prompts.tolist(), outputs.tolist())
    if not hasattr(cost, "step_time"):
        return np.full(len(prompts), first), np.full(len(prompts), busy)
    b, p = len(prompts), int(prompts.max())
    steps = [cost.step_time(0, b, b * (p + k)) for k in range(1, int(outputs.max()))]
    ends = first + np.concatenate([[0.0], np.cumsum(steps)])
    return np.full(len(prompts), first), np.minimum(ends[outputs - 1], busy)
