"""Notebook 02's graded exercises: plausible wrong answers lose points, right ones earn them.

Every answer was written from the exercise's docstring alone. Each wrong one makes a mistake a
learner could plausibly make (its label says which); each right one is written differently from
the reference solution.
"""
from __future__ import annotations

import pytest
from answers import ExerciseNotebook, assert_caught_visibly, assert_fair

NB = "02_batching"


@pytest.fixture(scope="module")
def book():
    import torch

    threads = torch.get_num_threads()
    yield ExerciseNotebook(NB)
    torch.set_num_threads(threads)   # the setup cell sets one thread


# ----------------------------------------------------------------------------- Exercise 1
_FDB = '''
def form_dynamic_batches(arrivals, max_batch, max_delay):
    if max_batch < 1 or not max_delay >= 0:
        raise ValueError("bad limits")
    t = [float(x) for x in arrivals]
    if any(b < a for a, b in zip(t, t[1:])):
        raise ValueError("unsorted")
    out, due, i = [], [], 0
    while i < len(t):
        j = i + 1
        while j < len(t) and j - i < max_batch and t[j] <= t[i] + max_delay:
            j += 1
        out.append(list(range(i, j)))
        due.append(t[j - 1] if j - i == max_batch else t[i] + max_delay)
        i = j
    return out, due
'''
FDB_WRONG = {
    "an arrival exactly at the deadline is left out": _FDB.replace("t[j] <= t[i] + max_delay",
                                                                   "t[j] < t[i] + max_delay"),
    "a full batch waits for the deadline too": _FDB.replace(
        "due.append(t[j - 1] if j - i == max_batch else t[i] + max_delay)",
        "due.append(t[i] + max_delay)"),
    "no check that arrivals are sorted": _FDB.replace(
        "    if any(b < a for a, b in zip(t, t[1:])):\n        raise ValueError(\"unsorted\")\n", ""),
    "nan max_delay accepted": _FDB.replace("not max_delay >= 0", "max_delay < 0"),
    "no arrivals returns before checking the limits": _FDB.replace(
        "    if max_batch < 1", "    if len(arrivals) == 0:\n        return [], []\n    if max_batch < 1"),
    "batches one larger than max_batch": _FDB.replace("j - i < max_batch", "j - i <= max_batch")
                                             .replace("j - i == max_batch", "j - i == max_batch + 1"),
    "checks only the first two arrivals are sorted": _FDB.replace(
        "any(b < a for a, b in zip(t, t[1:]))", "len(t) > 1 and t[1] < t[0]"),
    "the package's batcher": '''
def form_dynamic_batches(arrivals, max_batch, max_delay):
    return batching.form_dynamic_batches(arrivals, max_batch, max_delay)
''',
}
FDB_RIGHT = {
    "one pass with an open batch, arrays out": '''
def form_dynamic_batches(arrivals, max_batch, max_delay):
    arr = np.asarray(arrivals, dtype=float)
    if max_batch < 1 or np.isnan(max_delay) or max_delay < 0 or np.any(np.diff(arr) < 0):
        raise ValueError("bad input")
    batches, times, open_batch = [], [], []
    for i, t in enumerate(arr):
        if open_batch and t - arr[open_batch[0]] > max_delay:
            batches.append(np.array(open_batch))
            times.append(arr[open_batch[0]] + max_delay)
            open_batch = []
        open_batch.append(i)
        if len(open_batch) == max_batch:
            batches.append(np.array(open_batch))
            times.append(t)
            open_batch = []
    if open_batch:
        batches.append(np.array(open_batch))
        times.append(arr[open_batch[0]] + max_delay)
    return tuple(batches), np.array(times)
''',
    "members by comprehension": '''
def form_dynamic_batches(arrivals, max_batch, max_delay):
    times = list(map(float, arrivals))
    if max_batch < 1:
        raise ValueError("max_batch")
    if not (max_delay >= 0):
        raise ValueError("max_delay")
    if sorted(times) != times:
        raise ValueError("unsorted")
    out_b, out_t, start = [], [], 0
    while start < len(times):
        members = [k for k in range(start, min(start + max_batch, len(times)))
                   if times[k] <= times[start] + max_delay]
        out_b.append(members)
        out_t.append(times[members[-1]] if len(members) == max_batch else times[start] + max_delay)
        start = members[-1] + 1
    return out_b, out_t
''',
}


