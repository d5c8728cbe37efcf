"""Supervisor tools over a ledger or an export: full verification and lot timelines.

``verify_ledger`` = hash chain + full replay from genesis (every entry must
re-produce its recorded events) + every stored snapshot's state hash against
the replayed state at its seq + every signed checkpoint (when the server's
public key is at hand).  ``timelines`` replays and collects what happened to
each lot, in public terms (bidder codes only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from engine.messages import (
    AnyCommand,
    BidAccepted,
    CommandRejected,
    Event,
    PlaceBid,
)
from engine.router import Router
from engine.state import STATE_VERSION, hash_encoded
from ledger.export import ExportError, ExportReader, is_export
from ledger.record import EntryBody
from ledger.replay import ReplayDivergence, replay, restore_snapshot
from ledger.snapshot import decode_snapshot
from ledger.soundness import resolve_ledger_dir
from ledger.store import LedgerStore
from ledger.verify import verify_chain, verify_checkpoints

__all__ = ["VerifyResult", "resolve_ledger_dir", "timelines", "verify_ledger", "verify_store"]

Progress = Callable[[int], None]


class VerifyResult(msgspec.Struct):
    ok: bool
    entries: int
    state_hash: str = ""
    first_bad_seq: int | None = None
    reason: str = ""
    snapshots_checked: int = 0
    checkpoints_checked: int = 0


Source = LedgerStore | ExportReader


def source_exists(path: str | Path) -> bool:
    """A ledger directory (or a data directory holding one), or an export file."""
    return is_export(path) or (resolve_ledger_dir(path) / "data.mdb").exists()


@contextmanager
def open_source(path: str | Path) -> Iterator[Source]:
    """Open a ledger read-only, or an export (never as LMDB: a supervisor's
    file may be forged, and only the export parser is made for that)."""
    if is_export(path):
        yield ExportReader(path)
        return
    with LedgerStore.open(resolve_ledger_dir(path), readonly=True) as store:
        yield store


def public_key(ledger_dir: Path) -> bytes | None:
    """The server's public key kept beside the ledger (or its data directory)."""
    for candidate in (ledger_dir / "server.pub", ledger_dir.parent / "server.pub"):
        if candidate.exists():
            return bytes.fromhex(candidate.read_text().strip())
    return None


def verify_ledger(path: str | Path, progress: Progress | None = None) -> VerifyResult:
    if is_export(path):
        return _verify_export(ExportReader(path), progress)
    ledger_dir = resolve_ledger_dir(path)
    if not (ledger_dir / "data.mdb").exists():
        return VerifyResult(False, 0, reason=f"no ledger at {ledger_dir}")
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        return verify_store(store, public_key(ledger_dir), progress=progress)


