"""Theory of operation: the English auction (RULES.md §0, §2.2, §2.4, §5).

Phases: ``pending`` (published, before the start) -> ``bidding`` -> close.

* The lot opens at ``start_ns`` and closes at ``end_ns``.
* R-5.2.4 / R-2.4.5 anti-sniping: a bid with ``end - t <= W`` moves the end
  to ``t + W`` (W = ``rules.extension_window_ns``; judicial 5 min, commercial
  3 min; 0 disables).  The end never moves earlier.
* R-5.2.5 at the end: the leader wins at or above the reserve, else unsold.
* A long silence never closes a lot early (R-5.2.8).
* R-5.2.7 a sale-window lot (``stage == "sale"``, 变卖) opens in phase
  ``sale`` at the fixed price; the first bid starts ``rules.sale_bidding_ns``
  (24 h) of ordinary bidding; no bid by the window's end -> unsold.
"""

from __future__ import annotations

from engine.ascending import Ascending
from engine.codes import Reject
from engine.messages import Event, PhaseChanged
from engine.state import BIDDING, OPEN, PENDING, PUBLISHED, SALE, Lot


class English(Ascending):
    name = "english"
    bid_phases = frozenset({BIDDING, SALE})

    def open_lot(self, lot: Lot, at_ns: int) -> None:
        lot.phase = SALE if lot.stage == "sale" else BIDDING
        lot.deadline_ns = lot.end_ns

    def on_deadline(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        if lot.status == PUBLISHED and lot.phase == PENDING:
            self.start(lot, at_ns, out)
        elif lot.status == OPEN:
            self.close(lot, at_ns, out)

    def refuse_phase(self, lot: Lot) -> Reject | None:
        return None if lot.phase in self.bid_phases else Reject.lot_not_open

    def after_bid(self, lot: Lot, now_ns: int, out: list[Event]) -> None:
        if lot.phase == SALE:  # 变卖: the first bid starts a 24 h bidding period
            lot.phase = BIDDING
            lot.end_ns = lot.deadline_ns = now_ns + lot.rules.sale_bidding_ns
            out.append(PhaseChanged(lot.lot_id, BIDDING, now_ns, lot.end_ns))
            return
        window = lot.rules.extension_window_ns
        if window and now_ns + window > lot.end_ns:
            self.extend(lot, now_ns + window, out)

    def restart_phase(self, lot: Lot, now_ns: int) -> None:
        window = lot.rules.extension_window_ns
        if now_ns + window > lot.end_ns:
            lot.end_ns = lot.deadline_ns = now_ns + window
