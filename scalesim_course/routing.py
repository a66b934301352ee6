"""Routers: which replica serves the next request.

A router is a plain callable ``router(request, replicas, rng) -> int`` (the engine's contract,
see `scalesim_course.sim`): `request` is the arriving `Request`, `replicas` the read-only views
of the replicas that are up (each with ``outstanding``, ``queue_len``, ``busy``, ``id`` and,
with mixed fleets, ``speed``), `rng` the run's seeded numpy Generator. It returns a position in
`replicas`. A stateful router is an object with ``__call__``; make a fresh one for every run.

Load views may be stale (``ServingConfig(view_staleness=T)``): a router then sees load figures
up to T seconds old, which is what real load balancers see between health reports.

Sources for the algorithms:
* smooth weighted round robin: nginx, ``ngx_http_upstream_get_peer`` in
  src/http/ngx_http_upstream_round_robin.c (weights 5, 1, 1 give a a b a c a a);
* power of d choices: Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing",
  IEEE TPDS 12(10), 2001; Vvedenskaya, Dobrushin and Karpelevich, "Queueing system with
  selection of the shortest of two queues: an asymptotic approach", Problems of Information
  Transmission 32(1), 1996. Envoy's LEAST_REQUEST balancer samples ``choice_count`` = 2 hosts
  by default (envoy.config.cluster.v3.Cluster.LeastRequestLbConfig);
* peak EWMA: Finagle's ``PeakEwma`` load metric (also Linkerd's default balancer): cost =
  EWMA latency x (pending + 1), where a latency above the average is taken at once;
* consistent hashing with bounded loads: Mirrokni, Thorup and Zadimoghaddam, SODA 2018
  (arXiv:1608.01350), as in HAProxy's ``hash-balance-factor``.
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np

from ._checks import check_int, check_number, check_positive


# ----------------------------------------------------------------------------- stand-in views
class Replica(NamedTuple):
    """A stand-in for the engine's ReplicaView, to try a router by hand or in tests."""

    id: int
    outstanding: int = 0
    queue_len: int = 0
    busy: int = 0
    speed: float = 1.0
    state: str = "up"
    servers: int = 1
    kv_used: int = 0
    queued_tokens: int = 0

    @property
    def index(self) -> int:
        return self.id


def replicas(outstanding: Sequence[int], speed: Sequence[float] | None = None) -> tuple:
    """Stand-in replica views with the given outstanding requests (one server each).

    Args:
        outstanding: requests waiting or in service at each replica (ints >= 0).
        speed: each replica's speed factor (default 1.0).
    Returns:
        A tuple of `Replica`, numbered 0, 1, ...; busy = min(outstanding, 1).
    """
    counts = [check_int("outstanding", int(o) if isinstance(o, np.integer) else o, minimum=0)
              for o in outstanding]
    speeds = [1.0] * len(counts) if speed is None else [check_positive("speed", s) for s in speed]
    if len(speeds) != len(counts):
        raise ValueError(f"speed has {len(speeds)} entries, outstanding has {len(counts)}")
    return tuple(Replica(i, o, max(o - 1, 0), min(o, 1), s)
                 for i, (o, s) in enumerate(zip(counts, speeds)))


def _below(rng, n: int) -> int:
    """A uniform int in [0, n) from `rng`: int(random() * n), several times faster than
    Generator.integers for one number (the bias, below n / 2**53, is far below noise)."""
    return int(rng.random() * n)


def _need(replicas_) -> int:
    n = len(replicas_)
    if n == 0:
        raise ValueError("replicas is empty: there is no replica to route to")
    return n


# ----------------------------------------------------------------------------- simple routers
def random_choice(request, replicas, rng) -> int:
    """Route uniformly at random (with the run's generator): each replica an M/M/1 queue."""
    return _below(rng, _need(replicas))


class RoundRobin:
    """Route to replicas 0, 1, 2, ... in turn, ignoring their load (nginx's default)."""

    def __init__(self):
        self.next = 0

    def __call__(self, request, replicas, rng) -> int:
        k = self.next % _need(replicas)
        self.next = k + 1
        return k


