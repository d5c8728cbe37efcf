"""Commands (imperative) and events (past participles) of the engine.

All are frozen msgspec Structs in tagged unions (``type`` field).  Schema
evolution rule: new fields are appended with defaults; tags are never reused.

Every command carries its ``origin`` -- ``"<kind>:<id>"`` with kind one of
``bidder``, ``supplier``, ``purchaser``, ``staff``, ``service`` or
``system`` -- the ``client_session`` the client chose at its handshake ("" =
the default session) and its ``client_seq`` (strictly increasing per (origin,
client_session); 0 only for ``system``).

Events never carry a bidder identity: bidders appear only by their per-lot
bidder code.  No event carries the reserve amount before the lot has closed.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.codes import Reject
from engine.rules import RuleSet

Mechanism = Literal["english", "listing", "dutch", "sealed", "reverse", "vbp"]

# Bumped whenever a change alters what any command produces (events or state):
# a ledger replays exactly only with the engine version that wrote it, so each
# start records it (RuntimeStarted) and verification can tell a mismatch from
# tampering.
ENGINE_VERSION = 7  # 2: Dutch; 3: sealed; 4: reverse; 5: VBP, scoring, draws, settlement, e-mall;
# 6: a Dutch acceptance carries its signed price (AcceptPrice.amount_fen);
# 7: client_seq per (origin, session); a reused client_seq with another command is
# refused client_seq_reused (older ledgers keep answering it as a retry, see Router)
SESSIONS_VERSION = 7  # the first engine version with sessions and client_seq_reused
SESSIONS_PER_IDENTITY = 16  # the default bound of sessions kept per origin
MAX_SESSIONS_PER_IDENTITY = 1024
SESSION_PATTERN = r"[A-Za-z0-9._-]{1,64}"  # a client session id ("" = the default session)


# ---------------------------------------------------------------- commands


class _Sessioned(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The client session, keyword-only so it sorts after every command's own fields
    (``session`` is taken: e-mall trading sessions).

    ``omit_defaults``: a command of the default session encodes without the key, as
    commands did before sessions existed, and older entries decode with ""."""

    client_session: str = ""


class Command(_Sessioned, frozen=True, tag_field="type", gc=False):
    origin: str
    client_seq: int


class Tick(Command, frozen=True, tag="tick"):
    """Carries nothing but the sequencer's time; lets due deadlines fire."""


class SuspendOverdue(Command, frozen=True, tag="suspend_overdue"):
    """Ledgered at start-up: lots whose deadline passed while the server was
    down are suspended (RULES.md R-1.8.1, system failure), not closed."""

    reason: str = "system_failure"


class RuntimeStarted(Command, frozen=True, tag="runtime_started"):
    """Ledgered by the runtime at each start: how its clock runs (sandbox only
    may accelerate), so a replay knows what the recorded times mean."""

    accelerate: int = 1
    sandbox: bool = False
    engine_version: int = 0  # ENGINE_VERSION of the build that wrote what follows
    # [limits] sessions_per_identity of this run (0 = the engine's default): ledgered,
    # so a replay bounds sessions exactly as the run did
    sessions_per_identity: int = 0


class RegisterKey(Command, frozen=True, tag="register_key"):
    """A bidder's Ed25519 public key (hex) under a key id, from the registry."""

    key_id: str
    bidder_id: str
    public_key_hex: str
    # The market role the key signs as (its origin kind): bidder, supplier,
    # purchaser or committee (an evaluation-committee member).
    role: str = "bidder"


class RegionDemand(msgspec.Struct, frozen=True, array_like=True):
    """VBP (R-4.3): a supply region and its reported demand, in units."""

    region: str
    demand_units: int


