"""Theory of operation: the naive reference book.

``NaiveBook`` implements the rules B-1 .. B-10 stated in ``engine.book`` with
the simplest data structures: one list of resting orders per side in arrival
order (time priority is the list position; an order that loses priority is
moved to the end), best prices found by linear scans, and the call auction
price found by brute force over every integer price between the lowest and
the highest limit price.  It is slow on purpose and exists so that the fast
``Book`` can be checked against it: both must emit identical event streams
and identical ``snapshot()`` values for any sequence of calls.

It shares only the event types, codes and constants with ``engine.book``.
"""

from __future__ import annotations

from typing import Any

from engine.book import (
    BUY,
    FOK,
    IOC,
    KINDS,
    LIMIT,
    MARKET,
    R_REQUESTED,
    R_SELF_TRADE,
    R_UNFILLED,
    S_CALL,
    S_CLOSED,
    S_HALTED,
    S_OPEN,
    SELL,
    SESSIONS,
    SIDES,
    AuctionUncrossed,
    BookEvent,
    BookReject,
    BookRejected,
    Depth,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    SessionChanged,
    TopOfBook,
    Trade,
)


class _N:
    __slots__ = ("oid", "owner", "price", "qty", "side")

    def __init__(self, oid: int, owner: str, side: str, price: int, qty: int) -> None:
        self.oid = oid
        self.owner = owner
        self.side = side
        self.price = price
        self.qty = qty


