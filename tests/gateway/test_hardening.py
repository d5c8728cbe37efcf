"""No client can do harm (issue 11): bounded memory, connections, subscriptions
and ledger growth per client; refusals that carry their client_seq; a command
that raises inside the engine refused alone.  Each over real WebSocket
connections to an in-process server on 127.0.0.1."""

from __future__ import annotations

import json
import socket

import pytest
import trio

from engine.messages import FreezeLot
from gateway.wire import protocol as p
from gateway.wire.protocol import GatewayError as G
from ledger.replay import full_replay
from tests.gateway.conftest import (
    connect_bidder,
    connect_staff,
    connect_supervisor,
    connect_watcher,
    create_lot,
    lot_with_bidders,
    next_staff_seq,
    wait_for,
)
from tests.gateway.helpers import (
    close_code,
    masked_frame,
    port_of,
    read_headers,
    send_and_error,
    sync,
    upgrade_request,
)

pytestmark = pytest.mark.timeout(120)

FAST = {"limits.bids_per_s": 100_000, "limits.bid_burst": 100_000}


async def _upgrade_status(port: int, query: str = "") -> tuple[int, trio.SocketStream]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(upgrade_request(port, query))
    head = await read_headers(stream)
    return int(head.split(b" ", 2)[1]), stream


# ------------------------------------------------------ memory per client


async def test_a_pinger_that_never_reads_is_closed_1013_at_the_byte_bound(server_factory):
    bound = 64 * 1024
    srv = await server_factory({"limits.send_queue_bytes": bound})
    gw = srv.gateway
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    port = port_of(srv.ws_url)
    await stream.socket.connect(("127.0.0.1", port))
    await stream.send_all(upgrade_request(port))
    assert (await read_headers(stream)).startswith(b"HTTP/1.1 101")
    await wait_for(lambda: len(gw.connections) == 1)
    (conn,) = gw.connections
    pings = b"".join(
        masked_frame(json.dumps({"type": "ping", "t": i}).encode()) for i in range(500)
    )
    sent = 0
    with trio.fail_after(60):
        while not conn.overflowed:
            with trio.move_on_after(1):
                await stream.send_all(pings)
                sent += 500
            await trio.sleep(0)
    # what it was owed never passed the bound, whatever the kernel buffered
    assert conn.peak_bytes <= bound
    assert conn.owed_bytes <= bound
    assert sent > bound // 60  # it really was owed more than the bound in pongs
    # reading again, it learns why it is cut off: 1013, then it is forgotten
    assert await close_code(stream) == 1013
    await wait_for(lambda: conn not in gw.connections)
    assert gw.metrics.closed_slow._value.get() == 1
    await stream.aclose()


# ------------------------------------------------------ connection caps


async def test_connection_caps_in_total_and_per_address(server_factory):
    srv = await server_factory(
        {"limits.max_connections": 3, "limits.max_connections_per_address": 2}
    )
    port = port_of(srv.ws_url)
    a = await _upgrade_status(port)
    b = await _upgrade_status(port)
    third = await _upgrade_status(port)
    assert (a[0], b[0], third[0]) == (101, 101, 429)  # a third from one address
    await a[1].aclose()
    await wait_for(lambda: len(srv.gateway.connections) == 1)
    again = await _upgrade_status(port)
    assert again[0] == 101  # a slot of the address is free again
    for s in (b[1], third[1], again[1]):
        await s.aclose()
    await wait_for(lambda: not srv.gateway.connections and not srv.gateway.per_address)


async def test_connection_cap_in_total(server_factory):
    srv = await server_factory({"limits.max_connections": 2})
    port = port_of(srv.ws_url)
    opened = [await _upgrade_status(port) for _ in range(3)]
    assert [status for status, _ in opened] == [101, 101, 503]
    for _, s in opened:
        await s.aclose()


# ------------------------------------------------------ subscriptions


