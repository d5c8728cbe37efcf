"""Core benchmark: the engine, the durable pipeline and the disk, in ONE run.

``python -m bench core [--json] [--quick] [--link]``

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

``python -m bench core --link [--json] [--quick]`` -- the split server instead
(none of the figures above; the same workload):

* the sequencer is a real child process, ``python -m gateway.entry.cli
  sequencer --data DIR --config CFG --sandbox`` (a temp config lifting the
  per-bidder and per-staff rate limits and the refusal budget), started and
  waited for until it prints ``sequencer ready``;
* a synthetic edge in this process speaks the raw link (``gateway.link.messages``
  over the Unix socket, trio): ``Join`` with the link secret, ``Welcome``, then
  ``Submit`` batches -- everything queued during a pass goes out as ONE frame,
  like ``LinkCore`` -- and it decodes every frame the sequencer sends
  (``Answered``, ``Entries``, ``Beat``), as a real edge must.  No HTTP, no
  signature checks: the bids are pre-verified, each with an envelope of a
  signed frame's usual size (``meta``) and ``Budget(BID_RATE, bidder, key)``;
* the setup (lots, bidders, deposits) goes first, over the link, as staff
  commands (``Budget(STAFF_RATE, ...)``); then an untimed warm-up;
* ``link_durable_per_s`` -- closed loop: K virtual connections x a window of W
  bids (each connection owns its lots), the next window queued the moment the
  last ack of the previous one arrives; an ack is ``Answered`` with code 0
  (durable).  Ack latency per bid from its window's send;
* peers in the same run, same commands: ``link_raw_lmdb_entries_per_s`` -- the
  entries the sequencer wrote (read with ``ledger.store`` after it stopped)
  re-committed raw in its own commit batch sizes (the ledger's batch
  boundaries), as ``raw_commit`` above; ``link_apply_per_s`` -- ``Router.apply``
  of the very setup, warm-up and timed ``PlaceBid`` list, only the timed list
  timed, best of 3.  ``link_to_raw_plus_apply_ratio`` is durable / (1 / (1/raw
  + 1/apply)): against the unavoidable per-command cost of apply plus disk
  together; ``link_to_raw_ratio`` and ``link_to_apply_ratio`` the plain ones;
* ``link_sequencer_cpu_us_per_cmd`` -- the child's utime + stime (every
  thread; ``/proc/PID/stat``, clock ticks) over the timed closed loop per bid
  (``..._open_...``: over the open loop), next to apply + raw CPU per command;
  ``link_edge_cpu_us_per_cmd`` this process's (the synthetic edge's) share;
  link bytes per command both ways; commit batch sizes and submits per frame;
* ``link_ack_p50_us`` / ``p99`` / ``p999`` -- OPEN LOOP at half the link durable
  rate, each wake-up's due bids in one frame, latency from each bid's
  *scheduled* send time to its ``Answered`` (no coordinated omission), next to
  the raw commit p99 of the open loop's own batches.

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
MIN_TICK_NS = 200_000  # open loops: below this interval, small bursts per wake-up
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


def schedule(n: int, rate: float) -> list[int]:
    """``n`` send times at ``rate``/s, from 2 ms from now (perf_ns)."""
    interval = 1e9 / rate
    start = perf_ns() + 2_000_000
    return [start + round(i * interval) for i in range(n)]


async def send_on_schedule(sched: list[int], send: Callable[[int], None]) -> tuple[list[int], int]:
    """Call ``send(i)`` at ``sched[i]`` (small bursts per wake-up when the interval
    is under MIN_TICK_NS); returns the sorted send lags and when sending ended."""
    n = len(sched)
    interval = (sched[-1] - sched[0]) / (n - 1) if n > 1 else MIN_TICK_NS
    send_lag: list[int] = []
    i = 0
    while i < n:
        now = perf_ns()
        while i < n and sched[i] <= now:
            send_lag.append(now - sched[i])
            send(i)
            i += 1
        if i < n:
            wait = sched[i] - perf_ns()
            if interval < MIN_TICK_NS:
                wait = max(wait, MIN_TICK_NS)
            await trio.sleep(max(0, wait) / 1e9)
    end = perf_ns()
    send_lag.sort()
    return send_lag, end


async def open_loop(rt: Runtime, cmds: list[PlaceBid], rate: float) -> dict[str, Any]:
    """Send ``cmds`` on a fixed schedule at ``rate``/s; latency from the SCHEDULED time."""
    n = len(cmds)
    sched = schedule(n, rate)
    start = sched[0]
    lat: list[int] = []
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
    send_lag, end_send = await send_on_schedule(sched, lambda i: submit(cmds[i], reply))
    with trio.move_on_after(30):
        await done.wait()
    lat.sort()
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


# ------------------------------------------------------------------ link (--link)

REPO_ROOT = Path(__file__).resolve().parents[1]
LINK_CONFIG = (
    "# bench core --link: lift the per-bidder and per-staff rate limits and the\n"
    "# refusal budget (one synthetic edge carries every bidder's commands)\n"
    "[limits]\nbids_per_s = 1000000000\nbid_burst = 1000000000\n"
    "refusals_per_minute = 1000000000\n"
    "staff_commands_per_s = 1000000000\nstaff_burst = 1000000000\n"
)
READY_TIMEOUT_S = 30.0


class Sequencer:
    """``python -m gateway.entry.cli sequencer`` as a child process, ready once
    it prints ``sequencer ready link=PATH seq=N``."""

    def __init__(self, data_dir: Path, config: Path, stderr_path: Path) -> None:
        import os
        import select
        import subprocess

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.stderr_path = stderr_path
        self._err = stderr_path.open("w")
        argv = [sys.executable, "-m", "gateway.entry.cli", "sequencer"]
        argv += ["--data", str(data_dir), "--config", str(config), "--sandbox"]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = ""
        while "sequencer ready" not in line:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([out], [], [], max(0.0, left))
            line = out.readline() if ready else ""
            if not ready or not line:
                self.stop()
                raise RuntimeError(
                    f"the sequencer did not start: {line!r} {self.stderr_path.read_text()[-2000:]}"
                )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_ns(self) -> int:
        """utime + stime of the child (all its threads), from /proc/PID/stat."""
        import os

        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
        return self.proc.returncode


def bid_meta(cmd: PlaceBid) -> bytes:
    """The envelope an edge would ledger beside the bid: a signed frame of the
    usual size (the payload the bidder signed, a base64 Ed25519 signature)."""
    from ledger.record import Envelope, encode_envelope

    bidder = cmd.origin.split(":", 1)[1]
    payload = (
        f'{{"type":"bid","lot":"{cmd.lot_id}","amount_fen":{cmd.amount_fen},'
        f'"client_seq":{cmd.client_seq}}}'
    )
    return encode_envelope(Envelope("bidder", f"k-{bidder}", "127.0.0.1", "fp", payload, "s" * 86))


class LinkEdge:
    """A synthetic edge: the raw link protocol (``gateway.link.messages``), no
    HTTP, no signature checks (the bids are pre-verified).  Like
    ``LinkCore``: what is queued during a pass goes out as ONE frame; every
    frame from the sequencer is decoded whole (answers, entries, beats)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.out: list[Any] = []
        self.wake = trio.Event()
        self.pending: dict[int, Callable[[Any], None]] = {}
        self.next_id = 0
        self.sent_frames: list[int] = []  # submits per frame sent
        self.recv_frames = 0
        self.recv_answers = 0
        self.sent_bytes = 0
        self.recv_bytes = 0
        self.welcome_seq = 0
        self._buf = bytearray()

    @classmethod
    async def join(cls, data_dir: Path) -> LinkEdge:
        from gateway.link.messages import (
            LINK_VERSION,
            MAX_SEQUENCER_BATCH_BYTES,
            SEQUENCER_DECODER,
            Join,
            Welcome,
            frame,
            read_secret,
            socket_path,
        )
        from gateway.link.server import read_batch

        stream = await trio.open_unix_socket(str(socket_path(data_dir)))
        await stream.send_all(frame([Join(LINK_VERSION, read_secret(data_dir), "bench")]))
        edge = cls(stream)
        raw = await read_batch(stream, edge._buf, MAX_SEQUENCER_BATCH_BYTES)
        batch = SEQUENCER_DECODER.decode(raw) if raw is not None else []
        if not batch or type(batch[0]) is not Welcome:
            raise RuntimeError(f"the sequencer did not welcome the bench edge: {batch[:1]!r}")
        edge.welcome_seq = batch[0].seq
        for msg in batch[1:]:
            edge._take(msg)
        return edge

    def submit(self, cmd: Any, meta: bytes, budget: Any, reply: Callable[[Any], None]) -> None:
        from gateway.link.messages import Submit

        self.next_id += 1
        ident = self.next_id
        self.pending[ident] = reply
        self.out.append(Submit(ident, cmd, meta, budget))
        self.wake.set()

    def _take(self, msg: Any) -> None:
        from gateway.link.messages import Answered, Goodbye

        kind = type(msg)
        if kind is Answered:
            self.recv_answers += 1
            self.pending.pop(msg.id)(msg.answer)
        elif kind is Goodbye:
            raise RuntimeError(f"the sequencer said goodbye: {msg.reason}")

    async def sender(self) -> None:
        from gateway.link.messages import ENCODER

        stream = self.stream
        while True:
            if not self.out:
                await self.wake.wait()
                self.wake = trio.Event()
                continue
            out, self.out = self.out, []
            self.sent_frames.append(len(out))
            body = ENCODER.encode(out)
            self.sent_bytes += 4 + len(body)
            await stream.send_all(len(body).to_bytes(4, "big") + body)

    async def receiver(self) -> None:
        from gateway.link.messages import MAX_SEQUENCER_BATCH_BYTES, SEQUENCER_DECODER
        from gateway.link.server import read_batch

        take = self._take
        while True:
            raw = await read_batch(self.stream, self._buf, MAX_SEQUENCER_BATCH_BYTES)
            if raw is None:
                raise RuntimeError("the sequencer closed the link")
            self.recv_frames += 1
            self.recv_bytes += 4 + len(raw)
            for msg in SEQUENCER_DECODER.decode(raw):
                take(msg)

    async def call_all(self, items: list[tuple[Command, bytes, Any]]) -> list[Any]:
        """Submit everything at once; every answer, in order."""
        answers: list[Any] = [None] * len(items)
        left = [len(items)]
        done = trio.Event()
        for k, (cmd, meta, budget) in enumerate(items):

            def reply(answer: Any, k: int = k) -> None:
                answers[k] = answer
                left[0] -= 1
                if not left[0]:
                    done.set()

            self.submit(cmd, meta, budget, reply)
        await done.wait()
        return answers


