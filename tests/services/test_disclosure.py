"""Disclosure: notices from whole scenarios, nothing secret ever public, resume
after kills, and the published checkpoints."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest

from engine.messages import (
    BidderRegistered,
    LotSold,
    LotTerminated,
    LotUnsold,
    OpeningRecord,
    RegisterBidder,
    ReserveEntered,
    RevealRecorded,
    RevealSealed,
    SetReserve,
)
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.disclosure.pages import fmt_fen, index_page, lot_page
from services.disclosure.projection import DisclosureProjection, DisclosureReader
from services.follower import Entry, Follower

Txn = Any


class SecretTracker:
    """What is secret at the follower's position, from the ledger itself."""

    dbs = ()

    def __init__(self) -> None:
        self.bidders: set[str] = set()
        self.winners: set[str] = set()  # winners of closed lots: public by then
        self.codes: dict[tuple[str, str], str] = {}
        self.reserves: set[int] = set()
        self.sealed: dict[str, set[int]] = {}  # lot -> revealed amounts, until the opening
        self.public_ints: set[int] = set()

    def load(self, store: ServiceStore, txn: Txn) -> None:
        pass

    def apply(self, txn: Txn, entry: Entry) -> None:
        cmd = entry.command
        for ev in entry.events:
            self._public_ints(ev)
            if isinstance(ev, BidderRegistered) and isinstance(cmd, RegisterBidder):
                self.bidders.add(cmd.bidder_id)
                self.codes[(ev.lot_id, ev.bidder_code)] = cmd.bidder_id
            elif isinstance(ev, ReserveEntered) and isinstance(cmd, SetReserve):
                self.reserves.add(cmd.reserve_fen)
            elif isinstance(ev, RevealRecorded) and isinstance(cmd, RevealSealed):
                self.sealed.setdefault(ev.lot_id, set()).add(cmd.amount_fen)
            elif isinstance(ev, OpeningRecord):
                self.sealed.pop(ev.lot_id, None)
            elif isinstance(ev, LotSold):
                self.winners.add(self.codes[(ev.lot_id, ev.bidder_code)])

    def _public_ints(self, obj: Any) -> None:
        if isinstance(obj, msgspec.Struct):
            for f in obj.__struct_fields__:
                if f != "reserve_fen":  # carried by closing events, never published
                    self._public_ints(getattr(obj, f))
        elif isinstance(obj, tuple | list):
            for x in obj:
                self._public_ints(x)
        elif isinstance(obj, int) and not isinstance(obj, bool):
            self.public_ints.add(obj)


_TOKEN = re.compile(r"[\w-]+")
_YUAN = re.compile(r"¥[\d,]+\.\d\d")


def check_nothing_secret(
    reader: DisclosureReader, tracker: SecretTracker, where: str, seen: dict[str, bytes]
) -> int:
    """Every public output at this position (lot pages: those that changed since
    the last call, per ``seen``); returns how many were checked."""
    notices = reader.notices(0, 10**9)
    lots = reader.lots()
    json_text = msgspec.json.encode([notices, lots]).decode()
    pages = [index_page(reader.latest(50), lots)]
    for lot in lots:
        state = msgspec.msgpack.encode(lot)
        if seen.get(lot.lot_id) != state:
            seen[lot.lot_id] = state
            pages.append(lot_page(lot, reader.notices(0, 10**9, lot.lot_id)))
    html = "\n".join(pages)
    tokens = set(_TOKEN.findall(json_text)) | set(_TOKEN.findall(html))
    leaked = (tracker.bidders - tracker.winners) & tokens
    assert not leaked, f"{where}: identities {sorted(leaked)[:5]} are public"
    secret_amounts = set(tracker.reserves)
    for amounts in tracker.sealed.values():
        secret_amounts |= amounts
    secret_amounts -= tracker.public_ints
    yuan = set(_YUAN.findall(html))
    for amount in secret_amounts:
        assert str(amount) not in tokens, f"{where}: amount {amount} is public"
        assert fmt_fen(amount) not in yuan, f"{where}: amount {amount} on a page"
    return 1 + len(pages)


