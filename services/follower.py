"""The follower: how every companion service reads the ledger.

Theory of operation
-------------------
A companion opens the ledger read-only (another process writes it) and keeps
its own :class:`persistence.service.ServiceStore`.  The follower moves that
store forward one *chunk* at a time (:meth:`Follower.step`):

1. read up to ``chunk_entries`` entries after the stored position with one
   cursor in one short read txn, checking the hash chain as it goes: each
   entry's key is the next seq, its ``prev`` is the hash before it, its hash
   re-computes, its body decodes and names its own seq.  A break raises
   :class:`ChainBroken` with the first bad seq -- a follower never projects a
   ledger it cannot verify;
2. in ONE write txn of its own store, hand every entry to every projection
   (``apply(txn, entry)``), then store the new position (seq, entry hash);
   commit.  Crash anywhere: either the chunk and its position are durable or
   neither is, so each entry is applied exactly once across restarts.

On start the stored position is checked against the ledger (the entry at that
seq must still have that hash): a service never resumes on a rewritten or
truncated ledger (:class:`LedgerMismatch`).

Live, :meth:`Follower.run` polls the ledger's LMDB ``last_txnid`` (no read txn
needed), sleeping with exponential backoff between ``poll_min_s`` and
``poll_max_s`` while nothing changes; :meth:`Follower.wake` (the optional
wake-up signal, e.g. from an in-process runtime) cuts a sleep short.  Behind
the tail it catches up chunk after chunk at full speed, yielding to the event
loop between chunks so the service's HTTP side stays responsive.

Lag is reported (``statistics()`` and Prometheus gauges labelled by follower
name, a bounded set): entries between the ledger's tail and the position, and
milliseconds between an entry's sequencer time and the moment its chunk
committed here.

Projections: objects with ``dbs`` (the named dbs they own, opened by the
follower), ``load(store, txn)`` (take the db handles with ``store.db(name)``
and rebuild any in-memory cache from the store: called at start and again
after an aborted write) and ``apply(txn, entry)``.  Durable state goes into
``txn``; anything kept in memory must be re-derivable by ``load``.  Optional
``flush(txn)``: called once per chunk, after its last ``apply`` and in the
same txn -- a record that many entries of a chunk change (a lot's monitor on
every bid) can then be encoded and put once per chunk instead of once per
entry; ``load`` drops whatever was pending (the txn that held it aborted).

An entry a projection cannot apply
----------------------------------
A companion is a projection of the ledger, not a judge of it: the entry is
ledgered, the engine has acted on it, and a companion that dies on it stops
nothing but itself -- and then dies again at every restart (a crash loop).
Every field is storable by construction (:mod:`persistence.keys`); if one
entry still raises in ``apply`` or ``flush`` (anything but a storage fault,
which stops the follower with nothing written), the chunk's txn aborts, the
chunk is re-applied entry by entry, and the one failing entry is *skipped*:
its seq, the projection and the error are recorded in the store's
``fl_skipped`` db in the same txn that moves the position past it, counted
(``pubex_follower_skipped_entries``, ``statistics().skipped``) and logged to
stderr.  The projections then lack that one entry's effect, visibly: staff
read the record and fix the code; a rebuilt store re-applies it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any, Protocol, TypeAlias

import lmdb
import msgspec
import trio

from engine.messages import AnyCommand, AnyEvent, decode_command, decode_events
from ledger.record import HASH_SIZE, HEADER_SIZE, EntryBody, Envelope, decode_envelope
from ledger.store import LedgerStore
from ledger.verify import check_entry
from persistence.service import Position, ServiceStore, StorageUnavailable

__all__ = [
    "ChainBroken",
    "Entry",
    "Follower",
    "FollowerMetrics",
    "FollowerStats",
    "LedgerMismatch",
    "Projection",
]

Txn: TypeAlias = "lmdb.Transaction[bytes]"

SKIPPED = b"fl_skipped"  # u64 seq -> JSON {seq, projection, error}: entries not applied
_json = msgspec.json.Encoder()


class ChainBroken(RuntimeError):
    """The ledger does not verify at ``seq``; nothing from there on is applied."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"ledger chain broken at seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class LedgerMismatch(RuntimeError):
    """The stored position does not belong to this ledger (rewritten, truncated
    or another ledger): the service's store must be rebuilt, not resumed."""


