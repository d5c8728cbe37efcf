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
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from engine.codes import Reject
from engine.messages import RegionDemand
from engine.rules import RuleSet

BID_DOMAIN = "pubex-bid-v1"
SEALED_DOMAIN = "pubex-sealed-v1"
ORDER_DOMAIN = "pubex-order-v1"
AUTH_DOMAIN = "pubex-auth-v1"
MAX_FRAME_BYTES = 16 * 1024


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


def error_name(code: int) -> str:
    if code >= 1000:
        return GatewayError(code).name
    return Reject(code).name


# ------------------------------------------------------------ client frames


class Frame(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    pass


class PlaceBidFrame(Frame, frozen=True, tag="place_bid"):
    payload: str  # the exact signed JSON text of a BidPayload
    sig: str  # hex Ed25519 signature over payload.encode()


class BidPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    domain: str
    lot: str
    key: str
    amount_fen: int
    client_seq: int
    tick: int = -1  # Dutch lots: accept the price of this tick (amount_fen = that price)


class SealedFrame(Frame, frozen=True, tag="sealed"):
    """A signed non-bid action of a bidder or supplier: a sealed tender's
    submit / withdraw / reveal, or a reverse competition's confirm_award /
    decline_award.  Signed and ledgered like a bid."""

    payload: str  # the exact signed JSON text of a SealedPayload
    sig: str


class SealedPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    domain: str
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
    lot: str
    key: str
    client_seq: int
    commitment: str = ""  # submit: engine.sealed.seal_commitment(lot, amount, nonce)
    amount_fen: int = 0  # reveal
    nonce: str = ""  # reveal
    regions: tuple[str, ...] = ()  # choose_regions (VBP): best first
    bidder_code: str = ""  # enter_scores (committee key): the bid being scored
    points_centi: int = 0  # enter_scores: non-price points, in hundredths
    complaint_id: str = ""  # complaint (质疑 / 投诉): the filer's own id for it
    text: str = ""  # complaint: what is wrong


class OrderFrame(Frame, frozen=True, tag="order"):
    """An e-mall trader's order action (place / cancel / amend / direct
    purchase), signed and ledgered like a bid."""

    payload: str  # the exact signed JSON text of an OrderPayload
    sig: str


class OrderPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    domain: str
    action: Literal["place", "cancel", "amend", "purchase"]
    item: str
    key: str
    client_seq: int
    side: Literal["buy", "sell"] = "buy"  # place
    kind: Literal["limit", "market", "ioc", "fok"] = "limit"  # place
    # place: the limit price (0 for market); amend: the new price (0 = unchanged);
    # purchase: the maximum price (0 = a market buy)
    price_fen: int = 0
    qty: int = 0  # place, purchase; amend: the new open quantity (0 = unchanged)
    order_id: int = 0  # cancel, amend: the seq of the ack that placed the order


class Subscribe(Frame, frozen=True, tag="subscribe"):
    lots: list[str]


class Unsubscribe(Frame, frozen=True, tag="unsubscribe"):
    lots: list[str]


class Ping(Frame, frozen=True, tag="ping"):
    t: int = 0


class StaffFrame(Frame, frozen=True):
    client_seq: int


class CreateLotFrame(StaffFrame, frozen=True, tag="create_lot"):
    lot: str
    mechanism: Literal["english", "listing", "dutch", "sealed", "reverse", "vbp"]
    title: str
    start_price_fen: int
    increment_fen: int
    start_ns: int
    end_ns: int
    rules: RuleSet = RuleSet()
    deposit_fen: int = 0
    timed_increment_fen: int = 0
    floor_fen: int = 0  # Dutch: the public floor (increment_fen is the step down)
    regions: tuple[RegionDemand, ...] = ()  # VBP: [region, demand_units] pairs


class PublishLotFrame(StaffFrame, frozen=True, tag="publish_lot"):
    lot: str


class SetReserveFrame(StaffFrame, frozen=True, tag="set_reserve"):
    lot: str
    reserve_fen: int


class ChangeIncrementFrame(StaffFrame, frozen=True, tag="change_increment"):
    lot: str
    increment_fen: int
    phase: Literal["main", "timed"] = "main"


class FreezeLotFrame(StaffFrame, frozen=True, tag="freeze_lot"):
    lot: str
    reason: str


class ResumeLotFrame(StaffFrame, frozen=True, tag="resume_lot"):
    lot: str
    reason: str


class TerminateLotFrame(StaffFrame, frozen=True, tag="terminate_lot"):
    lot: str
    reason: str


class RegisterKeyFrame(StaffFrame, frozen=True, tag="register_key"):
    key: str
    bidder: str
    public_key_hex: str
    role: Literal["bidder", "supplier", "purchaser", "committee"] = "bidder"


class RegisterBidderFrame(StaffFrame, frozen=True, tag="register_bidder"):
    lot: str
    bidder: str
    priority_rank: int = 0
    sme: bool = False  # a small or micro firm (reverse competitions' price deduction)


class ConfirmDepositFrame(StaffFrame, frozen=True, tag="confirm_deposit"):
    lot: str
    bidder: str
    amount_fen: int
    payer_account: str = ""  # ledgered for supervision (W-F1), never published


class BlacklistFrame(StaffFrame, frozen=True, tag="blacklist_bidder"):
    """Registry: the credit blacklist (R-0.3(d)); a listed subject cannot register or bid."""

    bidder: str
    reason: str


class UnblacklistFrame(StaffFrame, frozen=True, tag="unblacklist_bidder"):
    bidder: str
    reason: str


class CommitDrawSeedFrame(StaffFrame, frozen=True, tag="commit_draw_seed"):
    lot: str
    seed_hash: str  # hex BLAKE2b-256 of the secret seed (engine.draw.seed_hash)


class RevealDrawSeedFrame(StaffFrame, frozen=True, tag="reveal_draw_seed"):
    lot: str
    seed_hex: str


class FinalizeEvaluationFrame(StaffFrame, frozen=True, tag="finalize_evaluation"):
    lot: str


class ConfirmPaymentFrame(StaffFrame, frozen=True, tag="confirm_payment"):
    lot: str


class DeclareDefaultFrame(StaffFrame, frozen=True, tag="declare_default"):
    lot: str
    reason: str


class QualifyWinnerFrame(StaffFrame, frozen=True, tag="qualify_winner"):
    lot: str
    passed: bool
    reason: str = ""


class CreateReauctionFrame(StaffFrame, frozen=True, tag="create_reauction"):
    lot: str
    parent_lot: str
    stage: Literal["second", "sale"]
    start_price_fen: int
    start_ns: int
    end_ns: int
    increment_fen: int = 0  # 0 = the parent's
    deposit_fen: int = -1  # -1 = the parent's


class RefundDepositFrame(StaffFrame, frozen=True, tag="refund_deposit"):
    """Registry: return a deposit after the close (never the winner's, once)."""

    lot: str
    bidder: str
    amount_fen: int
    bank_ref: str = ""


class CommitExpertDrawFrame(StaffFrame, frozen=True, tag="commit_expert_draw"):
    draw_id: str
    lot: str
    seed_hash: str
    pool_hash: str


class RevealExpertDrawFrame(StaffFrame, frozen=True, tag="reveal_expert_draw"):
    draw_id: str
    seed_hex: str
    drawn_hash: str


class HandleAlertFrame(StaffFrame, frozen=True, tag="handle_alert"):
    """Staff or a supervisor acknowledge / dismiss / escalate a supervision alert."""

    lot: str
    alert_key: str
    action: Literal["acknowledge", "dismiss", "escalate"]
    note: str = ""


class AnswerComplaintFrame(StaffFrame, frozen=True, tag="answer_complaint"):
    complaint_id: str
    step: Literal["accept", "answer", "reject", "escalate"]
    text: str = ""


ItemSession = Literal["call", "open", "halted", "closed"]


class CreateItemFrame(StaffFrame, frozen=True, tag="create_item"):
    """E-mall: a catalogue item and its order book; 0 = none."""

    item: str
    title: str
    reference_fen: int = 0
    band_fen: int = 0
    purchase_limit_qty: int = 0
    session: ItemSession = "call"


class SetItemSessionFrame(StaffFrame, frozen=True, tag="set_item_session"):
    item: str
    session: ItemSession


class SetPurchaseLimitFrame(StaffFrame, frozen=True, tag="set_purchase_limit"):
    item: str
    bidder: str  # the purchaser
    qty: int


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

LOT_ACTIONS = (
    CreateLotFrame,
    PublishLotFrame,
    SetReserveFrame,
    ChangeIncrementFrame,
    FreezeLotFrame,
    ResumeLotFrame,
    TerminateLotFrame,
    CreateItemFrame,
    SetItemSessionFrame,
    CommitDrawSeedFrame,
    RevealDrawSeedFrame,
    FinalizeEvaluationFrame,
    QualifyWinnerFrame,
    CreateReauctionFrame,
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
_payload_decoder = msgspec.json.Decoder(BidPayload)
_sealed_decoder = msgspec.json.Decoder(SealedPayload)
_order_decoder = msgspec.json.Decoder(OrderPayload)
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    def __init__(self, code: GatewayError, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_client(data: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> ClientFrame:
    """Decode one client frame, or raise FrameError with a typed code.  The limit
    is in UTF-8 bytes (a character can take four)."""
    if len(data) * 4 > max_bytes:
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > max_bytes:
            raise FrameError(GatewayError.frame_too_large, f"frame over {max_bytes} bytes")
    try:
        frame: ClientFrame = _client_decoder.decode(data)
        return frame
    except msgspec.ValidationError as e:
        raise FrameError(GatewayError.schema_violation, str(e)) from None
    except msgspec.DecodeError as e:
        raise FrameError(GatewayError.malformed_json, str(e)) from None


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
    """A ready-to-send place_bid frame (JSON text); ``tick`` >= 0 accepts a Dutch price."""
    payload = _encoder.encode(BidPayload(BID_DOMAIN, lot, key_id, amount_fen, client_seq, tick))
    sig = key.sign(payload).signature.hex()
    return encode_text(PlaceBidFrame(payload.decode(), sig))


def _read_payload(text: str, decoder: msgspec.json.Decoder[Any], domain: str) -> Any:
    """Decode a signed action's payload text (not yet trusted: ``verify_bid`` must follow)."""
    try:
        payload = decoder.decode(text.encode())
    except msgspec.ValidationError as e:
        raise FrameError(GatewayError.schema_violation, f"payload: {e}") from None
    except msgspec.DecodeError as e:
        raise FrameError(GatewayError.malformed_json, f"payload: {e}") from None
    if payload.domain != domain:
        raise FrameError(GatewayError.bad_domain, f"payload domain must be {domain}")
    return payload


def read_bid(frame: PlaceBidFrame) -> BidPayload:
    payload: BidPayload = _read_payload(frame.payload, _payload_decoder, BID_DOMAIN)
    return payload


def read_sealed(frame: SealedFrame) -> SealedPayload:
    payload: SealedPayload = _read_payload(frame.payload, _sealed_decoder, SEALED_DOMAIN)
    return payload


def read_order(frame: OrderFrame) -> OrderPayload:
    payload: OrderPayload = _read_payload(frame.payload, _order_decoder, ORDER_DOMAIN)
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