class LinkBid:
    """One pre-built bid: the command, its envelope, its budget."""

    __slots__ = ("budget", "cmd", "meta")

    def __init__(self, cmd: PlaceBid) -> None:
        from gateway.link.front import BID_RATE, Budget

        bidder = cmd.origin.split(":", 1)[1]
        self.cmd = cmd
        self.meta = bid_meta(cmd)
        self.budget = Budget(BID_RATE, bidder, f"k-{bidder}")


class LinkConn:
    """One virtual connection: windows of W bids, the next sent when the last is acked."""

    __slots__ = ("bad", "edge", "i", "lat", "loop", "pending", "sent_ns", "seqs", "windows")

    def __init__(self, loop: LinkLoop, edge: LinkEdge, bids: list[LinkBid], w: int) -> None:
        self.loop, self.edge, self.lat, self.seqs = loop, edge, loop.lat, loop.seqs
        self.windows = [bids[i : i + w] for i in range(0, len(bids), w)]
        self.i = 0
        self.pending = 0
        self.sent_ns = 0
        self.bad = 0

    def start(self) -> None:
        if self.i == len(self.windows):
            self.loop.conn_done()
            return
        window = self.windows[self.i]
        self.i += 1
        self.pending = len(window)
        self.sent_ns = perf_ns()
        submit, reply = self.edge.submit, self.reply
        for b in window:
            submit(b.cmd, b.meta, b.budget, reply)

    def reply(self, answer: Any) -> None:
        self.lat.append(perf_ns() - self.sent_ns)
        if answer.code:
            self.bad += 1
            self.loop.bad_detail = answer.detail
        else:
            self.seqs.append(answer.seq)
        self.pending -= 1
        if self.pending == 0:
            self.start()  # the next window joins the frame of this pass


