"""The link between the sequencer and its edges (``gateway.link``), attacked.

Everything here is real: a sequencer (runtime, LMDB ledger, ``Front``,
``LinkServer`` on its Unix socket) and edges (``LinkCore`` + ``Gateway`` on
their own WebSocket and HTTP ports, so a test chooses which edge a client
reaches) composed in one trio process, the way ``pubex serve --edges K``
runs them in K + 1; raw link peers speak the wire format (length-prefixed
msgpack batches) byte for byte, and a child process of another uid knocks
on the socket.

* who may join: the link's own small authorisation matrix (``LINK_MATRIX``:
  peers x what the sequencer answers).  It lives here, not in
  ``tests/services/test_access_matrix.py``: that matrix is HTTP routes x
  client roles against a live ``pubex platform``, and the link has neither
  routes nor roles -- its callers are processes, told apart by uid, secret
  and link version;
* the link fuzzed, from both ends (``test_the_sequencer_survives_*``,
  ``test_an_edge_survives_*``);
* the per-client limits held across two edges -- but for the failed-token
  back-off of an edge's HTTP routes, which each edge still keeps alone
  (``test_failed_logins_on_one_edge_slow_that_address_everywhere``, a strict
  xfail until it is shared);
* what an edge is sent: the public side only.

The fuzz's seed and size: PUBEX_LINK_FUZZ_SEED (default fixed, printed) and
PUBEX_LINK_FUZZ_CASES (seeded mutations, default 2,000).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import socket
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from config.settings import Settings, load_settings
from engine.messages import (
    BidAccepted,
    CreateLot,
    LotCreated,
    PlaceBid,
    RegisterKey,
    RuntimeStarted,
    SetReserve,
    SuspendOverdue,
    Tick,
)
from engine.rules import RuleSet
from gateway.clients.tclient import Client
from gateway.edge.server import Listening
from gateway.entry.serve import open_sequencer, start_edge, start_sequencer
from gateway.link import client as link_client
from gateway.link.client import LinkCore, LinkRefused
from gateway.link.front import (
    BID_RATE,
    STAFF_RATE,
    Admission,
    Answer,
    Budget,
    Front,
    PublicEntry,
)
from gateway.link.messages import (
    EDGE_DECODER,
    ENCODER,
    LINK_VERSION,
    MAX_EDGE_BATCH_BYTES,
    MAX_SEQUENCER_BATCH_BYTES,
    SEQUENCER_DECODER,
    SOCKET_PATH_MAX,
    Admit,
    Admitted,
    Answered,
    AskMetrics,
    Beat,
    Entries,
    Goodbye,
    Join,
    MetricsText,
    Msg,
    Release,
    Report,
    Submit,
    Welcome,
    frame,
    link_dir,
    private_dir,
    read_or_create_secret,
    socket_path,
)
from gateway.link.server import JOIN_TIMEOUT_S, LinkError, LinkServer, read_batch
from gateway.public.events import PUBLIC_EVENTS
from gateway.public.views import Views
from gateway.sequencer.runtime import Runtime
from gateway.wire import protocol as p
from gateway.wire.access import gate_from_settings
from gateway.wire.metrics import Metrics
from gateway.wire.protocol import GatewayError as G
from ledger.record import Envelope, encode_envelope
from ledger.replay import full_replay
from tests.gateway.conftest import (
    STAFF_TOKEN,
    Bidder,
    connect_bidder,
    connect_staff,
    create_lot,
    fund,
    lot_with_bidders,
    next_staff_seq,
    register_bidder_key,
    signed_query,
    staff_ok,
    wait_for,
)
from tests.gateway.helpers import port_of, read_headers, upgrade_request
from tests.vclock import CommitAwareClock

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
FAST = {"limits.bids_per_s": 100_000, "limits.bid_burst": 100_000}


# ------------------------------------------------------------------ harness


@dataclass
class Edge:
    name: str
    core: LinkCore
    listening: Listening

    @property
    def ws_url(self) -> str:
        return self.listening.ws_url

    @property
    def http_url(self) -> str:
        return self.listening.http_url

    @property
    def gateway(self) -> Any:
        return self.listening.gateway

    @property
    def port(self) -> int:
        return port_of(self.ws_url)


@dataclass
class Split:
    """A sequencer and its edges, as ``pubex sequencer`` + ``pubex edge`` run them."""

    data_dir: Path
    settings: Settings
    rt: Runtime
    front: Front
    link: LinkServer
    secret: str
    path: Path
    edges: list[Edge] = field(default_factory=list)

    async def add_edge(self, nursery: trio.Nursery, name: str) -> Edge:
        core = LinkCore(self.data_dir, name)
        metrics = Metrics()
        gate = gate_from_settings(self.settings.auth, "gateway", metrics.registry)
        core.share_gate(gate)  # as run_edge does
        await nursery.start(core.run)
        listening = await start_edge(
            nursery,
            self.settings,
            core,
            metrics,
            gate,
            ws_port=0,
            http_port=0,
            shutdown=trio.Event(),
            shared_ports=False,  # its own ports: the test picks the edge
        )
        edge = Edge(name, core, listening)
        self.edges.append(edge)
        return edge

    def events(self, event: str) -> float:
        """``pubex_link_events_total{event=...}`` as the sequencer exposes it."""
        want = f'pubex_link_events_total{{event="{event}"}} '
        for line in self.link.metrics.render().decode().splitlines():
            if line.startswith(want):
                return float(line[len(want) :])
        return 0.0


async def start_split(
    nursery: trio.Nursery,
    data_dir: Path,
    overrides: dict[str, Any] | None = None,
    *,
    edges: int = 2,
    on_open: Callable[[Runtime], object] = lambda rt: None,
) -> Split:
    # No back-off after failed tokens unless a test asks (as tests/gateway/conftest.py).
    base = {"net.ws_port": 0, "net.http_port": 0, "auth.auth_backoff_base_ms": 0}
    settings = load_settings(overrides={**base, **(overrides or {})})
    rt = open_sequencer(
        settings, data_dir, sandbox=False, accelerate=1, allow_dev_tokens=True, verify_all=False
    )
    on_open(rt)
    metrics = Metrics()
    gate = gate_from_settings(settings.auth, "gateway", metrics.registry)
    front = await start_sequencer(nursery, settings, rt, gate)
    secret = read_or_create_secret(data_dir)
    link = LinkServer(front, data_dir, secret, metrics=metrics)
    path = await nursery.start(link.serve)
    split = Split(data_dir, settings, rt, front, link, secret, path)
    for i in range(edges):
        await split.add_edge(nursery, f"edge-{i + 1}")
    return split


@pytest.fixture
async def split_factory(tmp_path: Path):
    """``await split_factory(overrides, edges=K)`` -> a running Split (fresh data dir)."""
    made: list[Split] = []
    async with trio.open_nursery() as nursery:

        async def make(overrides: dict[str, Any] | None = None, **kw: Any) -> Split:
            data_dir = kw.pop("data_dir", None) or tmp_path / f"data{len(made)}"
            with trio.fail_after(20):
                split = await start_split(nursery, data_dir, overrides, **kw)
            made.append(split)
            return split

        yield make
        nursery.cancel_scope.cancel()
    for split in made:
        split.rt.store.close()
        if not split.path.is_relative_to(split.data_dir):  # the short fallback, in /tmp
            shutil.rmtree(split.path.parent, ignore_errors=True)


class Peer:
    """A raw link peer: what an edge (or an impostor) writes, byte for byte."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.seen: list[Any] = []  # every message received, in order
        self.raw = bytearray()  # and every byte

    @classmethod
    async def open(cls, path: Path) -> Peer:
        return cls(await trio.open_unix_socket(str(path)))

    async def send(self, *msgs: Msg) -> None:
        await self.stream.send_all(frame(list(msgs)))

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are (the sequencer may have closed the link meanwhile)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        chunk = await self.stream.receive_some(max_bytes)
        self.raw += chunk
        return chunk

    async def receive(self, timeout: float = 10) -> list[Any] | None:
        """The next batch (decoded), or None once the sequencer closed the link."""
        with trio.fail_after(timeout):
            try:
                raw = await read_batch(self, self.buf, MAX_SEQUENCER_BATCH_BYTES)  # type: ignore[arg-type]
            except (trio.BrokenResourceError, LinkError):
                return None
        if raw is None:
            return None
        batch = SEQUENCER_DECODER.decode(raw)
        self.seen.extend(batch)
        return batch

    async def until(self, want: Callable[[Any], bool], timeout: float = 10) -> Any | None:
        """The first message ``want`` accepts, skipping beats and entries; None
        when the link is closed first."""
        with trio.fail_after(timeout):
            while True:
                batch = await self.receive(timeout)
                if batch is None:
                    return None
                for msg in batch:
                    if want(msg):
                        return msg

    async def join(self, secret: str, *, version: int = LINK_VERSION, name: str = "peer") -> Any:
        """Welcome or Goodbye (None: closed without a word)."""
        await self.send(Join(version, secret, name))
        batch = await self.receive()
        return batch[0] if batch else None

    async def closed(self, timeout: float = 10) -> bool:
        """True once the sequencer has closed the link (whatever it sent before)."""
        with trio.fail_after(timeout):
            while True:
                if await self.receive(timeout) is None:
                    return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def meta_of(identity: str, ip: str = "10.9.9.9", fingerprint: str = "f" * 16) -> bytes:
    return encode_envelope(Envelope("bidder", identity, ip, fingerprint, "{}", "00"))


