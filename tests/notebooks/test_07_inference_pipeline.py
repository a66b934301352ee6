"""Notebook 07's tests tell plausible wrong answers from differently written right ones.

Each wrong answer below was written from the exercise's docstring alone, as a learner might;
each right answer is written differently from the reference solution.
"""
from __future__ import annotations

import pytest

from answers import ExerciseNotebook, assert_caught_visibly, assert_fair, stub


@pytest.fixture(scope="module")
def book():
    return ExerciseNotebook("07_inference_pipeline")


def variant(source: str, old: str, new: str) -> str:
    """source with `old` replaced by `new` (which must occur exactly once)."""
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times"
    return source.replace(old, new)


# ----------------------------------------------------------------------------- Exercise 1
LRU_ORDERED = '''
from collections import OrderedDict


class LRUCache:
    def __init__(self, capacity, ttl=math.inf):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("capacity must be an int >= 0")
        if not ttl > 0:
            raise ValueError("ttl must be > 0")
        self.capacity, self.ttl = capacity, ttl
        self.data = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key, now):
        if key in self.data:
            value, t = self.data[key]
            if now < t + self.ttl:
                self.data.move_to_end(key)
                self.hits += 1
                return value
            del self.data[key]
        self.misses += 1
        return None

    def put(self, key, value, now):
        if self.capacity == 0:
            return
        if key in self.data:
            self.data.move_to_end(key)
        elif len(self.data) >= self.capacity:
            self.data.popitem(last=False)
        self.data[key] = (value, now)

    def hit_rate(self):
        n = self.hits + self.misses
        return self.hits / n if n else 0.0
'''

LRU_CLOCK = '''
class LRUCache:
    """Each entry remembers the tick of its last use; evict the smallest tick."""

    def __init__(self, capacity, ttl=float("inf")):
        if type(capacity) is not int or capacity < 0:
            raise ValueError(f"bad capacity {capacity!r}")
        if ttl <= 0 or ttl != ttl:
            raise ValueError(f"bad ttl {ttl!r}")
        self.capacity = capacity
        self.ttl = ttl
        self.entries = {}  # key -> [value, stored_at, last_use]
        self.tick = 0
        self.hits = self.misses = 0

    def _use(self):
        self.tick += 1
        return self.tick

    def get(self, key, now):
        entry = self.entries.get(key)
        if entry is None or now >= entry[1] + self.ttl:
            self.entries.pop(key, None)
            self.misses += 1
            return None
        entry[2] = self._use()
        self.hits += 1
        return entry[0]

    def put(self, key, value, now):
        if self.capacity < 1:
            return
        if key not in self.entries and len(self.entries) == self.capacity:
            oldest = min(self.entries, key=lambda k: self.entries[k][2])
            del self.entries[oldest]
        self.entries[key] = [value, now, self._use()]

    def hit_rate(self):
        if self.hits + self.misses == 0:
            return 0.0
        return self.hits / (self.hits + self.misses)
'''

LRU_LIST = '''
class LRUCache:
    def __init__(self, capacity, ttl=math.inf):
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool):
            raise ValueError("capacity must be an integer")
        if capacity < 0 or not ttl > 0:
            raise ValueError("capacity >= 0 and ttl > 0 please")
        self.capacity, self.ttl = capacity, ttl
        self.order = []     # keys, least recently used first
        self.values = {}
        self.stored = {}
        self.hits = self.misses = 0

    def get(self, key, now):
        if key in self.values and now - self.stored[key] < self.ttl:
            self.order.remove(key)
            self.order.append(key)
            self.hits += 1
            return self.values[key]
        if key in self.values:
            self.order.remove(key)
            del self.values[key], self.stored[key]
        self.misses += 1
        return None

    def put(self, key, value, now):
        if key in self.values:
            self.order.remove(key)
        elif self.capacity == 0:
            return
        elif len(self.order) == self.capacity:
            victim = self.order.pop(0)
            del self.values[victim], self.stored[victim]
        self.order.append(key)
        self.values[key], self.stored[key] = value, now

    def hit_rate(self):
        total = self.hits + self.misses
        return 0.0 if total == 0 else self.hits / total
'''

