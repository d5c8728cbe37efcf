"""Abuse benchmark: what one hostile client costs ``pubex serve``.

Each attack runs against a real ``pubex serve`` (default limits, its own data
dir) from raw sockets in this process, and reports against the bound the
server promises, measured in the same run:

* ``pinger`` -- a watcher that sends pings as fast as it can and never reads;
  cut off (1013) it reconnects and goes on.  Figure: the server's RSS (start,
  peak, end) beside ``send_queue_bytes``, and how often it was cut off.
* ``refuser`` -- a funded bidder whose every bid is refused by the engine
  (below the start price), as fast as its rate limit lets it.  Figure: ledger
  bytes added per minute beside ``refusals_per_minute`` x the bytes of one
  refused entry (the budget).
* ``junk`` -- watchers subscribing to thousands of made-up lot ids each.
  Figure: RSS growth, connections refused by the per-address cap.

Benchmarks never fail on a figure: ``python -m bench abuse [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import (
    Server,
    bench_key,
    bidder_connect,
    key_id,
    lot_id,
    pubex_setup,
    ws_connect,
    ws_frame,
)
from config.settings import LimitSettings
from gateway.wire import protocol as p
from ledger.store import LedgerStore

LIMITS = LimitSettings()


def log(msg: str) -> None:
    print(f"[bench abuse] {msg}", file=sys.stderr, flush=True)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start_server(tmp: Path) -> Server:
    argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--data", str(tmp / "data")]
    return Server([*argv, "--ws-port", "0", "--http-port", "0", "--sandbox"], "pubex serve")


def pinger(seconds: float) -> dict[str, Any]:
    """A never-reading ping flood, reconnecting whenever the server cuts it off."""
    with tempfile.TemporaryDirectory(prefix="pubex-bench-abuse-") as tmp:
        srv = start_server(Path(tmp))
        try:
            time.sleep(0.5)
            start = peak = rss_bytes(srv.pid)
            chunk = b"".join(ws_frame(b'{"type":"ping","t":%d}' % i) for i in range(200))
            sent = cutoffs = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                conn = ws_connect(srv.url)
                conn.sock.settimeout(0.5)
                try:
                    while time.monotonic() < deadline:
                        conn.sock.sendall(chunk)  # never reads a pong
                        sent += 200
                        peak = max(peak, rss_bytes(srv.pid))
                except (TimeoutError, OSError):
                    cutoffs += 1  # the server stopped reading (overflowed) or closed it
                finally:
                    conn.sock.close()
                peak = max(peak, rss_bytes(srv.pid))
            time.sleep(1)
            end = rss_bytes(srv.pid)
            alive = srv.proc.poll() is None
        finally:
            srv.stop()
    return {
        "seconds": seconds,
        "pings_sent": sent,
        "cutoffs": cutoffs,
        "rss_start_bytes": start,
        "rss_peak_bytes": peak,
        "rss_end_bytes": end,
        "send_queue_bytes": LIMITS.send_queue_bytes,
        "server_alive": alive,
    }


def refuser(seconds: float) -> dict[str, Any]:
    """A funded bidder sending bids below the start price as fast as allowed."""
    with tempfile.TemporaryDirectory(prefix="pubex-bench-abuse-") as tmp:
        srv = start_server(Path(tmp))
        try:
            pubex_setup(srv.url, 1, ("open",))
            ledger = Path(tmp) / "data" / "ledger"
            before = _ledger_bytes(ledger)
            conn = bidder_connect(srv.url, 0)
            conn.sock.setblocking(False)
            names: dict[str, int] = {}
            t0 = time.monotonic()
            seq = 10**9
            while time.monotonic() - t0 < seconds:
                seq += 1
                text = p.bid_frame(bench_key(0), key_id(0), lot_id("open", 0), 1, seq)
                conn.sock.sendall(ws_frame(text.encode()))
                time.sleep(0.002)
                for msg in conn.read():
                    name = json.loads(msg).get("name", "ack")
                    names[name] = names.get(name, 0) + 1
            elapsed = time.monotonic() - t0
            time.sleep(0.5)
            for msg in conn.read():
                name = json.loads(msg).get("name", "ack")
                names[name] = names.get(name, 0) + 1
            conn.sock.close()
            srv.stop()
            grown, entries, entry_bytes = _ledger_growth(ledger, before)
        finally:
            srv.stop()
    per_minute = grown * 60 / elapsed
    budget = LIMITS.refusals_per_minute * (entry_bytes / max(entries, 1))
    return {
        "seconds": round(elapsed, 1),
        "frames_sent": seq - 10**9,
        "replies": names,
        "ledger_entries_added": entries,
        "ledger_bytes_added": grown,
        "ledger_bytes_per_minute": round(per_minute),
        "refusals_per_minute": LIMITS.refusals_per_minute,
        "budget_bytes_per_minute": round(budget),
    }


def junk(watchers: int, ids: int) -> dict[str, Any]:
    """Watchers that each subscribe to ``ids`` lot ids that do not exist."""
    with tempfile.TemporaryDirectory(prefix="pubex-bench-abuse-") as tmp:
        srv = start_server(Path(tmp))
        try:
            time.sleep(0.5)
            start = rss_bytes(srv.pid)
            made_up = [f"made-up-{i:06d}" for i in range(ids)]
            frame = b"".join(  # 500 ids a frame: each frame under max_frame_bytes
                ws_frame(p.encode(p.Subscribe(made_up[i : i + 500]))) for i in range(0, ids, 500)
            )
            conns, refused = [], 0
            for _ in range(watchers):
                try:
                    c = ws_connect(srv.url)
                except ConnectionError:
                    refused += 1
                    continue
                with contextlib.suppress(OSError):
                    c.sock.sendall(frame)
                conns.append(c)
            time.sleep(2)
            peak = rss_bytes(srv.pid)
            for c in conns:
                c.sock.close()
            time.sleep(1)
            end = rss_bytes(srv.pid)
            alive = srv.proc.poll() is None
        finally:
            srv.stop()
    return {
        "watchers": watchers,
        "ids_each": ids,
        "connected": len(conns),
        "refused_by_cap": refused,
        "rss_start_bytes": start,
        "rss_peak_bytes": peak,
        "rss_end_bytes": end,
        "server_alive": alive,
    }


def _ledger_bytes(ledger: Path) -> int:
    store = LedgerStore.open(ledger, readonly=True)
    try:
        return sum(len(raw) for _s, _p, _h, raw in store.iter_entries(1))
    finally:
        store.close()


def _ledger_growth(ledger: Path, before: int) -> tuple[int, int, int]:
    """Bytes added since ``before``, entries added, and those entries' bytes."""
    store = LedgerStore.open(ledger, readonly=True)
    try:
        rows = [len(raw) for _s, _p, _h, raw in store.iter_entries(1)]
    finally:
        store.close()
    total = sum(rows)
    added, n = total - before, 0
    acc = 0
    for size in reversed(rows):  # the entries that make up the growth
        if acc >= added:
            break
        acc += size
        n += 1
    return added, n, acc


