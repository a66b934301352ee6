"""Notebook 04's hidden tests tell right from wrong: plausible wrong answers, written from the
docstrings alone, lose the points; correct answers written differently from the reference
earn them (tests/notebooks/answers.py runs each against the exercise's own test cell)."""
from __future__ import annotations

import pytest

from answers import ExerciseNotebook, assert_caught_visibly, assert_fair, stub

ASSIGNMENT = "04_load_balancing"


@pytest.fixture(scope="module")
def book():
    return ExerciseNotebook(ASSIGNMENT)


# ----------------------------------------------------------------------------- Exercise 1
LEAST_WRONG = {
    "lowest index on ties": '''
def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    return min(range(len(replicas)), key=lambda i: replicas[i].outstanding)
''',
    "highest index on ties": '''
def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    loads = [r.outstanding for r in replicas]
    return len(loads) - 1 - loads[::-1].index(min(loads))
''',
    "counts only the queue, not requests in service": '''
def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    loads = [r.queue_len for r in replicas]
    tied = [i for i, x in enumerate(loads) if x == min(loads)]
    return tied[int(rng.integers(len(tied)))]
''',
    "returns a position in the tied list, not a replica": '''
def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    loads = [r.outstanding for r in replicas]
    tied = [i for i, x in enumerate(loads) if x == min(loads)]
    return int(rng.integers(len(tied)))
''',
    "off by one: never picks the last tied replica": '''
def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    loads = [r.outstanding for r in replicas]
    tied = [i for i, x in enumerate(loads) if x == min(loads)]
    return tied[int(rng.integers(max(len(tied) - 1, 1)))]
''',
    "global random module instead of rng": '''
import random

def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    loads = [r.outstanding for r in replicas]
    return random.choice([i for i, x in enumerate(loads) if x == min(loads)])
''',
    "its own generator with a fixed seed": '''
def least_outstanding(request, replicas, rng):
    if not replicas:
        raise ValueError("empty")
    mine = np.random.default_rng(0)
    loads = [r.outstanding for r in replicas]
    tied = [i for i, x in enumerate(loads) if x == min(loads)]
    return int(mine.choice(tied))
''',
    "borrows the engine's default router": '''
def least_outstanding(request, replicas, rng):
    return sim.least_outstanding(request, replicas, rng)
''',
    "borrows the package's reference": '''
from scalesim_course import routing as r

def least_outstanding(request, replicas, rng):
    return r.least_outstanding(request, replicas, rng)
''',
    "untouched stub": stub(),
}

LEAST_RIGHT = {
    "numpy flatnonzero and rng.choice": '''
def least_outstanding(request, replicas, rng):
    if len(replicas) == 0:
        raise ValueError("no replicas")
    loads = np.array([r.outstanding for r in replicas])
    return int(rng.choice(np.flatnonzero(loads == loads.min())))
''',
    "random order, then the first minimum": '''
def least_outstanding(request, replicas, rng):
    if not len(replicas):
        raise ValueError("no replicas")
    order = rng.permutation(len(replicas))
    return int(min(order, key=lambda i: replicas[i].outstanding))
''',
    "one pass, reservoir sampling among ties": '''
def least_outstanding(request, replicas, rng):
    best, low, ties = None, None, 0
    for i, r in enumerate(replicas):
        if low is None or r.outstanding < low:
            best, low, ties = i, r.outstanding, 1
        elif r.outstanding == low:
            ties += 1
            if rng.random() < 1 / ties:
                best = i
    if best is None:
        raise ValueError("no replicas")
    return best
''',
}


def test_least_outstanding_refuses_wrong_answers_and_accepts_right_ones(book):
    assert_fair(book, "least_outstanding", LEAST_WRONG, LEAST_RIGHT, explained=True)
    # the common mistakes fail in the visible tests, where the learner reads why before grading
    assert_caught_visibly(book, "least_outstanding", LEAST_WRONG, ['lowest index on ties', 'highest index on ties', 'counts only the queue, not requests in service', 'returns a position in the tied list, not a replica', 'off by one: never picks the last tied replica', 'untouched stub'])


