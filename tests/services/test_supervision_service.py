"""``pubex supervise`` as its own process: killed (SIGKILL) at random points while
the ledger grows, restarted each time, its store ends equal -- every db, byte
for byte -- to a projection built uninterrupted; its HTTP feed pages alerts
with ``since``, serves lot monitoring and its own /metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from engine.messages import FreezeLot, PlaceBid
from persistence.service import ServiceStore
from services.follower import Follower
from services.supervision.projection import SupervisionProjection, SupervisionReader
from tests import tokens
from tests.polling import wait_for
from tests.services.service_process import kill_while_growing, start, wait_listening
from tests.services.supervision_market import HOUR_NS, MINUTE_NS, NS_PER_S, Market

ROOT = Path(__file__).resolve().parents[2]
POOL = [f"p{i:02d}" for i in range(14)]


def grow(market: Market, rng: random.Random, lots: int) -> Iterator[None]:
    """Lots one after another, bidders from a small pool whose IPs and devices
    collide, now and then a freeze near the close: yields after each lot."""
    ip = {b: f"10.1.0.{rng.randrange(8)}" for b in POOL}
    dev = {b: f"dev-{rng.randrange(10)}" for b in POOL}
    for n in range(lots):
        lot = f"K{n:03d}"
        start = market.now_ns + MINUTE_NS
        end = start + HOUR_NS + 30 * MINUTE_NS
        bidders = rng.sample(POOL, rng.randint(2, 6))
        market.lot(lot, start_ns=start, end_ns=end, bidders=tuple(bidders))
        t, price = start, 100_000
        for _ in range(rng.randint(2, 20)):
            t += rng.randint(1, 300) * NS_PER_S
            who = rng.choice(bidders)
            price += 1_000 * rng.randint(0, 2)
            market.bidder(who, PlaceBid, lot, price, t_ns=t, ip=ip[who], device=dev[who])
        if rng.random() < 0.2:
            market.staff(FreezeLot, lot, "check", t_ns=end - 20 * MINUTE_NS)
        yield


def get(url: str, token: str = tokens.SUPERVISOR) -> object:
    """GET as a supervisor (the supervision service serves officials only)."""
    request = urllib.request.Request(url, headers=tokens.bearer(token))
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def dump(store_dir: Path) -> tuple[object, list[tuple[bytes, bytes, bytes]]]:
    ss = ServiceStore.open(store_dir)
    try:
        return ss.position(), list(SupervisionReader(ss).dump())
    finally:
        ss.close()


def test_supervise_killed_at_random_points_equals_uninterrupted(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("PUBEX_SEED", "6")))
    data = tmp_path / "data"
    market = Market(data / "ledger", batch_entries=rng.choice([4, 16]))
    lots = grow(market, rng, 36)
    next(lots)
    market.journal.commit()
    log = tmp_path / "supervise.log"
    kill_while_growing("supervise", data, log, market, lots, rng)
    for _ in lots:
        market.journal.commit()
    market.fire(market.now_ns + 10 * HOUR_NS)  # the last lots close
    market.journal.commit()
    last = market.store.last_seq()

    proc = start("supervise", data, log)
    try:
        url = wait_listening(proc, log)
        wait_for(
            lambda: get(url + "healthz")["position"] == last,  # type: ignore[index]
            30,
            f"supervision at {last}",
            why=lambda: str(get(url + "healthz")),
        )
        # The feed, paged by `since`, holds every alert once, in order.
        fed: list[dict[str, object]] = []
        since = 0
        while True:
            page = get(f"{url}api/alerts?since={since}&limit=7")
            assert isinstance(page, dict)
            if not page["alerts"]:
                break
            fed += page["alerts"]
            since = page["next"]
        assert [a["alert_id"] for a in fed] == list(range(1, len(fed) + 1))
        assert {a["rule"] for a in fed} >= {"W-D1", "W-D2", "W-D4", "W-O1"}
        one = fed[0]
        lot_page = get(f"{url}api/alerts?lot={one['lot_id']}&limit=1000")
        assert isinstance(lot_page, dict)
        assert [a["alert_id"] for a in lot_page["alerts"]] == [
            a["alert_id"] for a in fed if a["lot_id"] == one["lot_id"]
        ]
        detail = get(f"{url}api/alerts/{one['alert_id']}")
        assert isinstance(detail, dict) and detail["alert"] == one and detail["handling"] == []
        lots_page = get(f"{url}api/lots?limit=1000")
        assert isinstance(lots_page, dict) and len(lots_page["lots"]) == 36
        k0 = get(f"{url}api/lots/K000")
        assert isinstance(k0, dict) and k0["status"] in ("sold", "unsold", "terminated")
        metrics = get(url + "metrics")
        assert isinstance(metrics, bytes)
        assert f'pubex_follower_position{{follower="supervision"}} {last}.0'.encode() in metrics
        assert b'pubex_follower_lag_entries{follower="supervision"} 0.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()

    ref = ServiceStore.open(tmp_path / "ref")
    Follower("ref", market.store, ref, [SupervisionProjection()]).catch_up()
    ref.close()
    market.close()
    restarted, uninterrupted = dump(data / "supervision"), dump(tmp_path / "ref")
    assert restarted[0] == uninterrupted[0] and restarted[0].seq == last  # type: ignore[attr-defined]
    assert restarted[1] == uninterrupted[1]
    assert len([r for r in restarted[1] if r[0] == b"sv_alerts"]) == len(fed)
