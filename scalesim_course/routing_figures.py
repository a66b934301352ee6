"""Figures and the explorer of notebook 04 (load balancing), in the course's look (plots.py)."""
from __future__ import annotations

import numpy as np

from .plots import PALETTE, _axes, _panels


def utilisation_bars(shares: dict, ax=None, title: str = "How busy each replica was"):
    """Grouped bars: each replica's busy share under each policy.

    Args:
        shares: policy label -> busy fraction of each replica (same number of replicas).
    """
    ax = _axes(ax, title, "replica", "busy share")
    labels = list(shares)
    n = len(next(iter(shares.values())))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        ax.bar(np.arange(n) + (j - (len(labels) - 1) / 2) * width, shares[label], width,
               color=PALETTE[j % len(PALETTE)], label=label)
    ax.set_xticks(range(n))
    ax.set_ylim(0, 1.3)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=8, ncol=min(len(labels), 3), loc="upper right")
    return ax


def queue_lengths(series: dict, times, axes=None, title: str | None = None, show: int = 4):
    """One panel per policy: requests outstanding at the first `show` replicas over time.

    Args:
        series: policy label -> array (len(times), replicas) from routing.outstanding_over_time.
        times: the sample times (s).
    """
    axes = _panels(axes, len(series), figsize=(4 * len(series), 3.4), sharey=True)
    for ax, (label, counts) in zip(axes, series.items()):
        for k in range(min(show, counts.shape[1])):
            ax.step(times, counts[:, k], where="post", lw=1.2, color=PALETTE[k % len(PALETTE)],
                    label=f"replica {k}")
        ax.set(title=label, xlabel="time (s)")
    axes[0].set_ylabel("requests outstanding")
    axes[0].legend(fontsize=8, loc="upper left")
    if title:
        axes[0].figure.suptitle(title, fontweight="bold")
    return axes


def convergence(ns, measured: dict, limits: dict, central=None, ax=None,
                title: str = "Mean time in system against the number of replicas"):
    """Simulated means (with error bars) against N, each with its N -> infinity limit dashed.

    Args:
        ns: numbers of replicas.
        measured: label -> (means, standard errors) at each N.
        limits: label -> the limit (drawn as a dashed line in the label's colour).
        central: optional (ns, values) of the M/M/N central queue, drawn dotted.
    """
    ax = _axes(ax, title, "replicas N (log scale)", "mean time in system (s)")
    for j, (label, (means, ses)) in enumerate(measured.items()):
        colour = PALETTE[j % len(PALETTE)]
        ax.errorbar(ns, means, yerr=2 * np.asarray(ses), marker="o", capsize=4, color=colour,
                    label=f"{label}, simulated (±2 SE)")
        if label in limits:
            ax.axhline(limits[label], ls="--", color=colour, lw=1.2,
                       label=f"{label}, limit {limits[label]:.3f}")
    if central is not None:
        ax.plot(*central, ":", color=PALETTE[7], lw=1.5, label="M/M/N central queue (Erlang C)")
    ax.set_xscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.45 * (high - low))  # room for the legend above the curves
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    return ax


