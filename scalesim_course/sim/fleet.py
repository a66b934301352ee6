"""The fleet: which replicas exist, routing (with live or stale views), scale to zero, and the
autoscaler's ticks (its view, its answer checked, start-ups and drains, cost accounting)."""
from __future__ import annotations

import math
from collections import deque

from .._checks import NoProgressError, bad_output, is_int, policy_name
from ..workload import Request
from .config import DRAINING, STARTING, STOPPED, UP
from .policies import least_outstanding
from .replica import NORMAL, IterationReplica, RequestReplica
from .views import ClusterView, StaleReplicaView

LATE = 2      # same-time priority of autoscaler ticks: they see everything else at that instant
IDLE_TICKS = 100   # ticks with requests held, no replica up or starting: NoProgressError


class Fleet:
    """The replicas of a run and the policies that act on all of them (router, autoscaler)."""

    def __init__(self, sim):
        cfg = self.cfg = sim.cfg
        self.sim = sim
        self.kind = RequestReplica if cfg.mode == "request" else IterationReplica
        self.replicas: list = [self.kind(sim, i, UP, 0.0) for i in range(cfg.replicas)]
        self.up: list = list(self.replicas)
        self.up_views = tuple(r.view for r in self.up)
        self.router = cfg.router or least_outstanding
        self.held: deque = deque()        # arrivals while no replica is up (scale to zero)
        self.fleet: list = [(0.0, cfg.replicas, 0)]
        self.fleet_log: list = [(0.0, cfg.replicas, 0)]
        self.scale_events: list = []
        self.desired = cfg.replicas
        self.idle_ticks = 0
        self.stale = cfg.view_staleness > 0

    # --- routing
    def route(self, req: Request) -> None:
        """Send an arrival to the replica the router picks (or hold it while none is up)."""
        up = self.up
        if not up:
            self.held.append(req)
            return
        route = self.router
        if route is least_outstanding and not self.stale:
            # the default policy, inline: fewest waiting + in service, lowest index on ties
            rep, best = up[0], len(up[0].queue) + up[0].busy
            for r in up:
                load = len(r.queue) + r.busy
                if load < best:
                    rep, best = r, load
        else:
            k = route(req, self.stale_views() if self.stale else self.up_views, self.sim.rng)
            if not (is_int(k) and 0 <= k < len(up)):
                bad_output("router", route, k, f"it must be an int index in 0..{len(up) - 1} "
                           "into the replicas it was given",
                           TypeError if not is_int(k) else ValueError)
            rep = up[k]
        self.sim.where[req.id] = rep.id
        if self.sim.track:
            rep.count(1)
        rep.arrive(req)

    def record_loads(self) -> None:
        """Stale views: remember each replica's load whenever it changes."""
        now = self.sim.now
        for rep in self.replicas:
            if rep.state == STOPPED:
                continue
            values = rep.load()
            hist = rep.hist
            if values != hist[-1][1]:
                if hist[-1][0] == now and len(hist) > 1:
                    hist[-1] = (now, values)
                else:
                    hist.append((now, values))

    def stale_views(self) -> tuple:
        """Router views whose load is as of the last refresh ("periodic") or T ago ("delayed");
        a snapshot at time t includes every event at t."""
        T = self.cfg.view_staleness
        now = self.sim.now
        at = math.floor(now / T) * T if self.cfg.view_refresh == "periodic" else now - T
        views = []
        for rep in self.up:
            hist = rep.hist
            while len(hist) > 1 and hist[1][0] <= at:
                hist.popleft()
            views.append(StaleReplicaView(rep, hist[0][1] if hist[0][0] <= at
                                          else (0, 0, 0, 0)))
        return tuple(views)

    # --- autoscaling
    def tick(self, _) -> None:
        """Show the autoscaler the fleet, apply its (clipped) answer, schedule the next tick."""
        sim, cfg = self.sim, self.cfg
        now = sim.now
        live = [r for r in self.replicas if r.state in (STARTING, UP, DRAINING)]
        interval = cfg.autoscale_interval
        since = now - interval
        busy, conc = [], []
        for r in live:
            done = r.busy_time - sim.inflight(r, now)
            span = now - max(since, r.started) if r.state != STARTING else 0.0
            busy.append(min(1.0, max(0.0, (done - r.busy_mark) / (span * r.servers)))
                        if span > 0 else 0.0)
            r.busy_mark = done
            r.count(0)
            conc.append((r.area - r.area_mark) / interval)
            r.area_mark = r.area
        view = ClusterView(now, tuple(r.view for r in live), sim.arrived_since_tick,
                           interval, sim.done_since_tick, tuple(busy), tuple(conc),
                           tuple(len(r.queue) for r in live),
                           tuple(r.kv_used() / r.kv_capacity if math.isfinite(r.kv_capacity)
                                 else 0.0 for r in live),
                           len(self.held))
        sim.arrived_since_tick = sim.done_since_tick = 0
        scaler = cfg.autoscaler
        want = scaler(view)
        if not is_int(want) or want < 0:
            bad_output("autoscaler", scaler, want, "it must be an int >= 0 (desired replicas)",
                       TypeError)
        want = min(max(int(want), cfg.min_replicas), cfg.max_replicas)
        if want != self.desired:
            self.scale_events.append((now, self.desired, want))
            self.desired = want
        active = [r for r in live if r.state in (STARTING, UP)]
        if want > len(active):
            for _ in range(want - len(active)):
                rep = self.kind(sim, len(self.replicas), STARTING, now)
                self.replicas.append(rep)
                sim.push(now + cfg.startup_delay, NORMAL, self.ready, rep)
        elif want < len(active):
            # cancel start-ups first, then drain the least loaded replicas
            victims = sorted(active, key=lambda r: (r.state == UP, len(r.queue) + r.busy))
            for rep in victims[: len(active) - want]:
                self.drain(rep)
        self.changed()
        sim.push(now + interval, LATE, self.tick, None)
        if sim.arrived == len(sim.wl):
            self._maybe_end()

    def _maybe_end(self) -> None:
        """After the last arrival, end the run at a tick once nothing but ticks can happen."""
        sim = self.sim
        if sim.n_done == len(sim.wl):
            sim.ended = True
            return
        if len(sim.heap) > 1 or any(r.state == STARTING for r in self.replicas):
            self.idle_ticks = 0
            return
        if not self.held:
            sim.ended = True   # what is left waits for a batcher that will never send it
            return
        self.idle_ticks += 1
        if self.idle_ticks >= IDLE_TICKS:
            raise NoProgressError(
                f"autoscaler {policy_name(self.cfg.autoscaler)} kept 0 replicas for "
                f"{IDLE_TICKS} ticks (until t={sim.now:g} s) while {len(self.held)} requests "
                "wait for a replica")

    def ready(self, rep) -> None:
        if rep.state == STARTING:
            rep.state = UP
            rep.started = rep.area_at = self.sim.now
            self.up.append(rep)
            self.changed()
            if self.held:
                held, self.held = self.held, deque()
                for req in held:
                    self.route(req)

    def drain(self, rep) -> None:
        if rep.state == STARTING:
            rep.state = STOPPED
            rep.started = rep.stopped = self.sim.now  # never served: costs nothing
            return
        rep.state = DRAINING
        self.up.remove(rep)
        rep.index = -1
        if rep.idle():
            self.stop(rep)

    def stop(self, rep) -> None:
        rep.state = STOPPED
        rep.stopped = self.sim.now

    def changed(self) -> None:
        for k, r in enumerate(self.up):
            r.index = k
        self.up_views = tuple(r.view for r in self.up)
        starting = sum(r.state == STARTING for r in self.replicas)
        entry = (self.sim.now, len(self.up), starting)
        self.fleet.append(entry)
        if entry[1:] != self.fleet_log[-1][1:]:
            self.fleet_log.append(entry)
