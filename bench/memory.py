"""Memory benchmark: what an idle bidder costs an edge, what open lots cost the sequencer.

``python -m bench memory [--json] [--quick] [--conns N] [--lots L]``

Two figures, each beside its target (PERFORMANCE.md):

* ``edge_bytes_per_conn`` -- ``pubex serve --edges 1 --sandbox`` (temp data
  dir, a bench config lifting only the per-address connection cap and the
  staff rate limit, as ``bench gateway`` does).  N bidder keys are registered
  by staff (``bench.gateway.pubex_setup``: one ``register_key`` each, plus one
  lot), then N bidders connect with a signed handshake
  (``bench.gateway.bidder_connect``: the minimal epoll client, which answers
  the server's pings) and stay idle -- no subscription, no bid.  The edge
  process's ``VmRSS`` (/proc/PID/status, the child whose cmdline holds
  ``gateway.entry.cli edge``) is read after the setup and again after every
  connection is up and a settle of a few seconds; (after - before) / N is the
  figure (target 64 KiB).  N = 5,000 (``--quick``: 500).  The sequencer's RSS
  is read at the same two moments: ``sequencer_bytes_per_conn`` should be ~0
  (a connection is the edge's business; sessions reach the sequencer only
  with a command).  ``edge_rss_anon_*`` is the same from ``RssAnon`` (heap,
  without file-backed pages).
* ``sequencer_rss_bytes`` -- the sequencer's state cost for L open English
  lots with 20 registered bidders each, deposits confirmed: a child process
  (``python -m bench.memory child lots``) opens a real
  ``gateway.sequencer.runtime.Runtime`` from the default settings (its
  snapshot and checkpoint policy, fsync'd LMDB) on a temp data dir and submits
  ``bench.core``'s setup commands (staff-origin ``CreateLot``,
  ``PublishLot``, ``RegisterBidder``, ``ConfirmDeposit``; 42 per lot) with
  ``rt.submit``, in windows it waits out, all acknowledged.  Then
  ``gc.collect()`` and the child's own ``VmRSS``/``RssAnon``.
  ``sequencer_bytes_per_lot`` = (after - the runtime's RSS before any lot) /
  L.  Target: the whole process under 1 GiB at L = 100,000 (``--quick``:
  5,000, and ``sequencer_rss_at_100k_lots_bytes`` extrapolates linearly from
  the per-lot figure -- an extrapolation, flagged ``extrapolated``).

RSS is the kernel's count of resident pages: it includes the interpreter,
imported modules and (``VmRSS``, not ``RssAnon``) the LMDB pages the process
touched through its read-only map.  Memory figures never fail the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import emit, ratio, render
from bench.stats import machine as stats_machine

REPO_ROOT = Path(__file__).resolve().parents[1]
KIB = 1024
GIB = 1 << 30
TARGETS: dict[str, float] = {
    "edge_bytes_per_conn": 64 * KIB,
    "sequencer_rss_at_100k_lots_bytes": GIB,
}
FULL_LOTS = 100_000
SUBMIT_WINDOW = 8192  # commands in flight from the child (Runtime's queue holds 65,536)


def log(msg: str) -> None:
    print(f"[bench memory] {msg}", file=sys.stderr, flush=True)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / RssAnon / RssFile of a process, in bytes (0 when gone)."""
    out = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1]) * KIB
    except OSError:
        pass
    return out


# ------------------------------------------------------------------ edge: idle bidders


def _pids_by_role(root: int) -> dict[str, int]:
    from bench.gateway import process_tree, role_of

    out: dict[str, int] = {}
    for pid in process_tree(root):
        role = role_of(pid)
        if role in ("edge", "sequencer") and pid != root:
            out.setdefault(role, pid)
    return out


