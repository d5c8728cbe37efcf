"""Locust scenario ``watchers``: 1,000 public consoles on one hot lot.

Load: 1,000 watcher connections (no credentials) subscribed to one English
lot, plus 10 bidders on it bidding the next valid price at 2 bids/s each (20
accepted or refused bids/s).  Each watcher reports, as ``WATCH lag: bid to
snapshot``, the time from a bid's ledger timestamp (the snapshot's
``last_bid_ns``) to the snapshot's receipt; snapshots are conflated to one
per 100 ms per lot, so that is part of the lag.
Bounds: no failures; watcher lag p99 <= 300 ms; ``place_bid`` p99 <= 100 ms.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from locust import constant, constant_throughput, events, task

from bench.locust.users import BidderUser, WatcherUser, check_bounds, plan

SPEC = {
    "name": "watchers",
    "users": 1010,
    "spawn_rate": 500,
    "duration_s": 60,
    "bidders": 10,
    "provision": {"kind": "english", "params": {"prefix": "W", "lots": 1, "duration_s": 3600}},
    "server": {},
    "bounds": {
        "fail_ratio": 0.0,
        "p99_ms": {"WATCH lag: bid to snapshot": 300, "WS place_bid": 100},
    },
}


class HotLotBidder(BidderUser):
    fixed_count = SPEC["bidders"]  # type: ignore[assignment]
    wait_time = constant_throughput(2)

    def on_start(self) -> None:
        super().on_start()
        gevent.sleep(max(0.0, (plan()["open_at_ns"] - time.time_ns()) / 1e9))

    @task
    def bid_on_hot_lot(self) -> None:
        self.bid_next()


class Console(WatcherUser):
    wait_time = constant(5)

    @task
    def idle(self) -> None:
        pass  # everything happens in the reader: snapshots and their lag


@events.quitting.add_listener
def _bounds(environment: Any, **_kw: Any) -> None:
    check_bounds(environment, SPEC["bounds"])  # type: ignore[arg-type]
