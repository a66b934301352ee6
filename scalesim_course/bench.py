"""Measure the simulator's speed against SimPy on the same M/M/c model, and a trace replay."""
from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

from . import sim, workload

CONV_TRACE = "AzureLLMInferenceTrace_conv.csv"


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

    Both simulate identical arrivals and service times, so every request's latency must agree
    to rounding; that is checked too. The two run alternately in this one process, so a busy
    machine slows both alike and the ratio stays meaningful.
    """
    import simpy  # noqa: F401  (imported before timing, as the engine is)

    wl = workload.poisson_workload(rate=rho * servers, n=n, service_rate=1.0, seed=seed)
    gc.collect()
    gc.freeze()   # set-up objects (numpy, the workload) are not walked during the runs
    best = {"scalesim": float("inf"), "simpy": float("inf")}
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ours = sim.simulate(wl, servers=servers).latency
            best["scalesim"] = min(best["scalesim"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = simpy_mmc(wl.arrival, wl.service_time, servers)
            best["simpy"] = min(best["simpy"], time.perf_counter() - t0)
    finally:
        gc.unfreeze()
    if not np.allclose(ours, theirs, rtol=1e-9, atol=1e-9):
        raise RuntimeError("the engine and SimPy disagree on the same M/M/c run")
    return {"requests": n, "servers": servers, "rho": rho,
            "scalesim_req_per_s": n / best["scalesim"], "simpy_req_per_s": n / best["simpy"],
            "mean_latency": float(ours.mean()),
            "speedup_vs_simpy": best["simpy"] / best["scalesim"]}


def find_trace(name: str = CONV_TRACE) -> Path | None:
    """The shared Azure trace file: in ``shared/traces/`` next to the working directory or
    next to any parent folder of this package; None if absent (it is not shipped)."""
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        candidate = base / "shared" / "traces" / name
        if candidate.exists():
            return candidate
    return None


def trace_replay(path=None, seed: int = 0) -> dict:
    """Replay an hour of LLM traffic in iteration mode and time it.

    The hour is the Azure LLM inference trace 2023, conversation service (Patel et al.,
    "Splitwise", ISCA 2024; CC-BY) when its file is found, else an `azure_like` synthetic hour
    with the trace's published statistics. One replica, continuous batching, 200,000 KV tokens,
    and an illustrative linear step cost (5 ms per step, 20 us per prefill token, 100 us per
    decoding sequence, 10 ns per context token).

    Returns:
        {"source", "requests", "steps", "req_per_s", "steps_per_s", "completed", "seconds"}.
    """
    from .costmodel import LinearStepCost

    path = find_trace() if path is None else Path(path)
    if path is not None and path.exists():
        wl, source = workload.load_azure_trace(path), f"Azure conv trace ({path.name})"
    else:
        wl, source = workload.azure_like(3600.0, seed=seed), "azure_like synthetic hour"
    cost = LinearStepCost(0.005, 2e-5, 1e-4, 1e-8)
    t0 = time.perf_counter()
    res = sim.simulate(wl, mode="iteration", cost=cost, kv_capacity=200_000)
    seconds = time.perf_counter() - t0
    return {"source": source, "requests": len(wl), "steps": res.n_steps,
            "req_per_s": len(wl) / seconds, "steps_per_s": res.n_steps / seconds,
            "completed": int(res.completed.sum()), "seconds": seconds}


def add_arguments(parser) -> None:
    parser.add_argument("-n", type=int, default=200_000, help="requests to simulate")
    parser.add_argument("--servers", type=int, default=4, help="servers c in M/M/c")
    parser.add_argument("--rho", type=float, default=0.8, help="utilisation lam / (c mu)")
    parser.add_argument("--repeats", type=int, default=3, help="take the best of this many")
    parser.add_argument("--trace", default=None,
                        help="trace CSV to replay (default: the shared Azure conv trace)")
    parser.add_argument("--no-trace", action="store_true", help="skip the trace replay")


def run(args) -> int:
    if not args.no_trace:
        t = trace_replay(args.trace)
        print(f"trace replay, {t['source']}: {t['requests']:,} requests, {t['steps']:,} engine "
              f"steps in {t['seconds']:.2f} s")
        print(f"trace_replay_req_per_s: {t['req_per_s']:,.0f}   "
              f"trace_replay_steps_per_s: {t['steps_per_s']:,.0f}")
    r = run_bench(args.n, args.servers, args.rho, args.repeats)
    print(f"M/M/{r['servers']} at rho={r['rho']}, {r['requests']:,} requests, identical inputs "
          f"(mean latency {r['mean_latency']:.4f} s on both)")
    print(f"scalesim: {r['scalesim_req_per_s']:>12,.0f} simulated requests/s")
    print(f"simpy:    {r['simpy_req_per_s']:>12,.0f} simulated requests/s")
    print(f"speedup_vs_simpy: {r['speedup_vs_simpy']:.2f}")
    return 0
