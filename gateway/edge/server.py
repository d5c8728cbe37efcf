"""Theory of operation: the WebSocket gateway.

Per connection, two tasks: a receiver that decodes, authorises and submits
frames, and a sender that drains the connection's bounded outbox.  Nothing
the runtime or another connection does ever awaits a connection:

* Replies and lot events are *must-deliver*: appended to the outbox; a
  connection whose outbox passes ``send_queue_frames`` cannot keep up and is
  closed with 1013 (try again later).
* Lot snapshots are *conflated*: one pending snapshot per lot per connection,
  replaced (and counted as dropped) if the client has not taken the previous.

The path of a bid: frame -> decode (one msgspec decoder for the union) ->
role check -> rate limit -> Ed25519 verify over the exact payload ->
``Runtime.submit`` with the envelope as the entry's ``meta`` -> (durable) ->
``ack`` with the batch receipt and this entry's proof, or ``error``.  A
retried ``(bidder, client_seq)`` gets its original outcome: the engine
answers ``CommandRetried`` and the gateway rebuilds the original ack from the
ledger entry.

Lot events reach subscribers only from committed entries (the runtime's
subscriber callback), through ``Views``, so nobody sees a price before it is
durable.  Every subscriber -- public watchers too -- gets every *public* event
of its lots in ledger order (``PUBLIC_EVENTS``; ``PRIVATE_EVENTS`` says why
each other event type is never sent).  Fan-out encodes each event once; a
commit's events are joined into one shared chunk per audience (``*``
subscribers, each lot's subscribers), so a connection costs one queued chunk
per commit, not one per event.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from engine.messages import Command
from gateway.edge.auth import (
    BIDDER,
    SERVICE,
    STAFF,
    SUPERVISOR,
    WATCHER,
    Authenticator,
    AuthError,
    Principal,
)
from gateway.link.front import (
    BID_RATE,
    FAILED,
    REFUSED,
    STAFF_RATE,
    STORAGE,
    UNKNOWN,
    Answer,
    Budget,
    PublicEntry,
    TokenBucket,
)
from gateway.public.events import PRIVATE_EVENTS, PUBLIC_EVENTS
from gateway.public.views import Views
from gateway.wire import protocol as p
from gateway.wire import ws
from gateway.wire.metrics import Metrics
from gateway.wire.translate import bid_command, order_command, signed_command, staff_command
from ledger.record import Envelope, encode_envelope

__all__ = ["PRIVATE_EVENTS", "PUBLIC_EVENTS", "Gateway", "Listening", "TokenBucket"]

ALL_LOTS = "*"
# An overflowed connection gets this long to take what it is owed and its
# 1013 close frame; then its TCP connection is dropped.
OVERFLOW_GRACE_S = 5.0
CLOSE_TIMEOUT_S = 1.0


class Connection:
    """One client's queues.  Everything queued is a ready-made WebSocket frame
    (``ws.frame_text``): a fan-out frames its message once for all subscribers.

    Whatever is queued is handed to ``ready`` (the gateway's flusher), which
    writes it straight to the socket when the socket takes it; only what the
    socket will not take now is left to this connection's sender task (the
    socket's unfinished tail first, then the queues) -- so a slow reader never
    delays anyone else.

    Every byte a connection is owed counts against one bound, ``max_bytes``:
    replies to its own frames (pongs, acks, errors), lot events, snapshots and
    the socket's unwritten tail alike.  A must-deliver frame (a reply, an
    event) past it marks the connection ``overflowed``: its receiver stops
    (nothing more is read, so nothing more is owed) and it is closed 1013
    within ``OVERFLOW_GRACE_S``, however slowly the peer reads.  A snapshot
    that does not fit is not owed yet: its lot id goes to ``stale`` and the
    snapshot is rendered afresh when the connection has room (``refill``) --
    so subscribing to ``*`` on a ledger of 10,000 lots costs a set of ids,
    not 4 MB of frames."""

    def __init__(
        self,
        sock: ws.Socket,
        who: Principal,
        max_bytes: int,
        ready: Callable[[Connection], None],
        refill: Callable[[Connection], None] = lambda conn: None,
    ) -> None:
        self.sock = sock
        self.who = who
        self.max_bytes = max_bytes
        self.ready = ready
        self.refill = refill
        self.outbox: deque[bytes] = deque()
        self.snapshots: dict[str, bytes] = {}
        self.stale: set[str] = set()  # lots whose snapshot is owed once there is room
        self.queued_bytes = 0  # outbox + snapshots (the tail is the socket's)
        self.peak_bytes = 0  # the most ever owed at once, tail included
        self.lots: set[str] = set()
        self.wake = trio.Event()
        self.overflowed = False
        self.receive_scope: trio.CancelScope | None = None
        self.scope: trio.CancelScope | None = None
        self.last_heard = time.monotonic()
        # staff and supervisors see lots before they are published; nobody else does
        self.sees_drafts = who.role in (STAFF, SUPERVISOR)

    @property
    def owed_bytes(self) -> int:
        return self.queued_bytes + self.sock.tail_bytes

    def _fits(self, size: int) -> bool:
        owed = self.queued_bytes + self.sock.tail_bytes + size
        if owed > self.max_bytes:
            return False
        if owed > self.peak_bytes:
            self.peak_bytes = owed
        return True

    def _overflow(self) -> None:
        if self.overflowed:
            return
        self.overflowed = True
        if self.receive_scope is not None:
            self.receive_scope.cancel()  # read nothing more: nothing more is owed
        if self.scope is not None:
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + OVERFLOW_GRACE_S)
        self.wake.set()

    def send(self, text: str) -> None:
        """A reply to the client's own frame (hello, ack, error, pong)."""
        self.push(ws.frame_text(text))

    def push(self, frame: bytes) -> None:
        """Must-deliver (a reply or a lot event): queued, or -- past the byte
        bound -- the connection is marked for a 1013 close instead of growing."""
        if self.overflowed:
            return
        if not self._fits(len(frame)):
            self._overflow()
            return
        self.outbox.append(frame)
        self.queued_bytes += len(frame)
        self.ready(self)

    def offer_snapshot(self, lot: str, frame: bytes) -> bool:
        """Conflated: True when an unsent snapshot of this lot was replaced.
        One that does not fit leaves the lot ``stale`` (sent when there is room)."""
        if self.overflowed:
            return False
        old = self.snapshots.pop(lot, None)
        if old is not None:
            self.queued_bytes -= len(old)
        if not self._fits(len(frame)):
            self.stale.add(lot)
            return old is not None
        self.stale.discard(lot)
        self.snapshots[lot] = frame
        self.queued_bytes += len(frame)
        self.ready(self)
        return old is not None

    def take(self) -> list[bytes]:
        """Everything pending, in order: replies and events, then snapshots."""
        frames = list(self.outbox)
        self.outbox.clear()
        if self.snapshots:
            frames.extend(self.snapshots.values())
            self.snapshots.clear()
        self.queued_bytes = 0
        return frames

    def flush(self) -> None:
        """Write what is pending now if the socket takes it; else wake the sender."""
        if not (self.outbox or self.snapshots) and not self.sock.has_tail:
            return
        if self.overflowed or not self.sock.writable_now:
            self.wake.set()  # the sender closes it, or writes the tail, then these
            return
        frames = self.take()
        if not self.sock.try_send(frames[0] if len(frames) == 1 else b"".join(frames)):
            self.wake.set()  # the socket kept a tail: the sender finishes it
            if self.sock.tail_bytes > self.max_bytes:
                self._overflow()
        elif self.stale:
            self.refill(self)


