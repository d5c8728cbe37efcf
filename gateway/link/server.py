"""Theory of operation: the sequencer's side of the link (``LinkServer``).

Each edge that joins gets its own ``EdgeLink``: a receiver that decodes the
edge's batches and hands each message to the ``Front`` (so budgets, the
nonce memory and the per-address counts hold across every edge), and a
sender that writes what the edge is owed -- answers, admissions, the public
side of each commit, beats -- as one frame per pass.

What an edge is owed is pre-encoded once (``msgspec.Raw``) and shared: a
commit's ``Entries`` is encoded once for all edges.  It is bounded
(``max_owed_bytes``); an edge that does not read (past the bound, or a write
stuck for ``STUCK_S``) loses its link -- the sequencer never waits for an
edge -- and its commands already queued still run; the edge answers them
``outcome_unknown``, reconnects and resyncs.

An edge that sends what the link cannot read (an undecodable batch, a
second join) is logged and its link dropped; a command the link does not
take (a system command, a client_seq past the wire's bound) is refused; an
edge that goes away mid-write just leaves -- the process goes on.  (The
receiver and sender run in one nursery, so what either raises arrives in an
exception group: ``except*``.)  A peer that is another user, or that does
not present the secret, gets ``Goodbye`` and nothing else.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from engine.state import KeyRecord
from gateway.link.front import Answer, Front, PublicEntry, refusal
from gateway.link.messages import (
    DECODE_ERRORS,
    EDGE_DECODER,
    ENCODER,
    LINK_VERSION,
    MAX_EDGE_BATCH_BYTES,
    MAX_REPORT_BYTES,
    Admit,
    Admitted,
    Answered,
    AskMetrics,
    AuthAttempt,
    Beat,
    Entries,
    Goodbye,
    Hold,
    Join,
    MetricsText,
    Msg,
    Release,
    Report,
    Submit,
    Welcome,
    link_dir,
    private_dir,
    socket_path,
)
from gateway.public.views import Views
from gateway.wire.metrics import Metrics
from gateway.wire.protocol import INT63_MAX, GatewayError
from ledger.record import decode_envelope

log = logging.getLogger("pubex.link")

JOIN_TIMEOUT_S = 5.0
STUCK_S = 5.0  # a write to an edge that takes longer drops its link
BEAT_S = 0.1
MAX_OWED_BYTES = 256 << 20


class LinkError(Exception):
    """What an edge sent breaks the link's rules: drop it."""


async def read_batch(stream: trio.abc.ReceiveStream, buf: bytearray, limit: int) -> bytes | None:
    """One length-prefixed batch (None at a clean end of stream)."""
    while len(buf) < 4:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buf:
                raise LinkError("stream ended inside a batch header")
            return None
        buf += chunk
    size = int.from_bytes(buf[:4], "big")
    if size > limit:
        raise LinkError(f"batch of {size} bytes (limit {limit})")
    while len(buf) < 4 + size:
        chunk = await stream.receive_some(max(65536, 4 + size - len(buf)))
        if not chunk:
            raise LinkError("stream ended inside a batch")
        buf += chunk
    body = bytes(buf[4 : 4 + size])
    del buf[: 4 + size]
    return body


class EdgeLink:
    def __init__(self, stream: trio.SocketStream, name: str, max_owed_bytes: int) -> None:
        self.stream = stream
        self.name = name
        self.max_owed_bytes = max_owed_bytes
        self.owed: list[msgspec.Raw] = []
        self.owed_bytes = 0
        self.wake = trio.Event()
        self.dropped = False
        self.scope: trio.CancelScope | None = None
        self.admitted: dict[str, int] = {}  # ip -> connections admitted through this edge
        self.report = b""  # its latest metrics text

    def send(self, raw: msgspec.Raw) -> None:
        if self.dropped:
            return
        self.owed.append(raw)
        self.owed_bytes += len(raw)
        if self.owed_bytes > self.max_owed_bytes:
            self.drop(f"owed {self.owed_bytes} bytes: not reading")
            return
        self.wake.set()

    def post(self, msg: Msg) -> None:
        self.send(msgspec.Raw(ENCODER.encode(msg)))

    def drop(self, why: str) -> None:
        if not self.dropped:
            log.warning("link to edge %r dropped: %s", self.name, why)
        self.dropped = True
        self.owed.clear()
        if self.scope is not None:
            self.scope.cancel()


