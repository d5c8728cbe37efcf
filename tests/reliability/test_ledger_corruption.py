"""Issue 13.3: start, verify and replay only a sound ledger -- 64 single-byte flips.

A ledger written by the real runtime (signed checkpoints every 10 entries,
snapshots every 25, a data directory with its server key) is copied once per
flip; one byte of the copy's ``data.mdb`` is XOR-ed with a non-zero value at a
seeded position.  For every copy, as subprocesses:

* ``pubex ledger verify``: never a traceback, never a death by a signal; exit
  0, or exit 1 with one ``FAIL:`` sentence;
* ``pubex replay``: the same; when the chain breaks it refuses (exit 1, one
  sentence naming the seq) and ``--unverified`` replays the entries before the
  break, saying ``UNVERIFIED`` first;
* serve's start-up check (``pubex serve --check-only``: the very check a start
  runs, then exit): refuses (exit 1, one sentence) exactly when verify rejects
  -- the copies carry no verified point, so start-up checks them whole;
* a real ``pubex serve`` for a few copies (all 64 with ``PUBEX_FLIP_SERVE_ALL=1``):
  never listening on a copy verify rejects, never killed by a signal.

``PUBEX_FLIP_SEED=N`` picks other positions.  The tally is printed (``-s``).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import tokens

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gateway.entry.cli"]
FLIPS = 64
SEED = int(os.environ.get("PUBEX_FLIP_SEED", "13"))
SERVE_ALL = os.environ.get("PUBEX_FLIP_SERVE_ALL") == "1"
REAL_SERVES = 3  # of the rejected copies, and as many of the accepted ones

pytestmark = pytest.mark.timeout(300)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def pubex(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory written by the trio Runtime: ~200 entries in many batches."""
    import trio

    from engine.messages import ConfirmDeposit, CreateLot, PlaceBid, PublishLot, RegisterBidder
    from gateway.sequencer.runtime import Runtime

    data = tmp_path_factory.mktemp("flips") / "data"
    now = time.time_ns()  # lot times only (the runtime's clock follows the wall clock)

    async def main() -> None:
        rt = Runtime.open(
            data, journal_options={"checkpoint_every_entries": 10, "snapshot_every_entries": 25}
        )
        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    await nursery.start(rt.run)
                    staff = [
                        CreateLot("staff:t", 1, "R-1", "english", "r", 1000, 10, now, now + 10**15),
                        PublishLot("staff:t", 2, "R-1"),
                    ]
                    for i in range(3):
                        staff += [
                            RegisterBidder("staff:t", 3 + 2 * i, "R-1", f"b{i}"),
                            ConfirmDeposit("staff:t", 4 + 2 * i, "R-1", f"b{i}", 0),
                        ]
                    for cmd in staff:
                        assert (await rt.call(cmd)).error is None
                    for i in range(190):
                        who = f"b{i % 3}"
                        out = await rt.call(PlaceBid(f"bidder:{who}", i + 1, "R-1", 1000 + 10 * i))
                        assert out.error is None
                    nursery.cancel_scope.cancel()
        finally:
            rt.store.close()

    trio.run(main)
    assert (data / "ledger" / "data.mdb").stat().st_size > 64 * 1024
    replay = pubex("replay", str(data))
    assert replay.returncode == 0 and replay.stdout.startswith("R-1 english "), replay.stdout
    return data


@dataclass
class Flip:
    n: int
    offset: int
    xor: int
    path: Path
    verify: subprocess.CompletedProcess[str] | None = None
    replay: subprocess.CompletedProcess[str] | None = None
    unverified: subprocess.CompletedProcess[str] | None = None
    check: subprocess.CompletedProcess[str] | None = None
    served: tuple[int, str, str] | None = None  # (exit code, stdout, stderr)
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        assert self.verify is not None
        return self.verify.returncode != 0

    @property
    def chain_break(self) -> int | None:
        """The seq verify names when it says the chain breaks."""
        assert self.verify is not None
        text = self.verify.stdout
        marker = "the ledger's chain breaks at seq "
        if marker not in text:
            return None
        return int(text.split(marker, 1)[1].split(":", 1)[0])


def make_copies(data: Path, root: Path) -> list[Flip]:
    size = (data / "ledger" / "data.mdb").stat().st_size
    rng = random.Random(SEED)
    flips = []
    for n, offset in enumerate(sorted(rng.sample(range(size), FLIPS))):
        copy = root / f"flip{n:02d}"
        (copy / "ledger").mkdir(parents=True)
        for name in ("server.key", "server.pub"):
            shutil.copy2(data / name, copy / name)
        raw = bytearray((data / "ledger" / "data.mdb").read_bytes())
        xor = rng.randrange(1, 256)
        raw[offset] ^= xor
        (copy / "ledger" / "data.mdb").write_bytes(bytes(raw))
        flips.append(Flip(n, offset, xor, copy))
    return flips


def one_sentence(text: str) -> bool:
    lines = text.strip().splitlines()
    return len(lines) == 1 and "Traceback" not in text


