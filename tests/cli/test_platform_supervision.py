"""Issue 13 (1): ``pubex platform`` supervises, it does not surrender.

Under a small bidding load (one bidder placing bids over a real WebSocket), each
child of a live platform is SIGKILLed in turn: trading goes on (bids are acked
while a companion is down), the child comes back (``/healthz``: restarts = 1,
running) and its follower catches up with the ledger.  SIGKILL serve itself: it
comes back on the same URL and the bidder reconnects and trades.  A companion
that cannot start (its store held by another process) is held after
``restart_max_tries`` and serve keeps trading."""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey

from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from persistence.lock import WriterLock
from tests import tokens
from tests.bench.suite import REPO_ROOT
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(180)

SERVICES = ("supervision", "disclosure", "registry")
HOUR_NS = 3600 * 10**9


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Live:
    """A running platform: its stdout and stderr lines (with the time they were
    read), the URLs it printed."""

    def __init__(self, tmp: Path, services_toml: str = "", pre: str = "") -> None:
        cfg = tokens.platform_config(
            tmp / "platform.toml",
            "[net]\nws_port = 0\nhttp_port = 0\n"
            "[services]\nsupervision_http_port = 0\ndisclosure_http_port = 0\n"
            "registry_http_port = 0\nplatform_http_port = 0\n" + services_toml,
        )
        self.data = tmp / "var"
        argv = [sys.executable, "-m", "gateway.entry.cli", "platform", "--config", str(cfg)]
        argv += ["--data", str(self.data), "--no-sim"]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[tuple[float, str]] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout, self.proc.stderr
        threading.Thread(target=lambda: [self.out.put(x.strip()) for x in out], daemon=True).start()
        threading.Thread(
            target=lambda: [self.err.append((time.monotonic(), x.strip())) for x in err],
            daemon=True,
        ).start()
        self.urls: dict[str, str] = {}

    def wait_urls(self, names: set[str]) -> None:
        deadline = time.monotonic() + 60
        while not names <= self.urls.keys():
            assert time.monotonic() < deadline, (self.urls, self.err)
            try:
                line = self.out.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, self.err
                continue
            if line.startswith("listening ws="):
                self.urls["ws"] = line.split("ws=", 1)[1].split()[0]
                self.urls["serve"] = line.split("http=", 1)[1].split()[0]
            elif line.startswith("service "):
                name, rest = line.split()[1:3]
                self.urls[name] = rest.removeprefix("http=")

    def health(self) -> dict[str, Any]:
        got: dict[str, Any] = get_json(self.urls["platform"] + "healthz")
        return got

    def child(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.health()["children"][name]
        return got

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(90)


class Load:
    """One bidder placing bids on one open lot as fast as they are acked (paced),
    reconnecting when the connection drops; every ack's time is recorded."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.acks: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: trio.run(self.main), daemon=True)
        self.thread.start()

    async def setup(self, nursery: trio.Nursery) -> tuple[str, SigningKey]:
        staff = await Client.connect(nursery, self.ws_url, token=tokens.STAFF)
        key, lot, bidder = SigningKey.generate(), "LOAD1", "load-bidder"
        seq = iter(range(time.time_ns() // 1000, 2**62))
        now = time.time_ns()
        frames = [
            p.RegisterKeyFrame(next(seq), "k-load", bidder, bytes(key.verify_key).hex()),
            p.CreateLotFrame(next(seq), lot, "english", "load", 10_000, 100, now, now + HOUR_NS),
            p.PublishLotFrame(next(seq), lot),
            p.RegisterBidderFrame(next(seq), lot, bidder),
            p.ConfirmDepositFrame(next(seq), lot, bidder, 0),
        ]
        for frame in frames:
            reply = await staff.staff(frame, timeout=30)
            assert isinstance(reply, p.Ack), reply
        await staff.close()
        return lot, key

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            lot, key = await self.setup(nursery)
            nursery.cancel_scope.cancel()
        amount, client_seq = 10_000, time.time_ns() // 1000
        while not self.stop.is_set():
            try:
                async with trio.open_nursery() as nursery:
                    c = await Client.connect(nursery, self.ws_url, key=key, key_id="k-load")
                    self.ready.set()
                    while not self.stop.is_set():
                        client_seq += 1
                        reply = await c.bid(key, "k-load", lot, amount, client_seq, timeout=10)
                        if isinstance(reply, p.Ack):
                            self.acks.append(time.monotonic())
                            amount += 100
                        else:
                            self.errors.append(reply.name)
                            amount += 1_000
                        await trio.sleep(0.01)  # pacing: a steady load, not a flood
                    nursery.cancel_scope.cancel()
            except Exception as e:  # dropped (a group from the nursery), refused, timed out
                self.errors.append(repr(e)[:80])
                await trio.sleep(0.1)  # serve is coming back: reconnect

    def acked_after(self, t: float) -> int:
        return sum(1 for a in self.acks if a > t)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def follower_position(url: str) -> int:
    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("pubex_follower_position{"):
                return int(float(line.rsplit(" ", 1)[1]))
    return -1


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    # a 1 s back-off: a killed companion stays down that long, long enough to see trading go on
    lv = Live(tmp_path, "restart_backoff_ms = 1000\n")
    try:
        lv.wait_urls({"platform", "serve", "ws", *SERVICES})
        yield lv
    finally:
        assert lv.stop() == 0, lv.err
        assert lv.proc.poll() == 0


def test_killed_children_come_back_and_trading_goes_on(live: Live) -> None:
    load = Load(live.urls["ws"])
    try:
        assert load.ready.wait(60), load.errors
        wait_for(lambda: len(load.acks) >= 5, 60, "the first acks")
        for name in SERVICES:
            pid = live.child(name)["pid"]
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            back = wait_for(
                lambda n=name: (c := live.child(n))["state"] == "running" and c["restarts"] == 1,
                60,
                f"{name} back",
            )
            assert back
            c = live.child(name)
            assert c["last_exit"] == -signal.SIGKILL and c["pid"] != pid
            restarted_at = next(
                t for t, line in live.err if line.startswith(f"pubex platform: restarting {name}")
            )
            down = load.acked_after(killed_at) - load.acked_after(restarted_at)
            assert down > 0, f"no bid acked while {name} was down"
            gaps = [b - a for a, b in zip(load.acks, load.acks[1:], strict=False) if killed_at <= a]
            print(f"{name}: {down} bids acked while down; longest ack gap {max(gaps):.3f} s")
            # it catches up: its follower reaches the ledger's durable seq
            durable = get_json(live.urls["serve"] + "healthz")["durable_seq"]
            url = live.urls[name]
            wait_for(lambda u=url, d=durable: follower_position(u) >= d, 60, f"{name} caught up")
        # serve itself
        serve_pid = live.child("serve")["pid"]
        acks_before = len(load.acks)
        killed_at = time.monotonic()
        os.kill(serve_pid, signal.SIGKILL)
        wait_for(lambda: live.child("serve")["restarts"] == 1, 60, "serve restarted")
        wait_for(lambda: live.child("serve")["state"] == "running", 60, "serve running")
        wait_for(lambda: len(load.acks) > acks_before + 5, 60, "bids acked by the new serve")
        back_at = load.acks[acks_before]
        print(f"serve: first ack {back_at - killed_at:.2f} s after its SIGKILL (same URL)")
        health = live.health()
        assert health["ok"] and health["trading"]
        assert all(health["children"][n]["restarts"] == 1 for n in SERVICES)  # not restarted
    finally:
        load.close()
    metrics = urllib.request.urlopen(live.urls["platform"] + "metrics", timeout=10).read()
    assert b'pubex_platform_child_restarts_total{child="serve"} 1.0' in metrics
    assert b'pubex_platform_child_up{child="registry"} 1.0' in metrics


def test_a_child_that_keeps_failing_is_held_and_trading_goes_on(tmp_path: Path) -> None:
    """Disclosure cannot start (another process holds its store: it exits 2, naming
    it); after restart_max_tries it is held; serve and the others go on."""
    holder = WriterLock.acquire(tmp_path / "var" / "disclosure")
    lv = Live(tmp_path, "restart_backoff_ms = 50\nrestart_max_tries = 3\n")
    try:
        lv.wait_urls({"platform", "serve", "ws", "supervision", "registry"})
        wait_for(lambda: lv.child("disclosure")["state"] == "held", 60, "disclosure held")
        c = lv.child("disclosure")
        assert c["restarts"] == 2 and c["last_exit"] == 2 and c["pid"] is None
        held = [line for _, line in lv.err if "disclosure held" in line]
        assert len(held) == 1, lv.err
        assert any(f"pid {os.getpid()} " in line for _, line in lv.err)  # it named the holder
        health = lv.health()
        assert health["held"] == ["disclosure"] and health["trading"] and not health["ok"]
        metrics = urllib.request.urlopen(lv.urls["platform"] + "metrics", timeout=10).read()
        assert b'pubex_platform_child_held{child="disclosure"} 1.0' in metrics
        assert b'pubex_platform_child_state{child="disclosure",state="held"} 1.0' in metrics
        load = Load(lv.urls["ws"])
        try:
            wait_for(lambda: len(load.acks) >= 10, 60, "bids acked with disclosure held")
        finally:
            load.close()
        assert lv.child("disclosure")["state"] == "held"  # never restarted again
    finally:
        holder.release()
        assert lv.stop() == 0, lv.err


def test_serve_that_never_listens_stops_the_platform(tmp_path: Path) -> None:
    """The one exit restarting cannot fix: serve refused at start (here: another
    serve holds the data directory) -- the platform exits with serve's code."""
    holder = WriterLock.acquire(tmp_path / "var" / "ledger")
    try:
        lv = Live(tmp_path)
        assert lv.proc.wait(60) == 2
        assert any("before listening" in line for _, line in lv.err), lv.err
    finally:
        holder.release()
