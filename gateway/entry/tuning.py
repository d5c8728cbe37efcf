"""Process-wide tuning for a process whose main work is the sequencer.

Set once by the entry point that owns the process (``pubex serve``, the benches
that measure it), never inside a library call: the switch interval and the
garbage collector's thresholds belong to the whole process, and a runtime
started inside a test or a tool must leave them alone.
"""

from __future__ import annotations

import gc
import sys

# A commit takes the GIL four or five times (begin, put, commit, notify), each
# up to one switch interval behind a busy loop.  Beside a spinning loop a
# 1-entry fsync'd commit measured p50 1,430 us at 0.5 ms, 400-570 us at 0.1 ms
# and 320-380 us at 0.05 ms, with the loop's own throughput unchanged
# (bench core, GIL probe).
SWITCH_INTERVAL_S = 0.00005


def tune_for_sequencer() -> None:
    """Call after recovery, before the runtime runs.  A worker-thread commit must
    not wait a whole 5 ms switch interval for the GIL under a busy loop
    (RELIABILITY.md, commit cost); everything recovered so far is long-lived, so
    it is kept out of the young generations, and collections run less often --
    full collections over a big state paused the loop for 40-90 ms (bench core
    profile)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def tune_for_edge() -> None:
    """An edge has no commit thread to wait for the GIL, so the default switch
    interval stays; what it loaded (the view) is long-lived, and its garbage is
    per-frame and short-lived: freeze the view, collect the old generations
    rarely (a full collection over 5,000 connections' state pauses every
    client of the edge)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
