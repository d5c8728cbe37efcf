"""Supervision records over the wire: a supervisor (read-only otherwise) records
alert decisions and answers complaints; bidders file complaints with signed
frames; everyone else is refused (issue 6, RULES.md §6.6, §7)."""

from __future__ import annotations

from engine.messages import decode_command
from gateway.wire import protocol as p
from ledger.record import decode_body
from tests.gateway.conftest import (
    connect_bidder,
    connect_staff,
    connect_supervisor,
    connect_watcher,
    lot_with_bidders,
    next_staff_seq,
    staff_ok,
    wait_for,
)

NS = 1_000_000_000


def complaint(b, cs: int, cid: str, text: str) -> str:  # type: ignore[no-untyped-def]
    payload = p.SealedPayload(
        p.SEALED_DOMAIN, "complaint", "SV1", b.key_id, cs, complaint_id=cid, text=text
    )
    return p.sealed_frame(b.key, payload)


async def test_supervisor_records_and_complaints(nursery, server):
    staff = await connect_staff(nursery, server)
    [b] = await lot_with_bidders(staff, "SV1", 1)
    supervisor = await connect_supervisor(nursery, server)
    watcher = await connect_watcher(nursery, server)
    bidder = await connect_bidder(nursery, server, b)

    ack = await supervisor.staff(
        p.HandleAlertFrame(1, "SV1", "3.W-D1.SV1.10.0.0.1", "escalate", "same IP")
    )
    assert isinstance(ack, p.Ack), ack
    entry = decode_body(server.gateway.rt.store.get(ack.seq)[2])
    assert decode_command(entry.command).origin.startswith("supervisor:")
    # A supervisor is still read-only for trading and registry commands.
    refused = await supervisor.staff(p.FreezeLotFrame(2, "SV1", "x"))
    assert isinstance(refused, p.Error) and refused.name == "not_authorized"
    frame = p.encode_text(p.HandleAlertFrame(3, "SV1", "k", "dismiss"))
    by_watcher = await watcher.request(3, frame)
    assert isinstance(by_watcher, p.Error) and by_watcher.name == "not_authorized"

    cs = b.next_seq()
    filed = await bidder.request(cs, complaint(b, cs, "c-1", "start price too low"))
    assert isinstance(filed, p.Ack), filed
    cs = b.next_seq()
    dup = await bidder.request(cs, complaint(b, cs, "c-1", "again"))
    assert isinstance(dup, p.Error) and dup.name == "complaint_exists"
    answered = await supervisor.staff(p.AnswerComplaintFrame(4, "c-1", "answer", "appraisal ok"))
    assert isinstance(answered, p.Ack), answered
    await staff_ok(staff, p.AnswerComplaintFrame(next_staff_seq(), "c-1", "reject", "closed"))
    assert server.gateway.rt.router.state.complaints["c-1"].status == "reject"


async def test_registry_refund_and_expert_draw_frames(nursery, server):
    from engine.draw import seed_hash

    staff = await connect_staff(nursery, server)
    [b] = await lot_with_bidders(staff, "RG1", 1, duration_ns=2 * NS)
    early = await staff.staff(p.RefundDepositFrame(next_staff_seq(), "RG1", b.bidder_id, 0))
    assert isinstance(early, p.Error) and early.name == "refund_not_due"
    seed = "42" * 16
    await staff_ok(
        staff, p.CommitExpertDrawFrame(next_staff_seq(), "d-1", "RG1", seed_hash(seed), "00" * 32)
    )
    await staff_ok(staff, p.RevealExpertDrawFrame(next_staff_seq(), "d-1", seed, "11" * 32))
    await wait_for(lambda: server.gateway.rt.router.state.lots["RG1"].status == "unsold")
    await staff_ok(staff, p.RefundDepositFrame(next_staff_seq(), "RG1", b.bidder_id, 0))
