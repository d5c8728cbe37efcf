"""Publishing the ledger's signed checkpoints (the disclosure's checkpoint feed).

A checkpoint is published once the follower has verified the chain up to its
seq and its signature verifies under the server's key with the entry hash the
ledger holds at that seq; then it is copied into the service's own store
(``checkpoints``: seq -> blob), from which the feed is served.  Publishing is
idempotent (keyed by seq), so it needs no tracking position of its own: after a
restart it simply looks for checkpoints after the last one it holds.

A checkpoint that does not verify is never published; it is counted
(``refused``) and the publisher moves past it.
"""

from __future__ import annotations

from typing import Any

from nacl.signing import VerifyKey

from ledger.checkpoint import BadCheckpoint, verify_checkpoint
from ledger.record import key_seq, seq_key
from ledger.store import LedgerStore
from persistence.service import ServiceStore

CHECKPOINTS = b"checkpoints"
_BATCH = 1000


class CheckpointPublisher:
    def __init__(self, ledger: LedgerStore, store: ServiceStore, server_pub: bytes) -> None:
        self.ledger = ledger
        self.store = store
        self.server_pub = server_pub
        self.key = VerifyKey(server_pub)
        self.db = store.add_db(CHECKPOINTS)
        self.refused = 0
        self._last = self._last_published()

    def _last_published(self) -> int:
        with self.store.read() as txn:
            cur = txn.cursor(db=self.db)
            return key_seq(cur.key()) if cur.last() else 0

    def publish(self, upto_seq: int) -> int:
        """Publish the ledger's checkpoints after the last published, up to
        ``upto_seq`` (the follower's verified position); returns how many."""
        published: list[tuple[int, bytes]] = []
        after = self._last
        while True:
            found = self.ledger.checkpoints_after(after, _BATCH)
            for seq, blob in found:
                if seq > upto_seq:
                    break
                if self._valid(seq, blob):
                    published.append((seq, blob))
                else:
                    self.refused += 1
                after = seq
            else:
                if len(found) == _BATCH:
                    continue
            break
        if after == self._last:
            return 0

        def write(txn: Any) -> None:
            for seq, blob in published:
                txn.put(seq_key(seq), blob, db=self.db)

        self.store.write(write)
        self._last = after
        return len(published)

    def _valid(self, seq: int, blob: bytes) -> bool:
        try:
            cp = verify_checkpoint(self.key, blob)
        except BadCheckpoint:
            return False
        entry = self.ledger.get(seq)
        return cp.seq == seq and entry is not None and entry[1] == cp.entry_hash

    def page(self, since: int, limit: int) -> list[tuple[int, bytes]]:
        """Published (seq, blob) with seq > ``since``, oldest first."""
        out: list[tuple[int, bytes]] = []
        with self.store.read() as txn:
            cur = txn.cursor(db=self.db)
            if cur.set_range(seq_key(since + 1)):
                for k, v in cur.iternext():
                    out.append((key_seq(k), v))
                    if len(out) >= limit:
                        break
        return out
