"""The trio runtime: acks only after durable commits (T2), batching, timers, retries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from engine.codes import Reject
from engine.messages import (
    BidAccepted,
    CommandRetried,
    ConfirmDeposit,
    CreateLot,
    LotSold,
    PlaceBid,
    PublishLot,
    RegisterBidder,
)
from engine.rules import MINUTE_NS, RuleSet
from gateway.sequencer.clock import TrioClock
from gateway.sequencer.runtime import Overloaded, Runtime
from ledger.replay import full_replay
from ledger.store import Batch, LedgerCorrupt
from ledger.verify import verify_chain
from tests.vclock import CommitAwareClock

EPOCH_NS = 1_767_542_400 * 1_000_000_000
STAFF = "staff:t"


@pytest.fixture
def idle_jump_clock() -> CommitAwareClock:
    """Virtual time that never jumps while a batch is in the commit thread."""
    return CommitAwareClock()


async def _setup_lot(rt: Runtime, bidders: int = 3, end_ns: int | None = None) -> None:
    now = rt.clock.peek()
    end = end_ns if end_ns is not None else now + 60 * MINUTE_NS
    rules = RuleSet(extension_window_ns=MINUTE_NS)
    seq = 0

    async def staff(cmd_type: type, *args: object, **kw: object) -> None:
        nonlocal seq
        seq += 1
        outcome = await rt.call(cmd_type(STAFF, seq, *args, **kw))
        assert outcome.error is None

    await staff(CreateLot, "L1", "english", "lot", 10_000, 100, now, end, rules=rules)
    await staff(PublishLot, "L1")
    for b in range(bidders):
        await staff(RegisterBidder, "L1", f"b{b}")
        await staff(ConfirmDeposit, "L1", f"b{b}", 0)


def _audit_commits(rt: Runtime, committed: list[int]) -> None:
    """Record the last seq of every batch as the commit returns (the T2 audit)."""
    inner = rt.store.commit_batch

    def commit(batch: Batch, staged: Callable[[], None] | None = None) -> None:
        inner(batch, staged)
        if batch.entries:
            committed.append(batch.entries[-1][0])

    rt.store.commit_batch = commit  # type: ignore[method-assign]


async def test_every_ack_follows_its_batch_commit(tmp_path):
    rt = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS))
    committed: list[int] = []
    _audit_commits(rt, committed)
    acked: list[tuple[int, int]] = []  # (seq, highest committed seq when acked)
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        await _setup_lot(rt)
        with trio.fail_after(30):
            for i in range(2_000):
                origin = f"bidder:b{i % 3}"

                def reply(o, acked=acked):
                    acked.append((o.seq, committed[-1] if committed else 0))

                rt.submit(PlaceBid(origin, i // 3 + 1, "L1", 10_000 + 100 * i), reply)
            while len(acked) < 2_000:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert all(seq <= durable for seq, durable in acked), "an ack preceded its commit"
    assert [s for s, _ in acked] == sorted(s for s, _ in acked), "acks out of sequence order"
    assert len(committed) < 2_000, "no group commit happened: one fsync per command"
    rt.store.close()


async def test_timer_closes_lot_at_its_deadline_with_a_ledgered_tick(tmp_path, idle_jump_clock):
    rt = idle_jump_clock.watch(Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS)))
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        end = EPOCH_NS + 10 * MINUTE_NS
        await _setup_lot(rt, end_ns=end)
        outcome = await rt.call(PlaceBid("bidder:b0", 1, "L1", 10_000))
        assert any(type(e) is BidAccepted for e in outcome.events)
        await trio.sleep(11 * 60)
        nursery.cancel_scope.cancel()
    lot = rt.router.state.lots["L1"]
    assert lot.status == "sold"
    with rt.store as store:
        sold = []
        full_replay(
            store,
            on_entry=lambda body, cmd, events: sold.extend(
                (body, e) for e in events if type(e) is LotSold
            ),
        )
        assert len(sold) == 1
        body, event = sold[0]
        assert event.closed_at_ns == end
        assert body.ts_ns - end < 1_000_000_000, "the tick fired more than 1 s late"


async def test_retry_after_restart_gets_original_outcome(tmp_path):
    rt = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS))
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        await _setup_lot(rt)
        first = await rt.call(PlaceBid("bidder:b1", 7, "L1", 10_000))
        nursery.cancel_scope.cancel()
    rt.store.close()
    rt2 = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS + MINUTE_NS))
    async with trio.open_nursery() as nursery:
        await nursery.start(rt2.run)
        again = await rt2.call(PlaceBid("bidder:b1", 7, "L1", 10_000))
        nursery.cancel_scope.cancel()
    (retried,) = again.events
    assert type(retried) is CommandRetried
    assert (retried.original_seq, retried.code) == (first.seq, 0)
    assert rt2.router.state.lots["L1"].bid_count == 1
    assert verify_chain(rt2.store).ok
    rt2.store.close()


async def test_full_queue_refuses_at_the_edge(tmp_path):
    rt = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS), queue_max=4)
    for i in range(4):
        rt.submit(PlaceBid("bidder:x", i + 1, "L1", 1))
    try:
        rt.submit(PlaceBid("bidder:x", 5, "L1", 1))
    except Overloaded:
        pass
    else:
        raise AssertionError("a fifth command was queued past the bound")
    rt.store.close()


async def test_storage_failure_refuses_and_rebuilds(tmp_path):
    rt = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS))
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        await _setup_lot(rt)
        before = rt.router.state_hash()

        def fail(attempt: int) -> None:
            raise OSError("injected EIO")

        rt.store.fault_hook = fail
        outcome = await rt.call(PlaceBid("bidder:b0", 1, "L1", 10_000))
        assert outcome.error == Reject.storage_unavailable
        assert rt.router.state_hash() == before, "the refused bid stayed in the engine"
        rt.store.fault_hook = None
        outcome = await rt.call(PlaceBid("bidder:b0", 2, "L1", 10_000))
        assert outcome.error is None
        assert any(type(e) is BidAccepted for e in outcome.events)
        nursery.cancel_scope.cancel()
    rt.store.close()


async def test_signed_checkpoints_periodic_and_on_demand(tmp_path):
    from ledger.checkpoint import load_verify_key
    from ledger.verify import verify_checkpoints

    rt = Runtime.open(
        tmp_path, clock=TrioClock(EPOCH_NS), journal_options={"checkpoint_every_entries": 10}
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        await _setup_lot(rt)  # 8 entries
        for i in range(5):
            await rt.call(PlaceBid("bidder:b0", i + 1, "L1", 10_000 + 100 * i))
        assert rt.checkpoint_now()
        await rt.call(PlaceBid("bidder:b1", 1, "L1", 20_000))  # carries the checkpoint along
        nursery.cancel_scope.cancel()
    checks = verify_checkpoints(rt.store, load_verify_key(tmp_path))
    assert [c.seq for c in checks] == [10, 13]
    assert all(c.ok for c in checks)
    rt.store.close()


@pytest.mark.parametrize("where", ["commit", "reply"])
async def test_a_broken_ledger_or_reply_crashes_the_runtime_and_acks_nothing(tmp_path, where):
    """A commit that raises anything but StorageUnavailable (LedgerCorrupt, a
    bug) and a reply callback that raises both end the runtime with that very
    exception -- raised in its nursery, not swallowed by the commit worker's
    completion -- and nothing of the failed batch is acknowledged."""
    rt = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS))
    seen: list[object] = []
    with pytest.raises(BaseException) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            await _setup_lot(rt)
            if where == "commit":
                inner = rt.store.commit_batch

                def corrupt(batch: Batch, staged: Callable[[], None] | None = None) -> None:
                    raise LedgerCorrupt("injected: append refused")

                rt.store.commit_batch = corrupt  # type: ignore[method-assign]
                rt.submit(PlaceBid("bidder:b0", 1, "L1", 10_000), seen.append)
            else:

                def bad_reply(outcome: object) -> None:
                    raise RuntimeError("injected: a reply callback bug")

                rt.submit(PlaceBid("bidder:b0", 1, "L1", 10_000), bad_reply)
            with trio.fail_after(10):
                await trio.sleep_forever()
    if where == "commit":
        rt.store.commit_batch = inner  # type: ignore[method-assign]
    flat = caught.value
    while isinstance(flat, BaseExceptionGroup):
        assert len(flat.exceptions) == 1, flat
        flat = flat.exceptions[0]
    expected = LedgerCorrupt if where == "commit" else RuntimeError
    assert type(flat) is expected, repr(caught.value)
    assert seen == [], "a batch whose commit failed was acknowledged"
    rt.store.close()
