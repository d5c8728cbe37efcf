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
from gateway.edge.metrics import Metrics
from gateway.edge.server import Gateway, Listening
from gateway.entry.startup import LedgerUnsound, ServeError, check_ports_free, startup_check
from gateway.entry.tuning import tune_for_sequencer
from gateway.sequencer.clock import SequencerClock
from gateway.sequencer.runtime import Runtime
from gateway.wire import ws
from gateway.wire.access import (
    Access,
    TokenBook,
    console_origins,
    dev_token_refusal,
    gate_from_settings,
)
from gateway.wire.http import serve_http
from ledger.soundness import VERIFIED_KEY, encode_point
from ledger.store import Batch

__all__ = ["LedgerUnsound", "Listening", "ServeError", "open_runtime", "serve", "startup_check"]

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
    """``allow_dev_tokens=False`` (``pubex serve`` without ``--demo``): the
    well-known development tokens are refused unless the data directory is a
    sandbox (:func:`gateway.wire.access.dev_token_refusal`)."""
    check_ports_free(settings.net.host, [ws_port, http_port])
    data_dir.mkdir(parents=True, exist_ok=True)
    rt = open_runtime(settings, data_dir, sandbox, accelerate, verify_all)
    refused = dev_token_refusal(settings.auth, allow_dev_tokens or rt.sandbox)
    if refused:
        rt.store.close()
        raise ServeError(refused)
    host = settings.net.host
    metrics = Metrics()
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            tune_for_sequencer()  # after recovery: what it loaded is long-lived
            await nursery.start(rt.run)
            await rt.call(
                RuntimeStarted(
                    "system",
                    0,
                    accelerate,
                    rt.sandbox,
                    ENGINE_VERSION,
                    settings.limits.sessions_per_identity,
                )
            )
            gate = gate_from_settings(settings.auth, "gateway", metrics.registry)
            auth = Authenticator(
                gate=gate,
                staff_tokens=dict(settings.auth.staff_tokens),
                supervisor_tokens=dict(settings.auth.supervisor_tokens),
                allowed_origins=set(settings.auth.allowed_origins),
                window_s=settings.auth.handshake_window_s,
                watchers_allowed=settings.auth.watchers_allowed,
                service_tokens=dict(settings.auth.service_tokens),
            )
            gw = Gateway(rt, auth, metrics, settings.limits)
            ws_bound = await nursery.start(
                lambda task_status: ws.serve(
                    gw.handle,
                    host,
                    ws_port,
                    max_message_bytes=4 * settings.limits.max_frame_bytes,
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
            http_bound = await nursery.start(serve_http, app, host, http_port, shutdown)
            http_url = f"http://{host}:{http_bound}/"
            # The console's own origin may open WebSockets (browsers send Origin).
            auth.allowed_origins |= console_origins(host, http_bound)
            nursery.start_soon(gw.snapshots)
            nursery.start_soon(gw.flusher)
            await nursery.start(_on_signals, gw, shutdown, nursery.cancel_scope)
            listening = Listening(ws_url, http_url, gw)
            task_status.started(listening)
            print(f"listening ws={ws_url} http={http_url}", flush=True)
            if on_ready is not None:
                nursery.start_soon(on_ready, listening)
    finally:
        rt.store.close()


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
