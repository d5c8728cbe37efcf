"""Every client frame type over a real connection, and malformed forms of each."""

from __future__ import annotations

import json

import pytest
import trio
from nacl.signing import SigningKey

from gateway.wire import protocol as p
from gateway.wire.protocol import GatewayError as G
from ledger.checkpoint import load_verify_key, verify_receipt
from ledger.record import fold_body_hashes
from tests.gateway.conftest import (
    HOUR_NS,
    connect_bidder,
    connect_staff,
    connect_supervisor,
    connect_watcher,
    lot_with_bidders,
    next_staff_seq,
    register_bidder_key,
    staff_ok,
    wait_for,
)
from tests.gateway.helpers import events_of, send_and_error, sync

pytestmark = pytest.mark.timeout(60)


def _check_ack(srv, ack: p.Ack) -> None:
    """Receipt signed by the server key; the proof folds this entry's hash onto
    the receipt's entry (the batch's last); the ledger holds the same hash."""
    vk = load_verify_key(srv.data_dir)
    receipt = verify_receipt(vk, bytes.fromhex(ack.receipt))
    proof = [bytes.fromhex(h) for h in ack.proof]
    assert receipt.seq == ack.seq + len(proof)
    assert fold_body_hashes(bytes.fromhex(ack.entry_hash), proof) == receipt.entry_hash
    _prev, entry_hash, _raw = srv.gateway.rt.store.get(ack.seq)
    assert entry_hash.hex() == ack.entry_hash
    assert ack.ts_ns > 0


async def test_place_bid_ack_has_verifiable_receipt_and_proof(nursery, server):
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "L1", 1)
    bidder = await connect_bidder(nursery, server, b)
    assert bidder.hello.role == "bidder" and bidder.hello.identity == b.key_id
    assert bidder.hello.codes == {"L1": "0001"}
    # Pipelined bids from one connection: several share a batch, so proofs are non-empty.
    seqs = []
    for i in range(30):
        cs, text = b.frame("L1", 10_000 + 100 * i)
        seqs.append(cs)
        await bidder.send_text(text)
    await _wait_replies(bidder, seqs)
    acks = [bidder.replies[cs] for cs in seqs]
    assert all(isinstance(a, p.Ack) for a in acks), acks
    assert [a.seq for a in acks] == sorted(a.seq for a in acks)
    for a in acks:
        _check_ack(server, a)
        assert not a.retried
    assert any(a.proof for a in acks), "expected at least one multi-entry batch"


async def test_staff_commands_batched_acks_verify(nursery, server):
    staff = await connect_staff(nursery, server)
    frames = [
        p.RegisterKeyFrame(
            next_staff_seq(), f"kk{i}", f"bb{i}", bytes(SigningKey.generate().verify_key).hex()
        )
        for i in range(40)
    ]
    for f in frames:
        await staff.send(f)
    await _wait_replies(staff, [f.client_seq for f in frames])
    acks = [staff.replies[f.client_seq] for f in frames]
    assert all(isinstance(a, p.Ack) for a in acks), acks
    for a in acks:
        _check_ack(server, a)
    assert any(a.proof for a in acks)


async def _wait_replies(client, seqs, timeout=15):
    with trio.fail_after(timeout):
        while not all(cs in client.replies for cs in seqs):
            assert not client.closed
            await client.changed.wait()


async def test_every_staff_command_acks(nursery, server):
    staff = await connect_staff(nursery, server)
    b = await register_bidder_key(staff, "alice")  # register_key
    import time

    now = time.time_ns()
    for frame in [
        p.CreateLotFrame(
            next_staff_seq(), "S1", "english", "t", 10_000, 100, now + HOUR_NS, now + 3 * HOUR_NS
        ),
        p.SetReserveFrame(next_staff_seq(), "S1", 50_000),
        p.PublishLotFrame(next_staff_seq(), "S1"),
        p.RegisterBidderFrame(next_staff_seq(), "S1", b.bidder_id),
        p.ConfirmDepositFrame(next_staff_seq(), "S1", b.bidder_id, 0),
        p.ChangeIncrementFrame(next_staff_seq(), "S1", 200),
        p.FreezeLotFrame(next_staff_seq(), "S1", "check"),
        p.ResumeLotFrame(next_staff_seq(), "S1", "ok"),
        p.TerminateLotFrame(next_staff_seq(), "S1", "withdrawn"),
    ]:
        ack = await staff_ok(staff, frame)
        _check_ack(server, ack)


