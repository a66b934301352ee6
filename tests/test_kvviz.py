"""kvviz: the explorer's numbers by hand, and every figure draws."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from scalesim_course import kvviz  # noqa: E402


def test_kv_policies_by_hand():
    # Llama-2-7B on an A100 80 GB: (0.9 * 80 GiB - 13,476,831,232 B of weights) / 512 KiB
    # = 121,750 token slots
    got = kvviz.kv_policies("llama-2-7b", "fp16", "a100-80gb-sxm", 1366, 4096, 16)
    assert got["slots"] == 121_750
    assert got["batch"] == {"exact (knows the length)": 89,        # 121,750 // 1,366
                            "paged, blocks of 16": 88,             # 7,609 blocks // 86 each
                            "reserve 4096 tokens": 29}             # 121,750 // 4,096
    assert got["waste"]["paged, blocks of 16"] == pytest.approx(1 - 1366 / 1376)
    assert got["waste"]["reserve 4096 tokens"] == pytest.approx(1 - 1366 / 4096)
    # reserving less than the context is reserving the context
    assert kvviz.kv_policies("llama-2-7b", "fp16", "a100-80gb-sxm", 1366, 16, 16)["batch"][
        "reserve 1366 tokens"] == 89


def test_figures_draw():
    fig, caption = kvviz.kv_policy_figure("mistral-7b", "fp8", "l4", 500, 2048, 64)
    assert "KiB/token" in caption
    axes = kvviz.cache_timing(np.arange(5), [1e-3] * 5, np.arange(1, 6) * 1e-3, [1] * 5,
                              np.arange(1, 6))
    assert len(axes) == 2
    ax = kvviz.memory_per_request([100, 1000], {"a": 1024, "b": 1024, "c": 2048}, {"pool": 1.0})
    assert len(ax.get_lines()) == 3  # a and b share one line, plus the pool level
    kvviz.reserved_vs_stored({"x": ([0, 1], [5, 6], [3, 4], 10)})
    plt.close("all")
