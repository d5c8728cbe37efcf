"""Replay (T14), disconnect storm (T10), stalled console (T11), restart, drain."""

from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest
import trio

from engine.messages import BidAccepted, decode_events
from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from gateway.wire.protocol import GatewayError as G
from ledger.record import decode_body
from tests.gateway.conftest import (
    STAFF_TOKEN,
    SUPERVISOR_TOKEN,
    connect_bidder,
    connect_staff,
    connect_watcher,
    lot_with_bidders,
    signed_query,
    wait_for,
)
from tests.gateway.helpers import (
    close_code,
    masked_frame,
    port_of,
    read_headers,
    send_and_error,
    split_frames,
    stalled,
    sync,
    upgrade_request,
)

pytestmark = pytest.mark.timeout(90)

# Rate and refusal budgets out of the way: the restart test resends 60 bids, most of
# them retries or stale (each ledgered, so each counts against refusals_per_minute),
# and the last, new one must not meet an exhausted budget.
FAST = {
    "limits.bids_per_s": 100_000,
    "limits.bid_burst": 100_000,
    "limits.refusals_per_minute": 100_000,
}


# ----------------------------------------------------------------- T14 replay


async def test_captured_bid_replayed_later_and_by_another_bidder(nursery, server):
    staff = await connect_staff(nursery, server)
    alice, bob = await lot_with_bidders(staff, "R1", 2)
    first_conn = await connect_bidder(nursery, server, alice)
    cs, captured = alice.frame("R1", 10_000)
    first = await first_conn.request(cs, captured)
    assert isinstance(first, p.Ack) and not first.retried
    await first_conn.close()
    ok = await (await connect_bidder(nursery, server, bob)).bid(
        bob.key, bob.key_id, "R1", 10_100, bob.next_seq()
    )
    assert isinstance(ok, p.Ack)
    # later, on a new connection of the same bidder: the original outcome
    second_conn = await connect_bidder(nursery, server, alice)
    again = await second_conn.request(cs, captured)
    assert isinstance(again, p.Ack) and again.retried
    assert (again.seq, again.entry_hash) == (first.seq, first.entry_hash)
    # by a different bidder's connection: refused, never a bid
    bob_conn = await connect_bidder(nursery, server, bob)
    err = await send_and_error(bob_conn, captured)
    assert err.code in (G.wrong_key, G.bad_signature), err
    lot = server.gateway.rt.router.state.lots["R1"]
    assert lot.bid_count == 2 and lot.price_fen == 10_100
    assert server.gateway.views.lots["R1"].bid_count == 2


async def test_payload_claiming_another_key_is_wrong_key(nursery, server):
    staff = await connect_staff(nursery, server)
    alice, bob = await lot_with_bidders(staff, "R2", 2)
    bob_conn = await connect_bidder(nursery, server, bob)
    # signed with bob's own key but naming alice's key id
    forged = p.bid_frame(bob.key, alice.key_id, "R2", 10_000, 1)
    err = await send_and_error(bob_conn, forged)
    assert err.name == "wrong_key"
    assert server.gateway.rt.router.state.lots["R2"].bid_count == 0


# ----------------------------------------------------------- raw websocket bits