def table(r: dict[str, Any]) -> str:
    mb = 1 / (1 << 20)
    pg, rf, jk = r["pinger"], r["refuser"], r["junk"]
    rows = [
        "| attack | figure | bound (same run) |",
        "| --- | --- | --- |",
        f"| never-reading pinger, {pg['seconds']:g} s, {pg['pings_sent']:,} pings, "
        f"{pg['cutoffs']} cut-offs | server RSS {pg['rss_start_bytes'] * mb:.0f} -> peak "
        f"{pg['rss_peak_bytes'] * mb:.0f} -> {pg['rss_end_bytes'] * mb:.0f} MiB "
        f"(alive: {pg['server_alive']}) | send_queue_bytes "
        f"{pg['send_queue_bytes'] * mb:.0f} MiB per connection |",
        f"| refusing bidder, {rf['seconds']:g} s, {rf['frames_sent']:,} frames | "
        f"ledger +{rf['ledger_bytes_per_minute']:,} B/min ({rf['ledger_entries_added']} "
        f"entries); replies {json.dumps(rf['replies'])} | "
        f"{rf['refusals_per_minute']} refusals/min = {rf['budget_bytes_per_minute']:,} B/min |",
        f"| {jk['watchers']} watchers x {jk['ids_each']:,} made-up ids | RSS "
        f"{jk['rss_start_bytes'] * mb:.0f} -> peak {jk['rss_peak_bytes'] * mb:.0f} -> "
        f"{jk['rss_end_bytes'] * mb:.0f} MiB; {jk['connected']} connected, "
        f"{jk['refused_by_cap']} refused (alive: {jk['server_alive']}) | "
        f"{LIMITS.max_connections_per_address} connections per address; unknown ids kept: 0 |",
    ]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench abuse", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="seconds, not minutes")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=0, help="pinger and refuser duration")
    args = ap.parse_args(argv)
    seconds = args.seconds or (5 if args.quick else 60)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    socket.setdefaulttimeout(30)
    log(f"pinger: {seconds:g} s")
    r = {"pinger": pinger(seconds)}
    log(f"refuser: {seconds:g} s")
    r["refuser"] = refuser(seconds)
    log("junk subscriptions")
    r["junk"] = junk(50 if args.quick else 300, 5000)
    if args.json:
        print(json.dumps(r))
    else:
        print(table(r))
    return 0
