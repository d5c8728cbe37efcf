"""Each warning rule of RULES.md §7 in scope: a scenario that must raise it and
a near-miss that must not.  Scenarios drive the real engine into a real LMDB
ledger (commands carry the envelopes the gateway ledgers), then the real
follower runs the supervision projection over it into its own store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.messages import (
    DeclineAward,
    FreezeLot,
    PlaceBid,
    ResumeLot,
    RevealSealed,
    SetReserve,
    SubmitSealed,
    WithdrawSealed,
)
from engine.rules import ONE_TIME_QUOTE, REVERSE
from engine.sealed import seal_commitment
from services.supervision.model import Alert, SupervisionConfig
from tests.services.supervision_market import (
    HOUR_NS,
    MINUTE_NS,
    NS_PER_S,
    STAFF_IP,
    Market,
    supervise,
)

START_FEN = 100_000


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    m = Market(tmp_path / "ledger")
    yield m
    m.close()


def run(market: Market, tmp_path: Path, config: SupervisionConfig | None = None) -> list[Alert]:
    market.fire(market.now_ns + 400 * HOUR_NS)  # every lot closes
    return supervise(market, tmp_path / "svc", config)


def of(alerts: list[Alert], rule: str) -> list[Alert]:
    return [a for a in alerts if a.rule == rule]


def english(market: Market, lot: str, bidders: tuple[str, ...], **kw: object) -> tuple[int, int]:
    """An English lot opening a minute from now for four hours: (start, end)."""
    start = market.now_ns + MINUTE_NS
    end = start + 4 * HOUR_NS
    market.lot(lot, start_ns=start, end_ns=end, bidders=bidders, **kw)  # type: ignore[arg-type]
    return start, end


def bid(m: Market, who: str, lot: str, amount: int, t: int, ip: str = "", dev: str = "") -> int:
    seq, events = m.bidder(who, PlaceBid, lot, amount, t_ns=t, ip=ip, device=dev)
    assert any(type(e).__name__ == "BidAccepted" for e in events), events
    return seq


# --------------------------------------------------------------- W-D1 same IP


def test_d1_two_bidders_on_one_lot_from_one_ip(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b"))
    first = bid(market, "a", "L1", START_FEN, s + MINUTE_NS, ip="1.2.3.4", dev="da")
    second = bid(market, "b", "L1", START_FEN + 1_000, s + 2 * MINUTE_NS, ip="1.2.3.4", dev="db")
    [alert] = of(run(market, tmp_path), "W-D1")
    assert (alert.level, alert.lot_id, alert.seq) == ("alert", "L1", second)
    assert alert.evidence == (first, second)
    assert alert.subjects == ("a", "b")


def test_d1_near_miss_same_ip_on_different_lots_or_whitelisted(
    market: Market, tmp_path: Path
) -> None:
    s, _ = english(market, "L1", ("a", "b"))
    english(market, "L2", ("c",))
    bid(market, "a", "L1", START_FEN, s + MINUTE_NS, ip="1.2.3.4")
    bid(market, "a", "L1", START_FEN + 2_000, s + 2 * MINUTE_NS, ip="1.2.3.4")
    bid(market, "b", "L1", START_FEN + 3_000, s + 3 * MINUTE_NS, ip="5.6.7.8")
    bid(market, "c", "L2", START_FEN, s + 4 * MINUTE_NS, ip="1.2.3.4")  # another lot
    # A declared on-site LAN address is excluded.
    bid(market, "b", "L1", START_FEN + 4_000, s + 5 * MINUTE_NS, ip="192.168.0.9")
    bid(market, "a", "L1", START_FEN + 5_000, s + 6 * MINUTE_NS, ip="192.168.0.9")
    cfg = SupervisionConfig(d1_ip_whitelist=("192.168.0.9",))
    assert of(run(market, tmp_path, cfg), "W-D1") == []


# ------------------------------------------------- W-D2 / W-D4 device and keys


def test_d2_two_bidders_on_one_lot_from_one_device(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b"))
    first = bid(market, "a", "L1", START_FEN, s + MINUTE_NS, ip="1.1.1.1", dev="dev-x")
    second = bid(market, "b", "L1", START_FEN + 1_000, s + 2 * MINUTE_NS, ip="2.2.2.2", dev="dev-x")
    alerts = run(market, tmp_path)
    [d2] = of(alerts, "W-D2")
    assert (d2.level, d2.lot_id, d2.evidence) == ("block", "L1", (first, second))
    [d4] = of(alerts, "W-D4")  # the same login device, platform-wide
    assert (d4.level, d4.lot_id, d4.subjects) == ("block", "", ("a", "b"))
    assert of(alerts, "W-D1") == []


def test_d2_near_miss_distinct_devices(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b"))
    bid(market, "a", "L1", START_FEN, s + MINUTE_NS, ip="1.1.1.1", dev="dev-x")
    bid(market, "b", "L1", START_FEN + 1_000, s + 2 * MINUTE_NS, ip="2.2.2.2", dev="dev-y")
    bid(market, "a", "L1", START_FEN + 2_000, s + 3 * MINUTE_NS, ip="1.1.1.1", dev="dev-x")
    alerts = run(market, tmp_path)
    assert of(alerts, "W-D2") == [] and of(alerts, "W-D4") == []


def test_d4_one_public_key_for_two_bidders(market: Market, tmp_path: Path) -> None:
    t = market.now_ns + 1
    k1 = market.key("k-a", "a", "ab" * 32, t)
    market.key("k-c", "c", "cd" * 32, t)
    k2 = market.key("k-b", "b", "AB" * 32, t)  # the same key material, other case
    [d4] = of(run(market, tmp_path), "W-D4")
    assert (d4.level, d4.lot_id, d4.seq, d4.evidence) == ("block", "", k2, (k1, k2))
    assert d4.subjects == ("a", "b")


def test_d4_device_shared_across_lots_but_not_on_one(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a",))
    english(market, "L2", ("b",))
    bid(market, "a", "L1", START_FEN, s + MINUTE_NS, dev="dev-x")
    bid(market, "b", "L2", START_FEN, s + 2 * MINUTE_NS, dev="dev-x")
    alerts = run(market, tmp_path)
    assert [a.subjects for a in of(alerts, "W-D4")] == [("a", "b")]
    assert of(alerts, "W-D2") == []


def test_d4_near_miss_distinct_keys(market: Market, tmp_path: Path) -> None:
    t = market.now_ns + 1
    market.key("k-a", "a", "ab" * 32, t)
    market.key("k-a2", "a", "ef" * 32, t)  # one bidder, two keys: not sharing
    market.key("k-b", "b", "cd" * 32, t)
    assert of(run(market, tmp_path), "W-D4") == []


# ------------------------------------------------------- sealed: W-P1/P2/P4


def sealed(market: Market, lot: str, amounts: dict[str, int]) -> int:
    """A one-time-quote lot: each bidder seals, then reveals its amount."""
    start = market.now_ns + MINUTE_NS
    end = start + HOUR_NS
    market.lot(
        lot,
        mechanism="sealed",
        start_ns=start,
        end_ns=end,
        rules=ONE_TIME_QUOTE,
        bidders=tuple(amounts),
    )
    for i, (who, amount) in enumerate(amounts.items()):
        nonce = f"nonce-{who}-{lot}"
        market.bidder(
            who,
            SubmitSealed,
            lot,
            seal_commitment(lot, amount, nonce),
            t_ns=start + (i + 1) * MINUTE_NS,
            ip=f"9.9.9.{i}",
        )
    for i, (who, amount) in enumerate(amounts.items()):
        _, events = market.bidder(
            who, RevealSealed, lot, amount, f"nonce-{who}-{lot}", t_ns=end + (i + 1) * MINUTE_NS
        )
        assert [type(e).__name__ for e in events] == ["RevealRecorded"], events
    return end


def test_p1_identical_amounts(market: Market, tmp_path: Path) -> None:
    sealed(market, "S1", {"a": 150_000, "b": 150_000, "c": 173_000})
    alerts = run(market, tmp_path)
    [p1] = of(alerts, "W-P1")
    assert (p1.level, p1.lot_id, p1.subjects) == ("alert", "S1", ("a", "b"))
    assert len(p1.evidence) == 3  # both sealed submissions and the opening
    assert of(alerts, "W-P2") == [] and of(alerts, "W-P4") == []


def test_p1_near_miss_one_increment_apart(market: Market, tmp_path: Path) -> None:
    sealed(market, "S1", {"a": 150_000, "b": 151_000, "c": 173_000})
    assert of(run(market, tmp_path), "W-P1") == []


@pytest.mark.parametrize(
    ("amounts", "kind"),
    [((120_000, 150_000, 180_000), "arithmetic"), ((100_000, 125_000, 156_250), "geometric")],
)
def test_p2_price_ladder(
    market: Market, tmp_path: Path, amounts: tuple[int, ...], kind: str
) -> None:
    sealed(market, "S1", dict(zip("abc", amounts, strict=True)))
    [p2] = of(run(market, tmp_path), "W-P2")
    assert p2.key.endswith(f".W-P2.S1.{kind}") and p2.subjects == ("a", "b", "c")


def test_p2_near_miss_irregular_steps(market: Market, tmp_path: Path) -> None:
    # Differences 30,000 / 35,000 (7.7 % off their mean); growth 25 % / 23.3 %.
    sealed(market, "S1", {"a": 120_000, "b": 150_000, "c": 185_000})
    assert of(run(market, tmp_path), "W-P2") == []


def test_p4_price_cluster(market: Market, tmp_path: Path) -> None:
    # Mean 152,625; the farthest 1.9 % away.
    sealed(market, "S1", {"a": 150_000, "b": 152_000, "c": 153_000, "d": 155_500})
    alerts = run(market, tmp_path)
    [p4] = of(alerts, "W-P4")
    assert p4.subjects == ("a", "b", "c", "d")
    assert of(alerts, "W-P2") == []


def test_p4_near_miss_one_outlier_too_far(market: Market, tmp_path: Path) -> None:
    # Mean 154,250: 3 of 4 within 3 % (75 % < 80 %), the outlier 5.0 % away.
    sealed(market, "S1", {"a": 150_000, "b": 152_000, "c": 153_000, "d": 162_000})
    assert of(run(market, tmp_path), "W-P4") == []


# -------------------------------------------------------- W-B2 / W-B3 / W-B4


def test_b2_deposited_bidders_never_quote(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b", "c", "d"))
    bid(market, "a", "L1", START_FEN + 5_000, s + MINUTE_NS)
    [b2] = of(run(market, tmp_path), "W-B2")
    assert (b2.level, b2.lot_id, b2.subjects) == ("alert", "L1", ("b", "c", "d"))


def test_b2_sealed_bids_withdrawn_together(market: Market, tmp_path: Path) -> None:
    start = market.now_ns + MINUTE_NS
    market.lot(
        "S1",
        mechanism="sealed",
        start_ns=start,
        end_ns=start + HOUR_NS,
        rules=ONE_TIME_QUOTE,
        bidders=("a", "b", "c"),
    )
    for i, who in enumerate("abc"):
        market.bidder(
            who, SubmitSealed, "S1", seal_commitment("S1", 150_000, who * 8), t_ns=start + i
        )
    w1, _ = market.bidder("b", WithdrawSealed, "S1", t_ns=start + 50 * MINUTE_NS)
    w2, _ = market.bidder("c", WithdrawSealed, "S1", t_ns=start + 50 * MINUTE_NS + NS_PER_S)
    market.bidder("a", RevealSealed, "S1", 150_000, "a" * 8, t_ns=start + 61 * MINUTE_NS)
    [b2] = of(run(market, tmp_path), "W-B2")
    assert b2.subjects == ("b", "c") and {w1, w2} <= set(b2.evidence)


def test_b2_near_miss_three_compete(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b", "c", "d"))
    bid(market, "a", "L1", START_FEN, s + MINUTE_NS)
    bid(market, "b", "L1", START_FEN + 1_000, s + 2 * MINUTE_NS)
    bid(market, "c", "L1", START_FEN + 2_000, s + 3 * MINUTE_NS)
    assert of(run(market, tmp_path), "W-B2") == []


def reverse_lot(market: Market, ips: dict[str, str]) -> int:
    """Three suppliers quote down; returns the close of the quoting window."""
    start = market.now_ns + MINUTE_NS
    end = start + HOUR_NS
    market.lot(
        "R1",
        mechanism="reverse",
        start_ns=start,
        end_ns=end,
        rules=REVERSE,
        bidders=("a", "b", "c"),
    )
    for i, (who, price) in enumerate((("a", 99_000), ("b", 98_000), ("c", 97_000))):
        bid(market, who, "R1", price, start + (i + 1) * MINUTE_NS, ip=ips[who])
    return end


def test_b3_award_abandoned_to_a_related_bidder(market: Market, tmp_path: Path) -> None:
    end = reverse_lot(market, {"a": "3.3.3.3", "b": "5.5.5.5", "c": "5.5.5.5"})
    seq, events = market.bidder("c", DeclineAward, "R1", t_ns=end + MINUTE_NS, ip="5.5.5.5")
    assert [type(e).__name__ for e in events] == ["AwardLapsed", "AwardOffered"]
    [b3] = of(run(market, tmp_path), "W-B3")
    assert (b3.level, b3.lot_id, b3.seq, b3.subjects) == ("alert", "R1", seq, ("c", "b"))
    assert "ip:5.5.5.5" in b3.detail


def test_b3_near_miss_unrelated_next_rank(market: Market, tmp_path: Path) -> None:
    end = reverse_lot(market, {"a": "3.3.3.3", "b": "4.4.4.4", "c": "5.5.5.5"})
    market.bidder("c", DeclineAward, "R1", t_ns=end + MINUTE_NS, ip="5.5.5.5")
    assert of(run(market, tmp_path), "W-B3") == []


def test_b4_sold_at_start_to_the_only_bidder(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b"))
    first = bid(market, "a", "L1", START_FEN, s + MINUTE_NS)
    alerts = run(market, tmp_path)
    [b4] = of(alerts, "W-B4")
    assert (b4.level, b4.subjects) == ("watch", ("a",)) and first in b4.evidence
    assert of(alerts, "W-B2") == []  # one abandoner only


def test_b4_near_miss_sold_above_start(market: Market, tmp_path: Path) -> None:
    s, _ = english(market, "L1", ("a", "b"))
    bid(market, "a", "L1", START_FEN + 1_000, s + MINUTE_NS)
    assert of(run(market, tmp_path), "W-B4") == []


# ---------------------------------------------------- W-A1 / W-A3 shill bidding


def shill_lot(market: Market, self_raise: bool, shill_ip: str = "7.7.7.7") -> None:
    """``s`` bids early and often, stops long before the close and loses to
    ``w``; with ``self_raise`` it raises its own lead twice by the increment."""
    s, end = english(market, "L1", ("s", "w"))
    m = MINUTE_NS
    if self_raise:
        plan = [("s", 5), ("s", 10), ("s", 15), ("w", 20), ("s", 30), ("w", 40), ("s", 50)]
    else:
        plan = [("s", 5), ("w", 10), ("s", 15), ("w", 20), ("s", 30), ("w", 40), ("s", 50)]
    for i, (who, minute) in enumerate(plan):
        bid(
            market,
            who,
            "L1",
            START_FEN + i * 1_000,
            s + minute * m,
            ip=shill_ip if who == "s" else "8.8.8.8",
        )
    bid(market, "w", "L1", START_FEN + len(plan) * 1_000, end - 2 * m, ip="8.8.8.8")


def test_a1_shill_score_and_a3_self_raising(market: Market, tmp_path: Path) -> None:
    shill_lot(market, self_raise=True)
    alerts = run(market, tmp_path)
    [a1] = of(alerts, "W-A1")
    assert (a1.level, a1.subjects) == ("alert", ("s",))
    assert "successive_outbidding" in a1.detail and "score 6" in a1.detail
    assert len(a1.evidence) == 5  # the shill's five bids
    [a3] = of(alerts, "W-A3")
    assert (a3.level, a3.subjects, len(a3.evidence)) == ("watch", ("s",), 2)


def test_a1_linked_to_the_organiser_blocks(market: Market, tmp_path: Path) -> None:
    shill_lot(market, self_raise=True, shill_ip=STAFF_IP)
    [a1] = of(run(market, tmp_path), "W-A1")
    assert a1.level == "block" and f"ip:{STAFF_IP}" in a1.detail


def test_a1_a3_near_miss_no_self_outbidding(market: Market, tmp_path: Path) -> None:
    shill_lot(market, self_raise=False)  # score 4: ratio, inactive, early, low win
    alerts = run(market, tmp_path)
    assert of(alerts, "W-A1") == [] and of(alerts, "W-A3") == []


# ------------------------------------------------------- W-A4 last second


def snipes(market: Market, codes: str) -> None:
    """One early bid, then one bid 2-5 s before each (extended) end by ``codes``."""
    bidders = tuple(sorted(set(codes) | {"x"}))
    s, end = english(market, "L1", bidders)
    bid(market, "x", "L1", START_FEN, s + MINUTE_NS)
    amount = START_FEN
    for who in codes:
        amount += 1_000
        _, events = market.bidder(who, PlaceBid, "L1", amount, t_ns=end - 3 * NS_PER_S)
        [ext] = [e for e in events if type(e).__name__ == "LotExtended"]
        end = ext.end_ns  # type: ignore[attr-defined]


def test_a4_last_second_bids_from_few_codes(market: Market, tmp_path: Path) -> None:
    snipes(market, "abab")
    [a4] = of(run(market, tmp_path), "W-A4")
    assert (a4.level, a4.subjects, len(a4.evidence)) == ("watch", ("a", "b"), 4)


def test_a4_near_miss_many_codes(market: Market, tmp_path: Path) -> None:
    snipes(market, "abc")
    assert of(run(market, tmp_path), "W-A4") == []


# ----------------------------------------------------------------- W-O1


def test_o1_freeze_near_the_close_and_reserve_edit(market: Market, tmp_path: Path) -> None:
    s, end = english(market, "L1", ("a", "b"))
    first = market.staff(SetReserve, "L1", 200_000, t_ns=s + MINUTE_NS)
    edit = market.staff(SetReserve, "L1", 150_000, t_ns=s + 2 * MINUTE_NS)  # refused, flagged
    bid(market, "a", "L1", START_FEN, s + 3 * MINUTE_NS)
    freeze = market.staff(FreezeLot, "L1", "audit", t_ns=end - 30 * MINUTE_NS)
    alerts = of(run(market, tmp_path), "W-O1")
    assert [(a.level, a.seq) for a in alerts] == [("block", edit), ("block", freeze)]
    assert alerts[0].evidence == (first, edit)
    assert alerts[1].legacy_key.endswith("near-close:FreezeLot")
    assert alerts[1].key.startswith(f"{freeze}.W-O1.h")  # ":" is not in an identifier


def test_o1_near_miss_early_freeze_single_reserve(market: Market, tmp_path: Path) -> None:
    s, end = english(market, "L1", ("a", "b"))
    market.staff(SetReserve, "L1", 200_000, t_ns=s + MINUTE_NS)
    bid(market, "a", "L1", START_FEN, s + 3 * MINUTE_NS)
    market.staff(FreezeLot, "L1", "audit", t_ns=end - 2 * HOUR_NS)
    market.staff(ResumeLot, "L1", "done", t_ns=end - 2 * HOUR_NS + MINUTE_NS)
    assert of(run(market, tmp_path), "W-O1") == []
