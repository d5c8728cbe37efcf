"""Theory of operation: frames become engine commands here, and only here.

Every side that speaks the wire shares this one translation: the server edge
turns a verified frame into the command it submits, with the origin it has
authenticated.  Field names are the wire's (``docs/protocol.md``); the
engine's commands keep theirs.  Pure functions and tables: no I/O, no state.

* :func:`bid_command` -- a verified ``place_bid`` payload (an ``accept`` of a
  Dutch tick when it names one);
* :func:`signed_command` -- a verified ``sealed`` payload (sealed tenders,
  awards, revivals, regions, complaints, scores);
* :func:`order_command` -- a verified ``order`` payload (the e-mall);
* :func:`staff_command` -- a staff, supervisor or service frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.messages import (
    AcceptPrice,
    AcceptRevival,
    AmendOrder,
    AnswerComplaint,
    BlacklistBidder,
    CancelOrder,
    ChangeIncrement,
    ChooseRegions,
    Command,
    CommitDrawSeed,
    CommitExpertDraw,
    ConfirmAward,
    ConfirmDeposit,
    ConfirmPayment,
    CreateItem,
    CreateLot,
    CreateReauction,
    DeclareDefault,
    DeclineAward,
    DirectPurchase,
    EnterScores,
    FileComplaint,
    FinalizeEvaluation,
    FreezeLot,
    HandleAlert,
    PlaceBid,
    PlaceOrder,
    PublishLot,
    QualifyWinner,
    RefundDeposit,
    RegisterBidder,
    RegisterKey,
    ResumeLot,
    RevealDrawSeed,
    RevealExpertDraw,
    RevealSealed,
    SetItemSession,
    SetPurchaseLimit,
    SetReserve,
    SubmitSealed,
    TerminateLot,
    UnblacklistBidder,
    WithdrawSealed,
)
from gateway.wire import protocol as p


def bid_command(origin: str, bid: p.BidPayload) -> Command:
    """A bid, or the acceptance of a Dutch clock's tick (``tick`` >= 0)."""
    if bid.tick >= 0:
        return AcceptPrice(origin, bid.client_seq, bid.lot, bid.tick, bid.amount_fen)
    return PlaceBid(origin, bid.client_seq, bid.lot, bid.amount_fen)


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


def order_command(origin: str, act: p.OrderPayload) -> Command:
    if act.action == "place":
        return PlaceOrder(
            origin, act.client_seq, act.item, act.side, act.kind, act.price_fen, act.qty
        )
    if act.action == "cancel":
        return CancelOrder(origin, act.client_seq, act.item, act.order_id)
    if act.action == "amend":
        return AmendOrder(origin, act.client_seq, act.item, act.order_id, act.price_fen, act.qty)
    return DirectPurchase(origin, act.client_seq, act.item, act.qty, act.price_fen)


STAFF_COMMANDS: dict[type, Callable[[str, Any], Command]] = {
    # lots and the registry
    p.CreateLotFrame: lambda o, f: CreateLot(
        o,
        f.client_seq,
        f.lot,
        f.mechanism,
        f.title,
        f.start_price_fen,
        f.increment_fen,
        f.start_ns,
        f.end_ns,
        rules=f.rules,
        deposit_fen=f.deposit_fen,
        timed_increment_fen=f.timed_increment_fen,
        floor_fen=f.floor_fen,
        regions=f.regions,
    ),
    p.PublishLotFrame: lambda o, f: PublishLot(o, f.client_seq, f.lot),
    p.SetReserveFrame: lambda o, f: SetReserve(o, f.client_seq, f.lot, f.reserve_fen),
    p.ChangeIncrementFrame: lambda o, f: ChangeIncrement(
        o, f.client_seq, f.lot, f.increment_fen, f.phase
    ),
    p.FreezeLotFrame: lambda o, f: FreezeLot(o, f.client_seq, f.lot, f.reason),
    p.ResumeLotFrame: lambda o, f: ResumeLot(o, f.client_seq, f.lot, f.reason),
    p.TerminateLotFrame: lambda o, f: TerminateLot(o, f.client_seq, f.lot, f.reason),
    p.RegisterKeyFrame: lambda o, f: RegisterKey(
        o, f.client_seq, f.key, f.bidder, f.public_key_hex, f.role
    ),
    p.RegisterBidderFrame: lambda o, f: RegisterBidder(
        o, f.client_seq, f.lot, f.bidder, f.priority_rank, f.sme
    ),
    p.ConfirmDepositFrame: lambda o, f: ConfirmDeposit(
        o, f.client_seq, f.lot, f.bidder, f.amount_fen, f.payer_account
    ),
    p.BlacklistFrame: lambda o, f: BlacklistBidder(o, f.client_seq, f.bidder, f.reason),
    p.UnblacklistFrame: lambda o, f: UnblacklistBidder(o, f.client_seq, f.bidder, f.reason),
    # procurement: draws, evaluation, life after the award, supervision records
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
    # the e-mall's catalogue items
    p.CreateItemFrame: lambda o, f: CreateItem(
        o,
        f.client_seq,
        f.item,
        f.title,
        f.reference_fen,
        f.band_fen,
        f.purchase_limit_qty,
        f.session,
    ),
    p.SetItemSessionFrame: lambda o, f: SetItemSession(o, f.client_seq, f.item, f.session),
    p.SetPurchaseLimitFrame: lambda o, f: SetPurchaseLimit(
        o, f.client_seq, f.item, f.bidder, f.qty
    ),
}


def staff_command(origin: str, frame: p.StaffFrame) -> Command:
    """The command of a staff, supervisor or service frame (``KeyError`` for a
    frame that is not one: the caller has checked its type)."""
    return STAFF_COMMANDS[type(frame)](origin, frame)
