"""Theory of operation: the registry's writes, exactly once.

Every write the registry makes (a key, a registration, a confirmed deposit, a
blacklist entry, a payment or a default) is a ledgered command sent through
the gateway on a service connection (origin ``service:<id>``), each with the
registry's own ``client_seq``:

1. :meth:`Outbox.add` allocates the next client_seq(s) and stores the intent
   in the registry's store, durably, BEFORE anything is sent.
2. :class:`Submitter` sends pending intents in client_seq order (at most
   ``window`` in flight, fewer than the engine's retry memory of 32 outcomes)
   on one WebSocket.
3. The outcome is known from the ledger itself: the registry's follower
   records in ``rg_own`` the first ledgered outcome of each of its client_seqs
   (:class:`~services.registry.projection.RegistryProjection`).  An intent
   with an ``rg_own`` row is done -- never sent again.

A restart anywhere in between (after the intent is stored, after it was sent,
after the engine applied it, before the reply arrived) resends only intents
the ledger does not hold; the follower has caught up before the submitter
starts, and if the command is applied in the meantime the engine answers the
repeated client_seq with its original outcome (``CommandRetried``, an ``ack``
marked ``retried``) -- it never applies twice.

Answers that say the command was NOT applied make the intent reissue under a
fresh client_seq (the old one is marked ``reissued``): the gateway's
``overloaded`` / ``rate_limited`` / ``storage_unavailable`` (nothing reached
the ledger), and ``client_seq_stale`` (a later client_seq of ours got in
first, so this one never can) or ``client_seq_reused``.  The writer numbers its
client_seqs in its own client session, ``registry``.  Other gateway refusals (``not_authorized``,
a schema violation) are final: ``gateway_refused``.

Refunds are not asked for by staff: the projection derives them (``rg_due``:
the lot's outcome is final, the deposit is not the winner's) and
:meth:`Outbox.queue_refunds` turns each due refund into one RefundDeposit
intent, in the same write txn that records it in ``rg_refund_cs`` (lot NUL
bidder -> client_seq) -- so a refund is queued once, whatever restarts.  The
deposit becomes ``refunded`` only when the ledger shows DepositRefunded.
"""

from __future__ import annotations

import time
from collections.abc import Container, Sequence
from typing import Any, TypeAlias

import lmdb
import msgspec
import trio

from engine.codes import Reject
from gateway.wire import protocol as p
from gateway.wire import ws
from persistence.service import ServiceStore
from services.registry.model import Intent, OwnOutcome
from services.registry.projection import DUE, OWN, SESSION, RegistryReader, pair, u64

Txn: TypeAlias = "lmdb.Transaction[bytes]"

OUTBOX = b"rg_outbox"
WMETA = b"rg_wmeta"
REFUND_CS = b"rg_refund_cs"
NEXT_CS = b"next_client_seq"
WINDOW = 16
NOT_APPLIED = {
    int(p.GatewayError.overloaded),
    int(p.GatewayError.rate_limited),
    int(p.GatewayError.storage_unavailable),
    int(p.GatewayError.too_many_refusals),
    int(Reject.client_seq_stale),
}

_mp = msgspec.msgpack.Encoder()
_intent = msgspec.msgpack.Decoder(Intent)
_own = msgspec.msgpack.Decoder(OwnOutcome)
STALE = int(Reject.client_seq_stale)
# Ledgered refusals that say the command never applied under that client_seq:
# stale, or reused (the session's memory holds another command under it).
NEVER_APPLIED = (STALE, int(Reject.client_seq_reused))
_json = msgspec.json.Encoder()


class Result(msgspec.Struct, kw_only=True):
    """An intent's outcome as the HTTP API reports it."""

    client_seq: int  # the one that finally carried it
    purpose: str
    state: str  # accepted | refused | gateway_refused | pending
    seq: int = 0  # ledger seq of the outcome (0: not ledgered)
    code: int = 0
    name: str = ""
    detail: str = ""
    retried: bool = False


def frame_dict(frame: p.StaffFrame) -> dict[str, object]:
    d: dict[str, object] = msgspec.to_builtins(frame)
    return d


