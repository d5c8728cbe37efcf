"""Theory of operation: the commit worker.

One long-lived thread commits the batches the sequencer hands it, one at a
time, in order, and reports each outcome through ``notify`` -- the event
loop's thread-safe "call this soon" (``TrioToken.run_sync_soon`` in the
runtime).  A dedicated thread instead of a thread-pool hop per batch: here a
``trio.to_thread.run_sync`` round trip cost ~160 us against ~100 us for a
queue hand-off to a waiting thread, and a one-entry fsync'd LMDB commit
~140 us, so the hop was half the cost of a small batch.

The module knows nothing of trio: the caller supplies ``notify``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ledger.store import Batch, LedgerStore

# The loop never waits longer than this for one batch's staging (a stuck put
# is then contended, not a stalled loop).
STEP_ASIDE_MAX_S = 0.005

Done = Callable[[BaseException | None], None]
Notify = Callable[[Callable[[], None]], None]


class CommitWorker:
    def __init__(self, store: LedgerStore, notify: Notify) -> None:
        self._store = store
        self._notify = notify
        self._jobs: queue.SimpleQueue[tuple[Batch, Done] | None] = queue.SimpleQueue()
        # Held while this thread stages a batch's puts (see ``step_aside``).
        self._staging = threading.Lock()
        self._held = False  # only this worker's thread reads or writes it
        self._staging_since = 0.0  # when the current batch's staging began
        self._thread = threading.Thread(target=self._run, name="ledger-commit", daemon=True)
        self._thread.start()

    def step_aside(self) -> None:
        """Called on the event loop's thread: while this worker stages puts,
        block (GIL released) until it is done.

        py-lmdb releases and re-takes the GIL around every single put.  Beside a
        busy event loop each re-take waits up to a switch interval, so a
        200-entry batch took ~7 ms to stage instead of ~0.2 ms (GIL probe in
        bench core).  Stepping aside for the short staging phase costs the loop
        less than the convoy did and keeps the commit -- and every ack behind
        it -- close to the disk's own time."""
        staging = self._staging
        if not staging.locked():
            return
        # One budget per batch, not per task step: a slow staging phase (a
        # starved thread, a map growth) costs the loop at most this once.
        left = self._staging_since + STEP_ASIDE_MAX_S - time.monotonic()
        if left > 0 and staging.acquire(timeout=left):
            staging.release()

    def submit(self, batch: Batch, done: Done) -> None:
        """Commit ``batch`` in the worker; ``done(error_or_None)`` runs via ``notify``."""
        self._jobs.put((batch, done))

    def stop(self) -> None:
        """Finish the queued batches, then end the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _staged(self) -> None:
        """The puts are in the txn (or the commit ended): let the loop go on."""
        if self._held:
            self._held = False
            self._staging.release()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, done = job
            error: BaseException | None = None
            self._staging_since = time.monotonic()
            self._staging.acquire()
            self._held = True
            try:
                self._store.commit_batch(batch, self._staged)
            except BaseException as e:  # handed to the loop, which decides
                error = e
            finally:
                self._staged()
            try:
                self._notify(lambda d=done, e=error: d(e))  # type: ignore[misc]
            except RuntimeError:
                return  # the event loop has ended (shutdown); nothing is waiting
