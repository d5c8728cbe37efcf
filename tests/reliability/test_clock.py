"""T15: clock jumps backwards and forwards.

Unit level (fake wall and monotonic sources): readings are strictly
increasing whatever the wall does, and a forward wall step is absorbed by
slewing -- each reading advances by at most elapsed_mono * (1 + slew) + 1.

End to end (trio ``MockClock``, autojump): a Runtime whose SequencerClock sees
the wall jump +1 h closes a lot ending 5 minutes later at its deadline, from a
Tick stamped within one second of it -- not an hour early.  Restart rule: a
runtime restarted an hour after a lot's end ledgers ``SuspendOverdue`` first
and freezes the lot (system), which a staff ``ResumeLot`` reopens with the
time it had left.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import (
    ConfirmDeposit,
    CreateLot,
    Event,
    LotFrozen,
    LotResumed,
    LotSold,
    LotUnsold,
    PlaceBid,
    PublishLot,
    RegisterBidder,
    ResumeLot,
    SuspendOverdue,
    Tick,
    decode_command,
    decode_events,
)
from engine.rules import JUDICIAL
from gateway.sequencer.clock import SequencerClock
from gateway.sequencer.journal import Outcome
from gateway.sequencer.runtime import Runtime
from ledger.record import decode_body
from simulators.harness import EPOCH_NS
from tests.vclock import CommitAwareClock

pytestmark = pytest.mark.timeout(60)

NS = 1_000_000_000
HOUR_NS = 3600 * NS
MINUTE_NS = 60 * NS
SLEW_PPM = 500


class FakeTime:
    """Independent wall and monotonic sources the test moves by hand."""

    def __init__(self, wall: int = EPOCH_NS, mono: int = 10**12) -> None:
        self.wall_ns = wall
        self.mono_ns = mono

    def advance(self, ns: int) -> None:
        self.wall_ns += ns
        self.mono_ns += ns

    def clock(self, **kw: int) -> SequencerClock:
        return SequencerClock(lambda: self.wall_ns, lambda: self.mono_ns, **kw)


def readings_ok(
    ft: FakeTime, clock: SequencerClock, steps: list[tuple[int, int]], slew: int = SLEW_PPM
) -> list[int]:
    """Apply (mono_advance, wall_jump) steps; check monotonicity and the slew bound."""
    last, out = clock.now(), []
    for mono_advance, wall_jump in steps:
        ft.advance(mono_advance)
        ft.wall_ns += wall_jump
        peeked = clock.peek()
        t = clock.now()
        assert t > last, "sequencer time did not strictly increase"
        assert t == peeked, "peek() disagrees with the now() that follows it"
        bound = mono_advance + mono_advance * slew // 1_000_000 + 1
        assert t - last <= bound, (t - last, bound)
        last = t
        out.append(t)
    return out


def test_wall_steps_back_one_hour() -> None:
    ft = FakeTime()
    clock = ft.clock(slew_ppm=SLEW_PPM)
    before = clock.now()
    ft.wall_ns -= HOUR_NS
    readings = readings_ok(ft, clock, [(1_000_000, 0)] * 100 + [(0, 0)] * 10)
    assert readings[0] > before
    # It slews back towards the wall by at most 500 ppm, never backwards.
    assert readings[-1] - before >= 100 * 1_000_000 * (1_000_000 - SLEW_PPM) // 1_000_000


def test_wall_steps_forward_one_hour_is_slewed_not_jumped() -> None:
    ft = FakeTime()
    clock = ft.clock(slew_ppm=SLEW_PPM)
    start = clock.now()
    ft.wall_ns += HOUR_NS
    readings = readings_ok(ft, clock, [(NS, 0)] * 600)  # ten minutes of real time
    elapsed = readings[-1] - start
    assert elapsed <= 600 * NS * (1_000_000 + SLEW_PPM) // 1_000_000 + 600
    assert elapsed < 601 * NS  # nowhere near the hour


def test_frozen_mono_and_wall_still_strictly_increase() -> None:
    ft = FakeTime()
    clock = ft.clock()
    readings = [clock.now() for _ in range(1000)]
    assert all(b == a + 1 for a, b in itertools.pairwise(readings))


def test_floor_is_respected() -> None:
    ft = FakeTime()
    clock = ft.clock()
    clock.floor(ft.wall_ns + HOUR_NS)  # the ledger's last time is an hour ahead
    assert clock.now() > ft.wall_ns + HOUR_NS


steps_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=5 * NS),  # monotonic advance
        st.one_of(
            st.just(0),
            st.sampled_from([HOUR_NS, -HOUR_NS, 24 * HOUR_NS, -24 * HOUR_NS]),
            st.integers(min_value=-2 * NS, max_value=2 * NS),  # jitter
        ),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps_strategy, slew=st.sampled_from([0, 100, 500, 5000]))
def test_random_wall_jumps_keep_time_monotonic_and_slewed(
    steps: list[tuple[int, int]], slew: int
) -> None:
    ft = FakeTime()
    readings_ok(ft, ft.clock(slew_ppm=slew), steps, slew)


def test_seeded_jitter_long_run() -> None:
    rng = random.Random(15)
    ft = FakeTime()
    clock = ft.clock(slew_ppm=SLEW_PPM)
    steps = [
        (rng.randrange(50_000_000), rng.choice((0, HOUR_NS, -HOUR_NS)) or rng.randrange(-NS, NS))
        for _ in range(20_000)
    ]
    readings_ok(ft, clock, steps)


# ---------------------------------------------------------------- end to end

STAFF = "staff:clock"
LOT = "CLOCK-1"


class TrioSources:
    """Wall and mono on trio's (mock) clock; the wall can be stepped."""

    def __init__(self, epoch_ns: int) -> None:
        self.epoch_ns = epoch_ns
        self.offset_ns = 0

    def mono(self) -> int:
        return int(trio.current_time() * NS)

    def wall(self) -> int:
        return self.epoch_ns + self.mono() + self.offset_ns

    def clock(self) -> SequencerClock:
        return SequencerClock(self.wall, self.mono, slew_ppm=SLEW_PPM)