def edge_idle(n: int, settle_s: float) -> dict[str, Any]:
    from bench.gateway import (
        Conn,
        Epoll,
        Server,
        bidder_connect,
        pubex_setup,
        raise_nofile,
    )

    raise_nofile(max(16_384, n + 1024))
    with tempfile.TemporaryDirectory(prefix="pubex-bench-mem-") as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            "# bench memory: every client connects from 127.0.0.1; staff registers N keys\n"
            "[limits]\nmax_connections_per_address = 1000000\nmax_connections = 1000000\n"
            "staff_commands_per_s = 1000000\nstaff_burst = 1000000\n"
            # the staff connection pipelines every key registration before reading
            # its acks (about 700 bytes each): room for all of them
            "send_queue_bytes = 67108864\n"
        )
        argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--config", str(cfg)]
        argv += ["--data", str(Path(tmp) / "data"), "--ws-port", "0", "--http-port", "0"]
        srv = Server([*argv, "--edges", "1", "--sandbox"], "pubex serve --edges 1")
        conns: list[Conn] = []
        try:
            pids = _pids_by_role(srv.pid)
            if "edge" not in pids or "sequencer" not in pids:
                raise RuntimeError(f"expected an edge and a sequencer under serve, got {pids}")
            log(f"registering {n:,} bidder keys (staff, pipelined)")
            pubex_setup(srv.url, n - 1, ())  # keys 0..n-1 and one lot
            # A few connections first, so one-off costs (first handshake's imports,
            # caches) are not charged to the N.
            warm = [bidder_connect(srv.url, i) for i in range(min(5, n))]
            for c in warm:
                c.sock.close()
            time.sleep(0.5)
            before = {role: proc_status(pid) for role, pid in pids.items()}
            log(f"opening {n:,} authenticated idle bidder connections")
            ep = Epoll([])
            t0 = time.perf_counter()
            for i in range(n):
                c = bidder_connect(srv.url, i)
                c.sock.setblocking(False)
                conns.append(c)
                ep.add(c)
                if i % 200 == 199:  # answer the server's pings while connecting
                    for ready in ep.poll(0):
                        ready.read()
            connect_s = time.perf_counter() - t0
            end = time.monotonic() + settle_s
            while time.monotonic() < end:
                for ready in ep.poll(0.1):
                    ready.read()
            closed = sum(c.closed for c in conns)
            after = {role: proc_status(pid) for role, pid in pids.items()}
        finally:
            for c in conns:
                c.sock.close()
            srv.stop()
    e0, e1 = before["edge"], after["edge"]
    s0, s1 = before["sequencer"], after["sequencer"]
    return {
        "conns": n,
        "conns_closed_by_server": closed,
        "connect_s": round(connect_s, 2),
        "settle_s": settle_s,
        "edge_rss_before_bytes": e0["VmRSS"],
        "edge_rss_after_bytes": e1["VmRSS"],
        "edge_bytes_per_conn": round((e1["VmRSS"] - e0["VmRSS"]) / n),
        "edge_rss_anon_bytes_per_conn": round((e1["RssAnon"] - e0["RssAnon"]) / n),
        "sequencer_rss_before_bytes": s0["VmRSS"],
        "sequencer_rss_after_bytes": s1["VmRSS"],
        "sequencer_bytes_per_conn": round((s1["VmRSS"] - s0["VmRSS"]) / n),
    }


# ------------------------------------------------------------------ sequencer: open lots


def child_lots(lots: int) -> dict[str, Any]:
    """In its own process: a real Runtime on a temp LMDB, L lots set up, own RSS."""
    import trio

    from bench.core import DAY_NS, iter_setup_commands
    from config.settings import load_settings
    from engine.messages import CommandRejected
    from gateway.entry.tuning import tune_for_sequencer
    from gateway.sequencer.journal import Outcome
    from gateway.sequencer.runtime import Runtime

    settings = load_settings()
    out: dict[str, Any] = {"lots": lots}
    with tempfile.TemporaryDirectory(prefix="pubex-bench-memlots-") as tmp:
        rt = Runtime.from_settings(settings, tmp)
        refused: list[Outcome] = []

        async def go() -> None:
            async with trio.open_nursery() as nursery:
                tune_for_sequencer()
                await nursery.start(rt.run)
                gc.collect()
                out["rss_empty"] = proc_status_self()
                wall = time.time_ns()
                inflight = 0
                done = trio.Event()

                def reply(o: Outcome) -> None:
                    nonlocal inflight, done
                    inflight -= 1
                    if o.error is not None or any(type(e) is CommandRejected for e in o.events):
                        refused.append(o)
                    if inflight <= SUBMIT_WINDOW // 2:
                        done.set()

                t0 = time.perf_counter()
                n = 0
                for cmd in iter_setup_commands(wall - 1_000_000_000, wall + 30 * DAY_NS, lots):
                    while inflight >= SUBMIT_WINDOW:
                        done = trio.Event()
                        await done.wait()
                    rt.submit(cmd, reply)
                    inflight += 1
                    n += 1
                while inflight:
                    done = trio.Event()
                    await done.wait()
                out["commands"] = n
                out["setup_s"] = round(time.perf_counter() - t0, 2)
                nursery.cancel_scope.cancel()

        trio.run(go)
        gc.collect()
        out["rss_after"] = proc_status_self()
        out["state_lots"] = len(rt.router.state.lots)
        out["ledger_seq"] = rt.store.last_seq()
        out["refused"] = len(refused)
        out["first_refused"] = repr(refused[0]) if refused else ""
        out["snapshot_every_entries"] = settings.ledger.snapshot_every_entries
        snap = rt.store.latest_snapshot()
        out["latest_snapshot_bytes"] = len(snap[1]) if snap else 0
        rt.store.close()
    return out


def proc_status_self() -> dict[str, int]:
    import os

    return proc_status(os.getpid())


