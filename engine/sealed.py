"""Theory of operation: sealed tender / one-time quote (RULES.md §2.3, §6, R-D1).

Phases: ``pending`` -> ``submission`` (start_ns .. end_ns) -> ``reveal`` (the
decryption window, ``rules.reveal_window_ns``) -> evaluated and closed.

* R-6.2.1 bids stay unreadable to everyone -- operators and the server
  included -- until the opening: a bidder submits only a commitment,
  ``seal_commitment(lot, amount, nonce)`` (BLAKE2b of a domain tag, the lot,
  the amount and a secret nonce).  Before the deadline it may replace or
  withdraw it; after the deadline nothing is accepted.
* R-6.3.2 at the deadline the decryption window opens: each bidder reveals
  (amount, nonce).  A reveal that does not match its commitment, or none
  within the window, makes that bid invalid, with the reason recorded.
  Reveals stay unpublished until the window ends (``RevealRecorded`` carries
  no amount), so nobody decides after seeing another's amount.
* R-6.3.3 then the opening record is published to all -- codes, amounts,
  validity -- and the lot is evaluated by ``rules.evaluation``:
    - ``highest`` (R-2.3.1, one-time quote for a sale): the highest valid
      amount at or above the start price; equal amounts -> the earlier final
      submission; the secret reserve applies;
    - ``lowest`` (R-6.4.2): the lowest valid amount at or below the ceiling
      (the start price); equal -> the earlier final submission (the rules'
      random draw is later work);
    - ``closest_to_average`` (R-D1, Suzhou): the amount closest to the mean
      of the valid amounts (rounded to the fen); equal distance -> the one
      below the average, then the earlier submission.
  Fewer valid bids than ``rules.min_valid_bids`` fails the lot (R-6.3.3).
"""

from __future__ import annotations

import hashlib

from engine.ascending import Ascending
from engine.codes import Reject
from engine.messages import (
    Event,
    LotSold,
    LotUnsold,
    OpeningEntry,
    OpeningRecord,
    PhaseChanged,
    RevealRecorded,
    SealedBidReceived,
    SealedBidWithdrawn,
)
from engine.state import (
    OPEN,
    PENDING,
    PUBLISHED,
    REVEAL,
    SOLD,
    SUBMISSION,
    UNSOLD,
    Bidder,
    Lot,
    SealedBid,
)

SEAL_DOMAIN = "pubex-seal-v1"


def seal_commitment(lot_id: str, amount_fen: int, nonce: str) -> str:
    """What a bidder submits (hex); it reveals ``amount_fen`` and ``nonce`` later."""
    text = f"{SEAL_DOMAIN}|{lot_id}|{amount_fen}|{nonce}".encode()
    return hashlib.blake2b(text, digest_size=32).hexdigest()


