"""Shared helpers for the ledger tests: build valid batches and chains."""

from __future__ import annotations

from pathlib import Path

import lmdb

from ledger.record import EntryBody, encode_body, make_entry
from ledger.store import Batch, LedgerStore


def body_bytes(seq: int, size: int = 200) -> bytes:
    """A valid EntryBody for ``seq`` whose opaque command pads it to ~``size`` bytes."""
    cmd = (seq.to_bytes(8, "big") * (size // 8 + 1))[: max(size - 40, 1)]
    return encode_body(EntryBody(seq=seq, ts_ns=1_000 + seq, command=cmd, events=b"ev"))


def make_batch(prev: bytes, first_seq: int, n: int, size: int = 200) -> tuple[Batch, bytes]:
    """A batch of ``n`` valid entries following ``prev``; returns (batch, last hash)."""
    batch = Batch()
    for seq in range(first_seq, first_seq + n):
        prev, value = make_entry(prev, body_bytes(seq, size))
        batch.entries.append((seq, value))
    return batch, prev


def write_chain(store: LedgerStore, n: int, per_batch: int = 10, size: int = 200) -> bytes:
    """Append ``n`` valid entries in batches; return the last hash."""
    h = store.last_hash()
    seq = store.last_seq() + 1
    while seq <= n:
        k = min(per_batch, n - seq + 1)
        batch, h = make_batch(h, seq, k, size)
        store.commit_batch(batch)
        seq += k
    return h


def raw_env(path: Path) -> tuple[lmdb.Environment, object]:
    """Open the ledger env directly (the tamperer's view) and its entries db."""
    env = lmdb.open(str(path), max_dbs=8)
    return env, env.open_db(b"entries")


def signed_ledger(data: Path, bids: int = 80, checkpoint_every: int = 10) -> Path:
    """A data dir written by the trio Runtime (server key, signed checkpoints
    every ``checkpoint_every`` entries): one English lot with ``bids`` bids."""
    import time

    import trio

    from engine.messages import ConfirmDeposit, CreateLot, PlaceBid, PublishLot, RegisterBidder
    from gateway.sequencer.runtime import Runtime

    async def main() -> None:
        rt = Runtime.open(
            data,
            journal_options={
                "checkpoint_every_entries": checkpoint_every,
                "snapshot_every_entries": 25,
            },
        )
        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    await nursery.start(rt.run)
                    now = time.time_ns()
                    staff = [
                        CreateLot("staff:t", 1, "R-1", "english", "r", 1000, 10, now, now + 10**15),
                        PublishLot("staff:t", 2, "R-1"),
                        RegisterBidder("staff:t", 3, "R-1", "b"),
                        ConfirmDeposit("staff:t", 4, "R-1", "b", 0),
                    ]
                    for cmd in staff:
                        assert (await rt.call(cmd)).error is None
                    for i in range(bids):
                        out = await rt.call(PlaceBid("bidder:b", i + 1, "R-1", 1000 + 10 * i))
                        assert out.error is None
                    nursery.cancel_scope.cancel()
        finally:
            rt.store.close()

    trio.run(main)
    return data
