"""Core benchmark: the engine, the durable pipeline and the disk, in ONE run.

``python -m bench core [--json] [--quick]``

Figures, each next to its limit or target from the same run (PERFORMANCE.md):

* ``engine_bids_per_s`` -- English bids applied in-process through
  ``Router.apply`` (no ledger): 100 lots x 20 bidders with confirmed deposits,
  pre-generated valid rising ``PlaceBid`` commands spread over the lots, only
  the apply loop timed (strictly increasing ``now_ns``), best of 3.  Also CPU
  microseconds per bid.
* ``durable_bids_per_s`` -- the same bids through ``gateway.sequencer.runtime.Runtime``
  with the real fsync'd ``LedgerStore`` in a temp dir: K concurrent trio tasks
  (one per simulated connection), each submitting a window of W bids with
  ``rt.submit`` and waiting until the window is acknowledged (durable).
  Records submit -> durable-ack latency per bid (closed loop).
* ``raw_lmdb_entries_per_s`` -- the physical limit: the very ledger values the
  durable run committed, re-committed into a fresh LMDB env (``open_env``,
  sync on) in exactly the durable run's batch sizes, one write txn per batch,
  ``put(append=True)``; no engine, no hashing.  ``durable_to_raw_ratio`` is
  durable / raw.
* ``ack_p50_us`` / ``ack_p99_us`` / ``ack_p999_us`` -- OPEN LOOP at half the
  durable rate just measured: bids are sent on a fixed schedule and latency is
  measured from each bid's *scheduled* send time to its durable ack, so a stall
  is not hidden by the sender waiting (no coordinated omission).

Percentiles are exact (nearest rank on the sorted samples).  Everything lives
in temp dirs that are removed at the end.  Timing never fails the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
import trio

from bench.stats import machine as stats_machine
from bench.stats import pct, ratio, render, us
from engine.messages import (
    BidAccepted,
    Command,
    ConfirmDeposit,
    CreateLot,
    PlaceBid,
    PublishLot,
    RegisterBidder,
)
from engine.router import Router
from gateway.entry.tuning import SWITCH_INTERVAL_S, tune_for_sequencer
from gateway.sequencer.runtime import Outcome, Runtime
from ledger.record import key_seq
from persistence.env import open_env

perf_ns = time.perf_counter_ns
cpu_ns = time.process_time_ns

TARGETS: dict[str, float] = {
    "engine_bids_per_s": 300_000,
    "durable_to_raw_ratio": 0.5,
    "ack_p99_us": 2000,
}

N_LOTS = 100
N_BIDDERS = 20
START_PRICE_FEN = 100_000
INCREMENT_FEN = 100
DEPOSIT_FEN = 10_000
DAY_NS = 86_400 * 1_000_000_000
STAFF = "staff:bench"
MAP_SIZE = 1 << 30  # sparse; big enough that the map never grows inside a timed part


def log(msg: str) -> None:
    print(f"[bench core] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ workload


def lot_id(i: int) -> str:
    return f"L{i:03d}"


def bidder_id(lot: int, j: int) -> str:
    return f"u{lot:03d}-{j:02d}"


def setup_commands(start_ns: int, end_ns: int) -> list[Command]:
    """Staff commands: N_LOTS English lots, open now, N_BIDDERS bidders each, deposits paid."""
    return list(iter_setup_commands(start_ns, end_ns, N_LOTS))


def iter_setup_commands(start_ns: int, end_ns: int, n_lots: int) -> Iterator[Command]:
    """``setup_commands`` for ``n_lots`` lots, lazily (``bench memory`` builds 100,000
    lots and must not hold 4.2M commands in the process it measures)."""
    seq = 0

    def nxt() -> int:
        nonlocal seq
        seq += 1
        return seq

    for i in range(n_lots):
        yield CreateLot(
            STAFF,
            nxt(),
            lot_id=lot_id(i),
            mechanism="english",
            title=f"bench lot {i}",
            start_price_fen=START_PRICE_FEN,
            increment_fen=INCREMENT_FEN,
            start_ns=start_ns,
            end_ns=end_ns,
            deposit_fen=DEPOSIT_FEN,
        )
        yield PublishLot(STAFF, nxt(), lot_id(i))
        for j in range(N_BIDDERS):
            yield RegisterBidder(STAFF, nxt(), lot_id(i), bidder_id(i, j))
            yield ConfirmDeposit(STAFF, nxt(), lot_id(i), bidder_id(i, j), DEPOSIT_FEN)


class BidGen:
    """Valid rising bids: tracks each lot's price and each origin's client_seq."""

    def __init__(self) -> None:
        self.price = [0] * N_LOTS
        self.lot_ids = [lot_id(i) for i in range(N_LOTS)]
        # One origin string object per bidder, like one per connection in the gateway.
        self.origins = [
            [f"bidder:{bidder_id(i, j)}" for j in range(N_BIDDERS)] for i in range(N_LOTS)
        ]
        self.seq: dict[str, int] = {}
        self.turn = [0] * N_LOTS  # next bidder per lot (round robin)

    def bid(self, lot: int) -> PlaceBid:
        p = self.price[lot]
        amount = START_PRICE_FEN if p == 0 else p + INCREMENT_FEN
        self.price[lot] = amount
        j = self.turn[lot]
        self.turn[lot] = (j + 1) % N_BIDDERS
        origin = self.origins[lot][j]
        s = self.seq.get(origin, 0) + 1
        self.seq[origin] = s
        return PlaceBid(origin, s, self.lot_ids[lot], amount)

    def spread(self, n: int, lots: Sequence[int] = range(N_LOTS)) -> list[PlaceBid]:
        """``n`` bids round robin over ``lots``."""
        m = len(lots)
        return [self.bid(lots[k % m]) for k in range(n)]


# ------------------------------------------------------------------ stats


class GcMonitor:
    """Total and worst pause of the cyclic GC while active (a stall the sequencer sees)."""

    def __init__(self) -> None:
        self.total_ns = 0
        self.max_ns = 0
        self.count = 0
        self.full = 0
        self._t = 0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = perf_ns()
            return
        d = perf_ns() - self._t
        self.total_ns += d
        self.max_ns = max(self.max_ns, d)
        self.count += 1
        self.full += info["generation"] == 2

    def __enter__(self) -> GcMonitor:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)

    def report(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_gc_ms": round(self.total_ns / 1e6, 1),
            f"{prefix}_gc_max_pause_ms": round(self.max_ns / 1e6, 1),
            f"{prefix}_gc_full_collections": self.full,
        }


# ------------------------------------------------------------------ engine


def bench_engine(n_bids: int, runs: int = 3) -> dict[str, Any]:
    t0 = 1_700_000_000_000_000_000
    setup = setup_commands(t0, t0 + DAY_NS)
    bids = BidGen().spread(n_bids)
    results = []
    for _ in range(runs):
        router = Router()
        now = t0
        for c in setup:
            now += 1000
            router.apply(c, now)
        apply = router.apply
        gc.collect()
        w0, c0 = perf_ns(), cpu_ns()
        for cmd in bids:
            now += 1000
            apply(cmd, now)
        w1, c1 = perf_ns(), cpu_ns()
        accepted = sum(lot.bid_count for lot in router.state.lots.values())
        results.append((w1 - w0, c1 - c0, accepted))
        del router
    wall, cpu, accepted = min(results)
    return {
        "engine_bids_per_s": round(n_bids / (wall / 1e9)),
        "engine_cpu_us_per_bid": round(cpu / n_bids / 1000, 3),
        "engine_runs_bids_per_s": [round(n_bids / (w / 1e9)) for w, _, _ in results],
        "engine_bids": n_bids,
        "engine_rejected": n_bids - accepted,
    }


# ------------------------------------------------------------------ durable


class Conn:
    """One simulated connection: a window of W outstanding bids, one Event per window."""

    __slots__ = ("bad", "done", "lat", "pending", "sent_ns")

    def __init__(self, lat: list[int]) -> None:
        self.lat = lat
        self.pending = 0
        self.sent_ns = 0
        self.bad = 0
        self.done = trio.Event()

    def reply(self, outcome: Outcome) -> None:
        self.lat.append(perf_ns() - self.sent_ns)
        if outcome.error is not None or type(outcome.events[0]) is not BidAccepted:
            self.bad += 1
        self.pending -= 1
        if self.pending == 0:
            self.done.set()


async def _conn_task(submit: Callable[..., None], conn: Conn, cmds: list[PlaceBid], w: int) -> None:
    for i in range(0, len(cmds), w):
        window = cmds[i : i + w]
        conn.done = trio.Event()
        conn.pending = len(window)
        conn.sent_ns = perf_ns()  # the whole window is submitted without a checkpoint
        reply = conn.reply
        for cmd in window:
            submit(cmd, reply)
        await conn.done.wait()


async def closed_loop(rt: Runtime, per_conn: list[list[PlaceBid]], w: int) -> dict[str, Any]:
    lat: list[int] = []
    conns = [Conn(lat) for _ in per_conn]
    n = sum(len(c) for c in per_conn)
    assert rt.batch_sizes is not None
    b0, seq0 = len(rt.batch_sizes), rt.durable_seq
    gc.collect()
    with GcMonitor() as gcm:
        w0, c0 = perf_ns(), cpu_ns()
        async with trio.open_nursery() as nursery:
            for conn, cmds in zip(conns, per_conn, strict=True):
                nursery.start_soon(_conn_task, rt.submit, conn, cmds, w)
        w1, c1 = perf_ns(), cpu_ns()
    lat.sort()
    return {
        "bids": n,
        "wall_ns": w1 - w0,
        "cpu_ns": c1 - c0,
        "lat": lat,
        "rejected": sum(c.bad for c in conns),
        "batch_sizes": rt.batch_sizes[b0:],
        "seq_range": (seq0 + 1, rt.durable_seq),
        "gc": gcm.report("durable"),
    }


async def open_loop(rt: Runtime, cmds: list[PlaceBid], rate: float) -> dict[str, Any]:
    """Send ``cmds`` on a fixed schedule at ``rate``/s; latency from the SCHEDULED time."""
    n = len(cmds)
    interval = 1e9 / rate
    min_tick_ns = 200_000  # below this interval, send small bursts per wake-up
    start = perf_ns() + 2_000_000
    sched = [start + round(i * interval) for i in range(n)]
    lat: list[int] = []
    send_lag: list[int] = []
    state = {"acked": 0, "bad": 0}
    done = trio.Event()

    # One sender, so the engine sees the bids in schedule order and the runtime
    # releases acks in sequence order: the k-th reply is the k-th bid.
    def reply(outcome: Outcome) -> None:
        k = state["acked"]
        lat.append(perf_ns() - sched[k])
        if outcome.error is not None or type(outcome.events[0]) is not BidAccepted:
            state["bad"] += 1
        state["acked"] = k + 1
        if k + 1 == n:
            done.set()

    submit = rt.submit
    i = 0
    while i < n:
        now = perf_ns()
        while i < n and sched[i] <= now:
            send_lag.append(now - sched[i])
            submit(cmds[i], reply)
            i += 1
        if i < n:
            wait = sched[i] - perf_ns()
            if interval < min_tick_ns:
                wait = max(wait, min_tick_ns)
            await trio.sleep(max(0, wait) / 1e9)
    end_send = perf_ns()
    with trio.move_on_after(30):
        await done.wait()
    lat.sort()
    send_lag.sort()
    return {
        "bids": n,
        "rate": rate,
        "send_s": (end_send - start) / 1e9,
        "lat": lat,
        "send_lag": send_lag,
        "missing": n - state["acked"],
        "rejected": state["bad"],
    }


def split_by_conn(gen: BidGen, n_bids: int, k: int) -> list[list[PlaceBid]]:
    """Each connection owns its own lots (k <= N_LOTS), so windows from different
    connections can interleave in any order and every bid still rises."""
    per = n_bids // k
    return [gen.spread(per, range(c, N_LOTS, k)) for c in range(k)]


async def durable_and_open_loop(
    data_dir: Path,
    raw_dir: Path,
    *,
    n_bids: int,
    k: int,
    w: int,
    open_s: float,
    open_fraction: float = 0.5,
) -> dict[str, Any]:
    rt = Runtime.open(data_dir, record_batch_sizes=True, map_size=MAP_SIZE)
    switch = sys.getswitchinterval()
    out: dict[str, Any] = {}
    try:
        async with trio.open_nursery() as nursery:
            tune_for_sequencer()  # after recovery: what it loaded is long-lived
            await nursery.start(rt.run)
            wall = time.time_ns()
            setup = setup_commands(wall - 1_000_000_000, wall + DAY_NS)
            for c in setup[:-1]:
                rt.submit(c)
            await rt.call(setup[-1])
            gen = BidGen()

            # Warm-up (untimed), then the timed closed-loop run.
            log(f"durable: warm-up, then {n_bids} bids, K={k} connections x W={w}")
            await closed_loop(rt, split_by_conn(gen, max(k * w * 10, n_bids // 20), k), w)
            cl = await closed_loop(rt, split_by_conn(gen, n_bids, k), w)
            durable_rate = cl["bids"] / (cl["wall_ns"] / 1e9)
            lat = cl["lat"]
            sizes = cl["batch_sizes"]
            out.update(
                {
                    "durable_bids_per_s": round(durable_rate),
                    "durable_cpu_us_per_bid": round(cl["cpu_ns"] / cl["bids"] / 1000, 2),
                    "durable_bids": cl["bids"],
                    "durable_connections": k,
                    "durable_window": w,
                    "durable_rejected": cl["rejected"],
                    "closed_loop_ack_p50_us": us(pct(lat, 50)),
                    "closed_loop_ack_p99_us": us(pct(lat, 99)),
                    "closed_loop_ack_p999_us": us(pct(lat, 99.9)),
                    "closed_loop_ack_max_us": us(lat[-1]) if lat else 0,
                    "batches": len(sizes),
                    "mean_batch_entries": round(sum(sizes) / len(sizes), 1) if sizes else 0,
                    "max_batch_entries": max(sizes) if sizes else 0,
                    **cl["gc"],
                }
            )

            # The physical limit, same run, same values, same batch sizes.
            first, last = cl["seq_range"]
            items = [
                (key, val) for key, val in rt.store.iter_raw() if first <= key_seq(key) <= last
            ]
            assert sum(sizes) == len(items), (sum(sizes), len(items))
            raw = raw_commit(raw_dir, items, sizes)
            out.update(raw)
            out["durable_to_raw_ratio"] = round(durable_rate / raw["raw_lmdb_entries_per_s"], 3)
            del items

            # Open loop at half (open_fraction of) the durable rate just measured.
            rate = max(100.0, durable_rate * open_fraction)
            n_open = max(100, int(rate * open_s))
            log(f"open loop: {n_open} bids at {rate:,.0f}/s")
            cmds = gen.spread(n_open)
            b0, seq0 = len(rt.batch_sizes or []), rt.durable_seq
            gc.collect()
            with GcMonitor() as gcm:
                ol = await open_loop(rt, cmds, rate)
            ol_sizes = (rt.batch_sizes or [])[b0:]
            # The open loop's physical floor: its own batches, re-committed raw
            # back to back, one fsync'd txn each -- an ack waits for the commit
            # in flight and then its own, so its p99 cannot beat this p99.
            items = [(key, val) for key, val in rt.store.iter_raw() if key_seq(key) > seq0]
            floor = raw_commit(raw_dir.with_name("raw-open"), items, ol_sizes)
            out["raw_commit_p50_us"] = floor["raw_commit_p50_us"]
            out["raw_commit_p99_us"] = floor["raw_commit_p99_us"]
            del items
            out.update(gcm.report("open_loop"))
            lat, lag = ol["lat"], ol["send_lag"]
            out.update(
                {
                    "ack_p50_us": us(pct(lat, 50)),
                    "ack_p99_us": us(pct(lat, 99)),
                    "ack_p999_us": us(pct(lat, 99.9)),
                    "ack_max_us": us(lat[-1]) if lat else 0,
                    "open_loop_rate_per_s": round(rate),
                    "open_loop_bids": ol["bids"],
                    "open_loop_send_s": round(ol["send_s"], 3),
                    "open_loop_missing_acks": ol["missing"],
                    "open_loop_rejected": ol["rejected"],
                    "open_loop_send_lag_p50_us": us(pct(lag, 50)),
                    "open_loop_send_lag_p99_us": us(pct(lag, 99)),
                    "open_loop_batches": len(ol_sizes),
                    "open_loop_mean_batch_entries": (
                        round(sum(ol_sizes) / len(ol_sizes), 1) if ol_sizes else 0
                    ),
                }
            )
            nursery.cancel_scope.cancel()
    finally:
        rt.store.close()
        sys.setswitchinterval(switch)
    return out


def raw_commit(path: Path, items: list[tuple[bytes, bytes]], sizes: list[int]) -> dict[str, Any]:
    env = open_env(path, map_size=MAP_SIZE, max_dbs=2)
    lat: list[int] = []
    try:
        db = env.open_db(b"entries")
        i = 0
        w0, c0 = perf_ns(), cpu_ns()
        for n in sizes:
            t = perf_ns()
            txn = env.begin(write=True, db=db)
            put = txn.put
            for key, val in items[i : i + n]:
                put(key, val, append=True)
            txn.commit()
            lat.append(perf_ns() - t)
            i += n
        w1, c1 = perf_ns(), cpu_ns()
    finally:
        env.close()
    lat.sort()
    return {
        "raw_lmdb_entries_per_s": round(len(items) / ((w1 - w0) / 1e9)),
        "raw_lmdb_commits_per_s": round(len(sizes) / ((w1 - w0) / 1e9)),
        "raw_lmdb_cpu_us_per_entry": round((c1 - c0) / len(items) / 1000, 2),
        "raw_entries": len(items),
        "mean_entry_bytes": round(sum(len(v) for _, v in items) / len(items), 1),
        "raw_commit_p50_us": us(pct(lat, 50)),
        "raw_commit_p99_us": us(pct(lat, 99)),
    }


# ------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    return stats_machine(lmdb=lmdb.version(), trio=trio.__version__)


def table(r: dict[str, Any]) -> str:
    t = r["targets"]
    rows = [
        (
            "engine bids/s (Router.apply, best of 3)",
            f"{r['engine_bids_per_s']:,}",
            f"target {t['engine_bids_per_s']:,}",
            ratio(r["engine_bids_per_s"], t["engine_bids_per_s"]),
        ),
        ("engine CPU µs/bid", f"{r['engine_cpu_us_per_bid']}", "", ""),
        (
            "durable bids/s (fsync, K conns x W window)",
            f"{r['durable_bids_per_s']:,}",
            f"raw LMDB {r['raw_lmdb_entries_per_s']:,}/s",
            ratio(r["durable_bids_per_s"], r["raw_lmdb_entries_per_s"]),
        ),
        (
            "durable/raw ratio",
            f"{r['durable_to_raw_ratio']}",
            f"target {t['durable_to_raw_ratio']}",
            ratio(r["durable_to_raw_ratio"], t["durable_to_raw_ratio"]),
        ),
        (
            "durable CPU µs/bid (all threads)",
            f"{r['durable_cpu_us_per_bid']}",
            f"raw LMDB {r['raw_lmdb_cpu_us_per_entry']} µs/entry",
            ratio(r["durable_cpu_us_per_bid"], r["raw_lmdb_cpu_us_per_entry"]),
        ),
        (
            "batches / mean entries per batch",
            f"{r['batches']} / {r['mean_batch_entries']}",
            f"max {r['max_batch_entries']}",
            "",
        ),
        ("raw LMDB commits/s (same batches)", f"{r['raw_lmdb_commits_per_s']:,}", "", ""),
        (
            "closed-loop ack p50 / p99 µs",
            f"{r['closed_loop_ack_p50_us']} / {r['closed_loop_ack_p99_us']}",
            "",
            "",
        ),
        (f"open-loop ack p50 µs @ {r['open_loop_rate_per_s']:,}/s", f"{r['ack_p50_us']}", "", ""),
        (
            "open-loop ack p99 µs",
            f"{r['ack_p99_us']}",
            f"target {t['ack_p99_us']}",
            ratio(r["ack_p99_us"], t["ack_p99_us"]),
        ),
        (
            "raw commit p50 / p99 µs (open loop's batches)",
            f"{r['raw_commit_p50_us']} / {r['raw_commit_p99_us']}",
            "ack p99 / raw commit p99",
            ratio(r["ack_p99_us"], r["raw_commit_p99_us"]),
        ),
        ("open-loop ack p99.9 µs", f"{r['ack_p999_us']}", "", ""),
        ("open-loop sender lag p99 µs (loop busy)", f"{r['open_loop_send_lag_p99_us']}", "", ""),
        (
            "open-loop batches / mean entries",
            f"{r['open_loop_batches']} / {r['open_loop_mean_batch_entries']}",
            "",
            "",
        ),
        (
            "GC pause total / max ms (durable run)",
            f"{r['durable_gc_ms']} / {r['durable_gc_max_pause_ms']}",
            f"{r['durable_gc_full_collections']} full",
            "",
        ),
        (
            "GC pause total / max ms (open loop)",
            f"{r['open_loop_gc_ms']} / {r['open_loop_gc_max_pause_ms']}",
            f"{r['open_loop_gc_full_collections']} full",
            "",
        ),
        (
            f"1-entry commit p99 µs beside a busy loop, {SWITCH_INTERVAL_S * 1e3} ms switch",
            f"{r['busy_loop_commit_p99_us_at_runtime']}",
            f"5 ms switch {r['busy_loop_commit_p99_us_at_5ms']}",
            ratio(r["busy_loop_commit_p99_us_at_runtime"], r["busy_loop_commit_p99_us_at_5ms"]),
        ),
    ]
    lines = render(rows, r["machine"])
    bad = r["engine_rejected"] + r["durable_rejected"] + r["open_loop_rejected"]
    if bad or r["open_loop_missing_acks"]:
        lines.append(f"WARNING: {bad} bids rejected, {r['open_loop_missing_acks']} acks missing")
    return "\n".join(lines)


def gil_probe(tmp: Path, commits: int) -> dict[str, Any]:
    """RELIABILITY.md, commit cost: a one-entry fsync'd commit in a worker thread
    while the main thread spins Python bytecode, at the default 5 ms switch
    interval and at the runtime's (``SWITCH_INTERVAL_S``).  The difference is
    GIL wait."""
    import threading

    from persistence.env import open_env

    out: dict[str, Any] = {}
    before = sys.getswitchinterval()
    for label, interval in (("5ms", 0.005), ("runtime", SWITCH_INTERVAL_S)):
        env = open_env(tmp / f"gil-{label}", map_size=64 << 20)
        lat: list[int] = []
        stop = threading.Event()

        def committer(env: Any = env, lat: list[int] = lat, stop: Any = stop) -> None:
            for i in range(commits):
                t = perf_ns()
                with env.begin(write=True) as txn:
                    txn.put(i.to_bytes(8, "big"), b"x" * 250, append=True)
                lat.append(perf_ns() - t)
            stop.set()

        sys.setswitchinterval(interval)
        th = threading.Thread(target=committer)
        th.start()
        spins = 0
        while not stop.is_set():  # a busy event loop: pure bytecode, no blocking
            spins += 1
        th.join()
        sys.setswitchinterval(before)
        env.close()
        lat.sort()
        out[f"busy_loop_commit_p50_us_at_{label}"] = round(pct(lat, 50) / 1e3, 1)
        out[f"busy_loop_commit_p99_us_at_{label}"] = round(pct(lat, 99) / 1e3, 1)
    return out


def run(quick: bool, open_fraction: float = 0.5) -> dict[str, Any]:
    engine_bids = 50_000 if quick else 300_000
    durable_bids = 10_000 if quick else 100_000
    open_s = 1.0 if quick else 5.0
    result: dict[str, Any] = {"quick": quick}
    log(f"engine: {engine_bids} bids x 3 runs")
    result.update(bench_engine(engine_bids))
    with tempfile.TemporaryDirectory(prefix="pubex-bench-") as tmp:
        result.update(
            trio.run(
                lambda: durable_and_open_loop(
                    Path(tmp) / "rt",
                    Path(tmp) / "raw",
                    n_bids=durable_bids,
                    k=50,
                    w=8,
                    open_s=open_s,
                    open_fraction=open_fraction,
                )
            )
        )
        log("GIL probe: commits in a thread beside a busy loop")
        result.update(gil_probe(Path(tmp), 200 if quick else 1_000))
    result["machine"] = machine()
    result["targets"] = dict(TARGETS)
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench core", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="smaller counts (smoke test, < 20 s)")
    ap.add_argument(
        "--open-fraction",
        type=float,
        default=0.5,
        help="open-loop rate as a fraction of the measured durable rate (default 0.5)",
    )
    args = ap.parse_args(argv)
    t0 = perf_ns()
    result = run(args.quick, args.open_fraction)
    result["elapsed_s"] = round((perf_ns() - t0) / 1e9, 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
        print(f"elapsed {result['elapsed_s']} s")
    return 0