def against(xs, series: dict, ax=None, xlabel: str = "", ylabel: str = "", title: str = "",
            log: bool = False, reference: dict | None = None):
    """One line per policy against a knob (e.g. staleness), optional dashed references."""
    ax = _axes(ax, title, xlabel, ylabel)
    for j, (label, ys) in enumerate(series.items()):
        ax.plot(xs, ys, marker="o", color=PALETTE[j % len(PALETTE)], label=label)
    for j, (label, y) in enumerate((reference or {}).items()):
        ax.axhline(y, ls="--", color=PALETTE[7], lw=1, alpha=0.6)
        ax.annotate(label, (xs[-1], y), textcoords="offset points", xytext=(-4, 4), ha="right",
                    fontsize=8, color=PALETTE[7])
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def load_balancing_explorer(n: int = 4000, seed: int = 0):
    """Move the load, the number of replicas, the staleness of load reports and the share of
    fast replicas; see the p99 latency of six routers on the same arrivals.

    Request mode, exponential service of mean 1 s at speed 1; fast replicas run at speed 3.
    The load is the arrival rate over the fleet's total capacity.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from . import routing, sim, workload

    def render(load, replicas, staleness, fast_share):
        n_fast = int(round(fast_share * replicas))
        speeds = [3.0] * n_fast + [1.0] * (replicas - n_fast)
        capacity = sum(speeds)
        wl = workload.poisson_workload(load * capacity, n, service_rate=1.0, seed=seed)
        settings = {}
        if hasattr(sim, "ReplicaSpec"):
            settings["replica_specs"] = [sim.ReplicaSpec(speed=s) for s in speeds]
        elif n_fast:
            print("This engine has no ReplicaSpec: every replica runs at speed 1.")
            speeds = [1.0] * replicas
        if staleness > 0:
            settings["view_staleness"] = staleness
        routers = {
            "random": routing.random_choice,
            "round robin": routing.RoundRobin(),
            "smooth weighted RR": routing.smooth_weighted_round_robin(speeds),
            "least outstanding": routing.least_outstanding,
            "power of 2": lambda q, r, g: routing.power_of_d(q, r, g, 2),
            "peak EWMA": routing.PeakEWMA(),
        }
        p99 = {}
        for label, router in routers.items():
            res = sim.simulate(wl, replicas=replicas, router=router, seed=seed, **settings)
            p99[label] = float(np.nanpercentile(res.latency, 99))
        fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
        labels = list(p99)
        ax.barh(labels, [p99[k] for k in labels], color=[PALETTE[j] for j in range(len(labels))])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.18 * max(p99.values()))  # room for the labels
        ax.set(xlabel="p99 latency (s)",
               title=f"{replicas} replicas ({n_fast} fast), load {load:.2f}, reports "
                     f"{staleness:g} s old")
        for y, k in enumerate(labels):
            ax.annotate(f"{p99[k]:.1f} s", (p99[k], y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)
        plt.show()
        best = min(p99, key=p99.get)
        print(f"{n} requests at {load * capacity:.1f}/s; best p99: {best} ({p99[best]:.2f} s). "
              f"A service takes 1 s at speed 1.")

    controls = {
        "load": w.FloatSlider(value=0.85, min=0.3, max=0.97, step=0.01,
                              description="load (share of capacity)"),
        "replicas": w.IntSlider(value=10, min=2, max=40, step=1, description="replicas"),
        "staleness": w.FloatSlider(value=0.0, min=0.0, max=10.0, step=0.5,
                                   description="load reports age T (s)"),
        "fast_share": w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.1,
                                    description="share of fast replicas (3x)"),
    }
    from .widgets import explorer
    return explorer(controls, render, title="Routing: p99 latency per policy")


def queue_tails(measured: dict, theory: dict, ax=None,
                title: str = "Share of replicas holding at least i requests"):
    """Measured tail fractions s_i (markers) against the fixed point (dashed), log scale.

    Args:
        measured: label -> s_0, s_1, ... measured in a run.
        theory: label -> s_0, s_1, ... of the model (same labels drawn in the same colour;
            labels only here are drawn as theory alone).
    """
    ax = _axes(ax, title, "queue length i", "share of replicas with ≥ i (log scale)")
    labels = list(measured) + [label for label in theory if label not in measured]
    for j, label in enumerate(labels):
        colour = PALETTE[j % len(PALETTE)]
        if label in measured:
            s = np.asarray(measured[label], dtype=float)
            keep = s > 0
            ax.plot(np.arange(len(s))[keep], s[keep], "o", color=colour, ms=7,
                    label=f"{label}, simulated")
        if label in theory:
            t = np.asarray(theory[label], dtype=float)
            ax.plot(np.arange(len(t))[t > 1e-12], t[t > 1e-12], "--", color=colour, lw=1.2,
                    label=f"{label}, fixed point")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1.5)
    ax.legend(fontsize=8)
    return ax
