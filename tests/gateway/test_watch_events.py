"""Watchers see every public event (issue 13, point 6; RULES.md R-5.2.4: the
public sees each bid's code and price as it happens): anonymous connections get
the same ``event`` frames as participants -- ``PUBLIC_EVENTS``, in ledger order,
never a ``PRIVATE_EVENTS`` one -- bounded by ``send_queue_bytes`` like any
subscriber, and never a draft's."""

from __future__ import annotations

import inspect

import trio

from engine import messages as m
from engine.rules import RuleSet
from gateway.edge.server import PRIVATE_EVENTS, PUBLIC_EVENTS
from gateway.wire import protocol as p
from tests.gateway.conftest import (
    SECOND,
    connect_bidder,
    connect_staff,
    connect_watcher,
    create_lot,
    fund,
    next_staff_seq,
    register_bidder_key,
    staff_ok,
    wait_for,
)
from tests.gateway.helpers import close_code, events_of, port_of, stalled, sync

MINUTE = 60 * SECOND
FAST = {"limits.bids_per_s": 100_000, "limits.bid_burst": 100_000}
PRIVATE_TAGS = {t.__struct_config__.tag for t in PRIVATE_EVENTS}
# Fields no public event may carry: identities, credentials, secrets, free texts
# of complaints and alerts, bank details.
SECRET_FIELDS = {
    "bidder_id",
    "key_id",
    "public_key_hex",
    "purchaser_id",
    "text",
    "note",
    "alert_key",
    "bank_ref",
    "payer_account",
    "commitment",
    "nonce",
}


def event_types() -> set[type]:
    return {
        t
        for _name, t in inspect.getmembers(m, inspect.isclass)
        if issubclass(t, m.Event) and t is not m.Event
    }


def test_every_event_type_is_public_or_private_with_a_reason():
    public = set(PUBLIC_EVENTS)
    assert len(public) == len(PUBLIC_EVENTS)  # no type listed twice
    assert public.isdisjoint(PRIVATE_EVENTS)
    assert public | set(PRIVATE_EVENTS) == event_types()
    assert all(reason for reason in PRIVATE_EVENTS.values())


def test_public_events_carry_codes_never_identities_or_secrets():
    for t in PUBLIC_EVENTS:
        fields = set(t.__struct_fields__)
        assert not fields & SECRET_FIELDS, (t.__name__, fields & SECRET_FIELDS)
        if "reserve_fen" in fields:  # the reserve amount only once the lot has closed
            assert t in (m.LotSold, m.LotUnsold), t.__name__
    # a sealed bid's amount only in the opening record, after the opening
    assert "amount_fen" not in m.SealedBidReceived.__struct_fields__
    assert "amount_fen" not in m.RevealRecorded.__struct_fields__
    assert "amount_fen" not in m.ReserveEntered.__struct_fields__


def lot_events(client, lot: str) -> list[p.EventFrame]:
    return [f for f in client.events if isinstance(f, p.EventFrame) and f.lot == lot]


async def pong_time(client, t: int) -> int:
    await client.send(p.Ping(t))
    with trio.fail_after(10):
        while not any(isinstance(f, p.Pong) and f.t == t for f in client.events):
            await client.changed.wait()
    return next(f.server_time_ns for f in client.events if isinstance(f, p.Pong) and f.t == t)


