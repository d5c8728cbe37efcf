"""Deposits derived from the ledger: over a whole simulated judicial day every
losing bidder's deposit is refunded exactly once and each winner's applied
once; a registry restarted at random points ends equal to one that never
stopped; settlement paths (paid, default, overdue, failed qualification,
termination) end each deposit in the right state exactly once."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from engine.messages import (
    BidderRegistered,
    ConfirmDeposit,
    ConfirmPayment,
    DeclareDefault,
    DepositConfirmed,
    LotSold,
    PlaceBid,
    QualifyWinner,
    RegisterBidder,
    TerminateLot,
    decode_command,
    decode_events,
)
from engine.rules import JUDICIAL_SETTLED, RuleSet
from ledger.record import decode_body
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Follower
from services.registry.projection import RegistryProjection, RegistryReader
from tests.services.supervision_market import HOUR_NS, MINUTE_NS, Market


@pytest.fixture(scope="module")
def judicial_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulators.run import simulate

    d = tmp_path_factory.mktemp("jday") / "ledger"
    simulate("judicial-day", 1, d)
    return d


def follow_all(ledger: LedgerStore, path: Path) -> None:
    with ServiceStore.open(path) as ss:
        Follower("ref", ledger, ss, [RegistryProjection()]).catch_up()


def follow_with_restarts(ledger: LedgerStore, path: Path, rng: random.Random) -> int:
    """Open, apply a few random-sized chunks, close -- until caught up.  A kill
    inside a chunk is a chunk that never committed, so this covers it."""
    restarts = 0
    while True:
        with ServiceStore.open(path) as ss:
            f = Follower("registry", ledger, ss, [RegistryProjection()])
            for _ in range(rng.randint(1, 4)):
                if not f.step(rng.randint(1, 5000)):
                    return restarts
        restarts += 1


def dump(path: Path) -> tuple[object, list[tuple[bytes, bytes, bytes]]]:
    with ServiceStore.open(path) as ss:
        return ss.position(), list(RegistryReader(ss).dump())


def expected_outcomes(ledger: LedgerStore) -> tuple[dict, dict, set]:
    """Independently of the projection: confirmed deposits and winners per lot."""
    bidder_of: dict[tuple[str, str], str] = {}
    confirmed: dict[tuple[str, str], int] = {}
    winners: dict[str, str] = {}
    closed: set[str] = set()
    for _seq, _p, _h, raw in ledger.iter_entries(1, ledger.last_seq()):
        body = decode_body(raw)
        cmd = decode_command(body.command)
        for ev in decode_events(body.events):
            if type(ev) is BidderRegistered and type(cmd) is RegisterBidder:
                bidder_of[ev.lot_id, ev.bidder_code] = cmd.bidder_id
            elif type(ev) is DepositConfirmed and type(cmd) is ConfirmDeposit:
                confirmed[ev.lot_id, cmd.bidder_id] = cmd.amount_fen
            elif type(ev) is LotSold:
                winners[ev.lot_id] = bidder_of[ev.lot_id, ev.bidder_code]
            if type(ev).__name__ in ("LotSold", "LotUnsold", "LotTerminated"):
                closed.add(ev.lot_id)
    return confirmed, winners, closed


def test_judicial_day_refunds_once_applies_once_and_survives_restarts(
    judicial_day: Path, tmp_path: Path
) -> None:
    rng = random.Random(11)
    with LedgerStore.open(judicial_day, readonly=True) as ledger:
        follow_all(ledger, tmp_path / "ref")
        restarts = follow_with_restarts(ledger, tmp_path / "restarted", rng)
        confirmed, winners, closed = expected_outcomes(ledger)
        last = ledger.last_seq()
    assert restarts >= 5
    ref, restarted = dump(tmp_path / "ref"), dump(tmp_path / "restarted")
    assert ref[0] == restarted[0] and ref[0].seq == last  # type: ignore[attr-defined]
    assert ref[1] == restarted[1]

    with ServiceStore.open(tmp_path / "restarted") as ss:
        reader = RegistryReader(ss)
        steps = reader.steps(0, 10**7)
        regs = {(r.lot_id, r.bidder_id): r for r in reader.all_registrations()}
    finals = Counter((s.lot_id, s.bidder_id, s.state) for s in steps if s.state != "confirmed")
    assert all(n == 1 for n in finals.values()), [k for k, n in finals.items() if n > 1]
    per_deposit = Counter((lot, b) for lot, b, _state in finals)
    assert all(n == 1 for n in per_deposit.values())  # one final step per deposit, never two
    applied = refunded = 0
    for (lot, bidder), amount in confirmed.items():
        reg = regs[lot, bidder]
        assert reg.amount_fen == amount
        if lot not in closed:
            assert reg.deposit == "confirmed" and (lot, bidder) not in per_deposit
        elif winners.get(lot) == bidder:
            assert finals[lot, bidder, "applied"] == 1 and reg.deposit == "applied"
            applied += 1
        else:
            assert finals[lot, bidder, "refunded"] == 1 and reg.deposit == "refunded"
            refunded += 1
    assert applied == len(winners) > 900 and refunded > 9000
    assert not any(s.state == "forfeited" for s in steps)  # no settlement tracked that day
    assert {s.bidder_id for s in steps} <= {b for _, b in confirmed}


def test_settlement_paths(tmp_path: Path) -> None:
    m = Market(tmp_path / "ledger")
    t = m.now_ns
    lots = {
        "PAID": JUDICIAL_SETTLED,
        "DEFAULT": JUDICIAL_SETTLED,
        "OVERDUE": JUDICIAL_SETTLED,
        "QUAL": RuleSet(post_qualification=True),
        "TERM": RuleSet(),
        "OPEN": RuleSet(),
    }
    bidders = ("a", "b", "c")
    for lot, rules in lots.items():
        end = t + MINUTE_NS + (10 if lot == "OPEN" else 4) * HOUR_NS
        m.lot(lot, rules=rules, t_ns=t, end_ns=end)
    for lot in lots:
        for b in bidders:
            m.staff(RegisterBidder, lot, b, t_ns=t)
            m.staff(ConfirmDeposit, lot, b, 10_000 + ord(b), t_ns=t)
    start = t + MINUTE_NS
    for lot in lots:
        m.bidder("a", PlaceBid, lot, 100_000, t_ns=start + MINUTE_NS)
        m.bidder("b", PlaceBid, lot, 101_000, t_ns=start + 2 * MINUTE_NS)
    m.staff(TerminateLot, "TERM", "court order", t_ns=start + 3 * MINUTE_NS)
    m.fire(start + 5 * HOUR_NS)  # the lots close; b wins those with bids
    m.journal.commit()
    ss = ServiceStore.open(tmp_path / "registry")
    f = Follower("registry", m.store, ss, [RegistryProjection()])
    f.catch_up()
    r = RegistryReader(ss)

    def states(lot: str) -> dict[str, str]:
        return {g.bidder_id: g.deposit for g in r.registrations(lot)}

    assert states("PAID") == {"a": "confirmed", "b": "held", "c": "confirmed"}  # not final yet
    assert states("TERM") == {"a": "refunded", "b": "refunded", "c": "refunded"}
    assert states("OPEN") == {"a": "confirmed", "b": "confirmed", "c": "confirmed"}

    later = start + 6 * HOUR_NS
    m.staff(ConfirmPayment, "PAID", t_ns=later)
    m.staff(DeclareDefault, "DEFAULT", "walked away", t_ns=later)
    m.staff(QualifyWinner, "QUAL", False, "forged licence", t_ns=later)
    m.fire(later + 31 * 24 * HOUR_NS)  # OVERDUE's payment window runs out
    m.journal.commit()
    f.catch_up()
    assert states("PAID") == {"a": "refunded", "b": "applied", "c": "refunded"}
    assert states("DEFAULT") == {"a": "refunded", "b": "forfeited", "c": "refunded"}
    assert states("OVERDUE") == {"a": "refunded", "b": "forfeited", "c": "refunded"}
    assert states("QUAL") == {"a": "refunded", "b": "forfeited", "c": "refunded"}
    forfeits = {g.reason for lot in ("DEFAULT", "OVERDUE", "QUAL") for g in r.registrations(lot)}
    assert {"walked away", "payment_overdue", "failed_qualification"} <= forfeits
    per = defaultdict(list)
    for s in r.steps(0, 10_000):
        per[s.lot_id, s.bidder_id].append(s.state)
    for (lot, _b), seen in per.items():
        assert seen[0] == "confirmed" and len([x for x in seen if x != "held"]) <= 2, (lot, seen)
    assert r.lot("PAID").status == "settled"  # type: ignore[union-attr]
    assert r.lot("PAID").settles and not r.lot("TERM").settles  # type: ignore[union-attr]
    ss.close()
    m.close()
