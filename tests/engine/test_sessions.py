"""client_seq per (origin, session), the payload digest of the retry memory, the
bound of sessions per origin, and older ledgers' retry answers (issue 12.3)."""

from __future__ import annotations

from engine.codes import Reject
from engine.messages import (
    ENGINE_VERSION,
    SESSIONS_PER_IDENTITY,
    BidAccepted,
    CommandRetried,
    FreezeLot,
    LotFrozen,
    PlaceBid,
    RuntimeStarted,
    decode_command,
    encode_command,
)
from engine.router import Router
from tests.engine.helpers import STAFF, START, SYSTEM, Market, one, rejected, retried

ALICE, BOB = "ID-alice-7f", "ID-bob-3c"
A = f"bidder:{ALICE}"


def open_market() -> Market:
    m = Market()
    m.create_english("L1")
    m.register("L1", ALICE)
    m.register("L1", BOB)
    m.tick(START)
    return m


def bid(seq: int, amount: int, session: str = "") -> PlaceBid:
    return PlaceBid(
        origin=A, client_seq=seq, lot_id="L1", amount_fen=amount, client_session=session
    )


def test_default_session_encodes_as_before_and_old_bytes_decode() -> None:
    """A default-session command has no client_session key: older ledger bytes and
    new ones of the default session are the same, so old ledgers decode unchanged."""
    plain = PlaceBid(origin=A, client_seq=3, lot_id="L1", amount_fen=1000)
    assert b"client_session" not in encode_command(plain)
    assert decode_command(encode_command(plain)) == plain
    named = bid(3, 1000, "tab-1")
    assert decode_command(encode_command(named)).client_session == "tab-1"


def test_sessions_of_one_origin_number_independently() -> None:
    m = open_market()
    one(m.apply(bid(1_000_000, 1000, "admin")), BidAccepted)
    # the default session starts at 1 although "admin" is far ahead: not stale
    one(m.apply(bid(1, 1100)), BidAccepted)
    one(m.apply(bid(2, 1200, "tab-a")), BidAccepted)
    # each session's retry is its own: same seq, same payload
    assert retried(m.apply(bid(1, 1100))).code == 0
    assert rejected(m.apply(bid(1, 1100, "tab-a"))).code == Reject.client_seq_stale
    sessions = m.state.origins[A].sessions
    assert {k: s.high_seq for k, s in sessions.items()} == {"admin": 1_000_000, "": 1, "tab-a": 2}


def test_reused_seq_with_other_payload_is_refused_for_staff_too() -> None:
    m = open_market()
    freeze = FreezeLot(
        origin=STAFF, client_seq=100, lot_id="L1", reason="check", client_session="s"
    )
    one(m.apply(freeze), LotFrozen)
    seq = m.router.applied
    other = FreezeLot(origin=STAFF, client_seq=100, lot_id="L1", reason="other", client_session="s")
    r = rejected(m.apply(other))
    assert (r.code, r.detail) == (
        Reject.client_seq_reused,
        f"client_seq 100 was used by entry {seq} for another command",
    )
    # the same command again is still its retry, after the refused reuse too
    r2 = one(m.apply(freeze), CommandRetried)
    assert (r2.original_seq, r2.code) == (seq, 0)
    # a refused command's digest counts too: its retry gets the refusal, not a reuse
    low = bid(1, 1150)
    assert rejected(m.apply(low)).code == Reject.lot_frozen
    assert retried(m.apply(low)).code == Reject.lot_frozen
    assert rejected(m.apply(bid(1, 1300))).code == Reject.client_seq_reused


def test_oldest_session_by_last_use_is_evicted_past_the_bound() -> None:
    m = open_market()
    m.apply(RuntimeStarted(SYSTEM, 0, engine_version=ENGINE_VERSION, sessions_per_identity=3))
    assert m.state.sessions_per_identity == 3
    one(m.apply(bid(1, 1000, "s1")), BidAccepted)
    one(m.apply(bid(1, 1100, "s2")), BidAccepted)
    one(m.apply(bid(1, 1200, "s3")), BidAccepted)
    one(m.apply(bid(2, 1300, "s1")), BidAccepted)  # s1 used last: s2 is now the oldest
    assert retried(m.apply(bid(1, 1100, "s2"))).code == 0  # a retry is no use
    one(m.apply(bid(1, 1400, "s4")), BidAccepted)
    assert list(m.state.origins[A].sessions) == ["s1", "s3", "s4"]
    # the evicted session comes back as a new one: its numbering starts afresh
    one(m.apply(bid(1, 1500, "s2")), BidAccepted)
    assert list(m.state.origins[A].sessions) == ["s1", "s4", "s2"]
    # other origins are not affected by this origin's bound
    m.apply(PlaceBid(origin=f"bidder:{BOB}", client_seq=1, lot_id="L1", amount_fen=1600))
    assert list(m.state.origins[f"bidder:{BOB}"].sessions) == [""]


def test_default_bound_and_malformed_session() -> None:
    m = open_market()
    assert m.state.sessions_per_identity == SESSIONS_PER_IDENTITY
    for bad in ("has space", "x" * 65, "semi;colon"):
        r = rejected(m.apply(bid(1, 1000, bad)))
        assert (r.code, r.detail) == (Reject.invalid_origin, "malformed session")
    assert A not in m.state.origins or not m.state.origins[A].sessions
    one(m.apply(bid(1, 1000, "A-z_0.9" + "x" * 57)), BidAccepted)  # 64 characters


def test_ledger_of_an_engine_before_sessions_keeps_its_retry_answers() -> None:
    """Until a newer build starts, a reused client_seq replays as the retry the
    older engine recorded (replay compares events byte for byte)."""
    m = open_market()
    m.apply(RuntimeStarted(SYSTEM, 0, engine_version=6))
    one(m.apply(bid(1, 1000)), BidAccepted)
    assert retried(m.apply(bid(1, 9000))).code == 0
    m.apply(RuntimeStarted(SYSTEM, 0, engine_version=ENGINE_VERSION))
    assert rejected(m.apply(bid(1, 9000))).code == Reject.client_seq_reused


def test_sessions_survive_snapshot_and_replay_to_the_same_hash() -> None:
    m = open_market()
    m.apply(bid(5, 1000, "tab"))
    m.apply(bid(1, 1100))
    restored = Market(Router.restore(m.router.snapshot()), now=m.now)
    assert restored.router.state_hash() == m.router.state_hash()
    assert retried(restored.apply(bid(5, 1000, "tab"))).code == 0
    assert rejected(restored.apply(bid(5, 1200, "tab"))).code == Reject.client_seq_reused
    replayed = Router()
    for cmd, at in m.log:
        replayed.apply(decode_command(encode_command(cmd)), at)
    assert replayed.state_hash() == m.router.state_hash()
