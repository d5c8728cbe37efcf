"""Theory of operation: the ascending family (English auction, listing).

Both mechanisms share one kernel (RULES.md §0):

* R-0.3 eligibility gate: registered for the lot, deposit confirmed, not
  blacklisted -- all facts that arrived as ledgered commands.
* R-0.6 increments: the first bid is >= the start price (R-0.6, optionally
  exactly the start); each later bid beats the current price by the
  increment, as an integer multiple (a) or a minimum step (b).
* R-0.7 optional: the leader may not outbid itself.
* R-5.2.3(d) priority-right holders may *match* the current price; ranking is
  price, then priority rank (1 best, 0 = none), then sequence number.
* R-0.5 secret reserve: sold only at or above it; disclosed only in the
  closing event.
* R-1.8 freeze keeps the remaining time (default) -- the rule set may restart
  the countdown phase instead -- and terminate ends the lot.

A mechanism subclass decides only *when* bids are taken and how time moves
(phases, extensions, countdowns).  Handlers validate fully, then mutate:
nothing half-applies.
"""

from __future__ import annotations

from engine.codes import Reject
from engine.messages import (
    BidAccepted,
    Event,
    LotExtended,
    LotOpened,
    LotSold,
    LotUnsold,
)
from engine.state import (
    FINAL,
    FROZEN,
    OPEN,
    PENDING,
    PUBLISHED,
    SOLD,
    TIMED,
    UNSOLD,
    WAIT,
    Bidder,
    Lot,
)


def gate(lot: Lot, bidder: Bidder | None, blacklisted: bool) -> str:
    """R-0.3: "" when the bidder may bid, else which gate refused it."""
    if blacklisted:
        return "blacklisted"
    if bidder is None:
        return "not_registered"
    if not bidder.deposit_confirmed:
        return "deposit_not_confirmed"
    return ""


def check_amount(lot: Lot, bidder: Bidder, amount_fen: int, inc_fen: int) -> Reject | None:
    """R-0.6 / R-0.7 / R-5.2.3: None when the amount is acceptable."""
    if amount_fen <= 0:
        return Reject.invalid_amount
    rules = lot.rules
    if not lot.leader_id:
        start = lot.start_price_fen
        if amount_fen < start:
            return Reject.bid_below_start
        if rules.first_bid_exact_start and amount_fen != start:
            return Reject.bid_not_start_price
        if rules.increment_mode == "multiple" and (amount_fen - start) % inc_fen:
            return Reject.bid_not_increment_multiple
        return None
    price = lot.price_fen
    if amount_fen == price and bidder.priority_rank:
        leader_rank = lot.leader_rank
        if leader_rank == 0 or bidder.priority_rank < leader_rank:
            return None  # a priority holder matches the price and takes the lead
        return Reject.priority_not_higher
    if amount_fen < price + inc_fen:
        return Reject.bid_below_increment
    if rules.increment_mode == "multiple" and (amount_fen - price) % inc_fen:
        return Reject.bid_not_increment_multiple
    return None


def increment_of(lot: Lot) -> int:
    """The increment of the lot's current phase (R-0.6: it may differ by phase)."""
    if lot.phase == TIMED and lot.timed_increment_fen:
        return lot.timed_increment_fen
    return lot.increment_fen


class Ascending:
    """Shared behaviour; subclasses supply the phase and timer policy."""

    name = "ascending"
    bid_phases: frozenset[str] = frozenset()  # phases of an OPEN lot that take bids

    # -- phase policy (overridden) ------------------------------------
    def open_lot(self, lot: Lot, at_ns: int) -> None:
        raise NotImplementedError

    def on_deadline(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        raise NotImplementedError

    def refuse_phase(self, lot: Lot) -> Reject | None:
        raise NotImplementedError

    def after_bid(self, lot: Lot, now_ns: int, out: list[Event]) -> None:
        raise NotImplementedError

    def restart_phase(self, lot: Lot, now_ns: int) -> None:
        """R-1.8.3 "restart_phase" resume policy; default keeps the remaining time."""

    # -- shared --------------------------------------------------------
    def start(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        lot.status = OPEN
        self.open_lot(lot, at_ns)
        out.append(LotOpened(lot.lot_id, at_ns, lot.phase, lot.end_ns))

    def refuse_bid(self, lot: Lot) -> Reject | None:
        status = lot.status
        if status == OPEN:
            return self.refuse_phase(lot)
        if status == FROZEN:
            return Reject.lot_frozen
        if status in FINAL:
            return Reject.lot_closed
        return Reject.lot_not_open

    def accept_bid(
        self,
        lot: Lot,
        bidder_id: str,
        bidder: Bidder,
        amount_fen: int,
        now_ns: int,
        out: list[Event],
    ) -> None:
        priority_match = amount_fen == lot.price_fen
        lot.leader_id = bidder_id
        lot.leader_code = bidder.code
        lot.leader_rank = bidder.priority_rank
        lot.price_fen = amount_fen
        lot.bid_count += 1
        bidder.last_bid_ns = now_ns
        out.append(BidAccepted(lot.lot_id, bidder.code, amount_fen, lot.bid_count, priority_match))
        self.after_bid(lot, now_ns, out)

    def close(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        """R-0.5 / R-2.4.1 / R-1.3.4: sold only with a leader at or above the reserve."""
        lot.deadline_ns = -1
        if lot.leader_id and lot.price_fen >= lot.reserve_fen:
            lot.status = SOLD
            out.append(LotSold(lot.lot_id, lot.leader_code, lot.price_fen, at_ns, lot.reserve_fen))
            return
        lot.status = UNSOLD
        if lot.leader_id:
            out.append(
                LotUnsold(lot.lot_id, "below_reserve", at_ns, lot.price_fen, lot.reserve_fen)
            )
        else:
            out.append(LotUnsold(lot.lot_id, "no_bids", at_ns, lot.price_fen, lot.reserve_fen))

    def extend(self, lot: Lot, end_ns: int, out: list[Event]) -> None:
        lot.end_ns = end_ns
        lot.deadline_ns = end_ns
        out.append(LotExtended(lot.lot_id, end_ns))

    def resume(self, lot: Lot, now_ns: int, remaining_ns: int) -> None:
        """Shift the lot's clock by the time it spent frozen (R-1.8.3)."""
        shift = now_ns - lot.frozen_at_ns
        if lot.phase == PENDING:
            lot.start_ns += shift
            lot.status = PUBLISHED
        else:
            lot.status = OPEN
        lot.end_ns += shift
        for bidder in lot.bidders.values():  # "the last hour" is trading time (R-B2)
            if bidder.last_bid_ns >= 0:
                bidder.last_bid_ns += shift
        lot.deadline_ns = now_ns + remaining_ns if remaining_ns >= 0 else -1
        lot.frozen_at_ns = -1
        if lot.rules.resume_policy == "restart_phase" and lot.status == OPEN:
            self.restart_phase(lot, now_ns)


def closing_guard(lot: Lot, now_ns: int) -> bool:
    """R-1.8.5: True when staff may still freeze or terminate (outside the guard).

    The guard protects the scheduled close of the bidding or listing period; a
    countdown phase (wait / timed) has no such close, and R-1.8.3 expects staff
    to be able to freeze it (the preparation then restarts)."""
    guard = lot.rules.freeze_guard_ns
    if not guard or lot.status != OPEN or lot.phase in (WAIT, TIMED):
        return True
    return lot.end_ns - now_ns >= guard
