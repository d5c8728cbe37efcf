"""``emall-day``: a trading day of the government e-mall (电子卖场, RULES.md §3.4).

60 catalogue items, each with its own order book, a reference price and a
price band of 10 %.  Suppliers (origin ``supplier:``, sell only) keep standing
offers, purchasers (``purchaser:``, buy only) bid and buy directly (直购)
within their single-purchase limits, and a few traders of trading rights
(``bidder:``, both sides) trade both ways.

* 08:30-09:30 the opening call collects limit orders; staff open each item at
  09:30, which uncrosses it at the volume-maximising price.
* 09:30-17:00 continuous trading around a mid price that walks: limit orders,
  IOC and FOK orders, cancels and amends of one's own orders (some of orders
  already filled: ``book_unknown_order``), direct purchases (some above the
  limit: ``book_purchase_limit``), prices outside the band
  (``book_price_band``).
* At noon a few items are halted for ten minutes (orders then are refused
  ``book_halted``); at 17:00 every item closes.

All randomness comes from the harness's seeded ``random.Random``, and actions
run in virtual-time order, so one seed gives one ledger.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.messages import (
    AmendOrder,
    CancelOrder,
    Command,
    CreateItem,
    DirectPurchase,
    Event,
    OrderPlaced,
    PlaceOrder,
    SetItemSession,
    SetPurchaseLimit,
)
from simulators.harness import EPOCH_NS, HOUR_NS, MINUTE_NS, NS_PER_S, Harness

STAFF = "staff:sim"  # as in simulators.scenarios (which registers this scenario)
YUAN = 100  # fen

CATALOGUE = [
    "A4 复印纸 80g 500张/包",
    "台式计算机 i5/16G/512G",
    "激光打印机硒鼓",
    "办公椅 人体工学",
    "碳排放配额 (吨 CO2)",
    "取水权 (万立方米)",
    "LED 灯管 T8 18W",
    "医用外科口罩 (箱)",
    "打印纸 A3 70g",
    "笔记本电脑 14 寸",
]


class EmallDay:
    ITEMS = 60
    SUPPLIERS = 24
    PURCHASERS = 30
    TRADERS = 8
    MEAN_GAP_S = 150  # per item, between actions of continuous trading

    def __init__(self, sim: Harness) -> None:
        self.sim = sim
        self.rng = sim.rng

    def staff(self, make: Callable[[int], Command], t_ns: int) -> list[Event]:
        return self.sim.send(make(self.sim.next_seq(STAFF)), t_ns)

    def setup(self) -> None:
        rng = self.rng
        day = EPOCH_NS
        self.call_start = day + 8 * HOUR_NS + 30 * MINUTE_NS
        self.open_at = day + 9 * HOUR_NS + 30 * MINUTE_NS
        self.close_at = day + 17 * HOUR_NS
        self.ref: dict[str, int] = {}
        self.mid: dict[str, int] = {}
        self.tick: dict[str, int] = {}
        self.mine: dict[str, list[tuple[str, int]]] = {}  # origin -> its (item, order id)
        self.items = [f"EM{n:03d}" for n in range(self.ITEMS)]
        suppliers = [f"supplier:S{n:03d}" for n in range(self.SUPPLIERS)]
        purchasers = [f"purchaser:P{n:03d}" for n in range(self.PURCHASERS)]
        traders = [f"bidder:R{n:03d}" for n in range(self.TRADERS)]
        t0 = day + 8 * HOUR_NS
        for n, item in enumerate(self.items):
            ref = rng.randrange(10, 5_000) * YUAN
            self.ref[item] = self.mid[item] = ref
            self.tick[item] = max(1, ref // 400)
            title = f"{CATALOGUE[n % len(CATALOGUE)]} #{n}"
            self.staff(
                lambda s, i=item, t=title, r=ref: CreateItem(
                    STAFF, s, i, t, r, r // 10, 50, "call"
                ),
                t0,
            )
            for p in rng.sample(purchasers, 3):  # some purchasers have a larger limit
                self.staff(
                    lambda s, i=item, who=p: SetPurchaseLimit(
                        STAFF, s, i, who.partition(":")[2], 120
                    ),
                    t0,
                )
            # The opening call: standing offers and bids collect.
            for _ in range(rng.randint(6, 14)):
                at = self.call_start + rng.randrange(HOUR_NS)
                self.sim.at(at, self._call_order(item, rng.choice(suppliers), "sell"))
                at = self.call_start + rng.randrange(HOUR_NS)
                self.sim.at(at, self._call_order(item, rng.choice(purchasers + traders), "buy"))
            self.sim.at(self.open_at + n * NS_PER_S, self._session(item, "open"))
            self.sim.at(self.close_at + n * NS_PER_S, self._session(item, "close"))
            # Continuous trading: one action stream per item.
            t = self.open_at + 60 * NS_PER_S
            while True:
                t += int(rng.expovariate(1 / self.MEAN_GAP_S) * NS_PER_S) + 1
                if t >= self.close_at:
                    break
                self.sim.at(t, self._act(item, suppliers, purchasers, traders))
        for item in rng.sample(self.items, 5):
            noon = day + 12 * HOUR_NS
            self.sim.at(noon, self._session(item, "halted"))
            self.sim.at(noon + 10 * MINUTE_NS, self._session(item, "open"))

    # ------------------------------------------------------------ actions
    def _send(self, cmd: Command, t: int) -> None:
        events = self.sim.send(cmd, t)
        for ev in events:
            if type(ev) is OrderPlaced and not ev.purchase:
                self.mine.setdefault(cmd.origin, []).append((ev.lot_id, ev.order_id))

    def _session(self, item: str, session: str) -> Callable[[int], None]:
        def act(t: int) -> None:
            s = "closed" if session == "close" else session
            self._send(SetItemSession(STAFF, self.sim.next_seq(STAFF), item, s), t)

        return act

    def _price(self, item: str, side: str, spread_ticks: int) -> int:
        """Around the mid: buyers below, sellers above (a few ticks cross)."""
        offset = self.rng.randint(-2, spread_ticks) * self.tick[item]
        price = self.mid[item] - offset if side == "buy" else self.mid[item] + offset
        return max(1, price)

    def _call_order(self, item: str, who: str, side: str) -> Callable[[int], None]:
        def act(t: int) -> None:
            price = self._price(item, side, 12)
            qty = self.rng.randint(1, 40)
            seq = self.sim.next_seq(who)
            self._send(PlaceOrder(who, seq, item, side, "limit", price, qty), t)

        return act

    def _act(
        self, item: str, suppliers: list[str], purchasers: list[str], traders: list[str]
    ) -> Callable[[int], None]:
        def act(t: int) -> None:
            rng = self.rng
            # The mid walks, mostly inside the band around the reference.
            ref, band = self.ref[item], self.ref[item] // 10
            step = rng.choice((-1, 0, 1)) * self.tick[item]
            self.mid[item] = min(ref + band, max(ref - band, self.mid[item] + step))
            r = rng.random()
            if r < 0.5:
                who = rng.choice(suppliers + purchasers + traders)
                kind_of = who.partition(":")[0]
                side = {"supplier": "sell", "purchaser": "buy"}.get(
                    kind_of, rng.choice(("buy", "sell"))
                )
                kind = rng.choice(("limit",) * 6 + ("ioc", "ioc", "fok"))
                price = self._price(item, side, 8)
                if rng.random() < 0.02:  # a fat finger: outside the band
                    price = ref * 2 if side == "sell" else max(1, ref // 3)
                qty = rng.randint(1, 30)
                seq = self.sim.next_seq(who)
                self._send(PlaceOrder(who, seq, item, side, kind, price, qty), t)
            elif r < 0.7:
                self._cancel_or_amend(item, suppliers + purchasers + traders, t)
            else:
                who = rng.choice(purchasers)
                qty = rng.randint(1, 60)  # the default limit is 50
                cap = 0 if rng.random() < 0.6 else self.mid[item] + 3 * self.tick[item]
                seq = self.sim.next_seq(who)
                self._send(DirectPurchase(who, seq, item, qty, cap), t)

        return act

    def _cancel_or_amend(self, item: str, everyone: list[str], t: int) -> None:
        rng = self.rng
        who = rng.choice(everyone)
        own = [oid for it, oid in self.mine.get(who, ()) if it == item]
        if not own:
            return
        oid = rng.choice(own[-10:])  # recent ones; some have filled meanwhile
        seq = self.sim.next_seq(who)
        if rng.random() < 0.6:
            self._send(CancelOrder(who, seq, item, oid), t)
        else:
            price = rng.choice((0, self._price(item, "buy", 4), self._price(item, "sell", 4)))
            self._send(AmendOrder(who, seq, item, oid, price, rng.randint(0, 30)), t)