class Entry:
    """One verified ledger entry as projections see it; the command, events and
    envelope are decoded on first access and shared by every projection."""

    __slots__ = ("_command", "_envelope", "_events", "body", "entry_hash", "prev_hash")

    def __init__(self, body: EntryBody, prev_hash: bytes, entry_hash: bytes) -> None:
        self.body = body
        self.prev_hash = prev_hash
        self.entry_hash = entry_hash
        self._command: AnyCommand | None = None
        self._events: list[AnyEvent] | None = None
        self._envelope: Envelope | bool | None = False  # False = not decoded yet

    @property
    def seq(self) -> int:
        return self.body.seq

    @property
    def ts_ns(self) -> int:
        return self.body.ts_ns

    @property
    def command(self) -> AnyCommand:
        if self._command is None:
            self._command = decode_command(self.body.command)
        return self._command

    @property
    def events(self) -> list[AnyEvent]:
        if self._events is None:
            self._events = decode_events(self.body.events)
        return self._events

    @property
    def envelope(self) -> Envelope | None:
        """Connection facts the gateway ledgered with the command (None for
        commands the runtime sequenced itself)."""
        if self._envelope is False:
            self._envelope = decode_envelope(self.body.meta)
        return self._envelope  # type: ignore[return-value]


class Projection(Protocol):
    @property
    def dbs(self) -> Sequence[bytes]: ...  # the named dbs it owns (a class attribute will do)

    def load(self, store: ServiceStore, txn: Txn) -> None: ...

    def apply(self, txn: Txn, entry: Entry) -> None: ...


class FollowerStats(msgspec.Struct, frozen=True):
    position: int  # last applied seq
    ledger_seq: int  # last seq seen in the ledger
    lag_entries: int
    lag_ms: float  # sequencer time of the last applied entry -> its commit here
    entries_applied: int  # by this process since it started
    chunks: int
    skipped: int = 0  # entries a projection could not apply (ever, in this store)


