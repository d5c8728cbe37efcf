"""Theory of operation: the journal, the synchronous core of the sequencer.

``append(cmd, ts_ns)`` applies one command to the engine at the sequencer's
time, encodes the ledger entry (the command, the events it produced and the
connection facts in ``meta``), chains its hash onto the previous entry and
adds it to the open batch.  Nothing here is durable: the caller commits
``take()``-n batches (``LedgerStore.commit_batch``, in a worker thread in the
trio runtime, inline in the simulator) and releases acknowledgements only
after that commit returns.  The engine runs ahead of durability; if a commit
fails, the caller refuses every not-yet-durable command and rebuilds the
engine from the store (``ledger.replay.recover``), so state never contains
anything the ledger does not.

Every ``snapshot_every_entries`` entries the engine's state rides along in the
same batch (atomic with the entry it follows); every
``checkpoint_every_entries`` the server signs (seq, entry hash, time).

Entry layout: ``command`` is the engine command as msgpack; ``meta`` holds the
envelope as received at the edge (raw frame, signature, key id, client IP,
device fingerprint) once the gateway supplies it.
"""

from __future__ import annotations

from nacl.signing import SigningKey

from engine.codes import Reject
from engine.messages import Command, Event, encode_command, encode_events
from engine.router import Router
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.record import EntryBody, chain_entry, encode_body
from ledger.snapshot import encode_snapshot
from ledger.store import Batch, LedgerStore


class Outcome:
    """One command's result: pending durability until its batch commits, then
    handed to the submitter as is; or a typed refusal (``error``) from the runtime."""

    __slots__ = ("batch", "body_hash", "entry_hash", "error", "events", "receipt", "seq", "ts_ns")

    def __init__(
        self,
        seq: int,
        ts_ns: int,
        events: list[Event],
        entry_hash: bytes,
        error: Reject | None = None,
        body_hash: bytes = b"",
    ) -> None:
        self.seq = seq
        self.ts_ns = ts_ns
        self.events = events
        self.entry_hash = entry_hash
        self.error = error
        self.body_hash = body_hash
        # Set by the runtime once the batch is durable: the server's signed
        # Receipt of the batch's last entry, and the receipt group's first seq
        # and body hashes (for the proof) -- plain data shared by the group,
        # never the outcomes themselves: an outcome holding a list that holds
        # it was a reference cycle per command, ~23,000 objects for the
        # collector every few hundred milliseconds (10-20 ms pauses).
        self.receipt = b""
        self.batch: tuple[int, tuple[bytes, ...]] | None = None

    def proof(self) -> list[bytes]:
        """Body hashes chaining this entry to the receipt's (its group's last) entry."""
        batch = self.batch
        if not batch:
            return []
        first, hashes = batch
        return list(hashes[self.seq - first + 1 :])

    @classmethod
    def refused(cls, code: Reject) -> Outcome:
        return cls(0, 0, [], b"", code)


class Journal:
    def __init__(
        self,
        store: LedgerStore,
        router: Router,
        *,
        signing_key: SigningKey | None = None,
        snapshot_every_entries: int = 100_000,
        checkpoint_every_entries: int = 1_000,
        batch_max_entries: int = 1024,
        batch_max_bytes: int = 4 << 20,
    ) -> None:
        self.store = store
        self.router = router
        self.signing_key = signing_key
        self.snapshot_every = snapshot_every_entries
        self.checkpoint_every = checkpoint_every_entries
        self.batch_max_entries = batch_max_entries
        self.batch_max_bytes = batch_max_bytes
        self.prev_hash = store.last_hash()
        assert router.applied == store.last_seq(), "engine and ledger disagree"
        self.batch = Batch()
        self.batch_bytes = 0

    def append(self, cmd: Command, ts_ns: int, meta: bytes = b"") -> Outcome:
        """Apply and chain one command.  Whether the command can be stored is
        known before it is applied (its encoding raises first); if applying it
        or encoding its events raises, nothing is chained, but the engine may
        be half-changed: the caller must rebuild it (``rebuild_router``)."""
        command = encode_command(cmd)
        events = self.router.apply(cmd, ts_ns)
        seq = self.router.applied
        body = encode_body(EntryBody(seq, ts_ns, command, encode_events(events), meta))
        entry_hash, value, body_hash = chain_entry(self.prev_hash, body)
        self.prev_hash = entry_hash
        batch = self.batch
        batch.entries.append((seq, value))
        self.batch_bytes += len(value)
        if seq % self.snapshot_every == 0:
            batch.snapshots.append((seq, encode_snapshot(self.router)))
        if self.signing_key is not None and seq % self.checkpoint_every == 0:
            self.add_checkpoint(seq, entry_hash, ts_ns)
        return Outcome(seq, ts_ns, events, entry_hash, None, body_hash)

    def add_checkpoint(self, seq: int, entry_hash: bytes, ts_ns: int) -> None:
        assert self.signing_key is not None
        blob = sign_checkpoint(self.signing_key, Checkpoint(seq, entry_hash, ts_ns))
        self.batch.checkpoints.append((seq, blob))

    def full(self) -> bool:
        return (
            len(self.batch.entries) >= self.batch_max_entries
            or self.batch_bytes >= self.batch_max_bytes
        )

    def take(self) -> Batch | None:
        """Hand over the open batch (None when empty) and start a new one."""
        batch = self.batch
        if not batch.entries and not batch.checkpoints:
            return None
        self.batch = Batch()
        self.batch_bytes = 0
        return batch

    def commit(self) -> Batch | None:
        """Take and commit synchronously (simulator, tools); returns what was committed."""
        batch = self.take()
        if batch is not None:
            self.store.commit_batch(batch)
        return batch