async def test_subscribe_snapshot_events_unsubscribe_and_ping(nursery, server):
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "L1", 1)
    # a participant console (supervisor) gets every event; public watchers at least snapshots
    watcher = await connect_supervisor(nursery, server)
    public = await connect_watcher(nursery, server)
    assert public.hello.role == "watcher" and public.hello.identity == ""
    await public.subscribe(["L1"])
    await watcher.subscribe(["L1"])
    with trio.fail_after(5):
        while "L1" not in watcher.snapshots:
            await watcher.changed.wait()
    snap = watcher.snapshots["L1"]
    assert snap.status == "open" and snap.bidders == 1 and snap.price_fen == 0
    bidder = await connect_bidder(nursery, server, b)
    ack = await bidder.bid(b.key, b.key_id, "L1", 10_000, b.next_seq(), timeout=10)
    assert isinstance(ack, p.Ack)
    await sync(watcher)
    bids = events_of(watcher, "bid_accepted")
    assert [e["amount_fen"] for e in bids] == [10_000]
    assert bids[0]["bidder_code"] == "0001"
    # conflated snapshot follows within a snapshot interval
    with trio.fail_after(5):
        while watcher.snapshots["L1"].price_fen != 10_000:
            await watcher.changed.wait()
    with trio.fail_after(5):
        while public.snapshots.get("L1") is None or public.snapshots["L1"].price_fen != 10_000:
            await public.changed.wait()
    await watcher.send(p.Unsubscribe(["L1"]))
    await sync(watcher)
    ack = await bidder.bid(b.key, b.key_id, "L1", 10_100, b.next_seq(), timeout=10)
    assert isinstance(ack, p.Ack)
    # the public watcher, still subscribed, sees the next snapshot: a snapshot tick has
    # passed, and the unsubscribed watcher was not sent it
    with trio.fail_after(5):
        while public.snapshots["L1"].price_fen != 10_100:
            await public.changed.wait()
    await sync(watcher)
    assert [e["amount_fen"] for e in events_of(watcher, "bid_accepted")] == [10_000]
    assert watcher.snapshots["L1"].price_fen == 10_000
    # ping echoes t
    await watcher.send(p.Ping(4242))
    await sync(watcher)
    assert any(isinstance(f, p.Pong) and f.t == 4242 for f in watcher.events)
    assert not watcher.anonymous_errors


async def test_subscribe_all_lots(nursery, server):
    staff = await connect_staff(nursery, server)
    await lot_with_bidders(staff, "A", 0)
    await lot_with_bidders(staff, "B", 0)
    watcher = await connect_supervisor(nursery, server)
    await watcher.subscribe(["*"])
    # snapshots rank below must-deliver frames (a pong may overtake them)
    with trio.fail_after(5):
        while set(watcher.snapshots) != {"A", "B"}:
            await watcher.changed.wait()
    await lot_with_bidders(staff, "C", 0)
    await sync(watcher)
    assert {f.lot for f in watcher.events if isinstance(f, p.EventFrame)} == {"C"}


async def test_engine_refusal_is_typed_and_connection_stays_usable(nursery, server):
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "L1", 1)
    bidder = await connect_bidder(nursery, server, b)
    assert isinstance(await bidder.bid(b.key, b.key_id, "L1", 10_000, b.next_seq()), p.Ack)
    cs = b.next_seq()
    err = await bidder.bid(b.key, b.key_id, "L1", 10_050, cs)
    assert isinstance(err, p.Error)
    assert (err.code, err.name, err.client_seq) == (404, "bid_below_increment", cs)
    assert err.seq > 0  # refusals are ledgered
    err = await bidder.bid(b.key, b.key_id, "NOPE", 10_000, b.next_seq())
    assert isinstance(err, p.Error) and err.name == "unknown_lot"
    assert isinstance(await bidder.bid(b.key, b.key_id, "L1", 10_100, b.next_seq()), p.Ack)
    err = await staff.staff(p.PublishLotFrame(next_staff_seq(), "L1"))
    assert isinstance(err, p.Error) and err.name == "lot_not_draft"
    await staff_ok(staff, p.FreezeLotFrame(next_staff_seq(), "L1", "x"))
    err = await bidder.bid(b.key, b.key_id, "L1", 10_200, b.next_seq())
    assert isinstance(err, p.Error) and err.name == "lot_frozen"


