"""The one module that knows the WebSocket library (trio-websocket).

Everything else talks to ``Request`` / ``Socket`` below, so the library can be
swapped (e.g. for wsproto directly) by rewriting this file alone.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

__all__ = ["ConnectionClosed", "Request", "Socket", "connect", "frame_text", "serve"]

_U16 = struct.Struct(">BBH").pack
_U64 = struct.Struct(">BBQ").pack


def frame_text(text: str) -> bytes:
    """``text`` as one complete, unmasked server-to-client text frame (RFC 6455
    5.2: FIN + opcode 1, 7/16/64-bit length).  A frame is built once and can be
    sent to any number of connections: a fan-out frames its message once."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 1 << 16:
        return _U16(0x81, 126, n) + data
    return _U64(0x81, 127, n) + data


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

    def try_send(self, data: bytes) -> int | None:
        """Write what the socket takes right now, without waiting: the number of
        bytes written (maybe fewer than ``data``, maybe 0), or None when nothing
        may be written now (a send is in progress, the connection is closing, or
        the socket failed -- ``send_frames`` then meets the error properly).

        This saves a task switch per message: a fan-out to a thousand consoles
        writes from one task instead of waking a thousand."""
        raw = self._raw
        if raw._close_reason is not None or raw._stream_lock.locked():
            return None
        try:
            sent: int = raw._stream.socket._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            return None
        return sent

    async def send_frames(self, frames: list[bytes]) -> None:
        """Write ready-made frames (``frame_text``) in one write.

        trio-websocket frames and writes one message per call; a sender with
        several messages pending (acks, events, snapshots) paid a frame
        serialisation and a send syscall for each.  Data frames from a server
        carry no state in wsproto, so these go to the stream directly, under
        the connection's own write lock -- after a close frame (ours or the
        peer's) nothing more is written."""
        raw = self._raw
        async with raw._stream_lock:
            if raw._close_reason is not None:
                raise ConnectionClosed(raw._close_reason)
            try:
                await raw._stream.send_all(frames[0] if len(frames) == 1 else b"".join(frames))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await raw._abort_web_socket()
                raise ConnectionClosed(raw._close_reason) from None

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
