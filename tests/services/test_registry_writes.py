"""The registry's writes through a real gateway over a real WebSocket, as
``service:registry``: a write retried after a restart is applied once (the
engine's retry memory, or the ledger's record read by the follower), a
client_seq overtaken by a later one is reissued, the service role may send
the registry frames only, refunds derived by the projection are ledgered once
across restarts, and an expert draw is committed before it is revealed."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import trio
from nacl.signing import SigningKey

from engine.messages import ConfirmDeposit, DepositConfirmed
from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.registry.projection import SESSION
from services.registry.service import Registry
from services.registry.writer import frame_dict
from tests.gateway.conftest import (
    HOUR_NS,
    SECOND,
    Server,
    connect_staff,
    next_staff_seq,
    staff_ok,
    start_server,
    wait_for,
)

TOKEN = "dev-registry-token"
ORIGIN = "service:registry"


def ledger_of(srv: Server) -> LedgerStore:
    store: LedgerStore = srv.gateway.rt.store
    return store


def applied(srv: Server, lot: str, bidder: str) -> list[int]:
    """Ledger seqs at which the engine confirmed ``bidder``'s deposit on ``lot``."""
    from engine.messages import decode_command, decode_events
    from ledger.record import decode_body

    out = []
    for seq, _prev, _h, raw in ledger_of(srv).iter_entries(1, ledger_of(srv).last_seq()):
        body = decode_body(raw)
        cmd = decode_command(body.command)
        mine = type(cmd) is ConfirmDeposit and (cmd.lot_id, cmd.bidder_id) == (lot, bidder)
        if mine and any(type(e) is DepositConfirmed for e in decode_events(body.events)):
            out.append(seq)
    return out


async def lot_with_deposit(staff: Client, lot: str, deposit_fen: int = 5_000) -> None:
    now = time.time_ns()
    await staff_ok(
        staff,
        p.CreateLotFrame(
            next_staff_seq(),
            lot,
            "english",
            lot,
            100_000,
            1_000,
            now - SECOND,
            now + 2 * HOUR_NS,
            deposit_fen=deposit_fen,
        ),
    )
    await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), lot))


def open_registry(srv: Server, path: Path, *, follow: bool) -> Registry:
    store = ServiceStore.open(path)
    return Registry(store, ledger_of(srv) if follow else None, origin=ORIGIN)


class Writer:
    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def cancel(self) -> None:
        """Stop the writer task and wait until it has (before closing its store)."""
        self.scope.cancel()
        with trio.fail_after(10):
            await self.done.wait()


