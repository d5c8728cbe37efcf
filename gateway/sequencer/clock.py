"""Theory of operation: the sequencer's clock.

The engine never reads a clock; the sequencer stamps each command with
``now()`` from here, and that stamp is ledgered.  Rules:

* Strictly monotonic: every reading is greater than the one before.
* It follows the wall clock (so ledger times are real times) but measures
  elapsed time with the monotonic clock, and corrects towards the wall clock
  by at most ``slew_ppm`` of the elapsed time (NTP-style slewing).  A wall
  clock that steps forward an hour therefore does not close lots an hour
  early, and one that steps back never makes time run backwards.
* ``accelerate`` (sandbox only) runs sequencer time N times faster than the
  monotonic clock, for demos and black-box tests of 5-minute rules.
* Clients are told this clock, never the host's wall clock: ``hello``,
  ``pong``, ``GET /time`` and ``/config.json`` read it with ``read()`` (which
  never goes backwards, nor behind a time already stamped), so a countdown or a
  lot's ``end_ns`` computed from them is on the clock lots run on -- under
  ``accelerate`` too.  Only the bidder handshake's ``ts`` window stays on the
  wall clock (gateway/edge/auth.py): clients sign with their own clocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

NS_PER_S = 1_000_000_000


class SequencerClock:
    def __init__(
        self,
        wall: Callable[[], int] = time.time_ns,
        mono: Callable[[], int] = time.monotonic_ns,
        *,
        slew_ppm: int = 500,
        accelerate: int = 1,
        start_ns: int | None = None,
    ) -> None:
        self._wall = wall
        self._mono = mono
        self._slew_ppm = slew_ppm
        self._accelerate = accelerate
        self._last_mono = mono()
        self._last = start_ns if start_ns is not None else wall()
        self._shown = 0  # the latest time read() told a client

    @property
    def rate(self) -> int:
        """Sequencer nanoseconds per monotonic nanosecond (``accelerate``)."""
        return self._accelerate

    def floor(self, ns: int) -> None:
        """Never issue a time at or before ``ns`` (the ledger's last time at start-up)."""
        self._last = max(self._last, ns)

    def _estimate(self) -> tuple[int, int]:
        m = self._mono()
        elapsed = max(0, m - self._last_mono) * self._accelerate
        base = self._last + elapsed
        if self._accelerate == 1:
            limit = elapsed * self._slew_ppm // 1_000_000
            base += max(-limit, min(limit, self._wall() - base))
        return m, base

    def peek(self) -> int:
        """The time ``now()`` would give, without consuming it."""
        return max(self._estimate()[1], self._last + 1)

    def read(self) -> int:
        """Sequencer time for clients (hello, pong, /time): ``peek()``, but never
        less than a time read before (a wall clock that steps back slews the
        estimate down by a few ppm; a client must never see time go back)."""
        t = max(self.peek(), self._shown)
        self._shown = t
        return t

    def now(self) -> int:
        m, t = self._estimate()
        t = max(t, self._shown)  # never stamp before a time a client was told
        if t <= self._last:
            t = self._last + 1
        self._last_mono = m
        self._last = t
        return t

    def seconds_until(self, deadline_ns: int) -> float:
        """Monotonic seconds to wait for sequencer time to reach ``deadline_ns``."""
        return max(0.0, (deadline_ns - self.peek()) / NS_PER_S / self._accelerate)


class TrioClock(SequencerClock):
    """Sequencer time on trio's clock (virtual under ``MockClock``), for tests
    and simulations: ``epoch_ns`` + trio.current_time()."""

    def __init__(self, epoch_ns: int) -> None:
        self._epoch_ns = epoch_ns
        super().__init__(wall=self._trio_ns, mono=self._trio_ns, slew_ppm=0, start_ns=epoch_ns)

    def _trio_ns(self) -> int:
        return self._epoch_ns + int(trio.current_time() * NS_PER_S)