LRU_WRONG = {
    "fresh at exactly t + ttl (<= instead of <)":
        variant(LRU_ORDERED, "if now < t + self.ttl:", "if now <= t + self.ttl:"),
    "FIFO: a hit does not refresh recency":
        variant(LRU_ORDERED, "                self.data.move_to_end(key)\n                self.hits",
                "                self.hits"),
    "re-inserting a held key into a full cache evicts another":
        variant(LRU_ORDERED, """        if key in self.data:
            self.data.move_to_end(key)
        elif len(self.data) >= self.capacity:
            self.data.popitem(last=False)""", """        if len(self.data) >= self.capacity:
            self.data.popitem(last=False)
        if key in self.data:
            self.data.move_to_end(key)"""),
    "re-inserting keeps the old time to live":
        variant(LRU_ORDERED, "        self.data[key] = (value, now)",
                "        self.data[key] = (value, self.data[key][1] if key in self.data else now)"),
    "capacity 0 is not special-cased (pops from an empty cache)":
        variant(LRU_ORDERED, "        if self.capacity == 0:\n            return\n", ""),
    "an expired lookup is not counted as a miss":
        variant(LRU_ORDERED, "            del self.data[key]\n",
                "            del self.data[key]\n            return None\n"),
    "hit rate divides by zero before any lookup":
        variant(LRU_ORDERED, "return self.hits / n if n else 0.0", "return self.hits / n"),
    "a hit extends the time to live":
        variant(LRU_ORDERED, "                self.data.move_to_end(key)\n                self.hits",
                "                self.data[key] = (value, now)\n"
                "                self.data.move_to_end(key)\n                self.hits"),
    "evicts expired entries before the least recently used":
        variant(LRU_ORDERED, "        elif len(self.data) >= self.capacity:\n",
                "        elif len(self.data) >= self.capacity:\n"
                "            stale = [k for k, (_, t) in self.data.items() if now >= t + self.ttl]\n"
                "            if stale:\n"
                "                del self.data[stale[-1]]\n"
                "                self.data[key] = (value, now)\n"
                "                return\n"),
    "a negative capacity is accepted":
        variant(LRU_ORDERED, "or capacity < 0:", ":"),
    "a nan ttl is accepted (ttl <= 0 is False for nan)":
        variant(LRU_ORDERED, "if not ttl > 0:", "if ttl <= 0:"),
    "an expired get leaves the entry in place (it still takes room)":
        variant(LRU_ORDERED, "            del self.data[key]\n", ""),
    "uses the package's cache": "LRUCache = pipeline.LRUCache",
    "subclasses the package's cache": "class LRUCache(pipeline.LRUCache):\n    pass\n",
    "keeps the package's cache inside": '''
class LRUCache:
    def __init__(self, capacity, ttl=math.inf):
        self.inner = pipeline.LRUCache(capacity, ttl)

    @property
    def hits(self):
        return self.inner.hits

    @property
    def misses(self):
        return self.inner.misses

    def get(self, key, now):
        return self.inner.get(key, now)

    def put(self, key, value, now):
        self.inner.put(key, value, now)

    def hit_rate(self):
        return self.inner.hit_rate()
''',
}


def test_lru_cache_fair(book):
    assert_fair(book, "LRUCache", LRU_WRONG, {"ordered dict": LRU_ORDERED,
                                              "use counter": LRU_CLOCK, "list": LRU_LIST},
                explained=True)
    assert_caught_visibly(book, "LRUCache", LRU_WRONG,
                          ["fresh at exactly t + ttl (<= instead of <)",
                           "FIFO: a hit does not refresh recency",
                           "hit rate divides by zero before any lookup",
                           "a negative capacity is accepted"])