async def run_writer(nursery: trio.Nursery, reg: Registry, srv: Server) -> Writer:
    w = Writer()

    async def go(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with w.scope:
                await reg.connect(srv.ws_url, TOKEN).run(task_status=task_status)
        finally:
            w.done.set()

    await nursery.start(go)
    assert reg.submitter is not None and reg.submitter.connected, reg.submitter.last_error
    return w


async def pump_parked(reg: Registry) -> None:
    """Until the submitter's pump waits for a wake with nothing in flight: it has
    read the outbox and sent all it was going to (an event, where a sleep of a
    few pump periods only hoped to be long enough)."""
    sub = reg.submitter
    assert sub is not None
    await wait_for(lambda: not sub._inflight and sub._wake.statistics().tasks_waiting == 1)


async def test_a_write_resent_after_a_restart_applies_once(nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, tmp_path / "data")
    staff = await connect_staff(nursery, srv)
    await lot_with_deposit(staff, "L1")
    key = SigningKey.generate()

    # First life: a key and a registration, through the writer.
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    writer = await run_writer(nursery, reg, srv)
    results = await reg.write(
        [
            (p.RegisterKeyFrame(0, "k-a", "alice", bytes(key.verify_key).hex()), "key"),
            (p.RegisterBidderFrame(0, "L1", "alice"), "register"),
        ]
    )
    assert [r.state for r in results] == ["accepted", "accepted"], results
    assert [r.client_seq for r in results] == [1, 2]

    # The confirmation is stored, sent, applied -- and the registry dies before
    # the reply reaches it (here: the frame goes out on another service socket
    # and the first life is cancelled without ever seeing an answer).
    await writer.cancel()
    [cs] = reg.outbox.add([(frame_dict(p.ConfirmDepositFrame(0, "L1", "alice", 5_000)), "dep")])
    raw = await Client.connect(nursery, srv.ws_url, token=TOKEN, session=SESSION)
    assert (raw.hello.role, raw.hello.identity, raw.hello.session) == (
        "service",
        "registry",
        SESSION,
    )
    intent = reg.outbox.intent(cs)
    assert intent is not None
    first = await raw.request(
        cs,
        p.encode_text(
            p.ConfirmDepositFrame(**{k: v for k, v in intent.frame.items() if k != "type"})
        ),
    )
    assert isinstance(first, p.Ack) and not first.retried
    await raw.close()
    reg.store.close()

    # Second life, before its follower has read the new entry: the intent is
    # pending, so it is sent again; the engine answers with the original outcome.
    reg = open_registry(srv, tmp_path / "registry", follow=False)
    assert [i.client_seq for i in reg.outbox.pending()] == [1, 2, cs]  # no follower: unknown
    writer = await run_writer(nursery, reg, srv)
    result = await reg.submitter.wait(cs, 10)  # type: ignore[union-attr]
    assert result.state == "accepted" and result.retried and result.seq == first.seq
    assert applied(srv, "L1", "alice") == [first.seq]
    await writer.cancel()
    reg.store.close()

    # Third life with the follower: the ledger says all three are done, nothing is sent.
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    reg.follower.catch_up()
    assert reg.outbox.pending() == []
    writer = await run_writer(nursery, reg, srv)
    await pump_parked(reg)
    assert reg.submitter is not None and reg.submitter.sent == 0
    assert reg.outbox.result(cs).state == "accepted"
    own = reg.reader.own(cs)
    assert own is not None and (own.seq, own.code) == (first.seq, 0)
    steps = reg.reader.steps()
    assert [(s.bidder_id, s.state, s.amount_fen) for s in steps] == [("alice", "confirmed", 5_000)]
    assert applied(srv, "L1", "alice") == [first.seq]
    await writer.cancel()
    reg.store.close()
    await srv.stop()


async def test_an_overtaken_client_seq_is_reissued_once(nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, tmp_path / "data")
    staff = await connect_staff(nursery, srv)
    await lot_with_deposit(staff, "L2")
    await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), "L2", "bob"))
    await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), "L2", "carol"))

    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    lo, hi = reg.outbox.add(
        [
            (frame_dict(p.ConfirmDepositFrame(0, "L2", "bob", 5_000)), "bob"),
            (frame_dict(p.ConfirmDepositFrame(0, "L2", "carol", 5_000)), "carol"),
        ]
    )
    # The later one got through (sent, then the registry died); the earlier never left.
    raw = await Client.connect(nursery, srv.ws_url, token=TOKEN, session=SESSION)
    ack = await raw.request(hi, p.encode_text(p.ConfirmDepositFrame(hi, "L2", "carol", 5_000)))
    assert isinstance(ack, p.Ack)
    await raw.close()
    reg.follower.catch_up()
    assert [i.client_seq for i in reg.outbox.pending()] == [lo]

    writer = await run_writer(nursery, reg, srv)
    result = await reg.submitter.wait(lo, 10)  # type: ignore[union-attr]
    # lo was refused client_seq_stale (never applied), then carried by a fresh client_seq
    assert result.state == "accepted" and result.client_seq > hi, result
    old = reg.outbox.intent(lo)
    assert old is not None and old.state == "reissued" and old.reissued_as == result.client_seq
    assert len(applied(srv, "L2", "bob")) == 1 and len(applied(srv, "L2", "carol")) == 1
    reg.follower.catch_up()
    assert reg.outbox.pending() == []
    await writer.cancel()
    reg.store.close()
    await srv.stop()


