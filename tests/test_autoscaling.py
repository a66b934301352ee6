"""Autoscaling policies, cold start, cost and outcomes (scalesim_course.autoscaling).

Expected values are worked out by hand in the comments, from the documented algorithms.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from scalesim_course import autoscaling as A
from scalesim_course import sim
from scalesim_course.workload import Workload, diurnal_rate


def view(now, up, starting=0, outstanding=0, queue=0, running=0):
    """A stand-in ClusterView with `up` replicas up and `starting` starting (no engine)."""
    reps = ([SimpleNamespace(state="up", busy=running / max(up, 1), servers=4,
                             queue_len=queue / max(up, 1), outstanding=0)] * up
            + [SimpleNamespace(state="starting", busy=0, servers=4, queue_len=0,
                               outstanding=0)] * starting)
    return SimpleNamespace(now=now, replicas=tuple(reps), n_up=up, n_starting=starting,
                           outstanding=outstanding, concurrency=None, queue_lens=None, held=0,
                           busy_fraction=None)


# ----------------------------------------------------------------------------- cold start, cost
def test_cold_start_is_weight_bytes_over_bandwidth_plus_overhead():
    # Llama-2-7B: 6,738,415,616 weights x 2 bytes = 13.476831232 GB; at 1 GB/s 13.48 s
    assert A.cold_start_seconds("llama-2-7b", 1e9) == pytest.approx(13.476831232)
    assert A.cold_start_seconds("llama-2-7b", 250e6, overhead=30) == pytest.approx(
        13.476831232 * 4 + 30)
    with pytest.raises(ValueError, match="bandwidth"):
        A.cold_start_seconds("llama-2-7b", 0)
    with pytest.raises(ValueError, match="overhead"):
        A.cold_start_seconds("llama-2-7b", 1e9, overhead=-1)


def test_slot_cost_decode_step_is_memory_bound_by_hand():
    cost = A.SlotCost("llama-2-7b", "l4", slots=4)
    # context 1155 + 211 // 2 = 1260 tokens; KV per token 2 x 32 layers x 32 heads x 128 x 2 B
    # = 524,288 B. A decode step of 4 sequences reads the matmul weights (6,738,415,616 less the
    # 32,000 x 4,096 input-embedding table, which is a lookup, x 2 B = 13.214687232e9 B) and
    # 4 x 1260 x 524,288 B of cache at 300 GB/s x 0.7 (mbu).
    step = (13.214687232e9 + 4 * 1260 * 524_288) / (300e9 * 0.7)
    assert cost.tpot == pytest.approx(step)
    first, busy = cost.batch_timing([100], [11])
    assert busy == pytest.approx(first + 10 * step)
    with pytest.raises(ValueError, match="one request per slot"):
        cost.batch_timing([1, 2], [1, 1])


# ----------------------------------------------------------------------------- exercises
def test_hpa_desired_replicas_by_hand():
    f = A.hpa_desired_replicas
    assert f(4, 90, 60, 1, 100) == 6           # 4 x 1.5 = 6
    assert f(4, 105, 100, 1, 100) == 4         # ratio 1.05: inside the tolerance
    assert f(4, 5, 4, 1, 100, tolerance=0.25) == 4  # ratio exactly 1.25: still inside
    assert f(4, 3, 4, 1, 100, tolerance=0.25) == 4  # 0.75: inside too
    assert f(3, 70, 60, 1, 100) == 4           # 3.5 rounds up
    assert f(10, 30, 60, 1, 100) == 5          # scale down by half
    assert f(2, 100, 10, 1, 100) == 6          # 20 wanted, limit max(4, 2 + 4) = 6
    assert f(10, 50, 10, 1, 100) == 20         # 50 wanted, limit max(20, 14) = 20
    assert f(4, 90, 60, 1, 5) == 5             # max bound
    assert f(10, 0, 60, 3, 100) == 3           # min bound
    assert f(8, 100, 100, 1, 5) == 5           # within tolerance but above max: clamped
    for bad in [(0, 1, 1, 1, 2), (1, math.nan, 1, 1, 2), (1, -1, 1, 1, 2), (1, 1, 0, 1, 2),
                (1, 1, 1, 3, 2)]:
        with pytest.raises((ValueError, TypeError)):
            f(*bad)


def test_stabilized_recommendation_window_is_open_at_its_start():
    history = [(250.0, 3), (0.0, 5), (100.0, 8)]
    kept = list(history)
    assert A.stabilized_recommendation(history, 300.0, 300.0, 2) == 8   # t=0 is outside
    assert A.stabilized_recommendation(history, 300.0, 301.0, 2) == 8
    assert A.stabilized_recommendation(history, 300.0, 100.0, 2) == 3   # only t=250
    assert A.stabilized_recommendation(history, 300.0, 0.0, 2) == 2
    assert A.stabilized_recommendation([], 300.0, 300.0, 7) == 7
    assert A.stabilized_recommendation([(400.0, 9)], 300.0, 300.0, 1) == 1  # future: ignored
    assert history == kept
    with pytest.raises(ValueError, match="window"):
        A.stabilized_recommendation(history, 300.0, -1.0, 2)


def test_threshold_step_hysteresis_cooldown_and_bounds():
    f = A.threshold_step
    args = dict(high=0.8, low=0.3, cooldown=60.0, min_replicas=1, max_replicas=5)
    assert f(0.9, 3, 100.0, None, **args) == 4
    assert f(0.8, 3, 100.0, None, **args) == 3          # at the threshold: no change
    assert f(0.3, 3, 100.0, None, **args) == 3
    assert f(0.1, 3, 100.0, None, **args) == 2
    assert f(0.9, 3, 100.0, 50.0, **args) == 3          # 50 s after a change: cooling down
    assert f(0.9, 3, 110.0, 50.0, **args) == 4          # exactly 60 s: may change again
    assert f(0.9, 5, 100.0, None, **args) == 5          # max
    assert f(0.1, 1, 100.0, None, **args) == 1          # min
    assert f(0.5, 9, 100.0, 90.0, **args) == 5          # outside the bounds: clamped
    with pytest.raises(ValueError):
        f(math.nan, 3, 0.0, None, **args)
    with pytest.raises(ValueError):
        f(0.5, 3, 0.0, None, 0.3, 0.8, 60.0, 1, 5)


# ----------------------------------------------------------------------------- policies
def test_hpa_holds_scale_down_for_the_window_and_scales_up_at_once():
    hpa = A.HPA(target=2.0, window=60.0)
    # 4 replicas, 16 in flight: 4 per replica, ratio 2: 8 (limit max(8, 8))
    assert hpa(view(0.0, 4, outstanding=16)) == 8
    # 8 replicas, 8 in flight: ratio 0.5, recommendation 4, but 8 was recommended at t=0
    assert hpa(view(15.0, 8, outstanding=8)) == 8
    assert hpa(view(45.0, 8, outstanding=8)) == 8
    # at t=60 the recommendation of t=0 has left the window (open at its start)
    assert hpa(view(60.0, 8, outstanding=8)) == 4


def test_hpa_counts_starting_replicas_as_asked_for():
    hpa = A.HPA(target=2.0, window=0.0)
    # 2 up, 2 starting, 8 in flight: 2 per replica asked for, ratio 1: keep 4
    assert hpa(view(0.0, 2, starting=2, outstanding=8)) == 4


def test_kpa_panics_on_a_burst_and_does_not_scale_down_while_panicking():
    kpa = A.KPA(target=10, utilization=1.0, min_replicas=1)
    for t in range(0, 60, 2):      # steady: 10 in flight on 1 replica
        assert kpa(view(float(t), 1, outstanding=10)) == 1
    # a burst: 40 in flight. Panic window (6 s) holds 40, 40 (and nothing else after two ticks)
    got = [kpa(view(60.0 + 2 * k, 1, outstanding=40)) for k in range(3)]
    # first tick: panic average over (54, 60] = (10 + 10 + 40) / 3 = 20 -> 2 replicas, 2/1 >= 2
    assert got[0] == 2 and kpa.panics == 1
    assert got[-1] == 4             # (40 + 40 + 40) / 3 = 40 -> 4
    # load vanishes: the panic count stays for a stable window after the last panic tick
    assert kpa(view(70.0, 4, outstanding=0)) == 4
    assert kpa(view(100.0, 4, outstanding=0)) == 4


def test_kpa_scales_to_zero_after_an_idle_stable_window_and_grace():
    kpa = A.KPA(target=10, utilization=1.0, min_replicas=0, max_scale_down_rate=1000)
    answers = {t: kpa(view(float(t), 1, outstanding=0)) for t in range(0, 120, 2)}
    # the stable average is 0 from the start; the last replica goes after the 30 s grace
    assert answers[0] == 1 and answers[28] == 1 and answers[30] == 0


def test_threshold_policy_respects_cooldown_between_changes():
    pol = A.Threshold(high=0.8, low=0.3, cooldown=60.0, metric=lambda v: 0.95)
    assert pol(view(0.0, 2)) == 3
    assert pol(view(15.0, 3)) == 3
    assert pol(view(60.0, 3)) == 4


def test_queue_length_policy_adds_slots_for_waiting_requests_minus_starting():
    pol = A.QueueLength(slots=4, window=0.0)
    # 2 up, 1 starting; 9 waiting need ceil(9 / 4) = 3 replicas, one is on its way: 3 + 2
    assert pol(view(0.0, 2, starting=1, queue=9, running=8)) == 5
    # nothing waiting, 4 running: ceil(4 / (4 x 0.7)) = 2
    assert pol(view(15.0, 5, queue=0, running=4)) == 2


def test_predictive_looks_ahead_by_the_lead():
    rate = lambda t: np.where(np.asarray(t) >= 100, 1.0, 0.1)   # noqa: E731
    pol = A.Predictive(rate, busy_per_request=14.0, slots=4, utilization=0.5, lead=50.0)
    assert pol(view(0.0, 1)) == 1        # 0.1 x 14 / 2 = 0.7 -> 1
    assert pol(view(60.0, 1)) == 7       # at 110 s: 1.0 x 14 / 2 = 7


# ----------------------------------------------------------------------------- traffic
def test_rate_from_history_counts_per_bin_per_period():
    # two days, bins of 12 h: day 1 has 3 arrivals before noon, day 2 one before noon, two after
    a = [1.0, 2.0, 3.0, 86_400 + 5.0, 86_400 + 50_000.0, 86_400 + 60_000.0]
    f = A.rate_from_history(a, bin_seconds=43_200)
    assert f(np.array([0.0, 50_000.0, 86_400 * 3 + 10])) == pytest.approx(
        [4 / 86_400, 2 / 86_400, 4 / 86_400])


def test_weekly_rate_dips_on_weekends():
    base = diurnal_rate(1.0, 0.0)
    f = A.weekly_rate(base, weekend=0.5)
    assert f(np.array([0.0, 5 * 86_400 + 1, 7 * 86_400 + 1])) == pytest.approx([1.0, 0.5, 1.0])


def test_stretch_keeps_order_and_ends_at_duration():
    wl = Workload.build([0.0, 1.0, 3.0], [5, 6, 7], [1, 2, 3])
    out = A.stretch(wl, 30.0)
    assert out.arrival.tolist() == [0.0, 10.0, 30.0] and out.prompt_tokens.tolist() == [5, 6, 7]


# ----------------------------------------------------------------------------- outcomes
def test_needed_replicas_by_hand():
    wl = Workload.build([0.0, 10.0, 150.0])
    t, need = A.needed_replicas(wl, [40.0, 20.0, 10.0], slots=2, utilization=0.5,
                                bin_seconds=100.0)
    # bin 0: 60 slot-s / (2 x 0.5 x 100) = 0.6; bin 1: 10 / 100 = 0.1
    assert t.tolist() == [0.0, 100.0] and need == pytest.approx([0.6, 0.1])


def test_fixed_fleet_outcomes_by_hand():
    # two replicas of one slot, three requests of 10 s at t = 0: the third waits 10 s; with
    # cost=None the first token comes with the last, so TTFT is 10, 10 and 20 s
    wl = Workload.build([0.0, 0.0, 0.0], service_time=[10.0, 10.0, 10.0])
    res = sim.simulate(wl, replicas=2, servers=1)
    out = A.outcomes(res, busy_seconds=[10.0] * 3, slots=1, ttft_slo=10.0, tpot_slo=1.0,
                     price_per_hour=3600.0, bin_seconds=20.0)
    assert out["slo_attainment"] == pytest.approx(2 / 3)
    assert out["replica_hours"] == pytest.approx(2 * 20 / 3600)   # 2 replicas for 20 s
    assert out["cost"] == pytest.approx(40.0)
    assert out["scale_events"] == 0
    # one bin of 20 s needs 30 / 20 = 1.5 replicas; 2 were asked for: 0.5 x 20 s over
    assert out["over_hours"] == pytest.approx(0.5 * 20 / 3600)
    assert out["under_hours"] == 0.0


def test_autoscaled_day_counts_start_up_in_cost_and_is_reproducible():
    rate = diurnal_rate(0.05, 0.5, period=7200.0)
    wl = A.traffic(rate, duration=7200.0, seed=3)
    cost = A.SlotCost(slots=2)
    runs = [A.run_day(wl, A.HPA(1.4), cost, startup_delay=60.0, replicas=1) for _ in range(2)]
    assert np.array_equal(runs[0].finish, runs[1].finish, equal_nan=True)
    busy = cost.busy_seconds(wl)
    out = A.outcomes(runs[0], busy_seconds=busy, slots=2, ttft_slo=5.0, tpot_slo=1.0)
    assert out["scale_events"] > 0
    # paid for at least the slot-seconds of work done, spread over at most 2 slots a replica
    assert out["replica_hours"] * 3600 >= busy.sum() / 2


def test_kpa_scales_to_zero_in_the_engine_and_held_requests_wait_a_cold_start():
    # two requests 1000 s apart; between them the KPA (min 0) removes the last replica after
    # 60 s without traffic plus 30 s of grace, so the second request waits the 50 s cold start
    wl = Workload.build([0.0, 1000.0], service_time=[1.0, 1.0])
    pol = A.KPA(target=1, utilization=1.0, min_replicas=0)
    res = sim.simulate(wl, servers=1, autoscaler=pol, autoscale_interval=pol.interval,
                       startup_delay=50.0, replicas=1, min_replicas=0)
    assert res.latency[0] == pytest.approx(1.0)
    assert res.latency[1] == pytest.approx(50.0 + 1.0, abs=pol.interval)
    assert A.scale_events(res) >= 2
    # paid: about 1 + 60 + 30 s for the first replica, then the second from its request on
    assert A.provisioned_replica_seconds(res) < 300.0


def test_explorer_builds_and_renders_once():
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    wl = A.traffic(diurnal_rate(0.05, 0.5, period=3600.0), duration=3600.0, seed=1)
    box = A.autoscaling_explorer(wl, A.SlotCost(slots=2), ttft_slo=5.0, tpot_slo=1.0)
    assert len(box.children) == 2
