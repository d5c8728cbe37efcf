"""Gateway benchmark: ``pubex serve`` against the WebSocket layer's own limits, in ONE run.

``python -m bench gateway [--json] [--quick]``

Three servers, each in its own process, driven by the same client load
(K=50 connections, each sending signed ``place_bid`` frames and waiting for
the reply of each before the next -- window W=1 -- "as fast as acks return"):

* ``raw_echo_per_s`` -- a raw trio-websocket echo server (``python -m
  bench.gateway echo``): the ceiling of the WebSocket layer.
* ``raw_echo_verify_per_s`` -- the same echo server that also decodes each
  frame and its payload and verifies the Ed25519 signature before echoing
  (``echo --verify``): the irreducible work per bid, the limit to measure
  the gateway against.  ``raw_verify_to_raw_ratio`` = verify / raw.
* ``acks_per_s`` -- ``pubex serve`` (``python -m gateway.entry.cli serve``, temp data
  dir, fsync'd ledger): each bid is a valid rising bid on the connection's own
  lot, answered by a durable ``ack``.  ``acks_to_raw_verify_ratio`` =
  acks / raw_echo_verify (target >= 0.85).
* ``ack_p50_us`` / ``ack_p99_us`` / ``ack_p999_us`` -- OPEN LOOP against pubex
  at half of ``acks_per_s``: bids sent on a fixed schedule round robin over the
  50 connections, latency from each bid's *scheduled* send time to its ack
  (no coordinated omission).  Target p99 <= 10 ms.
* ``watcher_lag_p50_ms`` / ``watcher_lag_p99_ms`` -- 1,000 watcher connections
  (no credentials) subscribed to one hot lot while one bidder bids on it at a
  fixed 100/s.  For every accepted bid and every watcher: the time from the
  bid's ledger timestamp (the ack's ``ts_ns``, stamped by the sequencer just
  before the group commit -- so this includes the fsync and is an upper bound
  of "from the durable commit") to the first frame (``event`` or ``snapshot``)
  that tells that watcher a price at least that new; receipt wall time
  ``time.time_ns()`` on the same machine.  A bid a watcher never heard of
  (e.g. its connection was closed) is counted in ``watcher_missing``.
  Target p99 <= 200 ms.

The load generator is a separate process (``python -m bench.gateway load``):
one thread, ``select.epoll`` over plain sockets, a minimal RFC 6455 client
(handshake, pre-masked frames prepared and signed before the timed part), so
the client costs a few µs per round trip -- far less than any trio-websocket
client would.  Its CPU per message is reported (``client_cpu_us_per_msg_*``),
and so is each server's (``server_cpu_us_per_msg_*``, from /proc).  The
machine has 2 cores: client and server share them alike for all three
servers, which keeps the ratios fair.

pubex runs with a bench config (a temp TOML) that lifts only the per-bidder
rate limit (``limits.bids_per_s``/``bid_burst``), which would otherwise cap
each connection at 20 bids/s.  Timing never fails the run.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import hashlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
from nacl.signing import SigningKey

from bench.stats import machine as stats_machine
from bench.stats import pct, ratio, render, us
from gateway.wire import protocol as p

perf_ns = time.perf_counter_ns
wall_ns = time.time_ns
cpu_ns = time.process_time_ns

TARGETS: dict[str, float] = {
    "acks_to_raw_verify_ratio": 0.85,
    "ack_p99_us": 10_000,
    "watcher_lag_p99_ms": 200,
}

REPO_ROOT = Path(__file__).resolve().parents[1]
STAFF_TOKEN = "dev-staff-token"
START_PRICE_FEN = 1_000_000
INCREMENT_FEN = 100
DEPOSIT_FEN = 10_000
DAY_NS = 86_400 * 1_000_000_000
# Each phase bids on its own lots with its own client_seq range, so the load
# processes need not know how far an earlier phase went.
PHASES = {"warm": 1, "closed": 2, "open": 3, "hot": 4, "sweep": 5}
SEQ_BASE = 1_000_000
HOT_LOT = "GHOT"


def log(msg: str) -> None:
    print(f"[bench gateway] {msg}", file=sys.stderr, flush=True)


def raise_nofile(want: int = 16_384) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ------------------------------------------------------------------ workload


def bench_key(i: int) -> SigningKey:
    return SigningKey(hashlib.sha256(f"pubex-bench-gateway-{i}".encode()).digest())


def key_id(i: int) -> str:
    return f"gwk{i:03d}"


def bidder_id(i: int) -> str:
    return f"gwb{i:03d}"


def lot_id(phase: str, i: int) -> str:
    return HOT_LOT if phase == "hot" else f"G{PHASES[phase]}-{i:03d}"


def amount(k: int) -> int:
    """The k-th (0-based) bid on a lot: a valid rising bid when bids arrive in order."""
    return START_PRICE_FEN + k * INCREMENT_FEN


def bid_text(key: SigningKey, i: int, phase: str, k: int) -> str:
    return p.bid_frame(
        key, key_id(i), lot_id(phase, i), amount(k), PHASES[phase] * SEQ_BASE + k + 1
    )


# ------------------------------------------------------------------ stats


def proc_cpu_ns(pid: int) -> int:
    """utime + stime of a process and its live descendants (all threads), from
    /proc -- a split server is a tree (``pubex serve`` -> sequencer, edges); 0
    when unavailable."""
    if not pid:
        return 0
    total = 0
    for one in process_tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def role_of(pid: int) -> str:
    """``sequencer``, ``edge``, or ``server`` (``pubex serve`` itself: the
    supervisor of a split server, or all of an in-process one)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "server"
    words = [w.decode(errors="replace") for w in cmdline]
    if "sequencer" in words:
        return "sequencer"
    if "edge" in words:
        return "edge"
    return "server"


def proc_cpu_by_role(pid: int) -> dict[str, int]:
    """CPU ns of a server's process tree, by role (``role_of``); children that
    exited are not counted (the bench keeps them running)."""
    out: dict[str, int] = {}
    if not pid:
        return out
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    for one in process_tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = role_of(one)
        out[role] = out.get(role, 0) + (int(fields[11]) + int(fields[12])) * tick_ns
    return out


def per_role_us(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """CPU µs per message of each role between two readings."""
    return {
        role: round((after[role] - before.get(role, 0)) / max(n, 1) / 1000, 1)
        for role in sorted(after)
    }


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        one = todo.pop()
        out.append(one)
        for task in Path(f"/proc/{one}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


# ------------------------------------------------------------------ a minimal client
#
# RFC 6455 client side, just enough for the benchmark: no extensions, text
# frames, server frames unmasked, pings answered.  Frames are masked (as a
# client must) once, before the timed part.


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return head + mask
    stream = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + mask + masked


def pop_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Complete (opcode, payload) frames at the head of ``buf``; consumed bytes removed."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(buf)
    while n - i >= 2:
        b1 = buf[i + 1]
        ln, h = b1 & 0x7F, 2
        if ln == 126:
            if n - i < 4:
                break
            ln, h = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
        elif ln == 127:
            if n - i < 10:
                break
            ln, h = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
        if b1 & 0x80:
            raise ValueError("masked frame from a server")
        if n - i < h + ln:
            break
        out.append((buf[i] & 0x0F, bytes(buf[i + h : i + h + ln])))
        i += h + ln
    if i:
        del buf[:i]
    return out


class Conn:
    __slots__ = ("buf", "close_code", "closed", "frames", "i", "known", "sent", "sock")

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(leftover)
        self.sent: deque[int] = deque()
        self.frames: list[bytes] = []
        self.i = 0
        self.closed = False
        self.close_code = 0
        self.known = 0

    def read(self) -> list[bytes]:
        """Text messages now readable (call when epoll says so); answers pings."""
        try:
            data = self.sock.recv(262_144)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        self.buf += data
        return self.messages()

    def messages(self) -> list[bytes]:
        out = []
        for op, payload in pop_frames(self.buf):
            if op in (0x1, 0x2):
                out.append(payload)
            elif op == 0x9:
                self.sock.sendall(ws_frame(payload, 0xA))
            elif op == 0x8:
                self.closed = True
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
        return out

    def recv_one(self, timeout: float = 10) -> bytes:
        """Blocking: the next text message (handshake phase only)."""
        deadline = time.monotonic() + timeout
        pending = self.messages()
        while not pending:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65_536)
            if not data:
                raise ConnectionError("closed during handshake")
            self.buf += data
            pending = self.messages()
        self.sock.settimeout(None)
        if len(pending) > 1:  # keep the rest for the loop: re-frame them unmasked
            for extra in reversed(pending[1:]):
                self.buf[:0] = _server_frame(extra)
        return pending[0]


def _server_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def ws_connect(url: str, query: dict[str, str] | None = None, timeout: float = 10) -> Conn:
    u = urlsplit(url)
    path = (u.path or "/") + (f"?{urlencode(query)}" if query else "")
    host, port = u.hostname or "127.0.0.1", u.port or 80
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: pubex-bench\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError(f"handshake closed: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(f"handshake refused: {status.decode(errors='replace')}")
    sock.settimeout(None)
    return Conn(sock, rest)


def bidder_connect(url: str, i: int, key: SigningKey | None = None) -> Conn:
    key = key or bench_key(i)
    query = p.auth_params(key, key_id(i), int(time.time() * 1000), os.urandom(12).hex())
    conn = ws_connect(url, query)
    hello = conn.recv_one()
    if not hello.startswith(b'{"type":"hello"'):
        raise ConnectionError(f"expected hello, got {hello[:200]!r}")
    return conn


class Epoll:
    def __init__(self, conns: Sequence[Conn]) -> None:
        self.ep = select.epoll()
        self.by_fd: dict[int, Conn] = {}
        for c in conns:
            self.add(c)

    def add(self, c: Conn) -> None:
        fd = c.sock.fileno()
        self.by_fd[fd] = c
        self.ep.register(fd, select.EPOLLIN)

    def poll(self, timeout: float) -> list[Conn]:
        by_fd = self.by_fd
        return [by_fd[fd] for fd, _ in self.ep.poll(timeout)]


# ------------------------------------------------------------------ load modes


def _is_ack(msg: bytes) -> bool:
    return msg.startswith(b'{"type":"ack"')


def load_closed(args: argparse.Namespace) -> dict[str, Any]:
    """K connections, window W, as fast as replies return, for ``duration`` s."""
    k, w = args.conns, args.window
    pubex = args.target == "pubex"
    keys = [bench_key(i) for i in range(k)]
    conns = [
        bidder_connect(args.url, i, keys[i]) if pubex else ws_connect(args.url) for i in range(k)
    ]
    for i, c in enumerate(conns):
        # pubex needs a fresh valid rising bid per frame; an echo server takes any
        # signed frame, so a small pool is cycled.
        n = args.per_conn if pubex else 64
        c.frames = [ws_frame(bid_text(keys[i], i, args.phase, j).encode()) for j in range(n)]
    ep = Epoll(conns)
    lat: list[int] = []
    done = bad = 0
    first_bad = ""
    cycle = not pubex
    stopping = False
    outstanding = 0
    spid = args.server_pid
    roles0 = proc_cpu_by_role(spid)
    s0, c0 = proc_cpu_ns(spid), cpu_ns()
    t0 = perf_ns()
    deadline = t0 + int(args.duration * 1e9)
    for c in conns:
        for _ in range(w):
            c.sent.append(perf_ns())
            c.sock.sendall(c.frames[c.i])
            c.i += 1
            outstanding += 1
    last = t0
    while outstanding:
        ready = ep.poll(1.0)
        if not ready and perf_ns() > deadline + 30_000_000_000:
            break
        for c in ready:
            msgs = c.read()
            now = perf_ns()
            if c.closed and not msgs:
                outstanding -= len(c.sent)
                c.sent.clear()
                ep.ep.unregister(c.sock.fileno())
                continue
            for m in msgs:
                if not c.sent:
                    continue  # not a reply (pubex sends no other frames to a bidder)
                lat.append(now - c.sent.popleft())
                outstanding -= 1
                done += 1
                last = now
                if pubex and not _is_ack(m):
                    bad += 1
                    first_bad = first_bad or m[:300].decode(errors="replace")
                if stopping:
                    continue
                if now >= deadline:
                    stopping = True
                    continue
                if c.i >= len(c.frames):
                    if not cycle:
                        stopping = True
                        continue
                    c.i = 0
                c.sent.append(perf_ns())
                c.sock.sendall(c.frames[c.i])
                c.i += 1
                outstanding += 1
    wall = last - t0
    s1, c1 = proc_cpu_ns(spid), cpu_ns()
    roles1 = proc_cpu_by_role(spid)
    for c in conns:
        c.sock.close()
    lat.sort()
    return {
        "server_cpu_us_per_msg_by_role": per_role_us(roles0, roles1, done),
        "msgs": done,
        "per_s": round(done / (wall / 1e9)) if wall else 0,
        "wall_s": round(wall / 1e9, 3),
        "p50_us": us(pct(lat, 50)),
        "p99_us": us(pct(lat, 99)),
        "p999_us": us(pct(lat, 99.9)),
        "client_cpu_us_per_msg": round((c1 - c0) / max(done, 1) / 1000, 2),
        "server_cpu_us_per_msg": round((s1 - s0) / max(done, 1) / 1000, 1) if spid else 0,
        "server_cpu_share": round((s1 - s0) / wall, 2) if spid and wall else 0,
        "bad": bad,
        "first_bad": first_bad,
        "exhausted": any(c.i >= len(c.frames) for c in conns) and not cycle,
    }


def load_open(args: argparse.Namespace) -> dict[str, Any]:
    """Fixed schedule at ``rate``/s round robin over K connections; latency from schedule."""
    k, rate = args.conns, args.rate
    n = max(k, int(rate * args.duration))
    per = -(-n // k)
    keys = [bench_key(i) for i in range(k)]
    conns = [bidder_connect(args.url, i, keys[i]) for i in range(k)]
    off = args.offset  # bids already sent on these lots by earlier runs of the phase
    for i, c in enumerate(conns):
        c.frames = [
            ws_frame(bid_text(keys[i], i, args.phase, off + j).encode()) for j in range(per)
        ]
    ep = Epoll(conns)
    interval = 1e9 / rate
    lat: list[int] = []
    send_lag: list[int] = []
    bad = 0
    first_bad = ""
    acked = 0
    spid = args.server_pid
    roles0 = proc_cpu_by_role(spid)
    s0, c0 = proc_cpu_ns(spid), cpu_ns()
    start = perf_ns() + 5_000_000
    i = 0
    next_t = start
    give_up = start + int((args.duration + 30) * 1e9)
    while acked < i or i < n:
        now = perf_ns()
        while i < n and next_t <= now:
            c = conns[i % k]
            c.sent.append(next_t)
            c.sock.sendall(c.frames[i // k])
            send_lag.append(now - next_t)
            i += 1
            next_t = start + round(i * interval)
        timeout = max(0.0, (next_t - perf_ns()) / 1e9) if i < n else 0.5
        for c in ep.poll(timeout):
            msgs = c.read()
            t = perf_ns()
            for m in msgs:
                if c.sent:
                    lat.append(t - c.sent.popleft())
                    acked += 1
                    if not _is_ack(m):
                        bad += 1
                        first_bad = first_bad or m[:300].decode(errors="replace")
        if perf_ns() > give_up or all(c.closed for c in conns):
            break
    end = perf_ns()
    s1, c1 = proc_cpu_ns(spid), cpu_ns()
    roles1 = proc_cpu_by_role(spid)
    for c in conns:
        c.sock.close()
    lat.sort()
    send_lag.sort()
    return {
        "msgs": n,
        "rate": rate,
        "wall_s": round((end - start) / 1e9, 3),
        "p50_us": us(pct(lat, 50)),
        "p90_us": us(pct(lat, 90)),
        "p99_us": us(pct(lat, 99)),
        "p999_us": us(pct(lat, 99.9)),
        "max_us": us(lat[-1]) if lat else 0,
        "acked": acked,
        "send_lag_p99_us": us(pct(send_lag, 99)),
        "missing": n - acked,
        "bad": bad,
        "first_bad": first_bad,
        "client_cpu_us_per_msg": round((c1 - c0) / max(acked, 1) / 1000, 2),
        "server_cpu_us_per_msg": round((s1 - s0) / max(acked, 1) / 1000, 1) if spid else 0,
        "server_cpu_us_per_msg_by_role": per_role_us(roles0, roles1, acked),
    }


class _Light(msgspec.Struct):
    type: str
    lot: str = ""
    seq: int = 0
    ts_ns: int = 0


_light = msgspec.json.Decoder(_Light)


def load_watch(args: argparse.Namespace) -> dict[str, Any]:
    """``watchers`` subscribers of the hot lot; one bidder at ``rate``/s on it."""
    raise_nofile(args.watchers + 256)
    hot_i = args.conns  # the hot lot's bidder is key index K (after the K load keys)
    key = bench_key(hot_i)
    t_conn = perf_ns()
    watchers: list[Conn] = []
    sub = ws_frame(p.encode(p.Subscribe([HOT_LOT])))
    for _ in range(args.watchers):
        c = ws_connect(args.url)
        hello = c.recv_one()
        if not hello.startswith(b'{"type":"hello"'):
            raise ConnectionError(f"expected hello, got {hello[:200]!r}")
        c.sock.sendall(sub)
        watchers.append(c)
    connect_s = (perf_ns() - t_conn) / 1e9
    bidder = bidder_connect(args.url, hot_i, key)
    n = max(1, int(args.rate * args.duration))
    frames = [ws_frame(bid_text(key, hot_i, "hot", j).encode()) for j in range(n)]
    records: list[list[tuple[int, int]]] = [[] for _ in watchers]  # (recv wall ns, seq)
    index = {id(c): w for w, c in enumerate(watchers)}
    ep = Epoll([*watchers, bidder])
    bids: dict[int, int] = {}  # ledger seq -> ts_ns of each accepted bid
    bad = 0
    frames_in = 0

    def pump(timeout: float) -> None:
        nonlocal bad, frames_in
        for c in ep.poll(timeout):
            msgs = c.read()
            t = wall_ns()
            if c is bidder:
                for m in msgs:
                    f = _light.decode(m)
                    if f.type == "ack":
                        bids[f.seq] = f.ts_ns
                    else:
                        bad += 1
                continue
            if c.closed and not msgs:
                with contextlib.suppress(OSError, KeyError, ValueError):
                    ep.ep.unregister(c.sock.fileno())
                continue
            rec = records[index[id(c)]]
            for m in msgs:
                frames_in += 1
                f = _light.decode(m)
                if f.seq > c.known and f.lot == HOT_LOT and f.type in ("event", "snapshot"):
                    c.known = f.seq
                    rec.append((t, f.seq))

    # Let every subscription's first snapshot arrive before the bids start.
    settle = perf_ns() + 1_000_000_000
    while perf_ns() < settle:
        pump(0.05)
    s0, c0 = proc_cpu_ns(args.server_pid), cpu_ns()
    interval = 1e9 / args.rate
    start = perf_ns()
    i = 0
    next_t = start
    while i < n:
        now = perf_ns()
        while i < n and next_t <= now:
            bidder.sock.sendall(frames[i])
            i += 1
            next_t = start + round(i * interval)
        pump(max(0.0, (next_t - perf_ns()) / 1e9) if i < n else 0)
    send_s = (perf_ns() - start) / 1e9
    # Drain: until every live watcher knows the last bid, at most drain_s.
    give_up = perf_ns() + int(args.drain_s * 1e9)
    while perf_ns() < give_up:
        pump(0.05)
        if len(bids) + bad >= n:
            last = max(bids) if bids else 0
            if all(c.known >= last or c.closed for c in watchers):
                break
    s1, c1 = proc_cpu_ns(args.server_pid), cpu_ns()
    closed = sum(c.closed for c in watchers)
    codes = sorted({c.close_code for c in watchers if c.closed})
    for c in [*watchers, bidder]:
        c.sock.close()
    # Lag of each (bid, watcher): first frame telling a price at least that new.
    seqs = sorted(bids)
    lags: list[int] = []
    missing = 0
    for rec in records:
        covered = 0  # index into seqs of the first bid this watcher did not know yet
        for t, seq in rec:
            upto = bisect.bisect_right(seqs, seq)
            for j in range(covered, upto):
                lags.append(t - bids[seqs[j]])
            covered = max(covered, upto)
        missing += len(seqs) - covered
    lags.sort()
    return {
        "watchers": len(watchers),
        "connect_s": round(connect_s, 2),
        "bids": n,
        "bids_acked": len(bids),
        "bid_rate_per_s": round(len(bids) / send_s, 1) if send_s else 0,
        "bad": bad,
        "lag_samples": len(lags),
        "lag_p50_ms": round(pct(lags, 50) / 1e6, 2),
        "lag_p99_ms": round(pct(lags, 99) / 1e6, 2),
        "lag_max_ms": round(lags[-1] / 1e6, 2) if lags else 0,
        "missing": missing,
        "closed": closed,
        "close_codes": codes,
        "frames_in": frames_in,
        "client_cpu_us_per_frame": round((c1 - c0) / max(frames_in, 1) / 1000, 2),
        "server_cpu_share": round((s1 - s0) / (send_s * 1e9), 2) if args.server_pid else 0,
    }


# ------------------------------------------------------------------ echo servers


async def echo_server(port: int, verify: bool) -> None:
    import trio
    import trio_websocket
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    frame_decoder = msgspec.json.Decoder(p.PlaceBidFrame)
    payload_decoder = msgspec.json.Decoder(p.BidPayload)
    verify_keys: dict[str, VerifyKey] = {}

    def vkey(kid: str) -> VerifyKey:
        vk = verify_keys.get(kid)
        if vk is None:
            vk = verify_keys[kid] = bench_key(int(kid[3:])).verify_key
        return vk

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                msg = await ws.get_message()
                if verify:
                    # The irreducible per-bid work: decode the frame and its payload,
                    # verify the detached signature over the exact payload bytes.
                    frame = frame_decoder.decode(msg)
                    raw = frame.payload.encode()
                    payload = payload_decoder.decode(raw)
                    try:
                        vkey(payload.key).verify(raw, bytes.fromhex(frame.sig))
                    except BadSignatureError:
                        msg = '{"type":"error"}'
                await ws.send_message(msg)
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handler, "127.0.0.1", port, None, task_status=task_status
            )
        )
        print(f"listening ws=ws://127.0.0.1:{server.port}/ws", flush=True)


# ------------------------------------------------------------------ orchestration


class Server:
    """A server subprocess that prints ``listening ws=URL ...`` once ready."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening ws=" not in line:
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"{name} did not start: {line!r} {err[-2000:]}")
        self.url = line.split("ws=", 1)[1].split()[0]
        self.http = line.split("http=", 1)[1].split()[0] if "http=" in line else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def run_load(mode: str, url: str, server_pid: int, **kw: Any) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.gateway", "load", mode, "--url", url]
    argv += ["--server-pid", str(server_pid)]
    for name, value in kw.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load {mode} failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def pubex_setup(url: str, k: int, phases: Sequence[str] = ("warm", "closed", "open")) -> None:
    """Staff: K+1 keys and bidders; per phase one English lot per connection, plus
    the hot lot; registrations and deposits; all pipelined on one connection."""
    import trio

    from gateway.clients.tclient import Client

    async def go() -> None:
        async with trio.open_nursery() as nursery:
            client = await Client.connect(nursery, url, token=STAFF_TOKEN)
            now = time.time_ns()
            frames: list[p.Frame] = []

            def seq() -> int:
                return len(frames) + 1

            for i in range(k + 1):
                vk = bench_key(i).verify_key.encode().hex()
                frames.append(p.RegisterKeyFrame(seq(), key_id(i), bidder_id(i), vk))
            lots = [(lot_id(ph, i), i) for ph in phases for i in range(k)]
            lots.append((HOT_LOT, k))
            for lot, i in lots:
                frames.append(
                    p.CreateLotFrame(
                        seq(),
                        lot,
                        "english",
                        f"bench lot {lot}",
                        START_PRICE_FEN,
                        INCREMENT_FEN,
                        now - 1_000_000_000,
                        now + DAY_NS,
                        deposit_fen=DEPOSIT_FEN,
                    )
                )
                frames.append(p.PublishLotFrame(seq(), lot))
                frames.append(p.RegisterBidderFrame(seq(), lot, bidder_id(i)))
                frames.append(p.ConfirmDepositFrame(seq(), lot, bidder_id(i), DEPOSIT_FEN))
            for f in frames:
                await client.send(f)
            with trio.fail_after(60):
                while len(client.replies) < len(frames) and not client.closed:
                    await client.changed.wait()
            bad = [r for r in client.replies.values() if not isinstance(r, p.Ack)]
            if bad or len(client.replies) < len(frames):
                raise RuntimeError(f"setup: {len(bad)} refused, e.g. {bad[:1]}")
            await client.close()
            nursery.cancel_scope.cancel()

    trio.run(go)


def scrape(http_url: str) -> dict[str, float]:
    """The pubex /metrics sums and counts the report derives means from."""
    want = (
        "pubex_batch_entries_sum",
        "pubex_batch_entries_count",
        "pubex_commit_seconds_sum",
        "pubex_commit_seconds_count",
        "pubex_ack_latency_us_sum",
        "pubex_ack_latency_us_count",
    )
    out = dict.fromkeys(want, 0.0)
    url = http_url.rstrip("/") + "/metrics"
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            series, _, value = line.partition(" ")
            name = series.split("{", 1)[0]  # summed over a split server's processes
            if name in out:
                out[name] += float(value)
    return out


SWEEP_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def ack_sweep(
    srv: Server, max_rate: float, fractions: Sequence[float], step_s: float, conns: int
) -> list[dict[str, Any]]:
    """Open-loop ack latency under rising offered load: one fixed-schedule run of
    ``step_s`` seconds per fraction of ``max_rate`` (the closed-loop acks/s of the same
    run), each on the ``sweep`` lots, continuing their rising bids where the last
    step stopped.  Latency from each bid's scheduled send time to its ack."""
    steps: list[dict[str, Any]] = []
    offset = 0
    for f in fractions:
        rate = max(20.0, max_rate * f)
        log(f"sweep: {f:.0%} of {max_rate:,.0f}/s = {rate:,.0f}/s for {step_s} s")
        ol = run_load(
            "open",
            srv.url,
            srv.pid,
            conns=conns,
            rate=rate,
            duration=step_s,
            phase="sweep",
            offset=offset,
        )
        offset += -(-ol["msgs"] // conns)
        steps.append(
            {
                "fraction": f,
                "offered_per_s": round(rate),
                "completed_per_s": round(ol["acked"] / ol["wall_s"]) if ol["wall_s"] else 0,
                "bids": ol["msgs"],
                "p50_us": ol["p50_us"],
                "p90_us": ol["p90_us"],
                "p99_us": ol["p99_us"],
                "p999_us": ol["p999_us"],
                "max_us": ol["max_us"],
                "missing_acks": ol["missing"],
                "bad": ol["bad"],
                "send_lag_p99_us": ol["send_lag_p99_us"],
                "load_avg_1m": round(os.getloadavg()[0], 2),  # the shared machine's load
            }
        )
    return steps


def closed_pair(url: str, pid: int, k: int, w: int, warm_s: float, run_s: float, **kw: Any) -> Any:
    run_load("closed", url, pid, conns=k, window=w, duration=warm_s, phase="warm", **kw)
    return run_load("closed", url, pid, conns=k, window=w, duration=run_s, phase="closed", **kw)


def run(
    quick: bool,
    *,
    conns: int = 50,
    window: int = 1,
    closed_s: float | None = None,
    watchers: int | None = None,
    watch_rate: float = 100.0,
    open_fraction: float = 0.5,
    sweep: Sequence[float] = (),
    sweep_s: float | None = None,
    edges: int | None = None,
) -> dict[str, Any]:
    """``edges``: ``pubex serve --edges`` (None: serve's default)."""
    raise_nofile()
    warm_s = 0.5 if quick else 1.0
    closed_s = closed_s if closed_s is not None else (1.5 if quick else 5.0)
    open_s = 1.5 if quick else 5.0
    watch_s = 2.0 if quick else 5.0
    watchers = watchers if watchers is not None else (200 if quick else 1000)
    k, w = conns, window
    r: dict[str, Any] = {"quick": quick, "connections": k, "window": w}
    echo = [sys.executable, "-m", "bench.gateway", "echo"]

    for label, argv in (("raw_echo", echo), ("raw_echo_verify", [*echo, "--verify"])):
        log(f"{label}: {k} connections x W={w}, {closed_s} s closed loop")
        srv = Server(argv, label)
        try:
            res = closed_pair(srv.url, srv.pid, k, w, warm_s, closed_s, target="echo")
        finally:
            srv.stop()
        r[f"{label}_per_s"] = res["per_s"]
        r[f"{label}_p50_us"] = res["p50_us"]
        r[f"{label}_p99_us"] = res["p99_us"]
        r[f"server_cpu_us_per_msg_{label}"] = res["server_cpu_us_per_msg"]
        r[f"client_cpu_us_per_msg_{label}"] = res["client_cpu_us_per_msg"]
        r[f"{label}_bad"] = res["bad"]
        r[f"{label}_server_cpu_share"] = res["server_cpu_share"]

    with tempfile.TemporaryDirectory(prefix="pubex-bench-gw-") as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            "# bench gateway: lift the per-bidder rate limit, the refusal budget and the\n"
            "# per-address cap (every client connects from 127.0.0.1)\n"
            "[limits]\nbids_per_s = 100000000\nbid_burst = 100000000\n"
            "refusals_per_minute = 1000000000\nmax_connections_per_address = 1000000\n"
            "staff_commands_per_s = 1000000\nstaff_burst = 1000000\n"
        )
        argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--config", str(cfg)]
        argv += ["--data", str(Path(tmp) / "data"), "--ws-port", "0", "--http-port", "0"]
        argv += [] if edges is None else ["--edges", str(edges)]
        srv = Server([*argv, "--sandbox"], "pubex serve")
        try:
            log("pubex: setup (keys, lots, registrations, deposits)")
            pubex_setup(srv.url, k, ("warm", "closed", "open", *(("sweep",) if sweep else ())))
            # Enough fresh frames per connection for the timed run at up to ~3x the
            # verify-echo rate (the run stops early if a connection runs out).
            per_conn = int(max(r["raw_echo_verify_per_s"], 1000) * 1.5 * closed_s / k) + 50
            log(f"pubex: {k} connections x W={w}, {closed_s} s closed loop")
            run_load(
                "closed",
                srv.url,
                srv.pid,
                conns=k,
                window=w,
                duration=warm_s,
                phase="warm",
                per_conn=per_conn,
            )
            m0 = scrape(srv.http)
            res = run_load(
                "closed",
                srv.url,
                srv.pid,
                conns=k,
                window=w,
                duration=closed_s,
                phase="closed",
                per_conn=per_conn,
            )
            m1 = scrape(srv.http)
            d = {key: m1[key] - m0[key] for key in m0}
            batches = d["pubex_batch_entries_count"] or 1
            acks = res["per_s"]
            r.update(
                {
                    "pubex_batches": round(d["pubex_batch_entries_count"]),
                    "pubex_mean_batch_entries": round(d["pubex_batch_entries_sum"] / batches, 1),
                    "pubex_mean_commit_ms": round(
                        d["pubex_commit_seconds_sum"]
                        * 1e3
                        / (d["pubex_commit_seconds_count"] or 1),
                        3,
                    ),
                    "pubex_mean_in_server_ack_us": round(
                        d["pubex_ack_latency_us_sum"] / (d["pubex_ack_latency_us_count"] or 1), 1
                    ),
                }
            )
            r.update(
                {
                    "acks_per_s": acks,
                    "closed_loop_ack_p50_us": res["p50_us"],
                    "closed_loop_ack_p99_us": res["p99_us"],
                    "server_cpu_us_per_msg_pubex": res["server_cpu_us_per_msg"],
                    "server_cpu_us_per_bid_by_role": res.get("server_cpu_us_per_msg_by_role", {}),
                    "client_cpu_us_per_msg_pubex": res["client_cpu_us_per_msg"],
                    "pubex_server_cpu_share": res["server_cpu_share"],
                    "closed_loop_bad": res["bad"],
                    "closed_loop_frames_exhausted": res["exhausted"],
                }
            )
            if res["first_bad"]:
                r["closed_loop_first_bad"] = res["first_bad"]
            rate = max(50.0, acks * open_fraction)
            log(f"pubex: open loop at {rate:,.0f}/s for {open_s} s")
            ol = run_load(
                "open", srv.url, srv.pid, conns=k, rate=rate, duration=open_s, phase="open"
            )
            r.update(
                {
                    "ack_p50_us": ol["p50_us"],
                    "ack_p99_us": ol["p99_us"],
                    "ack_p999_us": ol["p999_us"],
                    "ack_max_us": ol["max_us"],
                    "open_loop_rate_per_s": round(rate),
                    "open_loop_bids": ol["msgs"],
                    "open_loop_missing_acks": ol["missing"],
                    "open_loop_bad": ol["bad"],
                    "open_loop_send_lag_p99_us": ol["send_lag_p99_us"],
                    "server_cpu_us_per_msg_open_loop": ol["server_cpu_us_per_msg"],
                    "open_loop_cpu_us_per_bid_by_role": ol.get("server_cpu_us_per_msg_by_role", {}),
                }
            )
            if sweep:
                step_s = sweep_s if sweep_s is not None else (1.0 if quick else 3.0)
                r["ack_sweep_max_per_s"] = acks
                r["ack_sweep_step_s"] = step_s
                r["ack_sweep"] = ack_sweep(srv, acks, sweep, step_s, k)
            log(f"pubex: {watchers} watchers on one lot, bids at {watch_rate:g}/s for {watch_s} s")
            wr = run_load(
                "watch",
                srv.url,
                srv.pid,
                conns=k,
                watchers=watchers,
                rate=watch_rate,
                duration=watch_s,
                drain_s=3.0,
            )
            r.update(
                {
                    "watchers": wr["watchers"],
                    "watcher_lag_p50_ms": wr["lag_p50_ms"],
                    "watcher_lag_p99_ms": wr["lag_p99_ms"],
                    "watcher_lag_max_ms": wr["lag_max_ms"],
                    "watcher_lag_samples": wr["lag_samples"],
                    "watcher_missing": wr["missing"],
                    "watchers_closed_by_server": wr["closed"],
                    "watcher_close_codes": wr["close_codes"],
                    "watch_bid_rate_per_s": wr["bid_rate_per_s"],
                    "watch_bids_acked": wr["bids_acked"],
                    "watch_frames_received": wr["frames_in"],
                    "watch_connect_s": wr["connect_s"],
                    "watch_server_cpu_share": wr["server_cpu_share"],
                    "watch_client_cpu_us_per_frame": wr["client_cpu_us_per_frame"],
                }
            )
        finally:
            srv.stop()

    ve = r["raw_echo_verify_per_s"]
    r["acks_to_raw_verify_ratio"] = round(r["acks_per_s"] / ve, 3) if ve else 0
    r["raw_verify_to_raw_ratio"] = round(ve / r["raw_echo_per_s"], 3) if r["raw_echo_per_s"] else 0
    r["machine"] = machine()
    r["targets"] = dict(TARGETS)
    return r


# ------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    import trio
    import trio_websocket

    return stats_machine(
        trio=trio.__version__,
        trio_websocket=getattr(trio_websocket, "__version__", "?"),
        load="1 process: epoll + minimal RFC 6455 client; each server 1 process",
    )


def table(r: dict[str, Any]) -> str:
    t = r["targets"]
    ve, raw = r["raw_echo_verify_per_s"], r["raw_echo_per_s"]
    kw = f"{r['connections']} conns x W={r['window']}"
    rows = [
        (
            f"pubex acks/s ({kw}, closed loop)",
            f"{r['acks_per_s']:,}",
            f"echo+verify {ve:,}/s",
            ratio(r["acks_per_s"], ve),
        ),
        (
            "acks / echo+verify ratio",
            f"{r['acks_to_raw_verify_ratio']}",
            f"target {t['acks_to_raw_verify_ratio']}",
            ratio(r["acks_to_raw_verify_ratio"], t["acks_to_raw_verify_ratio"]),
        ),
        (
            "raw echo + Ed25519 verify round trips/s",
            f"{ve:,}",
            f"raw echo {raw:,}/s",
            ratio(ve, raw),
        ),
        ("raw trio-websocket echo round trips/s", f"{raw:,}", "", ""),
        (
            "server CPU µs/msg: pubex / echo+verify",
            f"{r['server_cpu_us_per_msg_pubex']}",
            f"{r['server_cpu_us_per_msg_raw_echo_verify']} (raw echo "
            f"{r['server_cpu_us_per_msg_raw_echo']})",
            ratio(r["server_cpu_us_per_msg_pubex"], r["server_cpu_us_per_msg_raw_echo_verify"]),
        ),
        (
            "server CPU share (cores busy): pubex / echo+verify",
            f"{r['pubex_server_cpu_share']}",
            f"{r['raw_echo_verify_server_cpu_share']} (raw echo {r['raw_echo_server_cpu_share']})",
            "",
        ),
        (
            "pubex batches: mean entries / mean commit ms",
            f"{r['pubex_mean_batch_entries']} / {r['pubex_mean_commit_ms']}",
            f"in-server ack {r['pubex_mean_in_server_ack_us']} µs mean",
            "",
        ),
        (
            "client CPU µs/msg: pubex / echo+verify / echo",
            f"{r['client_cpu_us_per_msg_pubex']}",
            f"{r['client_cpu_us_per_msg_raw_echo_verify']} / {r['client_cpu_us_per_msg_raw_echo']}",
            "",
        ),
        (
            "closed-loop p50 / p99 µs: pubex",
            f"{r['closed_loop_ack_p50_us']} / {r['closed_loop_ack_p99_us']}",
            f"echo+verify {r['raw_echo_verify_p50_us']} / {r['raw_echo_verify_p99_us']}",
            "",
        ),
        (f"open-loop ack p50 µs @ {r['open_loop_rate_per_s']:,}/s", f"{r['ack_p50_us']}", "", ""),
        (
            "open-loop ack p99 µs",
            f"{r['ack_p99_us']}",
            f"target {t['ack_p99_us']:,}",
            ratio(r["ack_p99_us"], t["ack_p99_us"]),
        ),
        ("open-loop ack p99.9 / max µs", f"{r['ack_p999_us']} / {r['ack_max_us']}", "", ""),
        (
            f"watcher lag p50 ms ({r['watchers']:,} watchers, "
            f"{r['watch_bid_rate_per_s']:g} bids/s)",
            f"{r['watcher_lag_p50_ms']}",
            "",
            "",
        ),
        (
            "watcher lag p99 ms (ledger ts -> receipt)",
            f"{r['watcher_lag_p99_ms']}",
            f"target {t['watcher_lag_p99_ms']}",
            ratio(r["watcher_lag_p99_ms"], t["watcher_lag_p99_ms"]),
        ),
        (
            "watcher lag max ms / (bid,watcher) never told",
            f"{r['watcher_lag_max_ms']}",
            f"{r['watcher_missing']:,} of {r['watcher_lag_samples'] + r['watcher_missing']:,}",
            "",
        ),
        (
            "watchers closed by the server",
            f"{r['watchers_closed_by_server']}",
            f"codes {r['watcher_close_codes']}",
            "",
        ),
    ]
    lines = render(rows, r["machine"])
    bad = r["closed_loop_bad"] + r["open_loop_bad"] + r["raw_echo_verify_bad"]
    if bad or r["open_loop_missing_acks"]:
        lines.append(
            f"WARNING: {bad} bids refused, {r['open_loop_missing_acks']} acks missing"
            + (f" ({r['closed_loop_first_bad']})" if r.get("closed_loop_first_bad") else "")
        )
    lines.append("client and servers share the same CPUs (each in its own process)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gateway", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="smaller counts (smoke test, < 30 s)")
    ap.add_argument("--conns", type=int, default=50, help="bidder connections (default 50)")
    ap.add_argument("--window", type=int, default=1, help="bids in flight per connection")
    ap.add_argument("--closed-s", type=float, help="closed-loop seconds per server")
    ap.add_argument("--watchers", type=int, help="watcher connections (default 1000)")
    ap.add_argument("--watch-rate", type=float, default=100.0, help="hot-lot bids/s")
    ap.add_argument("--open-fraction", type=float, default=0.5)
    ap.add_argument(
        "--sweep",
        nargs="?",
        const=",".join(map(str, SWEEP_FRACTIONS)),
        default="",
        help="also an open-loop ack sweep at these fractions of acks/s (key ack_sweep)",
    )
    ap.add_argument("--sweep-s", type=float, help="seconds per sweep step (default 3, quick 1)")
    ap.add_argument(
        "--edges", type=int, help="pubex serve --edges K (0: one process; default: serve's)"
    )
    args = ap.parse_args(argv)
    t0 = perf_ns()
    result = run(
        args.quick,
        conns=args.conns,
        window=args.window,
        closed_s=args.closed_s,
        watchers=args.watchers,
        watch_rate=args.watch_rate,
        open_fraction=args.open_fraction,
        sweep=[float(x) for x in args.sweep.split(",") if x],
        sweep_s=args.sweep_s,
        edges=args.edges,
    )
    result["edges"] = args.edges
    result["elapsed_s"] = round((perf_ns() - t0) / 1e9, 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
        print(f"elapsed {result['elapsed_s']} s")
    return 0


def _sub_main(argv: list[str]) -> int:
    """``python -m bench.gateway echo|load ...``: the server and load processes."""
    ap = argparse.ArgumentParser(prog="python -m bench.gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo", help="a trio-websocket echo server")
    e.add_argument("--verify", action="store_true", help="verify each bid's signature first")
    e.add_argument("--port", type=int, default=0)
    ld = sub.add_parser("load", help="a load process (prints one JSON object)")
    ld.add_argument("mode", choices=("closed", "open", "watch"))
    ld.add_argument("--url", required=True)
    ld.add_argument("--server-pid", type=int, default=0)
    ld.add_argument("--target", choices=("pubex", "echo"), default="pubex")
    ld.add_argument("--conns", type=int, default=50)
    ld.add_argument("--window", type=int, default=1)
    ld.add_argument("--duration", type=float, default=5.0)
    ld.add_argument("--phase", choices=tuple(PHASES), default="closed")
    ld.add_argument("--per-conn", type=int, default=1000)
    ld.add_argument("--offset", type=int, default=0, help="open: bids already sent per lot")
    ld.add_argument("--rate", type=float, default=100.0)
    ld.add_argument("--watchers", type=int, default=1000)
    ld.add_argument("--drain-s", type=float, default=3.0)
    args = ap.parse_args(argv)
    raise_nofile()
    if args.cmd == "echo":
        import trio

        with contextlib.suppress(KeyboardInterrupt):
            trio.run(echo_server, args.port, args.verify)  # SIGTERM ends it
        return 0
    fn = {"closed": load_closed, "open": load_open, "watch": load_watch}[args.mode]
    print(json.dumps(fn(args)))
    return 0


if __name__ == "__main__":
    sys.exit(_sub_main(sys.argv[1:]))
