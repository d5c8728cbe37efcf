"""The one module that knows the WebSocket library (trio-websocket).

Everything else talks to ``Request`` / ``Socket`` below, so the library can be
swapped (e.g. for wsproto directly) by rewriting this file alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

__all__ = ["ConnectionClosed", "Request", "Socket", "connect", "serve"]


class Request:
    """An upgrade request not yet accepted: authenticate before any frame flows."""

    def __init__(self, raw: trio_websocket.WebSocketRequest) -> None:
        self._raw = raw

    @property
    def path(self) -> str:
        return str(self._raw.path)

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased header names; repeated headers joined with ', '."""
        out: dict[str, str] = {}
        for k, v in self._raw.headers:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    @property
    def remote_ip(self) -> str:
        remote = self._raw.remote
        return str(getattr(remote, "address", remote))

    async def reject(self, status: int, body: str) -> None:
        """Refuse the upgrade; a client that already left has nothing to be told
        (letting ConnectionClosed escape here ended the whole server)."""
        with contextlib.suppress(
            ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            await self._raw.reject(status, body=body.encode())

    async def accept(self) -> Socket:
        return Socket(await self._raw.accept())


class Socket:
    def __init__(self, raw: trio_websocket.WebSocketConnection) -> None:
        self._raw = raw

    async def receive(self) -> str | bytes:
        return await self._raw.get_message()

    async def send(self, text: str) -> None:
        await self._raw.send_message(text)

    async def ping(self) -> None:
        await self._raw.ping()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._raw.aclose(code, reason)

    @property
    def closed(self) -> bool:
        return self._raw.closed is not None


async def serve(
    handler: Callable[[Request], Awaitable[None]],
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(port)`` once listening."""

    async def wrapped(raw: trio_websocket.WebSocketRequest) -> None:
        await handler(Request(raw))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                wrapped,
                host,
                port,
                None,
                max_message_size=max_message_bytes,
                connect_timeout=10,
                disconnect_timeout=5,
                task_status=task_status,
            )
        )
        task_status.started(server.port)


async def connect(
    nursery: trio.Nursery, url: str, headers: list[tuple[str, str]] | None = None
) -> Socket:
    extra = [(k.encode(), v.encode()) for k, v in (headers or [])]
    raw = await trio_websocket.connect_websocket_url(nursery, url, extra_headers=extra)
    return Socket(raw)