async def test_the_service_role_sends_registry_frames_only(nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, tmp_path / "data")
    svc = await Client.connect(nursery, srv.ws_url, token=TOKEN)
    now = time.time_ns()
    create = p.CreateLotFrame(1, "X", "english", "x", 100, 10, now, now + HOUR_NS)
    refused = await svc.staff(create)
    assert isinstance(refused, p.Error) and refused.name == "not_authorized"
    listed = await svc.staff(p.BlacklistFrame(2, "mallory", "credit"))
    assert isinstance(listed, p.Ack)
    again = await svc.staff(p.UnblacklistFrame(3, "mallory", "cleared"))
    assert isinstance(again, p.Ack)
    staff = await connect_staff(nursery, srv)  # staff keep the registry frames too
    assert isinstance(await staff.staff(p.BlacklistFrame(next_staff_seq(), "eve", "x")), p.Ack)
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    reg.follower.catch_up()
    assert [s.subject_id for s in reg.reader.blacklist()] == ["eve"]
    own2, own3 = reg.reader.own(2), reg.reader.own(3)
    assert own2 is not None and own3 is not None and own2.code == own3.code == 0
    assert reg.reader.own(1) is None  # refused at the gateway: never ledgered
    reg.store.close()
    await srv.stop()


def refunds_of(srv: Server, lot: str) -> list[tuple[int, str]]:
    """(ledger seq, bidder code) of every DepositRefunded on ``lot``."""
    from engine.messages import DepositRefunded, decode_events
    from ledger.record import decode_body

    out = []
    for seq, _prev, _h, raw in ledger_of(srv).iter_entries(1, ledger_of(srv).last_seq()):
        for ev in decode_events(decode_body(raw).events):
            if type(ev) is DepositRefunded and ev.lot_id == lot:
                out.append((seq, ev.bidder_code))
    return out


async def test_refunds_due_are_sent_once_across_restarts(nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, tmp_path / "data")
    staff = await connect_staff(nursery, srv)
    now = time.time_ns()
    create = p.CreateLotFrame(
        next_staff_seq(), "R1", "english", "R1", 100_000, 1_000, now - SECOND, now + 2 * SECOND
    )
    await staff_ok(staff, msgspec.structs.replace(create, deposit_fen=5_000))
    await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), "R1"))

    # First life: registrations and deposits through the writer; the lot closes unsold.
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    writer = await run_writer(nursery, reg, srv)
    frames: list[tuple[p.StaffFrame, str]] = []
    for b in ("alice", "bob"):
        frames += [(p.RegisterBidderFrame(0, "R1", b), b)]
        frames += [(p.ConfirmDepositFrame(0, "R1", b, 5_000), b)]
    assert {r.state for r in await reg.write(frames)} == {"accepted"}
    await wait_for(lambda: srv.gateway.rt.router.state.lots["R1"].status == "unsold")
    await writer.cancel()
    reg.follower.catch_up()
    assert {g.deposit for g in reg.reader.registrations("R1")} == {"refund_due"}
    # the refunds are stored with their client_seqs -- and the registry dies before sending
    queued = reg.outbox.queue_refunds()
    assert len(queued) == 2 and reg.outbox.queue_refunds() == []
    reg.store.close()

    # Second life: nothing is queued twice; the stored intents go out once.
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    reg.follower.catch_up()
    assert reg.outbox.queue_refunds() == []
    assert [i.client_seq for i in reg.outbox.pending()] == queued
    writer = await run_writer(nursery, reg, srv)
    assert reg.queue_refunds() == []
    results = [await reg.submitter.wait(cs, 10) for cs in queued]  # type: ignore[union-attr]
    assert [r.state for r in results] == ["accepted", "accepted"], results
    # the same client_seq once more (a reply lost): the original outcome, not a second refund
    intent = reg.outbox.intent(queued[-1])
    assert intent is not None
    raw = await Client.connect(nursery, srv.ws_url, token=TOKEN, session=SESSION)
    frame = p.RefundDepositFrame(**{k: v for k, v in intent.frame.items() if k != "type"})  # type: ignore[arg-type]
    again = await raw.request(queued[-1], p.encode_text(frame))
    assert isinstance(again, p.Ack) and again.retried
    await raw.close()
    reg.follower.catch_up()
    assert {g.deposit for g in reg.reader.registrations("R1")} == {"refunded"}
    assert reg.reader.due() == [] and reg.outbox.pending() == []
    codes = {g.code for g in reg.reader.registrations("R1")}
    assert sorted(c for _, c in refunds_of(srv, "R1")) == sorted(codes)  # one each
    await writer.cancel()
    reg.store.close()

    # Third life: the ledger holds them all, nothing is sent.
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    reg.follower.catch_up()
    writer = await run_writer(nursery, reg, srv)
    assert reg.queue_refunds() == []
    await pump_parked(reg)
    assert reg.submitter is not None and reg.submitter.sent == 0
    assert len(refunds_of(srv, "R1")) == 2
    await writer.cancel()
    reg.store.close()
    await srv.stop()


