"""Bounds along the whole path, in process, at every boundary.

    frame text -> ``Reader.frame`` / ``Reader.payload`` (size, nesting depth,
    typed decode, duplicate keys, domain, the deployment's limits, fields the
    signed action does not use) -> the gateway's own mapping to an engine
    command (``gateway.wire.translate``: ``staff_command``, ``bid_command``,
    ``signed_command``, ``order_command``) -> ``Journal.append`` on a
    real LMDB ledger (``Router.apply``, command / event / snapshot encoding,
    chaining) -> ``journal.commit()`` -> a replay of the store, which must reach
    the live engine's state hash.

Every input is either refused by the Reader with the code predicted for it --
and the ``client_seq`` whenever the text could be read that far -- or it is
applied, ledgered and committed without any exception.  The prediction is made
here, from the schema's declared bounds (``msgspec.inspect``) and the limits
the documentation promises (money <= max_amount_fen, identifiers
``[A-Za-z0-9._-]{1,64}``, nesting <= max_depth); the Reader is never asked what
it would do.

The runtime tests check the defence behind the edge: a command that still
raises inside ``Journal.append`` is refused ``command_failed`` alone, its
batch-mates are committed, the engine equals a replay of its ledger.

``pytest -s`` prints the inputs tried per frame type and per outcome.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from engine.codes import Reject
from engine.draw import seed_hash
from engine.messages import (
    Command,
    CommandRejected,
    CommandRetried,
    Event,
    FreezeLot,
    LotCreated,
    OrderPlaced,
    Tick,
)
from engine.router import Router
from engine.rules import HOUR_NS, JUDICIAL, MAX_DURATION_NS, MAX_UNITS, NS_PER_S, RuleSet
from engine.sealed import seal_commitment
from gateway.sequencer.journal import Journal, Outcome
from gateway.sequencer.runtime import Runtime
from gateway.wire import protocol as p
from gateway.wire.translate import bid_command, order_command, signed_command, staff_command
from ledger.record import Envelope, encode_envelope
from ledger.replay import full_replay, rebuild, recover, replay
from ledger.store import LedgerStore

pytestmark = pytest.mark.timeout(240)

G = p.GatewayError
SCHEMA = G.schema_violation
READER = p.Reader()  # the deployment defaults
MAX_FEN = READER.max_amount_fen
MAX_DEPTH = READER.max_depth
INT63 = 2**63 - 1
# Every integer field gets these; money fields also get MAX_FEN and MAX_FEN + 1,
# and every field its own declared bounds and their neighbours.
INT_PROBES = (2**63 - 1, 2**63, 2**64, -(2**63) - 1, -1, 0)
MONEY_PROBES = (MAX_FEN, MAX_FEN + 1)
NOT_AN_INT = ("1", 1.5, True, None)
# An identifier as docs/protocol.md promises it (the [limits] id_pattern default),
# written out here rather than read from the Reader.
ID_SPEC = re.compile(r"[A-Za-z0-9._-]{1,64}")
ID_NAMES = frozenset(
    {
        "lot",
        "item",
        "key",
        "bidder",
        "parent_lot",
        "draw_id",
        "complaint_id",
        "alert_key",
        "bidder_code",
        "region",
        "regions",
        "lots",
    }
)
OPTIONAL_IDS = frozenset({("HandleAlertFrame", "lot")})  # "" = none, without a default
FREE_TEXT = ("title", "reason", "text", "note", "payer_account", "bank_ref", "nonce")
LOOKALIKES = {
    "full-width": "ＥＮ",
    "zero-width space": "E\u200bN",
    "RTL override": "\u202eNE",
    "NUL": "EN\x00",
    "newline": "EN\n",
    "Cyrillic E": "\u0415N",
    "trailing space": "EN ",
    "slash": "EN/..",
    "accented": "ÉN",
    "empty": "",
    "star": "*",
}

SECOND = NS_PER_S
HOUR = HOUR_NS
DAY = 24 * HOUR
MS = 1_000_000
EPOCH = 1_767_542_400 * SECOND
FAR = EPOCH + 30 * DAY
STAFF = "staff:probe"
SNAPSHOT_EVERY = 97  # state snapshots ride along often: their encoding is on the path too
SEED = "5eed" * 16
SEED_HASH = seed_hash(SEED)
HEX64 = "ab" * 32
LOT64, ITEM64, KEY64, BIDDER64 = "L" * 64, "I" * 64, "K" * 64, "B" * 64
SIXTY_FOUR = {"lot": LOT64, "parent_lot": LOT64, "item": ITEM64, "key": KEY64, "bidder": BIDDER64}
DOMAINS = {"place_bid": p.BID_DOMAIN, "sealed": p.SEALED_DOMAIN, "order": p.ORDER_DOMAIN}
FOREIGN_DOMAIN = {"place_bid": p.SEALED_DOMAIN, "sealed": p.ORDER_DOMAIN, "order": p.BID_DOMAIN}
SIGNED_CLASS = {"place_bid": p.BidPayload, "sealed": p.SealedPayload, "order": p.OrderPayload}


def _signing_key(name: str) -> SigningKey:
    return SigningKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


# key id -> (bidder id, role): the signers every signed input comes from
SIGNERS: dict[str, tuple[str, str]] = {
    "kb1": ("b1", "bidder"),
    "kb2": ("b2", "bidder"),
    "ks1": ("s1", "supplier"),
    "kp1": ("p1", "purchaser"),
    "kc1": ("c1", "committee"),
    KEY64: (BIDDER64, "bidder"),
}
KEYS = {key_id: _signing_key(key_id) for key_id in SIGNERS}


# ------------------------------------------------------------------ the world


class Crash(Exception):
    """Journal.append raised on an input the edge had accepted."""


@dataclass
class Input:
    label: str
    probe: str
    text: str | bytes
    signed: str  # "" for staff and plain frames
    identity: str  # the connection's key (signed frames)
    origin: str  # the staff origin (staff frames)
    expect: G | None
    expect_seq: int


class World:
    """A real LMDB ledger behind a Journal, and every path step the gateway takes."""

    def __init__(self, path: Path) -> None:
        self.store = LedgerStore.open(path)
        self.journal = Journal(self.store, Router(), snapshot_every_entries=SNAPSHOT_EVERY)
        self.now = EPOCH
        self._seqs: dict[str, Iterator[int]] = {}
        self._serial = itertools.count(1)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.problems: list[str] = []
        self.crashes: list[str] = []
        self.mirror = Router()  # follows the store, entry by entry
        self.order_id = 0  # kb1's resting order on IT (setup_market)
        self.context = ""  # what a crash report adds about the scenario

    @property
    def router(self) -> Router:
        return self.journal.router

    def seq(self, origin: str) -> int:
        return next(self._seqs.setdefault(origin, itertools.count(1)))

    def serial(self) -> int:
        return next(self._serial)

    # -------------------------------------------------------- engine + ledger
    def append(
        self, cmd: Command, meta: bytes = b"", *, at: int = 0, evidence: Any = ""
    ) -> Outcome:
        """Apply, encode, chain and commit one command; a raise is a Crash (the
        engine is rebuilt from the ledger first, as the runtime does)."""
        self.now = max(self.now + MS, at)
        try:
            outcome = self.journal.append(cmd, self.now, meta)
        except Exception as e:
            self.crashes.append(
                f"{type(e).__name__}: {e}\n    command: {cmd!r:.400}"
                f"\n    values past 64 bits: {self.past_64_bits(cmd)}"
                f"\n    input: {evidence!r:.1200}{self.context}"
            )
            # as the runtime does: rebuild from the ledger, nothing half-applied stays
            self.journal.router = rebuild(self.store, self.journal.batch.entries)
            raise Crash(self.crashes[-1]) from e
        self.journal.commit()
        return outcome

    def past_64_bits(self, cmd: Command) -> str:
        """Which event fields the ledger could not encode (re-applied on a copy)."""
        try:
            events = rebuild(self.store, self.journal.batch.entries).apply(cmd, self.now)
        except Exception as e:
            return f"(applying it raised {e!r})"
        found = [
            f"{type(ev).__name__}{at} = {value}"
            for ev in events
            for at, value in _ints(msgspec.to_builtins(ev))
            if not -(2**63) <= value < 2**64
        ]
        return ", ".join(found) or "none in the events (the state?)"

    def tick(self, at: int) -> Outcome:
        """The runtime's timer: a ledgered Tick lets the deadlines due by ``at`` fire."""
        try:
            return self.append(Tick("system", 0), at=at, evidence=f"a Tick at {at}")
        except Crash:
            pass
        self.fail_crash()
        raise AssertionError("unreachable")

    def fail_crash(self) -> None:
        pytest.fail(
            "Journal.append raised on an input the edge accepted:\n  " + self.crashes[-1],
            pytrace=False,
        )

    def run_deadlines(self, until: int = INT63) -> None:
        """Let every deadline up to ``until`` (a 63-bit time at most) fire."""
        for _ in range(10_000):
            due = self.router.next_deadline_ns()
            if due is None or due > until:
                return
            self.tick(max(due, self.now + MS))
        raise AssertionError("deadlines keep firing")

    # ------------------------------------------------------------ the edge
    def through(self, inp: Input, reader: p.Reader = READER) -> tuple[str, Outcome | None]:
        """Reader -> command -> Journal.append -> commit.  FrameError propagates."""
        frame = reader.frame(inp.text)
        payload = reader.payload(frame) if inp.signed else None
        cmd, meta, refused = to_command(
            frame, payload, self.router, identity=inp.identity, origin=inp.origin
        )
        if refused:
            return f"gateway:{refused}", None
        if cmd is None:
            return "decoded", None
        try:
            outcome = self.append(cmd, meta, evidence=inp.text)
        except Crash:
            return "crash", None
        return outcome_name(outcome.events), outcome

    def run(self, spec: Spec, muts: list[Mut], probe: str, reader: p.Reader = READER) -> str:
        inp = build(self, spec, muts, probe)
        got = self._run(inp, reader)
        self.counts[(spec.label, got)] += 1
        return got

    def _run(self, inp: Input, reader: p.Reader) -> str:
        try:
            got, outcome = self.through(inp, reader)
        except p.FrameError as e:
            code = G(e.code)
            if inp.expect is None:
                self.problem(inp, f"refused {code.name} ({e.message}); every value is in bounds")
            elif (code, e.client_seq) != (inp.expect, inp.expect_seq):
                self.problem(
                    inp,
                    f"refused {code.name} client_seq={e.client_seq} ({e.message}); "
                    f"expected {inp.expect.name} client_seq={inp.expect_seq}",
                )
            return f"refused:{code.name}"
        if inp.expect is not None:
            self.problem(inp, f"passed the Reader as {got}; expected {inp.expect.name}")
        if outcome is not None:
            for ev in outcome.events:
                if type(ev) is LotCreated:  # a created lot is published: its life starts
                    self._publish(inp, ev.lot_id)
        return got

    def _publish(self, created: Input, lot_id: str) -> None:
        text = json.dumps({"type": "publish_lot", "client_seq": self.seq(STAFF), "lot": lot_id})
        inp = Input(f"{created.label}>publish", created.probe, text, "", "", STAFF, None, 0)
        try:
            got, _ = self.through(inp)
        except p.FrameError as e:
            self.problem(inp, f"publish_lot of {lot_id!r} refused {G(e.code).name}")
            got = f"refused:{G(e.code).name}"
        if got == "crash":
            self.crashes[-1] += (
                f"\n    after {created.label} [{created.probe}]: {created.text!r:.400}"
            )
        self.counts[(inp.label, got)] += 1

    def problem(self, inp: Input, what: str) -> None:
        self.problems.append(f"{inp.label} [{inp.probe}]: {what}\n    input: {inp.text!r:.600}")

    # ------------------------------------------------------------- replay
    def check_replay(self, where: str) -> None:
        replay(self.mirror, self.store, from_seq=self.mirror.applied + 1)
        if self.mirror.state_hash() != self.router.state_hash():
            self.problems.append(f"{where}: the ledger's replay differs from the live engine")

    def check_final(self) -> None:
        live = self.router.state_hash()
        assert self.router.applied == self.store.last_seq()
        assert full_replay(self.store).state_hash() == live, "genesis replay != live engine"
        assert recover(self.store).state_hash() == live, "snapshot + tail != live engine"

    # ---------------------------------------------- helpers for valid input
    def staff(self, tag: str, **fields: Any) -> Outcome:
        doc = {"type": tag, "client_seq": self.seq(STAFF), **fields}
        return self.must(Input(tag, "valid", json.dumps(doc), "", "", STAFF, None, 0))

    def signed(self, kind: str, key_id: str, /, **fields: Any) -> Outcome:
        doc = {"domain": DOMAINS[kind], **fields, "key": key_id, "client_seq": self.seq(key_id)}
        text = signed_text(kind, json.dumps(doc), key_id)
        return self.must(Input(kind, "valid", text, kind, key_id, "", None, 0))

    def must(self, inp: Input) -> Outcome:
        """A valid input: the edge takes it and the ledger records it, no raise."""
        got, outcome = self.through(inp)
        if got == "crash":
            self.fail_crash()
        assert outcome is not None, (got, inp.text)
        return outcome

    def register_keys(self) -> None:
        for key_id, (bidder, role) in SIGNERS.items():
            pub = bytes(KEYS[key_id].verify_key).hex()
            ok(self.staff("register_key", key=key_id, bidder=bidder, public_key_hex=pub, role=role))

    def lot(
        self,
        lot_id: str,
        mechanism: str,
        *,
        start: int = 10_000,
        inc: int = 100,
        end: int = FAR,
        rules: RuleSet = JUDICIAL,
        regions: tuple[tuple[str, int], ...] = (),
        bidders: tuple[str, ...] = (),
        publish: bool = True,
        deposit: int = 0,
        strict: bool = True,
    ) -> None:
        """A lot created (published, bidders funded) through the edge; ``strict``:
        every step is accepted, else only none may raise."""
        check = ok if strict else (lambda outcome: outcome)
        check(
            self.staff(
                "create_lot",
                lot=lot_id,
                mechanism=mechanism,
                title=f"lot {lot_id}",
                start_price_fen=start,
                increment_fen=inc,
                start_ns=min(self.now, EPOCH),
                end_ns=end,
                rules=plain(rules),
                deposit_fen=deposit,
                regions=[list(r) for r in regions],
            )
        )
        if publish:
            check(self.staff("publish_lot", lot=lot_id))
        for bidder in bidders:
            check(self.staff("register_bidder", lot=lot_id, bidder=bidder))
            check(self.staff("confirm_deposit", lot=lot_id, bidder=bidder, amount_fen=deposit))

    def setup_market(self) -> None:
        """Keys, lots in every phase the signed and staff frames name, items, a
        resting order, a complaint and an expert draw -- so that inputs in
        bounds reach deep into their handlers, not just the first refusal."""
        self.register_keys()
        soon = EPOCH + 10 * SECOND
        self.lot("EN", "english", bidders=("b1", "b2", BIDDER64))
        ok(self.staff("register_bidder", lot="EN", bidder="b3"))  # deposit not yet confirmed
        self.lot(LOT64, "english", bidders=("b1",))
        dutch = RuleSet(name="dutch", tick_ns=HOUR, extension_window_ns=0)
        self.lot("DU", "dutch", start=100_000, rules=dutch, bidders=("b1", BIDDER64))
        self.lot("SE", "sealed", bidders=("b1",))
        revealing = RuleSet(reveal_window_ns=30 * DAY)
        self.lot("SR", "sealed", end=soon, rules=revealing, bidders=("b1",))
        scoring = RuleSet(
            evaluation="scoring",
            min_valid_bids=1,
            reveal_window_ns=5 * SECOND,
            evaluation_window_ns=30 * DAY,
        )
        self.lot("SC", "sealed", end=soon, rules=scoring, bidders=("b1",))
        quoting = RuleSet(min_valid_bids=3, extension_window_ns=0)
        self.lot("RV", "reverse", rules=quoting, bidders=("s1",))
        confirming = RuleSet(min_valid_bids=1, extension_window_ns=0, confirm_window_ns=30 * DAY)
        for lot_id in ("RC", "RD"):  # decline_award / confirm_award
            self.lot(lot_id, "reverse", end=soon, rules=confirming, bidders=("s1",))
        vbp = RuleSet(evaluation="vbp")
        regions = (("R1", 100), ("R2", 200))
        self.lot("VB", "vbp", start=100_000, inc=1, rules=vbp, regions=regions, bidders=("s1",))
        for lot_id in ("FZ", "TM"):
            self.lot(lot_id, "english")
        self.lot("UN", "english", end=soon, bidders=("b2",))  # unsold: a deposit to refund
        self.lot("DR", "english", publish=False)
        paying = RuleSet(payment_window_ns=30 * DAY, extension_window_ns=0)
        for lot_id in ("PY", "PD"):  # confirm_payment / declare_default
            self.lot(lot_id, "english", end=soon, rules=paying, bidders=("b1",))
        qualifying = RuleSet(post_qualification=True, extension_window_ns=0)
        self.lot("PQ", "english", end=soon, rules=qualifying, bidders=("b1",))
        ok(self.staff("create_item", item="IT", title="paper", session="open"))
        ok(self.staff("create_item", item=ITEM64, title="ink", session="open"))
        for lot_id, amount in (("SR", 12_345), ("SC", 9_000)):
            commitment = seal_commitment(lot_id, amount, "n0nce")
            ok(self.signed("sealed", "kb1", action="submit", lot=lot_id, commitment=commitment))
        for lot_id in ("RC", "RD"):
            ok(self.signed("place_bid", "ks1", lot=lot_id, amount_fen=9_900))
        for lot_id in ("PY", "PD", "PQ"):
            ok(self.signed("place_bid", "kb1", lot=lot_id, amount_fen=10_000))
        resting = self.signed(
            "order", "kb1", action="place", item="IT", side="buy", price_fen=100, qty=1_000
        )
        self.order_id = next(e.order_id for e in resting.events if type(e) is OrderPlaced)
        ok(self.signed("sealed", "kb1", action="complaint", lot="EN", complaint_id="CP0", text="t"))
        ok(
            self.staff(
                "commit_expert_draw", draw_id="ED0", lot="EN", seed_hash=SEED_HASH, pool_hash=HEX64
            )
        )
        self.tick(EPOCH + 11 * SECOND)
        ok(self.signed("sealed", "kb1", action="reveal", lot="SC", amount_fen=9_000, nonce="n0nce"))
        self.tick(EPOCH + 16 * SECOND)
        lots = self.router.state.lots
        phases = {lot_id: (lots[lot_id].status, lots[lot_id].phase) for lot_id in lots}
        assert phases["SR"] == ("open", "reveal")
        assert phases["SC"] == ("open", "evaluation")
        assert phases["RC"] == phases["RD"] == ("open", "confirming")
        assert phases["UN"][0] == "unsold"
        settlement = {lot_id: lots[lot_id].settlement for lot_id in ("PY", "PD", "PQ")}
        assert settlement == {
            "PY": "awaiting_payment",
            "PD": "awaiting_payment",
            "PQ": "awaiting_qualification",
        }
        self.check_replay("setup")
        assert not self.problems, self.problems


