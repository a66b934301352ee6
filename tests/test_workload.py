"""Workload generators and the Azure trace loader (scalesim_course.workload)."""
import math
from pathlib import Path

import numpy as np
import pytest

from scalesim_course import workload as w

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
CONV = TRACES / "AzureLLMInferenceTrace_conv.csv"


def test_same_seed_same_workload():
    a, b = w.azure_like(600, seed=7), w.azure_like(600, seed=7)
    for f in ("arrival", "prompt_tokens", "output_tokens"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.arrival, w.azure_like(600, seed=8).arrival[: len(a)])


def test_poisson_rate_and_gamma_burstiness():
    gaps = np.diff(w.poisson_arrivals(2.0, 100_000, seed=1))
    assert gaps.mean() == pytest.approx(0.5, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)
    bursty = np.diff(w.gamma_arrivals(2.0, 100_000, cv=3.0, seed=1))
    assert bursty.mean() == pytest.approx(0.5, rel=0.05)
    assert bursty.std() / bursty.mean() == pytest.approx(3.0, rel=0.05)


def test_thinning_follows_the_rate_curve():
    rate = w.diurnal_rate(base=10.0, amplitude=0.8, period=1000.0, spikes=[(500, 50, 20.0)])
    t = w.thinned_arrivals(rate, rate.max_rate, 1000.0, seed=2)
    counts, _ = np.histogram(t, bins=20, range=(0, 1000))
    assert counts[0] < counts[9]            # the trough at t=0 is quieter than the peak
    expected = np.mean(rate(np.linspace(0, 1000, 100_001))) * 1000
    assert len(t) == pytest.approx(expected, rel=0.05)


def test_lognormal_lengths_hit_mean_and_median():
    x = w.lognormal_lengths(1155, 1020, 200_000, seed=3)
    assert x.mean() == pytest.approx(1155, rel=0.02)
    assert np.median(x) == pytest.approx(1020, rel=0.02)


def test_azure_like_matches_published_statistics():
    wl = w.azure_like(3600, seed=0)
    assert wl.rate == pytest.approx(w.AZURE_CONV_RATE, rel=0.03)
    assert wl.prompt_tokens.mean() == pytest.approx(1155, rel=0.05)
    assert np.median(wl.output_tokens) == pytest.approx(129, rel=0.05)


def test_zipf_prompt_ids_are_skewed():
    ids = w.zipf_prompt_ids(50_000, 1000, s=1.1, seed=4)
    counts = np.bincount(ids, minlength=1000)
    assert counts[0] > counts[9] > counts[99]
    assert ids.min() >= 0 and ids.max() < 1000


def test_empirical_lengths_resample_observed_values():
    x = w.empirical_lengths([3, 5, 8], 1000, seed=5)
    assert set(np.unique(x)) == {3, 5, 8}


def write_trace(path, rows):
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(r + "\n" for r in rows))
    return path


def test_loader_reads_the_format(tmp_path):
    p = write_trace(tmp_path / "t.csv", ["2023-11-16 18:15:46.5000000,374,44",
                                         "2023-11-16 18:15:48.0000000,396,0",
                                         "2023-11-16 18:15:47.0000000,10,3"])
    wl = w.load_azure_trace(p)
    assert wl.arrival.tolist() == pytest.approx([0.0, 0.5, 1.5])
    assert wl.prompt_tokens.tolist() == [374, 10, 396]
    assert wl.output_tokens.tolist() == [44, 3, 1]   # 0 generated tokens counts as 1


@pytest.mark.parametrize("bad", ["2023-11-16 18:15:47.0,abc,3", "2023-11-16 18:15:47.0,5",
                                 "yesterday,5,3", "2023-11-16 18:15:47.0,-5,3"])
def test_loader_names_the_malformed_line(tmp_path, bad):
    p = write_trace(tmp_path / "t.csv", ["2023-11-16 18:15:46.0,374,44", bad])
    with pytest.raises(ValueError, match="line 3"):
        w.load_azure_trace(p)


