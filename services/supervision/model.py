"""Supervision data: the typed config (RULES.md §7 thresholds), alerts, and the
per-lot / per-subject watch state the detectors keep.

Everything that decides is integer: money in fen, time in ns, ratios in parts
per million (``*_ppm``) compared by cross-multiplication or ``Fraction``.
The watch state is msgspec (array-like msgpack in the service's store); new
fields are appended with defaults, like the engine's messages.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import msgspec

NS_PER_S = 1_000_000_000
MINUTE_NS = 60 * NS_PER_S
PPM = 1_000_000

Level = Literal["block", "alert", "watch"]
BLOCK: Level = "block"
ALERT: Level = "alert"
WATCH: Level = "watch"

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Ppm = Annotated[int, msgspec.Meta(ge=0, le=10 * PPM)]


class SupervisionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of RULES.md §7; the defaults are the table's values."""

    # W-D1 same public IP: >= 2 bidders on one lot -> ALERT; declared LAN /
    # on-site IPs are excluded.
    d1_min_bidders: Positive = 2
    d1_ip_whitelist: tuple[str, ...] = ()
    # W-D2 same device fingerprint on one lot -> BLOCK.
    d2_min_bidders: Positive = 2
    # W-D4 same key material / login device across the platform -> BLOCK.
    d4_min_bidders: Positive = 2
    # W-F1 deposits of >= 2 bidders on one lot paid from one account -> BLOCK
    # (accounts compared without spaces / dashes, case-insensitive).
    f1_min_bidders: Positive = 2
    # W-P1 identical sealed amounts from different bidders -> ALERT.
    p1_min_bidders: Positive = 2
    # W-P2 arithmetic / geometric ladder: max relative deviation of the
    # differences (growth rates) <= 2 % -> ALERT.
    p2_min_bids: Positive = 3
    p2_max_deviation_ppm: Ppm = 20_000
    # W-P4 clustering: all within +-3 % of the mean, or >= 80 % within and
    # max < 6 % -> ALERT.
    p4_min_bids: Positive = 3
    p4_band_ppm: Ppm = 30_000
    p4_share_ppm: Ppm = 800_000
    p4_max_band_ppm: Ppm = 60_000
    # W-B2 collective withdrawal: >= 2 deposited bidders never quote / withdraw
    # / fail to decrypt, leaving < 3 -> ALERT.
    b2_min_abandoners: Positive = 2
    b2_remaining_below: Positive = 3
    # W-B3 award-then-abandon: only when the next-ranked is related to the one
    # that gave up (shared IP or device on the lot) -> ALERT.
    b3_require_related: bool = True
    # W-B4 sold at the start price with exactly one bidder while >= 2 registered.
    b4_min_registered: Positive = 2
    # W-A1 shill-bidding score (UCI shill-bidding features), per losing bidder
    # of an ascending lot at its close; score >= threshold -> ALERT, BLOCK when
    # the bidder shares an IP or device with an organiser on the lot.
    a1_threshold: Positive = 5
    a1_w_bidding_ratio: NonNegative = 1
    a1_w_successive: NonNegative = 2
    a1_w_not_last: NonNegative = 1
    a1_w_early: NonNegative = 1
    a1_w_low_win: NonNegative = 1
    a1_w_many_bids: NonNegative = 1
    a1_bidding_ratio_ppm: Ppm = 400_000  # the bidder placed >= 40 % of the lot's bids
    a1_successive_min: Positive = 2  # self-outbids by exactly the increment
    a1_last_share_ppm: Ppm = 100_000  # inactive in the last 10 % of the duration
    a1_early_share_ppm: Ppm = 250_000  # first bid in the first 25 %
    a1_low_win_ppm: Ppm = 200_000  # won <= 20 % of the lots it bid in
    a1_many_bids: Positive = 50  # auction-level: abnormal bid count
    # W-A3 self-raising while leading -> WATCH.
    a3_min_self_raises: Positive = 1
    # W-A4 last-second pattern: >= 3 bids in the last 10 s of their window,
    # all from <= 2 codes -> WATCH.
    a4_window_ns: Positive = 10 * NS_PER_S
    a4_min_snipes: Positive = 3
    a4_max_codes: Positive = 2
    # W-O1 organiser freeze / terminate / reserve attempts within 60 min of the
    # close, and reserve edits -> BLOCK.
    o1_window_ns: Positive = 60 * MINUTE_NS
    # Complaints (RULES.md §6.6): the answer is due within N working days of the
    # filing (政府采购 质疑, the default for every lot), or within N calendar
    # days for objections to a tender's candidate publicity (rule sets
    # "tender-*").  Working days come from config/calendar.py's holiday file.
    complaint_answer_working_days: NonNegative = 7
    tender_objection_answer_days: NonNegative = 3
    # Evidence lists are capped (deterministically: the first N seqs).
    evidence_max: Positive = 64