# ----------------------------------------------------------------- malformed


@pytest.fixture
async def bidder_conn(nursery, server):
    staff = await connect_staff(nursery, server)
    bidders = await lot_with_bidders(staff, "L1", 2)
    conn = await connect_bidder(nursery, server, bidders[0])
    return server, staff, bidders, conn


async def _still_usable(server, conn, b) -> None:
    price = server.gateway.rt.router.state.lots["L1"].price_fen
    ack = await conn.bid(b.key, b.key_id, "L1", price + 100 if price else 10_000, b.next_seq())
    assert isinstance(ack, p.Ack), ack


MALFORMED = [
    ("{", "malformed_json", None),
    ("not json at all", "malformed_json", None),
    ("", "malformed_json", None),
    ('{"type":"ping","t":1}{"x":1}', "malformed_json", None),
    ("[1,2]", "schema_violation", None),
    ("null", "schema_violation", None),
    ('{"lots":["L1"]}', "schema_violation", "type"),
    ('{"type":"subscribe","lots":[1]}', "schema_violation", "$.lots[0]"),
    ('{"type":"subscribe","lots":"L1"}', "schema_violation", "$.lots"),
    ('{"type":"ping","t":"now"}', "schema_violation", "$.t"),
    ('{"type":"ping","t":1.5}', "schema_violation", "$.t"),
    ('{"type":"place_bid","payload":1,"sig":"00"}', "schema_violation", "$.payload"),
    ('{"type":"place_bid","payload":"{}"}', "schema_violation", "sig"),
    ('{"type":"create_lot","client_seq":"1"}', "schema_violation", "$.client_seq"),
    (
        '{"type":"set_reserve","client_seq":1,"lot":"L1","reserve_fen":"9"}',
        "schema_violation",
        "$.reserve_fen",
    ),
    (
        '{"type":"change_increment","client_seq":1,"lot":"L1","increment_fen":5,"phase":"x"}',
        "schema_violation",
        "$.phase",
    ),
    (
        '{"type":"register_key","client_seq":1,"key":"k","bidder":7,"public_key_hex":""}',
        "schema_violation",
        "$.bidder",
    ),
    ('{"type":"ping","t":1,"extra":true}', "schema_violation", "extra"),
    ('{"type":"subscribe","lots":[],"role":"staff"}', "schema_violation", "role"),
    (
        '{"type":"freeze_lot","client_seq":1,"lot":"L1","reason":"r","force":1}',
        "schema_violation",
        "force",
    ),
    ('{"type":"hello","role":"staff","server_time_ns":1}', "schema_violation", "$.type"),
    ('{"type":"ack"}', "schema_violation", "$.type"),
    ('{"type":"PLACE_BID"}', "schema_violation", "$.type"),
    ('{"type":7}', "schema_violation", None),
]


@pytest.mark.parametrize("text,name,path", MALFORMED)
async def test_malformed_frame_gets_typed_error(bidder_conn, text, name, path):
    server, _staff, (b, _), conn = bidder_conn
    err = await send_and_error(conn, text)
    assert err.name == name and err.code == G[name]
    if path:
        assert path in err.message, err.message
    await _still_usable(server, conn, b)


async def test_binary_frame_refused(bidder_conn):
    server, _staff, (b, _), conn = bidder_conn
    err = await send_and_error(conn, json.dumps({"type": "ping"}).encode())
    assert err.name == "malformed_json" and "text" in err.message
    await _still_usable(server, conn, b)