class Outbox:
    """Intents with their client_seqs, in the registry's store."""

    dbs = (OUTBOX, WMETA, REFUND_CS)

    def __init__(self, store: ServiceStore, reader: RegistryReader) -> None:
        self.store = store
        self.reader = reader
        self._low = 1  # no pending intent below this client_seq
        for name in self.dbs:
            store.add_db(name)

    def _next_cs(self, txn: Txn) -> int:
        raw = txn.get(NEXT_CS, db=self.store.db(WMETA))
        stored = 1 if raw is None else int.from_bytes(raw, "big")
        cur = txn.cursor(self.store.db(OWN))  # a rebuilt store still knows what it sent
        seen = int.from_bytes(cur.key(), "big") + 1 if cur.last() else 1
        return max(stored, seen)

    def add(self, frames: Sequence[tuple[dict[str, object], str]]) -> list[int]:
        """Store intents (frame dict, purpose) durably; returns their client_seqs."""
        seqs: list[int] = []

        def write(txn: Txn) -> None:
            seqs[:] = self.add_in(txn, frames)

        self.store.write(write)
        return seqs

    def add_in(self, txn: Txn, frames: Sequence[tuple[dict[str, object], str]]) -> list[int]:
        """:meth:`add` inside the caller's write txn (a record and its intent at once)."""
        seqs: list[int] = []
        cs = self._next_cs(txn)
        for frame, purpose in frames:
            intent = Intent(client_seq=cs, frame={**frame, "client_seq": cs}, purpose=purpose)
            txn.put(u64(cs), _mp.encode(intent), db=self.store.db(OUTBOX))
            seqs.append(cs)
            cs += 1
        txn.put(NEXT_CS, u64(cs), db=self.store.db(WMETA))
        return seqs

    def queue_refunds(self, limit: int = 1000) -> list[int]:
        """One RefundDeposit intent per refund due (``rg_due``) not queued yet;
        returns the new client_seqs.  Queued once: the intent and its
        ``rg_refund_cs`` row are written in one txn."""
        seqs: list[int] = []

        def write(txn: Txn) -> None:
            seqs.clear()
            index = self.store.db(REFUND_CS)
            frames: list[tuple[dict[str, object], str]] = []
            keys: list[bytes] = []
            for k, v in txn.cursor(self.store.db(DUE)):
                if txn.get(k, db=index) is not None:
                    continue
                reg = self.reader.reg_at(txn, bytes(k))  # the ids: a long one's key is a digest
                if reg is None:
                    continue
                lot, bidder = reg.lot_id, reg.bidder_id
                amount = int.from_bytes(v, "big")
                frame = p.RefundDepositFrame(0, lot, bidder, amount)
                frames.append((frame_dict(frame), f"refund {lot}/{bidder}"))
                keys.append(bytes(k))
                if len(frames) >= limit:
                    break
            if frames:
                seqs[:] = self.add_in(txn, frames)
                for k, cs in zip(keys, seqs, strict=True):
                    txn.put(k, u64(cs), db=index)

        self.store.write(write)
        return seqs

    def refund_cs(self, lot_id: str, bidder_id: str) -> int:
        """The client_seq a refund was first queued under (0: never)."""
        with self.store.read() as txn:
            raw = txn.get(pair(lot_id, bidder_id), db=self.store.db(REFUND_CS))
        return 0 if raw is None else int.from_bytes(raw, "big")

    def intent(self, cs: int) -> Intent | None:
        with self.store.read() as txn:
            raw = txn.get(u64(cs), db=self.store.db(OUTBOX))
        return None if raw is None else _intent.decode(raw)

    def pending(self, limit: int = 1000, skip: Container[int] = ()) -> list[Intent]:
        """Pending intents the ledger does not hold yet, oldest first.  One
        refused ``client_seq_stale`` in the ledger (a restart between that
        answer and its reissue) is reissued here."""
        out: list[Intent] = []
        stale: list[int] = []
        first_open = 0  # the first client_seq not settled for good
        with self.store.read() as txn:
            own = self.store.db(OWN)
            cur = txn.cursor(self.store.db(OUTBOX))
            last = self._low - 1
            if cur.set_range(u64(self._low)):
                for k, v in cur:
                    intent = _intent.decode(v)
                    last = intent.client_seq
                    done = txn.get(k, db=own) if intent.state == "pending" else None
                    if intent.state != "pending":
                        continue  # reissued or refused by the gateway: settled
                    if done is not None and _own.decode(done).code not in NEVER_APPLIED:
                        continue  # in the ledger: settled
                    first_open = first_open or intent.client_seq
                    if done is not None:
                        stale.append(intent.client_seq)
                    elif intent.client_seq in skip:
                        continue  # answered or in flight in this process
                    elif len(out) < limit:
                        out.append(intent)
                    else:
                        break
            self._low = first_open or last + 1
        for cs in stale:
            self.reissue(cs, "client_seq_stale")
        return self.pending(limit, skip) if stale else out

    def _update(self, cs: int, **changes: Any) -> None:
        def write(txn: Txn) -> None:
            raw = txn.get(u64(cs), db=self.store.db(OUTBOX))
            if raw is not None:
                intent = msgspec.structs.replace(_intent.decode(raw), **changes)
                txn.put(u64(cs), _mp.encode(intent), db=self.store.db(OUTBOX))

        self.store.write(write)

    def refuse(self, cs: int, detail: str) -> None:
        self._update(cs, state="gateway_refused", detail=detail)

    def reissue(self, cs: int, detail: str) -> int:
        """The command was not applied under ``cs``: carry it under a fresh one."""
        out: list[int] = []

        def write(txn: Txn) -> None:
            out.clear()
            db = self.store.db(OUTBOX)
            raw = txn.get(u64(cs), db=db)
            assert raw is not None
            old = _intent.decode(raw)
            if old.state == "reissued":
                out.append(old.reissued_as)
                return
            new_cs = self._next_cs(txn)
            new = Intent(
                client_seq=new_cs,
                frame={**old.frame, "client_seq": new_cs},
                purpose=old.purpose,
            )
            txn.put(u64(new_cs), _mp.encode(new), db=db)
            old = msgspec.structs.replace(old, state="reissued", reissued_as=new_cs, detail=detail)
            txn.put(u64(cs), _mp.encode(old), db=db)
            txn.put(NEXT_CS, u64(new_cs + 1), db=self.store.db(WMETA))
            out.append(new_cs)

        self.store.write(write)
        return out[0]

    def result(self, cs: int) -> Result:
        """Follows reissues to the client_seq that finally carried the intent."""
        for _ in range(1000):
            intent = self.intent(cs)
            if intent is None:
                return Result(client_seq=cs, purpose="", state="unknown")
            if intent.state == "reissued":
                cs = intent.reissued_as
                continue
            if intent.state == "gateway_refused":
                return Result(
                    client_seq=cs,
                    purpose=intent.purpose,
                    state="gateway_refused",
                    detail=intent.detail,
                )
            own = self.reader.own(cs)
            if own is None:
                return Result(client_seq=cs, purpose=intent.purpose, state="pending")
            name = "" if not own.code else p.error_name(own.code)
            return Result(
                client_seq=cs,
                purpose=intent.purpose,
                state="refused" if own.code else "accepted",
                seq=own.seq,
                code=own.code,
                name=name,
            )
        raise RuntimeError("reissue chain too long")

    def intents(self, since: int = 0, limit: int = 500) -> list[Intent]:
        out: list[Intent] = []
        with self.store.read() as txn:
            cur = txn.cursor(self.store.db(OUTBOX))
            if cur.set_range(u64(since + 1)):
                for _, v in cur:
                    out.append(_intent.decode(v))
                    if len(out) >= limit:
                        break
        return out


