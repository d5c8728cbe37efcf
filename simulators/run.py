"""``pubex simulate``: run a seeded scenario against a real ledger and summarise it."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from engine.messages import Command, CommandRetried, Event, LotExtended, OrderFilled
from simulators.harness import Harness
from simulators.scenarios import SCENARIOS


def simulate(scenario: str, seed: int, ledger_dir: str | Path) -> dict[str, object]:
    if scenario not in SCENARIOS:
        raise KeyError(f"unknown scenario {scenario!r}; known: {', '.join(sorted(SCENARIOS))}")
    started = time.perf_counter()
    sim = Harness(ledger_dir, seed)
    counts: Counter[str] = Counter()

    def count(cmd: Command, events: list[Event]) -> None:
        for ev in events:
            if type(ev) is LotExtended:
                counts["extensions"] += 1
            elif type(ev) is CommandRetried:
                counts["retries_answered"] += 1
            elif type(ev) is OrderFilled:  # e-mall trades
                counts["trades"] += 1
                counts["traded_qty"] += ev.qty

    sim.listeners.append(count)
    SCENARIOS[scenario](sim).setup()
    sim.run()
    statuses = Counter(lot.status for lot in sim.router.state.lots.values())
    summary: dict[str, object] = {
        "scenario": scenario,
        "seed": seed,
        "entries": sim.router.applied,
        "lots": dict(sorted(statuses.items())),
        "bids_accepted": sim.accepted,
        "refused_by_code": dict(sorted(sim.refused.items())),
        "extensions": counts["extensions"],
        "retries_answered": counts["retries_answered"],
        "items": len(sim.router.state.items),
        "trades": counts["trades"],
        "traded_qty": counts["traded_qty"],
        "state_hash": sim.router.state_hash(),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    sim.close()
    return summary


def format_summary(s: dict[str, object]) -> str:
    lots = s["lots"]
    assert isinstance(lots, dict)
    refused = s["refused_by_code"]
    assert isinstance(refused, dict)
    lines = [
        f"scenario {s['scenario']} seed {s['seed']}: {s['entries']} ledger entries "
        f"in {s['wall_s']} s",
        "lots: " + ", ".join(f"{k} {v}" for k, v in lots.items()),
        f"bids accepted: {s['bids_accepted']}; extensions: {s['extensions']}; "
        f"retries answered with their original outcome: {s['retries_answered']}",
        *(
            [
                f"e-mall items: {s['items']}; trades: {s['trades']}; quantity traded: {s['traded_qty']}"
            ]
            if s.get("items")
            else []
        ),
        f"refused ({sum(refused.values())}): " + ", ".join(f"{k} {v}" for k, v in refused.items()),
        f"state hash: {s['state_hash']}",
    ]
    return "\n".join(lines)
