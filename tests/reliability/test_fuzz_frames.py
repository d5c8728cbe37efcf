"""Issue 11, "No frame stops the server": a real ``pubex serve`` child process
takes PUBEX_FUZZ_FRAMES (default 100,000) mutated frames over real WebSocket
connections of every role, and answers every one.

The frames come from ``tests/reliability/fuzzgen.py`` (a ``random.Random``
seeded from PUBEX_FUZZ_SEED, else a fresh seed; either way it is printed):
at least 30 % (asserted) are *authentic* with mutated fields -- they pass
decoding and the signature / token check, so their mutated fields reach the
engine -- the rest are mutated for the edge to refuse or structurally broken.  Each connection sends its frames
in batches, each batch followed by a ping whose pong fences what the gateway
answered at once; the engine's answers (acks, ledgered refusals) are matched
by client_seq.  Every frame is classified by what came back -- ``ack``, a
typed ``error <code> <name>``, ``pong``, ``subscribed`` (a subscription has
no reply), ``close:<code>`` -- and must be what the oracle (``fuzzgen.Oracle``,
the gateway's own ``Reader``) says it must be; a close only for invalid UTF-8
(1007) and messages past 4x ``max_frame_bytes`` (1009); a closed connection
is reopened.  Staff connections also run "scenarios": a lot created with
fuzzed terms, published, bidders registered and funded, so that the bidders'
frames meet fuzzed lots that are open.

Meanwhile a well-behaved bidder bids on its own lot: every bid is acked, and
every ack is in the ledger.  The server is polled after every batch (it must
never exit), answers /healthz at the end, drains on SIGTERM with exit 0, and
``pubex ledger verify`` passes on its data directory.

``make soak`` runs this with PUBEX_FUZZ_FRAMES=1000000.

The bugs this fuzz found have their own tests at the end of this module; they
fail until the server is fixed, and the fuzz steers around their frames
meanwhile (``fuzzgen.KNOWN_BUGS``, counted in the summary).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import websocket
from nacl.signing import SigningKey
from websocket import ABNF

from config.settings import load_settings
from engine.messages import (
    PlaceBid,
    RegionDemand,
    decode_command,
    decode_events,
    encode_events,
)
from engine.router import Router
from engine.rules import DUTCH, ONE_TIME_QUOTE, REVERSE, VBP_R10, RuleSet
from gateway.wire import protocol as p
from ledger.record import decode_body, decode_envelope
from ledger.store import LedgerStore
from tests.reliability import fuzzgen as fz
from tests.reliability.fuzzgen import (
    BIDDER,
    CLOSE,
    ENGINE,
    GOOD,
    IMMEDIATE,
    PONG,
    ROLES,
    SERVICE,
    STAFF,
    SUB,
    SUPERVISOR,
    WATCHER,
    Expect,
    Identity,
    Out,
    Tally,
)

REPO = Path(__file__).resolve().parents[2]
FRAMES = int(os.environ.get("PUBEX_FUZZ_FRAMES") or 100_000)
SEED = int(os.environ.get("PUBEX_FUZZ_SEED") or secrets.randbits(32))
NS = 1_000_000_000
HOUR_NS = 3600 * NS

pytestmark = pytest.mark.timeout(600 + FRAMES // 200)

# Connections per role, and each role's share of the frames.
CONNECTIONS = {WATCHER: 2, BIDDER: 6, STAFF: 3, SUPERVISOR: 2, SERVICE: 2}
SHARE = {WATCHER: 0.16, BIDDER: 0.40, STAFF: 0.22, SUPERVISOR: 0.10, SERVICE: 0.12}
BIDDER_KEY_ROLES = ("bidder", "bidder", "supplier", "supplier", "purchaser", "committee")
SPARE_KEYS = 2  # per bidder connection: fresh identities after a client_seq of 2**63 - 1
TOKEN_POOL = 12  # per token role, likewise
BATCH = 48  # frames per batch (then a fencing ping)
REPLY_TIMEOUT_S = 60.0
GOOD_LOT, GOOD_BIDDER, GOOD_KEY = "GOOD-LOT", "GOOD-bidder", "GOOD-key"
GOOD_START, GOOD_INC = 10_000, 100
MIN_AUTHENTIC = 0.30
LIMITS = {
    # the fuzzed frames must reach the engine, not the rate limits
    "bids_per_s": 1_000_000_000,
    "bid_burst": 1_000_000_000,
    "refusals_per_minute": 1_000_000_000,
    "staff_commands_per_s": 1_000_000_000,
    "staff_burst": 1_000_000_000,
    "max_connections_per_address": 100_000,
    # participants subscribed to "*" get every event; the fuzz is not about slow readers
    "send_queue_bytes": 64 * 1024 * 1024,
}


# ------------------------------------------------------------------ the server


def write_config(path: Path) -> Path:
    def table(pairs: dict[str, str]) -> str:
        return "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in pairs.items()) + " }"

    staff = {"dev-staff-token": "staff-01"} | {
        f"fz-staff-{i}": f"fz-staff-{i}" for i in range(TOKEN_POOL)
    }
    sup = {"dev-supervisor-token": "supervisor-01"} | {
        f"fz-sup-{i}": f"fz-sup-{i}" for i in range(TOKEN_POOL)
    }
    svc = {"dev-registry-token": "registry"} | {
        f"fz-svc-{i}": f"fz-svc-{i}" for i in range(TOKEN_POOL)
    }
    lines = [
        "[auth]",
        f"staff_tokens = {table(staff)}",
        f"supervisor_tokens = {table(sup)}",
        f"service_tokens = {table(svc)}",
        "",
        "[limits]",
        *(f"{k} = {v}" for k, v in LIMITS.items()),
        "",
    ]
    path.write_text("\n".join(lines))
    return path


class Server:
    """``pubex serve`` as a child process on 127.0.0.1 (ports picked by the OS)."""

    def __init__(self, config: Path, data: Path, log: Path, memory_cap: int = 0) -> None:
        argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--config", str(config)]
        # a sandbox: the fuzzer's short and well-known tokens are refused elsewhere
        argv += ["--data", str(data), "--ws-port", "0", "--http-port", "0", "--sandbox"]
        self.log_path = log
        self._err = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if memory_cap:  # a runaway server must not take the machine with it
            resource.prlimit(self.proc.pid, resource.RLIMIT_AS, (memory_cap, memory_cap))
        self.out: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"pubex serve exited at start: {self.log_tail()}")
            self.out.append(line)
            m = re.search(r"listening ws=(\S+) http=(\S+)", line)
            if m:
                self.ws_url, self.http_url = m.group(1), m.group(2)
                break
            assert time.monotonic() < deadline, "no listening line within 60 s"
        assert self.ws_url.startswith("ws://127.0.0.1:"), self.ws_url
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 6000) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def healthz(self) -> int:
        with urllib.request.urlopen(self.http_url + "healthz", timeout=30) as r:
            status: int = r.status
            return status

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self._err.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


# ------------------------------------------------------------------ a connection


class _Buffered:
    """websocket-client reads each frame with several exact-size ``recv`` calls;
    this serves them from one 64 KiB read (as bench/locust/users.py does)."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(65536)
            if not buf:
                return buf
            self._buf, pos = buf, 0
        self._pos = pos + bufsize
        return buf[pos : pos + bufsize]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed {code}")
        self.code = code  # None: dropped without a close frame


