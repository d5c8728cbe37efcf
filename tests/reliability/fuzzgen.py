"""Frames for the frame fuzzer (``test_fuzz_frames``): generation and the oracle.

Trio-free and I/O-free, like ``gateway.wire.protocol``.  ``Gen`` makes one
connection's frames from a seeded ``random.Random``:

* **authentic** frames: a valid base frame of the connection's role (a bid,
  sealed action or order signed with the connection's own key, payload key =
  that key id; a staff / registry / supervision frame on a token connection)
  whose *fields* are mutated -- integers at every bound, ids of 64 characters,
  the longest strings, the deepest structure a frame decodes with, other
  enum values, rule sets at their bounds, client_seq retried, stale or jumped
  -- and kept only when the gateway's own reader still accepts it, so it
  reaches the engine; staff also run "scenarios" (a lot created with fuzzed
  terms, published, bidders registered and funded) that the bidders then hit;
* **hostile** frames: the same bases with mutations the edge must refuse
  (ids of 65 characters, look-alike ids, -1, 2**63, 2**64, duplicate keys,
  keys the action does not use, nesting at and past ``max_depth``, strings
  past their bound, wrong types, unknown fields, a wrong key, a bad domain, a
  broken signature);
* **structural** frames: truncations, byte flips, random JSON, binary frames,
  invalid UTF-8 sent as text, frames past ``max_frame_bytes`` and past 4x it.

``expect`` is the oracle: from the frame alone (and the connection's role and
key) it says how the server must answer, using the same ``Reader`` the
gateway uses (so the *limits* are the protocol's, not re-implemented here) --
one typed error now (with its code and client_seq), one engine reply later
(ack or ledgered refusal, matched by client_seq), a pong, nothing (a
subscription), or a close (1007 / 1009).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, get_args

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from engine.sealed import seal_commitment
from gateway.wire import protocol as p
from gateway.wire.strict import TooDeep, check_depth

NS = 1_000_000_000
INT63_MAX = 2**63 - 1
BOUND_INTS = (0, 1, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**15, 10**15 + 1)
# The range of the harness's own sync pings; generated ping ``t`` values stay out of it.
SYNC_T_BASE = 2**62
GOOD = "GOOD"  # the well-behaved bidder's ids all contain it; no fuzz frame ever does

# Roles (as the server names them) and what each may send the engine.
WATCHER, BIDDER, STAFF, SUPERVISOR, SERVICE = "watcher", "bidder", "staff", "supervisor", "service"
ROLES = (WATCHER, BIDDER, STAFF, SUPERVISOR, SERVICE)
SIGNED_TYPES = (p.PlaceBidFrame, p.SealedFrame, p.OrderFrame)


def _tag(cls: type) -> str:
    return str(cls.__struct_config__.tag)  # type: ignore[attr-defined]


# Every staff / registry / supervision frame the protocol defines (a new one
# fails Gen._staff_base until it has a base there).
STAFF_TAGS = tuple(_tag(c) for c in get_args(p.ClientFrame) if issubclass(c, p.StaffFrame))
REGISTRY_TAGS = tuple(_tag(c) for c in p.REGISTRY_ACTIONS)
SUPERVISION_TAGS = tuple(_tag(c) for c in p.SUPERVISION_ACTIONS)
SERVER_TAGS = ("hello", "ack", "error", "snapshot", "book", "event", "pong")
ALL_TAGS = tuple(_tag(c) for c in get_args(p.ClientFrame)) + SERVER_TAGS
RULESET_FIELDS = tuple(p.RuleSet.__struct_fields__)


class Raw(str):
    """JSON text inserted verbatim (a number spelled oddly, a nesting bomb, an
    escaped key)."""


class Obj(list):  # type: ignore[type-arg]
    """A JSON object as ordered (key, value) pairs: keys may repeat."""

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self:
            if k == key:
                return v
        return default

    def set(self, key: str, value: Any) -> None:
        for i, (k, _v) in enumerate(self):
            if k == key:
                self[i] = (k, value)
                return
        self.append((key, value))

    def names(self) -> list[str]:
        return [k for k, _v in self]


def obj(**fields: Any) -> Obj:
    return Obj(fields.items())


def dumps(value: Any, ascii_only: bool = False) -> str:
    """JSON text of ``value`` (Obj, dict, list, tuple, Raw, scalars)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "1e999"
    if isinstance(value, Obj | dict):
        pairs = value if isinstance(value, Obj) else list(value.items())
        inner = ",".join(
            f"{k if isinstance(k, Raw) else json.dumps(k, ensure_ascii=ascii_only)}:"
            f"{dumps(v, ascii_only)}"
            for k, v in pairs
        )
        return "{" + inner + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v, ascii_only) for v in value) + "]"
    raise TypeError(type(value))


# ------------------------------------------------------------------ the world


@dataclass
class Lot:
    lot: str
    mechanism: str
    start_fen: int
    step_fen: int  # increment (english, listing), decrement (reverse), tick step (dutch)
    regions: tuple[str, ...] = ()


@dataclass
class World:
    """What provisioning created: the fuzz frames aim at it (and near it)."""

    lots: list[Lot]
    items: list[str]
    bidders: list[str]  # bidder ids with registered keys
    keys: list[str]  # key ids
    staff_names: list[str] = field(default_factory=list)  # who creates scenario lots
    max_frame_bytes: int = p.MAX_FRAME_BYTES

    def lot_ids(self) -> list[str]:
        return [lot.lot for lot in self.lots]

    def scenario_lot(self, rng: random.Random) -> str:
        """A lot a staff connection's scenario may have created by now."""
        names = self.staff_names or ["staff-01"]
        return f"fz-{rng.choice(names)}-L{rng.randrange(SCENARIO_LOTS_SEEN)}"


@dataclass
class Identity:
    """Who a connection is: a token (staff, supervisor, service), a key
    (bidder) or nobody (watcher); and its origin's client_seq counter."""

    role: str
    token: str = ""
    name: str = ""  # staff / supervisor / service id, or the bidder id
    key_id: str = ""
    key: SigningKey | None = None
    key_role: str = "bidder"  # a bidder key's registered role
    seq: int = 0
    burned: bool = False  # client_seq reached 2**63 - 1: nothing new can follow

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def saw(self, client_seq: int) -> None:
        """A client_seq the engine will take as this origin's new high mark."""
        if client_seq > self.seq:
            self.seq = client_seq
        if self.seq >= INT63_MAX - 64:
            self.burned = True

    @property
    def verify_key(self) -> VerifyKey | None:
        return None if self.key is None else self.key.verify_key


# ------------------------------------------------------------------ outgoing frames


