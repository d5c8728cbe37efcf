"""Theory of operation: the registry projection (a follower projection).

Everything here is derived from ledgered facts, inside the follower's write
txn that also stores its position -- so after any crash each entry has been
applied exactly once, and a restarted registry ends byte-for-byte equal to
one that never stopped.  The dbs (``rg_`` = registry):

* ``rg_subjects``  subject id -> Subject (roles, keys, registrations, blacklist)
* ``rg_keys``      key id -> KeyRecord (RegisterKey accepted)
* ``rg_lots``      lot id -> LotInfo (deposit, whether settlement is tracked, outcome)
* ``rg_regs``      lot id NUL bidder id -> Registration (bidder code, deposit state)
* ``rg_codes``     lot id NUL bidder code -> bidder id (events name codes only)
* ``rg_steps``     u64 step no -> DepositStep: every deposit state change in
  ledger order (the deposit journal: a refund shows up here once, or twice if
  it ever happened twice)
* ``rg_own``       u64 client_seq -> OwnOutcome: the ledger's record of each
  command the registry itself submitted (origin ``service:<id>``); the writer
  reads it to know, after a restart, which of its intents the engine applied
* ``rg_due``       lot id NUL bidder id -> u64 amount: refunds due and not yet
  ledgered (the writer's :meth:`~services.registry.writer.Outbox.queue_refunds`
  turns each into one RefundDeposit intent)
* ``rg_ldraws``    draw id -> LedgerDraw: expert draws as the ledger holds them
  (ExpertDrawCommitted, then ExpertDrawRevealed)
* ``rg_meta``      counters

Deposits: confirmed (DepositConfirmed) -> held (the winner, while the engine
tracks its settlement) -> applied (LotSold without settlement tracking, or
SettlementChanged paid); the others' -> refund_due once the lot's outcome is
final (LotUnsold, LotTerminated, LotSold untracked, settlement paid or
defaulted) -> refunded on DepositRefunded (the registry's RefundDeposit, sent
once through its outbox); -> forfeited on DepositForfeited.  A RefundDeposit
of the registry's origin refused ``refund_not_due`` (or any code but
``deposit_already_settled``) ends the deposit ``refund_refused`` with the code
in ``reason`` -- the registry's derivation was wrong, staff look, nothing is
resent.  ``deposit_already_settled`` means the refund (or a forfeit) is
already in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import lmdb
import msgspec

from engine.codes import Reject
from engine.messages import (
    BidderRegistered,
    BlacklistBidder,
    CommandRejected,
    CommandRetried,
    DepositConfirmed,
    DepositForfeited,
    DepositRefunded,
    Event,
    ExpertDrawCommitted,
    ExpertDrawRevealed,
    LotCreated,
    LotSold,
    LotTerminated,
    LotUnsold,
    RefundDeposit,
    RegisterBidder,
    RegisterKey,
    SettlementChanged,
    UnblacklistBidder,
)
from persistence.keys import key_pair, key_part
from persistence.service import ServiceStore
from services.registry.model import (
    DepositState,
    DepositStep,
    KeyRecord,
    LedgerDraw,
    LotInfo,
    OwnOutcome,
    Registration,
    Subject,
)

Txn: TypeAlias = "lmdb.Transaction[bytes]"

SUBJECTS = b"rg_subjects"
KEYS = b"rg_keys"
LOTS = b"rg_lots"
REGS = b"rg_regs"
CODES = b"rg_codes"
STEPS = b"rg_steps"
OWN = b"rg_own"
DUE = b"rg_due"
LDRAWS = b"rg_ldraws"
META = b"rg_meta"
NEXT_STEP = b"next_step"
DEFAULT_ORIGIN = "service:registry"
# The client session the registry's writer numbers its client_seqs in; the default
# session "" is its own too (the writer used it before sessions existed).
SESSION = "registry"
OWN_SESSIONS = (SESSION, "")

_mp = msgspec.msgpack.Encoder()
_subject = msgspec.msgpack.Decoder(Subject)
_key = msgspec.msgpack.Decoder(KeyRecord)
_lot = msgspec.msgpack.Decoder(LotInfo)
_reg = msgspec.msgpack.Decoder(Registration)
_step = msgspec.msgpack.Decoder(DepositStep)
_own = msgspec.msgpack.Decoder(OwnOutcome)
_ldraw = msgspec.msgpack.Decoder(LedgerDraw)
ALREADY_SETTLED = int(Reject.deposit_already_settled)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def pair(a: str, b: str) -> bytes:
    """``lot NUL bidder`` keys, each part storable (:func:`persistence.keys.key_pair`)."""
    return key_pair(a, b)


def own_outcome(events: Sequence[Event]) -> Event | None:
    """The command's own refusal or retry answer (deadline events may precede it)."""
    for ev in events:
        if type(ev) in (CommandRejected, CommandRetried):
            return ev
    return None