async def test_unknown_subscriptions_cost_nothing_and_the_cap_holds(nursery, server_factory):
    srv = await server_factory({"limits.subscriptions_per_connection": 3})
    gw = srv.gateway
    staff = await connect_staff(nursery, srv)
    for lot in ("S1", "S2", "S3", "S4"):
        await create_lot(staff, lot)
    watcher = await connect_watcher(nursery, srv)
    made_up = [f"nope-{i}" for i in range(1000)]
    err = await send_and_error(watcher, p.encode_text(p.Subscribe(made_up)))
    assert err.code == G.unknown_subscription
    conn = next(c for c in gw.connections if c.who.role == "watcher")
    assert conn.lots == set() and not any(lot.startswith("nope-") for lot in gw.subscribers)
    # a known lot beside unknown ones: the known one is subscribed
    err = await send_and_error(watcher, p.encode_text(p.Subscribe(["S1", "nope-x"])))
    assert err.code == G.unknown_subscription and conn.lots == {"S1"}
    with trio.fail_after(10):
        while "S1" not in watcher.snapshots:
            await watcher.changed.wait()
    await watcher.send(p.Subscribe(["S1", "S2", "S3"]))  # S1 again costs nothing
    await sync(watcher)
    assert conn.lots == {"S1", "S2", "S3"}
    err = await send_and_error(watcher, p.encode_text(p.Subscribe(["S4"])))
    assert err.code == G.rate_limited and "S4" not in conn.lots


async def test_subscribing_to_everything_on_a_big_catalogue_is_paced_not_cut(
    nursery, server_factory
):
    """``*`` on more lots than fit in send_queue_bytes: every snapshot arrives,
    the connection is never closed, and it was never owed more than the bound."""
    bound = 64 * 1024
    srv = await server_factory({"limits.send_queue_bytes": bound})
    staff = await connect_staff(nursery, srv)
    n = 300  # ~300 snapshots of ~400 bytes: about twice the bound
    for i in range(n):
        await create_lot(staff, f"C{i:04d}", publish=False)
    # drafts (one round trip each to create) are seen by supervisors only
    watcher = await connect_supervisor(nursery, srv)
    await watcher.subscribe(["*"])
    with trio.fail_after(30):
        while len(watcher.snapshots) < n:
            await watcher.changed.wait()
    assert not watcher.closed
    conn = next(c for c in srv.gateway.connections if c.who.role == "supervisor")
    assert conn.peak_bytes <= bound and not conn.stale


# ------------------------------------------------------ refusals


async def test_refusals_beyond_the_budget_are_not_ledgered(nursery, server_factory):
    budget = 10
    srv = await server_factory({**FAST, "limits.refusals_per_minute": budget})
    staff = await connect_staff(nursery, srv)
    (b,) = await lot_with_bidders(staff, "R1", 1, start_price_fen=10_000)
    bidder = await connect_bidder(nursery, srv, b)
    store = srv.gateway.rt.store
    before = store.last_seq()
    codes = []
    for _ in range(40):  # below the start price: each an engine refusal
        cs = b.next_seq()
        reply = await bidder.request(cs, b.frame("R1", 5_000, cs)[1])
        assert isinstance(reply, p.Error) and reply.client_seq == cs
        codes.append(reply.name)
    assert codes[:budget] == ["bid_below_start"] * budget
    assert set(codes[budget + 1 :]) == {"too_many_refusals"}
    grown = store.last_seq() - before
    assert budget <= grown <= budget + 1  # a refill of one token at most meanwhile
    # the refusals that were answered at the edge are not in the ledger
    assert sum(1 for c in codes if c == "bid_below_start") == grown
    # another key's budget is its own
    staff_reply = await staff.staff(p.PublishLotFrame(next_staff_seq(), "R1"))
    assert isinstance(staff_reply, p.Error) and staff_reply.name == "lot_not_draft"


async def test_bad_signatures_take_rate_tokens_before_verification(nursery, server_factory):
    srv = await server_factory({"limits.bids_per_s": 1, "limits.bid_burst": 5})
    staff = await connect_staff(nursery, srv)
    (b,) = await lot_with_bidders(staff, "B1", 1)
    bidder = await connect_bidder(nursery, srv, b)
    names = []
    for _ in range(30):
        cs = b.next_seq()
        frame = json.loads(b.frame("B1", 20_000, cs)[1])
        frame["sig"] = "00" * 64
        reply = await bidder.request(cs, json.dumps(frame))
        assert isinstance(reply, p.Error) and reply.client_seq == cs  # it was read that far
        names.append(reply.name)
    verified = names.count("bad_signature")
    assert 5 <= verified <= 7  # the burst, plus what refilled meanwhile (1/s)
    assert names.count("rate_limited") == 30 - verified


