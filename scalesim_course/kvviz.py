"""Figures and the explorer of notebook 03 (the KV cache), in the course's plot style."""
from __future__ import annotations

import numpy as np

from .plots import PALETTE, _axes

GiB = 2 ** 30


def cache_timing(positions, with_cache, without_cache, flops_with, flops_without, axes=None,
                 title: str | None = None):
    """Two panels: seconds per generated token against its position, and the speedup of the
    cache against length, measured beside the FLOP ratio counted from the model's shape.

    Args:
        positions: the position (tokens in the sequence) of each step.
        with_cache, without_cache: seconds of each step.
        flops_with, flops_without: FLOPs of each step (`kvcache.generation_flops`).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    pos = np.asarray(positions)
    a = _axes(axes[0], "Time per generated token", "position in the sequence (tokens)",
              "milliseconds per token")
    a.plot(pos, np.asarray(without_cache) * 1e3, ".", ms=3, color=PALETTE[3],
           label="without a cache: reruns the whole prefix")
    a.plot(pos, np.asarray(with_cache) * 1e3, ".", ms=3, color=PALETTE[0],
           label="with a KV cache: one token per step")
    a.set_ylim(bottom=0)
    a.legend(loc="upper left")
    b = _axes(axes[1], "Total time to generate n tokens: ratio", "tokens generated n",
              "without cache / with cache")
    n = np.arange(1, len(pos) + 1)
    b.plot(n, np.cumsum(without_cache) / np.cumsum(with_cache), color=PALETTE[3],
           label="measured time ratio")
    b.plot(n, np.cumsum(flops_without) / np.cumsum(flops_with), "--", color=PALETTE[2],
           label="FLOP ratio from the model's shape")
    b.set_ylim(bottom=0)
    b.legend(loc="upper left")
    if title:
        axes[0].figure.suptitle(title, fontweight="bold")
    return axes


def memory_per_request(contexts, bytes_per_token: dict, gpu_free: dict | None = None, ax=None,
                       title: str = "KV cache of one request"):
    """GiB of KV cache per request against its context length, one line per model.

    Args:
        contexts: context lengths (tokens).
        bytes_per_token: label -> bytes per token.
        gpu_free: label -> GiB left for the cache on a GPU (drawn as a dotted level).

    Models with equal bytes per token are drawn as one line naming them all.
    """
    ax = _axes(ax, title, "context length (tokens)", "GiB per request")
    x = np.asarray(contexts, dtype=float)
    same: dict = {}  # models with the same bytes per token share one line
    for label, per_token in bytes_per_token.items():
        same.setdefault(per_token, []).append(label)
    lines = {" and ".join(labels): per_token for per_token, labels in same.items()}
    for i, (label, per_token) in enumerate(lines.items()):
        ax.plot(x, x * per_token / GiB, color=PALETTE[i % len(PALETTE)], lw=2,
                label=f"{label}: {per_token / 1024:g} KiB/token")
    for i, (label, gib) in enumerate((gpu_free or {}).items()):
        ax.axhline(gib, color="0.4", ls=":", lw=1.5)
        ax.text(x[0], gib, f" {label}", va="bottom", fontsize=9, color="0.3")
    ax.set(xscale="log", yscale="log")
    ax.legend(loc="upper left", fontsize=9)
    return ax


def reserved_vs_stored(runs: dict, ax=None,
                       title: str = "KV memory: reserved against holding tokens"):
    """Per policy, the KV slots reserved and those holding a token, over the run.

    Args:
        runs: label -> (times, used, stored, capacity) arrays from a run's KV log.
    """
    ax = _axes(ax, title, "time (s)", "share of the KV pool")
    for i, (label, (t, used, stored, cap)) in enumerate(runs.items()):
        c = PALETTE[i % len(PALETTE)]
        ax.plot(t, np.asarray(used) / cap, color=c, lw=1.5, label=f"{label}: allocated")
        ax.plot(t, np.asarray(stored) / cap, color=c, lw=1.5, ls="--",
                label=f"{label}: holding a token")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="center right", bbox_to_anchor=(1, 0.72), fontsize=8, ncol=2)
    return ax


def kv_policies(model, dtype, gpu, context: int, reserve: int, block_size: int) -> dict:
    """The largest batch each KV policy fits, and the share of its memory holding no token.

    Every request holds `context` tokens. 90% of the GPU's memory is usable (vLLM's default);
    the weights take their share. Exact: pool // context. Paged: whole blocks, the last one
    partly empty. Reserve max: each request reserves max(reserve, context) tokens.

    Returns:
        {"per_token", "pool_bytes", "slots", "batch": {policy: n}, "waste": {policy: share}}.
    """
    from . import costmodel, kvcache

    spec, card = costmodel.get_model(model), costmodel.get_gpu(gpu)
    per_token = kvcache.kv_bytes_per_token(spec, dtype)
    pool = max(0.0, card.mem_bytes * 0.9 - spec.weight_bytes)
    slots = int(pool // per_token)
    reserve = max(reserve, context)
    blocks = -(-context // block_size) * block_size
    names = ("exact (knows the length)", f"paged, blocks of {block_size}",
             f"reserve {reserve} tokens")
    return {"per_token": per_token, "pool_bytes": pool, "slots": slots,
            "batch": dict(zip(names, (slots // context,
                                      (slots // block_size) * block_size // blocks,
                                      slots // reserve))),
            "waste": dict(zip(names, (0.0, 1 - context / blocks, 1 - context / reserve)))}


def kv_policy_figure(model, dtype, gpu, context: int, reserve: int, block_size: int):
    """Bars of `kv_policies`: largest batch and memory waste per policy, with a caption."""
    import matplotlib.pyplot as plt

    from . import costmodel

    spec, card = costmodel.get_model(model), costmodel.get_gpu(gpu)
    got = kv_policies(model, dtype, gpu, context, reserve, block_size)
    batch, waste = got["batch"], got["waste"]
    names = list(batch)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    a.barh(names, [batch[k] for k in names], color=PALETTE[:3])
    a.set(xlabel="largest batch that fits", title=f"{spec.name} on {card.name}, {dtype}")
    for y, k in enumerate(names):
        a.text(batch[k], y, f" {batch[k]:,}", va="center")
    a.invert_yaxis()
    b.barh(names, [100 * waste[k] for k in names], color=PALETTE[:3])
    b.set(xlabel="% of allocated KV memory holding no token", xlim=(0, 100),
          title="memory waste", yticklabels=[])
    b.invert_yaxis()
    caption = (f"weights {spec.weight_bytes / GiB:.1f} GiB; KV pool {got['pool_bytes'] / GiB:.1f} "
               f"GiB = {got['slots']:,} tokens at {got['per_token'] / 1024:g} KiB/token "
               f"(90% of {card.mem_bytes / GiB:.0f} GiB usable, as vLLM's default)")
    return fig, caption


def kv_explorer():
    """Model, cache dtype, GPU, context and block size: the largest batch each KV policy fits,
    and the share of its memory that holds no token (see `kv_policies`)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from . import costmodel
    from .widgets import explorer

    def render(model, dtype, gpu, context, reserve, block_size):
        _, caption = kv_policy_figure(model, dtype, gpu, context, reserve, block_size)
        plt.show()
        print(caption)

    controls = {
        "model": w.Dropdown(options=list(costmodel.MODELS), value="llama-2-7b",
                            description="model"),
        "dtype": w.Dropdown(options=["fp32", "fp16", "fp8"], value="fp16",
                            description="cache dtype"),
        "gpu": w.Dropdown(options=list(costmodel.GPUS), value="a100-80gb-sxm",
                          description="GPU"),
        "context": w.IntSlider(value=1366, min=16, max=8192, step=10,
                               description="tokens per request"),
        "reserve": w.IntSlider(value=4096, min=16, max=8192, step=16,
                               description="reserve_max: tokens reserved"),
        "block_size": w.Dropdown(options=[1, 8, 16, 32, 64, 128, 256, 512], value=16,
                                 description="block size"),
    }
    return explorer(controls, render, title="How many requests fit, per KV policy")
