"""Listing and listing + timed bidding (RULES.md §1.3, §1.4 variants A/B/C, §1.8)."""

from __future__ import annotations

from engine.codes import Reject
from engine.messages import (
    BidAccepted,
    IncrementChanged,
    LotExtended,
    LotFrozen,
    LotOpened,
    LotResumed,
    LotSold,
    LotUnsold,
    PhaseChanged,
)
from engine.rules import FUJIAN, JIANGSU, QINZHOU, RuleSet
from engine.state import FROZEN, LISTING, OPEN, QUOTE_FROZEN, SOLD, TIMED, UNSOLD, WAIT
from tests.engine.helpers import (
    END,
    HOUR,
    MIN,
    START,
    Market,
    S,
    none_of,
    of_type,
    one,
    reject_code,
)

A, B, C = "ID-alice-7f", "ID-bob-3c", "ID-carol-9a"
# Order No. 39 listing where nobody continues: never a timed phase.
PLAIN = RuleSet(name="plain", timed_trigger="quoters_in_last_window", last_window_ns=0)


def listing(rules: RuleSet, bidders: tuple[str, ...] = (A, B), **kw) -> Market:
    m = Market()
    m.create_listing("L1", rules=rules, **kw)
    for b in bidders:
        m.register("L1", b)
    m.tick(START)
    assert m.lot("L1").phase == LISTING
    return m


# ------------------------------------------------------------------ settlement
def test_R_1_3_4a_single_bidder_wins_at_close_at_or_above_reserve() -> None:
    m = listing(PLAIN, bidders=(A,))
    m.set_reserve("L1", 1200)
    m.bid("L1", A, 1200)
    sold = one(m.tick(END), LotSold)
    assert (sold.bidder_code, sold.price_fen, sold.closed_at_ns) == ("0001", 1200, END)
    m2 = listing(PLAIN, bidders=(A,))
    m2.set_reserve("L1", 1300)
    m2.bid("L1", A, 1200)
    assert one(m2.tick(END), LotUnsold).reason == "below_reserve"


def test_R_1_3_4b_equal_quote_refused_first_keeps_lead() -> None:
    m = listing(PLAIN)
    m.bid("L1", A, 1000)
    m.bid("L1", B, 1100)
    assert reject_code(m.bid("L1", A, 1100)) == Reject.bid_below_increment
    assert one(m.tick(END), LotSold).bidder_code == "0002"


def test_R_1_3_4b_highest_quote_wins() -> None:
    m = listing(PLAIN, bidders=(A, B, C))
    m.bid("L1", A, 1000)
    m.bid("L1", B, 1500)
    m.bid("L1", C, 1300)  # refused: not above the current price
    sold = one(m.tick(END), LotSold)
    assert (sold.bidder_code, sold.price_fen) == ("0002", 1500)


def test_R_1_3_4c_no_quotes_unsold() -> None:
    m = listing(PLAIN)
    assert one(m.tick(END), LotUnsold).reason == "no_bids"
    assert m.lot("L1").status == UNSOLD


def test_R_1_3_4c_all_below_reserve_unsold() -> None:
    m = listing(PLAIN)
    m.set_reserve("L1", 5001)
    m.bid("L1", A, 1000)
    m.bid("L1", B, 2000)
    u = one(m.tick(END), LotUnsold)
    assert (u.reason, u.price_fen, u.reserve_fen) == ("below_reserve", 2000, 5001)


def test_R_1_3_5_increment_change_during_listing() -> None:
    m = listing(PLAIN)
    m.bid("L1", A, 1000)
    inc = one(m.change_increment("L1", 300), IncrementChanged)
    assert (inc.increment_fen, inc.phase) == (300, "main")
    assert reject_code(m.bid("L1", B, 1100)) == Reject.bid_below_increment
    assert reject_code(m.bid("L1", B, 1400)) == Reject.bid_not_increment_multiple
    assert reject_code(m.bid("L1", B, 1300)) is None
    assert reject_code(m.bid("L1", A, 1500)) == Reject.bid_below_increment


