"""Locust scenario ``hot-land``: a hot land listing driven by the seeded agents.

Load: 30 bidders (``USERS``), one Jiangsu-style listing lot, the agents of
``simulators.agents.hot_land`` (the definition ``pubex simulate --scenario
hot-land-agents`` runs in-process) compressed for a live run: a 10 s listing
period, then timed bidding with a 4 s countdown restarted by every bid, so the
bids burst near each countdown end.  Each user is one agent (incremental,
jump, sniper, proxy) on a real WebSocket; its decisions come from the agent
and what it sees (snapshots, events, its own code).
Bounds: no failures; Locust ``place_bid`` p99 <= 50 ms; server-measured ack
p99 <= 20 ms (``/metrics``, checked by the runner).
"""

from __future__ import annotations

import heapq
import time
from typing import Any

import gevent
from gevent.event import Event as GEvent
from locust import constant, events, task

from bench.locust.users import PubexUser, check_bounds, plan
from gateway.wire import protocol as p
from simulators.agents import Agent, View, agent_key, make_agents
from simulators.provision import load_definition

SPEC = {
    "name": "hot-land",
    "users": 30,
    "spawn_rate": 30,
    "duration_s": 60,
    "provision": {"kind": "hot-land", "params": {"listing_s": 10, "countdown_s": 4}},
    # racing bidders are refused often; the run measures throughput, not abuse
    "server": {"limits": {"refusals_per_minute": 1_000_000_000}},
    "bounds": {"fail_ratio": 0.0, "p99_ms": {"WS place_bid": 50}, "server_ack_p99_us": 20_000},
}

_agents: list[Agent] = []


def agents() -> list[Agent]:
    if not _agents:
        _agents.extend(make_agents(load_definition(plan())))
    return _agents


_slot = iter(range(1_000_000))


class HotLandAgent(PubexUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.agent = agents()[next(_slot) % len(agents())]
        spec = self.agent.spec
        self.key = agent_key(plan()["seed"], spec.key_id)
        self.view: View | None = None
        self.wakes: list[int] = []
        self.changed = GEvent()
        self.connect_bidder(spec.key_id, spec.device)
        assert self.hello is not None and self.ws is not None
        self.code = self.hello.codes.get(spec.lot, "")
        if spec.ring:
            self.agent.ring_codes[spec.ring_rank] = self.code
        lot = plan()["lots"][spec.lot]
        for t in self.agent.plan(lot["start_ns"], lot["end_ns"]):
            heapq.heappush(self.wakes, t)
        self.ws.send(p.encode_text(p.Subscribe([spec.lot])))

    def on_snapshot(self, snap: p.LotSnapshot) -> None:
        view = View.from_snapshot(snap)
        if view != self.view:
            self.view = view
            wake = self.agent.react(view, self.code, time.time_ns())
            if wake is not None:
                heapq.heappush(self.wakes, wake)
            self.changed.set()

    @task
    def act(self) -> None:
        now = time.time_ns()
        if not self.wakes or self.wakes[0] > now:
            wait_s = 1.0 if not self.wakes else min(1.0, (self.wakes[0] - now) / 1e9)
            self.changed.clear()
            self.changed.wait(timeout=max(0.0, wait_s))
            return
        heapq.heappop(self.wakes)
        if self.view is None:
            return
        action = self.agent.step(self.view, self.code, time.time_ns())
        if action is not None and action.kind == "bid":
            spec = self.agent.spec
            self.bid(self.key, spec.key_id, spec.lot, action.amount_fen)
        gevent.sleep(0)


@events.quitting.add_listener
def _bounds(environment: Any, **_kw: Any) -> None:
    check_bounds(environment, SPEC["bounds"])  # type: ignore[arg-type]
