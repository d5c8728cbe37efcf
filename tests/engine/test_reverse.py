"""Reverse price competition (网上竞价), RULES.md §3.2: a test per rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codes import Reject
from engine.messages import (
    AwardLapsed,
    AwardOffered,
    ConfirmAward,
    CreateLot,
    DeclineAward,
    LotSold,
    LotUnsold,
    decode_command,
    encode_command,
)
from engine.router import Router
from engine.rules import HOUR_NS, REVERSE, RuleSet
from engine.state import SOLD, UNSOLD
from tests.engine.helpers import END, STAFF, START, Market, bidder_origin, one, reject_code

CEILING, DEC = 100_000, 1_000
CONFIRM = REVERSE.confirm_window_ns


def reverse_market(suppliers: str = "abcd", rules: RuleSet = REVERSE) -> Market:
    m = Market()
    m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="R1",
        mechanism="reverse",
        title="laptops x 40",
        start_price_fen=CEILING,
        increment_fen=DEC,
        start_ns=START,
        end_ns=END,
        rules=rules,
    )
    m.publish("R1")
    for s in suppliers:
        m.register("R1", s)
    m.tick(START)
    return m


def confirm(m: Market, supplier: str, at: int | None = None):  # type: ignore[no-untyped-def]
    return m.cmd(ConfirmAward, bidder_origin(supplier), at, lot_id="R1")


def decline(m: Market, supplier: str, at: int | None = None):  # type: ignore[no-untyped-def]
    return m.cmd(DeclineAward, bidder_origin(supplier), at, lot_id="R1")


def test_R_3_2_1_quotes_go_down_from_the_ceiling_by_the_decrement():
    m = reverse_market()
    assert reject_code(m.bid("R1", "a", CEILING + DEC)) == Reject.bid_above_ceiling
    assert reject_code(m.bid("R1", "a", CEILING - 500)) == Reject.bid_not_increment_multiple
    assert reject_code(m.bid("R1", "a", CEILING)) is None
    assert reject_code(m.bid("R1", "b", CEILING)) == Reject.quote_not_below_best
    assert reject_code(m.bid("R1", "b", CEILING - 1_500)) == Reject.bid_not_increment_multiple
    assert reject_code(m.bid("R1", "b", CEILING - 3 * DEC)) is None
    assert reject_code(m.bid("R1", "b", CEILING - 4 * DEC)) is None  # improving one's own quote


def test_R_0_3_only_eligible_suppliers_quote():
    m = reverse_market("a")
    m.register("R1", "z", deposit=False)
    assert reject_code(m.bid("R1", "z", CEILING)) == Reject.bidder_not_eligible


def test_R_3_2_2_fewer_than_three_suppliers_voids_it():
    m = reverse_market()
    m.bid("R1", "a", CEILING)
    m.bid("R1", "b", CEILING - DEC)
    m.bid("R1", "a", CEILING - 2 * DEC)  # one supplier quoting twice counts once
    out = m.tick(END)
    assert one(out, LotUnsold).reason == "too_few_valid_bids"
    assert m.lot("R1").status == UNSOLD


def test_R_3_2_2_lowest_wins_and_R_3_2_3_confirmation_sells():
    m = reverse_market()
    for s, k in (("a", 0), ("b", 2), ("c", 3), ("a", 5)):
        m.bid("R1", s, CEILING - k * DEC)
    offered = one(m.tick(END), AwardOffered)
    assert (offered.bidder_code, offered.price_fen, offered.rank) == ("0001", CEILING - 5 * DEC, 1)
    assert offered.until_ns == END + CONFIRM
    assert reject_code(confirm(m, "b")) == Reject.not_awarded
    sold = one(confirm(m, "a", at=END + HOUR_NS), LotSold)
    assert (sold.bidder_code, sold.price_fen) == ("0001", CEILING - 5 * DEC)
    assert m.lot("R1").status == SOLD


def test_R_3_2_3_silence_or_decline_passes_the_award_to_the_next_rank():
    m = reverse_market()
    for s, k in (("a", 1), ("b", 2), ("c", 3)):
        m.bid("R1", s, CEILING - k * DEC)
    m.tick(END)  # c (lowest) offered
    out = m.tick(END + CONFIRM)  # c lets 72 h pass
    lapsed = one(out, AwardLapsed)
    assert (lapsed.bidder_code, lapsed.reason) == ("0003", "not_confirmed")
    assert one(out, AwardOffered).bidder_code == "0002"
    out = decline(m, "b", at=END + CONFIRM + HOUR_NS)
    assert one(out, AwardLapsed).reason == "declined"
    assert one(out, AwardOffered).bidder_code == "0001"
    out = m.tick(END + 3 * CONFIRM)
    assert one(out, LotUnsold).reason == "all_declined"


def test_R_3_2_5_equal_quotes_earlier_wins():
    m = reverse_market(
        rules=RuleSet(
            **{
                **{f: getattr(REVERSE, f) for f in REVERSE.__struct_fields__},
                "increment_mode": "min_step",
            }
        )
    )
    m.bid("R1", "c", CEILING)
    m.bid("R1", "a", CEILING - 2 * DEC)
    m.bid("R1", "b", CEILING - 3 * DEC)
    # b quoted lowest; a cannot match it (a quote must beat the best), so ranks stay distinct
    assert one(m.tick(END), AwardOffered).bidder_code == "0002"


def test_replay_equivalence():
    m = reverse_market()
    for s, k in (("a", 1), ("b", 2), ("c", 3)):
        m.bid("R1", s, CEILING - k * DEC)
    m.tick(END)
    decline(m, "c")
    replayed = Router()
    for cmd, at in m.log:
        replayed.apply(decode_command(encode_command(cmd)), at)
    assert replayed.state_hash() == m.router.state_hash()
    assert Router.restore(m.router.snapshot()).state_hash() == m.router.state_hash()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 30)), max_size=20))
def test_property_award_goes_to_the_lowest_then_earliest(quotes):
    m = reverse_market()
    accepted: dict[str, tuple[int, int]] = {}
    for n, (s, k) in enumerate(quotes):
        if reject_code(m.bid("R1", s, CEILING - k * DEC)) is None:
            accepted[s] = (CEILING - k * DEC, n)
    out = m.tick(END)
    if len(accepted) < 3:
        assert m.lot("R1").status == UNSOLD
        return
    winner = min(accepted, key=lambda s: accepted[s])
    codes = {b: x.code for b, x in m.lot("R1").bidders.items()}
    offered = one(out, AwardOffered)
    assert (offered.bidder_code, offered.price_fen) == (codes[winner], accepted[winner][0])
