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
* R-3.2.4 small and micro firms rank by their quote less
  ``rules.sme_deduction_pct`` % (compared exactly: quote x (100 - d)), but
  contract at the quote itself.
* R-3.3.5 / R-3.3.6 multi-winner (``rules.reverse_winners`` = k > 1): the
  first k ranks are offered the shares of ``rules.reverse_shares[k - 1]``
  (70/30, 50/30/20, ...) at their own quotes, all in one confirmation round;
  a declined or lapsed share goes, in the next round, to the next rank not
  yet offered, until every share is confirmed or no rank is left (the rest
  is reported unplaced).  Then ``SharesAwarded`` and ``LotSold`` (rank 1 of
  the confirmed).
"""

from __future__ import annotations

from typing import Literal

from engine.ascending import Ascending
from engine.codes import Reject
from engine.messages import (
    AwardLapsed,
    AwardOffered,
    BidAccepted,
    Event,
    LotSold,
    LotUnsold,
    ShareConfirmed,
    ShareOffer,
    SharesAwarded,
    SharesOffered,
)
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
        elif self.multi(lot):
            self.shares_due(lot, at_ns, out)
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
        """Lowest (SME-deducted, R-3.2.4) quote first; equal -> the earlier (R-3.2.5)."""
        quoted = [(b_id, b) for b_id, b in lot.bidders.items() if b.best_seq]
        d = lot.rules.sme_deduction_pct

        def key(item: tuple[str, Bidder]) -> tuple[int, int]:
            b = item[1]
            return (b.best_fen * (100 - d if b.sme else 100), b.best_seq)

        return sorted(quoted, key=key)

    def multi(self, lot: Lot) -> bool:
        return lot.rules.reverse_winners > 1

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
        if self.multi(lot):
            shares = lot.rules.reverse_shares[min(lot.rules.reverse_winners, len(ranked)) - 1]
            offers = {ranked[i][0]: pct for i, pct in enumerate(shares)}
            lot.next_rank = len(shares) + 1
            self._offer_shares(lot, offers, at_ns, out)
            return
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

    # -- multi-winner (R-3.3.5, R-3.3.6) -------------------------------
    def _offer_shares(self, lot: Lot, offers: dict[str, int], at_ns: int, out: list[Event]) -> None:
        lot.shares_offered = offers
        lot.deadline_ns = lot.end_ns = at_ns + lot.rules.confirm_window_ns
        rank_of = {b_id: r for r, (b_id, _) in enumerate(self.ranking(lot), start=1)}
        out.append(
            SharesOffered(
                lot.lot_id,
                tuple(
                    ShareOffer(lot.bidders[b].code, pct, rank_of[b], lot.bidders[b].best_fen)
                    for b, pct in offers.items()
                ),
                lot.end_ns,
            )
        )

    def confirm_share(self, lot: Lot, bidder_id: str, at_ns: int, out: list[Event]) -> None:
        pct = lot.shares_offered.pop(bidder_id)
        lot.shares_confirmed[bidder_id] = pct
        out.append(ShareConfirmed(lot.lot_id, lot.bidders[bidder_id].code, pct))
        if not lot.shares_offered:
            self._next_round(lot, at_ns, out)

    def decline_share(self, lot: Lot, bidder_id: str, at_ns: int, out: list[Event]) -> None:
        lot.shares_pending.append(lot.shares_offered.pop(bidder_id))
        self._lapse_share(lot, bidder_id, "declined", out)
        if not lot.shares_offered:
            self._next_round(lot, at_ns, out)

    def shares_due(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        """The round's window ended: unconfirmed shares lapse and pass on."""
        for bidder_id, pct in lot.shares_offered.items():
            lot.shares_pending.append(pct)
            self._lapse_share(lot, bidder_id, "not_confirmed", out)
        lot.shares_offered = {}
        self._next_round(lot, at_ns, out)

    def _lapse_share(
        self,
        lot: Lot,
        bidder_id: str,
        reason: Literal["declined", "not_confirmed"],
        out: list[Event],
    ) -> None:
        bidder = lot.bidders[bidder_id]
        bidder.award_lapsed = True
        rank = next(r for r, (b, _) in enumerate(self.ranking(lot), start=1) if b == bidder_id)
        out.append(AwardLapsed(lot.lot_id, bidder.code, rank, reason))

    def _next_round(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        """The lapsed shares go to the next ranks not yet offered (R-3.3.6)."""
        ranked = self.ranking(lot)
        offers: dict[str, int] = {}
        for pct in lot.shares_pending:
            placed = False
            while lot.next_rank <= len(ranked) and not placed:
                bidder_id = ranked[lot.next_rank - 1][0]
                lot.next_rank += 1
                if bidder_id not in offers:
                    offers[bidder_id] = pct
                    placed = True
            if not placed:
                lot.shares_unplaced += pct
        lot.shares_pending = []
        if offers:
            self._offer_shares(lot, offers, at_ns, out)
        else:
            self._finish_shares(lot, at_ns, out)

    def _finish_shares(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        lot.deadline_ns = -1
        confirmed = lot.shares_confirmed
        if not confirmed:
            lot.status = UNSOLD
            out.append(LotUnsold(lot.lot_id, "all_declined", at_ns, lot.price_fen, 0))
            return
        ranked = [(b_id, b) for b_id, b in self.ranking(lot) if b_id in confirmed]
        awards = tuple(
            ShareOffer(b.code, confirmed[b_id], rank, b.best_fen)
            for rank, (b_id, b) in enumerate(ranked, start=1)
        )
        out.append(SharesAwarded(lot.lot_id, awards, 100 - sum(confirmed.values())))
        first_id, first = ranked[0]
        lot.leader_id, lot.leader_code, lot.price_fen = first_id, first.code, first.best_fen
        lot.status = SOLD
        out.append(LotSold(lot.lot_id, first.code, first.best_fen, at_ns, 0))
