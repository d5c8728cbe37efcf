"""The router's envelope: retries, authorisation, lazy deadlines, outage suspension,
snapshots (RULES.md R-0.1, R-0.9, R-0.10, R-1.8.1)."""

from __future__ import annotations

import pytest

from engine.codes import Reject
from engine.messages import (
    BidAccepted,
    CreateLot,
    FreezeLot,
    LotFrozen,
    LotOpened,
    LotResumed,
    LotSold,
    PlaceBid,
    RegisterBidder,
    SuspendOverdue,
    Tick,
)
from engine.router import RECENT_OUTCOMES, Router
from engine.state import FROZEN, OPEN, PUBLISHED, SOLD
from tests.engine.helpers import (
    END,
    HOUR,
    MIN,
    SERVICE,
    STAFF,
    START,
    SYSTEM,
    Market,
    business_state,
    none_of,
    one,
    reject_code,
    rejected,
    retried,
)

ALICE, BOB = "ID-alice-7f", "ID-bob-3c"


def open_market() -> Market:
    m = Market()
    m.create_english("L1")
    m.register("L1", ALICE)
    m.register("L1", BOB)
    m.tick(START)
    return m


# ------------------------------------------------------------------ retries
def test_retry_returns_original_outcome_and_changes_nothing() -> None:
    m = open_market()
    bid = PlaceBid(origin=f"bidder:{ALICE}", client_seq=7, lot_id="L1", amount_fen=1000)
    one(m.apply(bid), BidAccepted)
    seq_of_bid = m.router.applied
    before = business_state(m.router)
    again = m.apply(bid)
    r = retried(again)
    assert (r.lot_id, r.client_seq, r.original_seq, r.code) == ("L1", 7, seq_of_bid, 0)
    assert len(again) == 1
    assert business_state(m.router) == before
    assert m.lot("L1").bid_count == 1
    # a refused command's retry reports the refusal code, again without effect
    low = PlaceBid(origin=f"bidder:{BOB}", client_seq=3, lot_id="L1", amount_fen=1150)
    assert reject_code(m.apply(low)) == Reject.bid_not_increment_multiple
    before = business_state(m.router)
    assert retried(m.apply(low)).code == Reject.bid_not_increment_multiple
    assert business_state(m.router) == before


def test_retry_state_hash_moves_only_by_clock_and_ledger_count() -> None:
    """The state hash covers now_ns and applied (the ledger sequence), which every
    command moves -- retries included; the business state is what must not change."""
    m = open_market()
    bid = PlaceBid(origin=f"bidder:{ALICE}", client_seq=1, lot_id="L1", amount_fen=1000)
    m.apply(bid, at=START + MIN)
    twin = Router.restore(m.router.snapshot())
    m.apply(bid, at=START + 2 * MIN)
    twin.state.now_ns, twin.state.applied = START + 2 * MIN, twin.state.applied + 1
    assert m.router.state_hash() == twin.state_hash()


def test_same_seq_with_different_payload_is_refused_not_a_retry() -> None:
    m = open_market()
    m.apply(PlaceBid(origin=f"bidder:{ALICE}", client_seq=1, lot_id="L1", amount_fen=1000))
    seq = m.router.applied
    out = m.apply(PlaceBid(origin=f"bidder:{ALICE}", client_seq=1, lot_id="L1", amount_fen=9000))
    r = rejected(out)
    assert (r.code, r.detail) == (
        Reject.client_seq_reused,
        f"client_seq 1 was used by entry {seq} for another command",
    )
    assert m.lot("L1").price_fen == 1000


def test_client_seq_stale_beyond_memory() -> None:
    m = open_market()
    origin = f"bidder:{ALICE}"
    n = 2 * RECENT_OUTCOMES + 1  # the memory is trimmed to the last RECENT_OUTCOMES here
    for seq in range(1, n + 1):
        m.apply(PlaceBid(origin=origin, client_seq=seq, lot_id="L1", amount_fen=1000 + 100 * seq))
    old = m.apply(PlaceBid(origin=origin, client_seq=1, lot_id="L1", amount_fen=1))
    r = rejected(old)
    assert (r.code, r.detail) == (Reject.client_seq_stale, str(n))
    seq = n - RECENT_OUTCOMES + 1
    kept = m.apply(
        PlaceBid(origin=origin, client_seq=seq, lot_id="L1", amount_fen=1000 + 100 * seq)
    )
    assert retried(kept).code == 0
    # an unknown, never-sent low seq is stale too; 0 is never valid outside system
    assert (
        reject_code(
            m.apply(PlaceBid(origin=f"bidder:{BOB}", client_seq=0, lot_id="L1", amount_fen=1))
        )
        == Reject.client_seq_stale
    )