@dataclass
class Out:
    """One frame to send: text (str) or binary (bytes); a text frame whose
    bytes are not UTF-8 is ``raw_text``."""

    data: str | bytes
    binary: bool = False
    raw_text: bool = False  # bytes sent with the text opcode (invalid UTF-8)
    label: str = ""  # how it was made: authentic/<type>, hostile/<mutation>, structural/<kind>
    signed: tuple[str, str] | None = None  # (payload, sig) as signed by the generator
    mutations: tuple[str, ...] = ()  # what was changed from a valid base frame

    @property
    def mutated(self) -> bool:
        """Changed in more than key order."""
        return any(m != "reorder" for m in self.mutations)

    def wire(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else self.data.encode()

    def text(self, limit: int = 600) -> str:
        """For reports: the frame, cut to ``limit`` characters."""
        shown = repr(self.data) if isinstance(self.data, bytes) else self.data
        if len(shown) > limit:
            shown = f"{shown[:limit]}... ({len(self.wire())} bytes)"
        kind = "binary" if self.binary else ("text, not UTF-8" if self.raw_text else "text")
        return f"[{kind}] {shown}"


# ------------------------------------------------------------------ the oracle

ENGINE, IMMEDIATE, PONG, SUB, CLOSE = "engine", "immediate", "pong", "sub", "close"
# Replies that come from the engine path (after the commit, or the runtime's refusal).
ENGINE_PATH_GATEWAY_CODES = frozenset(
    {
        p.GatewayError.overloaded,
        p.GatewayError.storage_unavailable,
        p.GatewayError.internal_error,
        # a retry is answered after the engine saw it: another command under a
        # used client_seq is refused then, not at the edge
        p.GatewayError.client_seq_reused,
    }
)


@dataclass(frozen=True)
class Expect:
    kind: str  # ENGINE | IMMEDIATE | PONG | SUB | CLOSE
    code: int = 0  # IMMEDIATE: the error code; CLOSE: the close code
    client_seq: int = 0  # ENGINE / IMMEDIATE
    t: int = 0  # PONG
    alt: str = ""  # CLOSE: the other answer allowed instead (an error name), if any
    frame: Any = None  # the decoded frame, when it decodes
    alt_seq: int | None = None  # IMMEDIATE: another client_seq the error may carry


class Oracle:
    def __init__(self, reader: p.Reader, ws_max_message: int) -> None:
        self.reader = reader
        self.ws_max_message = ws_max_message  # trio-websocket's limit (len() of the message)

    def expect(self, out: Out, ident: Identity) -> Expect:
        if out.raw_text:
            return Expect(CLOSE, 1007)
        data = out.data
        if out.binary:
            assert isinstance(data, bytes)
            if len(data) > self.ws_max_message:
                return Expect(CLOSE, 1009)
            return Expect(IMMEDIATE, p.GatewayError.malformed_json)
        assert isinstance(data, str)
        if len(data) > self.ws_max_message:
            return Expect(CLOSE, 1009)
        if len(data.encode()) > self.ws_max_message:
            # Past 4x in bytes but not in characters (trio-websocket measures len()):
            # protocol.md says closed 1009; the server reads it and refuses it instead.
            return Expect(CLOSE, 1009, alt="frame_too_large")
        try:
            frame = self.reader.frame(data)
        except p.FrameError as e:
            return Expect(IMMEDIATE, e.code, e.client_seq)
        kind = type(frame)
        role = ident.role
        if kind is p.Ping:
            return Expect(PONG, t=frame.t, frame=frame)  # type: ignore[union-attr]
        if kind is p.Subscribe or kind is p.Unsubscribe:
            return Expect(SUB, frame=frame)
        if kind in SIGNED_TYPES:
            return self._signed(frame, out, ident)
        client_seq = frame.client_seq  # type: ignore[union-attr]
        allowed = (
            role == STAFF
            or (role == SERVICE and isinstance(frame, p.REGISTRY_ACTIONS))
            or (role == SUPERVISOR and isinstance(frame, p.SUPERVISION_ACTIONS))
        )
        if not allowed:
            return Expect(IMMEDIATE, p.GatewayError.not_authorized, client_seq, frame=frame)
        return Expect(ENGINE, client_seq=client_seq, frame=frame)

    def _signed(self, frame: Any, out: Out, ident: Identity) -> Expect:
        if ident.role != BIDDER:
            # protocol.md: the payload's client_seq whenever it can be read; the
            # server at a6ebfb8 answers 0 here, so that is taken too
            seq = self._lenient_seq(frame.payload)
            return Expect(IMMEDIATE, p.GatewayError.not_authorized, seq, alt_seq=0)
        try:
            payload = self.reader.payload(frame)
        except p.FrameError as e:
            return Expect(IMMEDIATE, e.code, e.client_seq)
        client_seq = payload.client_seq
        if payload.key != ident.key_id:
            return Expect(IMMEDIATE, p.GatewayError.wrong_key, client_seq)
        if out.signed != (frame.payload, frame.sig):
            vk = ident.verify_key
            assert vk is not None
            try:
                vk.verify(frame.payload.encode(), bytes.fromhex(frame.sig))
            except (BadSignatureError, ValueError):
                return Expect(IMMEDIATE, p.GatewayError.bad_signature, client_seq)
        return Expect(ENGINE, client_seq=client_seq, frame=payload)

    def _lenient_seq(self, payload: str) -> int:
        """A payload's client_seq read as far as it goes (0 if it cannot be)."""
        try:
            check_depth(payload, self.reader.max_depth)
            return _SEQ_ONLY.decode(payload).client_seq
        except (TooDeep, msgspec.DecodeError, msgspec.ValidationError):
            return 0


class _SeqOnly(msgspec.Struct):
    client_seq: p.Seq = 0  # type: ignore[valid-type]


_SEQ_ONLY = msgspec.json.Decoder(_SeqOnly)


# ------------------------------------------------------------------ known bugs
# Frames that trigger a server bug already pinned down by its own test in
# test_fuzz_frames.py; the fuzz steers around them (and counts how often) so
# that it keeps testing everything else.  Delete an entry once its test passes.
# Frames that trigger a known, still open server bug: the fuzz steers around
# them (and says how many it did not send) while each bug's own test fails.
# Delete an entry once its test passes.  (The Dutch tick storm and the Dutch
# clock past 64 bits found here are fixed: the engine bounds both.)
KNOWN_BUGS: dict[str, str] = {}


def known_bug(frame: Any, now_ns: int) -> str:
    """The KNOWN_BUGS entry a decoded frame would trigger, or "" (none open)."""
    return ""


# ------------------------------------------------------------------ generation

LOOKALIKES = (
    ("fullwidth", lambda s: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)),
    ("zero_width", lambda s: s[:1] + "\u200b" + s[1:]),
    ("rtl_override", lambda s: "\u202e" + s),
    ("nul", lambda s: s + "\x00"),
    ("newline", lambda s: s + "\n"),
    ("cyrillic_a", lambda s: s.replace("a", "\u0430").replace("A", "\u0410") + "\u0430"),
    ("trailing_space", lambda s: s + " "),
    ("bom", lambda s: "\ufeff" + s),
    ("combining", lambda s: s + "\u0301"),
)
WRONG_TYPES: tuple[Any, ...] = (
    "1",
    "",
    1.0,
    1.5,
    -0.0,
    True,
    False,
    None,
    [],
    {},
    [1],
    {"a": 1},
    Raw("1e999"),
    Raw("-0"),
    Raw("1E2"),
    Raw("0.0"),
    Raw("1" * 40),
    Raw("-" + "9" * 30),
    12345,
)
UNICODE_BITS = (
    "价格",
    "😀",
    "e\u0301",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\x00",
    "\n",
    "\t",
    '"',
    "\\",
    "\u2028",
    "𝔘",
    "Ω",
)
STRUCT_CHARS = '{}[]":,\\ 0123456789eE+-.tfnuax\x00\n'
SCENARIO_RATE = 0.015  # of a staff connection's frames: a lot's life begins (8 frames)
SCENARIO_LOTS_SEEN = 40  # bidders aim at the first this many lots of each staff connection


