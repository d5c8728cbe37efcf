"""Theory of operation: the volume-based procurement lot (RULES.md §4).

A ``vbp`` lot is a sealed lot (engine/sealed.py: commit, reveal, opening
record) whose quotes are unit comparable prices at or below the ceiling (the
highest valid bid price, ``start_price_fen`` in the lot's price unit).  After
the opening, in phases:

* rule 1 (engine/vbp.py) names the first winners; in rounds 10 and 11 the
  valid firms that failed it are offered the revival price (``revival``
  phase, ``rules.revival_window_ns``) and win if they accept (AcceptRevival);
* the winners, capped by the maximum-winners table, are published
  (VbpAwarded); with several winners they state region preferences
  (``regions`` phase, ``rules.region_window_ns``, ChooseRegions);
* then the agreed volume is allocated (VolumeAllocated) and the lot is sold
  to the rank-1 winner at its price (LotSold); every winner's units are in
  the allocation.
"""

from __future__ import annotations

from engine import vbp
from engine.messages import (
    Event,
    LotSold,
    LotUnsold,
    PhaseChanged,
    RegionAward,
    RevivalOffered,
    VbpAwarded,
    VbpWinner,
    VolumeAllocated,
)
from engine.sealed import Sealed
from engine.state import REGIONS, REVIVAL, SOLD, UNSOLD, Lot, Winner


class Vbp(Sealed):
    name = "vbp"

    def quotes(self, lot: Lot, bidder_ids: list[str] | None = None) -> list[vbp.Quote]:
        valid = dict(self.valid_bids(lot))
        ids = bidder_ids if bidder_ids is not None else list(valid)
        return [
            vbp.Quote(lot.bidders[b].code, valid[b].amount_fen, self.tie_key(lot, b))
            for b in ids
            if b in valid
        ]

    def _by_code(self, lot: Lot) -> dict[str, str]:
        return {b.code: b_id for b_id, b in lot.bidders.items()}

    def evaluate(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        rules = lot.rules
        picks, others = vbp.rule1(
            self.quotes(lot),
            rnd=rules.vbp_round,
            ceiling=lot.start_price_fen,
            low_price_units=rules.vbp_low_price_units,
            exclude_highest=rules.vbp_exclude_highest,
        )
        by_code = self._by_code(lot)
        lot.winners = [Winner(by_code[p.code], p.code, p.price, p.basis) for p in picks]
        price = vbp.revival_price(picks)
        room = len(picks) < vbp.max_winners(rules.vbp_max_winners, len(self.valid_bids(lot)))
        if rules.vbp_round != "r2_9" and others and price and room:
            lot.revival_price = price
            lot.revival_candidates = [by_code[q.code] for q in others]
            lot.phase = REVIVAL
            lot.deadline_ns = lot.end_ns = at_ns + rules.revival_window_ns
            codes = tuple(q.code for q in others)
            out.append(RevivalOffered(lot.lot_id, price, codes, lot.end_ns))
            out.append(PhaseChanged(lot.lot_id, REVIVAL, at_ns, lot.end_ns))
            return
        self._award_winners(lot, at_ns, out)

    def on_later_deadline(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        if lot.phase == REVIVAL:
            self._award_winners(lot, at_ns, out)
        elif lot.phase == REGIONS:
            self._allocate(lot, at_ns, out)
        else:
            raise AssertionError(f"vbp lot in phase {lot.phase}")

    def _award_winners(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        """Rule-1 winners, then revival acceptors, capped by the table (R-4.2)."""
        rules = lot.rules
        picks = [vbp.Pick(w.code, w.price, w.basis) for w in lot.winners]
        qualified = len(self.valid_bids(lot))
        chosen = vbp.select(
            picks,
            self.quotes(lot, lot.revived),
            lot.revival_price,
            qualified=qualified,
            table=rules.vbp_max_winners,
        )
        lot.deadline_ns = -1
        if not chosen:
            lot.status = UNSOLD
            out.append(LotUnsold(lot.lot_id, "no_winner", at_ns, 0, 0))
            return
        by_code = self._by_code(lot)
        lot.winners = [Winner(by_code[p.code], p.code, p.price, p.basis) for p in chosen]
        pct = vbp.share_pct(len(chosen), rules.vbp_share_pct)
        several = len(chosen) > 1 and len(lot.regions) > 1
        until = at_ns + rules.region_window_ns if several else -1
        winners = tuple(
            VbpWinner(p.code, p.price, p.basis, rank) for rank, p in enumerate(chosen, start=1)
        )
        out.append(
            VbpAwarded(
                lot.lot_id,
                winners,
                qualified,
                vbp.max_winners(rules.vbp_max_winners, qualified),
                pct,
                until,
            )
        )
        if several:
            lot.phase = REGIONS
            lot.deadline_ns = lot.end_ns = until
            out.append(PhaseChanged(lot.lot_id, REGIONS, at_ns, until))
            return
        self._allocate(lot, at_ns, out)

    def _allocate(self, lot: Lot, at_ns: int, out: list[Event]) -> None:
        """R-4.3.1 / R-4.3.2: agreed units per region, regions round-robin."""
        winners = lot.winners
        pct = vbp.share_pct(len(winners), lot.rules.vbp_share_pct)
        names = list(lot.regions)
        units = vbp.agreed_units([lot.regions[r] for r in names], pct)
        prefs = {w.code: lot.region_prefs.get(w.bidder_id, []) for w in winners}
        owner = vbp.assign_regions(names, [w.code for w in winners], prefs)
        per_code = {w.code: w for w in winners}
        awards = []
        for name, n_units in zip(names, units, strict=True):
            code = owner[name]
            per_code[code].units += n_units
            awards.append(RegionAward(name, code, n_units))
        out.append(VolumeAllocated(lot.lot_id, sum(units), tuple(awards)))
        first = winners[0]
        lot.leader_id, lot.leader_code, lot.price_fen = first.bidder_id, first.code, first.price
        lot.award_order = [w.bidder_id for w in winners]
        lot.status, lot.deadline_ns = SOLD, -1
        out.append(LotSold(lot.lot_id, first.code, first.price, at_ns, 0))

    def accept_revival(self, lot: Lot, bidder_id: str) -> None:
        lot.revived.append(bidder_id)

    def choose_regions(self, lot: Lot, bidder_id: str, regions: list[str]) -> None:
        lot.region_prefs[bidder_id] = regions