# ------------------------------------------------------------------ Variant A (Jiangsu)
def test_R_A1_first_quote_at_least_start_integer_multiples() -> None:
    m = listing(JIANGSU)
    assert reject_code(m.bid("L1", A, 900)) == Reject.bid_below_start
    assert reject_code(m.bid("L1", A, 1010)) == Reject.bid_not_increment_multiple
    assert reject_code(m.bid("L1", A, 1000)) is None
    assert reject_code(m.bid("L1", B, 1250)) == Reject.bid_not_increment_multiple


def test_R_A2_quotes_frozen_in_last_hour() -> None:
    m = listing(JIANGSU)
    m.bid("L1", A, 1000, at=END - HOUR - 1)
    out = m.bid("L1", B, 1100, at=END - HOUR)
    ph = one(out, PhaseChanged)
    assert (ph.phase, ph.at_ns, ph.end_ns) == (QUOTE_FROZEN, END - HOUR, END)
    assert reject_code(out) == Reject.quotes_frozen
    assert reject_code(m.bid("L1", B, 1100, at=END - 1)) == Reject.quotes_frozen
    assert m.lot("L1").price_fen == 1000


def test_R_A3_two_eligible_bidders_enter_timed_phase() -> None:
    m = listing(JIANGSU, bidders=(A, B))  # B never quotes but is eligible (R-A2 FAQ 13)
    m.bid("L1", A, 1000)
    phases = [(p.phase, p.at_ns, p.end_ns) for p in of_type(m.tick(END), PhaseChanged)]
    assert phases == [(QUOTE_FROZEN, END - HOUR, END), (TIMED, END, END + 4 * MIN)]
    assert m.lot("L1").status == OPEN


def test_R_A3_fewer_than_two_eligible_settles_at_once() -> None:
    m = Market()
    m.create_listing("L1", rules=JIANGSU, deposit=100)
    m.register("L1", A)
    m.register("L1", B, deposit=False)  # registered, deposit not confirmed: not eligible
    m.register("L1", C)
    m.blacklist(C)  # blacklisted: not eligible
    m.bid("L1", A, 1000, at=START)
    out = m.tick(END)
    assert [p.phase for p in of_type(out, PhaseChanged)] == [QUOTE_FROZEN]
    assert one(out, LotSold).closed_at_ns == END


def test_R_A3_no_quote_and_one_bidder_unsold() -> None:
    m = listing(JIANGSU, bidders=(A,))
    assert one(m.tick(END), LotUnsold).reason == "no_bids"


def test_R_A4_countdown_240s_restarted_by_every_bid() -> None:
    m = listing(JIANGSU)
    m.bid("L1", A, 1000)
    m.tick(END)
    # the timed phase starts from the current highest quote: the first bid must beat it
    assert reject_code(m.bid("L1", B, 1000, at=END + 10 * S)) == Reject.bid_below_increment
    t1 = END + 200 * S
    assert one(m.bid("L1", B, 1100, at=t1), LotExtended).end_ns == t1 + 240 * S
    t2 = t1 + 239 * S
    assert one(m.bid("L1", A, 1200, at=t2), LotExtended).end_ns == t2 + 240 * S
    assert m.tick(t2 + 240 * S - 1) == []
    sold = one(m.tick(t2 + 240 * S), LotSold)
    assert (sold.bidder_code, sold.price_fen, sold.closed_at_ns) == ("0001", 1200, t2 + 240 * S)


def test_R_A5_no_bid_in_timed_listing_leader_wins() -> None:
    m = listing(JIANGSU)
    m.bid("L1", A, 1000)
    m.bid("L1", B, 1300)
    m.tick(END)
    sold = one(m.tick(END + 4 * MIN), LotSold)
    assert (sold.bidder_code, sold.price_fen, sold.closed_at_ns) == ("0002", 1300, END + 4 * MIN)


