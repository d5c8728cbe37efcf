"""Faults of a split server (``pubex serve --edges 2``) under a bidding load.

Real processes, real LMDB, real sockets: the test starts ``pubex serve`` (a
supervisor, one sequencer child, two edge children sharing the public ports
through ``SO_REUSEPORT``), creates English lots with funded bidders over the
WebSocket, and runs a load in this process: for each lot one driver that
takes turns among the lot's bidders (never the leader), each bid ascending.
A bidder keeps its bid pending until it gets an ack or a definite refusal:
on ``outcome_unknown`` (1019), ``sequencer_unavailable`` (1020), a broken
connection, a refused or hanging handshake (503, connection refused) it
resends the very same signed frame -- the same ``client_seq`` -- on the
connection it has or a new one to the same URL.  One driver per lot means no
bid ever races another on its lot: every bid must end acknowledged, and the
ledger must hold exactly the acknowledged bids.

Faults (seeded RNG for targets and timing):

* ``test_edge_sigkills_under_load``: SIGKILL a random edge, again and again;
* ``test_sequencer_sigkills_under_load``: SIGKILL the sequencer, again and
  again (the edges answer 1019 / 1020 / 503 meanwhile and relink);
* ``test_stuck_edge_is_dropped_and_relinks``: SIGSTOP one edge; the bidders
  on the other keep getting acks; past ``STUCK_S`` the sequencer drops the
  stuck edge's link; SIGCONT: it relinks and serves;
* ``test_drained_edge``: SIGTERM one edge: its clients get 1001, reconnect,
  and nothing is refused; the supervisor restarts it;
* ``test_rolling_restart``: SIGTERM each edge in turn, each time waiting for
  its replacement (the sequencer's ``pubex_link_up`` back to 2).

After each: the server is stopped and its ledger audited offline --
acknowledged bids lost (each acked ``(origin, client_seq)`` must be ledgered
once, as a ``BidAccepted`` at the acked seq with the acked entry hash),
bids doubled (no ``(origin, client_seq)`` accepted twice), every accepted bid
acknowledged to its bidder, each lot's price and bid count those of its acks,
the hash chain, and the state recovered from snapshot + tail against a full
replay from seq 1 (snapshots ignored) -- plus ``verify_ledger``'s snapshot and
checkpoint checks.  The edges' public view (``/api/lots/{lot}``) must agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from engine.messages import BidAccepted, PlaceBid
from gateway.clients.tclient import Client
from gateway.link.server import STUCK_S
from gateway.wire import protocol as p
from gateway.wire import ws
from gateway.wire.protocol import GatewayError as G
from ledger.audit import verify_ledger
from ledger.replay import full_replay, recover
from ledger.store import LedgerStore
from ledger.verify import verify_chain
from tests import tokens
from tests.gateway.conftest import Bidder, lot_with_bidders
from tests.processes import process_tree, signal_tree

REPO = Path(__file__).resolve().parents[2]
SEED = 20260214
EDGES = ("edge-1", "edge-2")
START_FEN, INC_FEN = 10_000, 100
CONNECT_TIMEOUT_S = 5.0  # a handshake to a stopped edge hangs: give up, try again
REQUEST_TIMEOUT_S = 8.0  # no answer on a live-looking connection: drop it, resend elsewhere
SETTLE_TIMEOUT_S = 60.0  # one bid pending longer than this fails the test

pytestmark = pytest.mark.timeout(170)

T = TypeVar("T")


# ------------------------------------------------------------------ polling


async def until(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    timeout_s: float,
    what: str,
    *,
    poll_s: float = 0.05,
    why: Callable[[], str] | None = None,
) -> T:
    """``check()``'s first truthy value (awaited when a coroutine), polled on
    trio's clock -- the load goes on meanwhile; AssertionError naming ``what``."""
    deadline = trio.current_time() + timeout_s
    while True:
        got = check()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return got  # type: ignore[return-value]
        if trio.current_time() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what}\n{why() if why else ''}"
            )
        await trio.sleep(poll_s)