async def test_edge_refusals_carry_the_client_seq_they_read(nursery, server):
    staff = await connect_staff(nursery, server)
    a, other = await lot_with_bidders(staff, "Q1", 2)
    bidder = await connect_bidder(nursery, server, a)
    # a payload naming another key: read far enough to know its client_seq
    text = p.bid_frame(other.key, other.key_id, "Q1", 20_000, 77)
    reply = await bidder.request(77, text)
    assert isinstance(reply, p.Error) and (reply.name, reply.client_seq) == ("wrong_key", 77)
    # duplicate keys in the signed payload: two readings, refused whole
    payload = (
        '{"domain":"pubex-bid-v1","lot":"Q1","key":"' + a.key_id + '","amount_fen":100,'
        '"client_seq":78,"amount_fen":5000000}'
    )
    frame = p.encode_text(p.PlaceBidFrame(payload, a.key.sign(payload.encode()).signature.hex()))
    reply = await bidder.request(78, frame)
    assert isinstance(reply, p.Error) and (reply.name, reply.client_seq) == (
        "payload_ambiguous",
        78,
    )
    # a staff frame that breaks the schema after its client_seq was read
    cs = next_staff_seq()
    reply = await staff.request(cs, json.dumps({"type": "freeze_lot", "client_seq": cs}))
    assert isinstance(reply, p.Error) and reply.name == "schema_violation"
    # a signed field the action does not use
    sealed = p.sealed_frame(a.key, p.SealedPayload(p.SEALED_DOMAIN, "withdraw", "Q1", a.key_id, 79))
    doc = json.loads(json.loads(sealed)["payload"])
    doc["amount_fen"] = 5
    text = json.dumps(doc)
    frame = p.encode_text(p.SealedFrame(text, a.key.sign(text.encode()).signature.hex()))
    reply = await bidder.request(79, frame)
    assert isinstance(reply, p.Error) and (reply.name, reply.client_seq) == (
        "field_not_applicable",
        79,
    )
    assert server.gateway.rt.router.state.lots["Q1"].bid_count == 0


async def test_invalid_utf8_closes_with_1007(server):
    status, stream = await _upgrade_status(port_of(server.ws_url))
    assert status == 101
    await stream.send_all(masked_frame(b'{"type":"ping","t":1,"x":"\xff\xfe"}'))
    assert await close_code(stream) == 1007
    await stream.aclose()


# ------------------------------------------------------ defence in depth


async def test_a_command_that_raises_inside_the_engine_is_refused_alone(nursery, server):
    """Fault injection: FreezeLot's handler half-changes the lot, then raises.
    The freeze is refused ``internal_error``, nothing of it remains, the bids
    around it are acknowledged, and the engine equals a replay of its ledger."""
    rt = server.gateway.rt
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "X1", 1)
    bidder = await connect_bidder(nursery, server, b)
    kinds, _handler = rt.router._handlers[FreezeLot]

    def half_freeze(cmd, now_ns, out):
        rt.router.state.lots[cmd.lot_id].status = "frozen"  # half-applied...
        raise RuntimeError("injected fault")  # ...then an unexpected error

    rt.router._handlers[FreezeLot] = (kinds, half_freeze)
    cs = b.next_seq()
    await bidder.send_text(b.frame("X1", 10_000, cs)[1])
    refused = await staff.staff(p.FreezeLotFrame(next_staff_seq(), "X1", "audit"))
    cs2 = b.next_seq()
    after = await bidder.request(cs2, b.frame("X1", 10_100, cs2)[1])
    assert isinstance(refused, p.Error) and refused.name == "internal_error", refused
    await wait_for(lambda: cs in bidder.replies)
    assert isinstance(bidder.replies[cs], p.Ack) and isinstance(after, p.Ack)
    assert rt.command_failures == 1
    assert server.gateway.metrics.commands_failed._value.get() == 1
    lot = rt.router.state.lots["X1"]
    assert lot.status != "frozen" and lot.bid_count == 2
    await wait_for(lambda: rt.durable_seq == rt.router.applied)
    assert full_replay(rt.store).state_hash() == rt.router.state_hash()
    # the rebuilt engine has its own (healthy) handler: the freeze now goes through
    assert isinstance(await staff.staff(p.FreezeLotFrame(next_staff_seq(), "X1", "x")), p.Ack)


# ------------------------------------------------------ one meaning per client_seq


