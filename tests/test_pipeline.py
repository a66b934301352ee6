"""The simulated pipeline: the reference cache, cache replay, stage accounting, the capstone."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scalesim_course import pipeline as P
from scalesim_course.costmodel import RooflineCost
from scalesim_course.sim import simulate
from scalesim_course.workload import Workload


# ----------------------------------------------------------------------------- LRUCache
def test_lru_evicts_least_recently_used_and_a_hit_counts_as_use():
    c = P.LRUCache(2)
    c.put("a", 1, 0.0)
    c.put("b", 2, 1.0)
    assert c.get("a", 2.0) == 1          # a is now the most recent
    c.put("c", 3, 3.0)                   # evicts b
    assert c.get("b", 4.0) is None and c.get("a", 4.0) == 1 and c.get("c", 4.0) == 3
    assert (c.hits, c.misses) == (3, 1) and c.hit_rate() == 0.75


def test_lru_ttl_boundary_and_reinsert():
    c = P.LRUCache(2, ttl=10.0)
    c.put("a", 1, 0.0)
    assert c.get("a", 9.999) == 1
    assert c.get("a", 10.0) is None      # fresh while now < 0 + 10
    c.put("a", 1, 20.0)
    c.put("b", 2, 21.0)
    c.put("a", 5, 25.0)                  # re-insert: new value, new time, no eviction
    assert c.get("b", 26.0) == 2 and c.get("a", 34.0) == 5 and c.get("a", 35.0) is None


def test_lru_capacity_zero_and_errors():
    c = P.LRUCache(0)
    c.put("a", 1, 0.0)
    assert c.get("a", 0.0) is None and c.hit_rate() == 0.0
    assert P.LRUCache(3).hit_rate() == 0.0
    with pytest.raises(ValueError, match="capacity"):
        P.LRUCache(-1)
    with pytest.raises(ValueError, match="ttl"):
        P.LRUCache(1, ttl=0)


# ----------------------------------------------------------------------------- replay and run
def test_replay_cache_stores_before_lookups_at_the_same_time():
    pid = np.array([7, 7, 7, -1])
    lookup = np.array([0.0, 5.0, 6.0, 6.0])
    stored = np.array([5.0, np.nan, np.nan, 7.0])
    # request 0 stores at 5.0, request 1 looks up at 5.0: a hit; 2 hits too; -1 is never cached
    hit = P.replay_cache(P.LRUCache(4), pid, lookup, stored)
    assert hit.tolist() == [False, True, True, False]


def two_requests(gap):
    return Workload.build([0.0, gap], [100, 100], [10, 10], prompt_id=[3, 3])


def test_a_hit_skips_the_model_and_costs_tokenize_plus_lookup():
    costs = P.PipelineCosts(tokenize_per_token=1e-5, cache_lookup=2e-3)
    res = P.run_pipeline(two_requests(100.0), P.PipelineConfig(replicas=1, cache_size=4),
                         costs)
    assert res.hit.tolist() == [False, True]
    assert res.e2e[1] == pytest.approx(100 * 1e-5 + 2e-3)
    assert math.isnan(res.times["admitted"][1]) and math.isnan(res.times["first_token"][1])
    # the miss: tokenize, lookup, then the model exactly as the simulator alone runs it
    alone = simulate(Workload.build([100 * 1e-5 + 2e-3], [100], [10]), mode="iteration",
                     cost=RooflineCost("llama-2-7b", "a100-80gb-sxm"))
    assert res.times["finish"][0] == pytest.approx(alone.finish[0])


def test_a_copy_arriving_before_the_answer_is_complete_misses():
    res = P.run_pipeline(two_requests(0.01), P.PipelineConfig(replicas=1, cache_size=4))
    assert res.hit.tolist() == [False, False]


def test_the_fixed_point_is_consistent_with_its_own_finish_times():
    wl = P.pipeline_workload(6.0, 600, n_prompts=2000, zipf_s=1.0, seed=4)
    res = P.run_pipeline(wl, P.PipelineConfig(replicas=2, cache_size=200, cache_ttl=60))
    replay = P.replay_cache(P.LRUCache(200, 60), wl.prompt_id, res.times["tokenized"],
                            np.where(res.hit, np.nan, res.times["finish"]))
    assert np.array_equal(replay, res.hit) and 0 < res.hit_rate < 1


def test_stages_tile_the_end_to_end_time():
    wl = P.pipeline_workload(6.0, 400, n_prompts=500, seed=1)
    res = P.run_pipeline(wl, P.PipelineConfig(replicas=2, cache_size=100))
    d = P.stage_times(res.times, res.hit)
    total = sum(np.nan_to_num(d[s]) for s in P.STAGES)
    assert np.allclose(total, res.e2e)
    b = P.stage_breakdown({**res.times, "hit": res.hit})
    assert sum(v["share"] for v in b.values()) == pytest.approx(1.0)


def test_stage_breakdown_by_hand():
    ts = {"arrival": [0.0, 1.0], "tokenized": [0.1, 1.2], "looked_up": [0.2, 1.3],
          "admitted": [1.2, np.nan], "first_token": [1.7, np.nan], "finish": [3.2, 1.3],
          "hit": [False, True]}
    b = P.stage_breakdown(ts)
    # e2e 3.2 and 0.3: total 3.5. tokenize 0.1 + 0.2, queue 1.0, prefill 0.5, decode 1.5
    assert b["tokenize"]["mean"] == pytest.approx(0.15)
    assert b["tokenize"]["share"] == pytest.approx(0.3 / 3.5)
    assert b["queue"]["mean"] == pytest.approx(1.0) and b["queue"]["p99"] == pytest.approx(1.0)
    assert b["decode"]["share"] == pytest.approx(1.5 / 3.5)
    with pytest.raises(ValueError, match="first_token"):
        P.stage_breakdown({k: v for k, v in ts.items() if k != "first_token"})
    with pytest.raises(ValueError, match="admitted"):
        P.stage_breakdown({**ts, "admitted": [np.nan, np.nan]})


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="router"):
        P.PipelineConfig(router="fastest").check()
    with pytest.raises(ValueError, match="cache_size"):
        P.PipelineConfig(cache_size=P.MAX_CACHE + 1).check()
    with pytest.raises(ValueError, match="cache_ttl"):
        P.PipelineConfig(cache_ttl=P.MAX_TTL * 2).check()


def test_round_robin_router_alternates():
    r = P.make_router("round_robin")
    assert [r(None, [0, 1, 2], None) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_capstone_levers_move_the_outcome():
    """Two replicas without a cache miss the SLO; a cache rescues them; four cost too much."""
    no_cache = P.evaluate(P.PipelineConfig(replicas=2), seeds=(0,))[0]
    cached = P.evaluate(P.PipelineConfig(replicas=2, cache_size=2000), seeds=(0,))[0]
    big = P.evaluate(P.PipelineConfig(replicas=4, cache_size=2000), seeds=(0,))[0]
    assert not no_cache["meets_slo"] and cached["passes"]
    assert big["meets_slo"] and not big["within_budget"]


def test_explorer_builds_and_renders_once():
    import ipywidgets as w
    import matplotlib

    matplotlib.use("Agg")
    box = P.explorer(seed=0)
    assert isinstance(box, w.HBox)
    sliders = box.children[0].children[1:]
    assert [c.description for c in sliders] == ["replicas", "cache entries", "TTL (s)", "router"]
