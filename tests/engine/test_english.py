"""English auction rules (RULES.md §0, §2.2, §2.4, §5.2): one test per rule."""

from __future__ import annotations

import msgspec
import pytest

from engine.codes import Reject
from engine.messages import (
    BidAccepted,
    BidderRegistered,
    IncrementChanged,
    LotExtended,
    LotFrozen,
    LotOpened,
    LotResumed,
    LotSold,
    LotTerminated,
    LotUnsold,
    ReserveEntered,
)
from engine.rules import EXCHANGE, JUDICIAL, RuleSet
from engine.state import FROZEN, OPEN, SOLD, TERMINATED, UNSOLD
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
    rejected,
)

ALICE, BOB, CAROL = "ID-alice-7f", "ID-bob-3c", "ID-carol-9a"


def open_market(rules: RuleSet = JUDICIAL, bidders: tuple[str, ...] = (ALICE, BOB), **kw) -> Market:
    m = Market()
    m.create_english("L1", rules=rules, **kw)
    for b in bidders:
        m.register("L1", b)
    m.tick(START)
    return m


# ------------------------------------------------------------------ increments
def test_R_0_6a_increment_integer_multiple() -> None:
    m = open_market()
    assert reject_code(m.bid("L1", ALICE, 1050)) == Reject.bid_not_increment_multiple
    assert reject_code(m.bid("L1", ALICE, 1000)) is None
    assert reject_code(m.bid("L1", BOB, 1150)) == Reject.bid_not_increment_multiple
    assert reject_code(m.bid("L1", BOB, 1050)) == Reject.bid_below_increment
    assert reject_code(m.bid("L1", BOB, 1300)) is None  # k = 3
    assert m.lot("L1").price_fen == 1300


def test_R_0_6b_minimum_step() -> None:
    m = open_market(RuleSet(increment_mode="min_step"))
    assert reject_code(m.bid("L1", ALICE, 1037)) is None  # first bid: >= start, any amount
    assert reject_code(m.bid("L1", BOB, 1136)) == Reject.bid_below_increment
    assert reject_code(m.bid("L1", BOB, 1137)) is None
    assert reject_code(m.bid("L1", ALICE, 1301)) is None  # not a multiple: fine
    assert m.lot("L1").price_fen == 1301


def test_R_0_6_first_bid_at_least_start() -> None:
    m = open_market()
    assert reject_code(m.bid("L1", ALICE, 999)) == Reject.bid_below_start
    assert reject_code(m.bid("L1", ALICE, 0)) == Reject.invalid_amount
    assert reject_code(m.bid("L1", ALICE, -100)) == Reject.invalid_amount
    assert reject_code(m.bid("L1", ALICE, 1000)) is None


def test_R_0_6_first_bid_exact_start_option() -> None:
    m = open_market(RuleSet(first_bid_exact_start=True))
    assert reject_code(m.bid("L1", ALICE, 1100)) == Reject.bid_not_start_price
    assert reject_code(m.bid("L1", ALICE, 1000)) is None
    assert reject_code(m.bid("L1", BOB, 1200)) is None  # only the first bid is pinned


def test_R_0_6_increment_changed_mid_auction() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    one(m.change_increment("L1", 250), IncrementChanged)
    assert reject_code(m.bid("L1", BOB, 1100)) == Reject.bid_below_increment
    assert reject_code(m.bid("L1", BOB, 1250)) is None
    m2 = open_market(RuleSet(increment_change_allowed=False))
    assert reject_code(m2.change_increment("L1", 250)) == Reject.increment_change_not_allowed
    assert reject_code(open_market().change_increment("L1", 0)) == Reject.invalid_increment


# ------------------------------------------------------------------ eligibility
def test_R_0_3_eligibility_not_registered() -> None:
    m = open_market(bidders=(ALICE,))
    r = rejected(m.bid("L1", BOB, 1000))
    assert (r.code, r.detail, r.bidder_code) == (Reject.bidder_not_eligible, "not_registered", "")


def test_R_0_3_eligibility_deposit_not_confirmed() -> None:
    m = Market()
    m.create_english("L1", deposit=500)
    m.register("L1", ALICE, deposit=False)
    m.tick(START)
    r = rejected(m.bid("L1", ALICE, 1000))
    assert (r.code, r.detail) == (Reject.bidder_not_eligible, "deposit_not_confirmed")
    assert reject_code(m.confirm_deposit("L1", ALICE, 499)) == Reject.deposit_insufficient
    assert reject_code(m.confirm_deposit("L1", ALICE, 500)) is None
    assert reject_code(m.confirm_deposit("L1", ALICE, 500)) == Reject.deposit_already_confirmed
    assert reject_code(m.bid("L1", ALICE, 1000)) is None


