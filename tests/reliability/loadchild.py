"""Crash-test load child (RELIABILITY.md T1).

    python -m tests.reliability.loadchild DATA_DIR ACKLOG SEED

Opens a Runtime on DATA_DIR, makes sure a few English lots with far-away end
times exist, each with registered bidders whose deposits are confirmed
(idempotently: every step checks the recovered router state first, so a kill
in the middle of the set-up is resumed), then submits bids from ``TASKS``
concurrent tasks forever.

For every ACKNOWLEDGED bid (an Outcome with ``error is None``) it appends the
line ``seq origin client_seq amount entry_hash_hex`` to ACKLOG and fsyncs it
-- only after the ack came back, so ACKLOG is a subset of what the runtime
promised durable.  Before submitting, it appends ``origin client_seq amount``
to ``ACKLOG.sub`` (a plain write: a SIGKILL keeps what write(2) accepted), so
the test can prove that nothing the child never submitted reaches the ledger.

Client sequence numbers resume from ``rt.router.high_seq(origin)`` high-water
marks, lot prices from the lot state, so restarts keep ``client_seq`` strictly
increasing per origin.
"""

from __future__ import annotations

import os
import random
import sys
import time

import trio

from engine.messages import ConfirmDeposit, CreateLot, PlaceBid, PublishLot, RegisterBidder
from engine.rules import JUDICIAL
from gateway.sequencer.runtime import Runtime

NS = 1_000_000_000
DAY_NS = 24 * 3600 * NS
STAFF = "staff:crash"
LOTS = ("CRASH-1", "CRASH-2", "CRASH-3")
BIDDERS_PER_LOT = 8
TASKS = 20
START_FEN = 1_000_000
INC_FEN = 1_000
SNAPSHOT_EVERY = 200
CHECKPOINT_EVERY = 100


def bidder_id(lot_id: str, i: int) -> str:
    return f"{lot_id.lower()}-b{i}"


class Load:
    def __init__(self, rt: Runtime, acklog: str, seed: int) -> None:
        self.rt = rt
        self.rng = random.Random(seed)
        self.seqs: dict[str, int] = {}
        self.next_amount: dict[str, int] = {}
        self.ack_fd = os.open(acklog, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.sub_fd = os.open(acklog + ".sub", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def next_seq(self, origin: str) -> int:
        if origin not in self.seqs:
            self.seqs[origin] = self.rt.router.high_seq(origin)
        self.seqs[origin] += 1
        return self.seqs[origin]

    async def staff(self, cmd_type: type, *args: object, **kw: object) -> None:
        outcome = await self.rt.call(cmd_type(STAFF, self.next_seq(STAFF), *args, **kw))
        if outcome.error is not None:
            raise RuntimeError(f"set-up refused: {outcome.error!r}")

    async def setup(self) -> None:
        lots = self.rt.router.state.lots
        for lot_id in LOTS:
            if lot_id not in lots:
                now = time.time_ns()
                await self.staff(
                    CreateLot,
                    lot_id,
                    "english",
                    f"crash test {lot_id}",
                    START_FEN,
                    INC_FEN,
                    now,
                    now + 30 * DAY_NS,
                    rules=JUDICIAL,
                    deposit_fen=0,
                )
            if lots[lot_id].status == "draft":
                await self.staff(PublishLot, lot_id)
            for i in range(BIDDERS_PER_LOT):
                b = bidder_id(lot_id, i)
                if b not in lots[lot_id].bidders:
                    await self.staff(RegisterBidder, lot_id, b)
                if not lots[lot_id].bidders[b].deposit_confirmed:
                    await self.staff(ConfirmDeposit, lot_id, b, 0)

    def amount_for(self, lot_id: str) -> int:
        """Strictly above everything submitted before on this lot: bids are
        sequenced in submission order, so nearly all of them are accepted."""
        lot = self.rt.router.state.lots[lot_id]
        current = lot.price_fen + INC_FEN if lot.leader_id else START_FEN
        amount = max(current, self.next_amount.get(lot_id, 0))
        self.next_amount[lot_id] = amount + INC_FEN
        return amount

    async def bidder_task(self, rng: random.Random) -> None:
        while True:
            lot_id = rng.choice(LOTS)
            origin = f"bidder:{bidder_id(lot_id, rng.randrange(BIDDERS_PER_LOT))}"
            # No await between numbering and submitting: per-origin order holds.
            client_seq = self.next_seq(origin)
            amount = self.amount_for(lot_id)
            os.write(self.sub_fd, f"{origin} {client_seq} {amount}\n".encode())
            outcome = await self.rt.call(PlaceBid(origin, client_seq, lot_id, amount))
            if outcome.error is None:
                line = f"{outcome.seq} {origin} {client_seq} {amount} {outcome.entry_hash.hex()}\n"
                os.write(self.ack_fd, line.encode())
                os.fsync(self.ack_fd)


async def main(data_dir: str, acklog: str, seed: int) -> None:
    rt = Runtime.open(
        data_dir,
        journal_options={
            "snapshot_every_entries": SNAPSHOT_EVERY,
            "checkpoint_every_entries": CHECKPOINT_EVERY,
        },
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        load = Load(rt, acklog, seed)
        await load.setup()
        print("READY", rt.durable_seq, flush=True)
        for i in range(TASKS):
            nursery.start_soon(load.bidder_task, random.Random(seed * 1000 + i))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
