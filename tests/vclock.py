"""Virtual time for runtime tests that cannot leap over a commit.

trio's ``MockClock`` autojumps to the next deadline once the loop has been idle
for ``autojump_threshold`` real seconds.  A commit runs in the ledger's worker
thread, and while it fsyncs the loop *is* idle: on a slow disk (CI) a 50 ms
fsync let virtual time leap to the test's own ``fail_after`` deadline.
``MockClock`` is final, so this is a small clock of our own: it jumps to the
next deadline after ``idle_s`` of real idleness, but never while a watched
runtime has a batch in its commit worker.
"""

from __future__ import annotations

import time

import trio

from gateway.sequencer.runtime import Runtime

POLL_S = 0.005


class CommitAwareClock(trio.abc.Clock, trio.abc.Instrument):
    def __init__(self, idle_s: float = 0.02) -> None:
        self.idle_s = idle_s
        self._now = 0.0
        self._asked_at: float | None = None  # real time of the last idle wait
        self._runtimes: list[Runtime] = []

    def watch(self, rt: Runtime) -> Runtime:
        self._runtimes.append(rt)
        return rt

    def start_clock(self) -> None:
        self._asked_at = None
        trio.lowlevel.add_instrument(self)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._asked_at = None  # something ran: the loop was not idle

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called only when nothing is runnable.  If the previous wait ran its
        # whole length (no I/O, no thread callback), the loop is truly idle.
        if deadline <= self._now:
            self._asked_at = None
            return 0.0
        real = time.monotonic()
        if any(rt.committing for rt in self._runtimes):
            self._asked_at = None
            return POLL_S  # the worker's callback wakes us; time stands still
        if self._asked_at is not None and real - self._asked_at >= self.idle_s * 0.9:
            self._asked_at = None
            if deadline != float("inf"):
                self._now = deadline
                return 0.0
        self._asked_at = real
        return self.idle_s