class LinkServer:
    def __init__(
        self,
        front: Front,
        data_dir: Path,
        secret: str,
        *,
        max_owed_bytes: int = MAX_OWED_BYTES,
        beat_s: float = BEAT_S,
        metrics: Metrics | None = None,
    ) -> None:
        # An envelope holds a signed payload of at most max_frame_bytes (ledgered
        # as sent), its signature, the key id, the session, address, device.
        self.max_meta_bytes = 2 * front.limits.max_frame_bytes + 4096
        self.front = front
        self.rt = front.rt
        self.data_dir = Path(data_dir)
        self.secret = secret
        self.max_owed_bytes = max_owed_bytes
        self.beat_s = beat_s
        self.views = Views()  # the copy a joining edge starts from
        self.views.load(self.rt.store)
        self.edges: set[EdgeLink] = set()
        self.refused_peers = 0
        self.dropped_links = 0
        front.listeners.append(self._on_entries)
        self.path: Path | None = None
        self.metrics = metrics or Metrics()
        self.rt.on_commit = self._on_commit
        self.rt.on_command_failed = self.metrics.commands_failed.inc
        front.gate.on_change = self._hold  # a back-off decided here holds on every edge

    def _hold(self, ip: str, count: int, delay_s: float) -> None:
        raw = msgspec.Raw(ENCODER.encode(Hold(ip, count, delay_s)))
        for edge in list(self.edges):
            edge.send(raw)

    def _on_commit(self, entries: int, seconds: float) -> None:
        self.metrics.batch_size.observe(entries)
        self.metrics.commit_seconds.observe(seconds)

    # ----------------------------------------------------------- serving
    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        path = socket_path(self.data_dir)
        private_dir(path.parent)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a previous run (the writer lock is held)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        self.path = path
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beats)
                task_status.started(path)
                await trio.serve_listeners(
                    self._handle, [trio.SocketListener(sock)], handler_nursery=nursery
                )
        finally:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            if path.parent != link_dir(self.data_dir):  # the fallback folder: ours alone
                with contextlib.suppress(OSError):
                    path.parent.rmdir()

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._link(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the edge went away (from the receiver or the sender: a group)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _refuse(self, stream: trio.SocketStream, reason: str) -> None:
        self.refused_peers += 1
        self.metrics.link_events.labels("refused").inc()
        log.warning("link: peer refused: %s", reason)
        with trio.move_on_after(1), contextlib.suppress(Exception):
            body = ENCODER.encode([Goodbye(reason)])
            await stream.send_all(len(body).to_bytes(4, "big") + body)

    async def _link(self, stream: trio.SocketStream) -> None:
        uid = _peer_uid(stream)
        if uid != os.getuid():
            await self._refuse(stream, f"peer of uid {uid}: only this user's edges may join")
            return
        buf = bytearray()
        try:
            with trio.fail_after(JOIN_TIMEOUT_S):
                raw = await read_batch(stream, buf, MAX_EDGE_BATCH_BYTES)
            batch = EDGE_DECODER.decode(raw) if raw is not None else []
        except (trio.TooSlowError, LinkError, *DECODE_ERRORS) as e:
            await self._refuse(stream, f"no join: {e}")
            return
        if len(batch) != 1 or type(batch[0]) is not Join:
            await self._refuse(stream, "the first batch must be one join")
            return
        join = batch[0]
        if join.version != LINK_VERSION:
            await self._refuse(
                stream,
                f"link version {join.version} refused: this sequencer speaks {LINK_VERSION}"
                " (run edges and sequencer of the same release)",
            )
            return
        if not hmac.compare_digest(join.secret.encode(), self.secret.encode()):
            await self._refuse(stream, "wrong link secret")
            return
        edge = EdgeLink(stream, join.name[:64], self.max_owed_bytes)
        rt = self.rt
        # No await between the copy and joining ``edges``: the edge gets every
        # entry after the copy, and none twice.
        edge.post(
            Welcome(
                LINK_VERSION,
                rt.durable_seq,
                self.views.encode(),
                dict(self._durable_keys()),
                rt.clock.read(),
                rt.clock.rate,
                rt.sandbox,
            )
        )
        self.edges.add(edge)
        self.metrics.link_events.labels("joined").inc()
        self.metrics.link_up.set(len(self.edges))
        log.info("link: edge %r joined at seq %d", edge.name, rt.durable_seq)
        try:
            with trio.CancelScope() as edge.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._sender, edge)
                    await self._receiver(edge, buf)
                    nursery.cancel_scope.cancel()
        except* LinkError as group:  # raised inside the nursery: in a group
            edge.drop(str(group.exceptions[0]))
        finally:
            if edge.dropped:
                self.dropped_links += 1
                self.metrics.link_events.labels("dropped").inc()
            edge.dropped = True
            self.edges.discard(edge)
            self.metrics.link_up.set(len(self.edges))
            for ip, n in edge.admitted.items():
                for _ in range(n):
                    self.front.release(ip)
            log.info("link: edge %r left", edge.name)

    def metrics_parts(self) -> dict[str, bytes]:
        """This process's metrics and each linked edge's latest report."""
        rt = self.rt
        self.metrics.durable_seq.set(rt.durable_seq)
        self.metrics.queue_depth.set(rt.queue_depth)
        parts = {"sequencer": self.metrics.render()}
        for edge in self.edges:
            if edge.report:
                parts[edge.name] = edge.report
        return parts

    def _durable_keys(self) -> dict[str, KeyRecord]:
        return dict(self.rt.router.state.keys)

    async def _receiver(self, edge: EdgeLink, buf: bytearray) -> None:
        front = self.front
        while True:
            raw = await read_batch(edge.stream, buf, MAX_EDGE_BATCH_BYTES)
            if raw is None:
                return
            try:
                batch = EDGE_DECODER.decode(raw)
            except DECODE_ERRORS as e:
                raise LinkError(f"undecodable batch: {e}") from None
            for msg in batch:
                kind = type(msg)
                if kind is Submit:
                    self._submit(edge, msg)
                elif kind is Admit:
                    admission = front.admit(
                        msg.ip,
                        origin=msg.origin,
                        session=msg.session,
                        bidder_id=msg.bidder_id,
                        nonce=msg.nonce,
                        token_ok=msg.token_ok,
                    )
                    if admission.status == 0:
                        edge.admitted[msg.ip] = edge.admitted.get(msg.ip, 0) + 1
                    edge.post(Admitted(msg.id, admission))
                elif kind is Release:
                    n = edge.admitted.get(msg.ip, 0)
                    if n:  # only what this edge was admitted for
                        if n == 1:
                            del edge.admitted[msg.ip]
                        else:
                            edge.admitted[msg.ip] = n - 1
                        front.release(msg.ip)
                elif kind is Report:
                    if len(msg.text) <= MAX_REPORT_BYTES:
                        edge.report = msg.text
                elif kind is AuthAttempt:
                    if msg.ok:
                        front.gate.succeeded(msg.ip)
                    else:
                        front.gate.failed(msg.ip)
                elif kind is AskMetrics:
                    edge.post(MetricsText(msg.id, self.metrics_parts()))
                else:
                    raise LinkError(f"{kind.__name__} after the join")

    def _submit(self, edge: EdgeLink, msg: Submit) -> None:
        ident = msg.id
        origin = getattr(msg.cmd, "origin", "")
        if not origin or origin.split(":", 1)[0] in ("system", ""):
            edge.post(
                Answered(
                    ident,
                    refusal(GatewayError.not_authorized, "system commands: not over the link"),
                )
            )
            return
        if not 0 <= getattr(msg.cmd, "client_seq", 0) <= INT63_MAX:
            # No edge's reader lets one through (the wire's bound); the engine
            # would take it, and that origin could never send a higher one.
            edge.post(Answered(ident, refusal(GatewayError.schema_violation, "client_seq")))
            return
        if len(msg.meta) > self.max_meta_bytes or decode_envelope(msg.meta) is None:
            # What is ledgered beside the command is the client's envelope: its
            # signed payload within the frame bound, and who and whence.
            edge.post(Answered(ident, refusal(GatewayError.schema_violation, "envelope")))
            return

        observe = self.metrics.sequencer_answer.observe
        started = time.perf_counter_ns()

        def reply(answer: Answer) -> None:
            edge.post(Answered(ident, answer))
            observe((time.perf_counter_ns() - started) / 1000)

        self.front.submit(msg.cmd, msg.meta, msg.budget, reply)

    async def _sender(self, edge: EdgeLink) -> None:
        stream = edge.stream
        while True:
            if not edge.owed:
                await edge.wake.wait()
                edge.wake = trio.Event()
                continue
            owed, edge.owed = edge.owed, []
            edge.owed_bytes = 0
            body = ENCODER.encode(owed)
            with trio.move_on_after(STUCK_S) as stuck:
                await stream.send_all(len(body).to_bytes(4, "big") + body)
            if stuck.cancelled_caught:
                edge.drop(f"a write stuck for {STUCK_S} s")
                return

    # ------------------------------------------------------ public side
    def _on_entries(self, entries: list[PublicEntry], keys: list[tuple[str, KeyRecord]]) -> None:
        for entry in entries:
            self.views.apply(entry.seq, entry.ts_ns, entry.events)
        if not self.edges or not (entries or keys):
            return
        raw = msgspec.Raw(ENCODER.encode(Entries(entries, dict(keys), self.rt.durable_seq)))
        for edge in list(self.edges):
            edge.send(raw)

    async def _beats(self) -> None:
        rt = self.rt
        while True:
            await trio.sleep(self.beat_s)
            if not self.edges:
                continue
            raw = msgspec.Raw(ENCODER.encode(Beat(rt.clock.read(), rt.durable_seq, rt.queue_depth)))
            for edge in list(self.edges):
                edge.send(raw)


def _peer_uid(stream: trio.SocketStream) -> int:
    creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid
