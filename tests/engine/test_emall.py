"""The e-mall in the engine (issue 5, RULES.md §3.4): items with an order book each,
owned by the router; events without owners; refusals with typed codes; replay and
snapshot + tail equivalence for order flow."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codes import Reject
from engine.messages import (
    AmendOrder,
    AuctionUncrossed,
    CancelOrder,
    Command,
    CreateItem,
    DirectPurchase,
    ItemCreated,
    ItemSessionChanged,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderPlaced,
    PlaceOrder,
    PurchaseLimitSet,
    SetItemSession,
    SetPurchaseLimit,
    decode_command,
    encode_command,
    encode_events,
)
from engine.router import Router
from tests.engine.helpers import SERVICE, STAFF, Market, of_type, one, reject_code


def item_market(session: str = "open", band: int = 0, limit: int = 0, ref: int = 1000) -> Market:
    m = Market()
    m.cmd(
        CreateItem,
        STAFF,
        item_id="I1",
        title="A4 paper, 80 g, 500 sheets",
        reference_fen=ref,
        band_fen=band,
        purchase_limit_qty=limit,
        session=session,
    )
    return m


def order(
    m: Market, who: str, side: str, price: int, qty: int, kind: str = "limit", item: str = "I1"
) -> list:  # type: ignore[type-arg]
    return m.cmd(
        PlaceOrder,
        who if ":" in who else f"bidder:{who}",
        item_id=item,
        side=side,
        kind=kind,
        price_fen=price,
        qty=qty,
    )


def placed_id(events: list) -> int:  # type: ignore[type-arg]
    return one(events, OrderPlaced).order_id


# ---------------------------------------------------------------- basics


def test_create_item_and_trade_with_codes_not_owners() -> None:
    m = item_market()
    created = one(m.events, ItemCreated)
    assert (created.lot_id, created.reference_fen, created.session) == ("I1", 1000, "open")
    ask = order(m, "alice", "sell", 1000, 5)
    ask_id = placed_id(ask)
    assert ask_id == m.router.applied  # an order's id is the ledger seq that placed it
    out = order(m, "bob", "buy", 1010, 3)
    fill = one(out, OrderFilled)
    assert (fill.maker_id, fill.price_fen, fill.qty, fill.aggressor) == (ask_id, 1000, 3, "buy")
    assert [e.trader_code for e in of_type(m.events, OrderPlaced)] == ["T0001", "T0002"]
    raw = encode_events(m.events)
    assert b"alice" not in raw and b"bob" not in raw
    assert m.state.items["I1"].book.order(ask_id) == ("alice", "sell", 1000, 2)


def test_opening_call_uncross_on_open() -> None:
    m = item_market(session="call")
    order(m, "a", "buy", 1010, 4)
    order(m, "b", "sell", 990, 3)
    order(m, "c", "sell", 1005, 2)
    assert reject_code(order(m, "d", "buy", 0, 1, kind="market")) == Reject.book_kind_not_allowed
    out = m.cmd(SetItemSession, STAFF, item_id="I1", session="open")
    assert one(out, AuctionUncrossed).qty == 4
    assert sum(f.qty for f in of_type(out, OrderFilled)) == 4
    assert one(out, ItemSessionChanged).session == "open"
    assert not m.state.items["I1"].book.crossed()


def test_cancel_amend_and_self_trade_prevention() -> None:
    m = item_market()
    a1 = placed_id(order(m, "a", "sell", 1000, 5))
    assert reject_code(m.cmd(CancelOrder, "bidder:b", item_id="I1", order_id=a1)) == (
        Reject.book_unknown_order
    )
    amended = one(m.cmd(AmendOrder, "bidder:a", item_id="I1", order_id=a1, qty=2), OrderAmended)
    assert amended.kept_priority and amended.qty == 2
    out = order(m, "a", "buy", 1000, 1)  # would trade with a's own offer
    assert one(out, OrderCancelled).reason == "self_trade"
    b1 = placed_id(out)
    out = m.cmd(CancelOrder, "bidder:a", item_id="I1", order_id=b1)
    assert (one(out, OrderCancelled).order_id, one(out, OrderCancelled).reason) == (
        b1,
        "requested",
    )


def test_direct_purchase_within_the_single_purchase_limit() -> None:
    m = item_market(limit=10)
    order(m, "s1", "sell", 1000, 6)
    order(m, "s2", "sell", 1001, 6)
    assert reject_code(m.cmd(DirectPurchase, "purchaser:gov", item_id="I1", qty=11)) == (
        Reject.book_purchase_limit
    )
    m.cmd(SetPurchaseLimit, SERVICE, item_id="I1", purchaser_id="gov", qty=20)
    assert one(m.events, PurchaseLimitSet).qty == 20
    out = m.cmd(DirectPurchase, "purchaser:gov", item_id="I1", qty=11)
    assert one(out, OrderPlaced).purchase
    assert [(f.price_fen, f.qty) for f in of_type(out, OrderFilled)] == [(1000, 6), (1001, 5)]
    out = m.cmd(DirectPurchase, "purchaser:gov", item_id="I1", qty=5, max_price_fen=999)
    assert one(out, OrderCancelled).reason == "unfilled"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        (PlaceOrder("bidder:x", 1, "NOPE", "buy", "limit", 1000, 1), Reject.unknown_item),
        (PlaceOrder("bidder:x", 1, "I1", "up", "limit", 1000, 1), Reject.book_invalid),
        (PlaceOrder("bidder:x", 1, "I1", "buy", "stop", 1000, 1), Reject.book_invalid),
        (PlaceOrder("bidder:x", 1, "I1", "buy", "limit", 1000, 0), Reject.book_invalid),
        (PlaceOrder("bidder:x", 1, "I1", "buy", "limit", -5, 1), Reject.book_invalid),
        (PlaceOrder("bidder:x", 1, "I1", "buy", "market", 7, 1), Reject.book_invalid),
        (PlaceOrder("bidder:x", 1, "I1", "buy", "limit", 1200, 1), Reject.book_price_band),
        (PlaceOrder("bidder:x", 1, "I1", "buy", "fok", 1000, 1), Reject.book_fok_unfillable),
        (PlaceOrder("supplier:x", 1, "I1", "buy", "limit", 1000, 1), Reject.not_authorized),
        (PlaceOrder("purchaser:x", 1, "I1", "sell", "limit", 1000, 1), Reject.not_authorized),
        (PlaceOrder("staff:x", 1, "I1", "buy", "limit", 1000, 1), Reject.not_authorized),
        (CancelOrder("bidder:x", 1, "I1", 999), Reject.book_unknown_order),
        (AmendOrder("bidder:x", 1, "I1", 999, 1000, 1), Reject.book_unknown_order),
        (DirectPurchase("supplier:x", 1, "I1", 1), Reject.not_authorized),
        (DirectPurchase("purchaser:x", 1, "I1", 0), Reject.book_invalid),
        (DirectPurchase("purchaser:x", 1, "I1", 1, -1), Reject.book_invalid),
        (CreateItem("bidder:x", 1, "I2", "t"), Reject.not_authorized),
        (CreateItem(STAFF, 99, "I1", "t"), Reject.item_exists),
        (CreateItem(STAFF, 99, "", "t"), Reject.invalid_terms),
        (CreateItem(STAFF, 99, "I2", "t", band_fen=5), Reject.invalid_terms),
        (CreateItem(STAFF, 99, "I2", "t", reference_fen=-1), Reject.invalid_terms),
        (CreateItem(STAFF, 99, "I2", "t", session="lunch"), Reject.invalid_terms),
        (SetItemSession(STAFF, 99, "I1", "lunch"), Reject.book_invalid),
        (SetItemSession(STAFF, 99, "I9", "open"), Reject.unknown_item),
        (SetPurchaseLimit(SERVICE, 99, "I1", "gov", 0), Reject.invalid_terms),
    ],
)
def test_malformed_commands_are_refused_with_typed_codes(cmd: Command, code: Reject) -> None:
    m = item_market(band=100)
    before = items_of(m.router)
    out = m.apply(cmd)
    assert reject_code(out) == code
    assert items_of(m.router) == before  # a refusal changes no item or book


def items_of(router: Router) -> bytes:
    return msgspec.msgpack.encode(
        {k: (i.codes, i.book.snapshot()) for k, i in router.state.items.items()}
    )


def test_halted_and_closed_sessions_refuse_but_allow_cancel() -> None:
    m = item_market()
    a1 = placed_id(order(m, "a", "sell", 1000, 5))
    m.cmd(SetItemSession, STAFF, item_id="I1", session="halted")
    assert reject_code(order(m, "b", "buy", 1000, 1)) == Reject.book_halted
    m.cmd(SetItemSession, STAFF, item_id="I1", session="closed")
    assert reject_code(order(m, "b", "buy", 1000, 1)) == Reject.book_closed
    amend = m.cmd(AmendOrder, "bidder:a", item_id="I1", order_id=a1, qty=1)
    assert reject_code(amend) == Reject.book_closed
    assert one(m.cmd(CancelOrder, "bidder:a", item_id="I1", order_id=a1), OrderCancelled)


def test_blacklisted_trader_may_cancel_but_not_trade() -> None:
    m = item_market()
    a1 = placed_id(order(m, "a", "sell", 1000, 5))
    m.blacklist("a")
    assert reject_code(order(m, "a", "sell", 1000, 1)) == Reject.bidder_not_eligible
    assert one(m.cmd(CancelOrder, "bidder:a", item_id="I1", order_id=a1), OrderCancelled)


def test_item_ids_do_not_clash_with_lots() -> None:
    m = item_market()
    m.create_english("L1")
    assert reject_code(m.cmd(CreateItem, STAFF, item_id="L1", title="x")) == Reject.item_exists


def test_retried_order_is_not_placed_twice() -> None:
    m = item_market()
    cmd = PlaceOrder("bidder:a", 7, "I1", "sell", "limit", 1000, 5)
    m.apply(cmd)
    again = m.apply(cmd)
    assert not of_type(again, OrderPlaced)
    assert len(m.state.items["I1"].book) == 1


# ------------------------------------------------- replay and snapshot + tail


def flow(seed: int, n: int) -> list[Command]:
    """Seeded order flow on three items: every command kind, valid and not."""
    rng = random.Random(seed)
    cmds: list[Command] = []
    seqs: dict[str, int] = {}

    def nxt(origin: str) -> int:
        seqs[origin] = seqs.get(origin, 0) + 1
        return seqs[origin]

    items = ["I1", "I2", "I3"]
    for i, item in enumerate(items):
        cmds.append(
            CreateItem(
                STAFF,
                nxt(STAFF),
                item,
                f"item {i}",
                1000,
                60 if i == 1 else 0,
                5 if i else 0,
                "call" if i == 2 else "open",
            )
        )
    placed: list[tuple[str, str, int]] = []  # (origin, item, order id = ledger seq)
    for _ in range(n):
        r = rng.random()
        item = rng.choice(items)
        if r < 0.55:
            who = rng.choice(["bidder:a", "bidder:b", "supplier:s", "purchaser:p", "bidder:c"])
            side = "sell" if who.startswith("supplier") else rng.choice(["buy", "sell"])
            if who.startswith("purchaser"):
                side = "buy"
            kind = rng.choice(["limit"] * 5 + ["ioc", "market", "fok"])
            price = 0 if kind == "market" else rng.randint(940, 1060)
            cmds.append(PlaceOrder(who, nxt(who), item, side, kind, price, rng.randint(1, 9)))
            placed.append((who, item, len(cmds)))
        elif r < 0.7 and placed:
            who, it, oid = rng.choice(placed)
            cmds.append(CancelOrder(who, nxt(who), it, oid))
        elif r < 0.85 and placed:
            who, it, oid = rng.choice(placed)
            price = rng.choice([0, rng.randint(950, 1050)])
            cmds.append(AmendOrder(who, nxt(who), it, oid, price, rng.randint(0, 9)))
        elif r < 0.95:
            who = "purchaser:p"
            cmds.append(
                DirectPurchase(who, nxt(who), item, rng.randint(1, 8), rng.choice([0, 1020]))
            )
        else:
            cmds.append(
                SetItemSession(
                    STAFF, nxt(STAFF), item, rng.choice(["open", "open", "call", "halted"])
                )
            )
    return cmds


def run(cmds: list[Command], router: Router | None = None, start: int = 0) -> tuple:  # type: ignore[type-arg]
    router = router if router is not None else Router()
    events = []
    for i, cmd in enumerate(cmds[start:], start):
        events.extend(router.apply(decode_command(encode_command(cmd)), 1_000 + i))
    return router, events


def test_replay_equivalence_for_order_flow() -> None:
    cmds = flow(7, 600)
    r1, ev1 = run(cmds)
    r2, ev2 = run(cmds)
    assert encode_events(ev1) == encode_events(ev2)
    assert r1.state_hash() == r2.state_hash()
    assert of_type(ev1, OrderFilled) and of_type(ev1, AuctionUncrossed)
    assert sum(len(i.book) for i in r1.state.items.values()) > 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 300))
def test_snapshot_plus_tail_equals_full_replay(seed: int, cut: int) -> None:
    cmds = flow(seed, 300)
    full, full_events = run(cmds)
    head, head_events = run(cmds[: cut + 3])
    restored = Router.restore(head.snapshot())
    assert restored.state_hash() == head.state_hash()
    tail, tail_events = run(cmds, restored, cut + 3)
    assert tail.state_hash() == full.state_hash()
    assert encode_events(head_events + tail_events) == encode_events(full_events)
    for item_id, item in full.state.items.items():
        assert tail.state.items[item_id].book.snapshot() == item.book.snapshot()
        assert tail.state.items[item_id].codes == item.codes


def test_state_hash_covers_resting_orders() -> None:
    m = item_market()
    order(m, "a", "sell", 1000, 5)
    h1 = m.router.state_hash()
    m2 = item_market()
    order(m2, "a", "sell", 1000, 4)
    assert m2.router.state_hash() != h1