_FANOUT = (b'{"type":"event"', b'{"type":"snapshot"', b'{"type":"book"')


class Link:
    """One WebSocket connection (websocket-client, blocking, one thread)."""

    def __init__(self, url: str, ident: Identity) -> None:
        query: dict[str, str] = {}
        header: list[str] = []
        if ident.key is not None:
            ts = int(time.time() * 1000)
            query = p.auth_params(ident.key, ident.key_id, ts, secrets.token_hex(12))
        elif ident.token:
            header = [f"Authorization: Bearer {ident.token}"]
        full = f"{url}?{urlencode(query)}" if query else url
        self.ws = websocket.create_connection(
            full,
            timeout=REPLY_TIMEOUT_S,
            header=header,
            suppress_origin=True,
            skip_utf8_validation=True,
        )
        self.ws.sock = _Buffered(self.ws.sock)
        hello = self.recv()
        assert isinstance(hello, p.Hello), hello
        assert hello.role == ident.role, (hello, ident.role)
        self.fanout = 0

    def send(self, outs: list[Out]) -> None:
        wire = []
        for out in outs:
            opcode = ABNF.OPCODE_BINARY if out.binary else ABNF.OPCODE_TEXT
            wire.append(ABNF.create_frame(out.data, opcode).format())
        self.ws.sock.sendall(b"".join(wire))

    def recv(self) -> Any:
        """The next server frame that is not lot fan-out; ``Closed`` at the end."""
        ws = self.ws
        while True:
            try:
                frame = ws.recv_frame()
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                raise Closed(None) from None
            op = frame.opcode
            if op == ABNF.OPCODE_TEXT:
                data = frame.data
                if data.startswith(_FANOUT):
                    self.fanout += 1
                    continue
                return p.decode_server(data)
            if op == ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
                self.close()
                raise Closed(code)
            if op == ABNF.OPCODE_PING:
                ws.pong(frame.data)
            elif op != ABNF.OPCODE_PONG:
                raise AssertionError(f"unexpected opcode {op}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        self.ws.sock.close()


# ------------------------------------------------------------------ provisioning


def provision(url: str, staff: Identity, world_keys: dict[str, Identity]) -> fz.World:
    """Lots of every mechanism, an open e-mall item, keys, registrations and
    deposits -- and the well-behaved bidder's own lot -- over one staff connection."""
    now = time.time_ns()
    frames: list[Any] = []

    def lot(lot_id: str, mechanism: str, start: int, step: int, end_s: float, **kw: Any) -> None:
        frames.append(
            p.CreateLotFrame(
                staff.next_seq(),
                lot_id,
                mechanism,  # type: ignore[arg-type]
                f"fuzz {mechanism} {lot_id}",
                start,
                step,
                now - NS,
                now + int(end_s * NS),
                deposit_fen=1_000,
                **kw,
            )
        )
        frames.append(p.PublishLotFrame(staff.next_seq(), lot_id))

    lots = [
        fz.Lot("FZ-EN-1", "english", 10_000, 100),
        fz.Lot("FZ-EN-2", "english", 50_000, 500),
        fz.Lot("FZ-LS-1", "listing", 10_000, 100),
        fz.Lot("FZ-DU-1", "dutch", 100_000, 100),
        fz.Lot("FZ-DU-2", "dutch", 100_000, 1_000),
        fz.Lot("FZ-SE-1", "sealed", 1_000_000, 1),
        fz.Lot("FZ-SE-2", "sealed", 1_000_000, 1),
        fz.Lot("FZ-TS-1", "sealed", 1_000_000, 1),
        fz.Lot("FZ-RV-1", "reverse", 1_000_000, 10_000),
        fz.Lot("FZ-VB-1", "vbp", 100_000, 1, ("beijing", "hebei", "tianjin")),
    ]
    lot("FZ-EN-1", "english", 10_000, 100, 2 * 3600)
    lot("FZ-EN-2", "english", 50_000, 500, 2 * 3600, rules=RuleSet(name="exchange-ish"))
    lot("FZ-LS-1", "listing", 10_000, 100, 2 * 3600)
    lot("FZ-DU-1", "dutch", 100_000, 100, 2 * 3600, rules=DUTCH, floor_fen=1_000)
    dutch_fast = RuleSet(name="dutch", tick_ns=2 * NS, extension_window_ns=0)
    lot("FZ-DU-2", "dutch", 100_000, 1_000, 2 * 3600, rules=dutch_fast, floor_fen=1_000)
    lot("FZ-SE-1", "sealed", 1_000_000, 1, 2 * 3600, rules=ONE_TIME_QUOTE)
    # closes within seconds: reveals are in their window for the rest of the run
    reveal_soon = RuleSet(name="one-time-quote", reveal_window_ns=2 * HOUR_NS)
    lot("FZ-SE-2", "sealed", 1_000_000, 1, 5, rules=reveal_soon)
    scoring = RuleSet(
        name="tender-scoring", evaluation="scoring", min_valid_bids=1, reveal_window_ns=HOUR_NS
    )
    lot("FZ-TS-1", "sealed", 1_000_000, 1, 8, rules=scoring)
    lot("FZ-RV-1", "reverse", 1_000_000, 10_000, 2 * 3600, rules=REVERSE)
    regions = (("beijing", 600), ("hebei", 400), ("tianjin", 200))
    frames.append(
        p.CreateLotFrame(
            staff.next_seq(),
            "FZ-VB-1",
            "vbp",
            "fuzz vbp",
            100_000,
            1,
            now - NS,
            now + 2 * HOUR_NS,
            rules=VBP_R10,
            regions=tuple(RegionDemand(r, d) for r, d in regions),
        )
    )
    frames.append(p.PublishLotFrame(staff.next_seq(), "FZ-VB-1"))
    lot(GOOD_LOT, "english", GOOD_START, GOOD_INC, 2 * 3600)
    items = ["FZ-IT-1", "FZ-IT-2"]
    frames.append(p.CreateItemFrame(staff.next_seq(), "FZ-IT-1", "paper", 1_000, 500, 100, "call"))
    frames.append(p.SetItemSessionFrame(staff.next_seq(), "FZ-IT-1", "open"))
    frames.append(p.CreateItemFrame(staff.next_seq(), "FZ-IT-2", "toner", 1_000, 0, 0, "call"))
    for ident in world_keys.values():
        assert ident.key is not None
        frames.append(
            p.RegisterKeyFrame(
                staff.next_seq(),
                ident.key_id,
                ident.name,
                bytes(ident.key.verify_key).hex(),
                ident.key_role,  # type: ignore[arg-type]
            )
        )
        targets = [GOOD_LOT] if GOOD in ident.name else [x.lot for x in lots]
        for lot_id in targets:
            if lot_id == "FZ-TS-1" and ident.key_role == "committee":
                continue  # a committee member scores; registered as a bidder it may not
            frames.append(p.RegisterBidderFrame(staff.next_seq(), lot_id, ident.name))
            frames.append(p.ConfirmDepositFrame(staff.next_seq(), lot_id, ident.name, 1_000))
        if ident.key_role == "purchaser":
            frames.append(p.SetPurchaseLimitFrame(staff.next_seq(), "FZ-IT-1", ident.name, 50))
    link = Link(url, staff)
    try:
        for i in range(0, len(frames), 64):
            chunk = frames[i : i + 64]
            link.send([Out(p.encode_text(f)) for f in chunk])
            waiting = {f.client_seq for f in chunk}
            while waiting:
                reply = link.recv()
                if isinstance(reply, p.Ack | p.Error) and reply.client_seq in waiting:
                    assert isinstance(reply, p.Ack), (reply, chunk)
                    waiting.discard(reply.client_seq)
    finally:
        link.close()
    bidders = sorted({i.name for i in world_keys.values() if GOOD not in i.name})
    keys = sorted(i.key_id for i in world_keys.values() if GOOD not in i.name)
    return fz.World(lots, items, bidders, keys)


# ------------------------------------------------------------------ the fuzzing connections


@dataclass
class Shared:
    server: Server
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)
        self.stop.set()

    def check_server(self) -> None:
        code = self.server.proc.poll()
        if code is not None:
            self.fail(f"pubex serve exited with {code}:\n{self.server.log_tail()}")


