"""LedgerStore: the ledger's LMDB environment (entries, snapshots, checkpoints, meta,
batches).

One environment under a directory, five named databases keyed by big-endian
u64 seq (meta by arbitrary bytes; batches, absent from ledgers written before
it, by the last seq of each committed batch).  The writer hands a whole :class:`Batch` to
:meth:`LedgerStore.commit_batch`, which puts everything in ONE write
transaction: one fsync covers all the commands that queued while the last
fsync ran, and a crash leaves either the whole batch or none of it.

``commit_batch`` is synchronous and meant for a worker thread
(``trio.to_thread.run_sync``); it touches no trio object.  Its outcomes:

* returns            -> every entry of the batch is durable; acknowledge them.
* ``LedgerCorrupt``  -> the writer handed a batch that does not extend the
  chain (gap, backwards seq, prev hash not linking).  A bug, not a storage
  fault: crash rather than skip.
* ``StorageUnavailable`` -> nothing of the batch is visible; refuse every
  not-yet-durable command with a typed error.

One writer per ledger: :meth:`LedgerStore.open` (not read-only) holds the
directory's ``writer.lock`` (:mod:`persistence.lock`) until :meth:`close`; a
second writer gets ``DirectoryInUse`` naming the first.  Readers (verify,
replay, companions) open with ``readonly=True`` and take no lock; LMDB lets
many processes read while one writes.  LMDB forbids opening the same
environment twice in one process, so in-process readers share the writer's
store object; they must not hold a read transaction (e.g. an unfinished
:meth:`iter_entries`) while ``commit_batch`` may grow the map.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import lmdb
import msgspec

from ledger.record import GENESIS, HASH_SIZE, HEADER_SIZE, key_seq, seq_key, unpack_value
from persistence.env import (
    DEFAULT_MAP_CAP,
    DEFAULT_MAP_SIZE,
    StorageUnavailable,
    adopt_map_size,
    grow_map,
    open_env,
)
from persistence.lock import DirectoryInUse, WriterLock

_pack_key = struct.Struct(">Q").pack  # == seq_key, without the call

__all__ = ["Batch", "DirectoryInUse", "LedgerCorrupt", "LedgerStore", "StorageUnavailable"]

ENTRIES = b"entries"
SNAPSHOTS = b"snapshots"
CHECKPOINTS = b"checkpoints"
META = b"meta"
BATCHES = b"batches"  # last seq of every committed batch: receipts can be re-derived


class LedgerCorrupt(RuntimeError):
    """A batch would break the chain (gap, reorder, bad link): a crash, not a skip."""


class Batch(msgspec.Struct):
    """Everything one write transaction commits."""

    entries: list[tuple[int, bytes]] = msgspec.field(default_factory=list)  # (seq, packed)
    snapshots: list[tuple[int, bytes]] = msgspec.field(default_factory=list)
    checkpoints: list[tuple[int, bytes]] = msgspec.field(default_factory=list)
    meta: dict[bytes, bytes] = msgspec.field(default_factory=dict)


class LedgerStore:
    """The ledger's LMDB environment; see the module docstring for the contract."""

    def __init__(self, env: lmdb.Environment, *, readonly: bool, map_cap: int) -> None:
        self.env = env
        self.readonly = readonly
        self.map_cap = map_cap
        # Fault-injection seam (tests only; production leaves it None): called with
        # the 1-based count of commit attempts right before txn.commit().  A hook
        # that raises OSError / lmdb.Error simulates an I/O error at the K-th commit.
        self.fault_hook: Callable[[int], None] | None = None
        self.commit_attempts = 0
        self.map_grows = 0
        self._lock: WriterLock | None = None  # the directory's writer lock (open())
        create = not readonly
        self._entries = env.open_db(ENTRIES, create=create)
        self._snapshots = env.open_db(SNAPSHOTS, create=create)
        self._checkpoints = env.open_db(CHECKPOINTS, create=create)
        self._meta = env.open_db(META, create=create)
        self._batches = self._optional_db(env, BATCHES, create)

    @staticmethod
    def _optional_db(env: lmdb.Environment, name: bytes, create: bool) -> lmdb._Database | None:
        """A db added after the first ledgers were written: absent in an old
        ledger opened read-only (its readers then do without it)."""
        try:
            return env.open_db(name, create=create)
        except lmdb.NotFoundError:
            return None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
        map_cap: int = DEFAULT_MAP_CAP,
    ) -> LedgerStore:
        """Open (creating unless ``readonly``) the ledger environment in ``path``."""
        # The writer takes the directory's lock first: a second writer is refused
        # (DirectoryInUse, naming the holder) before LMDB or the chain is touched.
        lock = None if readonly else WriterLock.acquire(path)
        try:
            env = open_env(path, readonly=readonly, map_size=map_size, max_dbs=8)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        try:
            store = cls(env, readonly=readonly, map_cap=map_cap)
        except BaseException:
            env.close()
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        return store

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        self.env.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------

    def _read_txn(self) -> lmdb.Transaction[bytes]:
        """Begin a read txn, adopting a map grown by the writer process if needed."""
        try:
            return self.env.begin()
        except lmdb.MapResizedError:
            adopt_map_size(self.env)
            return self.env.begin()

    def _last_item(self, txn: lmdb.Transaction[bytes]) -> tuple[int, bytes]:
        """(last seq, last hash) seen by ``txn``; (0, GENESIS) when empty."""
        cur = txn.cursor(self._entries)
        if not cur.last():
            return 0, GENESIS
        return key_seq(cur.key()), cur.value()[HASH_SIZE:HEADER_SIZE]

    def last_seq(self) -> int:
        with self._read_txn() as txn:
            return self._last_item(txn)[0]

    def last_hash(self) -> bytes:
        with self._read_txn() as txn:
            return self._last_item(txn)[1]

    def get(self, seq: int) -> tuple[bytes, bytes, bytes] | None:
        """(prev, hash, body) of entry ``seq``, or None."""
        with self._read_txn() as txn:
            v = txn.get(seq_key(seq), db=self._entries)
        return None if v is None else unpack_value(v)

    def iter_entries(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """Stream (seq, prev, hash, body) for from_seq <= seq <= until_seq.

        One read txn for the whole walk gives a consistent view; values are
        yielded as they are read, never loaded all at once.
        """
        with self._read_txn() as txn:
            cur = txn.cursor(self._entries)
            if not cur.set_range(seq_key(max(from_seq, 0))):
                return
            for k, v in cur.iternext():
                seq = key_seq(k)
                if until_seq is not None and seq > until_seq:
                    return
                yield seq, v[:HASH_SIZE], v[HASH_SIZE:HEADER_SIZE], v[HEADER_SIZE:]
                if seq == until_seq:  # not one entry further: past it may be damage
                    return

    def iter_raw(self, from_seq: int = 1) -> Generator[tuple[bytes, bytes], None, None]:
        """Stream raw (key, value) pairs of the entries db from ``from_seq`` on
        (verification, followers).  One read txn until the generator ends or
        is closed: close it promptly (see the module docstring)."""
        with self._read_txn() as txn:
            cur = txn.cursor(self._entries)
            if from_seq <= 1 or cur.set_range(seq_key(from_seq)):
                yield from cur.iternext()

    def last_txnid(self) -> int:
        """LMDB's id of the last committed write txn: changes on every commit,
        costs no read txn -- what a follower polls before reading."""
        txnid: int = self.env.info()["last_txnid"]
        return txnid

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        """(seq, snapshot) with the highest seq, or None."""
        with self._read_txn() as txn:
            cur = txn.cursor(self._snapshots)
            return (key_seq(cur.key()), cur.value()) if cur.last() else None

    def snapshot_at_or_before(self, seq: int) -> tuple[int, bytes] | None:
        """The newest snapshot whose seq <= ``seq``, or None."""
        with self._read_txn() as txn:
            cur = txn.cursor(self._snapshots)
            # Land on the first key > seq, then step back one.
            found = cur.prev() if cur.set_range(seq_key(seq + 1)) else cur.last()
            return (key_seq(cur.key()), cur.value()) if found else None

    def batch_end(self, seq: int) -> int | None:
        """The last seq of the committed batch holding ``seq`` (None if unknown)."""
        bounds = self.batch_bounds(seq)
        return None if bounds is None else bounds[1]

    def batch_bounds(self, seq: int) -> tuple[int, int] | None:
        """(first, last) seq of the committed batch holding ``seq`` (None if unknown)."""
        if self._batches is None:
            return None
        with self._read_txn() as txn:
            cur = txn.cursor(self._batches)
            if not cur.set_range(seq_key(seq)):
                return None
            last = key_seq(cur.key())
            first = key_seq(cur.key()) + 1 if cur.prev() else 1
            return first, last

    def get_meta(self, key: bytes) -> bytes | None:
        with self._read_txn() as txn:
            return txn.get(key, db=self._meta)

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """All stored (seq, signed checkpoint blob), by seq."""
        return self.checkpoints_after(0)

    def checkpoints_after(self, seq: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        """Stored (seq, blob) with seq > ``seq``, by seq, at most ``limit``."""
        out: list[tuple[int, bytes]] = []
        with self._read_txn() as txn:
            cur = txn.cursor(self._checkpoints)
            if not cur.set_range(seq_key(seq + 1)):
                return out
            for k, v in cur.iternext():
                out.append((key_seq(k), v))
                if limit is not None and len(out) >= limit:
                    break
        return out

    # -- writes ------------------------------------------------------------------

    def commit_batch(self, batch: Batch, staged: Callable[[], None] | None = None) -> None:
        """Commit the whole batch durably in one write txn (see module docstring).

        ``staged`` runs once the batch's entries are in the txn, before the side
        records and the fsync'd commit (the commit worker uses it to end its
        GIL-hungry phase)."""
        if self.readonly:
            raise StorageUnavailable("ledger store opened read-only")
        while True:
            try:
                self._commit_once(batch, staged)
                return
            except lmdb.MapFullError:
                # The failed txn was aborted; grow (raises StorageUnavailable at
                # the cap) and retry the WHOLE batch: LMDB kept none of it.
                grow_map(self.env, cap=self.map_cap)
                self.map_grows += 1
            except LedgerCorrupt:
                raise
            except (lmdb.Error, OSError) as e:
                raise StorageUnavailable(f"ledger commit failed: {e!r}") from e

    def _commit_once(self, batch: Batch, staged: Callable[[], None] | None = None) -> None:
        txn = self.env.begin(write=True)
        try:
            self._put_entries(txn, batch.entries)
            if staged is not None:
                staged()  # the GIL-hungry part (one GIL re-take per entry) is over
            self._put_side(txn, batch)
            self.commit_attempts += 1
            if self.fault_hook is not None:
                self.fault_hook(self.commit_attempts)
            txn.commit()
        except BaseException:
            txn.abort()  # no-op after a failed commit (LMDB already freed it)
            raise

    def _put_entries(self, txn: lmdb.Transaction[bytes], entries: list[tuple[int, bytes]]) -> None:
        """Append entries, refusing anything that does not extend the chain.

        The writer computed the hashes; re-checking that the sequence numbers
        run on from the stored last entry without a gap and that every entry's
        prev hash is the hash before it turns a writer bug into a crash here
        instead of a chain that verify() rejects later.  The checks and the
        puts are each one C-level pass (``putmulti``): this thread holds the
        GIL for as little as it can, so the event loop keeps it."""
        if not entries:
            return
        last, last_h = self._last_item(txn)
        first_seq, n = entries[0][0], len(entries)
        if first_seq != last + 1 or entries[-1][0] != last + n:
            raise LedgerCorrupt(f"append refused: seq {first_seq}..{entries[-1][0]} after {last}")
        values = [v for _, v in entries]
        prevs = [v[:HASH_SIZE] for v in values]
        hashes = [last_h, *(v[HASH_SIZE:HEADER_SIZE] for v in values[:-1])]
        if prevs != hashes or min(map(len, values)) < HEADER_SIZE:
            bad = next(
                (s for (s, v), h in zip(entries, hashes, strict=True) if v[:HASH_SIZE] != h),
                first_seq,
            )
            raise LedgerCorrupt(f"append refused: seq {bad} prev hash does not link")
        items = [(_pack_key(s), v) for s, v in entries]
        _consumed, added = txn.cursor(self._entries).putmulti(items, append=True)
        if added != n:
            raise LedgerCorrupt(f"append refused by LMDB at seq {first_seq + added}")

    def _put_side(self, txn: lmdb.Transaction[bytes], batch: Batch) -> None:
        """Snapshots, checkpoints, meta and the batch boundary ride in the same txn."""
        if batch.entries and self._batches is not None:
            txn.put(seq_key(batch.entries[-1][0]), b"", db=self._batches)
        for seq, snap in batch.snapshots:
            txn.put(seq_key(seq), snap, db=self._snapshots)
        for seq, blob in batch.checkpoints:
            txn.put(seq_key(seq), blob, db=self._checkpoints)
        for k, v in batch.meta.items():
            txn.put(k, v, db=self._meta)
