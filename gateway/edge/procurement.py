"""Theory of operation: the procurement actions on the wire.

* ``signed_command`` turns a verified ``sealed`` frame's payload into the
  engine command -- sealed tender submit / withdraw / reveal, reverse awards,
  VBP revival and region choices, a committee member's scores -- with the
  origin kind the signing key was registered for (bidder, supplier,
  purchaser, committee).
* ``STAFF_COMMANDS`` maps the staff and registry frames of draws,
  evaluation and settlement to their commands.
* ``PUBLIC_EVENTS``: what watchers and bidders may see of them (bidder codes
  only; a committee's points only in the final result).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.messages import (
    AcceptRevival,
    AnswerComplaint,
    AwardVoided,
    ChooseRegions,
    Command,
    CommitDrawSeed,
    CommitExpertDraw,
    ComplaintFiled,
    ComplaintHandled,
    ConfirmAward,
    ConfirmPayment,
    CreateReauction,
    DeclareDefault,
    DeclineAward,
    DepositForfeited,
    DepositRefunded,
    DrawSeedCommitted,
    DrawSeedRevealed,
    EnterScores,
    EvaluationResult,
    ExpertDrawCommitted,
    ExpertDrawRevealed,
    FileComplaint,
    FinalizeEvaluation,
    HandleAlert,
    QualifyWinner,
    ReauctionCreated,
    RefundDeposit,
    RevealDrawSeed,
    RevealExpertDraw,
    RevealSealed,
    RevivalAccepted,
    RevivalOffered,
    ScoresEntered,
    SettlementChanged,
    ShareConfirmed,
    SharesAwarded,
    SharesOffered,
    SubmitSealed,
    VbpAwarded,
    VolumeAllocated,
    WithdrawSealed,
)
from gateway.wire import protocol as p

# AlertHandled is not public: an alert key names what is under watch (an IP, a
# device); supervisors read decisions from the ledger and the supervision feed.
PUBLIC_EVENTS = (
    DepositRefunded,
    ExpertDrawCommitted,
    ExpertDrawRevealed,
    ComplaintFiled,
    ComplaintHandled,
    DrawSeedCommitted,
    DrawSeedRevealed,
    ScoresEntered,
    EvaluationResult,
    RevivalOffered,
    RevivalAccepted,
    VbpAwarded,
    VolumeAllocated,
    SettlementChanged,
    DepositForfeited,
    AwardVoided,
    ReauctionCreated,
    SharesOffered,
    ShareConfirmed,
    SharesAwarded,
)


def signed_command(origin: str, act: p.SealedPayload) -> Command:
    """The engine command of a verified ``sealed`` frame's payload."""
    seq, lot = act.client_seq, act.lot
    action = act.action
    if action == "submit":
        return SubmitSealed(origin, seq, lot, act.commitment)
    if action == "withdraw":
        return WithdrawSealed(origin, seq, lot)
    if action == "reveal":
        return RevealSealed(origin, seq, lot, act.amount_fen, act.nonce)
    if action == "confirm_award":
        return ConfirmAward(origin, seq, lot)
    if action == "decline_award":
        return DeclineAward(origin, seq, lot)
    if action == "accept_revival":
        return AcceptRevival(origin, seq, lot)
    if action == "choose_regions":
        return ChooseRegions(origin, seq, lot, act.regions)
    if action == "complaint":
        return FileComplaint(origin, seq, lot, act.complaint_id, act.text)
    return EnterScores(origin, seq, lot, act.bidder_code, act.points_centi)


STAFF_COMMANDS: dict[type, Callable[[str, Any], Command]] = {
    p.CommitDrawSeedFrame: lambda o, f: CommitDrawSeed(o, f.client_seq, f.lot, f.seed_hash),
    p.RevealDrawSeedFrame: lambda o, f: RevealDrawSeed(o, f.client_seq, f.lot, f.seed_hex),
    p.FinalizeEvaluationFrame: lambda o, f: FinalizeEvaluation(o, f.client_seq, f.lot),
    p.ConfirmPaymentFrame: lambda o, f: ConfirmPayment(o, f.client_seq, f.lot),
    p.DeclareDefaultFrame: lambda o, f: DeclareDefault(o, f.client_seq, f.lot, f.reason),
    p.QualifyWinnerFrame: lambda o, f: QualifyWinner(o, f.client_seq, f.lot, f.passed, f.reason),
    p.RefundDepositFrame: lambda o, f: RefundDeposit(
        o, f.client_seq, f.lot, f.bidder, f.amount_fen, f.bank_ref
    ),
    p.CommitExpertDrawFrame: lambda o, f: CommitExpertDraw(
        o, f.client_seq, f.draw_id, f.lot, f.seed_hash, f.pool_hash
    ),
    p.RevealExpertDrawFrame: lambda o, f: RevealExpertDraw(
        o, f.client_seq, f.draw_id, f.seed_hex, f.drawn_hash
    ),
    p.HandleAlertFrame: lambda o, f: HandleAlert(
        o, f.client_seq, f.lot, f.alert_key, f.action, f.note
    ),
    p.AnswerComplaintFrame: lambda o, f: AnswerComplaint(
        o, f.client_seq, f.complaint_id, f.step, f.text
    ),
    p.CreateReauctionFrame: lambda o, f: CreateReauction(
        o,
        f.client_seq,
        f.lot,
        f.parent_lot,
        f.stage,
        f.start_price_fen,
        f.start_ns,
        f.end_ns,
        f.increment_fen,
        f.deposit_fen,
    ),
}
