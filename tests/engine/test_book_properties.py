"""Hypothesis properties of the order book (engine/book.py).

For generated order flow (limits, market, IOC, FOK, cancels, amends, purchases, session
changes, uncrosses) at a narrow price range, after every operation:

(a) the fast and the naive book emit identical events and have identical snapshots;
(b) in the ``open`` session the book is never crossed;
(c) every trade in continuous matching takes the highest-priority resting order left
    (price, then time), at that order's price;
(d) quantity is conserved per order: resting + filled + cancelled = submitted (the
    accepted quantity, adjusted by amends);
and (e) the call auction's price equals a brute-force search over all integer prices.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book import (
    AuctionUncrossed,
    Book,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    Trade,
    choose_uncross_price,
)
from engine.naive_book import NaiveBook

OWNERS = ["a", "b", "c", "d"]
prices = st.integers(95, 105)
qtys = st.integers(1, 8)
ids = st.integers(0, 40)

op = st.one_of(
    st.tuples(
        st.just("submit"),
        ids,
        st.sampled_from(OWNERS),
        st.sampled_from(["buy", "sell"]),
        st.sampled_from(["limit", "limit", "limit", "market", "ioc", "fok"]),
        prices,
        qtys,
    ),
    st.tuples(st.just("cancel"), ids, st.sampled_from(OWNERS)),
    st.tuples(
        st.just("amend"),
        ids,
        st.sampled_from(OWNERS),
        st.one_of(st.none(), prices),
        st.one_of(st.none(), qtys),
    ),
    st.tuples(st.just("purchase"), ids, st.sampled_from(OWNERS), qtys, st.sampled_from([0, 103])),
    st.tuples(st.just("session"), st.sampled_from(["open", "open", "call", "halted", "closed"])),
    st.tuples(st.just("uncross")),
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(book: Any, o: tuple[Any, ...], now: int) -> list[Any]:
    kind = o[0]
    if kind == "submit":
        _, oid, owner, side, k, price, qty = o
        return book.submit(oid, owner, side, k, 0 if k == "market" else price, qty, now)  # type: ignore[no-any-return]
    if kind == "cancel":
        return book.cancel(o[1], o[2])  # type: ignore[no-any-return]
    if kind == "amend":
        return book.amend(o[1], o[2], o[3], o[4], now)  # type: ignore[no-any-return]
    if kind == "purchase":
        return book.purchase(o[1], o[2], o[3], now, o[4])  # type: ignore[no-any-return]
    if kind == "session":
        return book.set_session(o[1], now)  # type: ignore[no-any-return]
    return book.uncross(now)  # type: ignore[no-any-return]


def check_priority(before: dict[str, Any], events: list[Any]) -> None:
    """(c): each continuous trade hits the first order still resting on the other side."""
    queues = {
        "buy": [[p, oid, q] for p, orders in before["asks"] for oid, _, q in orders],
        "sell": [[p, oid, q] for p, orders in before["bids"] for oid, _, q in orders],
    }
    gone: set[int] = set()
    for e in events:
        if isinstance(e, OrderCancelled):
            gone.add(e.order_id)
        elif isinstance(e, Trade) and e.aggressor_side != "none":
            queue = [x for x in queues[e.aggressor_side] if x[1] not in gone and x[2] > 0]
            assert queue, e
            head = queue[0]
            assert (head[1], head[0]) == (e.maker_id, e.price), (head, e)
            head[2] -= e.qty
            assert head[2] >= 0


@SETTINGS
@given(
    ops=st.lists(op, max_size=60),
    band=st.sampled_from([None, 4, 10]),
    reference=st.sampled_from([None, 100]),
    session=st.sampled_from(["open", "call"]),
)
def test_fast_equals_naive_and_invariants(
    ops: list[tuple[Any, ...]], band: int | None, reference: int | None, session: str
) -> None:
    fast = Book(reference=reference, band=band, session=session, purchase_limit=6)
    naive = NaiveBook(reference=reference, band=band, session=session, purchase_limit=6)
    submitted: dict[int, int] = {}  # per accepted order: accepted qty + amend deltas
    done: dict[int, int] = {}  # filled + cancelled per order
    for now, o in enumerate(ops):
        before = fast.snapshot()
        ev = apply(fast, o, now)
        assert ev == apply(naive, o, now)  # (a)
        assert fast.snapshot() == naive.snapshot()
        if fast.session == "open":
            assert not fast.crossed()  # (b)
        if o[0] in ("submit", "amend", "purchase"):
            check_priority(before, ev)
        for e in ev:
            if isinstance(e, OrderAccepted):
                submitted[e.order_id] = e.qty
                done[e.order_id] = 0
            elif isinstance(e, OrderAmended):
                resting = fast_resting_before(before, e.order_id)
                submitted[e.order_id] += e.qty - resting
            elif isinstance(e, Trade):
                done[e.maker_id] += e.qty
                done[e.taker_id] += e.qty
            elif isinstance(e, OrderCancelled):
                done[e.order_id] += e.qty
        resting = {
            oid: q
            for side in ("bids", "asks")
            for _, os in fast.snapshot()[side]
            for oid, _, q in os
        }
        for oid, total in submitted.items():  # (d)
            assert resting.get(oid, 0) + done[oid] == total, (oid, o)
    assert fast.top() == naive.top() and fast.depth(5) == naive.depth(5)


def fast_resting_before(snapshot: dict[str, Any], order_id: int) -> int:
    for side in ("bids", "asks"):
        for _, orders in snapshot[side]:
            for oid, _, q in orders:
                if oid == order_id:
                    return int(q)
    raise AssertionError(order_id)


def brute_force(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]], ref: int | None
) -> tuple[int, int]:
    best: tuple[int, int, int, int] | None = None
    allp = [p for p, _ in bids + asks]
    for p in range(min(allp), max(allp) + 1):
        d = sum(q for bp, q in bids if bp >= p)
        s = sum(q for ap, q in asks if ap <= p)
        if min(d, s) > 0:
            key = (-min(d, s), abs(d - s), 0 if ref is None else abs(p - ref), p)
            best = key if best is None or key < best else best
    return (0, 0) if best is None else (best[3], -best[0])


levels = st.lists(st.tuples(st.integers(1, 60), st.integers(1, 20)), min_size=1, max_size=12)


@settings(max_examples=500, deadline=None)
@given(bids=levels, asks=levels, ref=st.one_of(st.none(), st.integers(1, 70)))
def test_uncross_price_equals_brute_force(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]], ref: int | None
) -> None:
    assert choose_uncross_price(bids, asks, ref) == brute_force(bids, asks, ref)


@settings(max_examples=150, deadline=None)
@given(
    orders=st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.integers(90, 110), st.integers(1, 9)),
        max_size=25,
    ),
    ref=st.one_of(st.none(), st.integers(80, 120)),
)
def test_book_uncross_equals_brute_force(
    orders: list[tuple[str, int, int]], ref: int | None
) -> None:
    book = Book(session="call", reference=ref)
    for i, (side, price, qty) in enumerate(orders):
        book.submit(i, f"o{i}", side, "limit", price, qty, 0)  # distinct owners: no STP
    snap = book.snapshot()
    bids = [(p, sum(q for _, _, q in os)) for p, os in snap["bids"]]
    asks = [(p, sum(q for _, _, q in os)) for p, os in snap["asks"]]
    expected = brute_force(bids, asks, ref) if bids and asks else (0, 0)
    ev = book.uncross(0)
    got = [(e.price, e.qty) for e in ev if isinstance(e, AuctionUncrossed)]
    assert got == ([expected] if expected[1] else [])
    assert sum(e.qty for e in ev if isinstance(e, Trade)) == expected[1]
    assert not book.crossed()
