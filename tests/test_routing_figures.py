"""Notebook 04's figures draw what they are given, and its explorer reruns every router."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scalesim_course import routing_figures  # noqa: E402


def test_figures_draw_one_artist_per_series():
    ax = routing_figures.utilisation_bars({"a": [0.2, 0.4], "b": [0.3, 0.3]})
    assert len(ax.patches) == 4 and [round(p.get_height(), 1) for p in ax.patches] == [0.2, 0.4, 0.3, 0.3]
    axes = routing_figures.queue_lengths({"x": np.array([[1, 0], [2, 1]]), "y": np.zeros((2, 2))},
                                         [0.0, 1.0], show=2)
    assert len(axes) == 2 and len(axes[0].lines) == 2
    ax = routing_figures.convergence([10, 100], {"d = 2": ([3.0, 2.7], [0.1, 0.05])},
                                     {"d = 2": 2.614}, central=([10, 100], [1.7, 1.0]))
    assert any(np.allclose(line.get_ydata(), [2.614, 2.614]) for line in ax.lines)
    ax = routing_figures.against([0, 1], {"p": [1.0, 2.0]}, reference={"random": 3.0}, log=True)
    assert ax.get_yscale() == "log"
    plt.close("all")


def test_explorer_reruns_with_stale_views_and_fast_replicas(capsys):
    box = routing_figures.load_balancing_explorer(n=600)
    sliders = box.children[0].children[1:]
    assert [s.description for s in sliders] == ["load (share of capacity)", "replicas",
                                               "load reports age T (s)",
                                               "share of fast replicas (3x)"]
    sliders[2].value = 2.0
    sliders[3].value = 0.5
    plt.close("all")
