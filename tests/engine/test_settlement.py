"""After the hammer, every mode: RULES.md R-1.2.4, R-5.2.6, R-5.2.7, R-6.3.2."""

from __future__ import annotations

from engine.codes import Reject
from engine.draw import seed_hash
from engine.messages import (
    AwardVoided,
    CommitExpertDraw,
    ConfirmPayment,
    CreateReauction,
    DeclareDefault,
    DepositForfeited,
    DepositRefunded,
    ExpertDrawCommitted,
    ExpertDrawRevealed,
    LotSold,
    LotUnsold,
    PhaseChanged,
    QualifyWinner,
    ReauctionCreated,
    RefundDeposit,
    RevealExpertDraw,
    RevealSealed,
    SettlementChanged,
    SubmitSealed,
    decode_command,
    encode_command,
)
from engine.router import Router
from engine.rules import HOUR_NS, JUDICIAL_SETTLED, TENDER_LOWEST, RuleSet
from engine.sealed import seal_commitment
from engine.state import DEFAULTED, PAID, SOLD, UNSOLD, VOIDED
from tests.engine.helpers import (
    END,
    SERVICE,
    STAFF,
    START,
    Market,
    bidder_origin,
    of_type,
    one,
    reject_code,
)

DAY = 24 * HOUR_NS
PAY = JUDICIAL_SETTLED.payment_window_ns


def sold_english(rules: RuleSet = JUDICIAL_SETTLED, price: int = 1_000) -> Market:
    m = Market()
    m.create_english("L1", rules=rules, deposit=200, start_price=1_000, increment=100)
    for b in "abc":
        m.register("L1", b)
    m.tick(START)
    m.bid("L1", "a", 1_000)
    m.bid("L1", "b", 1_100)
    out = m.tick(m.lot("L1").deadline_ns)
    assert one(out, LotSold).bidder_code == "0002"
    return m


def test_R_5_2_6_paid_within_the_window():
    m = sold_english()
    assert (m.lot("L1").settlement, m.lot("L1").deadline_ns) == ("awaiting_payment", END + PAY)
    assert reject_code(m.cmd(ConfirmPayment, bidder_origin("b"), None, lot_id="L1")) == (
        Reject.not_authorized
    )
    out = m.cmd(ConfirmPayment, SERVICE, None, lot_id="L1")
    assert one(out, SettlementChanged).state == PAID
    assert reject_code(m.cmd(ConfirmPayment, SERVICE, None, lot_id="L1")) == (
        Reject.no_settlement_pending
    )
    assert m.tick(END + PAY + 1) == []  # nothing left to fall due


def test_R_5_2_6_default_forfeits_the_deposit_and_bars_the_defaulter():
    m = sold_english()
    out = m.tick(END + PAY)  # the balance never came
    assert one(out, SettlementChanged).state == DEFAULTED
    forfeited = one(out, DepositForfeited)
    assert (forfeited.bidder_code, forfeited.amount_fen, forfeited.reason) == (
        "0002",
        200,
        "payment_overdue",
    )
    assert m.lot("L1").barred == ["b"]
    # The re-auction: start cut by at most 20 %; the defaulter may not take part.
    bad = m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L2",
        parent_lot_id="L1",
        stage="second",
        start_price_fen=799,
        start_ns=m.now + DAY,
        end_ns=m.now + 2 * DAY,
    )
    assert reject_code(bad) == Reject.reauction_cut_too_deep
    out = m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L2",
        parent_lot_id="L1",
        stage="second",
        start_price_fen=800,
        start_ns=m.now + DAY,
        end_ns=m.now + 2 * DAY,
    )
    created = one(out, ReauctionCreated)
    assert (created.parent_lot_id, created.stage, created.barred) == ("L1", "second", 1)
    assert m.lot("L2").deposit_fen == 200 and m.lot("L2").rules == m.lot("L1").rules
    assert reject_code(m.register("L2", "b", deposit=False)) == Reject.bidder_barred
    assert reject_code(m.register("L2", "c")) is None
    again = m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L3",
        parent_lot_id="L1",
        stage="second",
        start_price_fen=900,
        start_ns=m.now + DAY,
        end_ns=m.now + 2 * DAY,
    )
    assert reject_code(again) == Reject.reauction_not_allowed


