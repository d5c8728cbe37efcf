"""Start-up benchmark: how long the sequencer takes to accept commands, against a full replay.

``python -m bench startup [--json] [--quick] [--entries M] [--seed S] [--snapshot-every N]``

The ledger: ``bench.services.build_ledger`` (one simulated judicial day
replayed day after day through the real engine and ``Journal``), pointed at
M entries (1,000,000; ``--quick``: 50,000) minus a seeded random number of
entries below one snapshot interval -- the server "stopped at a random entry",
so the tail after the newest snapshot is random, not zero.  Snapshots are
written by the Journal exactly as the server writes them, every
``snapshot_every_entries`` (the configured policy, 100,000; ``--quick``
scales it to M/10 = 5,000 so the short ledger keeps the same ten snapshots and
the snapshot path is exercised -- flagged ``snapshot_policy_scaled``).

Measured in one child process (``python -m bench.startup child measure``), on
the same ledger, in this order (the ledger was just written, so its pages are
in the page cache for every step alike):

* ``full_replay_s`` -- ``ledger.replay.full_replay``: genesis to the head,
  snapshots ignored, every entry's events re-produced and compared.  The limit
  start-up is judged against.
* ``recover_s`` -- ``ledger.replay.recover`` alone (newest snapshot restored and
  checked against its state hash, then the tail replayed); of it,
  ``snapshot_restore_s``.
* ``check_whole_s`` -- ``gateway.entry.startup.startup_check`` on a ledger with
  no verified point (the first start after the simulator/an old version wrote
  it): the child-process check of the whole chain + full replay + recovery.
* Then the verified point is recorded at the head (what ``open_runtime`` does
  after a start) and the ledger marked a sandbox (so ``--sandbox`` and the dev
  staff token are accepted).
* ``startup_s`` -- ``gateway.entry.serve.open_sequencer`` (what ``pubex
  sequencer`` does before it can take commands): the start-up check since the
  verified point (``startup_check_s``, a child process: Python start-up,
  imports, the replay from the newest snapshot at or before the point, the
  recovery) + ``Runtime.from_settings`` (store open, recovery).  Of it,
  ``startup_check_s`` is reported separately (and ``startup_check_share``).
  ``startup_to_full_replay_ratio`` = startup_s / full_replay_s (target <= 0.1).
* ``sequencer_ready_s`` -- end to end: ``python -m gateway.entry.cli sequencer
  --sandbox`` spawned to its ``sequencer ready`` line (adds interpreter
  start-up, imports, ``RuntimeStarted`` committed, the link bound);
  ``python_import_s`` is a process that imports the same modules and exits.

Also reported: the policy in force, the newest snapshot's seq and its size
(the encoded state, bytes as stored), the tail length, the ledger file size.
Timing never fails the run.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import emit, ratio, render
from bench.stats import machine as stats_machine

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS: dict[str, float] = {"startup_to_full_replay_ratio": 0.1}


def log(msg: str) -> None:
    print(f"[bench startup] {msg}", file=sys.stderr, flush=True)


def _child(argv: list[str], module: str = "bench.startup") -> dict[str, Any]:
    cmd = [sys.executable, "-m", module, "child", *argv]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv[0]} failed: {proc.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(proc.stdout)
    return res


def _config(path: Path, snapshot_every: int) -> Path:
    path.write_text(f"[ledger]\nsnapshot_every_entries = {snapshot_every}\n")
    return path


def measure(data: Path, config: Path) -> dict[str, Any]:
    """The child's work (see the module docstring); returns seconds and sizes."""
    import gc

    from config.settings import load_settings
    from gateway.entry import serve
    from ledger.replay import full_replay, recover, restore_snapshot
    from ledger.soundness import VERIFIED_KEY, encode_point
    from ledger.store import Batch, LedgerStore

    settings = load_settings(str(config))
    ledger_dir = data / "ledger"
    out: dict[str, Any] = {
        "snapshot_every_entries": settings.ledger.snapshot_every_entries,
        "ledger_file_bytes": (ledger_dir / "data.mdb").stat().st_size,
    }
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        last = store.last_seq()
        snap = store.latest_snapshot()
        out["entries"] = last
        out["snapshot_seq"] = snap[0] if snap else 0
        out["snapshot_bytes"] = len(snap[1]) if snap else 0
        out["tail_entries"] = last - out["snapshot_seq"]
        out["snapshots"] = last // settings.ledger.snapshot_every_entries

        t = time.perf_counter()
        router = full_replay(store)
        out["full_replay_s"] = time.perf_counter() - t
        full_hash = router.state_hash()
        del router
        gc.collect()

        t = time.perf_counter()
        router = restore_snapshot(store)
        out["snapshot_restore_s"] = time.perf_counter() - t
        del router
        gc.collect()

        t = time.perf_counter()
        router = recover(store)
        out["recover_s"] = time.perf_counter() - t
        out["recover_matches_full_replay"] = router.state_hash() == full_hash
        del router
        gc.collect()

    t = time.perf_counter()
    checked = serve.startup_check(data)
    out["check_whole_s"] = time.perf_counter() - t
    assert checked is not None and checked.ok, checked
    # What open_runtime records after a start that passed (the verified point), and
    # the sandbox mark, so the sequencer accepts --sandbox on this ledger.
    with LedgerStore.open(ledger_dir, map_size=settings.ledger.map_size_bytes) as store:
        point = encode_point(checked.last_seq, bytes.fromhex(checked.last_hash))
        store.commit_batch(Batch(meta={VERIFIED_KEY: point, serve.SANDBOX_KEY: b"1"}))

    timed: dict[str, float] = {}
    real_check = serve.startup_check

    def timed_check(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_check(*a, **kw)
        finally:
            timed["check"] = time.perf_counter() - t0

    serve.startup_check = timed_check
    try:
        t = time.perf_counter()
        rt = serve.open_sequencer(
            settings,
            data,
            sandbox=True,
            accelerate=1,
            allow_dev_tokens=True,
            verify_all=False,
        )
        out["startup_s"] = time.perf_counter() - t
    finally:
        serve.startup_check = real_check
    out["startup_check_s"] = timed["check"]
    out["startup_matches_full_replay"] = rt.router.state_hash() == full_hash
    rt.store.close()
    return out


def sequencer_ready(data: Path, config: Path) -> dict[str, float]:
    """``pubex sequencer`` spawned to its ready line, and a bare import of its modules."""
    code = "import gateway.entry.cli, gateway.entry.serve, gateway.link"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
    imports = time.perf_counter() - t
    argv = [sys.executable, "-m", "gateway.entry.cli", "sequencer", "--config", str(config)]
    argv += ["--data", str(data), "--sandbox"]
    t = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready = time.perf_counter() - t
        if "sequencer ready" not in line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"sequencer did not start: {line!r} {err[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    return {"sequencer_ready_s": ready, "python_import_s": imports}


def run(
    quick: bool, entries: int | None = None, seed: int = 1, snapshot_every: int | None = None
) -> dict[str, Any]:
    from config.settings import load_settings

    m = entries or (50_000 if quick else 1_000_000)
    policy = load_settings().ledger.snapshot_every_entries
    every = snapshot_every or (m // 10 if quick else policy)
    stop = m - random.Random(seed).randrange(min(every, max(1, m // 2)))
    r: dict[str, Any] = {
        "quick": quick,
        "targets": TARGETS,
        "target_entries": m,
        "seed": seed,
        "configured_snapshot_every_entries": policy,
        "snapshot_policy_scaled": every != policy,
    }
    with tempfile.TemporaryDirectory(prefix="pubex-bench-start-") as tmp:
        data = Path(tmp) / "data"
        config = _config(Path(tmp) / "bench.toml", every)
        lots = min(1000, max(20, stop // 50))
        log(f"building a {stop:,}-entry ledger (of {m:,}, seed {seed}), snapshot every {every:,}")
        argv = ["build", "--data", str(data), "--entries", str(stop), "--lots", str(lots)]
        built = _child([*argv, "--snapshot-every", str(every)], module="bench.services")
        r["build_s"] = built["build_s"]
        log("measuring: full replay, recovery, start-up checks, open_sequencer")
        res = _child(["measure", "--data", str(data), "--config", str(config)])
        log("measuring: pubex sequencer to its ready line")
        res.update(sequencer_ready(data, config))
    for k, v in res.items():
        r[k] = round(v, 4) if isinstance(v, float) else v
    full = r["full_replay_s"]
    r["full_replay_entries_per_s"] = round(r["entries"] / full) if full else 0
    r["startup_to_full_replay_ratio"] = round(r["startup_s"] / full, 4) if full else 0
    r["recover_to_full_replay_ratio"] = round(r["recover_s"] / full, 4) if full else 0
    r["startup_check_share"] = round(r["startup_check_s"] / r["startup_s"], 3)
    r["check_whole_to_full_replay_ratio"] = round(r["check_whole_s"] / full, 3) if full else 0
    r["machine"] = stats_machine()
    return r


def table(r: dict[str, Any]) -> str:
    t = r["targets"]
    full = r["full_replay_s"]
    scaled = " (scaled for --quick)" if r["snapshot_policy_scaled"] else ""
    rows = [
        (
            f"full replay s ({r['entries']:,} entries, snapshots ignored)",
            f"{full:.3f}",
            f"{r['full_replay_entries_per_s']:,} entries/s",
            "",
        ),
        (
            "start-up s (open_sequencer: check + recovery)",
            f"{r['startup_s']:.3f}",
            f"full replay {full:.3f}",
            ratio(r["startup_s"], full),
        ),
        (
            "start-up / full replay",
            f"{r['startup_to_full_replay_ratio']}",
            f"target {t['startup_to_full_replay_ratio']}",
            ratio(r["startup_to_full_replay_ratio"], t["startup_to_full_replay_ratio"]),
        ),
        (
            "  of it: start-up check s (child process)",
            f"{r['startup_check_s']:.3f}",
            f"{r['startup_check_share']:.0%} of start-up",
            "",
        ),
        (
            "recovery alone s (snapshot + tail)",
            f"{r['recover_s']:.3f}",
            f"snapshot restore {r['snapshot_restore_s']:.3f}",
            ratio(r["recover_s"], full),
        ),
        (
            "first start, no verified point: check s",
            f"{r['check_whole_s']:.3f}",
            f"full replay {full:.3f}",
            ratio(r["check_whole_s"], full),
        ),
        (
            "pubex sequencer spawn -> ready s",
            f"{r['sequencer_ready_s']:.3f}",
            f"bare imports {r['python_import_s']:.3f}",
            "",
        ),
        (
            f"snapshot policy{scaled}",
            f"every {r['snapshot_every_entries']:,}",
            f"configured {r['configured_snapshot_every_entries']:,}",
            "",
        ),
        (
            "newest snapshot: seq / bytes",
            f"{r['snapshot_seq']:,} / {r['snapshot_bytes']:,}",
            f"tail {r['tail_entries']:,} entries",
            "",
        ),
    ]
    lines = render(rows, r["machine"])
    if not (r["recover_matches_full_replay"] and r["startup_matches_full_replay"]):
        lines.append("WARNING: the recovered state differs from the full replay's")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="50,000 entries (smoke test)")
    ap.add_argument("--entries", type=int, help="ledger entries before the stop (1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="seeds the stop entry")
    ap.add_argument("--snapshot-every", type=int, help="snapshot policy (default: the config's)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.quick, args.entries, args.seed, args.snapshot_every)
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    emit(result, args.json, table)
    return 0


def _child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup child")
    sub = ap.add_subparsers(dest="cmd", required=True)
    me = sub.add_parser("measure")
    me.add_argument("--data", type=Path, required=True)
    me.add_argument("--config", type=Path, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.data, args.config)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