class CreateLot(Command, frozen=True, tag="create_lot"):
    lot_id: str
    mechanism: Mechanism
    title: str
    start_price_fen: int
    increment_fen: int
    start_ns: int
    end_ns: int
    rules: RuleSet = RuleSet()
    deposit_fen: int = 0
    timed_increment_fen: int = 0  # listing: the timed phase's increment (0 = same)
    floor_fen: int = 0  # dutch: the public floor (increment_fen is the step down)
    regions: tuple[RegionDemand, ...] = ()  # vbp: supply regions and their demand


class PublishLot(Command, frozen=True, tag="publish_lot"):
    lot_id: str


class SetReserve(Command, frozen=True, tag="set_reserve"):
    lot_id: str
    reserve_fen: int


class ChangeIncrement(Command, frozen=True, tag="change_increment"):
    lot_id: str
    increment_fen: int
    phase: Literal["main", "timed"] = "main"


class RegisterBidder(Command, frozen=True, tag="register_bidder"):
    lot_id: str
    bidder_id: str
    priority_rank: int = 0  # R-5.2.3(d): 1 is the highest rank; 0 = no priority right
    sme: bool = False  # a small or micro firm (price deduction in reverse ranking)


class ConfirmDeposit(Command, frozen=True, tag="confirm_deposit"):
    lot_id: str
    bidder_id: str
    amount_fen: int
    # The paying account (bank account or payment-system id), for supervision's
    # W-F1 (deposits of several bidders from one account); never in public events.
    payer_account: str = ""


class BlacklistBidder(Command, frozen=True, tag="blacklist_bidder"):
    bidder_id: str
    reason: str


class UnblacklistBidder(Command, frozen=True, tag="unblacklist_bidder"):
    bidder_id: str
    reason: str


class PlaceBid(Command, frozen=True, tag="place_bid"):
    """The bidder is the origin; a bid never names another bidder."""

    lot_id: str
    amount_fen: int


class AcceptPrice(Command, frozen=True, tag="accept_price"):
    """Dutch clock: the bidder (the origin) accepts the price of tick ``tick``;
    a stale tick is refused (RULES.md R-2.5.5).  ``amount_fen`` is the price the
    bidder signed: it must be the tick's (-1: not given, ledgers written before
    it was signed)."""

    lot_id: str
    tick: int
    amount_fen: int = -1


class SubmitSealed(Command, frozen=True, tag="submit_sealed"):
    """Sealed tender: the bidder's commitment, ``seal_commitment(lot, amount,
    nonce)`` in hex.  A later submission before the deadline replaces it."""

    lot_id: str
    commitment: str


class WithdrawSealed(Command, frozen=True, tag="withdraw_sealed"):
    lot_id: str


class RevealSealed(Command, frozen=True, tag="reveal_sealed"):
    """Opens the bidder's commitment during the decryption window."""

    lot_id: str
    amount_fen: int
    nonce: str


class ConfirmAward(Command, frozen=True, tag="confirm_award"):
    """Reverse price competition: the awarded supplier (the origin) confirms."""

    lot_id: str


class DeclineAward(Command, frozen=True, tag="decline_award"):
    """The awarded supplier gives up: the award passes to the next rank (R-3.2.3)."""

    lot_id: str


class FreezeLot(Command, frozen=True, tag="freeze_lot"):
    lot_id: str
    reason: str


class ResumeLot(Command, frozen=True, tag="resume_lot"):
    lot_id: str
    reason: str


class TerminateLot(Command, frozen=True, tag="terminate_lot"):
    lot_id: str
    reason: str


# -- draws, evaluation, procurement, after the hammer


class CommitDrawSeed(Command, frozen=True, tag="commit_draw_seed"):
    """Staff commit the hash of a secret seed for the lot's draws (ties,
    lotteries) before the submission deadline; revealed after it."""

    lot_id: str
    seed_hash: str  # hex BLAKE2b-256 of the seed's bytes (engine.draw.seed_hash)


class RevealDrawSeed(Command, frozen=True, tag="reveal_draw_seed"):
    lot_id: str
    seed_hex: str


