"""Theory of operation: what disclosure publishes, and when (RULES.md §8).

The projection reads ledger entries through the follower and writes *public
notices* -- numbered 1, 2, 3, ... in ledger order, so a feed pages by
``since`` -- and a public record per lot, into the service's own store:

=====================  ==================================================
event                  notice
=====================  ==================================================
LotPublished           announcement, with the lot's public terms (the
                       rule set, prices, increment, deposit, times)
IncrementChanged       change notice (after the announcement only)
LotFrozen / Resumed    freeze / resume notice with the reason (R-0.10)
LotTerminated          terminate notice with the reason
OpeningRecord          the opening record: every quote by bidder code
LotSold                result: the winner's name and price, and the end of
                       the publicity period (N working days, config)
LotUnsold              unsold notice with the reason
AwardVoided            the award is void, with the reason
=====================  ==================================================

Secrets stay out by construction: a notice is built from an allow-list of
fields, never from a whole event.  The reserve is never copied (not even the
``reserve_fen`` a closed lot's events carry); sealed amounts exist only in
the opening record; bidder identities are kept in a ``private`` db (lot,
bidder code -> bidder id) that nothing serves, and only the winner's is
copied, into the result, at the close.  Lots that were created but never
announced are not public.

Everything lives in the store's txn (no in-memory state), so the follower's
exactly-once guarantee covers the notices: a restart never numbers a notice
twice or skips one.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import lmdb
import msgspec

from config.calendar import CalendarRangeError, WorkCalendar
from engine.messages import (
    AwardVoided,
    BidderRegistered,
    IncrementChanged,
    LotCreated,
    LotFrozen,
    LotPublished,
    LotResumed,
    LotSold,
    LotTerminated,
    LotUnsold,
    OpeningRecord,
    RegisterBidder,
    ReserveEntered,
)
from persistence.keys import key_pair, key_part
from persistence.service import ServiceStore
from services.follower import Entry

Txn: TypeAlias = "lmdb.Transaction[bytes]"

NOTICES, LOTS, PRIVATE, META = b"notices", b"lots", b"private", b"meta"
_NEXT_ID = b"next_notice_id"


class DisclosureConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Publicity periods in working days, by mechanism (RULES.md §8: state
    property >= 5; tender candidates >= 3; mining >= 10)."""

    publicity_working_days: dict[str, int] = msgspec.field(
        default_factory=lambda: {"default": 5, "sealed": 3, "listing": 10}
    )


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    seq: int  # the ledger entry it comes from (evidence)
    ts_ns: int  # the sequencer's time of that entry
    lot_id: str
    kind: str  # announcement | change | freeze | resume | terminate | opening | result | unsold | award_voided
    title: str  # the lot's title
    details: dict[str, Any]
    deadline_ns: int = 0  # result: end of the publicity period (0 = unknown)


class LotPublic(msgspec.Struct, kw_only=True):
    lot_id: str
    title: str
    mechanism: str
    terms: dict[str, Any]
    published: bool = False
    has_reserve: bool = False  # whether one exists -- never its amount
    status: str = "draft"  # draft | announced | frozen | terminated | sold | unsold
    notices: list[int] = msgspec.field(default_factory=list)


_enc = msgspec.msgpack.Encoder()
_notice_dec = msgspec.msgpack.Decoder(Notice)
_lot_dec = msgspec.msgpack.Decoder(LotPublic)


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _private_key(lot_id: str, code: str) -> bytes:
    return key_pair(lot_id, code)