async def test_an_expert_draw_is_committed_then_revealed_in_the_ledger(
    nursery, tmp_path: Path
) -> None:
    from engine.messages import ExpertDrawCommitted, ExpertDrawRevealed, decode_events
    from ledger.record import decode_body
    from services.registry.experts import DrawError, rerun_ledgered
    from services.registry.model import DrawCriteria, Expert, Relation
    from services.registry.service import DrawNotLedgered

    srv = await start_server(nursery, tmp_path / "data")
    staff = await connect_staff(nursery, srv)
    await lot_with_deposit(staff, "X1")
    await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), "X1", "acme"))
    reg = open_registry(srv, tmp_path / "registry", follow=True)
    assert reg.follower is not None
    reg.follower.catch_up()
    reg.experts.put_experts(
        [Expert(expert_id=f"e{i}", name="x", specialties=["civil"], region="JS") for i in range(9)]
    )
    reg.experts.add_relations([Relation(expert_id="e3", subject_id="acme", kind="family")])
    writer = await run_writer(nursery, reg, srv)
    c = DrawCriteria(lot_id="X1", specialty="civil", count=3, alternates=2, at_ns=time.time_ns())

    d, committed = await reg.commit_draw(c)
    assert committed.state == "accepted", committed
    assert "e3" not in d.pool and d.drawn == []
    revealed, result = await reg.reveal_draw(d.draw_id, time.time_ns())
    assert result is not None and result.state == "accepted", result
    again, same = await reg.reveal_draw(d.draw_id, time.time_ns())  # a read: nothing sent
    assert same is not None and same.client_seq == result.client_seq
    assert again.drawn == revealed.drawn and len(revealed.drawn) == 5

    # The ledger: the commitment first, then the reveal; a re-run from the
    # ledgered seed gives the same experts.
    order = []
    for seq, _prev, _h, raw in ledger_of(srv).iter_entries(1, ledger_of(srv).last_seq()):
        for ev in decode_events(decode_body(raw).events):
            if isinstance(ev, ExpertDrawCommitted | ExpertDrawRevealed) and ev.draw_id == d.draw_id:
                order.append((seq, type(ev).__name__))
    assert [name for _, name in order] == ["ExpertDrawCommitted", "ExpertDrawRevealed"]
    assert order[0][0] < order[1][0]
    reg.follower.catch_up()
    ledgered = reg.reader.ledger_draw(d.draw_id)
    assert ledgered is not None and (ledgered.commit_seq, ledgered.reveal_seq) == tuple(
        s for s, _ in order
    )
    assert ledgered.seed_hex == revealed.seed_hex and ledgered.origin == ORIGIN
    stored = reg.experts.draw(d.draw_id)
    assert stored is not None and rerun_ledgered(stored, ledgered) == revealed.drawn
    forged = msgspec.structs.replace(stored, pool=stored.pool[1:])
    with pytest.raises(DrawError, match="pool"):
        rerun_ledgered(forged, ledgered)

    # A commitment the engine refused (no such lot): the draw is never made.
    bad, refused = await reg.commit_draw(msgspec.structs.replace(c, lot_id="NOPE"))
    assert refused.state == "refused" and refused.name == "unknown_lot", refused
    with pytest.raises(DrawNotLedgered):
        await reg.reveal_draw(bad.draw_id, time.time_ns())
    assert reg.experts.draw(bad.draw_id).state == "committed"  # type: ignore[union-attr]
    await writer.cancel()
    reg.store.close()
    await srv.stop()
