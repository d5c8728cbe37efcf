"""Small synchronisation helpers over ``gateway.clients.tclient.Client``, and raw
byte-level WebSocket clients."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import struct

import trio

from gateway.clients.tclient import Client
from gateway.wire import protocol as p

_ping_t = itertools.count(1_000_000)


async def sync(client: Client, timeout: float = 10) -> None:
    """Round-trip a ping: every frame the server queued to ``client`` before it
    read the ping has been received once the matching pong arrives."""
    t = next(_ping_t)
    await client.send(p.Ping(t))
    with trio.fail_after(timeout):
        while not any(isinstance(f, p.Pong) and f.t == t for f in client.events):
            if client.closed:
                raise AssertionError("connection closed while waiting for pong")
            await client.changed.wait()


async def anonymous_error(client: Client, timeout: float = 10) -> p.Error:
    """The next error without a client_seq (frame-level refusals)."""
    n = len(client.anonymous_errors)
    await sync(client, timeout)
    assert len(client.anonymous_errors) == n + 1, client.anonymous_errors[n:]
    return client.anonymous_errors[-1]


async def send_and_error(client: Client, text: str | bytes) -> p.Error:
    """Send a frame the gateway refuses; its error (with or without client_seq)."""
    n = len(client.anonymous_errors)
    before = dict(client.replies)
    if isinstance(text, bytes):
        await client.sock._raw.send_message(text)
    else:
        await client.send_text(text)
    await sync(client)
    new = client.anonymous_errors[n:] + [
        r for cs, r in client.replies.items() if before.get(cs) is not r
    ]
    assert len(new) == 1, new
    assert isinstance(new[0], p.Error), new
    return new[0]


def events_of(client: Client, kind: str) -> list[dict]:
    return [
        f.event for f in client.events if isinstance(f, p.EventFrame) and f.event["type"] == kind
    ]


# ------------------------------------------------ raw WebSocket clients
# Byte-level clients for what tclient cannot do: stall, send broken frames, read
# close codes.


def upgrade_request(port: int, query: str = "", token: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/ws" + (f"?{query}" if query else "")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n{auth}"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_frame(data: bytes, declared: int | None = None, opcode: int = 0x1) -> bytes:
    """A client frame (masked, FIN) of ``data``; ``declared`` lies about its length."""
    n = len(data) if declared is None else declared
    mask = os.urandom(4)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def read_headers(stream: trio.SocketStream) -> bytes:
    buf = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            buf += chunk
    return buf


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def stalled(
    port: int, query: str, subscribe: list[str], token: str = ""
) -> trio.SocketStream:
    """An upgraded connection that subscribes, then never reads (4 KiB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    await stream.socket.connect(("127.0.0.1", port))
    await stream.send_all(upgrade_request(port, query, token))
    head = await read_headers(stream)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    await stream.send_all(
        masked_frame(json.dumps({"type": "subscribe", "lots": subscribe}).encode())
    )
    return stream


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete server frames at the start of ``buf`` as (opcode, payload),
    and what is left (an incomplete frame)."""
    frames = []
    while len(buf) >= 2:
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        frames.append((buf[0] & 0x0F, buf[off : off + n]))
        buf = buf[off + n :]
    return frames, buf


async def close_code(stream: trio.SocketStream, timeout: float = 20) -> int | None:
    """Read (and discard) everything until the server's close frame; its code."""
    buf = b""
    with trio.move_on_after(timeout):
        while True:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                return None
            frames, buf = split_frames(buf + chunk)
            for op, body in frames:
                if op == 0x8:
                    return struct.unpack(">H", body[:2])[0] if len(body) >= 2 else 1005
    return -1