def test_retry_survives_snapshot_restore() -> None:
    m = open_market()
    bid = PlaceBid(origin=f"bidder:{ALICE}", client_seq=5, lot_id="L1", amount_fen=1000)
    m.apply(bid)
    seq = m.router.applied
    restored = Market(Router.restore(m.router.snapshot()), now=m.now)
    assert restored.router.state_hash() == m.router.state_hash()
    r = retried(restored.apply(bid))
    assert (r.client_seq, r.original_seq, r.code) == (5, seq, 0)
    assert restored.lot("L1").bid_count == 1


def test_retry_does_not_bypass_authorisation_outcome() -> None:
    m = open_market()
    cmd = FreezeLot(origin=f"bidder:{ALICE}", client_seq=1, lot_id="L1", reason="x")
    assert reject_code(m.apply(cmd)) == Reject.not_authorized
    assert retried(m.apply(cmd)).code == Reject.not_authorized
    assert m.lot("L1").status == OPEN


# ------------------------------------------------------------------ authorisation
def test_auth_bidders_cannot_run_staff_commands() -> None:
    m = open_market()
    b = f"bidder:{ALICE}"
    for cmd in (
        FreezeLot(origin=b, client_seq=1, lot_id="L1", reason="x"),
        CreateLot(
            origin=b,
            client_seq=2,
            lot_id="L2",
            mechanism="english",
            title="t",
            start_price_fen=1,
            increment_fen=1,
            start_ns=START,
            end_ns=END,
        ),
        RegisterBidder(origin=b, client_seq=3, lot_id="L1", bidder_id="ID-sock-01"),
    ):
        r = rejected(m.apply(cmd))
        assert (r.code, r.detail) == (Reject.not_authorized, "bidder")
    assert m.lot("L1").status == OPEN and "L2" not in m.state.lots
    assert "ID-sock-01" not in m.lot("L1").bidders


def test_auth_staff_cannot_bid() -> None:
    m = open_market()
    out = m.apply(PlaceBid(origin=STAFF, client_seq=100, lot_id="L1", amount_fen=1000))
    assert reject_code(out) == Reject.not_authorized
    out = m.apply(PlaceBid(origin=SERVICE, client_seq=100, lot_id="L1", amount_fen=1000))
    assert reject_code(out) == Reject.not_authorized
    assert m.lot("L1").bid_count == 0


def test_auth_service_cannot_run_staff_commands() -> None:
    m = open_market()
    assert reject_code(m.freeze("L1", origin=SERVICE)) == Reject.not_authorized
    assert reject_code(m.terminate("L1", origin=SERVICE)) == Reject.not_authorized


@pytest.mark.parametrize("origin", [STAFF, SERVICE, f"bidder:{ALICE}"])
def test_auth_non_system_cannot_tick(origin: str) -> None:
    m = open_market()
    assert reject_code(m.apply(Tick(origin=origin, client_seq=99))) == Reject.not_authorized


def test_auth_system_cannot_run_other_commands() -> None:
    m = open_market()
    out = m.apply(PlaceBid(origin=SYSTEM, client_seq=0, lot_id="L1", amount_fen=1000))
    assert reject_code(out) == Reject.not_authorized
    out = m.apply(FreezeLot(origin=SYSTEM, client_seq=0, lot_id="L1", reason="x"))
    assert reject_code(out) == Reject.not_authorized
    assert m.lot("L1").status == OPEN


@pytest.mark.parametrize("origin", ["", "bidder", "bidder:", "admin:root", "system:x", ":x"])
def test_auth_malformed_origin(origin: str) -> None:
    m = open_market()
    out = m.apply(PlaceBid(origin=origin, client_seq=1, lot_id="L1", amount_fen=1000))
    assert reject_code(out) == Reject.invalid_origin
    assert m.lot("L1").bid_count == 0


def test_time_never_moves_backwards() -> None:
    m = open_market()
    with pytest.raises(AssertionError):
        m.router.apply(Tick(origin=SYSTEM, client_seq=0), m.now - 1)


# ------------------------------------------------------------------ lazy deadlines
def test_lazy_deadlines_fire_in_deadline_then_lot_order() -> None:
    m = Market()
    m.create_english("B", end=END)
    m.create_english("A", end=END + 1)
    m.create_english("C", end=END)
    out = m.tick(END + HOUR)
    opened = [(e.lot_id, e.at_ns) for e in out if isinstance(e, LotOpened)]
    assert opened == [("A", START), ("B", START), ("C", START)]
    closed = [(e.lot_id, e.closed_at_ns) for e in out if hasattr(e, "closed_at_ns")]
    assert closed == [("B", END), ("C", END), ("A", END + 1)]


