"""Every figure function draws from real simulator output (scalesim_course.plots)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from scalesim_course import costmodel, plots, sim  # noqa: E402
from scalesim_course.workload import Workload, poisson_workload  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    plots.use_style()
    yield
    plt.close("all")


def test_latency_histogram_marks_percentiles():
    res = sim.simulate(poisson_workload(0.7, 2000, service_rate=1.0, seed=1))
    ax = plots.latency_histogram(res.latency)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("mean") and labels[2].startswith("p99")


def test_latency_vs_load_draws_theory_dashed():
    ax = plots.latency_vs_load([0.5, 0.8], {"mean": [2.1, 5.2]}, {"mean": [2.0, 5.0]})
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--"]


def test_latency_vs_load_shows_replications_as_a_band_on_a_linear_axis():
    runs = [[1.0, 2.0, 9.0], [1.2, 2.4, 13.0], [0.8, 2.2, 11.0]]
    ax = plots.latency_vs_load([0.5, 0.8, 0.9], {"p99": runs}, {"p99": [1.0, 2.5, 10.0]},
                               log=False)
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 0.8 and band[:, 1].max() == 13.0   # min and max of the runs
    median = ax.get_lines()[0]
    assert list(median.get_ydata()) == [1.0, 2.2, 11.0]
    assert ax.get_yscale() == "linear"
    assert "range of 3 simulated runs" in ax.get_legend().get_texts()[0].get_text()


def test_timeline_of_batches_on_two_servers():
    wl = Workload.build(np.arange(10) * 0.1)
    res = sim.simulate(wl, servers=2, cost=costmodel.FixedBatchCost(0.3, 0.0), record_steps=True)
    ax = plots.timeline(res.steps)
    assert len(ax.patches) == 10 and len(ax.get_yticks()) == 2
    with pytest.raises(ValueError, match="record_steps"):
        plots.timeline([])


def test_cdf():
    ax = plots.cdf({"a": [1, 2, 3], "b": [2, np.nan, 4]})
    assert len(ax.get_lines()) == 2


def test_lifecycle_bars_follow_the_timestamps():
    wl = Workload.build([0.0, 0.0, 0.05], prompt_tokens=[100, 300, 50], output_tokens=[5, 3, 8])
    res = sim.simulate(wl, mode="iteration", cost=costmodel.LinearStepCost(0.01, 1e-4, 0.0, 0.0),
                       max_batch=1)
    ax = plots.lifecycle(res)
    waits = [p.get_width() for p in ax.patches[:3]]
    assert waits == pytest.approx(res.queue_delay.tolist())


def test_batch_cost_curves_share_a_unitless_axis_and_skip_impossible_sizes():
    sizes = [1, 2, 4, 8]
    left, right = plots.batch_cost_curves(sizes, {"requests": [0.01, 0.01, 0.01, 0.02],
                                                  "tokens": [0.02, 0.02, 0.03, np.nan]})
    req, tok = right.get_lines()
    assert list(req.get_ydata()) == [1.0, 2.0, 4.0, 4.0]       # b / t, over b = 1
    assert list(tok.get_ydata()[:3]) == [1.0, 2.0, 4 * 0.02 / 0.03]
    assert np.isnan(tok.get_ydata()[3])                          # not drawn
    assert "× a batch of 1" in right.get_ylabel()
