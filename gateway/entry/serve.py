"""``pubex serve``: one trio process hosting the runtime, the WebSocket gateway
and the HTTP side; prints ``listening ws=... http=...`` once ready.

Start-up: before anything else, ``--ws-port`` and ``--http-port`` must be free
(else one line, exit 2, and nothing is created); then an existing ledger must
be sound: :func:`startup_check` reads it in a child process
(:mod:`ledger.soundness`) -- everything written since the verified point kept
in the ledger's meta, or all of it with ``--verify-all`` -- and on damage the
server refuses to start (exit 1) with one sentence naming the first bad seq.
The check passed, the head it verified becomes the new verified point.

Sandbox: ``--sandbox`` marks a *new* data directory as a sandbox (in the
ledger's meta); only a sandbox may run ``--accelerate N``.  Every start is
ledgered (``RuntimeStarted``) with its clock rate.

SIGTERM / SIGINT drain: stop accepting connections, let the open batch
commit, close connections with 1001, exit.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from config.settings import Settings
from engine.messages import ENGINE_VERSION, RuntimeStarted
from gateway.edge.auth import Authenticator
from gateway.edge.http import build_app
from gateway.edge.server import Gateway, Listening
from gateway.entry.startup import LedgerUnsound, ServeError, check_ports_free, startup_check
from gateway.entry.tuning import tune_for_edge, tune_for_sequencer
from gateway.link.client import LinkCore
from gateway.link.core import LocalCore
from gateway.link.front import Front
from gateway.link.messages import read_or_create_secret
from gateway.link.server import LinkServer
from gateway.sequencer.clock import SequencerClock
from gateway.sequencer.runtime import Runtime
from gateway.wire import ws
from gateway.wire.access import (
    Access,
    FailureGate,
    TokenBook,
    console_origins,
    dev_token_refusal,
    gate_from_settings,
)
from gateway.wire.http import serve_http
from gateway.wire.metrics import Metrics
from gateway.wire.ws import reuse_port_socket as ws_reuse_port
from ledger.soundness import VERIFIED_KEY, encode_point
from ledger.store import Batch

__all__ = [
    "LedgerUnsound",
    "Listening",
    "ServeError",
    "open_runtime",
    "run_edge",
    "run_sequencer",
    "serve",
    "startup_check",
]

SANDBOX_KEY = b"sandbox"


def open_runtime(
    settings: Settings, data_dir: Path, sandbox: bool, accelerate: int, verify_all: bool = False
) -> Runtime:
    checked = startup_check(data_dir, verify_all)
    fresh = checked is None
    clock = SequencerClock(slew_ppm=settings.clock.max_slew_ppm, accelerate=accelerate)
    rt = Runtime.from_settings(settings, data_dir, clock=clock)
    is_sandbox = rt.store.get_meta(SANDBOX_KEY) == b"1"
    if sandbox and not fresh and not is_sandbox:
        rt.store.close()
        raise ServeError(f"{data_dir} was not created as a sandbox; use a new directory")
    if sandbox and fresh:
        rt.store.commit_batch(Batch(meta={SANDBOX_KEY: b"1"}))
        is_sandbox = True
    if accelerate != 1 and not is_sandbox:
        rt.store.close()
        raise ServeError("--accelerate is refused unless the data directory is a sandbox")
    rt.sandbox = is_sandbox
    if checked is not None and checked.last_seq:
        point = encode_point(checked.last_seq, bytes.fromhex(checked.last_hash))
        if rt.store.get_meta(VERIFIED_KEY) != point:
            rt.store.commit_batch(Batch(meta={VERIFIED_KEY: point}))
    return rt


def open_sequencer(
    settings: Settings,
    data_dir: Path,
    *,
    sandbox: bool,
    accelerate: int,
    allow_dev_tokens: bool,
    verify_all: bool,
) -> Runtime:
    """Open the ledger after the start-up checks (``ServeError`` when refused):
    the sequencer's part, common to the in-process server and ``pubex
    sequencer``.  The caller closes ``rt.store``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rt = open_runtime(settings, data_dir, sandbox, accelerate, verify_all)
    refused = dev_token_refusal(settings.auth, allow_dev_tokens or rt.sandbox)
    if refused:
        rt.store.close()
        raise ServeError(refused)
    return rt


