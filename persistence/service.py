"""ServiceStore: a companion service's own LMDB environment.

Theory of operation
-------------------
Each companion (supervision, registry, disclosure) follows the ledger and keeps
what it derives -- its projections -- in an environment of its own, never in
the ledger's.  Beside the projections lies the tracking position: the sequence
number and entry hash of the last ledger entry applied.  Both are written in
ONE write transaction (:meth:`ServiceStore.write`), so after a crash the store
holds either a chunk's projection updates *and* its new position, or neither:
a restart resumes exactly after the last applied entry and never applies one
twice.  The stored hash also pins the ledger the position belongs to; the
follower refuses to resume against a ledger whose entry at that seq differs.

One process per store: :meth:`ServiceStore.open` holds ``writer.lock`` in the
store's directory (:mod:`persistence.lock`) until :meth:`close`; a second
instance of the companion gets ``DirectoryInUse`` naming the first.

Named databases: ``tracking`` (the position) plus whatever the projections
declare.  Opened through :func:`persistence.env.open_env`, so the same durable
settings hold as for the ledger: a committed chunk survives power loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self, TypeAlias

import lmdb

from persistence.env import (
    DEFAULT_MAP_CAP,
    DEFAULT_MAP_SIZE,
    StorageUnavailable,
    adopt_map_size,
    grow_map,
    open_env,
)
from persistence.lock import DirectoryInUse, WriterLock

__all__ = [
    "GENESIS_POSITION",
    "DirectoryInUse",
    "Position",
    "ServiceStore",
    "StorageUnavailable",
]

TRACKING = b"tracking"
_POSITION_KEY = b"position"
HASH_SIZE = 32


class Position(NamedTuple):
    """The last ledger entry a service applied: (seq, entry hash)."""

    seq: int
    entry_hash: bytes


GENESIS_POSITION = Position(0, bytes(HASH_SIZE))  # nothing applied yet

Txn: TypeAlias = "lmdb.Transaction[bytes]"


def encode_position(pos: Position) -> bytes:
    return pos.seq.to_bytes(8, "big") + pos.entry_hash


def decode_position(raw: bytes) -> Position:
    if len(raw) != 8 + HASH_SIZE:
        raise ValueError(f"tracking position must be {8 + HASH_SIZE} bytes, got {len(raw)}")
    return Position(int.from_bytes(raw[:8], "big"), raw[8:])


class ServiceStore:
    """A companion's LMDB environment: tracking position + named projection dbs."""

    def __init__(self, env: lmdb.Environment, dbs: Iterable[bytes], *, map_cap: int) -> None:
        self.env = env
        self.map_cap = map_cap
        self._lock: WriterLock | None = None  # the directory's writer lock (open())
        self._tracking = env.open_db(TRACKING, create=True)
        self._dbs: dict[bytes, lmdb._Database] = {}
        for name in dbs:
            self.add_db(name)

    @classmethod
    def open(
        cls,
        path: str | Path,
        dbs: Iterable[bytes] = (),
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        map_cap: int = DEFAULT_MAP_CAP,
        max_dbs: int = 32,
    ) -> ServiceStore:
        """Open (creating) the service's environment in ``path`` with ``dbs``."""
        lock = WriterLock.acquire(path)  # one process per store (persistence.lock)
        try:
            env = open_env(path, map_size=map_size, max_dbs=max_dbs)
            try:
                store = cls(env, dbs, map_cap=map_cap)
            except BaseException:
                env.close()
                raise
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    def add_db(self, name: bytes) -> lmdb._Database:
        """Open (creating) a named db; idempotent.  Not inside a live txn."""
        if name == TRACKING:
            raise ValueError("the tracking db is the follower's")
        db = self._dbs.get(name)
        if db is None:
            db = self._dbs[name] = self.env.open_db(name, create=True)
        return db

    def db(self, name: bytes) -> lmdb._Database:
        """A named db opened by :meth:`open` / :meth:`add_db`."""
        return self._dbs[name]

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

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read transaction (closed on exit)."""
        try:
            txn = self.env.begin()
        except lmdb.MapResizedError:
            adopt_map_size(self.env)
            txn = self.env.begin()
        with txn:
            yield txn

    def position(self) -> Position:
        with self.read() as txn:
            raw = txn.get(_POSITION_KEY, db=self._tracking)
        return GENESIS_POSITION if raw is None else decode_position(raw)

    # -- writes ------------------------------------------------------------------

    def write(
        self,
        fn: Callable[[Txn], None],
        position: Position | None = None,
        *,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        """Run ``fn(txn)`` in one durable write txn, storing ``position`` with it.

        A full map aborts the txn (LMDB keeps nothing of it), grows the map and
        runs ``fn`` again from the start -- so ``fn`` must derive everything it
        writes from the txn and its arguments; ``on_retry`` is called before a
        re-run for callers holding in-memory state that ``fn`` mutated.  Other
        storage errors raise ``StorageUnavailable`` with nothing written.
        """
        while True:
            txn = self.env.begin(write=True)
            try:
                fn(txn)
                if position is not None:
                    txn.put(_POSITION_KEY, encode_position(position), db=self._tracking)
                txn.commit()
                return
            except lmdb.MapFullError:
                txn.abort()
                grow_map(self.env, cap=self.map_cap)
                if on_retry is not None:
                    on_retry()
            except lmdb.BadValsizeError as e:
                # a key too long for LMDB: the content's fault, not the storage's
                txn.abort()
                raise ValueError(f"service store: unstorable key or value: {e!r}") from e
            except (lmdb.Error, OSError) as e:
                txn.abort()
                raise StorageUnavailable(f"service store commit failed: {e!r}") from e
            except BaseException:
                txn.abort()
                raise