async def test_watcher_gets_every_public_event_of_a_bidding_in_ledger_order(
    nursery, server_factory
):
    """A sandbox at 200x so the 5-minute extensions and the close happen within
    the test: the watcher of the lot, and one of ``*``, get exactly what the
    staff console gets for it -- registrations and deposits by code, the reserve's
    existence, every bid's code and price, each extension, the sale with the
    reserve disclosed -- in ledger order, and nothing private (a refused bid, a
    key registration, a blacklisting)."""
    srv = await server_factory(FAST, sandbox=True, accelerate=200)
    staff = await connect_staff(nursery, srv)
    await staff.subscribe(["*"])
    b0 = await register_bidder_key(staff, "w-bidder-0")
    b1 = await register_bidder_key(staff, "w-bidder-1")
    now = await pong_time(staff, 1)
    rules = RuleSet(reserve_cutoff_ns=0)  # the reserve may go in minutes before the close
    await staff_ok(
        staff,
        p.CreateLotFrame(
            next_staff_seq(),
            "W1",
            "english",
            "watched",
            10_000,
            100,
            now - SECOND,
            now + 4 * MINUTE,
            rules,
        ),
    )
    await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), "W1"))
    watcher = await connect_watcher(nursery, srv)
    await watcher.subscribe(["W1"])
    everything = await connect_watcher(nursery, srv)
    await everything.subscribe(["*"])
    await sync(watcher)
    await sync(everything)
    after = srv.gateway.rt.durable_seq  # what the watchers subscribed after
    for b in (b0, b1):
        await fund(staff, "W1", b.bidder_id)
    await staff_ok(staff, p.SetReserveFrame(next_staff_seq(), "W1", 10_100))
    c0 = await connect_bidder(nursery, srv, b0)
    c1 = await connect_bidder(nursery, srv, b1)
    code0, code1 = c0.hello.codes["W1"], c1.hello.codes["W1"]
    bids = [(c0, b0, 10_000), (c1, b1, 10_100), (c0, b0, 10_300)]
    for client, b, amount in bids:
        ack = await client.bid(b.key, b.key_id, "W1", amount, b.next_seq(), timeout=10)
        assert isinstance(ack, p.Ack), ack
    # private: a refused bid (too low), a key registration, a blacklisting
    refused = await c1.bid(b1.key, b1.key_id, "W1", 10_000, b1.next_seq(), timeout=10)
    assert isinstance(refused, p.Error) and refused.seq
    await register_bidder_key(staff, "w-bidder-2")
    await staff_ok(staff, p.BlacklistFrame(next_staff_seq(), "w-bidder-2", "fraud"))
    with trio.fail_after(60):  # 5 min of lot time after the last bid: 1.5 s at 200x
        while not events_of(watcher, "lot_sold"):
            await watcher.changed.wait()
    await sync(everything)
    await sync(staff)

    seen = lot_events(watcher, "W1")
    # exactly what a participant gets, frame for frame, and the same for ``*``
    assert seen == [f for f in lot_events(staff, "W1") if f.seq > after]
    assert seen == lot_events(everything, "W1")
    seqs = [f.seq for f in seen]
    assert seqs == sorted(seqs)
    kinds = [f.event["type"] for f in seen]
    assert not set(kinds) & PRIVATE_TAGS
    assert kinds.count("bidder_registered") == 2 and kinds.count("deposit_confirmed") == 2
    assert "reserve_entered" in kinds
    assert [(e["bidder_code"], e["amount_fen"]) for e in events_of(watcher, "bid_accepted")] == [
        (code0, 10_000),
        (code1, 10_100),
        (code0, 10_300),
    ]
    # each bid within 5 minutes of the end extends it, right after the bid
    for i, kind in enumerate(kinds):
        if kind == "bid_accepted":
            assert kinds[i + 1] == "lot_extended"
    assert kinds[-1] == "lot_sold"
    (sold,) = events_of(watcher, "lot_sold")
    assert (sold["bidder_code"], sold["price_fen"], sold["reserve_fen"]) == (code0, 10_300, 10_100)
    # nothing else reached the watchers: no event of another "lot" (keys, blacklist)
    assert {f.lot for f in everything.events if isinstance(f, p.EventFrame)} == {"W1"}
    assert not [
        f
        for f in everything.events
        if isinstance(f, p.EventFrame) and f.event["type"] in PRIVATE_TAGS
    ]
    assert not [
        f for f in staff.events if isinstance(f, p.EventFrame) and f.event["type"] in PRIVATE_TAGS
    ]


async def test_watcher_of_several_lots_gets_them_in_ledger_order(nursery, server_factory):
    """Bids pipelined on two lots commit together: a watcher of both (not ``*``)
    gets each event once, in ledger order, like a ``*`` watcher and the staff."""
    srv = await server_factory(FAST)
    staff = await connect_staff(nursery, srv)
    await staff.subscribe(["*"])
    bidders = {}
    for lot in ("X", "Y"):
        await create_lot(staff, lot)
        b = await register_bidder_key(staff, f"{lot}-b")
        await fund(staff, lot, b.bidder_id)
        bidders[lot] = (b, await connect_bidder(nursery, srv, b))
    both = await connect_watcher(nursery, srv)
    await both.subscribe(["X", "Y"])
    star = await connect_watcher(nursery, srv)
    await star.subscribe(["*"])
    await sync(both)
    await sync(star)
    after = srv.gateway.rt.durable_seq  # what the watchers subscribed after
    sent: dict[str, list[int]] = {"X": [], "Y": []}
    for i in range(150):
        for lot, (b, client) in bidders.items():
            cs, text = b.frame(lot, 10_000 + 100 * i)
            sent[lot].append(cs)
            await client.send_text(text)
    with trio.fail_after(30):
        for lot, (_b, client) in bidders.items():
            while not all(cs in client.replies for cs in sent[lot]):
                await client.changed.wait()
    for client in (both, star, staff):
        await sync(client)
    mine = [f for f in both.events if isinstance(f, p.EventFrame)]
    assert [f.seq for f in mine] == sorted(f.seq for f in mine)
    assert mine == [f for f in star.events if isinstance(f, p.EventFrame) and f.lot in ("X", "Y")]
    assert mine == [
        f
        for f in staff.events
        if isinstance(f, p.EventFrame) and f.lot in ("X", "Y") and f.seq > after
    ]
    for lot in ("X", "Y"):
        amounts = [
            f.event["amount_fen"]
            for f in mine
            if f.lot == lot and f.event["type"] == "bid_accepted"
        ]
        assert amounts == [10_000 + 100 * i for i in range(150)]


