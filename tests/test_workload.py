"""Workload generators and the Azure trace loader (scalesim_course.workload)."""
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
