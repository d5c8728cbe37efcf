"""Client sessions for client_seq (issue 12.3), over real WebSockets and a real
LMDB ledger: sessions of one identity number apart, a reconnect in its session
continues its numbering and its retries, a reused client_seq with another
command is refused by the engine (104), the sessions per identity are bounded,
and a snapshot of the old state layout is not loaded (a full replay instead)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import msgspec
import pytest
import trio
import trio_websocket

from engine.codes import Reject
from engine.messages import CreateLot, decode_command
from engine.state import STATE_VERSION, hash_encoded
from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from ledger.audit import verify_ledger
from ledger.record import decode_body
from ledger.replay import full_replay, recover
from ledger.snapshot import SnapshotRecord, decode_snapshot
from ledger.store import Batch, LedgerStore
from tests.gateway.conftest import (
    SECOND,
    STAFF_TOKEN,
    Server,
    connect_bidder,
    connect_staff,
    lot_with_bidders,
    staff_ok,
)

pytestmark = pytest.mark.timeout(90)
STAFF_ORIGIN = "staff:staff-01"
BIG = 10**12  # above the process-wide staff counter the helpers use (next_staff_seq)


async def staff_in(nursery: trio.Nursery, srv: Server, session: str) -> Client:
    with trio.fail_after(10):
        return await Client.connect(nursery, srv.ws_url, token=STAFF_TOKEN, session=session)


def lot_frame(cs: int, lot: str) -> p.CreateLotFrame:
    now = time.time_ns()
    return p.CreateLotFrame(cs, lot, "english", f"t {lot}", 10_000, 100, now, now + 3600 * SECOND)


def sessions_of(srv: Server, origin: str) -> dict[str, int]:
    known = srv.gateway.rt.router.state.origins[origin].sessions
    return {name: s.high_seq for name, s in known.items()}


async def test_two_clients_of_one_staff_id_number_apart(nursery, server):
    """The probe's case: `pubex admin` numbers from the clock; the demo's staff
    client from 1.  In their own sessions neither makes the other stale."""
    admin = await staff_in(nursery, server, "admin")
    demo = await staff_in(nursery, server, "demo")
    assert (admin.hello.session, admin.hello.client_seq) == ("admin", 0)
    clock = time.time_ns() // 1000
    await staff_ok(admin, lot_frame(clock, "A1"))
    for cs, lot in ((1, "D1"), (2, "D2")):
        await staff_ok(demo, lot_frame(cs, lot))
    await staff_ok(admin, lot_frame(clock + 1, "A2"))
    await staff_ok(demo, lot_frame(3, "D3"))
    assert sessions_of(server, STAFF_ORIGIN) == {"admin": clock + 1, "demo": 3}
    # the ledger says which session sent each command
    store = server.gateway.rt.store
    sent = {}
    for _seq, _prev, _h, raw in store.iter_entries(1, store.last_seq()):
        cmd = decode_command(decode_body(raw).command)
        if isinstance(cmd, CreateLot):
            sent[cmd.lot_id] = (cmd.client_session, cmd.client_seq)
    assert sent == {
        "A1": ("admin", clock),
        "D1": ("demo", 1),
        "D2": ("demo", 2),
        "A2": ("admin", clock + 1),
        "D3": ("demo", 3),
    }


async def test_a_reconnect_in_its_session_continues_and_retries_get_the_original(nursery, server):
    staff = await staff_in(nursery, server, "desk-1")
    [b] = await lot_with_bidders(staff, "S1", 1)
    hello_seq = staff.hello.client_seq
    first = await staff_ok(staff, p.FreezeLotFrame(BIG, "S1", "check"))
    await staff.close()
    again = await staff_in(nursery, server, "desk-1")
    assert (again.hello.session, again.hello.client_seq) == ("desk-1", BIG)
    retry = await again.staff(p.FreezeLotFrame(BIG, "S1", "check"))
    assert isinstance(retry, p.Ack) and retry.retried
    assert (retry.seq, retry.entry_hash) == (first.seq, first.entry_hash)
    await staff_ok(again, p.ResumeLotFrame(BIG + 1, "S1", "done"))
    assert hello_seq == 0
    # a bidder's key has one numbering (its client_seq is signed): a session it
    # names is ignored, so the same signed bid in another "session" is a retry
    with trio.fail_after(10):
        tab = await Client.connect(
            nursery, server.ws_url, key=b.key, key_id=b.key_id, session="tab-1"
        )
    assert tab.hello.session == ""
    cs, text = b.frame("S1", 10_000, 7)
    bid = await tab.request(cs, text)
    assert isinstance(bid, p.Ack) and not bid.retried
    await tab.close()
    with trio.fail_after(10):
        tab = await Client.connect(
            nursery, server.ws_url, key=b.key, key_id=b.key_id, session="tab-2"
        )
    assert tab.hello.client_seq == 7
    retried = await tab.request(cs, text)
    assert isinstance(retried, p.Ack) and retried.retried and retried.seq == bid.seq
    plain = await connect_bidder(nursery, server, b)
    assert plain.hello.client_seq == 7
    stale = await plain.request(*b.frame("S1", 10_100, 1))
    assert isinstance(stale, p.Error) and stale.name == "client_seq_stale"
    assert server.gateway.views.lots["S1"].bid_count == 1


async def test_a_reused_client_seq_with_another_command_is_refused_by_the_engine(nursery, server):
    staff = await staff_in(nursery, server, "desk-2")
    [b] = await lot_with_bidders(staff, "R1", 1)
    bidder = await connect_bidder(nursery, server, b)
    cs, text = b.frame("R1", 10_000)
    assert isinstance(await bidder.request(cs, text), p.Ack)
    other = await bidder.request(cs, b.frame("R1", 20_000, cs)[1])
    assert isinstance(other, p.Error)
    assert (other.code, other.name) == (Reject.client_seq_reused, "client_seq_reused")
    assert other.seq > 0  # an engine refusal: ledgered
    # staff, after a reconnect in the same session: a terminate under a create's seq
    await staff_ok(staff, lot_frame(BIG, "R2"))
    await staff.close()
    staff = await staff_in(nursery, server, "desk-2")
    reused = await staff.staff(p.TerminateLotFrame(BIG, "R1", "x"))
    assert isinstance(reused, p.Error) and reused.code == Reject.client_seq_reused
    router = server.gateway.rt.router
    assert router.state.lots["R1"].status == "open" and router.state.lots["R1"].price_fen == 10_000


async def test_the_least_recently_used_session_is_forgotten_past_the_bound(server_factory, nursery):
    srv = await server_factory({"limits.sessions_per_identity": 2})
    assert srv.gateway.rt.router.state.sessions_per_identity == 2  # ledgered at start
    a = await staff_in(nursery, srv, "a")
    b = await staff_in(nursery, srv, "b")
    await staff_ok(a, lot_frame(1, "B1"))
    await staff_ok(b, lot_frame(1, "B2"))
    await staff_ok(a, lot_frame(2, "B3"))  # "a" used last: "b" is the oldest now
    c = await staff_in(nursery, srv, "c")
    await staff_ok(c, lot_frame(1, "B4"))
    assert sessions_of(srv, STAFF_ORIGIN) == {"a": 2, "c": 1}
    again = await staff_in(nursery, srv, "b")
    assert again.hello.client_seq == 0  # forgotten: it starts afresh
    await staff_ok(again, lot_frame(1, "B5"))
    assert sessions_of(srv, STAFF_ORIGIN) == {"c": 1, "b": 1}


async def test_a_malformed_session_is_refused_at_the_handshake(server):
    for bad in ("has space", "x" * 65, "ünï"):
        url = f"{server.ws_url}?{urlencode({'token': STAFF_TOKEN, 'session': bad})}"
        with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(url):
                raise AssertionError("accepted")
        assert info.value.status_code == 400
    headers = [(b"X-Pubex-Session", b"bad/one")]
    with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionRejected):
        async with trio_websocket.open_websocket_url(
            f"{server.ws_url}?token={STAFF_TOKEN}", extra_headers=headers
        ):
            raise AssertionError("accepted")


def _old_layout(state: bytes) -> bytes:
    """The state as the engine before sessions encoded it: origins -> {high_seq,
    recent: {client_seq: outcome}}, no session bound."""
    doc = msgspec.msgpack.decode(state)
    doc["origins"] = {
        origin: {
            "high_seq": known["sessions"][""]["high_seq"],
            "recent": {cs: rec[0] for cs, rec in known["sessions"][""]["recent"].items()},
        }
        for origin, known in doc["origins"].items()
    }
    del doc["sessions_per_identity"], doc["legacy_retries"]
    return msgspec.msgpack.encode(doc)


async def test_an_old_format_snapshot_is_not_loaded_start_up_replays_in_full(
    server_factory, nursery, tmp_path: Path
):
    data = tmp_path / "old"
    srv = await server_factory({"ledger.snapshot_every_entries": 5}, data_dir=data)
    staff = await connect_staff(nursery, srv)
    await lot_with_bidders(staff, "O1", 2)
    expected = srv.gateway.rt.router.state_hash()
    await srv.stop()

    with LedgerStore.open(data / "ledger") as store:
        snaps = []
        seq = store.last_seq()
        while (found := store.snapshot_at_or_before(seq)) is not None:
            snaps.append(found)
            seq = found[0] - 1
        assert snaps and all(decode_snapshot(d).version == STATE_VERSION for _s, d in snaps)
        # rewrite every snapshot as the old engine wrote it: 3 fields, old layout,
        # a hash that matches those bytes (so only the version tells them apart)
        old = Batch()
        for seq, raw in snaps:
            rec = decode_snapshot(raw)
            state = _old_layout(rec.state)
            legacy = msgspec.msgpack.encode([rec.seq, hash_encoded(state), state])
            old.snapshots.append((seq, legacy))
            assert decode_snapshot(legacy) == SnapshotRecord(rec.seq, hash_encoded(state), state, 1)
        store.commit_batch(old)
        recovered = recover(store)
        assert recovered.state_hash() == full_replay(store).state_hash() == expected
    assert verify_ledger(data).ok

    # and `pubex serve` on that directory starts and goes on
    srv = await server_factory(data_dir=data)
    assert srv.gateway.rt.router.state.lots.keys() >= {"O1"}
    again = await connect_staff(nursery, srv)
    await staff_ok(again, lot_frame(10_000, "O2"))
    await srv.stop()
