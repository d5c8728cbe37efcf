"""Theory of operation: listing with timed bidding (RULES.md §1.3, §1.4).

Phases: ``pending`` -> ``listing`` [-> ``quote_frozen``] -> at the listing
close either settle, or [``wait`` ->] ``timed`` -> close.

* R-1.3.2 / R-B1 listing: quotes beat the current price by the listing
  increment (first quote >= start).  Equal quotes cannot both stand: the
  first submitted keeps the lead (R-1.3.4(b)).
* R-A2 (Jiangsu): ``rules.quote_freeze_ns`` before the close quotes are
  refused (``quotes_frozen``).
* At the listing close the rule set's trigger decides whether timed bidding
  follows:
    - ``eligible_bidders`` (R-A3): two or more eligible bidders;
    - ``quoters_in_last_window`` (R-B2): two or more bidders quoted in the
      last ``last_window_ns`` (one hour);
    - ``always`` (Variant C, Qinzhou): a timed phase regardless.
  Otherwise the lot settles at once: the leader wins at or above the
  reserve (R-1.3.4(a), R-A3, R-B2(a)(b)).
* R-B3: ``rules.wait_ns`` (15 min in Fujian) of preparation, no bids.
* R-A4 / R-B4 / C: timed phase with the timed increment; every accepted bid
  restarts the full countdown (``end = bid + countdown_ns``).  When it runs
  out the leader wins -- the listing leader if nobody bid in the timed
  phase (R-A5, R-B4) -- subject to the reserve.
"""

from __future__ import annotations

from engine.ascending import Ascending
from engine.codes import Reject
from engine.messages import Event, PhaseChanged
from engine.state import LISTING, OPEN, PENDING, PUBLISHED, QUOTE_FROZEN, TIMED, WAIT, Lot


class Listing(Ascending):
    name = "listing"
    bid_phases = frozenset({LISTING, TIMED})

    def open_lot(self, lot: Lot, at_ns: int) -> None:
        freeze = lot.rules.quote_freeze_ns
        if freeze and at_ns >= lot.end_ns - freeze:  # opened late, already in the freeze
            lot.phase = QUOTE_FROZEN
            lot.deadline_ns = lot.end_ns
        else:
            lot.phase = LISTING
            lot.deadline_ns = lot.end_ns - freeze if freeze else lot.end_ns

    def on_deadline(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        phase = lot.phase
        if lot.status == PUBLISHED and phase == PENDING:
            self.start(lot, at_ns, out)
        elif lot.status != OPEN:
            return
        elif phase == LISTING and at_ns < lot.end_ns:
            self._enter(lot, QUOTE_FROZEN, at_ns, lot.end_ns, out)
        elif phase in (LISTING, QUOTE_FROZEN):
            self._listing_closed(lot, at_ns, eligible, out)
        elif phase == WAIT:
            self._start_timed(lot, at_ns, out)
        else:
            self.close(lot, at_ns, out)

    def refuse_phase(self, lot: Lot) -> Reject | None:
        phase = lot.phase
        if phase in (LISTING, TIMED):
            return None
        if phase == QUOTE_FROZEN:
            return Reject.quotes_frozen
        return Reject.phase_not_accepting

    def after_bid(self, lot: Lot, now_ns: int, out: list[Event]) -> None:
        if lot.phase == TIMED:
            lot.timed_bid_count += 1
            self.extend(lot, now_ns + lot.rules.countdown_ns, out)

    def restart_phase(self, lot: Lot, now_ns: int) -> None:
        """R-1.8.3 (Fujian): a freeze in the wait or timed phase restarts the
        preparation, then the countdown; listing-phase freezes keep their time."""
        if lot.phase not in (WAIT, TIMED):
            return
        if lot.rules.wait_ns:
            lot.phase = WAIT
            lot.deadline_ns = now_ns + lot.rules.wait_ns
            lot.end_ns = lot.deadline_ns + lot.rules.countdown_ns
        else:
            lot.end_ns = lot.deadline_ns = now_ns + lot.rules.countdown_ns

    # -- transitions ----------------------------------------------------
    def _listing_closed(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        if not self._timed_follows(lot, at_ns, eligible):
            self.close(lot, at_ns, out)
        elif lot.rules.wait_ns:
            wait_end = at_ns + lot.rules.wait_ns
            self._enter(lot, WAIT, at_ns, wait_end, out, end_ns=wait_end + lot.rules.countdown_ns)
        else:
            self._start_timed(lot, at_ns, out)

    def _timed_follows(self, lot: Lot, at_ns: int, eligible: int) -> bool:
        trigger = lot.rules.timed_trigger
        if trigger == "always":
            return True
        if trigger == "eligible_bidders":
            return eligible >= 2
        since = at_ns - lot.rules.last_window_ns
        quoters = sum(1 for b in lot.bidders.values() if b.last_bid_ns >= since)
        return quoters >= 2

    def _start_timed(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        end = at_ns + lot.rules.countdown_ns
        self._enter(lot, TIMED, at_ns, end, out)

    def _enter(
        self,
        lot: Lot,
        phase: str,
        at_ns: int,
        deadline_ns: int,
        out: list[Event],
        end_ns: int = -1,
    ) -> None:
        lot.phase = phase
        lot.deadline_ns = deadline_ns
        lot.end_ns = end_ns if end_ns >= 0 else deadline_ns
        out.append(PhaseChanged(lot.lot_id, phase, at_ns, lot.end_ns))
