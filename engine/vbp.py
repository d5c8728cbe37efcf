"""Theory of operation: volume-based procurement (带量采购), RULES.md §4.

Pure functions over revealed, unit-comparable quotes; the ``Vbp`` mechanism
(engine/vbp_lot.py) drives them through the sealed phases.  Unit comparable
prices are the quotes' input (R-4.1.3: the normalisation formulas are each
round's own), in the lot's price unit -- for drugs 0.0001 yuan (1/100 fen),
so ¥0.10 is 1,000 units.  All arithmetic is on integers and Fractions.

Winner selection, as versioned rule sets (``RuleSet.vbp_round``):

* ``r2_9`` (rounds 2-9): a firm qualifies to win if ANY of: its price is at
  most 1.8 x the lowest (R-4.2.a); at most ``vbp_low_price_units`` (¥0.10,
  R-4.2.b); a cut of at least 50 % from the ceiling (R-4.2.c); optionally
  (round 7, ``vbp_exclude_highest``) the highest of those is dropped when
  more than one qualify.
* ``r10`` (round 10): the 50 % protection is gone.  Rule 1: at most 1.8 x the
  lowest, or at most the low-price threshold.  Rule 2 ("revival"): a valid
  firm that failed rule 1 wins if it accepts the highest rule-1 winning
  price -- or, when rule 1 produced a single winner, 1.8 x that price.
* ``r11`` (round 11): the anchor is max(50 % of the average valid price,
  the lowest); a bid above 1.8 x the anchor fails (the circuit breaker; the
  low-price threshold exempts).  Revival as in round 10.

Winners are capped by the maximum-winners table (``vbp_max_winners``: the
round 9 or round 10 row) for N qualified (valid) firms, in rank order (price
ascending; ties by the lot's tie rule -- submission order or a committed
draw, R-4.2.1).  Rule-1 winners rank before revival winners.

Volume (R-4.3.1 / R-4.3.2): the agreed share of reported demand by the
number of winners (50/60/70/80 %), applied to each region's demand and made
whole by the largest-remainder method so the regions' units sum exactly to
the agreed total; then regions are chosen in rank order, round-robin: the
top-ranked winner first, one region per turn, each taking the first free
region of its preference list (the lot's region order when it gave none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import NamedTuple

MAX_WINNERS: dict[str, tuple[int, ...]] = {
    # N qualified firms = index + 1; N >= 16 takes the last column.
    "r9": (1, 2, 2, 3, 4, 4, 5, 6, 7, 8, 9, 9, 10, 10, 10, 10),
    "r10": (1, 2, 2, 3, 3, 3, 4, 5, 6, 6, 7, 8, 8, 9, 9, 10),
}
RULE1_FACTOR = Fraction(9, 5)  # 1.8 x


class Quote(NamedTuple):
    code: str
    price: int  # unit comparable price, in the lot's price unit
    tie_key: bytes | int  # smaller wins an equal price (submission order or draw key)


class Pick(NamedTuple):
    code: str
    price: int  # the price it supplies at (a revival winner: the revival price)
    basis: str  # rule1 | low_price | cut50 | revival


def max_winners(table: str, qualified: int) -> int:
    row = MAX_WINNERS[table]
    if qualified <= 0:
        return 0
    return row[min(qualified, len(row)) - 1]


def ranked(quotes: Sequence[Quote]) -> list[Quote]:
    return sorted(quotes, key=lambda q: (q.price, q.tie_key))


def rule1(
    quotes: Sequence[Quote],
    *,
    rnd: str,
    ceiling: int,
    low_price_units: int,
    exclude_highest: bool = False,
) -> tuple[list[Pick], list[Quote]]:
    """The first selection of a round: (qualifying picks in rank order, the others)."""
    order = ranked(quotes)
    if not order:
        return [], []
    lowest = order[0].price
    if rnd == "r11":
        total, n = sum(q.price for q in order), len(order)
        anchor = max(Fraction(total, 2 * n), Fraction(lowest))
        limit = RULE1_FACTOR * anchor
    else:
        limit = RULE1_FACTOR * lowest
    picks: list[Pick] = []
    others: list[Quote] = []
    for q in order:
        basis = ""
        if q.price <= limit:
            basis = "rule1"
        elif q.price <= low_price_units:
            basis = "low_price"
        elif rnd == "r2_9" and 2 * q.price <= ceiling:
            basis = "cut50"
        if basis:
            picks.append(Pick(q.code, q.price, basis))
        else:
            others.append(q)
    top = max((p.price for p in picks), default=0)
    if rnd == "r2_9" and exclude_highest and top > picks[0].price:
        # Round 7: the highest of the qualifying bids may not win (unless all are equal).
        dropped = [p for p in picks if p.price == top]
        picks = [p for p in picks if p.price != top]
        by_code = {q.code: q for q in order}
        others = ranked([*others, *(by_code[p.code] for p in dropped)])
    return picks, others


def revival_price(picks: Sequence[Pick]) -> int:
    """R-4.2 rule 2: the highest rule-1 winning price; 1.8 x it (floored to the
    unit) when rule 1 produced a single winner; 0 when none qualified."""
    if not picks:
        return 0
    top = max(p.price for p in picks)
    if len(picks) == 1:
        return int(RULE1_FACTOR * top)
    return top


def select(
    picks: Sequence[Pick],
    revived: Sequence[Quote],
    price: int,
    *,
    qualified: int,
    table: str,
) -> list[Pick]:
    """Rule-1 picks first, then the revival acceptors (in their rank order),
    capped at the maximum-winners table for ``qualified`` valid firms."""
    cap = max_winners(table, qualified)
    chosen = list(picks) + [Pick(q.code, price, "revival") for q in ranked(revived)]
    return chosen[:cap]


def share_pct(winners: int, table: Sequence[int]) -> int:
    """R-4.3.1: share of reported demand by number of winners (1, 2, 3, >= 4)."""
    if winners <= 0:
        return 0
    return table[min(winners, len(table)) - 1]


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` integer units in proportion to ``weights``: floors first,
    then one more unit to the largest remainders (ties: the earlier index)."""
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("negative total or weight")
    weight_sum = sum(weights)
    if weight_sum == 0:
        if total:
            raise ValueError("cannot split units over zero weight")
        return [0] * len(weights)
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def agreed_units(demands: Sequence[int], pct: int) -> list[int]:
    """Each region's agreed units: ``pct`` % of the total demand (floored),
    split over the regions by largest remainder, so they sum exactly."""
    total = sum(demands) * pct // 100
    return largest_remainder(total, demands)


def assign_regions(
    regions: Sequence[str],
    winners: Sequence[str],
    preferences: Mapping[str, Sequence[str]],
) -> dict[str, str]:
    """R-4.3.2 region -> winner code: rank order, round-robin, one region per
    turn, each taking its first free preferred region (else the first free in
    the lot's order).  A single winner supplies everywhere."""
    free = list(regions)
    out: dict[str, str] = {}
    if not winners:
        return out
    turn = 0
    while free:
        code = winners[turn % len(winners)]
        wanted = [r for r in preferences.get(code, ()) if r in free]
        region = wanted[0] if wanted else free[0]
        free.remove(region)
        out[region] = code
        turn += 1
    return out
