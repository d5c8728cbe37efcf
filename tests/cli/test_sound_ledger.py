"""Issue 13.3 and 13.4 through the CLI, as subprocesses on real LMDB files.

* ``ledger verify`` / ``replay`` on what is not a ledger (random bytes, an
  empty data.mdb, an empty directory) and on a cut-short data.mdb (reading it
  raises SIGBUS): one sentence, the documented exit code, never a traceback;
* ``serve`` on a busy port: one line, exit 2, nothing created;
* the verified point: recorded by a real start, what follows it is checked at
  the next start, what precedes it only with ``--verify-all``;
* ``replay`` refuses a broken chain unless ``--unverified`` (then says so), and
  ``ledger export`` refuses it;
* ``verify --against`` a feed without a checkpoint for the ledger proves
  nothing and says so (exit 1, or 0 with ``--allow-empty``);
* simulated ledgers carry signed checkpoints that verify.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from ledger.record import HEADER_SIZE, seq_key
from ledger.soundness import VERIFIED_KEY, decode_point
from ledger.store import LedgerStore
from tests import tokens

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gateway.entry.cli"]
PORTS = ("--ws-port", "0", "--http-port", "0")

pytestmark = pytest.mark.timeout(180)


def pubex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def sentence(proc: subprocess.CompletedProcess[str], stream: str = "stdout") -> str:
    """The one line a refusal prints (no traceback, no signal death)."""
    assert proc.returncode >= 0, f"killed by {signal.Signals(-proc.returncode).name}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    text: str = getattr(proc, stream)
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sound") / "hot-land"
    proc = pubex("simulate", "--scenario", "hot-land", "--seed", "7", "--ledger", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def data_dir_from(sim: Path, root: Path) -> Path:
    """A serve data directory holding a copy of the simulated ledger."""
    data = root / "data"
    (data / "ledger").mkdir(parents=True)
    shutil.copy2(sim / "data.mdb", data / "ledger" / "data.mdb")
    shutil.copy2(sim / "server.pub", data / "ledger" / "server.pub")
    return data


def tamper(ledger_dir: Path, edit) -> None:  # type: ignore[no-untyped-def]
    env = lmdb.open(str(ledger_dir), subdir=True, max_dbs=8)
    try:
        db = env.open_db(b"entries", create=False)
        with env.begin(write=True) as txn:
            edit(txn, db)
    finally:
        env.close()


def flip_body(seq: int):  # type: ignore[no-untyped-def]
    def edit(txn, db) -> None:  # type: ignore[no-untyped-def]
        value = bytearray(txn.get(seq_key(seq), db=db))
        value[HEADER_SIZE + 3] ^= 0x01
        txn.put(seq_key(seq), bytes(value), db=db)

    return edit


def flip_stored_hash(seq: int):  # type: ignore[no-untyped-def]
    def edit(txn, db) -> None:  # type: ignore[no-untyped-def]
        value = bytearray(txn.get(seq_key(seq), db=db))
        value[40] ^= 0x80  # inside the entry hash: only a chain walk over it can tell
        txn.put(seq_key(seq), bytes(value), db=db)

    return edit


def check_only(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return pubex(
        "serve", "--data", str(data), "--check-only", "--ws-port", "0", "--http-port", "0", *extra
    )


# ------------------------------------------------------------ not a ledger


def test_verify_and_replay_on_what_is_not_a_ledger(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "data.mdb").write_bytes(bytes(range(256)) * 64)
    empty_file = tmp_path / "empty-file"
    empty_file.mkdir()
    (empty_file / "data.mdb").write_bytes(b"")
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    plain = tmp_path / "plain.bin"
    plain.write_bytes(bytes(range(256)) * 16)
    cases = {
        junk: (
            1,
            f"FAIL: {junk}/data.mdb is not an LMDB file: not a pubex ledger, or a damaged one",
        ),
        empty_file: (1, f"FAIL: {empty_file}/data.mdb is empty, so no ledger"),
        empty_dir: (2, f"FAIL: {empty_dir} holds no ledger (no data.mdb)"),
        plain: (1, f"FAIL: {plain} is a file but not a ledger export (a ledger is a directory)"),
    }
    for path, (code, line) in cases.items():
        proc = pubex("ledger", "verify", str(path))
        assert (proc.returncode, sentence(proc)) == (code, line)
        replay = pubex("replay", str(path))
        assert replay.returncode in (1, 2) and not replay.stdout
        assert sentence(replay, "stderr").startswith("pubex replay: ")
    assert sorted(p.name for p in empty_dir.iterdir()) == []  # verify created nothing


def test_a_cut_short_ledger_raises_sigbus_in_the_child_only(sim: Path, tmp_path: Path) -> None:
    """Pages past the end of a truncated data.mdb are mapped but not backed:
    reading one is a SIGBUS.  The child dies of it; the tools say so."""
    data = data_dir_from(sim, tmp_path)
    mdb = data / "ledger" / "data.mdb"
    mdb.write_bytes(mdb.read_bytes()[: mdb.stat().st_size // 2 // 4096 * 4096])
    line = "the ledger file is damaged: reading it killed the checker (SIGBUS)"
    proc = pubex("ledger", "verify", str(data))
    assert (proc.returncode, sentence(proc)) == (1, f"FAIL: {line}")
    proc = pubex("replay", str(data))
    assert (proc.returncode, sentence(proc, "stderr")) == (1, f"pubex replay: {line}")
    proc = pubex("replay", str(data), "--unverified")  # no intact prefix is known
    assert proc.returncode == 1 and not proc.stdout
    cfg = tokens.platform_config(tmp_path / "serve.toml")
    proc = pubex(
        "serve", "--data", str(data), "--config", str(cfg), "--ws-port", "0", "--http-port", "0"
    )
    assert proc.returncode == 1 and "listening" not in proc.stdout
    assert sentence(proc, "stderr") == f"pubex serve: refusing to start: {line}"


# ------------------------------------------------------------ busy port


def test_serve_on_a_busy_port_says_so_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in ("--ws-port", "--http-port"):
            other = "--http-port" if flag == "--ws-port" else "--ws-port"
            data = tmp_path / f"data{flag}"
            proc = pubex("serve", "--data", str(data), flag, str(port), other, "0", "--demo")
            line = sentence(proc, "stderr")
            assert (proc.returncode, line) == (
                2,
                f"pubex serve: port {port} on 127.0.0.1 is in use",
            )
            assert not data.exists()


# ------------------------------------------------------------ the verified point


def _point(ledger_dir: Path) -> tuple[int, bytes] | None:
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        return decode_point(store.get_meta(VERIFIED_KEY))


def _start_and_stop(data: Path, config: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "serve", "--data", str(data), "--config", str(config), *PORTS],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening "), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_start_up_checks_what_follows_the_verified_point(sim: Path, tmp_path: Path) -> None:
    data = data_dir_from(sim, tmp_path / "live")
    ledger_dir = data / "ledger"
    config = tokens.platform_config(tmp_path / "serve.toml")
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        head, head_hash = store.last_seq(), store.last_hash()
    assert _point(ledger_dir) is None  # a simulated ledger has none: checked whole
    _start_and_stop(data, config)
    assert _point(ledger_dir) == (head, head_hash)  # what the start-up check read back
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        assert store.last_seq() > head  # RuntimeStarted: written after the point

    after = shutil.copytree(data, tmp_path / "after", ignore=shutil.ignore_patterns("*.sock"))
    tamper(after / "ledger", flip_body(head + 1))
    proc = check_only(after)
    assert proc.returncode == 1
    assert sentence(proc, "stderr") == (
        f"pubex serve: refusing to start: the ledger's chain breaks at seq {head + 1}: "
        "its contents do not match its stored hash"
    )

    # Behind the point the chain was walked at an earlier start; the start-up
    # replay (from the newest snapshot at or before the point -- here genesis,
    # a simulated ledger has none) re-reads bodies, not stored hashes.
    before = shutil.copytree(data, tmp_path / "before", ignore=shutil.ignore_patterns("*.sock"))
    tamper(before / "ledger", flip_stored_hash(50))
    assert check_only(before).returncode == 0
    proc = check_only(before, "--verify-all")
    assert proc.returncode == 1 and "chain breaks at seq 50: " in sentence(proc, "stderr")

    cut = shutil.copytree(data, tmp_path / "cut", ignore=shutil.ignore_patterns("*.sock"))

    def drop_tail(txn, db) -> None:  # type: ignore[no-untyped-def]
        cur = txn.cursor(db)
        cur.set_range(seq_key(head - 10))
        while cur.delete():
            pass

    tamper(cut / "ledger", drop_tail)
    proc = check_only(cut)
    assert proc.returncode == 1
    assert sentence(proc, "stderr") == (
        f"pubex serve: refusing to start: the ledger ends at seq {head - 11}, but seq {head} "
        "was verified at an earlier start: entries were lost"
    )

    _start_and_stop(data, config)  # the next start moves the point to what it checked
    point = _point(ledger_dir)
    assert point is not None and point[0] > head


# ------------------------------------------------------------ replay --unverified, export


def test_replay_and_export_refuse_a_broken_chain(sim: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(sim, tmp_path / "broken")
    tamper(broken, flip_body(200))
    proc = pubex("replay", str(broken))
    assert proc.returncode == 1 and not proc.stdout
    assert sentence(proc, "stderr") == (
        "pubex replay: the ledger's chain breaks at seq 200: its contents do not match its "
        "stored hash; not replaying it (--unverified replays the entries before it)"
    )
    proc = pubex("replay", str(broken), "--unverified")
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert first == (
        "UNVERIFIED: the ledger's chain breaks at seq 200: its contents do not match its "
        "stored hash; replayed entries 1-199 only"
    )
    assert rest and rest[0].startswith("LAND-2026-001 ")
    timeline = pubex("replay", str(broken), "--unverified", "--lot", "LAND-2026-001")
    assert timeline.stdout.startswith("UNVERIFIED: ")
    assert (
        max(int(line.split("#")[1].split()[0]) for line in timeline.stdout.splitlines()[1:]) < 200
    )
    proc = pubex(
        "replay", str(broken), "--lot", "LAND-2026-001", "--html", str(tmp_path / "r.html")
    )
    assert proc.returncode == 1 and "--html needs a ledger that verifies" in sentence(
        proc, "stderr"
    )
    assert not (tmp_path / "r.html").exists()
    proc = pubex("ledger", "export", str(broken), str(tmp_path / "out.export"))
    assert proc.returncode == 1 and not (tmp_path / "out.export").exists()
    assert sentence(proc).startswith("FAIL: the ledger's chain breaks at seq 200: ")


# ------------------------------------------------------------ proof that proves


def _feed(sim: Path, path: Path, with_checkpoints: bool) -> Path:
    from ledger.checkpoint import Checkpoint  # noqa: F401  (the blob's payload)

    pub = (sim / "server.pub").read_text().strip()
    cps = []
    if with_checkpoints:
        with LedgerStore.open(sim, readonly=True) as store:
            for seq, blob in store.checkpoints():
                entry = store.get(seq)
                assert entry is not None
                cps.append(
                    {"seq": seq, "entry_hash": entry[1].hex(), "ts_ns": 0, "blob": blob.hex()}
                )
    path.write_text(json.dumps({"server_pub": pub, "checkpoints": cps, "next": 0}))
    return path


def test_against_a_feed_without_checkpoints_proves_nothing(sim: Path, tmp_path: Path) -> None:
    empty = _feed(sim, tmp_path / "empty.json", with_checkpoints=False)
    proc = pubex("ledger", "verify", str(sim), "--against", str(empty))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == (
        "FAIL: nothing proven: the feed has no checkpoint for this ledger "
        "(--allow-empty accepts that)"
    )
    proc = pubex("ledger", "verify", str(sim), "--against", str(empty), "--allow-empty")
    assert proc.returncode == 0, proc.stdout
    assert "nothing proven" in proc.stdout.splitlines()[-1]
    full = _feed(sim, tmp_path / "full.json", with_checkpoints=True)
    proc = pubex("ledger", "verify", str(sim), "--against", str(full))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[-1] == "published checkpoints: 4 match (up to seq 368)"


def test_simulated_ledgers_carry_signed_checkpoints_that_verify(sim: Path, tmp_path: Path) -> None:
    proc = pubex("ledger", "verify", str(sim))
    assert proc.returncode == 0, proc.stdout
    assert "0 snapshots and 4 signed checkpoints checked" in proc.stdout  # 100, 200, 300, head
    again = tmp_path / "again"
    assert (
        pubex(
            "simulate", "--scenario", "hot-land", "--seed", "7", "--ledger", str(again)
        ).returncode
        == 0
    )
    assert (again / "data.mdb").read_bytes() == (sim / "data.mdb").read_bytes()
    assert (again / "server.pub").read_text() == (sim / "server.pub").read_text()
    other = tmp_path / "other"
    assert (
        pubex(
            "simulate", "--scenario", "hot-land", "--seed", "8", "--ledger", str(other)
        ).returncode
        == 0
    )
    assert (other / "server.pub").read_text() != (sim / "server.pub").read_text()
    # the checkpoints are really checked: under another seed's key they fail
    forged = shutil.copytree(sim, tmp_path / "forged")
    shutil.copy2(other / "server.pub", forged / "server.pub")
    proc = pubex("ledger", "verify", str(forged))
    assert (proc.returncode, sentence(proc)) == (
        1,
        "FAIL: the signed checkpoint at seq 100 does not hold: its signature does not verify "
        "under the server's key",
    )


# ------------------------------------------------------------ progress bars


def test_progress_bar_ends_at_100_percent() -> None:
    from gateway.entry.cli import _Progress

    out = io.StringIO()
    bar = _Progress("verify", file=out, disable=False)
    bar.start(2500)
    for seq in (1024, 2048):  # the child reports every 1024 entries: never 2500 itself
        bar.advance(seq)
    bar.finish(True)
    assert "100%" in out.getvalue() and "2500/2500" in out.getvalue()
    out = io.StringIO()
    bar = _Progress("replay", file=out, disable=False)
    bar.advance(700)  # no total known (an export): the end is the count
    bar.finish(True, 731)
    assert "731/731" in out.getvalue() and "100%" in out.getvalue()