class Sealed(Ascending):
    name = "sealed"
    bid_phases: frozenset[str] = frozenset()  # no PlaceBid: submit / reveal instead

    def open_lot(self, lot: Lot, at_ns: int) -> None:
        lot.phase = SUBMISSION
        lot.deadline_ns = lot.end_ns

    def on_deadline(self, lot: Lot, at_ns: int, eligible: int, out: list[Event]) -> None:
        if lot.status == PUBLISHED and lot.phase == PENDING:
            self.start(lot, at_ns, out)
        elif lot.status != OPEN:
            return
        elif lot.phase == SUBMISSION:
            lot.phase = REVEAL
            lot.deadline_ns = lot.end_ns = at_ns + lot.rules.reveal_window_ns
            out.append(PhaseChanged(lot.lot_id, REVEAL, at_ns, lot.end_ns))
        else:
            self._open_and_evaluate(lot, at_ns, out)

    def refuse_phase(self, lot: Lot) -> Reject | None:
        return Reject.wrong_mechanism

    def after_bid(self, lot: Lot, now_ns: int, out: list[Event]) -> None:
        raise AssertionError("sealed lots take no PlaceBid")

    # -- commands -----------------------------------------------------
    def phase_refusal(self, lot: Lot, phase: str) -> Reject | None:
        refused = self.refuse_bid(lot)
        if refused is not None and refused != Reject.wrong_mechanism:
            return refused
        return None if lot.phase == phase else Reject.phase_not_accepting

    def submit(
        self,
        lot: Lot,
        bidder_id: str,
        bidder: Bidder,
        commitment: str,
        seq: int,
        out: list[Event],
    ) -> None:
        prior = lot.sealed.get(bidder_id)
        version = prior.version + 1 if prior else 1
        lot.sealed[bidder_id] = SealedBid(commitment.lower(), version, seq)
        out.append(SealedBidReceived(lot.lot_id, bidder.code, version))

    def withdraw(self, lot: Lot, bidder_id: str, bidder: Bidder, out: list[Event]) -> None:
        del lot.sealed[bidder_id]
        out.append(SealedBidWithdrawn(lot.lot_id, bidder.code))

    def reveal(
        self,
        lot: Lot,
        bid: SealedBid,
        bidder: Bidder,
        amount_fen: int,
        nonce: str,
        out: list[Event],
    ) -> Reject | None:
        if bid.revealed or bid.invalid_reason:
            return Reject.already_revealed
        if seal_commitment(lot.lot_id, amount_fen, nonce) != bid.commitment:
            bid.invalid_reason = "reveal_mismatch"
            return Reject.reveal_mismatch
        bid.revealed, bid.amount_fen = True, amount_fen
        out.append(RevealRecorded(lot.lot_id, bidder.code))
        return None

    # -- opening ------------------------------------------------------
    def _open_and_evaluate(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        entries, valid = self._opening_entries(lot)
        average = _average([b.amount_fen for _, b in valid])
        method = lot.rules.evaluation
        out.append(OpeningRecord(lot.lot_id, tuple(entries), len(valid), average, method))
        lot.deadline_ns = -1
        if len(valid) < lot.rules.min_valid_bids or not valid:
            lot.status = UNSOLD
            if valid:
                out.append(LotUnsold(lot.lot_id, "too_few_valid_bids", at_ns, 0, lot.reserve_fen))
            else:
                out.append(LotUnsold(lot.lot_id, "no_bids", at_ns, 0, lot.reserve_fen))
            return
        bidder_id, bid = min(valid, key=lambda v: _rank(method, average, v[1]))
        code = lot.bidders[bidder_id].code
        lot.leader_id, lot.leader_code, lot.price_fen = bidder_id, code, bid.amount_fen
        lot.bid_count = len(valid)
        if method == "highest" and bid.amount_fen < lot.reserve_fen:
            lot.status = UNSOLD
            out.append(
                LotUnsold(lot.lot_id, "below_reserve", at_ns, bid.amount_fen, lot.reserve_fen)
            )
            return
        lot.status = SOLD
        out.append(LotSold(lot.lot_id, code, bid.amount_fen, at_ns, lot.reserve_fen))

    def _opening_entries(self, lot: Lot) -> tuple[list[OpeningEntry], list[tuple[str, SealedBid]]]:
        entries, valid = [], []
        for bidder_id, bid in lot.sealed.items():
            reason = bid.invalid_reason or ("" if bid.revealed else "not_revealed")
            if not reason:
                reason = _out_of_range(lot, bid.amount_fen)
            bid.invalid_reason = reason
            code = lot.bidders[bidder_id].code
            entries.append(OpeningEntry(code, bid.amount_fen, not reason, reason))
            if not reason:
                valid.append((bidder_id, bid))
        return entries, valid


def _out_of_range(lot: Lot, amount_fen: int) -> str:
    if amount_fen <= 0:
        return "below_start"
    if lot.rules.evaluation == "lowest":
        return "above_ceiling" if amount_fen > lot.start_price_fen else ""
    return "below_start" if amount_fen < lot.start_price_fen else ""


def _average(amounts: list[int]) -> int:
    """Mean rounded to the fen, half up (integer arithmetic, no floats)."""
    if not amounts:
        return 0
    n = len(amounts)
    return (2 * sum(amounts) + n) // (2 * n)


def _rank(method: str, average: int, bid: SealedBid) -> tuple[int, int, int]:
    """Smaller is better; the last element (submission order) breaks remaining ties."""
    if method == "highest":
        return (-bid.amount_fen, 0, bid.submitted_seq)
    if method == "lowest":
        return (bid.amount_fen, 0, bid.submitted_seq)
    below = 0 if bid.amount_fen <= average else 1  # R-D1: equal distance -> below wins
    return (abs(bid.amount_fen - average), below, bid.submitted_seq)