class Worker:
    """One connection of one role: sends its quota of frames in fenced batches
    and classifies the answer of each."""

    def __init__(
        self,
        shared: Shared,
        world: fz.World,
        oracle: fz.Oracle,
        idents: deque[Identity],
        quota: int,
        rng_seed: str,
    ) -> None:
        self.shared = shared
        self.url = shared.server.ws_url
        self.oracle = oracle
        self.idents = idents  # the first is in use; the rest replace it when it burns
        self.ident = idents.popleft()
        self.role = self.ident.role
        self.quota = quota
        self.sent = 0
        self.authentic = 0  # frames the oracle sends to the engine
        self.mutated = 0  # ... with fields changed from a valid base frame
        self.reconnects = 0
        self.steered: dict[str, int] = {}  # frames not sent: they trigger a known bug
        self.tally = Tally()
        self.gen = fz.Gen(
            random.Random(rng_seed),
            world,
            self.ident,
            oracle,
            can_burn=lambda: bool(self.idents),
        )
        self.link: Link | None = None
        self.sync_t = fz.SYNC_T_BASE
        self.held: tuple[Out, Expect] | None = None

    def next_frame(self) -> tuple[Out, Expect]:
        if self.held is not None:
            held, self.held = self.held, None
            return held
        while True:
            out = self.gen.next()
            exp = self.oracle.expect(out, self.ident)
            if exp.kind == ENGINE and exp.client_seq >= fz.INT63_MAX - 64 and not self.idents:
                continue  # would burn the last identity: no fresh one to follow
            bug = fz.known_bug(exp.frame, self.gen.now_ns) if exp.kind == ENGINE else ""
            if bug:
                self.steered[bug] = self.steered.get(bug, 0) + 1
                self.gen.queue.clear()  # the rest of its scenario would be for nothing
                continue
            if exp.kind == ENGINE:
                self.ident.saw(exp.client_seq)
            return out, exp

    def run(self) -> None:
        try:
            while self.sent < self.quota and not self.shared.stop.is_set():
                if self.link is None:
                    self.link = Link(self.url, self.ident)
                batch: list[tuple[Out, Expect]] = []
                while len(batch) < BATCH and self.sent + len(batch) < self.quota:
                    item = self.next_frame()
                    if item[1].kind == CLOSE:
                        if batch:
                            self.held = item
                        else:
                            batch.append(item)
                        break
                    batch.append(item)
                if batch[0][1].kind == CLOSE:
                    self.closing(batch[0])
                else:
                    self.exchange(batch)
                self.sent += len(batch)
                self.authentic += sum(1 for _o, e in batch if e.kind == ENGINE)
                self.mutated += sum(1 for o, e in batch if e.kind == ENGINE and o.mutated)
                self.shared.check_server()
                if self.ident.burned and self.idents:
                    self.swap_identity()
        except Exception:
            self.shared.fail(f"{self.role} worker:\n{traceback.format_exc()}")
        finally:
            if self.link is not None:
                self.link.close()

    def swap_identity(self) -> None:
        """client_seq 2**63 - 1 was sent: this origin can take nothing new."""
        if self.link is not None:
            self.link.close()
            self.link = None
        self.ident = self.idents.popleft()
        self.gen.ident = self.ident
        self.gen.scenarios = 0  # its lots are named after it
        self.reconnects += 1

    def _ping(self) -> tuple[Out, int]:
        self.sync_t += 1
        return Out(p.encode_text(p.Ping(self.sync_t))), self.sync_t

    def exchange(self, batch: list[tuple[Out, Expect]]) -> None:
        link = self.link
        assert link is not None
        ping, t = self._ping()
        link.send([o for o, _e in batch] + [ping])
        outcomes: list[str | None] = [None] * len(batch)
        engine: dict[int, deque[int]] = {}
        for i, (_o, e) in enumerate(batch):
            if e.kind == ENGINE:
                engine.setdefault(e.client_seq, deque()).append(i)
        engine_left = sum(len(q) for q in engine.values())
        at_once: list[Any] = []
        fenced = False
        problems: list[str] = []
        try:
            while not fenced or engine_left:
                reply = link.recv()
                if isinstance(reply, p.Pong) and reply.t == t:
                    fenced = True
                elif isinstance(reply, p.Ack) or (
                    isinstance(reply, p.Error)
                    and (reply.code < 1000 or reply.code in fz.ENGINE_PATH_GATEWAY_CODES)
                ):
                    waiting = engine.get(reply.client_seq)
                    if not waiting:
                        problems.append(f"an engine reply for no frame: {reply!r}")
                        continue
                    outcomes[waiting.popleft()] = self.engine_outcome(reply)
                    engine_left -= 1
                elif isinstance(reply, p.Error | p.Pong):
                    at_once.append(reply)
                else:
                    problems.append(f"unexpected frame {reply!r}")
        except Closed as closed:
            problems.append(f"connection closed ({closed.code}) in a batch without a closer")
            self.link = None
            self.reconnects += 1
        except websocket.WebSocketTimeoutException:
            problems.append(f"no answer within {REPLY_TIMEOUT_S:.0f} s: the server stalled")
            link.close()
            self.link = None
            self.reconnects += 1
        self.match_at_once(batch, outcomes, at_once, problems)
        for i, (out, exp) in enumerate(batch):
            outcome = outcomes[i] or "unanswered"
            self.tally.add(self.role, outcome)
            self.note(out, exp, outcome)
        if problems:
            self.report_batch(batch, outcomes, at_once, problems)

    def engine_outcome(self, reply: p.Ack | p.Error) -> str:
        if isinstance(reply, p.Ack):
            return "ack (retried)" if reply.retried else "ack"
        return fz.outcome_of_error(reply.code, reply.name)

    def match_at_once(
        self,
        batch: list[tuple[Out, Expect]],
        outcomes: list[str | None],
        at_once: list[Any],
        problems: list[str],
    ) -> None:
        """The gateway answers in frame order: walk the expectations and the
        replies that came before the fence together."""
        k = 0
        for i, (_out, exp) in enumerate(batch):
            if exp.kind == IMMEDIATE:
                reply = at_once[k] if k < len(at_once) else None
                k += 1
                if (
                    isinstance(reply, p.Error)
                    and reply.code == exp.code
                    and reply.client_seq in (exp.client_seq, exp.alt_seq)
                ):
                    outcomes[i] = self.engine_outcome(reply)
                else:
                    want = f"error {p.error_name(exp.code)} client_seq {exp.client_seq}"
                    problems.append(f"frame {i}: expected {want}, got {reply!r}")
                    outcomes[i] = "mismatch"
            elif exp.kind == PONG:
                reply = at_once[k] if k < len(at_once) else None
                k += 1
                if isinstance(reply, p.Pong) and reply.t == exp.t:
                    outcomes[i] = "pong"
                else:
                    problems.append(f"frame {i}: expected pong {exp.t}, got {reply!r}")
                    outcomes[i] = "mismatch"
            elif exp.kind == SUB:
                outcomes[i] = "subscribed"
                reply = at_once[k] if k < len(at_once) else None
                if isinstance(reply, p.Error) and reply.name == "unknown_subscription":
                    outcomes[i] = fz.error_outcome(reply.code)
                    k += 1
                    reply = at_once[k] if k < len(at_once) else None
                if isinstance(reply, p.Error) and reply.message == "too many subscriptions":
                    outcomes[i] = fz.error_outcome(reply.code)
                    k += 1
        if k < len(at_once):
            problems.append(f"{len(at_once) - k} replies more than expected: {at_once[k:][:5]!r}")

    def closing(self, item: tuple[Out, Expect]) -> None:
        """A frame the server must close on (1007 / 1009), alone, then a fence."""
        out, exp = item
        link = self.link
        assert link is not None
        ping, t = self._ping()
        with contextlib.suppress(OSError):  # closed before it took the rest: read why
            link.send([out, ping])
        outcome = "unanswered"
        try:
            got = []
            while True:
                reply = link.recv()
                if isinstance(reply, p.Pong) and reply.t == t:
                    break
                got.append(reply)
            # not closed: only allowed where the oracle allows another answer
            if exp.alt and len(got) == 1 and isinstance(got[0], p.Error) and got[0].name == exp.alt:
                outcome = fz.error_outcome(got[0].code)
                self.tally.example(
                    f"a text frame past 4x max_frame_bytes in UTF-8 bytes (not in characters) "
                    f"answered {exp.alt}, not closed 1009",
                    f"{len(out.wire()):,} bytes, {len(out.data):,} characters: {out.text(60)}",
                    keep=2,
                )
            else:
                outcome = "mismatch"
                self.tally.example(
                    f"{self.role}: expected close {exp.code}, got {got!r}"[:600], out.text()
                )
        except websocket.WebSocketTimeoutException:
            link.close()
            self.link = None
            outcome = "unanswered"
        except Closed as closed:
            self.link = None
            self.reconnects += 1
            outcome = f"close:{closed.code}"
            if closed.code != exp.code:
                self.tally.example(f"{self.role}: expected close {exp.code}", out.text())
                outcome = f"wrong close:{closed.code}"
        self.tally.add(self.role, outcome)
        self.note(out, exp, outcome)

    def note(self, out: Out, exp: Expect, outcome: str) -> None:
        """Keep the frames behind the outcomes a reader must see."""
        wrong = outcome in ("unanswered", "mismatch") or outcome.startswith(
            ("untyped", "wrong close")
        )
        failed = outcome.endswith(("internal_error", "storage_unavailable", "overloaded"))
        if wrong or failed:
            self.tally.example(f"{self.role} -> {outcome}", out.text(2000))

    def report_batch(
        self,
        batch: list[tuple[Out, Expect]],
        outcomes: list[str | None],
        at_once: list[Any],
        problems: list[str],
    ) -> None:
        lines = [f"{self.role} ({self.ident.name or self.ident.key_id}): {problems[:5]}"]
        for i, (out, exp) in enumerate(batch):
            lines.append(f"  {i}: {exp} -> {outcomes[i]}: {out.label} {out.text(300)}")
        lines.append(f"  replies before the fence: {at_once[:20]!r}")
        self.tally.example("batch problems", "\n".join(lines)[:8000], keep=3)