def test_R_5_2_6_declared_default():
    m = sold_english()
    out = m.cmd(DeclareDefault, STAFF, None, lot_id="L1", reason="buyer withdrew")
    assert one(out, DepositForfeited).reason == "buyer withdrew"


def test_R_5_2_7_chain_unsold_second_auction_then_sale_window():
    m = Market()
    m.create_english("L1", deposit=100, start_price=10_000, increment=100)
    out = m.tick(END)
    assert one(out, LotUnsold).reason == "no_bids"
    sold_ok = m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L2",
        parent_lot_id="L1",
        stage="sale",
        start_price_fen=10_000,
        start_ns=m.now + DAY,
        end_ns=m.now + 2 * DAY,
    )
    assert reject_code(sold_ok) == Reject.reauction_not_allowed  # sale follows a second auction
    s2, e2 = m.now + DAY, m.now + 2 * DAY
    m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L2",
        parent_lot_id="L1",
        stage="second",
        start_price_fen=8_000,
        start_ns=s2,
        end_ns=e2,
    )
    m.publish("L2")
    assert one(m.tick(e2), LotUnsold).reason == "no_bids"
    s3 = m.now + DAY
    window = JUDICIAL_SETTLED.sale_window_ns
    wrong = m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L3",
        parent_lot_id="L2",
        stage="sale",
        start_price_fen=7_000,
        start_ns=s3,
        end_ns=s3 + window,
    )
    assert reject_code(wrong) == Reject.invalid_terms  # the sale price is the 2nd start
    m.cmd(
        CreateReauction,
        STAFF,
        None,
        lot_id="L3",
        parent_lot_id="L2",
        stage="sale",
        start_price_fen=8_000,
        start_ns=s3,
        end_ns=s3 + window,
    )
    m.publish("L3")
    m.register("L3", "a")
    m.register("L3", "b")
    m.tick(s3)
    assert m.lot("L3").phase == "sale"
    first = s3 + 10 * DAY
    out = m.bid("L3", "a", 8_000, at=first)
    changed = one(out, PhaseChanged)
    assert (changed.phase, changed.end_ns) == ("bidding", first + DAY)  # 24 h of bidding
    m.bid("L3", "b", 8_100, at=first + DAY - 60 * 10**9)  # anti-sniping still applies
    assert m.lot("L3").end_ns == first + DAY - 60 * 10**9 + 5 * 60 * 10**9
    out = m.tick(m.lot("L3").end_ns)
    assert one(out, LotSold).bidder_code == "0002"


def test_R_1_2_4_post_qualification_void_passes_the_award_to_the_next_rank():
    rules = RuleSet(
        name="t",
        evaluation="lowest",
        min_valid_bids=3,
        post_qualification=True,
        payment_window_ns=10 * DAY,
    )
    m = Market()
    m.create("T1", "sealed", rules=rules, deposit=500, start_price=10_000, increment=1)
    for b in "abc":
        m.register("T1", b)
    m.tick(START)
    amounts = {"a": 7_000, "b": 8_000, "c": 9_000}
    for b, amt in amounts.items():
        c = seal_commitment("T1", amt, b)
        m.cmd(SubmitSealed, bidder_origin(b), None, lot_id="T1", commitment=c)
    m.tick(END)
    for b, amt in amounts.items():
        m.cmd(RevealSealed, bidder_origin(b), None, lot_id="T1", amount_fen=amt, nonce=b)
    out = m.tick(END + rules.reveal_window_ns)
    assert one(out, LotSold).bidder_code == "0001"
    assert one(out, SettlementChanged).state == "awaiting_qualification"
    out = m.cmd(QualifyWinner, STAFF, None, lot_id="T1", passed=False, reason="forged licence")
    voided = one(out, AwardVoided)
    assert (voided.bidder_code, voided.passes_to) == ("0001", "0002")
    assert one(out, DepositForfeited).bidder_code == "0001"
    assert one(out, LotSold).bidder_code == "0002" and m.lot("T1").price_fen == 8_000
    states = [e.state for e in of_type(out, SettlementChanged)]
    assert states == [VOIDED, "awaiting_qualification"]
    out = m.cmd(QualifyWinner, STAFF, None, lot_id="T1", passed=True)
    assert one(out, SettlementChanged).state == "awaiting_payment"
    m.cmd(ConfirmPayment, SERVICE, None, lot_id="T1")
    assert (m.lot("T1").status, m.lot("T1").settlement) == (SOLD, PAID)
    replayed = Router()
    for cmd, at in m.log:
        replayed.apply(decode_command(encode_command(cmd)), at)
    assert replayed.state_hash() == m.router.state_hash()
    assert Router.restore(m.router.snapshot()).state_hash() == m.router.state_hash()