class EnterScores(Command, frozen=True, tag="enter_scores"):
    """An evaluation-committee member's non-price points for one bid
    (R-6.4.1), in hundredths of a point; a later entry replaces it."""

    lot_id: str
    bidder_code: str
    points_centi: int


class FinalizeEvaluation(Command, frozen=True, tag="finalize_evaluation"):
    lot_id: str


class AcceptRevival(Command, frozen=True, tag="accept_revival"):
    """VBP round 10+ rule 2: a firm that failed rule 1 accepts the revival price."""

    lot_id: str


class ChooseRegions(Command, frozen=True, tag="choose_regions"):
    """VBP R-4.3.2: a winner's supply-region preferences, best first."""

    lot_id: str
    regions: tuple[str, ...]


class ConfirmPayment(Command, frozen=True, tag="confirm_payment"):
    """The winner paid the balance (R-5.2.6)."""

    lot_id: str


class DeclareDefault(Command, frozen=True, tag="declare_default"):
    """The winner defaulted (悔拍, R-5.2.6): deposit forfeited, barred from the re-auction."""

    lot_id: str
    reason: str


class QualifyWinner(Command, frozen=True, tag="qualify_winner"):
    """Post-qualification (资格后审, R-1.2.4): the winner's documents passed or not."""

    lot_id: str
    passed: bool
    reason: str = ""


class CreateReauction(Command, frozen=True, tag="create_reauction"):
    """R-5.2.7: a second auction of an unsold or defaulted lot (start cut by at
    most ``rules.reauction_max_cut_pct``), then a sale window (变卖) at the
    second auction's start price."""

    lot_id: str
    parent_lot_id: str
    stage: Literal["second", "sale"]
    start_price_fen: int
    start_ns: int
    end_ns: int
    increment_fen: int = 0  # 0 = the parent's
    deposit_fen: int = -1  # -1 = the parent's


# -- e-mall order book (engine.emall)

OrderSide = Literal["buy", "sell"]


class CreateItem(Command, frozen=True, tag="create_item"):
    """E-mall: a catalogue item with its own order book (staff).  0 = none for
    the reference price, the band and the default single-purchase limit."""

    item_id: str
    title: str
    reference_fen: int = 0
    band_fen: int = 0
    purchase_limit_qty: int = 0
    session: str = "call"  # call | open | halted | closed


class SetItemSession(Command, frozen=True, tag="set_item_session"):
    """Staff: open (from the call: the opening uncross), halt or close trading."""

    item_id: str
    session: str


class SetPurchaseLimit(Command, frozen=True, tag="set_purchase_limit"):
    """Registry: a purchaser's single-purchase limit on an item (R-3.4.1)."""

    item_id: str
    purchaser_id: str
    qty: int


class PlaceOrder(Command, frozen=True, tag="place_order"):
    """A trader's order (the origin owns it; its id is this command's ledger seq)."""

    item_id: str
    side: str  # buy | sell
    kind: str  # limit | market | ioc | fok
    price_fen: int  # 0 for a market order
    qty: int


class CancelOrder(Command, frozen=True, tag="cancel_order"):
    item_id: str
    order_id: int


class AmendOrder(Command, frozen=True, tag="amend_order"):
    """0 = unchanged; a price change or a quantity increase loses time priority."""

    item_id: str
    order_id: int
    price_fen: int = 0
    qty: int = 0


class DirectPurchase(Command, frozen=True, tag="direct_purchase"):
    """直购 (R-3.4.1): a market buy, or an IOC buy up to ``max_price_fen``."""

    item_id: str
    qty: int
    max_price_fen: int = 0


# -- supervision records


class HandleAlert(Command, frozen=True, tag="handle_alert"):
    """Staff's or a supervisor's decision on a supervision alert, ledgered."""

    lot_id: str  # "" for a platform-wide alert
    alert_key: str  # the supervision service's stable key of the alert
    action: Literal["acknowledge", "dismiss", "escalate"]
    note: str = ""


