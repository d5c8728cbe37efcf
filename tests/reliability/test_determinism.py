"""T3: replay determinism.

* The same ledger full-replayed in separate processes with different
  ``PYTHONHASHSEED`` values gives one distinct state hash, the simulator's.
* The same scenario + seed simulated twice (once in another process with
  another hash seed) gives byte-identical ledgers, signed checkpoints included.
* Snapshot + tail == full replay, from every stored snapshot and from
  arbitrary points (``restore_snapshot(at_or_before=...)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.router import Router
from ledger.replay import full_replay, replay, restore_snapshot
from ledger.store import LedgerStore
from simulators.harness import Harness
from simulators.run import simulate
from simulators.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]
SCENARIO_SEEDS = {"hot-land": 3, "judicial-day": 5}
HASH_SEEDS = ("0", "1", "12345")

pytestmark = pytest.mark.timeout(120)

REPLAY_SCRIPT = """
import sys
from ledger.replay import full_replay
from ledger.store import LedgerStore
for path in sys.argv[1:]:
    with LedgerStore.open(path, readonly=True) as store:
        router = full_replay(store)
        print(path, router.applied, router.state_hash())
"""


def env_with(hash_seed: str) -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """scenario -> (ledger dir, simulator summary), simulated in-process."""
    root = tmp_path_factory.mktemp("sims")
    out = {}
    for scenario, seed in SCENARIO_SEEDS.items():
        path = root / scenario
        out[scenario] = (path, simulate(scenario, seed, path))
    return out


def test_replays_in_separate_processes_agree(ledgers: dict[str, tuple[Path, dict]]) -> None:
    paths = [str(p) for p, _ in ledgers.values()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REPLAY_SCRIPT, *paths],
            cwd=REPO,
            env=env_with(hs),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hs in HASH_SEEDS
    ]
    results: dict[str, set[tuple[int, str]]] = {p: set() for p in paths}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, stderr
        for line in stdout.splitlines():
            path, applied, state_hash = line.split()
            results[path].add((int(applied), state_hash))
    for scenario, (path, summary) in ledgers.items():
        distinct = results[str(path)]
        print(f"\nT3 {scenario}: {len(HASH_SEEDS)} processes, distinct hashes {len(distinct)}")
        assert distinct == {(summary["entries"], summary["state_hash"])}


@pytest.mark.parametrize("scenario", sorted(SCENARIO_SEEDS))
def test_same_seed_gives_byte_identical_ledger(
    ledgers: dict[str, tuple[Path, dict]], tmp_path: Path, scenario: str
) -> None:
    first, summary = ledgers[scenario]
    second = tmp_path / "again"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.entry.cli",
            "simulate",
            "--scenario",
            scenario,
            "--seed",
            str(SCENARIO_SEEDS[scenario]),
            "--ledger",
            str(second),
            "--json",
        ],
        cwd=REPO,
        env=env_with("4242"),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["state_hash"] == summary["state_hash"]
    with (
        LedgerStore.open(first, readonly=True) as a,
        LedgerStore.open(second, readonly=True) as b,
    ):
        raw_a, raw_b = list(a.iter_raw()), list(b.iter_raw())
        assert len(raw_a) == summary["entries"]
        assert raw_a == raw_b
        assert all_snapshots(a) == all_snapshots(b)
        # signed with the key derived from the seed: the same checkpoints, byte for byte
        assert a.checkpoints() and a.checkpoints() == b.checkpoints()
        print(f"\nT3 {scenario}: {len(raw_a)} entries byte-identical across two runs")


def all_snapshots(store: LedgerStore) -> list[tuple[int, bytes]]:
    found, seq = [], store.last_seq()
    while (snap := store.snapshot_at_or_before(seq)) is not None:
        found.append(snap)
        seq = snap[0] - 1
    return found


def hashes_along(store: LedgerStore, points: set[int]) -> tuple[Router, dict[int, str]]:
    """One full replay, noting the state hash right after each seq in ``points``."""
    seen: dict[int, str] = {}
    router = Router()

    def note(body, cmd, events) -> None:  # type: ignore[no-untyped-def]
        if body.seq in points:
            seen[body.seq] = router.state_hash()

    replay(router, store, on_entry=note)
    return router, seen


def snapshot_plus_tail(store: LedgerStore, at_or_before: int, until: int | None) -> Router:
    router = restore_snapshot(store, at_or_before=at_or_before)
    return replay(router, store, from_seq=router.applied + 1, until_seq=until)


def test_snapshot_plus_tail_equals_full_replay(ledgers: dict[str, tuple[Path, dict]]) -> None:
    path, summary = ledgers["judicial-day"]
    with LedgerStore.open(path, readonly=True) as store:
        last = store.last_seq()
        snapshot_seqs = [s for s, _ in all_snapshots(store)]
        assert len(snapshot_seqs) >= 3, snapshot_seqs
        # (restore point, replay until) pairs: from each snapshot to the end, and
        # from arbitrary points (landing on an earlier snapshot) to arbitrary ends.
        pairs = [(s, None) for s in snapshot_seqs]
        pairs += [(15_000, 21_001), (last - 1, last - 1), (33_333, 40_000), (9_999, 12_345)]
        full, along = hashes_along(store, {u for _, u in pairs if u is not None})
        assert full.state_hash() == summary["state_hash"] == full_replay(store).state_hash()
        for at, until in pairs:
            router = snapshot_plus_tail(store, at, until)
            expected = full.state_hash() if until is None else along[until]
            assert router.applied == (last if until is None else until)
            assert router.state_hash() == expected, (at, until)
        print(f"\nT3 snapshot+tail: {len(pairs)} restore points, all equal to full replay")


@pytest.mark.parametrize("scenario", sorted(SCENARIO_SEEDS))
def test_dense_snapshots_all_restore_to_full_replay(tmp_path: Path, scenario: str) -> None:
    """A simulator ledger with a snapshot every 97 entries: each one restores
    to exactly the state a full replay has at its seq (and its stored hash)."""
    sim = Harness(tmp_path / "dense", SCENARIO_SEEDS[scenario])
    sim.journal.snapshot_every = every = 97 if scenario == "hot-land" else 4_999
    SCENARIOS[scenario](sim).setup()
    sim.run()
    final = sim.router.state_hash()
    sim.close()
    with LedgerStore.open(tmp_path / "dense", readonly=True) as store:
        last = store.last_seq()
        points = set(range(every, last + 1, every))
        full, along = hashes_along(store, points)
        assert full.state_hash() == final
        for p in sorted(points):
            restored = restore_snapshot(store, at_or_before=p)
            assert restored.applied == p
            assert restored.state_hash() == along[p]
            tail = replay(restored, store, from_seq=p + 1)
            assert tail.state_hash() == final
