"""Locust scenario ``emall``: order flow of the e-mall (电子卖场) on many items.

Load: 200 traders (``USERS``) on 100 catalogue items, opened at creation
(continuous trading), each item with a seeded reference price, a tick of 1/400
of it and a 10 % price band (``simulators.provision.emall_market``, the
market of ``simulators.emall_day`` sized for a live run).  Traders are 40 %
suppliers (sell only), 40 % purchasers (buy only) and 20 % traders of trading
rights (both sides), each on 5 items, and act at a constant 2 actions/s each
(open loop per user: ~400 signed order actions/s in aggregate), with the mix
of ``simulators.emall_day`` around a mid price per item that walks by a tick:

* 55 % place: limit (6 in 9), IOC (2 in 9), FOK (1 in 9), from 2 ticks
  through the mid to 8 ticks away from it, 1-30 units;
* 25 % cancel (60 %) or amend (40 %: a new open quantity, sometimes a new
  price) one of the trader's own recent resting orders (some have filled
  meanwhile: ``book_unknown_order``, a ledgered refusal); a trader without one
  places instead;
* 20 % direct purchase (直购) by purchasers and traders, 1-60 units (above
  the limit of 50: ``book_purchase_limit``), at market or capped 3 ticks over
  the mid; suppliers place instead.

Every action is a signed ``order`` frame whose ack or error is matched by
``client_seq``; requests are named ``order <action> [<kind>]``; engine
refusals (book rules) are successes under ``… (refused)``, gateway errors,
timeouts and lost connections failures.
Bounds: no failures; Locust p99 <= 100 ms for every order action; server-
measured ack p99 <= 50 ms (``/metrics``, checked by the runner).
"""

from __future__ import annotations

import random
from typing import Any

import gevent
from locust import constant_throughput, events, task

from bench.locust.users import PubexUser, check_bounds, next_bidder, plan
from gateway.wire import protocol as p
from simulators.agents import agent_key

SPEC = {
    "name": "emall",
    "users": 200,
    "spawn_rate": 100,
    "duration_s": 60,
    "rate_per_user": 2.0,
    "provision": {"kind": "emall", "params": {"items": 100, "items_per_trader": 5}},
    # racing bidders are refused often; the run measures throughput, not abuse
    "server": {"limits": {"refusals_per_minute": 1_000_000_000}},
    "bounds": {
        "fail_ratio": 0.0,
        "p99_ms": {
            "WS order place limit": 100,
            "WS order place ioc": 100,
            "WS order place fok": 100,
            "WS order cancel": 100,
            "WS order amend": 100,
            "WS order purchase": 100,
        },
        "server_ack_p99_us": 50_000,
    },
}

# The mid price of each item, shared by the traders of one Locust process.
_mid: dict[str, int] = {}


class Trader(PubexUser):
    wait_time = constant_throughput(SPEC["rate_per_user"])  # type: ignore[arg-type]

    def on_start(self) -> None:
        me = next_bidder()
        self.key_id, self.role, self.items = me["key_id"], me["role"], list(me["items"])
        self.key = agent_key(plan()["seed"], self.key_id)
        self.rng = random.Random(f"{plan()['seed']}|{self.key_id}")
        self.resting: dict[str, list[int]] = {item: [] for item in self.items}
        self.connect_bidder(self.key_id)
        # spread the first actions over one period, so the aggregate rate is even
        gevent.sleep(self.rng.uniform(0, 1 / SPEC["rate_per_user"]))  # type: ignore[operator]

    # ------------------------------------------------------------ prices
    def walk(self, item: str) -> tuple[int, int]:
        """The item's mid after one random step, kept within half its band."""
        terms = plan()["items"][item]
        ref, tick = terms["reference_fen"], terms["tick_fen"]
        half = terms["band_fen"] // 2
        mid = _mid.get(item, ref) + self.rng.choice((-1, 0, 1)) * tick
        _mid[item] = mid = min(ref + half, max(ref - half, mid))
        return mid, tick

    def side(self) -> str:
        if self.role == "supplier":
            return "sell"
        if self.role == "purchaser":
            return "buy"
        return self.rng.choice(("buy", "sell"))

    # ----------------------------------------------------------- actions
    def send(self, name: str, item: str, action: str, **fields: Any) -> p.Ack | p.Error | None:
        self.client_seq += 1
        payload = p.OrderPayload(
            p.ORDER_DOMAIN,
            action,  # type: ignore[arg-type]
            item,
            self.key_id,
            self.client_seq,
            **fields,
        )
        return self.request(self.client_seq, p.order_frame(self.key, payload), name)

    def place(self, item: str, mid: int, tick: int) -> None:
        side = self.side()
        kind = self.rng.choice(("limit",) * 6 + ("ioc", "ioc", "fok"))
        offset = self.rng.randint(-2, 8) * tick
        price = max(1, mid - offset if side == "buy" else mid + offset)
        qty = self.rng.randint(1, 30)
        reply = self.send(
            f"order place {kind}", item, "place", side=side, kind=kind, price_fen=price, qty=qty
        )
        if kind == "limit" and isinstance(reply, p.Ack):
            own = self.resting[item]
            own.append(reply.seq)  # the order id is the seq of its ack
            del own[:-10]

    def cancel_or_amend(self, item: str, mid: int, tick: int) -> None:
        own = self.resting[item]
        oid = self.rng.choice(own)
        if self.rng.random() < 0.6:
            reply = self.send("order cancel", item, "cancel", order_id=oid)
            gone = True
        else:
            price = self.rng.choice((0, 0, mid + self.rng.randint(-4, 4) * tick))
            reply = self.send(
                "order amend",
                item,
                "amend",
                order_id=oid,
                price_fen=max(0, price),
                qty=self.rng.randint(1, 30),
            )
            gone = isinstance(reply, p.Error)  # filled or cancelled meanwhile
        if gone and oid in own:
            own.remove(oid)

    def purchase(self, item: str, mid: int, tick: int) -> None:
        cap = 0 if self.rng.random() < 0.6 else mid + 3 * tick
        self.send("order purchase", item, "purchase", qty=self.rng.randint(1, 60), price_fen=cap)

    @task
    def trade(self) -> None:
        item = self.rng.choice(self.items)
        mid, tick = self.walk(item)
        r = self.rng.random()
        if 0.55 <= r < 0.8 and self.resting[item]:
            self.cancel_or_amend(item, mid, tick)
        elif r >= 0.8 and self.role != "supplier":
            self.purchase(item, mid, tick)
        else:
            self.place(item, mid, tick)


@events.quitting.add_listener
def _bounds(environment: Any, **_kw: Any) -> None:
    check_bounds(environment, SPEC["bounds"])  # type: ignore[arg-type]
