"""T7 through the CLI: ``pubex simulate``, ``pubex ledger verify``, ``pubex replay``.

A hot-land ledger is simulated once; ``ledger verify`` accepts it (exit 0,
entry count and state hash).  Copies tampered with through raw LMDB -- a byte
flipped in entry 50's body, entry 50 deleted, entries 50 and 51 swapped --
are each refused (exit 1) with one sentence naming seq 50.  ``replay`` lists
lots and prints a lot's timeline; unknown lots are usage errors (exit 2).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from ledger.record import HEADER_SIZE, seq_key

REPO = Path(__file__).resolve().parents[2]
LOT = "LAND-2026-001"

pytestmark = pytest.mark.timeout(120)


def pubex(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.entry.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def hot_land(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("cli") / "hot-land"
    proc = pubex(
        "simulate", "--scenario", "hot-land", "--seed", "7", "--ledger", str(path), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["entries"] > 60
    return path, summary


def test_verify_intact_ledger(hot_land: tuple[Path, dict]) -> None:
    path, summary = hot_land
    proc = pubex("ledger", "verify", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{summary['entries']} entries" in proc.stdout
    assert summary["state_hash"] in proc.stdout


def flip_byte(txn: lmdb.Transaction, db: object) -> None:
    value = bytearray(txn.get(seq_key(50), db=db))
    value[HEADER_SIZE + len(value[HEADER_SIZE:]) // 2] ^= 0x01
    txn.put(seq_key(50), bytes(value), db=db)


def delete(txn: lmdb.Transaction, db: object) -> None:
    assert txn.delete(seq_key(50), db=db)


def swap(txn: lmdb.Transaction, db: object) -> None:
    a, b = txn.get(seq_key(50), db=db), txn.get(seq_key(51), db=db)
    txn.put(seq_key(50), b, db=db)
    txn.put(seq_key(51), a, db=db)


def flip_hash(txn: lmdb.Transaction, db: object) -> None:
    value = bytearray(txn.get(seq_key(50), db=db))
    value[40] ^= 0x80  # inside the stored entry hash
    txn.put(seq_key(50), bytes(value), db=db)


TAMPERS: dict[str, Callable[[lmdb.Transaction, object], None]] = {
    "byte_flip": flip_byte,
    "delete": delete,
    "swap": swap,
    "hash_flip": flip_hash,
}


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampered_copy_is_refused(hot_land: tuple[Path, dict], tmp_path: Path, kind: str) -> None:
    src, _summary = hot_land
    copy = tmp_path / kind
    shutil.copytree(src, copy)
    env = lmdb.open(str(copy), subdir=True, max_dbs=8)
    try:
        db = env.open_db(b"entries", create=False)
        with env.begin(write=True) as txn:
            TAMPERS[kind](txn, db)
    finally:
        env.close()
    proc = pubex("ledger", "verify", str(copy))
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.startswith("FAIL: the ledger's chain breaks at seq 50: "), proc.stdout
    assert len(proc.stdout.splitlines()) == 1 and not proc.stderr, proc.stdout + proc.stderr
    print(f"\nT7 {kind}: detected ({proc.stdout.strip()})")


def test_replay_lists_lots(hot_land: tuple[Path, dict]) -> None:
    path, summary = hot_land
    proc = pubex("replay", str(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == sum(summary["lots"].values()) == 1
    assert lines[0].startswith(f"{LOT} ")
    assert "lot_sold" in lines[0] or "lot_unsold" in lines[0]


def test_replay_lot_timeline(hot_land: tuple[Path, dict]) -> None:
    path, _summary = hot_land
    proc = pubex("replay", str(path), "--lot", LOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) > 10
    assert any("lot_sold" in line or "lot_unsold" in line for line in lines)
    assert "lot_created" in lines[0]
    seqs = [int(m.group(1)) for line in lines if (m := re.search(r"#(\d+)", line))]
    assert len(seqs) == len(lines) and seqs == sorted(seqs)


def test_replay_until_stops_early(hot_land: tuple[Path, dict]) -> None:
    path, _summary = hot_land
    full = pubex("replay", str(path), "--lot", LOT).stdout.splitlines()
    proc = pubex("replay", str(path), "--lot", LOT, "--until", "10")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and len(lines) < len(full)
    assert all(int(re.search(r"#(\d+)", line).group(1)) <= 10 for line in lines)
    assert not any("lot_sold" in line or "lot_unsold" in line for line in lines)
    assert lines == full[: len(lines)]


def test_replay_unknown_lot_is_usage_error(hot_land: tuple[Path, dict]) -> None:
    path, _summary = hot_land
    proc = pubex("replay", str(path), "--lot", "NO-SUCH-LOT")
    assert proc.returncode == 2
    assert "NO-SUCH-LOT" in proc.stderr


def test_verify_missing_ledger_fails(tmp_path: Path) -> None:
    proc = pubex("ledger", "verify", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert proc.stdout.strip() == f"FAIL: there is nothing at {tmp_path / 'nothing'}"


# ---------------------------------------------- a runtime ledger, with checkpoints


@pytest.fixture(scope="module")
def runtime_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir written by the trio Runtime: signed checkpoints every 10 entries."""
    import time

    import trio

    from engine.messages import ConfirmDeposit, CreateLot, PlaceBid, PublishLot, RegisterBidder
    from gateway.sequencer.runtime import Runtime

    data = tmp_path_factory.mktemp("cli") / "runtime"

    async def main() -> None:
        rt = Runtime.open(
            data, journal_options={"checkpoint_every_entries": 10, "snapshot_every_entries": 25}
        )
        try:
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    await nursery.start(rt.run)
                    now = time.time_ns()
                    staff = [
                        CreateLot("staff:t", 1, "R-1", "english", "r", 1000, 10, now, now + 10**15),
                        PublishLot("staff:t", 2, "R-1"),
                        RegisterBidder("staff:t", 3, "R-1", "b"),
                        ConfirmDeposit("staff:t", 4, "R-1", "b", 0),
                    ]
                    for cmd in staff:
                        assert (await rt.call(cmd)).error is None
                    for i in range(80):
                        out = await rt.call(PlaceBid("bidder:b", i + 1, "R-1", 1000 + 10 * i))
                        assert out.error is None
                    nursery.cancel_scope.cancel()
        finally:
            rt.store.close()

    trio.run(main)
    return data


def test_verify_runtime_ledger_checks_signed_checkpoints(runtime_ledger: Path) -> None:
    proc = pubex("ledger", "verify", str(runtime_ledger))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "84 entries" in proc.stdout
    assert "3 snapshots and 8 signed checkpoints checked" in proc.stdout


def test_truncated_tail_caught_by_a_stored_checkpoint(runtime_ledger: Path, tmp_path: Path) -> None:
    copy = tmp_path / "truncated"
    shutil.copytree(runtime_ledger, copy)
    env = lmdb.open(str(copy / "ledger"), subdir=True, max_dbs=8)
    try:
        db = env.open_db(b"entries", create=False)
        with env.begin(write=True) as txn:
            for seq in range(75, 85):
                assert txn.delete(seq_key(seq), db=db)
    finally:
        env.close()
    proc = pubex("ledger", "verify", str(copy))
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.strip() == (
        "FAIL: the ledger ends at seq 74, before its signed checkpoint at seq 80: "
        "entries were cut off"
    ), proc.stdout
    print(f"\nT7 truncate: detected ({proc.stdout.strip()})")
