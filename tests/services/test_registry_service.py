"""``pubex registry`` as its own process: killed (SIGKILL) at random points
while the engine's ledger grows (lots with deposits, bids, closes, payments,
defaults, terminations, blacklistings), restarted each time, its store ends
equal -- every db, byte for byte -- to a projection built uninterrupted; its
HTTP API serves subjects, lots, deposits, the deposit journal, the blacklist
and expert draws, and /metrics reports the follower's lag."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from engine.messages import (
    BlacklistBidder,
    ConfirmDeposit,
    ConfirmPayment,
    DeclareDefault,
    PlaceBid,
    RegisterBidder,
    RegisterKey,
    TerminateLot,
)
from engine.rules import JUDICIAL_SETTLED, RuleSet
from persistence.service import ServiceStore
from services.follower import Follower
from services.registry.projection import RegistryProjection, RegistryReader
from tests import tokens
from tests.polling import wait_for
from tests.services.service_process import kill_while_growing, start, wait_listening
from tests.services.supervision_market import HOUR_NS, MINUTE_NS, NS_PER_S, Market

ROOT = Path(__file__).resolve().parents[2]
POOL = [f"p{i:02d}" for i in range(12)]


def grow(market: Market, rng: random.Random, lots: int) -> Iterator[None]:
    for b in POOL:
        market.staff(RegisterKey, f"k-{b}", b, os.urandom(32).hex(), t_ns=market.now_ns + 1)
    for n in range(lots):
        lot = f"G{n:03d}"
        settled = n % 3 == 0
        start = market.now_ns + MINUTE_NS
        end = start + HOUR_NS
        market.lot(
            lot, start_ns=start, end_ns=end, rules=JUDICIAL_SETTLED if settled else RuleSet()
        )
        bidders = rng.sample(POOL, rng.randint(2, 6))
        for b in bidders:
            market.staff(RegisterBidder, lot, b, t_ns=start - 1)
            if rng.random() < 0.9:
                market.staff(ConfirmDeposit, lot, b, rng.randint(1, 9) * 1_000, t_ns=start - 1)
        t, price = start, 100_000
        for _ in range(rng.randint(0, 8)):
            t += rng.randint(1, 300) * NS_PER_S
            market.bidder(rng.choice(bidders), PlaceBid, lot, price, t_ns=t)
            price += 1_000
        if rng.random() < 0.1:
            market.staff(TerminateLot, lot, "court order", t_ns=t + 1)
        if rng.random() < 0.05:
            market.staff(BlacklistBidder, rng.choice(POOL), "credit", t_ns=t + 2)
        market.fire(end + 1)
        if settled:  # the winner pays, or defaults
            act = ConfirmPayment if rng.random() < 0.6 else DeclareDefault
            args = (lot,) if act is ConfirmPayment else (lot, "walked away")
            market.staff(act, *args, t_ns=end + 2)
        yield


def call(url: str, body: object | None = None, token: str = tokens.STAFF) -> tuple[int, object]:
    """GET or POST (JSON) as staff -- the registry serves officials only."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**tokens.bearer(token), "Content-Type": "application/json"} if token else {}
    req = urllib.request.Request(
        url, data=data, method="GET" if body is None else "POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status, kind = r.read(), r.status, r.headers.get_content_type()
    except urllib.error.HTTPError as e:
        raw, status, kind = e.read(), e.code, e.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw


def get(url: str) -> object:
    return call(url)[1]


def dump(store_dir: Path) -> tuple[object, list[tuple[bytes, bytes, bytes]]]:
    with ServiceStore.open(store_dir) as ss:
        return ss.position(), list(RegistryReader(ss).dump())


def test_registry_killed_at_random_points_equals_uninterrupted(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("PUBEX_SEED", "7")))
    data = tmp_path / "data"
    market = Market(data / "ledger", batch_entries=rng.choice([4, 16]))
    lots = grow(market, rng, 40)
    next(lots)
    market.journal.commit()
    log = tmp_path / "registry.log"
    kill_while_growing("registry", data, log, market, lots, rng)
    for _ in lots:
        market.journal.commit()
    market.journal.commit()
    last = market.store.last_seq()

    proc = start("registry", data, log)
    try:
        url = wait_listening(proc, log)
        wait_for(
            lambda: get(url + "healthz")["position"] == last,  # type: ignore[index]
            30,
            f"the registry at {last}",
            why=lambda: str(get(url + "healthz")),
        )
        # the deposit journal, paged by `since`: every step once, in order
        steps: list[dict[str, object]] = []
        since = 0
        while page := get(f"{url}api/deposit-steps?since={since}&limit=50")["steps"]:  # type: ignore[index]
            steps += page
            since = page[-1]["step_no"]
        assert [s["step_no"] for s in steps] == list(range(1, len(steps) + 1))
        finals = [
            (s["lot_id"], s["bidder_id"])
            for s in steps
            if s["state"] not in ("confirmed", "held", "refund_due")
        ]
        assert len(finals) == len(set(finals))  # no deposit settled twice
        # read-only: refunds are derived (due) and never sent, so none is refunded
        assert {s["state"] for s in steps} >= {"confirmed", "applied", "refund_due", "forfeited"}
        assert "refunded" not in {s["state"] for s in steps}
        lot = get(url + "api/lots/G000")
        assert isinstance(lot, dict) and lot["lot"]["settles"] is True
        assert {r["deposit"] for r in lot["registrations"]} <= {
            "none",
            "applied",
            "refund_due",
            "forfeited",
        }
        subjects = get(url + "api/subjects?limit=100")
        assert isinstance(subjects, dict) and len(subjects["subjects"]) == len(POOL)
        one = get(url + "api/subjects/p00")
        assert isinstance(one, dict) and one["keys"][0]["key_id"] == "k-p00"
        # read-only (no --ws): a write is refused plainly
        status, body = call(url + "api/deposits", {"lot": "G001", "bidder": "p00", "amount_fen": 1})
        assert status == 503 and "read-only" in body["error"]  # type: ignore[index]
        # the expert database and a committed draw that avoids the lot's bidders
        experts = [
            {"expert_id": f"e{i}", "name": f"E{i}", "specialties": ["civil"], "region": "JS"}
            for i in range(8)
        ]
        assert call(url + "api/experts", experts)[0] == 200
        bidder = lot["registrations"][0]["bidder_id"]
        rel = {"expert_id": "e0", "subject_id": bidder, "kind": "shareholding"}
        assert call(url + "api/relations", rel)[0] == 200
        # a draw is ledgered (CommitExpertDraw first): read-only, none is made
        status, made = call(url + "api/draws", {"lot_id": "G000", "specialty": "civil", "count": 3})
        assert status == 503 and "read-only" in made["error"], made  # type: ignore[index]
        assert get(url + "api/draws")["draws"] == []  # type: ignore[index]
        metrics = get(url + "metrics")
        assert isinstance(metrics, bytes)
        assert f'pubex_follower_position{{follower="registry"}} {last}.0'.encode() in metrics
        assert b'pubex_follower_lag_entries{follower="registry"} 0.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()

    ref = ServiceStore.open(tmp_path / "ref")
    Follower("ref", market.store, ref, [RegistryProjection()]).catch_up()
    ref.close()
    market.close()
    restarted, uninterrupted = dump(data / "registry"), dump(tmp_path / "ref")
    assert restarted[0] == uninterrupted[0] and restarted[0].seq == last  # type: ignore[attr-defined]
    assert restarted[1] == uninterrupted[1]
    assert len([r for r in restarted[1] if r[0] == b"rg_steps"]) == len(steps)


