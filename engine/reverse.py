"""Theory of operation: reverse price competition (网上竞价), RULES.md §3.2.

Phases: ``pending`` -> ``quoting`` (start_ns .. end_ns) -> ``confirming`` ->
sold, or unsold.

* R-3.2.1 the purchaser's requirement carries a ceiling (``start_price_fen``)
  and a quote window; only registered suppliers with confirmed deposits quote
  (the eligibility gate).
* Quotes go down: the first at or below the ceiling, by whole decrements from
  it in ``multiple`` mode; each later quote below the current best by a
  multiple of the decrement (or at least one decrement in ``min_step`` mode).
  A supplier may improve its own quote.
* R-3.2.2 at the close: fewer than ``rules.min_valid_bids`` (3) quoting
  suppliers voids it; otherwise suppliers rank by their lowest quote, equal
  quotes by the earlier one (R-3.2.5), and rank 1 is offered the award.
* R-3.2.3 the offered supplier confirms within ``rules.confirm_window_ns``
  (72 h) -> sold at its quote; declining, or letting the window pass, hands
  the award to the next rank.  When no rank is left it ends unsold.
(The multi-winner share split of §3.3 is later work.)
"""

from __future__ import annotations

from typing import Literal

from engine.ascending import Ascending
from engine.codes import Reject
from engine.messages import AwardLapsed, AwardOffered, BidAccepted, Event, LotSold, LotUnsold
from engine.state import CONFIRMING, OPEN, PENDING, PUBLISHED, QUOTING, SOLD, UNSOLD, Bidder, Lot


class Reverse(Ascending):
    name = "reverse"
    bid_phases: frozenset[str] = frozenset({QUOTING})

    def open_lot(self, lot: Lot, at_ns: int) -> None:
        lot.phase = QUOTING
        lot.deadline_ns = lot.end_ns

    def on_deadline(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        if lot.status == PUBLISHED and lot.phase == PENDING:
            self.start(lot, at_ns, out)
        elif lot.status != OPEN:
            return
        elif lot.phase == QUOTING:
            self._close_quoting(lot, at_ns, out)
        else:
            self.lapse(lot, at_ns, "not_confirmed", out)

    def refuse_phase(self, lot: Lot) -> Reject | None:
        return None if lot.phase == QUOTING else Reject.phase_not_accepting

    def check_quote(self, lot: Lot, amount_fen: int) -> Reject | None:
        """Downward quotes by the decrement (R-0.6 mirrored, R-2.5.6)."""
        dec = lot.increment_fen
        multiple = lot.rules.increment_mode == "multiple"
        if amount_fen <= 0:
            return Reject.invalid_amount
        if not lot.leader_id:
            if amount_fen > lot.start_price_fen:
                return Reject.bid_above_ceiling
            if multiple and (lot.start_price_fen - amount_fen) % dec:
                return Reject.bid_not_increment_multiple
            return None
        if amount_fen > lot.price_fen - dec:
            return Reject.quote_not_below_best
        if multiple and (lot.price_fen - amount_fen) % dec:
            return Reject.bid_not_increment_multiple
        return None

    def quote(
        self,
        lot: Lot,
        bidder_id: str,
        bidder: Bidder,
        amount_fen: int,
        now_ns: int,
        seq: int,
        out: list[Event],
    ) -> None:
        lot.leader_id, lot.leader_code, lot.price_fen = bidder_id, bidder.code, amount_fen
        lot.bid_count += 1
        bidder.last_bid_ns, bidder.best_fen, bidder.best_seq = now_ns, amount_fen, seq
        out.append(BidAccepted(lot.lot_id, bidder.code, amount_fen, lot.bid_count))

    def after_bid(self, lot: Lot, now_ns: int, out: list[Event]) -> None:
        raise AssertionError("reverse quotes go through Reverse.quote")

    # -- award --------------------------------------------------------
    def ranking(self, lot: Lot) -> list[tuple[str, Bidder]]:
        quoted = [(b_id, b) for b_id, b in lot.bidders.items() if b.best_seq]
        return sorted(quoted, key=lambda item: (item[1].best_fen, item[1].best_seq))

    def _close_quoting(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        ranked = self.ranking(lot)
        if len(ranked) < lot.rules.min_valid_bids or not ranked:
            lot.status, lot.deadline_ns = UNSOLD, -1
            if ranked:
                out.append(LotUnsold(lot.lot_id, "too_few_valid_bids", at_ns, lot.price_fen, 0))
            else:
                out.append(LotUnsold(lot.lot_id, "no_bids", at_ns, 0, 0))
            return
        lot.phase = CONFIRMING
        self._offer(lot, 1, at_ns, out)

    def _offer(self, lot: Lot, rank: int, at_ns: int, out: list[Event]) -> None:
        ranked = self.ranking(lot)
        if rank > len(ranked):
            lot.status, lot.deadline_ns = UNSOLD, -1
            out.append(LotUnsold(lot.lot_id, "all_declined", at_ns, lot.price_fen, 0))
            return
        bidder_id, bidder = ranked[rank - 1]
        lot.award_rank = rank
        lot.leader_id, lot.leader_code, lot.price_fen = bidder_id, bidder.code, bidder.best_fen
        lot.deadline_ns = lot.end_ns = at_ns + lot.rules.confirm_window_ns
        out.append(AwardOffered(lot.lot_id, bidder.code, bidder.best_fen, rank, lot.end_ns))

    def lapse(
        self,
        lot: Lot,
        at_ns: int,
        reason: Literal["declined", "not_confirmed"],
        out: list[Event],
    ) -> None:
        bidder = lot.bidders[lot.leader_id]
        bidder.award_lapsed = True
        out.append(AwardLapsed(lot.lot_id, bidder.code, lot.award_rank, reason))
        self._offer(lot, lot.award_rank + 1, at_ns, out)

    def confirm(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        lot.status, lot.deadline_ns = SOLD, -1
        out.append(LotSold(lot.lot_id, lot.leader_code, lot.price_fen, at_ns, 0))