# ----------------------------------------------------------------------------- Exercise 2
# the solution cell defines STAGES above the function (outside the solution markers)
HEAD = 'STAGES = ("tokenize", "cache", "queue", "prefill", "decode")\n'

BREAKDOWN_NUMPY = HEAD + '''
def stage_breakdown(timestamps):
    order = ["arrival", "tokenized", "looked_up", "admitted", "first_token", "finish"]
    missing = [k for k in order + ["hit"] if k not in timestamps]
    if missing:
        raise ValueError(f"missing timestamps: {missing}")
    t = np.array([np.asarray(timestamps[k], dtype=float) for k in order]) \\
        if len({len(timestamps[k]) for k in order + ["hit"]}) == 1 else None
    if t is None:
        raise ValueError("arrays of different lengths")
    hit = np.asarray(timestamps["hit"], dtype=bool)
    if hit.size == 0:
        raise ValueError("no requests")
    miss_rows = [0, 1, 2, 3, 4, 5]
    hit_rows = [0, 1, 2, 5]
    if np.isnan(t[:, ~hit]).any() or np.isnan(t[hit_rows][:, hit]).any():
        raise ValueError("a needed timestamp is nan")
    d = np.diff(t, axis=0)               # one row per stage
    d[2:, hit] = np.nan                  # queue, prefill, decode: not for hits
    if (d[~np.isnan(d)] < 0).any():
        raise ValueError("negative stage")
    total = (t[5] - t[0]).sum()
    out = {}
    for row, stage in zip(d, STAGES):
        v = row[~np.isnan(row)]
        out[stage] = {"mean": v.mean() if len(v) else float("nan"),
                      "p99": np.percentile(v, 99) if len(v) else float("nan"),
                      "share": v.sum() / total}
    return out
'''

BREAKDOWN_LOOP = HEAD + '''
def stage_breakdown(timestamps):
    names = ["arrival", "tokenized", "looked_up", "admitted", "first_token", "finish"]
    for name in names + ["hit"]:
        if name not in timestamps:
            raise ValueError("no " + name)
    n = len(timestamps["hit"])
    if n == 0 or any(len(timestamps[name]) != n for name in names):
        raise ValueError("need equal, non-empty arrays")
    per_stage = {s: [] for s in STAGES}
    total = 0.0
    for i in range(n):
        row = [float(timestamps[name][i]) for name in names]
        is_hit = bool(timestamps["hit"][i])
        needed = [0, 1, 2, 5] if is_hit else [0, 1, 2, 3, 4, 5]
        if any(math.isnan(row[j]) for j in needed):
            raise ValueError(f"request {i} misses a timestamp")
        total += row[5] - row[0]
        for k, stage in enumerate(STAGES):
            if is_hit and k >= 2:
                continue
            duration = row[k + 1] - row[k]
            if duration < 0:
                raise ValueError(f"request {i}: {stage} is negative")
            per_stage[stage].append(duration)
    result = {}
    for stage, values in per_stage.items():
        if values:
            values.sort()
            rank = 0.99 * (len(values) - 1)
            lo = int(rank)
            hi = min(lo + 1, len(values) - 1)
            p99 = values[lo] + (values[hi] - values[lo]) * (rank - lo)
            result[stage] = {"mean": sum(values) / len(values), "p99": p99, "share": sum(values) / total}
        else:
            result[stage] = {"mean": math.nan, "p99": math.nan, "share": 0.0}
    return result
'''

