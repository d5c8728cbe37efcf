"""A retried bid gets the byte-identical original ack: same seq, entry hash,
receipt and proof (Ed25519 is deterministic; the store keeps batch boundaries,
so each entry's receipt group is found again)."""

from __future__ import annotations

import time

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from engine.messages import CommandRetried, CreateItem
from engine.rules import RuleSet
from gateway.clients.tclient import Client
from gateway.entry.serve import serve
from gateway.sequencer.journal import Outcome
from gateway.sequencer.runtime import RECEIPT_GROUP
from gateway.wire import protocol as p
from tests.gateway.conftest import wait_for

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
            n = 20
            texts = [p.bid_frame(key, "k1", "L1", 10_000 + 100 * i, i + 1) for i in range(n)]
            for text in texts:
                await bidder.send_text(text)
            while len(bidder.replies) < n:
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
            assert listening.gateway.views.lots["L1"].bid_count == n
        nursery.cancel_scope.cancel()


async def test_a_long_batch_has_one_receipt_per_group_and_retries_find_it(tmp_path):
    """40 commands queued before the sequencer runs commit as one batch: every
    16 entries share a receipt, no proof is longer than 15 hashes, and the ack a
    retry rebuilds from the ledger is the original's, group for group."""
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        gw = listening.gateway
        outcomes: list[Outcome] = []
        n = 40
        for i in range(n):  # no await between: one drain, one batch
            gw.rt.submit(CreateItem("staff:s1", i + 1, f"I{i}", "t"), outcomes.append)
        await wait_for(lambda: len(outcomes) >= n)
        first, last = gw.rt.store.batch_bounds(outcomes[0].seq)
        assert last - first + 1 == n
        assert len({o.receipt for o in outcomes}) == -(-n // RECEIPT_GROUP)
        assert max(len(o.proof()) for o in outcomes) == RECEIPT_GROUP - 1
        for i, o in enumerate(outcomes):
            again = CreateItem("staff:s1", i + 1, f"I{i}", "t")
            retried = CommandRetried(f"I{i}", i + 1, o.seq, 0)
            assert again.client_seq == i + 1
            rebuilt = gw.core.front.original(retried)
            assert rebuilt.retried and rebuilt.code == 0
            assert (rebuilt.receipt, rebuilt.proof) == (o.receipt, o.proof())
        nursery.cancel_scope.cancel()
