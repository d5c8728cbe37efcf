"""A trio client for pubex (the terminal, simulated bidders, tests).

The frame building and signing live in ``gateway.wire.protocol`` (trio-free, shared
with Locust users); this adds the connection: the signed handshake, a reader
that sorts replies by ``client_seq`` and everything else into ``events``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

import trio
from nacl.signing import SigningKey

from gateway.wire import protocol as p
from gateway.wire import ws


class Client:
    def __init__(self, sock: ws.Socket, hello: p.Hello) -> None:
        self.sock = sock
        self.hello = hello
        self.replies: dict[int, p.Ack | p.Error] = {}
        self.anonymous_errors: list[p.Error] = []
        self.events: list[p.ServerFrame] = []
        self._waiters: dict[int, trio.Event] = {}
        self.snapshots: dict[str, p.LotSnapshot] = {}
        self.books: dict[str, p.BookSnapshot] = {}  # e-mall items, conflated
        self.changed = trio.Event()
        self.closed = False

    @classmethod
    async def connect(
        cls,
        nursery: trio.Nursery,
        url: str,
        *,
        key: SigningKey | None = None,
        key_id: str = "",
        token: str = "",
        device: str = "",
        session: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> Client:
        """``session``: the client session its client_seqs count in ("" = the
        default); reconnect with the same one to continue its numbering."""
        query: dict[str, str] = {}
        if key is not None:
            query = p.auth_params(key, key_id, int(time.time() * 1000), secrets.token_hex(12))
        if device:
            query["device"] = device
        if session:
            query["session"] = session
        full = f"{url}?{urlencode(query)}" if query else url
        if token:  # a header, never the URL (proxies and logs keep URLs)
            headers = [*(headers or []), ("Authorization", f"Bearer {token}")]
        sock = await ws.connect(nursery, full, headers)
        first = p.decode_server(await sock.receive())
        assert isinstance(first, p.Hello), f"expected hello, got {first!r}"
        client = cls(sock, first)
        nursery.start_soon(client._read)
        return client

    async def _read(self) -> None:
        try:
            while True:
                frame = p.decode_server(await self.sock.receive())
                self._route(frame)
        except ws.ConnectionClosed:
            self.closed = True
            for ev in self._waiters.values():
                ev.set()
            self.changed.set()

    def _route(self, frame: p.ServerFrame) -> None:
        if isinstance(frame, p.Ack | p.Error) and frame.client_seq:
            self.replies[frame.client_seq] = frame
            waiter = self._waiters.pop(frame.client_seq, None)
            if waiter is not None:
                waiter.set()
        elif isinstance(frame, p.Error):
            self.anonymous_errors.append(frame)
        elif isinstance(frame, p.LotSnapshot):
            self.snapshots[frame.lot] = frame
        elif isinstance(frame, p.BookSnapshot):
            self.books[frame.item] = frame
        else:
            self.events.append(frame)
        self.changed.set()
        self.changed = trio.Event()

    async def send_text(self, text: str) -> None:
        await self.sock.send(text)

    async def send(self, frame: p.Frame) -> None:
        await self.sock.send(p.encode_text(frame))

    async def request(self, client_seq: int, text: str, timeout: float = 30) -> p.Ack | p.Error:
        """Send a frame carrying ``client_seq`` and wait for its ack or error."""
        ev = self._waiters[client_seq] = trio.Event()
        await self.sock.send(text)
        with trio.fail_after(timeout):
            await ev.wait()
        reply = self.replies.get(client_seq)
        if reply is None:
            raise ws.ConnectionClosed(None)  # type: ignore[arg-type]
        return reply

    async def bid(
        self,
        key: SigningKey,
        key_id: str,
        lot: str,
        amount_fen: int,
        client_seq: int,
        timeout: float = 30,
    ) -> p.Ack | p.Error:
        return await self.request(
            client_seq, p.bid_frame(key, key_id, lot, amount_fen, client_seq), timeout
        )

    async def staff(self, frame: Any, timeout: float = 30) -> p.Ack | p.Error:
        return await self.request(frame.client_seq, p.encode_text(frame), timeout)

    async def subscribe(self, lots: list[str]) -> None:
        await self.send(p.Subscribe(lots))

    async def close(self) -> None:
        await self.sock.close()