async def test_oversize_frame_refused_then_far_oversize_closes(bidder_conn):
    server, _staff, (b, _), conn = bidder_conn
    limit = conn.hello.max_frame_bytes
    big = json.dumps({"type": "subscribe", "lots": ["x" * (limit + 10)]})
    err = await send_and_error(conn, big)
    assert err.name == "frame_too_large"
    await _still_usable(server, conn, b)
    huge = json.dumps({"type": "subscribe", "lots": ["x" * (4 * limit + 10)]})
    await conn.send_text(huge)
    with trio.fail_after(10):
        while not conn.closed:
            await conn.changed.wait()
    assert conn.sock._raw.closed.code == 1009  # message too big
    await wait_for(lambda: len(server.gateway.connections) == 1, timeout=5)  # the staff's only


async def test_oversize_in_bytes_with_multibyte_text(bidder_conn):
    _server, _staff, (_b, _), conn = bidder_conn
    limit = conn.hello.max_frame_bytes
    # 8000 CJK characters = 24000 UTF-8 bytes: over the byte limit, under 4x.
    text = json.dumps({"type": "subscribe", "lots": ["拍" * 8000]}, ensure_ascii=False)
    assert len(text) < limit < len(text.encode())
    err = await send_and_error(conn, text)
    assert err.name == "frame_too_large"


async def test_configured_max_frame_bytes_is_enforced(nursery, server_factory):
    srv = await server_factory({"limits.max_frame_bytes": 1024})
    conn = await connect_watcher(nursery, srv)
    assert conn.hello.max_frame_bytes == 1024
    err = await send_and_error(conn, json.dumps({"type": "subscribe", "lots": ["x" * 2000]}))
    assert err.name == "frame_too_large"


async def test_watcher_cannot_bid(nursery, bidder_conn):
    server, _staff, (b, _), _conn = bidder_conn
    watcher = await connect_watcher(nursery, server)
    _cs, text = b.frame("L1", 10_000)
    err = await send_and_error(watcher, text)
    assert err.name == "not_authorized"
    assert server.gateway.views.lots["L1"].bid_count == 0


async def test_bad_signature(bidder_conn):
    server, _staff, (b, _), conn = bidder_conn
    _cs, text = b.frame("L1", 10_000)
    frame = json.loads(text)
    frame["sig"] = SigningKey.generate().sign(frame["payload"].encode()).signature.hex()
    assert (await send_and_error(conn, json.dumps(frame))).name == "bad_signature"
    frame["sig"] = "zz"
    assert (await send_and_error(conn, json.dumps(frame))).name == "bad_signature"
    frame["sig"] = ""
    assert (await send_and_error(conn, json.dumps(frame))).name == "bad_signature"
    # payload altered after signing
    _cs, text = b.frame("L1", 10_000)
    frame = json.loads(text)
    frame["payload"] = frame["payload"].replace("10000", "99999")
    assert (await send_and_error(conn, json.dumps(frame))).name == "bad_signature"
    await _still_usable(server, conn, b)
    assert server.gateway.views.lots["L1"].bid_count == 1


async def test_wrong_key(bidder_conn):
    server, _staff, (b0, b1), conn = bidder_conn
    # b1's correctly signed bid sent over b0's connection: the key id is checked first
    _, text = b1.frame("L1", 10_000)
    assert (await send_and_error(conn, text)).name == "wrong_key"
    # b0's key signing a payload that claims b1's key id
    _, text = b0.frame("L1", 10_000)
    forged = p.bid_frame(b0.key, b1.key_id, "L1", 10_000, 99)
    assert (await send_and_error(conn, forged)).name == "wrong_key"
    assert server.gateway.views.lots["L1"].bid_count == 0


async def test_bad_domain(bidder_conn):
    server, _staff, (b, _), conn = bidder_conn
    for domain in ["pubex-auth-v1", "pubex-bid-v2", ""]:
        payload = json.dumps(
            {
                "domain": domain,
                "lot": "L1",
                "key": b.key_id,
                "amount_fen": 10_000,
                "client_seq": b.next_seq(),
            }
        )
        sig = b.key.sign(payload.encode()).signature.hex()
        text = p.encode_text(p.PlaceBidFrame(payload, sig))
        assert (await send_and_error(conn, text)).name == "bad_domain"
    assert server.gateway.views.lots["L1"].bid_count == 0