def load_config(path: str | Path | None) -> SupervisionConfig:
    """The ``[supervision]`` table of a TOML file (defaults when absent)."""
    if path is None:
        return SupervisionConfig()
    raw = msgspec.toml.decode(Path(path).read_bytes())
    table = raw.get("supervision", {}) if isinstance(raw, dict) else {}
    return msgspec.convert(table, SupervisionConfig)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One warning.  ``key`` is stable across rebuilds of the projection (the
    raising entry, rule, lot and subject): it is what a handling record names."""

    key: str
    rule: str  # "W-D1"
    level: Level
    lot_id: str  # "" for platform-wide rules (W-D4)
    seq: int  # the ledger entry that raised it
    ts_ns: int  # that entry's sequencer time
    evidence: tuple[int, ...]  # ledger seqs, sorted
    subjects: tuple[str, ...] = ()  # bidder ids involved
    detail: str = ""
    alert_id: int = 0  # assigned by the projection, 1, 2, ... in raising order
    legacy_key: str = ""  # its key in older ledgers' handling records


ALERT_KEY_MAX = 64  # an alert key is an identifier: [limits] id_pattern's default
_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")


def alert_key(seq: int, rule: str, lot_id: str, subject: str) -> str:
    """Stable, and an identifier every deployment's id pattern admits (ASCII
    letters, digits, ``.``, ``-``; at most 64): ``SEQ.RULE.LOT.SUBJECT`` when
    that is one, else ``SEQ.RULE.h<hash of lot and subject>`` (an IPv6
    address, a device fingerprint, a long subject)."""
    key = f"{seq}.{rule}.{lot_id}.{subject}"
    if _SAFE_KEY.fullmatch(key):
        return key
    digest = hashlib.blake2b(f"{lot_id}/{subject}".encode(), digest_size=8).hexdigest()
    return f"{seq}.{rule}.h{digest}"


def legacy_alert_key(seq: int, rule: str, lot_id: str, subject: str) -> str:
    """The key alerts had before keys became identifiers: handling records in
    older ledgers name them so, and still find their alert."""
    key = f"{seq}/{rule}/{lot_id}/{subject}"
    if len(key) <= 128:
        return key
    digest = hashlib.blake2b(subject.encode(), digest_size=16).hexdigest()
    return f"{seq}/{rule}/{lot_id}/h:{digest}"[:128]


def make_alert(
    rule: str,
    level: Level,
    lot_id: str,
    seq: int,
    ts_ns: int,
    subject: str,
    evidence: Iterable[int],
    subjects: list[str] | tuple[str, ...] = (),
    detail: str = "",
    cap: int = 64,
) -> Alert:
    ev = tuple(sorted({s for s in evidence if s > 0}))
    if len(ev) > cap:
        ev = ev[:cap]
    return Alert(
        key=alert_key(seq, rule, lot_id, subject),
        legacy_key=legacy_alert_key(seq, rule, lot_id, subject),
        rule=rule,
        level=level,
        lot_id=lot_id,
        seq=seq,
        ts_ns=ts_ns,
        evidence=ev,
        subjects=tuple(subjects),
        detail=detail,
    )


class Handling(msgspec.Struct, frozen=True, kw_only=True):
    """A staff / supervisor decision on an alert, read from the ledger."""

    seq: int
    ts_ns: int
    by: str  # the command's origin
    action: str  # acknowledge | dismiss | escalate
    note: str = ""


class ComplaintStep(msgspec.Struct, frozen=True, kw_only=True):
    """One ledgered step of a complaint's handling (accept / answer / reject / escalate)."""

    seq: int
    ts_ns: int
    by: str  # the command's origin (staff:<id> / supervisor:<id>)
    step: str
    text: str = ""


