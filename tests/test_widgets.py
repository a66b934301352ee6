"""The ipywidgets explorers build and rerun (scalesim_course.widgets)."""
import matplotlib

matplotlib.use("Agg")

import ipywidgets as w  # noqa: E402

from scalesim_course import widgets  # noqa: E402


def test_explorer_reruns_render_on_change():
    calls = []
    box = widgets.explorer({"x": w.IntSlider(value=1, min=0, max=5)}, lambda x: calls.append(x))
    box.children[0].children[0].value = 3
    assert calls[-1] == 3 and box.children[0].children[0].continuous_update is False


def test_queue_explorer_builds():
    box = widgets.queue_explorer(n=2000)
    sliders = box.children[0].children[1:]
    sliders[0].value = 0.5    # reruns the simulation
    assert [s.description for s in sliders] == ["arrival rate (req/s)",
                                               "service variability (SCV)"]


def test_batching_explorer_defaults_make_every_slider_matter():
    """Issue 8: at the old defaults, max batch 16 -> 61 changed only the title."""
    import numpy as np

    from scalesim_course import batching, costmodel, sim

    box = widgets.batching_explorer(n=2000)
    sliders = {s.description: s for s in box.children[0].children[1:]}
    start = {name: s.value for name, s in sliders.items()}
    cost = costmodel.RooflineCost("qwen2-0.5b", "l4")

    def p50_p99(max_batch, delay_ms, rate):
        wl = batching.scoring_workload(rate, 2000, seed=0)
        res = sim.simulate(wl, cost=cost, batcher=batching.dynamic_batcher(max_batch, delay_ms / 1e3))
        return np.percentile(res.latency[res.completed], [50, 99])

    base = p50_p99(start["max batch size"], start["max delay (ms)"],
                   start["arrival rate (requests/s)"])
    moved = {
        "max batch size": p50_p99(2 * start["max batch size"], start["max delay (ms)"],
                                  start["arrival rate (requests/s)"]),
        "max delay (ms)": p50_p99(start["max batch size"], 4 * start["max delay (ms)"],
                                  start["arrival rate (requests/s)"]),
        "arrival rate (requests/s)": p50_p99(start["max batch size"], start["max delay (ms)"],
                                             start["arrival rate (requests/s)"] / 2),
    }
    for name, (p50, p99) in moved.items():
        change = max(abs(p50 / base[0] - 1), abs(p99 / base[1] - 1))
        assert change > 0.2, f"moving {name} changes p50/p99 by only {change:.0%}"


def test_sliders_line_up_with_one_label_width():
    box = widgets.batching_explorer(n=500)
    sliders = box.children[0].children[1:]
    assert len({s.style.description_width for s in sliders}) == 1
    assert len({s.layout.width for s in sliders}) == 1


def test_readable_durations():
    from scalesim_course.plots import readable

    assert readable(1723.0, "ms") == "1.72 s"
    assert readable(12.5, "ms") == "12.5 ms"
    assert readable(0.0123, "s") == "12.3 ms"
    assert readable(2.5, "s") == "2.5 s"
    assert readable(15000.0, "s") == "15,000 s"
