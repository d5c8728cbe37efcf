"""``pubex disclose`` as a process: HTTP feeds, the checkpoint feed that
``ledger verify --against`` reads, and SIGKILLs while the ledger grows."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ledger.store import Batch, LedgerStore
from persistence.service import ServiceStore
from services.disclosure.projection import DisclosureProjection
from services.follower import Follower
from tests import tokens
from tests.ledger.conftest import signed_ledger
from tests.polling import wait_for
from tests.services.test_disclosure import dump

ROOT = Path(__file__).resolve().parents[2]


def start(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.entry.cli",
            "disclose",
            "--data",
            str(data),
            "--http-port",
            "0",
            "--platform-config",
            str(tokens.platform_config(data.parent / "platform.toml")),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening http="), line
    return proc, line.strip().split("=", 1)[1]


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def wait_caught_up(url: str, seq: int) -> None:
    wait_for(
        lambda: json.loads(get(url + "healthz")[1])["position"] == seq,
        30,
        f"the follower at {seq}",
        why=lambda: get(url + "healthz")[1].decode(),
    )


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_http_feeds_and_verify_against_the_live_feed(tmp_path: Path) -> None:
    data = signed_ledger(tmp_path / "data")
    proc, url = start(data)
    try:
        wait_caught_up(url, 84)
        status, page = get(url)
        assert status == 200 and b"R-1" in page
        assert get(url + "lots/R-1")[0] == 200
        feed = json.loads(get(url + "api/notices?since=0&limit=1")[1])
        assert [n["kind"] for n in feed["notices"]] == ["announcement"] and feed["next"] == 1
        assert json.loads(get(url + "api/notices?since=1")[1])["notices"] == []

        # the checkpoint publisher runs every 0.2 s: wait for its last checkpoint
        def checkpoints() -> list[dict[str, int]]:
            return json.loads(get(url + "checkpoints.json?since=0")[1])["checkpoints"]

        wait_for(lambda: (cs := checkpoints()) and cs[-1]["seq"] == 80, 30, "checkpoint 80")
        cps = {"checkpoints": checkpoints()}
        assert [c["seq"] for c in cps["checkpoints"]] == list(range(10, 81, 10))
        assert json.loads(get(url + "checkpoints.json?since=80")[1])["checkpoints"] == []
        assert b"pubex_follower_position" in get(url + "metrics")[1]
        verify = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.entry.cli",
                "ledger",
                "verify",
                str(data),
                "--against",
                url + "checkpoints.json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert verify.returncode == 0 and "8 match" in verify.stdout, verify.stdout
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def tender(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulators.run import simulate

    d = tmp_path_factory.mktemp("tender") / "ledger"
    simulate("tender", 11, d)
    return d


def test_sigkill_while_the_ledger_grows_equals_an_uninterrupted_run(
    tender: Path, tmp_path: Path
) -> None:
    """The engine's ledger is fed in batches while ``pubex disclose`` is killed
    at random moments and restarted; its store ends equal to a follower's that
    ran once from the start."""
    seed = int(os.environ.get("PUBEX_SEED", "17"))
    rng = random.Random(seed)
    with LedgerStore.open(tender, readonly=True) as src:
        values = [(seq, prev + h + body) for seq, prev, h, body in src.iter_entries()]
        ref = ServiceStore.open(tmp_path / "ref")
        Follower("d", src, ref, [DisclosureProjection()]).catch_up()
        expected = dump(ref)
        ref.close()
    data = tmp_path / "data"
    ledger = LedgerStore.open(data / "ledger")
    fed, kills = 0, 0
    while fed < len(values):
        proc, _url = start(data)
        t_end = time.monotonic() + rng.uniform(0.05, 0.6)
        round_end = fed + len(values) // 8 + 1
        while time.monotonic() < t_end and fed < min(round_end, len(values)):
            n = rng.choice([1, 5, 20, 50])
            ledger.commit_batch(Batch(entries=values[fed : fed + n]))
            fed = min(fed + n, len(values))
            time.sleep(rng.uniform(0, 0.02))  # a random gap: the ledger grows under it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    proc, url = start(data)
    try:
        wait_caught_up(url, len(values))
    finally:
        stop(proc)
    ledger.close()
    store = ServiceStore.open(data / "disclosure")
    assert dump(store) == expected, f"seed {seed}"
    store.close()
    assert kills >= 8
    print(f"\nT17 disclosure: {kills} SIGKILLs over {len(values)} entries, gaps 0, duplicates 0")