class Complaint(msgspec.Struct, kw_only=True):
    """A 质疑 / 投诉 as supervisors see it: the filer, the text, the answer deadline
    (RULES.md §6.6), every handling step and the answer, all from the ledger."""

    complaint_id: str
    lot_id: str
    by: str  # origin of the filer (bidder:<id>, supplier:<id>, purchaser:<id>)
    by_kind: str
    text: str
    filed_seq: int
    filed_ns: int
    deadline_ns: int  # exclusive; 0 = outside the holiday calendar's years
    deadline_rule: str  # "7 working days" / "3 days (tender objection)"
    status: str = "filed"  # the last step
    steps: list[ComplaintStep] = msgspec.field(default_factory=list)
    answer: str = ""  # the text of the first answer / reject step
    answered_seq: int = 0
    answered_ns: int = 0


ANSWER_STEPS = frozenset({"answer", "reject"})


# ------------------------------------------------------------------ watch state


class BidderWatch(msgspec.Struct, array_like=True):
    bidder_id: str
    code: str
    registered_seq: int = 0
    deposit_seq: int = 0
    bids: int = 0  # accepted bids / quotes
    first_bid_ns: int = 0
    last_bid_ns: int = 0
    last_bid_seq: int = 0
    last_amount_fen: int = 0
    bid_seqs: list[int] = msgspec.field(default_factory=list)  # capped
    self_raises: int = 0
    self_raise_seqs: list[int] = msgspec.field(default_factory=list)  # capped
    min_self_raises: int = 0  # self-raises by exactly the increment
    snipes: int = 0
    snipe_seqs: list[int] = msgspec.field(default_factory=list)  # capped
    sealed_seq: int = 0  # the live sealed submission (0: none / withdrawn)
    withdraw_seq: int = 0


class LotWatch(msgspec.Struct, array_like=True):
    lot_id: str
    mechanism: str
    title: str
    start_price_fen: int
    increment_fen: int
    timed_increment_fen: int
    start_ns: int
    end_ns: int
    created_seq: int
    status: str = "draft"
    phase: str = ""
    opened_ns: int = 0
    price_fen: int = 0
    bid_count: int = 0
    leader_code: str = ""
    reserve_seq: int = 0
    bidders: dict[str, BidderWatch] = msgspec.field(default_factory=dict)  # by code
    ids: dict[str, str] = msgspec.field(default_factory=dict)  # bidder id -> code
    ips: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)  # ip -> id -> seq
    devices: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    staff_ips: dict[str, int] = msgspec.field(default_factory=dict)  # ip -> first seq
    staff_devices: dict[str, int] = msgspec.field(default_factory=dict)
    opening_seq: int = 0
    valid_codes: list[str] = msgspec.field(default_factory=list)  # sealed: valid at opening
    lapsed_code: str = ""  # reverse: the last supplier that gave up its award
    lapsed_seq: int = 0
    closed_seq: int = 0
    closed_ns: int = 0
    winner_code: str = ""
    last_seq: int = 0
    alerts: int = 0
    rules_name: str = ""
    payers: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)  # account -> id -> seq
    parent_lot_id: str = ""  # a re-auction's failed lot
    defaulted_code: str = ""  # the winner that defaulted after the hammer (悔拍)
    defaulted_seq: int = 0
    defaulted_price_fen: int = 0


class Sharing(msgspec.Struct, array_like=True):
    """Who used one piece of key material / one device: bidder id -> first seq."""

    users: dict[str, int] = msgspec.field(default_factory=dict)


class BidderRecord(msgspec.Struct, array_like=True):
    """Platform-wide: the lots a bidder bid in (closed) and won (W-A1 win ratio)."""

    lots: int = 0
    wins: int = 0


class LotMonitor(msgspec.Struct, frozen=True, kw_only=True):
    """Live monitoring of one lot, as the console's alert area shows it."""

    lot_id: str
    mechanism: str
    title: str
    status: str
    phase: str
    price_fen: int
    bid_count: int
    registered: int
    bidders: int  # distinct bidders with an accepted bid / live sealed bid
    leader_code: str
    end_ns: int
    alerts: int
    last_seq: int


def monitor_of(lot: LotWatch) -> LotMonitor:
    active = sum(1 for b in lot.bidders.values() if b.bids or b.sealed_seq)
    return LotMonitor(
        lot_id=lot.lot_id,
        mechanism=lot.mechanism,
        title=lot.title,
        status=lot.status,
        phase=lot.phase,
        price_fen=lot.price_fen,
        bid_count=lot.bid_count,
        registered=len(lot.bidders),
        bidders=active,
        leader_code=lot.leader_code,
        end_ns=lot.end_ns,
        alerts=lot.alerts,
        last_seq=lot.last_seq,
    )
