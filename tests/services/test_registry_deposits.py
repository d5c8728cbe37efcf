"""Deposits derived from the ledger: over a whole simulated judicial day every
losing bidder's refund is derived (due) once and queued once, the engine
ledgers exactly one DepositRefunded per loser and none for a winner, and each
winner's deposit is applied once; a registry restarted at random points ends
equal to one that never stopped; settlement paths (paid, default, overdue,
failed qualification, termination) end each deposit in the right state
exactly once."""

from __future__ import annotations

import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import pytest

from engine.codes import Reject
from engine.messages import (
    BidderRegistered,
    CommandRejected,
    CommandRetried,
    ConfirmDeposit,
    ConfirmPayment,
    DeclareDefault,
    DepositConfirmed,
    DepositRefunded,
    LotSold,
    PlaceBid,
    QualifyWinner,
    RefundDeposit,
    RegisterBidder,
    TerminateLot,
    decode_command,
    decode_events,
)
from engine.rules import JUDICIAL_SETTLED, RuleSet
from gateway.sequencer.journal import Journal
from gateway.wire import protocol as p
from gateway.wire.translate import staff_command
from ledger.record import Envelope, decode_body, encode_envelope
from ledger.replay import recover
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Follower
from services.registry.model import Intent
from services.registry.projection import RegistryProjection, RegistryReader
from services.registry.writer import Outbox
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


ORIGIN = "service:registry"
META = encode_envelope(Envelope("service", "registry", "10.0.0.9", "registry"))


def as_command(intent: Intent, client_seq: int | None = None) -> RefundDeposit:
    """The command the gateway makes of an intent's frame (its own mapping)."""
    fields = {k: v for k, v in intent.frame.items() if k != "type"}
    if client_seq is not None:
        fields["client_seq"] = client_seq
    frame = p.RefundDepositFrame(**fields)  # type: ignore[arg-type]
    cmd = staff_command(ORIGIN, frame)
    assert type(cmd) is RefundDeposit
    return cmd


def send_to_engine(ledger_dir: Path, cmds: list[RefundDeposit]) -> list[int]:
    """Ledger ``cmds`` after the ledger's last entry (as the gateway would);
    returns each one's Reject code (0 accepted, -1 retried)."""
    codes = []
    with LedgerStore.open(ledger_dir) as store:
        journal = Journal(store, recover(store), snapshot_every_entries=10**9)
        now = journal.router.state.now_ns
        for i, cmd in enumerate(cmds, 1):
            events = journal.append(cmd, now + i * 1_000, META).events
            rejected = [e for e in events if isinstance(e, CommandRejected)]
            retried = any(isinstance(e, CommandRetried) for e in events)
            codes.append(int(rejected[0].code) if rejected else -1 if retried else 0)
            if journal.full():
                journal.commit()
        journal.commit()
    return codes