class FileComplaint(Command, frozen=True, tag="file_complaint"):
    """A 质疑 / 投诉 by a market participant about a lot."""

    lot_id: str
    complaint_id: str
    text: str


class RefundDeposit(Command, frozen=True, tag="refund_deposit"):
    """The registry returns a deposit (R-5.2.5: losers after the close), once."""

    lot_id: str
    bidder_id: str
    amount_fen: int
    bank_ref: str = ""  # the payment system's reference (ledgered, not published)


class CommitExpertDraw(Command, frozen=True, tag="commit_expert_draw"):
    """The registry commits an expert draw before making it (R-6.5): the hash of
    its secret seed and of the filtered candidate pool."""

    draw_id: str
    lot_id: str
    seed_hash: str
    pool_hash: str


class RevealExpertDraw(Command, frozen=True, tag="reveal_expert_draw"):
    """The seed, after the draw, and the hash of who was drawn: anyone re-runs it."""

    draw_id: str
    seed_hex: str
    drawn_hash: str


class AnswerComplaint(Command, frozen=True, tag="answer_complaint"):
    complaint_id: str
    step: Literal["accept", "answer", "reject", "escalate"]
    text: str = ""


AnyCommand = (
    Tick
    | SuspendOverdue
    | RuntimeStarted
    | RegisterKey
    | CreateLot
    | PublishLot
    | SetReserve
    | ChangeIncrement
    | RegisterBidder
    | ConfirmDeposit
    | BlacklistBidder
    | UnblacklistBidder
    | PlaceBid
    | AcceptPrice
    | SubmitSealed
    | WithdrawSealed
    | RevealSealed
    | ConfirmAward
    | DeclineAward
    | FreezeLot
    | ResumeLot
    | TerminateLot
    | CommitDrawSeed
    | RevealDrawSeed
    | EnterScores
    | FinalizeEvaluation
    | AcceptRevival
    | ChooseRegions
    | ConfirmPayment
    | DeclareDefault
    | QualifyWinner
    | CreateReauction
    | CreateItem
    | SetItemSession
    | SetPurchaseLimit
    | PlaceOrder
    | CancelOrder
    | AmendOrder
    | DirectPurchase
    | HandleAlert
    | FileComplaint
    | AnswerComplaint
    | RefundDeposit
    | CommitExpertDraw
    | RevealExpertDraw
)

# ------------------------------------------------------------------ events


class Event(msgspec.Struct, frozen=True, tag_field="type", gc=False):
    lot_id: str


class CommandRejected(Event, frozen=True, tag="rejected"):
    code: Reject
    detail: str = ""
    bidder_code: str = ""
    amount_fen: int = 0


class CommandRetried(Event, frozen=True, tag="retried"):
    """A retry of an already-applied command: its original outcome, not a new effect."""

    client_seq: int
    original_seq: int
    code: int  # 0 = it was accepted, else the Reject code it got


class RuntimeStartedEvent(Event, frozen=True, tag="runtime_started"):
    accelerate: int
    sandbox: bool
    engine_version: int = 0


class KeyRegistered(Event, frozen=True, tag="key_registered"):
    key_id: str


class LotCreated(Event, frozen=True, tag="lot_created"):
    mechanism: Mechanism
    title: str
    start_price_fen: int
    increment_fen: int
    timed_increment_fen: int
    start_ns: int
    end_ns: int
    deposit_fen: int
    rules: RuleSet
    floor_fen: int = 0


class LotPublished(Event, frozen=True, tag="lot_published"):
    start_ns: int
    end_ns: int


class LotOpened(Event, frozen=True, tag="lot_opened"):
    at_ns: int
    phase: str
    end_ns: int


class ReserveEntered(Event, frozen=True, tag="reserve_entered"):
    """Only that a reserve exists -- never its amount (R-0.5)."""


class IncrementChanged(Event, frozen=True, tag="increment_changed"):
    increment_fen: int
    phase: str


