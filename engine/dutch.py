"""Theory of operation: the Dutch (descending clock) auction, RULES.md §2.5.

Phases: ``pending`` -> ``descending`` -> close.

* R-2.5.1 parameters: START (``start_price_fen``), STEP (``increment_fen``),
  TICK (``rules.tick_ns``), FLOOR (``floor_fen``, public; a secret reserve may
  be entered as for any lot).
* R-2.5.2 at tick n the price is START - n * STEP.  Ticks are deadlines: the
  runtime's ledgered ``Tick`` (or any later command) advances the clock at the
  tick's own time, so replay reproduces every price change.
* R-2.5.5 an ``AcceptPrice`` must name the tick current at the server's
  receipt; a stale tick is refused ``stale_tick``.
* The first acceptance at a tick wins at that price and ends the lot at once;
  R-2.5.4 simultaneous acceptances follow ``rules.dutch_tie_rule`` --
  "earliest": the earliest sequence number (the others find the lot closed).
* R-2.5.3 the price never goes below the floor: when the next step would, the
  lot ends unsold.  A secret reserve above the floor ends it the same way when
  the clock would pass below it (its amount is disclosed only in LotUnsold).
"""

from __future__ import annotations

from engine.ascending import Ascending
from engine.codes import Reject
from engine.messages import BidAccepted, Event, PriceTicked
from engine.state import DESCENDING, OPEN, PENDING, PUBLISHED, Bidder, Lot


class Dutch(Ascending):
    name = "dutch"
    bid_phases: frozenset[str] = frozenset()  # PlaceBid never applies: see AcceptPrice

    def open_lot(self, lot: Lot, at_ns: int) -> None:
        lot.phase = DESCENDING
        lot.tick = 0
        lot.price_fen = lot.start_price_fen
        lot.deadline_ns = at_ns + lot.rules.tick_ns
        lot.end_ns = at_ns + (self._last_tick(lot) + 1) * lot.rules.tick_ns

    def start(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        super().start(lot, at_ns, out)
        out.append(PriceTicked(lot.lot_id, 0, lot.price_fen, at_ns, lot.deadline_ns))

    def on_deadline(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        if lot.status == PUBLISHED and lot.phase == PENDING:
            self.start(lot, at_ns, out)
        elif lot.status == OPEN:
            self._tick(lot, at_ns, out)

    def _tick(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        following = lot.price_fen - lot.increment_fen
        if following < lot.floor_fen or following < lot.reserve_fen:
            self.close(lot, at_ns, out)  # nobody accepted: unsold at this tick
            return
        lot.tick += 1
        lot.price_fen = following
        lot.deadline_ns = at_ns + lot.rules.tick_ns
        out.append(PriceTicked(lot.lot_id, lot.tick, following, at_ns, lot.deadline_ns))

    def refuse_phase(self, lot: Lot) -> Reject | None:
        return Reject.wrong_mechanism  # a Dutch lot takes AcceptPrice, not PlaceBid

    def refuse_accept(self, lot: Lot, tick: int) -> Reject | None:
        refused = self.refuse_bid(lot)
        if refused is not None and refused != Reject.wrong_mechanism:
            return refused
        return Reject.stale_tick if tick != lot.tick else None

    def accept(
        self, lot: Lot, bidder_id: str, bidder: Bidder, now_ns: int, out: list[Event]
    ) -> None:
        lot.leader_id, lot.leader_code = bidder_id, bidder.code
        lot.bid_count = 1
        bidder.last_bid_ns = now_ns
        out.append(BidAccepted(lot.lot_id, bidder.code, lot.price_fen, 1))
        self.close(lot, now_ns, out)

    def after_bid(self, lot: Lot, now_ns: int, out: list[Event]) -> None:
        raise AssertionError("Dutch lots take no PlaceBid")

    @staticmethod
    def _last_tick(lot: Lot) -> int:
        """The tick offering the lowest price at or above the floor."""
        return (lot.start_price_fen - lot.floor_fen) // lot.increment_fen