async def start_sequencer(
    nursery: trio.Nursery, settings: Settings, rt: Runtime, gate: FailureGate
) -> Front:
    """Run the runtime in ``nursery`` and ledger this start."""
    tune_for_sequencer()  # after recovery: what it loaded is long-lived
    await nursery.start(rt.run)
    await rt.call(
        RuntimeStarted(
            "system",
            0,
            rt.clock.rate,
            rt.sandbox,
            ENGINE_VERSION,
            settings.limits.sessions_per_identity,
        )
    )
    return Front(rt, settings.limits, gate, settings.auth.handshake_window_s)


async def start_edge(
    nursery: trio.Nursery,
    settings: Settings,
    core: Any,
    metrics: Metrics,
    gate: FailureGate,
    *,
    ws_port: int,
    http_port: int,
    shutdown: trio.Event,
    shared_ports: bool = False,
) -> Listening:
    """The public side -- WebSocket gateway, console, HTTP API -- over ``core``
    (in-process or the link).  ``shared_ports``: bind with ``SO_REUSEPORT``
    (the K edges of one server share its two ports)."""
    host = settings.net.host
    auth = Authenticator(
        staff_tokens=dict(settings.auth.staff_tokens),
        supervisor_tokens=dict(settings.auth.supervisor_tokens),
        allowed_origins=set(settings.auth.allowed_origins),
        window_s=settings.auth.handshake_window_s,
        watchers_allowed=settings.auth.watchers_allowed,
        service_tokens=dict(settings.auth.service_tokens),
    )
    gw = Gateway(core, auth, metrics, settings.limits)
    ws_sock = ws_reuse_port(host, ws_port) if shared_ports else None
    http_sock = ws_reuse_port(host, http_port) if shared_ports else None
    ws_bound = await nursery.start(
        lambda task_status: ws.serve(
            gw.handle,
            host,
            ws_port,
            max_message_bytes=4 * settings.limits.max_frame_bytes,
            sock=ws_sock,
            stop_listening=gw.stop_listening,
            task_status=task_status,
        )
    )
    ws_url = f"ws://{host}:{ws_bound}/ws"
    # The console's alert area follows the supervision service (`pubex platform`
    # starts it on [services] supervision_http_port; 0 = unknown port, none).
    sv_port = settings.services.supervision_http_port
    # one set of allowed Origins for the WebSocket and the HTTP writes (login)
    access = Access(
        TokenBook.from_settings(settings.auth),
        allowed_origins=auth.allowed_origins,
        gate=gate,
        surface="gateway",
    )
    app = build_app(gw, ws_url, f"http://{host}:{sv_port}/" if sv_port else "", access)
    http_bound = await nursery.start(
        lambda task_status: serve_http(
            app, host, http_port, shutdown, task_status=task_status, sock=http_sock
        )
    )
    http_url = f"http://{host}:{http_bound}/"
    # The console's own origin may open WebSockets (browsers send Origin).
    auth.allowed_origins |= console_origins(host, http_bound)
    nursery.start_soon(gw.snapshots)
    nursery.start_soon(gw.flusher)
    return Listening(ws_url, http_url, gw)