def _ints(value: Any, at: str = "") -> Iterator[tuple[str, int]]:
    if type(value) is int:
        yield at, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _ints(v, f"{at}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _ints(v, f"{at}[{i}]")


def plain(value: Any) -> Any:
    """As JSON has it: dicts, lists, str, int, bool, None."""
    return msgspec.json.decode(msgspec.json.encode(value))


def ok(outcome: Outcome) -> Outcome:
    name = outcome_name(outcome.events)
    assert name == "accepted", (name, outcome.events)
    return outcome


def outcome_name(events: list[Event]) -> str:
    for ev in events:  # the command's own outcome (lazily fired deadlines may come first)
        if type(ev) is CommandRejected:
            return f"rejected:{Reject(ev.code).name}"
        if type(ev) is CommandRetried:
            return "retried"
    return "accepted"


def signed_text(kind: str, payload_text: str, key_id: str) -> str:
    sig = KEYS[key_id].sign(payload_text.encode()).signature.hex()
    return json.dumps({"type": kind, "payload": payload_text, "sig": sig}, ensure_ascii=False)


def to_command(
    frame: p.ClientFrame, payload: Any, router: Router, *, identity: str, origin: str
) -> tuple[Command | None, bytes, str]:
    """What the gateway submits for a read frame: (command, meta, refusal)."""
    if isinstance(frame, (p.Subscribe, p.Unsubscribe, p.Ping)):
        return None, b"", ""
    if payload is None:  # Gateway._staff
        cmd = staff_command(origin, frame)
        kind, _, who = origin.partition(":")
        return cmd, encode_envelope(Envelope(kind, who, "127.0.0.1", "probe")), ""
    # Gateway._signed: the payload names the connection's key; its signature verifies
    if payload.key != identity:
        return None, b"", "wrong_key"
    record = router.state.keys.get(identity)
    if record is None:
        return None, b"", "unknown_key"
    try:
        p.verify_bid(frame, VerifyKey(bytes.fromhex(record.public_key_hex)))
    except p.FrameError as e:
        return None, b"", G(e.code).name
    who = f"{record.role}:{record.bidder_id}"  # Gateway._origin
    cmd: Command
    if type(frame) is p.PlaceBidFrame:  # the same translation the gateway uses
        cmd = bid_command(who, payload)
    elif type(frame) is p.SealedFrame:
        cmd = signed_command(who, payload)
    else:
        cmd = order_command(who, payload)
    meta = Envelope("bidder", identity, "127.0.0.1", "probe", frame.payload, frame.sig)
    return cmd, encode_envelope(meta), ""


# ------------------------------------------------------------ frame types


@dataclass(frozen=True)
class Spec:
    label: str
    cls: type  # what the doc decodes as: the frame, or a signed frame's payload
    base: Callable[[World], dict[str, Any]]
    signed: str = ""  # place_bid | sealed | order: the doc is the signed payload
    signer: str = ""
    applicable: frozenset[str] | None = None  # the payload fields the action uses


def _resolve(w: World, fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v(w) if callable(v) else copy.deepcopy(v) for k, v in fields.items()}


def _unique(prefix: str) -> Callable[[World], str]:
    return lambda w: f"{prefix}{w.serial()}"


def staff_spec(label: str, cls: type, **fields: Any) -> Spec:
    tag = cls.__struct_config__.tag

    def base(w: World) -> dict[str, Any]:
        return {"type": tag, "client_seq": w.seq(STAFF), **_resolve(w, fields)}

    return Spec(label, cls, base)


def signed_spec(
    kind: str,
    signer: str,
    target: tuple[str, str],
    action: str = "",
    extra: dict[str, Any] | None = None,
    *,
    name: str = "",
) -> Spec:
    extra = extra or {}
    common = {"domain", target[0], "key", "client_seq"} | ({"action"} if action else set())

    def base(w: World) -> dict[str, Any]:
        doc: dict[str, Any] = {"domain": DOMAINS[kind]}
        if action:
            doc["action"] = action
        doc[target[0]] = target[1]
        doc.update(key=signer, client_seq=w.seq(signer))
        doc.update(_resolve(w, extra))
        return doc

    label = name or (f"{kind}:{action}" if action else kind)
    applicable = None if kind == "place_bid" else frozenset(common | set(extra))
    return Spec(label, SIGNED_CLASS[kind], base, kind, signer, applicable)


MECHANISMS = ("english", "listing", "dutch", "sealed", "reverse", "vbp")
LOT_RULES = {
    "english": RuleSet(),
    "listing": RuleSet(name="listing"),
    "dutch": RuleSet(name="dutch", tick_ns=HOUR, extension_window_ns=0),
    "sealed": RuleSet(name="sealed"),
    "reverse": RuleSet(name="reverse", min_valid_bids=3, extension_window_ns=0),
    "vbp": RuleSet(name="vbp", evaluation="vbp"),
}


def _create_lot(mechanism: str) -> Spec:
    big = mechanism in ("dutch", "vbp")
    return staff_spec(
        f"create_lot:{mechanism}",
        p.CreateLotFrame,
        lot=_unique("N"),
        mechanism=mechanism,
        title="lot",
        start_price_fen=100_000 if big else 10_000,
        increment_fen=1 if mechanism == "vbp" else 100,
        start_ns=EPOCH,
        end_ns=FAR,
        rules=plain(LOT_RULES[mechanism]),
        deposit_fen=0,
        timed_increment_fen=0,
        floor_fen=0,
        regions=[["R1", 100], ["R2", 200]] if mechanism == "vbp" else [],
    )


# sealed action -> (signer, lot, the fields it uses besides the common ones)
SEALED_ACTIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "submit": ("kb1", "SE", {"commitment": seal_commitment("SE", 15_000, "n1")}),
    "withdraw": ("kb1", "SE", {}),
    "reveal": ("kb1", "SR", {"amount_fen": 12_345, "nonce": "n0nce"}),
    "decline_award": ("ks1", "RC", {}),
    "confirm_award": ("ks1", "RD", {}),
    "accept_revival": ("ks1", "VB", {}),
    "choose_regions": ("ks1", "VB", {"regions": ["R1", "R2"]}),
    "enter_scores": ("kc1", "SC", {"bidder_code": "0001", "points_centi": 5_000}),
    "complaint": ("kb1", "EN", {"complaint_id": _unique("C"), "text": "the notice was late"}),
}
ORDER_ACTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "place": ("kb1", {"side": "buy", "kind": "limit", "price_fen": 100, "qty": 1}),
    # the order kb1 left resting on IT at setup: amended (often), then cancelled (once)
    "amend": ("kb1", {"order_id": lambda w: w.order_id, "price_fen": 120, "qty": 2}),
    "cancel": ("kb1", {"order_id": lambda w: w.order_id}),
    "purchase": ("kp1", {"qty": 1, "price_fen": 0}),
}