async def good_bid(client: Client, b: Bidder, lot: str, amount: int) -> p.Ack:
    cs, text = b.frame(lot, amount)
    reply = await client.request(cs, text, timeout=10)
    assert isinstance(reply, p.Ack), reply
    return reply


# ------------------------------------------------------- who may join the link

# The link's authorisation matrix: who knocks -> what the sequencer answers.
# "welcome": joined; "goodbye: <words>": refused with that reason (and counted);
# "EACCES": the kernel refuses the connect (the 0700 folder, the 0600 socket).
LINK_MATRIX: dict[str, str] = {
    "an edge of this uid with the secret": "welcome",
    "this uid, no secret": "goodbye: wrong link secret",
    "this uid, a wrong secret": "goodbye: wrong link secret",
    "this uid, the secret with a byte changed": "goodbye: wrong link secret",
    "this uid, another data directory's secret": "goodbye: wrong link secret",
    "this uid, the secret, link version 2": "goodbye: link version 2 refused: this sequencer speaks 1",
    "this uid, the secret, link version 0": "goodbye: link version 0 refused: this sequencer speaks 1",
    "this uid, a submit before any join": "goodbye: the first batch must be one join",
    "this uid, two joins in the first batch": "goodbye: the first batch must be one join",
    "this uid, an undecodable first batch": "goodbye: no join",
    "uid 65534 (nobody), the secret, the folder as created": "EACCES",
    "uid 65534 (nobody), the secret, folder and socket opened to all": (
        "goodbye: peer of uid 65534: only this user's edges may join"
    ),
}

# A process of another uid: it starts as root (this suite runs as root), drops to
# nobody, then tries to read the secret and to join and submit on the socket.
OTHER_UID = r"""
import json, os, socket, sys
path, secret_path, payload = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
os.setgroups([]); os.setgid(65534); os.setuid(65534)
out = {"uid": os.getuid(), "euid": os.geteuid()}
try:
    open(secret_path).read(); out["secret"] = 0
except OSError as e:
    out["secret"] = e.errno
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(path); out["connect"] = 0
except OSError as e:
    out["connect"] = e.errno
    print(json.dumps(out)); sys.exit(0)
try:
    s.sendall(payload)
except OSError as e:
    out["send"] = e.errno
got = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except OSError as e:
    out["recv"] = e.errno
out["got"] = got.hex()
print(json.dumps(out))
"""