BREAKDOWN_WRONG = {
    "hits count as 0 in the model's stages":
        variant(BREAKDOWN_NUMPY, "    d[2:, hit] = np.nan                  # queue, prefill, decode: not for hits\n",
                "    d[2:, hit] = 0.0\n"),
    "share as mean stage over mean end-to-end":
        variant(BREAKDOWN_NUMPY, '"share": v.sum() / total}', '"share": v.mean() / (t[5] - t[0]).mean()}'),
    "p99 by the nearest lower rank":
        variant(BREAKDOWN_NUMPY, "np.percentile(v, 99)", "np.percentile(v, 99, method='lower')"),
    "a missing key raises KeyError":
        variant(BREAKDOWN_NUMPY, "    if missing:\n        raise ValueError", "    if False:\n        raise ValueError"),
    "no check of nan timestamps":
        variant(BREAKDOWN_NUMPY, "    if np.isnan(t[:, ~hit]).any() or np.isnan(t[hit_rows][:, hit]).any():\n"
                "        raise ValueError(\"a needed timestamp is nan\")\n", ""),
    "decode measured from admission":
        variant(BREAKDOWN_LOOP, "            duration = row[k + 1] - row[k]\n",
                "            duration = row[k + 1] - row[k] if k < 4 else row[5] - row[3]\n"),
    "no request of a stage: crashes instead of nan":
        variant(BREAKDOWN_NUMPY, '"mean": v.mean() if len(v) else float("nan")', '"mean": v.mean()').replace(
            '"p99": np.percentile(v, 99) if len(v) else float("nan")', '"p99": np.percentile(v, 99)'),
    "negative stages are not refused":
        variant(BREAKDOWN_LOOP, "            if duration < 0:\n                raise ValueError(f\"request {i}: {stage} is negative\")\n", ""),
    "fills the hits' timestamps in place (changes the input)": HEAD + '''
def stage_breakdown(timestamps):
    order = ["arrival", "tokenized", "looked_up", "admitted", "first_token", "finish"]
    for k in order + ["hit"]:
        if k not in timestamps:
            raise ValueError(k)
    t = {k: np.asarray(timestamps[k], dtype=float) for k in order}
    hit = np.asarray(timestamps["hit"], dtype=bool)
    if hit.size == 0 or any(len(v) != hit.size for v in t.values()):
        raise ValueError("lengths")
    for k in ("admitted", "first_token"):
        t[k][hit] = t["looked_up"][hit]      # a hit: the model's stages last 0
    for k, v in t.items():
        if np.isnan(v).any():
            raise ValueError(k)
    total = (t["finish"] - t["arrival"]).sum()
    out = {}
    for stage, a, b in zip(STAGES, order, order[1:]):
        v = (t[b] - t[a])[~hit] if stage in ("queue", "prefill", "decode") else t[b] - t[a]
        if (v < 0).any():
            raise ValueError(stage)
        out[stage] = {"mean": v.mean() if v.size else math.nan,
                      "p99": np.percentile(v, 99) if v.size else math.nan, "share": v.sum() / total}
    return out
''',
    "negative stages checked for misses only":
        variant(BREAKDOWN_NUMPY, "if (d[~np.isnan(d)] < 0).any():", "if (d[:, ~hit] < 0).any():"),
    "hit's length not compared with the others":
        variant(BREAKDOWN_LOOP, '''    n = len(timestamps["hit"])
    if n == 0 or any(len(timestamps[name]) != n for name in names):''',
                '''    n = len(timestamps["arrival"])
    if n == 0 or any(len(timestamps[name]) != n for name in names):'''),
    "uses the package's breakdown": HEAD + "stage_breakdown = pipeline.stage_breakdown",
    "the package's stage_times helper": HEAD + '''
def stage_breakdown(timestamps):
    keys = ["arrival", "tokenized", "looked_up", "admitted", "first_token", "finish", "hit"]
    if any(k not in timestamps for k in keys):
        raise ValueError("missing key")
    hit = np.array(timestamps["hit"], dtype=bool)
    if hit.size == 0 or len({len(timestamps[k]) for k in keys}) != 1:
        raise ValueError("lengths")
    for k in keys[:-1]:
        v = np.asarray(timestamps[k], dtype=float)
        need = ~hit if k in ("admitted", "first_token") else np.ones(hit.size, dtype=bool)
        if np.isnan(v[need]).any():
            raise ValueError(f"{k} is nan")
    d = pipeline.stage_times(timestamps, hit)
    total = sum(d[s][~np.isnan(d[s])].sum() for s in STAGES)
    out = {}
    for s in STAGES:
        v = d[s][~np.isnan(d[s])]
        if (v < 0).any():
            raise ValueError(s)
        out[s] = {"mean": v.mean() if v.size else math.nan,
                  "p99": np.percentile(v, 99) if v.size else math.nan, "share": v.sum() / total}
    return out
''',
}


