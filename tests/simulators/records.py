"""The decoded entry records of every ``pubex simulate`` scenario, as a digest.

Shared by ``test_simulate_records.py`` and the command that (re)writes its fixture:
``python -m tests.simulators.records`` -- run only when a change of behaviour is meant.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import decode_command, decode_events
from ledger.record import decode_body, decode_envelope
from ledger.store import LedgerStore
from simulators.run import simulate
from simulators.scenarios import SCENARIOS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "simulate_records.json"
SEEDS = (1, 7)


def _plain(obj: Any) -> Any:
    """A struct as its type name and fields (bytes as hex), recursively."""
    if isinstance(obj, msgspec.Struct):
        return {
            "type": type(obj).__name__,
            **{f: _plain(getattr(obj, f)) for f in obj.__struct_fields__},
        }
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def decoded_records(ledger_dir: Path) -> list[dict[str, Any]]:
    """Every entry decoded: seq, sequencer time, command, events, envelope."""
    out = []
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        for seq, _prev, _hash, raw in store.iter_entries():
            body = decode_body(raw)
            out.append(
                {
                    "seq": seq,
                    "ts_ns": body.ts_ns,
                    "command": _plain(decode_command(body.command)),
                    "events": _plain(decode_events(body.events)),
                    "meta": _plain(decode_envelope(body.meta)) if body.meta else None,
                }
            )
    return out


def record_run(scenario: str, seed: int, root: Path) -> dict[str, Any]:
    where = root / f"{scenario}-{seed}"
    summary = simulate(scenario, seed, where)
    records = decoded_records(where)
    canonical = json.dumps(records, sort_keys=True, separators=(",", ":")).encode()
    commands: dict[str, int] = {}
    events: dict[str, int] = {}
    for r in records:
        commands[r["command"]["type"]] = commands.get(r["command"]["type"], 0) + 1
        for ev in r["events"]:
            events[ev["type"]] = events.get(ev["type"], 0) + 1
    return {
        "entries": len(records),
        "state_hash": summary["state_hash"],
        "records_sha256": hashlib.sha256(canonical).hexdigest(),
        "commands": dict(sorted(commands.items())),
        "events": dict(sorted(events.items())),
        "first": records[0] if records else None,
        "last": records[-1] if records else None,
    }


def record_all() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            f"{scenario}@{seed}": record_run(scenario, seed, Path(tmp))
            for scenario in sorted(SCENARIOS)
            for seed in SEEDS
        }


if __name__ == "__main__":
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(record_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)
