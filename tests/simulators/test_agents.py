"""Seeded bidder agents (simulators/agents.py): same seed, same bids.

In-process runs of an agent scenario with the same seed produce byte-identical
ledgers (the LMDB data is compared entry by entry, hashes included); another
seed gives another ledger.  Every strategy acts, the ring ladders its prices
from one device, and the provisioning a live run sends is what the
in-process run ledgers.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path

import msgspec
import pytest

from engine.messages import BidAccepted, Command, Event
from ledger.record import decode_body
from ledger.store import LedgerStore
from simulators.agents import (
    DEFINITIONS,
    STRATEGIES,
    agent_key,
    auction_day,
    fingerprint,
    make_agents,
    provisioning,
)
from simulators.harness import Harness
from simulators.run import simulate
from simulators.scenarios import SCENARIOS


def entries(path: Path) -> list[tuple[int, bytes, bytes, bytes]]:
    with LedgerStore.open(path, readonly=True) as store:
        return list(store.iter_entries())


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_same_seed_same_ledger(tmp_path: Path, name: str) -> None:
    a = simulate(name, 11, tmp_path / "a")
    b = simulate(name, 11, tmp_path / "b")
    c = simulate(name, 12, tmp_path / "c")
    assert a["bids_accepted"] > 0
    assert a["state_hash"] == b["state_hash"] != c["state_hash"]
    first, second = entries(tmp_path / "a"), entries(tmp_path / "b")
    assert len(first) == a["entries"]
    assert first == second  # byte for byte: seq, previous hash, hash, body


def test_every_strategy_bids_and_the_ring_ladders(tmp_path: Path) -> None:
    sim = Harness(tmp_path / "l", 4)
    scenario = SCENARIOS["auction-agents"](sim)
    scenario.setup()
    strategy = {a.spec.bidder: a.strategy for a in scenario.agents}
    accepted: Counter[str] = Counter()
    ring: list[tuple[str, int]] = []

    def listen(cmd: Command, events: list[Event]) -> None:
        if cmd.origin.startswith("bidder:") and any(type(e) is BidAccepted for e in events):
            bidder = cmd.origin.removeprefix("bidder:")
            accepted[strategy[bidder]] += 1
            if bidder.startswith("ring-0000-"):
                ring.append((bidder, cmd.amount_fen))  # type: ignore[attr-defined]

    sim.listeners.append(listen)
    sim.run()
    sim.close()
    assert {"incremental", "jump", "sniper", "proxy", "ring"} <= set(accepted)
    # ladder: consecutive ring bids come from different members, one increment apart
    inc = sim.router.state.lots["E0000"].increment_fen
    ladder = [(x, y) for x, y in pairwise(ring) if y[1] - x[1] == inc and x[0] != y[0]]
    assert len(ladder) >= 2
    # every ring bid is ledgered with the ring's one device fingerprint
    device = fingerprint("device-ring-0000")
    metas = [
        msgspec.msgpack.decode(decode_body(raw).meta)
        for _s, _p, _h, raw in entries(tmp_path / "l")
        if b"ring-0000-" in raw and decode_body(raw).meta
    ]
    assert metas and all(m[3] == device and m[2] == "10.9.8.7" for m in metas)


def test_reverse_suppliers_stay_above_their_floor_and_confirm(tmp_path: Path) -> None:
    summary = simulate("reverse-agents", 2, tmp_path / "r")
    lots = summary["lots"]
    assert isinstance(lots, dict) and lots.get("sold", 0) > 0
    definition = DEFINITIONS["reverse-agents"](0)
    floors = {a.bidder: a.valuation_fen for a in definition.agents}
    assert min(floors.values()) > 0
    sim = Harness(tmp_path / "r2", 2)
    scenario = SCENARIOS["reverse-agents"](sim)
    scenario.setup()
    floor = {a.spec.bidder: a.spec.valuation_fen for a in scenario.agents}
    low: list[bool] = []
    sim.listeners.append(
        lambda cmd, events: (
            low.append(cmd.amount_fen < floor[cmd.origin[7:]])  # type: ignore[attr-defined]
            if type(cmd).__name__ == "PlaceBid"
            else None
        )
    )
    sim.run()
    sim.close()
    assert low and not any(low)


def test_provisioning_is_complete_and_keys_are_derived() -> None:
    definition = auction_day(5, lots=12)
    ops = list(provisioning(definition, 0))
    kinds = Counter(op.op for op in ops)
    assert kinds["create_lot"] == kinds["publish_lot"] == 12
    assert kinds["register_key"] == kinds["register_bidder"] == len(definition.agents)
    assert kinds["confirm_deposit"] == len(definition.agents)
    spec = definition.agents[0]
    assert agent_key(5, spec.key_id).encode() == agent_key(5, spec.key_id).encode()
    assert agent_key(5, spec.key_id).encode() != agent_key(6, spec.key_id).encode()
    assert set(a.strategy for a in make_agents(definition)) <= set(STRATEGIES)
