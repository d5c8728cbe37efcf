"""The engine's state as plain msgspec Structs.

The whole state is one ``EngineState`` value, so a snapshot is its msgpack
encoding and the state hash is a BLAKE2b of that encoding.  Determinism
rules for everything kept here: no sets (their order depends on
PYTHONHASHSEED), no floats, dicts only filled in command order.
"""

from __future__ import annotations

import hashlib

import msgspec

from engine.emall import Item, dec_hook, enc_hook
from engine.messages import SESSIONS_PER_IDENTITY
from engine.rules import RuleSet

# The layout of EngineState (and so of snapshots and the state hash).  A snapshot
# records the version it was written with; one of another version is never loaded:
# start-up replays the ledger from genesis instead (ledger.replay.restore_snapshot).
# 1: before versioning; 2: client_seq per (origin, session), payload digests.
STATE_VERSION = 2

# Lot statuses.
DRAFT = "draft"
PUBLISHED = "published"  # announced, bidding not yet started
OPEN = "open"
FROZEN = "frozen"
SOLD = "sold"
UNSOLD = "unsold"
TERMINATED = "terminated"
FINAL = frozenset({SOLD, UNSOLD, TERMINATED})

# Phases (within OPEN; kept while FROZEN so resume knows where it was).
PENDING = "pending"
BIDDING = "bidding"  # English
LISTING = "listing"
QUOTE_FROZEN = "quote_frozen"
WAIT = "wait"
TIMED = "timed"
DESCENDING = "descending"  # Dutch
SUBMISSION = "submission"  # sealed
REVEAL = "reveal"  # sealed: the decryption window
QUOTING = "quoting"  # reverse
CONFIRMING = "confirming"  # reverse: the award waits for its supplier
DRAW = "draw"  # sealed: the evaluation waits for the committed draw seed
EVALUATION = "evaluation"  # sealed scoring: the committee enters scores
REVIVAL = "revival"  # vbp: rule-2 acceptances
REGIONS = "regions"  # vbp: winners choose supply regions
SALE = "sale"  # re-auction 变卖: waiting for the first bid of the sale window

# Settlement after the hammer (Lot.settlement).
AWAITING_QUALIFICATION = "awaiting_qualification"
AWAITING_PAYMENT = "awaiting_payment"
PAID = "paid"
DEFAULTED = "defaulted"
VOIDED = "voided"


class Bidder(msgspec.Struct):
    code: str
    priority_rank: int = 0
    deposit_confirmed: bool = False
    last_bid_ns: int = -1
    best_fen: int = 0  # reverse: this supplier's lowest quote
    best_seq: int = 0  # reverse: the applied count of that quote (ties: earlier wins)
    award_lapsed: bool = False  # reverse: declined or let the award lapse
    sme: bool = False  # small / micro firm
    deposit_settled: str = ""  # "" | forfeited | refunded (the registry's refund, once)


class SealedBid(msgspec.Struct):
    commitment: str
    version: int  # submissions so far (a replacement bumps it)
    submitted_seq: int  # the applied count of the final submission: ties go to the earlier
    amount_fen: int = 0  # known only after a matching reveal
    revealed: bool = False
    invalid_reason: str = ""


class Winner(msgspec.Struct, array_like=True):
    """VBP: one winner, its price and basis, and its supply regions' units."""

    bidder_id: str
    code: str
    price: int
    basis: str
    units: int = 0