class Submitter:
    """Sends the outbox's pending intents over one service WebSocket; see the module doc."""

    def __init__(
        self,
        outbox: Outbox,
        ws_url: str,
        token: str,
        *,
        window: int = WINDOW,
        role: str = "service",
        identity: str = "",
        on_reply: Any = None,
    ) -> None:
        assert 0 < window < 32
        self.outbox = outbox
        self.ws_url = ws_url
        self.token = token
        self.window = window
        self.role = role
        self.identity = identity  # the origin expected (e.g. service:registry); "" = any
        self.on_reply = on_reply  # called with (client_seq, frame) -- tests, metrics
        self.replies: dict[int, p.Ack | p.Error] = {}  # this process's answers
        self.sent = 0  # frames sent by this process (resends included)
        self.connected = False
        self.last_error = ""
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._inflight: dict[int, float] = {}

    def wake(self) -> None:
        self._wake.set()

    def changed(self) -> None:
        """Outcome news (a reply, or the follower applying entries)."""
        self._changed.set()
        self._changed = trio.Event()

    def result(self, cs: int) -> Result:
        """The ledger's word (through the follower) or, without a follower or
        before it catches up, the gateway's reply (the same seq and code)."""
        r = self.outbox.result(cs)
        reply = self.replies.get(r.client_seq)
        if reply is None:
            return r
        if r.state == "pending" and (isinstance(reply, p.Ack) or reply.seq):
            code = 0 if isinstance(reply, p.Ack) else int(reply.code)
            r.state, r.seq, r.code = ("refused" if code else "accepted"), reply.seq, code
            r.name = "" if isinstance(reply, p.Ack) else reply.name
        r.retried = isinstance(reply, p.Ack) and reply.retried
        return r

    async def wait(self, cs: int, timeout_s: float) -> Result:
        """The intent's result once it is no longer pending (or at the timeout)."""
        with trio.move_on_after(timeout_s):
            while True:
                r = self.result(cs)
                if r.state != "pending":
                    return r
                changed = self._changed
                with trio.move_on_after(0.05):
                    await changed.wait()
        return self.result(cs)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (and reconnect with backoff), then pump until cancelled."""
        started = False
        backoff = 0.1
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    sock = await self._connect(nursery)
                    backoff = 0.1
                    self.connected = True
                    if not started:
                        task_status.started()
                        started = True
                    nursery.start_soon(self._read, sock, nursery.cancel_scope)
                    await self._pump(sock)
            except Exception as e:  # refused, handshake failed, dropped: retry later
                self.last_error = f"{type(e).__name__}: {e}"
                self._inflight.clear()  # resent on reconnect; the ledger dedupes
            self.connected = False
            if not started:
                task_status.started()
                started = True
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _connect(self, nursery: trio.Nursery) -> ws.Socket:
        # its own client session: another client of the same token never makes its
        # client_seqs stale (nor they its)
        headers = [("Authorization", f"Bearer {self.token}"), ("X-Pubex-Session", SESSION)]
        sock = await ws.connect(nursery, self.ws_url, headers)
        hello = p.decode_server(await sock.receive())
        if not isinstance(hello, p.Hello) or hello.role != self.role:
            await sock.close()
            raise PermissionError(f"the token gave {hello!r}, not a {self.role} connection")
        if self.identity and f"{hello.role}:{hello.identity}" != self.identity:
            await sock.close()
            raise PermissionError(
                f"the token gave origin {hello.role}:{hello.identity}, expected {self.identity}"
            )
        return sock

    async def _read(self, sock: ws.Socket, scope: trio.CancelScope) -> None:
        try:
            while True:
                frame = p.decode_server(await sock.receive())
                if isinstance(frame, p.Ack | p.Error) and frame.client_seq:
                    self._answer(frame)
        except ws.ConnectionClosed:
            scope.cancel()

    def _answer(self, frame: p.Ack | p.Error) -> None:
        cs = frame.client_seq
        self._inflight.pop(cs, None)
        self.replies[cs] = frame
        if isinstance(frame, p.Error) and not frame.seq:
            code = int(frame.code)
            if code in NOT_APPLIED:
                self.outbox.reissue(cs, frame.name)
            else:
                self.outbox.refuse(cs, f"{frame.name}: {frame.message}")
        elif isinstance(frame, p.Error) and frame.code in NEVER_APPLIED:
            self.outbox.reissue(cs, frame.name)  # ledgered as stale or reused: never applied
        if self.on_reply is not None:
            self.on_reply(cs, frame)
        self.changed()
        self._wake.set()

    async def _pump(self, sock: ws.Socket) -> None:
        while True:
            sent_any = False
            busy = self.replies.keys() | self._inflight.keys()
            for intent in self.outbox.pending(4 * self.window, busy):
                cs = intent.client_seq
                while len(self._inflight) >= self.window:
                    wake = self._wake = trio.Event()
                    with trio.move_on_after(1.0):
                        await wake.wait()
                    self._expire()
                self._inflight[cs] = time.monotonic()
                await sock.send(_json.encode(intent.frame).decode())
                self.sent += 1
                sent_any = True
            if not sent_any:
                wake = self._wake = trio.Event()
                with trio.move_on_after(0.5):
                    await wake.wait()
                self._expire()

    def _expire(self, timeout_s: float = 30.0) -> None:
        """A reply lost in a half-open connection: send again (deduplicated)."""
        now = time.monotonic()
        for cs, t in list(self._inflight.items()):
            if now - t > timeout_s:
                del self._inflight[cs]


async def submit_all(
    outbox: Outbox,
    submitter: Submitter,
    frames: Sequence[tuple[dict[str, object], str]],
    timeout_s: float = 60.0,
) -> list[Result]:
    """Persist then send ``frames``; wait for every outcome."""
    seqs = outbox.add(frames)
    submitter.wake()
    results: list[Result] = []
    for cs in seqs:
        results.append(await submitter.wait(cs, timeout_s))
    return results
