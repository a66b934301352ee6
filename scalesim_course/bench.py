"""Measure the simulator's speed against SimPy on the same M/M/c model, side by side."""
from __future__ import annotations

import time

import numpy as np

from . import sim, workload


def simpy_mmc(arrival: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """The same FIFO M/M/c queue written the usual SimPy way; returns each request's latency."""
    import simpy

    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=servers)
    latency = np.empty(len(arrival))

    def customer(i):
        with pool.request() as slot:
            yield slot
            yield env.timeout(service[i])
        latency[i] = env.now - arrival[i]

    def source():
        last = 0.0
        for i, t in enumerate(arrival.tolist()):
            yield env.timeout(t - last)
            last = t
            env.process(customer(i))

    env.process(source())
    env.run()
    return latency


def run_bench(n: int = 200_000, servers: int = 4, rho: float = 0.8, repeats: int = 3,
              seed: int = 0) -> dict:
    """Simulated requests per second on this engine and on SimPy (best of `repeats`).

    Both simulate identical arrivals and service times, so their mean latencies must agree
    to rounding; that is checked too.
    """
    wl = workload.poisson_workload(rate=rho * servers, n=n, service_rate=1.0, seed=seed)
    best = {"scalesim": float("inf"), "simpy": float("inf")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = sim.simulate(wl, servers=servers).latency
        best["scalesim"] = min(best["scalesim"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = simpy_mmc(wl.arrival, wl.service_time, servers)
        best["simpy"] = min(best["simpy"], time.perf_counter() - t0)
    if not np.allclose(ours, theirs, rtol=1e-9, atol=1e-9):
        raise RuntimeError("the engine and SimPy disagree on the same M/M/c run")
    return {"requests": n, "servers": servers, "rho": rho,
            "scalesim_req_per_s": n / best["scalesim"], "simpy_req_per_s": n / best["simpy"],
            "mean_latency": float(ours.mean()),
            "speedup_vs_simpy": best["simpy"] / best["scalesim"]}


def add_arguments(parser) -> None:
    parser.add_argument("-n", type=int, default=200_000, help="requests to simulate")
    parser.add_argument("--servers", type=int, default=4, help="servers c in M/M/c")
    parser.add_argument("--rho", type=float, default=0.8, help="utilisation lam / (c mu)")
    parser.add_argument("--repeats", type=int, default=3, help="take the best of this many")


def run(args) -> int:
    r = run_bench(args.n, args.servers, args.rho, args.repeats)
    print(f"M/M/{r['servers']} at rho={r['rho']}, {r['requests']:,} requests, identical inputs "
          f"(mean latency {r['mean_latency']:.4f} s on both)")
    print(f"scalesim: {r['scalesim_req_per_s']:>12,.0f} simulated requests/s")
    print(f"simpy:    {r['simpy_req_per_s']:>12,.0f} simulated requests/s")
    print(f"speedup_vs_simpy: {r['speedup_vs_simpy']:.2f}")
    return 0
