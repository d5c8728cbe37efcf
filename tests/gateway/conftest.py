"""Gateway test harness: a real server (runtime + WebSocket + HTTP) in-process
under trio on 127.0.0.1 port 0 with a fresh data directory, and helpers to
create lots with funded bidders and to open clients of every role."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from gateway.clients.tclient import Client
from gateway.edge.server import Gateway, Listening
from gateway.entry.serve import serve
from gateway.wire import protocol as p

STAFF_TOKEN = "dev-staff-token"
SUPERVISOR_TOKEN = "dev-supervisor-token"
SECOND = 1_000_000_000
HOUR_NS = 3600 * SECOND

# The staff origin ("staff:staff-01") needs strictly increasing client_seq for
# the life of a ledger; one process-wide counter is simplest (fresh ledger per test).
_staff_seq = itertools.count(1)


def next_staff_seq() -> int:
    return next(_staff_seq)


@dataclass
class Bidder:
    bidder_id: str
    key_id: str
    key: SigningKey
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        return next(self.seq)

    def frame(self, lot: str, amount_fen: int, client_seq: int | None = None) -> tuple[int, str]:
        cs = self.next_seq() if client_seq is None else client_seq
        return cs, p.bid_frame(self.key, self.key_id, lot, amount_fen, cs)


@dataclass
class Server:
    listening: Listening
    data_dir: Path
    scope: trio.CancelScope
    done: trio.Event

    @property
    def ws_url(self) -> str:
        return self.listening.ws_url

    @property
    def http_url(self) -> str:
        return self.listening.http_url

    @property
    def gateway(self) -> Gateway:
        return self.listening.gateway

    @property
    def origin(self) -> str:
        return self.http_url.rstrip("/")

    async def stop(self) -> None:
        self.scope.cancel()
        with trio.fail_after(15):
            await self.done.wait()


async def start_server(
    nursery: trio.Nursery,
    data_dir: Path,
    overrides: dict[str, Any] | None = None,
    *,
    sandbox: bool = False,
    accelerate: int = 1,
) -> Server:
    # No back-off after failed authentications here (tests refuse handshakes in a row);
    # tests/gateway/test_access.py runs with the default.
    base = {"net.ws_port": 0, "net.http_port": 0, "auth.auth_backoff_base_ms": 0}
    settings = load_settings(overrides={**base, **(overrides or {})})
    done = trio.Event()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        scope = trio.CancelScope()

        class Status:
            def started(self, value: Listening) -> None:
                task_status.started((value, scope))

        try:
            with scope:
                await serve(
                    settings,
                    data_dir,
                    ws_port=0,
                    http_port=0,
                    sandbox=sandbox,
                    accelerate=accelerate,
                    task_status=Status(),
                )
        finally:
            done.set()

    with trio.fail_after(15):
        listening, scope = await nursery.start(run)
    return Server(listening, data_dir, scope, done)


@pytest.fixture
def server_factory(nursery, tmp_path):
    """``await server_factory(overrides)`` -> a running Server (fresh data dir)."""

    async def make(
        overrides: dict[str, Any] | None = None, data_dir: Path | None = None, **kw: Any
    ) -> Server:
        return await start_server(nursery, data_dir or tmp_path / "data", overrides, **kw)

    return make


@pytest.fixture
async def server(server_factory) -> Server:
    return await server_factory({"limits.bids_per_s": 1000, "limits.bid_burst": 1000})


# ------------------------------------------------------------------ clients


async def connect_staff(nursery: trio.Nursery, srv: Server) -> Client:
    with trio.fail_after(10):
        return await Client.connect(nursery, srv.ws_url, token=STAFF_TOKEN)


async def connect_supervisor(nursery: trio.Nursery, srv: Server) -> Client:
    with trio.fail_after(10):
        return await Client.connect(nursery, srv.ws_url, token=SUPERVISOR_TOKEN)


async def connect_watcher(nursery: trio.Nursery, srv: Server) -> Client:
    with trio.fail_after(10):
        return await Client.connect(nursery, srv.ws_url)


async def connect_bidder(nursery: trio.Nursery, srv: Server, b: Bidder) -> Client:
    with trio.fail_after(10):
        return await Client.connect(nursery, srv.ws_url, key=b.key, key_id=b.key_id)


def signed_query(key: SigningKey, key_id: str, ts_ms: int | None = None, nonce: str = "") -> str:
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    return urlencode(p.auth_params(key, key_id, ts, nonce or secrets.token_hex(12)))


async def staff_ok(staff: Client, frame: p.Frame) -> p.Ack:
    reply = await staff.staff(frame, timeout=10)
    assert isinstance(reply, p.Ack), reply
    return reply


async def register_bidder_key(staff: Client, bidder_id: str, key_id: str | None = None) -> Bidder:
    key = SigningKey.generate()
    key_id = key_id or f"k-{bidder_id}"
    await staff_ok(
        staff,
        p.RegisterKeyFrame(next_staff_seq(), key_id, bidder_id, bytes(key.verify_key).hex()),
    )
    return Bidder(bidder_id, key_id, key)


async def create_lot(
    staff: Client,
    lot: str,
    *,
    start_price_fen: int = 10_000,
    increment_fen: int = 100,
    duration_ns: int = 2 * HOUR_NS,
    publish: bool = True,
) -> None:
    now = time.time_ns()
    await staff_ok(
        staff,
        p.CreateLotFrame(
            next_staff_seq(),
            lot,
            "english",
            f"title {lot}",
            start_price_fen,
            increment_fen,
            now - SECOND,
            now + duration_ns,
        ),
    )
    if publish:
        await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), lot))


async def fund(staff: Client, lot: str, bidder_id: str) -> None:
    await staff_ok(staff, p.RegisterBidderFrame(next_staff_seq(), lot, bidder_id))
    await staff_ok(staff, p.ConfirmDepositFrame(next_staff_seq(), lot, bidder_id, 0))


async def lot_with_bidders(
    staff: Client, lot: str, n: int, *, prefix: str | None = None, **lot_kw: Any
) -> list[Bidder]:
    """An open English lot with ``n`` registered, funded bidders (keys registered)."""
    await create_lot(staff, lot, **lot_kw)
    out = []
    for i in range(n):
        bidder_id = f"{prefix or lot}-bidder-{i}"
        b = await register_bidder_key(staff, bidder_id)
        await fund(staff, lot, bidder_id)
        out.append(b)
    return out


async def wait_for(predicate, timeout: float = 10, poll: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)