def _hex(rng: random.Random, n: int) -> str:
    return rng.randbytes(n).hex()


def _nest(depth: int, leaf: Any = 1, as_obj: bool = False) -> Raw:
    """A value nesting ``depth`` levels of brackets."""
    if as_obj:
        return Raw('{"a":' * depth + dumps(leaf) + "}" * depth)
    return Raw("[" * depth + dumps(leaf) + "]" * depth)


class Gen:
    """One connection's frames.  ``ident`` is read at every frame (the
    harness swaps a burned identity for a fresh one)."""

    def __init__(
        self,
        rng: random.Random,
        world: World,
        ident: Identity,
        oracle: Oracle,
        *,
        can_burn: Any = lambda: False,
        killer_rate: float = 0.004,
    ) -> None:
        self.rng = rng
        self.world = world
        self.ident = ident
        self.oracle = oracle
        self.can_burn = can_burn  # a callable: may a frame jump client_seq to 2**63 - 1?
        self.killer_rate = killer_rate
        self.now_ns = time.time_ns()
        self.max = world.max_frame_bytes
        self.queue: list[Out] = []  # the rest of a scenario, sent in order
        self.scenarios = 0

    # ---------------------------------------------------------------- top level
    def next(self) -> Out:
        rng = self.rng
        out = self._make()
        # a fuzz frame never touches the well-behaved bidder's lot, key or id
        if GOOD in (out.data if isinstance(out.data, str) else out.data.decode("latin-1")):
            out = Out(p.encode_text(p.Ping(rng.randrange(1000))), label="ping")
        return out

    def _make(self) -> Out:
        rng = self.rng
        role = self.ident.role
        if self.queue:
            return self.queue.pop(0)
        if rng.random() < self.killer_rate:
            return self._killer()
        if role == STAFF and rng.random() < SCENARIO_RATE:
            return self._scenario()
        r = rng.random()
        if role == WATCHER:
            if r < 0.30:
                return self._watch_frame()
            if r < 0.55:
                return self._hostile(self._any_base())
            if r < 0.70:
                return self._plain(self._any_base(), "foreign")
            return self._structural(self._any_base())
        auth_share = {BIDDER: 0.60, STAFF: 0.62, SERVICE: 0.60, SUPERVISOR: 0.60}[role]
        if r < 0.03:
            return self._watch_frame()
        if r < 0.03 + auth_share:
            return self._authentic()
        if r < 0.03 + auth_share + 0.04:
            return self._plain(self._any_base(), "foreign")
        if r < 0.86:
            return self._hostile(self._own_base())
        return self._structural(self._own_base())

    # ---------------------------------------------------------------- bases
    # A base is (tag, Obj of fields): for signed tags the Obj is the payload.
    def _own_base(self) -> tuple[str, Obj]:
        role = self.ident.role
        rng = self.rng
        if role == BIDDER:
            return self._signed_base()
        if role == SERVICE and rng.random() < 0.85:
            return self._staff_base(rng.choice(REGISTRY_TAGS))
        if role == SUPERVISOR and rng.random() < 0.85:
            return self._staff_base(rng.choice(SUPERVISION_TAGS))
        return self._staff_base(rng.choice(STAFF_TAGS))

    def _authorized_base(self) -> tuple[str, Obj]:
        """A base this connection may send the engine."""
        tags = {STAFF: STAFF_TAGS, SERVICE: REGISTRY_TAGS, SUPERVISOR: SUPERVISION_TAGS}
        if self.ident.role == BIDDER:
            return self._signed_base()
        return self._staff_base(self.rng.choice(tags[self.ident.role]))

    def _any_base(self) -> tuple[str, Obj]:
        if self.rng.random() < 0.4:
            return self._signed_base()
        return self._staff_base(self.rng.choice(STAFF_TAGS))

    def _lot(self, *mechanisms: str) -> Lot:
        lots = [lot for lot in self.world.lots if not mechanisms or lot.mechanism in mechanisms]
        return self.rng.choice(lots or self.world.lots)

    def _signed_base(self) -> tuple[str, Obj]:
        """A signed action, mostly one the key's registered role may take (the
        engine's authorisation matrix: suppliers quote and sell, purchasers buy,
        committee members score); now and then any action."""
        rng = self.rng
        role = self.ident.key_role if rng.random() < 0.85 else "any"
        r = rng.random()
        if role == "committee":
            return "sealed", self._sealed_payload("enter_scores")
        if role == "purchaser":
            if r < 0.85:
                return "order", self._order_payload(sides=("buy",))
            return "sealed", self._sealed_payload("complaint")
        if role == "supplier":
            if r < 0.45:
                return "place_bid", self._bid_payload(("reverse", "reverse", "english", "listing"))
            if r < 0.75:
                return "sealed", self._sealed_payload()
            return "order", self._order_payload(sides=("sell",))
        if r < 0.45:
            return "place_bid", self._bid_payload()
        if r < 0.75:
            return "sealed", self._sealed_payload()
        return "order", self._order_payload()

    def _key_id(self) -> str:
        return self.ident.key_id or self.rng.choice(self.world.keys)

    def _scenario_target(self) -> Lot:
        """A lot a staff scenario made (terms unknown here: typical amounts)."""
        rng = self.rng
        mechanism = rng.choice(("english", "listing", "dutch", "sealed", "reverse", "vbp"))
        start, step = rng.choice(((10_000, 100), (1, 1), (1_000_000, 10_000), (10**15, 1)))
        return Lot(self.world.scenario_lot(rng), mechanism, start, step, ("beijing", "hebei"))

    def _bid_payload(self, mechanisms: tuple[str, ...] = ("english", "listing", "dutch")) -> Obj:
        rng = self.rng
        lot = self._lot(*mechanisms, "reverse") if rng.random() < 0.9 else None
        lot = lot or self._lot()
        if rng.random() < 0.25:
            lot = self._scenario_target()
        k = rng.choice((0, 1, 2, 3, rng.randrange(0, 500), rng.randrange(0, 20_000)))
        payload = obj(domain=p.BID_DOMAIN, lot=lot.lot, key=self._key_id(), amount_fen=0)
        payload.append(("client_seq", self.ident.next_seq()))
        if lot.mechanism == "reverse":
            payload.set("amount_fen", max(1, lot.start_fen - k * lot.step_fen))
        elif lot.mechanism == "dutch":
            tick = rng.choice((0, 1, 2, rng.randrange(0, 60)))
            payload.set("amount_fen", max(1, lot.start_fen - tick * lot.step_fen))
            payload.append(("tick", tick))
        else:
            payload.set("amount_fen", lot.start_fen + k * lot.step_fen)
        return payload

    def _sealed_payload(self, forced: str = "") -> Obj:
        rng = self.rng
        lot = self._lot("sealed", "reverse", "vbp")
        if rng.random() < 0.25:
            lot = self._scenario_target()
        by_mechanism = {
            "sealed": ("submit", "submit", "withdraw", "reveal", "reveal", "enter_scores"),
            "reverse": ("confirm_award", "decline_award", "complaint"),
            "vbp": ("submit", "reveal", "accept_revival", "choose_regions"),
        }
        action = rng.choice(by_mechanism.get(lot.mechanism, ("complaint",)))
        if rng.random() < 0.1:
            action = rng.choice(tuple(p.SEALED_FIELDS))
        action = forced or action
        if action == "enter_scores" and rng.random() < 0.8:
            lot = self._lot("sealed")
        payload = obj(domain=p.SEALED_DOMAIN, action=action, lot=lot.lot, key=self._key_id())
        payload.append(("client_seq", self.ident.next_seq()))
        amount = lot.start_fen + rng.randrange(-5, 50) * max(1, lot.step_fen)
        nonce = f"nonce-{rng.randrange(4)}-{self.ident.name}"
        if action == "submit":
            payload.append(("commitment", seal_commitment(lot.lot, amount, nonce)))
        elif action == "reveal":
            payload.append(("amount_fen", amount))
            payload.append(("nonce", nonce))
        elif action == "choose_regions":
            regions = list(lot.regions or ("beijing",))
            rng.shuffle(regions)
            payload.append(("regions", regions[: rng.randrange(1, len(regions) + 1)]))
        elif action == "enter_scores":
            payload.append(("bidder_code", f"{rng.randrange(1, 8):04d}"))
            payload.append(("points_centi", rng.choice((0, 1, 5_000, 7_000, 10_000))))
        elif action == "complaint":
            payload.append(("complaint_id", f"c{rng.randrange(50)}"))
            payload.append(("text", rng.choice(("why", "质疑 price", "x" * 300))))
        return payload

    def _order_payload(self, sides: tuple[str, ...] = ("buy", "sell")) -> Obj:
        rng = self.rng
        item = rng.choice(self.world.items) if rng.random() < 0.75 else f"fzi-{rng.randrange(20)}"
        action = rng.choice(("place", "place", "place", "cancel", "amend", "purchase"))
        if action == "purchase" and "buy" not in sides:
            action = "place"
        payload = obj(domain=p.ORDER_DOMAIN, action=action, item=item, key=self._key_id())
        payload.append(("client_seq", self.ident.next_seq()))
        price = 1_000 + rng.randrange(-600, 600)
        if action == "place":
            payload.append(("side", rng.choice(sides)))
            payload.append(("kind", rng.choice(("limit", "limit", "market", "ioc", "fok"))))
            payload.append(("price_fen", price))
            payload.append(("qty", rng.randrange(1, 20)))
        elif action in ("cancel", "amend"):
            payload.append(("order_id", rng.randrange(1, 5_000)))
            if action == "amend":
                payload.append(("price_fen", rng.choice((0, price))))
                payload.append(("qty", rng.randrange(0, 10)))
        else:
            payload.append(("qty", rng.randrange(1, 30)))
            payload.append(("price_fen", rng.choice((0, price))))
        return payload

    def _staff_base(self, tag: str) -> tuple[str, Obj]:
        rng = self.rng
        w = self.world
        now = self.now_ns
        # Lots this connection made up (or made, in a scenario); the provisioned
        # lots are never ended by the fuzz -- and rarely frozen (resumed often).
        scratch = f"fz-{self.ident.name}-{rng.randrange(40)}"
        if self.scenarios and rng.random() < 0.5:
            scratch = f"fz-{self.ident.name}-L{rng.randrange(self.scenarios)}"
        if tag in ("terminate_lot", "declare_default", "qualify_winner") or (
            tag == "freeze_lot" and rng.random() < 0.97
        ):
            lot = scratch
        else:
            lot = rng.choice((*w.lot_ids(), scratch, scratch))
        bidder = rng.choice(w.bidders) if rng.random() < 0.8 else f"fzx-{rng.randrange(30)}"
        item = rng.choice(w.items) if rng.random() < 0.7 else f"fzi-{rng.randrange(20)}"
        f = Obj([("type", tag), ("client_seq", self.ident.next_seq())])
        if tag == "create_lot":
            mech = rng.choice(("english", "listing", "dutch", "sealed", "reverse", "vbp"))
            f += [
                ("lot", scratch),
                ("mechanism", mech),
                ("title", rng.choice(("fuzz lot", "罚没车辆", "t"))),
                ("start_price_fen", rng.choice((10_000, 1, 1_000_000))),
                ("increment_fen", rng.choice((100, 1, 0))),
                ("start_ns", now - NS),
                ("end_ns", now + rng.choice((5, 60, 7200)) * NS),
            ]
            if mech in ("dutch", "vbp") or rng.random() < 0.5:
                f.append(("rules", self._rules(mech)))
            if rng.random() < 0.3:
                f.append(("deposit_fen", rng.choice((0, 1_000))))
            if mech == "dutch":
                f.append(("floor_fen", 1_000))
            if mech == "vbp":
                f.append(("regions", [["beijing", 600], ["hebei", 400]]))
        elif tag in ("publish_lot", "finalize_evaluation", "confirm_payment"):
            f.append(("lot", lot))
        elif tag == "set_reserve":
            f += [("lot", lot), ("reserve_fen", rng.choice((10_000, 50_000, 1)))]
        elif tag == "change_increment":
            f += [("lot", lot), ("increment_fen", rng.choice((100, 200, 1)))]
            if rng.random() < 0.5:
                f.append(("phase", rng.choice(("main", "timed"))))
        elif tag in ("freeze_lot", "resume_lot", "terminate_lot", "declare_default"):
            f += [("lot", lot), ("reason", rng.choice(("fuzz", "原因", "")))]
        elif tag == "register_key":
            f += [
                ("key", f"fzk-{self.ident.name}-{rng.randrange(1_000_000)}"),
                ("bidder", bidder),
                ("public_key_hex", _hex(rng, 32)),
            ]
            if rng.random() < 0.5:
                f.append(("role", rng.choice(("bidder", "supplier", "purchaser", "committee"))))
        elif tag == "register_bidder":
            f += [("lot", lot), ("bidder", bidder)]
            if rng.random() < 0.3:
                f += [("priority_rank", rng.randrange(3)), ("sme", rng.random() < 0.5)]
        elif tag == "confirm_deposit":
            f += [("lot", lot), ("bidder", bidder), ("amount_fen", rng.choice((0, 1_000)))]
            if rng.random() < 0.3:
                f.append(("payer_account", f"acct-{rng.randrange(9)}"))
        elif tag in ("blacklist_bidder", "unblacklist_bidder"):
            target = bidder if tag == "unblacklist_bidder" else f"fzx-{rng.randrange(30)}"
            f += [("bidder", target), ("reason", "fuzz")]
        elif tag == "commit_draw_seed":
            f += [("lot", lot), ("seed_hash", _hex(rng, 32))]
        elif tag == "reveal_draw_seed":
            f += [("lot", lot), ("seed_hex", _hex(rng, 16))]
        elif tag == "qualify_winner":
            f += [("lot", lot), ("passed", rng.random() < 0.5), ("reason", "fuzz")]
        elif tag == "create_reauction":
            f += [
                ("lot", scratch),
                ("parent_lot", rng.choice((*w.lot_ids(), scratch))),
                ("stage", rng.choice(("second", "sale"))),
                ("start_price_fen", 8_000),
                ("start_ns", now),
                ("end_ns", now + 3600 * NS),
            ]
        elif tag == "refund_deposit":
            f += [("lot", lot), ("bidder", bidder), ("amount_fen", 1_000)]
        elif tag == "commit_expert_draw":
            f += [
                ("draw_id", f"d{rng.randrange(40)}"),
                ("lot", lot),
                ("seed_hash", _hex(rng, 32)),
                ("pool_hash", _hex(rng, 32)),
            ]
        elif tag == "reveal_expert_draw":
            f += [
                ("draw_id", f"d{rng.randrange(40)}"),
                ("seed_hex", _hex(rng, 16)),
                ("drawn_hash", _hex(rng, 32)),
            ]
        elif tag == "handle_alert":
            f += [
                ("lot", rng.choice((lot, ""))),
                ("alert_key", f"W-D{rng.randrange(3)}"),
                ("action", rng.choice(("acknowledge", "dismiss", "escalate"))),
            ]
            if rng.random() < 0.5:
                f.append(("note", "fuzz note"))
        elif tag == "answer_complaint":
            f += [
                ("complaint_id", f"c{rng.randrange(50)}"),
                ("step", rng.choice(("accept", "answer", "reject", "escalate"))),
                ("text", "answer"),
            ]
        elif tag == "create_item":
            f += [
                ("item", f"fzi-{rng.randrange(20)}"),
                ("title", "item"),
                ("reference_fen", 1_000),
                ("band_fen", rng.choice((0, 500))),
                ("purchase_limit_qty", rng.choice((0, 10))),
                ("session", rng.choice(("call", "open", "halted", "closed"))),
            ]
        elif tag == "set_item_session":
            # the provisioned items mostly stay open; fuzz items go anywhere
            session = rng.choice(("call", "open", "open", "open", "halted", "closed"))
            if item in w.items and session in ("halted", "closed") and rng.random() < 0.8:
                session = "open"
            f += [("item", item), ("session", session)]
        elif tag == "set_purchase_limit":
            f += [("item", item), ("bidder", bidder), ("qty", rng.randrange(0, 100))]
        else:
            raise AssertionError(f"the protocol has a new staff frame {tag!r}: give it a base")
        return tag, f

    def _rules(self, mechanism: str) -> Obj:
        rng = self.rng
        rules = Obj([("name", f"fuzz-{mechanism}")])
        if mechanism == "dutch":
            rules.append(("tick_ns", rng.choice((NS, 60 * NS))))
        if mechanism == "vbp":
            rules.append(("evaluation", "vbp"))
        for name in rng.sample(RULESET_FIELDS, rng.randrange(0, 3)):
            if name in ("name", "tick_ns"):
                continue
            default = getattr(p.RuleSet(), name)
            if isinstance(default, bool):
                rules.append((name, not default))
            elif isinstance(default, int):
                rules.append((name, rng.choice((0, 1, default, default * 2))))
        return rules

    def _scenario(self) -> Out:
        """A lot's life: created with mutated terms (as the edge accepts them),
        published, and three fuzz bidders registered with their deposits -- so
        the bidders' frames meet lots with fuzzed terms, open."""
        rng = self.rng
        lot = f"fz-{self.ident.name}-L{self.scenarios}"
        self.scenarios += 1
        tag, fields = self._staff_base("create_lot")
        fields.set("lot", lot)
        if rng.random() < 0.3:
            fields.set("start_ns", self.now_ns + rng.choice((2, 5, 20)) * NS)
        create = None
        for _ in range(6):
            trial = Obj(fields)
            names = self._mutate_gently(tag, trial)
            trial.set("lot", lot)
            out = self._render(tag, trial)
            exp = self.oracle.expect(out, self.ident)
            if exp.kind == ENGINE and not known_bug(exp.frame, self.now_ns):
                out.label = f"scenario/create_lot/{'+'.join(names)}"
                out.mutations = tuple(names)
                create = (out, trial)
                break
        if create is None:
            fields.set("rules", Obj([("name", "plain"), ("tick_ns", NS)]))
            create = (self._render(tag, fields), fields)
            create[0].label = "scenario/create_lot"
        deposit = create[1].get("deposit_fen", 0)
        frames = [create[0], self._staff_frame("publish_lot", lot=lot)]
        for bidder in rng.sample(self.world.bidders, min(3, len(self.world.bidders))):
            frames.append(self._staff_frame("register_bidder", lot=lot, bidder=bidder))
            amount = deposit if type(deposit) is int and 0 <= deposit <= 10**15 else 0
            frames.append(
                self._staff_frame("confirm_deposit", lot=lot, bidder=bidder, amount_fen=amount)
            )
        self.queue = frames[1:]
        return frames[0]

    def _staff_frame(self, tag: str, **fields: Any) -> Out:
        f = Obj([("type", tag), ("client_seq", self.ident.next_seq()), *fields.items()])
        out = Out(dumps(f))
        out.label = f"scenario/{tag}"
        return out

    def _watch_frame(self) -> Out:
        rng = self.rng
        r = rng.random()
        ids = [*self.world.lot_ids(), *self.world.items]
        if r < 0.35:
            return Out(p.encode_text(p.Ping(rng.choice((0, 1, rng.randrange(SYNC_T_BASE))))))
        kind = "subscribe" if r < 0.75 else "unsubscribe"
        lots = rng.sample(ids, rng.randrange(1, 4))
        if rng.random() < 0.15:
            lots.append(f"nope-{rng.randrange(100)}")
        if rng.random() < 0.03:
            lots = ["*"]
        return Out(dumps(obj(type=kind, lots=lots)), label=f"watch/{kind}")

    # ---------------------------------------------------------------- rendering
    def _render(self, tag: str, fields: Obj, *, ascii_only: bool = False) -> Out:
        """The frame text of a base: signed tags are signed by this connection's key
        (or, without one, by a throwaway key)."""
        if tag not in ("place_bid", "sealed", "order"):
            return Out(dumps(fields, ascii_only))
        payload = dumps(fields, ascii_only)
        key = self.ident.key or _THROWAWAY
        sig = key.sign(payload.encode()).signature.hex()
        return Out(dumps(obj(type=tag, payload=payload, sig=sig)), signed=(payload, sig))

    def _plain(self, base: tuple[str, Obj], label: str) -> Out:
        out = self._render(*base)
        out.label = f"{label}/{base[0]}"
        return out

    # ---------------------------------------------------------------- authentic
    def _authentic(self) -> Out:
        """A base of this role whose fields are mutated within what the edge
        accepts; the first of a few tries the oracle sends to the engine."""
        rng = self.rng
        tag, fields = self._authorized_base()
        for _ in range(4):
            trial = Obj(fields)
            applied = [] if rng.random() < 0.04 else self._mutate_gently(tag, trial)
            out = self._render(tag, trial, ascii_only=rng.random() < 0.2)
            if self.oracle.expect(out, self.ident).kind == ENGINE:
                out.label = f"authentic/{tag}" + (f"/{'+'.join(applied)}" if applied else "")
                out.mutations = tuple(applied)
                return out
        out = self._render(tag, fields)
        out.label = f"authentic/{tag}"
        return out

    def _mutate_gently(self, tag: str, f: Obj) -> list[str]:
        """One or two field mutations that apply to this frame (tried until they
        do); sometimes the keys are reordered as well."""
        rng = self.rng
        done: list[str] = []
        want = rng.choice((1, 1, 2))
        for _ in range(12):
            if len(done) >= want:
                break
            name = rng.choice(GENTLE)
            if getattr(self, f"_g_{name}")(tag, f):
                done.append(name)
        if rng.random() < 0.1:
            rng.shuffle(f)
            done.append("reorder")
        return done

    def _fields_where(self, f: Obj, pred: Any) -> list[str]:
        return [k for k, v in f if k not in ("type", "domain", "client_seq") and pred(k, v)]

    def _g_int_bound(self, tag: str, f: Obj) -> bool:
        names = self._fields_where(f, lambda k, v: type(v) is int)
        if not names:
            return False
        f.set(self.rng.choice(names), self.rng.choice(BOUND_INTS))
        return True

    def _g_id_64(self, tag: str, f: Obj) -> bool:
        names = self._fields_where(f, lambda k, v: k in p.ID_FIELDS and k != "key")
        if not names:
            return False
        f.set(self.rng.choice(names), "z" * self.rng.choice((64, 63, 1)))
        return True

    def _g_string_max(self, tag: str, f: Obj) -> bool:
        limits = {"title": 200, "reason": 2_000, "note": 2_000, "text": 10_000, "nonce": 128}
        limits |= {"payer_account": 128, "bank_ref": 128}
        names = [k for k in f.names() if k in limits]
        if not names:
            return False
        name = self.rng.choice(names)
        n = limits[name]
        if tag in ("place_bid", "sealed", "order"):
            n = min(n, 2_000)  # the whole payload is bounded (12,288 characters)
        f.set(name, self.rng.choice(("x", "价", "😀")) * self.rng.choice((n, n // 2, 0)))
        return True

    def _g_client_seq(self, tag: str, f: Obj) -> bool:
        rng = self.rng
        seq = self.ident.seq
        choices = [seq - 1, seq - 40, 0, 1, seq + 10**15]
        if self.can_burn():
            choices.append(INT63_MAX)
        f.set("client_seq", max(0, rng.choice(choices)))
        return True

    def _g_enum(self, tag: str, f: Obj) -> bool:
        enums = {
            "mechanism": ("english", "listing", "dutch", "sealed", "reverse", "vbp"),
            "phase": ("main", "timed"),
            "role": ("bidder", "supplier", "purchaser", "committee"),
            "side": ("buy", "sell"),
            "kind": ("limit", "market", "ioc", "fok"),
            "session": ("call", "open", "halted", "closed"),
            "stage": ("second", "sale"),
            "step": ("accept", "answer", "reject", "escalate"),
        }
        names = [k for k in f.names() if k in enums]
        if tag == "sealed":
            f.set("action", self.rng.choice(tuple(p.SEALED_FIELDS)))
            return True
        if not names:
            return False
        name = self.rng.choice(names)
        f.set(name, self.rng.choice(enums[name]))
        return True

    def _g_rules(self, tag: str, f: Obj) -> bool:
        if tag != "create_lot":
            return False
        rng = self.rng
        rules = f.get("rules")
        rules = Obj(rules) if isinstance(rules, Obj) else Obj()
        name = rng.choice(RULESET_FIELDS)
        default = getattr(p.RuleSet(), name)
        if isinstance(default, bool):
            rules.set(name, not default)
        elif isinstance(default, int):
            rules.set(name, rng.choice(BOUND_INTS))
        elif isinstance(default, str):
            rules.set(name, rng.choice(("x" * 200, "", "judicial", "fok")))
        elif isinstance(default, tuple):
            rules.set(name, rng.choice(([], [[100]], [[0, 100]], [[2**63 - 1]], [1])))
        f.set("rules", rules)
        return True

    def _g_deep_rules(self, tag: str, f: Obj) -> bool:
        """The deepest nesting a frame can decode with: frame (1) > rules (2) >
        reverse_shares (3) > a row (4) -- here a full table."""
        if tag != "create_lot":
            return False
        rules = f.get("rules")
        rules = Obj(rules) if isinstance(rules, Obj) else Obj()
        n = self.rng.randrange(1, 7)
        table = [[100 // k] * (k - 1) + [100 - (100 // k) * (k - 1)] for k in range(1, n + 1)]
        rules.set("reverse_shares", table)
        if self.rng.random() < 0.5:
            rules.set("reverse_winners", self.rng.randrange(1, n + 1))
        f.set("rules", rules)
        return True

    def _g_bool(self, tag: str, f: Obj) -> bool:
        names = self._fields_where(f, lambda k, v: type(v) is bool)
        if not names:
            return False
        name = self.rng.choice(names)
        f.set(name, not f.get(name))
        return True

    # ---------------------------------------------------------------- hostile
    def _hostile(self, base: tuple[str, Obj]) -> Out:
        """Mutations the edge must refuse (most of them), signed validly when the
        base is a signed action -- or a signature or envelope that is broken."""
        rng = self.rng
        tag, fields = base
        signed = tag in ("place_bid", "sealed", "order")
        f = Obj(fields)
        names = []
        if signed and rng.random() < 0.25:
            return self._envelope(tag, f)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            name = rng.choice(HOSTILE)
            getattr(self, f"_h_{name}")(tag, f)
            names.append(name)
        out = self._render(tag, f, ascii_only=rng.random() < 0.3)
        out.label = f"hostile/{tag}/{'+'.join(names)}"
        out.mutations = tuple(names)
        return out

    def _pick(self, f: Obj, *, skip_type: bool = True) -> str | None:
        keys = [k for k in f.names() if not (skip_type and k in ("type",))]
        return self.rng.choice(keys) if keys else None

    def _h_int_bound(self, tag: str, f: Obj) -> None:
        names = [k for k, v in f if type(v) is int] or f.names()
        f.set(self.rng.choice(names), self.rng.choice(BOUND_INTS))

    def _h_id_len(self, tag: str, f: Obj) -> None:
        names = [k for k in f.names() if k in p.ID_FIELDS] or ["lot"]
        f.set(self.rng.choice(names), "z" * self.rng.choice((64, 65, 128, 129, 0)))

    def _h_lookalike(self, tag: str, f: Obj) -> None:
        names = [k for k, v in f if k in p.ID_FIELDS and isinstance(v, str)]
        if not names:
            names = ["lot"]
            f.set("lot", self.world.lots[0].lot)
        name = self.rng.choice(names)
        _label, fn = self.rng.choice(LOOKALIKES)
        f.set(name, fn(str(f.get(name)) or "a"))

    def _h_dup_key(self, tag: str, f: Obj) -> None:
        name = self._pick(f, skip_type=False)
        if name is None:
            return
        rng = self.rng
        value = f.get(name) if rng.random() < 0.5 else rng.choice((0, 1, "x", None))
        if rng.random() < 0.3 and "_" in name:
            escaped = name.replace("_", "\\u005f", 1)
            f.insert(rng.randrange(len(f) + 1), (Raw(f'"{escaped}"'), value))
        else:
            f.insert(rng.randrange(len(f) + 1), (name, value))

    def _h_not_applicable(self, tag: str, f: Obj) -> None:
        """A key that exists in the schema but that this action does not use."""
        rng = self.rng
        if tag == "sealed":
            extra = rng.choice(
                ("commitment", "amount_fen", "nonce", "regions", "bidder_code", "text")
            )
        elif tag == "order":
            extra = rng.choice(("side", "kind", "price_fen", "qty", "order_id"))
        elif tag == "place_bid":
            extra = "tick"
        else:
            extra = rng.choice(("reserve_fen", "amount_fen", "lot", "bidder", "reason", "item"))
        value: Any = rng.choice((0, 1, "buy", "limit", "x", ["beijing"], "ab" * 32))
        f.append((extra, value))

    def _h_unknown_key(self, tag: str, f: Obj) -> None:
        rng = self.rng
        name = rng.choice(("x", "extra", "Type", "client_seq ", "lot\u200b", "__proto__", ""))
        f.insert(rng.randrange(len(f) + 1), (name, rng.choice(WRONG_TYPES)))

    def _h_deep(self, tag: str, f: Obj) -> None:
        rng = self.rng
        depth = rng.choice((7, 8, 9, 10, 64, 1_000, 3_000))
        name = self._pick(f) or "x"
        if tag == "create_lot" and rng.random() < 0.5:
            rules = f.get("rules")
            rules = Obj(rules) if isinstance(rules, Obj) else Obj()
            rules.set("x_extra", _nest(depth - 2, as_obj=rng.random() < 0.5))
            f.set("rules", rules)
        else:
            f.set(name, _nest(depth - 1, as_obj=rng.random() < 0.5))

    def _h_huge_string(self, tag: str, f: Obj) -> None:
        rng = self.rng
        names = [k for k, v in f if isinstance(v, str) and k != "type"] or ["title"]
        n = rng.choice((65, 129, 201, 2_001, 10_001, 12_289, 15_000, 16_400))
        f.set(rng.choice(names), rng.choice(("x", "é", "价")) * n)

    def _h_wrong_type(self, tag: str, f: Obj) -> None:
        name = self._pick(f, skip_type=self.rng.random() < 0.8)
        if name is not None:
            f.set(name, self.rng.choice(WRONG_TYPES))

    def _h_drop_key(self, tag: str, f: Obj) -> None:
        if f:
            del f[self.rng.randrange(len(f))]

    def _h_unicode(self, tag: str, f: Obj) -> None:
        names = [k for k, v in f if isinstance(v, str) and k != "type"]
        if names:
            name = self.rng.choice(names)
            bits = "".join(self.rng.choices(UNICODE_BITS, k=self.rng.randrange(1, 6)))
            f.set(name, str(f.get(name)) + bits)

    def _h_client_seq(self, tag: str, f: Obj) -> None:
        value = self.rng.choice((-1, 2**63, 2**64, -(2**63) - 1, "7", 1.0, None, Raw("1e3")))
        f.set("client_seq", value)

    def _h_type_tag(self, tag: str, f: Obj) -> None:
        if tag in ("place_bid", "sealed", "order"):
            f.set("domain", self.rng.choice((p.BID_DOMAIN, p.SEALED_DOMAIN, p.ORDER_DOMAIN, "")))
        else:
            f.set("type", self.rng.choice((*ALL_TAGS, "", "PLACE_BID", 5, None)))

    def _envelope(self, tag: str, payload: Obj) -> Out:
        """A signed frame whose envelope is wrong: another key id in the payload,
        a bad domain, a broken or odd signature, a payload that is no string."""
        rng = self.rng
        what = rng.choice(
            ("wrong_key", "domain", "sig", "sig", "payload_type", "outer_dup", "outer_extra")
        )
        if what == "wrong_key":
            payload.set("key", rng.choice(self.world.keys))
        elif what == "domain":
            payload.set("domain", rng.choice(("pubex-bid-v2", "", p.AUTH_DOMAIN, p.BID_DOMAIN)))
        text = dumps(payload)
        key = self.ident.key or _THROWAWAY
        sig = key.sign(text.encode()).signature.hex()
        signed = (text, sig)
        outer = obj(type=tag, payload=text, sig=sig)
        if what == "sig":
            odd = rng.choice(
                (
                    "",
                    "zz",
                    "00" * 64,
                    sig[::-1],
                    sig.upper(),  # still the same bytes: verifies
                    sig[:-2],
                    sig + "00",
                    " ".join(sig[i : i + 2] for i in range(0, len(sig), 2)),  # fromhex skips spaces
                    _THROWAWAY.sign(text.encode()).signature.hex(),
                )
            )
            outer.set("sig", odd)
        elif what == "payload_type":
            outer.set("payload", rng.choice((payload, None, 1, [text])))
        elif what == "outer_dup":
            outer.insert(rng.randrange(4), (rng.choice(("payload", "sig", "type")), "x"))
        elif what == "outer_extra":
            outer.append((rng.choice(("key", "client_seq", "x")), 1))
        out = Out(dumps(outer), signed=signed, mutations=(f"envelope_{what}",))
        out.label = f"hostile/{tag}/envelope_{what}"
        return out

    # ---------------------------------------------------------------- structural
    def _structural(self, base: tuple[str, Obj]) -> Out:
        rng = self.rng
        text = self._render(*base).data
        assert isinstance(text, str)
        kind = rng.choice(STRUCTURAL)
        if kind == "truncate":
            data: str | bytes = text[: rng.randrange(len(text))]
        elif kind == "flip":
            chars = list(text)
            for _ in range(rng.randrange(1, 5)):
                chars[rng.randrange(len(chars))] = rng.choice(STRUCT_CHARS)
            data = "".join(chars)
        elif kind == "insert":
            i = rng.randrange(len(text) + 1)
            data = (
                text[:i] + rng.choice(("{", "}", "[", '"', ",", ":", "\\", "\x00", "ʼ")) + text[i:]
            )
        elif kind == "random_json":
            data = dumps(self._random_json(4))
        elif kind == "tagged_json":
            value = self._random_json(3)
            pairs = Obj([("type", rng.choice(ALL_TAGS))])
            if isinstance(value, Obj):
                pairs += value
            data = dumps(pairs)
        elif kind == "literal":
            data = rng.choice(
                (
                    "",
                    " ",
                    "null",
                    "[]",
                    "{}",
                    "0",
                    '"place_bid"',
                    "1e999",
                    "NaN",
                    "[" * 10_000,
                    "{" * 5_000,
                    "[" * 9 + "]" * 9,
                    "[" * 8 + "]" * 8,
                    '{"type":' * 300,
                    "\ufeff{}",
                    text + text,
                    f"[{text}]",
                    f" \n\t{text}\r\n",
                    text.replace('"', "'"),
                )
            )
        elif kind == "binary":
            data = text.encode() if rng.random() < 0.6 else rng.randbytes(rng.randrange(64))
            return Out(data, binary=True, label="structural/binary", mutations=("binary",))
        elif kind == "too_large":
            # past max_frame_bytes but within 4x: refused frame_too_large, stays open
            n = rng.choice(
                (self.max - len(text) + 1, self.max, 2 * self.max, 4 * self.max - len(text) - 64)
            )
            filler = "x" * max(0, n)
            data = text[:-1] + f',"pad":"{filler}"}}' if text.endswith("}") else text + filler
        else:  # "exact_max": a frame of exactly max_frame_bytes (allowed) or one over
            pad = self.max - len(text.encode()) - len(',"pad":""') + rng.choice((0, 1))
            data = text[:-1] + f',"pad":"{"x" * max(0, pad)}"}}'
        return Out(data, label=f"structural/{kind}", mutations=(kind,))

    def _random_json(self, depth: int) -> Any:
        rng = self.rng
        r = rng.random()
        if depth <= 0 or r < 0.4:
            return rng.choice(
                (
                    None,
                    True,
                    rng.choice(BOUND_INTS),
                    rng.randrange(-100, 100),
                    rng.random(),
                    "".join(rng.choices((*UNICODE_BITS, "a", "b", "lot")))[:20],
                    rng.choice(self.world.lot_ids()),
                )
            )
        if r < 0.7:
            return [self._random_json(depth - 1) for _ in range(rng.randrange(4))]
        keys = ("type", "lots", "lot", "payload", "sig", "client_seq", "t", "x", "amount_fen")
        return Obj(
            (rng.choice(keys), self._random_json(depth - 1)) for _ in range(rng.randrange(4))
        )

    def _killer(self) -> Out:
        """Frames after which the server must close: invalid UTF-8 as text (1007),
        a message past 4x max_frame_bytes (1009)."""
        rng = self.rng
        text = self._render(*self._own_base()).wire()
        kind = rng.choice(("utf8", "utf8", "huge_text", "huge_binary", "huge_multibyte"))
        if kind == "utf8":
            bad = rng.choice((b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80"))
            i = rng.randrange(len(text) + 1)
            return Out(text[:i] + bad + text[i:], raw_text=True, label="killer/invalid_utf8")
        limit = 4 * self.max
        if kind == "huge_binary":
            return Out(b"\x00" * (limit + rng.choice((1, 100))), binary=True, label="killer/huge")
        if kind == "huge_multibyte":
            # 4x in bytes, well under 4x in characters (see Oracle.expect)
            filler = "价" * (limit // 3 + rng.choice((1, 1000)))
            return Out(f'{{"type":"ping","pad":"{filler}"}}', label="killer/huge_multibyte")
        filler = "x" * (limit + rng.choice((1, 1000)))
        return Out(f'{{"type":"ping","pad":"{filler}"}}', label="killer/huge_text")


GENTLE = (  # field mutations an authentic frame may carry (Gen._g_*)
    "int_bound",
    "int_bound",
    "id_64",
    "string_max",
    "client_seq",
    "enum",
    "rules",
    "deep_rules",
    "bool",
)
HOSTILE = (
    "int_bound",
    "int_bound",
    "id_len",
    "lookalike",
    "lookalike",
    "dup_key",
    "not_applicable",
    "unknown_key",
    "deep",
    "huge_string",
    "wrong_type",
    "wrong_type",
    "drop_key",
    "unicode",
    "client_seq",
    "type_tag",
)
STRUCTURAL = (
    "truncate",
    "truncate",
    "flip",
    "flip",
    "insert",
    "random_json",
    "tagged_json",
    "literal",
    "binary",
    "too_large",
    "exact_max",
)
_THROWAWAY = SigningKey(b"\x07" * 32)


@dataclass
class Tally:
    """Outcome counts per role, and the frames worth showing."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, role: str, outcome: str, n: int = 1) -> None:
        key = (role, outcome)
        self.counts[key] = self.counts.get(key, 0) + n

    def example(self, what: str, text: str, keep: int = 5) -> None:
        found = self.examples.setdefault(what, [])
        if len(found) < keep:
            found.append(text)

    def merge(self, other: Tally) -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for what, texts in other.examples.items():
            for text in texts:
                self.example(what, text)

    def by_role(self, role: str) -> dict[str, int]:
        return {o: n for (r, o), n in self.counts.items() if r == role}

    def total(self, outcome_prefix: str = "") -> int:
        return sum(n for (_r, o), n in self.counts.items() if o.startswith(outcome_prefix))

    def table(self) -> str:
        outcomes = sorted({o for _r, o in self.counts}, key=_outcome_order)
        width = max(12, *(len(o) for o in outcomes))
        head = f"{'outcome':<{width}}" + "".join(f"{r:>11}" for r in ROLES) + f"{'total':>11}"
        lines = [head, "-" * len(head)]
        for o in outcomes:
            row = [self.counts.get((r, o), 0) for r in ROLES]
            lines.append(f"{o:<{width}}" + "".join(f"{n:>11,}" for n in row) + f"{sum(row):>11,}")
        sums = [sum(self.by_role(r).values()) for r in ROLES]
        lines.append("-" * len(head))
        lines.append(
            f"{'frames':<{width}}" + "".join(f"{n:>11,}" for n in sums) + f"{sum(sums):>11,}"
        )
        return "\n".join(lines)


def outcome_of_error(code: int, name: str) -> str:
    """``error 1002 schema_violation``: engine and gateway codes share some names."""
    if name != p.error_name(code):
        return f"untyped {code} {name}"
    return f"error {code} {name}"


def error_outcome(code: int) -> str:
    return outcome_of_error(int(code), p.error_name(code))


def _outcome_order(outcome: str) -> tuple[int, int, str]:
    head, _, rest = outcome.partition(" ")
    groups = {"ack": 0, "error": 1, "pong": 2, "subscribed": 3}
    code = int(rest.split()[0]) if head == "error" else 0
    return groups.get(head.split(":")[0], 4), code, outcome


def is_engine_error(outcome: str) -> bool:
    """A refusal the engine ledgered (codes below 1000)."""
    head, _, rest = outcome.partition(" ")
    return head == "error" and int(rest.split()[0]) < 1000