async def test_signed_payload_schema_violation(bidder_conn):
    _server, _staff, (b, _), conn = bidder_conn
    payload = json.dumps(
        {
            "domain": p.BID_DOMAIN,
            "lot": "L1",
            "key": b.key_id,
            "amount_fen": "10000",
            "client_seq": 1,
        }
    )
    text = p.encode_text(p.PlaceBidFrame(payload, b.key.sign(payload.encode()).signature.hex()))
    err = await send_and_error(conn, text)
    assert err.name == "schema_violation" and "amount_fen" in err.message
    payload = json.dumps(
        {
            "domain": p.BID_DOMAIN,
            "lot": "L1",
            "key": b.key_id,
            "amount_fen": 1,
            "client_seq": 1,
            "bidder": "someone-else",
        }
    )
    text = p.encode_text(p.PlaceBidFrame(payload, b.key.sign(payload.encode()).signature.hex()))
    err = await send_and_error(conn, text)
    assert err.name == "schema_violation" and "bidder" in err.message


async def test_signed_payload_schema_violation_is_refused_without_effect(bidder_conn):
    """Whatever the code, a payload failing its schema is refused and not ledgered."""
    server, _staff, (b, _), conn = bidder_conn
    applied = server.gateway.rt.router.applied
    for payload in [
        json.dumps(
            {
                "domain": p.BID_DOMAIN,
                "lot": "L1",
                "key": b.key_id,
                "amount_fen": "10000",
                "client_seq": 1,
            }
        ),
        json.dumps({"domain": p.BID_DOMAIN, "lot": "L1", "key": b.key_id}),
        "not json",
    ]:
        text = p.encode_text(p.PlaceBidFrame(payload, b.key.sign(payload.encode()).signature.hex()))
        err = await send_and_error(conn, text)
        assert err.code in (G.schema_violation, G.malformed_json, G.wrong_key)
    assert server.gateway.rt.router.applied == applied
    await _still_usable(server, conn, b)


async def test_replayed_client_seq_gets_original_ack(bidder_conn):
    server, _staff, (b, _), conn = bidder_conn
    cs, text = b.frame("L1", 10_000)
    first = await conn.request(cs, text)
    assert isinstance(first, p.Ack) and not first.retried
    del conn.replies[cs]
    again = await conn.request(cs, text)
    assert isinstance(again, p.Ack) and again.retried
    assert (again.seq, again.entry_hash, again.ts_ns) == (first.seq, first.entry_hash, first.ts_ns)
    receipt = verify_receipt(load_verify_key(server.data_dir), bytes.fromhex(again.receipt))
    assert receipt.seq == first.seq and receipt.entry_hash.hex() == first.entry_hash
    # same client_seq, different amount: not a retry -- refused, no new bid, and
    # never another command's ack
    del conn.replies[cs]
    other = p.bid_frame(b.key, b.key_id, "L1", 50_000, cs)
    third = await conn.request(cs, other)
    assert isinstance(third, p.Error) and third.name == "client_seq_reused"
    view = server.gateway.views.lots["L1"]
    assert view.bid_count == 1 and view.price_fen == 10_000
    assert server.gateway.rt.router.state.lots["L1"].price_fen == 10_000


async def test_retry_of_refused_bid_gets_original_refusal(bidder_conn):
    _server, _staff, (b, _), conn = bidder_conn
    cs, text = b.frame("L1", 5)  # below start
    first = await conn.request(cs, text)
    assert isinstance(first, p.Error) and first.name == "bid_below_start"
    del conn.replies[cs]
    again = await conn.request(cs, text)
    assert isinstance(again, p.Error) and again.code == first.code and again.seq == first.seq


async def test_stale_client_seq(bidder_conn):
    server, _staff, (b, _), conn = bidder_conn
    for amount in (10_000, 10_100):
        cs, text = b.frame("L1", amount, 10 if amount == 10_000 else 11)
        assert isinstance(await conn.request(cs, text), p.Ack)
    # a seq lower than any remembered is neither new nor a retry
    err = await conn.request(3, p.bid_frame(b.key, b.key_id, "L1", 20_000, 3))
    assert isinstance(err, p.Error)
    assert err.name in ("client_seq_stale",) or (isinstance(err, p.Ack) and err.retried)
    assert server.gateway.views.lots["L1"].bid_count == 2
