"""The registry's records (msgspec Structs, msgpack in its LMDB store, JSON on
its HTTP API).  Money in fen, time in ns, ``*_seq`` = a ledger seq."""

from __future__ import annotations

from typing import Literal

import msgspec

# Deposit states.  ``paid`` is the registry's own intake (a bank notice not yet
# confirmed); every later state is derived from ledgered facts:
#   confirmed  DepositConfirmed
#   held       the winner's, while the engine tracks its settlement
#   applied    the winner's, applied to the price (LotSold without settlement
#              tracking, or SettlementChanged -> paid)
#   refund_due everyone else's once the lot's outcome is final (LotUnsold,
#              LotTerminated, LotSold / settlement paid or defaulted): the
#              registry's outbox sends RefundDeposit for it, once
#   refunded   DepositRefunded (the engine accepted the refund)
#   refund_refused  the engine refused the registry's RefundDeposit (refund_not_due
#              or another code, in ``reason``): the derivation was wrong -- staff look
#   forfeited  DepositForfeited (default, failed post-qualification, bad reveal)
DepositState = Literal[
    "none",
    "paid",
    "confirmed",
    "held",
    "applied",
    "refund_due",
    "refunded",
    "refund_refused",
    "forfeited",
]
FINAL_DEPOSIT = ("applied", "refunded", "refund_refused", "forfeited")
RelationKind = Literal["employment", "shareholding", "family", "other"]
RELATION_KINDS = ("employment", "shareholding", "family", "other")


class Subject(msgspec.Struct, kw_only=True):
    """A market subject (主体): bidder, supplier, purchaser (or committee member)."""

    subject_id: str
    roles: list[str] = []  # the roles its keys sign as; "bidder" once registered for a lot
    keys: list[str] = []
    lots: int = 0  # lot registrations
    blacklisted: bool = False
    blacklist_reason: str = ""
    first_seq: int = 0


class KeyRecord(msgspec.Struct, kw_only=True):
    key_id: str
    subject_id: str
    public_key_hex: str
    role: str
    seq: int


class LotInfo(msgspec.Struct, kw_only=True):
    lot_id: str
    deposit_fen: int = 0
    settles: bool = False  # the engine tracks the winner's settlement (payment / qualification)
    status: str = "open"  # open | sold | unsold | terminated | settled
    winner_code: str = ""
    final_seq: int = 0  # the entry that made the outcome final (refunds due)
    bidders: int = 0


class Registration(msgspec.Struct, kw_only=True):
    lot_id: str
    bidder_id: str
    code: str
    priority_rank: int = 0
    sme: bool = False
    seq: int = 0
    deposit: DepositState = "none"
    amount_fen: int = 0
    confirmed_seq: int = 0
    settled_seq: int = 0  # the entry that applied, refunded or forfeited it
    reason: str = ""  # a forfeit's reason, or why the engine refused the refund
    due_seq: int = 0  # the entry that made the refund due


class DepositStep(msgspec.Struct, kw_only=True):
    """One deposit state change, in ledger order (the deposit journal)."""

    step_no: int
    lot_id: str
    bidder_id: str
    state: DepositState
    amount_fen: int
    seq: int  # the ledger entry it derives from
    reason: str = ""


class OwnOutcome(msgspec.Struct, array_like=True):
    """A command of the registry's own origin as the ledger recorded it."""

    seq: int
    code: int  # 0 accepted, else the Reject code


class Expert(msgspec.Struct, kw_only=True):
    expert_id: str
    name: str
    specialties: list[str]
    region: str
    available: bool = True
    engaged_days: list[str] = []  # "YYYY-MM-DD" days already engaged
    barred: bool = False  # sanctioned: never drawn


class Relation(msgspec.Struct, kw_only=True):
    """A declared relation of an expert to a market subject (R-6.5.3)."""

    expert_id: str
    subject_id: str
    kind: RelationKind
    until_ns: int = -1  # when it ended; -1 = ongoing
    note: str = ""


class DrawCriteria(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lot_id: str
    specialty: str  # "" = any
    region: str = ""  # "" = nationwide
    region_reason: str = ""  # mandatory when the region is restricted
    count: int = 5
    alternates: int = 2
    day: str = ""  # the review day ("YYYY-MM-DD"): experts engaged that day are out
    avoid_subjects: list[str] = []  # besides the lot's bidders: the purchaser, the agency
    at_ns: int = 0  # the avoidance window ends here (the draw's time)
    operator: str = ""
    supervisor: str = ""


class Draw(msgspec.Struct, kw_only=True):
    """An expert draw (R-6.5.4 / R-6.5.5): committed, then revealed."""

    draw_id: str
    criteria: DrawCriteria
    window_ns: int
    pool: list[str]  # the eligible experts, sorted (the pool snapshot)
    excluded: dict[str, str]  # expert id -> why not in the pool
    pool_hash: str
    seed_hash: str  # committed before the draw
    committed_ns: int
    seed_hex: str = ""  # revealed after it
    drawn: list[str] = []  # the order drawn: count + alternates
    revealed_ns: int = 0
    state: Literal["committed", "revealed"] = "committed"
    drawn_hash: str = ""  # drawn_digest(draw_id, drawn), ledgered with the seed
    commit_cs: int = 0  # the outbox intents carrying CommitExpertDraw / RevealExpertDraw
    reveal_cs: int = 0


class LedgerDraw(msgspec.Struct, kw_only=True):
    """An expert draw as the ledger holds it (ExpertDrawCommitted / ExpertDrawRevealed)."""

    draw_id: str
    lot_id: str
    seed_hash: str
    pool_hash: str
    commit_seq: int
    origin: str = ""
    seed_hex: str = ""
    drawn_hash: str = ""
    reveal_seq: int = 0


class Intent(msgspec.Struct, kw_only=True):
    """A write the registry sends through the gateway, persisted with its
    client_seq BEFORE it is sent."""

    client_seq: int
    frame: dict[str, object]  # the staff frame, JSON-ready (with its "type")
    purpose: str = ""
    state: Literal["pending", "gateway_refused", "reissued"] = "pending"
    reissued_as: int = 0
    detail: str = ""