class DisclosureProjection:
    dbs = (NOTICES, LOTS, PRIVATE, META)

    def __init__(
        self, config: DisclosureConfig | None = None, calendar: WorkCalendar | None = None
    ) -> None:
        self.config = config or DisclosureConfig()
        self.calendar = calendar or WorkCalendar.load()

    def load(self, store: ServiceStore, txn: Txn) -> None:
        self.notices, self.lots = store.db(NOTICES), store.db(LOTS)
        self.private, self.meta = store.db(PRIVATE), store.db(META)

    # -- the entry -> notices mapping ------------------------------------------------

    def apply(self, txn: Txn, entry: Entry) -> None:
        get = _HANDLERS.get
        for ev in entry.events:  # one dict lookup per event: most (bids) have no handler
            handler = get(type(ev))
            if handler is not None:
                handler(self, txn, entry, ev)

    def _registered(self, txn: Txn, entry: Entry, ev: BidderRegistered) -> None:
        cmd = entry.command
        if isinstance(cmd, RegisterBidder):  # identities stay private until the close
            txn.put(
                _private_key(ev.lot_id, ev.bidder_code), cmd.bidder_id.encode(), db=self.private
            )

    def _created(self, txn: Txn, entry: Entry, ev: LotCreated) -> None:
        terms = {
            "start_price_fen": ev.start_price_fen,
            "increment_fen": ev.increment_fen,
            "timed_increment_fen": ev.timed_increment_fen,
            "deposit_fen": ev.deposit_fen,
            "floor_fen": ev.floor_fen,
            "start_ns": ev.start_ns,
            "end_ns": ev.end_ns,
            "rules": msgspec.to_builtins(ev.rules),
        }
        lot = LotPublic(lot_id=ev.lot_id, title=ev.title, mechanism=ev.mechanism, terms=terms)
        self._put_lot(txn, lot)

    def _published(self, txn: Txn, entry: Entry, ev: LotPublished) -> None:
        lot = self._lot(txn, ev.lot_id)
        if lot is None:
            return
        lot.published, lot.status = True, "announced"
        lot.terms = {**lot.terms, "start_ns": ev.start_ns, "end_ns": ev.end_ns}
        details = {"mechanism": lot.mechanism, "has_reserve": lot.has_reserve, **lot.terms}
        self._notice(txn, entry, lot, "announcement", details)

    def _reserve(self, txn: Txn, entry: Entry, ev: ReserveEntered) -> None:
        lot = self._lot(txn, ev.lot_id)
        if lot is not None:
            lot.has_reserve = True
            self._put_lot(txn, lot)

    def _increment(self, txn: Txn, entry: Entry, ev: IncrementChanged) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            key = "timed_increment_fen" if ev.phase == "timed" else "increment_fen"
            lot.terms = {**lot.terms, key: ev.increment_fen}
            details = {"phase": ev.phase, "increment_fen": ev.increment_fen}
            self._notice(txn, entry, lot, "change", details)

    def _frozen(self, txn: Txn, entry: Entry, ev: LotFrozen) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            lot.status = "frozen"
            details = {"reason": ev.reason, "at_ns": ev.at_ns, "system": ev.system}
            self._notice(txn, entry, lot, "freeze", details)

    def _resumed(self, txn: Txn, entry: Entry, ev: LotResumed) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            lot.status = "announced"
            details = {"reason": ev.reason, "phase": ev.phase, "end_ns": ev.end_ns}
            self._notice(txn, entry, lot, "resume", details)

    def _terminated(self, txn: Txn, entry: Entry, ev: LotTerminated) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            lot.status = "terminated"
            self._notice(txn, entry, lot, "terminate", {"reason": ev.reason, "at_ns": ev.at_ns})

    def _opening(self, txn: Txn, entry: Entry, ev: OpeningRecord) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            quotes = [
                {
                    "bidder_code": e.bidder_code,
                    "amount_fen": e.amount_fen,
                    "valid": e.valid,
                    "reason": e.reason,
                }
                for e in ev.entries
            ]
            details = {
                "quotes": quotes,
                "valid_count": ev.valid_count,
                "average_fen": ev.average_fen,
                "method": ev.method,
            }
            self._notice(txn, entry, lot, "opening", details)

    def _sold(self, txn: Txn, entry: Entry, ev: LotSold) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is None:
            return
        lot.status = "sold"
        raw = txn.get(_private_key(ev.lot_id, ev.bidder_code), db=self.private)
        details = {
            "winner": raw.decode() if raw is not None else "",  # the real name, now public
            "bidder_code": ev.bidder_code,
            "price_fen": ev.price_fen,
            "closed_at_ns": ev.closed_at_ns,
        }
        deadline = self._publicity_deadline(lot.mechanism, ev.closed_at_ns)
        self._notice(txn, entry, lot, "result", details, deadline)

    def _unsold(self, txn: Txn, entry: Entry, ev: LotUnsold) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            lot.status = "unsold"
            details = {"reason": ev.reason, "closed_at_ns": ev.closed_at_ns}
            self._notice(txn, entry, lot, "unsold", details)

    def _voided(self, txn: Txn, entry: Entry, ev: AwardVoided) -> None:
        lot = self._public_lot(txn, ev.lot_id)
        if lot is not None:
            details = {
                "bidder_code": ev.bidder_code,
                "reason": ev.reason,
                "passes_to": ev.passes_to,
            }
            self._notice(txn, entry, lot, "award_voided", details)

    # -- storage -------------------------------------------------------------------

    def _publicity_deadline(self, mechanism: str, closed_at_ns: int) -> int:
        days = self.config.publicity_working_days
        n = days.get(mechanism, days.get("default", 5))
        try:
            return self.calendar.deadline_ns(closed_at_ns, n)
        except CalendarRangeError:
            return 0  # a year the holiday file lacks: no deadline rather than a guess

    def _lot(self, txn: Txn, lot_id: str) -> LotPublic | None:
        raw = txn.get(key_part(lot_id), db=self.lots)
        return None if raw is None else _lot_dec.decode(raw)

    def _public_lot(self, txn: Txn, lot_id: str) -> LotPublic | None:
        lot = self._lot(txn, lot_id)
        return lot if lot is not None and lot.published else None

    def _put_lot(self, txn: Txn, lot: LotPublic) -> None:
        txn.put(key_part(lot.lot_id), _enc.encode(lot), db=self.lots)

    def _notice(
        self,
        txn: Txn,
        entry: Entry,
        lot: LotPublic,
        kind: str,
        details: dict[str, Any],
        deadline_ns: int = 0,
    ) -> None:
        raw = txn.get(_NEXT_ID, db=self.meta)
        nid = 1 if raw is None else int.from_bytes(raw, "big")
        notice = Notice(
            id=nid,
            seq=entry.seq,
            ts_ns=entry.ts_ns,
            lot_id=lot.lot_id,
            kind=kind,
            title=lot.title,
            details=details,
            deadline_ns=deadline_ns,
        )
        txn.put(_u64(nid), _enc.encode(notice), db=self.notices)
        txn.put(_NEXT_ID, _u64(nid + 1), db=self.meta)
        lot.notices.append(nid)
        self._put_lot(txn, lot)