def test_R_A5_reserve_applies_after_timed_phase() -> None:
    m = listing(JIANGSU)
    m.bid("L1", A, 1000, at=START + MIN)
    m.set_reserve("L1", 1501, at=END - 30 * MIN)  # Jiangsu cut-off: 30 min before close
    m.tick(END)
    m.bid("L1", B, 1500, at=END + MIN)
    assert one(m.tick(END + 5 * MIN), LotUnsold).reason == "below_reserve"


def test_R_0_5_jiangsu_reserve_cutoff_30_min() -> None:
    m = listing(JIANGSU)
    assert reject_code(m.set_reserve("L1", 2000, at=END - 30 * MIN + 1)) == (
        Reject.reserve_cutoff_passed
    )


# ------------------------------------------------------------------ Variant B (Fujian)
def test_R_B1_min_step_any_amount() -> None:
    m = listing(FUJIAN)
    assert reject_code(m.bid("L1", A, 1001)) is None
    assert reject_code(m.bid("L1", B, 1100)) == Reject.bid_below_increment
    assert reject_code(m.bid("L1", B, 1137)) is None


def test_R_B2a_only_one_bidder_quoted_wins() -> None:
    m = listing(FUJIAN, bidders=(A, B, C))  # three eligible, one quoter
    m.bid("L1", A, 1000, at=END - 10 * MIN)
    out = m.tick(END)
    none_of(out, PhaseChanged)
    assert one(out, LotSold).bidder_code == "0001"


def test_R_B2b_two_bidders_only_one_in_last_hour_leader_wins() -> None:
    m = listing(FUJIAN)
    m.bid("L1", A, 1000, at=END - 3 * HOUR)
    m.bid("L1", B, 1100, at=END - HOUR - 1)
    m.bid("L1", A, 1300, at=END - 30 * MIN)
    out = m.tick(END)
    none_of(out, PhaseChanged)
    sold = one(out, LotSold)
    assert (sold.bidder_code, sold.price_fen) == ("0001", 1300)


def test_R_B2c_two_in_last_hour_online_auction() -> None:
    m = listing(FUJIAN)
    m.bid("L1", A, 1000, at=END - HOUR)  # exactly at the window's start counts
    m.bid("L1", B, 1100, at=END - 1)  # listing quotes allowed until the close
    ph = one(m.tick(END), PhaseChanged)
    assert (ph.phase, ph.at_ns, ph.end_ns) == (WAIT, END, END + 20 * MIN)


def fujian_in_wait(timed_increment: int = 500) -> Market:
    m = listing(FUJIAN, bidders=(A, B, C), timed_increment=timed_increment)
    m.bid("L1", A, 1000, at=END - 30 * MIN)
    m.bid("L1", B, 1100, at=END - 20 * MIN)
    m.tick(END)
    assert m.lot("L1").phase == WAIT
    return m


def test_R_B3_wait_then_five_minute_countdown_timed_increment() -> None:
    m = fujian_in_wait()
    assert reject_code(m.bid("L1", C, 1600, at=END + 14 * MIN)) == Reject.phase_not_accepting
    ph = one(m.tick(END + 15 * MIN), PhaseChanged)
    assert (ph.phase, ph.at_ns, ph.end_ns) == (TIMED, END + 15 * MIN, END + 20 * MIN)
    # opening call = listing high + one auction-phase increment; C never quoted (R-B3)
    assert reject_code(m.bid("L1", C, 1599, at=END + 16 * MIN)) == Reject.bid_below_increment
    t = END + 17 * MIN
    assert one(m.bid("L1", C, 1600, at=t), LotExtended).end_ns == t + 5 * MIN
    assert reject_code(m.bid("L1", A, 2101)) is None  # min step: any amount above
    sold = one(m.tick(m.now + 5 * MIN), LotSold)
    assert (sold.bidder_code, sold.price_fen) == ("0001", 2101)


