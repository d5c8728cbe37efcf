"""Rule sets: the regional and platform variants as data, not code.

Every lot carries the complete RuleSet it was created with (it is part of the
CreateLot command, so the ledger records the exact rule version each trade
used -- RULES.md, "store the rule-set version with each trade").  The
mechanisms read only these parameters; a new region is a new preset.

Durations are integer nanoseconds; money is integer fen.
"""

from __future__ import annotations

from typing import Literal

import msgspec

NS_PER_S = 1_000_000_000
MINUTE_NS = 60 * NS_PER_S
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
# The engine adds times and durations (a close, plus a wait, plus a countdown,
# plus a window ...): kept within these, no sum of them can pass what the ledger
# stores (63 bits).  2**62 ns is the year 2116; ten years is longer than any
# window a trading rule names (RULES.md: 60-day sale windows at most).
MAX_TIME_NS = 2**62
MAX_DURATION_NS = 3653 * DAY_NS
MAX_UNITS = 10**12  # VBP demand units of one region
MIN_TICK_NS = NS_PER_S  # a Dutch price is offered at least a second (R-2.5: typically 30 s+)

IncrementMode = Literal["multiple", "min_step"]  # R-0.6 (a) / (b)
TimedTrigger = Literal["eligible_bidders", "quoters_in_last_window", "always"]
ResumePolicy = Literal["keep_remaining", "restart_phase"]


class RuleSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Parameters of one rule variant.  Defaults are the judicial English rules."""

    name: str = "judicial"
    version: int = 1
    increment_mode: IncrementMode = "multiple"
    first_bid_exact_start: bool = False  # some platforms require bid 1 == start
    leader_may_outbid_self: bool = True  # R-0.7 (False on many judicial platforms)
    extension_window_ns: int = 5 * MINUTE_NS  # anti-sniping W (R-2.4.5: 3 min)
    reserve_cutoff_ns: int = HOUR_NS  # reserve entered no later than this before close
    increment_change_allowed: bool = True
    freeze_guard_ns: int = 0  # no freeze/terminate within this of the close
    resume_policy: ResumePolicy = "keep_remaining"
    # Listing with timed bidding; ignored by the English mechanism.
    quote_freeze_ns: int = 0  # R-A2: quotes refused in the last hour of listing (Jiangsu)
    timed_trigger: TimedTrigger = "eligible_bidders"  # R-A3 / R-B2 / Variant C
    last_window_ns: int = HOUR_NS  # R-B2: "two or more bidders in the last hour"
    wait_ns: int = 0  # R-B3: 15-minute preparation before the countdown (Fujian)
    countdown_ns: int = 4 * MINUTE_NS  # R-A4 (240 s) / R-B3 and C (300 s)
    # Dutch clock; ignored by the other mechanisms.
    tick_ns: int = 0  # TICK: how long each price is offered
    dutch_tie_rule: Literal["earliest"] = "earliest"  # R-2.5.4 (play-off: later work)
    # Sealed tender / one-time quote (R-2.3, R-6, R-D1); ignored by the others.
    evaluation: Literal["highest", "lowest", "closest_to_average", "scoring", "vbp"] = "highest"
    reveal_window_ns: int = 30 * MINUTE_NS  # typically 30-60 min
    min_valid_bids: int = 1  # 3 for government tenders
    # Reverse price competition; ignored by the others.
    confirm_window_ns: int = 72 * HOUR_NS  # the winner confirms within 72 h
    reverse_winners: int = 1  # tradedSupplierCount (1 = the single-award path)
    reverse_shares: tuple[tuple[int, ...], ...] = (  # by number of winners
        (100,),
        (70, 30),
        (50, 30, 20),
        (40, 30, 20, 10),
        (30, 25, 20, 15, 10),
        (25, 21, 19, 15, 12, 8),
    )
    sme_deduction_pct: int = 0  # small/micro firms rank at quote x (1 - d %)
    # Comprehensive scoring: price points = lowest / price x weight.
    price_weight_points: int = 30  # goods >= 30, services >= 10
    evaluation_window_ns: int = 24 * HOUR_NS  # the committee scores within it
    # Volume-based procurement; prices in the lot's unit (VBP: 0.0001 yuan).
    vbp_round: Literal["r2_9", "r10", "r11"] = "r10"
    vbp_max_winners: Literal["r9", "r10"] = "r10"
    vbp_low_price_units: int = 1_000  # ¥0.10 at 0.0001 yuan per unit
    vbp_exclude_highest: bool = False  # round 7: the highest qualifying bid may not win
    vbp_share_pct: tuple[int, ...] = (50, 60, 70, 80)  # by winners 1, 2, 3, >= 4
    revival_window_ns: int = 2 * HOUR_NS
    region_window_ns: int = 2 * HOUR_NS
    # After the hammer; 0 = not tracked by the engine.
    post_qualification: bool = False  # winner -> pending qualification -> confirmed / void
    qualification_window_ns: int = 5 * 24 * HOUR_NS
    payment_window_ns: int = 0  # the balance is due within it (0 = not tracked)
    forfeit_invalid_reveal: bool = False  # a reveal missing or not matching forfeits
    reauction_max_cut_pct: int = 20  # the second auction's start >= 80 % of the first's
    sale_window_ns: int = 60 * 24 * HOUR_NS  # 变卖: 60 days
    sale_bidding_ns: int = 24 * HOUR_NS  # the first bid in the sale window starts 24 h


JUDICIAL = RuleSet()
EXCHANGE = RuleSet(
    name="exchange",
    extension_window_ns=3 * MINUTE_NS,
    leader_may_outbid_self=False,
)
JIANGSU = RuleSet(
    name="jiangsu",
    increment_mode="multiple",
    quote_freeze_ns=HOUR_NS,
    timed_trigger="eligible_bidders",
    countdown_ns=4 * MINUTE_NS,
    reserve_cutoff_ns=30 * MINUTE_NS,
)
FUJIAN = RuleSet(
    name="fujian",
    increment_mode="min_step",
    timed_trigger="quoters_in_last_window",
    last_window_ns=HOUR_NS,
    wait_ns=15 * MINUTE_NS,
    countdown_ns=5 * MINUTE_NS,
    freeze_guard_ns=HOUR_NS,
    resume_policy="restart_phase",
)
QINZHOU = RuleSet(
    name="qinzhou",
    increment_mode="multiple",
    timed_trigger="always",
    countdown_ns=5 * MINUTE_NS,
)

DUTCH = RuleSet(name="dutch", tick_ns=30 * NS_PER_S, extension_window_ns=0)
ONE_TIME_QUOTE = RuleSet(name="one-time-quote", evaluation="highest", min_valid_bids=1)
TENDER_LOWEST = RuleSet(name="tender-lowest", evaluation="lowest", min_valid_bids=3)
SUZHOU_ONE_PRICE = RuleSet(name="suzhou-one-price", evaluation="closest_to_average")
REVERSE = RuleSet(name="reverse", min_valid_bids=3, extension_window_ns=0)  # >= 3
TENDER_SCORING = RuleSet(name="tender-scoring", evaluation="scoring", min_valid_bids=3)
VBP_R9 = RuleSet(name="vbp-r9", evaluation="vbp", vbp_round="r2_9", vbp_max_winners="r9")
VBP_R10 = RuleSet(name="vbp-r10", evaluation="vbp", vbp_round="r10", vbp_max_winners="r10")
VBP_R11 = RuleSet(name="vbp-r11", evaluation="vbp", vbp_round="r11", vbp_max_winners="r10")
REVERSE_MULTI = RuleSet(
    name="reverse-multi", min_valid_bids=3, extension_window_ns=0, reverse_winners=3
)
JUDICIAL_SETTLED = RuleSet(name="judicial-settled", payment_window_ns=30 * 24 * HOUR_NS)

PRESETS: dict[str, RuleSet] = {
    r.name: r
    for r in (
        JUDICIAL,
        EXCHANGE,
        JIANGSU,
        FUJIAN,
        QINZHOU,
        DUTCH,
        ONE_TIME_QUOTE,
        TENDER_LOWEST,
        SUZHOU_ONE_PRICE,
        REVERSE,
        TENDER_SCORING,
        VBP_R9,
        VBP_R10,
        VBP_R11,
        JUDICIAL_SETTLED,
        REVERSE_MULTI,
    )
}


def validate(rules: RuleSet) -> str:
    """Return "" when the rule set is usable, else what is wrong with it."""
    too_long = [
        name
        for name in rules.__struct_fields__
        if name.endswith("_ns") and getattr(rules, name) > MAX_DURATION_NS
    ]
    if too_long:
        return f"{too_long[0]} is longer than ten years"
    counts = (rules.version, rules.min_valid_bids, rules.reverse_winners, rules.vbp_low_price_units)
    if any(c > MAX_UNITS for c in counts):
        return "version, min_valid_bids, reverse_winners, vbp_low_price_units are at most 10^12"
    durations = (
        rules.extension_window_ns,
        rules.reserve_cutoff_ns,
        rules.freeze_guard_ns,
        rules.quote_freeze_ns,
        rules.last_window_ns,
        rules.wait_ns,
    )
    if any(d < 0 for d in durations):
        return "durations must not be negative"
    if rules.countdown_ns <= 0:
        return "countdown_ns must be positive"
    if rules.tick_ns < 0:
        return "tick_ns must not be negative"
    if rules.confirm_window_ns <= 0:
        return "confirm_window_ns must be positive"
    if rules.reveal_window_ns <= 0 or rules.min_valid_bids < 1:
        return "reveal_window_ns must be positive and min_valid_bids at least 1"
    windows = (
        rules.evaluation_window_ns,
        rules.revival_window_ns,
        rules.region_window_ns,
        rules.qualification_window_ns,
        rules.sale_window_ns,
        rules.sale_bidding_ns,
    )
    if any(w <= 0 for w in windows) or rules.payment_window_ns < 0:
        return "evaluation, revival, region, qualification and sale windows must be positive"
    if not 1 <= rules.reverse_winners <= len(rules.reverse_shares):
        return "reverse_winners must index reverse_shares"
    if any(sum(row) != 100 or len(row) != n for n, row in enumerate(rules.reverse_shares, 1)):
        return "each reverse_shares row n has n shares summing to 100"
    if not 0 <= rules.sme_deduction_pct < 100:
        return "sme_deduction_pct must be 0-99"
    if not 0 <= rules.price_weight_points <= 100:
        return "price_weight_points must be 0-100"
    if not 0 <= rules.reauction_max_cut_pct < 100:
        return "reauction_max_cut_pct must be 0-99"
    if len(rules.vbp_share_pct) < 1 or any(not 0 < p <= 100 for p in rules.vbp_share_pct):
        return "vbp_share_pct entries must be 1-100"
    if rules.vbp_low_price_units < 0:
        return "vbp_low_price_units must not be negative"
    return ""
