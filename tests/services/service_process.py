"""A companion service as a real child process, for the kill-and-restart tests:
start ``pubex <command>`` on a data dir, wait for its listening line, and
SIGKILL it at random points while the ledger grows under it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests import tokens
from tests.polling import wait_for
from tests.services.supervision_market import Market

ROOT = Path(__file__).resolve().parents[2]


def start(command: str, data: Path, log: Path) -> subprocess.Popen[bytes]:
    """The companion with the test tokens (tests.tokens): staff and supervisors
    read it with ``Authorization: Bearer``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    config = tokens.platform_config(data.parent / f"{command}-platform.toml")
    cmd = [
        sys.executable,
        "-m",
        "gateway.entry.cli",
        command,
        "--data",
        str(data),
        "--http-port",
        "0",
    ]
    cmd += ["--platform-config", str(config)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_listening(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> str:
    def listening() -> str | None:
        for line in log.read_text().splitlines():
            if line.startswith("listening http="):
                return line.split("=", 1)[1]
        assert proc.poll() is None, log.read_text()
        return None

    return wait_for(listening, timeout_s, "a listening line", poll_s=0.02, why=log.read_text)


def kill_while_growing(
    command: str,
    data: Path,
    log: Path,
    market: Market,
    lots: Iterator[None],
    rng: random.Random,
    rounds: int = 6,
) -> None:
    """``rounds`` times: start the service, (every other time) let it come up,
    grow the ledger by five steps while it follows, then SIGKILL it."""
    for round_ in range(rounds):
        proc = start(command, data, log)
        if round_ % 2:
            wait_listening(proc, log)  # else killed anywhere from start-up on
        for _ in range(5):
            next(lots)
            market.journal.commit()
            time.sleep(rng.uniform(0, 0.05))  # a random gap: killed anywhere in its catch-up
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, log.read_text()
