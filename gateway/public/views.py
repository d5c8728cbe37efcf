"""Theory of operation: the public view of every lot, from durable events only.

The engine runs ahead of durability (it applies a command before its batch
is committed), so nothing public may be read from engine state: watchers see
a price only once it is durable.  ``Views`` is a projection fed with the
events of committed entries, in order -- at start-up by scanning the ledger,
then live from the runtime's subscriber callback.  It holds only public
facts: bidder codes, never identities; whether a reserve exists, never its
amount before the close.  Snapshots, the lots API and the console read it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.messages import (
    AwardOffered,
    AwardVoided,
    BidAccepted,
    BidderRegistered,
    EvaluationResult,
    Event,
    LotCreated,
    LotExtended,
    LotFrozen,
    LotOpened,
    LotPublished,
    LotResumed,
    LotSold,
    LotTerminated,
    LotUnsold,
    OpeningRecord,
    PhaseChanged,
    PriceTicked,
    ReserveEntered,
    SealedBidReceived,
    SealedBidWithdrawn,
    SettlementChanged,
    ShareConfirmed,
    SharesAwarded,
    SharesOffered,
    VbpAwarded,
    VolumeAllocated,
    decode_events,
)
from gateway.public.emall import ItemState, ItemView, ItemViews
from gateway.public.events import PUBLIC_TYPES
from gateway.wire.protocol import BookSnapshot, LotSnapshot, RankRow
from ledger.record import decode_body
from ledger.store import LedgerStore

MAX_BIDS_KEPT = 5_000  # per lot, for the history API and the console chart


class BidRow(msgspec.Struct, array_like=True):
    seq: int
    ts_ns: int
    bidder_code: str
    amount_fen: int
    bid_no: int


class LotView(msgspec.Struct):
    lot: str
    title: str = ""
    mechanism: str = ""
    status: str = "draft"
    phase: str = "pending"
    price_fen: int = 0
    start_price_fen: int = 0
    increment_fen: int = 0
    leader_code: str = ""
    bidders: int = 0
    bid_count: int = 0
    end_ns: int = 0
    start_ns: int = 0
    has_reserve: bool = False
    last_bid_ns: int = 0
    extensions: int = 0
    result: str = ""
    seq: int = 0
    tick: int = -1
    bids: list[BidRow] = msgspec.field(default_factory=list)
    ranking: list[RankRow] = msgspec.field(default_factory=list)
    settlement: str = ""
    # LotPublished seen: until then a draft, for staff and supervisors only (never
    # in the public API, nor to watchers or bidders) -- whatever its status since
    published: bool = False

    def snapshot(self) -> LotSnapshot:
        return LotSnapshot(
            self.lot,
            self.title,
            self.mechanism,
            self.status,
            self.phase,
            self.price_fen,
            self.start_price_fen,
            self.increment_fen,
            self.leader_code,
            self.bidders,
            self.bid_count,
            self.end_ns,
            self.start_ns,
            self.has_reserve,
            self.last_bid_ns,
            self.extensions,
            self.result,
            self.seq,
            self.tick,
            list(self.ranking),
            self.settlement,
        )


class Views:
    def __init__(self) -> None:
        self.lots: dict[str, LotView] = {}
        self.items = ItemViews()  # e-mall items (gateway.public.emall)

    def load(self, store: LedgerStore) -> None:
        """Build the views from the committed ledger (start-up)."""
        for seq, _prev, _h, raw in store.iter_entries():
            body = decode_body(raw)
            public = [ev for ev in decode_events(body.events) if type(ev) in PUBLIC_TYPES]
            if public:
                self.apply(seq, body.ts_ns, public)

    def apply(self, seq: int, ts_ns: int, events: Iterable[Event]) -> set[str]:
        """Fold one committed entry's events in; returns the lots that changed."""
        touched: set[str] = set()
        for ev in events:
            if ev.lot_id and (self._fold(seq, ts_ns, ev) or self.items.fold(seq, ts_ns, ev)):
                touched.add(ev.lot_id)
        return touched

    def encode(self) -> bytes:
        """The whole view as bytes: what an edge joining over the link starts from."""
        return _VIEWS_ENCODER.encode(
            ViewsState(list(self.lots.values()), [v.state() for v in self.items.items.values()])
        )

    @classmethod
    def decode(cls, data: bytes) -> Views:
        st = _VIEWS_DECODER.decode(data)
        views = cls()
        views.lots = {v.lot: v for v in st.lots}
        views.items.items = {i.item: ItemView.from_state(i) for i in st.items}
        return views

    def public_snapshot(self, lot_id: str) -> LotSnapshot | BookSnapshot | None:
        """The conflated frame of a lot or an e-mall item (None when unknown)."""
        view = self.lots.get(lot_id)
        if view is not None:
            return view.snapshot()
        item = self.items.items.get(lot_id)
        return item.snapshot() if item is not None else None

    def all_ids(self) -> list[str]:
        return [*self.lots, *self.items.items]

    def public_ids(self) -> list[str]:
        """Every lot and item but the drafts."""
        return [*(k for k, v in self.lots.items() if v.published), *self.items.items]

    def is_draft(self, lot_id: str) -> bool:
        """A lot created and not yet published (False for items and unknown ids)."""
        view = self.lots.get(lot_id)
        return view is not None and not view.published

    def _fold(self, seq: int, ts_ns: int, ev: Event) -> bool:
        kind = type(ev)
        if kind is LotCreated:
            assert isinstance(ev, LotCreated)
            self.lots[ev.lot_id] = LotView(
                ev.lot_id,
                ev.title,
                ev.mechanism,
                "draft",
                "pending",
                0,
                ev.start_price_fen,
                ev.increment_fen,
                end_ns=ev.end_ns,
                start_ns=ev.start_ns,
                seq=seq,
            )
            return True
        view = self.lots.get(ev.lot_id)
        if view is None:
            return False
        view.seq = seq  # the view changed (its seq) even when nothing else folds:
        handler = _FOLDS.get(kind)  # the lot is touched, so its events are sent
        if handler is not None:
            handler(view, ts_ns, seq, ev)
        return True


