"""Theory of operation: the deterministic simulation harness.

A discrete-event loop on virtual time drives the real engine and the real
ledger (Journal + LedgerStore, fsync on) at full speed: a simulated day runs
in seconds.  Agents schedule actions at virtual times; before each action,
every engine deadline at or before its time is fired with a ledgered
``Tick`` at exactly the deadline (as the runtime's timer would), then the
action's command is stamped with a strictly increasing sequencer time.
Batches are committed every ``batch_entries`` entries.

Everything is derived from the seed (one ``random.Random``) and a fixed epoch,
so the same seed gives the same ledger, byte for byte.  That includes its
signed checkpoints (every ``checkpoint_every`` entries and one of the head at
:meth:`Harness.close`): the server key is derived from the seed
(:func:`ledger.checkpoint.simulation_signing_key`, Ed25519 signatures are
deterministic) and its public half is written beside the ledger as
``server.pub``, where ``pubex ledger verify`` finds it.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.codes import Reject
from engine.messages import Command, CommandRejected, Event, Tick
from engine.router import Router
from gateway.sequencer.journal import Journal
from ledger.checkpoint import PUB_FILE, simulation_signing_key
from ledger.store import LedgerStore

NS_PER_S = 1_000_000_000
MINUTE_NS = 60 * NS_PER_S
HOUR_NS = 60 * MINUTE_NS
# 2026-01-05 00:00:00 +08:00 -- a Monday, so working-day rules line up.
EPOCH_NS = 1_767_542_400 * NS_PER_S

Action = Callable[[int], None]


class Harness:
    def __init__(
        self,
        ledger_dir: str | Path,
        seed: int,
        *,
        batch_entries: int = 512,
        checkpoint_every: int = 100,
    ) -> None:
        self.store = LedgerStore.open(ledger_dir)
        if self.store.last_seq():
            raise ValueError(f"{ledger_dir} already holds a ledger; simulate into a new one")
        key = simulation_signing_key(seed)
        (Path(ledger_dir) / PUB_FILE).write_text(bytes(key.verify_key).hex() + "\n")
        self.journal = Journal(
            self.store,
            Router(),
            signing_key=key,
            batch_max_entries=batch_entries,
            snapshot_every_entries=10_000,
            checkpoint_every_entries=checkpoint_every,
        )
        self.router = self.journal.router
        self.rng = random.Random(seed)
        self.now_ns = EPOCH_NS
        self._queue: list[tuple[int, int, Action]] = []
        self._order = 0
        self._client_seq: Counter[str] = Counter()
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.listeners: list[Callable[[Command, list[Event]], None]] = []

    # -------------------------------------------------------- scheduling
    def at(self, t_ns: int, action: Action) -> None:
        self._order += 1
        heapq.heappush(self._queue, (t_ns, self._order, action))

    def run(self, until_ns: int | None = None) -> None:
        """Run actions and deadlines in time order (a deadline first on a tie)."""
        queue = self._queue
        while True:
            nd = self.router.next_deadline_ns()
            if queue and (nd is None or queue[0][0] < nd):
                t, _, action = queue[0]
                if until_ns is not None and t > until_ns:
                    break
                heapq.heappop(queue)
                action(max(t, self.now_ns))
            elif nd is not None and (until_ns is None or nd <= until_ns):
                self.send(Tick("system", 0), nd)
            else:
                break
        self.journal.commit()

    # ----------------------------------------------------------- commands
    def next_seq(self, origin: str) -> int:
        self._client_seq[origin] += 1
        return self._client_seq[origin]

    def send(self, cmd: Command, t_ns: int, meta: bytes = b"") -> list[Event]:
        """Stamp (strictly increasing), apply, journal (with the entry's ``meta``,
        e.g. the connection envelope a live gateway would ledger); commit when
        the batch is full."""
        self.now_ns = max(t_ns, self.now_ns + 1)
        events = self.journal.append(cmd, self.now_ns, meta).events
        for ev in events:
            if type(ev) is CommandRejected:
                self.refused[Reject(ev.code).name] += 1
        if cmd.origin.startswith(("bidder:", "supplier:")):
            self.accepted += sum(1 for ev in events if ev.__class__.__name__ == "BidAccepted")
        for listener in self.listeners:
            listener(cmd, events)
        if self.journal.full():
            self.journal.commit()
        return events

    def close(self) -> None:
        """Commit what is left with a signed checkpoint of the head (unless the
        head already has one), and close the ledger."""
        journal, seq = self.journal, self.router.applied
        if seq and seq % journal.checkpoint_every:
            journal.add_checkpoint(seq, journal.prev_hash, self.now_ns)
        journal.commit()
        self.store.close()