# ------------------------------------------------------------------ the well-behaved bidder


class GoodBidder:
    """Valid, increasing bids on its own lot, one at a time; each must be acked."""

    def __init__(self, shared: Shared, ident: Identity) -> None:
        self.shared = shared
        self.ident = ident
        self.acks: list[tuple[int, str, int, int]] = []  # seq, entry hash, client_seq, amount
        self.refused: list[Any] = []
        self.done = threading.Event()

    def run(self) -> None:
        key = self.ident.key
        assert key is not None
        link = None
        try:
            link = Link(self.shared.server.ws_url, self.ident)
            amount = GOOD_START
            while not self.done.is_set() and not self.shared.stop.is_set():
                cs = self.ident.next_seq()
                link.send([Out(p.bid_frame(key, self.ident.key_id, GOOD_LOT, amount, cs))])
                while True:
                    reply = link.recv()
                    if isinstance(reply, p.Ack | p.Error) and reply.client_seq == cs:
                        break
                if isinstance(reply, p.Ack) and not reply.retried:
                    self.acks.append((reply.seq, reply.entry_hash, cs, amount))
                else:
                    self.refused.append(reply)
                amount += GOOD_INC
                time.sleep(0.01)  # pacing: a steady bidder among the fuzzers, not a flood
        except Exception:
            self.shared.fail(f"the well-behaved bidder:\n{traceback.format_exc()}")
        finally:
            if link is not None:
                link.close()


