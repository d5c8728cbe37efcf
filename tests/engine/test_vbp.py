"""Volume-based procurement, RULES.md §4: a test per rule, and properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import vbp
from engine.codes import Reject
from engine.messages import (
    AcceptRevival,
    ChooseRegions,
    CreateLot,
    LotSold,
    LotUnsold,
    RegionDemand,
    RevealSealed,
    RevivalAccepted,
    RevivalOffered,
    SubmitSealed,
    VbpAwarded,
    VolumeAllocated,
    decode_command,
    encode_command,
)
from engine.router import Router
from engine.rules import VBP_R9, VBP_R10, VBP_R11, RuleSet
from engine.sealed import seal_commitment
from engine.state import SOLD
from tests.engine.helpers import END, STAFF, START, Market, bidder_origin, of_type, one, reject_code

OPENED = END + VBP_R10.reveal_window_ns
CEILING = 100_000  # units of 0.0001 yuan: ¥10.00
REGIONS = (("beijing", 500), ("hebei", 300), ("shanxi", 200), ("tianjin", 101))


def Q(code: str, price: int, tie: int = 0) -> vbp.Quote:
    return vbp.Quote(code, price, tie)


# ------------------------------------------------------------ pure rules
def test_R_4_2_rounds_2_9_any_of_three_criteria():
    quotes = [Q("a", 10_000), Q("b", 18_000), Q("c", 18_001), Q("d", 50_000), Q("e", 900)]
    picks, others = vbp.rule1(quotes, rnd="r2_9", ceiling=100_000, low_price_units=1_000)
    by = {p.code: p.basis for p in picks}
    # e is the lowest (900); 1.8 x 900 = 1,620: a, b fail 1.8x, but a, b, c and d cut >= 50 %
    assert by["e"] == "rule1"
    assert by["a"] == by["b"] == by["c"] == by["d"] == "cut50"
    assert others == []
    # A low ceiling: only a (10,000 <= half of 30,000) keeps the 50 % protection.
    picks, others = vbp.rule1(quotes, rnd="r2_9", ceiling=30_000, low_price_units=1_000)
    assert {q.code for q in others} == {"b", "c", "d"}


def test_R_4_2_low_price_threshold_and_round_7_excludes_the_highest():
    quotes = [Q("a", 600), Q("b", 1_000), Q("c", 1_080)]
    picks, others = vbp.rule1(quotes, rnd="r2_9", ceiling=2_000, low_price_units=1_000)
    # lowest 600: 1.8x = 1,080 covers b and c exactly
    assert [(p.code, p.basis) for p in picks] == [("a", "rule1"), ("b", "rule1"), ("c", "rule1")]
    picks, _ = vbp.rule1(
        [Q("a", 400), Q("b", 1_000)], rnd="r10", ceiling=9_000, low_price_units=1_000
    )
    assert [(p.code, p.basis) for p in picks] == [("a", "rule1"), ("b", "low_price")]
    picks, others = vbp.rule1(
        quotes, rnd="r2_9", ceiling=2_000, low_price_units=1_000, exclude_highest=True
    )
    assert [p.code for p in picks] == ["a", "b"] and [q.code for q in others] == ["c"]


def test_R_4_2_round_10_rule_1_exact_1_8_boundary_and_no_cut50():
    quotes = [Q("a", 10_000), Q("b", 18_000), Q("c", 18_001)]
    picks, others = vbp.rule1(quotes, rnd="r10", ceiling=1_000_000, low_price_units=1_000)
    assert [p.code for p in picks] == ["a", "b"]  # 18,000 == 1.8 x 10,000 qualifies
    assert [q.code for q in others] == ["c"]  # a 98 % cut no longer protects (round 10)


def test_R_4_2_round_10_revival_price():
    assert vbp.revival_price([vbp.Pick("a", 10_000, "rule1"), vbp.Pick("b", 15_000, "rule1")]) == (
        15_000
    )
    # A single rule-1 winner: the others may win at 1.8 x its price.
    assert vbp.revival_price([vbp.Pick("a", 10_001, "rule1")]) == 18_001  # floor(18,001.8)


def test_R_4_2_round_11_anchor_circuit_breaker():
    # sum 100,000 over 4 -> average 25,000, half 12,500 > lowest 10,000: anchor 12,500,
    # so the breaker trips above 1.8 x 12,500 = 22,500 (rule 1 alone would stop at 18,000)
    quotes = [Q("a", 10_000), Q("b", 22_500), Q("c", 22_501), Q("d", 44_999)]
    picks, others = vbp.rule1(quotes, rnd="r11", ceiling=1_000_000, low_price_units=0)
    assert [p.code for p in picks] == ["a", "b"] and [q.code for q in others] == ["c", "d"]
    # When the lowest is above half the average, the lowest is the anchor.
    picks, _ = vbp.rule1(
        [Q("a", 10_000), Q("b", 18_000), Q("c", 18_001)],
        rnd="r11",
        ceiling=1_000_000,
        low_price_units=0,
    )
    assert [p.code for p in picks] == ["a", "b"]


def test_R_4_2_max_winners_table():
    assert [vbp.max_winners("r10", n) for n in (1, 2, 3, 4, 7, 10, 15, 16, 40)] == [
        1,
        2,
        2,
        3,
        4,
        6,
        9,
        10,
        10,
    ]
    assert [vbp.max_winners("r9", n) for n in (5, 9, 13, 16)] == [4, 7, 10, 10]
    picks = [vbp.Pick(c, 1_000 + i, "rule1") for i, c in enumerate("abcd")]
    chosen = vbp.select(picks, [Q("x", 5_000)], 1_003, qualified=5, table="r10")
    assert [p.code for p in chosen] == ["a", "b", "c"]  # N=5 -> 3 winners


def test_R_4_2_1_ties_follow_the_tie_key():
    picks, _ = vbp.rule1(
        [Q("a", 1_000, 2), Q("b", 1_000, 1)], rnd="r10", ceiling=9_000, low_price_units=0
    )
    assert [p.code for p in picks] == ["b", "a"]


def test_R_4_3_1_share_by_number_of_winners():
    table = VBP_R10.vbp_share_pct
    assert [vbp.share_pct(n, table) for n in (1, 2, 3, 4, 9)] == [50, 60, 70, 80, 80]
    assert vbp.share_pct(2, (30, 40, 50)) == 40  # special anti-infectives


def test_R_4_3_1_largest_remainder_sums_exactly():
    assert vbp.largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert vbp.agreed_units([500, 300, 200, 101], 60) == [300, 180, 120, 60]
    assert sum(vbp.agreed_units([500, 300, 200, 101], 60)) == 1_101 * 60 // 100


def test_R_4_3_2_regions_rank_order_round_robin():
    regions = ["bj", "hb", "sx", "tj", "nm"]
    owner = vbp.assign_regions(regions, ["w1", "w2"], {"w2": ["bj", "tj"], "w1": ["hb"]})
    # w1 (rank 1) picks first: hb; w2: bj (its first free); w1: sx (no preference left);
    # w2: tj; w1: nm
    assert owner == {"hb": "w1", "bj": "w2", "sx": "w1", "tj": "w2", "nm": "w1"}
    assert set(vbp.assign_regions(regions, ["only"], {}).values()) == {"only"}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=12),
    st.sampled_from([50, 60, 70, 80, 30]),
)
def test_property_shares_always_sum_to_the_agreed_total(demands, pct):
    units = vbp.agreed_units(demands, pct)
    assert sum(units) == sum(demands) * pct // 100
    assert all(u >= 0 for u in units)
    # each region within one unit of its exact proportional share
    total, weight = sum(units), sum(demands)
    for u, d in zip(units, demands, strict=True):
        if weight:
            assert abs(u * weight - total * d) < weight


# ------------------------------------------------------------ through the router
def vbp_market(rules: RuleSet = VBP_R10, firms: str = "abcdef") -> Market:
    m = Market()
    m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="V1",
        mechanism="vbp",
        title="amlodipine 5mg",
        start_price_fen=CEILING,
        increment_fen=1,
        start_ns=START,
        end_ns=END,
        rules=rules,
        regions=tuple(RegionDemand(r, d) for r, d in REGIONS),
    )
    m.publish("V1")
    for f in firms:
        m.register("V1", f)
    m.tick(START)
    return m


def quote_round(m: Market, quotes: dict[str, int]) -> list:  # type: ignore[type-arg]
    for f, price in quotes.items():
        c = seal_commitment("V1", price, f"n-{f}")
        m.cmd(SubmitSealed, bidder_origin(f), None, lot_id="V1", commitment=c)
    m.tick(END)
    for f, price in quotes.items():
        m.cmd(RevealSealed, bidder_origin(f), None, lot_id="V1", amount_fen=price, nonce=f"n-{f}")
    return m.tick(OPENED)


def test_R_4_2_round_10_end_to_end_with_revival_and_regions():
    m = vbp_market()
    out = quote_round(m, {"a": 10_000, "b": 17_000, "c": 30_000, "d": 40_000})
    offered = one(out, RevivalOffered)
    assert offered.price == 17_000 and offered.bidder_codes == ("0003", "0004")
    assert reject_code(m.cmd(AcceptRevival, bidder_origin("a"), None, lot_id="V1")) == (
        Reject.not_revival_candidate
    )
    one(m.cmd(AcceptRevival, bidder_origin("d"), None, lot_id="V1"), RevivalAccepted)
    out = m.tick(offered.until_ns)
    awarded = one(out, VbpAwarded)
    # N = 4 valid firms -> at most 3 winners: a, b (rule 1), d (revival, at 17,000)
    assert [(w.bidder_code, w.price, w.basis) for w in awarded.winners] == [
        ("0001", 10_000, "rule1"),
        ("0002", 17_000, "rule1"),
        ("0004", 17_000, "revival"),
    ]
    assert (awarded.qualified, awarded.max_winners, awarded.share_pct) == (4, 3, 70)
    m.cmd(ChooseRegions, bidder_origin("d"), None, lot_id="V1", regions=("beijing",))
    assert reject_code(
        m.cmd(ChooseRegions, bidder_origin("c"), None, lot_id="V1", regions=("hebei",))
    ) == (Reject.not_a_winner)
    assert reject_code(
        m.cmd(ChooseRegions, bidder_origin("a"), None, lot_id="V1", regions=("mars",))
    ) == (Reject.unknown_region)
    m.cmd(ChooseRegions, bidder_origin("a"), None, lot_id="V1", regions=("beijing", "hebei"))
    out = m.tick(awarded.regions_until_ns)
    alloc = one(out, VolumeAllocated)
    owner = {a.region: a.bidder_code for a in alloc.allocations}
    # a first (beijing), b (no preference: the first free, hebei), d (beijing taken: shanxi)
    assert owner == {"beijing": "0001", "hebei": "0002", "shanxi": "0004", "tianjin": "0001"}
    assert alloc.agreed_units == 1_101 * 70 // 100 == sum(a.units for a in alloc.allocations)
    assert one(out, LotSold).bidder_code == "0001" and m.lot("V1").status == SOLD


def test_R_4_2_rounds_2_9_no_revival_phase():
    m = vbp_market(VBP_R9)
    out = quote_round(m, {"a": 10_000, "b": 17_000, "c": 60_000})
    awarded = one(out, VbpAwarded)
    assert [w.bidder_code for w in awarded.winners] == ["0001", "0002"]  # N=3 -> 2 winners


def test_R_4_2_round_11_single_valid_quote_wins_everything():
    m = vbp_market(VBP_R11)
    out = quote_round(m, {"a": 10_000})
    alloc = one(out, VolumeAllocated)
    assert {a.bidder_code for a in alloc.allocations} == {"0001"}
    assert alloc.agreed_units == 1_101 * 50 // 100


def test_quotes_above_the_ceiling_are_invalid_and_none_valid_is_unsold():
    m = vbp_market()
    out = quote_round(m, {"a": CEILING + 1})
    assert one(out, LotUnsold).reason == "no_bids"


def test_vbp_replay_and_snapshot_equivalence():
    m = vbp_market()
    out = quote_round(m, {"a": 10_000, "b": 17_000, "c": 30_000, "d": 40_000})
    m.cmd(AcceptRevival, bidder_origin("c"), None, lot_id="V1")
    half = Router.restore(m.router.snapshot())
    tail_from = len(m.log)
    m.tick(one(out, RevivalOffered).until_ns)
    m.tick(m.now + VBP_R10.region_window_ns)
    replayed = Router()
    for cmd, at in m.log:
        replayed.apply(decode_command(encode_command(cmd)), at)
    for cmd, at in m.log[tail_from:]:
        half.apply(cmd, at)
    assert replayed.state_hash() == half.state_hash() == m.router.state_hash()
    assert m.lot("V1").status == SOLD


@settings(max_examples=120, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefghij"), st.integers(500, 120_000), max_size=10),
    st.sampled_from(
        [
            VBP_R9,
            RuleSet(
                name="r7",
                evaluation="vbp",
                vbp_round="r2_9",
                vbp_max_winners="r9",
                vbp_exclude_highest=True,
            ),
        ]
    ),
)
def test_property_rounds_2_9_award_is_the_one_the_rules_name(quotes, rules):
    """Brute force, written independently: who qualifies, capped in price order."""
    m = vbp_market(rules, firms="abcdefghij")
    out = quote_round(m, quotes)
    valid = {f: q for f, q in quotes.items() if q <= CEILING}
    code = {f: m.lot("V1").bidders[f].code for f in quotes}
    if not valid:
        assert one(out, LotUnsold).reason == "no_bids"
        return
    low = min(valid.values())
    ok = [f for f, q in valid.items() if 5 * q <= 9 * low or q <= 1_000 or 2 * q <= CEILING]
    if rules.vbp_exclude_highest and ok and max(valid[f] for f in ok) > low:
        top = max(valid[f] for f in ok)
        ok = [f for f in ok if valid[f] != top]
    order = sorted(ok, key=lambda f: (valid[f], m.lot("V1").sealed[f].submitted_seq))
    expected = [code[f] for f in order[: vbp.max_winners("r9", len(valid))]]
    awarded = one(m.events, VbpAwarded)
    assert [w.bidder_code for w in awarded.winners] == expected
    assert awarded.share_pct == vbp.share_pct(len(expected), rules.vbp_share_pct)


def test_R_4_2_no_revival_when_rule_1_already_fills_the_winner_cap():
    m = vbp_market(firms="abc")
    # N = 3 valid -> at most 2 winners; a and b both pass rule 1: no room for c
    out = quote_round(m, {"a": 10_000, "b": 11_000, "c": 90_000})
    assert of_type(out, RevivalOffered) == []
    assert [w.bidder_code for w in one(out, VbpAwarded).winners] == ["0001", "0002"]


def test_blacklisted_firm_may_not_accept_revival():
    m = vbp_market()
    out = quote_round(m, {"a": 10_000, "b": 17_000, "c": 30_000, "d": 40_000})
    assert one(out, RevivalOffered).bidder_codes == ("0003", "0004")
    m.blacklist("c")
    out = m.cmd(AcceptRevival, bidder_origin("c"), None, lot_id="V1")
    assert reject_code(out) == Reject.bidder_not_eligible