def test_R_1_2_4_english_void_leaves_the_lot_unsold_for_re_auction():
    m = sold_english(RuleSet(post_qualification=True))
    out = m.cmd(QualifyWinner, STAFF, None, lot_id="L1", passed=False)
    assert one(out, AwardVoided).passes_to == ""
    assert one(out, LotUnsold).reason == "voided" and m.lot("L1").status == UNSOLD


def test_R_6_3_2_invalid_reveal_forfeits_when_the_rules_say_so():
    rules = RuleSet(name="t", evaluation="lowest", forfeit_invalid_reveal=True)
    m = Market()
    m.create("T1", "sealed", rules=rules, deposit=300, start_price=10_000, increment=1)
    for b in "ab":
        m.register("T1", b)
    m.tick(START)
    for b in "ab":
        c = seal_commitment("T1", 5_000, b)
        m.cmd(SubmitSealed, bidder_origin(b), None, lot_id="T1", commitment=c)
    m.tick(END)
    m.cmd(RevealSealed, bidder_origin("a"), None, lot_id="T1", amount_fen=5_000, nonce="a")
    out = m.tick(END + rules.reveal_window_ns)
    forfeited = one(out, DepositForfeited)
    assert (forfeited.bidder_code, forfeited.reason) == ("0002", "not_revealed")
    m2 = Market()
    m2.create("T1", "sealed", rules=TENDER_LOWEST, deposit=300, start_price=10_000, increment=1)
    m2.register("T1", "a")
    m2.tick(START)
    m2.cmd(SubmitSealed, bidder_origin("a"), None, lot_id="T1", commitment="ab" * 32)
    assert of_type(m2.tick(END + TENDER_LOWEST.reveal_window_ns), DepositForfeited) == []


def test_R_1_8_1_an_outage_moves_a_payment_window_and_never_reopens_a_sold_lot():
    """SuspendOverdue used to freeze a sold lot whose payment deadline passed
    during the outage; ResumeLot then reopened it in its bidding phase and it
    was sold a second time.  Now the window moves by the outage instead."""
    m = sold_english()
    last = m.now
    remaining = m.lot("L1").deadline_ns - last
    out = m.suspend_overdue(END + PAY + 7 * DAY)  # down across the payment deadline
    moved = one(out, SettlementChanged)
    assert (moved.state, moved.until_ns) == ("awaiting_payment", m.now + remaining)
    lot = m.lot("L1")
    assert (lot.status, lot.settlement, lot.deadline_ns) == (
        SOLD,
        "awaiting_payment",
        m.now + remaining,
    )
    assert reject_code(m.resume("L1")) == Reject.lot_not_frozen
    assert reject_code(m.bid("L1", "c", 1_200)) == Reject.lot_closed
    assert m.router.next_deadline_ns() == lot.deadline_ns
    assert Router.restore(m.router.snapshot()).next_deadline_ns() == lot.deadline_ns
    m.cmd(ConfirmPayment, SERVICE, None, lot_id="L1")
    assert lot.settlement == PAID and m.router.next_deadline_ns() is None