class NaiveBook:
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
        self.tape_len = tape_len
        self.trades: list[Trade] = []
        self.buys: list[_N] = []  # arrival order
        self.sells: list[_N] = []

    def set_reference(self, price: int | None) -> None:
        self.reference = price

    def set_band(self, band: int | None) -> None:
        self.band = band

    def set_purchase_limit(self, owner: str, qty: int) -> None:
        self.purchase_limits[owner] = qty

    def ref_price(self) -> int | None:
        return self.last_price or self.reference

    # ---------------------------------------------------------------- helpers

    def _find(self, oid: int) -> _N | None:
        for o in self.buys + self.sells:
            if o.oid == oid:
                return o
        return None

    def _side_list(self, side: str) -> list[_N]:
        return self.buys if side == BUY else self.sells

    def _best(self, side: str) -> _N | None:
        """The highest-priority resting order on ``side`` (linear scan)."""
        best: _N | None = None
        for o in self._side_list(side):
            if (
                best is None
                or (side == BUY and o.price > best.price)
                or (side == SELL and o.price < best.price)
            ):
                best = o
        return best

    def _in_priority(self, side: str) -> list[_N]:
        orders = list(self._side_list(side))
        if side == BUY:
            orders.sort(key=lambda o: -o.price)  # stable: time order within a price
        else:
            orders.sort(key=lambda o: o.price)
        return orders

    def _out_of_band(self, price: int) -> bool:
        ref = self.ref_price()
        return self.band is not None and bool(ref) and abs(price - (ref or 0)) > self.band

    @staticmethod
    def _crosses(side: str, price: int, resting_price: int) -> bool:
        return resting_price <= price if side == BUY else resting_price >= price

    # ---------------------------------------------------------------- commands

    def submit(
        self, order_id: int, owner: str, side: str, kind: str, price: int, qty: int, now_ns: int
    ) -> list[BookEvent]:
        return self._submit(order_id, owner, side, kind, price, qty, now_ns, False)

    def purchase(
        self, order_id: int, owner: str, qty: int, now_ns: int, max_price: int = 0
    ) -> list[BookEvent]:
        kind = IOC if max_price else MARKET
        return self._submit(order_id, owner, BUY, kind, max_price, qty, now_ns, True)

    def _submit(
        self,
        oid: int,
        owner: str,
        side: str,
        kind: str,
        price: int,
        qty: int,
        now_ns: int,
        purchase: bool,
    ) -> list[BookEvent]:
        if self.session == S_CLOSED:
            return [OrderRejected(oid, BookReject.book_closed)]
        if self.session == S_HALTED:
            return [OrderRejected(oid, BookReject.book_halted)]
        if side not in SIDES or kind not in KINDS or not isinstance(qty, int) or qty <= 0:
            return [OrderRejected(oid, BookReject.book_invalid)]
        if not isinstance(price, int) or (kind == MARKET and price != 0):
            return [OrderRejected(oid, BookReject.book_invalid)]
        if kind != MARKET and price <= 0:
            return [OrderRejected(oid, BookReject.book_invalid)]
        if self.session == S_CALL and kind != LIMIT:
            return [OrderRejected(oid, BookReject.book_kind_not_allowed)]
        if self._find(oid) is not None:
            return [OrderRejected(oid, BookReject.book_duplicate_id)]
        if purchase:
            limit = self.purchase_limits.get(owner, self.purchase_limit)
            if limit is not None and qty > limit:
                return [OrderRejected(oid, BookReject.book_purchase_limit)]
        if kind != MARKET and self._out_of_band(price):
            return [OrderRejected(oid, BookReject.book_price_band)]
        limit_price: int | None = price
        if kind == MARKET:
            ref = self.ref_price()
            if self.band is not None and ref:
                limit_price = ref + self.band if side == BUY else max(ref - self.band, 1)
            else:
                limit_price = None
        other = SELL if side == BUY else BUY
        if kind == FOK:
            available = sum(
                o.qty
                for o in self._side_list(other)
                if o.owner != owner and self._crosses(side, price, o.price)
            )
            if available < qty:
                return [OrderRejected(oid, BookReject.book_fok_unfillable)]
        ev: list[BookEvent] = [OrderAccepted(oid, side, kind, price, qty)]
        self.version += 1
        if self.session == S_CALL:
            self._cancel_own_crossing(owner, side, price, ev)
            self._side_list(side).append(_N(oid, owner, side, price, qty))
            return ev
        rem = self._match(oid, owner, side, limit_price, qty, ev, now_ns)
        if rem:
            if kind == LIMIT:
                self._side_list(side).append(_N(oid, owner, side, price, rem))
            else:
                ev.append(OrderCancelled(oid, rem, R_UNFILLED))
        return ev

    def _match(
        self,
        oid: int,
        owner: str,
        side: str,
        limit: int | None,
        qty: int,
        ev: list[BookEvent],
        now_ns: int,
    ) -> int:
        other = SELL if side == BUY else BUY
        while qty > 0:
            best = self._best(other)
            if best is None or (limit is not None and not self._crosses(side, limit, best.price)):
                break
            if best.owner == owner:
                self._side_list(other).remove(best)
                ev.append(OrderCancelled(best.oid, best.qty, R_SELF_TRADE))
                continue
            fill = min(qty, best.qty)
            t = Trade(best.oid, oid, best.price, fill, side, now_ns)
            ev.append(t)
            self.trades.append(t)
            self.last_price = best.price
            qty -= fill
            best.qty -= fill
            if best.qty == 0:
                self._side_list(other).remove(best)
        return qty

    def _cancel_own_crossing(self, owner: str, side: str, price: int, ev: list[BookEvent]) -> None:
        other = SELL if side == BUY else BUY
        for o in self._in_priority(other):
            if o.owner == owner and self._crosses(side, price, o.price):
                self._side_list(other).remove(o)
                ev.append(OrderCancelled(o.oid, o.qty, R_SELF_TRADE))

    def cancel(self, order_id: int, owner: str) -> list[BookEvent]:
        o = self._find(order_id)
        if o is None or o.owner != owner:
            return [OrderRejected(order_id, BookReject.book_unknown_order)]
        self._side_list(o.side).remove(o)
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
        if self.session == S_CLOSED:
            return [OrderRejected(order_id, BookReject.book_closed)]
        if self.session == S_HALTED:
            return [OrderRejected(order_id, BookReject.book_halted)]
        o = self._find(order_id)
        if o is None or o.owner != owner:
            return [OrderRejected(order_id, BookReject.book_unknown_order)]
        if new_price is None and new_qty is None:
            return [OrderRejected(order_id, BookReject.book_invalid)]
        price = o.price if new_price is None else new_price
        qty = o.qty if new_qty is None else new_qty
        if not isinstance(price, int) or price <= 0 or not isinstance(qty, int) or qty <= 0:
            return [OrderRejected(order_id, BookReject.book_invalid)]
        if price != o.price and self._out_of_band(price):
            return [OrderRejected(order_id, BookReject.book_price_band)]
        self.version += 1
        if price == o.price and qty <= o.qty:
            o.qty = qty
            return [OrderAmended(order_id, price, qty, True)]
        own = self._side_list(o.side)
        own.remove(o)
        ev: list[BookEvent] = [OrderAmended(order_id, price, qty, False)]
        o.price = price
        if self.session == S_CALL:
            self._cancel_own_crossing(owner, o.side, price, ev)
            o.qty = qty
            own.append(o)
            return ev
        rem = self._match(order_id, owner, o.side, price, qty, ev, now_ns)
        if rem:
            o.qty = rem
            own.append(o)
        return ev

    def set_session(self, session: str, now_ns: int = 0) -> list[BookEvent]:
        if session not in SESSIONS:
            return [BookRejected("set_session", BookReject.book_invalid)]
        ev: list[BookEvent] = []
        if session == S_OPEN and self.session != S_OPEN and self.crossed():
            self._uncross(ev, now_ns)
        self.session = session
        self.version += 1
        ev.append(SessionChanged(session))
        return ev

    def uncross(self, now_ns: int) -> list[BookEvent]:
        if self.session != S_CALL:
            return [BookRejected("uncross", BookReject.book_not_call)]
        return self.set_session(S_OPEN, now_ns)

    # ---------------------------------------------------------------- auction

    def auction_price(self) -> tuple[int, int]:
        """Brute force over every integer price: (price, volume), (0, 0) if no cross."""
        prices = [o.price for o in self.buys + self.sells]
        if not self.buys or not self.sells:
            return 0, 0
        ref = self.ref_price()
        best: tuple[int, int, int, int] | None = None
        for p in range(min(prices), max(prices) + 1):
            d = sum(o.qty for o in self.buys if o.price >= p)
            s = sum(o.qty for o in self.sells if o.price <= p)
            vol = min(d, s)
            if vol <= 0:
                continue
            key = (-vol, abs(d - s), 0 if ref is None else abs(p - ref), p)
            if best is None or key < best:
                best = key
        return (0, 0) if best is None else (best[3], -best[0])

    def _uncross(self, ev: list[BookEvent], now_ns: int) -> None:
        price, volume = self.auction_price()
        if volume <= 0:
            return
        vol = volume
        while vol > 0:
            b = self._best(BUY)
            a = self._best(SELL)
            assert b is not None and a is not None
            fill = min(b.qty, a.qty, vol)
            t = Trade(a.oid, b.oid, price, fill, "none", now_ns)
            ev.append(t)
            self.trades.append(t)
            vol -= fill
            for o in (b, a):
                o.qty -= fill
                if o.qty == 0:
                    self._side_list(o.side).remove(o)
        self.last_price = price
        ev.append(AuctionUncrossed(price, volume))

    # ---------------------------------------------------------------- queries

    def crossed(self) -> bool:
        b, a = self._best(BUY), self._best(SELL)
        return b is not None and a is not None and b.price >= a.price

    def _levels(self, side: str) -> list[tuple[int, list[_N]]]:
        out: list[tuple[int, list[_N]]] = []
        for o in self._in_priority(side):
            if out and out[-1][0] == o.price:
                out[-1][1].append(o)
            else:
                out.append((o.price, [o]))
        return out

    def top(self) -> TopOfBook:
        bids, asks = self._levels(BUY), self._levels(SELL)
        bp, bq = (bids[0][0], sum(o.qty for o in bids[0][1])) if bids else (0, 0)
        ap, aq = (asks[0][0], sum(o.qty for o in asks[0][1])) if asks else (0, 0)
        return TopOfBook(bp, bq, ap, aq, self.last_price)

    def depth(self, n: int = 10) -> Depth:
        if n <= 0:
            return Depth([], [])
        return Depth(
            [(p, sum(o.qty for o in os)) for p, os in self._levels(BUY)[:n]],
            [(p, sum(o.qty for o in os)) for p, os in self._levels(SELL)[:n]],
        )

    def tape(self, n: int = 50) -> list[Trade]:
        t = self.trades[-self.tape_len :] if self.tape_len > 0 else []
        return t[-n:] if n > 0 else []

    def order(self, order_id: int) -> tuple[str, str, int, int] | None:
        o = self._find(order_id)
        return None if o is None else (o.owner, o.side, o.price, o.qty)

    def order_qty(self, order_id: int) -> int:
        o = self._find(order_id)
        return 0 if o is None else o.qty

    def __len__(self) -> int:
        return len(self.buys) + len(self.sells)

    def snapshot(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "session": self.session,
            "reference": self.reference,
            "band": self.band,
            "last_price": self.last_price,
            "bids": [[p, [[o.oid, o.owner, o.qty] for o in os]] for p, os in self._levels(BUY)],
            "asks": [[p, [[o.oid, o.owner, o.qty] for o in os]] for p, os in self._levels(SELL)],
        }
