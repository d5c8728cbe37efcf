"""Supervision records in the ledger (issue 6, RULES.md §7, §6.6): alert handling,
complaints (质疑 / 投诉), and the deposit payer account for W-F1."""

from __future__ import annotations

from engine.codes import Reject
from engine.messages import (
    AlertHandled,
    AnswerComplaint,
    ComplaintFiled,
    ComplaintHandled,
    ConfirmDeposit,
    FileComplaint,
    HandleAlert,
    decode_command,
    encode_command,
    encode_events,
)
from engine.router import Router
from tests.engine.helpers import SERVICE, STAFF, Market, bidder_origin, one, reject_code


def market() -> Market:
    m = Market()
    m.create_english("L1")
    m.register("L1", "a", deposit=False)
    return m


def test_alert_handling_is_ledgered_for_staff_and_supervisors_only():
    m = market()
    out = m.cmd(HandleAlert, STAFF, None, lot_id="L1", alert_key="W-D1:L1:7", action="escalate")
    assert one(out, AlertHandled).action == "escalate"
    out = m.cmd(
        HandleAlert,
        "supervisor:s1",
        None,
        lot_id="",
        alert_key="W-D2:x",
        action="dismiss",
        note="same family, declared",
    )
    assert one(out, AlertHandled).alert_key == "W-D2:x"
    assert (
        reject_code(
            m.cmd(
                HandleAlert, bidder_origin("a"), None, lot_id="L1", alert_key="k", action="dismiss"
            )
        )
        == Reject.not_authorized
    )
    assert (
        reject_code(m.cmd(HandleAlert, STAFF, None, lot_id="nope", alert_key="k", action="dismiss"))
        == Reject.unknown_lot
    )
    assert (
        reject_code(m.cmd(HandleAlert, STAFF, None, lot_id="L1", alert_key="", action="dismiss"))
        == Reject.invalid_terms
    )


def test_complaints_filed_by_participants_answered_by_supervision():
    m = market()
    out = m.cmd(
        FileComplaint,
        bidder_origin("a"),
        None,
        lot_id="L1",
        complaint_id="c1",
        text="the start price ignores the appraisal",
    )
    filed = one(out, ComplaintFiled)
    assert (filed.complaint_id, filed.by_kind) == ("c1", "bidder")
    assert b"appraisal" not in encode_events(out)  # the text stays in the command
    assert (
        reject_code(
            m.cmd(FileComplaint, "supplier:z", None, lot_id="L1", complaint_id="c1", text="x")
        )
        == Reject.complaint_exists
    )
    assert (
        reject_code(m.cmd(FileComplaint, STAFF, None, lot_id="L1", complaint_id="c2", text="x"))
        == Reject.not_authorized
    )
    assert (
        reject_code(m.cmd(AnswerComplaint, STAFF, None, complaint_id="c9", step="answer"))
        == Reject.unknown_complaint
    )
    for step in ("accept", "answer"):
        out = m.cmd(AnswerComplaint, "supervisor:s1", None, complaint_id="c1", step=step, text="ok")
        assert one(out, ComplaintHandled).step == step
    assert m.state.complaints["c1"].status == "answer"
    replayed = Router()
    for cmd, at in m.log:
        replayed.apply(decode_command(encode_command(cmd)), at)
    assert replayed.state_hash() == m.router.state_hash()


def test_deposit_payer_account_is_ledgered_not_published():
    m = market()
    out = m.cmd(
        ConfirmDeposit,
        SERVICE,
        None,
        lot_id="L1",
        bidder_id="a",
        amount_fen=0,
        payer_account="6222-0000-1111",
    )
    assert b"6222" not in encode_events(out)
    assert reject_code(out) is None