def check_good_acks_in_ledger(data: Path, good: GoodBidder) -> None:
    """None lost: every acked bid is in the ledger at its seq, with its hash."""
    origin = f"bidder:{GOOD_BIDDER}"
    with LedgerStore.open(data / "ledger", readonly=True) as store:
        for seq, entry_hash, cs, amount in good.acks:
            entry = store.get(seq)
            assert entry is not None, f"acked bid at seq {seq} is not in the ledger"
            assert entry[1].hex() == entry_hash, f"seq {seq}: another entry hash"
            cmd = decode_command(decode_body(entry[2]).command)
            assert cmd == PlaceBid(origin, cs, GOOD_LOT, amount), (seq, cmd)


def describe_divergence(data: Path) -> str:
    """Where a replay of the ledger first differs from what the server recorded:
    the entry's command, its envelope (the frame as received) and both event lists."""
    router = Router()
    with LedgerStore.open(data / "ledger", readonly=True) as store:
        for seq, _prev, _hash, raw in store.iter_entries():
            body = decode_body(raw)
            cmd = decode_command(body.command)
            events = router.apply(cmd, body.ts_ns)
            if encode_events(events) != body.events:
                return (
                    f"data {data}: seq {seq} at {body.ts_ns}: {cmd!r}\n"
                    f"envelope: {decode_envelope(body.meta)!r}\n"
                    f"recorded: {decode_events(body.events)!r}\nreplayed: {events!r}"
                )
    return f"data {data}: a replay gives every recorded event"


