"""Nothing before its time (issue 12 point 5): a draft (created, not yet
published) lot is exactly like an unknown lot on every public surface -- the
lots API (list, by id, bids) and a watcher's or bidder's WebSocket subscription
(refused like an unknown id, nothing kept, no snapshot, no event, also not
through ``*``) -- while staff and supervisors see it; once published it
appears everywhere."""

from __future__ import annotations

import trio

from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from gateway.wire.protocol import GatewayError as G
from tests.gateway.conftest import (
    Server,
    connect_bidder,
    connect_staff,
    connect_supervisor,
    connect_watcher,
    create_lot,
    next_staff_seq,
    register_bidder_key,
    staff_ok,
)
from tests.gateway.helpers import send_and_error, sync
from tests.gateway.test_http_params import HEADERS, Answer, request


async def get(server: Server, path: str) -> Answer:
    return await request(server.http_url, "GET", path.encode(), HEADERS["gateway"])


async def snapshot_of(client: Client, lot: str, seq: int = 0) -> p.LotSnapshot:
    """The client's snapshot of ``lot`` once it is at least at ``seq``."""
    with trio.fail_after(10):
        while lot not in client.snapshots or client.snapshots[lot].seq < seq:
            await client.changed.wait()
    return client.snapshots[lot]


def lot_events(client: Client, lot: str) -> list[dict]:
    return [f.event for f in client.events if isinstance(f, p.EventFrame) and f.lot == lot]


async def test_a_draft_is_unknown_to_the_public_until_published(server: Server, nursery) -> None:
    gw = server.gateway
    staff = await connect_staff(nursery, server)
    await create_lot(staff, "P1")
    await create_lot(staff, "D1", publish=False)
    b = await register_bidder_key(staff, "b-1")

    # -- the lots API: a draft is an unknown lot
    listed = (await get(server, "/api/lots")).json()
    assert [row["lot"] for row in listed] == ["P1"]
    for path in ("/api/lots/{}", "/api/lots/{}/bids"):
        draft, unknown = await get(server, path.format("D1")), await get(server, path.format("NO"))
        assert (
            (draft.status, draft.body)
            == (unknown.status, unknown.body)
            == (
                404,
                b'{"error":"unknown lot"}',
            )
        )

    # -- watchers and bidders: subscribing to a draft is refused like an unknown id
    watcher = await connect_watcher(nursery, server)
    bidder = await connect_bidder(nursery, server, b)
    for client, role in ((watcher, "watcher"), (bidder, "bidder")):
        err = await send_and_error(client, p.encode_text(p.Subscribe(["D1"])))
        assert (err.code, err.message) == (G.unknown_subscription, "no such lot: D1")
        conn = next(c for c in gw.connections if c.who.role == role)
        assert conn.lots == set() and conn.stale == set()
        await client.send(p.Subscribe(["*"]))
        await snapshot_of(client, "P1")
        await sync(client)
        assert "D1" not in client.snapshots and not conn.stale
    assert "D1" not in gw.subscribers

    # -- staff and supervisors see the draft
    supervisor = await connect_supervisor(nursery, server)
    for client in (staff, supervisor):
        await client.send(p.Subscribe(["D1"]))
        assert (await snapshot_of(client, "D1")).status == "draft"
    await supervisor.send(p.Subscribe(["*"]))

    # -- a draft changing reaches staff only; a public lot changing after it is the
    # marker that anything about the draft would have arrived by now
    ack = await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), "D1", "b-1"))
    assert (await snapshot_of(staff, "D1", ack.seq)).bidders == 1
    assert (await snapshot_of(supervisor, "D1", ack.seq)).bidders == 1
    assert [e["type"] for e in lot_events(supervisor, "D1")] == ["bidder_registered"]
    marker = await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), "P1", "b-1"))
    for client in (watcher, bidder):
        await snapshot_of(client, "P1", marker.seq)
        await sync(client)
        assert "D1" not in client.snapshots and lot_events(client, "D1") == []
    assert [e["type"] for e in lot_events(bidder, "P1")] == ["bidder_registered"]

    # -- published: it appears everywhere
    published = await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), "D1"))
    for client in (watcher, bidder):
        snap = await snapshot_of(client, "D1", published.seq)
        assert snap.status in ("published", "open")
    assert "lot_published" in [e["type"] for e in lot_events(bidder, "D1")]
    assert sorted(row["lot"] for row in (await get(server, "/api/lots")).json()) == ["D1", "P1"]
    assert (await get(server, "/api/lots/D1")).json()["lot"] == "D1"
    assert (await get(server, "/api/lots/D1/bids")).status == 200
    late = await connect_watcher(nursery, server)
    await late.send(p.Subscribe(["D1"]))
    await snapshot_of(late, "D1")
    await sync(late)
    assert late.anonymous_errors == []


async def test_a_draft_never_published_stays_hidden_after_it_ends(server: Server, nursery) -> None:
    """Terminated before publication: its status changed, it was never public."""
    staff = await connect_staff(nursery, server)
    await create_lot(staff, "D2", publish=False)
    await staff_ok(staff, p.TerminateLotFrame(next_staff_seq(), "D2", "withdrawn"))
    assert (await get(server, "/api/lots/D2")).status == 404
    watcher = await connect_watcher(nursery, server)
    err = await send_and_error(watcher, p.encode_text(p.Subscribe(["D2"])))
    assert err.code == G.unknown_subscription
