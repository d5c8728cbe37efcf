"""A reverse price competition end to end: suppliers quote down with signed
bids, the lowest is offered the award, declines, and the next rank confirms."""

from __future__ import annotations

import time

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from engine.rules import REVERSE
from gateway.clients.tclient import Client
from gateway.entry.serve import serve
from gateway.wire import protocol as p

NS = 1_000_000_000
CEILING, DEC = 1_000_000, 10_000


def award(key: SigningKey, key_id: str, seq: int, action: str) -> str:
    payload = p.SealedPayload(p.SEALED_DOMAIN, action, "R1", key_id, seq)  # type: ignore[arg-type]
    return p.sealed_frame(key, payload)


async def test_reverse_competition_over_the_gateway(tmp_path):
    names = ("s1", "s2", "s3")
    keys = {n: SigningKey.generate() for n in names}
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(40):
            staff = await Client.connect(nursery, listening.ws_url, token="dev-staff-token")
            now = time.time_ns()
            frames: list[p.Frame] = [
                p.CreateLotFrame(
                    1,
                    "R1",
                    "reverse",
                    "网上竞价 40 laptops",
                    CEILING,
                    DEC,
                    now,
                    now + 2 * NS,
                    rules=REVERSE,
                ),
                p.PublishLotFrame(2, "R1"),
            ]
            for n, name in enumerate(names):
                vk = keys[name].verify_key.encode().hex()
                frames += [
                    p.RegisterKeyFrame(10 + 3 * n, f"k-{name}", name, vk),
                    p.RegisterBidderFrame(11 + 3 * n, "R1", name),
                    p.ConfirmDepositFrame(12 + 3 * n, "R1", name, 0),
                ]
            for frame in frames:
                assert isinstance(await staff.staff(frame), p.Ack), frame
            supervisor = await Client.connect(
                nursery, listening.ws_url, token="dev-supervisor-token"
            )
            await supervisor.subscribe(["R1"])
            clients = {
                n: await Client.connect(nursery, listening.ws_url, key=keys[n], key_id=f"k-{n}")
                for n in names
            }
            for i, name in enumerate(names):  # s3 ends lowest
                amount = CEILING - (i + 1) * DEC
                reply = await clients[name].bid(keys[name], f"k-{name}", "R1", amount, 1)
                assert isinstance(reply, p.Ack), reply
            while supervisor.snapshots.get("R1") is None or (
                supervisor.snapshots["R1"].phase != "confirming"
            ):
                await supervisor.changed.wait()
            assert supervisor.snapshots["R1"].price_fen == CEILING - 3 * DEC
            wrong = await clients["s1"].request(2, award(keys["s1"], "k-s1", 2, "confirm_award"))
            assert isinstance(wrong, p.Error) and wrong.name == "not_awarded"
            declined = await clients["s3"].request(2, award(keys["s3"], "k-s3", 2, "decline_award"))
            assert isinstance(declined, p.Ack)
            confirmed = await clients["s2"].request(
                2, award(keys["s2"], "k-s2", 2, "confirm_award")
            )
            assert isinstance(confirmed, p.Ack), confirmed
            while supervisor.snapshots["R1"].status != "sold":
                await supervisor.changed.wait()
            assert supervisor.snapshots["R1"].price_fen == CEILING - 2 * DEC
        nursery.cancel_scope.cancel()
