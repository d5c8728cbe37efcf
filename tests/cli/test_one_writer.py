"""Issue 13 (3): one writer per data directory and per companion store.

A second ``pubex serve --data SAME`` on a live directory used to append its
``runtime_started`` entry and make the first die with ``LedgerCorrupt``.  Now
the second prints one line naming the holder (its pid and command line) and
exits 2 having written nothing; the first goes on.  Likewise a second
companion on one store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ledger.store import LedgerStore
from persistence.lock import LOCK_NAME, DirectoryInUse, WriterLock
from persistence.service import ServiceStore
from tests import tokens
from tests.services.service_process import ROOT, start, wait_listening

pytestmark = pytest.mark.timeout(120)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def serve(data: Path, config: Path, **kw: object) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--data", str(data)]
    argv += ["--config", str(config), "--ws-port", "0", "--http-port", "0"]
    return subprocess.Popen(argv, cwd=ROOT, env=env(), text=True, **kw)  # type: ignore[call-overload]


def ledger_state(data: Path) -> tuple[int, bytes]:
    with LedgerStore.open(data / "ledger", readonly=True) as ls:
        return ls.last_seq(), ls.last_hash()


def test_the_lock_names_its_holder_and_frees_on_release(tmp_path: Path) -> None:
    first = WriterLock.acquire(tmp_path / "d")
    with pytest.raises(DirectoryInUse) as e:
        WriterLock.acquire(tmp_path / "d")  # flock excludes a second open, same process too
    assert f"pid {os.getpid()}" in str(e.value) and "pytest" in str(e.value)
    first.release()
    WriterLock.acquire(tmp_path / "d").release()
    # the stores take it: a second writer of one ledger or one service store is refused
    with LedgerStore.open(tmp_path / "ledger"), pytest.raises(DirectoryInUse):
        WriterLock.acquire(tmp_path / "ledger")
    with ServiceStore.open(tmp_path / "svc"), pytest.raises(DirectoryInUse):
        WriterLock.acquire(tmp_path / "svc")
    LedgerStore.open(tmp_path / "ledger", readonly=True).close()  # readers take no lock


def test_second_serve_on_one_data_dir_is_refused_having_written_nothing(tmp_path: Path) -> None:
    data = tmp_path / "var"
    config = tokens.platform_config(tmp_path / "platform.toml")
    first = serve(data, config, stdout=subprocess.PIPE)
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert line.startswith("listening "), line
        http = line.split("http=", 1)[1].split()[0]
        lock_before = (data / "ledger" / LOCK_NAME).read_text()
        # the writer is serve's sequencer process (pubex serve --edges K)
        holder = int(lock_before.split("pid ", 1)[1].split()[0])
        assert "gateway.entry.cli sequencer" in lock_before
        assert _parent_of(holder) == first.pid
        before = ledger_state(data)
        second = serve(data, config, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2, (out, err)
        assert out == ""  # never listening
        [message] = err.strip().splitlines()
        assert f"pid {holder} " in message and "gateway.entry.cli sequencer" in message, message
        assert ledger_state(data) == before  # no runtime_started, nothing at all
        assert (data / "ledger" / LOCK_NAME).read_text() == lock_before
        with urllib.request.urlopen(http + "healthz", timeout=10) as r:
            assert json.loads(r.read())["ok"]  # the first still serves
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    # once it is gone, the directory is free (the kernel dropped the lock)
    again = serve(data, config, stdout=subprocess.PIPE)
    try:
        assert again.stdout is not None and again.stdout.readline().startswith("listening ")
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(60)


def test_second_companion_on_one_store_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with LedgerStore.open(data / "ledger"):
        pass  # an empty ledger to follow
    procs = []
    try:
        for cmd, store in (("supervise", "supervision"), ("disclose", "disclosure")):
            first = start(cmd, data, tmp_path / f"{cmd}-1.log")
            procs.append(first)
            wait_listening(first, tmp_path / f"{cmd}-1.log")
            files = sorted((p.name, p.stat().st_size) for p in (data / store).iterdir())
            second = start(cmd, data, tmp_path / f"{cmd}-2.log")
            procs.append(second)
            assert second.wait(60) == 2
            [message] = (tmp_path / f"{cmd}-2.log").read_text().strip().splitlines()
            assert f"pid {first.pid} " in message and f"gateway.entry.cli {cmd}" in message, message
            assert str(data / store) in message
            assert sorted((p.name, p.stat().st_size) for p in (data / store).iterdir()) == files
            assert first.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