def test_R_0_3_eligibility_blacklisted() -> None:
    m = open_market()
    m.blacklist(ALICE)
    r = rejected(m.bid("L1", ALICE, 1000))
    assert (r.code, r.detail) == (Reject.bidder_not_eligible, "blacklisted")
    assert reject_code(m.register("L1", CAROL, deposit=False)) is None
    m.blacklist(CAROL)
    m.create_english("L2")
    assert reject_code(m.register("L2", CAROL, deposit=False)) == Reject.bidder_blacklisted
    m.unblacklist(ALICE)
    assert reject_code(m.bid("L1", ALICE, 1000)) is None
    assert reject_code(m.unblacklist(ALICE)) == Reject.not_blacklisted


def test_R_0_3_register_once_per_lot() -> None:
    m = open_market()
    assert reject_code(m.register("L1", ALICE, deposit=False)) == Reject.already_registered


# ------------------------------------------------------------------ anonymity
def test_R_0_4_events_carry_codes_not_identities() -> None:
    m = open_market(bidders=(ALICE, BOB, CAROL))
    codes = [e.bidder_code for e in of_type(m.events, BidderRegistered)]
    assert codes == ["0001", "0002", "0003"]
    m.bid("L1", ALICE, 1000)
    m.bid("L1", BOB, 1100)
    m.bid("L1", CAROL, 1150)  # refused: carries the code, not the identity
    m.blacklist(CAROL)
    m.bid("L1", CAROL, 1200)
    m.tick(END + 10 * MIN)
    assert one(m.events, LotSold).bidder_code == "0002"
    wire = msgspec.json.encode(m.events).decode()
    for who in (ALICE, BOB, CAROL):
        assert who not in wire


# ------------------------------------------------------------------ reserve
def test_R_0_5_reserve_once() -> None:
    m = Market()
    m.create_english("L1")
    one(m.set_reserve("L1", 2345), ReserveEntered)
    assert reject_code(m.set_reserve("L1", 3000)) == Reject.reserve_already_set
    assert m.lot("L1").reserve_fen == 2345


def test_R_0_5_reserve_at_least_start() -> None:
    m = Market()
    m.create_english("L1")
    assert reject_code(m.set_reserve("L1", 999)) == Reject.reserve_below_start
    assert reject_code(m.set_reserve("L1", 1000)) is None


def test_R_0_5_reserve_cutoff() -> None:
    m = Market()
    m.create_english("L1")
    m.create_english("L2")
    assert reject_code(m.set_reserve("L1", 2000, at=END - HOUR)) is None  # exactly at the cut-off
    assert reject_code(m.set_reserve("L2", 2000, at=END - HOUR + 1)) == Reject.reserve_cutoff_passed


def test_R_0_5_reserve_never_in_public_events_before_close() -> None:
    reserve = 7_777_777
    m = Market()
    m.create_english("L1", rules=RuleSet(increment_mode="min_step"))
    m.register("L1", ALICE)
    m.register("L1", BOB)
    before = len(m.events)
    m.set_reserve("L1", reserve)
    m.tick(START)
    m.bid("L1", ALICE, 5000)
    m.bid("L1", BOB, 6000)
    m.freeze("L1")
    m.resume("L1")
    m.change_increment("L1", 50)
    public = msgspec.json.encode(m.events[before:]).decode()
    assert str(reserve) not in public
    closing = m.tick(END + HOUR)
    assert one(closing, LotUnsold).reserve_fen == reserve  # disclosed only in the close


def test_R_0_5_below_reserve_unsold() -> None:
    m = Market()
    m.create_english("L1")
    m.set_reserve("L1", 1500)
    m.register("L1", ALICE)
    m.tick(START)
    m.bid("L1", ALICE, 1400)
    unsold = one(m.tick(END), LotUnsold)
    assert (unsold.reason, unsold.price_fen, unsold.reserve_fen) == ("below_reserve", 1400, 1500)
    assert m.lot("L1").status == UNSOLD