async def test_a_reused_client_seq_is_not_a_retry(nursery, server):
    """The same command again is a retry (its original ack); anything else under
    that client_seq is refused client_seq_reused and done nowhere."""
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "U1", 1)
    bidder = await connect_bidder(nursery, server, b)
    cs, text = b.frame("U1", 10_000)
    first = await bidder.request(cs, text)
    assert isinstance(first, p.Ack)
    again = await bidder.request(cs, text)
    assert isinstance(again, p.Ack) and again.retried and again.seq == first.seq
    other = await bidder.request(cs, b.frame("U1", 90_000, cs)[1])
    assert isinstance(other, p.Error) and (other.name, other.client_seq) == (
        "client_seq_reused",
        cs,
    )
    assert server.gateway.rt.router.state.lots["U1"].price_fen == 10_000
    # staff: a terminate under the client_seq of an earlier publish does nothing
    cs = next_staff_seq()
    assert isinstance(await staff.staff(p.CreateItemFrame(cs, "U-ITEM", "t")), p.Ack)
    reused = await staff.staff(p.TerminateLotFrame(cs, "U1", "x"))
    assert isinstance(reused, p.Error) and reused.name == "client_seq_reused"
    assert server.gateway.rt.router.state.lots["U1"].status == "open"


async def test_a_padded_signed_payload_is_refused(nursery, server):
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "W1", 1)
    bidder = await connect_bidder(nursery, server, b)
    cs = b.next_seq()
    doc = {"domain": p.BID_DOMAIN, "lot": "W1", "key": b.key_id, "amount_fen": 10_000}
    text = json.dumps({**doc, "client_seq": cs}) + " " * 4_000  # 16 KiB entries, else
    frame = p.encode_text(p.PlaceBidFrame(text, b.key.sign(text.encode()).signature.hex()))
    reply = await bidder.request(cs, frame)
    assert isinstance(reply, p.Error) and (reply.name, reply.client_seq) == (
        "schema_violation",
        cs,
    )
    assert "padded" in reply.message
    # ordinary formatting (spaces after separators, indentation) is not padding
    text = json.dumps({**doc, "client_seq": cs}, indent=2)
    frame = p.encode_text(p.PlaceBidFrame(text, b.key.sign(text.encode()).signature.hex()))
    assert isinstance(await bidder.request(cs, frame), p.Ack)


async def test_pipelined_refusals_cannot_overshoot_the_budget(nursery, server_factory):
    """Hundreds of refused staff commands sent without waiting: what was in flight
    when the first refusal came back may still be ledgered, nothing after."""
    budget = 10
    srv = await server_factory({"limits.refusals_per_minute": budget})
    staff = await connect_staff(nursery, srv)
    await create_lot(staff, "P1")
    store = srv.gateway.rt.store
    before = store.last_seq()
    seqs = [next_staff_seq() for _ in range(400)]
    for cs in seqs:  # publish of a published lot: lot_not_draft, each one
        await staff.send(p.PublishLotFrame(cs, "P1"))
    with trio.fail_after(30):
        while not all(cs in staff.replies for cs in seqs):
            await staff.changed.wait()
    names = [staff.replies[cs].name for cs in seqs]  # type: ignore[union-attr]
    ledgered = store.last_seq() - before
    assert names.count("lot_not_draft") == ledgered
    assert names.count("too_many_refusals") == len(seqs) - ledgered
    assert ledgered <= budget + 64  # the budget, plus at most what one commit round held


async def test_a_staff_token_is_rate_limited(nursery, server_factory):
    srv = await server_factory({"limits.staff_commands_per_s": 1, "limits.staff_burst": 5})
    supervisor = await connect_supervisor(nursery, srv)
    names = []
    for i in range(20):
        cs = 10_000 + i
        frame = p.HandleAlertFrame(cs, "", f"k{i}", "dismiss", "n" * 2_000)
        reply = await supervisor.staff(frame)
        names.append(reply.name if isinstance(reply, p.Error) else "ack")
    assert 5 <= names.count("ack") <= 7 and names.count("rate_limited") == 20 - names.count("ack")


async def test_login_with_a_token_no_header_can_carry_is_refused_not_a_500(server):
    import json
    import urllib.error
    import urllib.request

    def status_of(body: bytes) -> int:
        req = urllib.request.Request(
            f"{server.http_url}login",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(req, timeout=5)
            return 200
        except urllib.error.HTTPError as e:
            return e.code

    for token in ("\u200b", "\udcff", "a b", "é", "x" * 300):
        body = json.dumps({"token": token}).encode()
        status = await trio.to_thread.run_sync(status_of, body)  # the server runs in this loop
        assert status in (400, 401), (token, status)
    for body in (b"{", b"[]", b'{"token": 1}', b'{"token": "a", "x": 1}', b"\xff"):
        assert await trio.to_thread.run_sync(status_of, body) == 400, body
