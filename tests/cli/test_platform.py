"""``pubex platform`` (what ``make run`` starts): serve plus the three companions, each its
own process on one data dir; all reachable, following the ledger, and all gone after a
SIGTERM to the platform."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.bench.suite import REPO_ROOT
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(120)

SERVICES = ("supervision", "disclosure", "registry")


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: bytes = r.read()
        return body


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def follower_position(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith("pubex_follower_position{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


def test_platform_starts_every_service_and_stops_them_all(tmp_path: Path) -> None:
    cfg = tmp_path / "ports.toml"
    cfg.write_text(
        "[net]\nws_port = 0\nhttp_port = 0\n"
        "[services]\nsupervision_http_port = 0\ndisclosure_http_port = 0\n"
        "registry_http_port = 0\nplatform_http_port = 0\n"
    )
    argv = [sys.executable, "-m", "gateway.entry.cli", "platform", "--config", str(cfg)]
    argv += ["--data", str(tmp_path / "var"), "--demo", "--no-sim"]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    urls: dict[str, str] = {}
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(urls) < 2 + len(SERVICES) and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"platform exited with {proc.returncode}"
                continue
            if line.startswith("listening ws="):
                urls["serve"] = line.split("http=", 1)[1].split()[0]
            elif line.startswith("service "):
                name, rest = line.split()[1:3]
                urls[name] = rest.removeprefix("http=")
        assert set(urls) == {"serve", "platform", *SERVICES}, urls
        for name, url in urls.items():
            wait_for(lambda u=url: json.loads(get(u + "healthz"))["ok"], 30, f"{name} /healthz")
        # The demo catalogue is in the ledger: a follower reaches the gateway's durable seq.
        durable = wait_for(
            lambda: json.loads(get(urls["serve"] + "healthz"))["durable_seq"], 30, "durable seq"
        )
        assert durable > 1
        wait_for(
            lambda: follower_position(get(urls["supervision"] + "metrics").decode()) >= durable,
            30,
            f"supervision caught up with seq {durable}",
        )
        kids = children_of(proc.pid)
        assert len(kids) == 1 + len(SERVICES), kids
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for pid in kids:  # reaped by the platform before it exited
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the platform"
    finally:
        if proc.poll() is None:
            kids = kids or children_of(proc.pid)
            proc.kill()
            proc.wait()
        for pid in kids:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