async def _drop(port: int, query: str, mode: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        req = upgrade_request(port, query)
        if mode == 0:  # half the upgrade request, then gone
            await stream.send_all(req[: len(req) // 2])
        else:
            await stream.send_all(req)
            head = await read_headers(stream)
            assert head.startswith(b"HTTP/1.1 101"), head[:80]
            frame = masked_frame(b'{"type":"subscribe","lots":["S1"]}' * 4)
            await stream.send_all(frame[: len(frame) // 2])  # half a frame
        if mode in (1, 2):  # abortive close: RST
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        await stream.aclose()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _count_tasks() -> int:
    def walk(task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


# ------------------------------------------------------------- T10 the storm


async def test_disconnect_storm(nursery, server_factory):
    srv = await server_factory(FAST)
    gw = srv.gateway
    staff = await connect_staff(nursery, srv)
    bidders = await lot_with_bidders(staff, "S1", 40)
    steady_b = bidders[0]
    steady = await connect_bidder(nursery, srv, steady_b)
    await sync(steady)
    # the set-up connections are gone: the baseline is the staff's and steady's own
    await wait_for(lambda: len(gw.connections) == 2)
    base_fds, base_tasks, base_conns = _fds(), _count_tasks(), set(gw.connections)
    port = port_of(srv.ws_url)
    acks: list[p.Ack | p.Error] = []
    stop = trio.Event()

    async def steady_bidding() -> None:
        amount = 10_000
        while not stop.is_set():
            reply = await steady.bid(
                steady_b.key, steady_b.key_id, "S1", amount, steady_b.next_seq(), timeout=20
            )
            acks.append(reply)
            amount += 100
            await trio.sleep(0.005)

    dropped = 0
    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            inner.start_soon(steady_bidding)
            for wave in range(8):
                async with trio.open_nursery() as storm:
                    for i in range(50):
                        mode = (wave + i) % 3
                        if i % 2:
                            b = bidders[1 + (i % 39)]
                            query = signed_query(b.key, b.key_id)
                        else:
                            query = ""
                        storm.start_soon(_drop, port, query, mode)
                        dropped += 1
            await trio.sleep(0.3)  # a time gap: steady bids on after the storm (nothing timed)
            stop.set()
    assert dropped == 400
    await wait_for(lambda: set(gw.connections) == base_conns, timeout=20)
    assert acks and all(isinstance(a, p.Ack) for a in acks), [
        a for a in acks if not isinstance(a, p.Ack)
    ][:3]
    assert len({a.seq for a in acks}) == len(acks)
    await wait_for(lambda: _fds() <= base_fds + 5, timeout=15)
    await wait_for(lambda: _count_tasks() <= base_tasks + 5, timeout=15)
    for subs in gw.subscribers.values():
        assert subs <= base_conns
    assert isinstance(
        await steady.bid(steady_b.key, steady_b.key_id, "S1", 10**8, steady_b.next_seq()), p.Ack
    )


# ------------------------------------------------------ T11 stalled console


async def test_stalled_console_is_bounded_and_bids_flow(nursery, server_factory):
    bound = 256 * 1024
    srv = await server_factory({**FAST, "limits.send_queue_bytes": bound})
    gw = srv.gateway
    staff = await connect_staff(nursery, srv)
    (b,) = await lot_with_bidders(staff, "T1", 1)
    for extra in range(20):
        await lot_with_bidders(staff, f"T-extra-{extra}", 0)
    port = port_of(srv.ws_url)
    console = await stalled(port, "", ["*"], token=SUPERVISOR_TOKEN)
    watcher = await stalled(port, "", ["*"])
    await wait_for(lambda: len(gw.connections) == 3)
    stuck = {c for c in gw.connections if c.who.role in ("supervisor", "watcher")}
    bidder = await connect_bidder(nursery, srv, b)
    max_owed = 0
    n = 4000  # ~1 MB of events: four times what a participant may be owed
    with trio.fail_after(90):
        seqs = []
        for i in range(n):
            cs, text = b.frame("T1", 10_000 + 100 * i)
            seqs.append(cs)
            await bidder.send_text(text)
            if i % 50 == 0:
                # one byte bound on everything a connection is owed
                for c in stuck & gw.connections:
                    max_owed = max(max_owed, c.owed_bytes)
                # the bidder itself reads its replies (it is owed them too)
                while not all(cs in bidder.replies for cs in seqs[:-50]):
                    await trio.sleep(0.005)
        while not all(cs in bidder.replies for cs in seqs):
            for c in stuck & gw.connections:
                max_owed = max(max_owed, c.owed_bytes)
            await trio.sleep(0.01)
    assert all(isinstance(bidder.replies[cs], p.Ack) for cs in seqs)
    assert max_owed <= bound
    for c in stuck:
        assert c.owed_bytes <= bound and c.peak_bytes <= bound
        assert len(c.snapshots) <= 21  # one pending snapshot per lot at most
    # the stalled participant console could not keep up with must-deliver events:
    sup = next(c for c in stuck if c.who.role == "supervisor")
    assert sup.overflowed or sup not in gw.connections
    # once it reads again it learns it was cut off: 1013, then it is forgotten
    assert await close_code(console) == 1013
    await wait_for(lambda: sup not in gw.connections, timeout=10)
    assert isinstance(await bidder.bid(b.key, b.key_id, "T1", 10**8, b.next_seq()), p.Ack)
    await console.aclose()
    await watcher.aclose()


# ----------------------------------------------------------------- restart


async def test_restart_keeps_acknowledged_bids_and_retries(nursery, server_factory, tmp_path):
    data = tmp_path / "restart"
    srv = await server_factory(FAST, data)
    staff = await connect_staff(nursery, srv)
    (b,) = await lot_with_bidders(staff, "RS", 1)
    bidder = await connect_bidder(nursery, srv, b)
    for i in range(20):
        assert isinstance(
            await bidder.bid(b.key, b.key_id, "RS", 10_000 + 100 * i, b.next_seq()), p.Ack
        )
    # in flight when the server stops
    in_flight = []
    for i in range(20, 80):
        cs, text = b.frame("RS", 10_000 + 100 * i)
        in_flight.append(cs)
        await bidder.send_text(text)
    await trio.sleep(0.002)  # a time gap: some of them in the ledger, some not, at the stop
    await srv.stop()
    acked = {cs: r for cs, r in bidder.replies.items() if isinstance(r, p.Ack)}
    assert len(acked) >= 20
    last_cs = max(acked)

    srv2 = await server_factory(FAST, data)
    gw = srv2.gateway
    for ack in acked.values():  # every acknowledged bid is in the ledger
        entry = gw.rt.store.get(ack.seq)
        assert entry is not None and entry[1].hex() == ack.entry_hash
    lot = gw.rt.router.state.lots["RS"]
    count_before = lot.bid_count
    assert count_before >= len(acked)
    bidder2 = await connect_bidder(nursery, srv2, b)
    again = await bidder2.bid(b.key, b.key_id, "RS", 10_000 + 100 * (last_cs - 1), last_cs)
    assert isinstance(again, p.Ack) and again.retried
    assert (again.seq, again.entry_hash) == (acked[last_cs].seq, acked[last_cs].entry_hash)
    # the in-flight ones: retried (if they made it) or new -- never doubled
    for cs in in_flight:
        await bidder2.bid(b.key, b.key_id, "RS", 10_000 + 100 * (cs - 1), cs)
    ledger_bids = sum(
        1
        for _seq, _prev, _h, raw in gw.rt.store.iter_entries()
        for ev in decode_events(decode_body(raw).events)
        if isinstance(ev, BidAccepted) and ev.lot_id == "RS"
    )
    assert ledger_bids == gw.rt.router.state.lots["RS"].bid_count == 80
    assert gw.views.lots["RS"].bid_count == 80


# -------------------------------------------------------------------- drain


async def test_drain_closes_with_1001_and_refuses_new(nursery, server):
    staff = await connect_staff(nursery, server)
    (b,) = await lot_with_bidders(staff, "D1", 1)
    bidder = await connect_bidder(nursery, server, b)
    watcher = await connect_watcher(nursery, server)
    sup = await Client.connect(nursery, server.ws_url, token=SUPERVISOR_TOKEN)
    assert isinstance(await bidder.bid(b.key, b.key_id, "D1", 10_000, b.next_seq()), p.Ack)
    with trio.fail_after(15):
        await server.gateway.drain()
    for c in (staff, bidder, watcher, sup):
        with trio.fail_after(5):
            while not c.closed:
                await c.changed.wait()
        assert c.sock._raw.closed.code == 1001
    import trio_websocket

    # the listener is closed (with several edges, the kernel sends new
    # connections to the others): refused at connect, or 503 if one slipped in
    refused = (trio_websocket.HandshakeError, OSError)
    with pytest.raises(refused) as info, trio.fail_after(5):
        auth = [(b"Authorization", f"Bearer {STAFF_TOKEN}".encode())]
        async with trio_websocket.open_websocket_url(server.ws_url, extra_headers=auth):
            raise AssertionError("accepted while draining")
    if isinstance(info.value, trio_websocket.ConnectionRejected):
        assert info.value.status_code == 503
    await wait_for(lambda: not server.gateway.connections)
    _ = time


# ----------------------------------------------------------------- heartbeats


async def _frames(stream: trio.SocketStream, seconds: float) -> list[int]:
    """Read for ``seconds``; the opcodes of the frames the server sent (no replies)."""
    ops: list[int] = []
    buf = b""
    with trio.move_on_after(seconds):
        while True:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                ops.append(-1)  # the server closed the connection
                return ops
            frames, buf = split_frames(buf + chunk)
            ops += [op for op, _body in frames]
    return ops


async def test_a_silent_dead_peer_is_dropped_and_a_talking_peer_is_not_pinged(server_factory):
    """R-3 limits: a peer that answers nothing is dropped within a bounded time
    (about three heartbeat periods); a peer whose frames keep arriving is alive
    by that alone and gets no WebSocket pings at all."""
    period = 1  # seconds (the setting is whole seconds)
    srv = await server_factory({**FAST, "limits.heartbeat_s": period})
    gw = srv.gateway
    port = port_of(srv.ws_url)
    silent = await stalled(port, "", [])  # never reads, never answers a ping
    talker = await stalled(port, "", [])
    await wait_for(lambda: len(gw.connections) == 2)

    async def talk() -> None:
        while True:
            await talker.send_all(masked_frame(json.dumps({"type": "ping", "t": 1}).encode()))
            await trio.sleep(period / 4)

    with trio.fail_after(30):
        async with trio.open_nursery() as inner:
            inner.start_soon(talk)
            ops = await _frames(talker, 4 * period)
            await wait_for(lambda: len(gw.connections) == 1, timeout=10)
            ops += await _frames(talker, 2 * period)  # the one left is the talker
            inner.cancel_scope.cancel()
    assert -1 not in ops, "the talking peer was dropped"
    assert 0x9 not in ops, f"a talking peer was pinged: opcodes {ops}"
    assert ops.count(0x1) >= 10, "the talker's own pings were not answered"
    await silent.aclose()
    await talker.aclose()