def test_R_1_2_4_a_voided_sale_award_never_passes_below_the_reserve():
    """The pass-on used to skip the reserve check the first award made: the
    second rank won a one-time-quote sale at 11,000 under a 15,000 reserve."""
    rules = RuleSet(name="t", evaluation="highest", post_qualification=True)
    m = Market()
    m.create("T1", "sealed", rules=rules, deposit=500, start_price=10_000, increment=1)
    m.set_reserve("T1", 15_000)
    for b in "abc":
        m.register("T1", b)
    m.tick(START)
    amounts = {"a": 20_000, "b": 11_000, "c": 16_000}
    for b, amt in amounts.items():
        c = seal_commitment("T1", amt, b)
        m.cmd(SubmitSealed, bidder_origin(b), None, lot_id="T1", commitment=c)
    m.tick(END)
    for b, amt in amounts.items():
        m.cmd(RevealSealed, bidder_origin(b), None, lot_id="T1", amount_fen=amt, nonce=b)
    assert one(m.tick(END + rules.reveal_window_ns), LotSold).bidder_code == "0001"
    out = m.cmd(QualifyWinner, STAFF, None, lot_id="T1", passed=False)
    assert one(out, AwardVoided).passes_to == "0003"  # 16,000 >= the reserve
    assert one(out, LotSold).price_fen == 16_000
    out = m.cmd(QualifyWinner, STAFF, None, lot_id="T1", passed=False)
    assert one(out, AwardVoided).passes_to == ""  # 11,000 < 15,000
    assert of_type(out, LotSold) == []
    assert one(out, LotUnsold).reason == "voided" and m.lot("T1").status == UNSOLD


# ------------------------------------------------------------ registry: refunds, draws
def test_R_5_2_5_losers_refunded_once_after_the_close_never_the_winner():
    m = Market()
    m.create_english("L1", deposit=200, start_price=1_000, increment=100)
    for b in "abc":
        m.register("L1", b)
    m.tick(START)
    m.bid("L1", "a", 1_000)
    early = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="a", amount_fen=200)
    assert reject_code(early) == Reject.refund_not_due  # still bidding
    m.bid("L1", "b", 1_100)
    m.tick(m.lot("L1").deadline_ns)
    out = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="a", amount_fen=200)
    assert one(out, DepositRefunded).bidder_code == "0001"
    again = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="a", amount_fen=200)
    assert reject_code(again) == Reject.deposit_already_settled
    winner = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="b", amount_fen=200)
    assert reject_code(winner) == Reject.refund_not_due
    wrong = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="c", amount_fen=199)
    assert reject_code(wrong) == Reject.invalid_terms
    assert (
        reject_code(
            m.cmd(
                RefundDeposit, bidder_origin("c"), None, lot_id="L1", bidder_id="c", amount_fen=200
            )
        )
        == Reject.not_authorized
    )


def test_R_5_2_6_a_forfeited_deposit_is_never_refunded():
    m = sold_english()
    m.tick(END + PAY)  # default: b's deposit forfeited
    out = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="b", amount_fen=200)
    assert reject_code(out) == Reject.deposit_already_settled
    ok = m.cmd(RefundDeposit, SERVICE, None, lot_id="L1", bidder_id="a", amount_fen=200)
    assert reject_code(ok) is None


def test_R_6_5_expert_draw_commit_then_reveal_checks_the_seed():
    m = Market()
    m.create_english("L1")
    seed = "5eed" * 8
    pool = "ab" * 32
    commit = dict(lot_id="L1", draw_id="d1", seed_hash=seed_hash(seed), pool_hash=pool)
    one(m.cmd(CommitExpertDraw, SERVICE, None, **commit), ExpertDrawCommitted)
    assert reject_code(m.cmd(CommitExpertDraw, SERVICE, None, **commit)) == Reject.draw_exists
    bad = m.cmd(RevealExpertDraw, SERVICE, None, draw_id="d1", seed_hex="00" * 16, drawn_hash=pool)
    assert reject_code(bad) == Reject.seed_mismatch
    out = m.cmd(RevealExpertDraw, SERVICE, None, draw_id="d1", seed_hex=seed, drawn_hash="cd" * 32)
    assert one(out, ExpertDrawRevealed).seed_hex == seed
    assert (
        reject_code(
            m.cmd(RevealExpertDraw, SERVICE, None, draw_id="d9", seed_hex=seed, drawn_hash=pool)
        )
        == Reject.unknown_draw
    )
