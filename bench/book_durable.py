"""The order-book stream through the whole engine: in memory, then durable.

Run as the ``pubex-durable`` worker of ``python -m bench book`` (its own
process).  The benchmark's seeded stream (``bench.book.generate``) becomes
engine commands on one e-mall item: ``PlaceOrder`` (limit / IOC / market),
``CancelOrder`` and ``AmendOrder`` from 1,000 trader origins, each with its
own increasing ``client_seq``.  An order's id in the engine is the ledger seq
of the command that placed it, so cancels and amends name ``base + index``;
the quantity amends (which depend on fills) are resolved by one untimed
in-memory pass, and skipped when the bench's in-memory adapter skips them.

* ``router_ops_per_s``: the commands through ``Router.apply`` on a fresh
  router (events built, retry memory kept, no ledger), best of ``repeat``.
* ``durable_ops_per_s``: the same commands through ``gateway.sequencer.runtime.Runtime``
  (the production sequencer: ledger ``Journal``, group commit with batches
  closing at ``batch_max_entries`` / bytes or when the previous fsync returns,
  fsync'd LMDB commits in a worker thread) into a temp dir.  One producer keeps
  up to ``window`` commands in flight and counts an operation done when its
  durable reply arrives: wall time from the first submit to the last reply.
"""

from __future__ import annotations

import gc
import tempfile
import time
from typing import Any

import trio

from config.settings import load_settings
from engine.messages import (
    AmendOrder,
    CancelOrder,
    Command,
    CreateItem,
    PlaceOrder,
    Tick,
)
from engine.router import Router
from gateway.entry.tuning import tune_for_sequencer
from gateway.sequencer.journal import Outcome
from gateway.sequencer.runtime import Runtime

ITEM = "BENCH"
STAFF = "staff:bench"


def commands(ops: list[Any], base: int) -> list[Command]:
    """The stream as engine commands, the first getting ledger seq ``base + 1``."""
    from bench import book as bb

    router = Router()
    while router.applied < base - 1:
        router.apply(Tick("system", 0), router.state.now_ns + 1)
    router.apply(CreateItem(STAFF, 1, ITEM, "bench item", 0, 0, 0, "open"), router.applied + 1)
    assert router.applied == base
    seq_of: dict[int, int] = {}  # bench order id -> ledger seq of its placing command
    client_seq: dict[str, int] = {}
    out: list[Command] = []
    kinds = {bb.LIMIT: "limit", bb.IOC: "ioc", bb.MARKET: "market"}
    book = router.state.items[ITEM].book
    for code, oid, owner, side, price, qty in ops:
        origin = f"bidder:{owner}"
        cmd: Command | None = None
        cs = client_seq.get(origin, 0) + 1
        if code in kinds:
            seq_of[oid] = base + len(out) + 1
            cmd = PlaceOrder(origin, cs, ITEM, side, kinds[code], price, qty)
        elif code == bb.CANCEL:
            cmd = CancelOrder(origin, cs, ITEM, seq_of.get(oid, 0))
        elif code == bb.AMEND_PRICE:
            cmd = AmendOrder(origin, cs, ITEM, seq_of.get(oid, 0), price, 0)
        else:
            q = book.order_qty(seq_of.get(oid, 0))
            if code == bb.AMEND_UP and q:
                cmd = AmendOrder(origin, cs, ITEM, seq_of[oid], 0, q + qty)
            elif code == bb.AMEND_DOWN and q > qty:
                cmd = AmendOrder(origin, cs, ITEM, seq_of[oid], 0, q - qty)
        if cmd is None:
            continue
        client_seq[origin] = cs
        router.apply(cmd, router.state.now_ns + 1)
        out.append(cmd)
    return out


def router_rate(cmds: list[Command], base: int, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        router = Router()
        while router.applied < base - 1:
            router.apply(Tick("system", 0), router.state.now_ns + 1)
        router.apply(CreateItem(STAFF, 1, ITEM, "bench item", 0, 0, 0, "open"), router.applied + 1)
        apply = router.apply
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        now = router.state.now_ns
        for cmd in cmds:
            now += 1
            apply(cmd, now)
        dt = time.perf_counter() - t0
        gc.enable()
        best = max(best, len(cmds) / dt)
    return best


async def _durable(data_dir: str, ops: list[Any], window: int) -> dict[str, Any]:
    led = load_settings().ledger
    rt = Runtime.open(
        data_dir,
        map_size=1 << 32,
        record_batch_sizes=True,
        journal_options={
            "snapshot_every_entries": led.snapshot_every_entries,
            "checkpoint_every_entries": led.checkpoint_every_entries,
            "batch_max_entries": led.batch_max_entries,
            "batch_max_bytes": led.batch_max_bytes,
        },
    )
    async with trio.open_nursery() as nursery:
        tune_for_sequencer()  # after recovery: what it loaded is long-lived
        await nursery.start(rt.run)
        await rt.call(CreateItem(STAFF, 1, ITEM, "bench item", 0, 0, 0, "open"))
        base = rt.router.applied
        cmds = commands(ops, base)
        n = len(cmds)
        state = {"acked": 0, "bad": 0}
        room = trio.Event()
        finished = trio.Event()

        def reply(outcome: Outcome) -> None:
            state["acked"] += 1
            if outcome.error is not None:
                state["bad"] += 1
            if state["acked"] == n:
                finished.set()
            room.set()

        gc.collect()
        t0 = time.perf_counter()
        sent = 0
        submit = rt.submit
        while sent < n:
            while sent - state["acked"] >= window:
                room = trio.Event()
                await room.wait()
            stop = min(n, state["acked"] + window)
            while sent < stop:
                submit(cmds[sent], reply)
                sent += 1
            await trio.sleep(0)
        await finished.wait()
        dt = time.perf_counter() - t0
        sizes = rt.batch_sizes or []
        nursery.cancel_scope.cancel()
    rt.store.close()
    return {
        "durable_ops_per_s": round(n / dt),
        "durable_ops": n,
        "durable_failed": state["bad"],
        "durable_batches": len(sizes),
        "durable_mean_batch": round(sum(sizes) / len(sizes), 1) if sizes else 0,
        "base": base,
        "cmds": cmds,
    }


def run(ops: list[Any], repeat: int = 1, window: int = 8192) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pubex-book-durable-") as tmp:
        durable = trio.run(_durable, tmp, ops, window)
    cmds = durable.pop("cmds")
    base = durable.pop("base")
    durable["router_ops_per_s"] = round(router_rate(cmds, base, repeat))
    durable["router_ops"] = len(cmds)
    return durable
