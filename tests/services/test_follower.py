"""The follower: exactly-once application, chain checks, resume, live tail."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lmdb
import pytest
import trio
import trio.testing

from ledger.record import HASH_SIZE, chain_hash
from ledger.store import LedgerStore
from persistence.service import Position, ServiceStore
from services.follower import ChainBroken, Follower, LedgerMismatch
from tests.ledger.conftest import raw_env, write_chain
from tests.services.conftest import SeenProjection, dump


def follow(
    ledger: Path, store_dir: Path, proj: type[SeenProjection] = SeenProjection, **kw: object
) -> tuple[Follower, ServiceStore]:
    ls = LedgerStore.open(ledger, readonly=True)
    ss = ServiceStore.open(store_dir)
    try:
        return Follower("test", ls, ss, [proj()], **kw), ss  # type: ignore[arg-type]
    except BaseException:
        ss.close()
        ls.close()
        raise


def close(f: Follower) -> None:
    f.store.close()
    f.ledger.close()


def event_counts(ledger: Path) -> dict[bytes, bytes]:
    from engine.messages import decode_events
    from ledger.record import decode_body

    c: Counter[str] = Counter()
    with LedgerStore.open(ledger, readonly=True) as ls:
        for _s, _p, _h, body in ls.iter_entries():
            for ev in decode_events(decode_body(body).events):
                c[str(ev.__struct_config__.tag)] += 1
    return {k.encode(): v.to_bytes(8, "big") for k, v in c.items()}


def test_catch_up_applies_every_entry_once(hot_land: Path, tmp_path: Path) -> None:
    counts = event_counts(hot_land)
    f, ss = follow(hot_land, tmp_path / "svc", chunk_entries=37)
    n = f.catch_up()
    last = f.ledger.last_seq()
    assert n == last and f.position == Position(last, f.ledger.last_hash())
    seen = dump(ss)
    assert sorted(int.from_bytes(k, "big") for k in seen[b"seen"]) == list(range(1, last + 1))
    assert seen[b"counts"] == counts
    st = f.statistics()
    assert (st.position, st.ledger_seq, st.lag_entries) == (last, last, 0)
    assert f.step() == 0
    close(f)


def test_resume_after_restart_equals_uninterrupted(hot_land: Path, tmp_path: Path) -> None:
    ref, ref_store = follow(hot_land, tmp_path / "ref")
    ref.catch_up()
    expected = dump(ref_store)
    close(ref)
    d = tmp_path / "svc"
    for limit in (1, 5, 50, 7, 200):  # stop after each chunk, reopen
        f, _ = follow(hot_land, d)
        f.step(limit)
        close(f)
    f, ss = follow(hot_land, d)
    f.catch_up()
    assert dump(ss) == expected
    close(f)


class Boom(BaseException):
    """A crash mid-chunk (the process dies), not an entry a projection cannot
    apply (an ``Exception``: skipped and recorded, tests/services/test_poison_entries.py)."""


def test_failed_chunk_leaves_nothing(hot_land: Path, tmp_path: Path) -> None:
    """A crash mid-chunk: neither the projection writes nor the position stick."""
    f, ss = follow(hot_land, tmp_path / "svc")
    f.step(10)
    before = dump(ss)
    proj = f.projections[0]
    real = proj.apply

    def apply(txn: lmdb.Transaction[bytes], entry: object) -> None:
        if entry.seq == 15:  # type: ignore[attr-defined]
            raise Boom
        real(txn, entry)  # type: ignore[arg-type]

    proj.apply = apply  # type: ignore[method-assign]
    with pytest.raises(Boom):
        f.step(10)
    assert dump(ss) == before and ss.position().seq == 10 and f.position.seq == 10
    close(f)


def test_map_full_retries_the_chunk(hot_land: Path, tmp_path: Path) -> None:
    ls = LedgerStore.open(hot_land, readonly=True)
    ss = ServiceStore.open(tmp_path / "svc", map_size=64 * 1024)
    proj = SeenProjection()
    f = Follower("test", ls, ss, [proj])
    f.catch_up()
    assert f.position.seq == ls.last_seq()
    assert proj.loads >= 2  # reloaded after at least one aborted (map full) chunk
    close(f)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _flip(ledger: Path, seq: int, rechain: bool = False) -> None:
    """Flip a bit of entry ``seq``'s body; with ``rechain`` also store the hash
    the altered body has (what a rewriter would do)."""
    env, db = raw_env(ledger)
    with env.begin(write=True, db=db) as txn:  # type: ignore[arg-type]
        k = seq.to_bytes(8, "big")
        v = bytearray(txn.get(k))
        v[-1] ^= 0x01
        if rechain:
            prev, body = bytes(v[:HASH_SIZE]), bytes(v[2 * HASH_SIZE :])
            v[HASH_SIZE : 2 * HASH_SIZE] = chain_hash(prev, body)
        txn.put(k, bytes(v))
    env.close()


def test_broken_chain_stops_at_first_bad_seq(hot_land: Path, tmp_path: Path) -> None:
    ledger = _copy(hot_land, tmp_path / "ledger")
    _flip(ledger, 120)
    f, _ = follow(ledger, tmp_path / "svc", chunk_entries=50)
    with pytest.raises(ChainBroken) as e:
        f.catch_up()
    assert e.value.seq == 120 and e.value.reason == "hash_mismatch"
    assert f.position.seq == 100  # the chunks wholly before the break
    close(f)


def test_refuses_to_resume_on_a_rewritten_ledger(hot_land: Path, tmp_path: Path) -> None:
    ledger = _copy(hot_land, tmp_path / "ledger")
    f, _ = follow(ledger, tmp_path / "svc")
    f.step(30)
    close(f)
    _flip(ledger, 30, rechain=True)
    with pytest.raises(LedgerMismatch):
        follow(ledger, tmp_path / "svc")


def test_refuses_a_position_beyond_the_tail(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "long") as ls:
        write_chain(ls, 20)
    with LedgerStore.open(tmp_path / "short") as ls:
        write_chain(ls, 5)
    f, _ = follow(tmp_path / "long", tmp_path / "svc", RawSeen)
    f.catch_up()
    close(f)
    with pytest.raises(LedgerMismatch):
        follow(tmp_path / "short", tmp_path / "svc", RawSeen)


async def test_run_follows_the_live_tail(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Entries committed while running show up; wake() cuts the poll short.
    (No commit worker runs here: trio's autojump ``MockClock`` makes the polls,
    and the fail_after, virtual time.)"""
    ledger = LedgerStore.open(tmp_path / "ledger")
    write_chain(ledger, 10)
    ss = ServiceStore.open(tmp_path / "svc")
    f = Follower("live", ledger, ss, [RawSeen()], poll_max_s=10.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(f.run)
            assert f.position.seq == 10
            write_chain(ledger, 25)
            f.wake()
            while f.position.seq < 25:
                await trio.sleep(0.001)
            write_chain(ledger, 40)  # no wake: the poll finds it
            while f.position.seq < 40:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
    assert f.statistics().lag_entries == 0
    ss.close()
    ledger.close()


class RawSeen(SeenProjection):
    """For synthetic chains whose bodies hold no engine events."""

    def apply(self, txn: lmdb.Transaction[bytes], entry: object) -> None:
        key = entry.seq.to_bytes(8, "big")  # type: ignore[attr-defined]
        assert txn.put(key, entry.entry_hash, db=self.seen, overwrite=False)  # type: ignore[attr-defined]


CHILD = """
import sys
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Follower
from tests.services.test_follower import RawSeen
ls = LedgerStore.open(sys.argv[1], readonly=True)
ss = ServiceStore.open(sys.argv[2])
f = Follower("child", ls, ss, [RawSeen()], chunk_entries=int(sys.argv[3]))
print("ready", flush=True)
while True:
    f.step()
"""


def test_sigkill_at_random_points_while_the_ledger_grows(tmp_path: Path) -> None:
    """A follower process killed at random moments, restarted each time, while
    the ledger keeps growing: every entry applied exactly once, none skipped."""
    import random

    rng = random.Random(int(os.environ.get("PUBEX_SEED", "6")))
    ledger = LedgerStore.open(tmp_path / "ledger")
    write_chain(ledger, 200)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    target = 200
    for round_ in range(8):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(tmp_path / "ledger"),
                str(tmp_path / "svc"),
                str(rng.choice([1, 7, 64])),
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        target += 150
        write_chain(ledger, target, per_batch=rng.choice([1, 10, 50]))
        time.sleep(rng.uniform(0.0, 0.05))  # a random gap: killed anywhere in its catch-up
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, round_
    ss = ServiceStore.open(tmp_path / "svc")
    f = Follower("final", ledger, ss, [RawSeen()])
    f.catch_up()
    with ss.read() as txn:
        seen = dict(txn.cursor(db=ss.db(b"seen")).iternext())
    assert sorted(int.from_bytes(k, "big") for k in seen) == list(range(1, target + 1))
    for k, h in seen.items():
        found = ledger.get(int.from_bytes(k, "big"))
        assert found is not None and found[1] == h and len(h) == HASH_SIZE
    ss.close()
    ledger.close()