async def as_nobody(split: Split, payload: bytes) -> dict[str, Any]:
    done = await trio.run_process(
        [
            sys.executable,
            "-I",
            "-c",
            OTHER_UID,
            str(split.path),
            str(link_dir(split.data_dir) / "secret"),
            payload.hex(),
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    out = json.loads(done.stdout)
    assert out["uid"] == out["euid"] == NOBODY, out
    return out


def answer_of(raw: bytes) -> str:
    """What a peer read, as a LINK_MATRIX cell."""
    buf = bytearray(raw)
    if len(buf) < 4:
        return "closed"
    size = int.from_bytes(buf[:4], "big")
    (first, *_rest) = SEQUENCER_DECODER.decode(bytes(buf[4 : 4 + size]))
    if type(first) is Welcome:
        return "welcome"
    assert type(first) is Goodbye, first
    return f"goodbye: {first.reason}"


def cell_matches(got: str, want: str) -> bool:
    return got == want or (want.startswith("goodbye: ") and got.startswith(want))


async def knock(split: Split, who: str, other_secret: str) -> str:
    """One row of LINK_MATRIX: the peer knocks; what it got, as a cell."""
    secret = split.secret
    submit = Submit(
        1, PlaceBid("bidder:intruder", 1, "L1", 99_999), b"", Budget(BID_RATE, "x", "x")
    )
    if who.startswith("uid 65534"):
        payload = frame([Join(LINK_VERSION, secret, "intruder")]) + frame([submit])
        folder, sock = split.path.parent, split.path
        opened = "opened to all" in who
        if opened:
            os.chmod(folder, 0o711)
            os.chmod(sock, 0o666)
        try:
            out = await as_nobody(split, payload)
        finally:
            os.chmod(folder, 0o700)
            os.chmod(sock, 0o600)
        assert out["secret"] == errno.EACCES, out  # it cannot read the secret either
        if out["connect"]:
            return errno.errorcode[out["connect"]]
        return answer_of(bytes.fromhex(out["got"]))
    peer = await Peer.open(split.path)
    try:
        if who == "an edge of this uid with the secret":
            await peer.send(Join(LINK_VERSION, secret, "matrix"))
        elif who == "this uid, no secret":
            await peer.send(Join(LINK_VERSION, "", "matrix"))
        elif who == "this uid, a wrong secret":
            await peer.send(Join(LINK_VERSION, "0" * len(secret), "matrix"))
        elif who == "this uid, the secret with a byte changed":
            flipped = secret[:-1] + ("0" if secret[-1] != "0" else "1")
            await peer.send(Join(LINK_VERSION, flipped, "matrix"))
        elif who == "this uid, another data directory's secret":
            await peer.send(Join(LINK_VERSION, other_secret, "matrix"))
        elif who.startswith("this uid, the secret, link version "):
            version = int(who.rsplit(" ", 1)[1])
            await peer.send(Join(version, secret, "matrix"))
        elif who == "this uid, a submit before any join":
            await peer.send(submit)
        elif who == "this uid, two joins in the first batch":
            await peer.send(Join(LINK_VERSION, secret, "a"), Join(LINK_VERSION, secret, "b"))
        elif who == "this uid, an undecodable first batch":
            await peer.send_raw(b"\x00\x00\x00\x03\xc1\xc1\xc1")
        else:
            raise AssertionError(f"no way to knock as {who!r}")
        batch = await peer.receive()
        if batch is None:
            return "closed"
        (first, *_rest) = batch
        if type(first) is Welcome:
            return "welcome"
        assert type(first) is Goodbye, first
        assert await peer.closed(), "a refused peer's link stays open"
        return f"goodbye: {first.reason}"
    finally:
        await peer.aclose()


async def test_the_link_matrix_holds(nursery, split_factory, tmp_path):
    """Every row of LINK_MATRIX; each refusal counted (``refused_peers`` and
    ``pubex_link_events_total{event="refused"}``), nothing of a refused peer
    ledgered, and the edges linked before keep serving throughout."""
    # A data directory too deep for a socket path: the socket is in the short
    # fallback folder under /tmp, which every user can reach -- its own 0700 and
    # the socket's 0600 are all that stand in the way (the rows of nobody).
    deep = tmp_path / ("deep-" + "x" * 100)
    split = await split_factory(FAST, edges=1, data_dir=deep)
    assert not split.path.is_relative_to(deep)
    other = read_or_create_secret(tmp_path / "elsewhere")
    assert other != split.secret
    (edge,) = split.edges
    staff = await connect_staff(nursery, edge)
    (b,) = await lot_with_bidders(staff, "L1", 1)
    bidder = await connect_bidder(nursery, edge, b)
    amount = 10_000
    mismatches = []
    refusals = 0
    for who, want in LINK_MATRIX.items():
        before = split.rt.store.last_seq()
        got = await knock(split, who, other)
        if not cell_matches(got, want):
            mismatches.append(f"{who}: {got!r}, expected {want!r}")
        if want.startswith("goodbye"):
            refusals += 1
        assert split.link.refused_peers == refusals, who
        assert split.events("refused") == refusals, who
        # the refused peer's submit never ran; the good edge still gets acks
        assert split.rt.store.last_seq() == before, who
        await good_bid(bidder, b, "L1", amount)
        amount += 100
    print(f"link matrix: {len(LINK_MATRIX)} peers")
    assert not mismatches, "\n".join(mismatches)
    assert edge.core.links == 1 and edge.core.linked  # never dropped meanwhile
    # no command of any refused peer anywhere in the ledger
    assert not [seq for seq, _p, _h, raw in split.rt.store.iter_entries() if b"intruder" in raw]


async def test_an_edge_of_another_link_version_stops_naming_both(split_factory, monkeypatch):
    """An edge of another release: the sequencer's goodbye names both link
    versions, and the edge stops (``pubex edge`` exits) instead of retrying."""
    split = await split_factory(edges=0)
    monkeypatch.setattr(link_client, "LINK_VERSION", LINK_VERSION + 1)
    core = LinkCore(split.data_dir, "edge-of-tomorrow")
    with trio.fail_after(10), pytest.raises(LinkRefused) as refused:
        await core.run()
    assert f"link version {LINK_VERSION + 1} refused" in str(refused.value)
    assert f"this sequencer speaks {LINK_VERSION}" in str(refused.value)
    assert not core.linked and split.link.refused_peers == 1


@pytest.fixture
def virtual_clock() -> CommitAwareClock:
    """Virtual time that never jumps while a batch is in the commit thread."""
    return CommitAwareClock()


async def test_a_peer_that_never_joins_is_refused_after_the_join_timeout(
    nursery, split_factory, virtual_clock: CommitAwareClock
):
    """Two peers connect: one sends nothing, one half a batch header.  Both get
    Goodbye once JOIN_TIMEOUT_S (virtual seconds) has passed, not before; a
    peer that joins meanwhile is served."""
    split = await split_factory(edges=0, on_open=virtual_clock.watch)
    start = trio.current_time()
    silent = await Peer.open(split.path)
    halting = await Peer.open(split.path)
    await halting.send_raw(b"\x00\x00")
    welcome = await (await Peer.open(split.path)).join(split.secret)
    assert type(welcome) is Welcome  # the knockers hold up no one
    for peer in (silent, halting):
        batch = await peer.receive(timeout=3 * JOIN_TIMEOUT_S)
        assert batch is not None and type(batch[0]) is Goodbye, batch
        assert batch[0].reason.startswith("no join"), batch[0].reason
        assert await peer.closed()
    waited = trio.current_time() - start
    assert JOIN_TIMEOUT_S <= waited < JOIN_TIMEOUT_S + 1, waited
    assert split.link.refused_peers == 2 and split.events("refused") == 2


async def test_the_socket_is_0600_in_a_0700_folder_and_the_secret_0600(split_factory, tmp_path):
    split = await split_factory(edges=1)
    assert split.path == link_dir(split.data_dir) / "sequencer.sock"
    st = split.path.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(split.path.parent.lstat().st_mode) == 0o700
    secret = link_dir(split.data_dir) / "secret"
    assert stat.S_IMODE(secret.lstat().st_mode) == 0o600
    assert len(split.secret) == 64 and int(split.secret, 16) >= 0
    assert read_or_create_secret(split.data_dir) == split.secret  # made once


async def test_a_deep_data_directory_gets_the_short_socket_path(split_factory, tmp_path):
    deep = tmp_path / ("d" * 120) / "data"
    long_path = link_dir(deep) / "sequencer.sock"
    assert len(os.fsencode(long_path)) > SOCKET_PATH_MAX
    path = socket_path(deep)
    assert len(os.fsencode(path)) <= SOCKET_PATH_MAX
    assert path.parent.name.startswith(f"pubex-link-{os.getuid()}-")
    assert socket_path(deep) == path  # the same for every process of this data dir
    assert socket_path(tmp_path / ("e" * 120) / "data") != path  # and its own
    split = await split_factory(FAST, edges=1, data_dir=deep)
    assert split.path == path
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.lstat().st_mode) == 0o700
    (edge,) = split.edges
    assert edge.core.linked  # the edge found it too


async def test_a_fallback_folder_another_user_made_is_not_used(tmp_path):
    """Another user who creates the short path's folder first (or a symlink
    there) does not get the sequencer's socket in it: it refuses to serve."""
    deep = tmp_path / ("d" * 120)
    secret = read_or_create_secret(deep)
    folder = socket_path(deep).parent
    settings = load_settings(overrides={"net.ws_port": 0, "net.http_port": 0})
    rt = open_sequencer(
        settings, deep, sandbox=False, accelerate=1, allow_dev_tokens=True, verify_all=False
    )
    try:
        async with trio.open_nursery() as inner:
            front = await start_sequencer(
                inner, settings, rt, gate_from_settings(settings.auth, "x")
            )
            for plant in ("folder", "symlink"):
                target = tmp_path / "theirs"
                target.mkdir(exist_ok=True)
                os.chown(target, NOBODY, NOBODY)
                if plant == "folder":
                    folder.mkdir(mode=0o777)
                    os.chown(folder, NOBODY, NOBODY)
                else:
                    folder.symlink_to(target)
                    os.lchown(folder, NOBODY, NOBODY)
                try:
                    with pytest.raises(PermissionError):
                        await inner.start(LinkServer(front, deep, secret).serve)
                    assert not (target / "s.sock").exists()
                finally:
                    if folder.is_symlink():
                        folder.unlink()
                    else:
                        shutil.rmtree(folder)
            inner.cancel_scope.cancel()
    finally:
        rt.store.close()


# ------------------------------------------------------- the link, fuzzed

PROBE = 2**62  # the id of the AskMetrics that fences each fuzz case
SEED = int(os.environ.get("PUBEX_LINK_FUZZ_SEED", "20261208"))
MUTATIONS = int(os.environ.get("PUBEX_LINK_FUZZ_CASES", "2000"))


@dataclass
class Case:
    family: str
    payload: bytes
    expect: str  # "dropped", "refused <code>", "answered", "alive", "either"
    eof: bool = False  # half-close after the payload (a batch that never ends)
    submits: tuple[int, ...] = ()  # Submit ids whose Answered to wait for


@dataclass
class Seen:
    fate: str  # "dropped" or "alive"
    answers: dict[int, Answer]


async def run_case(split: Split, case: Case) -> Seen:
    """Join, send the case, fence it with a probe; what became of the link."""
    peer = await Peer.open(split.path)
    try:
        assert type(await peer.join(split.secret, name="fuzz")) is Welcome
        await peer.send_raw(case.payload)  # (the sequencer may drop us mid-write)
        if case.eof:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await peer.stream.send_eof()
        else:
            await peer.send_raw(frame([AskMetrics(PROBE)]))
        probe = await peer.until(lambda m: type(m) is MetricsText and m.id == PROBE)
        fate = "alive" if probe is not None else "dropped"
        answers = {m.id: m.answer for m in peer.seen if type(m) is Answered}
        if fate == "alive":
            for ident in case.submits:  # engine outcomes come once durable
                if ident not in answers:
                    got = await peer.until(lambda m, i=ident: type(m) is Answered and m.id == i)
                    assert got is not None, f"{case.family}: submit {ident} never answered"
                    answers[ident] = got.answer
        return Seen(fate, answers)
    finally:
        await peer.aclose()


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def msgpack(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


def fz_budget(tag: str = "") -> Budget:
    return Budget(STAFF_RATE, f"FZ-budget{tag}", "FZ-identity")


class Cases:
    """The fuzz's cases: structural, hostile by construction, and seeded mutations."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seq = 0  # the fuzz bidder's client_seq (origin bidder:FZB)
        self.ident = 0

    def next_id(self) -> int:
        self.ident += 1
        return self.ident

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def fz_bid(self, amount: int = 0, **kw: Any) -> Submit:
        self.next_seq()
        cmd = PlaceBid(
            kw.pop("origin", "bidder:FZB"),
            kw.pop("client_seq", self.seq),
            kw.pop("lot_id", "FZ1"),
            amount or 1_000_000 + self.seq * 100,
            **kw,
        )
        return Submit(self.next_id(), cmd, meta_of("k-FZB"), fz_budget())

    def valid_batch(self) -> list[Msg]:
        """A batch a well-behaved edge could send (the mutations' seed)."""
        rng = self.rng
        pick = rng.randrange(6)
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        if pick == 0:
            return [self.fz_bid()]
        if pick == 1:
            return [Admit(self.next_id(), ip, "bidder:FZB", "", "FZB", f"k-FZB|{rng.random()}")]
        if pick == 2:
            return [Admit(self.next_id(), ip, token_ok=rng.random() < 0.5), Release(ip)]
        if pick == 3:
            return [Report(b"# HELP x y\nx 1\n" * rng.randrange(1, 20))]
        if pick == 4:
            return [AskMetrics(self.next_id())]
        return [self.fz_bid(), self.fz_bid(), Admit(self.next_id(), ip), AskMetrics(self.next_id())]

    # ---------------------------------------------------------- families
    def structural(self) -> list[Case]:
        rng = self.rng
        out: list[Case] = []
        for n in (1, 2, 3, 5, 17, 256, 4096):
            out.append(Case("random bytes, framed", framed(rng.randbytes(n)), "either"))
        for n in (4, 9, 100, 5000):  # whatever their first four bytes claim
            out.append(Case("random bytes, unframed", rng.randbytes(n), "either", eof=True))
        whole = frame([self.fz_bid(), Admit(self.next_id(), "10.0.0.1")])
        for cut in sorted({1, 2, 3, 4, 5, 8, len(whole) // 2, len(whole) - 1}):
            out.append(Case(f"truncated at {cut}", whole[:cut], "dropped", eof=True))
        for size in (MAX_EDGE_BATCH_BYTES + 1, 2**31, 2**32 - 1):
            out.append(Case(f"length prefix {size}", size.to_bytes(4, "big"), "dropped"))
        out.append(Case("empty batch body", framed(b""), "dropped"))
        out.append(Case("an empty batch", framed(msgpack([])), "alive"))
        shapes: list[Any] = [
            None,
            0,
            "join",
            b"\x00",
            {"type": "submit"},
            [1, 2, 3],
            [[]],
            [["join"]],
            [["submit"]],
            [["submit", 1]],
            [["submit", "1", ["place_bid", "bidder:FZB", 1, "FZ1", 5]]],
            [["submit", 1, {"type": "place_bid"}, b"", ["k", 1.0, 1.0, "i"]]],
            [["submit", 1, {"type": "no_such_command", "origin": "bidder:FZB"}, b"", []]],
            [["admit"]],
            [["admit", 1, 7]],
            [["release", None]],
            [["report", "text, not bytes"]],
            [["ask_metrics", -1.5]],
            [["no_such_message", 1]],
            [["welcome", 1, 0, b"", {}, 0, 1, False]],  # the sequencer's tags, not an edge's
            [["goodbye", "bye"]],
            [["entries", [], {}, 0]],
            [["beat", 0, 0, 0]],
            [["join", LINK_VERSION, "x"]],  # a short join
            [[["ask_metrics", 1]]],  # nested one level too deep
            [["ask_metrics", 1]] * 2 + [17],
        ]
        deep: Any = ["ask_metrics", 1]
        for _ in range(200):
            deep = [deep]
        shapes.append([deep])
        for shape in shapes:
            out.append(Case(f"shape {str(shape)[:50]}", framed(msgpack(shape)), "dropped"))
        return out

    def hostile(self, secret: str) -> list[Case]:
        """Well-formed batches the link must refuse (or drop the link for)."""
        out = [
            Case("a second join", frame([Join(LINK_VERSION, secret, "again")]), "dropped"),
            Case(
                "a join after another message",
                frame([AskMetrics(self.next_id()), Join(LINK_VERSION, secret, "x")]),
                "dropped",
            ),
        ]
        system = [
            Tick("system", 0),
            RuntimeStarted("system", 0, 1000, True),
            SuspendOverdue("system", 0),
            SetReserve("system", 0, "FZ1", 1),
            CreateLot("system:x", 1, "SYS1", "english", "t", 1, 1, 0, 2**62),
            PlaceBid("", 1, "FZ1", 2_000_000_000),
            PlaceBid(":FZB", 1, "FZ1", 2_000_000_000),
            PlaceBid("system", 1, "FZ1", 2_000_000_000),
            PlaceBid("system:FZB", 1, "FZ1", 2_000_000_000),
        ]
        for cmd in system:
            ident = self.next_id()
            out.append(
                Case(
                    f"system origin: {type(cmd).__name__} {cmd.origin!r}",
                    frame([Submit(ident, cmd, b"", fz_budget())]),
                    f"refused {G.not_authorized}",
                    submits=(ident,),
                )
            )
        # what a system command looks like from anyone else: the engine refuses it
        for cmd in (
            Tick("bidder:FZB", self.next_seq()),
            RuntimeStarted("bidder:FZB", self.next_seq(), 1000, True),
            SuspendOverdue("staff:FZ-staff", 10**9),
            RegisterKey("bidder:FZB", self.next_seq(), "k-x", "FZB", "00" * 32),
            PlaceBid("System:FZB", 1, "FZ1", 2_000_000_000),
            PlaceBid("bidder:FZB:extra", 1, "FZ1", 2_000_000_000),
            PlaceBid("alien:FZB", 1, "FZ1", 2_000_000_000),
        ):
            ident = self.next_id()
            out.append(
                Case(
                    f"not ours: {type(cmd).__name__} {cmd.origin!r}",
                    frame([Submit(ident, cmd, b"", fz_budget())]),
                    "not acked",
                    submits=(ident,),
                )
            )
        # fields past the protocol's bounds (the edge's Reader would have refused them)
        big = 2**64 - 1
        bounds: list[tuple[str, Any]] = [
            ("amount -1", dict(amount=-1)),
            ("amount -(2**63)", dict(amount=-(2**63))),
            ("amount 10**15 + 1", dict(amount=10**15 + 1)),
            ("amount 2**63 - 1", dict(amount=2**63 - 1)),
            ("amount 2**64 - 1", dict(amount=big)),
            ("client_seq 0", dict(client_seq=0)),
            ("client_seq -1", dict(client_seq=-1)),
            # another funded bidder: this one would leave FZB no client_seq to send
            ("client_seq 2**64 - 1", dict(client_seq=big, origin="bidder:FZC")),
            ("client_seq 2**63", dict(client_seq=2**63, origin="bidder:FZC")),
            ("lot id empty", dict(lot_id="")),
            ("lot id of 100,000 characters", dict(lot_id="L" * 100_000)),
            ("lot id NUL", dict(lot_id="FZ1\x00")),
            ("lot id look-alike", dict(lot_id="FZ\u0661")),
            ("origin of 10,000 characters", dict(origin="bidder:" + "B" * 10_000)),
            ("session ../..", dict(client_session="../../etc")),
            ("session of 10,000 characters", dict(client_session="s" * 10_000)),
        ]
        for name, kw in bounds:
            submit = self.fz_bid(**kw)
            out.append(
                Case(f"out of bounds: {name}", frame([submit]), "not acked", submits=(submit.id,))
            )
        for name, budget in (
            ("of no kind", Budget("", "FZ-none", "FZ-identity")),
            ("of an unknown kind", Budget("FZ-rate-1e9", "FZ-kind", "FZ-identity")),
            ("kind of 100,000 characters", Budget("k" * 100_000, "FZ-long", "FZ-identity")),
            ("identity of 100,000 characters", Budget(STAFF_RATE, "FZ-id", "i" * 100_000)),
        ):
            submit = self.fz_bid()
            submit = Submit(submit.id, submit.cmd, submit.meta, budget)
            out.append(Case(f"budget {name}", frame([submit]), "answered", submits=(submit.id,)))
        meta = self.fz_bid()
        meta = Submit(meta.id, meta.cmd, b"\xc1" * (MAX_EDGE_BATCH_BYTES - 4096), meta.budget)
        out.append(Case("meta of 8 MB of junk", frame([meta]), "answered", submits=(meta.id,)))
        lot = CreateLot("staff:FZ-staff", 1, "FZ-TERMS", "english", "t", 1, 0, 2**62, 0)
        ident = self.next_id()
        out.append(
            Case(
                "lot terms backwards (ends before it starts, no increment)",
                frame([Submit(ident, lot, b"", fz_budget())]),
                "not acked",
                submits=(ident,),
            )
        )
        for name, admit in (
            ("admit of a 100 KB address", Admit(self.next_id(), "i" * 100_000)),
            (
                "admit of a token and a nonce",
                Admit(self.next_id(), "", nonce="n" * 100_000, token_ok=False),
            ),
            ("release never admitted", Release("10.1.2.3")),
            ("report of 2 MB", Report(b"x" * (2 << 20))),
        ):
            out.append(Case(name, frame([admit]), "alive"))
        return out

    def mutation(self) -> Case:
        rng = self.rng
        body = bytearray(ENCODER.encode(self.valid_batch()))
        ops = []
        for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
            op = rng.randrange(9)
            ops.append(op)
            at = rng.randrange(len(body) + 1)
            if op == 0 and body:  # flip bits
                at = min(at, len(body) - 1)
                body[at] ^= 1 << rng.randrange(8)
            elif op == 1 and body:  # a random byte
                at = min(at, len(body) - 1)
                body[at] = rng.randrange(256)
            elif op == 2:  # insert
                body[at:at] = rng.randbytes(rng.randrange(1, 9))
            elif op == 3:  # delete
                del body[at : at + rng.randrange(1, 9)]
            elif op == 4:  # duplicate a run
                body[at:at] = body[at : at + rng.randrange(1, 33)]
            elif op == 5:  # truncate
                del body[at:]
            elif op == 6:  # a msgpack marker that claims a lot
                body[at:at] = rng.choice(
                    (
                        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
                        b"\xdd\xff\xff\xff\xff",  # array32 of 4 G items
                        b"\xdf\x7f\xff\xff\xff",  # map32
                        b"\xc6\xff\xff\xff\xf0",  # bin32
                        b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
                        b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
                        b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # float NaN
                        b"\xc0",
                        b"\xc3",
                        b"\xc1",
                    )
                )
            elif op == 7:  # splice in another valid batch's bytes
                other = ENCODER.encode(self.valid_batch())
                body[at:at] = other[rng.randrange(len(other)) :]
            else:  # swap two runs
                a, b = sorted((rng.randrange(len(body) + 1), rng.randrange(len(body) + 1)))
                body[a:b] = body[a:b][::-1]
        lie = rng.random() < 0.05  # a length prefix that is not the body's
        if lie:
            claimed = len(body) + rng.randrange(1, 1000)
            return Case(
                "mutated, prefix lies", claimed.to_bytes(4, "big") + bytes(body), "either", eof=True
            )
        return Case(f"mutated {ops}", framed(bytes(body)), "either")


def fate_ok(case: Case, seen: Seen) -> str | None:
    """What is wrong with what became of a case (None: as expected)."""
    want = case.expect
    if want == "either":
        return None
    if want == "dropped":
        return None if seen.fate == "dropped" else f"link {seen.fate}"
    if seen.fate != "alive":
        return f"link {seen.fate}, expected it alive"
    if want.startswith("refused "):
        code = int(want.split()[1])
        got = [seen.answers.get(i) for i in case.submits]
        ok = all(a is not None and a.outcome == "refused" and a.code == code for a in got)
        return None if ok else f"answers {got}"
    if want == "not acked":
        got = [seen.answers.get(i) for i in case.submits]
        ok = all(a is not None and a.code != 0 for a in got)
        return None if ok else f"answers {got}"
    if want == "answered":
        got = [seen.answers.get(i) for i in case.submits]
        return None if all(a is not None for a in got) else f"answers {got}"
    return None  # "alive"


async def test_the_sequencer_survives_a_fuzzed_link(nursery, split_factory):
    """After a valid join: random bytes, truncated batches, a length prefix past
    MAX_EDGE_BATCH_BYTES, msgpack of wrong shapes, a second join, system-origin
    commands, fields past the protocol's bounds, and MUTATIONS seeded mutations
    of valid batches.  After each case the sequencer still runs, the good edge
    (linked all along, never relinked) still gets acks for its bidder's bids,
    and the fuzzing link was dropped or its message answered -- never a crash;
    at the end the ledger replays to the sequencer's state."""
    split = await split_factory(FAST, edges=1)
    (edge,) = split.edges
    staff = await connect_staff(nursery, edge)
    (good,) = await lot_with_bidders(staff, "GOOD1", 1, prefix="GOOD")
    await create_lot(staff, "FZ1")
    await fund(staff, "FZ1", "FZB")
    await fund(staff, "FZ1", "FZC")
    bidder = await connect_bidder(nursery, edge, good)
    rng = random.Random(SEED)
    cases = Cases(rng)
    plan = cases.structural() + cases.hostile(split.secret)
    plan += [cases.mutation() for _ in range(MUTATIONS)]
    tally: Counter[str] = Counter()
    problems = []
    amount = 10_000
    started = time.monotonic()
    for n, case in enumerate(plan):
        dropped = split.link.dropped_links
        seen = await run_case(split, case)
        wrong = fate_ok(case, seen)
        if wrong:
            problems.append(f"#{n} {case.family}: {wrong}")
        if seen.fate == "dropped" and not case.eof:
            assert split.link.dropped_links == dropped + 1, case.family  # counted
        kind = "mutated" if case.family.startswith("mutated") else case.family
        tally[f"{kind}: {seen.fate}"] += 1
        # the sequencer still serves the edge that behaves
        await good_bid(bidder, good, "GOOD1", amount)
        amount += 100
        assert edge.core.linked and edge.core.links == 1, case.family
        await wait_for(lambda: len(split.link.edges) == 1)  # the fuzz peer is gone
    elapsed = time.monotonic() - started
    mutated = sum(v for k, v in tally.items() if k.startswith("mutated"))
    print(
        f"link fuzz (seed {SEED}): {len(plan)} cases in {elapsed:.1f} s --"
        f" {len(plan) - mutated} structural / hostile, {mutated} mutations"
        f" ({tally['mutated: dropped']} dropped, {tally['mutated: alive']} decoded and answered)"
    )
    assert not problems, "\n".join(problems)
    rt = split.rt
    await wait_for(lambda: rt.durable_seq == rt.router.applied)
    assert full_replay(rt.store).state_hash() == rt.router.state_hash()
    # every admission of the fuzz links released: the good edge's two clients remain
    assert split.front.per_address == {"127.0.0.1": 2}


async def test_an_edge_that_vanishes_mid_write_leaves_the_sequencer_serving(nursery, split_factory):
    """Edges that ask for a lot and close without reading: the sequencer's
    writes to them break (EPIPE / ECONNRESET, raised in the sender task beside
    the receiver), their links go, and the sequencer serves on."""
    split = await split_factory(FAST, edges=1)
    (edge,) = split.edges
    staff = await connect_staff(nursery, edge)
    (b,) = await lot_with_bidders(staff, "V1", 1)
    bidder = await connect_bidder(nursery, edge, b)
    for i in range(20):
        peer = await Peer.open(split.path)
        assert type(await peer.join(split.secret, name=f"vanishing-{i}")) is Welcome
        await peer.send(*[AskMetrics(n) for n in range(300)], Admit(1, f"10.0.0.{i}"))
        if i % 2:
            await peer.receive()  # some read a little first
        await peer.aclose()
        await good_bid(bidder, b, "V1", 10_000 + 100 * i)
    await wait_for(lambda: len(split.link.edges) == 1)
    assert edge.core.links == 1
    assert split.front.per_address == {"127.0.0.1": 2}  # their admissions released


# ------------------------------------------------ the edge, fed junk


class FakeSequencer:
    """A "sequencer" at the socket an edge looks for: it welcomes the edge (or
    not), reads what the edge sends, and writes whatever the test wants."""

    def __init__(self, data_dir: Path, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.secret = read_or_create_secret(data_dir)

    @classmethod
    async def listen(cls, data_dir: Path) -> FakeSequencer:
        read_or_create_secret(data_dir)
        path = socket_path(data_dir)
        private_dir(path.parent)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen(8)
        return cls(data_dir, trio.SocketListener(sock))

    async def accept(self, *, greet: bool = True) -> FakeLink:
        with trio.fail_after(10):
            link = FakeLink(await self.listener.accept())
            (join,) = await link.receive()
        assert type(join) is Join and join.secret == self.secret, join
        if greet:
            await link.send(welcome())
        return link


def welcome() -> Welcome:
    return Welcome(LINK_VERSION, 0, Views().encode(), {}, time.time_ns(), 1, False)


class FakeLink:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def send(self, *msgs: Msg) -> None:
        await self.stream.send_all(frame(list(msgs)))

    async def send_raw(self, data: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(data)

    async def receive(self) -> list[Any]:
        """The edge's next batch ([] once it closed the link)."""
        try:
            raw = await read_batch(self.stream, self.buf, MAX_EDGE_BATCH_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, LinkError):
            return []
        return [] if raw is None else EDGE_DECODER.decode(raw)

    async def submits(self, n: int) -> list[Submit]:
        """The next ``n`` submits the edge sends (reports and the rest skipped)."""
        got: list[Submit] = []
        with trio.fail_after(10):
            while len(got) < n:
                batch = await self.receive()
                assert batch, "the edge closed the link"
                got += [m for m in batch if type(m) is Submit]
        return got

    async def aclose(self) -> None:
        await self.stream.aclose()


def sequencer_batch(rng: random.Random) -> list[Msg]:
    """A batch a sequencer could send an edge (the mutations' seed)."""
    lot = f"J{rng.randrange(5)}"
    pick = rng.randrange(4)
    if pick == 0:
        return [Beat(time.time_ns(), rng.randrange(100), rng.randrange(10))]
    if pick == 1:
        created = LotCreated(lot, "english", "t", 100, 10, 0, 0, 2**62, 0, RuleSet())
        bid = BidAccepted(lot, "C1", 100 + rng.randrange(1000), 1)
        return [Entries([PublicEntry(rng.randrange(1, 99), time.time_ns(), [created, bid])], {}, 5)]
    if pick == 2:
        return [Answered(rng.randrange(1_000), Answer("accepted", 0, "", 7, 1, b"h" * 32))]
    return [Admitted(rng.randrange(1_000), Admission(0, "", {lot: "C1"}, 3)), Beat(1, 2, 3)]


def junk_cases(rng: random.Random, n_mutations: int) -> list[tuple[str, bytes, bool]]:
    """(name, bytes, close after) -- what the fake sequencer writes to a linked edge."""
    out: list[tuple[str, bytes, bool]] = [
        ("random bytes, framed", framed(rng.randbytes(64)), False),
        ("random bytes, unframed", rng.randbytes(4096), True),
        ("length prefix past MAX_SEQUENCER_BATCH_BYTES", (2**32 - 1).to_bytes(4, "big"), False),
        ("truncated batch", frame([Beat(1, 2, 3)])[:7], True),
        ("end of stream inside a header", b"\x00\x00", True),
        ("an empty body", framed(b""), False),
        ("not UTF-8", framed(b"\x91\x92\xa4beat\xa1\xe4"), False),
        ("wrong shape: a map", framed(msgpack({"type": "beat"})), False),
        ("wrong shape: an edge's message", framed(msgpack([["join", 1, "s", "n"]])), False),
        ("wrong shape: a short beat", framed(msgpack([["beat", 1]])), False),
        ("goodbye mid-link", frame([Goodbye("go away")]), False),
        ("a second welcome", frame([Welcome(LINK_VERSION, 0, b"", {}, 0, 1, False)]), False),
        ("a close, no word", b"", True),
    ]
    for i in range(n_mutations):
        body = bytearray(ENCODER.encode(sequencer_batch(rng)))
        for _ in range(rng.choice((1, 1, 2, 4))):
            at = rng.randrange(len(body))
            op = rng.randrange(4)
            if op == 0:
                body[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                body[at] = rng.randrange(256)
            elif op == 2:
                del body[at : at + rng.randrange(1, 6)]
            else:
                body[at:at] = rng.randbytes(rng.randrange(1, 6))
        out.append((f"mutation {i}", framed(bytes(body)), False))
    return out


async def http_status(http_url: str, path: str, json_body: Any = None) -> int:
    """GET ``path`` of an edge's HTTP side (POST ``json_body`` when given): its status."""
    host, port = http_url.split("//")[1].rstrip("/").split(":")
    body = b"" if json_body is None else json.dumps(json_body).encode()
    head = "GET" if json_body is None else "POST"
    head += f" {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if json_body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(head.encode() + b"\r\n" + body)
    reply = await read_headers(stream)
    await stream.aclose()
    return int(reply.split(b" ", 2)[1])


async def test_an_edge_survives_a_sequencer_sending_junk(nursery, tmp_path, monkeypatch):
    """A fake sequencer feeds a linked edge (``LinkCore`` under a real
    ``Gateway``) junk: every command the edge had sent is answered
    ``outcome_unknown``, its waiting admission 503, new commands
    ``sequencer_unavailable`` while it is down -- and it relinks, every time;
    it never crashes.  Junk at the welcome (a broken first batch, a welcome
    whose view does not decode) is a failed join: it retries."""
    monkeypatch.setattr(link_client, "RETRY_S", 0.005)  # relink sooner: ~150 relinks here
    data_dir = tmp_path / "data"
    fake = await FakeSequencer.listen(data_dir)
    core = LinkCore(data_dir, "edge-under-test")
    nursery.start_soon(core.run)
    link = await fake.accept()
    await wait_for(lambda: core.linked)
    settings = load_settings(overrides={"net.ws_port": 0, "net.http_port": 0})
    metrics = Metrics()
    listening = await start_edge(
        nursery,
        settings,
        core,
        metrics,
        gate_from_settings(settings.auth, "gateway", metrics.registry),
        ws_port=0,
        http_port=0,
        shutdown=trio.Event(),
    )
    rng = random.Random(SEED)
    cases = junk_cases(rng, 150)
    tally: Counter[str] = Counter()
    for cs, (name, junk, close) in enumerate(cases, 1):
        answers: list[Answer] = []
        cmd = PlaceBid("bidder:X", cs, "J1", 100 + cs)
        core.submit(cmd, b"", Budget(BID_RATE, "x", "x"), answers.append)
        (sent,) = await link.submits(1)
        assert sent.cmd == cmd
        await link.send_raw(junk)
        if close:
            await link.stream.send_eof()
        # a fence: the answer to the command, after the junk
        await link.send_raw(frame([Answered(sent.id, Answer("accepted", 0, "", 9))]))
        await wait_for(lambda a=answers: a)
        (answer,) = answers
        if answer.code == G.outcome_unknown:
            tally["dropped"] += 1
            assert answer.outcome == "outcome_unknown", answer
            await wait_for(lambda: not core.linked)
            # while it is down: new commands are refused at once, nothing is sent
            down: list[Answer] = []
            core.submit(cmd, b"", Budget(BID_RATE, "x", "x"), down.append)
            assert [a.code for a in down] == [G.sequencer_unavailable]
            assert (await core.admit("10.0.0.1")).status == 503
            if tally["dropped"] == 1:
                assert await http_status(listening.http_url, "/healthz") == 503
            await link.aclose()
            link = await fake.accept()
            await wait_for(lambda: core.linked)
        else:
            tally["answered"] += 1
            assert answer.outcome == "accepted" and not name.startswith(("random", "length")), name
    links = core.links
    # junk instead of a welcome: a failed join, retried
    for name, first in (
        ("junk bytes", framed(b"\xc1\xc1")),
        ("not UTF-8", framed(b"\x91\x92\xa4beat\xa1\xe4")),
        (
            "a welcome whose view is junk",
            frame([Welcome(LINK_VERSION, 0, b"\xc1", {}, 0, 1, False)]),
        ),
        (
            "a welcome, then a goodbye",
            frame([Welcome(LINK_VERSION, 0, Views().encode(), {}, 0, 1, False), Goodbye("no")]),
        ),
        ("a goodbye", frame([Goodbye("not today")])),
        ("nothing", b""),
    ):
        await link.aclose()
        link = await fake.accept(greet=False)
        await link.send_raw(first)
        await link.aclose()
        link = await fake.accept(greet=False)  # it tries again...
        assert not core.linked, name  # ...not left "linked" by what it was sent
        await link.send(welcome())
        await wait_for(lambda: core.linked)
        assert core.links > links, name
        links = core.links
        tally["junk at the welcome"] += 1
    # the edge is whole: linked, its HTTP side healthy, and a watcher admitted
    # (the fake admits it) gets its hello
    assert core.linked and listening.gateway.accepting
    assert await http_status(listening.http_url, "/healthz") == 200

    async def admit_one() -> None:
        with trio.fail_after(10):
            while True:
                for msg in await link.receive():
                    if type(msg) is Admit:
                        await link.send(Admitted(msg.id, Admission()))
                        return

    nursery.start_soon(admit_one)
    watcher = await Client.connect(nursery, listening.ws_url)
    assert watcher.hello.role == "watcher"
    print(f"edge fed junk: {len(cases)} cases ({dict(tally)}), {core.links} links")


# ------------------------------------------- per-client limits, across edges


async def upgrade(port: int, query: str = "", token: str = "") -> tuple[int, trio.SocketStream]:
    """A WebSocket upgrade to one edge: its HTTP status, and the open stream."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(upgrade_request(port, query, token))
    head = await read_headers(stream)
    return int(head.split(b" ", 2)[1]), stream


async def test_connections_per_address_are_counted_across_edges(split_factory):
    split = await split_factory({"limits.max_connections_per_address": 3})
    a, b = split.edges
    opened = [await upgrade(a.port), await upgrade(a.port), await upgrade(b.port)]
    fourth = await upgrade(b.port)
    # each edge alone is under the cap (2 and 1): the sequencer counts both
    assert [s for s, _ in opened] == [101, 101, 101] and fourth[0] == 429
    assert split.front.per_address == {"127.0.0.1": 3}
    assert b.gateway.metrics.connections_refused.labels("address")._value.get() == 1
    await opened[0][1].aclose()  # one leaves edge A: a slot is free on edge B
    await wait_for(lambda: split.front.per_address == {"127.0.0.1": 2})
    again = await upgrade(b.port)
    assert again[0] == 101
    for _, stream in [*opened[1:], fourth, again]:
        await stream.aclose()
    await wait_for(lambda: not split.front.per_address)


async def test_a_bidder_handshake_replayed_on_the_other_edge_is_refused(nursery, split_factory):
    split = await split_factory()
    a, b = split.edges
    staff = await connect_staff(nursery, a)
    bidder = await register_bidder_key(staff, "replayer")
    await wait_for(lambda: bidder.key_id in b.core.keys)  # both edges know the key
    query = signed_query(bidder.key, bidder.key_id)  # one captured handshake
    first, stream = await upgrade(a.port, query)
    assert first == 101
    assert (await upgrade(b.port, query))[0] == 401  # replayed on the other edge
    assert (await upgrade(a.port, query))[0] == 401  # and on the same one
    fresh = signed_query(bidder.key, bidder.key_id)
    assert (await upgrade(b.port, fresh))[0] == 101  # a new nonce is welcome anywhere
    await stream.aclose()


async def test_a_bidders_bid_rate_is_one_bucket_across_edges(nursery, split_factory):
    """bid_burst 6: a bidder connected to both edges, bidding on each in turn,
    is refused rate_limited once the sequencer's one bucket is spent -- while
    each edge's own bucket (the guard before signature checks) still has
    tokens: each saw only its half."""
    rate, burst = 1, 6
    split = await split_factory({"limits.bids_per_s": rate, "limits.bid_burst": burst})
    a, b = split.edges
    staff = await connect_staff(nursery, a)
    (bidder,) = await lot_with_bidders(staff, "RATE1", 1)
    await wait_for(lambda: bidder.key_id in b.core.keys)
    on = [await connect_bidder(nursery, a, bidder), await connect_bidder(nursery, b, bidder)]
    start = time.monotonic()
    acked, refused_on = 0, None
    before = split.rt.store.last_seq()
    for n in range(4 * burst):
        cs, text = bidder.frame("RATE1", 10_000 + 100 * n)
        reply = await on[n % 2].request(cs, text, timeout=10)
        if isinstance(reply, p.Ack):
            acked += 1
            continue
        assert reply.name == "rate_limited", reply
        refused_on = n % 2
        break
    elapsed = time.monotonic() - start
    assert refused_on is not None, "never rate limited"
    assert burst <= acked <= burst + rate * elapsed + 1, (acked, elapsed)
    levels = [edge.gateway.buckets[bidder.bidder_id].level() for edge in (a, b)]
    assert all(level >= 1 for level in levels), levels  # neither edge refused it
    assert split.rt.store.last_seq() == before + acked  # the refused bid is not ledgered


async def test_the_refusal_budget_spent_on_one_edge_is_spent_on_the_other(nursery, split_factory):
    budget = 5
    split = await split_factory({**FAST, "limits.refusals_per_minute": budget})
    a, b = split.edges
    staff = await connect_staff(nursery, a)
    (bidder,) = await lot_with_bidders(staff, "REF1", 1, start_price_fen=10_000)
    await wait_for(lambda: bidder.key_id in b.core.keys)
    on_a = await connect_bidder(nursery, a, bidder)
    on_b = await connect_bidder(nursery, b, bidder)
    names = []
    for _ in range(budget):  # below the start price: each a ledgered refusal, on edge A
        cs, text = bidder.frame("REF1", 5_000)
        names.append((await on_a.request(cs, text, timeout=10)).name)
    assert names == ["bid_below_start"] * budget
    before = split.rt.store.last_seq()
    for amount in (5_000, 20_000):  # on edge B: refused at once, even a good bid
        cs, text = bidder.frame("REF1", amount)
        reply = await on_b.request(cs, text, timeout=10)
        assert isinstance(reply, p.Error) and reply.name == "too_many_refusals", reply
    assert split.rt.store.last_seq() == before  # and not ledgered


async def test_failed_tokens_on_one_edge_slow_that_address_on_the_other(nursery, split_factory):
    split = await split_factory({"auth.auth_backoff_base_ms": 5_000})
    a, b = split.edges
    status, stream = await upgrade(a.port, token="not-a-token-of-anyone")
    assert status == 401
    # the back-off is the sequencer's: the right token waits on edge B too
    assert (await upgrade(b.port, token=STAFF_TOKEN))[0] == 429
    assert (await upgrade(a.port, token=STAFF_TOKEN))[0] == 429
    assert split.front.gate.wait_s("127.0.0.1") > 0
    watcher = await upgrade(b.port)  # no credential, nothing to slow down
    assert watcher[0] == 101
    for s in (stream, watcher[1]):
        await s.aclose()


async def post_login(http_url: str, token: str) -> int:
    return await http_status(http_url, "/login", {"token": token})


async def test_failed_logins_on_one_edge_slow_that_address_everywhere(split_factory):
    """A wrong token on one edge's HTTP side backs its address off on every
    edge, HTTP and WebSocket alike: the sequencer keeps the back-off."""
    split = await split_factory({"auth.auth_backoff_base_ms": 5_000})
    a, b = split.edges
    assert await post_login(a.http_url, "not-a-token-of-anyone") == 401
    assert await post_login(a.http_url, STAFF_TOKEN) == 429  # (edge A's own gate)
    # the sequencer's hold reaches edge B over the link (a few ms; an attempt
    # during a back-off is answered 429 unchecked, so asking again costs nothing)
    with trio.fail_after(10):
        while await post_login(b.http_url, STAFF_TOKEN) != 429:
            await trio.sleep(0.01)
    statuses = {
        "login on edge B": await post_login(b.http_url, STAFF_TOKEN),
        "WebSocket on edge A": (await upgrade(a.port, token=STAFF_TOKEN))[0],
    }
    assert statuses == {"login on edge B": 429, "WebSocket on edge A": 429}, statuses


# ------------------------------------------------- what an edge is sent

RESERVE = 1_234_567  # fen: a figure nothing else in this ledger has
REFUSED_AMOUNT = 9_137  # a bid below the price: refused, not a bid
PAYER = "ACCT-6222-0000-9999"


def leaves(obj: Any) -> list[Any]:
    """Every int and str inside ``obj`` (structs, lists, maps, keys too)."""
    out: list[Any] = []
    stack = [msgspec.to_builtins(obj, enc_hook=repr)]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
        else:
            out.append(x)
    return out


async def test_an_edge_is_sent_the_public_side_only(nursery, split_factory):
    """A lot with a reserve, deposits with a payer account, bids from bidders
    with their own devices and a refused bid: what crosses the link to an edge
    -- a raw peer joined as an edge before (every Entries and Beat) and one
    joined after (the welcome's copy of the view), and the real edge's views --
    holds no reserve amount, no refused amount, no payer account, and no
    client's address, device, user agent, fingerprint, payload or signature."""
    split = await split_factory(FAST)
    a, b = split.edges
    before = await Peer.open(split.path)
    assert type(await before.join(split.secret, name="spy")) is Welcome

    async def listen() -> None:
        while await before.receive(timeout=60) is not None:
            pass

    nursery.start_soon(listen)

    staff = await connect_staff(nursery, a)
    await create_lot(staff, "PUB1", start_price_fen=10_000)
    await staff_ok(staff, p.SetReserveFrame(next_staff_seq(), "PUB1", RESERVE))
    clients, secrets_ = [], [PAYER, "127.0.0.1", str(RESERVE), str(REFUSED_AMOUNT)]
    for i, edge in enumerate((a, b)):
        bidder = await register_bidder_key(staff, f"pub-bidder-{i}")
        await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), "PUB1", bidder.bidder_id))
        await staff_ok(
            staff, p.ConfirmDepositFrame(next_staff_seq(), "PUB1", bidder.bidder_id, 0, PAYER)
        )
        await wait_for(lambda b_=bidder, e=edge: b_.key_id in e.core.keys)
        device, agent = f"DEVICE-{i}-7f3a", f"PubexTestAgent/{i}.9"
        client = await Client.connect(
            nursery,
            edge.ws_url,
            key=bidder.key,
            key_id=bidder.key_id,
            device=device,
            headers=[("User-Agent", agent)],
        )
        secrets_ += [
            device,
            agent,
            hashlib.blake2b(f"{agent}|{device}".encode(), digest_size=8).hexdigest(),
        ]
        clients.append((bidder, client))
    amount = 10_000
    for bidder, client in clients * 2:
        cs, text = bidder.frame("PUB1", amount)
        secrets_.append(json.loads(text)["sig"])
        assert isinstance(await client.request(cs, text, timeout=10), p.Ack)
        amount += 1_000
    bidder, client = clients[0]
    cs, text = bidder.frame("PUB1", REFUSED_AMOUNT)
    reply = await client.request(cs, text, timeout=10)
    assert isinstance(reply, p.Error) and reply.name == "bid_below_increment", reply
    fenced = split.rt.durable_seq
    await wait_for(lambda: all(e.core.durable_seq >= fenced for e in split.edges))
    # the spy is past it too (a beat says so: the refusal itself sends no entries)
    await wait_for(lambda: any(getattr(m, "durable_seq", 0) >= fenced for m in before.seen))

    after = await Peer.open(split.path)
    welcome = await after.join(split.secret, name="late-spy")
    assert type(welcome) is Welcome and welcome.seq >= fenced
    view = Views.decode(welcome.views)
    assert view.lots["PUB1"].has_reserve and view.lots["PUB1"].bid_count == 4
    await after.send(AskMetrics(1))  # every process's metrics, to any edge that asks
    metrics = await after.until(lambda m: type(m) is MetricsText)
    assert metrics is not None and "sequencer" in metrics.parts

    kinds = Counter(type(m).__name__ for m in before.seen)
    assert set(kinds) <= {"Welcome", "Entries", "Beat"}, kinds  # no one else's answers
    events = [ev for m in before.seen if type(m) is Entries for e in m.entries for ev in e.events]
    assert {type(ev).__name__ for ev in events} >= {"LotCreated", "ReserveEntered", "BidAccepted"}
    assert all(isinstance(ev, PUBLIC_EVENTS) for ev in events)
    shown = {
        "entries and beats": leaves(before.seen),
        "the welcome's view": leaves([view.lots, [i.state() for i in view.items.items.values()]]),
        "edge B's view": leaves(list(b.gateway.views.lots.values())),
        "edge B's snapshot": leaves(b.gateway.views.public_snapshot("PUB1")),
        "the metrics": [text.decode() for text in metrics.parts.values()],
    }
    # a whole token, not a run of digits inside a public key's hex
    tokens = [re.compile(rf"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])") for s in secrets_]
    for where, values in shown.items():
        assert RESERVE not in values and REFUSED_AMOUNT not in values, where
        found = [t.pattern for t in tokens for v in values if isinstance(v, str) and t.search(v)]
        assert not found, f"{where}: {found}"
    for s in secrets_:  # nor anywhere in the bytes the spy read (the words; numbers above)
        assert s.isdigit() or s.encode() not in before.raw, s
    assert len(before.raw) > 1000  # (it did read the stream)
    # ... though the ledger has them (the sequencer knows; the edges are not told)
    ledger = b"".join(raw for _s, _p, _h, raw in split.rt.store.iter_entries())
    kept = [s for s in secrets_ if "DEVICE" not in s and "Agent" not in s]  # hashed only
    assert [s for s in kept if s.encode() not in ledger] == [str(RESERVE)]
    assert msgpack(RESERVE) in ledger  # (a number there, in the SetReserve command)
