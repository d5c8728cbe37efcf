"""Theory of operation: the e-mall (电子卖场) in the engine -- catalogue items,
each with one continuous order book (``engine.book.Book``), owned by the
router's state.

* Items live in ``EngineState.items`` (item id -> ``Item``).  An ``Item``
  holds its ``Book`` directly; the state codec encodes a book through
  ``enc_hook`` as a ``BookState`` (configuration, then every resting order in
  priority order: bids best first, then asks, FIFO within a level) and
  rebuilds it through ``dec_hook`` -- so snapshots round-trip, the state hash
  covers every resting order, and ``Router.restore(snapshot)`` plus the tail
  equals the full replay.  The book's trade tape is not state (watchers build
  theirs from durable events), so router-owned books keep none.
* Staff create items (reference price, band, default single-purchase limit,
  initial session) and change sessions; entering ``open`` from the call runs
  the opening uncross (B-8).  The registry sets a purchaser's single-purchase
  limit (R-3.4.1).
* Traders (origin kinds ``bidder``, ``supplier`` -- sells only -- and
  ``purchaser`` -- buys only) place, cancel and amend orders; a direct
  purchase (直购) is a market buy, or an IOC buy up to a maximum price, within
  the purchaser's single-purchase limit.  An order's id is the ledger seq of
  the command that placed it (unique, known to the trader from its ack).
* Owners never appear in events: a trader gets a per-item code (``T0001``) on
  its first order or limit, exactly like a bidder code on a lot.  Refusals
  are ``CommandRejected`` with the 6xx codes (``engine.codes.Reject``).

Pure like the rest of the engine: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from engine import book as B
from engine.codes import Reject
from engine.messages import (
    AmendOrder,
    AuctionUncrossed,
    CancelOrder,
    CommandRejected,
    CreateItem,
    DirectPurchase,
    Event,
    ItemCreated,
    ItemSessionChanged,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderPlaced,
    PlaceOrder,
    PurchaseLimitSet,
    SetItemSession,
    SetPurchaseLimit,
)

STAFF = ("staff",)
REGISTRY = ("staff", "service")
TRADERS = ("bidder", "supplier", "purchaser")
PURCHASERS = ("bidder", "purchaser")
MAX_ID_LEN = 64


class BookState(msgspec.Struct, array_like=True, gc=False):
    """A book as encoded in the engine state (-1 stands for "none")."""

    session: str
    reference: int
    band: int
    purchase_limit: int
    purchase_limits: dict[str, int]
    last_price: int
    version: int
    bids: list[tuple[int, list[tuple[int, str, int]]]]  # (price, [(id, owner, qty)]) best first
    asks: list[tuple[int, list[tuple[int, str, int]]]]


class Item(msgspec.Struct):
    item_id: str
    title: str
    book: B.Book
    codes: dict[str, str] = msgspec.field(default_factory=dict)  # trader id -> code

    def __post_init__(self) -> None:  # a decoded book learns its item id back
        self.book.item_id = self.item_id


def _none(v: int | None) -> int:
    return -1 if v is None else v


def _some(v: int) -> int | None:
    return None if v < 0 else v


def enc_hook(obj: Any) -> Any:
    """The state codec's hook: a ``Book`` encodes as its ``BookState``."""
    if type(obj) is B.Book:
        snap = obj.snapshot()
        return BookState(
            obj.session,
            _none(obj.reference),
            _none(obj.band),
            _none(obj.purchase_limit),
            obj.purchase_limits,
            obj.last_price,
            obj.version,
            snap["bids"],
            snap["asks"],
        )
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def dec_hook(kind: type, obj: Any) -> Any:
    if kind is B.Book:
        st = msgspec.convert(obj, BookState)
        book = new_book("", None, None, st.session, None)
        book.purchase_limit = _some(st.purchase_limit)
        book.load(
            {
                "session": st.session,
                "reference": _some(st.reference),
                "band": _some(st.band),
                "last_price": st.last_price,
                "bids": st.bids,
                "asks": st.asks,
            },
            st.purchase_limits,
            st.version,
        )
        return book
    raise NotImplementedError(f"cannot decode {kind.__name__}")