_HANDLERS: dict[type, Any] = {
    LotCreated: DisclosureProjection._created,
    BidderRegistered: DisclosureProjection._registered,
    LotPublished: DisclosureProjection._published,
    ReserveEntered: DisclosureProjection._reserve,
    IncrementChanged: DisclosureProjection._increment,
    LotFrozen: DisclosureProjection._frozen,
    LotResumed: DisclosureProjection._resumed,
    LotTerminated: DisclosureProjection._terminated,
    OpeningRecord: DisclosureProjection._opening,
    LotSold: DisclosureProjection._sold,
    LotUnsold: DisclosureProjection._unsold,
    AwardVoided: DisclosureProjection._voided,
}


class DisclosureReader:
    """Read side for the HTTP handlers: only public records, never ``private``."""

    def __init__(self, store: ServiceStore) -> None:
        self.store = store
        for name in DisclosureProjection.dbs:
            store.add_db(name)

    def notices(self, since: int = 0, limit: int = 100, lot_id: str | None = None) -> list[Notice]:
        """Notices with id > ``since``, oldest first (optionally of one lot)."""
        out: list[Notice] = []
        with self.store.read() as txn:
            if lot_id is not None:
                lot = self._lot(txn, lot_id)
                ids = [i for i in lot.notices if i > since] if lot is not None else []
                for i in ids[:limit]:
                    raw = txn.get(_u64(i), db=self.store.db(NOTICES))
                    if raw is not None:
                        out.append(_notice_dec.decode(raw))
                return out
            cur = txn.cursor(db=self.store.db(NOTICES))
            if cur.set_range(_u64(since + 1)):
                for _k, v in cur.iternext():
                    out.append(_notice_dec.decode(v))
                    if len(out) >= limit:
                        break
        return out

    def latest(self, limit: int = 50) -> list[Notice]:
        """The newest notices, newest first."""
        out: list[Notice] = []
        with self.store.read() as txn:
            cur = txn.cursor(db=self.store.db(NOTICES))
            if cur.last():
                for _k, v in cur.iterprev():
                    out.append(_notice_dec.decode(v))
                    if len(out) >= limit:
                        break
        return out

    def lot(self, lot_id: str) -> LotPublic | None:
        with self.store.read() as txn:
            lot = self._lot(txn, lot_id)
        return lot if lot is not None and lot.published else None

    def lots(self) -> list[LotPublic]:
        """Every announced lot, by id."""
        with self.store.read() as txn:
            found = [_lot_dec.decode(v) for _k, v in txn.cursor(db=self.store.db(LOTS)).iternext()]
        return [lot for lot in found if lot.published]

    def _lot(self, txn: Txn, lot_id: str) -> LotPublic | None:
        raw = txn.get(key_part(lot_id), db=self.store.db(LOTS))
        return None if raw is None else _lot_dec.decode(raw)