# ------------------------------------------------------- /proc inspection


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [w.decode(errors="replace") for w in raw.split(b"\0") if w]


def _alive(pid: int) -> bool:
    """Running (a zombie, or a process gone, is not): a SIGKILLed process
    goes on looking alive until the kernel has run its exit."""
    return bool(_cmdline(pid))


async def killed(pid: int) -> None:
    """SIGKILL ``pid`` and wait until it is dead: the next fault must not hit
    a process still dying from this one."""
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not _alive(pid), 10, f"pid {pid} dead")


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out.add(target[8:-1])
    return out


def _tcp_rows() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        rows.append((int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3], f[9]))
    return rows


# ------------------------------------------------------------------ server


class Server:
    """A ``pubex serve --edges 2`` of this worktree, as a process tree."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.log = tmp / "serve.err"
        self.config = tokens.platform_config(
            tmp / "pubex.toml",
            "\n".join(
                [
                    "[ledger]",
                    "snapshot_every_entries = 250",  # kills land between snapshots
                    "checkpoint_every_entries = 100",
                    "[limits]",
                    "bids_per_s = 100000",
                    "bid_burst = 100000",
                    "refusals_per_minute = 100000",  # answered retries count against it
                ]
            ),
        )
        self.proc: trio.Process | None = None
        self.ws_url = self.http_url = ""
        self.ws_port = 0
        self.out: list[str] = []

    def why(self) -> str:
        try:
            return "serve's stderr (tail):\n" + self.log.read_text()[-4000:]
        except OSError:
            return ""

    async def start(self, nursery: trio.Nursery) -> None:
        argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--data", str(self.data)]
        argv += ["--config", str(self.config), "--edges", "2", "--ws-port", "0", "--http-port", "0"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as err:
            self.proc = await trio.lowlevel.open_process(
                argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err
            )
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        buf = b""
        with trio.fail_after(60):
            while b"\n" not in buf:
                chunk = await stdout.receive_some(4096)
                assert chunk, f"serve exited before listening\n{self.why()}"
                buf += chunk
        line, rest = buf.decode().split("\n", 1)
        assert line.startswith("listening ws="), line
        self.ws_url = line.split("ws=", 1)[1].split()[0]
        self.http_url = line.split("http=", 1)[1].split()[0]
        self.ws_port = urlsplit(self.ws_url).port or 0
        self.out.append(rest)

        async def pump() -> None:  # serve forwards its children's stdout: keep reading
            async for chunk in stdout:
                self.out.append(chunk.decode(errors="replace"))

        nursery.start_soon(pump)
        # The children run this worktree's code: serve passed on our environment and cwd.
        kids = self.children()
        assert set(kids) == {"sequencer", *EDGES}, kids
        for pid in kids.values():
            assert os.readlink(f"/proc/{pid}/cwd") == str(REPO)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"PYTHONPATH={REPO}".encode() in environ

    def children(self) -> dict[str, int]:
        """``sequencer`` / ``edge-N`` -> pid, of the children alive now."""
        assert self.proc is not None
        out = {}
        for pid in process_tree(self.proc.pid)[1:]:
            argv = _cmdline(pid)
            if "gateway.entry.cli" not in argv:
                continue
            role = argv[argv.index("gateway.entry.cli") + 1]
            if role == "sequencer":
                out["sequencer"] = pid
            elif role == "edge":
                out[argv[argv.index("--name") + 1]] = pid
        return out

    def listening_edges(self) -> dict[str, int]:
        """The edges whose WebSocket listener is open (linked, serving)."""
        inodes = {ino for lp, _rp, st, ino in _tcp_rows() if lp == self.ws_port and st == "0A"}
        return {
            name: pid
            for name, pid in self.children().items()
            if name != "sequencer" and _socket_inodes(pid) & inodes
        }

    def owner(self, client: Client) -> int:
        """The pid of the edge that holds this client's connection (0: none found)."""
        return self._owner(self.ws_port, client.sock._raw._stream.socket.getsockname()[1])

    def _owner(self, server_port: int, client_port: int) -> int:
        rows = _tcp_rows()
        inodes = {ino for lp, rp, _st, ino in rows if lp == server_port and rp == client_port}
        for name, pid in self.children().items():
            if name != "sequencer" and _socket_inodes(pid) & inodes:
                return pid
        return 0

    async def get(self, path: str, timeout_s: float = 3.0) -> tuple[int, bytes, int]:
        """GET from whichever edge the kernel picks: (status, body, that edge's
        pid -- looked up while the kept-alive connection is still open)."""
        u = urlsplit(self.http_url)
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(u.hostname or "", u.port or 0)
            async with stream:
                await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise trio.BrokenResourceError("closed before the headers")
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise trio.BrokenResourceError("closed inside the body")
                    body += chunk
                edge = self._owner(u.port or 0, stream.socket.getsockname()[1])
        return int(head.split()[1]), body, edge

    async def sequencer_metric(self, name: str, **labels: str) -> float | None:
        """A series of the sequencer's, through an edge's ``/metrics`` (None:
        not now -- that edge is stuck or unlinked)."""
        try:
            status, body, _edge = await self.get("/metrics")
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError, IndexError):
            return None
        if status != 200:
            return None
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                if s.name != name or s.labels.get("process_role") != "sequencer":
                    continue
                if all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    async def links_up(self) -> float | None:
        return await self.sequencer_metric("pubex_link_up")

    def exits(self) -> Counter[str]:
        """The children that exited while serving, as ``name code`` (serve
        says so before restarting one) -- each must be a fault we caused."""
        text = self.log.read_text()
        assert "Traceback" not in text, self.why()
        return Counter(
            f"{line.split()[2]} {line.split('(')[1].split(')')[0]}"
            for line in text.splitlines()
            if line.startswith("pubex serve: ") and " exited (" in line
        )

    async def stop(self) -> None:
        """SIGTERM (edges drain, the sequencer commits), bounded; SIGKILL past it."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(40):
            await proc.wait()
        if proc.returncode is None:
            signal_tree(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise AssertionError(f"serve did not stop on SIGTERM\n{self.why()}")
        assert proc.returncode == 0, f"serve exited {proc.returncode}\n{self.why()}"

    def kill_all(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            signal_tree(self.proc.pid, signal.SIGKILL)


# -------------------------------------------------------------------- load


@dataclass
class Acked:
    lot: str
    amount: int
    seq: int
    entry_hash: str
    retried: bool
    edge: int  # pid of the edge that acked
    at: float  # trio time


@dataclass
class Stats:
    events: Counter[str] = field(default_factory=Counter)
    closes: list[tuple[int, int | None, float]] = field(default_factory=list)  # pid, code, at


class Conn:
    """One bidder's connection, made again whenever it breaks."""

    def __init__(self, load: Load, bidder: Bidder) -> None:
        self.load = load
        self.bidder = bidder
        self.origin = f"bidder:{bidder.bidder_id}"
        self.client: Client | None = None
        self.edge = 0
        self.want = 0  # an edge pid this bidder's connections must land on (0: any)

    async def connect(self) -> Client:
        """Connect, retrying until it works -- on edge ``want``, when set (the
        kernel picks: reconnect until it picks that one)."""
        stats = self.load.stats.events
        backoff = 0.05
        tries = 80
        while True:
            ready, box = trio.Event(), []
            self.load.conn_nursery.start_soon(self._host, ready, box)
            await ready.wait()
            got = box[0]
            if isinstance(got, Client):
                edge = self.load.server.owner(got)
                if self.want and edge != self.want:
                    tries -= 1
                    assert tries, f"80 connections, none on edge {self.want}"
                    await self._abandon(got)
                    continue
                self.client, self.edge = got, edge
                got.edge = edge  # type: ignore[attr-defined]
                return got
            stats[got] += 1
            await trio.sleep(backoff)
            backoff = min(2 * backoff, 0.5)

    async def _host(self, ready: trio.Event, box: list[Any]) -> None:
        """One connection's tasks, in a nursery of their own: trio-websocket
        raises a refused handshake (503) in its reader task, into the nursery
        it was given.  ``box`` gets the client, or why there is none; once the
        connection ends, how it ended (its close code) unless we ended it."""
        try:
            async with trio.open_nursery() as tasks:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    client = await Client.connect(
                        tasks, self.load.server.ws_url, key=self.bidder.key,
                        key_id=self.bidder.key_id,
                    )  # fmt: skip
                box.append(client)
                ready.set()
                while not client.closed:
                    await client.changed.wait()
                if not getattr(client, "abandoned", False):
                    closed = client.sock._raw.closed
                    code = closed.code if closed else None
                    self.load.stats.closes.append((client.edge, code, trio.current_time()))
        except Exception as e:
            why = _connect_failure(e)  # raises what no fault explains
            if not box:
                box.append(why)
        finally:
            ready.set()

    async def _abandon(self, client: Client) -> None:
        client.abandoned = True  # type: ignore[attr-defined]
        await client.sock.abort()

    async def drop(self) -> None:
        if self.client is not None:
            await self._abandon(self.client)
        self.client = None

    async def settle(self, client_seq: int, text: str) -> p.Ack | p.Error:
        """Send until an ack or a definite refusal comes back; the same frame each time."""
        stats = self.load.stats.events
        with trio.fail_after(SETTLE_TIMEOUT_S):
            while True:
                client = self.client or await self.connect()
                client.replies.pop(client_seq, None)
                try:
                    reply = await client.request(client_seq, text, timeout=REQUEST_TIMEOUT_S)
                except trio.TooSlowError:
                    stats["request_timeout"] += 1
                    await self.drop()
                    continue
                except (ws.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    stats["connection_lost"] += 1
                    self.client = None
                    continue
                if isinstance(reply, p.Ack):
                    return reply
                if reply.code == G.outcome_unknown:
                    stats["outcome_unknown"] += 1
                elif reply.code == G.sequencer_unavailable:
                    stats["sequencer_unavailable"] += 1
                    await trio.sleep(0.05)
                elif reply.code == G.overloaded:
                    stats["overloaded"] += 1
                    await trio.sleep(0.05)
                else:
                    return reply


def _connect_failure(exc: BaseException) -> str:
    """What stopped a connection attempt, as a counter name; raises what no
    fault explains."""
    leaves = [exc]
    while any(isinstance(e, BaseExceptionGroup) for e in leaves):
        leaves = [
            x for e in leaves for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else [e])
        ]
    first = leaves[0]
    if isinstance(first, trio_websocket.ConnectionRejected):
        return f"handshake_{first.status_code}"
    if isinstance(first, trio.TooSlowError):
        return "handshake_timeout"
    expected = (
        OSError,
        trio.BrokenResourceError,
        trio_websocket.HandshakeError,
        ws.ConnectionClosed,
    )
    if isinstance(first, expected):
        return "connect_failed"
    raise exc