# ----------------------------------------------------------------------------- Exercise 2
POWER_WRONG = {
    "samples with replacement": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    sample = rng.integers(len(replicas), size=d)
    return int(min(sample, key=lambda i: replicas[i].outstanding))
''',
    "fails when d is larger than the fleet": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    sample = rng.choice(len(replicas), size=d, replace=False)
    return int(min(sample, key=lambda i: replicas[i].outstanding))
''',
    "sorts the sample: low indices win ties": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    sample = sorted(rng.choice(len(replicas), size=min(d, len(replicas)), replace=False))
    return int(min(sample, key=lambda i: replicas[i].outstanding))
''',
    "ignores d: always the least loaded of all": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    order = rng.permutation(len(replicas))
    return int(min(order, key=lambda i: replicas[i].outstanding))
''',
    "counts only the queue": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    sample = rng.choice(len(replicas), size=min(d, len(replicas)), replace=False)
    return int(min(sample, key=lambda i: replicas[i].queue_len))
''',
    "off by one: never samples the last replica": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    n = max(len(replicas) - 1, 1)
    sample = rng.choice(n, size=min(d, n), replace=False)
    return int(min(sample, key=lambda i: replicas[i].outstanding))
''',
    "global numpy random state": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    sample = np.random.choice(len(replicas), size=min(d, len(replicas)), replace=False)
    return int(min(sample, key=lambda i: replicas[i].outstanding))
''',
    "accepts d = 0 as 'ask one'": '''
def power_of_d(request, replicas, rng, d=2):
    d = max(d, 1)
    sample = rng.choice(len(replicas), size=min(d, len(replicas)), replace=False)
    return int(min(sample, key=lambda i: replicas[i].outstanding))
''',
    "one replica answered before d is checked": '''
def power_of_d(request, replicas, rng, d=2):
    if len(replicas) == 1:
        return 0
    if d < 1:
        raise ValueError("d must be >= 1")
    sample = rng.choice(len(replicas), size=min(d, len(replicas)), replace=False)
    best = int(sample[0])
    for i in sample[1:]:
        if replicas[int(i)].outstanding < replicas[best].outstanding:
            best = int(i)
    return best
''',
    "borrows the package's reference": '''
def power_of_d(request, replicas, rng, d=2):
    return routing.power_of_d(request, replicas, rng, d)
''',
    "untouched stub": stub(),
}

POWER_RIGHT = {
    "choice and argmin": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError(f"d = {d}")
    n = len(replicas)
    sample = rng.choice(n, size=min(d, n), replace=False)
    loads = np.array([replicas[i].outstanding for i in sample])
    return int(sample[int(np.argmin(loads))])
''',
    "permutation cut to d, ties at random": '''
def power_of_d(request, replicas, rng, d=2):
    if not d >= 1:
        raise ValueError("d must be at least 1")
    sample = rng.permutation(len(replicas))[:d]
    low = min(replicas[i].outstanding for i in sample)
    tied = [int(i) for i in sample if replicas[i].outstanding == low]
    return tied[int(rng.integers(len(tied)))]
''',
    "draw until distinct, pure Python": '''
def power_of_d(request, replicas, rng, d=2):
    if d < 1:
        raise ValueError("d")
    n = len(replicas)
    chosen = []
    while len(chosen) < min(d, n):
        i = int(rng.integers(n))
        if i not in chosen:
            chosen.append(i)
    best = chosen[0]
    for i in chosen:
        if replicas[i].outstanding < replicas[best].outstanding:
            best = i
    return best
''',
}


def test_power_of_d_refuses_wrong_answers_and_accepts_right_ones(book):
    assert_fair(book, "power_of_d", POWER_WRONG, POWER_RIGHT, explained=True)
    # the common mistakes fail in the visible tests, where the learner reads why before grading
    assert_caught_visibly(book, "power_of_d", POWER_WRONG, ['samples with replacement', 'fails when d is larger than the fleet', 'ignores d: always the least loaded of all', 'off by one: never samples the last replica', "accepts d = 0 as 'ask one'", 'untouched stub'])