class Lot(msgspec.Struct):
    lot_id: str
    mechanism: str
    title: str
    rules: RuleSet
    start_price_fen: int
    increment_fen: int
    timed_increment_fen: int
    deposit_fen: int
    start_ns: int
    end_ns: int  # the projected close of the current phase (moves with extensions)
    status: str = DRAFT
    phase: str = PENDING
    deadline_ns: int = -1  # the next time-driven transition; -1 = none
    reserve_fen: int = 0  # 0 = no reserve (a reserve is always >= start price > 0)
    frozen_at_ns: int = -1
    frozen_remaining_ns: int = -1
    bidders: dict[str, Bidder] = msgspec.field(default_factory=dict)
    leader_id: str = ""
    leader_code: str = ""
    leader_rank: int = 0
    price_fen: int = 0
    bid_count: int = 0
    timed_bid_count: int = 0
    floor_fen: int = 0  # dutch
    tick: int = -1  # dutch: the current tick (-1 before the clock starts)
    award_rank: int = 0  # reverse: the rank currently offered the award
    sealed: dict[str, SealedBid] = msgspec.field(default_factory=dict)  # bidder id -> bid
    # Draws (seed committed before the deadline, revealed after).
    draw_seed_hash: str = ""
    draw_seed: str = ""
    # Comprehensive scoring: bidder id -> committee member -> points (hundredths).
    scores: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    # Volume-based procurement.
    regions: dict[str, int] = msgspec.field(default_factory=dict)  # region -> demand units
    winners: list[Winner] = msgspec.field(default_factory=list)
    revival_price: int = 0
    revival_candidates: list[str] = msgspec.field(default_factory=list)  # bidder ids
    revived: list[str] = msgspec.field(default_factory=list)  # bidder ids, in acceptance order
    region_prefs: dict[str, list[str]] = msgspec.field(default_factory=dict)  # bidder id ->
    # After the hammer.
    settlement: str = ""
    award_order: list[str] = msgspec.field(default_factory=list)  # sealed: ranked bidder ids
    barred: list[str] = msgspec.field(default_factory=list)  # defaulters of the chain
    parent_lot_id: str = ""
    stage: str = ""  # "" | second | sale
    # Multi-winner reverse: bidder id -> share % offered / confirmed.
    shares_offered: dict[str, int] = msgspec.field(default_factory=dict)
    shares_confirmed: dict[str, int] = msgspec.field(default_factory=dict)
    shares_pending: list[int] = msgspec.field(default_factory=list)  # lapsed, to re-offer
    shares_unplaced: int = 0  # % no remaining rank could take
    next_rank: int = 0  # the next rank a lapsed share goes to (1-based)


class SessionState(msgspec.Struct):
    """One (origin, session)'s client_seq and retry memory."""

    high_seq: int = 0
    last_used: int = 0  # the applied count of its creation or latest new client_seq
    # client_seq -> (ledger seq << 12 | outcome code (0 = accepted), the command's
    # digest); bounded, oldest first
    recent: dict[int, tuple[int, bytes]] = msgspec.field(default_factory=dict)


class OriginState(msgspec.Struct):
    """An origin's sessions (at most ``EngineState.sessions_per_identity``)."""

    sessions: dict[str, SessionState] = msgspec.field(default_factory=dict)


class KeyRecord(msgspec.Struct):
    bidder_id: str
    public_key_hex: str
    role: str = "bidder"  # the origin kind its signatures act as


class Complaint(msgspec.Struct, array_like=True):
    lot_id: str
    origin: str
    status: str = "filed"  # filed | accept | answer | reject | escalate (the last step)


class ExpertDraw(msgspec.Struct, array_like=True):
    """The registry's expert draw: committed (seed and pool hashes) before, revealed after."""

    lot_id: str
    seed_hash: str
    pool_hash: str
    seed_hex: str = ""
    drawn_hash: str = ""


class EngineState(msgspec.Struct):
    now_ns: int = 0
    applied: int = 0  # commands applied == the ledger sequence number of the last one
    lots: dict[str, Lot] = msgspec.field(default_factory=dict)
    origins: dict[str, OriginState] = msgspec.field(default_factory=dict)
    blacklist: dict[str, str] = msgspec.field(default_factory=dict)
    keys: dict[str, KeyRecord] = msgspec.field(default_factory=dict)  # key id -> bidder
    complaints: dict[str, Complaint] = msgspec.field(default_factory=dict)
    expert_draws: dict[str, ExpertDraw] = msgspec.field(default_factory=dict)
    items: dict[str, Item] = msgspec.field(default_factory=dict)  # e-mall catalogue
    # Set by each RuntimeStarted: the bound of sessions per origin, and whether the
    # run's engine predates sessions (its reused client_seqs were answered as retries).
    sessions_per_identity: int = SESSIONS_PER_IDENTITY
    legacy_retries: bool = False


_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)  # hooks: e-mall books
_decoder = msgspec.msgpack.Decoder(EngineState, dec_hook=dec_hook)


def encode_state(state: EngineState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> EngineState:
    return _decoder.decode(data)


def hash_state(state: EngineState) -> str:
    return hash_encoded(encode_state(state))


def hash_encoded(encoded_state: bytes) -> str:
    return hashlib.blake2b(encoded_state, digest_size=32).hexdigest()