def test_provision_keys_registrations_and_deposits_in_one_go(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data, log = tmp_path / "data", tmp_path / "serve.log"
    serve_cmd = [
        sys.executable,
        "-m",
        "gateway.entry.cli",
        "serve",
        "--data",
        str(data),
        "--sandbox",
    ]
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [*serve_cmd, "--ws-port", "0", "--http-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:

        def listening() -> bool:
            assert serve.poll() is None, log.read_text()
            return "listening ws=" in log.read_text()

        wait_for(listening, 30, "pubex serve listening", why=log.read_text)
        ws_url = log.read_text().split("listening ws=", 1)[1].split()[0]
        keys = tmp_path / "keys.jsonl"
        cmd = [sys.executable, "-m", "gateway.entry.cli", "registry", "--data", str(data)]
        cmd += ["provision", "--bidders", "24", "--lots", "4", "--ws", ws_url]
        cmd += ["--keys-out", str(keys)]
        env = {**env, "PUBEX_SERVICE_TOKEN": "dev-registry-token"}  # never on the command line
        env["PUBEX_STAFF_TOKEN"] = "dev-staff-token"
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        report = json.loads(done.stdout)
        assert report["registry_commands"] == 72 and report["accepted"] == 72, report
        rows = [json.loads(line) for line in keys.read_text().splitlines()]
        assert len(rows) == 24 and len(rows[0]["private_key_hex"]) == 64
        from nacl.signing import SigningKey

        assert (
            SigningKey(bytes.fromhex(rows[0]["private_key_hex"])).verify_key.encode().hex()
            == (rows[0]["public_key_hex"])
        )
        # what the ledger says, through the registry's own projection
        from ledger.store import LedgerStore

        with (
            LedgerStore.open(data / "ledger", readonly=True) as ledger,
            ServiceStore.open(tmp_path / "check") as ss,
        ):
            Follower("check", ledger, ss, [RegistryProjection()]).catch_up()
            reader = RegistryReader(ss)
            regs = list(reader.all_registrations())
            assert len(regs) == 24 and {r.deposit for r in regs} == {"confirmed"}
            assert reader.own(72) is not None  # as service:registry, client_seqs 1..72
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=20)