class RegistryProjection:
    """A follower projection: subjects, keys, registrations, deposits, blacklist."""

    dbs: Sequence[bytes] = (SUBJECTS, KEYS, LOTS, REGS, CODES, STEPS, OWN, DUE, LDRAWS, META)

    def __init__(self, origin: str = DEFAULT_ORIGIN) -> None:
        self.origin = origin
        self._db: dict[bytes, Any] = {}
        self.next_step = 1
        self.steps: list[DepositStep] = []  # applied since the last take (metrics, tests)

    # -- follower protocol ------------------------------------------------------
    def load(self, store: ServiceStore, txn: Txn) -> None:
        self._db = {name: store.db(name) for name in self.dbs}
        raw = txn.get(NEXT_STEP, db=self._db[META])
        self.next_step = 1 if raw is None else int.from_bytes(raw, "big")
        self.steps.clear()

    def apply(self, txn: Txn, entry: Any) -> None:
        cmd = entry.command
        events = entry.events
        answer = own_outcome(events)
        if (
            cmd.origin == self.origin
            and cmd.client_session in OWN_SESSIONS
            and type(answer) is not CommandRetried
        ):
            code = int(answer.code) if type(answer) is CommandRejected else 0
            txn.put(
                u64(cmd.client_seq),
                _mp.encode(OwnOutcome(entry.seq, code)),
                db=self._db[OWN],
                overwrite=False,  # the first ledgered outcome of a client_seq is the one
            )
        step = self.next_step
        if answer is None:
            kind = type(cmd)
            if kind is RegisterKey:
                self._key(txn, cmd, entry.seq)
            elif kind is BlacklistBidder or kind is UnblacklistBidder:
                self._blacklist(txn, cmd, kind is BlacklistBidder, entry.seq)
        elif (
            type(answer) is CommandRejected
            and type(cmd) is RefundDeposit
            and cmd.origin == self.origin
            and cmd.client_session in OWN_SESSIONS
        ):
            self._refund_refused(txn, cmd, answer, entry.seq)
        for ev in events:
            kind = type(ev)
            if kind is BidderRegistered and type(cmd) is RegisterBidder and answer is None:
                self._registered(txn, cmd, ev, entry.seq)
            elif kind is DepositConfirmed:
                self._confirmed(txn, cmd, ev, entry.seq)
            elif kind is LotCreated:
                self._lot_created(txn, ev)
            elif kind is LotSold:
                self._sold(txn, ev, entry.seq)
            elif kind is LotUnsold or kind is LotTerminated:
                self._closed(
                    txn, ev.lot_id, "unsold" if kind is LotUnsold else "terminated", entry.seq
                )
            elif kind is SettlementChanged:
                self._settlement(txn, ev, entry.seq)
            elif kind is DepositForfeited:
                self._forfeited(txn, ev, entry.seq)
            elif kind is DepositRefunded:
                self._refunded(txn, ev, entry.seq)
            elif kind is ExpertDrawCommitted:
                rec = LedgerDraw(
                    draw_id=ev.draw_id,
                    lot_id=ev.lot_id,
                    seed_hash=ev.seed_hash.lower(),
                    pool_hash=ev.pool_hash.lower(),
                    commit_seq=entry.seq,
                    origin=cmd.origin,
                )
                txn.put(key_part(ev.draw_id), _mp.encode(rec), db=self._db[LDRAWS])
            elif kind is ExpertDrawRevealed:
                got = self._get(txn, LDRAWS, key_part(ev.draw_id), _ldraw)
                if got is not None:
                    got.seed_hex, got.drawn_hash, got.reveal_seq = (
                        ev.seed_hex,
                        ev.drawn_hash,
                        entry.seq,
                    )
                    txn.put(key_part(ev.draw_id), _mp.encode(got), db=self._db[LDRAWS])
        if self.next_step != step:
            txn.put(NEXT_STEP, u64(self.next_step), db=self._db[META])

    def take_steps(self) -> list[DepositStep]:
        steps, self.steps = self.steps, []
        return steps

    # -- records -----------------------------------------------------------------
    def _get(self, txn: Txn, db: bytes, key: bytes, dec: Any) -> Any:
        raw = txn.get(key, db=self._db[db])
        return None if raw is None else dec.decode(raw)

    def _subject(self, txn: Txn, subject_id: str, seq: int) -> Subject:
        s = self._get(txn, SUBJECTS, key_part(subject_id), _subject)
        return s if s is not None else Subject(subject_id=subject_id, first_seq=seq)

    def _put_subject(self, txn: Txn, s: Subject) -> None:
        txn.put(key_part(s.subject_id), _mp.encode(s), db=self._db[SUBJECTS])

    def _lot(self, txn: Txn, lot_id: str) -> LotInfo:
        lot = self._get(txn, LOTS, key_part(lot_id), _lot)
        return lot if lot is not None else LotInfo(lot_id=lot_id)

    def _put_lot(self, txn: Txn, lot: LotInfo) -> None:
        txn.put(key_part(lot.lot_id), _mp.encode(lot), db=self._db[LOTS])

    def _by_code(self, txn: Txn, lot_id: str, code: str) -> Registration | None:
        raw = txn.get(pair(lot_id, code), db=self._db[CODES])
        if raw is None:
            return None
        # the value is the bidder's key part: the REGS key is lot's part NUL it
        reg: Registration | None = self._get(txn, REGS, key_part(lot_id) + b"\x00" + raw, _reg)
        return reg

    def _regs(self, txn: Txn, lot_id: str) -> Iterator[Registration]:
        prefix = key_part(lot_id) + b"\x00"
        cur = txn.cursor(self._db[REGS])
        if not cur.set_range(prefix):
            return
        for k, v in cur:
            if not k.startswith(prefix):
                return
            yield _reg.decode(v)

    def _deposit(
        self, txn: Txn, reg: Registration, state: DepositState, seq: int, reason: str = ""
    ) -> None:
        reg.deposit = state
        if state == "confirmed":
            reg.confirmed_seq = seq
        elif state == "refund_due":
            reg.due_seq = seq
        elif state != "held":
            reg.settled_seq = seq
        if reason:
            reg.reason = reason
        txn.put(pair(reg.lot_id, reg.bidder_id), _mp.encode(reg), db=self._db[REGS])
        step = DepositStep(
            step_no=self.next_step,
            lot_id=reg.lot_id,
            bidder_id=reg.bidder_id,
            state=state,
            amount_fen=reg.amount_fen,
            seq=seq,
            reason=reason,
        )
        txn.put(u64(self.next_step), _mp.encode(step), db=self._db[STEPS])
        self.next_step += 1
        self.steps.append(step)

    # -- ledgered facts ------------------------------------------------------------
    def _key(self, txn: Txn, cmd: RegisterKey, seq: int) -> None:
        rec = KeyRecord(
            key_id=cmd.key_id,
            subject_id=cmd.bidder_id,
            public_key_hex=cmd.public_key_hex.lower(),
            role=cmd.role,
            seq=seq,
        )
        txn.put(key_part(cmd.key_id), _mp.encode(rec), db=self._db[KEYS])
        s = self._subject(txn, cmd.bidder_id, seq)
        s.keys.append(cmd.key_id)
        if cmd.role not in s.roles:
            s.roles.append(cmd.role)
        self._put_subject(txn, s)

    def _blacklist(
        self, txn: Txn, cmd: BlacklistBidder | UnblacklistBidder, listed: bool, seq: int
    ) -> None:
        s = self._subject(txn, cmd.bidder_id, seq)
        s.blacklisted = listed
        s.blacklist_reason = cmd.reason if listed else ""
        self._put_subject(txn, s)

    def _registered(self, txn: Txn, cmd: RegisterBidder, ev: BidderRegistered, seq: int) -> None:
        reg = Registration(
            lot_id=cmd.lot_id,
            bidder_id=cmd.bidder_id,
            code=ev.bidder_code,
            priority_rank=cmd.priority_rank,
            sme=cmd.sme,
            seq=seq,
        )
        txn.put(pair(cmd.lot_id, cmd.bidder_id), _mp.encode(reg), db=self._db[REGS])
        txn.put(pair(cmd.lot_id, ev.bidder_code), key_part(cmd.bidder_id), db=self._db[CODES])
        s = self._subject(txn, cmd.bidder_id, seq)
        s.lots += 1
        if not s.roles:
            s.roles.append("bidder")
        self._put_subject(txn, s)
        lot = self._lot(txn, cmd.lot_id)
        lot.bidders += 1
        self._put_lot(txn, lot)

    def _confirmed(self, txn: Txn, cmd: Any, ev: DepositConfirmed, seq: int) -> None:
        reg = self._by_code(txn, ev.lot_id, ev.bidder_code)
        if reg is None:
            return
        reg.amount_fen = int(getattr(cmd, "amount_fen", 0))
        self._deposit(txn, reg, "confirmed", seq)

    def _lot_created(self, txn: Txn, ev: LotCreated) -> None:
        lot = self._lot(txn, ev.lot_id)
        lot.deposit_fen = ev.deposit_fen
        lot.settles = bool(ev.rules.post_qualification or ev.rules.payment_window_ns)
        self._put_lot(txn, lot)

    def _refund_others(self, txn: Txn, lot: LotInfo, seq: int, *, held_too: bool) -> None:
        """The refund is due: queued in ``rg_due`` for the writer (the engine's
        figure, the lot's deposit), done when DepositRefunded is ledgered."""
        lot.final_seq = seq
        for reg in list(self._regs(txn, lot.lot_id)):
            if reg.deposit == "confirmed" or (held_too and reg.deposit == "held"):
                self._deposit(txn, reg, "refund_due", seq)
                key = pair(reg.lot_id, reg.bidder_id)
                txn.put(key, u64(lot.deposit_fen), db=self._db[DUE])

    def _refunded(self, txn: Txn, ev: DepositRefunded, seq: int) -> None:
        reg = self._by_code(txn, ev.lot_id, ev.bidder_code)
        if reg is None or reg.deposit == "refunded":
            return
        txn.delete(pair(reg.lot_id, reg.bidder_id), db=self._db[DUE])
        self._deposit(txn, reg, "refunded", seq)

    def _refund_refused(
        self, txn: Txn, cmd: RefundDeposit, answer: CommandRejected, seq: int
    ) -> None:
        """The engine refused the registry's own refund: never resent."""
        reg = self._get(txn, REGS, pair(cmd.lot_id, cmd.bidder_id), _reg)
        if reg is None or reg.deposit != "refund_due":
            return  # already refunded or forfeited in the ledger: nothing to change
        txn.delete(pair(reg.lot_id, reg.bidder_id), db=self._db[DUE])
        code = int(answer.code)
        if code == ALREADY_SETTLED:  # settled by an entry this projection did not read as such
            self._deposit(txn, reg, "refunded", seq, "deposit_already_settled")
        else:
            why = f"{Reject(code).name}: {answer.detail}" if answer.detail else Reject(code).name
            self._deposit(txn, reg, "refund_refused", seq, why)

    def _sold(self, txn: Txn, ev: LotSold, seq: int) -> None:
        lot = self._lot(txn, ev.lot_id)
        lot.status, lot.winner_code = "sold", ev.bidder_code
        winner = self._by_code(txn, ev.lot_id, ev.bidder_code)
        if winner is not None and winner.deposit == "confirmed":
            self._deposit(txn, winner, "held" if lot.settles else "applied", seq)
        if not lot.settles:
            self._refund_others(txn, lot, seq, held_too=False)
        self._put_lot(txn, lot)

    def _closed(self, txn: Txn, lot_id: str, status: str, seq: int) -> None:
        lot = self._lot(txn, lot_id)
        lot.status = status
        self._refund_others(txn, lot, seq, held_too=True)
        self._put_lot(txn, lot)

    def _settlement(self, txn: Txn, ev: SettlementChanged, seq: int) -> None:
        if ev.state not in ("paid", "defaulted"):
            return  # awaiting_* change nothing; voided: DepositForfeited, then a new outcome
        lot = self._lot(txn, ev.lot_id)
        if ev.state == "paid":
            winner = self._by_code(txn, ev.lot_id, ev.bidder_code)
            if winner is not None and winner.deposit == "held":
                self._deposit(txn, winner, "applied", seq)
        lot.status = "settled" if ev.state == "paid" else "defaulted"
        self._refund_others(txn, lot, seq, held_too=False)  # a defaulter's: DepositForfeited
        self._put_lot(txn, lot)

    def _forfeited(self, txn: Txn, ev: DepositForfeited, seq: int) -> None:
        reg = self._by_code(txn, ev.lot_id, ev.bidder_code)
        if reg is not None and reg.deposit in ("confirmed", "held", "refund_due"):
            txn.delete(pair(reg.lot_id, reg.bidder_id), db=self._db[DUE])
            self._deposit(txn, reg, "forfeited", seq, ev.reason)