class BidderRegistered(Event, frozen=True, tag="bidder_registered"):
    bidder_code: str
    priority_rank: int


class DepositConfirmed(Event, frozen=True, tag="deposit_confirmed"):
    bidder_code: str


class BlacklistChanged(Event, frozen=True, tag="blacklist_changed"):
    listed: bool
    bidder_codes: tuple[str, ...]  # the subject's codes in the lots it is registered for


class BidAccepted(Event, frozen=True, tag="bid_accepted"):
    bidder_code: str
    amount_fen: int
    bid_no: int
    priority_match: bool = False


class PriceTicked(Event, frozen=True, tag="price_ticked"):
    """Dutch clock: tick ``tick`` offers ``price_fen`` from ``at_ns``."""

    tick: int
    price_fen: int
    at_ns: int
    next_tick_ns: int


class SealedBidReceived(Event, frozen=True, tag="sealed_bid_received"):
    """Only that a bid (or its replacement) arrived -- never its amount."""

    bidder_code: str
    version: int


class SealedBidWithdrawn(Event, frozen=True, tag="sealed_bid_withdrawn"):
    bidder_code: str


class RevealRecorded(Event, frozen=True, tag="reveal_recorded"):
    """A reveal matched its commitment; the amount stays unpublished until the
    window ends, so nobody reveals after seeing another's amount."""

    bidder_code: str


class OpeningEntry(msgspec.Struct, frozen=True, array_like=True):
    bidder_code: str
    amount_fen: int  # 0 when never revealed
    valid: bool
    reason: str  # "" | not_revealed | reveal_mismatch | below_start | above_ceiling


class OpeningRecord(Event, frozen=True, tag="opening_record"):
    """Published to all when the decryption window ends (R-6.3.3): every bid."""

    entries: tuple[OpeningEntry, ...]
    valid_count: int
    average_fen: int
    method: str


class AwardOffered(Event, frozen=True, tag="award_offered"):
    """Reverse price competition: rank ``rank`` is offered the award at its
    quote, to confirm by ``until_ns`` (R-3.2.3)."""

    bidder_code: str
    price_fen: int
    rank: int
    until_ns: int


class AwardLapsed(Event, frozen=True, tag="award_lapsed"):
    bidder_code: str
    rank: int
    reason: Literal["declined", "not_confirmed"]


class LotExtended(Event, frozen=True, tag="lot_extended"):
    end_ns: int


class PhaseChanged(Event, frozen=True, tag="phase_changed"):
    phase: str
    at_ns: int
    end_ns: int


class LotFrozen(Event, frozen=True, tag="lot_frozen"):
    reason: str
    at_ns: int
    remaining_ns: int
    system: bool = False


class LotResumed(Event, frozen=True, tag="lot_resumed"):
    reason: str
    phase: str
    end_ns: int


class LotTerminated(Event, frozen=True, tag="lot_terminated"):
    reason: str
    at_ns: int


class LotSold(Event, frozen=True, tag="lot_sold"):
    bidder_code: str
    price_fen: int
    closed_at_ns: int
    reserve_fen: int  # disclosed only now that the lot has closed (0 = no reserve)


UnsoldReason = Literal[
    "no_bids", "below_reserve", "too_few_valid_bids", "all_declined", "no_winner", "voided"
]


class LotUnsold(Event, frozen=True, tag="lot_unsold"):
    reason: UnsoldReason
    closed_at_ns: int
    price_fen: int
    reserve_fen: int


# -- draws, evaluation, procurement, after the hammer


class DrawSeedCommitted(Event, frozen=True, tag="draw_seed_committed"):
    seed_hash: str


class DrawSeedRevealed(Event, frozen=True, tag="draw_seed_revealed"):
    """Anyone can now re-run the draw: key = BLAKE2b(seed | lot | bidder code)."""

    seed_hex: str