def refunds_in_ledger(ledger: LedgerStore) -> Counter[tuple[str, str]]:
    """(lot, bidder id) -> how many DepositRefunded the ledger holds."""
    bidder_of: dict[tuple[str, str], str] = {}
    out: Counter[tuple[str, str]] = Counter()
    for _seq, _p, _h, raw in ledger.iter_entries(1, ledger.last_seq()):
        body = decode_body(raw)
        cmd = decode_command(body.command)
        for ev in decode_events(body.events):
            if type(ev) is BidderRegistered and type(cmd) is RegisterBidder:
                bidder_of[ev.lot_id, ev.bidder_code] = cmd.bidder_id
            elif type(ev) is DepositRefunded:
                out[ev.lot_id, bidder_of[ev.lot_id, ev.bidder_code]] += 1
    return out


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

    losers = {(lot, b) for lot, b in confirmed if lot in closed and winners.get(lot) != b}

    # The close made every loser's refund due, once; the writer queues each once.
    with ServiceStore.open(tmp_path / "restarted") as ss:
        reader = RegistryReader(ss)
        due = reader.due()
        assert {(lot, b) for lot, b, _ in due} == losers and len(due) == len(losers)
        outbox = Outbox(ss, reader)
        queued = outbox.queue_refunds(limit=10**6)
        assert len(queued) == len(losers) and outbox.queue_refunds() == []
        intents = [outbox.intent(cs) for cs in queued]
    assert {(i.frame["lot"], i.frame["bidder"]) for i in intents if i} == losers

    # The engine ledgers them (a copy of the day's ledger); the last one is sent
    # again with its client_seq (a restart before the reply: the original
    # outcome) and once more under a fresh one (deposit_already_settled).
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    shutil.copyfile(judicial_day / "data.mdb", ledger_dir / "data.mdb")
    cmds = [as_command(i) for i in intents if i is not None]
    codes = send_to_engine(ledger_dir, [*cmds, cmds[-1], as_command(intents[-1], queued[-1] + 1)])  # type: ignore[arg-type]
    assert codes[: len(cmds)] == [0] * len(cmds)
    assert codes[len(cmds) :] == [-1, int(Reject.deposit_already_settled)]

    with LedgerStore.open(ledger_dir, readonly=True) as ledger:
        in_ledger = refunds_in_ledger(ledger)
        with ServiceStore.open(tmp_path / "restarted") as ss:
            Follower("registry", ledger, ss, [RegistryProjection()]).catch_up()
            reader = RegistryReader(ss)
            steps = reader.steps(0, 10**7)
            regs = {(r.lot_id, r.bidder_id): r for r in reader.all_registrations()}
            assert reader.due() == [] and Outbox(ss, reader).queue_refunds() == []
    assert set(in_ledger) == losers and set(in_ledger.values()) == {1}  # once each
    assert not set(in_ledger) & {(lot, b) for lot, b in winners.items()}  # winners: none

    skip = ("confirmed", "held", "refund_due")
    finals = Counter((s.lot_id, s.bidder_id, s.state) for s in steps if s.state not in skip)
    assert all(n == 1 for n in finals.values()), [k for k, n in finals.items() if n > 1]
    per_deposit = Counter((lot, b) for lot, b, _state in finals)
    assert all(n == 1 for n in per_deposit.values())  # one final step per deposit, never two
    dues = Counter((s.lot_id, s.bidder_id) for s in steps if s.state == "refund_due")
    assert set(dues) == losers and set(dues.values()) == {1}  # derived once
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
            assert reg.due_seq < reg.settled_seq and reg.reason == ""
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
    assert states("TERM") == {"a": "refund_due", "b": "refund_due", "c": "refund_due"}
    assert states("OPEN") == {"a": "confirmed", "b": "confirmed", "c": "confirmed"}

    later = start + 6 * HOUR_NS
    m.staff(ConfirmPayment, "PAID", t_ns=later)
    m.staff(DeclareDefault, "DEFAULT", "walked away", t_ns=later)
    m.staff(QualifyWinner, "QUAL", False, "forged licence", t_ns=later)
    m.fire(later + 31 * 24 * HOUR_NS)  # OVERDUE's payment window runs out
    m.journal.commit()
    f.catch_up()
    due = {"a": "refund_due", "c": "refund_due"}
    assert states("PAID") == {**due, "b": "applied"}
    assert states("DEFAULT") == {**due, "b": "forfeited"}
    assert states("OVERDUE") == {**due, "b": "forfeited"}
    assert states("QUAL") == {**due, "b": "forfeited"}
    assert states("OPEN") == {**due, "b": "applied"}  # closed meanwhile, not settled
    forfeits = {g.reason for lot in ("DEFAULT", "OVERDUE", "QUAL") for g in r.registrations(lot)}
    assert {"walked away", "payment_overdue", "failed_qualification"} <= forfeits

    # The registry's refunds, through the engine: each due one once.  One is
    # refused (a wrong amount stands in for a wrong derivation): recorded, not resent.
    outbox = Outbox(ss, r)
    queued = [outbox.intent(cs) for cs in outbox.queue_refunds()]
    assert len(queued) == 13 and outbox.queue_refunds() == []
    t = m.now_ns + HOUR_NS
    for i, intent in enumerate(queued):
        cmd = as_command(intent)  # type: ignore[arg-type]
        if (cmd.lot_id, cmd.bidder_id) == ("TERM", "c"):
            cmd = msgspec.structs.replace(cmd, amount_fen=cmd.amount_fen + 1)
        m.send(cmd, t + i, ip="10.0.0.9", device="registry")
    m.journal.commit()
    f.catch_up()
    assert states("TERM") == {"a": "refunded", "b": "refunded", "c": "refund_refused"}
    assert r.registration("TERM", "c").reason.startswith("invalid_terms")  # type: ignore[union-attr]
    assert r.due() == [] and outbox.queue_refunds() == []
    refunded = {"a": "refunded", "c": "refunded"}
    assert states("PAID") == {**refunded, "b": "applied"}
    assert states("DEFAULT") == {**refunded, "b": "forfeited"}
    assert states("OVERDUE") == {**refunded, "b": "forfeited"}
    assert states("QUAL") == {**refunded, "b": "forfeited"}
    assert states("OPEN") == {**refunded, "b": "applied"}
    assert sum(refunds_in_ledger(m.store).values()) == 12
    # a refund of a winner's (applied) deposit is refused refund_not_due; nothing changes
    [cs] = outbox.add(
        [({"type": "refund_deposit", "lot": "PAID", "bidder": "b", "amount_fen": 0}, "x")]
    )
    m.send(as_command(outbox.intent(cs)), m.now_ns + 1)  # type: ignore[arg-type]
    m.journal.commit()
    f.catch_up()
    assert r.own(cs).code == Reject.refund_not_due  # type: ignore[union-attr]
    assert states("PAID") == {**refunded, "b": "applied"}
    per = defaultdict(list)
    for s in r.steps(0, 10_000):
        per[s.lot_id, s.bidder_id].append(s.state)
    for (lot, _b), seen in per.items():
        assert seen[0] == "confirmed", (lot, seen)
        assert len([x for x in seen if x not in ("held", "refund_due")]) <= 2, (lot, seen)
    assert r.lot("PAID").status == "settled"  # type: ignore[union-attr]
    assert r.lot("PAID").settles and not r.lot("TERM").settles  # type: ignore[union-attr]
    ss.close()
    m.close()
