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
