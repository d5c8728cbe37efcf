"""Theory of operation: the continuous order book of one catalogue item.

A ``Book`` holds the resting limit orders of one item and matches incoming
orders against them.  It is pure: integer prices (fen) and quantities, no
floats, no clock (time arrives only as ``now_ns``), no I/O; every method
returns the list of events it produced, and the same calls in the same order
give the same events and the same ``snapshot()``.

Rules (``engine.naive_book.NaiveBook`` implements the same rules with lists
and linear scans; both pass one shared specification):

* B-1 Orders.  ``side`` is ``"buy"`` or ``"sell"``; ``kind`` is ``"limit"``
  (rests what it does not fill), ``"market"`` (price 0; fills what it can,
  the rest is cancelled), ``"ioc"`` (limit price; fills what it can at or
  better than the price, the rest is cancelled) or ``"fok"`` (limit price;
  fills completely at once or is rejected, ``book_fok_unfillable``, with no
  other effect).  Quantities and limit prices are positive integers; an order
  id is unique among resting orders (``book_duplicate_id``).
* B-2 Priority.  Price, then time: the best price matches first, and within a
  price level the earliest order.  Trades print at the resting (maker)
  order's price.  A resting order may fill partially; it keeps its place.
* B-3 Cancel removes a resting order of the caller (``owner``); an unknown id
  or another owner's order is ``book_unknown_order``.  Cancels are allowed in
  every session.
* B-4 Amend changes a resting order's price and/or remaining quantity.  A
  quantity decrease at the same price keeps time priority; a price change or
  a quantity increase loses it (the order goes to the back of its new
  level).  An amended price that crosses the book trades at once (the amended
  order is the aggressor), the rest rests.
* B-5 Self-trade prevention: when an incoming order would trade with a
  resting order of the same owner, the resting order is cancelled
  (reason ``self_trade``) and matching continues.  A FOK's fillable quantity
  excludes the owner's own orders.
* B-6 Price bands: with a band set and a reference price known (the last
  trade, else the reference set by ``set_reference``), a priced order (or an
  amended price) further than ``band`` fen from the reference is refused
  (``book_price_band``); a market order is executed only inside the band (it
  behaves as an IOC at reference +/- band).
* B-7 Sessions: ``open`` (continuous matching), ``call`` (limit orders are
  collected without matching; other kinds are ``book_kind_not_allowed``; an
  incoming order or amended price that crosses the owner's own opposite
  orders cancels them, B-5), ``halted`` (submissions and amends refused with
  ``book_halted``) and ``closed`` (refused with ``book_closed``).  Entering
  ``open`` from any other session runs the uncross (B-8) when the book is
  crossed; ``uncross(now_ns)`` does so explicitly from ``call``.
* B-8 Call auction uncross: every order executes at one price p that
  maximises the matched volume min(bids >= p, asks <= p) over all integer
  prices; ties go to the minimal imbalance |bids >= p - asks <= p|, then to
  the price nearest the reference (B-6), then to the lower price.  Orders
  execute in price-time priority on each side; auction trades carry
  ``aggressor_side="none"``, the sell order as ``maker_id`` and the buy order
  as ``taker_id``.  Then ``AuctionUncrossed(price, qty)``.  After it the book
  is not crossed.
* B-9 Direct purchase (直购) is a market buy (or an IOC buy when a maximum
  price is given) against the best offers; a quantity above the purchaser's
  single-purchase limit (per owner, else the book's default) is refused
  (``book_purchase_limit``).
* B-10 Validation order, first failure wins: session, well-formedness, kind
  allowed in the session, duplicate id, purchase limit, band, FOK fill.

Snapshots for watchers are computed on demand (``top()``, ``depth(n)``) and
conflated by the caller (``version`` increases whenever the book changes);
``tape(n)`` gives the last trades.  ``snapshot()`` is a deterministic plain
structure suitable for a state hash.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from enum import IntEnum
from typing import Any, Literal

import msgspec

BUY = "buy"
SELL = "sell"
LIMIT = "limit"
MARKET = "market"
IOC = "ioc"
FOK = "fok"
KINDS = frozenset({LIMIT, MARKET, IOC, FOK})
SIDES = frozenset({BUY, SELL})

# Sessions.
S_OPEN = "open"
S_CALL = "call"
S_HALTED = "halted"
S_CLOSED = "closed"
SESSIONS = frozenset({S_OPEN, S_CALL, S_HALTED, S_CLOSED})

# Cancel reasons.
R_REQUESTED = "requested"
R_SELF_TRADE = "self_trade"
R_UNFILLED = "unfilled"

NO_ASK = 1 << 62  # sentinel best ask when the sell side is empty (prices are far below)
NO_BID = 0  # sentinel best bid when the buy side is empty (prices are > 0)

Side = Literal["buy", "sell"]


class BookReject(IntEnum):
    """6xx: order book.  To be merged into ``engine.codes.Reject``."""

    book_invalid = 601
    book_unknown_order = 602
    book_duplicate_id = 603
    book_price_band = 604
    book_fok_unfillable = 605
    book_halted = 606
    book_closed = 607
    book_purchase_limit = 608
    book_kind_not_allowed = 609
    book_not_call = 610


# ---------------------------------------------------------------- events


class BookEvent(msgspec.Struct, frozen=True, tag_field="type", gc=False):
    pass


class OrderAccepted(BookEvent, frozen=True, tag="book_order_accepted"):
    order_id: int
    side: str
    kind: str
    price: int  # 0 for a market order
    qty: int


class OrderRejected(BookEvent, frozen=True, tag="book_order_rejected"):
    order_id: int
    code: BookReject


class Trade(BookEvent, frozen=True, tag="book_trade"):
    maker_id: int
    taker_id: int
    price: int
    qty: int
    aggressor_side: str  # "buy" | "sell" | "none" (auction)
    ts_ns: int = 0


class OrderCancelled(BookEvent, frozen=True, tag="book_order_cancelled"):
    order_id: int
    qty: int  # the open quantity that was cancelled
    reason: str  # requested | self_trade | unfilled


class OrderAmended(BookEvent, frozen=True, tag="book_order_amended"):
    order_id: int
    price: int
    qty: int  # the new open quantity
    kept_priority: bool


class AuctionUncrossed(BookEvent, frozen=True, tag="book_auction_uncrossed"):
    price: int
    qty: int


class SessionChanged(BookEvent, frozen=True, tag="book_session_changed"):
    session: str


class BookRejected(BookEvent, frozen=True, tag="book_rejected"):
    """A non-order command (session change, uncross) was refused."""

    command: str
    code: BookReject


class TopOfBook(msgspec.Struct, frozen=True, gc=False):
    bid_price: int  # 0 = none
    bid_qty: int
    ask_price: int  # 0 = none
    ask_qty: int
    last_price: int  # 0 = no trade yet


class Depth(msgspec.Struct, frozen=True):
    bids: list[tuple[int, int]]  # (price, qty), best first
    asks: list[tuple[int, int]]


def choose_uncross_price(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]], reference: int | None
) -> tuple[int, int]:
    """B-8 over aggregated (price, qty) levels (any order): (price, volume); (0, 0) when
    nothing crosses.  Volume and imbalance are constant between consecutive limit
    prices, so the candidates are the limit prices plus, inside each gap, the
    integer nearest the reference."""
    if not bids or not asks:
        return 0, 0
    prices = sorted({p for p, _ in bids} | {p for p, _ in asks})
    bid_at: dict[int, int] = {}
    for p, q in bids:
        bid_at[p] = bid_at.get(p, 0) + q
    ask_at: dict[int, int] = {}
    for p, q in asks:
        ask_at[p] = ask_at.get(p, 0) + q
    n = len(prices)
    demand = [0] * (n + 1)  # demand[i] = bid qty with price >= prices[i]
    for i in range(n - 1, -1, -1):
        demand[i] = demand[i + 1] + bid_at.get(prices[i], 0)
    supply = [0] * n  # supply[i] = ask qty with price <= prices[i]
    acc = 0
    for i, p in enumerate(prices):
        acc += ask_at.get(p, 0)
        supply[i] = acc
    best: tuple[int, int, int, int] | None = None  # (-vol, imbalance, distance, price)
    for i, p in enumerate(prices):
        cands = [(p, demand[i], supply[i])]
        if i + 1 < n and prices[i + 1] - p >= 2:
            lo, hi = p + 1, prices[i + 1] - 1
            g = lo if reference is None else min(max(reference, lo), hi)
            cands.append((g, demand[i + 1], supply[i]))
        for price, d, s in cands:
            vol = min(d, s)
            if vol <= 0:
                continue
            key = (-vol, abs(d - s), 0 if reference is None else abs(price - reference), price)
            if best is None or key < best:
                best = key
    if best is None:
        return 0, 0
    return best[3], -best[0]


class _Order:
    __slots__ = ("oid", "owner", "price", "qty", "side")

    def __init__(self, oid: int, owner: str, side: str, price: int, qty: int) -> None:
        self.oid = oid
        self.owner = owner
        self.side = side
        self.price = price
        self.qty = qty


Level = dict[int, _Order]  # order id -> order, in time priority (insertion order)


class Book:
    """The fast book.  Per side: a dict price -> level, a level being a dict order id ->
    order in time priority (O(1) cancel from the middle, FIFO by insertion order); a
    plain sorted list of the active prices with the best at the END (bids ascending,
    asks stored negated, so the best level is removed with ``pop()``), and the best
    price cached.  An id index gives O(1) cancel and amend."""

    def __init__(
        self,
        item_id: str = "",
        *,
        reference: int | None = None,
        band: int | None = None,
        session: str = S_OPEN,
        purchase_limit: int | None = None,
        tape_len: int = 1000,
    ) -> None:
        self.item_id = item_id
        self.reference = reference
        self.band = band
        self.session = session
        self.purchase_limit = purchase_limit
        self.purchase_limits: dict[str, int] = {}
        self.last_price = 0
        self.version = 0
        self._bids: dict[int, Level] = {}
        self._asks: dict[int, Level] = {}
        self._bid_px: list[int] = []  # bid prices, ascending (best last)
        self._ask_px: list[int] = []  # NEGATED ask prices, ascending (best = -last)
        self._best_bid = NO_BID
        self._best_ask = NO_ASK
        self._index: dict[int, _Order] = {}
        self._tape: deque[Trade] = deque(maxlen=tape_len)

    # ------------------------------------------------------------ configuration

    def set_reference(self, price: int | None) -> None:
        self.reference = price

    def set_band(self, band: int | None) -> None:
        self.band = band

    def set_purchase_limit(self, owner: str, qty: int) -> None:
        self.purchase_limits[owner] = qty

    def ref_price(self) -> int | None:
        """B-6: the last trade price, else the set reference."""
        return self.last_price or self.reference

    # ------------------------------------------------------------ commands

    def submit(
        self, order_id: int, owner: str, side: str, kind: str, price: int, qty: int, now_ns: int
    ) -> list[BookEvent]:
        # Fast path: a well-formed limit or IOC order in the open session without a band
        # and with a fresh id passes every check of B-10, so it goes straight in.
        if (
            kind in (LIMIT, IOC)
            and self.session == S_OPEN
            and type(qty) is int
            and qty > 0
            and type(price) is int
            and price > 0
            and self.band is None
            and order_id not in self._index
        ):
            if side == BUY:
                ev: list[BookEvent] = [OrderAccepted(order_id, side, kind, price, qty)]
                self.version += 1
                if price >= self._best_ask:
                    qty = self._match_buy(order_id, owner, price, qty, ev, now_ns)
                    if not qty:
                        return ev
                if kind == LIMIT:
                    o = _Order(order_id, owner, BUY, price, qty)
                    self._index[order_id] = o
                    lvl = self._bids.get(price)
                    if lvl is None:
                        self._bids[price] = {order_id: o}
                        insort(self._bid_px, price)
                        if price > self._best_bid:
                            self._best_bid = price
                    else:
                        lvl[order_id] = o
                else:
                    ev.append(OrderCancelled(order_id, qty, R_UNFILLED))
                return ev
            if side == SELL:
                ev = [OrderAccepted(order_id, side, kind, price, qty)]
                self.version += 1
                if price <= self._best_bid:
                    qty = self._match_sell(order_id, owner, price, qty, ev, now_ns)
                    if not qty:
                        return ev
                if kind == LIMIT:
                    o = _Order(order_id, owner, SELL, price, qty)
                    self._index[order_id] = o
                    lvl = self._asks.get(price)
                    if lvl is None:
                        self._asks[price] = {order_id: o}
                        insort(self._ask_px, -price)
                        if price < self._best_ask:
                            self._best_ask = price
                    else:
                        lvl[order_id] = o
                else:
                    ev.append(OrderCancelled(order_id, qty, R_UNFILLED))
                return ev
        code = self._check(order_id, side, kind, price, qty)
        if code is not None:
            return [OrderRejected(order_id, code)]
        return self._enter(order_id, owner, side, kind, price, qty, now_ns)

    def purchase(
        self, order_id: int, owner: str, qty: int, now_ns: int, max_price: int = 0
    ) -> list[BookEvent]:
        """B-9 direct purchase: a market buy (an IOC buy at ``max_price`` if given)."""
        kind = IOC if max_price else MARKET
        code = self._check(order_id, BUY, kind, max_price, qty, owner=owner, purchase=True)
        if code is not None:
            return [OrderRejected(order_id, code)]
        return self._enter(order_id, owner, BUY, kind, max_price, qty, now_ns)

    def _check(
        self,
        order_id: int,
        side: str,
        kind: str,
        price: int,
        qty: int,
        owner: str = "",
        purchase: bool = False,
    ) -> BookReject | None:
        session = self.session
        if session != S_OPEN:
            if session == S_CLOSED:
                return BookReject.book_closed
            if session == S_HALTED:
                return BookReject.book_halted
        if side not in SIDES or kind not in KINDS or type(qty) is not int or qty <= 0:
            return BookReject.book_invalid
        if type(price) is not int or (price != 0 if kind == MARKET else price <= 0):
            return BookReject.book_invalid
        if session == S_CALL and kind != LIMIT:
            return BookReject.book_kind_not_allowed
        if order_id in self._index:
            return BookReject.book_duplicate_id
        if purchase:
            limit = self.purchase_limits.get(owner, self.purchase_limit)
            if limit is not None and qty > limit:
                return BookReject.book_purchase_limit
        band = self.band
        if band is not None and kind != MARKET:
            ref = self.last_price or self.reference
            if ref and (price - ref > band or ref - price > band):
                return BookReject.book_price_band
        return None

    def _enter(
        self, oid: int, owner: str, side: str, kind: str, price: int, qty: int, now_ns: int
    ) -> list[BookEvent]:
        limit = price
        if kind == MARKET:
            band = self.band
            ref = self.last_price or self.reference
            if band is not None and ref:
                limit = ref + band if side == BUY else max(ref - band, 1)
            else:
                limit = NO_ASK - 1 if side == BUY else 1
        if kind == FOK and self._fillable(owner, side, limit, qty) < qty:
            return [OrderRejected(oid, BookReject.book_fok_unfillable)]
        ev: list[BookEvent] = [OrderAccepted(oid, side, kind, price, qty)]
        self.version += 1
        if self.session == S_CALL:
            self._stp_cross(owner, side, price, ev)
            self._rest(_Order(oid, owner, side, price, qty))
            return ev
        if side == BUY:
            rem = (
                self._match_buy(oid, owner, limit, qty, ev, now_ns)
                if limit >= self._best_ask
                else qty
            )
        else:
            rem = (
                self._match_sell(oid, owner, limit, qty, ev, now_ns)
                if limit <= self._best_bid
                else qty
            )
        if rem:
            if kind == LIMIT:
                self._rest(_Order(oid, owner, side, price, rem))
            else:
                ev.append(OrderCancelled(oid, rem, R_UNFILLED))
        return ev

    def cancel(self, order_id: int, owner: str) -> list[BookEvent]:
        index = self._index
        o = index.get(order_id)
        if o is None or o.owner != owner:
            return [OrderRejected(order_id, BookReject.book_unknown_order)]
        del index[order_id]
        self._unlink(o)
        self.version += 1
        return [OrderCancelled(order_id, o.qty, R_REQUESTED)]

    def amend(
        self,
        order_id: int,
        owner: str,
        new_price: int | None = None,
        new_qty: int | None = None,
        now_ns: int = 0,
    ) -> list[BookEvent]:
        session = self.session
        if session == S_CLOSED:
            return [OrderRejected(order_id, BookReject.book_closed)]
        if session == S_HALTED:
            return [OrderRejected(order_id, BookReject.book_halted)]
        o = self._index.get(order_id)
        if o is None or o.owner != owner:
            return [OrderRejected(order_id, BookReject.book_unknown_order)]
        old_price = o.price
        price = old_price if new_price is None else new_price
        qty = o.qty if new_qty is None else new_qty
        if (new_price is None and new_qty is None) or type(price) is not int or price <= 0:
            return [OrderRejected(order_id, BookReject.book_invalid)]
        if type(qty) is not int or qty <= 0:
            return [OrderRejected(order_id, BookReject.book_invalid)]
        band = self.band
        if band is not None and price != old_price:
            ref = self.last_price or self.reference
            if ref and (price - ref > band or ref - price > band):
                return [OrderRejected(order_id, BookReject.book_price_band)]
        self.version += 1
        if price == old_price and qty <= o.qty:
            o.qty = qty
            return [OrderAmended(order_id, price, qty, True)]
        self._unlink(o)
        ev: list[BookEvent] = [OrderAmended(order_id, price, qty, False)]
        o.price = price
        if session == S_CALL:
            self._stp_cross(owner, o.side, price, ev)
            o.qty = qty
            self._rest(o)
            return ev
        if o.side == BUY:
            rem = (
                self._match_buy(order_id, owner, price, qty, ev, now_ns)
                if price >= self._best_ask
                else qty
            )
        else:
            rem = (
                self._match_sell(order_id, owner, price, qty, ev, now_ns)
                if price <= self._best_bid
                else qty
            )
        if rem:
            o.qty = rem
            self._rest(o)
        else:
            del self._index[order_id]
        return ev

    def set_session(self, session: str, now_ns: int = 0) -> list[BookEvent]:
        if session not in SESSIONS:
            return [BookRejected("set_session", BookReject.book_invalid)]
        ev: list[BookEvent] = []
        if session == S_OPEN and self.session != S_OPEN and self._best_bid >= self._best_ask:
            self._uncross(ev, now_ns)
        self.session = session
        self.version += 1
        ev.append(SessionChanged(session))
        return ev

    def uncross(self, now_ns: int) -> list[BookEvent]:
        """B-8: the opening call auction; then continuous trading (``open``)."""
        if self.session != S_CALL:
            return [BookRejected("uncross", BookReject.book_not_call)]
        return self.set_session(S_OPEN, now_ns)

    # ------------------------------------------------------------ queries

    def _bid_prices(self) -> list[int]:
        """Bid prices, best (highest) first."""
        return self._bid_px[::-1]

    def _ask_prices(self) -> list[int]:
        """Ask prices, best (lowest) first."""
        return [-p for p in reversed(self._ask_px)]

    def top(self) -> TopOfBook:
        bb, ba = self._best_bid, self._best_ask
        bq = sum(o.qty for o in self._bids[bb].values()) if bb != NO_BID else 0
        aq = sum(o.qty for o in self._asks[ba].values()) if ba != NO_ASK else 0
        return TopOfBook(bb, bq, ba if ba != NO_ASK else 0, aq, self.last_price)

    def depth(self, n: int = 10) -> Depth:
        if n <= 0:
            return Depth([], [])
        bids = [(p, sum(o.qty for o in self._bids[p].values())) for p in self._bid_prices()[:n]]
        asks = [(p, sum(o.qty for o in self._asks[p].values())) for p in self._ask_prices()[:n]]
        return Depth(bids, asks)

    def tape(self, n: int = 50) -> list[Trade]:
        t = list(self._tape)
        return t[-n:] if n > 0 else []

    def order(self, order_id: int) -> tuple[str, str, int, int] | None:
        """(owner, side, price, open qty) of a resting order, else None."""
        o = self._index.get(order_id)
        return None if o is None else (o.owner, o.side, o.price, o.qty)

    def order_qty(self, order_id: int) -> int:
        """The open quantity of a resting order, else 0 (no tuple built)."""
        o = self._index.get(order_id)
        return 0 if o is None else o.qty

    def __len__(self) -> int:
        return len(self._index)

    def crossed(self) -> bool:
        return self._best_bid >= self._best_ask

    def snapshot(self) -> dict[str, Any]:
        """Deterministic plain structure (levels best first, orders in time priority)."""
        return {
            "item_id": self.item_id,
            "session": self.session,
            "reference": self.reference,
            "band": self.band,
            "last_price": self.last_price,
            "bids": [
                [p, [[o.oid, o.owner, o.qty] for o in self._bids[p].values()]]
                for p in self._bid_prices()
            ],
            "asks": [
                [p, [[o.oid, o.owner, o.qty] for o in self._asks[p].values()]]
                for p in self._ask_prices()
            ],
        }

    def load(self, snap: dict[str, Any], purchase_limits: dict[str, int], version: int) -> None:
        """Restore what ``snapshot()`` (plus the purchase limits and version) recorded
        into an empty book: resting orders re-enter in priority order, so levels,
        time priority and the best prices come back exactly."""
        assert not self._index, "load into an empty book"
        self.session = snap["session"]
        self.reference = snap["reference"]
        self.band = snap["band"]
        self.last_price = snap["last_price"]
        self.purchase_limits = dict(purchase_limits)
        self.version = version
        for side, key in ((BUY, "bids"), (SELL, "asks")):
            for price, orders in snap[key]:
                for oid, owner, qty in orders:
                    self._rest(_Order(oid, owner, side, price, qty))

    # ------------------------------------------------------------ internals

    def _rest(self, o: _Order) -> None:
        """Index ``o`` and append it to the back of its level (creating the level)."""
        oid = o.oid
        self._index[oid] = o
        p = o.price
        if o.side == BUY:
            lvl = self._bids.get(p)
            if lvl is None:
                self._bids[p] = {oid: o}
                insort(self._bid_px, p)
                if p > self._best_bid:
                    self._best_bid = p
            else:
                lvl[oid] = o
        else:
            lvl = self._asks.get(p)
            if lvl is None:
                self._asks[p] = {oid: o}
                insort(self._ask_px, -p)
                if p < self._best_ask:
                    self._best_ask = p
            else:
                lvl[oid] = o

    def _unlink(self, o: _Order) -> None:
        """Remove a resting order from its level (not from the index)."""
        p = o.price
        if o.side == BUY:
            lvl = self._bids[p]
            del lvl[o.oid]
            if not lvl:
                del self._bids[p]
                px = self._bid_px
                if p == self._best_bid:
                    px.pop()
                    self._best_bid = px[-1] if px else NO_BID
                else:
                    del px[bisect_left(px, p)]  # O(log n) search, not a scan
        else:
            lvl = self._asks[p]
            del lvl[o.oid]
            if not lvl:
                del self._asks[p]
                px = self._ask_px
                if p == self._best_ask:
                    px.pop()
                    self._best_ask = -px[-1] if px else NO_ASK
                else:
                    del px[bisect_left(px, -p)]

    def _match_buy(
        self, oid: int, owner: str, limit: int, qty: int, ev: list[BookEvent], now_ns: int
    ) -> int:
        asks = self._asks
        index = self._index
        tape = self._tape
        append = ev.append
        best = self._best_ask
        last = 0
        while qty and best <= limit:
            lvl = asks[best]
            gone: list[int] = []  # ids taken off the front of the level
            for o in lvl.values():
                if o.owner == owner:
                    gone.append(o.oid)
                    append(OrderCancelled(o.oid, o.qty, R_SELF_TRADE))
                    continue
                oq = o.qty
                last = best
                if oq <= qty:
                    gone.append(o.oid)
                    t = Trade(o.oid, oid, best, oq, BUY, now_ns)
                    append(t)
                    tape.append(t)
                    qty -= oq
                    if not qty:
                        break
                else:
                    o.qty = oq - qty
                    t = Trade(o.oid, oid, best, qty, BUY, now_ns)
                    append(t)
                    tape.append(t)
                    qty = 0
                    break
            for k in gone:
                del index[k]
            if len(gone) == len(lvl):
                del asks[best]
                px = self._ask_px
                px.pop()
                best = -px[-1] if px else NO_ASK
            else:
                for k in gone:
                    del lvl[k]
        self._best_ask = best
        if last:
            self.last_price = last
        return qty

    def _match_sell(
        self, oid: int, owner: str, limit: int, qty: int, ev: list[BookEvent], now_ns: int
    ) -> int:
        bids = self._bids
        index = self._index
        tape = self._tape
        append = ev.append
        best = self._best_bid
        last = 0
        while qty and best >= limit and best != NO_BID:
            lvl = bids[best]
            gone: list[int] = []  # ids taken off the front of the level
            for o in lvl.values():
                if o.owner == owner:
                    gone.append(o.oid)
                    append(OrderCancelled(o.oid, o.qty, R_SELF_TRADE))
                    continue
                oq = o.qty
                last = best
                if oq <= qty:
                    gone.append(o.oid)
                    t = Trade(o.oid, oid, best, oq, SELL, now_ns)
                    append(t)
                    tape.append(t)
                    qty -= oq
                    if not qty:
                        break
                else:
                    o.qty = oq - qty
                    t = Trade(o.oid, oid, best, qty, SELL, now_ns)
                    append(t)
                    tape.append(t)
                    qty = 0
                    break
            for k in gone:
                del index[k]
            if len(gone) == len(lvl):
                del bids[best]
                px = self._bid_px
                px.pop()
                best = px[-1] if px else NO_BID
            else:
                for k in gone:
                    del lvl[k]
        self._best_bid = best
        if last:
            self.last_price = last
        return qty

    def _fillable(self, owner: str, side: str, limit: int, qty: int) -> int:
        """Quantity available to a FOK at ``limit``, excluding the owner's orders (B-5)."""
        total = 0
        if side == BUY:
            for np in reversed(self._ask_px):
                if -np > limit:
                    break
                for o in self._asks[-np].values():
                    if o.owner != owner:
                        total += o.qty
                if total >= qty:
                    break
        else:
            for p in reversed(self._bid_px):
                if p < limit:
                    break
                for o in self._bids[p].values():
                    if o.owner != owner:
                        total += o.qty
                if total >= qty:
                    break
        return total

    def _stp_cross(self, owner: str, side: str, price: int, ev: list[BookEvent]) -> None:
        """Call session (B-7): cancel the owner's opposite orders that ``price`` crosses,
        in priority order."""
        if side == BUY:
            levels = [p for p in self._ask_prices() if p <= price]
            book = self._asks
        else:
            levels = [p for p in self._bid_prices() if p >= price]
            book = self._bids
        for p in levels:
            for o in [o for o in book[p].values() if o.owner == owner]:
                self._unlink(o)
                del self._index[o.oid]
                ev.append(OrderCancelled(o.oid, o.qty, R_SELF_TRADE))

    def _uncross(self, ev: list[BookEvent], now_ns: int) -> None:
        bids = [(p, sum(o.qty for o in self._bids[p].values())) for p in self._bid_px]
        asks = [(p, sum(o.qty for o in self._asks[p].values())) for p in self._ask_prices()]
        price, volume = choose_uncross_price(bids, asks, self.last_price or self.reference)
        if volume <= 0:
            return
        vol = volume
        index = self._index
        while vol:
            b = next(iter(self._bids[self._best_bid].values()))
            a = next(iter(self._asks[self._best_ask].values()))
            fill = min(b.qty, a.qty, vol)
            t = Trade(a.oid, b.oid, price, fill, "none", now_ns)
            ev.append(t)
            self._tape.append(t)
            vol -= fill
            for o in (b, a):
                if o.qty == fill:
                    self._unlink(o)
                    del index[o.oid]
                else:
                    o.qty -= fill
        self.last_price = price
        ev.append(AuctionUncrossed(price, volume))
