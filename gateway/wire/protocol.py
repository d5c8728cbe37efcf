"""Theory of operation: the wire protocol (JSON text frames, ``type`` tag).

This module is trio-free and I/O-free: terminals, simulators, Locust users and
the server all share it.  ``docs/protocol.md`` is the reference; ``pubex
schema`` prints the JSON Schema generated from these Structs.

Client -> server frames (``ClientFrame``): ``place_bid``, ``sealed`` and
``order`` (signed payloads),
``subscribe`` / ``unsubscribe``, ``ping``, and the staff / registry commands.
Server -> client frames: ``hello``, ``ack``, ``error``, ``snapshot`` (a lot),
``book`` (an e-mall item), ``event``, ``pong``.

A bid is carried as the exact payload text plus a detached Ed25519 signature
over its UTF-8 bytes; the payload is itself JSON (``BidPayload``) and starts
with the fixed domain tag ``pubex-bid-v1`` so a signature made for anything
else can never pass as a bid.  The handshake signature covers
``pubex-auth-v1|key_id|ts_ms|nonce``.

Bounds are decided here, once, for every side (``Reader``): the schema bounds
every integer to what the ledger can store (63 bits) and every string's
length; the reader adds the deployment's limits (``[limits] max_amount_fen``,
``id_pattern``, the nesting depth), refuses duplicate keys
(``payload_ambiguous``) in frames, payloads and HTTP bodies alike, and refuses
a signed field that does not apply to the signed action
(``field_not_applicable``): a signed payload has exactly one meaning.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from engine.codes import Reject
from engine.messages import RegionDemand
from engine.rules import MAX_TIME_NS, RuleSet
from gateway.wire.strict import DuplicateKey, TooDeep, check_depth, object_keys

BID_DOMAIN = "pubex-bid-v1"
SEALED_DOMAIN = "pubex-sealed-v1"
ORDER_DOMAIN = "pubex-order-v1"
AUTH_DOMAIN = "pubex-auth-v1"
MAX_FRAME_BYTES = 16 * 1024

# ------------------------------------------------------------ bounds
# The schema's own bounds: what the ledger can store (msgpack integers are at
# most 64 bits; we keep to 63 so sums of two stay storable) and what a field can
# sensibly hold.  The deployment narrows money and identifiers further
# (``Reader``).
INT63_MAX = 2**63 - 1
MAX_AMOUNT_FEN = 10**15  # default [limits] max_amount_fen: 10 trillion yuan
ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"  # default [limits] id_pattern (ASCII: no look-alikes)
ID_MAX_CHARS = 128  # what any id_pattern may allow
MAX_DEPTH = 8  # default [limits] max_depth: the deepest frame (create_lot) nests 4
MAX_QTY = 10**12
MAX_POINTS_CENTI = 10_000  # 100.00 points

Seq = Annotated[int, msgspec.Meta(ge=0, le=INT63_MAX)]  # client_seq, order ids, ticks
Ns = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_NS)]  # a time, Unix epoch nanoseconds
Fen = Annotated[  # money; <= max_amount_fen
    int,
    msgspec.Meta(
        ge=0,
        le=INT63_MAX,
        extra_json_schema={
            "maximum": MAX_AMOUNT_FEN,
            "description": "fen; at most [limits] max_amount_fen (default 10^15)",
        },
    ),
]
Qty = Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY)]
Rank = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Id = Annotated[  # must match id_pattern
    str,
    msgspec.Meta(
        max_length=ID_MAX_CHARS,
        extra_json_schema={
            "description": f"an identifier: matches [limits] id_pattern whole (default "
            f"{ID_PATTERN}); empty only where the field is optional"
        },
    ),
]
Hex32 = Annotated[str, msgspec.Meta(max_length=64)]  # the engine checks it is hex
SeedHex = Annotated[str, msgspec.Meta(max_length=128)]
SigHex = Annotated[str, msgspec.Meta(max_length=128)]  # 64 bytes of hex
Title = Annotated[str, msgspec.Meta(max_length=200)]
Reason = Annotated[str, msgspec.Meta(max_length=2_000)]
Text = Annotated[str, msgspec.Meta(max_length=10_000)]  # complaints and their answers
Nonce = Annotated[str, msgspec.Meta(max_length=128)]
Payload = Annotated[str, msgspec.Meta(max_length=12_288)]  # a signed action's JSON text
Domain = Annotated[str, msgspec.Meta(max_length=32)]
Ref = Annotated[str, msgspec.Meta(max_length=128)]  # bank account or reference: free text


class GatewayError(IntEnum):
    """Gateway-layer codes (engine codes are < 1000 and pass through unchanged)."""

    malformed_json = 1001
    schema_violation = 1002
    frame_too_large = 1003
    bad_signature = 1004
    wrong_key = 1005
    bad_domain = 1006
    not_authorized = 1007
    rate_limited = 1008
    overloaded = 1009
    unknown_key = 1010
    storage_unavailable = 1011
    payload_ambiguous = 1012
    nesting_too_deep = 1013
    field_not_applicable = 1014
    too_many_refusals = 1015
    unknown_subscription = 1016
    internal_error = 1017
    client_seq_reused = 1018  # no longer sent: the engine refuses client_seq_reused (104)
    outcome_unknown = 1019  # sent to the sequencer, no answer before the link broke: retry
    sequencer_unavailable = 1020  # the edge has no link to the sequencer: not sent, retry


def error_name(code: int) -> str:
    if code >= 1000:
        return GatewayError(code).name
    return Reject(code).name


# ------------------------------------------------------------ client frames


class Frame(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    pass


class PlaceBidFrame(Frame, frozen=True, tag="place_bid"):
    payload: Payload  # the exact signed JSON text of a BidPayload
    sig: SigHex  # hex Ed25519 signature over payload.encode()


class BidPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    domain: Domain
    lot: Id
    key: Id
    amount_fen: Fen
    client_seq: Seq
    # Dutch lots: accept the price of this tick; amount_fen must be that price.
    # Absent (-1) on every other bid.
    tick: Seq = -1


class SealedFrame(Frame, frozen=True, tag="sealed"):
    """A signed non-bid action of a bidder or supplier: a sealed tender's
    submit / withdraw / reveal, or a reverse competition's confirm_award /
    decline_award.  Signed and ledgered like a bid."""

    payload: Payload  # the exact signed JSON text of a SealedPayload
    sig: SigHex


class SealedPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    domain: Domain
    action: Literal[
        "submit",
        "withdraw",
        "reveal",
        "confirm_award",
        "decline_award",
        "accept_revival",
        "choose_regions",
        "enter_scores",
        "complaint",
    ]
    lot: Id
    key: Id
    client_seq: Seq
    commitment: Hex32 = ""  # submit: engine.sealed.seal_commitment(lot, amount, nonce)
    amount_fen: Fen = 0  # reveal
    nonce: Nonce = ""  # reveal
    # choose_regions (VBP): best first
    regions: Annotated[tuple[Id, ...], msgspec.Meta(max_length=64)] = ()
    bidder_code: Id = ""  # enter_scores (committee key): the bid being scored
    # enter_scores: non-price points, in hundredths
    points_centi: Annotated[int, msgspec.Meta(ge=0, le=MAX_POINTS_CENTI)] = 0
    complaint_id: Id = ""  # complaint (质疑 / 投诉): the filer's own id for it
    text: Text = ""  # complaint: what is wrong


class OrderFrame(Frame, frozen=True, tag="order"):
    """An e-mall trader's order action (place / cancel / amend / direct
    purchase), signed and ledgered like a bid."""

    payload: Payload  # the exact signed JSON text of an OrderPayload
    sig: SigHex


class OrderPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    domain: Domain
    action: Literal["place", "cancel", "amend", "purchase"]
    item: Id
    key: Id
    client_seq: Seq
    side: Literal["buy", "sell"] = "buy"  # place
    kind: Literal["limit", "market", "ioc", "fok"] = "limit"  # place
    # place: the limit price (0 for market); amend: the new price (0 = unchanged);
    # purchase: the maximum price (0 = a market buy)
    price_fen: Fen = 0
    qty: Qty = 0  # place, purchase; amend: the new open quantity (0 = unchanged)
    order_id: Seq = 0  # cancel, amend: the seq of the ack that placed the order


class Subscribe(Frame, frozen=True, tag="subscribe"):
    lots: list[Id]  # lot or item ids, or "*" for every lot and item


class Unsubscribe(Frame, frozen=True, tag="unsubscribe"):
    lots: list[Id]


class Ping(Frame, frozen=True, tag="ping"):
    t: Seq = 0


class StaffFrame(Frame, frozen=True):
    client_seq: Seq


class CreateLotFrame(StaffFrame, frozen=True, tag="create_lot"):
    lot: Id
    mechanism: Literal["english", "listing", "dutch", "sealed", "reverse", "vbp"]
    title: Title
    start_price_fen: Fen
    increment_fen: Fen
    start_ns: Ns
    end_ns: Ns
    rules: RuleSet = RuleSet()
    deposit_fen: Fen = 0
    timed_increment_fen: Fen = 0
    floor_fen: Fen = 0  # Dutch: the public floor (increment_fen is the step down)
    # VBP: [region, demand_units] pairs
    regions: Annotated[tuple[RegionDemand, ...], msgspec.Meta(max_length=64)] = ()


class PublishLotFrame(StaffFrame, frozen=True, tag="publish_lot"):
    lot: Id


class SetReserveFrame(StaffFrame, frozen=True, tag="set_reserve"):
    lot: Id
    reserve_fen: Fen


class ChangeIncrementFrame(StaffFrame, frozen=True, tag="change_increment"):
    lot: Id
    increment_fen: Fen
    phase: Literal["main", "timed"] = "main"


class FreezeLotFrame(StaffFrame, frozen=True, tag="freeze_lot"):
    lot: Id
    reason: Reason


class ResumeLotFrame(StaffFrame, frozen=True, tag="resume_lot"):
    lot: Id
    reason: Reason


class TerminateLotFrame(StaffFrame, frozen=True, tag="terminate_lot"):
    lot: Id
    reason: Reason


class RegisterKeyFrame(StaffFrame, frozen=True, tag="register_key"):
    key: Id
    bidder: Id
    public_key_hex: Hex32
    role: Literal["bidder", "supplier", "purchaser", "committee"] = "bidder"
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class RegisterBidderFrame(StaffFrame, frozen=True, tag="register_bidder"):
    lot: Id
    bidder: Id
    priority_rank: Rank = 0
    sme: bool = False  # a small or micro firm (reverse competitions' price deduction)
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class ConfirmDepositFrame(StaffFrame, frozen=True, tag="confirm_deposit"):
    lot: Id
    bidder: Id
    amount_fen: Fen
    payer_account: Ref = ""  # ledgered for supervision (W-F1), never published
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class BlacklistFrame(StaffFrame, frozen=True, tag="blacklist_bidder"):
    """Registry: the credit blacklist (R-0.3(d)); a listed subject cannot register or bid."""

    bidder: Id
    reason: Reason
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class UnblacklistFrame(StaffFrame, frozen=True, tag="unblacklist_bidder"):
    bidder: Id
    reason: Reason
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class CommitDrawSeedFrame(StaffFrame, frozen=True, tag="commit_draw_seed"):
    lot: Id
    seed_hash: Hex32  # hex BLAKE2b-256 of the secret seed (engine.draw.seed_hash)


class RevealDrawSeedFrame(StaffFrame, frozen=True, tag="reveal_draw_seed"):
    lot: Id
    seed_hex: SeedHex


class FinalizeEvaluationFrame(StaffFrame, frozen=True, tag="finalize_evaluation"):
    lot: Id


class ConfirmPaymentFrame(StaffFrame, frozen=True, tag="confirm_payment"):
    lot: Id
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class DeclareDefaultFrame(StaffFrame, frozen=True, tag="declare_default"):
    lot: Id
    reason: Reason
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class QualifyWinnerFrame(StaffFrame, frozen=True, tag="qualify_winner"):
    lot: Id
    passed: bool
    reason: Reason = ""


class CreateReauctionFrame(StaffFrame, frozen=True, tag="create_reauction"):
    lot: Id
    parent_lot: Id
    stage: Literal["second", "sale"]
    start_price_fen: Fen
    start_ns: Ns
    end_ns: Ns
    increment_fen: Fen = 0  # 0 = the parent's
    deposit_fen: Annotated[int, msgspec.Meta(ge=-1, le=INT63_MAX)] = -1  # -1: the parent's


class RefundDepositFrame(StaffFrame, frozen=True, tag="refund_deposit"):
    """Registry: return a deposit after the close (never the winner's, once)."""

    lot: Id
    bidder: Id
    amount_fen: Fen
    bank_ref: Ref = ""
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class CommitExpertDrawFrame(StaffFrame, frozen=True, tag="commit_expert_draw"):
    draw_id: Id
    lot: Id
    seed_hash: Hex32
    pool_hash: Hex32
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class RevealExpertDrawFrame(StaffFrame, frozen=True, tag="reveal_expert_draw"):
    draw_id: Id
    seed_hex: SeedHex
    drawn_hash: Hex32
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


class HandleAlertFrame(StaffFrame, frozen=True, tag="handle_alert"):
    """Staff or a supervisor acknowledge / dismiss / escalate a supervision alert."""

    lot: Id  # "" for a platform-wide alert
    alert_key: Id
    action: Literal["acknowledge", "dismiss", "escalate"]
    note: Reason = ""


class AnswerComplaintFrame(StaffFrame, frozen=True, tag="answer_complaint"):
    complaint_id: Id
    step: Literal["accept", "answer", "reject", "escalate"]
    text: Text = ""


ItemSession = Literal["call", "open", "halted", "closed"]


class CreateItemFrame(StaffFrame, frozen=True, tag="create_item"):
    """E-mall: a catalogue item and its order book; 0 = none."""

    item: Id
    title: Title
    reference_fen: Fen = 0
    band_fen: Fen = 0
    purchase_limit_qty: Qty = 0
    session: ItemSession = "call"


class SetItemSessionFrame(StaffFrame, frozen=True, tag="set_item_session"):
    item: Id
    session: ItemSession


class SetPurchaseLimitFrame(StaffFrame, frozen=True, tag="set_purchase_limit"):
    item: Id
    bidder: Id  # the purchaser
    qty: Qty
    actor: Id = ""  # a service only: the staff member it acts for (ledgered)


ClientFrame = (
    PlaceBidFrame
    | SealedFrame
    | OrderFrame
    | Subscribe
    | Unsubscribe
    | Ping
    | CreateLotFrame
    | PublishLotFrame
    | SetReserveFrame
    | ChangeIncrementFrame
    | FreezeLotFrame
    | ResumeLotFrame
    | TerminateLotFrame
    | RegisterKeyFrame
    | RegisterBidderFrame
    | ConfirmDepositFrame
    | CreateItemFrame
    | SetItemSessionFrame
    | SetPurchaseLimitFrame
    | CommitDrawSeedFrame
    | RevealDrawSeedFrame
    | FinalizeEvaluationFrame
    | ConfirmPaymentFrame
    | DeclareDefaultFrame
    | QualifyWinnerFrame
    | CreateReauctionFrame
    | BlacklistFrame
    | UnblacklistFrame
    | HandleAlertFrame
    | AnswerComplaintFrame
    | RefundDepositFrame
    | CommitExpertDrawFrame
    | RevealExpertDrawFrame
)

SUPERVISION_ACTIONS = (HandleAlertFrame, AnswerComplaintFrame)  # staff or supervisor
REGISTRY_ACTIONS = (
    RefundDepositFrame,
    CommitExpertDrawFrame,
    RevealExpertDrawFrame,
    RegisterKeyFrame,
    RegisterBidderFrame,
    ConfirmDepositFrame,
    SetPurchaseLimitFrame,
    ConfirmPaymentFrame,
    DeclareDefaultFrame,
    BlacklistFrame,
    UnblacklistFrame,
)

# ------------------------------------------------------------ server frames


class Hello(Frame, frozen=True, tag="hello"):
    role: str
    server_time_ns: int
    identity: str = ""  # the key id (bidder) or staff id; "" for watchers
    codes: dict[str, str] = {}  # lot -> this bidder's code
    max_frame_bytes: int = MAX_FRAME_BYTES
    session: str = ""  # the connection's client session (handshake ``session``)
    client_seq: int = 0  # the session's highest client_seq the engine has seen (0: new)


class Ack(Frame, frozen=True, tag="ack"):
    client_seq: int
    seq: int
    ts_ns: int
    entry_hash: str
    receipt: str  # hex: the server's signed Receipt of the batch's last entry
    proof: list[str] = []  # hex body hashes chaining this entry to the receipt's
    retried: bool = False


class Error(Frame, frozen=True, tag="error"):
    client_seq: int
    code: int
    name: str
    message: str = ""
    seq: int = 0  # the ledger seq of an engine refusal (refusals are ledgered too)


class RankRow(msgspec.Struct, frozen=True, array_like=True):
    bidder_code: str
    amount: int  # fen, or the lot's unit price (VBP)
    note: str  # valid / the invalidity reason / score / share / basis


class LotSnapshot(Frame, frozen=True, tag="snapshot"):
    lot: str
    title: str
    mechanism: str
    status: str
    phase: str
    price_fen: int
    start_price_fen: int
    increment_fen: int
    leader_code: str
    bidders: int
    bid_count: int
    end_ns: int
    start_ns: int
    has_reserve: bool
    last_bid_ns: int
    extensions: int
    result: str
    seq: int
    tick: int = -1  # Dutch: the clock's current tick (its price is price_fen)
    # Sealed / reverse / VBP after the opening: the published ranking, best first
    # (empty before the opening: sealed lots show only their count until then).
    ranking: list[RankRow] = []
    settlement: str = ""  # after the hammer: awaiting_payment, paid, defaulted, ...


class TapeRow(msgspec.Struct, frozen=True, array_like=True):
    seq: int
    ts_ns: int
    price_fen: int
    qty: int
    aggressor: str  # buy | sell | none (the opening uncross)


class BookSnapshot(Frame, frozen=True, tag="book"):
    """E-mall item, conflated: top of book, depth (best first), the recent tape."""

    item: str
    title: str
    session: str
    reference_fen: int
    band_fen: int
    last_price_fen: int
    bids: list[tuple[int, int]]  # (price_fen, qty), best first
    asks: list[tuple[int, int]]
    tape: list[TapeRow]  # the latest trades, oldest first
    volume: int  # quantity traded so far
    trades: int
    seq: int


class EventFrame(Frame, frozen=True, tag="event"):
    lot: str
    seq: int
    ts_ns: int
    event: dict[str, Any]


class Pong(Frame, frozen=True, tag="pong"):
    t: int
    server_time_ns: int


ServerFrame = Hello | Ack | Error | LotSnapshot | BookSnapshot | EventFrame | Pong

# ------------------------------------------------------------ codecs

_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A refusal at the edge: a typed code, a message, and the ``client_seq``
    whenever the frame could be read far enough to know it."""

    def __init__(self, code: GatewayError, message: str, client_seq: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_seq = client_seq


class _SeqOnly(msgspec.Struct):
    """Whatever else a refused frame holds, its ``client_seq`` if it is one."""

    client_seq: Seq = 0


_seq_decoder = msgspec.json.Decoder(_SeqOnly)


def _client_seq_of(text: str, max_depth: int = MAX_DEPTH) -> int:
    """Only called on texts that passed the depth check.  A frame without its
    own ``client_seq`` (a signed action) gives its payload's."""
    try:
        env = _envelope_decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        try:
            return _seq_decoder.decode(text).client_seq
        except (msgspec.DecodeError, msgspec.ValidationError):
            return 0
    if env.client_seq or not env.payload:
        return env.client_seq
    try:
        check_depth(env.payload, max_depth)
        return _seq_decoder.decode(env.payload).client_seq
    except (TooDeep, msgspec.DecodeError, msgspec.ValidationError):
        return 0


# What each signed action may carry besides its common fields; anything else
# present in the signed text is refused (field_not_applicable), so a signature
# never covers a field the server would ignore.
_SEALED_COMMON = frozenset({"domain", "action", "lot", "key", "client_seq"})
_ORDER_COMMON = frozenset({"domain", "action", "item", "key", "client_seq"})
SEALED_FIELDS: dict[str, frozenset[str]] = {
    "submit": frozenset({"commitment"}),
    "withdraw": frozenset(),
    "reveal": frozenset({"amount_fen", "nonce"}),
    "confirm_award": frozenset(),
    "decline_award": frozenset(),
    "accept_revival": frozenset(),
    "choose_regions": frozenset({"regions"}),
    "enter_scores": frozenset({"bidder_code", "points_centi"}),
    "complaint": frozenset({"complaint_id", "text"}),
}
ORDER_FIELDS: dict[str, frozenset[str]] = {
    "place": frozenset({"side", "kind", "price_fen", "qty"}),
    "cancel": frozenset({"order_id"}),
    "amend": frozenset({"order_id", "price_fen", "qty"}),
    "purchase": frozenset({"qty", "price_fen"}),
}

# How ``Reader.check`` looks at a field (by name: units and roles are in names).
_ID, _OPT_ID, _IDS, _LOTS, _MONEY, _STRUCT, _STRUCTS, _GENERIC = range(8)
ID_FIELDS = frozenset(
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
        "expert_id",
        "subject_id",
        "lot_id",
        "specialty",
    }
)
# Identifiers that may be "" although they have no default ("" = none).
_OPTIONAL_IDS = {("HandleAlertFrame", "lot")}
_GENERIC_STR_MAX = 200  # strings inside engine Structs carried by a frame (RuleSet.name)