class ScoresEntered(Event, frozen=True, tag="scores_entered"):
    """A committee entry arrived for a bid (its points stay unpublished until the result)."""

    bidder_code: str
    members: int  # members who have scored this bid so far


class ScoreEntry(msgspec.Struct, frozen=True, array_like=True):
    bidder_code: str
    price_fen: int
    price_points_milli: int  # (lowest / price) x weight, in thousandths, rounded half up
    other_points_milli: int  # the committee's mean, in thousandths
    total_points_milli: int
    rank: int


class EvaluationResult(Event, frozen=True, tag="evaluation_result"):
    """R-6.4.1: the ranking (score desc, then price asc, then the draw)."""

    entries: tuple[ScoreEntry, ...]
    tie_rule: str  # submission_order | draw | draw_seed_not_revealed


class VbpWinner(msgspec.Struct, frozen=True, array_like=True):
    bidder_code: str
    price: int  # the unit comparable price it supplies at
    basis: str  # rule1 | low_price | cut50 | revival
    rank: int


class RevivalOffered(Event, frozen=True, tag="revival_offered"):
    """R-4.2 round 10 rule 2: these firms may win by accepting ``price``."""

    price: int
    bidder_codes: tuple[str, ...]
    until_ns: int


class RevivalAccepted(Event, frozen=True, tag="revival_accepted"):
    bidder_code: str


class VbpAwarded(Event, frozen=True, tag="vbp_awarded"):
    winners: tuple[VbpWinner, ...]
    qualified: int  # N valid firms
    max_winners: int
    share_pct: int  # agreed share of reported demand
    regions_until_ns: int  # region choices close then


class RegionAward(msgspec.Struct, frozen=True, array_like=True):
    region: str
    bidder_code: str
    units: int


class VolumeAllocated(Event, frozen=True, tag="volume_allocated"):
    agreed_units: int
    allocations: tuple[RegionAward, ...]


class SettlementChanged(Event, frozen=True, tag="settlement_changed"):
    """After the hammer: awaiting_qualification | awaiting_payment | paid | defaulted | voided."""

    bidder_code: str
    state: str
    until_ns: int  # -1 = no deadline


class DepositForfeited(Event, frozen=True, tag="deposit_forfeited"):
    """For the registry to act on (R-1.2.4, R-5.2.6, R-6.3.2)."""

    bidder_code: str
    amount_fen: int
    reason: str


class AwardVoided(Event, frozen=True, tag="award_voided"):
    bidder_code: str
    reason: str
    passes_to: str  # the next bidder code offered the award, or ""


class ShareOffer(msgspec.Struct, frozen=True, array_like=True):
    bidder_code: str
    share_pct: int
    rank: int
    price_fen: int  # its quote: the contract price


class SharesOffered(Event, frozen=True, tag="shares_offered"):
    """R-3.3.5 / R-3.3.6: a confirmation round of the multi-winner split."""

    offers: tuple[ShareOffer, ...]
    until_ns: int


class ShareConfirmed(Event, frozen=True, tag="share_confirmed"):
    bidder_code: str
    share_pct: int


class SharesAwarded(Event, frozen=True, tag="shares_awarded"):
    awards: tuple[ShareOffer, ...]
    unplaced_pct: int  # shares no remaining rank took (0 when all placed)


class ReauctionCreated(Event, frozen=True, tag="reauction_created"):
    parent_lot_id: str
    stage: str
    start_price_fen: int
    barred: int  # how many defaulters may not take part


# -- e-mall order book events: ``lot_id`` is the item id; traders appear only by
# their per-item code, orders by id (the ledger seq of the placing command)


class ItemCreated(Event, frozen=True, tag="item_created"):
    title: str
    reference_fen: int
    band_fen: int
    purchase_limit_qty: int
    session: str


class ItemSessionChanged(Event, frozen=True, tag="item_session_changed"):
    session: str
    at_ns: int


class PurchaseLimitSet(Event, frozen=True, tag="purchase_limit_set"):
    trader_code: str
    qty: int