SPECS: list[Spec] = [
    *(_create_lot(m) for m in MECHANISMS),
    staff_spec("publish_lot", p.PublishLotFrame, lot="DR"),
    staff_spec("set_reserve", p.SetReserveFrame, lot="EN", reserve_fen=50_000),
    staff_spec(
        "change_increment", p.ChangeIncrementFrame, lot="EN", increment_fen=200, phase="main"
    ),
    staff_spec("freeze_lot", p.FreezeLotFrame, lot="FZ", reason="audit"),
    staff_spec("resume_lot", p.ResumeLotFrame, lot="FZ", reason="done"),
    staff_spec("terminate_lot", p.TerminateLotFrame, lot="TM", reason="withdrawn"),
    staff_spec(
        "register_key",
        p.RegisterKeyFrame,
        key=_unique("R"),
        bidder="b9",
        public_key_hex=HEX64,
        role="bidder",
    ),
    staff_spec(
        "register_bidder",
        p.RegisterBidderFrame,
        lot="EN",
        bidder=_unique("rb"),
        priority_rank=0,
        sme=False,
    ),
    staff_spec(
        "confirm_deposit",
        p.ConfirmDepositFrame,
        lot="EN",
        bidder="b3",
        amount_fen=0,
        payer_account="6222 0000 1111",
    ),
    staff_spec(
        "create_item",
        p.CreateItemFrame,
        item=_unique("M"),
        title="item",
        reference_fen=100,
        band_fen=10,
        purchase_limit_qty=5,
        session="open",
    ),
    staff_spec("set_item_session", p.SetItemSessionFrame, item="IT", session="open"),
    staff_spec("set_purchase_limit", p.SetPurchaseLimitFrame, item="IT", bidder="p1", qty=10),
    staff_spec("commit_draw_seed", p.CommitDrawSeedFrame, lot="SE", seed_hash=SEED_HASH),
    staff_spec("reveal_draw_seed", p.RevealDrawSeedFrame, lot="SE", seed_hex=SEED),
    staff_spec("finalize_evaluation", p.FinalizeEvaluationFrame, lot="SC"),
    staff_spec("confirm_payment", p.ConfirmPaymentFrame, lot="PY"),
    staff_spec("declare_default", p.DeclareDefaultFrame, lot="PD", reason="unpaid"),
    staff_spec("qualify_winner", p.QualifyWinnerFrame, lot="PQ", passed=True, reason=""),
    staff_spec(
        "create_reauction",
        p.CreateReauctionFrame,
        lot=_unique("Q"),
        parent_lot="UN",
        stage="second",
        start_price_fen=9_000,
        start_ns=EPOCH,
        end_ns=FAR,
        increment_fen=0,
        deposit_fen=-1,
    ),
    staff_spec("blacklist_bidder", p.BlacklistFrame, bidder="blk", reason="fraud"),
    staff_spec("unblacklist_bidder", p.UnblacklistFrame, bidder="blk", reason="appeal"),
    staff_spec(
        "handle_alert",
        p.HandleAlertFrame,
        lot="EN",
        alert_key="ak-1",
        action="acknowledge",
        note="",
    ),
    staff_spec(
        "answer_complaint", p.AnswerComplaintFrame, complaint_id="CP0", step="answer", text="ok"
    ),
    staff_spec(
        "refund_deposit", p.RefundDepositFrame, lot="UN", bidder="b2", amount_fen=0, bank_ref="r"
    ),
    staff_spec(
        "commit_expert_draw",
        p.CommitExpertDrawFrame,
        draw_id=_unique("D"),
        lot="EN",
        seed_hash=SEED_HASH,
        pool_hash=HEX64,
    ),
    staff_spec(
        "reveal_expert_draw",
        p.RevealExpertDrawFrame,
        draw_id="ED0",
        seed_hex=SEED,
        drawn_hash=HEX64,
    ),
    Spec("subscribe", p.Subscribe, lambda w: {"type": "subscribe", "lots": ["EN", "*"]}),
    Spec("unsubscribe", p.Unsubscribe, lambda w: {"type": "unsubscribe", "lots": ["EN"]}),
    Spec("ping", p.Ping, lambda w: {"type": "ping", "t": 7}),
    signed_spec("place_bid", "kb1", ("lot", "EN"), extra={"amount_fen": 20_000}),
    signed_spec(
        "place_bid",
        "kb1",
        ("lot", "DU"),
        extra={"amount_fen": 100_000, "tick": 0},
        name="place_bid:tick",
    ),
    *(
        signed_spec("sealed", signer, ("lot", lot), action, extra)
        for action, (signer, lot, extra) in SEALED_ACTIONS.items()
    ),
    *(
        signed_spec("order", signer, ("item", "IT"), action, extra)
        for action, (signer, extra) in ORDER_ACTIONS.items()
    ),
]