def verify_store(
    store: LedgerStore,
    key: bytes | None,
    *,
    since: tuple[int, bytes] | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Chain, replay (events must re-produce), snapshots and signed checkpoints.

    With ``since`` = (seq, entry hash) of a point verified before, only what
    follows it: the chain from that entry on, a replay from the newest snapshot
    at or before it (checked against its state hash), the snapshots and
    checkpoints after it -- what start-up checks (:mod:`ledger.soundness`).
    ``entries`` then counts the entries checked, from the point on."""
    start = since[0] if since is not None else 0
    chain = verify_chain(store, since=since)
    if not chain.ok:
        return VerifyResult(False, chain.count, "", chain.first_bad_seq, chain.reason)
    try:
        router = restore_snapshot(store, at_or_before=start) if start else Router()
    except ReplayDivergence as e:
        return VerifyResult(False, chain.count, "", e.seq, "snapshot_mismatch")
    except (msgspec.DecodeError, ValueError):
        found = store.snapshot_at_or_before(start)
        return VerifyResult(
            False, chain.count, "", found[0] if found else 0, "snapshot_undecodable"
        )
    try:
        snapshots = _snapshot_hashes(store, after=router.applied)
    except _BadSnapshot as e:
        return VerifyResult(False, chain.count, "", e.seq, e.reason)
    bad_snapshot: list[int] = []

    def check(body: EntryBody, cmd: AnyCommand, events: list[Event]) -> None:
        expected = snapshots.get(body.seq)
        if expected is not None and router.state_hash() != expected:
            bad_snapshot.append(body.seq)
        if progress is not None:
            progress(body.seq)

    try:
        replay(router, store, from_seq=router.applied + 1, on_entry=check)
    except ReplayDivergence as e:
        return VerifyResult(False, chain.count, "", e.seq, e.why)
    if bad_snapshot:
        return VerifyResult(False, chain.count, "", bad_snapshot[0], "snapshot_mismatch")
    checks = verify_checkpoints(store, key, after=start) if key is not None else []
    for c in checks:
        if not c.ok:
            return VerifyResult(False, chain.count, "", c.seq, f"checkpoint_{c.reason}")
    return VerifyResult(
        True, chain.count, router.state_hash(), None, "", len(snapshots), len(checks)
    )


def _verify_export(reader: ExportReader, progress: Progress | None) -> VerifyResult:
    """The parser checks the chain, the embedded checkpoints and the trailer
    (a first pass, so a bad file is refused before any replay); then replay."""
    try:
        summary = reader.validate()
    except ExportError as e:
        return VerifyResult(False, 0, "", e.seq, f"export {e}")
    router = Router()

    def step(body: EntryBody, cmd: AnyCommand, events: list[Event]) -> None:
        if progress is not None:
            progress(body.seq)

    try:
        replay(router, reader, on_entry=step)
    except ExportError as e:  # the file changed under us between the passes
        return VerifyResult(False, summary.entries, "", e.seq, f"export {e}")
    except ReplayDivergence as e:
        return VerifyResult(False, summary.entries, "", e.seq, e.why)
    return VerifyResult(
        True, summary.entries, router.state_hash(), None, "", 0, summary.checkpoints
    )


class _BadSnapshot(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(seq, reason)
        self.seq = seq
        self.reason = reason


def _snapshot_hashes(store: LedgerStore, after: int) -> dict[int, str]:
    """seq -> stored state hash of every snapshot with seq > ``after``;
    ``_BadSnapshot`` names one that is not a snapshot record, or whose state
    does not hash to the hash stored with it (recovery would refuse it)."""
    found: dict[int, str] = {}
    seq = store.last_seq()
    while seq > after:
        snap = store.snapshot_at_or_before(seq)
        if snap is None or snap[0] <= after:
            break
        try:
            rec = decode_snapshot(snap[1])
        except (msgspec.DecodeError, ValueError) as e:
            raise _BadSnapshot(snap[0], "snapshot_undecodable") from e
        if hash_encoded(rec.state) != rec.state_hash:  # the state a recovery would load
            raise _BadSnapshot(snap[0], "snapshot_damaged")
        if rec.version == STATE_VERSION:  # another layout hashes another state: not comparable
            found[snap[0]] = rec.state_hash
        seq = snap[0] - 1
    return found


class TimelineLine(msgspec.Struct):
    seq: int
    ts_ns: int
    lot_id: str
    what: str


def describe(cmd: AnyCommand | None, ev: Event) -> str:
    """One public line per event: codes, amounts, outcomes -- never identities."""
    if type(ev) is BidAccepted:
        tag = " (priority match)" if ev.priority_match else ""
        return f"bid {ev.bidder_code} {ev.amount_fen} fen accepted #{ev.bid_no}{tag}"
    if type(ev) is CommandRejected:
        if type(cmd) is PlaceBid:
            who = ev.bidder_code or "(unregistered)"
            return f"bid {who} {ev.amount_fen} fen refused {ev.code.name} {ev.detail}".rstrip()
        return f"{type(cmd).__name__} refused {ev.code.name} {ev.detail}".rstrip()
    fields = {f: getattr(ev, f) for f in ev.__struct_fields__ if f not in ("lot_id", "rules")}
    return f"{ev.__struct_config__.tag} " + " ".join(f"{k}={v}" for k, v in fields.items())


def timelines(
    path: str | Path,
    keep: Callable[[Event], bool],
    until_seq: int | None = None,
    progress: Progress | None = None,
) -> tuple[Router, list[TimelineLine]]:
    """Replay (up to ``until_seq``) collecting a public line for each kept event."""
    lines: list[TimelineLine] = []

    def collect(body: EntryBody, cmd: AnyCommand, events: list[Event]) -> None:
        for ev in events:
            if ev.lot_id and keep(ev):
                lines.append(TimelineLine(body.seq, body.ts_ns, ev.lot_id, describe(cmd, ev)))
        if progress is not None:
            progress(body.seq)

    with open_source(path) as source:
        router = replay(Router(), source, until_seq=until_seq, on_entry=collect)
    return router, lines


class ReceiptCheck(msgspec.Struct):
    line: int
    seq: int
    ok: bool
    reason: str = ""


def verify_receipts(path: str | Path, receipts_file: str | Path) -> list[ReceiptCheck]:
    """Check a bidder's kept receipts (JSON lines with seq, entry_hash, receipt,
    proof) against the server's public key and the ledger: the signature holds,
    the proof chains the entry to the receipt's entry, and the ledger still has
    both entries with those hashes -- so a rewritten or truncated ledger shows."""
    checks: list[ReceiptCheck] = []
    with open_source(path) as store:
        # An export's own key is fine here: receipts signed by the real server
        # fail under any other key.
        if isinstance(store, ExportReader):
            key = store.server_pub() or None
        else:
            key = public_key(resolve_ledger_dir(path))
        lines = Path(receipts_file).read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if line.strip():
                checks.append(_check_receipt(store, key, n, line))
    return checks


def _check_receipt(store: Source, key: bytes | None, n: int, line: str) -> ReceiptCheck:
    from nacl.signing import VerifyKey

    from ledger.checkpoint import BadCheckpoint, verify_receipt
    from ledger.record import fold_body_hashes

    try:
        row = msgspec.json.decode(line)
        seq, entry_hash = int(row["seq"]), bytes.fromhex(row["entry_hash"])
        blob, proof = bytes.fromhex(row["receipt"]), [bytes.fromhex(h) for h in row["proof"]]
    except (msgspec.DecodeError, KeyError, ValueError, TypeError):
        return ReceiptCheck(n, 0, False, "unreadable line")
    if key is None:
        return ReceiptCheck(n, seq, False, "no server.pub beside the ledger")
    try:
        rc = verify_receipt(VerifyKey(key), blob)
    except BadCheckpoint:
        return ReceiptCheck(n, seq, False, "bad signature")
    if rc.seq != seq + len(proof) or fold_body_hashes(entry_hash, proof) != rc.entry_hash:
        return ReceiptCheck(n, seq, False, "proof does not chain to the signed entry")
    for s, h in ((seq, entry_hash), (rc.seq, rc.entry_hash)):
        found = store.get(s)
        if found is None or found[1] != h:
            return ReceiptCheck(n, seq, False, f"ledger entry {s} missing or different")
    return ReceiptCheck(n, seq, True)