# ------------------------------------------------------------------- reads


_json = msgspec.json.Encoder()


class RegistryReader:
    """Read-side queries over a registry store (HTTP API, writer, tests)."""

    def __init__(self, store: ServiceStore) -> None:
        self.store = store
        for name in RegistryProjection.dbs:
            store.add_db(name)

    def _scan(
        self, txn: Txn, db: bytes, dec: Any, start: bytes = b"", limit: int = 1000
    ) -> list[Any]:
        out: list[Any] = []
        cur = txn.cursor(self.store.db(db))
        if not (cur.set_range(start) if start else cur.first()):
            return out
        for _, v in cur:
            out.append(dec.decode(v))
            if len(out) >= limit:
                break
        return out

    def subjects(self, after: str = "", limit: int = 500) -> list[Subject]:
        with self.store.read() as txn:
            start = key_part(after) + b"\x00" if after else b""
            rows: list[Subject] = self._scan(txn, SUBJECTS, _subject, start, limit)
            return rows

    def subject(self, subject_id: str) -> tuple[Subject, list[KeyRecord]] | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(subject_id), db=self.store.db(SUBJECTS))
            if raw is None:
                return None
            s = _subject.decode(raw)
            keys = []
            for k in s.keys:
                kr = txn.get(key_part(k), db=self.store.db(KEYS))
                if kr is not None:
                    keys.append(_key.decode(kr))
            return s, keys

    def key(self, key_id: str) -> KeyRecord | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(key_id), db=self.store.db(KEYS))
        return None if raw is None else _key.decode(raw)

    def lot(self, lot_id: str) -> LotInfo | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(lot_id), db=self.store.db(LOTS))
        return None if raw is None else _lot.decode(raw)

    def registrations(self, lot_id: str) -> list[Registration]:
        prefix = key_part(lot_id) + b"\x00"
        out: list[Registration] = []
        with self.store.read() as txn:
            cur = txn.cursor(self.store.db(REGS))
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append(_reg.decode(v))
        return out

    def registration(self, lot_id: str, bidder_id: str) -> Registration | None:
        with self.store.read() as txn:
            raw = txn.get(pair(lot_id, bidder_id), db=self.store.db(REGS))
        return None if raw is None else _reg.decode(raw)

    def all_registrations(self) -> Iterator[Registration]:
        with self.store.read() as txn:
            for _, v in txn.cursor(self.store.db(REGS)):
                yield _reg.decode(v)

    def lot_bidders(self, lot_id: str) -> list[str]:
        return [r.bidder_id for r in self.registrations(lot_id)]

    def blacklist(self) -> list[Subject]:
        with self.store.read() as txn:
            return [
                s
                for _, v in txn.cursor(self.store.db(SUBJECTS))
                if (s := _subject.decode(v)).blacklisted
            ]

    def steps(self, since: int = 0, limit: int = 1000) -> list[DepositStep]:
        with self.store.read() as txn:
            rows: list[DepositStep] = self._scan(txn, STEPS, _step, u64(since + 1), limit)
            return rows

    def due(self) -> list[tuple[str, str, int]]:
        """Refunds due and not yet in the ledger: (lot, bidder, amount_fen)."""
        with self.store.read() as txn:
            return [
                (reg.lot_id, reg.bidder_id, int.from_bytes(v, "big"))
                for k, v in txn.cursor(self.store.db(DUE))
                if (reg := self.reg_at(txn, k)) is not None
            ]

    def reg_at(self, txn: Txn, key: bytes) -> Registration | None:
        """The registration under ``key`` (``rg_due`` and ``rg_regs`` share keys: the
        ids come from the record, since a long id's key is its digest)."""
        raw = txn.get(key, db=self.store.db(REGS))
        return None if raw is None else _reg.decode(raw)

    def ledger_draw(self, draw_id: str) -> LedgerDraw | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(draw_id), db=self.store.db(LDRAWS))
        return None if raw is None else _ldraw.decode(raw)

    def own(self, client_seq: int) -> OwnOutcome | None:
        with self.store.read() as txn:
            raw = txn.get(u64(client_seq), db=self.store.db(OWN))
        return None if raw is None else _own.decode(raw)

    def dump(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every (db, key, value) of the projection, for equality checks."""
        with self.store.read() as txn:
            for name in RegistryProjection.dbs:
                for k, v in txn.cursor(self.store.db(name)):
                    yield name, bytes(k), bytes(v)