# ------------------------------------------------------------------ probes

SAME = object()  # a duplicated key repeats the value already there


@dataclass(frozen=True)
class Mut:
    """One change to a valid input, and what the Reader must make of it alone."""

    what: str
    target: tuple[Any, ...]  # two changes of one target are never combined
    code: G | None  # the refusal it causes (None: still in bounds)
    # where the Reader meets it: 0 size, 1 nesting, 2 typed decode, 3 duplicate
    # keys, 4 domain, 5 the deployment's limits, 6 fields the action does not use
    stage: int
    path: tuple[Any, ...] = ()  # set this path to ``value`` (a callable maps the old value)
    value: Any = None
    dup: tuple[tuple[Any, ...], str] | None = None  # (object path, raw key text): once more
    outer: bool = False  # on a signed frame's envelope rather than its payload
    text: Callable[[str], str | bytes] | None = None  # rewrites the finished text
    alone: bool = False  # where the Reader meets it depends on the text: not combined


# A signed frame's payload text as a whole (outer, but read after the envelope):
# its stages follow every envelope fault's and precede every field's.
PAYLOAD_TEXT = 10


@dataclass(frozen=True)
class Leaf:
    """An integer or identifier somewhere in a frame, with its declared bounds."""

    path: tuple[Any, ...]
    name: str
    kind: str  # int | id
    lo: int | None = None  # the schema's own bounds: the typed decode refuses past them
    hi: int | None = None
    max_len: int | None = None
    money: bool = False  # *_fen: at most max_amount_fen
    generic: bool = False  # inside an engine Struct: 0 .. 2**63 - 1
    optional: bool = False  # may be "" (none)
    star: bool = False  # "*" allowed (subscriptions)


def leaves(cls: type, doc: Any, applicable: frozenset[str] | None = None) -> list[Leaf]:
    out: list[Leaf] = []
    _struct(msgspec.inspect.type_info(cls), doc, (), out, applicable, False)
    return out


def _struct(
    info: Any,
    doc: Any,
    path: tuple[Any, ...],
    out: list[Leaf],
    applicable: frozenset[str] | None,
    engine: bool,
) -> None:
    engine = engine or info.cls.__module__ != p.__name__
    for i, f in enumerate(info.fields):
        if applicable is not None and f.name not in applicable:
            continue
        if info.array_like:
            key: Any = i
            sub = doc[i] if isinstance(doc, list) and i < len(doc) else None
        else:
            key = f.encode_name
            sub = doc.get(key) if isinstance(doc, dict) else None
        optional = f.default == "" or (info.cls.__name__, f.name) in OPTIONAL_IDS
        _value(f.type, sub, (*path, key), f.name, out, engine, optional)


def _value(
    t: Any,
    value: Any,
    path: tuple[Any, ...],
    name: str,
    out: list[Leaf],
    engine: bool,
    optional: bool,
) -> None:
    mi = msgspec.inspect
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.IntType):
        assert t.gt is None and t.lt is None
        money = name.endswith("_fen")
        out.append(Leaf(path, name, "int", t.ge, t.le, money=money, generic=engine))
    elif isinstance(t, mi.StrType) and name in ID_NAMES:
        out.append(
            Leaf(
                path,
                name,
                "id",
                max_len=t.max_length,
                generic=engine,
                optional=optional,
                star=name == "lots",
            )
        )
    elif isinstance(t, mi.StructType):
        _struct(t, value if value is not None else {}, path, out, None, engine)
    elif isinstance(t, (mi.VarTupleType, mi.ListType)) and isinstance(value, list) and value:
        _value(t.item_type, value[0], (*path, 0), name, out, engine, False)