def test_form_dynamic_batches_is_fair(book):
    assert_fair(book, "form_dynamic_batches", FDB_WRONG, FDB_RIGHT, explained=True)
    assert_caught_visibly(book, "form_dynamic_batches", FDB_WRONG,
                          ["an arrival exactly at the deadline is left out",
                           "a full batch waits for the deadline too",
                           "no check that arrivals are sorted", "batches one larger than max_batch"])


# ----------------------------------------------------------------------------- Exercise 2
_BR = '''
def bucket_requests(lengths, bucket_bounds):
    bounds = [int(b) for b in bucket_bounds]
    if not bounds or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError("bounds")
    out = []
    for x in lengths:
        if x < 1:
            raise ValueError("length")
        k = 0
        while k < len(bounds) and x > bounds[k]:
            k += 1
        out.append(k)
    return out
'''
BR_WRONG = {
    "a length equal to a bound goes to the next bucket": _BR.replace("x > bounds[k]", "x >= bounds[k]"),
    "overflow clamped into the last bucket": _BR.replace("out.append(k)", "out.append(min(k, len(bounds) - 1))"),
    "no lengths returns before checking the bounds": _BR.replace(
        "    bounds = [int(b) for b in bucket_bounds]\n",
        "    if len(lengths) == 0:\n        return []\n    bounds = [int(b) for b in bucket_bounds]\n"),
    "equal bounds accepted (sorted, not strictly increasing)": _BR.replace(
        "any(b <= a for a, b in zip(bounds, bounds[1:]))", "bounds != sorted(bounds)"),
    "only the first length checked": _BR.replace(
        "        if x < 1:\n            raise ValueError(\"length\")\n", "").replace(
        "    out = []\n", "    if len(lengths) and lengths[0] < 1:\n        raise ValueError(\"length\")\n    out = []\n"),
    "searchsorted on the right side": '''
def bucket_requests(lengths, bucket_bounds):
    bounds = np.asarray(bucket_bounds)
    if bounds.size == 0 or np.any(np.diff(bounds) <= 0):
        raise ValueError("bounds")
    x = np.asarray(lengths)
    if x.size and x.min() < 1:
        raise ValueError("length")
    return np.searchsorted(bounds, x, side="right").tolist()
''',
    "the package's bucketing": '''
def bucket_requests(lengths, bucket_bounds):
    return batching.bucket_requests(lengths, bucket_bounds)
''',
}
BR_RIGHT = {
    "bisect_left": '''
import bisect

def bucket_requests(lengths, bucket_bounds):
    bounds = list(bucket_bounds)
    if len(bounds) == 0 or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError("bounds")
    lengths = np.asarray(lengths)
    if lengths.size and lengths.min() < 1:
        raise ValueError("length")
    return np.array([bisect.bisect_left(bounds, x) for x in lengths], dtype=int)
''',
    "searchsorted on the left side": '''
def bucket_requests(lengths, bucket_bounds):
    b = np.array(bucket_bounds, dtype=np.int64)
    if b.ndim != 1 or b.size == 0 or (b[1:] <= b[:-1]).any():
        raise ValueError("bucket_bounds must be strictly increasing and not empty")
    x = np.array(lengths, dtype=np.int64)
    if (x < 1).any():
        raise ValueError("lengths must be >= 1")
    return [int(k) for k in np.searchsorted(b, x, side="left")]
''',
}


def test_bucket_requests_is_fair(book):
    assert_fair(book, "bucket_requests", BR_WRONG, BR_RIGHT, explained=True)
    assert_caught_visibly(book, "bucket_requests", BR_WRONG,
                          ["a length equal to a bound goes to the next bucket",
                           "overflow clamped into the last bucket",
                           "no lengths returns before checking the bounds",
                           "searchsorted on the right side"])


