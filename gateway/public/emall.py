"""Theory of operation: the e-mall in the public views (its frames become
commands in ``gateway.wire.translate``).

* ``ItemViews`` is the public projection of every item, folded from durable
  events only (like ``gateway.public.views`` for lots): per order its side, price and
  open quantity, so the aggregated depth per price level is exact after each
  committed entry; the last trade, volume, a bounded trade tape and a bounded
  price history (for the console's chart).  No owner is ever known here --
  events carry per-item trader codes and order ids only.
* ``ItemView.snapshot()`` is the conflated ``book`` frame watchers receive:
  session, reference, last price, the best ``DEPTH`` levels a side and the
  latest ``TAPE`` trades.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from operator import neg
from typing import Any

import msgspec
from sortedcontainers import SortedDict

from engine.messages import (
    AuctionUncrossed,
    Event,
    ItemCreated,
    ItemSessionChanged,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderPlaced,
    PurchaseLimitSet,
)
from gateway.wire import protocol as p

DEPTH = 10  # price levels a side in a book snapshot
TAPE = 30  # trades in a book snapshot
MAX_TRADES_KEPT = 5_000  # per item, for the history API and the console chart

ITEM_EVENTS = (
    ItemCreated,
    ItemSessionChanged,
    PurchaseLimitSet,
    OrderPlaced,
    OrderFilled,
    OrderCancelled,
    OrderAmended,
    AuctionUncrossed,
)


class ItemView(msgspec.Struct):
    item: str
    title: str = ""
    session: str = "call"
    reference_fen: int = 0
    band_fen: int = 0
    last_price_fen: int = 0
    volume: int = 0
    trades: int = 0
    seq: int = 0
    orders: dict[int, list[Any]] = msgspec.field(default_factory=dict)  # id -> [side, px, qty]
    # price -> open qty, kept in book order (best first) for the depth a snapshot shows
    bids: SortedDict = msgspec.field(default_factory=lambda: SortedDict(neg))
    asks: SortedDict = msgspec.field(default_factory=SortedDict)
    history: deque[p.TapeRow] = msgspec.field(default_factory=lambda: deque(maxlen=MAX_TRADES_KEPT))

    def snapshot(self) -> p.BookSnapshot:
        bids, asks = self.depth()
        tape = list(self.history)[-TAPE:]
        return p.BookSnapshot(
            self.item,
            self.title,
            self.session,
            self.reference_fen,
            self.band_fen,
            self.last_price_fen,
            bids,
            asks,
            tape,
            self.volume,
            self.trades,
            self.seq,
        )

    def depth(self, n: int = DEPTH) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return list(islice(self.bids.items(), n)), list(islice(self.asks.items(), n))

    # ------------------------------------------------------------ folding
    def _level(self, side: str, price: int, delta: int) -> None:
        if not price:
            return  # a market order never rests
        levels = self.bids if side == "buy" else self.asks
        qty = levels.get(price, 0) + delta
        if qty > 0:
            levels[price] = qty
        else:
            levels.pop(price, None)

    def _take(self, order_id: int, qty: int) -> None:
        o = self.orders.get(order_id)
        if o is None:
            return
        o[2] -= qty
        self._level(o[0], o[1], -qty)
        if o[2] <= 0:
            del self.orders[order_id]

    def fold(self, seq: int, ts_ns: int, ev: Event) -> None:
        self.seq = seq
        kind = type(ev)
        if kind is OrderPlaced:
            assert isinstance(ev, OrderPlaced)
            # Rests at its price until its fills and any unfilled cancel (in the
            # same entry) take the quantity off again.
            self.orders[ev.order_id] = [ev.side, ev.price_fen, ev.qty]
            self._level(ev.side, ev.price_fen, ev.qty)
        elif kind is OrderFilled:
            assert isinstance(ev, OrderFilled)
            self._take(ev.maker_id, ev.qty)
            self._take(ev.taker_id, ev.qty)
            self.last_price_fen = ev.price_fen
            self.volume += ev.qty
            self.trades += 1
            self.history.append(p.TapeRow(seq, ts_ns, ev.price_fen, ev.qty, ev.aggressor))
        elif kind is OrderCancelled:
            assert isinstance(ev, OrderCancelled)
            o = self.orders.get(ev.order_id)
            if o is not None:
                self._take(ev.order_id, o[2])
        elif kind is OrderAmended:
            assert isinstance(ev, OrderAmended)
            o = self.orders.get(ev.order_id)
            if o is not None:
                self._level(o[0], o[1], -o[2])
                o[1], o[2] = ev.price_fen, ev.qty
                self._level(o[0], o[1], o[2])
        elif kind is ItemSessionChanged:
            assert isinstance(ev, ItemSessionChanged)
            self.session = ev.session

    def state(self) -> ItemState:
        """This view as plain data (a copy for an edge joining over the link)."""
        return ItemState(
            self.item,
            self.title,
            self.session,
            self.reference_fen,
            self.band_fen,
            self.last_price_fen,
            self.volume,
            self.trades,
            self.seq,
            self.orders,
            list(self.bids.items()),
            list(self.asks.items()),
            list(self.history),
        )

    @classmethod
    def from_state(cls, st: ItemState) -> ItemView:
        view = cls(
            st.item,
            st.title,
            st.session,
            st.reference_fen,
            st.band_fen,
            st.last_price_fen,
            st.volume,
            st.trades,
            st.seq,
            st.orders,
        )
        view.bids.update(st.bids)
        view.asks.update(st.asks)
        view.history.extend(st.history)
        return view


class ItemState(msgspec.Struct, array_like=True):
    item: str
    title: str
    session: str
    reference_fen: int
    band_fen: int
    last_price_fen: int
    volume: int
    trades: int
    seq: int
    orders: dict[int, list[Any]]
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    history: list[p.TapeRow]


class ItemViews:
    def __init__(self) -> None:
        self.items: dict[str, ItemView] = {}

    def fold(self, seq: int, ts_ns: int, ev: Event) -> bool:
        """True when ``ev`` changed an item's public view."""
        if type(ev) is ItemCreated:
            assert isinstance(ev, ItemCreated)
            self.items[ev.lot_id] = ItemView(
                ev.lot_id,
                ev.title,
                ev.session,
                ev.reference_fen,
                ev.band_fen,
                seq=seq,
            )
            return True
        view = self.items.get(ev.lot_id)
        if view is None or not isinstance(ev, ITEM_EVENTS):
            return False
        view.fold(seq, ts_ns, ev)
        return True
