"""Theory of operation: the edge's side of the link (``LinkCore``).

The edge's ``Gateway`` talks to ``LinkCore`` exactly as it would to the
in-process ``LocalCore``; underneath, everything is batched: submits,
admissions and releases queue in one outbox, and one task writes the whole
outbox as one frame per pass.

``run`` keeps the link up: it connects, joins, takes the sequencer's copy of
the public view (``Welcome``), then folds the stream of committed entries
into it.  When the link breaks, every command sent and not answered is
answered ``outcome_unknown`` (retry with the same client_seq: the sequencer
answers a retry with its original outcome), admissions waiting are refused
503, and new commands get ``sequencer_unavailable`` until the link is back;
it reconnects with back-off, and the fresh copy of the view replaces the old
one (``on_resync``).  The listeners stay open throughout.

The sequencer's clock: every ``Beat`` (and the welcome) carries it; between
two, the edge runs it forward on its own monotonic clock at the sequencer's
rate, and never shows a time earlier than one it showed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from engine.state import KeyRecord
from gateway.link.front import (
    UNKNOWN,
    Admission,
    Answer,
    AnswerSink,
    Budget,
    EntrySink,
    PublicEntry,
)
from gateway.link.front import refusal as refused
from gateway.link.messages import (
    DECODE_ERRORS,
    ENCODER,
    LINK_VERSION,
    MAX_SEQUENCER_BATCH_BYTES,
    REPORT_S,
    SEQUENCER_DECODER,
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
    read_secret,
    socket_path,
)
from gateway.link.server import LinkError, read_batch
from gateway.public.views import Views
from gateway.wire.access import FailureGate
from gateway.wire.protocol import GatewayError

log = logging.getLogger("pubex.link")

ADMIT_TIMEOUT_S = 5.0
RETRY_S = 0.05
RETRY_MAX_S = 2.0
OUTBOX_MAX = 65_536  # commands sent and not answered, per edge (past it: overloaded)


class LinkRefused(Exception):
    """The sequencer said goodbye at the join: its reason."""


class LinkCore:
    def __init__(self, data_dir: Path, name: str, *, outbox_max: int = OUTBOX_MAX) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.outbox_max = outbox_max
        self.linked = False
        self.keys: dict[str, KeyRecord] = {}
        self.listeners: list[EntrySink] = []
        self.on_resync: list[Callable[[Views], None]] = []
        self.on_link: list[Callable[[bool], None]] = []
        self.durable_seq = 0
        self.queue_depth = 0
        self.links = 0  # joins so far
        self.sandbox = False
        self.last_error = ""
        self._views: Views | None = None
        self._backlog: list[PublicEntry] = []
        self._next_id = 0
        self._pending: dict[int, AnswerSink] = {}
        self._admits: dict[int, tuple[trio.Event, list[Any]]] = {}
        self.report: Callable[[], bytes] | None = None  # this edge's metrics text
        self.gate: FailureGate | None = None  # this edge's HTTP back-off (share_gate)
        self._admitted: dict[str, int] = {}  # ip -> admitted on the current link
        self._out: list[msgspec.Raw] = []
        self._wake = trio.Event()
        self._clock = (0, 0, 1)  # (sequencer ns, our monotonic ns then, rate)
        self._shown = 0
        self._stream: trio.SocketStream | None = None

    # ------------------------------------------------- what the edge asks
    def load_views(self, views: Views) -> None:
        """Start ``views`` from the welcome's copy (plus what came since)."""
        assert self._views is not None, "run() first: the welcome carries the view"
        views.lots = self._views.lots
        views.items = self._views.items
        backlog, self._backlog = self._backlog, []
        for entry in backlog:
            views.apply(entry.seq, entry.ts_ns, entry.events)
        self._views = None

    def clock_ns(self) -> int:
        seq_ns, at, rate = self._clock
        t = seq_ns + max(0, time.monotonic_ns() - at) * rate
        if t <= self._shown:
            t = self._shown
        self._shown = t
        return t

    def busy(self) -> bool:
        return bool(self._pending)

    def health(self) -> dict[str, Any]:
        return {
            "ok": self.linked,
            "link": "up" if self.linked else "down",
            "durable_seq": self.durable_seq,
            "queue": self.queue_depth,
            "in_flight": len(self._pending),
        }

    def submit(self, cmd: Any, meta: bytes, budget: Budget, reply: AnswerSink) -> None:
        if not self.linked:
            reply(refused(GatewayError.sequencer_unavailable, "no link to the sequencer: retry"))
            return
        if len(self._pending) >= self.outbox_max:
            reply(refused(GatewayError.overloaded, "server busy, retry"))
            return
        self._next_id += 1
        ident = self._next_id
        self._pending[ident] = reply
        self._post(Submit(ident, cmd, meta, budget))

    async def _ask(self, make: Callable[[int], Msg]) -> Any:
        """Send a question; its answer, or None when the link broke or it took
        longer than ``ADMIT_TIMEOUT_S``."""
        self._next_id += 1
        ident = self._next_id
        done = trio.Event()
        box: list[Any] = []
        self._admits[ident] = (done, box)
        self._post(make(ident))
        with trio.move_on_after(ADMIT_TIMEOUT_S):
            await done.wait()
        self._admits.pop(ident, None)
        return box[0] if box else None

    async def metrics_parts(self) -> dict[str, bytes]:
        """Every process's metrics, this edge's fresh (``{}`` without a link)."""
        parts = await self._ask(AskMetrics) if self.linked else None
        return dict(parts or {})

    async def admit(self, ip: str, **claim: Any) -> Admission:
        if not self.linked:
            return Admission(503, "sequencer unavailable: try again shortly")
        admission = await self._ask(lambda ident: Admit(ident, ip, **claim))
        if admission is None:
            return Admission(503, "sequencer unavailable: try again shortly")
        box = [admission]
        if box[0].status == 0:
            self._admitted[ip] = self._admitted.get(ip, 0) + 1
        return box[0]

    def release(self, ip: str) -> None:
        n = self._admitted.get(ip, 0)
        if not n:  # admitted on an earlier link: that one released it when it broke
            return
        if n == 1:
            del self._admitted[ip]
        else:
            self._admitted[ip] = n - 1
        if self.linked:
            self._post(Release(ip))

    def share_gate(self, gate: FailureGate) -> None:
        """This edge's failed-token back-off (its HTTP side) becomes the
        sequencer's: each failure and success goes there, and what the
        sequencer decides for an address -- after any edge's attempt, or a
        WebSocket handshake's -- comes back to every edge's gate."""
        self.gate = gate

        def changed(ip: str, count: int, delay_s: float) -> None:
            if self.linked:
                self._post(AuthAttempt(ip, count == 0))

        gate.on_change = changed

    def _post(self, msg: Msg) -> None:
        self._out.append(msgspec.Raw(ENCODER.encode(msg)))
        self._wake.set()

    # -------------------------------------------------------- the link
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link up forever; ``started`` after the first welcome."""
        retry_s = RETRY_S
        started = False
        while True:
            try:
                stream = await self._connect()
            except (OSError, LinkError, LinkRefused, trio.TooSlowError, *DECODE_ERRORS) as e:
                self._note(f"no link: {e}")
                if isinstance(e, LinkRefused) and "version" in str(e):
                    raise  # another release: retrying will not help
                await trio.sleep(retry_s)
                retry_s = min(retry_s * 2, RETRY_MAX_S)
                continue
            retry_s = RETRY_S
            try:
                async with trio.open_nursery() as nursery:
                    if not started:
                        task_status.started()
                        started = True
                    nursery.start_soon(self._sender, stream, nursery.cancel_scope)
                    nursery.start_soon(self._reports)
                    await self._receiver(stream)
                    nursery.cancel_scope.cancel()
                self._note("the sequencer closed the link")
            # raised inside the nursery (the receiver or the sender): in a group
            except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError, LinkError) as g:
                self._note(f"link lost: {g.exceptions[0]}")
            except* DECODE_ERRORS as g:
                self._note(f"link lost: undecodable batch from the sequencer: {g.exceptions[0]}")
            finally:
                self._lost()
                with trio.CancelScope(shield=True):
                    await stream.aclose()
            await trio.sleep(retry_s)

    def _note(self, what: str) -> None:
        if what != self.last_error:
            log.warning("edge %s: %s", self.name, what)
        self.last_error = what

    async def _connect(self) -> trio.SocketStream:
        secret = read_secret(self.data_dir)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(str(socket_path(self.data_dir)))
        except OSError:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
        try:
            body = ENCODER.encode([Join(LINK_VERSION, secret, self.name)])
            await stream.send_all(len(body).to_bytes(4, "big") + body)
            self._buf = bytearray()
            with trio.fail_after(30):
                raw = await read_batch(stream, self._buf, MAX_SEQUENCER_BATCH_BYTES)
            if raw is None:
                raise LinkError("closed at the join")
            batch = SEQUENCER_DECODER.decode(raw)
            first = batch[0] if batch else None
            if type(first) is Goodbye:
                raise LinkRefused(first.reason)
            if type(first) is not Welcome:
                raise LinkError("no welcome")
            self._welcome(first)  # its view decoded first: a junk one changes nothing
            try:
                self._dispatch(batch[1:])
            except BaseException:
                self._lost()  # linked a moment ago: down again
                raise
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def _welcome(self, w: Welcome) -> None:
        views = Views.decode(w.views)
        self.keys = dict(w.keys)
        self.durable_seq = w.seq
        self.sandbox = w.sandbox
        self._beat(w.clock_ns, w.rate)
        self.links += 1
        self.linked = True
        self.last_error = ""
        if self._views is None and self.links == 1:
            self._views = views  # the gateway takes it (load_views)
        elif self._views is not None:  # not taken yet: start again from this copy
            self._views, self._backlog = views, []
        else:
            for hook in self.on_resync:
                hook(views)
        for hook in self.on_link:
            hook(True)
        log.info("edge %s: linked at seq %d", self.name, w.seq)

    def _beat(self, clock_ns: int, rate: int | None = None) -> None:
        self._clock = (clock_ns, time.monotonic_ns(), rate if rate is not None else self._clock[2])

    def _lost(self) -> None:
        """Everything sent and not answered: outcome_unknown; admissions: 503."""
        was = self.linked
        self.linked = False
        self._out.clear()
        self._admitted.clear()
        pending, self._pending = self._pending, {}
        unknown = Answer(
            UNKNOWN,
            GatewayError.outcome_unknown,
            "the link to the sequencer broke before the outcome came: retry with the same client_seq",
        )
        for reply in pending.values():
            reply(unknown)
        admits, self._admits = self._admits, {}
        for done, _box in admits.values():
            done.set()
        if was:
            for hook in self.on_link:
                hook(False)

    async def _receiver(self, stream: trio.SocketStream) -> None:
        while True:
            raw = await read_batch(stream, self._buf, MAX_SEQUENCER_BATCH_BYTES)
            if raw is None:
                return
            self._dispatch(SEQUENCER_DECODER.decode(raw))

    def _dispatch(self, batch: list[Any]) -> None:
        for msg in batch:
            kind = type(msg)
            if kind is Answered:
                reply = self._pending.pop(msg.id, None)
                if reply is not None:
                    reply(msg.answer)
            elif kind is Entries:
                self.keys.update(msg.keys)
                self.durable_seq = msg.durable_seq
                entries = msg.entries
                if self._views is not None or not self.listeners:
                    self._backlog.extend(entries)
                else:
                    for listener in self.listeners:
                        listener(entries, ())
            elif kind is Beat:
                self._beat(msg.clock_ns)
                self.durable_seq = max(self.durable_seq, msg.durable_seq)
                self.queue_depth = msg.queue_depth
            elif kind is Admitted or kind is MetricsText:
                waiting = self._admits.get(msg.id)
                if waiting is not None:
                    waiting[1].append(msg.admission if kind is Admitted else msg.parts)
                    waiting[0].set()
            elif kind is Hold:
                if self.gate is not None:
                    self.gate.hold(msg.ip, msg.count, msg.delay_s)
            elif kind is Goodbye:
                raise LinkError(f"goodbye: {msg.reason}")
            else:
                raise LinkError(f"unexpected {kind.__name__}")

    async def _reports(self) -> None:
        while True:
            if self.report is not None:
                self._post(Report(self.report()))
            await trio.sleep(REPORT_S)

    async def _sender(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        while True:
            if not self._out:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            out, self._out = self._out, []
            body = ENCODER.encode(out)
            await stream.send_all(len(body).to_bytes(4, "big") + body)
