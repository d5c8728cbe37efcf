"""T5 / T6: storage faults at the K-th commit, and a map that fills up.

T5: ``rt.store.fault_hook`` raises ``OSError`` at the K-th commit attempt
(K = 1..8, counted from when the hook is installed).  Every command answered
``storage_unavailable`` must be absent from the ledger, every acknowledged one
present (same seq, same hash, same command); exactly one storage failure; and
after a restart the state equals the one built from only the acknowledged
commands, and new commands are accepted.

T6: a tiny map (256 KiB) under ~20k bids: commits grow the map, nothing
acknowledged is lost, the chain verifies.  With a cap, a full map refuses
cleanly (typed, never acknowledged, no crash) and writes resume once the cap
is raised.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from engine.codes import Reject
from engine.messages import (
    BidAccepted,
    Command,
    ConfirmDeposit,
    CreateLot,
    PlaceBid,
    PublishLot,
    RegisterBidder,
    decode_command,
)
from engine.router import Router
from gateway.sequencer.runtime import Outcome, Runtime
from ledger.audit import verify_ledger
from ledger.record import decode_body
from ledger.store import LedgerStore
from ledger.verify import verify_chain

pytestmark = pytest.mark.timeout(120)

NS = 1_000_000_000
DAY_NS = 86_400 * NS
STAFF = "staff:faults"
LOTS = ("F-1", "F-2")
BIDDERS = 6
START, INC = 100_000, 100


class Driver:
    """Submits commands and records every reply (exactly one per command)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.seqs: dict[str, int] = {}
        self.amounts: dict[str, int] = {}
        self.log: list[tuple[Command, list[Outcome]]] = []

    def next_seq(self, origin: str) -> int:
        if origin not in self.seqs:
            self.seqs[origin] = self.rt.router.high_seq(origin)
        self.seqs[origin] += 1
        return self.seqs[origin]

    def submit(self, cmd: Command) -> list[Outcome]:
        box: list[Outcome] = []
        self.log.append((cmd, box))
        self.rt.submit(cmd, box.append)
        return box

    async def settle(self, timeout: float = 30) -> None:
        with trio.fail_after(timeout):
            while any(not box for _, box in self.log):
                await trio.sleep(0.001)

    async def staff(self, cmd_type: type, *args: object, **kw: object) -> None:
        box = self.submit(cmd_type(STAFF, self.next_seq(STAFF), *args, **kw))
        await self.settle()
        assert box[0].error is None

    async def setup(self) -> None:
        now = time.time_ns()
        for lot_id in LOTS:
            await self.staff(
                CreateLot, lot_id, "english", lot_id, START, INC, now, now + 30 * DAY_NS
            )
            await self.staff(PublishLot, lot_id)
            for i in range(BIDDERS):
                await self.staff(RegisterBidder, lot_id, f"{lot_id}-b{i}")
                await self.staff(ConfirmDeposit, lot_id, f"{lot_id}-b{i}", 0)

    def bid(self, n: int) -> PlaceBid:
        lot_id = LOTS[n % len(LOTS)]
        origin = f"bidder:{lot_id}-b{n % BIDDERS}"
        lot = self.rt.router.state.lots[lot_id]
        current = lot.price_fen + INC if lot.leader_id else START
        amount = max(current, self.amounts.get(lot_id, 0))
        self.amounts[lot_id] = amount + INC
        return PlaceBid(origin, self.next_seq(origin), lot_id, amount)

    def acked(self) -> list[tuple[Command, Outcome]]:
        return [(cmd, box[0]) for cmd, box in self.log if box[0].error is None]

    def refused(self) -> list[tuple[Command, Outcome]]:
        return [(cmd, box[0]) for cmd, box in self.log if box[0].error is not None]


def ledger_commands(store: LedgerStore) -> dict[int, tuple[bytes, Command, int]]:
    return {
        seq: (h, decode_command(decode_body(raw).command), decode_body(raw).ts_ns)
        for seq, _prev, h, raw in store.iter_entries()
    }


def check_acked_and_refused(d: Driver, store: LedgerStore) -> tuple[int, int]:
    """Acked: in the ledger, same seq/hash/command.  Refused: nowhere in it."""
    assert all(len(box) == 1 for _, box in d.log), "a command was answered twice"
    entries = ledger_commands(store)
    in_ledger = {(cmd.origin, cmd.client_seq): cmd for _, cmd, _ in entries.values()}
    acked, refused = d.acked(), d.refused()
    for cmd, out in acked:
        h, ledgered, _ = entries[out.seq]
        assert h == out.entry_hash and ledgered == cmd
    for cmd, out in refused:
        assert out.error == Reject.storage_unavailable
        assert out.seq == 0 and out.entry_hash == b""
        assert (cmd.origin, cmd.client_seq) not in in_ledger, cmd
    # The ledger holds the acknowledged commands and nothing else.
    assert sorted(out.seq for _, out in acked) == sorted(entries)
    assert verify_chain(store).ok
    return len(acked), len(refused)


@pytest.mark.parametrize("mode", ["rounds", "stream", "burst"])
@pytest.mark.parametrize("k", range(1, 9))
async def test_io_error_at_kth_commit(tmp_path: Path, k: int, mode: str) -> None:
    """``rounds``: a few bids per commit, each round settled before the next.
    ``stream``: bids keep arriving while commits run, so the fault also hits
    commands waiting in the open batch (they must be refused too), and small
    batches make the sequencer wait for the writer (backpressure) at the fault.
    ``burst``: hundreds queued at once, so the writer starts on the first
    commands of a drain while the sequencer is still applying the rest.
    Snapshots and signed checkpoints ride in most batches: a failed batch must
    take its snapshot/checkpoint down with it."""
    options = {
        "snapshot_every_entries": 7,
        "checkpoint_every_entries": 5,
        "batch_max_entries": 4 if mode == "stream" else 1024,
    }
    rt = Runtime.open(tmp_path, journal_options=options)
    d = Driver(rt)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            await d.setup()
            base = rt.store.commit_attempts
            fired: list[int] = []

            def hook(attempt: int) -> None:
                if attempt == base + k:
                    fired.append(attempt)
                    raise OSError(5, "injected I/O error")

            rt.store.fault_hook = hook
            n = 0
            if mode == "rounds":
                for _round in range(16):  # >= 16 commits: K <= 8 is always reached
                    for _ in range(1 + _round % 5):
                        d.submit(d.bid(n))
                        n += 1
                    await d.settle()
            else:
                per = 7 if mode == "stream" else 150
                while rt.store.commit_attempts < base + 12:
                    for _ in range(per):
                        d.submit(d.bid(n))
                        n += 1
                    await trio.sleep(0.0003)
                await d.settle()
                for _ in range(3):  # and new commands are accepted after the fault
                    d.submit(d.bid(n))
                    n += 1
                await d.settle()
            assert fired == [base + k]
            assert rt.storage_failures == 1
            assert d.refused(), "the failed batch refused nothing"
            # The runtime rebuilt itself and kept accepting after the fault.
            tail = d.log[-1][1][0]
            assert tail.error is None
            nursery.cancel_scope.cancel()
    n_acked, n_refused = check_acked_and_refused(d, rt.store)
    rt.store.close()

    # Restart: state == the state of the acknowledged commands alone.
    expected = Router()
    for cmd, out in sorted(d.acked(), key=lambda co: co[1].seq):
        expected.apply(cmd, out.ts_ns)
    report = verify_ledger(tmp_path)  # chain + replay + every snapshot + every checkpoint
    assert report.ok, report
    assert report.snapshots_checked > 0 and report.checkpoints_checked > 0
    rt2 = Runtime.open(tmp_path, journal_options=options)
    try:
        assert rt2.router.applied == n_acked
        assert rt2.router.state_hash() == expected.state_hash()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(rt2.run)
                d2 = Driver(rt2)
                out = await rt2.call(d2.bid(0))
                assert out.error is None and out.seq == n_acked + 1
                assert any(type(ev) is BidAccepted for ev in out.events)
                nursery.cancel_scope.cancel()
    finally:
        rt2.store.close()
    print(f"\nT5 K={k} {mode}: acked {n_acked}, refused {n_refused}, point passed")


async def push_bids(d: Driver, total: int, chunk: int = 2000) -> None:
    n = 0
    while n < total:
        for _ in range(min(chunk, total - n)):
            d.submit(d.bid(n))
            n += 1
        await d.settle(60)


async def test_map_full_grows_and_loses_nothing(tmp_path: Path) -> None:
    rt = Runtime.open(tmp_path, map_size=256 << 10)
    d = Driver(rt)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            await d.setup()
            await push_bids(d, 20_000)
            nursery.cancel_scope.cancel()
    try:
        assert rt.store.map_grows > 0
        assert rt.storage_failures == 0
        n_acked, n_refused = check_acked_and_refused(d, rt.store)
        assert n_refused == 0 and n_acked == len(d.log) >= 20_000
        print(f"\nT6 map full: {n_acked} acked, acked-lost 0, map grows {rt.store.map_grows}")
    finally:
        rt.store.close()


async def test_map_at_cap_refuses_cleanly_then_resumes(tmp_path: Path) -> None:
    store = LedgerStore.open(tmp_path / "ledger", map_size=256 << 10, map_cap=512 << 10)
    rt = Runtime(store, data_dir=tmp_path)
    d = Driver(rt)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            await d.setup()
            await push_bids(d, 6_000, chunk=500)  # ~1.5 MB of entries > the 512 KiB cap
            assert rt.storage_failures >= 1
            refused = len(d.refused())
            assert refused > 0
            # "Disk" grows (the cap is raised): writes resume without a restart.
            store.map_cap = 64 << 20
            before = len(d.log)
            await push_bids(d, 2_000, chunk=500)
            assert all(box[0].error is None for _, box in d.log[before:])
            nursery.cancel_scope.cancel()
    try:
        check_acked_and_refused(d, store)
        print(f"\nT6 map at cap: {refused} refused cleanly, then {len(d.acked())} acked in all")
    finally:
        store.close()
