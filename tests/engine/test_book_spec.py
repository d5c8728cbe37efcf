"""The one specification of the order book (engine/book.py rules B-1..B-10).

Every test runs against both the fast ``Book`` and the naive reference ``NaiveBook``.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.book import (
    AuctionUncrossed,
    Book,
    BookReject,
    BookRejected,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    SessionChanged,
    TopOfBook,
    Trade,
)
from engine.naive_book import NaiveBook


@pytest.fixture(params=[Book, NaiveBook], ids=["fast", "naive"])
def book_cls(request: pytest.FixtureRequest) -> Any:
    return request.param


def levels(book: Any, side: str) -> list[list[Any]]:
    return book.snapshot()["bids" if side == "buy" else "asks"]


def ids_at(book: Any, side: str, price: int) -> list[int]:
    for p, orders in levels(book, side):
        if p == price:
            return [o[0] for o in orders]
    return []


def trades(events: list[Any]) -> list[tuple[int, int, int, int, str]]:
    return [
        (e.maker_id, e.taker_id, e.price, e.qty, e.aggressor_side)
        for e in events
        if isinstance(e, Trade)
    ]


def test_limit_rests_and_partial_fill(book_cls: Any) -> None:
    b = book_cls()
    assert b.submit(1, "a", "sell", "limit", 100, 10, 0) == [
        OrderAccepted(1, "sell", "limit", 100, 10)
    ]
    ev = b.submit(2, "b", "buy", "limit", 101, 4, 5)
    assert ev == [OrderAccepted(2, "buy", "limit", 101, 4), Trade(1, 2, 100, 4, "buy", 5)]
    assert b.order(1) == ("a", "sell", 100, 6)
    ev = b.submit(3, "b", "buy", "limit", 100, 9, 6)
    assert trades(ev) == [(1, 3, 100, 6, "buy")]
    assert b.order(3) == ("b", "buy", 100, 3)
    assert b.top() == TopOfBook(100, 3, 0, 0, 100)
    assert len(b) == 1


def test_price_time_priority(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "sell", "limit", 102, 5, 0)
    b.submit(2, "b", "sell", "limit", 101, 5, 0)
    b.submit(3, "c", "sell", "limit", 101, 5, 0)
    b.submit(4, "d", "sell", "limit", 100, 5, 0)
    ev = b.submit(9, "z", "buy", "limit", 102, 18, 0)
    assert trades(ev) == [
        (4, 9, 100, 5, "buy"),
        (2, 9, 101, 5, "buy"),
        (3, 9, 101, 5, "buy"),
        (1, 9, 102, 3, "buy"),
    ]
    assert b.depth(5).asks == [(102, 2)]


def test_sell_side_matching_and_depth(book_cls: Any) -> None:
    b = book_cls()
    for i, p in enumerate([98, 99, 100, 99]):
        b.submit(i, f"o{i}", "buy", "limit", p, 2, 0)
    assert b.depth(2).bids == [(100, 2), (99, 4)]
    ev = b.submit(10, "s", "sell", "limit", 99, 5, 0)
    assert trades(ev) == [(2, 10, 100, 2, "sell"), (1, 10, 99, 2, "sell"), (3, 10, 99, 1, "sell")]
    assert b.depth(10).bids == [(99, 1), (98, 2)]
    assert b.depth(0).bids == []


def test_market_order_fills_and_cancels_rest(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "sell", "limit", 100, 3, 0)
    ev = b.submit(2, "b", "buy", "market", 0, 5, 0)
    assert ev == [
        OrderAccepted(2, "buy", "market", 0, 5),
        Trade(1, 2, 100, 3, "buy", 0),
        OrderCancelled(2, 2, "unfilled"),
    ]
    assert len(b) == 0
    assert b.submit(3, "b", "buy", "market", 5, 5, 0) == [OrderRejected(3, BookReject.book_invalid)]


def test_ioc(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "sell", "limit", 100, 3, 0)
    b.submit(2, "a", "sell", "limit", 105, 3, 0)
    ev = b.submit(3, "b", "buy", "ioc", 101, 5, 0)
    assert trades(ev) == [(1, 3, 100, 3, "buy")]
    assert ev[-1] == OrderCancelled(3, 2, "unfilled")
    assert b.order(3) is None and b.order(2) is not None


def test_fok(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "sell", "limit", 100, 3, 0)
    b.submit(2, "c", "sell", "limit", 101, 3, 0)
    b.submit(3, "b", "sell", "limit", 101, 3, 0)  # b's own order does not count for b
    before = b.snapshot()
    assert b.submit(4, "b", "buy", "fok", 101, 7, 0) == [
        OrderRejected(4, BookReject.book_fok_unfillable)
    ]
    assert b.snapshot() == before
    ev = b.submit(5, "b", "buy", "fok", 101, 6, 0)
    assert trades(ev) == [(1, 5, 100, 3, "buy"), (2, 5, 101, 3, "buy")]
    assert b.order(3) is not None  # never reached


def test_invalid_and_duplicate(book_cls: Any) -> None:
    b = book_cls()
    bad = [
        ("buy", "limit", 100, 0),
        ("buy", "limit", 0, 5),
        ("buy", "stop", 100, 5),
        ("up", "limit", 100, 5),
        ("buy", "ioc", -1, 5),
    ]
    for i, (side, kind, price, qty) in enumerate(bad):
        assert b.submit(i, "a", side, kind, price, qty, 0) == [
            OrderRejected(i, BookReject.book_invalid)
        ]
    b.submit(7, "a", "buy", "limit", 100, 5, 0)
    assert b.submit(7, "b", "sell", "limit", 120, 5, 0) == [
        OrderRejected(7, BookReject.book_duplicate_id)
    ]


def test_cancel(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    b.submit(2, "a", "buy", "limit", 100, 5, 0)
    assert b.cancel(1, "b") == [OrderRejected(1, BookReject.book_unknown_order)]
    assert b.cancel(1, "a") == [OrderCancelled(1, 5, "requested")]
    assert b.cancel(1, "a") == [OrderRejected(1, BookReject.book_unknown_order)]
    assert ids_at(b, "buy", 100) == [2]
    b.cancel(2, "a")
    assert b.top() == TopOfBook(0, 0, 0, 0, 0)


def test_amend_quantity_decrease_keeps_priority(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    b.submit(2, "b", "buy", "limit", 100, 5, 0)
    assert b.amend(1, "a", new_qty=3) == [OrderAmended(1, 100, 3, True)]
    assert ids_at(b, "buy", 100) == [1, 2]
    ev = b.submit(3, "c", "sell", "limit", 100, 4, 0)
    assert trades(ev) == [(1, 3, 100, 3, "sell"), (2, 3, 100, 1, "sell")]


def test_amend_quantity_increase_loses_priority(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    b.submit(2, "b", "buy", "limit", 100, 5, 0)
    assert b.amend(1, "a", new_qty=6) == [OrderAmended(1, 100, 6, False)]
    assert ids_at(b, "buy", 100) == [2, 1]


def test_amend_price_change_loses_priority_and_may_trade(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    b.submit(2, "b", "buy", "limit", 99, 5, 0)
    b.submit(3, "c", "sell", "limit", 103, 2, 0)
    assert b.amend(1, "a", new_price=99) == [OrderAmended(1, 99, 5, False)]
    assert ids_at(b, "buy", 99) == [2, 1]
    ev = b.amend(2, "b", new_price=104, new_qty=3, now_ns=7)
    assert ev == [OrderAmended(2, 104, 3, False), Trade(3, 2, 103, 2, "buy", 7)]
    assert b.order(2) == ("b", "buy", 104, 1)
    assert b.amend(2, "x", new_qty=1) == [OrderRejected(2, BookReject.book_unknown_order)]
    assert b.amend(2, "b") == [OrderRejected(2, BookReject.book_invalid)]
    assert b.amend(2, "b", new_qty=0) == [OrderRejected(2, BookReject.book_invalid)]


def test_amend_to_same_price_keeps_priority(book_cls: Any) -> None:
    # B-4: the same price and quantity is neither a price change nor an increase, so
    # the order keeps its place (a bench peer emulating amends by cancel + new order
    # must skip it, else its queue order and later fills differ).
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    b.submit(2, "b", "buy", "limit", 100, 5, 0)
    assert b.amend(1, "a", new_price=100) == [OrderAmended(1, 100, 5, True)]
    assert ids_at(b, "buy", 100) == [1, 2]
    ev = b.submit(3, "c", "sell", "limit", 100, 5, 0)
    assert trades(ev) == [(1, 3, 100, 5, "sell")]
    assert b.order(1) is None and b.order(2) == ("b", "buy", 100, 5)


def test_order_qty(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    assert b.order_qty(1) == 5 and b.order_qty(2) == 0
    b.submit(2, "c", "sell", "limit", 100, 3, 0)
    assert b.order_qty(1) == 2
    b.cancel(1, "a")
    assert b.order_qty(1) == 0


def test_cancel_from_middle_of_level_keeps_order_of_others(book_cls: Any) -> None:
    b = book_cls()
    for i in range(1, 6):
        b.submit(i, f"o{i}", "sell", "limit", 100, 2, 0)
    b.cancel(3, "o3")
    b.cancel(1, "o1")
    assert ids_at(b, "sell", 100) == [2, 4, 5]
    ev = b.submit(9, "z", "buy", "limit", 100, 5, 0)
    assert trades(ev) == [(2, 9, 100, 2, "buy"), (4, 9, 100, 2, "buy"), (5, 9, 100, 1, "buy")]
    assert b.depth(5).asks == [(100, 1)] and b.top().ask_price == 100


def test_amend_fully_filled_leaves_book(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "sell", "limit", 100, 5, 0)
    b.submit(2, "b", "buy", "limit", 99, 5, 0)
    ev = b.amend(2, "b", new_price=100)
    assert trades(ev) == [(1, 2, 100, 5, "buy")]
    assert len(b) == 0


def test_self_trade_prevention_cancels_resting(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "sell", "limit", 100, 5, 0)
    b.submit(2, "b", "sell", "limit", 100, 5, 0)
    ev = b.submit(3, "a", "buy", "limit", 100, 7, 0)
    assert ev == [
        OrderAccepted(3, "buy", "limit", 100, 7),
        OrderCancelled(1, 5, "self_trade"),
        Trade(2, 3, 100, 5, "buy", 0),
    ]
    assert b.order(3) == ("a", "buy", 100, 2)


def test_price_band(book_cls: Any) -> None:
    b = book_cls(reference=1000, band=50)
    assert b.submit(1, "a", "buy", "limit", 949, 1, 0) == [
        OrderRejected(1, BookReject.book_price_band)
    ]
    assert b.submit(2, "a", "sell", "limit", 1051, 1, 0) == [
        OrderRejected(2, BookReject.book_price_band)
    ]
    assert isinstance(b.submit(3, "a", "buy", "limit", 950, 1, 0)[0], OrderAccepted)
    b.submit(4, "b", "sell", "limit", 1030, 1, 0)
    b.submit(5, "c", "buy", "limit", 1030, 1, 0)  # trade at 1030 moves the reference
    assert b.ref_price() == 1030
    assert isinstance(b.submit(6, "a", "sell", "limit", 1080, 1, 0)[0], OrderAccepted)
    assert b.amend(3, "a", new_price=970) == [OrderRejected(3, BookReject.book_price_band)]
    assert b.amend(3, "a", new_qty=2) == [OrderAmended(3, 950, 2, False)]  # same price: no band


def test_market_order_limited_to_band(book_cls: Any) -> None:
    b = book_cls(reference=1000, band=50)
    b.submit(1, "a", "sell", "limit", 1040, 1, 0)
    b.submit(2, "a", "sell", "limit", 1050, 1, 0)
    b.set_band(20)
    ev = b.submit(3, "b", "buy", "market", 0, 3, 0)
    assert trades(ev) == []  # 1040 is outside 1000 +/- 20
    b.set_band(45)
    ev = b.submit(4, "b", "buy", "market", 0, 3, 0)
    assert trades(ev) == [(1, 4, 1040, 1, "buy")]
    assert ev[-1] == OrderCancelled(4, 2, "unfilled")


def test_sessions_halted_closed(book_cls: Any) -> None:
    b = book_cls()
    b.submit(1, "a", "buy", "limit", 100, 5, 0)
    assert b.set_session("halted") == [SessionChanged("halted")]
    assert b.submit(2, "a", "buy", "limit", 100, 5, 0) == [OrderRejected(2, BookReject.book_halted)]
    assert b.amend(1, "a", new_qty=1) == [OrderRejected(1, BookReject.book_halted)]
    b.set_session("closed")
    assert b.submit(2, "a", "buy", "limit", 100, 5, 0) == [OrderRejected(2, BookReject.book_closed)]
    assert b.purchase(3, "a", 1, 0) == [OrderRejected(3, BookReject.book_closed)]
    assert b.cancel(1, "a") == [OrderCancelled(1, 5, "requested")]  # cancels always allowed
    assert b.set_session("bogus") == [BookRejected("set_session", BookReject.book_invalid)]
    assert b.uncross(0) == [BookRejected("uncross", BookReject.book_not_call)]


def test_call_auction_collects_then_uncrosses(book_cls: Any) -> None:
    b = book_cls(session="call", reference=100)
    assert b.submit(1, "a", "buy", "ioc", 100, 5, 0) == [
        OrderRejected(1, BookReject.book_kind_not_allowed)
    ]
    b.submit(1, "a", "buy", "limit", 102, 5, 0)
    b.submit(2, "b", "buy", "limit", 101, 5, 0)
    b.submit(3, "c", "sell", "limit", 99, 4, 0)
    b.submit(4, "d", "sell", "limit", 101, 4, 0)
    assert b.crossed()
    ev = b.uncross(9)
    # volume: p=99 -> min(10, 4)=4; p=101 -> min(10, 8)=8; p=102 -> min(5, 8)=5
    assert ev == [
        Trade(3, 1, 101, 4, "none", 9),
        Trade(4, 1, 101, 1, "none", 9),
        Trade(4, 2, 101, 3, "none", 9),
        AuctionUncrossed(101, 8),
        SessionChanged("open"),
    ]
    assert b.session == "open" and not b.crossed()
    assert b.top() == TopOfBook(101, 2, 0, 0, 101)


def test_uncross_tie_minimal_imbalance(book_cls: Any) -> None:
    b = book_cls(session="call")
    b.submit(1, "a", "buy", "limit", 105, 10, 0)
    b.submit(2, "b", "buy", "limit", 100, 2, 0)
    b.submit(3, "c", "sell", "limit", 100, 10, 0)
    # p=100: min(12, 10)=10, imbalance 2; p in 101..105: min(10, 10)=10, imbalance 0
    # no reference -> lowest price among the ties
    ev = b.uncross(0)
    assert [e for e in ev if isinstance(e, AuctionUncrossed)] == [AuctionUncrossed(101, 10)]


def test_uncross_tie_nearest_reference(book_cls: Any) -> None:
    b = book_cls(session="call", reference=103)
    b.submit(1, "a", "buy", "limit", 105, 10, 0)
    b.submit(2, "c", "sell", "limit", 100, 10, 0)
    ev = b.uncross(0)
    assert ev[-2] == AuctionUncrossed(103, 10)  # every price 100..105 ties; 103 is nearest
    b2 = book_cls(session="call", reference=200)
    b2.submit(1, "a", "buy", "limit", 105, 10, 0)
    b2.submit(2, "c", "sell", "limit", 100, 10, 0)
    assert b2.uncross(0)[-2] == AuctionUncrossed(105, 10)


def test_uncross_nothing_crosses(book_cls: Any) -> None:
    b = book_cls(session="call")
    b.submit(1, "a", "buy", "limit", 99, 10, 0)
    b.submit(2, "c", "sell", "limit", 100, 10, 0)
    assert b.uncross(0) == [SessionChanged("open")]


def test_call_session_self_cross_cancels_own_resting(book_cls: Any) -> None:
    b = book_cls(session="call")
    b.submit(1, "a", "sell", "limit", 100, 5, 0)
    b.submit(2, "a", "sell", "limit", 103, 5, 0)
    ev = b.submit(3, "a", "buy", "limit", 101, 5, 0)
    assert ev == [OrderAccepted(3, "buy", "limit", 101, 5), OrderCancelled(1, 5, "self_trade")]
    assert b.order(2) is not None


def test_entering_open_from_halt_uncrosses_crossed_book(book_cls: Any) -> None:
    b = book_cls(session="call")
    b.submit(1, "a", "buy", "limit", 101, 5, 0)
    b.submit(2, "b", "sell", "limit", 100, 5, 0)
    b.set_session("halted")
    ev = b.set_session("open", 3)
    assert ev == [Trade(2, 1, 100, 5, "none", 3), AuctionUncrossed(100, 5), SessionChanged("open")]


def test_direct_purchase_with_limit(book_cls: Any) -> None:
    b = book_cls(purchase_limit=10)
    b.set_purchase_limit("vip", 100)
    b.submit(1, "s", "sell", "limit", 100, 20, 0)
    b.submit(2, "s", "sell", "limit", 110, 50, 0)
    assert b.purchase(3, "p", 11, 0) == [OrderRejected(3, BookReject.book_purchase_limit)]
    ev = b.purchase(4, "p", 10, 1)
    assert ev == [OrderAccepted(4, "buy", "market", 0, 10), Trade(1, 4, 100, 10, "buy", 1)]
    ev = b.purchase(5, "vip", 60, 2, max_price=100)
    assert ev == [
        OrderAccepted(5, "buy", "ioc", 100, 60),
        Trade(1, 5, 100, 10, "buy", 2),
        OrderCancelled(5, 50, "unfilled"),
    ]
    assert [t.qty for t in b.tape()] == [10, 10]


def test_snapshot_is_plain_and_deterministic(book_cls: Any) -> None:
    import msgspec

    b = book_cls("item-1", reference=100, band=10)
    b.submit(1, "a", "buy", "limit", 99, 5, 0)
    b.submit(2, "b", "sell", "limit", 101, 5, 0)
    snap = b.snapshot()
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(snap)) == snap
    assert snap["bids"] == [[99, [[1, "a", 5]]]] and snap["asks"] == [[101, [[2, "b", 5]]]]


def test_events_roundtrip_msgpack() -> None:
    import msgspec

    Union = OrderAccepted | Trade | OrderRejected | OrderAmended | AuctionUncrossed
    ev = [
        OrderAccepted(1, "buy", "limit", 1, 1),
        Trade(1, 2, 3, 4, "buy", 5),
        OrderRejected(1, BookReject.book_closed),
        OrderAmended(1, 2, 3, True),
        AuctionUncrossed(1, 2),
    ]
    dec = msgspec.msgpack.Decoder(list[Union])  # type: ignore[valid-type]
    assert dec.decode(msgspec.msgpack.encode(ev)) == ev
