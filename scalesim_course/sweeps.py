"""Parameter sweeps: rerun the simulator across values of one knob and collect the numbers."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from . import sim, theory
from .workload import poisson_workload


def sweep(values: Iterable, run: Callable[[object], dict], desc: str | None = None,
          progress: bool = True) -> dict:
    """Call `run(value)` for each value and stack the dicts it returns into arrays.

    Returns:
        {"value": array of values, key: array of run(value)[key] for each key}.
    """
    from tqdm.auto import tqdm

    values = list(values)
    if not values:
        raise ValueError("values is empty: nothing to sweep")
    rows = [run(v) for v in tqdm(values, desc=desc, disable=not progress, leave=False)]
    out = {"value": np.asarray(values)}
    for key in rows[0]:
        out[key] = np.asarray([r[key] for r in rows])
    return out


def queue_at_load(rho: float, *, n: int = 20_000, servers: int = 1, scv: float = 1.0,
                  seed: int = 0) -> dict:
    """Simulate one M/G/c queue (service mean 1 s) at utilisation rho; mean, p50, p99 latency."""
    wl = poisson_workload(rho * servers, n, service_rate=1.0, scv=scv, seed=seed)
    lat = sim.simulate(wl, servers=servers, seed=seed).latency[n // 50:]   # drop the warm-up
    return {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99))}


def mm1_theory(rho: float) -> dict:
    """M/M/1 mean, p50 and p99 sojourn time at utilisation rho (service mean 1 s)."""
    return {"mean": theory.mm1_sojourn_mean(rho, 1.0),
            "p50": theory.mm1_sojourn_quantile(rho, 1.0, 0.50),
            "p99": theory.mm1_sojourn_quantile(rho, 1.0, 0.99)}


def knee(rhos, *, n: int = 20_000, scv: float = 1.0, seed: int = 0, progress: bool = True
         ) -> dict:
    """The latency/utilisation knee of one server: simulated and theoretical, per utilisation.

    Theory is M/M/1 for percentiles (exact only when scv = 1) and Pollaczek-Khinchine for the
    mean (exact for any scv).
    """
    measured = sweep(rhos, lambda r: queue_at_load(r, n=n, scv=scv, seed=seed),
                     desc="utilisation", progress=progress)
    mm1 = sweep(rhos, mm1_theory, progress=False)
    measured["theory_mean"] = np.array([1.0 + theory.mg1_wait_mean(r, 1.0, scv) for r in rhos])
    measured["theory_p50"], measured["theory_p99"] = mm1["p50"], mm1["p99"]
    return measured
