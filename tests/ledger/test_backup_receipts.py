"""Backup of a live ledger; verification of receipts kept by bidders."""

from __future__ import annotations

import json
import subprocess
import sys

import trio

from engine.messages import ConfirmDeposit, CreateLot, PlaceBid, PublishLot, RegisterBidder
from engine.rules import MINUTE_NS
from gateway.sequencer.clock import TrioClock
from gateway.sequencer.runtime import Runtime
from ledger.audit import verify_receipts
from ledger.store import LedgerStore

EPOCH_NS = 1_767_542_400 * 1_000_000_000
STAFF = "staff:t"


async def _trade(rt: Runtime, bids: int) -> list[dict]:
    now = rt.clock.peek()
    for i, cmd in enumerate(
        [
            CreateLot(STAFF, 1, "L1", "english", "lot", 10_000, 100, now, now + 60 * MINUTE_NS),
            PublishLot(STAFF, 2, "L1"),
            RegisterBidder(STAFF, 3, "L1", "b0"),
            ConfirmDeposit(STAFF, 4, "L1", "b0", 0),
        ]
    ):
        assert (await rt.call(cmd)).error is None, i
    kept = []
    done = trio.Event()

    def keep(o) -> None:
        kept.append(
            {
                "seq": o.seq,
                "entry_hash": o.entry_hash.hex(),
                "receipt": o.receipt.hex(),
                "proof": [h.hex() for h in o.proof()],
            }
        )
        if len(kept) == bids:
            done.set()

    for i in range(bids):  # submitted together: they share batches, so proofs are non-empty
        rt.submit(PlaceBid("bidder:b0", i + 1, "L1", 10_000 + 100 * i), keep)
    with trio.fail_after(30):
        await done.wait()
    return kept


async def test_receipts_verify_and_tampering_shows(tmp_path):
    rt = Runtime.open(tmp_path, clock=TrioClock(EPOCH_NS))
    rt.sign_receipts = True
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        kept = await _trade(rt, 200)
        nursery.cancel_scope.cancel()
    rt.store.close()
    assert any(row["proof"] for row in kept), "no receipt covered more than one entry"
    good = tmp_path / "receipts.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in kept))
    checks = verify_receipts(tmp_path, good)
    assert len(checks) == 200 and all(c.ok for c in checks)

    forged = dict(kept[5], entry_hash="00" * 32)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(forged))
    (check,) = verify_receipts(tmp_path, bad)
    assert not check.ok and "chain" in check.reason


async def test_backup_of_a_live_ledger_is_a_verified_prefix(tmp_path):
    rt = Runtime.open(tmp_path / "data", clock=TrioClock(EPOCH_NS))
    out = tmp_path / "copy"
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        await _trade(rt, 50)
        code = (
            "import sys; from ledger.backup import backup; r = backup(sys.argv[1], sys.argv[2]);"
            " print(r.ok, r.count)"
        )
        proc = await trio.run_process(
            [sys.executable, "-c", code, str(tmp_path / "data" / "ledger"), str(out)],
            capture_stdout=True,
        )
        live_seq = rt.durable_seq
        nursery.cancel_scope.cancel()
    ok, count = proc.stdout.decode().split()
    assert ok == "True" and 0 < int(count) <= live_seq
    with LedgerStore.open(out, readonly=True) as copy:
        assert copy.last_seq() == int(count)
    rt.store.close()
    assert (
        subprocess.run(
            [sys.executable, "-m", "gateway.entry.cli", "ledger", "verify", str(out)],
            capture_output=True,
        ).returncode
        == 0
    )
