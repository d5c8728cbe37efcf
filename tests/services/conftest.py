"""Shared helpers for the services tests: a small projection that records
every entry it sees, and simulated ledgers."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import lmdb
import pytest

from persistence.service import ServiceStore
from services.follower import Entry

Txn: TypeAlias = "lmdb.Transaction[bytes]"


class SeenProjection:
    """Records each applied seq with its hash (a second apply of one seq fails
    loudly) and counts events by type."""

    dbs = (b"seen", b"counts")

    def __init__(self) -> None:
        self.loads = 0

    def load(self, store: ServiceStore, txn: Txn) -> None:
        self.seen, self.counts = store.db(b"seen"), store.db(b"counts")
        self.loads += 1

    def apply(self, txn: Txn, entry: Entry) -> None:
        key = entry.seq.to_bytes(8, "big")
        assert txn.put(key, entry.entry_hash, db=self.seen, overwrite=False), (
            f"seq {entry.seq} applied twice"
        )
        for ev in entry.events:
            tag = ev.__struct_config__.tag
            assert isinstance(tag, str)
            old = txn.get(tag.encode(), db=self.counts)
            n = 1 + (int.from_bytes(old, "big") if old else 0)
            txn.put(tag.encode(), n.to_bytes(8, "big"), db=self.counts)


def dump(store: ServiceStore) -> dict[bytes, dict[bytes, bytes]]:
    """The SeenProjection's dbs as plain dicts."""
    with store.read() as txn:
        return {name: dict(txn.cursor(db=store.db(name)).iternext()) for name in SeenProjection.dbs}


@pytest.fixture(scope="session")
def hot_land(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated hot-land ledger (a few hundred entries, many batches)."""
    from simulators.run import simulate

    d = tmp_path_factory.mktemp("hotland") / "ledger"
    simulate("hot-land", 3, d)
    return d