# ----------------------------------------------------------------------------- Exercise 3
SWRR_WRONG = {
    "plain weighted round robin (bursts)": '''
def smooth_weighted_round_robin(weights):
    ws = list(weights)
    if not ws or not all(w > 0 for w in ws):
        raise ValueError("weights")
    order = [i for i, w in enumerate(ws) for _ in range(int(w))]
    state = {"k": 0}
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        k = state["k"]
        state["k"] += 1
        return order[k % len(order)]
    return router
''',
    "ties go to the highest index": '''
def smooth_weighted_round_robin(weights):
    ws = [float(w) for w in weights]
    if not ws or not all(w > 0 for w in ws):
        raise ValueError("weights")
    cur = [0.0] * len(ws)
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        best = 0
        for i in range(len(ws)):
            cur[i] += ws[i]
            if cur[i] >= cur[best]:
                best = i
        cur[best] -= sum(ws)
        return best
    return router
''',
    "subtracts its own weight, not the total": '''
def smooth_weighted_round_robin(weights):
    ws = [float(w) for w in weights]
    if not ws or not all(w > 0 for w in ws):
        raise ValueError("weights")
    cur = [0.0] * len(ws)
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        for i in range(len(ws)):
            cur[i] += ws[i]
        best = cur.index(max(cur))
        cur[best] -= ws[best] * len(ws)
        return best
    return router
''',
    "forgets its state between calls": '''
def smooth_weighted_round_robin(weights):
    ws = [float(w) for w in weights]
    if not ws or not all(w > 0 for w in ws):
        raise ValueError("weights")
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        cur = [w for w in ws]
        return cur.index(max(cur))
    return router
''',
    "random in proportion to the weights": '''
def smooth_weighted_round_robin(weights):
    ws = np.asarray(weights, dtype=float)
    if ws.size == 0 or not (ws > 0).all():
        raise ValueError("weights")
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        return int(rng.choice(len(ws), p=ws / ws.sum()))
    return router
''',
    "state shared by every router (class attribute)": '''
class _SWRR:
    current = {}

    def __init__(self, weights):
        self.ws = [float(w) for w in weights]
        if not self.ws or not all(w > 0 for w in self.ws):
            raise ValueError("weights")
        for i in range(len(self.ws)):
            _SWRR.current.setdefault(i, 0.0)

    def __call__(self, request, replicas, rng):
        if len(replicas) != len(self.ws):
            raise ValueError("mismatch")
        best = 0
        for i, w in enumerate(self.ws):
            _SWRR.current[i] += w
            if _SWRR.current[i] > _SWRR.current[best]:
                best = i
        _SWRR.current[best] -= sum(self.ws)
        return best


def smooth_weighted_round_robin(weights):
    return _SWRR(weights)
''',
    "lets nan weights through (w <= 0 check)": '''
def smooth_weighted_round_robin(weights):
    ws = [float(w) for w in weights]
    if not ws or any(w <= 0 for w in ws):
        raise ValueError("weights")
    cur = [0.0] * len(ws)
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        best = 0
        for i in range(len(ws)):
            cur[i] += ws[i]
            if cur[i] > cur[best]:
                best = i
        cur[best] -= sum(ws)
        return best
    return router
''',
    "keeps current weights in the caller's list": '''
def smooth_weighted_round_robin(weights):
    if len(weights) == 0 or not all(w > 0 for w in weights):
        raise ValueError("weights")
    ws = [float(w) for w in weights]
    cur = weights
    for i in range(len(cur)):
        cur[i] = 0
    def router(request, replicas, rng):
        if len(replicas) != len(ws):
            raise ValueError("mismatch")
        best = 0
        for i in range(len(ws)):
            cur[i] += ws[i]
            if cur[i] > cur[best]:
                best = i
        cur[best] -= sum(ws)
        return best
    return router
''',
    "never checks the number of replicas": '''
def smooth_weighted_round_robin(weights):
    ws = [float(w) for w in weights]
    if not ws or not all(w > 0 for w in ws):
        raise ValueError("weights")
    cur = [0.0] * len(ws)
    def router(request, replicas, rng):
        best = 0
        for i in range(len(ws)):
            cur[i] += ws[i]
            if cur[i] > cur[best]:
                best = i
        cur[best] -= sum(ws)
        return best
    return router
''',
    "borrows the package's router": '''
def smooth_weighted_round_robin(weights):
    return routing.smooth_weighted_round_robin(weights)
''',
    "untouched stub": stub(),
}

SWRR_RIGHT = {
    "a class with numpy arrays": '''
class SmoothWRR:
    def __init__(self, weights):
        self.w = np.array(weights, dtype=float)
        if self.w.size == 0 or not np.all(self.w > 0):
            raise ValueError("weights must be > 0")
        self.c = np.zeros_like(self.w)

    def __call__(self, request, replicas, rng):
        if len(replicas) != self.w.size:
            raise ValueError("one weight per replica")
        self.c += self.w
        k = int(np.argmax(self.c))   # the first maximum: lowest index on ties
        self.c[k] -= self.w.sum()
        return k


def smooth_weighted_round_robin(weights):
    return SmoothWRR(weights)
''',
    "closure with nonlocal and max over keys": '''
def smooth_weighted_round_robin(weights):
    ws = list(weights)
    if len(ws) == 0 or any(not (w > 0) for w in ws):
        raise ValueError("bad weights")
    current = dict.fromkeys(range(len(ws)), 0)
    total = sum(ws)

    def route(request, replicas, rng):
        nonlocal current
        if len(replicas) != len(ws):
            raise ValueError("wrong number of replicas")
        current = {i: c + ws[i] for i, c in current.items()}
        pick = max(range(len(ws)), key=lambda i: (current[i], -i))
        current[pick] -= total
        return pick

    return route
''',
}


def test_smooth_weighted_round_robin_refuses_wrong_answers_and_accepts_right_ones(book):
    assert_fair(book, "smooth_weighted_round_robin", SWRR_WRONG, SWRR_RIGHT, explained=True)
    # the common mistakes fail in the visible tests, where the learner reads why before grading
    assert_caught_visibly(book, "smooth_weighted_round_robin", SWRR_WRONG, ['plain weighted round robin (bursts)', 'ties go to the highest index', 'subtracts its own weight, not the total', 'forgets its state between calls', 'random in proportion to the weights', 'untouched stub'])
