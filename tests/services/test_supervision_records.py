"""Supervision records read from the ledger (issue 6, RULES.md §6.6, §7):
handling decisions on alerts (real ``HandleAlert`` commands naming the keys the
projection produced), complaints with their answer deadline (working days from
config/calendar.py's holiday file), W-F1 (deposits from one payer account) and
W-B3 over judicial defaults (悔拍) -- each rule with a raising scenario and a
near-miss.  Real engine, real LMDB ledger, real follower into a real store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from engine.messages import (
    AnswerComplaint,
    ConfirmDeposit,
    CreateReauction,
    DeclareDefault,
    FileComplaint,
    HandleAlert,
    PlaceBid,
    PublishLot,
    RegisterBidder,
)
from engine.rules import JUDICIAL_SETTLED, TENDER_LOWEST
from persistence.service import ServiceStore
from services.follower import Follower
from services.supervision.model import Alert
from services.supervision.projection import SupervisionProjection, SupervisionReader
from tests.services.supervision_market import EPOCH_NS, HOUR_NS, MINUTE_NS, Market

START = 100_000
CHINA = timezone(timedelta(hours=8))


def china_ns(y: int, m: int, d: int, hour: int = 0) -> int:
    return int(datetime(y, m, d, hour, tzinfo=CHINA).timestamp()) * 1_000_000_000


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    m = Market(tmp_path / "ledger")
    yield m
    m.close()


class Sv:
    """A supervision store kept open: catch up again after more entries."""

    def __init__(self, market: Market, path: Path) -> None:
        self.market = market
        self.store = ServiceStore.open(path)
        self.follower = Follower("t", market.store, self.store, [SupervisionProjection()])
        self.reader = SupervisionReader(self.store)

    def sync(self) -> list[Alert]:
        self.market.journal.commit()
        self.follower.catch_up()
        return self.reader.alerts(0, 10_000)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def sv(market: Market, tmp_path: Path) -> Iterator[Sv]:
    s = Sv(market, tmp_path / "svc")
    yield s
    s.close()


def send_as(market: Market, origin: str, cls: type, *args: object, t_ns: int) -> int:
    seq, _ = market.send(cls(origin, market.next_seq(origin), *args), t_ns, ip="10.9.9.9")
    return seq


def bid(m: Market, who: str, lot: str, amount: int, t: int, ip: str = "") -> int:
    seq, events = m.bidder(who, PlaceBid, lot, amount, t_ns=t, ip=ip)
    assert any(type(e).__name__ == "BidAccepted" for e in events), events
    return seq


# ------------------------------------------------------------ handling records


def test_handling_records_from_real_handle_alert_commands(market: Market, sv: Sv) -> None:
    start = market.now_ns + MINUTE_NS
    market.lot("L1", start_ns=start, end_ns=start + HOUR_NS, bidders=("a", "b"))
    bid(market, "a", "L1", START, start + MINUTE_NS, ip="1.2.3.4")
    bid(market, "b", "L1", START + 1_000, start + 2 * MINUTE_NS, ip="1.2.3.4")
    [d1] = [a for a in sv.sync() if a.rule == "W-D1"]
    t = start + 3 * MINUTE_NS
    ack = send_as(market, "staff:clerk", HandleAlert, "L1", d1.key, "acknowledge", t_ns=t)
    esc = send_as(market, "supervisor:s1", HandleAlert, "L1", d1.key, "escalate", "same IP", t_ns=t)
    # Ignored: a bidder's attempt (refused by the engine), and a key no alert has.
    send_as(market, "bidder:a", HandleAlert, "L1", d1.key, "dismiss", t_ns=t)
    send_as(market, "staff:clerk", HandleAlert, "L1", "9/W-D1/L1/none", "dismiss", t_ns=t)
    sv.sync()
    found = sv.reader.alert(d1.alert_id)
    assert found is not None
    alert, handling = found
    assert alert == d1
    assert [(h.seq, h.by, h.action, h.note) for h in handling] == [
        (ack, "staff:clerk", "acknowledge", ""),
        (esc, "supervisor:s1", "escalate", "same IP"),
    ]
    # The feed's live view of handling, in ledger order, resumable by seq.
    assert [(aid, h.seq) for aid, h in sv.reader.handled_since(0)] == [
        (d1.alert_id, ack),
        (d1.alert_id, esc),
    ]
    assert [h.seq for _, h in sv.reader.handled_since(ack)] == [esc]
    assert sv.reader.last_handled_seq() == esc


# ------------------------------------------------------------------ complaints


def test_complaint_deadline_steps_and_answer(market: Market, sv: Sv) -> None:
    market.lot("L1", bidders=("a", "b"))
    # Filed Thursday 12 Feb 2026: 7 working days are Feb 13, Sat Feb 14 (调休),
    # Feb 24-27 after the Spring Festival (Feb 15-23), Sat Feb 28 (调休): due by
    # the end of Feb 28, i.e. 00:00 on 1 March China time.
    filed_at = china_ns(2026, 2, 12, 10)
    filed, _ = market.bidder("a", FileComplaint, "L1", "c-1", "起拍价低于评估价", t_ns=filed_at)
    market.bidder("b", FileComplaint, "L1", "c-1", "again", t_ns=filed_at + 1)  # refused
    sup = "supervisor:s1"
    accept = send_as(market, sup, AnswerComplaint, "c-1", "accept", "受理", t_ns=filed_at + HOUR_NS)
    answer = send_as(
        market, sup, AnswerComplaint, "c-1", "answer", "评估价已复核", t_ns=filed_at + 2 * HOUR_NS
    )
    send_as(
        market, "staff:clerk", AnswerComplaint, "c-1", "escalate", "", t_ns=filed_at + 3 * HOUR_NS
    )
    sv.sync()
    [c] = sv.reader.complaints()
    assert (c.complaint_id, c.lot_id, c.by, c.by_kind, c.text) == (
        "c-1",
        "L1",
        "bidder:a",
        "bidder",
        "起拍价低于评估价",
    )
    assert (c.filed_seq, c.deadline_ns, c.deadline_rule) == (
        filed,
        china_ns(2026, 3, 1),
        "7 working days",
    )
    assert [(s.seq, s.by, s.step) for s in c.steps] == [
        (accept, sup, "accept"),
        (answer, sup, "answer"),
        (answer + 1, "staff:clerk", "escalate"),
    ]
    assert (c.status, c.answer, c.answered_seq) == ("escalate", "评估价已复核", answer)
    assert c.answered_ns < c.deadline_ns
    assert sv.reader.complaint("c-1") == c
    assert sv.reader.complaints(since=filed) == []
    assert sv.reader.complaints(lot="L2") == []


def test_tender_objection_answered_within_three_days(market: Market, sv: Sv) -> None:
    start = market.now_ns + MINUTE_NS
    market.lot(
        "T1",
        mechanism="sealed",
        start_ns=start,
        end_ns=start + HOUR_NS,
        rules=TENDER_LOWEST,
        bidders=("a",),
    )
    filed_at = china_ns(2026, 2, 12, 10)  # 3 calendar days: due by the end of Feb 15
    market.bidder("a", FileComplaint, "T1", "t-1", "候选人公示有误", t_ns=filed_at)
    sv.sync()
    [c] = sv.reader.complaints(lot="T1")
    assert (c.deadline_ns, c.deadline_rule) == (china_ns(2026, 2, 16), "3 days (tender objection)")
    assert c.steps == [] and c.answered_seq == 0 and c.status == "filed"


# -------------------------------------------------------------------- W-F1


def deposits(market: Market, lot: str, payers: dict[str, str]) -> dict[str, int]:
    start = market.now_ns + MINUTE_NS
    market.lot(lot, start_ns=start, end_ns=start + HOUR_NS)
    seqs = {}
    for who, account in payers.items():
        market.staff(RegisterBidder, lot, who, t_ns=market.now_ns + 1)
        seqs[who] = market.staff(
            ConfirmDeposit, lot, who, 0, payer_account=account, t_ns=market.now_ns + 1
        )
    return seqs


def test_f1_deposits_of_two_bidders_from_one_account(market: Market, sv: Sv) -> None:
    seqs = deposits(
        market, "L1", {"a": "6222 0000 1111", "b": "6222-0000-3333", "c": "62220000-1111"}
    )
    [f1] = [a for a in sv.sync() if a.rule == "W-F1"]
    assert (f1.level, f1.lot_id, f1.seq) == ("block", "L1", seqs["c"])
    assert f1.evidence == (seqs["a"], seqs["c"]) and f1.subjects == ("a", "c")
    assert "1111" in f1.detail and "6222" not in f1.detail  # masked


def test_f1_near_miss_one_account_on_different_lots_or_for_one_bidder(
    market: Market, sv: Sv
) -> None:
    deposits(market, "L1", {"a": "6222-1", "b": "6222-2", "c": ""})  # "" = not given
    deposits(market, "L2", {"d": "6222-1", "e": "", "f": "6222-3"})  # 6222-1 again, other lot
    market.staff(ConfirmDeposit, "L1", "a", 0, payer_account="6222-1", t_ns=market.now_ns + 1)
    assert [a for a in sv.sync() if a.rule == "W-F1"] == []


# ------------------------------------------------------- W-B3 judicial default


def judicial_default(market: Market, ips: dict[str, str]) -> int:
    """``b`` wins an English lot above ``a``, then defaults (悔拍); the lot is
    re-auctioned and ``a`` takes it at the start price.  Returns the seq of
    the default."""
    start = market.now_ns + MINUTE_NS
    end = start + HOUR_NS
    market.lot("J1", start_ns=start, end_ns=end, rules=JUDICIAL_SETTLED, bidders=("a", "b", "c"))
    bid(market, "a", "J1", START, start + MINUTE_NS, ip=ips["a"])
    bid(market, "c", "J1", START + 1_000, start + 2 * MINUTE_NS, ip=ips["c"])
    bid(market, "a", "J1", START + 2_000, start + 3 * MINUTE_NS, ip=ips["a"])
    bid(market, "b", "J1", START + 10_000, start + 4 * MINUTE_NS, ip=ips["b"])
    market.fire(end + MINUTE_NS)
    default = market.staff(DeclareDefault, "J1", "buyer withdrew", t_ns=end + HOUR_NS)
    s2 = end + 2 * HOUR_NS
    market.staff(CreateReauction, "J2", "J1", "second", START, s2, s2 + HOUR_NS, t_ns=end + HOUR_NS)
    market.staff(PublishLot, "J2", t_ns=end + HOUR_NS)
    for who in ("a", "c"):
        market.staff(RegisterBidder, "J2", who, t_ns=end + HOUR_NS)
        market.staff(ConfirmDeposit, "J2", who, 0, t_ns=end + HOUR_NS)
    bid(market, "a", "J2", START, s2 + MINUTE_NS, ip=ips["a"])
    market.fire(s2 + 2 * HOUR_NS)
    return default


def test_b3_judicial_default_to_a_related_runner_up(market: Market, sv: Sv) -> None:
    default = judicial_default(market, {"a": "6.6.6.6", "b": "6.6.6.6", "c": "7.7.7.7"})
    b3 = [a for a in sv.sync() if a.rule == "W-B3"]
    assert [(a.lot_id, a.level, a.subjects) for a in b3] == [
        ("J1", "alert", ("b", "a")),  # at the default: the runner-up is related
        ("J2", "alert", ("b", "a")),  # the re-auction sells to it, lower
    ]
    assert b3[0].seq == default and default in b3[1].evidence
    assert "buyer withdrew" in b3[0].detail and "ip:6.6.6.6" in b3[1].detail
    assert "110000" in b3[1].detail and "100000" in b3[1].detail


def test_b3_near_miss_unrelated_runner_up(market: Market, sv: Sv) -> None:
    judicial_default(market, {"a": "6.6.6.6", "b": "8.8.8.8", "c": "7.7.7.7"})
    alerts = sv.sync()
    assert [a for a in alerts if a.rule == "W-B3"] == []
    assert sv.reader.monitor("J2") is not None  # the re-auction is followed all the same


def test_epoch_is_inside_the_calendar() -> None:
    # The scenarios above rely on the harness epoch being a 2026 date.
    assert datetime.fromtimestamp(EPOCH_NS / 1e9, CHINA).year == 2026


def test_alert_keys_are_identifiers_whatever_the_subject():
    from gateway.wire.protocol import Reader
    from services.supervision.model import ALERT_KEY_MAX, alert_key, legacy_alert_key

    short = alert_key(7, "W-D1", "L1", "10.0.0.1")
    assert short == "7.W-D1.L1.10.0.0.1"
    long_subject = "fp:" + "ab" * 200  # a very long device fingerprint
    reader = Reader()
    for subject in (long_subject, "::1", "2001:db8::7", "bidder 7", "投标人"):
        key = alert_key(7, "W-D2", "L" * 64, subject)
        assert len(key) <= ALERT_KEY_MAX
        assert reader._id(key), key  # what a handle_alert frame may name
        assert key == alert_key(7, "W-D2", "L" * 64, subject)  # stable across rebuilds
        assert key != alert_key(7, "W-D2", "L" * 64, subject + "x")
    # older ledgers' handling records named the old form
    assert legacy_alert_key(7, "W-D1", "L1", "10.0.0.1") == "7/W-D1/L1/10.0.0.1"