# ------------------------------------------------------------------ the test


def identities() -> tuple[Identity, dict[str, deque[Identity]], dict[str, Identity], Identity]:
    """The provisioning staff member, each fuzz connection's identities (in
    use, then spares), every bidder key (to register), and the good bidder."""
    staff = Identity(STAFF, token="dev-staff-token", name="staff-01")
    pools: dict[str, deque[Identity]] = {}
    keys: dict[str, Identity] = {}
    first_token = {STAFF: "dev-staff-token", SUPERVISOR: "dev-supervisor-token"}
    first_token[SERVICE] = "dev-registry-token"
    prefix = {STAFF: "fz-staff", SUPERVISOR: "fz-sup", SERVICE: "fz-svc"}
    for role, n in CONNECTIONS.items():
        for c in range(n):
            slot = f"{role}-{c}"
            pool: deque[Identity] = deque()
            if role == WATCHER:
                pool.append(Identity(WATCHER, name=slot))
            elif role == BIDDER:
                key_role = BIDDER_KEY_ROLES[c % len(BIDDER_KEY_ROLES)]
                for s in range(1 + SPARE_KEYS):
                    name = f"fzb{c}" + (f"s{s}" if s else "")
                    ident = Identity(
                        BIDDER,
                        name=name,
                        key_id=f"fzk{c}" + (f"s{s}" if s else ""),
                        key=SigningKey.generate(),
                        key_role=key_role,
                    )
                    keys[name] = ident
                    pool.append(ident)
            else:
                tokens = [f"{prefix[role]}-{i}" for i in range(TOKEN_POOL)]
                mine = tokens[c::n]
                if c == 0:
                    mine = [first_token[role], *mine]
                for token in mine:
                    if token == "dev-staff-token":
                        pool.append(staff)  # shares staff-01's client_seq with provisioning
                    else:
                        name = {
                            "dev-supervisor-token": "supervisor-01",
                            "dev-registry-token": "registry",
                        }.get(token, token)
                        pool.append(Identity(role, token=token, name=name))
            pools[slot] = pool
    good = Identity(
        BIDDER, name=GOOD_BIDDER, key_id=GOOD_KEY, key=SigningKey.generate(), key_role="bidder"
    )
    keys[GOOD_BIDDER] = good
    return staff, pools, keys, good