def test_R_0_5_at_reserve_sold() -> None:
    m = Market()
    m.create_english("L1")
    m.set_reserve("L1", 1500)
    m.register("L1", ALICE)
    m.tick(START)
    m.bid("L1", ALICE, 1500)
    sold = one(m.tick(END), LotSold)
    assert (sold.bidder_code, sold.price_fen, sold.reserve_fen) == ("0001", 1500, 1500)


# ------------------------------------------------------------------ self-outbid
def test_R_0_7_leader_may_not_outbid_self() -> None:
    m = open_market(EXCHANGE)
    m.bid("L1", ALICE, 1000)
    assert reject_code(m.bid("L1", ALICE, 1100)) == Reject.leader_may_not_outbid_self
    m.bid("L1", BOB, 1100)
    assert reject_code(m.bid("L1", ALICE, 1200)) is None


def test_R_0_7_leader_may_outbid_self_when_allowed() -> None:
    m = open_market(JUDICIAL)
    m.bid("L1", ALICE, 1000)
    assert reject_code(m.bid("L1", ALICE, 1100)) is None


# ------------------------------------------------------------------ R-5.2.3(d) priority
def priority_market() -> Market:
    m = Market()
    m.create_english("L1")
    m.register("L1", ALICE)  # 0001, no priority
    m.register("L1", "ID-p1-aa", priority=1)  # P0002, rank 1 (best)
    m.register("L1", "ID-p2-bb", priority=2)  # P0003, rank 2
    m.register("L1", "ID-p2-cc", priority=2)  # P0004, rank 2
    m.tick(START)
    return m


def test_R_5_2_3d_priority_code_marks_holder() -> None:
    m = priority_market()
    assert [e.bidder_code for e in of_type(m.events, BidderRegistered)] == [
        "0001",
        "P0002",
        "P0003",
        "P0004",
    ]


def test_R_5_2_3d_priority_holder_matches_equal_price() -> None:
    m = priority_market()
    m.bid("L1", ALICE, 1500)
    acc = one(m.bid("L1", "ID-p2-bb", 1500), BidAccepted)
    assert (acc.bidder_code, acc.amount_fen, acc.priority_match) == ("P0003", 1500, True)
    assert reject_code(m.bid("L1", "ID-nobody-00", 1500)) == Reject.bidder_not_eligible
    assert one(m.tick(END), LotSold).bidder_code == "P0003"


def test_R_5_2_3d_non_holder_cannot_match() -> None:
    m = priority_market()
    m.register("L1", BOB)
    m.bid("L1", ALICE, 1500)
    assert reject_code(m.bid("L1", BOB, 1500)) == Reject.bid_below_increment


def test_R_5_2_3d_higher_rank_beats_lower_rank_at_equal_price() -> None:
    m = priority_market()
    m.bid("L1", ALICE, 1500)
    m.bid("L1", "ID-p2-bb", 1500)
    one(m.bid("L1", "ID-p1-aa", 1500), BidAccepted)
    # and the lower rank cannot take it back at the same price
    assert reject_code(m.bid("L1", "ID-p2-cc", 1500)) == Reject.priority_not_higher
    assert one(m.tick(END), LotSold).bidder_code == "P0002"


def test_R_5_2_3d_lower_rank_cannot_match_higher_rank_leader() -> None:
    m = priority_market()
    m.bid("L1", "ID-p1-aa", 1500)
    assert reject_code(m.bid("L1", "ID-p2-bb", 1500)) == Reject.priority_not_higher


def test_R_5_2_3d_same_rank_earlier_wins() -> None:
    m = priority_market()
    m.bid("L1", ALICE, 1500)
    m.bid("L1", "ID-p2-bb", 1500)
    assert reject_code(m.bid("L1", "ID-p2-cc", 1500)) == Reject.priority_not_higher
    assert one(m.tick(END), LotSold).bidder_code == "P0003"


def test_R_5_2_3d_higher_bid_beats_priority_holder() -> None:
    m = priority_market()
    m.bid("L1", "ID-p1-aa", 1500)
    m.bid("L1", ALICE, 1600)
    assert one(m.tick(END), LotSold).bidder_code == "0001"


