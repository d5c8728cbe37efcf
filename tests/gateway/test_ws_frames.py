"""The gateway's own server-to-client frames (gateway/wire/ws.py ``frame_text``) and the
direct-write path: what a standard WebSocket client parses from them, at every
length-encoding boundary of RFC 6455 5.2, and in order over a real connection."""

from __future__ import annotations

import functools

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from gateway.wire import ws


def _client_parse(data: bytes) -> list[str]:
    """Feed ``data`` to a wsproto client connection; the text messages it yields."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    out: list[str] = []
    partial = ""
    for event in client.events():
        assert isinstance(event, TextMessage), event
        partial += event.data
        if event.message_finished:
            out.append(partial)
            partial = ""
    return out


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_frame_text_parses_at_every_length_boundary(n: int) -> None:
    text = ("价" * (n // 3)) + ("x" * (n % 3))  # multi-byte UTF-8: the length is in bytes
    frame = ws.frame_text(text)
    assert frame[0] == 0x81  # FIN + text, never masked from a server
    assert _client_parse(frame) == [text]


def test_frames_back_to_back_stay_separate_and_in_order() -> None:
    texts = [f'{{"n":{i}}}' + "y" * (i * 977 % 70_000) for i in range(40)]
    assert _client_parse(b"".join(ws.frame_text(t) for t in texts)) == texts


async def test_direct_writes_and_sender_writes_arrive_in_order() -> None:
    """try_send (the flusher's path) and send_frames (the sender task's path)
    interleaved on one real connection: the client sees every frame once, in
    the order written, including the tail of a partial direct write."""
    got: list[str] = []
    done = trio.Event()
    total = 300
    texts = [f"{i}:" + "z" * (i * 7919 % 200_000) for i in range(total)]

    async def handler(request: ws.Request) -> None:
        sock = await request.accept()
        for i, t in enumerate(texts):
            frame = ws.frame_text(t)
            if i % 3 == 0 or not sock.writable_now:
                await sock.send_frames([frame])  # the sender task's path: the tail goes first
            elif not sock.try_send(frame):
                assert sock.has_tail  # a partial write: the socket keeps the rest
            if i % 25 == 0:
                await sock.ping()  # trio-websocket's own frame must never split ours
        await sock.send_frames([])  # a tail still pending
        assert not sock.has_tail
        await done.wait()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(ws.serve, max_message_bytes=1 << 20), handler, "127.0.0.1", 0
        )
        client = await ws.connect(nursery, f"ws://127.0.0.1:{port}/")
        with trio.fail_after(30):
            while len(got) < total:
                msg = await client.receive()
                assert isinstance(msg, str)
                got.append(msg)
                if len(got) % 50 == 0:
                    await trio.sleep(0.01)  # a slow reader: the server's writes go partial
        done.set()
        await client.close()
        nursery.cancel_scope.cancel()
    assert got == texts
