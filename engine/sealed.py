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
from fractions import Fraction

from engine.ascending import Ascending
from engine.codes import Reject
from engine.draw import draw_key
from engine.messages import (
    DepositForfeited,
    EvaluationResult,
    Event,
    LotSold,
    LotUnsold,
    OpeningEntry,
    OpeningRecord,
    PhaseChanged,
    RevealRecorded,
    ScoreEntry,
    SealedBidReceived,
    SealedBidWithdrawn,
    UnsoldReason,
)
from engine.state import (
    DRAW,
    EVALUATION,
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
        elif lot.phase == REVEAL:
            self._open_and_evaluate(lot, at_ns, out)
        elif lot.phase == EVALUATION:
            self.evaluate_when_drawable(lot, at_ns, out)  # missing scores count as 0
        elif lot.phase == DRAW:
            self.evaluate(lot, at_ns, out)  # the seed never came: submission order
        else:
            self.on_later_deadline(lot, at_ns, out)

    def on_later_deadline(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        raise AssertionError(f"sealed lot in phase {lot.phase}")

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
        """The reveal window ended: publish the opening record, then evaluate
        (or wait for the committee's scores, or for the committed seed)."""
        entries, valid = self._opening_entries(lot)
        average = _average([b.amount_fen for _, b in valid])
        method = lot.rules.evaluation
        out.append(OpeningRecord(lot.lot_id, tuple(entries), len(valid), average, method))
        if lot.rules.forfeit_invalid_reveal and lot.deposit_fen:
            for bidder_id, bid in lot.sealed.items():
                if bid.invalid_reason in ("not_revealed", "reveal_mismatch"):
                    lot.bidders[bidder_id].deposit_settled = "forfeited"
                    code = lot.bidders[bidder_id].code
                    out.append(
                        DepositForfeited(lot.lot_id, code, lot.deposit_fen, bid.invalid_reason)
                    )
        lot.deadline_ns = -1
        if len(valid) < lot.rules.min_valid_bids or not valid:
            lot.status = UNSOLD
            reason: UnsoldReason = "too_few_valid_bids" if valid else "no_bids"
            out.append(LotUnsold(lot.lot_id, reason, at_ns, 0, lot.reserve_fen))
            return
        lot.bid_count = len(valid)
        if method == "scoring":
            lot.phase = EVALUATION
            lot.deadline_ns = lot.end_ns = at_ns + lot.rules.evaluation_window_ns
            out.append(PhaseChanged(lot.lot_id, EVALUATION, at_ns, lot.end_ns))
            return
        self.evaluate_when_drawable(lot, at_ns, out)

    def evaluate_when_drawable(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        """Evaluate now, unless a seed was committed and is not yet revealed:
        then wait for it (phase ``draw``) for one more reveal window."""
        if lot.draw_seed_hash and not lot.draw_seed and lot.phase != DRAW:
            lot.phase = DRAW
            lot.deadline_ns = lot.end_ns = at_ns + lot.rules.reveal_window_ns
            out.append(PhaseChanged(lot.lot_id, DRAW, at_ns, lot.end_ns))
            return
        self.evaluate(lot, at_ns, out)

    def tie_rule(self, lot: Lot) -> str:
        if lot.draw_seed:
            return "draw"
        return "draw_seed_not_revealed" if lot.draw_seed_hash else "submission_order"

    def tie_key(self, lot: Lot, bidder_id: str) -> bytes | int:
        """Equal candidates: the committed draw when revealed, else submission order."""
        if lot.draw_seed:
            return draw_key(lot.draw_seed, lot.lot_id, lot.bidders[bidder_id].code)
        return lot.sealed[bidder_id].submitted_seq

    def valid_bids(self, lot: Lot) -> list[tuple[str, SealedBid]]:
        return [(b_id, b) for b_id, b in lot.sealed.items() if b.revealed and not b.invalid_reason]

    def evaluate(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        lot.deadline_ns = -1
        valid = self.valid_bids(lot)
        method = lot.rules.evaluation
        if method == "scoring":
            order = self._score(lot, valid, out)
        else:
            average = _average([b.amount_fen for _, b in valid])
            order = sorted(
                valid, key=lambda v: (*_rank(method, average, v[1]), self.tie_key(lot, v[0]))
            )
        lot.award_order = [b_id for b_id, _ in order]
        bidder_id, bid = order[0]
        if method == "highest" and bid.amount_fen < lot.reserve_fen:
            lot.leader_id, lot.leader_code = bidder_id, lot.bidders[bidder_id].code
            lot.price_fen = bid.amount_fen
            lot.status = UNSOLD
            out.append(
                LotUnsold(lot.lot_id, "below_reserve", at_ns, bid.amount_fen, lot.reserve_fen)
            )
            return
        self.award(lot, bidder_id, at_ns, out)

    def award(self, lot: Lot, bidder_id: str, at_ns: int, out: list[Event]) -> None:
        code = lot.bidders[bidder_id].code
        lot.leader_id, lot.leader_code = bidder_id, code
        lot.price_fen = lot.sealed[bidder_id].amount_fen
        lot.status, lot.deadline_ns = SOLD, -1
        out.append(LotSold(lot.lot_id, code, lot.price_fen, at_ns, lot.reserve_fen))

    def pass_award(self, lot: Lot, voided_id: str, at_ns: int, out: list[Event]) -> str:
        """R-1.2.4: the award passes to the next valid rank; "" when none is left.
        A sale's secret reserve still applies (R-0.5): no rank below it wins."""
        order = lot.award_order
        rest = order[order.index(voided_id) + 1 :] if voided_id in order else []
        for bidder_id in rest:
            if lot.rules.evaluation == "highest" and (
                lot.sealed[bidder_id].amount_fen < lot.reserve_fen
            ):
                return ""  # ranked by amount: every later rank is below it too
            if bidder_id not in lot.barred:
                lot.settlement = ""
                self.award(lot, bidder_id, at_ns, out)
                return lot.bidders[bidder_id].code
        return ""

    def _score(
        self, lot: Lot, valid: list[tuple[str, SealedBid]], out: list[Event]
    ) -> list[tuple[str, SealedBid]]:
        """R-6.4.1: price points = lowest valid price / price x weight; plus the
        committee's mean non-price points; rank by total desc, price asc, draw."""
        lowest = min(b.amount_fen for _, b in valid)
        weight = lot.rules.price_weight_points
        # The mean over every member who scored on the lot: a member's missing
        # mark counts as 0 (not as absent, which would lift a bid one strict
        # member never got to).
        members = len({m for marks in lot.scores.values() for m in marks})
        totals: dict[str, tuple[Fraction, Fraction, Fraction]] = {}
        for bidder_id, bid in valid:
            price_pts = Fraction(lowest * weight, bid.amount_fen)
            marks = lot.scores.get(bidder_id, {})
            other = Fraction(sum(marks.values()), 100 * members) if members else Fraction(0)
            totals[bidder_id] = (price_pts, other, price_pts + other)
        order = sorted(
            valid,
            key=lambda v: (-totals[v[0]][2], v[1].amount_fen, self.tie_key(lot, v[0])),
        )
        entries = tuple(
            ScoreEntry(
                lot.bidders[b_id].code,
                bid.amount_fen,
                _milli(totals[b_id][0]),
                _milli(totals[b_id][1]),
                _milli(totals[b_id][2]),
                rank,
            )
            for rank, (b_id, bid) in enumerate(order, start=1)
        )
        out.append(EvaluationResult(lot.lot_id, entries, self.tie_rule(lot)))
        return order

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


def _milli(x: Fraction) -> int:
    """Thousandths, rounded half up (for publication; ranking uses the exact value)."""
    return (x.numerator * 2000 + x.denominator) // (2 * x.denominator)


def _out_of_range(lot: Lot, amount_fen: int) -> str:
    if amount_fen <= 0:
        return "below_start"
    if lot.rules.evaluation in ("lowest", "scoring", "vbp"):
        return "above_ceiling" if amount_fen > lot.start_price_fen else ""
    return "below_start" if amount_fen < lot.start_price_fen else ""


def _average(amounts: list[int]) -> int:
    """Mean rounded to the fen, half up (integer arithmetic, no floats)."""
    if not amounts:
        return 0
    n = len(amounts)
    return (2 * sum(amounts) + n) // (2 * n)


def _rank(method: str, average: int, bid: SealedBid) -> tuple[int, int]:
    """Smaller is better; the caller appends the tie key (draw or submission order)."""
    if method == "highest":
        return (-bid.amount_fen, 0)
    if method == "lowest":
        return (bid.amount_fen, 0)
    below = 0 if bid.amount_fen <= average else 1  # R-D1: equal distance -> below wins
    return (abs(bid.amount_fen - average), below)