def least_outstanding(request, replicas, rng) -> int:
    """Route to the replica with the fewest outstanding requests (join the shortest queue).

    Ties are broken uniformly at random with `rng`, so that an idle fleet shares the work
    instead of handing it all to replica 0.

    Args:
        request: the arriving request (unused).
        replicas: views of the replicas, each with ``outstanding``.
        rng: a numpy Generator.
    Returns:
        The position in `replicas` of a least loaded replica.
    Raises:
        ValueError: if `replicas` is empty.
    """
    _need(replicas)
    loads = [r.outstanding for r in replicas]
    low = min(loads)
    tied = [i for i, load in enumerate(loads) if load == low]
    return tied[0] if len(tied) == 1 else tied[_below(rng, len(tied))]


def power_of_d(request, replicas, rng, d: int = 2) -> int:
    """Sample d distinct replicas with `rng` and route to the least loaded of them.

    The sample is uniform over sets of d distinct replicas, in random order; ties among the
    sampled go to the first sampled, which favours no replica. With d >= len(replicas) every
    replica is sampled (join the shortest queue, random ties).

    Args:
        request: the arriving request (unused).
        replicas: views of the replicas, each with ``outstanding``.
        rng: a numpy Generator.
        d: how many replicas to sample, an int >= 1.
    Returns:
        The position in `replicas` of the chosen replica.
    Raises:
        ValueError: if d < 1 or `replicas` is empty.
    """
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
        raise ValueError(f"d must be an int >= 1, got {d!r}")
    n = _need(replicas)
    if d >= n:
        sample = rng.permutation(n).tolist()
    else:  # draw until d distinct: each new one uniform over those not yet drawn
        sample = [_below(rng, n)]
        while len(sample) < d:
            i = _below(rng, n)
            if i not in sample:
                sample.append(i)
    best = sample[0]
    low = replicas[best].outstanding
    for i in sample[1:]:
        if replicas[i].outstanding < low:
            best, low = i, replicas[i].outstanding
    return best