def int_values(leaf: Leaf) -> list[int]:
    values = [*INT_PROBES, *(MONEY_PROBES if leaf.money else ())]
    for bound in (leaf.lo, leaf.hi):
        if bound is not None:
            values += [bound - 1, bound, bound + 1]
    return list(dict.fromkeys(values))


def int_verdict(leaf: Leaf, v: int) -> tuple[G | None, int]:
    if (leaf.lo is not None and v < leaf.lo) or (leaf.hi is not None and v > leaf.hi):
        return SCHEMA, 2
    if leaf.money and v > MAX_FEN:
        return SCHEMA, 5
    if leaf.generic and not 0 <= v <= INT63:
        return SCHEMA, 5
    return None, 0


def id_values(leaf: Leaf) -> list[tuple[str, str]]:
    longest = SIXTY_FOUR.get(leaf.name, "Z" * 64)
    return [
        ("64 chars", longest),
        ("65 chars", longest + "Z"),
        ("129 chars", "Z" * 129),
        *LOOKALIKES.items(),
    ]


def id_verdict(leaf: Leaf, v: str) -> tuple[G | None, int]:
    if leaf.max_len is not None and len(v) > leaf.max_len:
        return SCHEMA, 2
    if (v == "" and leaf.optional) or (v == "*" and leaf.star) or ID_SPEC.fullmatch(v):
        return None, 0
    return SCHEMA, 5


def escaped(key: str) -> str:
    """The same key spelled with a JSON escape: amount_fen -> amount\\u005ffen."""
    if "_" in key:
        return key.replace("_", "\\u005f", 1)
    return f"\\u{ord(key[0]):04x}{key[1:]}"


def nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(f"[{x}]" if isinstance(x, int) else x for x in path).replace(".[", "[")


def show(v: int) -> str:
    named = {2**63 - 1: "2**63-1", 2**63: "2**63", 2**64: "2**64", -(2**63) - 1: "-2**63-1"}
    named |= {MAX_FEN: "max_amount_fen", MAX_FEN + 1: "max_amount_fen+1"}
    return named.get(v, str(v))


def probes(spec: Spec, doc: dict[str, Any]) -> list[Mut]:
    """Every single-fault variant of a valid input of this frame type."""
    out: list[Mut] = []
    for leaf in leaves(spec.cls, doc, spec.applicable):
        at = dotted(leaf.path)
        if leaf.kind == "int":
            for v in int_values(leaf):
                code, stage = int_verdict(leaf, v)
                out.append(Mut(f"{at}={show(v)}", leaf.path, code, stage, leaf.path, v))
            for junk in NOT_AN_INT:
                out.append(Mut(f"{at}={junk!r}", leaf.path, SCHEMA, 2, leaf.path, junk))
        else:
            for name, v in id_values(leaf):
                code, stage = id_verdict(leaf, v)
                out.append(Mut(f"{at}: {name}", leaf.path, code, stage, leaf.path, v))
    amb = G.payload_ambiguous
    for k in doc:  # the same key twice in one object, plainly and escaped
        for raw in (k, escaped(k)):
            out.append(Mut(f"{raw} twice", ("dup", (), raw), amb, 3, dup=((), raw), value=SAME))
        if k.endswith("_fen"):  # two readings of an amount
            raw = escaped(k)
            what = f"{k} then {raw}={show(MAX_FEN)}"
            out.append(Mut(what, ("dup", (), raw), amb, 3, dup=((), raw), value=MAX_FEN))
    target = next(k for k in doc if k not in ("type", "client_seq"))
    deep = [(target,)]
    if "rules" in doc:
        raw = escaped("tick_ns")
        what = f"rules: tick_ns and {raw}"
        out.append(Mut(what, ("dup", ("rules",), raw), amb, 3, dup=(("rules",), raw), value=SAME))
        deep.append(("rules", "name"))
    for path in deep:  # the deepest text allowed decodes (as the wrong type); one more does not
        levels = MAX_DEPTH - len(path)
        at = dotted(path)
        out.append(Mut(f"{at} at depth {MAX_DEPTH}", path, SCHEMA, 2, path, nested(levels)))
        out.append(
            Mut(
                f"{at} at depth {MAX_DEPTH + 1}",
                path,
                G.nesting_too_deep,
                1,
                path,
                nested(levels + 1),
            )
        )
    free = next((f for f in FREE_TEXT if f in doc), None)
    if free is not None:  # brackets inside a string are not structure
        out.append(Mut(f"{free}: brackets", (free,), None, 0, (free,), "[" * 40 + "{" * 40 + "]"))
    out.append(Mut("unknown field", ("x_unknown",), SCHEMA, 2, ("x_unknown",), 1))
    upper = target.upper()
    out.append(Mut(f"key {upper}", (upper,), SCHEMA, 2, (upper,), copy.deepcopy(doc[target])))
    if spec.signed:
        foreign = FOREIGN_DOMAIN[spec.signed]
        out.append(
            Mut("another action's domain", ("domain",), G.bad_domain, 4, ("domain",), foreign)
        )
        if spec.applicable is not None:
            for f in msgspec.inspect.type_info(spec.cls).fields:
                if f.name not in spec.applicable:
                    default = plain(f.default)
                    what = f"{f.name}={default!r} does not apply"
                    out.append(Mut(what, (f.name,), G.field_not_applicable, 6, (f.name,), default))
    else:
        big = "x" * p.MAX_FRAME_BYTES
        out.append(Mut("over max_frame_bytes", ("pad",), G.frame_too_large, 0, ("pad",), big))
        out.extend(whole_text_probes())
    return out


def whole_text_probes() -> list[Mut]:
    return [
        Mut("trailing comma", ("text",), G.malformed_json, 2, text=lambda s: s[:-1] + ",}"),
        Mut(
            "unbalanced brackets first",
            ("text",),
            G.nesting_too_deep,
            1,
            text=lambda s: "[" * (MAX_DEPTH + 1) + s,
        ),
        Mut(
            "not UTF-8",
            ("text",),
            G.malformed_json,
            2,
            text=lambda s: s.encode().replace(b'"type"', b'"t\xffype"', 1),
        ),
    ]


def outer_probes() -> list[Mut]:
    """A signed frame's envelope: everything here is refused before the payload is read."""
    amb = G.payload_ambiguous
    out = [
        Mut(
            f"frame: {raw} twice", ("outer-dup", raw), amb, 3, dup=((), raw), value=SAME, outer=True
        )
        for k in ("type", "payload", "sig")
        for raw in (k, escaped(k))
    ]
    levels = MAX_DEPTH - 1
    out += [
        Mut(
            f"frame: sig at depth {MAX_DEPTH}",
            ("sig",),
            SCHEMA,
            2,
            ("sig",),
            nested(levels),
            outer=True,
        ),
        Mut(
            f"frame: sig at depth {MAX_DEPTH + 1}",
            ("sig",),
            G.nesting_too_deep,
            1,
            ("sig",),
            nested(levels + 1),
            outer=True,
        ),
        Mut("frame: sig of 129 chars", ("sig",), SCHEMA, 2, ("sig",), "a" * 129, outer=True),
        Mut("frame: unknown field", ("x_unknown",), SCHEMA, 2, ("x_unknown",), 1, outer=True),
        Mut(
            "frame: payload over 12288 chars",
            ("payload",),
            SCHEMA,
            2,
            ("payload",),
            lambda s: s + " " * 12_288,
            outer=True,
        ),
        Mut(
            "payload: trailing comma",
            ("payload",),
            G.malformed_json,
            PAYLOAD_TEXT + 2,
            ("payload",),
            lambda s: s[:-1] + ",}",
            outer=True,
            alone=True,  # the decoder meets it last: after any other fault in the payload
        ),
        Mut(
            "payload: not an object",
            ("payload",),
            SCHEMA,
            PAYLOAD_TEXT + 2,
            ("payload",),
            "[]",
            outer=True,
        ),
        Mut(
            "payload: unbalanced brackets first",
            ("payload",),
            G.nesting_too_deep,
            PAYLOAD_TEXT + 1,
            ("payload",),
            lambda s: "[" * (MAX_DEPTH + 1) + s,
            outer=True,
        ),
        Mut(
            "frame: over max_frame_bytes",
            ("pad",),
            G.frame_too_large,
            0,
            ("pad",),
            "x" * p.MAX_FRAME_BYTES,
            outer=True,
        ),
    ]
    return [*out, *whole_text_probes()]


