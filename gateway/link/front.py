"""Theory of operation: the sequencer's front desk -- what every edge asks of
the one authority, in-process or over the link.

An edge (``gateway.edge.server.Gateway``) decodes, bounds, authenticates and
verifies; what must hold across *all* edges together is decided here, next
to the runtime, once:

* **budgets** -- each bidder's bid rate (``bids_per_s``), each staff, service
  or supervisor identity's command rate, and each identity's budget of
  ledgered refusals (``refusals_per_minute``), with the commands it has in
  flight counted against it;
* **admissions** -- connections per client address, the handshake-nonce
  memory (a captured bidder handshake cannot be replayed on another edge),
  and the failed-token slowdown per address;
* **answers** -- every command's outcome as an ``Answer`` (ack with receipt
  and proof, or a typed refusal), a retry's rebuilt from the ledger (the same
  seq, entry hash, receipt and proof as the original);
* **the public side** -- each committed entry's public events
  (``PublicEntry``) and the keys it registered, in ledger order, to every
  listener (the in-process edge, the link server).

Nothing here reads a frame: it takes commands already translated and
verified.  The in-process path (``LocalCore``) and the link server call the
same methods, so a limit means the same thing with one edge or many.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.codes import Reject
from engine.messages import AnyEvent, CommandRejected, CommandRetried, Event, KeyRegistered
from engine.state import KeyRecord
from gateway.public.events import PUBLIC_TYPES
from gateway.sequencer.journal import Outcome
from gateway.sequencer.runtime import RECEIPT_GROUP, Overloaded, Runtime
from gateway.wire.access import FailureGate, NonceCache
from gateway.wire.protocol import GatewayError
from ledger.checkpoint import Receipt, sign_receipt
from ledger.record import body_hash, decode_body

# Answer.outcome: the label the edge counts commands by (pubex_commands{outcome})
ACCEPTED, REJECTED, RETRIED, FAILED, STORAGE, REFUSED, UNKNOWN = (
    "accepted",
    "rejected",
    "retried",
    "failed",
    "storage_unavailable",
    "refused",
    "outcome_unknown",
)


class Answer(msgspec.Struct, array_like=True, omit_defaults=True):
    """A command's outcome as the edge renders it: ``code == 0`` an ack (seq,
    ts_ns, entry hash, receipt, proof; ``retried``: a retry's original), else
    an ``error`` frame (code, detail, and the refusal's seq when ledgered)."""

    outcome: str
    code: int = 0
    detail: str = ""
    seq: int = 0
    ts_ns: int = 0
    entry_hash: bytes = b""
    receipt: bytes = b""
    proof: list[bytes] = []
    retried: bool = False


class PublicEntry(msgspec.Struct, array_like=True):
    """One committed entry's public side: what any edge may show (as the
    sequencer hands it to its listeners, and as it crosses the link)."""

    seq: int
    ts_ns: int
    events: list[AnyEvent]


class Admission(msgspec.Struct, array_like=True, omit_defaults=True):
    """A handshake's admission: ``status`` 0 admitted (with the bidder's codes
    and where its session's numbering stands), else the HTTP refusal."""

    status: int = 0
    reason: str = ""
    codes: dict[str, str] = {}
    high_seq: int = 0


BID_RATE, STAFF_RATE = "bid", "staff"  # Budget.kind: bids_per_s or staff_commands_per_s


class Budget(msgspec.Struct, array_like=True, frozen=True):
    """Which rate bucket a command takes a token from -- its kind (the rate
    and burst are the sequencer's own settings, never the edge's say) and
    whose (a bidder, a staff origin) -- and whose refusal budget it counts
    against."""

    kind: str
    key: str
    identity: str


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def _refill(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def take(self) -> bool:
        if self._refill() < 1:
            return False
        self.tokens -= 1
        return True

    def level(self) -> float:
        """Tokens there now (none is taken)."""
        return self._refill()

    def spend(self) -> None:
        """Take a token even when none is left (a debt, down to -burst): what
        already happened counts against the future, so the long-run rate holds
        even when many were in flight at once."""
        self._refill()
        self.tokens = max(-self.burst, self.tokens - 1)


AnswerSink = Callable[[Answer], None]
EntrySink = Callable[[list[PublicEntry], list[tuple[str, KeyRecord]]], None]


def refusal(code: int, detail: str, outcome: str = REFUSED) -> Answer:
    return Answer(outcome, code, detail)


class Front:
    def __init__(self, rt: Runtime, limits: Any, gate: FailureGate, window_s: float) -> None:
        self.rt = rt
        self.limits = limits
        self.gate = gate
        self.nonces = NonceCache(2 * window_s)
        self.buckets: dict[str, TokenBucket] = {}
        self.refusals: dict[str, TokenBucket] = {}  # identity -> ledgered refusals left
        self.in_flight: dict[str, int] = {}  # identity -> commands submitted, not answered
        self.per_address: dict[str, int] = {}
        self.listeners: list[EntrySink] = []
        self._rates = {
            BID_RATE: (limits.bids_per_s, limits.bid_burst),
            STAFF_RATE: (limits.staff_commands_per_s, limits.staff_burst),
        }
        rt.subscribers.append(self._on_durable)
        rt.sign_receipts = True

    # -------------------------------------------------------- admissions
    def admit(
        self,
        ip: str,
        *,
        origin: str = "",
        session: str = "",
        bidder_id: str = "",
        nonce: str = "",
        token_ok: bool | None = None,
    ) -> Admission:
        """One handshake the edge has authenticated as far as it can alone.
        ``token_ok``: a token handshake's lookup (None: not a token one);
        ``nonce``: a bidder handshake's ``key|nonce``.  Admitted, it counts
        against its address until ``release``."""
        if self.per_address.get(ip, 0) >= self.limits.max_connections_per_address:
            return Admission(429, "too many connections from this address")
        if token_ok is not None:
            wait = self.gate.wait_s(ip)
            if wait > 0:
                self.gate.refused(ip)
                return Admission(429, f"too many failed authentications: retry in {wait:.0f} s")
            if not token_ok:
                self.gate.failed(ip)
                return Admission(401, "authentication failed")
            self.gate.succeeded(ip)
        if nonce and not self.nonces.add(nonce, time.time()):
            return Admission(401, "authentication failed")
        self.per_address[ip] = self.per_address.get(ip, 0) + 1
        router = self.rt.router
        codes = router.codes_of(bidder_id) if bidder_id else {}
        return Admission(0, "", codes, router.high_seq(origin, session) if origin else 0)

    def release(self, ip: str) -> None:
        left = self.per_address.get(ip, 0) - 1
        if left > 0:
            self.per_address[ip] = left
        else:
            self.per_address.pop(ip, None)

    # ----------------------------------------------------------- budgets
    def submit(self, cmd: Any, meta: bytes, budget: Budget, reply: AnswerSink) -> None:
        """Queue a translated, verified command; ``reply`` gets its Answer --
        now when refused here, else once it is durable (or refused by the
        runtime)."""
        rates = self._rates.get(budget.kind)
        if rates is None:
            reply(refusal(GatewayError.not_authorized, f"no such budget: {budget.kind[:32]!r}"))
            return
        name = f"{budget.kind}:{budget.key}"
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = TokenBucket(*rates)
        if not bucket.take():
            reply(refusal(GatewayError.rate_limited, "slow down"))
            return
        identity = budget.identity
        if self._over_budget(identity):
            reply(
                refusal(
                    GatewayError.too_many_refusals,
                    f"over {self.limits.refusals_per_minute} refused commands a minute: wait",
                )
            )
            return
        in_flight = self.in_flight

        def done(outcome: Outcome) -> None:
            left = in_flight[identity] - 1
            if left:
                in_flight[identity] = left
            else:
                del in_flight[identity]
            answer = self.answer(outcome)
            if answer.outcome in (REJECTED, RETRIED, FAILED):
                self._spend_refusal(identity)  # ledgered without effect, or not applied
            reply(answer)

        try:
            self.rt.submit(cmd, done, meta)
        except Overloaded:
            reply(refusal(GatewayError.overloaded, "server busy, retry"))
            return
        in_flight[identity] = in_flight.get(identity, 0) + 1

    def _over_budget(self, identity: str) -> bool:
        """True while this identity's budget of ledgered refusals is spent."""
        budget = self.refusals.get(identity)
        if budget is None:
            return False
        # Once it has been refused lately, what it has in flight may all be
        # refused too: count it against what is left, so pipelining cannot
        # overshoot the budget by more than one commit's worth.
        level = budget.level()
        pending = self.in_flight.get(identity, 0) if level < budget.burst else 0
        return level - pending < 1

    def _spend_refusal(self, identity: str) -> None:
        budget = self.refusals.get(identity)
        if budget is None:
            per_minute = self.limits.refusals_per_minute
            budget = self.refusals[identity] = TokenBucket(per_minute / 60, per_minute)
        budget.spend()

    # ----------------------------------------------------------- answers
    def answer(self, outcome: Outcome) -> Answer:
        if outcome.error is not None:
            if outcome.error == Reject.command_failed:
                return Answer(FAILED, GatewayError.internal_error, "not applied, not recorded")
            return Answer(STORAGE, GatewayError.storage_unavailable, "not recorded")
        first = _own_event(outcome.events)
        if type(first) is CommandRejected:
            return Answer(REJECTED, int(first.code), first.detail, outcome.seq)
        if type(first) is CommandRetried:
            return self.original(first)
        return Answer(
            ACCEPTED,
            0,
            "",
            outcome.seq,
            outcome.ts_ns,
            outcome.entry_hash,
            outcome.receipt,
            outcome.proof(),
        )

    def original(self, retried: CommandRetried) -> Answer:
        """The original outcome of a retried command, rebuilt from the ledger: the
        same seq, entry hash, receipt and proof (Ed25519 signatures are
        deterministic, and the store keeps each batch's boundary, so the receipt
        group is found again).  The engine answers a retry only for the *same*
        command (it keeps each command's digest); one that reuses the client_seq
        for anything else it refuses client_seq_reused (104) itself."""
        seq = retried.original_seq
        store = self.rt.store
        if store.get(seq) is None:  # durable before the retry was: never
            return Answer(
                RETRIED, GatewayError.internal_error, f"entry {seq} of the original is missing"
            )
        if retried.code:
            return Answer(RETRIED, int(retried.code), "retry of a refused command", seq)
        first, last = store.batch_bounds(seq) or (seq, seq)
        group_end = first + ((seq - first) // RECEIPT_GROUP + 1) * RECEIPT_GROUP - 1
        last = min(last, group_end)  # the receipt of seq's group (Runtime._attach_receipt)
        rows = list(store.iter_entries(seq, last))
        _s, _prev, entry_hash, raw = rows[0]
        _s, _prev, last_hash, last_raw = rows[-1]
        key = self.rt.journal.signing_key
        receipt = (
            b""
            if key is None
            else sign_receipt(key, Receipt(last, last_hash, decode_body(last_raw).ts_ns))
        )
        proof = [body_hash(r[3]) for r in rows[1:]]
        return Answer(RETRIED, 0, "", seq, decode_body(raw).ts_ns, entry_hash, receipt, proof, True)

    # ------------------------------------------------------ public side
    def _on_durable(self, batch: list[Outcome]) -> None:
        entries: list[PublicEntry] = []
        keys: list[tuple[str, KeyRecord]] = []
        state_keys = self.rt.router.state.keys
        for outcome in batch:
            public = [ev for ev in outcome.events if type(ev) in PUBLIC_TYPES]
            for ev in outcome.events:
                if type(ev) is KeyRegistered:
                    record = state_keys.get(ev.key_id)
                    if record is not None:
                        keys.append((ev.key_id, record))
            if public:
                entries.append(PublicEntry(outcome.seq, outcome.ts_ns, public))
        for listener in self.listeners:
            listener(entries, keys)


def _own_event(events: list[Event]) -> Event | None:
    """The command's own outcome event (lazily fired deadlines may come first)."""
    for ev in events:
        if type(ev) in (CommandRejected, CommandRetried):
            return ev
    return events[-1] if events else None