class Load:
    """Lots with bidders; per lot one driver taking turns among its bidders."""

    def __init__(self, server: Server, lots: int, bidders: int, seed: int) -> None:
        self.server = server
        self.lot_ids = [f"L{i}" for i in range(lots)]
        self.per_lot = bidders
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.acked: dict[tuple[str, int], Acked] = {}
        self.conns: dict[str, list[Conn]] = {}
        self.stopping = False
        self.conn_nursery: trio.Nursery = None  # type: ignore[assignment]
        self.drivers_done = trio.Event()

    @property
    def acks(self) -> int:
        return len(self.acked)

    def acks_by(self, edges: set[int], since: float) -> list[float]:
        return sorted(a.at for a in self.acked.values() if a.edge in edges and a.at >= since)

    async def setup(self, nursery: trio.Nursery) -> None:
        self.conn_nursery = nursery
        with trio.fail_after(60):
            staff = await Client.connect(nursery, self.server.ws_url, token=tokens.STAFF)
            for lot in self.lot_ids:
                bidders = await lot_with_bidders(staff, lot, self.per_lot)
                self.conns[lot] = [Conn(self, b) for b in bidders]
            await staff.close()

    async def connect_all(self, pin: dict[str, int] | None = None) -> None:
        """Every bidder connected; ``pin``: lot -> the edge pid its bidders must be on."""
        with trio.fail_after(60):
            for lot, conns in self.conns.items():
                for conn in conns:
                    conn.want = (pin or {}).get(lot, 0)
                    await conn.connect()
                    conn.want = 0  # pinned at first; later reconnects land anywhere

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as drivers:
            for i, lot in enumerate(self.lot_ids):
                drivers.start_soon(self._drive, lot, random.Random(self.rng.random() + i))
            task_status.started()
        self.drivers_done.set()

    async def _drive(self, lot: str, rng: random.Random) -> None:
        amount, leader = START_FEN, None
        conns = self.conns[lot]
        while not self.stopping:
            conn = rng.choice([c for c in conns if c is not leader])
            cs = conn.bidder.next_seq()
            text = p.bid_frame(conn.bidder.key, conn.bidder.key_id, lot, amount, cs)
            reply = await conn.settle(cs, text)
            if isinstance(reply, p.Ack):
                assert reply.client_seq == cs
                key = (conn.origin, cs)
                assert key not in self.acked
                self.acked[key] = Acked(
                    lot, amount, reply.seq, reply.entry_hash, reply.retried, conn.edge,
                    trio.current_time(),
                )  # fmt: skip
                leader = conn
                amount += INC_FEN
            else:
                # None is expected: no bid races another on its lot, so a
                # refusal is a retry not recognised as one (a bid applied
                # twice would be refused as below the increment) or worse.
                raise AssertionError(
                    f"{conn.origin} client_seq {cs} ({amount} fen on {lot}) refused: "
                    f"{reply.code} {reply.name} {reply.message!r}; {self.stats.events}"
                )

    async def stop(self) -> None:
        """Let each driver settle its last bid, then close every connection."""
        self.stopping = True
        with trio.fail_after(SETTLE_TIMEOUT_S + 10):
            await self.drivers_done.wait()

    async def progress(self, more: int, timeout_s: float, what: str) -> None:
        """At least ``more`` new acks (the server is serving again)."""
        target = self.acks + more
        await until(
            lambda: self.acks >= target,
            timeout_s,
            f"{more} more acks ({what}); {self.stats.events}",
            why=self.server.why,
        )


