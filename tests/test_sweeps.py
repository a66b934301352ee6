"""Sweeps across one knob (scalesim_course.sweeps)."""
import math

import numpy as np
import pytest

from scalesim_course import sim, sweeps
from scalesim_course.workload import poisson_workload


def test_sweep_stacks_results():
    out = sweeps.sweep([1, 2, 3], lambda v: {"sq": v * v}, progress=False)
    assert out["value"].tolist() == [1, 2, 3] and out["sq"].tolist() == [1, 4, 9]
    with pytest.raises(ValueError, match="values"):
        sweeps.sweep([], lambda v: {})


def test_knee_rises_with_load_and_tracks_theory():
    rhos = [0.2, 0.5, 0.8]
    k = sweeps.knee(rhos, n=20_000, progress=False)
    assert np.all(np.diff(k["mean"]) > 0)
    # M/M/1 sojourn time, mean 1 / (1 - rho) and p99 ln(100) / (1 - rho), written out here
    assert np.allclose(k["theory_mean"], [1 / (1 - r) for r in rhos])
    assert np.allclose(k["theory_p99"], [math.log(100) / (1 - r) for r in rhos])
    for i, rho in enumerate(rhos):
        # the tolerance is the run's own standard error, from 20 batch means of the same run
        wl = poisson_workload(rho, 20_000, service_rate=1.0, seed=0)
        lat = sim.simulate(wl, seed=0).latency[400:]
        assert k["mean"][i] == lat.mean() and k["p99"][i] == np.percentile(lat, 99)
        se = np.array_split(lat, 20)
        se = np.std([b.mean() for b in se], ddof=1) / math.sqrt(20)
        assert abs(k["mean"][i] - k["theory_mean"][i]) < 4 * se, (rho, k["mean"][i], se)