def test_stage_breakdown_fair(book):
    assert_fair(book, "stage_breakdown", BREAKDOWN_WRONG,
                {"numpy rows": BREAKDOWN_NUMPY, "loop": BREAKDOWN_LOOP}, explained=True)
    assert_caught_visibly(book, "stage_breakdown", BREAKDOWN_WRONG,
                          ["hits count as 0 in the model's stages",
                           "share as mean stage over mean end-to-end",
                           "a missing key raises KeyError", "no check of nan timestamps"])


# ----------------------------------------------------------------------------- Exercise 3
def config(**fields) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"def capstone_config(task):\n    return PipelineConfig({args})\n"


CAPSTONE_WRONG = {
    "two replicas, no cache (misses the SLO)": config(replicas=2),
    "three replicas, no cache (over budget)": config(replicas=3),
    "one replica and a big cache (misses the SLO)": config(replicas=1, cache_size=5000, cache_ttl=600),
    "four replicas and a cache (over budget)": config(replicas=4, cache_size=2000),
    "autoscaling down to one replica (misses the SLO)":
        config(replicas=2, cache_size=3000, cache_ttl=600, autoscale=True, min_replicas=1,
               max_replicas=3, target_outstanding=48),
    "scrapes through on seed 0 only (short TTL)": config(replicas=2, cache_size=1000, cache_ttl=40),
    "a dict instead of a PipelineConfig":
        "def capstone_config(task):\n    return {'replicas': 2, 'cache_size': 2000}\n",
    "searches with the grader's evaluation when called":
        "def capstone_config(task):\n"
        "    for n in (1, 2, 3):\n"
        "        cfg = PipelineConfig(replicas=n, cache_size=2000)\n"
        "        if pipeline.evaluate(cfg, seeds=(0,), task=task)[0]['passes']:\n"
        "            return cfg\n"
        "    return PipelineConfig(replicas=3)\n",
    "a cache above MAX_CACHE": config(replicas=2, cache_size=10_000),
    "sizes the cache from the package's workload when called":
        "def capstone_config(task):\n"
        "    distinct = len(set(pipeline.capstone_workload(0, task=task).prompt_id.tolist()))\n"
        "    return PipelineConfig(replicas=2, cache_size=min(distinct, 5000), cache_ttl=300)\n",
}

CAPSTONE_RIGHT = {
    "round robin, bigger cache, longer TTL":
        config(replicas=2, cache_size=3000, cache_ttl=600, router="round_robin"),
    "autoscaling between two and three":
        config(replicas=2, cache_size=3000, cache_ttl=600, autoscale=True, min_replicas=2,
               max_replicas=3, target_outstanding=64),
    "checked, built by replacing the defaults":
        "import dataclasses\n\n\n"
        "def capstone_config(task):\n"
        "    chosen = dataclasses.replace(PipelineConfig(), replicas=2, cache_size=2500, cache_ttl=400)\n"
        "    return chosen.check()  # raises, naming the field, if a lever is out of range\n",
}


def test_capstone_fair(book):
    assert_fair(book, "capstone_config", CAPSTONE_WRONG, CAPSTONE_RIGHT, explained=True)
    assert_caught_visibly(book, "capstone_config", CAPSTONE_WRONG,
                          ["two replicas, no cache (misses the SLO)",
                           "three replicas, no cache (over budget)",
                           "a dict instead of a PipelineConfig", "a cache above MAX_CACHE"])


@pytest.mark.parametrize("exercise", ["LRUCache", "stage_breakdown", "capstone_config"])
def test_untouched_stub_fails(book, exercise):
    assert not book.score(exercise, stub()).passed
