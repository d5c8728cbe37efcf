"""Locust scenario ``judicial-day``: a busy judicial auction day.

Load: 5,000 bidder connections (``USERS``) over 2,000 English lots (judicial
rules, 2-3 bidders per lot), 1,000 bids/s in aggregate: each user bids the
next valid price on its lot at a constant 0.2 bids/s (open loop per user:
``constant_throughput``), following its lot's events.  Users start at 250/s;
their handshakes are admitted in waves (``bench.locust.users``: a few in
flight per Locust process, the timestamp signed once admitted), so the
connections open as fast as the server accepts them and none goes stale in
its backlog (at 500/s unadmitted, 3,368 of 5,000 were refused 401; at 100/s
unadmitted, ~2,800 were reset by trio-websocket's 10 s upgrade timeout or
timed out).
Bounds: no failures; Locust ``place_bid`` p99 <= 100 ms; server-measured ack
p99 <= 50 ms (``/metrics``, checked by the runner).
"""

from __future__ import annotations

import random
import time
from typing import Any

import gevent
from locust import constant_throughput, events, task

from bench.locust.users import BidderUser, check_bounds, plan

SPEC = {
    "name": "judicial-day",
    "users": 5000,
    # users queue for a handshake slot in the client (users.py), never in the server
    "spawn_rate": 250,
    "duration_s": 60,
    "rate_per_user": 0.2,
    "provision": {"kind": "english", "params": {"prefix": "J", "lots": 2000, "duration_s": 3600}},
    "server": {},
    "bounds": {"fail_ratio": 0.0, "p99_ms": {"WS place_bid": 100}, "server_ack_p99_us": 50_000},
}


class JudicialBidder(BidderUser):
    wait_time = constant_throughput(SPEC["rate_per_user"])  # type: ignore[arg-type]

    def on_start(self) -> None:
        super().on_start()
        delay = (plan()["open_at_ns"] - time.time_ns()) / 1e9
        # spread the first bids over one period, so the aggregate rate is even
        gevent.sleep(max(0.0, delay) + random.uniform(0, 1 / SPEC["rate_per_user"]))  # type: ignore[operator]

    @task
    def bid_on_my_lot(self) -> None:
        self.bid_next()


@events.quitting.add_listener
def _bounds(environment: Any, **_kw: Any) -> None:
    check_bounds(environment, SPEC["bounds"])  # type: ignore[arg-type]
