"""Theory of operation: the supervision projection (a follower projection).

For every ledger entry the follower hands over (inside the write txn that
also stores the follower's position), :class:`SupervisionProjection` runs
the pure detectors against a :class:`State` backed by that txn and stores:

* ``sv_alerts``     alert id (u64, 1, 2, ... in raising order) -> Alert (JSON)
* ``sv_alert_keys`` alert key -> alert id (what a handling record names)
* ``sv_lot_alerts`` lot id || u64 alert id -> b"" (a lot's alerts in order)
* ``sv_handling``   alert id || u64 seq -> Handling (JSON), once ledgered
* ``sv_handled``    u64 seq -> alert id || Handling (JSON): handling in ledger
  order, for the WebSocket feed's live updates
* ``sv_complaints`` u64 filing seq -> Complaint (JSON): text, deadline, steps
* ``sv_complaint_ids`` complaint id -> u64 filing seq
* ``sv_monitor``    lot id -> LotMonitor (JSON): price, bid count, bidders, end
* ``sv_lots``, ``sv_shared``, ``sv_bidders``  the detectors' watch state (msgpack)
* ``sv_meta``       the next alert id

Because the detectors read only the store and the entry, a projection that
was killed and restarted (the follower re-applies nothing twice and skips
nothing) ends byte-for-byte equal to one that ran uninterrupted.  In-memory
caches hold decoded watch objects between entries; ``load`` (start, and after
an aborted write) drops them, so they never hold anything not yet committed.

A lot's watch state changes on most entries (every bid), so within a chunk
it is written back, not through: ``put_lot`` only marks the lot dirty (lot id
-> the object, which reads see first), and the follower's per-chunk
``flush(txn)`` encodes and puts each dirty lot once (``sv_lots`` and
``sv_monitor``), in the chunk's txn.  The stored bytes are those of the last
put, as before: the detectors change a lot only on the entry that puts it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeAlias

import lmdb
import msgspec

from config.calendar import CalendarRangeError, WorkCalendar, china_date_of_ns, china_day_start_ns
from engine.messages import AnswerComplaint, FileComplaint, HandleAlert
from persistence.keys import key_part
from persistence.service import ServiceStore
from services.supervision.detectors import Detectors
from services.supervision.model import (
    ANSWER_STEPS,
    Alert,
    BidderRecord,
    Complaint,
    ComplaintStep,
    Handling,
    LotMonitor,
    LotWatch,
    Sharing,
    SupervisionConfig,
    monitor_of,
)

Txn: TypeAlias = "lmdb.Transaction[bytes]"

LOTS = b"sv_lots"
MONITOR = b"sv_monitor"
ALERTS = b"sv_alerts"
ALERT_KEYS = b"sv_alert_keys"
LOT_ALERTS = b"sv_lot_alerts"
HANDLING = b"sv_handling"
HANDLED = b"sv_handled"
COMPLAINTS = b"sv_complaints"
COMPLAINT_IDS = b"sv_complaint_ids"
SHARED = b"sv_shared"
BIDDERS = b"sv_bidders"
META = b"sv_meta"
NEXT_ALERT = b"next_alert_id"
HANDLING_ACTIONS = frozenset({"acknowledge", "dismiss", "escalate"})
CACHE_MAX = 4096

_mp = msgspec.msgpack.Encoder()
_lot_dec = msgspec.msgpack.Decoder(LotWatch)
_share_dec = msgspec.msgpack.Decoder(Sharing)
_bidder_dec = msgspec.msgpack.Decoder(BidderRecord)
_json = msgspec.json.Encoder()
_alert_dec = msgspec.json.Decoder(Alert)
_monitor_dec = msgspec.json.Decoder(LotMonitor)
_handling_dec = msgspec.json.Decoder(Handling)
_complaint_dec = msgspec.json.Decoder(Complaint)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _share_key(kind: str, key: str) -> bytes:
    """``kind NUL key`` (an IP, a device): storable whatever the ledger holds."""
    return key_part(kind) + b"\x00" + key_part(key)


class _TxnState:
    """The detectors' State over one write txn, through the projection's caches."""

    __slots__ = ("p", "txn")

    def __init__(self, p: SupervisionProjection, txn: Txn) -> None:
        self.p, self.txn = p, txn

    def lot(self, lot_id: str) -> LotWatch | None:
        lot = self.p._dirty_lots.get(lot_id)
        if lot is not None:
            return lot
        cache = self.p._lots
        lot = cache.get(lot_id)
        if lot is None:
            raw = self.txn.get(key_part(lot_id), db=self.p._db[LOTS])
            if raw is None:
                return None
            lot = cache[lot_id] = _lot_dec.decode(raw)
        return lot

    def put_lot(self, lot: LotWatch) -> None:
        """Mark ``lot`` dirty; ``SupervisionProjection.flush`` writes it."""
        self.p._dirty_lots[lot.lot_id] = lot

    def sharing(self, kind: str, key: str) -> Sharing | None:
        ck = f"{kind}\x00{key}"
        share = self.p._shared.get(ck)
        if share is None:
            raw = self.txn.get(_share_key(kind, key), db=self.p._db[SHARED])
            if raw is None:
                return None
            share = self.p._shared[ck] = _share_dec.decode(raw)
        return share

    def put_sharing(self, kind: str, key: str, value: Sharing) -> None:
        ck = f"{kind}\x00{key}"
        self.p._shared[ck] = value
        self.txn.put(_share_key(kind, key), _mp.encode(value), db=self.p._db[SHARED])

    def bidder(self, bidder_id: str) -> BidderRecord | None:
        raw = self.txn.get(key_part(bidder_id), db=self.p._db[BIDDERS])
        return None if raw is None else _bidder_dec.decode(raw)

    def put_bidder(self, bidder_id: str, value: BidderRecord) -> None:
        self.txn.put(key_part(bidder_id), _mp.encode(value), db=self.p._db[BIDDERS])


class SupervisionProjection:
    """A follower projection: alerts, handling records and lot monitoring."""

    dbs: Sequence[bytes] = (
        LOTS,
        MONITOR,
        ALERTS,
        ALERT_KEYS,
        LOT_ALERTS,
        HANDLING,
        SHARED,
        BIDDERS,
        META,
        HANDLED,
        COMPLAINTS,
        COMPLAINT_IDS,
    )

    def __init__(
        self, config: SupervisionConfig | None = None, calendar: WorkCalendar | None = None
    ) -> None:
        self.detectors = Detectors(config)
        self.config = self.detectors.config
        self.calendar = calendar or WorkCalendar.load()
        self._db: dict[bytes, Any] = {}
        self._lots: dict[str, LotWatch] = {}
        self._dirty_lots: dict[str, LotWatch] = {}  # put this chunk, not yet written
        self._shared: dict[str, Sharing] = {}
        self.next_alert_id = 1
        self.raised: list[Alert] = []  # alerts of the entries applied since the last take
        self.handled = 0  # handling records applied (the feed's wake-up)

    # -- follower protocol ------------------------------------------------------
    def load(self, store: ServiceStore, txn: Txn) -> None:
        self._db = {name: store.db(name) for name in self.dbs}
        self._lots.clear()
        self._dirty_lots.clear()  # the txn that would have written them aborted
        self._shared.clear()
        self.raised.clear()
        raw = txn.get(NEXT_ALERT, db=self._db[META])
        self.next_alert_id = 1 if raw is None else int.from_bytes(raw, "big")

    def apply(self, txn: Txn, entry: Any) -> None:
        cmd = entry.command
        t = type(cmd)
        if t is HandleAlert:
            self._handling(txn, entry, cmd)
            return
        if t is FileComplaint or t is AnswerComplaint:
            if not any(getattr(ev, "code", 0) for ev in entry.events):  # refused: nothing
                self._complaint(txn, entry, cmd)
            return
        alerts = self.detectors.apply(entry, _TxnState(self, txn))
        if alerts:
            db = self._db
            for a in alerts:
                aid = self.next_alert_id
                self.next_alert_id += 1
                a = msgspec.structs.replace(a, alert_id=aid)
                txn.put(u64(aid), _json.encode(a), db=db[ALERTS])
                txn.put(key_part(a.key), u64(aid), db=db[ALERT_KEYS])
                if a.legacy_key:
                    txn.put(key_part(a.legacy_key), u64(aid), db=db[ALERT_KEYS])
                txn.put(key_part(a.lot_id) + b"\x00" + u64(aid), b"", db=db[LOT_ALERTS])
                self.raised.append(a)
            txn.put(NEXT_ALERT, u64(self.next_alert_id), db=db[META])
        if len(self._shared) > CACHE_MAX:
            self._shared.clear()

    def flush(self, txn: Txn) -> None:
        """Write each lot put during the chunk once (the follower calls this
        after the chunk's last ``apply``, in the same txn)."""
        dirty = self._dirty_lots
        if not dirty:
            return
        lots_db, monitor_db = self._db[LOTS], self._db[MONITOR]
        put, mp, js = txn.put, _mp.encode, _json.encode
        for lot_id, lot in dirty.items():
            key = key_part(lot_id)
            put(key, mp(lot), db=lots_db)
            put(key, js(monitor_of(lot)), db=monitor_db)
        cache = self._lots
        if len(cache) + len(dirty) > CACHE_MAX:
            cache.clear()  # everything in it is in the txn
        cache.update(dirty)
        dirty.clear()

    def take_raised(self) -> list[Alert]:
        raised, self.raised = self.raised, []
        return raised

    def _handling(self, txn: Txn, entry: Any, cmd: Any) -> None:
        """Read side of a ledgered handling record (acknowledge / dismiss /
        escalate), for the ``HandleAlert`` command asked of the engine."""
        action = getattr(cmd, "action", "")
        key = getattr(cmd, "alert_key", "")
        refused = any(getattr(ev, "code", 0) for ev in entry.events)
        if refused or action not in HANDLING_ACTIONS:
            return
        raw = txn.get(key_part(str(key)), db=self._db[ALERT_KEYS])
        if raw is None:
            return
        rec = Handling(
            seq=entry.seq,
            ts_ns=entry.ts_ns,
            by=cmd.origin,
            action=action,
            note=str(getattr(cmd, "note", "")),
        )
        txn.put(raw + u64(entry.seq), _json.encode(rec), db=self._db[HANDLING])
        txn.put(u64(entry.seq), raw + _json.encode(rec), db=self._db[HANDLED])
        self.handled += 1

    # -- complaints (质疑 / 投诉, RULES.md §6.6) --------------------------------
    def deadline(self, lot: LotWatch | None, filed_ns: int) -> tuple[int, str]:
        """The answer deadline of a complaint filed at ``filed_ns`` (exclusive:
        24:00 China time of the last day; the filing day is not counted)."""
        cfg = self.config
        if lot is not None and lot.rules_name.startswith("tender"):
            days = cfg.tender_objection_answer_days
            last = china_date_of_ns(filed_ns) + timedelta(days=days)
            return china_day_start_ns(last + timedelta(days=1)), f"{days} days (tender objection)"
        n = cfg.complaint_answer_working_days
        try:
            return self.calendar.deadline_ns(filed_ns, n), f"{n} working days"
        except CalendarRangeError:
            return 0, f"{n} working days (date outside the holiday calendar)"

    def _complaint(self, txn: Txn, entry: Any, cmd: Any) -> None:
        db = self._db
        if type(cmd) is FileComplaint:
            deadline, rule = self.deadline(_TxnState(self, txn).lot(cmd.lot_id), entry.ts_ns)
            kind = cmd.origin.partition(":")[0]
            c = Complaint(
                complaint_id=cmd.complaint_id,
                lot_id=cmd.lot_id,
                by=cmd.origin,
                by_kind=kind,
                text=cmd.text,
                filed_seq=entry.seq,
                filed_ns=entry.ts_ns,
                deadline_ns=deadline,
                deadline_rule=rule,
            )
            txn.put(key_part(cmd.complaint_id), u64(entry.seq), db=db[COMPLAINT_IDS])
        else:
            key = txn.get(key_part(cmd.complaint_id), db=db[COMPLAINT_IDS])
            raw = None if key is None else txn.get(key, db=db[COMPLAINTS])
            if raw is None:  # filed before this store's history: cannot happen
                return
            c = _complaint_dec.decode(raw)
            c.steps.append(
                ComplaintStep(
                    seq=entry.seq, ts_ns=entry.ts_ns, by=cmd.origin, step=cmd.step, text=cmd.text
                )
            )
            c.status = cmd.step
            if cmd.step in ANSWER_STEPS and not c.answered_seq:
                c.answer, c.answered_seq, c.answered_ns = cmd.text, entry.seq, entry.ts_ns
        txn.put(u64(c.filed_seq), _json.encode(c), db=db[COMPLAINTS])


# ------------------------------------------------------------------- reads


class SupervisionReader:
    """Read-side queries over a supervision store (HTTP feed, tests, tools)."""

    def __init__(self, store: ServiceStore) -> None:
        self.store = store
        for name in SupervisionProjection.dbs:
            store.add_db(name)

    def _db(self, name: bytes) -> Any:
        return self.store.db(name)

    def alerts(self, since: int = 0, limit: int = 100, lot: str | None = None) -> list[Alert]:
        """Alerts with id > ``since``, oldest first (the feed's paging)."""
        out: list[Alert] = []
        with self.store.read() as txn:
            if lot is None:
                cur = txn.cursor(self._db(ALERTS))
                if cur.set_range(u64(since + 1)):
                    for _, v in cur:
                        out.append(_alert_dec.decode(v))
                        if len(out) >= limit:
                            break
                return out
            prefix = key_part(lot) + b"\x00"
            cur = txn.cursor(self._db(LOT_ALERTS))
            if cur.set_range(prefix + u64(since + 1)):
                adb = self._db(ALERTS)
                for k, _ in cur:
                    if not k.startswith(prefix) or len(k) != len(prefix) + 8:
                        break
                    raw = txn.get(k[len(prefix) :], db=adb)
                    if raw is not None:
                        out.append(_alert_dec.decode(raw))
                    if len(out) >= limit:
                        break
        return out

    def alert(self, alert_id: int) -> tuple[Alert, list[Handling]] | None:
        with self.store.read() as txn:
            raw = txn.get(u64(alert_id), db=self._db(ALERTS))
            if raw is None:
                return None
            handling: list[Handling] = []
            cur = txn.cursor(self._db(HANDLING))
            prefix = u64(alert_id)
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    handling.append(_handling_dec.decode(v))
            return _alert_dec.decode(raw), handling

    def handled_since(self, seq: int, limit: int = 500) -> list[tuple[int, Handling]]:
        """(alert id, handling) recorded at ledger seqs > ``seq``, in ledger order."""
        out: list[tuple[int, Handling]] = []
        with self.store.read() as txn:
            cur = txn.cursor(self._db(HANDLED))
            if cur.set_range(u64(seq + 1)):
                for _, v in cur:
                    out.append((int.from_bytes(v[:8], "big"), _handling_dec.decode(v[8:])))
                    if len(out) >= limit:
                        break
        return out

    def last_handled_seq(self) -> int:
        with self.store.read() as txn:
            cur = txn.cursor(self._db(HANDLED))
            return int.from_bytes(cur.key(), "big") if cur.last() else 0

    def complaints(
        self, since: int = 0, limit: int = 100, lot: str | None = None
    ) -> list[Complaint]:
        """Complaints filed at ledger seqs > ``since``, oldest first."""
        out: list[Complaint] = []
        with self.store.read() as txn:
            cur = txn.cursor(self._db(COMPLAINTS))
            if cur.set_range(u64(since + 1)):
                for _, v in cur:
                    c = _complaint_dec.decode(v)
                    if lot is None or c.lot_id == lot:
                        out.append(c)
                        if len(out) >= limit:
                            break
        return out

    def complaint(self, complaint_id: str) -> Complaint | None:
        with self.store.read() as txn:
            key = txn.get(key_part(complaint_id), db=self._db(COMPLAINT_IDS))
            raw = None if key is None else txn.get(key, db=self._db(COMPLAINTS))
        return None if raw is None else _complaint_dec.decode(raw)

    def monitors(self, after: str = "", limit: int = 500) -> list[LotMonitor]:
        out: list[LotMonitor] = []
        with self.store.read() as txn:
            cur = txn.cursor(self._db(MONITOR))
            start = key_part(after) + b"\x00" if after else b""
            if cur.set_range(start) if start else cur.first():
                for _, v in cur:
                    out.append(_monitor_dec.decode(v))
                    if len(out) >= limit:
                        break
        return out

    def monitor(self, lot_id: str) -> LotMonitor | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(lot_id), db=self._db(MONITOR))
        return None if raw is None else _monitor_dec.decode(raw)

    def dump(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every (db, key, value) of the projection, for equality checks."""
        with self.store.read() as txn:
            for name in SupervisionProjection.dbs:
                for k, v in txn.cursor(self._db(name)):
                    yield name, bytes(k), bytes(v)