class LinkLoop:
    def __init__(self) -> None:
        self.lat: list[int] = []
        self.seqs: list[int] = []
        self.left = 0
        self.done = trio.Event()
        self.bad_detail = ""

    def conn_done(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


async def link_closed_loop(edge: LinkEdge, per_conn: list[list[LinkBid]], w: int) -> dict[str, Any]:
    loop = LinkLoop()
    conns = [LinkConn(loop, edge, bids, w) for bids in per_conn]
    loop.left = len(conns)
    n = sum(len(b) for b in per_conn)
    f0 = len(edge.sent_frames)
    gc.collect()
    s0, r0 = edge.sent_bytes, edge.recv_bytes
    w0, c0 = perf_ns(), cpu_ns()
    for conn in conns:
        conn.start()
    await loop.done.wait()
    w1, c1 = perf_ns(), cpu_ns()
    s1, r1 = edge.sent_bytes, edge.recv_bytes
    loop.lat.sort()
    loop.seqs.sort()
    return {
        "bids": n,
        "wall_ns": w1 - w0,
        "cpu_ns": c1 - c0,
        "lat": loop.lat,
        "seqs": loop.seqs,
        "rejected": sum(c.bad for c in conns),
        "reject_detail": loop.bad_detail,
        "frames": edge.sent_frames[f0:],
        "sent_bytes": s1 - s0,
        "recv_bytes": r1 - r0,
    }


async def link_open_loop(edge: LinkEdge, bids: list[LinkBid], rate: float) -> dict[str, Any]:
    """Send ``bids`` on a fixed schedule at ``rate``/s, each wake-up's due bids
    in one frame; latency from each bid's SCHEDULED time to its ``Answered``."""
    n = len(bids)
    sched = schedule(n, rate)
    start = sched[0]
    lat: list[int] = []
    seqs: list[int] = []
    state = {"acked": 0, "bad": 0}
    done = trio.Event()
    f0 = len(edge.sent_frames)

    def make_reply(k: int) -> Callable[[Any], None]:
        t = sched[k]

        def reply(answer: Any) -> None:
            lat.append(perf_ns() - t)
            if answer.code:
                state["bad"] += 1
            else:
                seqs.append(answer.seq)
            state["acked"] += 1
            if state["acked"] == n:
                done.set()

        return reply

    replies = [make_reply(k) for k in range(n)]
    submit = edge.submit

    def send(i: int) -> None:
        b = bids[i]
        submit(b.cmd, b.meta, b.budget, replies[i])

    send_lag, end_send = await send_on_schedule(sched, send)
    with trio.move_on_after(30):
        await done.wait()
    lat.sort()
    seqs.sort()
    return {
        "bids": n,
        "rate": rate,
        "send_s": (end_send - start) / 1e9,
        "lat": lat,
        "send_lag": send_lag,
        "seqs": seqs,
        "missing": n - state["acked"],
        "rejected": state["bad"],
        "frames": edge.sent_frames[f0:],
    }


async def link_session(
    data_dir: Path,
    seq: Sequencer,
    setup: list[Command],
    warm: list[list[LinkBid]],
    timed: list[list[LinkBid]],
    gen: BidGen,
    *,
    w: int,
    open_s: float,
    open_fraction: float,
) -> dict[str, Any]:
    from gateway.link.front import STAFF_RATE, Budget
    from ledger.record import Envelope, encode_envelope

    out: dict[str, Any] = {}
    edge = await LinkEdge.join(data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(edge.sender)
        nursery.start_soon(edge.receiver)

        # The setup, as staff commands over the link (a staff budget each).
        staff_meta = encode_envelope(Envelope("staff", "staff-bench", "127.0.0.1", "fp"))
        budget = Budget(STAFF_RATE, STAFF, "staff-bench")
        log(f"link: setup, {len(setup)} staff commands over the link")
        for i in range(0, len(setup), 2000):
            answers = await edge.call_all([(c, staff_meta, budget) for c in setup[i : i + 2000]])
            bad = [a for a in answers if a.code]
            if bad:
                raise RuntimeError(f"setup refused over the link: {bad[0]!r}")

        k = len(timed)
        n = sum(len(b) for b in timed)
        log(f"link: warm-up, then {n} bids, K={k} connections x W={w}")
        await link_closed_loop(edge, warm, w)
        # The synthetic edge is the instrument: its own collector's pauses (full
        # collections of 65-86 ms over the pre-built bids) are not the
        # sequencer's; it holds no cycles, so it runs without one while timing.
        gc.collect()
        gc.freeze()
        gc.disable()
        c0 = seq.cpu_ns()
        try:
            cl = await link_closed_loop(edge, timed, w)
        finally:
            gc.enable()
        c1 = seq.cpu_ns()
        rate = cl["bids"] / (cl["wall_ns"] / 1e9)
        lat, frames = cl["lat"], cl["frames"]
        out.update(
            {
                "link_durable_per_s": round(rate),
                "link_bids": cl["bids"],
                "link_connections": k,
                "link_window": w,
                "link_rejected": cl["rejected"],
                "link_reject_detail": cl["reject_detail"],
                "link_seq_range": [cl["seqs"][0], cl["seqs"][-1]] if cl["seqs"] else [0, 0],
                "link_sequencer_cpu_us_per_cmd": round((c1 - c0) / cl["bids"] / 1000, 2),
                "link_sequencer_cpu_share": round((c1 - c0) / cl["wall_ns"], 3),
                "link_edge_cpu_us_per_cmd": round(cl["cpu_ns"] / cl["bids"] / 1000, 2),
                "link_bytes_to_sequencer_per_cmd": round(cl["sent_bytes"] / cl["bids"], 1),
                "link_bytes_to_edge_per_cmd": round(cl["recv_bytes"] / cl["bids"], 1),
                "link_closed_ack_p50_us": us(pct(lat, 50)),
                "link_closed_ack_p99_us": us(pct(lat, 99)),
                "link_closed_ack_p999_us": us(pct(lat, 99.9)),
                "link_frames_sent": len(frames),
                "link_mean_submits_per_frame": (
                    round(sum(frames) / len(frames), 1) if frames else 0
                ),
                "link_max_submits_per_frame": max(frames) if frames else 0,
            }
        )

        open_rate = max(100.0, rate * open_fraction)
        n_open = max(100, int(open_rate * open_s))
        log(f"link: open loop, {n_open} bids at {open_rate:,.0f}/s")
        bids = [LinkBid(c) for c in gen.spread(n_open)]
        gc.collect()
        gc.freeze()
        gc.disable()
        c0 = seq.cpu_ns()
        try:
            ol = await link_open_loop(edge, bids, open_rate)
        finally:
            gc.enable()
        c1 = seq.cpu_ns()
        lat, lag, frames = ol["lat"], ol["send_lag"], ol["frames"]
        out.update(
            {
                "link_ack_p50_us": us(pct(lat, 50)),
                "link_ack_p99_us": us(pct(lat, 99)),
                "link_ack_p999_us": us(pct(lat, 99.9)),
                "link_ack_max_us": us(lat[-1]) if lat else 0,
                "link_open_rate_per_s": round(open_rate),
                "link_open_bids": ol["bids"],
                "link_open_send_s": round(ol["send_s"], 3),
                "link_open_missing_acks": ol["missing"],
                "link_open_rejected": ol["rejected"],
                "link_open_send_lag_p99_us": us(pct(lag, 99)),
                "link_open_seq_range": [ol["seqs"][0], ol["seqs"][-1]] if ol["seqs"] else [0, 0],
                "link_open_sequencer_cpu_us_per_cmd": round(
                    (c1 - c0) / max(1, ol["bids"]) / 1000, 2
                ),
                "link_open_mean_submits_per_frame": (
                    round(sum(frames) / len(frames), 1) if frames else 0
                ),
                "link_answer_frames": edge.recv_frames,
            }
        )
        nursery.cancel_scope.cancel()
    await edge.stream.aclose()
    return out


def ledger_batches(
    data_dir: Path, first: int, last: int
) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """The entries ``first..last`` the sequencer committed, and its commit
    batch sizes over that range (from the ledger's batch boundaries), read
    with ``ledger.store`` after the sequencer stopped."""
    from ledger.store import LedgerStore

    store = LedgerStore.open(data_dir / "ledger", readonly=True)
    try:
        items: list[tuple[bytes, bytes]] = []
        for key, val in store.iter_raw(first):
            if key_seq(key) > last:
                break
            items.append((bytes(key), bytes(val)))
        sizes: list[int] = []
        seq = first
        while seq <= last:
            bounds = store.batch_bounds(seq)
            end = last if bounds is None else min(bounds[1], last)
            sizes.append(end - seq + 1)
            seq = end + 1
    finally:
        store.close()
    return items, sizes


def apply_same(
    setup: list[Command], warm: list[PlaceBid], timed: list[PlaceBid], runs: int = 3
) -> dict[str, Any]:
    """Router.apply of the very commands the link carried (setup and warm-up
    untimed), best of ``runs``: the engine's share of each command."""
    t0 = 1_700_000_000_000_000_000
    results = []
    for _ in range(runs):
        router = Router()
        now = t0
        apply = router.apply
        for c in (*setup, *warm):
            now += 1000
            apply(c, now)
        gc.collect()
        w0, c0 = perf_ns(), cpu_ns()
        for cmd in timed:
            now += 1000
            apply(cmd, now)
        w1, c1 = perf_ns(), cpu_ns()
        results.append((w1 - w0, c1 - c0))
        del router
    wall, cpu = min(results)
    return {
        "link_apply_per_s": round(len(timed) / (wall / 1e9)),
        "link_apply_cpu_us_per_cmd": round(cpu / len(timed) / 1000, 3),
    }


def run_link(quick: bool, open_fraction: float = 0.5) -> dict[str, Any]:
    n_bids = 20_000 if quick else 100_000
    open_s = 1.0 if quick else 5.0
    k, w = 50, 8
    result: dict[str, Any] = {"quick": quick, "link": True}
    with tempfile.TemporaryDirectory(prefix="pubex-bench-link-") as tmp:
        data = Path(tmp) / "seq"
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(LINK_CONFIG)
        wall = time.time_ns()
        setup = setup_commands(wall - 1_000_000_000, wall + DAY_NS)
        gen = BidGen()
        warm_cmds = split_by_conn(gen, max(k * w * 10, n_bids // 20), k)
        timed_cmds = split_by_conn(gen, n_bids, k)
        warm = [[LinkBid(c) for c in cmds] for cmds in warm_cmds]
        timed = [[LinkBid(c) for c in cmds] for cmds in timed_cmds]
        log("link: starting the sequencer process")
        seq = Sequencer(data, cfg, Path(tmp) / "sequencer.err")
        try:
            result["link_sequencer_pid"] = seq.pid
            result.update(
                trio.run(
                    lambda: link_session(
                        data,
                        seq,
                        setup,
                        warm,
                        timed,
                        gen,
                        w=w,
                        open_s=open_s,
                        open_fraction=open_fraction,
                    )
                )
            )
        finally:
            rc = seq.stop()
        result["link_sequencer_exit"] = rc

        # The peers, same run, same commands: the disk ...
        first, last = result["link_seq_range"]
        items, sizes = ledger_batches(data, first, last)
        raw = raw_commit(Path(tmp) / "raw", items, sizes)
        result.update({f"link_{key}": v for key, v in raw.items()})
        result["link_batches"] = len(sizes)
        result["link_mean_batch_entries"] = round(sum(sizes) / len(sizes), 1) if sizes else 0
        result["link_max_batch_entries"] = max(sizes) if sizes else 0
        o_first, o_last = result["link_open_seq_range"]
        o_items, o_sizes = ledger_batches(data, o_first, o_last)
        floor = raw_commit(Path(tmp) / "raw-open", o_items, o_sizes)
        result["link_open_batches"] = len(o_sizes)
        result["link_open_mean_batch_entries"] = (
            round(sum(o_sizes) / len(o_sizes), 1) if o_sizes else 0
        )
        result["link_raw_commit_p99_us"] = floor["raw_commit_p99_us"]
        del items, o_items

        # ... and the engine.
        log("link: Router.apply of the same commands, best of 3")
        result.update(
            apply_same(
                setup, [c for cs in warm_cmds for c in cs], [c for cs in timed_cmds for c in cs]
            )
        )
    durable = result["link_durable_per_s"]
    raw_rate = result["link_raw_lmdb_entries_per_s"]
    apply_rate = result["link_apply_per_s"]
    floor_rate = 1 / (1 / raw_rate + 1 / apply_rate)
    result["link_raw_plus_apply_per_s"] = round(floor_rate)
    result["link_to_raw_plus_apply_ratio"] = round(durable / floor_rate, 3)
    result["link_to_raw_ratio"] = round(durable / raw_rate, 3)
    result["link_to_apply_ratio"] = round(durable / apply_rate, 3)
    result["machine"] = machine()
    return result


def link_table(r: dict[str, Any]) -> str:
    rows = [
        (
            "link durable acks/s (sequencer process, K x W)",
            f"{r['link_durable_per_s']:,}",
            f"raw+apply {r['link_raw_plus_apply_per_s']:,}/s",
            f"{r['link_to_raw_plus_apply_ratio']}",
        ),
        (
            "  vs raw LMDB, same records and batches",
            f"{r['link_raw_lmdb_entries_per_s']:,}/s",
            "link / raw",
            f"{r['link_to_raw_ratio']}",
        ),
        (
            "  vs Router.apply, same commands",
            f"{r['link_apply_per_s']:,}/s",
            "link / apply",
            f"{r['link_to_apply_ratio']}",
        ),
        (
            "sequencer CPU µs/cmd (closed / open loop)",
            f"{r['link_sequencer_cpu_us_per_cmd']} / {r['link_open_sequencer_cpu_us_per_cmd']}",
            f"apply {r['link_apply_cpu_us_per_cmd']} + raw {r['link_raw_lmdb_cpu_us_per_entry']}",
            ratio(
                r["link_sequencer_cpu_us_per_cmd"],
                r["link_apply_cpu_us_per_cmd"] + r["link_raw_lmdb_cpu_us_per_entry"],
            ),
        ),
        ("sequencer CPU share (closed loop)", f"{r['link_sequencer_cpu_share']}", "", ""),
        ("bench edge CPU µs/cmd (closed loop)", f"{r['link_edge_cpu_us_per_cmd']}", "", ""),
        (
            "link bytes/cmd edge->sequencer / sequencer->edge",
            f"{r['link_bytes_to_sequencer_per_cmd']} / {r['link_bytes_to_edge_per_cmd']}",
            f"ledger entry {r['link_mean_entry_bytes']} B",
            "",
        ),
        (
            "commit batches / mean / max entries",
            f"{r['link_batches']} / {r['link_mean_batch_entries']}",
            f"max {r['link_max_batch_entries']}",
            "",
        ),
        (
            "edge frames / mean submits per frame",
            f"{r['link_frames_sent']} / {r['link_mean_submits_per_frame']}",
            f"max {r['link_max_submits_per_frame']}",
            "",
        ),
        (
            "closed-loop ack p50 / p99 µs",
            f"{r['link_closed_ack_p50_us']} / {r['link_closed_ack_p99_us']}",
            "",
            "",
        ),
        (
            f"open-loop ack p50 µs @ {r['link_open_rate_per_s']:,}/s",
            f"{r['link_ack_p50_us']}",
            "",
            "",
        ),
        (
            "open-loop ack p99 / p99.9 µs",
            f"{r['link_ack_p99_us']} / {r['link_ack_p999_us']}",
            f"raw commit p99 {r['link_raw_commit_p99_us']}",
            ratio(r["link_ack_p99_us"], r["link_raw_commit_p99_us"]),
        ),
        (
            "open-loop batches / mean entries / submits per frame",
            f"{r['link_open_batches']} / {r['link_open_mean_batch_entries']}",
            f"{r['link_open_mean_submits_per_frame']} per frame",
            "",
        ),
        ("open-loop sender lag p99 µs", f"{r['link_open_send_lag_p99_us']}", "", ""),
    ]
    lines = render(rows, r["machine"])
    bad = r["link_rejected"] + r["link_open_rejected"]
    if bad or r["link_open_missing_acks"]:
        lines.append(
            f"WARNING: {bad} bids refused ({r['link_reject_detail']!r}), "
            f"{r['link_open_missing_acks']} acks missing"
        )
    if r["link_sequencer_exit"]:
        lines.append(f"WARNING: the sequencer exited {r['link_sequencer_exit']}")
    return "\n".join(lines)


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
    ap.add_argument(
        "--link",
        action="store_true",
        help="the sequencer as its own process, bids over the link from a synthetic edge",
    )
    args = ap.parse_args(argv)
    t0 = perf_ns()
    if args.link:
        result = run_link(args.quick, args.open_fraction)
    else:
        result = run(args.quick, args.open_fraction)
    result["elapsed_s"] = round((perf_ns() - t0) / 1e9, 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(link_table(result) if args.link else table(result))
        print(f"elapsed {result['elapsed_s']} s")
    return 0
