"""Theory of operation: the runtime hosts sequencer + engine + ledger writer + timers.

    submit(cmd, reply) --bounded channel--> sequencer task
        drains everything queued (one await per batch, not per command),
        stamps each command with the clock, applies it (Journal.append) and
        hands the open batch to the writer;
    writer task
        commits one batch at a time in a worker thread (fsync'd LMDB commit);
        while it runs, the sequencer keeps filling the next batch -- so one
        fsync covers everything that queued while the previous one ran;
        after the commit returns, replies (acks) and subscribers (public
        events) are released, in sequence order;
    timer task
        submits a ledgered ``Tick`` when the engine's next deadline comes.

Failure: if a commit raises ``StorageUnavailable``, every command not yet
durable (the failed batch and the open one) is answered
``storage_unavailable`` -- never acknowledged -- and the engine is rebuilt
from the store (snapshot + ledger) before anything new is applied.

If one command cannot be stored (its encoding raises) it is refused
``command_failed`` before it touches the engine.  If applying it, or encoding
its events, raises, it is refused alone the same way, logged with its
evidence and counted, and the engine is rebuilt in place from the store plus
the entries not yet durable (``ledger.replay.rebuild``): nothing is
half-applied, everything else in flight stands, the process stays up.

Start-up: the engine is recovered from the store; if a lot's deadline passed
while the server was down, a ``SuspendOverdue`` command is the first thing
ledgered (RULES.md R-1.8.1, system failure) -- staff resume those lots.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from config.settings import Settings
from engine.codes import Reject
from engine.messages import Command, SuspendOverdue, Tick
from engine.router import Router
from gateway.sequencer.clock import SequencerClock
from gateway.sequencer.journal import Journal, Outcome
from ledger.checkpoint import Receipt, load_or_create_signing_key, sign_receipt
from ledger.replay import rebuild, recover
from ledger.store import Batch, LedgerStore, StorageUnavailable
from ledger.writer import CommitWorker

SYSTEM = "system"
# A drain hands what it has to an idle writer every HANDOFF_EVERY commands, and
# that many queued commands wake the sequencer even while a commit runs.
HANDOFF_EVERY = 64
# The timer's back-off while its Tick is refused (storage down, or a deadline
# whose handling raises): doubling up to the cap, so nothing spins.
# Entries of a commit batch covered by one signed receipt (see _attach_receipt).
RECEIPT_GROUP = 16
TICK_RETRY_S = 0.05
TICK_RETRY_MAX_S = 5.0

log = logging.getLogger("pubex.runtime")


class Overloaded(Exception):
    """The inbound queue is full: refuse at the edge, nothing was queued."""


Reply = Callable[[Outcome], None]
Subscriber = Callable[[list[Outcome]], None]


class Runtime:
    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: SequencerClock | None = None,
        data_dir: str | Path | None = None,
        queue_max: int = 65_536,
        journal_options: dict[str, Any] | None = None,
        record_batch_sizes: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock or SequencerClock()
        key = load_or_create_signing_key(data_dir) if data_dir is not None else None
        self._journal_options = dict(journal_options or {}, signing_key=key)
        self.journal = Journal(store, recover(store), **self._journal_options)
        self.clock.floor(self._last_ts())
        # A bounded deque plus a wake-up event: cheaper per command than a memory
        # channel (PERFORMANCE.md: hand-offs are the cost; batch them).
        self._queue: deque[tuple[Command, Reply | None, bytes]] = deque()
        self._queue_max = queue_max
        self._arrived = trio.Event()
        self._waiting: list[tuple[Reply | None, Outcome]] = []
        self._work = trio.Event()
        self._taken = trio.Event()
        self._deadline_moved = trio.Event()
        self._known_deadline: int | None = None
        self.subscribers: list[Subscriber] = []
        self.durable_seq = store.last_seq()
        self.batch_sizes: list[int] | None = [] if record_batch_sizes else None
        self.storage_failures = 0
        self.command_failures = 0
        self.on_command_failed: Callable[[], None] | None = None
        self._inflight: Batch | None = None  # the batch in the commit worker
        self.sandbox = False  # set by the server from the ledger's meta
        self.sign_receipts = False  # the gateway turns it on: acks carry receipts
        self.on_commit: Callable[[int, float], None] | None = None  # (entries, seconds)
        self._writer_idle = True

    @classmethod
    def open(cls, data_dir: str | Path, **kwargs: Any) -> Runtime:
        ledger_dir = Path(data_dir) / "ledger"
        store = LedgerStore.open(ledger_dir, map_size=kwargs.pop("map_size", 64 << 20))
        return cls(store, data_dir=data_dir, **kwargs)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        data_dir: str | Path | None = None,
        clock: SequencerClock | None = None,
    ) -> Runtime:
        """The runtime as ``config/default.toml`` (or a user file) describes it."""
        led = settings.ledger
        return cls.open(
            data_dir if data_dir is not None else settings.data_dir,
            map_size=led.map_size_bytes,
            clock=clock or SequencerClock(slew_ppm=settings.clock.max_slew_ppm),
            journal_options={
                "snapshot_every_entries": led.snapshot_every_entries,
                "checkpoint_every_entries": led.checkpoint_every_entries,
                "batch_max_entries": led.batch_max_entries,
                "batch_max_bytes": led.batch_max_bytes,
            },
        )

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def router(self) -> Router:
        return self.journal.router

    def _last_ts(self) -> int:
        return self.router.state.now_ns

    # ------------------------------------------------------------ submit
    def submit(self, cmd: Command, reply: Reply | None = None, meta: bytes = b"") -> None:
        """Queue a command without waiting; ``reply`` runs once it is durable
        (or refused).  Raises ``Overloaded`` when the bounded queue is full."""
        queue = self._queue
        if len(queue) >= self._queue_max:
            raise Overloaded
        queue.append((cmd, reply, meta))
        # Wake the sequencer only when its work can go straight to disk: while a
        # commit runs, arrivals wait for it (their acks must wait anyway), so one
        # wake-up serves the whole group -- unless the group grows large.
        if (self._writer_idle or len(queue) >= HANDOFF_EVERY) and not self._arrived.is_set():
            self._arrived.set()

    async def call(self, cmd: Command, meta: bytes = b"") -> Outcome:
        done = trio.Event()
        box: list[Outcome] = []

        def reply(outcome: Outcome) -> None:
            box.append(outcome)
            done.set()

        self.submit(cmd, reply, meta)
        await done.wait()
        return box[0]

    def checkpoint_now(self) -> bool:
        """Sign a checkpoint of the last applied entry now (on demand, e.g. before
        a disclosure publishes the ledger head); it becomes durable with the next
        batch.  False when there is no signing key or no entry yet."""
        journal = self.journal
        seq = self.router.applied
        if journal.signing_key is None or seq == 0:
            return False
        journal.add_checkpoint(seq, journal.prev_hash, self.router.state.now_ns)
        self._work.set()
        return True

    # --------------------------------------------------------------- run
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # The process-wide tuning (switch interval, GC) is the entry point's:
        # gateway/entry/tuning.py.
        worker = CommitWorker(self.store, trio.lowlevel.current_trio_token().run_sync_soon)
        # Every task step first lets a staging commit finish its puts (see
        # CommitWorker.step_aside): no task contends with it for the GIL.
        aside = _StepAside(worker)
        trio.lowlevel.add_instrument(aside)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sequencer)
                nursery.start_soon(self._writer, worker)
                self._suspend_overdue()
                nursery.start_soon(self._timer)
                task_status.started()
        finally:
            with contextlib.suppress(KeyError):  # trio drops an instrument that raised
                trio.lowlevel.remove_instrument(aside)
            worker.stop()  # a batch in flight still commits; its replies are moot

    def _suspend_overdue(self) -> None:
        due = self.router.next_deadline_ns()
        if due is not None and due <= self.clock.peek():
            self.submit(SuspendOverdue(SYSTEM, 0))

    async def _sequencer(self) -> None:
        queue = self._queue
        while True:
            if not queue or (not self._writer_idle and len(queue) < HANDOFF_EVERY):
                await self._arrived.wait()
                self._arrived = trio.Event()
                continue
            journal = self.journal  # may have been rebuilt after a storage fault
            # One clock read per drain: the commands drained together were all
            # received by now; they get now, now+1, ... (strictly increasing).
            ts_ns = self.clock.now() - 1
            applied = 0
            while queue and not journal.full():
                ts_ns += 1
                self._apply(journal, queue.popleft(), ts_ns)
                applied += 1
                if applied % HANDOFF_EVERY == 0 and self._writer_idle:
                    # Let the writer start fsyncing what we have while we go on.
                    self._work.set()
                    await trio.lowlevel.checkpoint()
                    journal = self.journal  # a failed commit may have rebuilt it
            self.clock.floor(ts_ns)
            self._work.set()
            self._check_deadline()
            if journal.full():
                await self._taken.wait()
            else:
                await trio.lowlevel.checkpoint()  # let submitters and the writer run

    @property
    def committing(self) -> bool:
        """A batch is in the commit worker (the loop may look idle meanwhile)."""
        return not self._writer_idle

    def _apply(
        self, journal: Journal, item: tuple[Command, Reply | None, bytes], ts_ns: int
    ) -> None:
        cmd, reply, meta = item
        try:
            applied = journal.append(cmd, ts_ns, meta)
        except Exception:  # one command's content, never the process: see the module doc
            self._command_failed(journal, cmd, meta)
            if reply is not None:
                reply(Outcome.refused(Reject.command_failed))  # nothing recorded: answer now
            return
        self._waiting.append((reply, applied))

    def _command_failed(self, journal: Journal, cmd: Command, meta: bytes) -> None:
        self.command_failures += 1
        log.exception(
            "command refused (command_failed): %s origin=%r client_seq=%r command=%.500r "
            "meta=%.300s; rebuilding the engine at seq %d",
            type(cmd).__name__,
            getattr(cmd, "origin", None),
            getattr(cmd, "client_seq", None),
            cmd,
            meta.hex(),
            journal.batch.entries[-1][0] if journal.batch.entries else self.durable_seq,
        )
        inflight = self._inflight.entries if self._inflight is not None else []
        journal.router = rebuild(self.store, [*inflight, *journal.batch.entries])
        self._known_deadline = None
        if self.on_command_failed is not None:
            self.on_command_failed()

    def _check_deadline(self) -> None:
        nd = self.router.next_deadline_ns()
        if nd != self._known_deadline:
            self._known_deadline = nd
            self._deadline_moved.set()

    async def _writer(self, worker: CommitWorker) -> None:
        while True:
            await self._work.wait()
            self._work = trio.Event()
            batch = self.journal.take()
            waiting, self._waiting = self._waiting, []
            self._taken.set()
            self._taken = trio.Event()
            if batch is None:
                continue
            self._writer_idle = False
            self._inflight = batch
            started = time.perf_counter()
            try:
                error = await _commit(worker, batch)
            finally:
                self._writer_idle = True
                self._inflight = None
                if self._queue and not self._arrived.is_set():
                    self._arrived.set()  # what queued during the commit goes next
            if isinstance(error, StorageUnavailable):
                self._storage_failed(waiting)
                continue
            if error is not None:
                raise error  # LedgerCorrupt or a bug: crash, restart from the ledger
            if self.on_commit is not None:
                self.on_commit(len(waiting), time.perf_counter() - started)
            self._released(batch.entries[-1][0] if batch.entries else self.durable_seq, waiting)
            if self._waiting:
                self._work.set()

    def _released(self, last_seq: int, waiting: list[tuple[Reply | None, Outcome]]) -> None:
        self.durable_seq = last_seq
        if self.batch_sizes is not None:
            self.batch_sizes.append(len(waiting))
        if self.sign_receipts and waiting:
            self._attach_receipt([a for _, a in waiting])
        for reply, applied in waiting:
            if reply is not None:
                reply(applied)
        if self.subscribers:
            applied_list = [a for _, a in waiting]
            for sub in self.subscribers:
                sub(applied_list)

    def _attach_receipt(self, batch: list[Outcome]) -> None:
        """One signature per group of at most RECEIPT_GROUP entries of the batch
        (groups counted from the batch's first entry): the receipt of the
        group's last entry; each outcome's proof is the body hashes that chain
        it to that entry (Outcome.proof) -- at most RECEIPT_GROUP - 1 of them,
        so an ack's size does not grow with the batch (a client pipelining a
        thousand commands into one batch was owed megabytes of proofs)."""
        key = self.journal.signing_key
        if key is None:
            return
        for start in range(0, len(batch), RECEIPT_GROUP):
            group = batch[start : start + RECEIPT_GROUP]
            last = group[-1]
            blob = sign_receipt(key, Receipt(last.seq, last.entry_hash, last.ts_ns))
            proof_of = (group[0].seq, tuple(o.body_hash for o in group))
            for outcome in group:
                outcome.receipt = blob
                outcome.batch = proof_of

    def _storage_failed(self, waiting: list[tuple[Reply | None, Outcome]]) -> None:
        """Refuse everything not yet durable; rebuild the engine from the store."""
        self.storage_failures += 1
        refused = waiting + self._waiting
        self._waiting = []
        self.journal = Journal(self.store, recover(self.store), **self._journal_options)
        self._known_deadline = None
        self._check_deadline()
        outcome = Outcome.refused(Reject.storage_unavailable)
        for reply, _ in refused:
            if reply is not None:
                reply(outcome)

    async def _timer(self) -> None:
        retry_s = TICK_RETRY_S
        while True:
            moved = self._deadline_moved
            due = self.router.next_deadline_ns()
            if due is None:
                await moved.wait()
            elif due > self.clock.peek():
                with trio.move_on_after(self.clock.seconds_until(due)):
                    await moved.wait()
            else:
                outcome = await self.call(Tick(SYSTEM, 0))
                if outcome.error is None:
                    retry_s = TICK_RETRY_S
                else:  # storage down, or the deadline's handling raised: retry, don't spin
                    await trio.sleep(retry_s)
                    retry_s = min(retry_s * 2, TICK_RETRY_MAX_S)
            if moved.is_set():
                self._deadline_moved = trio.Event()


async def _commit(worker: CommitWorker, batch: Batch) -> BaseException | None:
    """Hand a batch to the commit thread and wait for its outcome."""
    done = trio.Event()
    box: list[BaseException | None] = []

    def finished(error: BaseException | None) -> None:
        box.append(error)
        done.set()

    worker.submit(batch, finished)
    await done.wait()
    return box[0]


class _StepAside(trio.abc.Instrument):
    """Before each task step, wait out a commit worker's short staging phase."""

    def __init__(self, worker: CommitWorker) -> None:
        self.before_task_step = lambda task: worker.step_aside()  # type: ignore[method-assign]