class Gateway:
    def __init__(
        self,
        core: Any,
        auth: Authenticator,
        metrics: Metrics,
        limits: Any,
    ) -> None:
        """``core``: the sequencer as this edge reaches it -- in this process
        (``gateway.link.core.LocalCore``) or over the link
        (``gateway.link.client.LinkCore``)."""
        self.core = core
        self.auth = auth
        self.metrics = metrics
        self.limits = limits
        self.views = Views()
        core.load_views(self.views)
        # lot -> connections: every subscriber, public watchers included, gets
        # conflated snapshots and every public event in ledger order (bounded by
        # send_queue_bytes like everything a connection is owed).
        self.subscribers: dict[str, set[Connection]] = {ALL_LOTS: set()}
        self._unflushed: set[Connection] = set()
        self._flush_due = trio.Event()
        self.connections: set[Connection] = set()
        self.per_address: dict[str, int] = {}
        # bidder -> this edge's own bid-rate bucket, taken before a signature is
        # verified (a flood of bad signatures costs a token each, not a
        # verification each); the sequencer's bucket is the one that holds
        # across edges
        self.buckets: dict[str, TokenBucket] = {}
        self.reader = p.Reader.from_limits(limits)
        self.dirty: set[str] = set()
        self._snap_frames: dict[str, bytes] = {}  # lot -> its current snapshot frame
        core.listeners.append(self._on_entries)
        core.on_resync.append(self._resynced)
        if hasattr(core, "report"):  # over a link: the sequencer gathers every edge's figures
            core.report = metrics.render
            core.on_link.append(lambda up: metrics.link_up.set(1 if up else 0))
            metrics.link_up.set(1 if core.linked else 0)
        rt = getattr(core, "rt", None)
        if rt is not None:  # the runtime is in this process: its figures are ours
            rt.on_commit = self._on_commit
            rt.on_command_failed = metrics.commands_failed.inc
        self.accepting = True
        self.stop_listening = trio.Event()  # drain: the listeners close first
        self._counters: dict[tuple[str, str], Any] = {}

    @property
    def rt(self) -> Any:
        """The in-process runtime (tests, simulations); AttributeError over a link."""
        return self.core.rt

    # ------------------------------------------------------------ serving
    async def handle(self, request: ws.Request) -> None:
        if not self.accepting:
            await request.reject(503, "draining")
            return
        ip = request.remote_ip
        refused = self._capped(ip)
        if refused is not None:
            self.metrics.connections_refused.labels(refused[0]).inc()
            await request.reject(refused[1], refused[2])
            return
        try:
            who, claim = self.auth.authenticate(request.path, request.headers, ip, self.core.keys)
        except AuthError as e:
            self.metrics.frames_refused.labels("handshake").inc()
            await request.reject(e.status, e.reason)
            return
        if not self.core.linked:
            self.metrics.connections_refused.labels("sequencer").inc()
            await request.reject(503, "sequencer unavailable: try again shortly")
            return
        admitted = await self.core.admit(
            ip,
            origin=self._origin_of(who) if who.role != WATCHER else "",
            session=who.session,
            bidder_id=who.bidder_id if who.role == BIDDER else "",
            nonce=claim.nonce,
            token_ok=claim.token_ok,
        )
        if admitted.status:
            if admitted.status == 429 and claim.token_ok is None:
                self.metrics.connections_refused.labels("address").inc()
            else:
                self.metrics.frames_refused.labels("handshake").inc()
            await request.reject(admitted.status, admitted.reason)
            return
        self.per_address[ip] = self.per_address.get(ip, 0) + 1
        try:
            try:
                sock = await request.accept()
            except ws.ConnectionClosed:
                return
            await self._serve(
                Connection(sock, who, self.limits.send_queue_bytes, self._ready, self._refill),
                admitted.codes,
                admitted.high_seq,
            )
        finally:
            self.core.release(ip)
            left = self.per_address[ip] - 1
            if left:
                self.per_address[ip] = left
            else:
                del self.per_address[ip]

    def _capped(self, ip: str) -> tuple[str, int, str] | None:
        """A connection cap this upgrade would pass: (metric label, HTTP status, reason)."""
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            return "total", 503, "too many connections: try again later"
        if self.per_address.get(ip, 0) >= limits.max_connections_per_address:
            return "address", 429, "too many connections from this address"
        return None

    async def _serve(self, conn: Connection, codes: dict[str, str], high_seq: int) -> None:
        self.connections.add(conn)
        self.metrics.connections.labels(conn.who.role).inc()
        try:
            conn.send(p.encode_text(self._hello(conn.who, codes, high_seq)))
            with trio.CancelScope() as conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._sender, conn, nursery.cancel_scope)
                    nursery.start_soon(self._heartbeat, conn, nursery.cancel_scope)
                    with trio.CancelScope() as conn.receive_scope:
                        await self._receiver(conn)
                    if not conn.overflowed:
                        nursery.cancel_scope.cancel()
            if conn.overflowed:
                self.metrics.closed_slow.inc()
                await conn.sock.close_within(
                    CLOSE_TIMEOUT_S, 1013, "send queue full: reconnect and resubscribe"
                )
        finally:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._unsubscribe(conn, list(conn.lots))
        self.metrics.connections.labels(conn.who.role).dec()

    def _hello(self, who: Principal, codes: dict[str, str], high_seq: int) -> p.Hello:
        """``codes``: a bidder's code per lot; ``high_seq``: where this
        session's numbering stands (0: new) -- both from the admission."""
        return p.Hello(
            who.role,
            self.core.clock_ns(),
            who.identity,
            codes,
            self.limits.max_frame_bytes,
            who.session,
            high_seq,
        )

    async def _receiver(self, conn: Connection) -> None:
        while True:
            try:
                message = await conn.sock.receive()
            except ws.ConnectionClosed:
                return
            conn.last_heard = time.monotonic()
            if isinstance(message, bytes):
                self._refuse(conn, 0, p.GatewayError.malformed_json, "text frames only")
                continue
            try:
                frame = self.reader.frame(message)
            except p.FrameError as e:
                self._refuse(conn, e.client_seq, e.code, e.message)
                continue
            self._dispatch(conn, frame)

    async def _sender(self, conn: Connection, scope: trio.CancelScope) -> None:
        """Writes what the flusher could not, until the connection ends -- or,
        once it overflowed, until everything owed is written (then the handler
        closes it 1013; the connection's deadline bounds how long this takes)."""
        sock = conn.sock
        try:
            while True:
                if conn.overflowed and not (sock.has_tail or conn.outbox or conn.snapshots):
                    scope.cancel()
                    return
                if sock.has_tail or conn.outbox or conn.snapshots:
                    await sock.send_frames(conn.take())
                elif conn.stale and not conn.overflowed:
                    conn.refill(conn)
                    if not (conn.outbox or conn.snapshots):
                        await conn.wake.wait()  # nothing fit: wait for room
                        conn.wake = trio.Event()
                else:
                    await conn.wake.wait()
                    conn.wake = trio.Event()
        except ws.ConnectionClosed:
            scope.cancel()

    async def _heartbeat(self, conn: Connection, scope: trio.CancelScope) -> None:
        """A dead peer is dropped within about three heartbeat periods of silence.

        Only a silent peer is pinged: a frame heard within the period already
        proves the peer alive (a judicial-day bidder bids every 5 s; pinging
        5,000 of them anyway was 6 % of the server's samples)."""
        period = self.limits.heartbeat_s
        while True:
            await trio.sleep(period)
            if time.monotonic() - conn.last_heard < period:
                continue
            with trio.move_on_after(period) as timeout:
                try:
                    await conn.sock.ping()
                except ws.ConnectionClosed:
                    scope.cancel()
                    return
            if timeout.cancelled_caught:
                scope.cancel()
                return

    # ----------------------------------------------------------- dispatch
    def _dispatch(self, conn: Connection, frame: p.ClientFrame) -> None:
        kind = type(frame)
        if kind is p.PlaceBidFrame:
            self._bid(conn, frame)  # type: ignore[arg-type]
        elif kind is p.SealedFrame:
            self._sealed(conn, frame)  # type: ignore[arg-type]
        elif kind is p.OrderFrame:
            self._order(conn, frame)  # type: ignore[arg-type]
        elif kind is p.Subscribe:
            self._subscribe(conn, frame.lots)  # type: ignore[union-attr]
        elif kind is p.Unsubscribe:
            self._unsubscribe(conn, frame.lots)  # type: ignore[union-attr]
        elif kind is p.Ping:
            conn.send(p.encode_text(p.Pong(frame.t, self.core.clock_ns())))  # type: ignore[union-attr]
        else:
            self._staff(conn, frame)

    def _refuse(self, conn: Connection, client_seq: int, code: int, message: str) -> None:
        self.metrics.frames_refused.labels(str(code)).inc()
        conn.send(p.encode_text(p.Error(client_seq, code, p.error_name(code), message)))

    def _signed(
        self, conn: Connection, frame: p.PlaceBidFrame | p.SealedFrame | p.OrderFrame
    ) -> Any:
        """What every signed action passes, bids and non-bid actions alike: the
        bidder role, its registered key, a payload that reads within bounds and
        names that key, this edge's bid-rate bucket -- all before the Ed25519
        signature is checked, so a flood of bad signatures costs one token
        each, not a verification each -- then the signature over the exact
        payload.  The limits that hold across edges (the bid rate, the
        refusal budget) are the sequencer's (``gateway.link.front.Front``).
        Returns the payload, or None after refusing."""
        who = conn.who
        if who.role != BIDDER:
            self._refuse(
                conn,
                self.reader.payload_seq(frame),
                p.GatewayError.not_authorized,
                f"{who.role} cannot sign actions",
            )
            return None
        vk = self.auth.verify_key(who.identity, self.core.keys)
        if vk is None:
            self._refuse(
                conn, self.reader.payload_seq(frame), p.GatewayError.unknown_key, who.identity
            )
            return None
        try:
            payload = self.reader.payload(frame)
        except p.FrameError as e:
            self._refuse(conn, e.client_seq, e.code, e.message)
            return None
        client_seq = payload.client_seq
        if payload.key != who.identity:
            self._refuse(
                conn, client_seq, p.GatewayError.wrong_key, "payload key is not this connection's"
            )
            return None
        bucket = self.buckets.get(who.bidder_id)
        if bucket is None:
            bucket = self.buckets[who.bidder_id] = TokenBucket(
                self.limits.bids_per_s, self.limits.bid_burst
            )
        if not bucket.take():
            self._refuse(conn, client_seq, p.GatewayError.rate_limited, "slow down")
            return None
        try:
            p.verify_bid(frame, vk)
        except p.FrameError as e:
            self._refuse(conn, client_seq, e.code, e.message)
            return None
        return payload

    def _origin(self, conn: Connection) -> str:
        """``<role>:<bidder id>``: the role the signing key was registered for."""
        record = self.core.keys.get(conn.who.identity)
        role = record.role if record is not None else "bidder"
        return f"{role}:{conn.who.bidder_id}"

    def _origin_of(self, who: Principal) -> str:
        """The origin of the principal's commands (a key's: its registered role)."""
        if who.role != BIDDER:
            return f"{who.role}:{who.identity}"
        record = self.core.keys.get(who.identity)
        return f"{record.role if record is not None else 'bidder'}:{who.bidder_id}"

    def _submit_signed(
        self,
        conn: Connection,
        frame: p.PlaceBidFrame | p.SealedFrame | p.OrderFrame,
        cmd: Command,
        client_seq: int,
        received: int,
    ) -> None:
        """Ledgered with its envelope, so a supervisor can re-verify it years later."""
        who = conn.who
        meta = encode_envelope(
            Envelope(who.role, who.identity, who.ip, who.fingerprint, frame.payload, frame.sig)
        )
        budget = Budget(BID_RATE, who.bidder_id, who.identity)
        self._submit(conn, cmd, client_seq, meta, received, budget)

    def _bid(self, conn: Connection, frame: p.PlaceBidFrame) -> None:
        received = time.perf_counter_ns()
        bid = self._signed(conn, frame)
        if bid is None:
            return
        cmd = bid_command(self._origin(conn), bid)
        self._submit_signed(conn, frame, cmd, bid.client_seq, received)

    def _sealed(self, conn: Connection, frame: p.SealedFrame) -> None:
        """Sealed-tender and award actions: signed and ledgered exactly like bids."""
        received = time.perf_counter_ns()
        act = self._signed(conn, frame)
        if act is None:
            return
        cmd = signed_command(self._origin(conn), act)
        self._submit_signed(conn, frame, cmd, act.client_seq, received)

    def _order(self, conn: Connection, frame: p.OrderFrame) -> None:
        """E-mall order actions: signed and ledgered exactly like bids."""
        received = time.perf_counter_ns()
        act = self._signed(conn, frame)
        if act is None:
            return
        cmd = order_command(self._origin(conn), act)
        self._submit_signed(conn, frame, cmd, act.client_seq, received)

    def _submit(
        self,
        conn: Connection,
        cmd: Command,
        client_seq: int,
        meta: bytes,
        received: int,
        budget: Budget,
    ) -> None:
        if conn.who.session:  # client_seq counts per (origin, session) in the engine
            cmd = msgspec.structs.replace(cmd, client_session=conn.who.session)
        kind = type(cmd).__name__

        def reply(answer: Answer) -> None:
            self._reply(conn, kind, client_seq, answer, received)

        self.core.submit(cmd, meta, budget, reply)

    def _reply(
        self, conn: Connection, kind: str, client_seq: int, answer: Answer, received: int
    ) -> None:
        outcome = answer.outcome
        if outcome == REFUSED:  # by a limit, before the runtime: never ledgered
            self._refuse(conn, client_seq, answer.code, answer.detail)
            return
        self._count(kind, outcome)
        if outcome in (FAILED, STORAGE, UNKNOWN):  # not recorded, or not known to be
            self._refuse(conn, client_seq, answer.code, answer.detail)
            return
        if answer.code:
            code = answer.code
            text = p.encode_text(
                p.Error(client_seq, code, p.error_name(code), answer.detail, answer.seq)
            )
        else:
            text = p.encode_text(
                p.Ack(
                    client_seq,
                    answer.seq,
                    answer.ts_ns,
                    answer.entry_hash.hex(),
                    answer.receipt.hex(),
                    [h.hex() for h in answer.proof],
                    answer.retried,
                )
            )
        conn.send(text)
        self.metrics.ack_latency.observe((time.perf_counter_ns() - received) / 1000)

    def _count(self, kind: str, outcome: str) -> None:
        """Labelled counters looked up once per (type, outcome), not per command."""
        child = self._counters.get((kind, outcome))
        if child is None:
            child = self._counters[(kind, outcome)] = self.metrics.commands.labels(kind, outcome)
        child.inc()

    # -------------------------------------------------------------- staff
    def _staff(self, conn: Connection, frame: p.ClientFrame) -> None:
        who = conn.who
        client_seq = getattr(frame, "client_seq", 0)
        # a service (the registry) may send the registry frames only, as service:<id>
        service = who.role == SERVICE and isinstance(frame, p.REGISTRY_ACTIONS)
        # a supervisor may record alert decisions and answer complaints, as supervisor:<id>
        supervision = who.role == SUPERVISOR and isinstance(frame, p.SUPERVISION_ACTIONS)
        if who.role != STAFF and not service and not supervision:
            self._refuse(
                conn,
                client_seq,
                p.GatewayError.not_authorized,
                f"{who.role} cannot {type(frame).__name__}",
            )
            return
        origin = f"{who.role}:{who.identity}"
        actor = getattr(frame, "actor", "")
        if actor and who.role != SERVICE:
            self._refuse(
                conn, client_seq, p.GatewayError.field_not_applicable, "actor: services only"
            )
            return
        cmd = staff_command(origin, frame)
        meta = encode_envelope(
            Envelope(who.role, who.identity, who.ip, who.fingerprint, actor=actor)
        )
        budget = Budget(STAFF_RATE, origin, who.identity)
        self._submit(conn, cmd, client_seq, meta, time.perf_counter_ns(), budget)

    # ------------------------------------------------------ subscriptions
    def _subscribe(self, conn: Connection, lots: list[str]) -> None:
        """Known lots and items (or ``*``) only: an unknown id costs nothing --
        it is refused, and nothing is kept for it.  A draft lot is unknown to all
        but staff and supervisors until it is published (``*`` leaves it out too;
        ``snapshots`` and ``_on_durable`` hold back its snapshots and events)."""
        views = self.views
        drafts = _sees_drafts(conn)  # a draft is unknown to everyone else until published
        unknown = [
            lot
            for lot in lots
            if lot != ALL_LOTS
            and (lot not in views.lots or not (drafts or views.lots[lot].published))
            and lot not in views.items.items
        ]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            self._refuse(conn, 0, p.GatewayError.unknown_subscription, f"no such lot: {shown}")
            refused = set(unknown)
            lots = [lot for lot in lots if lot not in refused]
        wanted = list(dict.fromkeys(lots))
        new = [lot for lot in wanted if lot not in conn.lots]
        if len(conn.lots) + len(new) > self.limits.subscriptions_per_connection:
            self._refuse(conn, 0, p.GatewayError.rate_limited, "too many subscriptions")
            return
        for lot in wanted:
            conn.lots.add(lot)
            self.subscribers.setdefault(lot, set()).add(conn)
            # Every snapshot is owed now; the refill sends what fits, the rest as
            # the connection drains.
            if lot == ALL_LOTS:
                conn.stale.update(views.all_ids() if drafts else views.public_ids())
            else:
                conn.stale.add(lot)
        self._refill(conn)

    def _refill(self, conn: Connection) -> None:
        """Offer the snapshots of ``conn.stale`` lots while they fit."""
        stale = conn.stale
        while stale and not conn.overflowed:
            lot = stale.pop()
            frame = self._snapshot_frame(lot)
            if frame is None or (self.views.is_draft(lot) and not _sees_drafts(conn)):
                continue
            conn.offer_snapshot(lot, frame)
            if lot in stale:
                break  # no room: the rest waits for the connection to drain

    def _snapshot_frame(self, lot: str) -> bytes | None:
        """A lot's snapshot frame, rendered once per change for every subscriber."""
        frame = self._snap_frames.get(lot)
        if frame is None:
            snap = self.views.public_snapshot(lot)
            if snap is None:
                return None
            frame = self._snap_frames[lot] = ws.frame_text(p.encode_text(snap))
        return frame

    def _unsubscribe(self, conn: Connection, lots: list[str]) -> None:
        for lot in lots:
            conn.lots.discard(lot)
            subs = self.subscribers.get(lot)
            if subs is not None:
                subs.discard(conn)
                if not subs and lot != ALL_LOTS:
                    del self.subscribers[lot]

    # ------------------------------------------------- durable fan-out
    def _on_entries(self, entries: list[PublicEntry], keys: Any = ()) -> None:
        """Runs after each commit: fold events into the views, send lot events."""
        subscribers = self.subscribers
        everyone = subscribers[ALL_LOTS]
        # (lot, frame, draft) of the commit's public events, in ledger order
        frames: list[tuple[str, bytes, bool]] = []
        for entry in entries:
            touched = self.views.apply(entry.seq, entry.ts_ns, entry.events)
            if not touched:
                continue
            self.dirty |= touched
            for lot in touched:
                self._snap_frames.pop(lot, None)
            for ev in entry.events:
                lot = ev.lot_id
                if not everyone and lot not in subscribers:
                    continue
                text = p.encode_text(
                    p.EventFrame(lot, entry.seq, entry.ts_ns, msgspec.to_builtins(ev))
                )
                # a draft's events (as of this entry) go to staff and supervisors only
                frames.append((lot, ws.frame_text(text), self.views.is_draft(lot)))
        if frames:
            self._fan_out(frames, everyone)
        self.metrics.durable_seq.set(self.core.durable_seq)

    def _resynced(self, views: Views) -> None:
        """The link came back with a fresh copy of the view: what changed while
        it was down reaches every subscriber as a snapshot."""
        self.views = views
        self._snap_frames.clear()
        self.dirty |= set(views.all_ids())

    def _fan_out(self, frames: list[tuple[str, bytes, bool]], everyone: set[Connection]) -> None:
        """One commit's event frames to their subscribers, each in ledger order.

        Each audience's frames are joined once and the bytes shared: every ``*``
        subscriber gets one chunk (two versions: with and without drafts), every
        subscriber of one touched lot that lot's chunk; only a connection
        subscribed to several lots touched by the same commit gets a chunk of
        its own (its lots' frames, still in ledger order)."""
        if everyone:
            public = b"".join(f for _lot, f, draft in frames if not draft)
            with_drafts = b"".join(f for _lot, f, _draft in frames)
            for conn in everyone:
                chunk = with_drafts if _sees_drafts(conn) else public
                if chunk:
                    conn.push(chunk)
        lots = dict.fromkeys(lot for lot, _f, _draft in frames if lot in self.subscribers)
        if not lots:
            return
        if len(lots) == 1:  # the usual commit: one lot's events
            (lot,) = lots
            self._push_lot(lot, frames, self.subscribers[lot], everyone)
            return
        several: dict[Connection, set[str]] = {}
        for lot in lots:
            for conn in self.subscribers[lot]:
                if conn not in everyone:
                    several.setdefault(conn, set()).add(lot)
        by_lot: dict[str, set[Connection]] = {}
        for conn, its in list(several.items()):
            if len(its) == 1:
                by_lot.setdefault(next(iter(its)), set()).add(conn)
                del several[conn]
        for lot, conns in by_lot.items():
            self._push_lot(lot, frames, conns, set())
        for conn, its in several.items():
            seer = _sees_drafts(conn)
            chunk = b"".join(f for lot, f, draft in frames if lot in its and (seer or not draft))
            if chunk:
                conn.push(chunk)

    def _push_lot(
        self,
        lot: str,
        frames: list[tuple[str, bytes, bool]],
        conns: set[Connection],
        skip: set[Connection],
    ) -> None:
        """``lot``'s frames of a commit, joined once, to ``conns`` (but ``skip``)."""
        mine = [(f, draft) for name, f, draft in frames if name == lot]
        with_drafts = b"".join(f for f, _draft in mine)
        public = b"".join(f for f, draft in mine if not draft)
        for conn in conns:
            if conn in skip:
                continue
            chunk = with_drafts if _sees_drafts(conn) else public
            if chunk:
                conn.push(chunk)

    def _on_commit(self, entries: int, seconds: float) -> None:
        self.metrics.batch_size.observe(entries)
        self.metrics.commit_seconds.observe(seconds)

    async def snapshots(self) -> None:
        """At most one snapshot per lot per interval (conflated per connection)."""
        interval = self.limits.snapshot_interval_ms / 1000
        # The gauges scan every connection: once a second, not every tick (at
        # 5,000 connections the scan was 2 % of the server's CPU, judicial-day).
        gauge_every = max(1, round(1 / interval))
        for tick in itertools.count():
            await trio.sleep(interval)
            if tick % gauge_every == 0:
                self.metrics.queue_depth.set(self.core.queue_depth)
                self.metrics.send_queue_max.set(
                    max((c.owed_bytes for c in self.connections), default=0)
                )
            if not self.dirty:
                continue
            dirty, self.dirty = self.dirty, set()
            everyone = self.subscribers[ALL_LOTS]
            for lot in dirty:
                frame = self._snapshot_frame(lot)
                if frame is None:
                    continue
                conns = self.subscribers.get(lot, set()) | everyone
                if self.views.is_draft(lot):  # staff and supervisors only
                    conns = {c for c in conns if _sees_drafts(c)}
                for conn in conns:
                    if conn.offer_snapshot(lot, frame):
                        self.metrics.snapshots_dropped.inc()

    def _ready(self, conn: Connection) -> None:
        self._unflushed.add(conn)
        self._flush_due.set()

    async def flusher(self) -> None:
        """Writes every connection's pending frames once per loop pass: one task
        for all of them, instead of one task switch per message."""
        while True:
            await self._flush_due.wait()
            self._flush_due = trio.Event()
            pending, self._unflushed = self._unflushed, set()
            for conn in pending:
                conn.flush()

    async def drain(self) -> None:
        """SIGTERM: stop listening (new connections go to the port's other
        edges), answer what was sent, close the connections with 1001."""
        self.accepting = False
        self.stop_listening.set()
        with trio.move_on_after(5):
            while self.core.busy():
                await trio.sleep(0.01)
        for conn in list(self.connections):
            with trio.move_on_after(1), contextlib.suppress(ws.ConnectionClosed):
                await conn.sock.close(1001, "server shutting down")


def _sees_drafts(conn: Connection) -> bool:
    """Staff and supervisors see lots before they are published; nobody else does."""
    return conn.sees_drafts


@dataclass
class Listening:
    """Where a started gateway listens, and the gateway itself (for in-process
    callers: the demo's simulated bidders, tests)."""

    ws_url: str
    http_url: str
    gateway: Gateway