def quotas(total: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for role, n in CONNECTIONS.items():
        role_total = round(total * SHARE[role])
        for c in range(n):
            out[f"{role}-{c}"] = role_total // n + (1 if c < role_total % n else 0)
    first = f"{BIDDER}-0"
    out[first] += total - sum(out.values())
    return out


def test_no_frame_stops_the_server(tmp_path: Path) -> None:
    print(f"\nfuzz frames: seed {SEED} (PUBEX_FUZZ_SEED), {FRAMES:,} frames (PUBEX_FUZZ_FRAMES)")
    config = write_config(tmp_path / "fuzz.toml")
    data = tmp_path / "data"
    settings = load_settings(str(config))
    limits = settings.limits
    oracle = fz.Oracle(p.Reader.from_limits(limits), ws_max_message=4 * limits.max_frame_bytes)
    server = Server(config, data, tmp_path / "serve.log")
    shared = Shared(server)
    try:
        staff, pools, keys, good_ident = identities()
        world = provision(server.ws_url, staff, keys)
        world.max_frame_bytes = limits.max_frame_bytes
        world.staff_names = [i.name for slot, ids in pools.items() if STAFF in slot for i in ids]
        good = GoodBidder(shared, good_ident)
        workers = [
            Worker(shared, world, oracle, pools[slot], n, f"{SEED}:{slot}")
            for slot, n in quotas(FRAMES).items()
        ]
        threads = [threading.Thread(target=w.run, name=f"fuzz-{w.role}") for w in workers]
        good_thread = threading.Thread(target=good.run, name="good-bidder")
        started = time.monotonic()
        good_thread.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        good.done.set()
        good_thread.join(timeout=REPLY_TIMEOUT_S + 5)
        shared.check_server()
        assert not shared.failures, f"seed {SEED}:\n" + "\n".join(shared.failures)

        tally = Tally()
        for w in workers:
            tally.merge(w.tally)
        sent = sum(w.sent for w in workers)
        authentic = sum(w.authentic for w in workers)
        mutated = sum(w.mutated for w in workers)
        reconnects = sum(w.reconnects for w in workers)
        print(tally.table())
        print(
            f"{sent:,} frames in {elapsed:.1f} s ({sent / elapsed:,.0f} frames/s), "
            f"authentic (decoded, signature / token accepted, reached the engine): "
            f"{authentic:,} = {authentic / sent:.1%}, {mutated:,} = {mutated / sent:.1%} of "
            f"all frames with mutated fields; reconnects {reconnects}; "
            f"well-behaved bidder: {len(good.acks)} bids acked, {len(good.refused)} refused; "
            f"lots created and opened by staff scenarios: {sum(w.gen.scenarios for w in workers)}"
        )
        steered: dict[str, int] = {}
        for w in workers:
            for bug, n in w.steered.items():
                steered[bug] = steered.get(bug, 0) + n
        for bug, n in sorted(steered.items()):
            print(f"not sent: {n} frames that trigger known bug {bug} ({fz.KNOWN_BUGS[bug]})")
        for what, texts in tally.examples.items():
            print(f"-- {what}:")
            for text in texts:
                print(f"   {text[:3000]}")

        # every frame was sent and answered as it must be
        assert sent == FRAMES, (sent, FRAMES)
        assert tally.total() == FRAMES
        wrong = {
            o: n
            for (_r, o), n in tally.counts.items()
            if o in ("unanswered", "mismatch") or o.startswith(("untyped", "wrong close"))
        }
        assert not wrong, f"seed {SEED}: frames not answered as they must be: {wrong}\n" + str(
            tally.examples.get("batch problems", "")
        )
        # closes only where a close is due
        closes = {o for _r, o in tally.counts if o.startswith("close:")}
        assert closes <= {"close:1007", "close:1009"}, closes
        # the share of frames that passed the edge with mutated fields and reached the engine
        assert mutated / sent >= MIN_AUTHENTIC, (mutated, authentic, sent)
        # per role
        gw = p.GatewayError
        for role in ROLES:
            counts = tally.by_role(role)
            assert sum(counts.values()) > 0, role
            acks = counts.get("ack", 0) + counts.get("ack (retried)", 0)
            engine_errors = sum(n for o, n in counts.items() if fz.is_engine_error(o))
            if role == WATCHER:
                # a watcher never reaches the engine
                assert acks == 0 and engine_errors == 0, counts
            else:
                assert acks > 0 and engine_errors > 0, (role, counts)
            if role != STAFF:
                assert counts.get(fz.error_outcome(gw.not_authorized), 0) > 0, (role, counts)
        if FRAMES >= 50_000:  # every kind of refusal at the edge was met
            for code in (
                gw.malformed_json,
                gw.schema_violation,
                gw.payload_ambiguous,
                gw.nesting_too_deep,
                gw.field_not_applicable,
                gw.frame_too_large,
                gw.bad_signature,
                gw.wrong_key,
                gw.bad_domain,
                gw.not_authorized,
            ):
                assert tally.total(fz.error_outcome(code)) > 0, code.name
            assert tally.total("close:1007") > 0 and tally.total("close:1009") > 0
        # the engine never raised on a frame (it would have answered internal_error)
        failed = tally.total(fz.error_outcome(gw.internal_error))
        assert failed == 0, (
            f"seed {SEED}: {failed} frames made the engine raise (internal_error): "
            f"{tally.examples}\n{server.log_tail()}"
        )
        assert tally.total(fz.error_outcome(gw.storage_unavailable)) == 0

        # the well-behaved bidder: every bid acked
        assert good.acks, "the well-behaved bidder never bid"
        assert not good.refused, good.refused[:5]

        # still serving
        assert server.alive(), server.log_tail()
        assert server.healthz() == 200
    finally:
        code = server.stop()
    assert code == 0, f"pubex serve exited {code} on SIGTERM:\n{server.log_tail()}"
    check_good_acks_in_ledger(data, good)
    verify = subprocess.run(
        [sys.executable, "-m", "gateway.entry.cli", "ledger", "verify", str(data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    print(verify.stdout.strip())
    assert verify.returncode == 0, (
        f"seed {SEED}: {verify.stdout}{verify.stderr}\n{describe_divergence(data)}"
    )


# ------------------------------------------------------------------ bugs this fuzz found
# Each fails until the server is fixed; the fuzz above steers around the frames
# (fuzzgen.KNOWN_BUGS) so that it keeps testing everything else meanwhile.


def request(link: Link, text: str, timeout: float) -> p.Ack | p.Error | None:
    """Send one staff frame (JSON text); its reply, or None after ``timeout`` s."""
    link.ws.settimeout(timeout)
    link.send([Out(text)])
    cs = p.decode_client(text).client_seq  # type: ignore[union-attr]
    try:
        while True:
            reply = link.recv()
            if isinstance(reply, p.Ack | p.Error) and reply.client_seq == cs:
                return reply
    except websocket.WebSocketTimeoutException:
        return None


def pong_within(link: Link, timeout: float) -> bool:
    link.ws.settimeout(timeout)
    link.send([Out(p.encode_text(p.Ping(99)))])
    try:
        while True:
            reply = link.recv()
            if isinstance(reply, p.Pong) and reply.t == 99:
                return True
    except websocket.WebSocketTimeoutException:
        return False


def create_lot(seq: int, lot: str, mechanism: str, start_fen: int, step_fen: int, start_ns: int,
               rules: str = '{"name":"judicial"}') -> str:  # fmt: skip
    """A create_lot frame as a client types it (the RuleSet's other fields default)."""
    end_ns = time.time_ns() + HOUR_NS
    return (
        f'{{"type":"create_lot","client_seq":{seq},"lot":"{lot}","mechanism":"{mechanism}",'
        f'"title":"t","start_price_fen":{start_fen},"increment_fen":{step_fen},'
        f'"start_ns":{start_ns},"end_ns":{end_ns},"rules":{rules}}}'
    )


def publish_lot(seq: int, lot: str) -> str:
    return f'{{"type":"publish_lot","client_seq":{seq},"lot":"{lot}"}}'


def test_dutch_tick_of_one_nanosecond_does_not_stop_the_server(tmp_path: Path) -> None:
    """Found by this fuzz (``rules.tick_ns`` at its bound 1): a Dutch lot whose
    clock ticks every nanosecond.  The engine fired one deadline per tick, so a
    command first caught up ~10^6 ticks per millisecond of wall time and the
    server answered nothing more -- not even a ping -- at 100 % CPU, its memory
    growing by the events (2.6 GB within 10 s).  The engine now refuses a tick
    under a second when the lot is created (invalid_terms), and the server goes
    on serving."""
    config = write_config(tmp_path / "fuzz.toml")
    server = Server(config, tmp_path / "data", tmp_path / "serve.log", memory_cap=3 << 29)
    try:
        link = Link(server.ws_url, Identity(STAFF, token="dev-staff-token", name="staff-01"))
        rules = '{"name":"dutch","tick_ns":1}'
        create = create_lot(1, "DUTCH-1NS", "dutch", 10**12, 1, time.time_ns() - NS, rules)
        refused = request(link, create, 30)
        assert isinstance(refused, p.Error) and refused.name == "invalid_terms", refused
        other = request(link, create_lot(2, "ORDINARY", "english", 10_000, 100, time.time_ns()), 30)
        assert isinstance(other, p.Ack) and pong_within(link, 30), other
    finally:
        server.kill()


def test_dutch_clock_past_64_bits_does_not_wedge_the_engine(tmp_path: Path) -> None:
    """Found by this fuzz (a Dutch lot's terms at their bounds): a Dutch lot ends
    at start + (ticks + 1) * tick_ns, ticks = (start - floor) / step, computed
    when it opens; past 2**64 - 1 the LotOpened event cannot be encoded
    (OverflowError in journal.append, answered internal_error).  Opening later
    than its publish, the opening is due before *every* later command, on any
    lot: each is refused internal_error and the engine rebuilt -- the platform
    takes no command at all until a restart suspends the lot (SuspendOverdue).

    The engine now bounds the clock at creation (a6ebfb8: ten years), which
    refuses the first lot below; but ``change_increment`` before the opening is
    not bounded, and realistic terms still get there: a 1-billion-yuan lot
    stepping 1,000 yuan a minute (1.9 years, accepted), its step changed to 1
    yuan before it opens (1,900 years, past 2**64 ns)."""
    config = write_config(tmp_path / "fuzz.toml")
    server = Server(config, tmp_path / "data", tmp_path / "serve.log")
    problems: list[str] = []
    minute = '{"name":"dutch","tick_ns":60000000000}'

    def answered(reply: p.Ack | p.Error | None) -> bool:
        """An ack or a typed refusal the engine ledgered (not internal_error)."""
        return isinstance(reply, p.Ack) or (isinstance(reply, p.Error) and reply.code < 1000)

    try:
        link = Link(server.ws_url, Identity(STAFF, token="dev-staff-token", name="staff-01"))
        now = time.time_ns()
        # opening at once, a clock of 10^9 one-minute ticks
        frames = [
            create_lot(1, "DUTCH-NOW", "dutch", 10**11, 100, now - NS, minute),
            publish_lot(2, "DUTCH-NOW"),
        ]
        # opening in two seconds, its step cut from 1,000 yuan to 1 yuan before it opens
        frames += [
            create_lot(3, "DUTCH-LATER", "dutch", 10**11, 100_000, now + 2 * NS, minute),
            publish_lot(4, "DUTCH-LATER"),
            '{"type":"change_increment","client_seq":5,"lot":"DUTCH-LATER","increment_fen":100}',
        ]
        for text in frames:
            reply = request(link, text, 30)
            if not answered(reply):
                problems.append(f"{text}\n  -> {reply!r}")
        # a time gap in the real server: the wall clock passes DUTCH-LATER's start (what
        # follows asserts the server still acks, nothing timed)
        time.sleep(max(0.0, (now + 3 * NS - time.time_ns()) / NS))
        later = [create_lot(6, "ORDINARY", "english", 10_000, 100, now), publish_lot(7, "ORDINARY")]
        for text in later:
            reply = request(link, text, 30)
            if not isinstance(reply, p.Ack):
                problems.append(f"after DUTCH-LATER's start, an unrelated {text}\n  -> {reply!r}")
        assert pong_within(link, 30)
    finally:
        server.kill()
    assert not problems, (
        "\n".join(problems)
        + "\nframes sent:\n"
        + "\n".join(frames)
        + "\nserver log:\n"
        + server.log_tail(2500)
    )