def _bid(v: LotView, ts_ns: int, seq: int, ev: BidAccepted) -> None:
    v.price_fen, v.leader_code, v.bid_count = ev.amount_fen, ev.bidder_code, ev.bid_no
    v.last_bid_ns = ts_ns
    v.bids.append(BidRow(seq, ts_ns, ev.bidder_code, ev.amount_fen, ev.bid_no))
    if len(v.bids) > MAX_BIDS_KEPT:
        del v.bids[: len(v.bids) - MAX_BIDS_KEPT]


def _extended(v: LotView, ts_ns: int, seq: int, ev: LotExtended) -> None:
    v.end_ns = ev.end_ns
    v.extensions += 1


def _published(v: LotView, ts_ns: int, seq: int, ev: LotPublished) -> None:
    v.status, v.start_ns, v.end_ns = "published", ev.start_ns, ev.end_ns
    v.published = True


def _opened(v: LotView, ts_ns: int, seq: int, ev: LotOpened) -> None:
    v.status, v.phase, v.end_ns = "open", ev.phase, ev.end_ns


def _phase(v: LotView, ts_ns: int, seq: int, ev: PhaseChanged) -> None:
    v.phase, v.end_ns = ev.phase, ev.end_ns


def _frozen(v: LotView, ts_ns: int, seq: int, ev: LotFrozen) -> None:
    v.status = "frozen"
    v.result = f"frozen: {ev.reason}"


def _resumed(v: LotView, ts_ns: int, seq: int, ev: LotResumed) -> None:
    v.status = "open" if ev.phase != "pending" else "published"
    v.phase, v.end_ns, v.result = ev.phase, ev.end_ns, ""


def _terminated(v: LotView, ts_ns: int, seq: int, ev: LotTerminated) -> None:
    v.status, v.result = "terminated", ev.reason


def _sold(v: LotView, ts_ns: int, seq: int, ev: LotSold) -> None:
    v.status, v.end_ns, v.price_fen = "sold", ev.closed_at_ns, ev.price_fen
    v.result = f"sold to {ev.bidder_code}"


def _unsold(v: LotView, ts_ns: int, seq: int, ev: LotUnsold) -> None:
    v.status, v.end_ns, v.result = "unsold", ev.closed_at_ns, ev.reason


def _registered(v: LotView, ts_ns: int, seq: int, ev: BidderRegistered) -> None:
    v.bidders += 1


def _ticked(v: LotView, ts_ns: int, seq: int, ev: PriceTicked) -> None:
    v.tick, v.price_fen = ev.tick, ev.price_fen


def _sealed_in(v: LotView, ts_ns: int, seq: int, ev: SealedBidReceived) -> None:
    if ev.version == 1:  # a replacement is not another bid; amounts are never known here
        v.bid_count += 1


def _sealed_out(v: LotView, ts_ns: int, seq: int, ev: SealedBidWithdrawn) -> None:
    v.bid_count -= 1


