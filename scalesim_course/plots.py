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
        ax.axvline(value, color=colour, ls=style, lw=2, label=f"{label} = {readable(value, unit)}")
    ax.legend()
    return ax


def readable(value: float, unit: str = "s") -> str:
    """A duration as people read it: "1.72 s" rather than "1.72e+03 ms", "12.5 ms", "0.8 ms"."""
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}.get(unit)
    if scale is None or not np.isfinite(value):
        return f"{value:.3g} {unit}"
    seconds = value * scale
    if abs(seconds) >= 1.0:
        return f"{seconds:,.3g} s" if abs(seconds) < 1000 else f"{seconds:,.0f} s"
    return f"{seconds * 1e3:.3g} ms"


def latency_vs_load(loads, series: dict, theory: dict | None = None, ax=None,
                    title: str = "Latency against load", xlabel: str = "utilisation ρ",
                    ylabel: str = "latency (s)", log: bool = True):
    """Measured latency curves against load, with theory as dashed lines of the same colour.

    Args:
        loads: x values (e.g. utilisations).
        series: label -> measured values at each load (drawn as markers and lines); a 2-D
            array (replications x loads) draws the median as markers and the range of the
            replications as a shaded band.
        theory: label -> theoretical values at each load (dashed); labels match `series`.
        log: logarithmic y axis (False: linear, where "explodes" is seen as it is).
    """
    ax = _axes(ax, title, xlabel, ylabel)
    for i, (label, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        values = np.asarray(values, dtype=float)
        if values.ndim == 2:
            ax.fill_between(loads, values.min(axis=0), values.max(axis=0), color=colour,
                            alpha=0.25, lw=0,
                            label=f"{label}: range of {values.shape[0]} simulated runs")
            ax.plot(loads, np.median(values, axis=0), "o", color=colour, ms=5,
                    label=f"{label}: median of the runs")
        else:
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


# ----------------------------------------------------------------------------- batching (notebook 02)
def _panels(axes, n: int, figsize=(11, 4), sharey: bool = False):
    """`n` side-by-side axes: the ones given, or a new figure's."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, n, figsize=figsize, sharey=sharey, layout="constrained")
    axes = list(np.atleast_1d(axes))
    if len(axes) != n:
        raise ValueError(f"axes must be {n} matplotlib axes, got {len(axes)}")
    return axes


def batch_cost_curves(batch_sizes, seconds_per_batch: dict, axes=None,
                      item: str = "item", title: str | None = None):
    """Why batching pays: time of one batch, and work per second relative to a batch of one.

    The right panel divides each curve's items per second by its own value at the smallest
    batch, so curves that count different things (requests, tokens) share one unitless axis.

    Args:
        batch_sizes: the batch sizes (x, log scale base 2).
        seconds_per_batch: label -> seconds one batch of each size takes; nan where a size is
            impossible (e.g. does not fit in memory): not drawn.
        item: unused, kept for old calls.
    Returns:
        the two axes.
    """
    left, right = _panels(axes, 2, figsize=(11, 4.6))
    b = np.asarray(batch_sizes, dtype=float)
    for i, (label, secs) in enumerate(seconds_per_batch.items()):
        secs = np.asarray(secs, dtype=float)
        colour = PALETTE[i % len(PALETTE)]
        left.plot(b, secs * 1e3, "o-", color=colour, ms=4, label=label)
        rate = b / secs
        right.plot(b, rate / rate[0], "o-", color=colour, ms=4, label=label)
    left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="time per batch (ms)",
             title="Time for one batch")
    right.set(xscale="log", yscale="log", xlabel="batch size",
              ylabel="work per second, × a batch of 1", title="Work done per second")
    for ax in (left, right):
        ax.xaxis.set_major_formatter("{x:g}")
    right.yaxis.set_major_formatter("{x:g}×")
    handles, labels = left.get_legend_handles_labels()
    left.figure.legend(handles, labels, loc="outside lower center", ncol=1, fontsize=9)
    if title:
        left.figure.suptitle(title, fontweight="bold")
    return left, right


def latency_vs_rate(rates, series: dict, axes=None, unit: str = "ms",
                    percentiles=("p50", "p99"), title: str | None = None,
                    xlabel: str = "arrival rate (requests/s)"):
    """Latency percentiles against arrival rate, one line per policy, one panel per percentile.

    Args:
        rates: arrival rates (x).
        series: policy label -> {"p50": values, "p99": values, ...} in seconds (nan: not shown).
        unit: "ms" or "s" for the y axis.
        percentiles: which keys to draw, one panel each.
    Returns:
        the axes.
    """
    axes = _panels(axes, len(percentiles), figsize=(5.5 * len(percentiles), 4.2), sharey=True)
    scale = 1e3 if unit == "ms" else 1.0
    markers = "osD^vP*X"
    for i, (label, values) in enumerate(series.items()):
        for ax, key in zip(axes, percentiles):
            ax.plot(rates, np.asarray(values[key], dtype=float) * scale, marker=markers[i % 8],
                    ms=4, color=PALETTE[i % len(PALETTE)], label=label)
    for ax, key in zip(axes, percentiles):
        ax.set(yscale="log", xlabel=xlabel, title=f"{key} latency")
    axes[0].set_ylabel(f"latency ({unit})")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].figure.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)),
                          fontsize=9)
    if title:
        axes[0].figure.suptitle(title, fontweight="bold")
    return axes


def throughput_vs_delay(delays, series: dict, axes=None, title: str | None = None):
    """What a longer max delay buys and costs, one line per arrival rate.

    Left: requests served per second of GPU busy time (the throughput the GPU attains while it
    works: fuller batches, less GPU time per request). Right: p99 latency.

    Args:
        delays: max-delay settings in seconds (x, drawn in ms).
        series: label -> {"per_busy_second": values, "p99": values (seconds)}.
    Returns:
        the two axes.
    """
    left, right = _panels(axes, 2)
    x = np.asarray(delays, dtype=float) * 1e3
    for i, (label, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        left.plot(x, values["per_busy_second"], "o-", color=colour, ms=4, label=label)
        right.plot(x, np.asarray(values["p99"], dtype=float) * 1e3, "o-", color=colour, ms=4,
                   label=label)
    left.set(xlabel="max delay (ms)", ylabel="requests per GPU-busy second",
             title="Throughput while the GPU works")
    right.set(xlabel="max delay (ms)", ylabel="p99 latency (ms)", title="Tail latency")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.legend(fontsize=9)
    if title:
        left.figure.suptitle(title, fontweight="bold")
    return left, right


def padding_bars(before, after, axes=None, labels=("in arrival order", "bucketed by length"),
                 max_batches: int = 48, title: str | None = None):
    """Real and padding tokens of each batch, before and after bucketing, as stacked bars.

    Args:
        before, after: batches, each a list of the lengths of the requests actually in it.
        labels: panel titles.
        max_batches: draw at most this many batches per panel, evenly spaced through the list
            (the waste in the title counts them all).
    Returns:
        the two axes.
    """
    axes = _panels(axes, 2, figsize=(11, 4), sharey=True)
    for ax, batches, label in zip(axes, (before, after), labels):
        real = np.array([sum(b) for b in batches], dtype=float)
        slots = np.array([len(b) * max(b) if len(b) else 0 for b in batches], dtype=float)
        waste = (slots.sum() - real.sum()) / slots.sum() if slots.sum() else 0.0
        k = min(len(batches), max_batches)
        pick = np.unique(np.linspace(0, len(batches) - 1, k).round().astype(int))
        x = np.arange(len(pick))
        ax.bar(x, real[pick], width=0.85, color=PALETTE[0], label="real tokens")
        ax.bar(x, slots[pick] - real[pick], bottom=real[pick], width=0.85, color=PALETTE[1],
               alpha=0.85, label="padding")
        shown = (f" ({len(pick)} of {len(batches)}, evenly spaced)" if len(pick) < len(batches)
                 else "")
        ax.set(xlabel=f"batch{shown}", title=f"{label}: {waste:.0%} padding")
        ax.grid(axis="x", visible=False)
    axes[0].set_ylabel("token slots computed")
    axes[0].legend(fontsize=9, loc="upper left")
    if title:
        axes[0].figure.suptitle(title, fontweight="bold")
    return axes


def slot_timeline(runs: dict, axes=None, unit: str = "s", title: str | None = None,
                  show_ids: bool = True):
    """Gantt chart of batch slots: who held each slot when, one panel per policy.

    Each bar is one request in one slot: prefill up to its first token, decoding up to its last
    token, then (static batching) the slot held idle until the whole batch ends.

    Args:
        runs: policy label -> rows from `scalesim_course.batching.slot_timeline`.
        unit: "s" or "ms" for the time axis.
    Returns:
        the axes, one per policy, sharing the time axis.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if axes is None:
        heights = [max(r.slot for r in rows) + 1 for rows in runs.values()]
        _, axes = plt.subplots(len(runs), 1, sharex=True, layout="constrained",
                               figsize=(11, 1.2 + 0.45 * sum(heights)),
                               gridspec_kw={"height_ratios": heights})
    axes = list(np.atleast_1d(axes))
    scale = 1e3 if unit == "ms" else 1.0
    end = max(r.release for rows in runs.values() for r in rows) * scale
    for ax, (label, rows) in zip(axes, runs.items()):
        for r in rows:
            s, f, d, e = (v * scale for v in (r.start, r.first_token, r.done, r.release))
            ax.barh(r.slot, f - s, left=s, height=0.7, color=PALETTE[1], edgecolor="white")
            ax.barh(r.slot, d - f, left=f, height=0.7, color=PALETTE[0], edgecolor="white")
            if e > d:
                ax.barh(r.slot, e - d, left=d, height=0.7, color="#DDDDDD", hatch="///",
                        edgecolor="white")
            if show_ids and (d - f) > 0.02 * end:      # on the decoding part, if it is wide enough
                ax.text((f + d) / 2, r.slot, str(r.id), ha="center", va="center", fontsize=8,
                        color="white", fontweight="bold")
            elif show_ids and (f - s) > 0.02 * end:
                ax.text((s + f) / 2, r.slot, str(r.id), ha="center", va="center", fontsize=8,
                        color="black", fontweight="bold")
        slots = max(r.slot for r in rows) + 1
        finish = max(r.release for r in rows) * scale
        ax.axvline(finish, color=PALETTE[3], lw=1.5, ls="--")
        ax.text(finish, slots - 0.4, f" all done: {finish:.3g} {unit}", color=PALETTE[3],
                fontsize=9, va="center")
        ax.set_yticks(range(slots), [f"slot {k}" for k in range(slots)])
        ax.set_ylim(slots - 0.5, -0.5)
        ax.set_title(label, loc="left", fontsize=11)
        ax.grid(axis="y", visible=False)
    axes[-1].set_xlabel(f"time ({unit})")
    axes[-1].set_xlim(0, end * 1.12)
    legend = [Patch(color=PALETTE[1], label="prefill → first token"),
              Patch(color=PALETTE[0], label="decoding"),
              Patch(facecolor="#DDDDDD", hatch="///", label="slot held, idle")]
    axes[0].legend(handles=legend, fontsize=8, loc="lower right", ncol=3,
                   bbox_to_anchor=(1.0, 1.0))
    if title:
        axes[0].figure.suptitle(title, fontweight="bold")
    return axes


def measured_vs_predicted(measured: dict, predicted: dict, ax=None, unit: str = "s",
                          title: str = "Simulated against measured, request by request",
                          what: str = "latency"):
    """One point per request: the simulator's prediction (x) against the measurement (y).

    Points on the dashed diagonal are predicted exactly; above it, the real run was slower.

    Args:
        measured, predicted: label -> per-request values in seconds, same labels and order.
    Returns:
        the axes.
    """
    ax = _axes(ax, title, f"simulated {what} ({unit})", f"measured {what} ({unit})")
    scale = 1e3 if unit == "ms" else 1.0
    top = 0.0
    for i, (label, values) in enumerate(measured.items()):
        y = np.asarray(values, dtype=float) * scale
        x = np.asarray(predicted[label], dtype=float) * scale
        ax.plot(x, y, "o", ms=5, alpha=0.8, color=PALETTE[i % len(PALETTE)], label=label)
        top = max(top, np.nanmax(x), np.nanmax(y))
    ax.plot([0, top * 1.05], [0, top * 1.05], "--", color="#777777", lw=1, label="prediction = measurement")
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, top * 1.05)
    ax.set_aspect("equal")
    ax.legend(fontsize=9, loc="upper left")
    return ax