# ------------------------------------------------------------------ anti-sniping
def test_R_5_2_4_anti_sniping_extends_to_bid_plus_W() -> None:
    m = open_market()
    t = END - 2 * MIN
    ext = one(m.bid("L1", ALICE, 1000, at=t), LotExtended)
    assert ext.end_ns == t + 5 * MIN
    t2 = t + 4 * MIN  # after the original end: still open (extended)
    assert one(m.bid("L1", BOB, 1100, at=t2), LotExtended).end_ns == t2 + 5 * MIN
    assert m.tick(t2 + 5 * MIN - 1) == []
    sold = one(m.tick(t2 + 5 * MIN), LotSold)
    assert (sold.bidder_code, sold.closed_at_ns) == ("0002", t2 + 5 * MIN)


def test_R_5_2_4_bid_before_window_does_not_extend() -> None:
    m = open_market()
    none_of(m.bid("L1", ALICE, 1000, at=END - 5 * MIN - 1), LotExtended)
    none_of(m.bid("L1", BOB, 1100, at=END - 5 * MIN), LotExtended)  # end - t == W: t+W == end
    assert m.lot("L1").end_ns == END
    assert one(m.tick(END), LotSold).closed_at_ns == END


def test_R_5_2_4_zero_window_disables_extension() -> None:
    m = open_market(RuleSet(extension_window_ns=0))
    none_of(m.bid("L1", ALICE, 1000, at=END - 1), LotExtended)
    assert one(m.tick(END), LotSold).closed_at_ns == END


def test_R_2_4_5_three_minute_extension_ruleset() -> None:
    m = open_market(EXCHANGE)
    none_of(m.bid("L1", ALICE, 1000, at=END - 3 * MIN - 1), LotExtended)
    t = END - 2 * MIN
    assert one(m.bid("L1", BOB, 1100, at=t), LotExtended).end_ns == t + 3 * MIN


# ------------------------------------------------------------------
def test_R_5_2_2_bidding_opens_at_start_time() -> None:
    m = Market()
    m.create_english("L1")
    m.register("L1", ALICE)
    assert reject_code(m.bid("L1", ALICE, 1000, at=START - 1)) == Reject.lot_not_open
    out = m.bid("L1", ALICE, 1000, at=START + 5 * S)
    assert one(out, LotOpened).at_ns == START  # lazily, at its own time
    one(out, BidAccepted)


def test_R_5_2_5_sold_to_leader() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    m.bid("L1", BOB, 1200)
    m.bid("L1", ALICE, 1500)
    sold = one(m.tick(END), LotSold)
    assert (sold.bidder_code, sold.price_fen, sold.closed_at_ns, sold.reserve_fen) == (
        "0001",
        1500,
        END,
        0,
    )
    assert m.lot("L1").status == SOLD


def test_R_5_2_5_unsold_no_bids() -> None:
    m = open_market()
    unsold = one(m.tick(END), LotUnsold)
    assert (unsold.reason, unsold.price_fen) == ("no_bids", 0)


def test_R_5_2_5_one_bidder_suffices() -> None:
    m = open_market(bidders=(ALICE,))
    m.bid("L1", ALICE, 1000)
    assert one(m.tick(END), LotSold).price_fen == 1000


def test_R_5_2_8_no_early_close_on_silence() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000, at=START + 1)
    assert m.tick(END - 1) == []
    assert m.lot("L1").status == OPEN
    assert reject_code(m.bid("L1", BOB, 1100, at=END - 1)) is None


def test_R_2_2_3_equal_price_earlier_wins() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    assert reject_code(m.bid("L1", BOB, 1000)) == Reject.bid_below_increment
    assert one(m.tick(END), LotSold).bidder_code == "0001"


# ------------------------------------------------------------------ lazy close
def test_lazy_close_bid_at_deadline_refused_lot_closed() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    out = m.bid("L1", BOB, 1100, at=END)
    assert reject_code(out) == Reject.lot_closed
    assert out.index(one(out, LotSold)) < out.index(rejected(out))  # closes first
    assert one(out, LotSold).bidder_code == "0001"


def test_lazy_close_records_deadline_time_not_command_time() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    out = m.bid("L1", BOB, 1100, at=END + 7 * HOUR)
    assert one(out, LotSold).closed_at_ns == END
    assert reject_code(out) == Reject.lot_closed


def test_next_deadline_tracks_extensions() -> None:
    m = open_market()
    assert m.router.next_deadline_ns() == END
    m.bid("L1", ALICE, 1000, at=END - MIN)
    assert m.router.next_deadline_ns() == END + 4 * MIN
    m.tick(END + 4 * MIN)
    assert m.router.next_deadline_ns() is None


