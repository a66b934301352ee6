"""Autoscaling: policies on the simulator's autoscaler hook, cold starts, cost and outcomes.

Every policy is a callable ``policy(view: sim.ClusterView) -> int`` (desired replicas) that the
engine calls every ``policy.interval`` seconds (pass it as ``autoscale_interval``; `run_day`
does). Policies that remember the past (windows, cooldowns) are small classes: make a fresh one
for every run.

Sources of the algorithms and their defaults:

* Kubernetes HorizontalPodAutoscaler (HPA): "Horizontal Pod Autoscaling",
  https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ (algorithm
  details; default behaviour; ``--horizontal-pod-autoscaler-sync-period`` 15 s and
  ``--horizontal-pod-autoscaler-tolerance`` 0.1), and the controller
  (kubernetes/pkg/controller/podautoscaler/horizontal.go, ``stabilizeRecommendation``: a past
  recommendation counts if its time is *after* now - window).
* Knative Pod Autoscaler (KPA): https://knative.dev/docs/serving/autoscaling/kpa-specific/
  (stable window 60 s, panic window 10% of it, panic threshold 200%),
  https://knative.dev/docs/serving/autoscaling/concurrency/ (soft target 100 concurrent
  requests per replica, target utilisation 70%),
  https://knative.dev/docs/serving/autoscaling/scale-to-zero/ (grace period 30 s), and the
  autoscaler (knative/serving/pkg/autoscaler/scaling/autoscaler.go: panic when the panic-window
  demand is at least 200% of the ready replicas; while panicking it never scales down).
* The classic threshold rule with a cooldown: AWS EC2 Auto Scaling simple scaling policies
  (https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-scaling-simple-step.html; default
  cooldown 300 s).
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable

import numpy as np

from ._checks import check_callable, check_int, check_non_negative, check_number, check_positive
from . import costmodel
from .workload import AZURE_CONV_OUTPUT, AZURE_CONV_PROMPT, Workload, lognormal_lengths, \
    thinned_arrivals

# ----------------------------------------------------------------------------- constants
HPA_SYNC_PERIOD = 15.0           # s, --horizontal-pod-autoscaler-sync-period (k8s docs)
HPA_TOLERANCE = 0.1              # --horizontal-pod-autoscaler-tolerance (k8s docs)
HPA_DOWN_STABILIZATION = 300.0   # s, default behavior.scaleDown.stabilizationWindowSeconds
HPA_UP_PODS = 4                  # default scaleUp policies: 4 pods or 100% per 15 s, the larger
HPA_UP_PERCENT = 100

KPA_TICK = 2.0                   # s, Knative tick-interval (config-autoscaler)
KPA_TARGET = 100                 # container-concurrency-target-default
KPA_UTILIZATION = 0.7            # container-concurrency-target-percentage / target utilisation 70%
KPA_STABLE_WINDOW = 60.0         # s, stable-window
KPA_PANIC_WINDOW_PERCENT = 10.0  # panic-window-percentage: panic window = 6 s
KPA_PANIC_THRESHOLD = 2.0        # panic-threshold-percentage 200%
KPA_SCALE_TO_ZERO_GRACE = 30.0   # s, scale-to-zero-grace-period
KPA_MAX_SCALE_UP_RATE = 1000.0   # max-scale-up-rate
KPA_MAX_SCALE_DOWN_RATE = 2.0    # max-scale-down-rate

# An ASSUMPTION, not a quote: about the 2024 on-demand price of a one-L4 cloud instance
# (AWS g6.xlarge in us-east-1 listed about $0.80 per hour). Prices change and differ by region
# and provider; the comparison between policies scales with it and does not depend on it.
PRICE_PER_REPLICA_HOUR = 0.80


# ----------------------------------------------------------------------------- cold start, cost
def cold_start_seconds(model, bandwidth: float, overhead: float = 0.0) -> float:
    """Seconds until a new replica serves: read all weights at `bandwidth`, plus `overhead`.

    Args:
        model: a costmodel.ModelSpec or catalogue name ("llama-2-7b"); its weight_bytes are read.
        bandwidth: bytes per second the weights load at (disk, network or object store).
        overhead: seconds for everything else (scheduling the machine, pulling the container
            image, initialising CUDA), an assumption you state.
    Returns:
        weight_bytes / bandwidth + overhead.
    """
    spec = costmodel.get_model(model)
    check_positive("bandwidth", bandwidth)
    check_non_negative("overhead", overhead)
    return spec.weight_bytes / bandwidth + overhead


class SlotCost:
    """Request-level timing of an LLM replica that runs up to `slots` sequences at once.

    Each of the replica's `slots` servers holds one sequence: its first token comes after the
    prefill of its prompt, the rest at one decode step each, where a decode step is timed by
    the roofline for a full batch of `slots` sequences of `context` tokens. This is a
    conservative stand-in for continuous batching (every slot is assumed busy), cheap enough to
    simulate a day; notebook 02 simulates the steps themselves.

    Args:
        model, gpu: names or specs for costmodel.RooflineCost.
        slots: sequences a replica runs at once (the request-mode ``servers``).
        context: tokens per sequence assumed for the decode step (default: the Azure
            conversation trace's mean prompt plus half its mean output).
    """

    def __init__(self, model="llama-2-7b", gpu="l4", slots: int = 4, context: int | None = None,
                 **roofline):
        self.roofline = costmodel.RooflineCost(model, gpu, **roofline)
        self.slots = check_int("slots", slots, minimum=1)
        self.context = (AZURE_CONV_PROMPT[0] + AZURE_CONV_OUTPUT[0] // 2 if context is None
                        else check_int("context", context, minimum=1))
        self.tpot = self.roofline.step_time(0, self.slots, self.slots * self.context)

    def __repr__(self) -> str:
        return (f"SlotCost({self.roofline.model.name!r}, {self.roofline.gpu.name!r}, "
                f"slots={self.slots}, context={self.context})")

    def batch_timing(self, prompt_tokens, output_tokens) -> tuple[float, float]:
        """(seconds to the first token, seconds busy) of one request (a batch of one)."""
        if len(prompt_tokens) != 1 or len(output_tokens) != 1:
            raise ValueError("SlotCost serves one request per slot: use it without a batcher")
        first = self.roofline.step_time(int(prompt_tokens[0]), 0, 0)
        return first, first + (int(output_tokens[0]) - 1) * self.tpot

    def busy_seconds(self, workload: Workload) -> np.ndarray:
        """Slot-seconds each request of `workload` occupies."""
        return np.array([self.batch_timing([p], [o])[1] for p, o in
                         zip(workload.prompt_tokens.tolist(), workload.output_tokens.tolist())])


# ----------------------------------------------------------------------------- traffic
def weekly_rate(rate_fn: Callable, weekend: float = 0.6, first_day: int = 0) -> Callable:
    """`rate_fn` scaled by `weekend` on Saturdays and Sundays (days 5 and 6 of the week).

    Args:
        rate_fn: a vectorised rate (requests/s) of time in seconds, e.g. workload.diurnal_rate.
        weekend: factor on weekend days, in (0, 1].
        first_day: weekday of time 0 (0 = Monday).
    """
    if not 0 < check_number("weekend", weekend) <= 1:
        raise ValueError(f"weekend must be in (0, 1], got {weekend!r}")
    check_int("first_day", first_day, minimum=0)

    def rate(t):
        t = np.asarray(t, dtype=float)
        day = (np.floor(t / 86_400.0).astype(int) + first_day) % 7
        return rate_fn(t) * np.where(day >= 5, weekend, 1.0)

    rate.max_rate = getattr(rate_fn, "max_rate", None)
    return rate


def traffic(rate_fn: Callable, duration: float = 86_400.0, seed=0,
            max_tokens: int = 8192) -> Workload:
    """A time-varying Poisson workload with Azure-conversation-like prompt and output lengths.

    Args:
        rate_fn: requests/s at given times, with attribute ``max_rate`` (workload.diurnal_rate).
        duration: seconds of traffic.
        seed: int or numpy Generator.
        max_tokens: cap on each length.
    """
    from ._checks import rng_from

    rng = rng_from(seed)
    arrival = thinned_arrivals(rate_fn, rate_fn.max_rate, duration, rng)
    n = len(arrival)
    prompt = lognormal_lengths(*AZURE_CONV_PROMPT, n, rng, maximum=max_tokens)
    output = lognormal_lengths(*AZURE_CONV_OUTPUT, n, rng, maximum=max_tokens)
    return Workload.build(arrival, prompt, output)


def stretch(workload: Workload, duration: float) -> Workload:
    """The same requests with arrival times scaled so that the last one arrives at `duration`.

    A 58-minute trace stretched over a day keeps its shape (bursts, lulls) but at a 1/25 rate.
    """
    check_positive("duration", duration)
    if workload.duration <= 0:
        raise ValueError("workload spans no time: every request arrives at once")
    return Workload.build(workload.arrival * (duration / workload.duration),
                          workload.prompt_tokens, workload.output_tokens)


def rate_from_history(arrivals, period: float = 86_400.0, bin_seconds: float = 900.0) -> Callable:
    """A forecast: the arrival rate of each `bin_seconds` slot of a past period, repeated.

    Args:
        arrivals: arrival times (s) of one or more past periods (yesterday's traffic).
        period: the length of the cycle (a day).
        bin_seconds: width of the slots averaged over.
    Returns:
        rate_fn(t): requests/s expected at time t (periodic), with attribute ``max_rate``.
    """
    check_positive("period", period)
    check_positive("bin_seconds", bin_seconds)
    a = np.asarray(arrivals, dtype=float)
    if a.size == 0:
        raise ValueError("arrivals is empty: nothing to forecast from")
    n_bins = int(math.ceil(period / bin_seconds))
    periods = max(1.0, math.ceil(a.max() / period))
    counts = np.bincount(((a % period) // bin_seconds).astype(int), minlength=n_bins)[:n_bins]
    rates = counts / (bin_seconds * periods)

    def rate(t):
        t = np.asarray(t, dtype=float)
        return rates[((t % period) // bin_seconds).astype(int)]

    rate.max_rate = float(rates.max())
    return rate


# ----------------------------------------------------------------------------- what policies see
def current_replicas(view) -> int:
    """Replicas the fleet has asked for: up plus starting (draining ones are leaving)."""
    return view.n_up + view.n_starting


def concurrency(view) -> float:
    """Requests in flight over the last interval, summed over replicas, held requests included.

    Uses the engine's time-averaged ``view.concurrency`` when it has one, else the requests
    outstanding right now.
    """
    per = getattr(view, "concurrency", None)
    if per is not None:
        return float(sum(per)) + getattr(view, "held", 0)
    return float(view.outstanding) + getattr(view, "held", 0)


def waiting(view) -> float:
    """Requests waiting for a slot now (queues of all replicas plus held requests)."""
    per = getattr(view, "queue_lens", None)
    total = sum(per) if per is not None else sum(r.queue_len for r in view.replicas)
    return float(total) + getattr(view, "held", 0)


def busy_fraction(view) -> float:
    """Mean share of busy slots over the replicas that are up (0 when none is up).

    Uses the engine's time-averaged ``view.busy_fraction`` when it has one, else the share of
    busy servers right now.
    """
    ups = [i for i, r in enumerate(view.replicas) if r.state == "up"]
    if not ups:
        return 0.0
    per = getattr(view, "busy_fraction", None)
    if per is not None:
        return float(sum(per[i] for i in ups) / len(ups))
    return float(sum(view.replicas[i].busy / view.replicas[i].servers for i in ups) / len(ups))


# ----------------------------------------------------------------------------- the exercises
def hpa_desired_replicas(current: int, metric: float, target: float, min_replicas: int,
                         max_replicas: int, tolerance: float = HPA_TOLERANCE) -> int:
    """The Kubernetes HPA's replica count for one sync: ratio, tolerance, scale-up limit, bounds.

    ratio = metric / target. If |ratio - 1| <= tolerance the answer is `current`; otherwise
    ceil(current * ratio), at most max(2 * current, current + 4) (the default scale-up limit per
    15 s sync), and always clamped into [min_replicas, max_replicas].

    Args:
        current: replicas now, an int >= 1.
        metric: the measured per-replica metric, a number >= 0.
        target: the target per-replica value, > 0.
        min_replicas, max_replicas: bounds, 1 <= min_replicas <= max_replicas.
        tolerance: dead band around ratio 1, >= 0.
    Returns:
        The desired replicas, an int.
    Raises:
        ValueError: for a bad argument (nan metric included).
    """
    check_int("current", current, minimum=1)
    if check_number("metric", metric) < 0:
        raise ValueError(f"metric must be >= 0, got {metric!r}")
    check_positive("target", target)
    check_int("min_replicas", min_replicas, minimum=1)
    check_int("max_replicas", max_replicas, minimum=min_replicas)
    check_non_negative("tolerance", tolerance)
    ratio = metric / target
    desired = current if abs(ratio - 1.0) <= tolerance else math.ceil(current * ratio)
    limit = max(current * (100 + HPA_UP_PERCENT) // 100, current + HPA_UP_PODS)
    return int(min(max(min(desired, limit), min_replicas), max_replicas))


def stabilized_recommendation(history, now: float, window: float, recommendation: int) -> int:
    """The highest recommendation in the sliding window (now - window, now], the new one included.

    Args:
        history: past (time, recommendation) pairs, in any order; left unchanged. Pairs whose
            time is <= now - window (or after now) do not count.
        now: the current time (s).
        window: the window's length (s), >= 0; 0 keeps only `recommendation`.
        recommendation: this sync's recommendation, an int.
    Returns:
        max of `recommendation` and the recommendations of history in the window, an int.
    Raises:
        ValueError: if window < 0.
    """
    check_non_negative("window", window)
    best = int(recommendation)
    for t, rec in history:
        if now - window < t <= now and rec > best:
            best = int(rec)
    return best


def threshold_step(utilization: float, current: int, now: float, last_scaled, high: float,
                   low: float, cooldown: float, min_replicas: int, max_replicas: int) -> int:
    """One decision of the classic threshold rule with hysteresis and a cooldown.

    Within `cooldown` seconds of the last change (now - last_scaled < cooldown) keep `current`.
    Otherwise add one replica if utilization > high, remove one if utilization < low, else keep
    `current` (the band low..high, ends included, is the hysteresis). The answer is always
    clamped into [min_replicas, max_replicas].

    Args:
        utilization: the measured utilisation, a number >= 0.
        current: replicas now, an int >= 0.
        now: the current time (s).
        last_scaled: time of the last change (s), or None if there was none.
        high, low: thresholds, 0 <= low < high.
        cooldown: seconds to wait after a change, >= 0.
        min_replicas, max_replicas: bounds, 0 <= min_replicas <= max_replicas.
    Returns:
        The desired replicas, an int.
    Raises:
        ValueError: for a bad argument (nan utilization, low >= high, negative cooldown ...).
    """
    if check_number("utilization", utilization) < 0:
        raise ValueError(f"utilization must be >= 0, got {utilization!r}")
    check_int("current", current, minimum=0)
    check_non_negative("low", low)
    if check_number("high", high) <= low:
        raise ValueError(f"high must be > low, got high={high!r}, low={low!r}")
    check_non_negative("cooldown", cooldown)
    check_int("min_replicas", min_replicas, minimum=0)
    check_int("max_replicas", max_replicas, minimum=min_replicas)
    desired = current
    if last_scaled is None or now - last_scaled >= cooldown:
        if utilization > high:
            desired = current + 1
        elif utilization < low:
            desired = current - 1
    return int(min(max(desired, min_replicas), max_replicas))


# ----------------------------------------------------------------------------- policies
class Policy:
    """Base of the stateful policies: ``interval`` (seconds between calls) and a decision log."""

    interval: float = HPA_SYNC_PERIOD
    name: str = "policy"

    def __call__(self, view) -> int:  # pragma: no cover - subclasses decide
        raise NotImplementedError


class HPA(Policy):
    """The Kubernetes HorizontalPodAutoscaler with its default behaviour, on one metric.

    Every `sync` seconds: the per-replica metric is the load summed over the fleet divided by
    the replicas asked for (replicas still starting count as zero load, as the HPA treats pods
    that are not ready on scale-up); `desired` turns it into a recommendation (ratio,
    tolerance, scale-up limit, bounds); a recommendation below the current count is replaced by
    the highest one of the last `window` seconds (`stabilize`), never more than the current
    count. Between syncs it keeps the count.

    Args:
        target: the per-replica target of `metric` (e.g. 0.7 x slots requests in flight).
        metric: view -> load summed over the fleet (default `concurrency`).
        window: scale-down stabilisation window (s), default 300.
        sync: seconds between decisions, default 15.
        tolerance: default 0.1.
        min_replicas, max_replicas: bounds (min >= 1: the HPA does not scale to zero).
        desired: the function of one sync (default `hpa_desired_replicas`; a learner's works).
        stabilize: the window rule (default `stabilized_recommendation`).
    """

    def __init__(self, target: float, metric: Callable = concurrency, *,
                 window: float = HPA_DOWN_STABILIZATION, sync: float = HPA_SYNC_PERIOD,
                 tolerance: float = HPA_TOLERANCE, min_replicas: int = 1, max_replicas: int = 50,
                 desired: Callable | None = None, stabilize: Callable | None = None,
                 name: str = "Kubernetes HPA"):
        self.target = check_positive("target", target)
        check_callable("metric", metric)
        self.metric = metric
        self.window = check_non_negative("window", window)
        self.interval = check_positive("sync", sync)
        self.tolerance = check_non_negative("tolerance", tolerance)
        self.min_replicas = check_int("min_replicas", min_replicas, minimum=1)
        self.max_replicas = check_int("max_replicas", max_replicas, minimum=min_replicas)
        self.desired = desired or hpa_desired_replicas
        self.stabilize = stabilize or stabilized_recommendation
        check_callable("desired", self.desired)
        check_callable("stabilize", self.stabilize)
        self.history: deque = deque()
        self.name = name

    def __call__(self, view) -> int:
        current = current_replicas(view)
        if current == 0:
            return self.min_replicas
        per_replica = self.metric(view) / current
        rec = int(self.desired(current, per_replica, self.target, self.min_replicas,
                               self.max_replicas, self.tolerance))
        final = rec
        if rec < current:
            final = min(current, int(self.stabilize(tuple(self.history), view.now, self.window,
                                                    rec)))
        self.history.append((view.now, rec))
        while self.history and self.history[0][0] <= view.now - self.window:
            self.history.popleft()
        return final


class KPA(Policy):
    """The Knative Pod Autoscaler: stable and panic windows on concurrency, scale to zero.

    Every `tick` seconds it samples the requests in flight (`concurrency`, held requests
    included) and averages the samples over the stable window (60 s) and the panic window (6 s).
    Each average divided by target x utilization, rounded up, is a replica count. It panics
    when the panic count is at least `panic_threshold` times the ready replicas, and stays in
    panic until a whole stable window passes without that; while panicking it uses the panic
    count and never scales down. Counts are limited to [ready / max_scale_down_rate,
    ready x max_scale_up_rate]. With min_replicas = 0 it scales to zero once the stable average
    is zero, after a further grace period.

    Args:
        target: soft concurrency target per replica (Knative's default 100 suits web servers;
            an LLM replica runs only `slots` sequences at once, so use its slot count).
        utilization: the share of the target aimed at, default 0.7.
        stable_window, panic_window_percent, panic_threshold, scale_to_zero_grace, tick:
            Knative's defaults (60 s, 10%, 2.0, 30 s, 2 s).
        scale_down_delay: Knative's scale-down-delay (default 0 s): keep the highest count of
            the last this many seconds (https://knative.dev/docs/serving/autoscaling/
            scale-bounds/#scale-down-delay).
        min_replicas, max_replicas: bounds; 0 allows scale to zero.
    """

    def __init__(self, target: float = KPA_TARGET, utilization: float = KPA_UTILIZATION, *,
                 stable_window: float = KPA_STABLE_WINDOW,
                 panic_window_percent: float = KPA_PANIC_WINDOW_PERCENT,
                 panic_threshold: float = KPA_PANIC_THRESHOLD,
                 scale_to_zero_grace: float = KPA_SCALE_TO_ZERO_GRACE, tick: float = KPA_TICK,
                 max_scale_up_rate: float = KPA_MAX_SCALE_UP_RATE,
                 max_scale_down_rate: float = KPA_MAX_SCALE_DOWN_RATE,
                 scale_down_delay: float = 0.0, min_replicas: int = 0, max_replicas: int = 50,
                 name: str = "Knative KPA"):
        self.per_replica = check_positive("target", target) * check_positive("utilization",
                                                                             utilization)
        self.stable_window = check_positive("stable_window", stable_window)
        self.panic_window = self.stable_window * check_positive(
            "panic_window_percent", panic_window_percent) / 100.0
        self.panic_threshold = check_positive("panic_threshold", panic_threshold)
        self.grace = check_non_negative("scale_to_zero_grace", scale_to_zero_grace)
        self.interval = check_positive("tick", tick)
        self.up_rate = check_positive("max_scale_up_rate", max_scale_up_rate)
        self.down_rate = check_positive("max_scale_down_rate", max_scale_down_rate)
        self.min_replicas = check_int("min_replicas", min_replicas, minimum=0)
        self.max_replicas = check_int("max_replicas", max_replicas, minimum=max(1, min_replicas))
        self.samples: deque = deque()
        self.panic_since = None      # time of the last over-threshold tick while panicking
        self.max_panic = 0
        self.zero_since = None
        self.panics = 0              # how many times it entered panic mode
        self.delay = check_non_negative("scale_down_delay", scale_down_delay)
        self.decisions: deque = deque()
        self.name = name

    def __call__(self, view) -> int:
        now = view.now
        self.samples.append((now, concurrency(view)))
        while self.samples and self.samples[0][0] <= now - self.stable_window:
            self.samples.popleft()
        stable = sum(v for _, v in self.samples) / len(self.samples)
        recent = [v for t, v in self.samples if t > now - self.panic_window]
        panic = sum(recent) / len(recent) if recent else stable
        ready = max(1, view.n_up)
        want_stable = math.ceil(stable / self.per_replica - 1e-9)
        want_panic = math.ceil(panic / self.per_replica - 1e-9)
        up_limit = math.ceil(self.up_rate * ready)
        down_limit = math.floor(ready / self.down_rate)
        want_stable = min(max(want_stable, down_limit), up_limit)
        want_panic = min(max(want_panic, down_limit), up_limit)
        over = want_panic / ready >= self.panic_threshold
        if over:
            if self.panic_since is None:
                self.panics += 1
                self.max_panic = 0
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= self.stable_window:
            self.panic_since = None
        desired = want_stable
        if self.panic_since is not None:
            self.max_panic = max(self.max_panic, want_panic, current_replicas(view))
            desired = self.max_panic
        if desired == 0 and stable == 0:
            self.zero_since = now if self.zero_since is None else self.zero_since
            if now - self.zero_since < self.grace:
                desired = 1 if current_replicas(view) > 0 else 0
        else:
            self.zero_since = None
            desired = max(desired, 1) if stable > 0 else desired
        desired = int(min(max(desired, self.min_replicas), self.max_replicas))
        if self.delay > 0:  # Knative's scale-down-delay: the highest count of the last delay s
            held = stabilized_recommendation(self.decisions, now, self.delay, desired)
            self.decisions.append((now, desired))
            while self.decisions and self.decisions[0][0] <= now - self.delay:
                self.decisions.popleft()
            desired = held
        return desired


class Threshold(Policy):
    """The classic rule: one replica more above `high` utilisation, one less below `low`,
    nothing within `cooldown` seconds of the last change.

    Args:
        high, low, cooldown, min_replicas, max_replicas: as `threshold_step`.
        metric: view -> utilisation (default `busy_fraction`, the busy share of slots).
        interval: seconds between decisions.
        step: the decision (default `threshold_step`; a learner's works).
    """

    def __init__(self, high: float = 0.8, low: float = 0.4, cooldown: float = 60.0, *,
                 metric: Callable = busy_fraction, interval: float = HPA_SYNC_PERIOD,
                 min_replicas: int = 1, max_replicas: int = 50, step: Callable | None = None,
                 name: str = "threshold + cooldown"):
        self.high, self.low, self.cooldown = high, low, cooldown
        self.metric = metric
        self.interval = check_positive("interval", interval)
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.step = step or threshold_step
        check_callable("step", self.step)
        self.last_scaled = None
        self.name = name
        threshold_step(0.0, max(1, min_replicas), 0.0, None, high, low, cooldown, min_replicas,
                       max_replicas)  # checks the settings once, with clear errors

    def __call__(self, view) -> int:
        current = current_replicas(view)
        want = int(self.step(self.metric(view), current, view.now, self.last_scaled, self.high,
                             self.low, self.cooldown, self.min_replicas, self.max_replicas))
        if want != current:
            self.last_scaled = view.now
        return want


class QueueLength(Policy):
    """Scale on what an LLM server reports: requests waiting for a slot and requests running.

    vLLM exports both (``vllm:num_requests_waiting``, ``vllm:num_requests_running``), and
    Google's guide to autoscaling LLM inference recommends the queue size as the scale-up
    signal (https://cloud.google.com/kubernetes-engine/docs/best-practices/machine-learning/
    inference/autoscaling). Every `interval` seconds:

    * requests waiting: add a replica per `slots` waiting requests, minus the replicas already
      starting (their slots are on the way), at most max(2 x current, current + 4) in all;
    * nothing waiting: the replicas the running requests need at `utilization`,
      ceil(running / (slots x utilization)), held at the highest such count of the last
      `window` seconds, never more than now.

    Args:
        slots: slots per replica.
        utilization: target busy share of slots when scaling down.
        window: scale-down stabilisation (s).
    """

    def __init__(self, slots: int, utilization: float = 0.7, *, window: float = 300.0,
                 interval: float = HPA_SYNC_PERIOD, min_replicas: int = 1, max_replicas: int = 50,
                 name: str = "queue length"):
        self.slots = check_int("slots", slots, minimum=1)
        self.utilization = check_positive("utilization", utilization)
        self.window = check_non_negative("window", window)
        self.interval = check_positive("interval", interval)
        self.min_replicas = check_int("min_replicas", min_replicas, minimum=0)
        self.max_replicas = check_int("max_replicas", max_replicas, minimum=max(1, min_replicas))
        self.history: deque = deque()
        self.name = name

    def __call__(self, view) -> int:
        current = current_replicas(view)
        queued = waiting(view)
        running = sum(r.busy for r in view.replicas)
        if queued > 0:
            more = max(0, math.ceil(queued / self.slots) - view.n_starting)
            want = min(current + more, max(2 * current, current + HPA_UP_PODS))
        else:
            want = math.ceil(running / (self.slots * self.utilization) - 1e-9)
        want = int(min(max(want, self.min_replicas), self.max_replicas))
        final = want
        if want < current:
            final = min(current, stabilized_recommendation(self.history, view.now, self.window,
                                                           want))
        self.history.append((view.now, want))
        while self.history and self.history[0][0] <= view.now - self.window:
            self.history.popleft()
        return final


class Predictive(Policy):
    """Scale ahead of a forecast rate, optionally never below a reactive policy.

    desired = ceil(rate(now + lead) x busy_per_request / (slots x utilization)): the replicas
    that the forecast load needs `lead` seconds from now (set lead to the cold-start time, so
    that they are ready when the load comes).

    Args:
        rate_fn: forecast requests/s at given times (workload.diurnal_rate, rate_from_history).
        busy_per_request: mean slot-seconds a request occupies.
        slots: slots per replica.
        utilization: target share of busy slots.
        lead: seconds to look ahead.
        reactive: another policy; the answer is the larger of the two (it sees every call).
        interval: seconds between decisions.
    """

    def __init__(self, rate_fn: Callable, busy_per_request: float, slots: int,
                 utilization: float = 0.7, lead: float = 0.0, *, reactive: Callable | None = None,
                 interval: float = HPA_SYNC_PERIOD, min_replicas: int = 1,
                 max_replicas: int = 50, name: str = "predictive"):
        check_callable("rate_fn", rate_fn)
        self.rate_fn = rate_fn
        self.per_request = check_positive("busy_per_request", busy_per_request)
        self.capacity = check_int("slots", slots, minimum=1) * check_positive("utilization",
                                                                            utilization)
        self.lead = check_non_negative("lead", lead)
        self.reactive = reactive
        self.interval = getattr(reactive, "interval", interval) if reactive else interval
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.name = name

    def __call__(self, view) -> int:
        rate = float(np.asarray(self.rate_fn(np.array([view.now + self.lead])))[0])
        want = math.ceil(rate * self.per_request / self.capacity)
        if self.reactive is not None:
            want = max(want, int(self.reactive(view)))
        return int(min(max(want, self.min_replicas), self.max_replicas))


# ----------------------------------------------------------------------------- running a day
def run_day(workload: Workload, policy, cost: SlotCost, *, startup_delay: float,
            replicas: int = 1, seed=0, **settings):
    """Serve `workload` with `cost.slots` slots per replica, scaled by `policy`.

    Args:
        workload: the requests.
        policy: an autoscaler (with ``interval``; a plain function is called every 15 s), or
            None for a fixed fleet of `replicas`.
        cost: the replicas' SlotCost.
        startup_delay: cold start (s) from a scale-up decision until the replica serves.
        replicas: replicas up at time 0.
        settings: more ServingConfig fields (min_replicas, max_replicas, ...).
    Returns:
        The sim.RunResult.
    """
    from . import sim

    interval = getattr(policy, "interval", HPA_SYNC_PERIOD)
    floor = getattr(policy, "min_replicas", 1)
    settings.setdefault("min_replicas", min(floor, replicas) if policy is not None else replicas)
    settings.setdefault("max_replicas", max(getattr(policy, "max_replicas", 1000), replicas))
    return sim.simulate(workload, servers=cost.slots, cost=cost, autoscaler=policy,
                        autoscale_interval=interval, startup_delay=startup_delay,
                        replicas=replicas, seed=seed, **settings)


# ----------------------------------------------------------------------------- outcomes
def fleet_series(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, replicas up, replicas starting) after each change of the fleet, as arrays."""
    log = getattr(result, "fleet_log", None) or result.fleet
    arr = np.array([(t, up, st) for t, up, st in log], dtype=float)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def _step_integral(times, values, end: float) -> float:
    """Integral of a right-continuous step function from times[0] to `end`."""
    t = np.append(times, end)
    return float(np.sum(values * np.clip(np.diff(t), 0, None)))


def provisioned_replica_seconds(result) -> float:
    """Replica-seconds paid for: from each scale-up decision (or 0) until the replica stops.

    Uses the engine's ``RunResult.provisioned_replica_seconds`` when it reports one; otherwise
    integrates (up + starting) replicas over the fleet log, which misses draining time.
    """
    got = getattr(result, "provisioned_replica_seconds", None)
    if got is not None:
        return float(got)
    t, up, st = fleet_series(result)
    end = getattr(result, "stopped_at", None) or result.end_time
    return _step_integral(t, up + st, end)


def scale_events(result) -> int:
    """How many times the autoscaler changed the replica count it asked for."""
    events = getattr(result, "scale_events", None)
    if events is not None:
        return len(events)
    _, up, st = fleet_series(result)
    asked = up + st
    return int(np.count_nonzero(np.diff(asked)))


def needed_replicas(workload: Workload, busy_seconds, slots: int, utilization: float = 1.0,
                    bin_seconds: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
    """Replicas the offered work needs in each time bin: its slot-seconds over slots x bin x util.

    Args:
        workload: the requests; each counts in the bin of its arrival.
        busy_seconds: slot-seconds each request occupies (SlotCost.busy_seconds).
        slots: slots per replica.
        utilization: the busy share a replica may run at (1.0: exactly the work, no headroom).
        bin_seconds: bin width.
    Returns:
        (bin start times, needed replicas as floats).
    """
    check_positive("bin_seconds", bin_seconds)
    busy = np.asarray(busy_seconds, dtype=float)
    if busy.shape != workload.arrival.shape:
        raise ValueError(f"busy_seconds has {busy.size} entries, workload {len(workload)}")
    n_bins = int(math.ceil((workload.duration + 1e-9) / bin_seconds))
    work = np.bincount((workload.arrival // bin_seconds).astype(int), weights=busy,
                       minlength=n_bins)
    return np.arange(len(work)) * bin_seconds, work / (slots * utilization * bin_seconds)


def outcomes(result, *, busy_seconds, slots: int, ttft_slo: float, tpot_slo: float,
             price_per_hour: float = PRICE_PER_REPLICA_HOUR, utilization: float = 1.0,
             bin_seconds: float = 300.0) -> dict:
    """The headline numbers of an autoscaled run.

    Returns a dict: slo_attainment (share of requests with TTFT <= ttft_slo and TPOT <=
    tpot_slo; unfinished ones fail), goodput (such requests per second of the day), ttft_p99
    (s), replica_hours (provisioned, start-up included), cost (replica_hours x price_per_hour),
    over_hours and under_hours (replica-hours provisioned above / up below what the work of
    each `bin_seconds` bin needed at `utilization`, see `needed_replicas`) and scale_events.
    """
    from . import metrics

    duration = max(result.workload.duration, 1e-9)
    ok = metrics.slo_attainment(result.ttft, result.tpot, ttft_slo=ttft_slo, tpot_slo=tpot_slo)
    good = metrics.goodput(result.ttft, result.tpot, ttft_slo=ttft_slo, tpot_slo=tpot_slo,
                           duration=duration)
    hours = provisioned_replica_seconds(result) / 3600.0
    bins, need = needed_replicas(result.workload, busy_seconds, slots, utilization, bin_seconds)
    t, up, st = fleet_series(result)
    grid = bins + bin_seconds / 2  # the fleet in the middle of each bin
    idx = np.searchsorted(t, grid, side="right") - 1
    asked, ready = (up + st)[idx], up[idx]
    ttft = result.ttft
    return {"slo_attainment": ok, "goodput": good,
            "ttft_p99": float(np.nanpercentile(ttft, 99)) if np.isfinite(ttft).any() else math.nan,
            "replica_hours": hours, "cost": hours * price_per_hour,
            "over_hours": float(np.clip(asked - need, 0, None).sum() * bin_seconds / 3600),
            "under_hours": float(np.clip(need - ready, 0, None).sum() * bin_seconds / 3600),
            "scale_events": scale_events(result)}


# ----------------------------------------------------------------------------- figures
def fleet_figure(runs: dict, need: tuple | None = None, axes=None, hours: bool = True,
                 title: str = "Replicas over the day"):
    """One panel per run: replicas asked for (up + starting) as steps with a tick at every
    scaling event, replicas up as a thin line, and the replicas the work needed, shaded.

    Args:
        runs: label -> RunResult.
        need: (bin times, needed replicas) from `needed_replicas`, or None.
        axes: one matplotlib Axes per run, or None for a new figure.
    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    from . import plots

    if axes is None:
        _, axes = plt.subplots(len(runs), 1, figsize=(11, 1.9 * len(runs) + 0.6), sharex=True,
                               sharey=True, layout="constrained", squeeze=False)
        axes = axes[:, 0]
        axes[0].figure.suptitle(title, fontweight="bold")
    scale = 3600.0 if hours else 1.0
    for i, (ax, (label, res)) in enumerate(zip(axes, runs.items())):
        if need is not None:
            bins, n = need
            width = bins[1] - bins[0] if len(bins) > 1 else 1.0
            ax.fill_between(np.append(bins, bins[-1] + width) / scale, np.append(n, n[-1]),
                            step="post", color="0.82", lw=0, label="needed by the work")
        t, up, st = fleet_series(res)
        colour = plots.PALETTE[i % len(plots.PALETTE)]
        asked = up + st
        end = max(res.end_time, t[-1])
        ax.step(np.append(t, end) / scale, np.append(asked, asked[-1]), where="post",
                color=colour, lw=1.3, label="asked for (up + starting)")
        ax.step(np.append(t, end) / scale, np.append(up, up[-1]), where="post", color="k",
                lw=0.6, alpha=0.6, label="up")
        changes = np.flatnonzero(np.diff(asked)) + 1
        ax.plot(t[changes] / scale, asked[changes], "|", color=colour, ms=6, alpha=0.8)
        ax.set_title(f"{label}: {scale_events(res)} scaling events", fontsize=10, loc="left")
        ax.set_ylabel("replicas")
        if i == 0:
            ax.legend(fontsize=8, loc="upper left", ncol=3)
    axes[-1].set_xlabel("time of day (h)" if hours else "time (s)")
    return axes


def latency_over_time(runs: dict, ax=None, bin_seconds: float = 600.0, q: float = 99,
                      slo: float | None = None, title: str = "Time to first token over the day"):
    """The q-th percentile of TTFT of the requests arriving in each bin, per run (log scale)."""
    import matplotlib.pyplot as plt

    from . import plots

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.6), layout="constrained")
    for i, (label, res) in enumerate(runs.items()):
        a, ttft = res.arrival, np.where(np.isnan(res.ttft), np.inf, res.ttft)
        b = (a // bin_seconds).astype(int)
        xs, ys = [], []
        for k in np.unique(b):
            xs.append((k + 0.5) * bin_seconds / 3600)
            ys.append(np.percentile(ttft[b == k], q))
        ax.plot(xs, ys, color=plots.PALETTE[i % len(plots.PALETTE)], lw=1.3, label=label)
    if slo is not None:
        ax.axhline(slo, color="k", ls="--", lw=1, label=f"SLO {slo:g} s")
    ax.set(yscale="log", xlabel="time of day (h)", ylabel=f"TTFT p{q:g} (s)", title=title)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def cumulative_cost(runs: dict, ax=None, price_per_hour: float = PRICE_PER_REPLICA_HOUR,
                    title: str = "Cumulative cost"):
    """Dollars spent since midnight, per run (replicas up or starting, times the price)."""
    import matplotlib.pyplot as plt

    from . import plots

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    for i, (label, res) in enumerate(runs.items()):
        t, up, st = fleet_series(res)
        t_end = np.append(t, res.end_time)
        spent = np.concatenate([[0.0], np.cumsum((up + st) * np.diff(t_end))]) / 3600 \
            * price_per_hour
        ax.plot(t_end / 3600, spent, color=plots.PALETTE[i % len(plots.PALETTE)], label=label)
    ax.set(xlabel="time of day (h)", ylabel="dollars", title=title)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def pareto_figure(points: dict, ax=None, title: str = "Cost against SLO violations"):
    """One marker per policy and setting: cost on x, share of requests missing the SLO on y.

    Args:
        points: label -> list of (cost, violation share) or (cost, violation share, note)
            tuples; several of one label (e.g. one per cold-start time) are joined by a line,
            and a note is written beside its point.
    """
    import matplotlib.pyplot as plt

    from . import plots

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    markers = "osD^vP*X"
    for i, (label, pts) in enumerate(points.items()):
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        colour = plots.PALETTE[i % len(plots.PALETTE)]
        ax.plot(xs, ys, marker=markers[i % len(markers)], ls="-" if len(pts) > 1 else "",
                color=colour, label=label)
        for p in pts:
            if len(p) > 2 and p[2]:
                ax.annotate(str(p[2]), (p[0], p[1]), textcoords="offset points", xytext=(6, 3),
                            fontsize=7, color=colour)
    ax.set(yscale="log", xlabel="cost of the day ($)", ylabel="share of requests missing the SLO",
           title=title)
    ax.legend(fontsize=8, loc="lower left")
    return ax


# ----------------------------------------------------------------------------- explorer
def autoscaling_explorer(workload: Workload, cost: SlotCost, *, ttft_slo: float,
                         tpot_slo: float, seed: int = 0):
    """HPA on requests in flight: move the target utilisation, the scale-down window and the
    cold-start time, and watch the fleet, the cost and the SLO violations of a simulated day.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .widgets import explorer

    busy = cost.busy_seconds(workload)
    need = needed_replicas(workload, busy, cost.slots)

    def render(target_utilization, window, cold_start):
        policy = HPA(target_utilization * cost.slots, window=window)
        res = run_day(workload, policy, cost, startup_delay=cold_start, replicas=2, seed=seed)
        out = outcomes(res, busy_seconds=busy, slots=cost.slots, ttft_slo=ttft_slo,
                       tpot_slo=tpot_slo)
        _, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
        fleet_figure({f"HPA, target {target_utilization:.0%} of {cost.slots} slots, window "
                      f"{window:g} s, cold start {cold_start:g} s": res}, need, axes=[ax])
        plt.show()
        print(f"cost ${out['cost']:.2f}   SLO missed by {1 - out['slo_attainment']:.2%} of "
              f"requests   TTFT p99 {out['ttft_p99']:.1f} s   {out['scale_events']} scaling "
              f"events   over-provisioned {out['over_hours']:.0f} replica-h, under "
              f"{out['under_hours']:.1f} replica-h")

    controls = {
        "target_utilization": w.FloatSlider(value=0.7, min=0.3, max=1.0, step=0.05,
                                            description="target utilisation of slots"),
        "window": w.FloatSlider(value=300.0, min=0.0, max=900.0, step=60.0,
                                description="scale-down window (s)"),
        "cold_start": w.FloatSlider(value=60.0, min=0.0, max=600.0, step=30.0,
                                    description="cold start (s)"),
    }
    return explorer(controls, render, title="Kubernetes HPA over a day")
