"""Serving a Starlette app with hypercorn inside the caller's ``trio.run``: the
gateway's HTTP side and every companion service's share this one helper."""

from __future__ import annotations

import socket
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette


async def serve_http(
    app: Starlette,
    host: str,
    port: int,
    shutdown: trio.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    sock: socket.socket | None = None,
) -> None:
    """``sock``: a bound socket to serve on instead of host:port (the edges of
    one server share their HTTP port through ``SO_REUSEPORT``)."""
    config = Config()
    config.bind = [f"fd://{sock.fileno()}" if sock is not None else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2

    async def started_port(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(
            app,
            config,
            shutdown_trigger=shutdown.wait,  # type: ignore[arg-type]
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started_port)
        bound = sock.getsockname()[1] if sock is not None else str(binds[0]).rsplit(":", 1)[1]
        task_status.started(int(bound))