# ------------------------------------------------------------------ freeze / terminate
def test_R_1_8_freeze_keeps_remaining_time() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    t = START + 2 * HOUR
    fr = one(m.freeze("L1", "network failure", at=t), LotFrozen)
    assert (fr.reason, fr.at_ns, fr.remaining_ns, fr.system) == (
        "network failure",
        t,
        END - t,
        False,
    )
    assert m.lot("L1").status == FROZEN
    assert reject_code(m.bid("L1", BOB, 1100)) == Reject.lot_frozen
    assert m.tick(END + HOUR) == []  # frozen: the original close does not fire
    r = END + 2 * HOUR
    res = one(m.resume("L1", at=r), LotResumed)
    assert (res.phase, res.end_ns) == ("bidding", r + (END - t))
    assert reject_code(m.bid("L1", BOB, 1100)) is None
    assert m.tick(r + (END - t) - 1) == []
    assert one(m.tick(r + (END - t)), LotSold).closed_at_ns == r + (END - t)


def test_R_1_8_freeze_before_start_shifts_start() -> None:
    m = Market()
    m.create_english("L1")
    m.register("L1", ALICE)
    m.freeze("L1", at=START - 10 * MIN)
    m.resume("L1", at=START + 50 * MIN)
    assert reject_code(m.bid("L1", ALICE, 1000, at=START + 59 * MIN)) == Reject.lot_not_open
    out = m.bid("L1", ALICE, 1000, at=START + 61 * MIN)
    assert one(out, LotOpened).at_ns == START + HOUR
    assert m.lot("L1").end_ns == END + HOUR


def test_R_1_8_freeze_resume_state_errors() -> None:
    m = open_market()
    assert reject_code(m.resume("L1")) == Reject.lot_not_frozen
    m.freeze("L1")
    assert reject_code(m.freeze("L1")) == Reject.lot_frozen
    m2 = Market()
    m2.create_english("L1", publish=False)
    assert reject_code(m2.freeze("L1")) == Reject.lot_not_open
    assert reject_code(m2.freeze("nope")) == Reject.unknown_lot


def test_R_1_8_5_no_freeze_or_terminate_near_close() -> None:
    m = open_market(RuleSet(freeze_guard_ns=HOUR))
    assert reject_code(m.freeze("L1", at=END - HOUR + 1)) == Reject.freeze_too_close_to_end
    assert reject_code(m.terminate("L1")) == Reject.terminate_too_close_to_end
    assert m.lot("L1").status == OPEN
    m2 = open_market(RuleSet(freeze_guard_ns=HOUR))
    one(m2.freeze("L1", at=END - HOUR), LotFrozen)  # exactly at the guard: still allowed
    m3 = open_market()  # judicial: no guard
    one(m3.terminate("L1", at=END - 1), LotTerminated)


def test_R_1_8_terminate_with_reason() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    t = START + HOUR
    term = one(m.terminate("L1", "title dispute", at=t), LotTerminated)
    assert (term.reason, term.at_ns) == ("title dispute", t)
    assert m.lot("L1").status == TERMINATED
    assert reject_code(m.bid("L1", BOB, 1100)) == Reject.lot_closed
    assert m.tick(END + HOUR) == []  # never sold afterwards
    assert reject_code(m.terminate("L1")) == Reject.lot_closed
    assert reject_code(m.freeze("L1")) == Reject.lot_closed


def test_R_1_8_terminate_frozen_lot() -> None:
    m = open_market()
    m.freeze("L1")
    one(m.terminate("L1", "collusion proven"), LotTerminated)
    assert reject_code(m.resume("L1")) == Reject.lot_not_frozen


# ------------------------------------------------------------------ lot terms
@pytest.mark.parametrize(
    "kw",
    [
        {"start_price": 0},
        {"increment": 0},
        {"end": START},
        {"timed_increment": -1},
        {"deposit": -1},
        {"rules": RuleSet(countdown_ns=0)},
        {"rules": RuleSet(extension_window_ns=-1)},
    ],
)
def test_create_lot_invalid_terms(kw: dict) -> None:
    m = Market()
    assert reject_code(m.create_english("L1", publish=False, **kw)) == Reject.invalid_terms


def test_create_lot_exists_and_publish_once() -> None:
    m = Market()
    m.create_english("L1")
    assert reject_code(m.create_english("L1", publish=False)) == Reject.lot_exists
    assert reject_code(m.publish("L1")) == Reject.lot_not_draft
    assert reject_code(m.publish("L9")) == Reject.unknown_lot