class FollowerMetrics:
    """Prometheus series of one follower (labelled by its name only)."""

    def __init__(self, registry: Any, name: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["follower"]
        self.position = Gauge(
            "pubex_follower_position", "Last applied ledger seq", labels, registry=registry
        ).labels(name)
        self.lag_entries = Gauge(
            "pubex_follower_lag_entries",
            "Ledger entries not yet applied",
            labels,
            registry=registry,
        ).labels(name)
        self.lag_ms = Gauge(
            "pubex_follower_lag_ms",
            "Sequencer time of the last applied entry to its commit here (ms)",
            labels,
            registry=registry,
        ).labels(name)
        self.lag_hist = Histogram(
            "pubex_follower_lag_seconds",
            "Per chunk: oldest entry's sequencer time to the chunk's commit",
            labels,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=registry,
        ).labels(name)
        self.entries = Counter(
            "pubex_follower_entries", "Entries applied", labels, registry=registry
        ).labels(name)
        self.skipped = Gauge(
            "pubex_follower_skipped_entries",
            "Ledger entries a projection could not apply (recorded in fl_skipped, skipped)",
            labels,
            registry=registry,
        ).labels(name)


class Follower:
    """Moves one ServiceStore's projections along one ledger; see the module doc."""

    def __init__(
        self,
        name: str,
        ledger: LedgerStore,
        store: ServiceStore,
        projections: Sequence[Projection],
        *,
        chunk_entries: int = 8192,
        poll_min_s: float = 0.0005,
        poll_max_s: float = 0.02,
        clock_ns: Callable[[], int] = time.time_ns,
        metrics: FollowerMetrics | None = None,
    ) -> None:
        assert chunk_entries > 0
        self.name = name
        self.ledger = ledger
        self.store = store
        self.projections = list(projections)
        flushes = (getattr(p, "flush", None) for p in self.projections)
        self._flushes: list[Callable[[Txn], None]] = [f for f in flushes if f is not None]
        self.chunk_entries = chunk_entries
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.clock_ns = clock_ns
        self.metrics = metrics
        for p in self.projections:
            for db in p.dbs:
                store.add_db(db)
        self._skipped_db = store.add_db(SKIPPED)
        self._position = store.position()
        self._check_position()
        self._load()
        self._ledger_seq = self._position.seq
        self._lag_ms = 0.0
        self._applied = 0
        self._chunks = 0
        with store.read() as txn:
            self._skipped: int = txn.stat(self._skipped_db)["entries"]
        if metrics is not None:
            metrics.skipped.set(self._skipped)
        self._wake = trio.Event()

    # -- position ------------------------------------------------------------------

    @property
    def position(self) -> Position:
        return self._position

    def _check_position(self) -> None:
        seq, h = self._position
        if seq == 0:
            return
        found = self.ledger.get(seq)
        if found is None:
            raise LedgerMismatch(f"{self.name}: position {seq} is beyond the ledger's tail")
        if found[1] != h:
            raise LedgerMismatch(f"{self.name}: ledger entry {seq} differs from the one applied")

    def _load(self) -> None:
        with self.store.read() as txn:
            for p in self.projections:
                p.load(self.store, txn)

    # -- one chunk -------------------------------------------------------------------

    def read_chunk(self, limit: int) -> list[Entry]:
        """Up to ``limit`` verified entries after the position (no state change)."""
        expected, prev = self._position.seq + 1, self._position.entry_hash
        out: list[Entry] = []
        raw = self.ledger.iter_raw(expected)
        try:
            for k, v in islice(raw, limit):
                reason, body = check_entry(expected, prev, k, v)
                if body is None:
                    raise ChainBroken(expected, reason)
                h = v[HASH_SIZE:HEADER_SIZE]
                out.append(Entry(body, prev, h))
                expected, prev = expected + 1, h
        finally:
            raw.close()  # end the read txn now, not at garbage collection
        return out

    def step(self, limit: int | None = None) -> int:
        """Apply the next chunk (at most ``limit`` or ``chunk_entries``); returns
        how many entries were applied (0 when the ledger has nothing new)."""
        entries = self.read_chunk(limit or self.chunk_entries)
        if not entries:
            return 0
        try:
            self._apply(entries)
        except StorageUnavailable:
            raise
        except Exception:
            self._load()  # the txn aborted: drop what the projections cached from it
            for entry in entries:  # find the entry that fails; apply the others
                try:
                    self._apply([entry])
                except StorageUnavailable:
                    raise
                except Exception as e:
                    self._load()
                    self._skip(entry, e)
        self._note_chunk(entries)
        return len(entries)

    def _apply(self, entries: list[Entry]) -> None:
        last = entries[-1]
        new_pos = Position(last.seq, last.entry_hash)
        projections, flushes = self.projections, self._flushes

        def write(txn: Txn) -> None:
            for entry in entries:
                for p in projections:
                    p.apply(txn, entry)
            for flush in flushes:
                flush(txn)

        self.store.write(write, new_pos, on_retry=self._load)
        self._position = new_pos

    def _skip(self, entry: Entry, error: Exception) -> None:
        """Record ``entry`` as not applied and move the position past it (see
        the module doc: a projection never crash-loops on one entry)."""
        failing = "?"
        tb = error.__traceback__
        while tb is not None:  # the innermost projection frame names the culprit
            owner = tb.tb_frame.f_locals.get("self")
            if any(owner is p for p in self.projections):
                failing = type(owner).__name__
            tb = tb.tb_next
        record = {"seq": entry.seq, "projection": failing, "error": repr(error)[:1000]}
        new_pos = Position(entry.seq, entry.entry_hash)

        def write(txn: Txn) -> None:
            txn.put(entry.seq.to_bytes(8, "big"), _json.encode(record), db=self._skipped_db)

        self.store.write(write, new_pos)
        self._position = new_pos
        self._skipped += 1
        if self.metrics is not None:
            self.metrics.skipped.set(self._skipped)
        print(
            f"{self.name}: ledger entry {entry.seq} not applied ({failing}: {error!r:.300}); "
            "recorded in fl_skipped, following on",
            file=sys.stderr,
            flush=True,
        )

    def skipped(self, limit: int = 100) -> list[dict[str, Any]]:
        """The entries this store skipped (oldest first)."""
        dec = msgspec.json.Decoder(dict[str, Any])
        with self.store.read() as txn:
            cur = txn.cursor(self._skipped_db)
            return [dec.decode(v) for _, v in islice(cur.iternext(), limit)]

    def _note_chunk(self, entries: list[Entry]) -> None:
        now = self.clock_ns()
        self._applied += len(entries)
        self._chunks += 1
        self._ledger_seq = max(self._ledger_seq, self._position.seq)
        self._lag_ms = (now - entries[-1].ts_ns) / 1e6
        m = self.metrics
        if m is not None:
            m.position.set(self._position.seq)
            m.entries.inc(len(entries))
            m.lag_ms.set(self._lag_ms)
            m.lag_hist.observe(max(0, now - entries[0].ts_ns) / 1e9)
            m.lag_entries.set(self._ledger_seq - self._position.seq)

    def catch_up(self) -> int:
        """Apply everything the ledger holds now (synchronously); returns the count."""
        total = 0
        while n := self.step():
            total += n
        self.refresh_tail()
        return total

    # -- lag -------------------------------------------------------------------------

    def refresh_tail(self) -> int:
        """Re-read the ledger's last seq (one short read txn) for the lag figures."""
        self._ledger_seq = self.ledger.last_seq()
        if self.metrics is not None:
            self.metrics.lag_entries.set(self._ledger_seq - self._position.seq)
        return self._ledger_seq

    def statistics(self) -> FollowerStats:
        return FollowerStats(
            self._position.seq,
            self._ledger_seq,
            max(0, self._ledger_seq - self._position.seq),
            self._lag_ms,
            self._applied,
            self._chunks,
            self._skipped,
        )

    # -- live ------------------------------------------------------------------------

    def wake(self) -> None:
        """Cut the current poll sleep short (call from the follower's trio thread)."""
        self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Catch up, report started, then follow the tail until cancelled."""
        await self._drain()
        task_status.started()
        delay = self.poll_min_s
        seen = -1
        while True:
            txnid = self.ledger.last_txnid()
            if txnid != seen:
                await self._drain()
                # LMDB shows a commit's meta page (what last_txnid reads) before new
                # read txns may use it (the writer publishes it to readers after the
                # meta's synced write): a drain in that window reads the older
                # snapshot.  The txnid counts as seen only once a read txn reached it;
                # else poll again shortly.  (A commit during the drain shows next round.)
                if self._snapshot_txnid() >= txnid:
                    seen = txnid
                    delay = self.poll_min_s
                    continue
            with trio.move_on_after(delay):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = trio.Event()
                delay = self.poll_min_s
            else:
                delay = min(delay * 2, self.poll_max_s)

    def _snapshot_txnid(self) -> int:
        """The txnid a read txn begun now sees."""
        with self.ledger.env.begin() as txn:
            txnid: int = txn.id()
        return txnid

    async def _drain(self) -> None:
        while self.step():
            await trio.lowlevel.checkpoint()
        self.refresh_tail()