def new_book(
    item_id: str, reference: int | None, band: int | None, session: str, limit: int | None
) -> B.Book:
    return B.Book(
        item_id, reference=reference, band=band, session=session, purchase_limit=limit, tape_len=0
    )


class Refused(Exception):
    def __init__(self, code: Reject, detail: str = "") -> None:
        self.code = code
        self.detail = detail


Handler = Callable[[Any, int, list[Event]], int | None]


class Emall:
    """The e-mall's command handlers, bound to one router (its state and the
    identity of the command being applied)."""

    def __init__(self, router: Any) -> None:
        self.router = router

    def handlers(self) -> dict[type, tuple[tuple[str, ...], Handler]]:
        return {
            CreateItem: (STAFF, self._guard(self.create_item)),
            SetItemSession: (STAFF, self._guard(self.set_session)),
            SetPurchaseLimit: (REGISTRY, self._guard(self.set_purchase_limit)),
            PlaceOrder: (TRADERS, self._guard(self.place)),
            CancelOrder: (TRADERS, self._guard(self.cancel)),
            AmendOrder: (TRADERS, self._guard(self.amend)),
            DirectPurchase: (PURCHASERS, self._guard(self.purchase)),
        }

    def _guard(self, fn: Callable[[Any, int, list[Event]], int | None]) -> Handler:
        """A refusal raised before any effect becomes a ``CommandRejected``."""

        def handler(cmd: Any, now_ns: int, out: list[Event]) -> int | None:
            try:
                return fn(cmd, now_ns, out)
            except Refused as r:
                item = self.router.state.items.get(cmd.item_id)
                code = item.codes.get(self.router._ident, "") if item is not None else ""
                out.append(CommandRejected(cmd.item_id, r.code, r.detail, code, 0))
                return int(r.code)

        return handler

    # ------------------------------------------------------------ staff
    def create_item(self, cmd: CreateItem, now_ns: int, out: list[Event]) -> None:
        state = self.router.state
        if cmd.item_id in state.items or cmd.item_id in state.lots:
            raise Refused(Reject.item_exists, cmd.item_id)
        if not cmd.item_id or len(cmd.item_id) > MAX_ID_LEN or cmd.item_id == "*":
            raise Refused(Reject.invalid_terms, "item_id must be 1-64 characters")
        if cmd.reference_fen < 0 or cmd.band_fen < 0 or cmd.purchase_limit_qty < 0:
            raise Refused(Reject.invalid_terms, "reference, band and limit are >= 0 (0 = none)")
        if cmd.band_fen and not cmd.reference_fen:
            raise Refused(Reject.invalid_terms, "a band needs a reference price")
        if cmd.session not in B.SESSIONS:
            raise Refused(Reject.invalid_terms, f"session is one of {sorted(B.SESSIONS)}")
        book = new_book(
            cmd.item_id,
            cmd.reference_fen or None,
            cmd.band_fen or None,
            cmd.session,
            cmd.purchase_limit_qty or None,
        )
        state.items[cmd.item_id] = Item(cmd.item_id, cmd.title, book)
        out.append(
            ItemCreated(
                cmd.item_id,
                cmd.title,
                cmd.reference_fen,
                cmd.band_fen,
                cmd.purchase_limit_qty,
                cmd.session,
            )
        )

    def set_session(self, cmd: SetItemSession, now_ns: int, out: list[Event]) -> int | None:
        item = self._item(cmd.item_id)
        if cmd.session not in B.SESSIONS:
            raise Refused(Reject.book_invalid, f"session is one of {sorted(B.SESSIONS)}")
        return self._emit(item, item.book.set_session(cmd.session, now_ns), "", out, now_ns)

    def set_purchase_limit(self, cmd: SetPurchaseLimit, now_ns: int, out: list[Event]) -> None:
        item = self._item(cmd.item_id)
        if not cmd.purchaser_id or type(cmd.qty) is not int or cmd.qty <= 0:
            raise Refused(Reject.invalid_terms, "a purchaser id and a limit > 0")
        item.book.set_purchase_limit(cmd.purchaser_id, cmd.qty)
        out.append(PurchaseLimitSet(item.item_id, self._code(item, cmd.purchaser_id), cmd.qty))

    # ----------------------------------------------------------- traders
    def place(self, cmd: PlaceOrder, now_ns: int, out: list[Event]) -> int | None:
        item = self._trader_item(cmd.item_id)
        kind = cmd.origin.partition(":")[0]
        if (kind == "supplier" and cmd.side == B.BUY) or (
            kind == "purchaser" and cmd.side == B.SELL
        ):
            raise Refused(Reject.not_authorized, f"a {kind} may not {cmd.side}")
        owner = self.router._ident
        ev = item.book.submit(
            self.router.state.applied, owner, cmd.side, cmd.kind, cmd.price_fen, cmd.qty, now_ns
        )
        return self._emit(item, ev, owner, out, now_ns)

    def purchase(self, cmd: DirectPurchase, now_ns: int, out: list[Event]) -> int | None:
        item = self._trader_item(cmd.item_id)
        if cmd.max_price_fen < 0:
            raise Refused(Reject.book_invalid, "max_price_fen >= 0 (0 = market)")
        owner = self.router._ident
        ev = item.book.purchase(
            self.router.state.applied, owner, cmd.qty, now_ns, cmd.max_price_fen
        )
        return self._emit(item, ev, owner, out, now_ns, purchase=True)

    def cancel(self, cmd: CancelOrder, now_ns: int, out: list[Event]) -> int | None:
        item = self._item(cmd.item_id)  # a cancel is always allowed (B-3), even blacklisted
        owner = self.router._ident
        return self._emit(item, item.book.cancel(cmd.order_id, owner), owner, out, now_ns)

    def amend(self, cmd: AmendOrder, now_ns: int, out: list[Event]) -> int | None:
        item = self._trader_item(cmd.item_id)
        owner = self.router._ident
        ev = item.book.amend(cmd.order_id, owner, cmd.price_fen or None, cmd.qty or None, now_ns)
        return self._emit(item, ev, owner, out, now_ns)

    # ----------------------------------------------------------- helpers
    def _item(self, item_id: str) -> Item:
        item: Item | None = self.router.state.items.get(item_id)
        if item is None:
            raise Refused(Reject.unknown_item, item_id)
        return item

    def _trader_item(self, item_id: str) -> Item:
        item = self._item(item_id)
        if self.router._ident in self.router.state.blacklist:
            raise Refused(Reject.bidder_not_eligible, "blacklisted")
        return item

    def _code(self, item: Item, trader: str) -> str:
        code = item.codes.get(trader)
        if code is None:
            code = item.codes[trader] = f"T{len(item.codes) + 1:04d}"
        return code

    def _emit(
        self,
        item: Item,
        events: list[B.BookEvent],
        owner: str,
        out: list[Event],
        now_ns: int,
        purchase: bool = False,
    ) -> int | None:
        """The book's events as engine events; a refusal (always alone) as a rejection."""
        iid = item.item_id
        append = out.append
        for e in events:
            t = type(e)
            if t is B.Trade:
                append(OrderFilled(iid, e.maker_id, e.taker_id, e.price, e.qty, e.aggressor_side))  # type: ignore[attr-defined]
            elif t is B.OrderAccepted:
                code = self._code(item, owner)
                append(OrderPlaced(iid, e.order_id, code, e.side, e.kind, e.price, e.qty, purchase))  # type: ignore[attr-defined]
            elif t is B.OrderCancelled:
                append(OrderCancelled(iid, e.order_id, e.qty, e.reason))  # type: ignore[attr-defined]
            elif t is B.OrderAmended:
                append(OrderAmended(iid, e.order_id, e.price, e.qty, e.kept_priority))  # type: ignore[attr-defined]
            elif t is B.AuctionUncrossed:
                append(AuctionUncrossed(iid, e.price, e.qty))  # type: ignore[attr-defined]
            elif t is B.SessionChanged:
                append(ItemSessionChanged(iid, e.session, now_ns))  # type: ignore[attr-defined]
            else:  # OrderRejected | BookRejected: the book changed nothing
                refused = Reject(int(e.code))  # type: ignore[attr-defined]
                append(CommandRejected(iid, refused, "", item.codes.get(owner, ""), 0))
                return int(refused)
        return None
