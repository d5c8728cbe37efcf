"""A sealed tender end to end over real WebSocket connections (signed actions)."""

from __future__ import annotations

import time

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from engine.rules import RuleSet
from engine.sealed import seal_commitment
from gateway.clients.tclient import Client
from gateway.entry.serve import serve
from gateway.wire import protocol as p

NS = 1_000_000_000
CANARY = 8_765_431  # a unique amount: it must appear nowhere before the opening


def act(key: SigningKey, key_id: str, seq: int, action: str, **kw: object) -> str:
    payload = p.SealedPayload(p.SEALED_DOMAIN, action, "T1", key_id, seq, **kw)  # type: ignore[arg-type]
    return p.sealed_frame(key, payload)


async def test_sealed_tender_over_the_gateway(tmp_path):
    keys = {n: SigningKey.generate() for n in ("alice", "bob")}
    amounts = {"alice": CANARY, "bob": 5_000_000}
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(40):
            staff = await Client.connect(nursery, listening.ws_url, token="dev-staff-token")
            now = time.time_ns()
            rules = RuleSet(name="one-time-quote", reveal_window_ns=2 * NS)
            frames: list[p.Frame] = [
                p.CreateLotFrame(
                    1,
                    "T1",
                    "sealed",
                    "一次报价 one-time quote",
                    1_000_000,
                    1,
                    now,
                    now + 2 * NS,
                    rules=rules,
                ),
                p.PublishLotFrame(2, "T1"),
            ]
            for n, (name, key) in enumerate(keys.items()):
                frames += [
                    p.RegisterKeyFrame(
                        10 + 3 * n, f"k-{name}", name, key.verify_key.encode().hex()
                    ),
                    p.RegisterBidderFrame(11 + 3 * n, "T1", name),
                    p.ConfirmDepositFrame(12 + 3 * n, "T1", name, 0),
                ]
            for frame in frames:
                assert isinstance(await staff.staff(frame), p.Ack), frame
            supervisor = await Client.connect(
                nursery, listening.ws_url, token="dev-supervisor-token"
            )
            await supervisor.subscribe(["T1"])
            clients = {
                n: await Client.connect(nursery, listening.ws_url, key=k, key_id=f"k-{n}")
                for n, k in keys.items()
            }
            for name, client in clients.items():
                commitment = seal_commitment("T1", amounts[name], f"nonce-{name}")
                reply = await client.request(
                    1, act(keys[name], f"k-{name}", 1, "submit", commitment=commitment)
                )
                assert isinstance(reply, p.Ack), reply
            while (
                supervisor.snapshots.get("T1") is None
                or supervisor.snapshots["T1"].phase != "reveal"
            ):
                await supervisor.changed.wait()
            for name, client in clients.items():
                reply = await client.request(
                    2,
                    act(
                        keys[name],
                        f"k-{name}",
                        2,
                        "reveal",
                        amount_fen=amounts[name],
                        nonce=f"nonce-{name}",
                    ),
                )
                assert isinstance(reply, p.Ack), reply
            seen_before = [p.encode_text(e) for e in supervisor.events]
            assert not any(str(CANARY) in text for text in seen_before)
            while supervisor.snapshots["T1"].status != "sold":
                await supervisor.changed.wait()
            assert supervisor.snapshots["T1"].price_fen == CANARY
            opening = [
                e
                for e in supervisor.events
                if isinstance(e, p.EventFrame) and e.event["type"] == "opening_record"
            ]
            assert len(opening) == 1 and opening[0].event["valid_count"] == 2
        nursery.cancel_scope.cancel()