class _SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin over fixed weights (see smooth_weighted_round_robin)."""

    def __init__(self, weights):
        self.weights = _weights(weights)
        self.current = [0.0] * len(self.weights)
        self.total = sum(self.weights)

    def __call__(self, request, replicas, rng) -> int:
        if len(replicas) != len(self.weights):
            raise ValueError(f"this router has {len(self.weights)} weights but was given "
                             f"{len(replicas)} replicas")
        best = 0
        for i, w in enumerate(self.weights):
            self.current[i] += w
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return best


def _weights(weights) -> list[float]:
    ws = [check_number("weight", w) for w in weights]
    if not ws:
        raise ValueError("weights is empty: give one weight per replica")
    bad = [w for w in ws if w <= 0]
    if bad:
        raise ValueError(f"every weight must be > 0, got {bad[0]!r}")
    return ws


def smooth_weighted_round_robin(weights):
    """A stateful router that cycles through replicas in proportion to their weights, smoothly.

    nginx's algorithm: every replica i keeps a current weight c_i (initially 0). For each
    request, add each replica's weight to its current weight, pick the replica with the largest
    current weight (the lowest index on ties), and subtract the sum of all weights from the
    picked one's. Weights 5, 1, 1 give 0 0 1 0 2 0 0, then repeat.

    Args:
        weights: one weight per replica, numbers > 0.
    Returns:
        A router(request, replicas, rng) -> int; each router keeps its own state.
    Raises:
        ValueError: if weights is empty or a weight is <= 0 (when making the router), or the
            router is given a different number of replicas than weights (when called).
    """
    return _SmoothWeightedRoundRobin(weights)


def weighted_least_outstanding(request, replicas, rng) -> int:
    """Route to the least (outstanding + 1) / speed: the expected wait, if speeds are known."""
    _need(replicas)
    costs = [(r.outstanding + 1) / r.speed for r in replicas]
    low = min(costs)
    tied = [i for i, c in enumerate(costs) if c == low]
    return tied[0] if len(tied) == 1 else tied[_below(rng, len(tied))]


def least_tokens(request, replicas, rng) -> int:
    """Route to the replica with the fewest KV tokens held plus tokens queued (iteration mode):
    load measured in memory, not in requests. Random ties."""
    _need(replicas)
    loads = [r.kv_used + r.queued_tokens for r in replicas]
    low = min(loads)
    tied = [i for i, load in enumerate(loads) if load == low]
    return tied[0] if len(tied) == 1 else tied[_below(rng, len(tied))]


# ----------------------------------------------------------------------------- latency-aware
class PeakEWMA:
    """Route to the least EWMA service time x (outstanding + 1), learning each replica's speed.

    Finagle's peak-EWMA balancer measures the latency of responses. A router here sees only
    load, so this one infers completions from it: a replica that had `o` outstanding at the
    previous call, was sent `k` since and has `o'` now finished o + k - o' requests, and was
    busy for the time in between if o > 0 and o' > 0 (one server: a fair guess). The per-completion time is averaged with weight
    exp(-dt / decay), and a sample above the average replaces it at once (the "peak").
    Replicas never seen finishing anything keep the prior `initial` seconds.

    Args:
        decay: seconds over which old samples fade (Finagle's default is 10 s).
        initial: prior service time in seconds before anything was observed.
    """

    def __init__(self, decay: float = 10.0, initial: float = 1.0):
        self.decay = check_positive("decay", decay)
        self.initial = check_positive("initial", initial)
        self.state: dict = {}   # replica id -> [estimate, last outstanding, last time, sent]

    def __call__(self, request, replicas, rng) -> int:
        now = request.arrival
        costs = []
        for r in replicas:
            s = self.state.get(r.id)
            if s is None:
                s = self.state[r.id] = [self.initial, r.outstanding, now, 0]
            est, last, then, sent = s
            done = last + sent - r.outstanding
            if done > 0 and last > 0 and r.outstanding > 0 and now > then:  # busy throughout
                sample = (now - then) / done
                w = math.exp(-(now - then) / self.decay)
                est = sample if sample > est else w * est + (1 - w) * sample
            if done > 0 or last == 0:
                s[:] = [est, r.outstanding, now, 0]
            costs.append(est * (r.outstanding + 1))
        low = min(costs)
        tied = [i for i, c in enumerate(costs) if c == low]
        k = tied[0] if len(tied) == 1 else tied[_below(rng, len(tied))]
        self.state[replicas[k].id][3] += 1
        return k


# ----------------------------------------------------------------------------- affinity
def _mix(x: int) -> int:
    """SplitMix64 finaliser: a well-spread 64-bit hash of an int (Python's hash(int) is x)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class ConsistentHash:
    """Send requests with the same prompt_id to the same replica, with bounded load.

    Each replica owns `vnodes` points on a hash ring; a request's key (its ``prompt_id``, or its
    id when unique, -1) hashes to a point and goes to the owner of the next point clockwise,
    skipping replicas whose load would exceed ceil(c * (total outstanding + 1) / n). c = inf is
    plain consistent hashing; c close to 1 is nearly least-loaded. Mirrokni, Thorup and
    Zadimoghaddam (2018) show that this bound keeps every replica within c times the average.

    Args:
        c: balance factor > 1 (math.inf: no bound).
        vnodes: points per replica on the ring.
    """

    def __init__(self, c: float = 1.25, vnodes: int = 64):
        if not (isinstance(c, numbers.Real) and c > 1):
            raise ValueError(f"c must be a number > 1 (math.inf for no bound), got {c!r}")
        self.c = float(c)
        self.vnodes = check_int("vnodes", vnodes, minimum=1)
        self._ids: tuple = ()
        self._points: list = []
        self._owners: list = []

    def _ring(self, ids: tuple) -> None:
        pts = sorted((_mix(rid * 1_000_003 + v), rid) for rid in ids for v in range(self.vnodes))
        self._ids, self._points, self._owners = ids, [p for p, _ in pts], [o for _, o in pts]

    def __call__(self, request, replicas, rng) -> int:
        n = _need(replicas)
        ids = tuple(r.id for r in replicas)
        if ids != self._ids:
            self._ring(ids)
        position = {rid: i for i, rid in enumerate(ids)}
        key = request.prompt_id if request.prompt_id >= 0 else (1 << 40) + request.id
        start = bisect.bisect(self._points, _mix(key))
        if math.isinf(self.c):
            return position[self._owners[start % len(self._owners)]]
        cap = math.ceil(self.c * (sum(r.outstanding for r in replicas) + 1) / n)
        for step in range(len(self._owners)):
            k = position[self._owners[(start + step) % len(self._owners)]]
            if replicas[k].outstanding + 1 <= cap:
                return k
        raise RuntimeError("no replica under the load bound (cannot happen for c > 1)")


def prefix_hits(result, cache_size: int) -> np.ndarray:
    """Which requests would find their prompt's prefix already cached on their replica.

    A stated hit model (not a memory simulation): each replica keeps the KV of the last
    `cache_size` distinct prompt_ids it started, least recently used evicted first. A request
    hits if its prompt_id (>= 0) is cached when it starts. Unique prompts (-1) never hit.

    Args:
        result: a RunResult (uses replica, start and the workload's prompt_id).
        cache_size: prompt prefixes each replica holds, an int >= 1.
    Returns:
        A bool array, one per request.
    """
    from collections import OrderedDict

    check_int("cache_size", cache_size, minimum=1)
    pid = result.workload.prompt_id
    hits = np.zeros(len(pid), dtype=bool)
    caches: dict = {}
    order = np.argsort(np.where(np.isnan(result.start), np.inf, result.start), kind="stable")
    for i in order.tolist():
        rep, p = int(result.replica[i]), int(pid[i])
        if p < 0 or rep < 0 or np.isnan(result.start[i]):
            continue
        cache = caches.setdefault(rep, OrderedDict())
        if p in cache:
            hits[i] = True
            cache.move_to_end(p)
        else:
            cache[p] = True
            if len(cache) > cache_size:
                cache.popitem(last=False)
    return hits


# ----------------------------------------------------------------------------- measurements
def mean_sojourn(result, warmup: float = 0.0, batches: int = 10) -> tuple[float, float]:
    """Mean time in system of requests arriving after `warmup`, and its standard error.

    The standard error comes from batch means: the kept requests are split by arrival time into
    `batches` equal time windows, whose means are nearly independent when each window is much
    longer than the queues' memory.

    Args:
        result: a RunResult.
        warmup: seconds at the start whose arrivals are left out (the empty start).
        batches: number of time windows, an int >= 2.
    Returns:
        (mean, standard error), both in seconds.
    """
    check_int("batches", batches, minimum=2)
    arrival, latency = result.arrival, result.latency
    keep = (arrival >= warmup) & ~np.isnan(latency)
    if keep.sum() < batches:
        raise ValueError(f"only {int(keep.sum())} requests arrive after warmup={warmup}")
    a, lat = arrival[keep], latency[keep]
    edges = np.linspace(a[0], a[-1], batches + 1)
    which = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, batches - 1)
    means = np.array([lat[which == b].mean() for b in range(batches)])
    return float(lat.mean()), float(means.std(ddof=1) / math.sqrt(batches))


def outstanding_over_time(result, times) -> np.ndarray:
    """Requests waiting or in service at each replica at each of `times`.

    Args:
        result: a RunResult.
        times: sorted times in seconds.
    Returns:
        An int array of shape (len(times), number of replicas).
    """
    times = np.asarray(times, dtype=float)
    rep = np.asarray(result.replica)
    n_rep = len(result.busy_time)
    out = np.zeros((len(times), n_rep), dtype=int)
    finish = np.where(np.isnan(result.finish), np.inf, result.finish)
    for k in range(n_rep):
        mine = rep == k
        arrived = np.searchsorted(np.sort(result.arrival[mine]), times, side="right")
        done = np.searchsorted(np.sort(finish[mine]), times, side="right")
        out[:, k] = arrived - done
    return out


def busy_share(result) -> np.ndarray:
    """Each replica's busy fraction: its busy server-seconds over its up server-seconds."""
    return result.busy_time / (result.up_time * result.servers)
