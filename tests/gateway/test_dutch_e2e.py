"""A Dutch clock end to end over real WebSocket connections."""

from __future__ import annotations

import time

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from engine.rules import RuleSet
from gateway.clients.tclient import Client
from gateway.entry.serve import serve
from gateway.wire import protocol as p

NS = 1_000_000_000


async def test_dutch_clock_over_the_gateway(tmp_path):
    keys = {name: SigningKey.generate() for name in ("alice", "bob")}
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(30):
            staff = await Client.connect(nursery, listening.ws_url, token="dev-staff-token")
            now = time.time_ns()
            frames: list[p.Frame] = [
                p.CreateLotFrame(
                    0,
                    "D1",
                    "dutch",
                    "罚没车辆 car",
                    10_000,
                    500,
                    now,
                    now + 3600 * NS,
                    rules=RuleSet(name="dutch", tick_ns=60 * NS),
                    floor_fen=7_000,
                ),
                p.PublishLotFrame(0, "D1"),
            ]
            for name, key in keys.items():
                frames += [
                    p.RegisterKeyFrame(0, f"k-{name}", name, key.verify_key.encode().hex()),
                    p.RegisterBidderFrame(0, "D1", name),
                    p.ConfirmDepositFrame(0, "D1", name, 0),
                ]
            for seq, frame in enumerate(frames, 1):
                assert isinstance(await staff.staff(type(frame)(seq, *_fields(frame)[1:])), p.Ack)
            watcher = await Client.connect(nursery, listening.ws_url)
            await watcher.subscribe(["D1"])
            while "D1" not in watcher.snapshots:
                await watcher.changed.wait()
            snap = watcher.snapshots["D1"]
            assert (snap.mechanism, snap.tick, snap.price_fen) == ("dutch", 0, 10_000)

            bob = await Client.connect(nursery, listening.ws_url, key=keys["bob"], key_id="k-bob")
            stale = await bob.request(1, p.bid_frame(keys["bob"], "k-bob", "D1", 9_500, 1, tick=1))
            assert isinstance(stale, p.Error) and stale.name == "stale_tick"
            alice = await Client.connect(
                nursery, listening.ws_url, key=keys["alice"], key_id="k-alice"
            )
            # the signed amount is the price accepted: 1 fen does not buy a 10,000 fen tick
            cheap = await alice.request(1, p.bid_frame(keys["alice"], "k-alice", "D1", 1, 1, 0))
            assert isinstance(cheap, p.Error) and cheap.name == "tick_price_mismatch", cheap
            won = await alice.request(2, p.bid_frame(keys["alice"], "k-alice", "D1", 10_000, 2, 0))
            assert isinstance(won, p.Ack)
            late = await bob.request(2, p.bid_frame(keys["bob"], "k-bob", "D1", 10_000, 2, tick=0))
            assert isinstance(late, p.Error) and late.name == "lot_closed"
            while watcher.snapshots["D1"].status != "sold":
                await watcher.changed.wait()
            assert watcher.snapshots["D1"].price_fen == 10_000
        nursery.cancel_scope.cancel()


def _fields(frame: p.Frame) -> list[object]:
    return [getattr(frame, f) for f in frame.__struct_fields__]
