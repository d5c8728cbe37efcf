"""Dutch (descending clock) auction, RULES.md §2.5: a test per rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codes import Reject
from engine.messages import (
    AcceptPrice,
    BidAccepted,
    CreateLot,
    LotOpened,
    LotSold,
    LotUnsold,
    PriceTicked,
    decode_command,
    encode_command,
    encode_events,
)
from engine.router import Router
from engine.rules import DUTCH, RuleSet
from engine.state import FROZEN, SOLD, UNSOLD
from tests.engine.helpers import (
    END,
    MIN,
    STAFF,
    START,
    Market,
    bidder_origin,
    none_of,
    of_type,
    one,
    reject_code,
)

TICK = DUTCH.tick_ns  # 30 s
START_PRICE, STEP, FLOOR = 10_000, 500, 7_000  # ticks 0..6 offer 10,000 .. 7,000


def dutch_market(
    floor: int = FLOOR, reserve: int = 0, bidders: tuple[str, ...] = ("a", "b")
) -> Market:
    m = Market()
    m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="D1",
        mechanism="dutch",
        title="confiscated car",
        start_price_fen=START_PRICE,
        increment_fen=STEP,
        start_ns=START,
        end_ns=END,
        rules=DUTCH,
        floor_fen=floor,
    )
    m.publish("D1")
    if reserve:
        m.set_reserve("D1", reserve)
    for b in bidders:
        m.register("D1", b)
    return m


def accept(m: Market, bidder: str, tick: int, at: int | None = None):  # type: ignore[no-untyped-def]
    return m.cmd(AcceptPrice, bidder_origin(bidder), at, lot_id="D1", tick=tick)


def test_R_2_5_1_parameters_validated():
    m = Market()
    out = m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="D0",
        mechanism="dutch",
        title="t",
        start_price_fen=100,
        increment_fen=10,
        start_ns=START,
        end_ns=END,
        rules=RuleSet(),
        floor_fen=50,
    )
    assert reject_code(out) == Reject.invalid_terms  # no tick length
    out = m.cmd(
        CreateLot,
        STAFF,
        None,
        lot_id="D0",
        mechanism="dutch",
        title="t",
        start_price_fen=100,
        increment_fen=10,
        start_ns=START,
        end_ns=END,
        rules=DUTCH,
        floor_fen=200,
    )
    assert reject_code(out) == Reject.invalid_terms  # floor above the start


def test_R_2_5_2_price_falls_one_step_per_tick():
    m = dutch_market()
    opened = m.tick(START)
    assert one(opened, LotOpened).end_ns == START + 7 * TICK
    assert one(opened, PriceTicked).price_fen == START_PRICE
    ticks = m.tick(START + 3 * TICK)  # lazily: three ticks fire, each at its own time
    assert [(t.tick, t.price_fen, t.at_ns) for t in of_type(ticks, PriceTicked)] == [
        (1, 9_500, START + TICK),
        (2, 9_000, START + 2 * TICK),
        (3, 8_500, START + 3 * TICK),
    ]


def test_R_2_5_2_first_acceptance_wins_at_the_current_price():
    m = dutch_market()
    m.tick(START + 2 * TICK)
    out = accept(m, "a", 2)
    assert one(out, BidAccepted).amount_fen == 9_000
    sold = one(out, LotSold)
    assert (sold.bidder_code, sold.price_fen) == ("0001", 9_000)
    assert m.lot("D1").status == SOLD


def test_R_2_5_3_floor_reached_unsold_never_below_floor():
    m = dutch_market()
    out = m.tick(START + 20 * TICK)
    prices = [t.price_fen for t in of_type(out, PriceTicked)]
    assert min(prices) == FLOOR
    unsold = one(out, LotUnsold)
    assert unsold.closed_at_ns == START + 7 * TICK and m.lot("D1").status == UNSOLD


def test_R_2_5_3_secret_reserve_ends_the_clock_and_is_only_disclosed_at_the_close():
    m = dutch_market(reserve=8_200)
    out = m.tick(START + 20 * TICK)
    assert min(t.price_fen for t in of_type(out, PriceTicked)) == 8_500
    for ev in out:
        if not isinstance(ev, LotUnsold):
            assert b"8200" not in encode_events([ev])
    assert one(out, LotUnsold).reserve_fen == 8_200


def test_R_2_5_4_simultaneous_acceptances_earliest_sequence_wins():
    m = dutch_market()
    m.tick(START + TICK)
    t = START + TICK + 5
    first = accept(m, "b", 1, at=t)
    second = accept(m, "a", 1, at=t)  # same server time, later sequence number
    assert one(first, LotSold).bidder_code == "0002"
    assert reject_code(second) == Reject.lot_closed


def test_R_2_5_5_stale_tick_refused():
    m = dutch_market()
    m.tick(START + TICK)
    out = accept(m, "a", 0, at=START + TICK + 1)
    assert reject_code(out) == Reject.stale_tick
    none_of(out, LotSold)
    # a command arriving after the next tick's time finds the clock already moved
    out = accept(m, "a", 1, at=START + 2 * TICK)
    assert reject_code(out) == Reject.stale_tick


def test_R_0_3_eligibility_gate_applies_to_acceptance():
    m = dutch_market(bidders=("a",))
    m.register("D1", "c", deposit=False)
    m.tick(START)
    out = accept(m, "c", 0)
    assert reject_code(out) == Reject.bidder_not_eligible
    assert m.lot("D1").status != SOLD


def test_mechanism_mismatch_is_refused_both_ways():
    m = dutch_market()
    m.create_english("E1")
    m.register("E1", "a")
    m.tick(START)
    assert reject_code(m.bid("D1", "a", 10_000)) == Reject.wrong_mechanism
    out = m.cmd(AcceptPrice, bidder_origin("a"), None, lot_id="E1", tick=0)
    assert reject_code(out) == Reject.wrong_mechanism


def test_R_1_8_freeze_keeps_the_remaining_tick_time():
    m = dutch_market()
    m.tick(START + TICK + 10 * 1_000_000_000)  # 10 s into tick 1
    m.freeze("D1", at=START + TICK + 10 * 1_000_000_000)
    assert m.lot("D1").status == FROZEN
    assert reject_code(accept(m, "a", 1)) == Reject.lot_frozen
    back = START + 10 * MIN
    m.resume("D1", at=back)
    out = m.tick(back + 20 * 1_000_000_000)  # the remaining 20 s of tick 1 run out
    assert one(out, PriceTicked).tick == 2


def test_replay_and_snapshot_equivalence():
    m = dutch_market()
    m.tick(START + 2 * TICK)
    accept(m, "b", 2)
    replayed = Router()
    for cmd, at in m.log:
        events = replayed.apply(decode_command(encode_command(cmd)), at)
    assert encode_events(events) == encode_events(m.events[-len(events) :])
    assert replayed.state_hash() == m.router.state_hash()
    restored = Router.restore(m.router.snapshot())
    assert restored.state_hash() == m.router.state_hash()


# ------------------------------------------------------------------ properties


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 9 * TICK), st.sampled_from("abc"), st.integers(-1, 8)),
        max_size=25,
    ),
    st.integers(0, 3),
)
def test_property_award_is_the_first_current_tick_acceptance(actions, reserve_steps):
    """For any acceptances: the winner is the first one naming the tick current at
    its arrival, at that tick's price; the price never falls below floor or reserve."""
    reserve = START_PRICE - reserve_steps * STEP if reserve_steps else 0
    m = dutch_market(reserve=reserve, bidders=("a", "b", "c"))
    expected = None
    for offset, bidder, tick in sorted(actions, key=lambda a: a[0]):
        at = max(m.now + 1, START + offset)
        out = accept(m, bidder, tick, at=at)
        current = m.lot("D1").tick
        sold = of_type(out, LotSold)
        if expected is None and sold:
            expected = (bidder, START_PRICE - current * STEP)
            assert tick == current
        if expected is not None:
            break
    out = m.tick(START + 20 * TICK)
    lot = m.lot("D1")
    codes = {c: b for b, c in ((b, x.code) for b, x in lot.bidders.items())}
    floor = max(FLOOR, reserve)
    if expected is None:
        assert lot.status == UNSOLD
    else:
        assert lot.status == SOLD
        assert (codes[lot.leader_code], lot.price_fen) == expected
    prices = [e.price_fen for e in m.events if isinstance(e, PriceTicked)]
    assert all(p >= floor for p in prices)
