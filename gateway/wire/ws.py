"""The one module that knows the WebSocket library (trio-websocket).

Everything else talks to ``Request`` / ``Socket`` below, so the library can be
swapped (e.g. for wsproto directly) by rewriting this file alone.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, HandshakeError
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

LISTEN_BACKLOG = 1024

__all__ = [
    "ConnectionClosed",
    "HandshakeError",
    "Request",
    "Socket",
    "connect",
    "frame_text",
    "serve",
]

_U16 = struct.Struct(">BBH").pack
_U64 = struct.Struct(">BBQ").pack

_library_close_event = trio_websocket.WebSocketConnection._handle_close_connection_event


async def _close_event(self: Any, event: CloseConnection) -> None:
    """Say why before hanging up.  wsproto reports a frame it cannot parse --
    invalid UTF-8 in a text frame (1007), a protocol error (1002) -- as if the
    peer had closed with that code, and the library then dropped TCP without a
    close frame: the peer never learnt why.  A real close from the peer leaves
    wsproto REMOTE_CLOSING and is answered by the library as before."""
    if self._wsproto.state == ConnectionState.OPEN:
        with contextlib.suppress(ConnectionClosed):
            await self._send(CloseConnection(code=event.code, reason=event.reason))
    await _library_close_event(self, event)


trio_websocket.WebSocketConnection._handle_close_connection_event = _close_event  # type: ignore[method-assign]


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
    """A WebSocket connection.  Besides trio-websocket's one-message ``send``, the
    gateway writes ready-made frames itself: ``try_send`` writes without waiting
    (what the socket does not take becomes this socket's *tail*), ``send_frames``
    writes under the connection's write lock, the tail first.  A tail is an
    unfinished frame on the wire, so nothing else may be written before it: not
    our next frames (``try_send`` refuses while a tail is pending) and not
    trio-websocket's own pings, pongs and close frames (its ``_send`` is wrapped
    to write the tail first)."""

    def __init__(self, raw: trio_websocket.WebSocketConnection) -> None:
        self._raw = raw
        self._tail = b""
        self._writing = False  # inside send_all: cancelling now leaves half a frame
        self._broken = False  # aborted: nothing more may be written
        # The plain socket under the stream, for direct writes; None (TLS or
        # another stream) means every write goes through send_frames.
        self._direct = getattr(getattr(raw._stream, "socket", None), "_sock", None)
        library_send = raw._send

        async def send_after_tail(event: Any) -> None:
            if self._broken:
                raise ConnectionClosed(raw._close_reason)
            if self._tail:
                await self.send_frames([])
            await library_send(event)

        raw._send = send_after_tail  # type: ignore[method-assign]

    async def receive(self) -> str | bytes:
        return await self._raw.get_message()

    async def send(self, text: str) -> None:
        await self._raw.send_message(text)

    @property
    def has_tail(self) -> bool:
        return bool(self._tail)

    @property
    def tail_bytes(self) -> int:
        """Bytes of a frame the socket took only part of, not yet written."""
        return len(self._tail)

    @property
    def writable_now(self) -> bool:
        """``try_send`` may write: no tail, no write in progress, not closing."""
        raw = self._raw
        return not (
            self._tail
            or self._direct is None
            or raw._close_reason is not None
            or raw._stream_lock.locked()
        )

    def try_send(self, data: bytes) -> bool:
        """Write ``data`` now without waiting.  True when it is all with the
        kernel; False when it could not be tried now (a write in progress, a
        tail pending, the connection closing -- the caller leaves it to
        ``send_frames``, which meets any error properly) or the socket took only
        part of it: the rest is this socket's tail, written first by the next
        ``send_frames``.

        This saves a task switch per message: a fan-out to a thousand consoles
        writes from one task instead of waking a thousand."""
        if not self.writable_now:
            return False
        try:
            sent: int = self._direct.send(data)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # broken: the tail's send_frames raises ConnectionClosed
        if sent < len(data):
            self._tail = data[sent:]
            return False
        return True

    async def send_frames(self, frames: list[bytes]) -> None:
        """Write the tail, then ready-made frames (``frame_text``), in one write.

        trio-websocket frames and writes one message per call; a sender with
        several messages pending (acks, events, snapshots) paid a frame
        serialisation and a send syscall for each.  Data frames from a server
        carry no state in wsproto, so these go to the stream directly, under
        the connection's own write lock -- after a close frame (ours or the
        peer's) nothing more is written."""
        raw = self._raw
        async with raw._stream_lock:
            data = b"".join([self._tail, *frames])
            self._tail = b""
            if not data:
                return
            if raw._close_reason is not None or self._broken:
                raise ConnectionClosed(raw._close_reason)
            self._writing = True
            try:
                await raw._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await raw._abort_web_socket()
                raise ConnectionClosed(raw._close_reason) from None
            self._writing = False

    async def ping(self) -> None:
        await self._raw.ping()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._raw.aclose(code, reason)

    async def close_within(self, seconds: float, code: int, reason: str) -> None:
        """Close with ``code`` if the peer lets us within ``seconds``; else (a
        peer that never reads, or a write cut off halfway) drop the TCP
        connection.  Never waits longer, whatever the peer does."""
        if self._writing:
            await self.abort()  # half a frame is on the wire: a close frame would be garbage
            return
        with trio.move_on_after(seconds) as scope:
            await self._raw.aclose(code, reason)
        if scope.cancelled_caught:
            await self.abort()

    async def abort(self) -> None:
        """Drop the connection now: no close frame, nothing more written."""
        self._broken = True
        raw = self._raw
        with trio.CancelScope(shield=True):
            await raw._abort_web_socket()
            await raw._close_stream()

    @property
    def closed(self) -> bool:
        return self._raw.closed is not None


async def serve(
    handler: Callable[[Request], Awaitable[None]],
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    sock: socket.socket | None = None,
    stop_listening: trio.Event | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(port)`` once listening.
    ``sock``: a bound socket to listen on instead (``reuse_port_socket``: the
    edges of one server share its port).  ``stop_listening`` set: the
    listeners close (the kernel sends new connections to the port's other
    listeners) while the connections already open go on."""

    async def wrapped(raw: trio_websocket.WebSocketRequest) -> None:
        await handler(Request(raw))

    if sock is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    else:
        sock.listen(LISTEN_BACKLOG)
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    async with trio.open_nursery() as handlers:
        server = trio_websocket.WebSocketServer(
            wrapped,
            listeners,
            handler_nursery=handlers,
            max_message_size=max_message_bytes,
            connect_timeout=10,
            disconnect_timeout=5,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            task_status.started(server.port)
            if stop_listening is not None:
                await stop_listening.wait()
                nursery.cancel_scope.cancel()
        for listener in listeners:
            with contextlib.suppress(Exception):
                await listener.aclose()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with ``SO_REUSEPORT``: every process
    that binds the same port this way shares its connections (the kernel
    spreads them), so K edges serve one public port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def connect(
    nursery: trio.Nursery, url: str, headers: list[tuple[str, str]] | None = None
) -> Socket:
    extra = [(k.encode(), v.encode()) for k, v in (headers or [])]
    raw = await trio_websocket.connect_websocket_url(nursery, url, extra_headers=extra)
    return Socket(raw)