def set_in(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    last = path[-1]
    if callable(value):
        value = value(node[last])
    node[last] = copy.deepcopy(value)


def render(
    value: Any, dups: list[tuple[tuple[Any, ...], str, Any]], path: tuple[Any, ...] = ()
) -> str:
    """JSON text, with some keys of some objects written once more (``dups``)."""
    if isinstance(value, dict):
        parts = [f"{json.dumps(k)}:{render(v, dups, (*path, k))}" for k, v in value.items()]
        for where, raw, again in dups:
            if where == path:
                if again is SAME:
                    again = value.get(json.loads(f'"{raw}"'))
                parts.append(f'"{raw}":{render(again, [])}')
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, dups, (*path, i)) for i, v in enumerate(value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def apart(muts: list[Mut]) -> bool:
    """No two changes touch the same place (or one inside the other)."""
    targets = [m.target for m in muts]
    return not any(
        a[: len(b)] == b for i, a in enumerate(targets) for j, b in enumerate(targets) if i != j
    )


def build(w: World, spec: Spec, muts: list[Mut], probe: str) -> Input:
    doc = spec.base(w)
    inner = [m for m in muts if not (m.outer or m.text)]
    outer = [m for m in muts if m.outer or m.text]
    for m in inner:
        if m.path:
            set_in(doc, m.path, m.value)
    text: str | bytes = render(doc, [(*m.dup, m.value) for m in inner if m.dup])
    identity, origin = "", STAFF
    if spec.signed:
        key = doc.get("key")
        identity = key if isinstance(key, str) and key in KEYS else spec.signer
        envelope = json.loads(signed_text(spec.signed, str(text), identity))
        for m in outer:
            if m.path:
                set_in(envelope, m.path, m.value)
        text = render(envelope, [(*m.dup, m.value) for m in outer if m.dup])
    elif any(m.path == ("client_seq",) for m in inner):
        origin = f"staff:seq{w.serial()}"  # a fresh origin: its retry memory starts empty
    for m in muts:
        if m.text is not None:
            text = m.text(str(text))
    code, seq = predict(doc, inner, outer)
    return Input(spec.label, probe, text, spec.signed, identity, origin, code, seq)


def predict(doc: dict[str, Any], inner: list[Mut], outer: list[Mut]) -> tuple[G | None, int]:
    """The first fault the Reader meets decides the code; the client_seq is the
    one a refusal can carry: none before decoding; on a signed frame's envelope
    that fails its schema, the payload's when the payload reads (intact, not too
    deep, its client_seq an integer in range); the one read on its own after a
    failed decode; else the decoded one."""
    outer_faults = sorted((m for m in outer if m.code is not None), key=lambda m: m.stage)
    if outer_faults:
        first = outer_faults[0]
        payload_reads = not any(m.code is not None and m.stage <= 1 for m in inner)
        envelope = first.code == SCHEMA and first.target[0] != "payload"
        if first.stage == 2 and envelope and payload_reads:
            seq = doc.get("client_seq", 0)
            return first.code, seq if type(seq) is int and 0 <= seq <= INT63 else 0
        return first.code, 0
    faults = sorted((m.stage, m.code) for m in inner if m.code is not None)
    if not faults:
        return None, 0
    stage, code = faults[0]
    seq = doc.get("client_seq", 0)
    if stage <= 1:
        return code, 0
    if stage == 2:
        return code, seq if type(seq) is int and 0 <= seq <= INT63 else 0
    return code, seq


# ------------------------------------------------------------------ reports

KINDS = ("refused", "gateway", "decoded", "accepted", "rejected", "retried", "crash")


def report(w: World, title: str, started: float) -> None:
    rows: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for (label, got), n in w.counts.items():
        rows.setdefault(label, Counter())[got.split(":")[0]] += n
        totals[got] += n
    print(f"\n== {title}: inputs per frame type and outcome")
    print(f"{'frame type':34}{'inputs':>7}" + "".join(f"{k:>9}" for k in KINDS))
    for label in sorted(rows):
        row = rows[label]
        print(f"{label:34}{sum(row.values()):>7}" + "".join(f"{row[k]:>9}" for k in KINDS))
    print("-- per outcome")
    for got, n in totals.most_common():
        print(f"   {n:>6}  {got}")
    print(
        f"-- {sum(totals.values())} inputs, {len(rows)} frame types, "
        f"{w.store.last_seq()} ledger entries, {len(w.problems)} mismatches, "
        f"{len(w.crashes)} raised out of Journal.append, {time.perf_counter() - started:.1f} s"
    )


def assert_clean(w: World) -> None:
    assert not w.problems, f"{len(w.problems)} inputs not read as predicted:\n" + "\n".join(
        w.problems[:25]
    )
    assert not w.crashes, (
        f"{len(w.crashes)} inputs the edge accepted raised out of Journal.append "
        "(the runtime would refuse them command_failed; the edge should never pass them):\n"
        + "\n".join(w.crashes[:12])
    )


def assert_covered(w: World) -> None:
    labels = {label for label, _ in w.counts}
    tags = {cls.__struct_config__.tag for cls in typing.get_args(p.ClientFrame)}
    seen = {label.split(">")[0].split(":")[0] for label in labels}
    assert tags <= seen, f"frame types never tried: {sorted(tags - seen)}"
    for cls, kind in ((p.SealedPayload, "sealed"), (p.OrderPayload, "order")):
        action = next(f for f in msgspec.inspect.type_info(cls).fields if f.name == "action")
        tried = {label.split(":")[1] for label in labels if label.startswith(f"{kind}:")}
        assert set(action.type.values) <= tried, (kind, set(action.type.values) - tried)
    assert {"place_bid", "place_bid:tick"} <= labels
    for spec in SPECS:
        got = {o for (label, o), n in w.counts.items() if label == spec.label and n}
        assert any(o.startswith("refused:") for o in got), f"{spec.label}: nothing refused"
        assert got - {o for o in got if o.startswith("refused:")}, f"{spec.label}: nothing passed"


# ------------------------------------------------------------------ tests


def test_the_schema_bounds_every_integer_and_the_tables_agree() -> None:
    """Before any input: every integer a client frame or signed payload declares
    is bounded to 63 bits by the schema itself (engine Structs inside a frame
    are bounded by the Reader), and the signed fields each action uses here are
    the product's table."""
    w = World.__new__(World)  # no ledger: only the documents are looked at
    w._seqs, w._serial, w.order_id = {}, itertools.count(1), 1
    for spec in SPECS:
        for leaf in leaves(spec.cls, spec.base(w), spec.applicable):
            if leaf.kind == "int" and not leaf.generic:
                assert leaf.lo is not None and leaf.lo >= -1, (spec.label, leaf)
                assert leaf.hi is not None and leaf.hi <= INT63, (spec.label, leaf)
            if leaf.kind == "id" and not leaf.generic:
                assert leaf.max_len is not None and leaf.max_len <= p.ID_MAX_CHARS, leaf
    assert {a: frozenset(extra) for a, (_, _, extra) in SEALED_ACTIONS.items()} == p.SEALED_FIELDS
    assert {a: frozenset(extra) for a, (_, extra) in ORDER_ACTIONS.items()} == p.ORDER_FIELDS


def test_every_frame_at_every_boundary(tmp_path: Path) -> None:
    """Properties 1 and 2: each frame type (and each signed action), each
    integer and identifier at and past its bounds, nesting at the limit and one
    past it, duplicate keys plain and escaped, fields that do not apply --
    refused as predicted, or applied, ledgered, committed and replayed."""
    started = time.perf_counter()
    w = World(tmp_path / "ledger")
    try:
        w.setup_market()
        deferred: list[tuple[Spec, Mut]] = []
        for spec in SPECS:
            w.run(spec, [], "baseline")
            muts = probes(spec, spec.base(w)) + (outer_probes() if spec.signed else [])
            for m in muts:
                if spec.signed and m.target == ("client_seq",):
                    deferred.append((spec, m))  # 2**63-1 ends the signer's session: last
                else:
                    w.run(spec, [m], m.what)
            w.check_replay(spec.label)
        for spec, m in deferred:
            w.run(spec, [m], m.what)
        w.check_replay("client_seq probes")
        w.check_final()
        report(w, "every frame type at every boundary", started)
        assert_covered(w)
        assert_clean(w)
    finally:
        w.store.close()


def test_boundary_combinations(tmp_path: Path) -> None:
    """Property 1 with several faults in one input: the first the Reader meets
    decides the refusal; an input with none is applied and ledgered."""
    started = time.perf_counter()
    w = World(tmp_path / "ledger")
    try:
        w.setup_market()
        pools: dict[str, list[Mut]] = {}
        for spec in SPECS:
            muts = probes(spec, spec.base(w)) + (outer_probes() if spec.signed else [])
            pools[spec.label] = [
                m
                for m in muts
                if m.code is not G.frame_too_large
                and m.text is None
                and not m.alone
                and not (spec.signed and m.target == ("client_seq",))
            ]

        @seed(20261207)
        @settings(
            max_examples=600,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def combine(data: st.DataObject) -> None:
            spec = data.draw(st.sampled_from(SPECS), label="frame type")
            pool = pools[spec.label]
            in_bounds = [m for m in pool if m.code is None]
            faults = st.lists(st.sampled_from(pool), max_size=4) | st.lists(
                st.sampled_from(in_bounds), min_size=1, max_size=4
            )  # half of them: several values at their bounds at once, all to be applied
            muts = data.draw(faults.filter(apart), label="faults")
            problems, crashes = len(w.problems), len(w.crashes)
            w.run(spec, muts, " + ".join(m.what for m in muts) or "baseline")
            assert not w.problems[problems:], "\n".join(w.problems[problems:])
            assert not w.crashes[crashes:], "\n".join(w.crashes[crashes:])

        combine()
        w.check_replay("combinations")
        w.check_final()
        assert_clean(w)
    finally:
        report(w, "combinations (hypothesis; a failing example stops it)", started)
        w.store.close()


def test_nesting_at_the_limit_reaches_the_ledger(tmp_path: Path) -> None:
    """At max_depth a frame is read and applied; one level less of allowance and
    the same text is refused before decoding.  Brackets inside strings never
    count; a signed payload's depth is that of its own text."""
    w = World(tmp_path / "ledger")
    try:
        w.register_keys()
        spec = next(s for s in SPECS if s.label == "create_lot:vbp")
        doc = spec.base(w)
        depth = json_depth(doc)
        assert depth == 4  # frame > rules > reverse_shares > a row: the deepest frame
        text = render(doc, [])
        with pytest.raises(p.FrameError) as refused:
            p.Reader(max_depth=depth - 1).frame(text)
        assert (refused.value.code, refused.value.client_seq) == (G.nesting_too_deep, 0)
        at_limit = p.Reader(max_depth=depth)
        inp = Input(spec.label, "at max_depth", text, "", "", STAFF, None, 0)
        assert w._run(inp, at_limit) == "accepted"
        assert w.router.state.lots[doc["lot"]].status == "open", "created and published"
        doc = spec.base(w)
        doc["title"] = "[" * 100 + "{" * 99
        inp = Input(spec.label, "brackets in a string", render(doc, []), "", "", STAFF, None, 0)
        assert w._run(inp, at_limit) == "accepted"

        payload = {"domain": p.SEALED_DOMAIN, "action": "choose_regions", "lot": doc["lot"]}
        payload |= {"key": "ks1", "client_seq": w.seq("ks1"), "regions": ["R1"]}
        text = signed_text("sealed", json.dumps(payload), "ks1")
        frame = p.Reader(max_depth=1).frame(text)  # the payload is a string to the frame
        with pytest.raises(p.FrameError) as refused:
            p.Reader(max_depth=1).payload(frame)
        assert (refused.value.code, refused.value.client_seq) == (G.nesting_too_deep, 0)
        inp = Input("sealed:choose_regions", "at max_depth", text, "sealed", "ks1", "", None, 0)
        assert w._run(inp, p.Reader(max_depth=2)).startswith(("accepted", "rejected:"))
        w.check_final()
        assert_clean(w)
    finally:
        w.store.close()


# -------------------------------------------- lots at their bounds, whole lives


def _english(w: World) -> None:
    """Money at its bound throughout (start, step, deposit, bid), the longest
    payment window (ten years): sold, defaulted, forfeited, then the second auction."""
    rules = RuleSet(extension_window_ns=HOUR, payment_window_ns=MAX_DURATION_NS)
    bidders = ("b1", "b2")
    w.lot(
        "XE",
        "english",
        start=MAX_FEN,
        inc=MAX_FEN,
        end=w.now + HOUR,
        rules=rules,
        bidders=bidders,
        deposit=MAX_FEN,
    )
    ok(w.signed("place_bid", "kb1", lot="XE", amount_fen=MAX_FEN))
    w.run_deadlines()
    lot = w.router.state.lots["XE"]
    assert (lot.status, lot.settlement) == ("sold", "defaulted")
    second = MAX_FEN * 4 // 5
    ok(
        w.staff(
            "create_reauction",
            lot="XE2",
            parent_lot="XE",
            stage="second",
            start_price_fen=second,
            start_ns=w.now,
            end_ns=w.now + HOUR,
        )
    )
    ok(w.staff("publish_lot", lot="XE2"))
    ok(w.staff("register_bidder", lot="XE2", bidder="b2"))
    ok(w.staff("confirm_deposit", lot="XE2", bidder="b2", amount_fen=MAX_FEN))
    ok(w.signed("place_bid", "kb2", lot="XE2", amount_fen=second))
    w.run_deadlines()
    assert w.router.state.lots["XE2"].status == "sold"


def _dutch(w: World) -> None:
    """The clock at its bounds: the highest start, 1 s ticks, the smallest step
    that keeps the whole clock within ten years (10**8 + 1 ticks)."""
    rules = RuleSet(name="dutch", tick_ns=SECOND, extension_window_ns=0)
    w.lot(
        "XD",
        "dutch",
        start=MAX_FEN,
        inc=MAX_FEN // 10**8,
        end=w.now + HOUR,
        rules=rules,
        bidders=("b1",),
        strict=False,
    )
    w.signed("place_bid", "kb1", lot="XD", amount_fen=MAX_FEN, tick=0)
    w.run_deadlines()


def _listing(w: World) -> None:
    """A listing whose timed phase waits ten years and counts down as long."""
    rules = RuleSet(
        name="listing",
        timed_trigger="always",
        wait_ns=MAX_DURATION_NS,
        countdown_ns=MAX_DURATION_NS,
    )
    w.lot("XL", "listing", end=w.now + HOUR, rules=rules, bidders=("b1",), strict=False)
    w.signed("place_bid", "kb1", lot="XL", amount_fen=10_000)
    w.run_deadlines()


def _sealed(w: World) -> None:
    """A sealed tender won at max_amount_fen, with deposits of max_amount_fen."""
    end = w.now + HOUR
    rules = RuleSet(name="sealed", reveal_window_ns=HOUR)
    w.lot(
        "XS", "sealed", start=1, inc=1, end=end, rules=rules, bidders=("b1", "b2"), deposit=MAX_FEN
    )
    bids = (("kb1", MAX_FEN), ("kb2", MAX_FEN - 1))
    for key_id, amount in bids:
        commitment = seal_commitment("XS", amount, key_id)
        ok(w.signed("sealed", key_id, action="submit", lot="XS", commitment=commitment))
    w.run_deadlines(until=end)
    for key_id, amount in bids:
        ok(w.signed("sealed", key_id, action="reveal", lot="XS", amount_fen=amount, nonce=key_id))
    w.run_deadlines()
    lot = w.router.state.lots["XS"]
    assert (lot.status, lot.price_fen) == ("sold", MAX_FEN)
    ok(w.staff("refund_deposit", lot="XS", bidder="b2", amount_fen=MAX_FEN))


def _reverse(w: World) -> None:
    """A reverse competition under a ceiling of max_amount_fen, 1 fen steps, the
    longest confirmation window (ten years)."""
    end = w.now + HOUR
    rules = RuleSet(
        name="reverse", min_valid_bids=1, extension_window_ns=0, confirm_window_ns=MAX_DURATION_NS
    )
    w.lot(
        "XR",
        "reverse",
        start=MAX_FEN,
        inc=1,
        end=end,
        rules=rules,
        bidders=("s1",),
        deposit=MAX_FEN,
    )
    ok(w.signed("place_bid", "ks1", lot="XR", amount_fen=MAX_FEN - 1))
    w.run_deadlines(until=end)
    ok(w.signed("sealed", "ks1", action="confirm_award", lot="XR"))
    assert w.router.state.lots["XR"].status == "sold"


def _vbp(w: World) -> None:
    """Volume-based procurement over five regions each at the most units (10**12)."""
    end = w.now + HOUR
    rules = RuleSet(name="vbp", evaluation="vbp", reveal_window_ns=HOUR)
    regions = tuple((f"R{i}", MAX_UNITS) for i in range(5))
    w.lot("XV", "vbp", start=MAX_FEN, inc=1, end=end, rules=rules, regions=regions, bidders=("s1",))
    commitment = seal_commitment("XV", MAX_FEN, "n0nce")
    ok(w.signed("sealed", "ks1", action="submit", lot="XV", commitment=commitment))
    w.run_deadlines(until=end)
    ok(w.signed("sealed", "ks1", action="reveal", lot="XV", amount_fen=MAX_FEN, nonce="n0nce"))
    w.run_deadlines()


def _emall(w: World) -> None:
    """An e-mall item at max_amount_fen and MAX_QTY: orders cross, a purchase."""
    ok(
        w.staff(
            "create_item",
            item="XI",
            title="max",
            reference_fen=MAX_FEN,
            band_fen=MAX_FEN,
            purchase_limit_qty=p.MAX_QTY,
            session="open",
        )
    )
    order = {"item": "XI", "kind": "limit", "price_fen": MAX_FEN, "qty": p.MAX_QTY}
    ok(w.signed("order", "kb2", action="place", side="sell", **order))
    crossed = ok(w.signed("order", "kb1", action="place", side="buy", **order))
    assert any(type(e).__name__ == "OrderFilled" for e in crossed.events)
    ok(w.signed("order", "kb2", action="place", side="sell", **order))
    bought = ok(
        w.signed("order", "kp1", action="purchase", item="XI", qty=p.MAX_QTY, price_fen=MAX_FEN)
    )
    assert any(type(e).__name__ == "OrderFilled" for e in bought.events)


LIFECYCLES: dict[str, Callable[[World], None]] = {
    "english": _english,
    "dutch": _dutch,
    "listing": _listing,
    "sealed": _sealed,
    "reverse": _reverse,
    "vbp": _vbp,
    "emall": _emall,
}


@pytest.mark.parametrize("name", list(LIFECYCLES))
def test_lots_at_their_bounds_live_their_whole_life(tmp_path: Path, name: str) -> None:
    """Property 2 past creation: a lot created at the bounds the edge allows goes
    through publication, bids and every deadline (to the end of 63-bit time),
    each step through the edge, and nothing raises out of Journal.append."""
    w = World(tmp_path / "ledger")
    try:
        w.register_keys()
        w.context = f"\n    scenario: {name}: {' '.join(LIFECYCLES[name].__doc__.split())}"
        LIFECYCLES[name](w)
        w.check_final()
        assert_clean(w)
    finally:
        w.store.close()


# ------------------------------------------------ defence behind the edge


class Edge:
    """The gateway's path in front of a running Runtime: Reader, mapping, submit."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.seqs: dict[str, Iterator[int]] = {}

    def _seq(self, origin: str) -> int:
        return next(self.seqs.setdefault(origin, itertools.count(1)))

    def staff(self, tag: str, **fields: Any) -> tuple[Command, bytes]:
        text = json.dumps({"type": tag, "client_seq": self._seq(STAFF), **fields})
        cmd, meta, refused = to_command(
            READER.frame(text), None, self.rt.router, identity="", origin=STAFF
        )
        assert cmd is not None and not refused, (refused, text)
        return cmd, meta

    def signed(self, kind: str, key_id: str, /, **fields: Any) -> tuple[Command, bytes]:
        doc = {"domain": DOMAINS[kind], **fields, "key": key_id, "client_seq": self._seq(key_id)}
        frame = READER.frame(signed_text(kind, json.dumps(doc), key_id))
        payload = READER.payload(frame)
        cmd, meta, refused = to_command(frame, payload, self.rt.router, identity=key_id, origin="")
        assert cmd is not None and not refused, (refused, doc)
        return cmd, meta

    async def ok(self, item: tuple[Command, bytes]) -> Outcome:
        outcome = await self.rt.call(*item)
        assert outcome.error is None, (item[0], outcome.error)
        assert outcome_name(outcome.events) == "accepted", (item[0], outcome.events)
        return outcome

    async def batch(self, items: list[tuple[Command, bytes]]) -> list[Outcome]:
        """Submitted back to back: applied in one drain, committed as one batch."""
        got: dict[int, Outcome] = {}
        for i, (cmd, meta) in enumerate(items):
            self.rt.submit(cmd, lambda o, i=i: got.__setitem__(i, o), meta)
        with trio.fail_after(10):
            while len(got) < len(items):
                await trio.sleep(0.005)
        return [got[i] for i in range(len(items))]

    async def market(self) -> int:
        """A signer (kb1) and an open English lot EN it is funded for."""
        now = self.rt.clock.peek()
        pub = bytes(KEYS["kb1"].verify_key).hex()
        await self.ok(self.staff("register_key", key="kb1", bidder="b1", public_key_hex=pub))
        await self.ok(
            self.staff(
                "create_lot",
                lot="EN",
                mechanism="english",
                title="t",
                start_price_fen=10_000,
                increment_fen=100,
                start_ns=now - SECOND,
                end_ns=now + HOUR,
            )
        )
        await self.ok(self.staff("publish_lot", lot="EN"))
        await self.ok(self.staff("register_bidder", lot="EN", bidder="b1"))
        await self.ok(self.staff("confirm_deposit", lot="EN", bidder="b1", amount_fen=0))
        return now

    def bid(self, amount: int) -> tuple[Command, bytes]:
        return self.signed("place_bid", "kb1", lot="EN", amount_fen=amount)


def assert_contained(rt: Runtime, outcomes: list[Outcome], failures_before: int) -> None:
    """The middle command of one batch raised inside Journal.append."""
    first, failing, last = outcomes
    assert failing.error == Reject.command_failed, (failing.error, failing.events)
    assert failing.seq == 0 and not failing.events, "a failed command left a ledger entry"
    for outcome in (first, last):
        assert outcome.error is None and outcome_name(outcome.events) == "accepted"
    assert last.seq == first.seq + 1, "nothing is recorded between its batch-mates"
    assert rt.store.batch_end(first.seq) == rt.store.batch_end(last.seq) == last.seq
    assert rt.command_failures == failures_before + 1


async def test_runtime_contains_an_injected_fault(tmp_path: Path) -> None:
    """Property 3 by fault injection: FreezeLot's handler freezes the lot, then
    raises.  The freeze is refused command_failed alone, the bids around it in
    its batch are committed, nothing of the freeze remains, the engine equals a
    replay of its ledger, and the rebuilt engine (its own handlers) freezes."""
    rt = Runtime.open(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            edge = Edge(rt)
            await edge.market()
            kinds, handler = rt.router._handlers[FreezeLot]

            def half_freeze(cmd: Any, now_ns: int, out: list[Event]) -> Any:
                handler(cmd, now_ns, out)  # the lot really freezes...
                raise RuntimeError("injected fault")  # ...then the handler fails

            rt.router._handlers[FreezeLot] = (kinds, half_freeze)
            failures = rt.command_failures
            freeze = edge.staff("freeze_lot", lot="EN", reason="audit")
            outcomes = await edge.batch([edge.bid(10_000), freeze, edge.bid(10_100)])
            status = rt.router.state.lots["EN"].status
            again = await rt.call(*edge.staff("freeze_lot", lot="EN", reason="again"))
            nursery.cancel_scope.cancel()
        assert_contained(rt, outcomes, failures)
        assert status == "open", "the failed freeze half-applied"
        assert again.error is None and outcome_name(again.events) == "accepted"
        assert rt.router.state.lots["EN"].status == "frozen"
        assert full_replay(rt.store).state_hash() == rt.router.state_hash()
    finally:
        rt.store.close()


def test_terms_whose_later_events_would_overflow_are_refused_at_creation(tmp_path: Path) -> None:
    """Found by this module: values each within the schema's 63 bits whose
    later sums and products are not -- a Dutch clock of 10**15 one-second ticks
    (its LotOpened.end_ns ~ 1e24: once it started, every later command fired
    its start first and failed), a listing waiting and counting down 2**63-1 ns
    each, VBP demand of 2**63-1 units per region.  The engine refuses such
    terms when the lot is created (invalid_terms), so no state can hold them."""
    w = World(tmp_path / "ledger")
    try:
        w.register_keys()
        now = w.now
        dutch = plain(RuleSet(name="dutch", tick_ns=SECOND, extension_window_ns=0))
        listing = plain(RuleSet(name="listing", timed_trigger="always", wait_ns=INT63))
        cases = [
            ("dutch", {"rules": dutch, "start_price_fen": MAX_FEN, "increment_fen": 1}),
            ("listing", {"rules": listing}),
            (
                "vbp",
                {"rules": plain(RuleSet(name="vbp", evaluation="vbp")), "regions": [["R1", INT63]]},
            ),
        ]
        for i, (mechanism, extra) in enumerate(cases):
            fields = {
                "lot": f"OV{i}",
                "mechanism": mechanism,
                "title": "t",
                "start_price_fen": 10_000,
                "increment_fen": 100,
                "start_ns": now,
                "end_ns": now + HOUR,
                **extra,
            }
            outcome = w.staff("create_lot", **fields)
            assert outcome_name(outcome.events) == "rejected:invalid_terms", (mechanism, outcome)
            assert f"OV{i}" not in w.router.state.lots
        w.check_final()
    finally:
        w.store.close()
