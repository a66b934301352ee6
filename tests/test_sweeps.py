"""Sweeps across one knob (scalesim_course.sweeps)."""
import numpy as np
import pytest

from scalesim_course import sweeps


def test_sweep_stacks_results():
    out = sweeps.sweep([1, 2, 3], lambda v: {"sq": v * v}, progress=False)
    assert out["value"].tolist() == [1, 2, 3] and out["sq"].tolist() == [1, 4, 9]
    with pytest.raises(ValueError, match="values"):
        sweeps.sweep([], lambda v: {})


def test_knee_rises_with_load_and_tracks_theory():
    k = sweeps.knee([0.2, 0.5, 0.8], n=20_000, progress=False)
    assert np.all(np.diff(k["mean"]) > 0)
    assert np.allclose(k["mean"], k["theory_mean"], rtol=0.1)
    assert np.allclose(k["p99"], k["theory_p99"], rtol=0.15)