def _award(v: LotView, ts_ns: int, seq: int, ev: AwardOffered) -> None:
    v.phase, v.end_ns, v.leader_code, v.price_fen = (
        "confirming",
        ev.until_ns,
        ev.bidder_code,
        (ev.price_fen),
    )


def _reserve(v: LotView, ts_ns: int, seq: int, ev: ReserveEntered) -> None:
    v.has_reserve = True


def _opening(v: LotView, ts_ns: int, seq: int, ev: OpeningRecord) -> None:
    """R-6.3.3: every bid, valid ones first in the method's order."""
    if ev.method == "closest_to_average":  # R-D1: distance, then the one below
        avg = ev.average_fen
        rows = sorted(
            ev.entries,
            key=lambda e: (not e.valid, abs(e.amount_fen - avg), e.amount_fen > avg),
        )
    else:
        sign = -1 if ev.method == "highest" else 1
        rows = sorted(ev.entries, key=lambda e: (not e.valid, sign * e.amount_fen))
    v.ranking = [RankRow(e.bidder_code, e.amount_fen, e.reason or "valid") for e in rows]


def _evaluated(v: LotView, ts_ns: int, seq: int, ev: EvaluationResult) -> None:
    v.ranking = [
        RankRow(e.bidder_code, e.price_fen, f"#{e.rank} {e.total_points_milli / 1000:.3f} pts")
        for e in ev.entries
    ]


def _vbp(v: LotView, ts_ns: int, seq: int, ev: VbpAwarded) -> None:
    v.ranking = [RankRow(w.bidder_code, w.price, f"#{w.rank} {w.basis}") for w in ev.winners]


def _volume(v: LotView, ts_ns: int, seq: int, ev: VolumeAllocated) -> None:
    units: dict[str, int] = {}
    for a in ev.allocations:
        units[a.bidder_code] = units.get(a.bidder_code, 0) + a.units
    v.ranking = [
        RankRow(r.bidder_code, r.amount, f"{r.note}, {units.get(r.bidder_code, 0)} units")
        for r in v.ranking
    ]


def _shares(v: LotView, ts_ns: int, seq: int, ev: SharesAwarded) -> None:
    v.ranking = [RankRow(a.bidder_code, a.price_fen, f"{a.share_pct}%") for a in ev.awards]


def _offered(v: LotView, ts_ns: int, seq: int, ev: SharesOffered) -> None:
    """A re-offer round (R-3.3.6) keeps the shares already confirmed."""
    v.phase, v.end_ns = "confirming", ev.until_ns
    kept = [r for r in v.ranking if " confirmed " in r.note]
    v.ranking = kept + [
        RankRow(o.bidder_code, o.price_fen, f"#{o.rank} offered {o.share_pct}%") for o in ev.offers
    ]


def _share_confirmed(v: LotView, ts_ns: int, seq: int, ev: ShareConfirmed) -> None:
    v.ranking = [
        RankRow(r.bidder_code, r.amount, r.note.replace(" offered ", " confirmed "))
        if r.bidder_code == ev.bidder_code
        else r
        for r in v.ranking
    ]


def _settlement(v: LotView, ts_ns: int, seq: int, ev: SettlementChanged) -> None:
    v.settlement = ev.state


def _voided(v: LotView, ts_ns: int, seq: int, ev: AwardVoided) -> None:
    v.result = f"award to {ev.bidder_code} voided: {ev.reason}"


_FOLDS = {
    BidAccepted: _bid,
    LotExtended: _extended,
    LotPublished: _published,
    LotOpened: _opened,
    PhaseChanged: _phase,
    LotFrozen: _frozen,
    LotResumed: _resumed,
    LotTerminated: _terminated,
    LotSold: _sold,
    LotUnsold: _unsold,
    BidderRegistered: _registered,
    ReserveEntered: _reserve,
    PriceTicked: _ticked,
    SealedBidReceived: _sealed_in,
    SealedBidWithdrawn: _sealed_out,
    AwardOffered: _award,
    OpeningRecord: _opening,
    EvaluationResult: _evaluated,
    VbpAwarded: _vbp,
    VolumeAllocated: _volume,
    SharesAwarded: _shares,
    SharesOffered: _offered,
    ShareConfirmed: _share_confirmed,
    SettlementChanged: _settlement,
    AwardVoided: _voided,
}


class ViewsState(msgspec.Struct, array_like=True):
    lots: list[LotView]
    items: list[ItemState]


_VIEWS_ENCODER = msgspec.msgpack.Encoder()
_VIEWS_DECODER = msgspec.msgpack.Decoder(ViewsState)