def test_R_B3_timed_increment_changed_by_staff() -> None:
    m = fujian_in_wait(timed_increment=0)
    one(m.change_increment("L1", 700, phase="timed"), IncrementChanged)
    m.tick(END + 15 * MIN)
    assert reject_code(m.bid("L1", A, 1799)) == Reject.bid_below_increment
    assert reject_code(m.bid("L1", A, 1800)) is None


def test_R_B4_no_bid_in_countdown_listing_leader_wins() -> None:
    m = fujian_in_wait()
    m.tick(END + 15 * MIN)
    sold = one(m.tick(END + 20 * MIN), LotSold)
    assert (sold.bidder_code, sold.price_fen, sold.closed_at_ns) == ("0002", 1100, END + 20 * MIN)


def test_R_B4_reserve_applies_in_both_phases() -> None:
    m = listing(FUJIAN)
    m.set_reserve("L1", 3000, at=START + MIN)
    m.bid("L1", A, 1000, at=END - 30 * MIN)
    m.bid("L1", B, 1100, at=END - 20 * MIN)
    m.tick(END + 15 * MIN)
    m.bid("L1", A, 2000)
    assert one(m.tick(m.now + 5 * MIN), LotUnsold).reason == "below_reserve"


def test_R_1_8_3_fujian_listing_freeze_moves_close_back() -> None:
    m = listing(FUJIAN)
    t = END - 5 * HOUR
    fr = one(m.freeze("L1", at=t), LotFrozen)
    assert fr.remaining_ns == 5 * HOUR
    res = one(m.resume("L1", at=t + 30 * HOUR), LotResumed)
    assert (res.phase, res.end_ns) == (LISTING, END + 30 * HOUR)  # newEnd >= oldEnd + frozen


def test_R_1_8_5_fujian_no_staff_freeze_in_last_hour_of_listing() -> None:
    m = listing(FUJIAN)
    assert reject_code(m.freeze("L1", at=END - HOUR + 1)) == Reject.freeze_too_close_to_end
    assert reject_code(m.terminate("L1")) == Reject.terminate_too_close_to_end


def test_R_1_8_3_fujian_staff_freeze_in_wait_phase_restarts_it() -> None:
    """The guard protects the listing close; a countdown phase may be frozen
    (R-1.8.3: a freeze in the preparation or auction phase restarts the wait)."""
    m = fujian_in_wait()
    fr = one(m.freeze("L1", at=END + 5 * MIN), LotFrozen)
    assert fr.system is False
    res = one(m.resume("L1", at=END + 2 * HOUR), LotResumed)
    assert res.phase == WAIT
    assert res.end_ns == END + 2 * HOUR + 15 * MIN + 5 * MIN


def test_R_1_8_3_fujian_freeze_in_timed_phase_restarts_wait() -> None:
    m = fujian_in_wait()
    m.tick(END + 15 * MIN)
    m.bid("L1", C, 1600, at=END + 16 * MIN)
    last_seen = END + 18 * MIN
    m.tick(last_seen)
    # outage past the countdown's end: the system suspends the lot
    fr = one(m.suspend_overdue(at=END + 3 * HOUR), LotFrozen)
    assert (fr.system, fr.at_ns) == (True, last_seen)
    back = END + 4 * HOUR
    res = one(m.resume("L1", at=back), LotResumed)
    assert (res.phase, res.end_ns) == (WAIT, back + 20 * MIN)
    assert reject_code(m.bid("L1", A, 2200, at=back + MIN)) == Reject.phase_not_accepting
    one(m.tick(back + 15 * MIN), PhaseChanged)
    sold = one(m.tick(back + 20 * MIN), LotSold)
    assert (sold.bidder_code, sold.price_fen) == ("0003", 1600)


def test_R_1_8_3_keep_remaining_policy_in_timed_phase() -> None:
    m = listing(JIANGSU)
    m.bid("L1", A, 1000)
    m.tick(END)
    m.freeze("L1", at=END + MIN)  # Jiangsu: no guard
    res = one(m.resume("L1", at=END + HOUR), LotResumed)
    assert (res.phase, res.end_ns) == (TIMED, END + HOUR + 3 * MIN)