# -------------------------------------------------------------------- audit


def audit(server: Server, load: Load) -> dict[str, int]:
    """The stopped server's ledger against what the bidders were told."""
    acked = load.acked
    accepted: dict[tuple[str, int], list[int]] = defaultdict(list)
    amounts: dict[tuple[str, int], int] = {}

    def on_entry(body, cmd, events) -> None:  # type: ignore[no-untyped-def]
        if type(cmd) is PlaceBid and any(type(ev) is BidAccepted for ev in events):
            accepted[(cmd.origin, cmd.client_seq)].append(body.seq)
            amounts[(cmd.origin, cmd.client_seq)] = cmd.amount_fen

    with LedgerStore.open(server.data / "ledger", readonly=True) as store:
        chain = verify_chain(store)
        assert chain.ok, chain
        full = full_replay(store, on_entry=on_entry)  # ReplayDivergence: events differ
        recovered = recover(store)  # latest snapshot + tail, as a restart does
        assert recovered.applied == full.applied == chain.last_seq
        assert recovered.state_hash() == full.state_hash(), "snapshot + tail != full replay"
        lost = []
        for key, a in acked.items():
            entry = store.get(a.seq)
            if (
                accepted.get(key) != [a.seq]
                or amounts[key] != a.amount
                or entry is None
                or entry[1].hex() != a.entry_hash
            ):
                lost.append((key, a.seq, accepted.get(key)))
        lots = {lot: full.state.lots[lot] for lot in load.lot_ids}
    doubled = [(k, seqs) for k, seqs in accepted.items() if len(seqs) > 1]
    unacked = [k for k in accepted if k not in acked]
    assert not lost, f"acknowledged bids lost: {lost[:10]} ({len(lost)})"
    assert not doubled, f"bids doubled: {doubled[:10]} ({len(doubled)})"
    assert not unacked, f"bids ledgered as accepted, never acknowledged: {unacked[:10]}"
    for lot, state in lots.items():
        mine = [a for a in acked.values() if a.lot == lot]
        assert state.bid_count == len(mine), (lot, state.bid_count, len(mine))
        assert state.price_fen == max(a.amount for a in mine), lot
    report = verify_ledger(server.data)  # chain + replay + every snapshot + checkpoints
    assert report.ok, report
    assert report.state_hash == full.state_hash()
    return {
        "entries": chain.last_seq,
        "snapshots": report.snapshots_checked,
        "checkpoints": report.checkpoints_checked,
        "lost": len(lost),
        "doubled": len(doubled),
    }