async def set_up_lot(rt: Runtime, end_in_ns: int) -> int:
    """An open English lot ending ``end_in_ns`` from now, with one bid; returns its
    deadline (its end, as the bid's anti-sniping extension left it)."""
    now = rt.clock.peek()
    end = now + end_in_ns
    for seq, (cmd_type, args) in enumerate(
        (
            (CreateLot, (LOT, "english", "clock test", 10_000, 100, now, end)),
            (PublishLot, (LOT,)),
            (RegisterBidder, (LOT, "b1")),
            (ConfirmDeposit, (LOT, "b1", 0)),
        ),
        start=1,
    ):
        kw = {"rules": JUDICIAL} if cmd_type is CreateLot else {}
        out = await rt.call(cmd_type(STAFF, seq, *args, **kw))
        assert out.error is None and not any(
            type(e).__name__ == "CommandRejected" for e in out.events
        )
    out = await rt.call(PlaceBid("bidder:b1", 1, LOT, 10_000))
    assert out.error is None and type(out.events[0]).__name__ == "BidAccepted"
    lot = rt.router.state.lots[LOT]
    # The bid came inside the 5-minute anti-sniping window: the end moved to bid + 5 min.
    assert lot.status == "open" and lot.deadline_ns == lot.end_ns >= end
    assert lot.end_ns - out.ts_ns == 5 * MINUTE_NS
    return lot.end_ns


@pytest.fixture
def virtual_clock() -> CommitAwareClock:
    """Virtual time that never jumps while a batch is in the commit thread: a
    slow fsync must not let it leap to the next timer (or fail_after) deadline."""
    return CommitAwareClock()


