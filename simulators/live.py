"""``pubex run``: the runtime on the real clock with a demo catalogue.

Until the gateway lands this is what ``make run`` starts: the durable runtime
(sequencer, engine, ledger writer, timers) on ``DATA/ledger``, a catalogue of
English and listing lots opening and closing over the next minutes, and seeded
bidders submitting through the same ``Runtime.submit`` path the gateway will
use.  Every durable event is printed as it is released.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import trio

from config.settings import load_settings
from engine.messages import (
    ConfirmDeposit,
    CreateLot,
    PlaceBid,
    PublishLot,
    RegisterBidder,
    ResumeLot,
    SetReserve,
)
from engine.rules import JUDICIAL, QINZHOU
from engine.state import FINAL, FROZEN
from gateway.runtime import Runtime
from ledger.audit import describe
from ledger.journal import Applied

NS = 1_000_000_000
STAFF = "staff:demo"


class Demo:
    def __init__(self, rt: Runtime, seed: int) -> None:
        self.rt = rt
        self.rng = random.Random(seed)
        self.staff_seq = max(
            (o.high_seq for k, o in rt.router.state.origins.items() if k == STAFF), default=0
        )
        self.bidder_seq: dict[str, int] = {}

    async def staff(self, cmd_type: type, *args: object, **kw: object) -> None:
        self.staff_seq += 1
        await self.rt.call(cmd_type(STAFF, self.staff_seq, *args, **kw))

    async def catalogue(self, round_no: int) -> list[tuple[str, dict[str, int]]]:
        now = time.time_ns()
        lots = []
        for i in range(6):
            lot_id = f"DEMO-{round_no:03d}-{i}"
            english = i < 4
            start_fen = self.rng.randrange(100, 2_000) * 100_000
            inc = start_fen // 100
            rules = JUDICIAL if english else QINZHOU
            rules = type(rules)(
                **{
                    **{f: getattr(rules, f) for f in rules.__struct_fields__},
                    "extension_window_ns": 60 * NS,
                    "countdown_ns": 60 * NS,
                    "reserve_cutoff_ns": 0,
                }
            )
            start, end = now + (5 + 20 * i) * NS, now + (180 + 60 * i) * NS
            await self.staff(
                CreateLot,
                lot_id,
                "english" if english else "listing",
                f"Demo lot {lot_id}",
                start_fen,
                inc,
                start,
                end,
                rules=rules,
            )
            await self.staff(PublishLot, lot_id)
            if i % 2:
                await self.staff(SetReserve, lot_id, start_fen * 12 // 10)
            values = {}
            for b in range(8):
                bidder = f"demo-{round_no}-{i}-{b}"
                await self.staff(RegisterBidder, lot_id, bidder)
                await self.staff(ConfirmDeposit, lot_id, bidder, 0)
                values[bidder] = int(start_fen * self.rng.uniform(1.0, 1.6))
            lots.append((lot_id, values))
        return lots

    async def unfinished(self) -> list[tuple[str, dict[str, int]]]:
        """Demo lots still open from an earlier run: trade on them before a new round.
        Lots suspended at start-up (system failure) are resumed, as staff would."""
        lots = []
        for lot in list(self.rt.router.state.lots.values()):
            if lot.lot_id.startswith("DEMO-") and lot.status == FROZEN:
                await self.staff(ResumeLot, lot.lot_id, "demo: resumed after restart")
            if lot.lot_id.startswith("DEMO-") and lot.status not in FINAL:
                values = {
                    b: int(lot.start_price_fen * self.rng.uniform(1.0, 1.6)) for b in lot.bidders
                }
                lots.append((lot.lot_id, values))
        return lots

    async def bidders(self, lot_id: str, values: dict[str, int]) -> None:
        while True:
            await trio.sleep(self.rng.uniform(0.5, 4.0))
            lot = self.rt.router.state.lots[lot_id]
            if lot.status in FINAL:
                return
            if lot.status != "open":
                continue
            inc = (
                lot.timed_increment_fen
                if lot.phase == "timed" and lot.timed_increment_fen
                else lot.increment_fen
            )
            amount = lot.price_fen + inc if lot.leader_id else lot.start_price_fen
            keen = [b for b, v in values.items() if v >= amount and b != lot.leader_id]
            if keen:
                bidder = self.rng.choice(keen)
                origin = f"bidder:{bidder}"
                known = self.rt.router.state.origins.get(origin)
                last = self.bidder_seq.get(origin, known.high_seq if known else 0)
                self.bidder_seq[origin] = last + 1
                self.rt.submit(PlaceBid(origin, self.bidder_seq[origin], lot_id, amount))


def _printer(applied: list[Applied]) -> None:
    try:
        _print_events(applied)
    except BrokenPipeError:  # `pubex run | head`: stop printing, keep trading
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115


def _print_events(applied: list[Applied]) -> None:
    for a in applied:
        for ev in a.events:
            if ev.lot_id:
                stamp = time.strftime("%H:%M:%S", time.localtime(a.ts_ns / NS))
                print(f"{stamp} #{a.seq:<7} {ev.lot_id:<14} {describe(None, ev)}", flush=True)


def run_demo(
    data_dir: str | Path, *, seed: int, minutes: float, bidders: bool, config: str | None = None
) -> int:
    settings = load_settings(config)

    async def main() -> None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        rt = Runtime.from_settings(settings, data_dir)
        rt.subscribers.append(_printer)
        print(
            f"pubex runtime on {Path(data_dir).resolve()}/ledger: {rt.durable_seq} entries "
            "recovered; Ctrl-C stops (the gateway and console arrive with issue 3)",
            flush=True,
        )
        with trio.move_on_after(minutes * 60 if minutes > 0 else float("inf")):
            async with trio.open_nursery() as nursery:
                await nursery.start(rt.run)
                demo = Demo(rt, seed)
                round_no = len(rt.router.state.lots) // 6
                while bidders:
                    lots = await demo.unfinished()
                    if not lots:
                        round_no += 1
                        lots = await demo.catalogue(round_no)
                    async with trio.open_nursery() as inner:
                        for lot_id, values in lots:
                            inner.start_soon(demo.bidders, lot_id, values)
                await trio.sleep_forever()
        rt.store.close()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0