# ----------------------------------------------------------------------------- Exercise 3
PW_WRONG = {
    "mean of each batch's waste": '''
def padding_waste(batches):
    ws = [1 - sum(b) / (len(b) * max(b)) for b in batches if len(b)]
    return sum(ws) / len(ws) if ws else 0.0
''',
    "an empty batch breaks max()": '''
def padding_waste(batches):
    slots = real = 0
    for b in batches:
        if min(b) < 1:
            raise ValueError("length")
        slots += len(b) * max(b)
        real += sum(b)
    return (slots - real) / slots if slots else 0.0
''',
    "pads to the longest request of all batches": '''
def padding_waste(batches):
    full = [list(b) for b in batches if len(b)]
    if not full:
        return 0.0
    if min(min(b) for b in full) < 1:
        raise ValueError("length")
    longest = max(max(b) for b in full)
    slots = sum(len(b) for b in full) * longest
    return (slots - sum(sum(b) for b in full)) / slots
''',
    "padding over real tokens, not over slots": '''
def padding_waste(batches):
    slots = real = 0
    for b in batches:
        if len(b) == 0:
            continue
        if min(b) < 1:
            raise ValueError("length")
        slots += len(b) * max(b)
        real += sum(b)
    return (slots - real) / real if real else 0.0
''',
    "sorts each batch in place": '''
def padding_waste(batches):
    slots = real = 0
    for b in batches:
        if len(b) == 0:
            continue
        b.sort()
        if b[0] < 1:
            raise ValueError("length")
        slots += len(b) * b[-1]
        real += sum(b)
    return float((slots - real) / slots) if slots else 0.0
''',
    "no check of lengths": '''
def padding_waste(batches):
    slots = real = 0
    for b in batches:
        if len(b):
            slots += len(b) * max(b)
            real += sum(b)
    return (slots - real) / slots if slots else 0.0
''',
    "the package's waste": '''
def padding_waste(batches):
    return batching.padding_waste(batches)
''',
}
PW_RIGHT = {
    "numpy arrays, sizes skipped when empty": '''
def padding_waste(batches):
    sizes = [np.asarray(b) for b in batches if len(b)]
    if any((b < 1).any() for b in sizes):
        raise ValueError("length")
    slots = sum(b.size * b.max() for b in sizes)
    return float(1 - sum(b.sum() for b in sizes) / slots) if slots else 0.0
''',
    "padding counted token by token": '''
def padding_waste(batches):
    pad = total = 0
    for batch in batches:
        batch = [int(x) for x in batch]
        for x in batch:
            if x < 1:
                raise ValueError(f"length {x} < 1")
        if batch:
            longest = max(batch)
            pad += sum(longest - x for x in batch)
            total += longest * len(batch)
    return pad / total if total > 0 else 0.0
''',
}


def test_padding_waste_is_fair(book):
    assert_fair(book, "padding_waste", PW_WRONG, PW_RIGHT, explained=True)
    assert_caught_visibly(book, "padding_waste", PW_WRONG,
                          ["mean of each batch's waste", "an empty batch breaks max()",
                           "pads to the longest request of all batches",
                           "padding over real tokens, not over slots"])


