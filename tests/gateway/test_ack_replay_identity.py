"""A retried bid gets the byte-identical original ack: same seq, entry hash,
receipt and proof (Ed25519 is deterministic; the store keeps batch boundaries)."""

from __future__ import annotations

import time

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from engine.rules import RuleSet
from gateway import protocol as p
from gateway.serve import serve
from gateway.tclient import Client

NS = 1_000_000_000


async def test_retry_returns_the_identical_ack(tmp_path):
    settings = load_settings()
    key = SigningKey.generate()
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                settings, tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(30):
            staff = await Client.connect(nursery, listening.ws_url, token="dev-staff-token")
            now = time.time_ns()
            for frame in (
                p.RegisterKeyFrame(1, "k1", "alice", key.verify_key.encode().hex()),
                p.CreateLotFrame(
                    2, "L1", "english", "t", 10_000, 100, now, now + 600 * NS, rules=RuleSet()
                ),
                p.PublishLotFrame(3, "L1"),
                p.RegisterBidderFrame(4, "L1", "alice"),
                p.ConfirmDepositFrame(5, "L1", "alice", 0),
            ):
                assert isinstance(await staff.staff(frame), p.Ack)
            bidder = await Client.connect(nursery, listening.ws_url, key=key, key_id="k1")
            # several bids in flight share a batch, so the first one's proof is non-empty
            texts = [p.bid_frame(key, "k1", "L1", 10_000 + 100 * i, i + 1) for i in range(20)]
            for text in texts:
                await bidder.send_text(text)
            while len(bidder.replies) < 20:
                await bidder.changed.wait()
            originals = dict(bidder.replies)
            again = await Client.connect(nursery, listening.ws_url, key=key, key_id="k1")
            for i, text in enumerate(texts):
                retry = await again.request(i + 1, text)
                first = originals[i + 1]
                assert isinstance(retry, p.Ack) and isinstance(first, p.Ack)
                assert retry.retried and not first.retried
                assert (retry.seq, retry.entry_hash, retry.receipt, retry.proof, retry.ts_ns) == (
                    first.seq,
                    first.entry_hash,
                    first.receipt,
                    first.proof,
                    first.ts_ns,
                )
            assert listening.gateway.views.lots["L1"].bid_count == 20
        nursery.cancel_scope.cancel()