@pytest.fixture(scope="module")
def scenario_ledgers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from simulators.run import simulate

    base = tmp_path_factory.mktemp("scenarios")
    out = {}
    for name, seed in (("hot-land", 2), ("dutch", 3), ("tender", 4), ("judicial-day", 5)):
        simulate(name, seed, base / name / "ledger")
        out[name] = base / name
    return out


@pytest.mark.parametrize("scenario", ["hot-land", "dutch", "tender", "judicial-day"])
def test_nothing_secret_is_ever_public(
    scenario_ledgers: dict[str, Path], scenario: str, tmp_path: Path
) -> None:
    """T13 over whole scenarios: at every chunk boundary, no reserve, no sealed
    amount before its opening and no identity but a closed lot's winner appears
    in the feed, the lot records or any page."""
    ledger = LedgerStore.open(scenario_ledgers[scenario] / "ledger", readonly=True)
    store = ServiceStore.open(tmp_path / "disclosure")
    tracker = SecretTracker()
    follower = Follower("d", ledger, store, [DisclosureProjection(), tracker])
    reader = DisclosureReader(store)
    total = ledger.last_seq()
    chunk = max(50, total // 30)
    outputs, seen = 0, {}
    while follower.step(chunk):
        where = f"{scenario} seq {follower.position.seq}"
        outputs += check_nothing_secret(reader, tracker, where, seen)
    kinds = Counter(n.kind for n in reader.notices(0, 10**9))
    assert kinds["announcement"] == len(reader.lots()) > 0
    assert kinds["result"] + kinds["unsold"] + kinds["terminate"] > 0
    assert tracker.reserves or tracker.sealed is not None
    print(f"\nT13 {scenario}: {total} entries, {outputs} public outputs checked, hits 0")
    store.close()
    ledger.close()


def test_results_name_the_winner_and_a_publicity_deadline(
    scenario_ledgers: dict[str, Path], tmp_path: Path
) -> None:
    ledger = LedgerStore.open(scenario_ledgers["hot-land"] / "ledger", readonly=True)
    store = ServiceStore.open(tmp_path / "disclosure")
    Follower("d", ledger, store, [DisclosureProjection()]).catch_up()
    reader = DisclosureReader(store)
    (result,) = [n for n in reader.notices(0, 1000) if n.kind == "result"]
    assert result.details["winner"] and result.details["price_fen"] > 0
    closed = result.details["closed_at_ns"]
    assert closed + 5 * 86_400 * 10**9 <= result.deadline_ns  # >= 5 working days later
    assert "reserve" not in msgspec.json.encode(result).decode()
    page1 = reader.notices(0, 1)
    assert [n.id for n in page1] == [1] and next(n.id for n in reader.notices(1, 5)) == 2
    store.close()
    ledger.close()


def dump(store: ServiceStore) -> dict[bytes, dict[bytes, bytes]]:
    for name in DisclosureProjection.dbs:
        store.add_db(name)
    with store.read() as txn:
        return {
            name: dict(txn.cursor(db=store.db(name)).iternext())
            for name in DisclosureProjection.dbs
        }


def test_interrupted_runs_equal_an_uninterrupted_one(
    scenario_ledgers: dict[str, Path], tmp_path: Path
) -> None:
    import random

    path = scenario_ledgers["tender"] / "ledger"
    ledger = LedgerStore.open(path, readonly=True)
    ref = ServiceStore.open(tmp_path / "ref")
    Follower("d", ledger, ref, [DisclosureProjection()]).catch_up()
    expected = dump(ref)
    rng = random.Random(7)
    while True:
        store = ServiceStore.open(tmp_path / "svc")
        f = Follower("d", ledger, store, [DisclosureProjection()])
        done = f.step(rng.randint(1, 400)) == 0
        store.close()
        if done:
            break
    store = ServiceStore.open(tmp_path / "svc")
    assert dump(store) == expected
    store.close()
    ref.close()
    ledger.close()


_ = lmdb  # the store's txn type, for readers of this file
_ = (LotUnsold, LotTerminated)