# ----------------------------------------------------------------------------- Exercise 4
_CBS = '''
def continuous_batching_step(running, waiting, kv_budget, max_batch=None):
    for s in waiting:
        if s.prompt_tokens + s.output_tokens > kv_budget:
            raise ValueError("too big")
    finished = [s for s in running if s.generated >= s.output_tokens]
    still = [s for s in running if s.generated < s.output_tokens]
    free = kv_budget - sum(s.prompt_tokens + s.output_tokens for s in still)
    admitted = []
    for s in waiting:
        need = s.prompt_tokens + s.output_tokens
        if need > free or (max_batch is not None and len(still) + len(admitted) >= max_batch):
            break
        admitted.append(s)
        free -= need
    return admitted, still, finished
'''
CBS_WRONG = {
    "smaller requests overtake the head": _CBS.replace(
        "            break\n", "            continue\n"),
    "only the head is checked against the budget": _CBS.replace(
        "    for s in waiting:\n        if s.prompt_tokens", "    for s in waiting[:1]:\n        if s.prompt_tokens"),
    "pops admitted requests off the caller's list": '''
def continuous_batching_step(running, waiting, kv_budget, max_batch=None):
    if any(s.prompt_tokens + s.output_tokens > kv_budget for s in waiting):
        raise ValueError("too big")
    finished = [s for s in running if s.generated >= s.output_tokens]
    still = [s for s in running if s.generated < s.output_tokens]
    free = kv_budget - sum(s.prompt_tokens + s.output_tokens for s in still)
    admitted = []
    while waiting and waiting[0].prompt_tokens + waiting[0].output_tokens <= free and (
            max_batch is None or len(still) + len(admitted) < max_batch):
        seq = waiting.pop(0)
        admitted.append(seq)
        free -= seq.prompt_tokens + seq.output_tokens
    return admitted, still, finished
''',
    "finished only when generated > output_tokens": _CBS.replace(
        "s.generated >= s.output_tokens]", "s.generated > s.output_tokens]").replace(
        "s.generated < s.output_tokens]", "s.generated <= s.output_tokens]"),
    "max_batch counts only the admitted": _CBS.replace("len(still) + len(admitted) >= max_batch",
                                                       "len(admitted) >= max_batch"),
    "finished sequences still hold their reservation": _CBS.replace(
        "for s in still)", "for s in running)"),
    "a reservation must fit strictly below the free budget": _CBS.replace("need > free", "need >= free"),
    "the package's FCFS admission": '''
def continuous_batching_step(running, waiting, kv_budget, max_batch=None):
    return batching.continuous_batching_step(running, waiting, kv_budget, max_batch)
''',
}
CBS_RIGHT = {
    "a while loop over the queue": '''
def continuous_batching_step(running, waiting, kv_budget, max_batch=None):
    keep = [s for s in running if s.output_tokens > s.generated]
    used = sum(s.prompt_tokens + s.output_tokens for s in keep)
    limit = len(running) + len(waiting) + 1 if max_batch is None else max_batch
    if any(w.prompt_tokens + w.output_tokens > kv_budget for w in waiting):
        raise ValueError("a waiting request can never fit")
    k = 0
    while k < len(waiting):
        need = waiting[k].prompt_tokens + waiting[k].output_tokens
        if used + need > kv_budget or len(keep) + k >= limit:
            break
        used += need
        k += 1
    return list(waiting[:k]), keep, [s for s in running if s.output_tokens <= s.generated]
''',
    "itertools.takewhile on a running total": '''
import itertools

def continuous_batching_step(running, waiting, kv_budget, max_batch=None):
    need = [w.prompt_tokens + w.output_tokens for w in waiting]
    if need and max(need) > kv_budget:
        raise ValueError("request larger than the whole KV budget")
    done, going = [], []
    for s in running:
        (done if s.generated >= s.output_tokens else going).append(s)
    free = kv_budget - sum(s.prompt_tokens + s.output_tokens for s in going)
    room = len(waiting) if max_batch is None else max(0, max_batch - len(going))
    totals = itertools.accumulate(need)
    fits = list(itertools.takewhile(lambda pair: pair[1] <= free, zip(waiting, totals)))
    return [w for w, _ in fits][:room], going, done
''',
}


def test_continuous_batching_step_is_fair(book):
    assert_fair(book, "continuous_batching_step", CBS_WRONG, CBS_RIGHT, explained=True)
    assert_caught_visibly(book, "continuous_batching_step", CBS_WRONG,
                          ["smaller requests overtake the head", "max_batch counts only the admitted",
                           "finished sequences still hold their reservation"])