T = TypeVar("T")
Plan = tuple[tuple[str, int], ...]


class Reader:
    """Reads every client frame, signed payload and HTTP body, and bounds it.

    In order: the size; the nesting depth (before any recursive decode); the
    typed decode (the schema's own bounds: 63-bit integers, string lengths);
    duplicate keys in any object (``payload_ambiguous``); then the
    deployment's limits -- money at most ``max_amount_fen``, identifiers
    matching ``id_pattern`` (ASCII by default, so no look-alikes: full-width,
    zero-width, RTL override, NUL and newline are all refused).  Every refusal
    is a ``FrameError`` carrying the ``client_seq`` when it could be read."""

    def __init__(
        self,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_amount_fen: int = MAX_AMOUNT_FEN,
        id_pattern: str = ID_PATTERN,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_amount_fen = max_amount_fen
        self.id_pattern = id_pattern
        self.max_depth = max_depth
        self._id = re.compile(id_pattern).fullmatch
        self._plans: dict[type, Plan] = {}
        self._decoders: dict[type, msgspec.json.Decoder[Any]] = {}

    @classmethod
    def from_limits(cls, limits: Any) -> Reader:
        return cls(
            max_frame_bytes=limits.max_frame_bytes,
            max_amount_fen=limits.max_amount_fen,
            id_pattern=limits.id_pattern,
            max_depth=limits.max_depth,
        )

    # ------------------------------------------------------------ frames
    def frame(self, data: str | bytes) -> ClientFrame:
        """Decode and bound one client frame (text; bytes are taken as UTF-8)."""
        max_bytes = self.max_frame_bytes
        if len(data) * 4 > max_bytes:
            size = len(data.encode()) if isinstance(data, str) else len(data)
            if size > max_bytes:
                raise FrameError(GatewayError.frame_too_large, f"frame over {max_bytes} bytes")
        text = data if isinstance(data, str) else _utf8(data)
        frame: ClientFrame = self._decode(text, _client_decoder)[0]
        return frame

    def payload(self, frame: PlaceBidFrame | SealedFrame | OrderFrame) -> Any:
        """A signed action's payload, read and bounded (not yet trusted: the
        signature check must follow).  A field the action does not use is refused."""
        text = frame.payload
        kind = type(frame)
        if kind is PlaceBidFrame:
            payload = self._decode(text, _bid_decoder, BID_DOMAIN)[0]
            _check_padding(text, payload)
            return payload
        if kind is SealedFrame:
            payload, keys = self._decode(text, _sealed_decoder, SEALED_DOMAIN)
            allowed = _SEALED_COMMON | SEALED_FIELDS[payload.action]
        else:
            payload, keys = self._decode(text, _order_decoder, ORDER_DOMAIN)
            allowed = _ORDER_COMMON | ORDER_FIELDS[payload.action]
        _check_padding(text, payload)
        extra = [k for k in keys if k not in allowed]
        if extra:
            raise FrameError(
                GatewayError.field_not_applicable,
                f"{payload.action} does not use {', '.join(extra)}",
                payload.client_seq,
            )
        return payload

    def payload_seq(self, frame: PlaceBidFrame | SealedFrame | OrderFrame) -> int:
        """The ``client_seq`` of a signed action's payload, read leniently (for
        a refusal that comes before the payload is read in full); 0 if unreadable."""
        try:
            check_depth(frame.payload, self.max_depth)
        except TooDeep:
            return 0
        return _client_seq_of(frame.payload)

    def body(self, data: bytes, kind: type[T]) -> T:
        """An HTTP request body, read exactly like a frame."""
        if len(data) > self.max_frame_bytes:
            raise FrameError(
                GatewayError.frame_too_large, f"body over {self.max_frame_bytes} bytes"
            )
        decoder = self._decoders.get(kind)
        if decoder is None:
            decoder = self._decoders[kind] = msgspec.json.Decoder(kind)
        value: T = self._decode(_utf8(data), decoder)[0]
        return value

    def _decode(
        self, text: str, decoder: msgspec.json.Decoder[Any], domain: str = ""
    ) -> tuple[Any, list[str]]:
        """The decoded, bounded value and its top-level keys as present in the text."""
        try:
            check_depth(text, self.max_depth)
        except TooDeep as e:
            raise FrameError(GatewayError.nesting_too_deep, str(e)) from None
        try:
            value = decoder.decode(text)
        except msgspec.ValidationError as e:
            raise FrameError(GatewayError.schema_violation, str(e), _client_seq_of(text)) from None
        except msgspec.DecodeError as e:
            raise FrameError(GatewayError.malformed_json, str(e), _client_seq_of(text)) from None
        client_seq = getattr(value, "client_seq", 0)
        try:
            keys = object_keys(text)
        except DuplicateKey as e:
            raise FrameError(GatewayError.payload_ambiguous, str(e), client_seq) from None
        if domain and value.domain != domain:
            raise FrameError(
                GatewayError.bad_domain, f"payload domain must be {domain}", client_seq
            )
        problem = (
            next(filter(None, (self.problem(v, f"$[{i}]") for i, v in enumerate(value))), "")
            if isinstance(value, list)
            else self.problem(value)
        )
        if problem:
            raise FrameError(GatewayError.schema_violation, problem, client_seq)
        return value, keys

    # ------------------------------------------------------------ bounds
    def problem(self, obj: Any, path: str = "$") -> str:
        """The first field of ``obj`` (a Struct) outside the deployment's
        limits, as a message naming its path; "" when all are within."""
        for name, how in self._plan(type(obj)):
            value = getattr(obj, name)
            at = f"{path}.{name}"
            if how == _MONEY:
                if type(value) is int and value > self.max_amount_fen:
                    return f"Expected `int` <= {self.max_amount_fen} (max_amount_fen) - at `{at}`"
            elif how in (_ID, _OPT_ID):
                if not (value == "" and how == _OPT_ID) and not self._id(value):
                    return f"Expected an id matching {self.id_pattern} - at `{at}`"
            elif how in (_IDS, _LOTS):
                for i, item in enumerate(value):
                    if not (how == _LOTS and item == "*") and not self._id(item):
                        return f"Expected an id matching {self.id_pattern} - at `{at}[{i}]`"
            elif how == _STRUCT:
                found = self.problem(value, at)
                if found:
                    return found
            elif how == _STRUCTS:
                for i, item in enumerate(value):
                    found = self.problem(item, f"{at}[{i}]")
                    if found:
                        return found
            else:
                found = _generic_problem(value, at)
                if found:
                    return found
        return ""

    def _plan(self, cls: type) -> Plan:
        plan = self._plans.get(cls)
        if plan is None:
            plan = self._plans[cls] = _plan_of(cls)
        return plan


def _plan_of(cls: type) -> Plan:
    """Which fields of ``cls`` the deployment's limits apply to, and how.  The
    protocol's own Structs carry static bounds on every other field; Structs of
    the engine carried inside a frame (a RuleSet, a region) get every integer
    checked against 0 .. 2**63 - 1 and every string's length."""
    ours = cls.__module__ == __name__ or cls in _BODY_TYPES
    plan: list[tuple[str, int]] = []
    for field in msgspec.structs.fields(cls):
        name, hint = field.name, field.type
        inner = _unannotated(hint)
        if name == "lots":
            plan.append((name, _LOTS))
        elif name in ID_FIELDS and inner is str:
            optional = field.default == "" or (cls.__name__, name) in _OPTIONAL_IDS
            plan.append((name, _OPT_ID if optional else _ID))
        elif name == "regions" and _item_type(inner) is str:
            plan.append((name, _IDS))
        elif name.endswith("_fen"):
            plan.append((name, _MONEY))
        elif isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            plan.append((name, _STRUCT))
        elif _is_struct(_item_type(inner)):
            plan.append((name, _STRUCTS))
        elif not ours:
            plan.append((name, _GENERIC))
    return tuple(plan)


# HTTP body Structs defined elsewhere (the registry's) are "ours" too: they
# declare static bounds with this module's types.
_BODY_TYPES: set[type] = set()


def register_body(cls: type[T]) -> type[T]:
    """Class decorator for an HTTP body Struct built from this module's bounded
    types (``Id``, ``Fen`` ...), so ``Reader`` applies the deployment's limits
    to its id and money fields only."""
    _BODY_TYPES.add(cls)
    return cls


def _unannotated(hint: Any) -> Any:
    return getattr(hint, "__origin__", hint) if hasattr(hint, "__metadata__") else hint


def _item_type(hint: Any) -> Any:
    args = getattr(hint, "__args__", ())
    origin = getattr(hint, "__origin__", None)
    if origin in (tuple, list) and args:
        return _unannotated(args[0])
    return None


def _is_struct(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, msgspec.Struct)


def _generic_problem(value: Any, at: str) -> str:
    """Integers 0 .. 2**63 - 1 and strings of at most 200 characters, in
    any nesting of tuples and lists (a RuleSet's share tables)."""
    if type(value) is int:
        if not 0 <= value <= INT63_MAX:
            return f"Expected `int` >= 0 and <= {INT63_MAX} - at `{at}`"
    elif type(value) is str:
        if len(value) > _GENERIC_STR_MAX:
            return f"Expected `str` of length <= {_GENERIC_STR_MAX} - at `{at}`"
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            found = _generic_problem(item, f"{at}[{i}]")
            if found:
                return found
    return ""


def _check_padding(text: str, payload: Any) -> None:
    """A signed payload is ledgered as sent: one padded with whitespace (a 150
    byte bid sent as 16 KB) would make every refusal of it 100 times dearer
    in the ledger.  Its text may exceed its compact form by a quarter, 64
    characters and the escapes it spells out (``\u4e2d`` is one character)."""
    compact = len(_encoder.encode(payload))
    if len(text) > compact + compact // 4 + 64 + 5 * text.count("\\u"):
        raise FrameError(
            GatewayError.schema_violation,
            f"payload padded: {len(text)} characters for {compact} of content",
            payload.client_seq,
        )


class _Envelope(msgspec.Struct):
    """A refused frame's own ``client_seq``, or its signed payload's."""

    client_seq: Seq = 0
    payload: Annotated[str, msgspec.Meta(max_length=12_288)] = ""


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(GatewayError.malformed_json, "not UTF-8") from None


_bid_decoder = msgspec.json.Decoder(BidPayload)
_sealed_decoder = msgspec.json.Decoder(SealedPayload)
_order_decoder = msgspec.json.Decoder(OrderPayload)
_READER = Reader()


def decode_client(data: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> ClientFrame:
    """One client frame read with the default limits (see ``Reader``)."""
    reader = _READER if max_bytes == MAX_FRAME_BYTES else Reader(max_frame_bytes=max_bytes)
    return reader.frame(data)


def decode_server(data: str | bytes) -> ServerFrame:
    frame: ServerFrame = _server_decoder.decode(data)
    return frame


def encode(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def encode_text(frame: Frame) -> str:
    return _encoder.encode(frame).decode()


# ------------------------------------------------------------ signing


def bid_frame(
    key: SigningKey, key_id: str, lot: str, amount_fen: int, client_seq: int, tick: int = -1
) -> str:
    """A ready-to-send place_bid frame (JSON text); ``tick`` >= 0 accepts a Dutch
    price (``amount_fen`` must then be that tick's price)."""
    payload = _encoder.encode(BidPayload(BID_DOMAIN, lot, key_id, amount_fen, client_seq, tick))
    sig = key.sign(payload).signature.hex()
    return encode_text(PlaceBidFrame(payload.decode(), sig))


def read_bid(frame: PlaceBidFrame) -> BidPayload:
    payload: BidPayload = _READER.payload(frame)
    return payload


def read_sealed(frame: SealedFrame) -> SealedPayload:
    payload: SealedPayload = _READER.payload(frame)
    return payload


def read_order(frame: OrderFrame) -> OrderPayload:
    payload: OrderPayload = _READER.payload(frame)
    return payload


def order_frame(key: SigningKey, payload: OrderPayload) -> str:
    """A ready-to-send signed order frame (JSON text)."""
    raw = _encoder.encode(payload)
    return encode_text(OrderFrame(raw.decode(), key.sign(raw).signature.hex()))


def sealed_frame(key: SigningKey, payload: SealedPayload) -> str:
    raw = _encoder.encode(payload)
    return encode_text(SealedFrame(raw.decode(), key.sign(raw).signature.hex()))


def verify_bid(frame: PlaceBidFrame | SealedFrame | OrderFrame, verify_key: VerifyKey) -> None:
    """The detached signature over the exact payload bytes."""
    try:
        verify_key.verify(frame.payload.encode(), bytes.fromhex(frame.sig))
    except (BadSignatureError, ValueError):
        raise FrameError(GatewayError.bad_signature, "signature does not verify") from None


def auth_message(key_id: str, ts_ms: int, nonce: str) -> bytes:
    return f"{AUTH_DOMAIN}|{key_id}|{ts_ms}|{nonce}".encode()


def auth_params(key: SigningKey, key_id: str, ts_ms: int, nonce: str) -> dict[str, str]:
    """Query parameters a bidder adds to its WebSocket upgrade request."""
    sig = key.sign(auth_message(key_id, ts_ms, nonce)).signature.hex()
    return {"key": key_id, "ts": str(ts_ms), "nonce": nonce, "sig": sig}


def json_schema() -> dict[str, Any]:
    """JSON Schema of every frame both ways (``pubex schema``)."""
    schemas, components = msgspec.json.schema_components(
        [ClientFrame, ServerFrame, BidPayload, SealedPayload, OrderPayload],
        ref_template="#/$defs/{name}",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pubex wire protocol",
        "oneOf": [schemas[0], schemas[1]],
        "$defs": components,
    }
