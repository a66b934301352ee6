"""ipywidgets explorers: move a knob, the simulator reruns, the figure and numbers update."""
from __future__ import annotations

from typing import Callable

import numpy as np


def explorer(controls: dict, render: Callable, title: str | None = None):
    """Sliders (or other widgets) on the left, whatever `render(**values)` draws on the right.

    The simulation reruns when a slider is released (``continuous_update=False``), so the
    page stays responsive. Every label gets the same width, so the slider tracks line up and
    are long enough to set a value precisely.

    Args:
        controls: name -> ipywidget; names are passed to `render` as keyword arguments.
        render: draws the figure for one setting of the controls.
    Returns:
        the widget box (display it, or let the notebook show it as the cell's value).
    """
    import ipywidgets as w

    label = max([len(getattr(c, "description", "")) for c in controls.values()] + [8])
    for c in controls.values():
        if hasattr(c, "continuous_update"):
            c.continuous_update = False
        c.style = {"description_width": f"{0.6 * label + 1:.0f}em"}
        c.layout = w.Layout(width=f"{0.6 * label + 19:.0f}em")
    out = w.interactive_output(render, controls)
    panel = [w.HTML(f"<b>{title}</b>")] if title else []
    return w.HBox([w.VBox(panel + list(controls.values()),
                          layout=w.Layout(min_width=f"{0.6 * label + 20:.0f}em")), out])


def queue_explorer(n: int = 20_000, seed: int = 0):
    """One server, mean service 1 s: move the arrival rate and the service variability and
    watch the simulated p50/p99 latency against queueing theory.

    Theory: M/M/1 percentiles (exact when the squared coefficient of variation is 1) and the
    Pollaczek-Khinchine mean (exact for any variability).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from . import plots, sweeps, theory

    def render(rate, scv):
        got = sweeps.queue_at_load(rate, n=n, scv=scv, seed=seed)
        mean_theory = 1.0 + theory.mg1_wait_mean(rate, 1.0, scv)
        rhos = np.linspace(0.05, 0.97, 60)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(rhos, [1 + theory.mg1_wait_mean(r, 1.0, scv) for r in rhos], "--",
                color=plots.PALETTE[0], label="mean, theory (P-K)")
        ax.plot(rhos, [theory.mm1_sojourn_quantile(r, 1.0, 0.99) for r in rhos], ":",
                color=plots.PALETTE[3], label="p99, M/M/1 theory")
        ax.plot([rate], [got["mean"]], "o", color=plots.PALETTE[0], ms=9, label="mean, simulated")
        ax.plot([rate], [got["p50"]], "s", color=plots.PALETTE[2], ms=9, label="p50, simulated")
        ax.plot([rate], [got["p99"]], "D", color=plots.PALETTE[3], ms=9, label="p99, simulated")
        ax.set(yscale="log", xlabel="arrival rate = utilisation ρ (service mean 1 s)",
               ylabel="latency (s)", title=f"ρ = {rate:.2f}, service SCV = {scv:.2f}")
        ax.legend(fontsize=8, loc="upper left")
        plt.show()
        print(f"simulated: mean {got['mean']:.2f} s, p50 {got['p50']:.2f} s, "
              f"p99 {got['p99']:.2f} s   |   P-K mean {mean_theory:.2f} s")

    controls = {
        "rate": w.FloatSlider(value=0.7, min=0.05, max=0.95, step=0.05,
                              description="arrival rate (req/s)"),
        "scv": w.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25,
                             description="service variability (SCV)"),
    }
    return explorer(controls, render, title="One server under load")


def batching_explorer(n: int = 4000, seed: int = 0, model: str = "qwen2-0.5b", gpu: str = "l4"):
    """Dynamic batching of short one-pass requests: move the max batch size, the max delay and
    the arrival rate, and watch p50/p99 latency and throughput.

    Each setting simulates `n` requests of `batching.scoring_workload` (Poisson arrivals,
    lognormal lengths) through one GPU, timed by the roofline model of `model` on `gpu`.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from . import batching, costmodel, metrics, plots, sim

    cost = costmodel.RooflineCost(model, gpu)

    def render(max_batch, max_delay_ms, rate):
        wl = batching.scoring_workload(rate, n, seed=seed)
        res = sim.simulate(wl, cost=cost, record_steps=True,
                           batcher=batching.dynamic_batcher(max_batch, max_delay_ms / 1e3))
        lat = res.latency[res.completed] * 1e3
        summary = metrics.latency_summary(lat)
        served = metrics.throughput(res)["requests_per_s"]
        fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
        plots.latency_histogram(lat, ax=ax, unit="ms", bins=50,
                                title=f"max batch {max_batch}, max delay {max_delay_ms:g} ms, "
                                      f"{rate:g} requests/s")
        plt.show()
        print(f"p50 {plots.readable(summary['p50'], 'ms')}, p99 {plots.readable(summary['p99'], 'ms')}, "
              f"throughput {served:.0f} requests/s")
        print(f"mean batch {batching.batch_sizes(res).mean():.1f}, GPU busy {res.utilization:.0%}, "
              f"{len(wl) / res.busy_time.sum():.0f} requests per GPU-busy second")
        if served < 0.97 * rate:
            print("Overloaded: requests arrive faster than they are served, the queue keeps")
            print("growing and these latencies grow with the length of the run.")

    controls = {
        # defaults where every slider matters: at 300 requests/s the GPU is busy enough that
        # batches fill, so the size limit changes the padding and the delay the waiting
        "max_batch": w.IntSlider(value=8, min=1, max=64, step=1, description="max batch size"),
        "max_delay_ms": w.FloatSlider(value=5.0, min=0.0, max=50.0, step=1.0,
                                      description="max delay (ms)"),
        "rate": w.FloatSlider(value=300.0, min=10.0, max=600.0, step=10.0,
                              description="arrival rate (requests/s)"),
    }
    return explorer(controls, render, title=f"Dynamic batching, {model} on {gpu}")