def test_lazy_deadline_fires_even_for_a_refused_command() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    out = m.apply(Tick(origin=STAFF, client_seq=500), END + 1)
    assert [type(e).__name__ for e in out] == ["LotSold", "CommandRejected"]


# ------------------------------------------------------------------ outage
def test_suspend_overdue_freezes_instead_of_closing() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    last_seen = START + 10 * HOUR
    m.tick(last_seen)  # the last command before the outage
    out = m.suspend_overdue(at=END + 2 * HOUR)
    fr = one(out, LotFrozen)
    assert (fr.system, fr.at_ns, fr.remaining_ns, fr.reason) == (
        True,
        last_seen,
        END - last_seen,
        "system_failure",
    )
    none_of(out, LotSold)
    assert m.lot("L1").status == FROZEN
    back = END + 3 * HOUR
    res = one(m.resume("L1", "restarted", at=back), LotResumed)
    assert res.end_ns == back + (END - last_seen)
    assert reject_code(m.bid("L1", BOB, 1100)) is None
    sold = one(m.tick(back + (END - last_seen)), LotSold)
    assert sold.bidder_code == "0002"


def test_suspend_overdue_leaves_lots_not_yet_due() -> None:
    m = Market()
    m.create_english("A", end=END)
    m.create_english("B", end=END + 10 * HOUR)
    m.tick(START + MIN)
    out = m.suspend_overdue(at=END + HOUR)
    assert [e.lot_id for e in out if isinstance(e, LotFrozen)] == ["A"]
    assert m.lot("B").status == OPEN


def test_suspend_overdue_pending_lot_stays_published_on_resume() -> None:
    m = Market()
    m.create_english("L1")
    last_seen = m.now
    m.suspend_overdue(at=START + HOUR)
    assert m.lot("L1").status == FROZEN
    back = START + 2 * HOUR
    m.resume("L1", at=back)
    assert m.lot("L1").status == PUBLISHED
    new_start = back + (START - last_seen)  # the time left to the start, as last seen
    assert m.lot("L1").start_ns == new_start
    assert m.tick(new_start - 1) == []
    assert one(m.tick(new_start), LotOpened).at_ns == new_start


def test_suspend_overdue_without_overdue_lots_is_a_no_op() -> None:
    m = open_market()
    assert m.suspend_overdue(at=START + MIN) == []


@pytest.mark.parametrize("origin", [f"bidder:{BOB}", STAFF, "garbage"])
def test_suspend_overdue_only_from_system(origin: str) -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    out = m.apply(SuspendOverdue(origin=origin, client_seq=10_000), END + MIN)
    assert reject_code(out) in (Reject.not_authorized, Reject.invalid_origin)
    none_of(out, LotFrozen)
    assert m.lot("L1").status == SOLD


# ------------------------------------------------------------------ snapshots
def test_snapshot_restore_same_hash_and_same_future() -> None:
    m = open_market()
    m.bid("L1", ALICE, 1000)
    m.bid("L1", BOB, 1100, at=END - MIN)
    twin = Market(Router.restore(m.router.snapshot()), now=m.now)
    twin.seqs = dict(m.seqs)
    assert twin.router.state_hash() == m.router.state_hash()
    assert twin.router.next_deadline_ns() == m.router.next_deadline_ns() == END + 4 * MIN
    a = m.bid("L1", ALICE, 1200, at=END + MIN)
    b = twin.bid("L1", ALICE, 1200, at=END + MIN)
    assert a == b
    assert m.tick(END + HOUR) == twin.tick(END + HOUR)
    assert twin.router.state_hash() == m.router.state_hash()


def test_every_command_and_event_is_in_its_union():
    """A Struct missing from AnyCommand / AnyEvent encodes fine and then cannot be
    decoded: replay, views and followers would fail on the first such entry."""
    import typing

    from engine import messages

    def subclasses(base: type) -> set[type]:
        found: set[type] = set()
        for cls in base.__subclasses__():
            found |= {cls} | subclasses(cls)
        return found

    commands = set(typing.get_args(messages.AnyCommand))
    events = set(typing.get_args(messages.AnyEvent))
    assert subclasses(messages.Command) - commands == set()
    assert subclasses(messages.Event) - events == set()


def test_codes_of_a_bidder_follow_registrations_and_survive_restore():
    m = Market()
    m.create_english("L1")
    m.create_english("L2")
    m.register("L1", "alice")
    m.register("L2", "bob")
    m.register("L2", "alice")
    assert m.router.codes_of("alice") == {"L1": "0001", "L2": "0002"}
    assert m.router.codes_of("nobody") == {}
    restored = Router.restore(m.router.snapshot())
    assert restored.codes_of("alice") == m.router.codes_of("alice")
