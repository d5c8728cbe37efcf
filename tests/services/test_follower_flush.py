"""The follower's optional per-chunk ``flush(txn)``: a projection that keeps its writes in
memory during a chunk and writes them back once, in the chunk's txn, ends equal to one
that writes through on every entry -- across chunk sizes, restarts and a map-full retry."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import lmdb

from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Entry, Follower
from tests.services.conftest import hot_land  # noqa: F401 (fixture)

Txn: TypeAlias = "lmdb.Transaction[bytes]"


class PerLot:
    """Entries seen per lot, written through on every entry."""

    dbs = (b"per_lot",)

    def load(self, store: ServiceStore, txn: Txn) -> None:
        self.db = store.db(b"per_lot")

    def key(self, entry: Entry) -> bytes:
        return str(getattr(entry.command, "lot_id", "-")).encode()

    def count(self, txn: Txn, key: bytes) -> int:
        raw = txn.get(key, db=self.db)
        return int.from_bytes(raw, "big") if raw else 0

    def apply(self, txn: Txn, entry: Entry) -> None:
        k = self.key(entry)
        txn.put(k, (self.count(txn, k) + 1).to_bytes(8, "big"), db=self.db)


class PerLotWriteBack(PerLot):
    """The same counts, kept in memory during a chunk and put once in ``flush``."""

    def load(self, store: ServiceStore, txn: Txn) -> None:
        super().load(store, txn)
        self.pending: dict[bytes, int] = {}
        self.flushes = getattr(self, "flushes", 0)

    def apply(self, txn: Txn, entry: Entry) -> None:
        k = self.key(entry)
        n = self.pending.get(k)
        self.pending[k] = (self.count(txn, k) if n is None else n) + 1

    def flush(self, txn: Txn) -> None:
        for k, n in self.pending.items():
            txn.put(k, n.to_bytes(8, "big"), db=self.db)
        self.pending.clear()
        self.flushes += 1


def counts(store: ServiceStore) -> dict[bytes, bytes]:
    with store.read() as txn:
        return dict(txn.cursor(db=store.db(b"per_lot")).iternext())


def run(ledger: Path, d: Path, proj: PerLot, limits: list[int | None], **kw: int) -> ServiceStore:
    for limit in limits:  # one process lifetime per limit: reopen, one step
        with LedgerStore.open(ledger, readonly=True) as ls, ServiceStore.open(d) as ss:
            f = Follower("t", ls, ss, [proj], **kw)
            if limit is None:
                f.catch_up()
            else:
                f.step(limit)
    return ServiceStore.open(d, PerLot.dbs)


def test_flush_once_per_chunk_equals_write_through(hot_land: Path, tmp_path: Path) -> None:  # noqa: F811
    with run(hot_land, tmp_path / "ref", PerLot(), [None]) as ref:
        expected = counts(ref)
    wb = PerLotWriteBack()
    with run(hot_land, tmp_path / "wb", wb, [1, 7, 50, 3, None], chunk_entries=64) as got:
        assert counts(got) == expected
    last = LedgerStore.open(hot_land, readonly=True)
    with last:
        n = last.last_seq()
    assert wb.flushes == 4 + -(-(n - 61) // 64)  # one flush per chunk, never per entry


class FullOnce(PerLotWriteBack):
    """The first flush finds the map full: the txn aborts, the map grows, load() runs
    again (dropping what the aborted txn held) and the chunk is applied from scratch."""

    full = True

    def flush(self, txn: Txn) -> None:
        if self.full:
            self.full = False
            raise lmdb.MapFullError("test: map full")
        super().flush(txn)


def test_pending_writes_are_dropped_and_redone_after_a_map_full(
    hot_land: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    with run(hot_land, tmp_path / "ref", PerLot(), [None]) as ref:
        expected = counts(ref)
    proj = FullOnce()
    with run(hot_land, tmp_path / "wb", proj, [None], chunk_entries=100) as got:
        assert counts(got) == expected
    assert not proj.full