def sequencer_lots(lots: int) -> dict[str, Any]:
    import subprocess

    argv = [sys.executable, "-m", "bench.memory", "child", "lots", "--lots", str(lots)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child lots failed: {proc.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(proc.stdout)
    e, a = res["rss_empty"], res["rss_after"]
    per_lot = (a["VmRSS"] - e["VmRSS"]) / lots
    at_full = e["VmRSS"] + per_lot * FULL_LOTS if lots != FULL_LOTS else a["VmRSS"]
    return {
        "lots": lots,
        "bidders_per_lot": 20,
        "setup_commands": res["commands"],
        "setup_s": res["setup_s"],
        "setup_refused": res["refused"],
        "setup_first_refused": res["first_refused"],
        "state_lots": res["state_lots"],
        "ledger_entries": res["ledger_seq"],
        "snapshot_every_entries": res["snapshot_every_entries"],
        "latest_snapshot_bytes": res["latest_snapshot_bytes"],
        "sequencer_rss_empty_bytes": e["VmRSS"],
        "sequencer_rss_bytes": a["VmRSS"],
        "sequencer_rss_anon_bytes": a["RssAnon"],
        "sequencer_rss_file_bytes": a["RssFile"],
        "sequencer_bytes_per_lot": round(per_lot),
        "sequencer_anon_bytes_per_lot": round((a["RssAnon"] - e["RssAnon"]) / lots),
        "sequencer_rss_at_100k_lots_bytes": round(at_full),
        "extrapolated": lots != FULL_LOTS,
    }


# ------------------------------------------------------------------ report


def run(quick: bool, conns: int | None = None, lots: int | None = None) -> dict[str, Any]:
    n = conns or (500 if quick else 5_000)
    lots = lots or (5_000 if quick else FULL_LOTS)
    r: dict[str, Any] = {"quick": quick, "targets": TARGETS}
    r.update(edge_idle(n, settle_s=2.0 if quick else 5.0))
    log(f"edge: {r['edge_bytes_per_conn']:,} B/conn; now the sequencer with {lots:,} lots")
    r.update(sequencer_lots(lots))
    r["machine"] = stats_machine()
    return r


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def table(r: dict[str, Any]) -> str:
    t = r["targets"]
    x = " (extrapolated linearly)" if r["extrapolated"] else ""
    rows = [
        (
            f"edge RSS per idle bidder ({r['conns']:,} conns)",
            f"{r['edge_bytes_per_conn']:,} B",
            f"target {t['edge_bytes_per_conn']:,.0f} B",
            ratio(r["edge_bytes_per_conn"], t["edge_bytes_per_conn"]),
        ),
        (
            "edge RssAnon per idle bidder",
            f"{r['edge_rss_anon_bytes_per_conn']:,} B",
            f"edge RSS {mib(r['edge_rss_before_bytes'])} -> {mib(r['edge_rss_after_bytes'])}",
            "",
        ),
        (
            "sequencer RSS per idle bidder (should be ~0)",
            f"{r['sequencer_bytes_per_conn']:,} B",
            f"{mib(r['sequencer_rss_before_bytes'])} -> {mib(r['sequencer_rss_after_bytes'])}",
            "",
        ),
        (
            f"sequencer RSS, {r['lots']:,} lots x 20 bidders",
            mib(r["sequencer_rss_bytes"]),
            f"empty runtime {mib(r['sequencer_rss_empty_bytes'])}",
            "",
        ),
        (
            "sequencer RSS per lot (VmRSS / RssAnon)",
            f"{r['sequencer_bytes_per_lot']:,} B",
            f"anon {r['sequencer_anon_bytes_per_lot']:,} B",
            "",
        ),
        (
            f"sequencer RSS at 100,000 lots{x}",
            mib(r["sequencer_rss_at_100k_lots_bytes"]),
            f"target {mib(t['sequencer_rss_at_100k_lots_bytes'])}",
            ratio(r["sequencer_rss_at_100k_lots_bytes"], t["sequencer_rss_at_100k_lots_bytes"]),
        ),
        (
            "latest snapshot (state encoded)",
            mib(r["latest_snapshot_bytes"]),
            f"every {r['snapshot_every_entries']:,} entries",
            "",
        ),
    ]
    lines = render(rows, r["machine"])
    if r["conns_closed_by_server"] or r["setup_refused"]:
        lines.append(
            f"WARNING: {r['conns_closed_by_server']} connections closed by the server, "
            f"{r['setup_refused']} setup commands refused {r['setup_first_refused']}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="500 conns, 5,000 lots (smoke test)")
    ap.add_argument("--conns", type=int, help="idle bidder connections (default 5,000)")
    ap.add_argument("--lots", type=int, help="open lots on the sequencer (default 100,000)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.quick, args.conns, args.lots)
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    emit(result, args.json, table)
    return 0


def _child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory child")
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("lots")
    lo.add_argument("--lots", type=int, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(child_lots(args.lots)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