async def test_slow_watcher_is_cut_off_1013_and_a_resubscriber_gets_a_snapshot(
    nursery, server_factory
):
    """A watcher that never reads is owed every event: past ``send_queue_bytes``
    (the gateway's own count of what it is owed) it is closed 1013; bids flow
    on; a new connection that subscribes again starts from a snapshot."""
    bound = 64 * 1024  # the least send_queue_bytes allowed
    srv = await server_factory({**FAST, "limits.send_queue_bytes": bound})
    gw = srv.gateway
    staff = await connect_staff(nursery, srv)
    await create_lot(staff, "S1")
    b = await register_bidder_key(staff, "s-bidder")
    await fund(staff, "S1", b.bidder_id)
    slow = await stalled(port_of(srv.ws_url), "", ["S1"])
    await wait_for(
        lambda: any(c.who.role == "watcher" and c.lots == {"S1"} for c in gw.connections)
    )
    (conn,) = [c for c in gw.connections if c.who.role == "watcher"]
    bidder = await connect_bidder(nursery, srv, b)
    price = 10_000
    with trio.fail_after(60):
        while not conn.overflowed:
            assert conn.owed_bytes <= bound and conn.peak_bytes <= bound
            seqs = []
            for _ in range(50):
                cs, text = b.frame("S1", price)
                seqs.append(cs)
                price += 100
                await bidder.send_text(text)
            while not all(cs in bidder.replies for cs in seqs):
                await bidder.changed.wait()
            assert all(isinstance(bidder.replies[cs], p.Ack) for cs in seqs)
    assert conn.peak_bytes <= bound
    assert await close_code(slow) == 1013
    await wait_for(lambda: conn not in gw.connections)
    await slow.aclose()
    last = price - 100
    again = await connect_watcher(nursery, srv)
    await again.subscribe(["S1"])
    with trio.fail_after(10):
        while "S1" not in again.snapshots:
            await again.changed.wait()
    assert again.snapshots["S1"].price_fen == last
    # and from there on, every event
    ack = await bidder.bid(b.key, b.key_id, "S1", last + 100, b.next_seq(), timeout=10)
    assert isinstance(ack, p.Ack)
    with trio.fail_after(10):
        while not events_of(again, "bid_accepted"):
            await again.changed.wait()
    assert [e["amount_fen"] for e in events_of(again, "bid_accepted")] == [last + 100]


async def test_drafts_stay_hidden_from_watchers_until_published(nursery, server):
    """A ``*`` watcher gets no event of a draft lot; once published, its events."""
    staff = await connect_staff(nursery, server)
    await create_lot(staff, "P1")
    watcher = await connect_watcher(nursery, server)
    await watcher.subscribe(["*"])
    await sync(watcher)
    await create_lot(staff, "D1", publish=False)
    await staff_ok(staff, p.SetReserveFrame(next_staff_seq(), "D1", 20_000))
    await register_bidder_key(staff, "d-bidder")
    await fund(staff, "D1", "d-bidder")
    # a public lot's event after the draft's: by then the draft's would have come
    await register_bidder_key(staff, "p-bidder")
    await fund(staff, "P1", "p-bidder")
    with trio.fail_after(10):
        while not lot_events(watcher, "P1"):
            await watcher.changed.wait()
    await sync(watcher)
    assert not lot_events(watcher, "D1") and "D1" not in watcher.snapshots
    await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), "D1"))
    with trio.fail_after(10):
        while not events_of(watcher, "lot_published"):
            await watcher.changed.wait()
    assert lot_events(watcher, "D1")[0].event["type"] == "lot_published"
    assert {e["lot_id"] for e in events_of(watcher, "lot_published")} == {"D1"}
