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
    RegisterBidder,
    ShareConfirmed,
    SharesAwarded,
    SharesOffered,
    decode_command,
    encode_command,
)
from engine.router import Router
from engine.rules import HOUR_NS, REVERSE, REVERSE_MULTI, RuleSet
from engine.state import SOLD, UNSOLD
from tests.engine.helpers import (
    END,
    SERVICE,
    STAFF,
    START,
    Market,
    bidder_origin,
    one,
    reject_code,
)

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


# ---------------------------------------------------------------- R-3.3.5-6
def quote_all(m: Market, quotes: list[tuple[str, int]]) -> list:  # type: ignore[type-arg]
    for s, amount in quotes:
        m.bid("R1", s, amount)
    return m.tick(END)


def test_R_3_2_4_sme_deduction_ranks_by_the_deducted_quote_contracts_at_the_quote():
    rules = RuleSet(name="r", min_valid_bids=3, extension_window_ns=0, sme_deduction_pct=10)
    m = Market()
    m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="R1",
        mechanism="reverse",
        title="desks",
        start_price_fen=CEILING,
        increment_fen=DEC,
        start_ns=START,
        end_ns=END,
        rules=rules,
    )
    m.publish("R1")
    m.register("R1", "a")
    m.cmd(RegisterBidder, SERVICE, None, lot_id="R1", bidder_id="s", sme=True)
    m.confirm_deposit("R1", "s")
    m.register("R1", "b")
    m.tick(START)
    # s quotes 90,000 (ranks as 81,000); a undercuts to 85,000; b to 84,000 -- s still first
    out = quote_all(m, [("s", 90_000), ("a", 85_000), ("b", 84_000)])
    offered = one(out, AwardOffered)
    assert (offered.bidder_code, offered.price_fen) == ("0002", 90_000)


def test_R_3_3_5_multi_winner_split_and_R_3_3_6_declined_share_re_offered():
    m = reverse_market("abcde", REVERSE_MULTI)
    out = quote_all(m, [("a", 99_000), ("b", 98_000), ("c", 97_000), ("d", 96_000), ("e", 95_000)])
    offers = one(out, SharesOffered)
    assert [(o.bidder_code, o.share_pct, o.rank) for o in offers.offers] == [
        ("0005", 50, 1),
        ("0004", 30, 2),
        ("0003", 20, 3),
    ]
    assert reject_code(confirm(m, "b")) == Reject.not_awarded  # rank 4: not offered yet
    one(confirm(m, "e"), ShareConfirmed)
    one(decline(m, "d"), AwardLapsed)
    out = m.tick(offers.until_ns)  # c lets its 20 % lapse: round 2 offers 30 + 20 to b, a
    second = one(out, SharesOffered)
    assert [(o.bidder_code, o.share_pct, o.rank) for o in second.offers] == [
        ("0002", 30, 4),
        ("0001", 20, 5),
    ]
    confirm(m, "b")
    out = decline(m, "a")  # nobody left for the last 20 %
    awarded = one(out, SharesAwarded)
    assert [(a.bidder_code, a.share_pct, a.price_fen) for a in awarded.awards] == [
        ("0005", 50, 95_000),
        ("0002", 30, 98_000),
    ]
    assert awarded.unplaced_pct == 20
    assert one(out, LotSold).bidder_code == "0005" and m.lot("R1").status == SOLD


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.integers(1, 30), min_size=3, max_size=6, unique=True),
    st.integers(2, 6),
    st.lists(st.sampled_from(["confirm", "decline", "silent"]), min_size=6, max_size=6),
)
def test_property_shares_placed_plus_unplaced_always_100(steps, winners, answers):
    rules = RuleSet(name="m", min_valid_bids=3, extension_window_ns=0, reverse_winners=winners)
    m = reverse_market("abcdef"[: len(steps)], rules)
    quotes = [(s, CEILING - k * DEC) for s, k in zip("abcdef", steps, strict=False)]
    for s, amount in sorted(quotes, key=lambda q: -q[1]):
        m.bid("R1", s, amount)
    m.tick(END)
    answer = dict(zip("abcdef", answers, strict=False))
    for _ in range(8):
        lot = m.lot("R1")
        if lot.status != "open":
            break
        for b in list(lot.shares_offered):
            if answer[b] == "confirm":
                confirm(m, b)
            elif answer[b] == "decline":
                decline(m, b)
        if m.lot("R1").status == "open":
            m.tick(m.lot("R1").deadline_ns)
    lot = m.lot("R1")
    assert lot.status in (SOLD, UNSOLD)
    assert sum(lot.shares_confirmed.values()) + lot.shares_unplaced == 100
    expected = [b for b in "abcdef"[: len(steps)] if answer[b] == "confirm"]
    assert set(lot.shares_confirmed) <= set(expected)