class OrderPlaced(Event, frozen=True, tag="order_placed"):
    order_id: int
    trader_code: str
    side: str
    kind: str
    price_fen: int
    qty: int
    purchase: bool = False  # a direct purchase


class OrderFilled(Event, frozen=True, tag="order_filled"):
    """One trade: at the resting (maker) order's price; aggressor "none" in the uncross."""

    maker_id: int
    taker_id: int
    price_fen: int
    qty: int
    aggressor: str


class OrderCancelled(Event, frozen=True, tag="order_cancelled"):
    order_id: int
    qty: int  # the open quantity cancelled
    reason: str  # requested | self_trade | unfilled


class OrderAmended(Event, frozen=True, tag="order_amended"):
    order_id: int
    price_fen: int
    qty: int  # the new open quantity
    kept_priority: bool


class AuctionUncrossed(Event, frozen=True, tag="auction_uncrossed"):
    price_fen: int
    qty: int


class DepositRefunded(Event, frozen=True, tag="deposit_refunded"):
    bidder_code: str
    amount_fen: int


class ExpertDrawCommitted(Event, frozen=True, tag="expert_draw_committed"):
    draw_id: str
    seed_hash: str
    pool_hash: str


class ExpertDrawRevealed(Event, frozen=True, tag="expert_draw_revealed"):
    draw_id: str
    seed_hex: str
    drawn_hash: str


class AlertHandled(Event, frozen=True, tag="alert_handled"):
    alert_key: str
    action: str


class ComplaintFiled(Event, frozen=True, tag="complaint_filed"):
    """Public: that a complaint exists (its text stays with the supervisors)."""

    complaint_id: str
    by_kind: str  # bidder | supplier | purchaser


class ComplaintHandled(Event, frozen=True, tag="complaint_handled"):
    complaint_id: str
    step: str


AnyEvent = (
    CommandRejected
    | CommandRetried
    | RuntimeStartedEvent
    | KeyRegistered
    | LotCreated
    | LotPublished
    | LotOpened
    | ReserveEntered
    | IncrementChanged
    | BidderRegistered
    | DepositConfirmed
    | BlacklistChanged
    | BidAccepted
    | LotExtended
    | AwardOffered
    | AwardLapsed
    | PriceTicked
    | SealedBidReceived
    | SealedBidWithdrawn
    | RevealRecorded
    | OpeningRecord
    | PhaseChanged
    | LotFrozen
    | LotResumed
    | LotTerminated
    | LotSold
    | LotUnsold
    | DrawSeedCommitted
    | DrawSeedRevealed
    | ScoresEntered
    | EvaluationResult
    | RevivalOffered
    | RevivalAccepted
    | VbpAwarded
    | VolumeAllocated
    | SettlementChanged
    | DepositForfeited
    | AwardVoided
    | ReauctionCreated
    | ItemCreated
    | ItemSessionChanged
    | PurchaseLimitSet
    | OrderPlaced
    | OrderFilled
    | OrderCancelled
    | OrderAmended
    | AuctionUncrossed
    | SharesOffered
    | ShareConfirmed
    | SharesAwarded
    | AlertHandled
    | ComplaintFiled
    | ComplaintHandled
    | DepositRefunded
    | ExpertDrawCommitted
    | ExpertDrawRevealed
)

# One codec per process, reused (msgspec's advice: never build them per call).
_command_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(AnyCommand)
_events_decoder = msgspec.msgpack.Decoder(list[AnyEvent])


def encode_command(cmd: Command) -> bytes:
    return _command_encoder.encode(cmd)


def decode_command(data: bytes) -> AnyCommand:
    cmd: AnyCommand = _command_decoder.decode(data)
    return cmd


def encode_events(events: list[Event]) -> bytes:
    return _command_encoder.encode(events)


def decode_events(data: bytes) -> list[AnyEvent]:
    events: list[AnyEvent] = _events_decoder.decode(data)
    return events