def test_loader_rejects_wrong_header_and_empty(tmp_path):
    (tmp_path / "h.csv").write_text("time,prompt,output\n1,2,3\n")
    with pytest.raises(ValueError, match="header"):
        w.load_azure_trace(tmp_path / "h.csv")
    with pytest.raises(ValueError, match="no requests"):
        w.load_azure_trace(write_trace(tmp_path / "e.csv", []))


@pytest.mark.skipif(not CONV.exists(), reason="shared Azure traces not present")
def test_real_conversation_trace_statistics():
    wl = w.load_azure_trace(CONV)
    assert len(wl) == 19_366
    assert wl.rate == pytest.approx(5.53, rel=0.01)
    assert wl.prompt_tokens.mean() == pytest.approx(1155, rel=0.01)
    assert wl.output_tokens.mean() == pytest.approx(211, rel=0.01)


@pytest.mark.parametrize("call, name", [
    (lambda: w.poisson_arrivals(0, 10), "rate"),
    (lambda: w.poisson_arrivals(-1.0, 10), "rate"),
    (lambda: w.poisson_arrivals(1.0, 0), "n"),
    (lambda: w.gamma_arrivals(1.0, 10, cv=0), "cv"),
    (lambda: w.lognormal_lengths(10, 20, 5), "mean"),
    (lambda: w.empirical_lengths([], 5), "samples"),
    (lambda: w.Workload.build([]), "empty"),
    (lambda: w.poisson_workload(1.0, 10, service_rate=0), "service_rate"),
    (lambda: w.poisson_arrivals(float("nan"), 10), "rate"),
    (lambda: w.poisson_arrivals("fast", 10), "rate"),
    # found by review: nan mean gave -9.2e18 tokens; rate=0 gave one request, rate=-1 failed
    # inside numpy; fractional or nan token counts were truncated silently
    (lambda: w.lognormal_lengths(float("nan"), 10, 5), "mean"),
    (lambda: w.lognormal_lengths(100, 10, 5, maximum=0), "maximum"),
    (lambda: w.azure_like(60, rate=0), "rate"),
    (lambda: w.azure_like(60, rate=-1), "rate"),
    (lambda: w.azure_like(1e-3, rate=1e-3), "no request arrived"),
    (lambda: w.Workload.build([0.0, 1.0], prompt_tokens=[10, 2.5]), "prompt_tokens"),
    (lambda: w.Workload.build([0.0, 1.0], output_tokens=[10, float("nan")]), "output_tokens"),
    (lambda: w.Workload.build([0.0], prompt_tokens=["ten"]), "prompt_tokens"),
    (lambda: w.Workload.build([0.0, 1.0], service_time=[1.0, -5.0]), "service_time"),
    (lambda: w.Workload.build([0.0], service_time=[float("inf")]), "service_time"),
    (lambda: w.empirical_lengths([3, 4.5], 5), "samples"),
    (lambda: w.thinned_arrivals(lambda t: np.full_like(t, np.nan), 1.0, 100.0), "rate_fn"),
    (lambda: w.diurnal_rate(1.0, spikes=[(0, 10)]), "spikes"),
    (lambda: w.diurnal_rate(1.0, amplitude=0.5, spikes=[(0, 10, -1.0)]), "spikes"),
    (lambda: w.load_azure_trace(CONV, limit=0), "limit"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def test_whole_float_token_counts_are_accepted_exactly():
    wl = w.Workload.build([1.0, 0.0], prompt_tokens=[10.0, 3.0], output_tokens=[2, 7])
    assert wl.prompt_tokens.tolist() == [3, 10] and wl.output_tokens.tolist() == [7, 2]
    assert wl.prompt_tokens.dtype == np.int64


def test_lognormal_maximum_caps_and_unset_maximum_does_not():
    x = w.lognormal_lengths(1155, 1020, 10_000, seed=3, maximum=1000)
    assert x.max() == 1000
    assert w.lognormal_lengths(1155, 1020, 10_000, seed=3).max() > 1000


# ----------------------------------------------------------------------------- exact behaviour
# Values worked out by hand, so that a changed constant, boundary, default or message is caught.
def test_diurnal_rate_at_known_times():
    rate = w.diurnal_rate(base=10.0, amplitude=0.5, period=100.0, spikes=[(40.0, 10.0, 7.0)])
    # base * (1 + a sin(2 pi t / P - pi / 2)): trough base(1-a) at 0, base at P/4, peak at P/2
    times = [0.0, 25.0, 39.999, 40.0, 49.999, 50.0, 75.0, 100.0]
    smooth = [10.0 * (1 + 0.5 * math.sin(2 * math.pi * t / 100.0 - math.pi / 2)) for t in times]
    spike = [0, 0, 0, 7.0, 7.0, 0, 0, 0]          # [40, 50): start inclusive, end exclusive
    np.testing.assert_allclose(rate(np.array(times)), np.add(smooth, spike), atol=1e-9)
    np.testing.assert_allclose(smooth[:2] + smooth[5:], [5.0, 10.0, 15.0, 10.0, 5.0], atol=1e-9)
    assert rate.max_rate == 10.0 * 1.5 + 7.0
    assert w.diurnal_rate(4.0, amplitude=0.0).max_rate == 4.0
    negative = w.diurnal_rate(10.0, amplitude=0.5, spikes=[(0.0, 1.0, -2.0)])
    assert negative.max_rate == 15.0                         # a dip does not raise the bound
    np.testing.assert_allclose(negative(np.array([0.5])), [3.0], atol=1e-6)


def test_thinning_keeps_only_times_inside_the_window_sorted():
    t = w.thinned_arrivals(lambda x: np.full_like(x, 2.0), 2.0, 500.0, seed=1)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() <= 500.0
    assert len(t) == pytest.approx(1000, abs=4 * 1000 ** 0.5)      # Poisson(1000), 4 sigma
    # a constant rate at half the bound keeps about half the candidates
    half = w.thinned_arrivals(lambda x: np.full_like(x, 1.0), 2.0, 500.0, seed=1)
    assert len(half) == pytest.approx(500, abs=4 * 500 ** 0.5)
    # rates a hair above the bound (rounding) pass; clearly above do not
    w.thinned_arrivals(lambda x: np.full_like(x, 2.0 * (1 + 1e-12)), 2.0, 10.0, seed=1)
    with pytest.raises(ValueError, match=r"rate_fn must stay within \[0, max_rate=2.0\]"):
        w.thinned_arrivals(lambda x: np.full_like(x, 2.001), 2.0, 10.0, seed=1)
    with pytest.raises(ValueError, match=r"rate_fn must stay within"):
        w.thinned_arrivals(lambda x: np.where(x < 5, -1.0, 1.0), 2.0, 10.0, seed=1)
    with pytest.raises(ValueError, match="thinning kept no arrival"):
        w.thinned_arrivals(lambda x: np.zeros_like(x), 2.0, 10.0, seed=1)
    with pytest.raises(ValueError, match="one rate per time"):
        w.thinned_arrivals(lambda x: 1.0, 2.0, 10.0, seed=1)


def test_default_seed_is_zero():
    same = [(w.poisson_arrivals(1.0, 5), w.poisson_arrivals(1.0, 5, seed=0)),
            (w.gamma_arrivals(1.0, 5, cv=2.0), w.gamma_arrivals(1.0, 5, cv=2.0, seed=0)),
            (w.lognormal_lengths(20, 10, 5), w.lognormal_lengths(20, 10, 5, seed=0)),
            (w.empirical_lengths([1, 2, 3], 9), w.empirical_lengths([1, 2, 3], 9, seed=0)),
            (w.zipf_prompt_ids(9, 5), w.zipf_prompt_ids(9, 5, seed=0)),
            (w.azure_like(30).arrival, w.azure_like(30, seed=0).arrival),
            (w.poisson_workload(1.0, 5).arrival, w.poisson_workload(1.0, 5, seed=0).arrival)]
    f = lambda x: np.full_like(x, 1.0)  # noqa: E731
    same.append((w.thinned_arrivals(f, 1.0, 50.0), w.thinned_arrivals(f, 1.0, 50.0, seed=0)))
    for a, b in same:
        assert np.array_equal(a, b)
    assert not np.array_equal(w.poisson_arrivals(1.0, 5), w.poisson_arrivals(1.0, 5, seed=1))


def test_one_generator_feeds_every_draw_in_turn():
    # passing a Generator continues its stream: the same draws as numpy's own, in order
    rng = np.random.default_rng(11)
    expected_gaps = rng.exponential(0.5, 4)
    np.testing.assert_allclose(w.poisson_arrivals(2.0, 4, np.random.default_rng(11)),
                               np.cumsum(expected_gaps))
    wl = w.poisson_workload(2.0, 4, service_rate=4.0, scv=0.0, seed=11)
    np.testing.assert_allclose(wl.arrival, np.cumsum(expected_gaps))
    assert wl.service_time.tolist() == [0.25] * 4              # deterministic: exactly 1/mu
    assert np.isnan(w.poisson_workload(2.0, 4, seed=11).service_time).all()   # none asked
    exp = w.poisson_workload(2.0, 20_000, service_rate=4.0, scv=1.0, seed=11).service_time
    assert exp.mean() == pytest.approx(0.25, rel=0.03) and exp.std() == pytest.approx(0.25,
                                                                                     rel=0.05)


def test_gamma_arrivals_gap_mean_and_cv_at_non_unit_rate():
    gaps = np.diff(w.gamma_arrivals(4.0, 50_000, cv=0.5, seed=2))
    assert gaps.mean() == pytest.approx(0.25, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(0.5, rel=0.03)


def test_lognormal_with_mean_equal_to_median_is_constant():
    assert w.lognormal_lengths(37, 37, 6, seed=1).tolist() == [37] * 6
    assert w.lognormal_lengths(0.2, 0.1, 1000, seed=1).min() == 1        # at least one token


def test_empirical_lengths_refuses_zero_and_keeps_proportions():
    with pytest.raises(ValueError, match="samples must all be >= 1 token"):
        w.empirical_lengths([3, 0], 5)
    x = w.empirical_lengths([2, 2, 2, 9], 40_000, seed=4)
    assert np.mean(x == 9) == pytest.approx(0.25, abs=0.01)
    assert w.empirical_lengths(np.array([4.0, 6.0]), 3, seed=1).dtype == np.int64


def test_zipf_edges_and_weights():
    assert w.zipf_prompt_ids(5, 1, seed=3).tolist() == [0] * 5     # one prompt: always it
    assert len(w.zipf_prompt_ids(1, 3, seed=3)) == 1
    ids = w.zipf_prompt_ids(60_000, 2, s=1.0, seed=3)              # weights 1 : 1/2
    assert np.mean(ids == 0) == pytest.approx(2 / 3, abs=0.01)
    ids = w.zipf_prompt_ids(60_000, 2, s=2.0, seed=3)              # weights 1 : 1/4
    assert np.mean(ids == 0) == pytest.approx(0.8, abs=0.01)


def test_azure_like_window_and_caps():
    wl = w.azure_like(1000.0, rate=2.0, seed=5, max_tokens=500)
    assert wl.arrival.min() < 1.0 and wl.arrival.max() <= 1000.0   # uniform over [0, duration]
    assert len(wl) == pytest.approx(2000, abs=4 * 2000 ** 0.5)
    assert wl.prompt_tokens.max() == 500 and wl.output_tokens.max() <= 500
    assert w.azure_like(1000.0, rate=2.0, seed=5, max_tokens=None).prompt_tokens.max() > 500
    assert np.all(wl.prompt_id == -1) and np.isnan(wl.service_time).all()


def test_workload_build_sorts_stably_and_fills_defaults():
    wl = w.Workload.build([2.0, 1.0, 2.0], prompt_tokens=[5, 6, 7], prompt_id=[0, 1, 2])
    assert wl.arrival.tolist() == [1.0, 2.0, 2.0]
    assert wl.prompt_tokens.tolist() == [6, 5, 7] and wl.prompt_id.tolist() == [1, 0, 2]
    assert wl.output_tokens.tolist() == [1, 1, 1]
    assert np.isnan(wl.service_time).all() and wl.service_time.dtype == float
    assert w.Workload.build([0.0]).prompt_id.tolist() == [-1]
    assert wl.prompt_id.dtype == np.int64 and wl.output_tokens.dtype == np.int64
    assert wl.duration == 2.0 and wl.rate == 1.5
    assert w.Workload.build([0.0]).rate == float("inf")
    reqs = wl.requests()
    assert reqs[0] == w.Request(0, 1.0, 6, 1, 1, reqs[0].service_time)
    assert [r.id for r in reqs] == [0, 1, 2] and np.isnan(reqs[0].service_time)
    assert wl.head(2).arrival.tolist() == [1.0, 2.0] and len(wl.head(2)) == 2
    assert wl.with_service([1.0, 2.0, 3.0]).service_time.tolist() == [1.0, 2.0, 3.0]
    assert wl.with_service([1.0, 2.0, 3.0]).prompt_tokens.tolist() == [6, 5, 7]


@pytest.mark.parametrize("call, error, message", [
    (lambda: w.Workload.build([0.0, 1.0], prompt_tokens=[1, 2, 3]), ValueError,
     r"prompt_tokens: expected 2 values to match arrival, got shape \(3,\)"),
    (lambda: w.Workload.build([0.0], prompt_tokens=[True]), TypeError,
     "prompt_tokens must hold whole numbers, got dtype bool"),
    (lambda: w.Workload.build([0.0, 1.0], output_tokens=[1, 1.5]), ValueError,
     "output_tokens must hold whole numbers, got 1.5 at position 1"),
    (lambda: w.Workload.build([0.0], output_tokens=[0]), ValueError,
     "prompt_tokens and output_tokens must be >= 1"),
    (lambda: w.Workload.build([0.0], prompt_tokens=[0]), ValueError,
     "prompt_tokens and output_tokens must be >= 1"),
    (lambda: w.Workload.build([0.0], service_time=[0.0]), ValueError,
     r"service_time must be > 0 and finite \(or nan when unused\), got 0.0 for request 0"),
    (lambda: w.Workload.build([-1.0]), ValueError, "arrival times must be finite and >= 0"),
    (lambda: w.Workload.build([float("inf")]), ValueError, "arrival times must be finite"),
    (lambda: w.Workload(np.array([1.0, 0.0]), np.ones(2, int), np.ones(2, int),
                        np.full(2, np.nan), np.full(2, -1)), ValueError,
     r"arrival times must be sorted \(use Workload.build, which sorts\)"),
    (lambda: w.Workload(np.array([0.0, 1.0]), np.ones(1, int), np.ones(2, int),
                        np.full(2, np.nan), np.full(2, -1)), ValueError,
     "prompt_tokens has 1 entries, arrival has 2"),
    (lambda: w.Workload(np.array([]), np.ones(0, int), np.ones(0, int), np.ones(0),
                        np.ones(0, int)), ValueError, "workload is empty: it needs at least one"),
    (lambda: w.Workload.build([]), ValueError, "workload is empty: arrival has no entries"),
    (lambda: w.poisson_arrivals(0, 10), ValueError, "rate must be > 0, got 0"),
    (lambda: w.poisson_arrivals(1.0, 0), ValueError, "n must be >= 1, got 0"),
    (lambda: w.gamma_arrivals(0, 10), ValueError, "rate must be > 0, got 0"),
    (lambda: w.gamma_arrivals(1.0, 10, cv=-1), ValueError, "cv must be > 0, got -1"),
    (lambda: w.gamma_arrivals(1.0, 0), ValueError, "n must be >= 1, got 0"),
    (lambda: w.thinned_arrivals(lambda t: t, 0.0, 10.0), ValueError, "max_rate must be > 0"),
    (lambda: w.thinned_arrivals(lambda t: t, 1.0, 0.0), ValueError, "duration must be > 0"),
    (lambda: w.diurnal_rate(0.0), ValueError, "base must be > 0, got 0"),
    (lambda: w.diurnal_rate(1.0, amplitude=1.5), ValueError, r"amplitude must be in \[0.0, 1.0\]"),
    (lambda: w.diurnal_rate(1.0, period=0), ValueError, "period must be > 0, got 0"),
    (lambda: w.diurnal_rate(1.0, spikes=[(-1, 10, 1.0)]), ValueError,
     r"spikes\[0\] start must be >= 0, got -1"),
    (lambda: w.diurnal_rate(1.0, spikes=[(0, 1, 1.0), (5, 0, 1.0)]), ValueError,
     r"spikes\[1\] length must be > 0, got 0"),
    (lambda: w.diurnal_rate(1.0, spikes=[(0, 1, float("nan"))]), ValueError,
     r"spikes\[0\] extra_rate must be finite"),
    (lambda: w.diurnal_rate(10.0, amplitude=0.5, spikes=[(0, 1, -5.5)]), ValueError,
     r"spikes\[0\] extra_rate=-5.5 would make the rate negative"),
    (lambda: w.lognormal_lengths(10, 0, 5), ValueError, "median must be > 0, got 0"),
    (lambda: w.lognormal_lengths(0, 10, 5), ValueError, "mean must be > 0, got 0"),
    (lambda: w.lognormal_lengths(10, 20, 5), ValueError,
     "mean=10 must be >= median=20 for a lognormal"),
    (lambda: w.lognormal_lengths(20, 10, 0), ValueError, "n must be >= 1, got 0"),
    (lambda: w.empirical_lengths([1], 0), ValueError, "n must be >= 1, got 0"),
    (lambda: w.empirical_lengths(["a"], 1), ValueError, "samples must be whole token counts"),
    (lambda: w.zipf_prompt_ids(0, 5), ValueError, "n must be >= 1, got 0"),
    (lambda: w.zipf_prompt_ids(5, 0), ValueError, "n_unique must be >= 1, got 0"),
    (lambda: w.zipf_prompt_ids(5, 5, s=0), ValueError, "s must be > 0, got 0"),
    (lambda: w.azure_like(0), ValueError, "duration must be > 0, got 0"),
    (lambda: w.azure_like(10, max_tokens=0), ValueError, "max_tokens must be >= 1, got 0"),
    (lambda: w.poisson_workload(1.0, 5, service_rate=-1), ValueError,
     "service_rate must be > 0, got -1"),
])
def test_errors_name_the_argument_and_value(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_loader_header_spaces_and_timestamps(tmp_path):
    (tmp_path / "s.csv").write_text("TIMESTAMP, ContextTokens ,GeneratedTokens\n"
                                    "2023-11-16 18:15:46,5,2\n2023-11-16 18:15:50.25,7,3\n")
    wl = w.load_azure_trace(tmp_path / "s.csv")
    assert wl.arrival.tolist() == [0.0, 4.25]
    import calendar
    assert w._parse_timestamp("2023-11-16 18:15:46") == calendar.timegm(
        (2023, 11, 16, 18, 15, 46, 0, 0, 0))
    assert w._parse_timestamp(" 2023-11-16 18:15:46.6805900 ") == pytest.approx(
        calendar.timegm((2023, 11, 16, 18, 15, 46, 0, 0, 0)) + 0.68059, abs=1e-6)
    with pytest.raises(ValueError, match="bad TIMESTAMP"):
        w._parse_timestamp("2023-11-16 18:15:46.5x")
    many = write_trace(tmp_path / "m.csv", [f"2023-11-16 18:15:4{i}.0,5,2" for i in range(5)])
    assert len(w.load_azure_trace(many, limit=3)) == 3
    with pytest.raises(ValueError, match="negative or zero token count"):
        w.load_azure_trace(write_trace(tmp_path / "z.csv", ["2023-11-16 18:15:46.0,0,3"]))
    with pytest.raises(ValueError, match="line 2 is malformed"):
        w.load_azure_trace(write_trace(tmp_path / "n.csv", ["2023-11-16 18:15:46.0,5,-1"]))
    (tmp_path / "none.csv").write_text("")
    with pytest.raises(ValueError, match="line 1 must be the header"):
        w.load_azure_trace(tmp_path / "none.csv")


def test_documented_defaults():
    assert np.array_equal(w.gamma_arrivals(1.0, 50, seed=3), w.gamma_arrivals(1.0, 50, 1.0, 3))
    assert np.array_equal(w.zipf_prompt_ids(50, 9, seed=3), w.zipf_prompt_ids(50, 9, 1.0, 3))
    a, b = (w.poisson_workload(1.0, 50, service_rate=2.0, seed=3),
            w.poisson_workload(1.0, 50, service_rate=2.0, scv=1.0, seed=3))
    assert np.array_equal(a.service_time, b.service_time)
    day = w.diurnal_rate(10.0)
    np.testing.assert_allclose(day(np.array([0.0, 43_200.0, 86_400.0])), [5.0, 15.0, 5.0])
    wl = w.azure_like(seed=3)
    assert 3500 < wl.duration <= 3600.0 and wl.prompt_tokens.max() <= 8192
    assert wl.rate == pytest.approx(5.53, rel=0.05)


def test_seeded_draws_are_reproducible_end_to_end():
    for make in (lambda s: w.poisson_workload(1.0, 20, service_rate=2.0, seed=s).service_time,
                 lambda s: w.azure_like(100.0, seed=s).prompt_tokens,
                 lambda s: w.azure_like(100.0, seed=s).output_tokens):
        assert np.array_equal(make(4), make(4)) and not np.array_equal(make(4), make(5))


def test_smallest_allowed_values():
    assert w.lognormal_lengths(100, 10, 20, seed=1, maximum=1).tolist() == [1] * 20
    wl = w.Workload.build([0.0, 1.0, 2.0], prompt_tokens=[4, 5, 6], output_tokens=[7, 8, 9],
                          prompt_id=[3, 2, 1])
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        wl.head(0)
    assert len(wl.head(1)) == 1
    s = wl.with_service([0.5, 0.25, 2.0])
    assert s.output_tokens.tolist() == [7, 8, 9] and s.prompt_id.tolist() == [3, 2, 1]
    assert [r.service_time for r in s.requests()] == [0.5, 0.25, 2.0]
    zero_floor = w.diurnal_rate(10.0, amplitude=0.5, spikes=[(0.0, 1.0, -5.0)])
    assert zero_floor(np.array([0.0]))[0] == pytest.approx(0.0, abs=1e-12)


def test_loader_accepts_one_token_prompts_and_limit_one(tmp_path):
    p = write_trace(tmp_path / "o.csv", ["2023-11-16 18:15:46.0,1,1",
                                         "2023-11-16 18:15:47.0,2,1"])
    assert w.load_azure_trace(p).prompt_tokens.tolist() == [1, 2]
    assert len(w.load_azure_trace(p, limit=1)) == 1