async def serve(
    settings: Settings,
    data_dir: Path,
    *,
    ws_port: int,
    http_port: int,
    sandbox: bool = False,
    accelerate: int = 1,
    on_ready: Callable[[Listening], Awaitable[None]] | None = None,
    allow_dev_tokens: bool = True,
    verify_all: bool = False,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """The sequencer and one edge in this process, on one loop (``pubex serve
    --edges 0``, simulations, tests).  ``allow_dev_tokens=False`` (``pubex
    serve`` without ``--demo``): the well-known development tokens are
    refused unless the data directory is a sandbox
    (:func:`gateway.wire.access.dev_token_refusal`)."""
    check_ports_free(settings.net.host, [ws_port, http_port])
    rt = open_sequencer(
        settings,
        data_dir,
        sandbox=sandbox,
        accelerate=accelerate,
        allow_dev_tokens=allow_dev_tokens,
        verify_all=verify_all,
    )
    metrics = Metrics()
    shutdown = trio.Event()
    gate = gate_from_settings(settings.auth, "gateway", metrics.registry)
    try:
        async with trio.open_nursery() as outer:
            front = await start_sequencer(outer, settings, rt, gate)
            async with trio.open_nursery() as nursery:
                listening = await start_edge(
                    nursery,
                    settings,
                    LocalCore(front),
                    metrics,
                    gate,
                    ws_port=ws_port,
                    http_port=http_port,
                    shutdown=shutdown,
                )
                await nursery.start(_on_signals, listening.gateway, shutdown, outer.cancel_scope)
                task_status.started(listening)
                print(f"listening ws={listening.ws_url} http={listening.http_url}", flush=True)
                if on_ready is not None:
                    nursery.start_soon(on_ready, listening)
            outer.cancel_scope.cancel()
    finally:
        rt.store.close()


async def run_sequencer(
    settings: Settings,
    data_dir: Path,
    *,
    sandbox: bool = False,
    accelerate: int = 1,
    allow_dev_tokens: bool = True,
    verify_all: bool = False,
    on_ready: Callable[[Front], Awaitable[None]] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``pubex sequencer``: the runtime, engine, ledger writer and timers, with
    no public socket; edges join on the link (``gateway.link``).  Prints
    ``sequencer ready link=PATH seq=N`` once edges may join."""
    rt = open_sequencer(
        settings,
        data_dir,
        sandbox=sandbox,
        accelerate=accelerate,
        allow_dev_tokens=allow_dev_tokens,
        verify_all=verify_all,
    )
    metrics = Metrics()
    gate = gate_from_settings(settings.auth, "gateway", metrics.registry)
    try:
        async with trio.open_nursery() as outer:
            front = await start_sequencer(outer, settings, rt, gate)
            link = LinkServer(front, data_dir, read_or_create_secret(data_dir))
            path = await outer.start(link.serve)
            task_status.started(link)
            print(f"sequencer ready link={path} seq={front.rt.durable_seq}", flush=True)
            if on_ready is not None:
                outer.start_soon(on_ready, front)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    print("sequencer stopping: finishing the open batch", file=sys.stderr)
                    with trio.move_on_after(5):
                        while LocalCore(front).busy():
                            await trio.sleep(0.01)
                    break
            outer.cancel_scope.cancel()
    finally:
        rt.store.close()


async def run_edge(
    settings: Settings,
    data_dir: Path,
    *,
    ws_port: int,
    http_port: int,
    name: str = "edge",
    allow_dev_tokens: bool = False,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``pubex edge``: the public ports (shared with the other edges through
    ``SO_REUSEPORT``) over the link to the sequencer of ``data_dir``.  Prints
    ``listening ws=... http=...`` once linked and listening."""
    metrics = Metrics()
    shutdown = trio.Event()
    gate = gate_from_settings(settings.auth, "gateway", metrics.registry)
    core = LinkCore(data_dir, name)
    core.share_gate(gate)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run)
        refused = dev_token_refusal(settings.auth, allow_dev_tokens or core.sandbox)
        if refused:
            raise ServeError(refused)
        tune_for_edge()
        listening = await start_edge(
            nursery,
            settings,
            core,
            metrics,
            gate,
            ws_port=ws_port,
            http_port=http_port,
            shutdown=shutdown,
            shared_ports=True,
        )
        await nursery.start(_on_signals, listening.gateway, shutdown, nursery.cancel_scope)
        task_status.started(listening)
        print(f"listening ws={listening.ws_url} http={listening.http_url}", flush=True)


async def _on_signals(
    gw: Gateway,
    shutdown: trio.Event,
    scope: trio.CancelScope,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Installed before the listening line: a SIGTERM right after start drains too."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            print("draining: no new connections, finishing the open batch", file=sys.stderr)
            await gw.drain()
            shutdown.set()
            scope.cancel()
            return