def no_crash(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode >= 0, f"{what}: killed by {signal.Signals(-proc.returncode).name}"
    assert "Traceback" not in proc.stderr + proc.stdout, f"{what}:\n{proc.stderr}"


def run_flip(flip: Flip) -> Flip:
    d = str(flip.path)
    flip.verify = pubex("ledger", "verify", d)
    flip.replay = pubex("replay", d)
    if flip.chain_break is not None:
        flip.unverified = pubex("replay", d, "--unverified")
    flip.check = pubex("serve", "--data", d, "--check-only", "--ws-port", "0", "--http-port", "0")
    return flip


def real_serve(data: Path, config: Path) -> tuple[int, str, str]:
    """``pubex serve`` on ``data``: (exit code, stdout, stderr); one that starts
    listening is stopped with SIGTERM (and must exit 0)."""
    argv = ["serve", "--data", str(data), "--config", str(config), "--ws-port", "0"]
    proc = subprocess.Popen(
        [*CLI, *argv, "--http-port", "0"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # the listening line, or EOF when it refuses
    if first.startswith("listening "):
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.wait(), first + out, err


def test_64_byte_flips_never_crash_and_never_start_unsound(data_dir: Path, tmp_path: Path) -> None:
    assert pubex("ledger", "verify", str(data_dir)).returncode == 0
    flips = make_copies(data_dir, tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        flips = list(pool.map(run_flip, flips))

    tally: Counter[str] = Counter()
    for f in flips:
        label = f"flip {f.n} (byte {f.offset} ^ {f.xor:#04x})"
        assert f.verify is not None and f.replay is not None and f.check is not None
        for proc, what in ((f.verify, "verify"), (f.replay, "replay"), (f.check, "serve check")):
            no_crash(proc, f"{label} {what}")
        if not f.rejected:
            tally["harmless"] += 1
            assert f.verify.stdout.startswith("OK: "), f"{label}: {f.verify.stdout}"
            assert f.replay.returncode == 0, f"{label}: {f.replay.stderr}"
            assert f.check.returncode == 0, f"{label}: start-up refused what verify accepts"
            continue
        tally["detected by verify"] += 1
        # verify: exit 1, one FAIL sentence on stdout
        assert f.verify.returncode == 1, f"{label}: {f.verify.stdout}{f.verify.stderr}"
        assert one_sentence(f.verify.stdout) and f.verify.stdout.startswith("FAIL: "), label
        # start-up: refuses exactly what verify rejects, in one sentence
        assert f.check.returncode == 1, f"{label}: started on a ledger verify rejects"
        assert one_sentence(f.check.stderr), f"{label}: {f.check.stderr}"
        assert f.check.stderr.startswith("pubex serve: refusing to start: "), f.check.stderr
        tally["refused by serve's start-up check"] += 1
        bad = f.chain_break
        if bad is not None:
            tally["chain breaks"] += 1
            assert f"seq {bad}" in f.check.stderr, f.check.stderr
            # replay refuses, naming the seq, unless --unverified
            assert f.replay.returncode == 1, f"{label}: replayed a broken chain"
            assert one_sentence(f.replay.stderr) and f"at seq {bad}" in f.replay.stderr
            assert f.unverified is not None
            no_crash(f.unverified, f"{label} replay --unverified")
            assert f.unverified.returncode == 0, f.unverified.stderr
            assert f.unverified.stdout.startswith(
                f"UNVERIFIED: the ledger's chain breaks at seq {bad}"
            )
        else:
            tally["detected otherwise (checkpoint, snapshot, file)"] += 1
            # not a chain break: replay may still refuse (damage), in one sentence
            if f.replay.returncode != 0:
                assert f.replay.returncode == 1 and one_sentence(f.replay.stderr), f.replay.stderr

    # A real `pubex serve`: a few copies of each kind (all with PUBEX_FLIP_SERVE_ALL=1).
    rejected = [f for f in flips if f.rejected]
    accepted = [f for f in flips if not f.rejected]
    chosen = flips if SERVE_ALL else rejected[:REAL_SERVES] + accepted[:REAL_SERVES]
    assert len([f for f in chosen if f.rejected]) >= min(REAL_SERVES, len(rejected)) > 0
    config = tokens.platform_config(tmp_path / "serve.toml")
    for f in chosen:
        code, out, err = real_serve(f.path, config)
        label = f"flip {f.n} real serve"
        assert code >= 0, f"{label}: killed by {signal.Signals(-code).name}"
        assert "Traceback" not in err, f"{label}:\n{err}"
        if f.rejected:
            assert code == 1 and "listening" not in out, f"{label}: started on a rejected ledger"
            assert one_sentence(err) and err.startswith("pubex serve: refusing to start: "), err
            tally["real serve refused"] += 1
        else:
            assert code == 0 and out.startswith("listening "), f"{label}: {err}"
            tally["real serve started (harmless flip)"] += 1

    print(
        f"\nissue 13 flips (seed {SEED}, {FLIPS} flips): "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        + ", tracebacks 0, signal deaths 0"
    )
    for f in flips:
        if f.rejected:
            print(
                f"  flip {f.n:2d} byte {f.offset:6d}: {f.verify.stdout.strip() if f.verify else ''}"
            )
    assert tally["detected by verify"] > 0 and tally["harmless"] > 0