def test_R_B2c_last_hour_quoters_survive_an_outage() -> None:
    m = listing(FUJIAN)
    m.bid("L1", A, 1000, at=END - 30 * MIN)
    m.bid("L1", B, 1200, at=END - 20 * MIN)
    m.tick(END - 10 * MIN)
    m.suspend_overdue(at=END + 2 * HOUR)
    m.resume("L1", at=END + 3 * HOUR)
    out = m.tick(END + 3 * HOUR + 10 * MIN)
    none_of(out, LotSold)
    assert one(out, PhaseChanged).phase == WAIT


# ------------------------------------------------------------------ Variant C (Qinzhou)
def test_variant_C_always_timed_even_with_one_bidder() -> None:
    m = listing(QINZHOU, bidders=(A,))
    m.bid("L1", A, 1000)
    ph = one(m.tick(END), PhaseChanged)
    assert (ph.phase, ph.end_ns) == (TIMED, END + 5 * MIN)
    sold = one(m.tick(END + 5 * MIN), LotSold)  # no timed bid: the free-phase leader wins
    assert (sold.bidder_code, sold.closed_at_ns) == ("0001", END + 5 * MIN)


def test_variant_C_bids_extend_by_five_minutes() -> None:
    m = listing(QINZHOU)
    m.tick(END)
    t = END + 4 * MIN
    assert one(m.bid("L1", B, 1000, at=t), LotExtended).end_ns == t + 5 * MIN  # first bid: start
    assert m.tick(t + 5 * MIN - 1) == []
    assert one(m.tick(t + 5 * MIN), LotSold).bidder_code == "0002"


def test_variant_C_no_bids_at_all_unsold() -> None:
    m = listing(QINZHOU, bidders=())
    m.tick(END)
    u = one(m.tick(END + 5 * MIN), LotUnsold)
    assert (u.reason, u.closed_at_ns) == ("no_bids", END + 5 * MIN)


# ------------------------------------------------------------------ misc
def test_listing_bids_before_start_and_after_close() -> None:
    m = Market()
    m.create_listing("L1", rules=PLAIN)
    m.register("L1", A)
    assert reject_code(m.bid("L1", A, 1000, at=START - 1)) == Reject.lot_not_open
    out = m.bid("L1", A, 1000, at=START)
    one(out, LotOpened)
    one(out, BidAccepted)
    out = m.bid("L1", A, 1100, at=END)
    assert reject_code(out) == Reject.lot_closed
    assert m.lot("L1").status == SOLD


def test_listing_quote_freeze_longer_than_listing_refused() -> None:
    m = Market()
    out = m.create_listing("L1", rules=JIANGSU, end=START + HOUR, publish=False)
    assert reject_code(out) == Reject.invalid_terms


def test_listing_freeze_in_quote_frozen_phase_keeps_phase() -> None:
    m = listing(JIANGSU)
    m.tick(END - 30 * MIN)
    m.freeze("L1")
    assert m.lot("L1").status == FROZEN
    res = one(m.resume("L1", at=END + HOUR), LotResumed)
    assert res.phase == QUOTE_FROZEN
    assert len(of_type(m.events, PhaseChanged)) == 1


def test_late_publish_listing_phase_times_monotonic() -> None:
    m = Market()
    m.create_listing("L1", rules=JIANGSU, publish=False)
    opened = one(m.publish("L1", at=END - 30 * MIN), LotOpened)
    assert opened.phase == QUOTE_FROZEN  # opened late: straight into the quote freeze (R-A2)
    none_of(m.tick(END - 29 * MIN), PhaseChanged)
    closed = one(m.tick(END + 1), LotUnsold)  # nobody registered
    assert closed.closed_at_ns >= opened.at_ns