async def test_forward_jump_does_not_close_early(
    tmp_path: Path, virtual_clock: CommitAwareClock
) -> None:
    src = TrioSources(EPOCH_NS)
    rt = virtual_clock.watch(Runtime.open(tmp_path, clock=src.clock()))
    released: list[Outcome] = []
    closed = trio.Event()

    def closes() -> list[tuple[Outcome, Event]]:
        return [(a, e) for a in released for e in a.events if type(e) in (LotSold, LotUnsold)]

    def on_release(applied: list[Outcome]) -> None:
        released.extend(applied)
        if closes():
            closed.set()

    rt.subscribers.append(on_release)

    try:
        with trio.fail_after(3 * HOUR_NS / NS):  # virtual seconds
            async with trio.open_nursery() as nursery:
                await nursery.start(rt.run)
                end = await set_up_lot(rt, 5 * MINUTE_NS)
                src.offset_ns += HOUR_NS  # the wall clock steps forward an hour
                await trio.sleep(60)
                assert not closes(), "closed early after a forward wall jump"
                assert rt.router.state.lots[LOT].status == "open"
                await closed.wait()
                nursery.cancel_scope.cancel()
        [(applied, ev)] = closes()
        assert type(ev) is LotSold
        assert ev.closed_at_ns == end
        assert end <= applied.ts_ns <= end + NS, (applied.ts_ns - end) / NS
        # It was the timer's Tick that closed it, ledgered with that stamp.
        body = decode_body(rt.store.get(applied.seq)[2])
        assert type(decode_command(body.command)) is Tick
        assert body.ts_ns == applied.ts_ns
        print(f"\nT15: closed {(applied.ts_ns - end) / 1e6:.3f} ms after its deadline")
    finally:
        rt.store.close()


async def test_restart_after_end_suspends_instead_of_selling(
    tmp_path: Path, virtual_clock: CommitAwareClock
) -> None:
    src = TrioSources(EPOCH_NS)
    rt = virtual_clock.watch(Runtime.open(tmp_path, clock=src.clock()))
    try:
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                await nursery.start(rt.run)
                end = await set_up_lot(rt, 5 * MINUTE_NS)
                await trio.sleep(10)
                nursery.cancel_scope.cancel()
        last_seq, last_ts = rt.store.last_seq(), rt.router.state.now_ns
        remaining = end - last_ts
        assert rt.router.state.lots[LOT].status == "open"
    finally:
        rt.store.close()

    # Down for a long while: the server comes back an hour after the lot's end.
    src2 = TrioSources(end + HOUR_NS - int(trio.current_time() * NS))
    rt2 = virtual_clock.watch(Runtime.open(tmp_path, clock=src2.clock()))
    try:
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                await nursery.start(rt2.run)
                with trio.fail_after(10):
                    while rt2.durable_seq <= last_seq:
                        await trio.sleep(0.01)
                _prev, _h, raw = rt2.store.get(last_seq + 1)
                body = decode_body(raw)
                assert type(decode_command(body.command)) is SuspendOverdue
                events = decode_events(body.events)
                assert not any(type(e) in (LotSold, LotUnsold) for e in events)
                [frozen] = [e for e in events if type(e) is LotFrozen]
                assert frozen.system and frozen.lot_id == LOT
                assert frozen.at_ns == last_ts and frozen.remaining_ns == remaining
                assert rt2.router.state.lots[LOT].status == "frozen"
                await trio.sleep(30)  # stays frozen: no timer closes it
                assert rt2.router.state.lots[LOT].status == "frozen"

                out = await rt2.call(ResumeLot(STAFF, 100, LOT, "outage over"))
                assert out.error is None
                [resumed] = [e for e in out.events if type(e) is LotResumed]
                assert resumed.end_ns == out.ts_ns + remaining
                lot = rt2.router.state.lots[LOT]
                assert lot.status == "open" and lot.deadline_ns == out.ts_ns + remaining
                # ... and then it closes normally at its new end.
                await trio.sleep(remaining / NS - 1)
                assert rt2.router.state.lots[LOT].status == "open"
                await trio.sleep(2)
                assert rt2.router.state.lots[LOT].status == "sold"
                nursery.cancel_scope.cancel()
    finally:
        rt2.store.close()
