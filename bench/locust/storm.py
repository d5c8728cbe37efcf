"""Locust scenario ``storm``: 500 bidders on one lot in its last minutes.

Load: 500 bidders (``USERS``) on one English lot whose anti-sniping window
(5 min) covers its whole remaining time, so every accepted bid extends it;
each user bids the next valid price as fast as its acks return (window 1,
no think time).  Users learn the price from their own acks and from one
shared price board per Locust process (a staff connection that follows the
lot's events), not from 500 subscriptions (the fan-out is ``watchers``'
subject).  Most bids race and are refused ``bid_below_increment`` -- ledgered
outcomes, reported as ``place_bid (refused)``, not failures.  The per-bidder
rate limit is lifted for this run (server config below).
Bounds: no failures; Locust p99 <= 1,000 ms (the figure to report is the
sustained ack rate and its p99, not a pass line).
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import websocket
from locust import constant, events, task

from bench.locust.users import BidderUser, check_bounds, plan
from gateway.wire import protocol as p

SPEC = {
    "name": "storm",
    "users": 500,
    "spawn_rate": 250,
    "duration_s": 60,
    "provision": {"kind": "english", "params": {"prefix": "S", "lots": 1, "duration_s": 180}},
    # a storm of racing bids: most are refused, so the refusal budget is lifted too
    "server": {
        "limits": {"bids_per_s": 100000, "bid_burst": 100000, "refusals_per_minute": 1_000_000_000}
    },
    "bounds": {"fail_ratio": 0.0, "p99_ms": {"WS place_bid": 1000}},
}


class PriceBoard:
    """The lot's price as one staff console sees it, shared by every user."""

    price_fen = 0
    started = False

    @classmethod
    def start(cls) -> None:
        if cls.started:
            return
        cls.started = True
        gevent.spawn(cls._follow)

    @classmethod
    def _follow(cls) -> None:
        ws = websocket.create_connection(
            plan()["ws_url"],
            header=[f"Authorization: Bearer {plan()['staff_token']}"],
            skip_utf8_validation=True,
            suppress_origin=True,
        )
        ws.send(p.encode_text(p.Subscribe([plan()["hot_lot"]])))
        while True:
            frame = p.decode_server(ws.recv())
            if isinstance(frame, p.EventFrame) and frame.event.get("type") == "bid_accepted":
                cls.price_fen = max(cls.price_fen, frame.event["amount_fen"])
            elif isinstance(frame, p.LotSnapshot):
                cls.price_fen = max(cls.price_fen, frame.price_fen)


class StormBidder(BidderUser):
    wait_time = constant(0)
    subscribe_lot = False

    def on_start(self) -> None:
        PriceBoard.start()
        super().on_start()
        delay = (plan()["open_at_ns"] - time.time_ns()) / 1e9
        if delay > 0:
            gevent.sleep(delay)

    @task
    def bid_fast(self) -> None:
        self.price_fen = max(self.price_fen, PriceBoard.price_fen)
        self.bid_next()


@events.quitting.add_listener
def _bounds(environment: Any, **_kw: Any) -> None:
    check_bounds(environment, SPEC["bounds"])  # type: ignore[arg-type]