async def check_views(server: Server, load: Load) -> None:
    """Each edge's public view of every lot is the acks' (which edge answers
    is the kernel's choice: ask until both have)."""
    for lot in load.lot_ids:
        mine = [a for a in load.acked.values() if a.lot == lot]
        want = (max(a.amount for a in mine), len(mine))
        right: set[int] = set()

        async def both(lot: str = lot, want: tuple[int, int] = want, right: set = right) -> bool:
            status, body, edge = await server.get(f"/api/lots/{lot}")
            view = json.loads(body)
            if status == 200 and (view["price_fen"], view["bid_count"]) == want and edge:
                right.add(edge)
            return len(right) == 2

        await until(both, 20, f"both edges' view of {lot} at {want}", why=server.why)


def summary(name: str, load: Load, figures: dict[str, int], **extra: object) -> str:
    ev = load.stats.events
    retried = sum(1 for a in load.acked.values() if a.retried)
    parts = [f"{k} {v}" for k, v in extra.items()]
    parts += [
        f"acked {load.acks} ({retried} as retries)",
        f"lost {figures['lost']}",
        f"doubled {figures['doubled']}",
        f"ledger entries {figures['entries']}",
        f"snapshots checked {figures['snapshots']}",
        f"client saw {dict(sorted(ev.items()))}",
    ]
    return f"\n{name}: " + ", ".join(parts)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, lots: int, bidders: int, seed: int):  # type: ignore[no-untyped-def]
    """A started server with its lots and bidders (not connected yet); the
    test connects them and starts the load (``nursery.start(load.run)``)."""
    server = Server(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            await server.start(nursery)
            load = Load(server, lots, bidders, seed)
            await load.setup(nursery)
            yield server, load, nursery
            nursery.cancel_scope.cancel()
    finally:
        server.kill_all()


async def finish(server: Server, load: Load) -> dict[str, int]:
    """Every bid settled, the edges' views checked, the server stopped: the audit."""
    await load.stop()
    await check_views(server, load)
    await server.stop()
    return audit(server, load)


# -------------------------------------------------------------------- tests


async def test_edge_sigkills_under_load(tmp_path: Path) -> None:
    kills = 22
    rng = random.Random(SEED)
    async with running(tmp_path, lots=4, bidders=3, seed=SEED) as (server, load, nursery):
        await load.connect_all()
        await nursery.start(load.run)
        kills_done: Counter[str] = Counter()
        for _ in range(kills):
            ready = await until(
                lambda: len(server.listening_edges()) == 2 and server.listening_edges(),
                30,
                "both edges listening",
                why=server.why,
            )
            await load.progress(5, 30, "before an edge kill")
            await trio.sleep(rng.uniform(0.05, 0.6))
            name = rng.choice(EDGES)
            await killed(ready[name])
            kills_done[name] += 1
        await until(lambda: len(server.listening_edges()) == 2, 30, "edges back", why=server.why)
        await load.progress(20, 30, "after the last kill")
        figures = await finish(server, load)
    ev = load.stats.events
    assert sum(kills_done.values()) == kills and min(kills_done.values()) >= 5, kills_done
    assert server.exits() == Counter({f"{n} -9": k for n, k in kills_done.items()})
    assert ev["connection_lost"] + ev["connect_failed"] + ev["request_timeout"] > 0
    assert load.acks > 500, "the load barely ran"
    print(summary("edge SIGKILLs", load, figures, kills=dict(kills_done)))


async def test_sequencer_sigkills_under_load(tmp_path: Path) -> None:
    kills = 22
    rng = random.Random(SEED + 1)
    async with running(tmp_path, lots=4, bidders=3, seed=SEED + 1) as (server, load, nursery):
        await load.connect_all()
        await nursery.start(load.run)
        pids = set()
        for _ in range(kills):
            # more acks than bids in flight (one per lot): the new sequencer's
            await load.progress(len(load.lot_ids) + 1, 40, "the sequencer back")
            await trio.sleep(rng.uniform(0.02, 0.5))
            pid = server.children()["sequencer"]
            assert pid not in pids  # the one serving now is a new one
            pids.add(pid)
            await killed(pid)
        await load.progress(20, 40, "after the last kill")
        await until(
            lambda: len(server.listening_edges()) == 2, 30, "both edges serving", why=server.why
        )
        await until(lambda: _eq(server.links_up(), 2), 30, "both edges relinked", why=server.why)
        figures = await finish(server, load)
    ev = load.stats.events
    assert len(pids) == kills
    assert server.exits() == Counter({"sequencer -9": kills})  # no edge went down with it
    # the kills hit commands in flight: the edges answered what they had sent 1019
    assert ev["outcome_unknown"] > 0, ev
    assert load.acks > 500, "the load barely ran"
    print(summary("sequencer SIGKILLs", load, figures, kills=kills))


async def _eq(value: Awaitable[float | None], want: float) -> bool:
    return await value == want


async def test_stuck_edge_is_dropped_and_relinks(tmp_path: Path) -> None:
    async with running(tmp_path, lots=4, bidders=2, seed=SEED + 2) as (server, load, nursery):
        kids = server.children()
        stuck, live = kids["edge-1"], kids["edge-2"]
        # lots L0, L1 bid through the live edge; L2, L3 through the one to be stopped
        await load.connect_all({"L0": live, "L1": live, "L2": stuck, "L3": stuck})
        await nursery.start(load.run)
        await load.progress(50, 30, "warm-up")
        joined = await until(
            lambda: server.sequencer_metric("pubex_link_events_total", event="joined"),
            15,
            "the sequencer's metrics",
        )
        assert joined == 2  # each edge joined once
        t0 = trio.current_time()
        os.kill(stuck, signal.SIGSTOP)
        try:
            # the sequencer never waits for an edge: past STUCK_S it drops the link
            await until(
                lambda: _eq(server.sequencer_metric("pubex_link_events_total", event="dropped"), 1),
                STUCK_S + 40,
                "the stuck edge's link dropped",
                poll_s=0.2,
                why=server.why,
            )
            t_drop = trio.current_time()
            await until(lambda: _eq(server.links_up(), 1), 15, "one edge linked")
            # meanwhile the bidders on the live edge were acked all along
            live_acks = load.acks_by({live}, t0)
            gaps = [b - a for a, b in zip([t0, *live_acks], [*live_acks, t_drop], strict=True)]
            assert len(live_acks) >= 50, (len(live_acks), t_drop - t0)
            assert max(gaps) < STUCK_S / 2, f"the acks paused {max(gaps):.2f} s"
            assert t_drop - t0 > STUCK_S
        finally:
            with contextlib.suppress(ProcessLookupError):  # gone: the assertion above says why
                os.kill(stuck, signal.SIGCONT)
        # the edge finds its link gone, relinks, and serves again
        await until(lambda: _eq(server.links_up(), 2), 30, "the edge relinked", why=server.why)
        joined = await server.sequencer_metric("pubex_link_events_total", event="joined")
        assert joined == 3, joined
        assert server.children()["edge-1"] == stuck  # the same process, not a restart
        t1 = trio.current_time()
        for conn in load.conns["L2"]:  # its bidders reconnect, to the un-stuck edge
            conn.want = stuck
            await conn.drop()
        await until(lambda: load.acks_by({stuck}, t1), 30, "acks from the un-stuck edge")
        await load.progress(50, 30, "after SIGCONT")
        figures = await finish(server, load)
    assert server.exits() == Counter()  # the stuck edge relinked: nothing was restarted
    assert f"link to edge 'edge-1' dropped: a write stuck for {STUCK_S} s" in server.log.read_text()
    print(
        summary(
            "stuck edge",
            load,
            figures,
            dropped_after_s=round(t_drop - t0, 1),
            live_acks_while_stuck=len(live_acks),
            max_ack_gap_s=round(max(gaps), 3),
        )
    )


async def _drain(server: Server, name: str) -> int:
    """SIGTERM edge ``name``; wait for its replacement to serve. Its old pid."""
    old = server.children()[name]
    os.kill(old, signal.SIGTERM)
    await until(
        lambda: server.listening_edges().get(name, old) != old,
        30,
        f"{name} restarted",
        why=server.why,
    )
    await until(lambda: _eq(server.links_up(), 2), 30, "both edges linked", why=server.why)
    return old


async def test_drained_edge(tmp_path: Path) -> None:
    async with running(tmp_path, lots=4, bidders=3, seed=SEED + 3) as (server, load, nursery):
        kids = server.children()
        victim = kids["edge-1"]
        await load.connect_all({"L0": victim, "L1": victim})  # L2, L3: wherever
        on_victim = sum(c.edge == victim for cs in load.conns.values() for c in cs)
        await nursery.start(load.run)
        await load.progress(50, 30, "warm-up")
        t0 = trio.current_time()
        await _drain(server, "edge-1")
        await load.progress(50, 30, "after the drain")
        figures = await finish(server, load)
    closes = [(pid, code) for pid, code, at in load.stats.closes if at >= t0]
    from_victim = [code for pid, code in closes if pid == victim]
    # every connection of the drained edge was closed 1001, none just dropped
    assert len(from_victim) >= on_victim >= 6, (closes, on_victim)
    assert set(from_victim) == {1001}, closes
    assert server.exits() == Counter({"edge-1 0": 1})  # a clean exit, then restarted
    ev = load.stats.events
    # no error frame at all (a refusal fails the load itself), no answer that did not come
    unanswered = ("outcome_unknown", "sequencer_unavailable", "overloaded", "request_timeout")
    assert not any(ev[k] for k in unanswered), ev
    print(summary("drained edge", load, figures, closed_1001=len(from_victim)))


async def test_rolling_restart(tmp_path: Path) -> None:
    async with running(tmp_path, lots=4, bidders=3, seed=SEED + 4) as (server, load, nursery):
        await load.connect_all()
        await nursery.start(load.run)
        await load.progress(50, 30, "warm-up")
        drained = []
        for _round in range(2):
            for name in EDGES:
                drained.append(await _drain(server, name))
                await load.progress(20, 30, f"after restarting {name}")
        figures = await finish(server, load)
    assert len(set(drained)) == 4
    assert server.exits() == Counter({"edge-1 0": 2, "edge-2 0": 2})
    codes = Counter(code for pid, code, _at in load.stats.closes if pid in drained)
    assert set(codes) == {1001}, codes  # every drained edge's connections: closed 1001
    ev = load.stats.events
    # no error frame at all (a refusal fails the load itself), no answer that did not come
    unanswered = ("outcome_unknown", "sequencer_unavailable", "overloaded", "request_timeout")
    assert not any(ev[k] for k in unanswered), ev
    print(summary("rolling restart", load, figures, edges_restarted=len(drained)))
