"""T1: SIGKILL the runtime at random moments under a bid load, restart, check.

The child (``tests/reliability/loadchild.py``) acknowledges into ACKLOG only
after ``rt.call`` returned an Outcome without error.  After every kill the
ledger is opened read-only and checked:

* acked-lost = 0: every ACKLOG line has its entry, at that seq, with that
  exact entry hash and that exact command;
* ``verify_chain`` is ok (a gap-free verified prefix);
* recover (snapshot + tail) gives the same state hash as a full replay, and
  the full replay re-produces every entry's recorded events (nothing
  half-applied);
* nothing unsubmitted: every bidder command in the ledger was submitted by the
  child (ACKLOG.sub).

Exactly-once across restarts: the same origin+client_seq submitted again to a
restarted runtime gets ``CommandRetried`` pointing at the original seq -- for
acknowledged commands and for indeterminate ones (durable, ack lost in the
kill).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import trio

from engine.messages import CommandRetried, PlaceBid, decode_command
from gateway.sequencer.runtime import Runtime
from ledger.audit import verify_ledger
from ledger.record import decode_body
from ledger.replay import full_replay, recover
from ledger.store import LedgerStore
from ledger.verify import verify_chain

REPO = Path(__file__).resolve().parents[2]
KILLS = 22
SEED = 20260105

pytestmark = pytest.mark.timeout(180)

Acked = tuple[int, str, int, int, str]  # seq, origin, client_seq, amount, hash hex


def read_lines(path: Path) -> list[list[str]]:
    """Complete lines only: a line cut by the kill was never fully written."""
    if not path.exists():
        return []
    data = path.read_text()
    if not data.endswith("\n"):
        data = data[: data.rfind("\n") + 1]
    return [line.split() for line in data.splitlines() if line]


def read_acklog(path: Path) -> list[Acked]:
    return [(int(s), o, int(c), int(a), h) for s, o, c, a, h in read_lines(path)]


def check_ledger(data_dir: Path, acklog: Path) -> dict[str, int]:
    """Every post-kill property; returns figures (acked, lost, entries)."""
    acked = read_acklog(acklog)
    submitted = {(o, int(c), int(a)) for o, c, a in read_lines(Path(str(acklog) + ".sub"))}
    ledger_dir = data_dir / "ledger"
    if not (ledger_dir / "data.mdb").exists():
        assert not acked
        return {"acked": 0, "lost": 0, "entries": 0}
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        chain = verify_chain(store)
        assert chain.ok, chain
        assert chain.last_seq == store.last_seq()
        lost = []
        for seq, origin, client_seq, amount, hexhash in acked:
            entry = store.get(seq)
            if entry is None or entry[1].hex() != hexhash:
                lost.append(seq)
                continue
            body = decode_body(entry[2])
            cmd_ok = body.seq == seq
            cmd = decode_command(body.command)
            cmd_ok = cmd_ok and cmd == PlaceBid(origin, client_seq, cmd.lot_id, amount)
            if not cmd_ok:
                lost.append(seq)
        assert not lost, f"acknowledged but lost: {lost[:10]} ({len(lost)})"
        assert len({a[0] for a in acked}) == len(acked), "a seq acknowledged twice"

        unsubmitted: list[int] = []

        def on_entry(body, cmd, events) -> None:  # type: ignore[no-untyped-def]
            if cmd.origin.startswith("bidder:") and (
                type(cmd) is not PlaceBid
                or (cmd.origin, cmd.client_seq, cmd.amount_fen) not in submitted
            ):
                unsubmitted.append(body.seq)

        full = full_replay(store, on_entry=on_entry)  # raises ReplayDivergence if half-applied
        assert not unsubmitted, f"entries the child never submitted: {unsubmitted[:10]}"
        recovered = recover(store)
        assert recovered.applied == full.applied == chain.last_seq
        assert recovered.state_hash() == full.state_hash()
        if chain.last_seq >= 200:  # the child snapshots every 200 entries
            snap = store.latest_snapshot()
            assert snap is not None and snap[0] > chain.last_seq - 200 - 1024
        return {"acked": len(acked), "lost": len(lost), "entries": chain.last_seq}


def ledger_bids(data_dir: Path) -> dict[tuple[str, int], tuple[int, int]]:
    """Every bid in the ledger: (origin, client_seq) -> (ledger seq, amount), first one."""
    found: dict[tuple[str, int], tuple[int, int]] = {}
    with LedgerStore.open(data_dir / "ledger", readonly=True) as store:
        for seq, _prev, _h, raw in store.iter_entries():
            cmd = decode_command(decode_body(raw).command)
            if type(cmd) is PlaceBid:
                found.setdefault((cmd.origin, cmd.client_seq), (seq, cmd.amount_fen))
    return found


def check_retries(data_dir: Path, acklog: Path) -> tuple[int, int]:
    """Restart in-process; retry the last acked and indeterminate bids of each origin.

    Only client_seqs within the router's retry window (the last 32 of the
    origin) can get their original outcome; older ones are refused stale.
    """
    bids = ledger_bids(data_dir)
    high: dict[str, int] = defaultdict(int)
    for origin, client_seq in bids:
        high[origin] = max(high[origin], client_seq)
    acked = {(o, c): (s, a) for s, o, c, a, _h in read_acklog(acklog)}
    probes: list[tuple[str, int, int, int]] = []  # origin, client_seq, amount, expected seq
    n_acked = n_indeterminate = 0
    # The probe is the very same command (same frame) the child submitted.
    for (origin, client_seq), (seq, amount) in sorted(bids.items()):
        if client_seq <= high[origin] - 32:
            continue
        if (origin, client_seq) in acked:
            assert acked[(origin, client_seq)] == (seq, amount)
            probes.append((origin, client_seq, amount, seq))
            n_acked += 1
        else:
            probes.append((origin, client_seq, amount, seq))
            n_indeterminate += 1
    assert n_acked > 0
    assert probes

    async def main() -> None:
        rt = Runtime.open(data_dir)
        try:
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    await nursery.start(rt.run)
                    before = rt.durable_seq
                    for origin, client_seq, amount, expected in probes:
                        lot_id = origin.split(":")[1].rsplit("-", 1)[0].upper()
                        out = await rt.call(PlaceBid(origin, client_seq, lot_id, amount))
                        assert out.error is None
                        assert out.seq > before  # ledgered as a new entry...
                        assert out.events == [CommandRetried(lot_id, client_seq, expected, 0)], (
                            origin,
                            client_seq,
                            expected,
                            out.events,
                        )  # ...with no new effect
                    nursery.cancel_scope.cancel()
        finally:
            rt.store.close()

    trio.run(main)
    return n_acked, n_indeterminate


def run_child(data_dir: Path, acklog: Path, seed: int, delay: float, log: Path) -> None:
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.loadchild",
                str(data_dir),
                str(acklog),
                str(seed),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            # Kill a busy engine: wait for its first acks (start-up is slow on a loaded
            # machine), then let it run ``delay`` seconds more.
            before = acklog.stat().st_size if acklog.exists() else 0
            deadline = time.monotonic() + 30
            while (acklog.stat().st_size if acklog.exists() else 0) <= before:
                assert proc.poll() is None, f"child died by itself: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "the child never acked"
                time.sleep(0.01)
            time.sleep(delay)
            assert proc.poll() is None, f"child died by itself: {log.read_text()[-2000:]}"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=20) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)


def test_sigkill_under_load_loses_no_ack(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data_dir, acklog, log = tmp_path / "data", tmp_path / "acks.log", tmp_path / "child.err"
    figures: list[dict[str, int]] = []
    retried_acked = retried_indeterminate = 0
    for kill in range(1, KILLS + 1):
        run_child(data_dir, acklog, SEED + kill, rng.uniform(0.05, 0.7), log)
        figures.append(check_ledger(data_dir, acklog))
        if kill in (KILLS // 2, KILLS):
            a, i = check_retries(data_dir, acklog)
            retried_acked, retried_indeterminate = retried_acked + a, retried_indeterminate + i
    last = check_ledger(data_dir, acklog)
    print(
        f"\nT1: kills survived {KILLS}/{KILLS}, acked {last['acked']}, acked-lost "
        f"{sum(f['lost'] for f in figures)}, ledger entries {last['entries']}, "
        f"retries answered with their original outcome: {retried_acked} acked + "
        f"{retried_indeterminate} indeterminate"
    )
    assert last["acked"] > 1000, "the load barely ran: kills did not hit a busy engine"
    # The supervisors' check: chain + replay + every snapshot + every signed checkpoint.
    report = verify_ledger(data_dir)
    assert report.ok, report
    assert report.snapshots_checked > 10 and report.checkpoints_checked > 10
    # entries grew across restarts (the child resumed after kills)
    grew = sum(1 for a, b in itertools.pairwise(figures) if b["acked"] > a["acked"])
    assert grew >= KILLS // 2
