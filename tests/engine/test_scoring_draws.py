"""Comprehensive scoring (R-6.4.1) and committed draws (issue 4 point 0)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codes import Reject
from engine.draw import draw_key, seed_hash
from engine.messages import (
    CommitDrawSeed,
    CreateLot,
    DrawSeedRevealed,
    EnterScores,
    EvaluationResult,
    FinalizeEvaluation,
    LotSold,
    PhaseChanged,
    RevealDrawSeed,
    RevealSealed,
    ScoresEntered,
    SubmitSealed,
    decode_command,
    encode_command,
    encode_events,
)
from engine.router import Router
from engine.rules import TENDER_LOWEST, TENDER_SCORING, RuleSet
from engine.sealed import seal_commitment
from engine.state import SOLD
from tests.engine.helpers import END, STAFF, START, Market, bidder_origin, one, reject_code

OPENED = END + TENDER_SCORING.reveal_window_ns
SEED = "5eed" * 8


def tender(rules: RuleSet, bidders: str = "abcd") -> Market:
    m = Market()
    m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="T1",
        mechanism="sealed",
        title="servers",
        start_price_fen=1_000_000,
        increment_fen=1,
        start_ns=START,
        end_ns=END,
        rules=rules,
    )
    m.publish("T1")
    for b in bidders:
        m.register("T1", b)
    m.tick(START)
    return m


def bids(m: Market, amounts: dict[str, int]) -> list:  # type: ignore[type-arg]
    for b, amount in amounts.items():
        c = seal_commitment("T1", amount, f"n{b}")
        m.cmd(SubmitSealed, bidder_origin(b), None, lot_id="T1", commitment=c)
    m.tick(END)
    for b, amount in amounts.items():
        m.cmd(RevealSealed, bidder_origin(b), None, lot_id="T1", amount_fen=amount, nonce=f"n{b}")
    return m.tick(OPENED)


def score(m: Market, member: str, code: str, points_centi: int) -> list:  # type: ignore[type-arg]
    return m.cmd(
        EnterScores,
        f"committee:{member}",
        None,
        lot_id="T1",
        bidder_code=code,
        points_centi=points_centi,
    )


def test_R_6_4_1_price_points_plus_committee_mean_rank_by_total():
    m = tender(TENDER_SCORING)
    out = bids(m, {"a": 800_000, "b": 1_000_000, "c": 900_000})
    assert one(out, PhaseChanged).phase == "evaluation"
    # a: price 30 x 800/800 = 30; b: 24; c: 26.667
    for member, marks in {"m1": (5000, 6000, 5500), "m2": (5200, 6400, 5500)}.items():
        for code, pts in zip(("0001", "0002", "0003"), marks, strict=True):
            assert one(score(m, member, code, pts), ScoresEntered).bidder_code == code
    assert b"5200" not in encode_events(m.events[-6:])  # points unpublished until the result
    out = m.cmd(FinalizeEvaluation, STAFF, None, lot_id="T1")
    result = one(out, EvaluationResult)
    # totals: a 30 + 51 = 81; b 24 + 62 = 86; c 26.667 + 55 = 81.667
    assert [(e.bidder_code, e.total_points_milli) for e in result.entries] == [
        ("0002", 86_000),
        ("0003", 81_667),
        ("0001", 81_000),
    ]
    assert result.entries[0].price_points_milli == 24_000
    assert one(out, LotSold).bidder_code == "0002" and m.lot("T1").price_fen == 1_000_000


def test_R_6_4_1_equal_score_lower_price_first():
    m = tender(RuleSet(name="s", evaluation="scoring", min_valid_bids=2, price_weight_points=0))
    bids(m, {"a": 900_000, "b": 800_000})
    for code in ("0001", "0002"):
        score(m, "m1", code, 7_000)
    out = m.cmd(FinalizeEvaluation, STAFF, None, lot_id="T1")
    assert one(out, LotSold).bidder_code == "0002"


def test_R_6_4_1_committee_rules_and_incomplete_scores():
    m = tender(TENDER_SCORING)
    bids(m, {"a": 800_000, "b": 1_000_000, "c": 900_000})
    assert reject_code(score(m, "a", "0001", 100)) == Reject.not_committee_for_lot
    assert reject_code(score(m, "m1", "9999", 100)) == Reject.invalid_scores
    assert reject_code(score(m, "m1", "0001", 7_001)) == Reject.invalid_scores  # > 70 points
    assert (
        reject_code(
            m.cmd(
                EnterScores,
                bidder_origin("z"),
                None,
                lot_id="T1",
                bidder_code="0001",
                points_centi=1,
            )
        )
        == Reject.not_authorized
    )
    score(m, "m1", "0001", 100)
    out = m.cmd(FinalizeEvaluation, STAFF, None, lot_id="T1")
    assert reject_code(out) == Reject.scores_incomplete
    # The window ends: missing scores count as zero; a (100 + price 30) wins.
    out = m.tick(m.lot("T1").deadline_ns)
    assert one(out, LotSold).bidder_code == "0001"


def test_draw_seed_commit_reveal_breaks_ties_reproducibly():
    m = tender(TENDER_LOWEST)
    assert reject_code(m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex=SEED)) == (
        Reject.no_seed_committed
    )
    m.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    assert reject_code(
        m.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    ) == (Reject.seed_already_committed)
    # Not before the deadline: nobody may learn the seed while bids can change.
    assert reject_code(m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex=SEED)) == (
        Reject.phase_not_accepting
    )
    out = bids(m, {"a": 900_000, "b": 900_000, "c": 900_000})
    assert one(out, PhaseChanged).phase == "draw"  # waits for the seed
    assert reject_code(m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex="00" * 16)) == (
        Reject.seed_mismatch
    )
    out = m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex=SEED)
    assert one(out, DrawSeedRevealed).seed_hex == SEED
    # Anyone re-runs the draw from the revealed seed:
    expected = min(("0001", "0002", "0003"), key=lambda c: draw_key(SEED, "T1", c))
    assert one(out, LotSold).bidder_code == expected


def test_draw_seed_never_revealed_falls_back_to_submission_order():
    m = tender(TENDER_LOWEST)
    m.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    bids(m, {"b": 900_000, "a": 900_000, "c": 900_000})
    out = m.tick(m.lot("T1").deadline_ns)
    assert one(out, LotSold).bidder_code == "0002"  # b submitted first
    m2 = tender(TENDER_LOWEST)
    bids(m2, {"a": 900_000, "b": 900_000, "c": 900_000})
    late = m2.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    assert reject_code(late) == Reject.too_late_for_seed


def test_scoring_with_draw_replay_and_snapshot_equivalence():
    m = tender(TENDER_SCORING)
    m.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    bids(m, {"a": 800_000, "b": 800_000, "c": 900_000})
    half = Router.restore(m.router.snapshot())
    tail_from = len(m.log)
    for code in ("0001", "0002", "0003"):
        score(m, "m1", code, 5_000)
    m.cmd(FinalizeEvaluation, STAFF, None, lot_id="T1")
    m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex=SEED)
    assert m.lot("T1").status == SOLD
    replayed = Router()
    for cmd, at in m.log:
        replayed.apply(decode_command(encode_command(cmd)), at)
    for cmd, at in m.log[tail_from:]:
        half.apply(cmd, at)
    assert replayed.state_hash() == half.state_hash() == m.router.state_hash()


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcd"), st.integers(100_000, 1_000_000), min_size=3),
    st.lists(st.integers(0, 7_000), min_size=8, max_size=8),
)
def test_property_scoring_award_is_the_one_the_rules_name(prices, points):
    m = tender(TENDER_SCORING)
    bids(m, prices)
    codes = {b: m.lot("T1").bidders[b].code for b in prices}
    marks = {b: (points[2 * i], points[2 * i + 1]) for i, b in enumerate(sorted(prices))}
    for b in prices:
        for member, pts in zip(("m1", "m2"), marks[b], strict=True):
            score(m, member, codes[b], pts)
    out = m.cmd(FinalizeEvaluation, STAFF, None, lot_id="T1")
    low = min(prices.values())

    def total(b: str) -> Fraction:
        return Fraction(low * 30, prices[b]) + Fraction(sum(marks[b]), 200)

    best = max(total(b) for b in prices)
    tied = [b for b in prices if total(b) == best]
    cheapest = min(prices[b] for b in tied)
    expected = [b for b in tied if prices[b] == cheapest]
    order = sorted(expected, key=lambda b: m.lot("T1").sealed[b].submitted_seq)
    assert one(out, LotSold).bidder_code == codes[order[0]]


def test_draw_seed_not_revealed_while_frozen_before_the_deadline():
    """A lot frozen in its submission phase is still before the deadline; the
    reveal used to pass (only OPEN + submission was refused), so bidders could
    learn the tie order and replace their bids after the resume."""
    m = tender(TENDER_LOWEST)
    m.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    m.freeze("T1")
    out = m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex=SEED)
    assert reject_code(out) == Reject.phase_not_accepting
    assert m.lot("T1").draw_seed == ""


def test_draw_seed_too_late_once_the_draw_fell_back():
    """After the DRAW window lapsed, the VBP lot announced submission order and
    moved on to revival; a late seed used to be accepted there and re-ranked
    the revival acceptors by the draw while the rule-1 ranks used submission
    order."""
    from tests.engine.test_vbp import quote_round, vbp_market

    m = vbp_market()
    m.cmd(CommitDrawSeed, STAFF, None, lot_id="V1", seed_hash=seed_hash(SEED))
    quote_round(m, {"a": 10_000, "b": 17_000, "c": 30_000, "d": 40_000})
    assert m.lot("V1").phase == "draw"
    m.tick(m.lot("V1").deadline_ns)  # no seed: falls back
    assert m.lot("V1").phase == "revival"
    out = m.cmd(RevealDrawSeed, STAFF, None, lot_id="V1", seed_hex=SEED)
    assert reject_code(out) == Reject.too_late_for_seed
    assert m.lot("V1").draw_seed == ""


def test_draw_seed_revealed_while_frozen_evaluates_on_resume():
    """A seed revealed while the lot waited frozen in 'draw' used to leave it
    waiting out the rest of the draw window after the resume."""
    m = tender(TENDER_LOWEST)
    m.cmd(CommitDrawSeed, STAFF, None, lot_id="T1", seed_hash=seed_hash(SEED))
    bids(m, {"a": 900_000, "b": 900_000, "c": 900_000})
    assert m.lot("T1").phase == "draw"
    m.freeze("T1")
    assert one(m.cmd(RevealDrawSeed, STAFF, None, lot_id="T1", seed_hex=SEED), DrawSeedRevealed)
    out = m.resume("T1")
    expected = min(("0001", "0002", "0003"), key=lambda c: draw_key(SEED, "T1", c))
    assert one(out, LotSold).bidder_code == expected
    assert m.lot("T1").status == SOLD and m.router.next_deadline_ns() is None


def test_R_6_4_1_a_missing_mark_counts_as_zero_in_the_committee_mean():
    """At the evaluation deadline the mean was taken over the members who had
    scored that bid, so a bid a strict member never scored beat one it had."""
    m = tender(TENDER_SCORING)
    bids(m, {"a": 800_000, "b": 800_000, "c": 1_000_000})
    score(m, "m1", "0001", 6_000)
    score(m, "m1", "0002", 6_000)
    score(m, "m2", "0001", 4_000)  # m2 never scores b (nor c)
    out = m.tick(m.lot("T1").deadline_ns)
    result = one(out, EvaluationResult)
    others = {e.bidder_code: e.other_points_milli for e in result.entries}
    assert others == {"0001": 50_000, "0002": 30_000, "0003": 0}
    assert one(out, LotSold).bidder_code == "0001"


def test_phase_refusals_of_scores_finalize_and_revival_name_the_phase():
    """An open lot in another phase answered wrong_mechanism (Sealed.refuse_phase
    is wrong_mechanism for PlaceBid) instead of phase_not_accepting."""
    from engine.messages import AcceptRevival
    from tests.engine.test_vbp import vbp_market

    m = tender(TENDER_SCORING)  # open, in submission
    assert reject_code(score(m, "m1", "0001", 10)) == Reject.phase_not_accepting
    out = m.cmd(FinalizeEvaluation, STAFF, None, lot_id="T1")
    assert reject_code(out) == Reject.phase_not_accepting
    m.freeze("T1")
    assert reject_code(score(m, "m1", "0001", 10)) == Reject.lot_frozen
    v = vbp_market()
    out = v.cmd(AcceptRevival, bidder_origin("a"), None, lot_id="V1")
    assert reject_code(out) == Reject.phase_not_accepting
