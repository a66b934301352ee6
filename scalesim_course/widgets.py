"""ipywidgets explorers: move a knob, the simulator reruns, the figure and numbers update."""
from __future__ import annotations

from typing import Callable


def explorer(controls: dict, render: Callable, title: str | None = None):
    """Sliders (or other widgets) on the left, whatever `render(**values)` draws on the right.

    The simulation reruns when a slider is released (``continuous_update=False``), so the
    page stays responsive. `render` draws with matplotlib and/or returns text to show.

    Args:
        controls: name -> ipywidget; names are passed to `render` as keyword arguments.
        render: draws the figure for one setting of the controls.
    Returns:
        the widget box (display it, or let the notebook show it as the cell's value).
    """
    import ipywidgets as w

    for c in controls.values():
        if hasattr(c, "continuous_update"):
            c.continuous_update = False
        c.style = {"description_width": "initial"}
    out = w.interactive_output(render, controls)
    panel = [w.HTML(f"<b>{title}</b>")] if title else []
    return w.HBox([w.VBox(panel + list(controls.values()),
                          layout=w.Layout(min_width="300px")), out])
