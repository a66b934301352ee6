"""Figures for the notebooks: one function per kind of picture, one look across the course."""
from __future__ import annotations

import numpy as np

# Colour-blind-safe palette (Okabe and Ito, 2008), in the order series are drawn.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def use_style() -> None:
    """The course's plot style: seaborn's clean grid, readable fonts, our palette."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.figsize": (8, 4.5), "figure.dpi": 100, "axes.titleweight": "bold",
                         "axes.spines.top": False, "axes.spines.right": False,
                         "legend.frameon": False})


def _axes(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax


def latency_histogram(latencies, ax=None, bins: int = 60, title: str = "Latency distribution",
                      unit: str = "s", marks=(50, 99)):
    """A histogram of latencies with the mean and chosen percentiles marked as vertical lines."""
    x = np.asarray(latencies, dtype=float)
    x = x[~np.isnan(x)]
    ax = _axes(ax, title, f"latency ({unit})", "requests")
    ax.hist(x, bins=bins, color=PALETTE[0], alpha=0.75)
    lines = [("mean", x.mean(), PALETTE[3], "-")]
    lines += [(f"p{q:g}", np.percentile(x, q), PALETTE[i + 1], "--") for i, q in enumerate(marks)]
    for label, value, colour, style in lines:
        ax.axvline(value, color=colour, ls=style, lw=2, label=f"{label} = {value:.3g} {unit}")
    ax.legend()
    return ax


def latency_vs_load(loads, series: dict, theory: dict | None = None, ax=None,
                    title: str = "Latency against load", xlabel: str = "utilisation ρ",
                    ylabel: str = "latency (s)", log: bool = True):
    """Measured latency curves against load, with theory as dashed lines of the same colour.

    Args:
        loads: x values (e.g. utilisations).
        series: label -> measured values at each load (drawn as markers and lines).
        theory: label -> theoretical values at each load (dashed); labels match `series`.
    """
    ax = _axes(ax, title, xlabel, ylabel)
    for i, (label, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(loads, values, "o-", color=colour, label=f"{label} (simulated)")
        if theory and label in theory:
            ax.plot(loads, theory[label], "--", color=colour, alpha=0.8, label=f"{label} (theory)")
    if log:
        ax.set_yscale("log")
    ax.legend()
    return ax


def timeline(steps, ax=None, replica: int = 0, t0: float = 0.0, t1: float | None = None,
             title: str = "What the replica was doing", label_sizes: bool = True):
    """A Gantt-style timeline of batches or engine steps from ``RunResult.steps``.

    Each bar is one batch (request mode) or one step (iteration mode): its length is its time,
    its colour darker for larger batches, and its label the number of requests in it.
    """
    import matplotlib.pyplot as plt

    rows = [s for s in steps if s[0] == replica and s[2] > t0 and (t1 is None or s[1] < t1)]
    if not rows:
        raise ValueError("no recorded steps in that window; run with record_steps=True")
    ax = _axes(ax, title, "time (s)", None)
    biggest = max(s[3] for s in rows)
    cmap = plt.get_cmap("Blues")
    lanes: list[float] = []   # batches that overlap (several servers) go on separate lanes
    for _, start, end, size, *_ in rows:
        lane = next((k for k, free_at in enumerate(lanes) if free_at <= start + 1e-12), None)
        if lane is None:
            lanes.append(end)
            lane = len(lanes) - 1
        lanes[lane] = end
        ax.barh(lane, end - start, left=start, height=0.8, edgecolor="white",
                color=cmap(0.3 + 0.7 * size / biggest))
        if label_sizes and (end - start) > 0.02 * ((t1 or rows[-1][2]) - t0):
            ax.text((start + end) / 2, lane, str(size), ha="center", va="center", fontsize=8)
    ax.set_yticks(range(len(lanes)), [f"server {k}" for k in range(len(lanes))])
    ax.set_xlim(t0, t1 if t1 is not None else rows[-1][2])
    ax.grid(axis="y", visible=False)
    return ax


def cdf(values: dict, ax=None, title: str = "Cumulative distribution", xlabel: str = "latency (s)",
        log: bool = False):
    """Empirical CDFs of several samples (label -> values), for comparing tails."""
    ax = _axes(ax, title, xlabel, "fraction of requests ≤ x")
    for i, (label, v) in enumerate(values.items()):
        x = np.sort(np.asarray(v, dtype=float)[~np.isnan(np.asarray(v, dtype=float))])
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), color=PALETTE[i % len(PALETTE)],
                label=label)
    if log:
        ax.set_xscale("log")
    ax.legend()
    return ax


def lifecycle(result, ids=None, ax=None, title: str = "The life of a request"):
    """One bar per request, split into waiting, time to first token, and generating the rest.

    Args:
        result: a RunResult.
        ids: which requests (default: the first 12).
    """
    ids = list(range(min(12, len(result.finish)))) if ids is None else list(ids)
    ax = _axes(ax, title, "time (s)", "request")
    a, s = result.arrival[ids], result.start[ids]
    f1, f = result.first_token[ids], result.finish[ids]
    y = np.arange(len(ids))
    ax.barh(y, s - a, left=a, color="#BBBBBB", label="waiting in the queue")
    ax.barh(y, f1 - s, left=s, color=PALETTE[1], label="prefill → first token")
    ax.barh(y, f - f1, left=f1, color=PALETTE[0], label="decoding the rest")
    ax.plot(a, y, "k|", ms=12, label="arrival")
    ax.set_yticks(y, [str(i) for i in ids])
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, fontsize=8)
    return ax
