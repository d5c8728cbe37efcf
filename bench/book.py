"""Order-book benchmark: the pubex book against the public Python books, in ONE run.

``python -m bench book [--json] [--quick] [--ops N] [--seed S]``

One seeded stream of operations (200,000; ``--quick`` 20,000) is generated up
front around a moving mid: limit orders (mostly passive, some crossing),
cancels of recent orders, IOC orders, market orders and amends (price change,
quantity increase, quantity decrease).  Each book runs in its own process
(``python -m bench.book --worker NAME``, one after the other), regenerates the
same stream from the seed (the stream digest is checked) and replays it:

* pass 1, timed as a whole: operations/s;
* pass 2, on a fresh book: every operation timed with ``perf_counter_ns``;
  ``p99_us`` is the 99th percentile (nearest rank).

Peers (imported if installed, else reported "not installed"; nothing is
installed by the benchmark): ``cython-orderbook`` (``cython_orderbook``),
``akhil4n-orderbook`` (module ``orderbook``) and ``fastlob``.  Each peer gets
the operations it supports natively or by an exactly equivalent composition:
IOC = limit then cancel of the remainder; market on fastlob = IOC at an
extreme price; a price change or quantity increase = cancel + new limit (it
loses priority in pubex too); a quantity decrease keeps priority in pubex,
so it is given only to fastlob (``update`` keeps priority) and skipped for the
others.  An amend to the order's current price (and unchanged quantity) changes
nothing and keeps priority in pubex (B-4), so it is a no-op for the peers too
(cancel + new limit would move the order to the back of its level and change later
fills).  A composed operation counts as one operation.  The pubex runner replays a
list of pre-built bound calls (``PubexAdapter.prepare``, built before timing); the
peers' adapters decode each operation inside the timed loop.

Agreement: the peers have no owners, so for the comparison pubex replays each
peer's restricted stream with self-trade prevention disabled (one owner per
order), untimed, in this process; the final resting books are compared as
aggregated (price, quantity) levels per side.  Disagreements are reported
with the first differing level.

Next to the in-memory rate, ``bench.book_durable`` (worker ``pubex-durable``)
drives the same stream as engine commands on one e-mall item through
``Router.apply`` (``router_ops_per_s``) and through the production runtime with
the fsync'd, group-committed ledger (``durable_ops_per_s``).  Timing never
fails the run.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from typing import Any

from engine.book import Book

TARGET_RATIO = 2.0
PEERS = ("cython-orderbook", "akhil4n-orderbook", "fastlob")
MODULES = {
    "cython-orderbook": "cython_orderbook",
    "akhil4n-orderbook": "orderbook",
    "fastlob": "fastlob",
}

# Operation codes.
LIMIT, CANCEL, IOC, MARKET, AMEND_PRICE, AMEND_UP, AMEND_DOWN = range(7)
SUPPORTED: dict[str, frozenset[int]] = {
    "pubex": frozenset(range(7)),
    "cython-orderbook": frozenset({LIMIT, CANCEL, IOC, MARKET, AMEND_PRICE, AMEND_UP}),
    "akhil4n-orderbook": frozenset({LIMIT, CANCEL, IOC, MARKET, AMEND_PRICE, AMEND_UP}),
    "fastlob": frozenset(range(7)),
}
MID0 = 100_000  # fen
TICK = 10
EXTREME = 10**9

Op = tuple[int, int, str, str, int, int]  # (code, order id, owner, side, price, qty)


def generate(n: int, seed: int) -> list[Op]:
    """The seeded stream; ids refer to earlier limit orders for cancels and amends."""
    rng = random.Random(seed)
    ops: list[Op] = []
    mid = MID0
    live: list[tuple[int, str, str]] = []  # recent (id, owner, side) of limit orders
    next_id = 1
    for _ in range(n):
        if rng.random() < 0.02:
            mid += TICK * rng.choice((-1, 1))
        r = rng.random()
        side = "buy" if rng.random() < 0.5 else "sell"
        sign = -1 if side == "buy" else 1
        owner = f"t{rng.randrange(1000)}"
        if r < 0.50 or not live:
            off = rng.randint(-2, 25) if rng.random() < 0.9 else rng.randint(-6, 0)
            price = mid + sign * off * TICK
            ops.append((LIMIT, next_id, owner, side, price, rng.randint(1, 100)))
            live.append((next_id, owner, side))
            if len(live) > 5000:
                live.pop(0)
            next_id += 1
        elif r < 0.75:
            oid, own, s = live.pop(rng.randrange(len(live)))
            ops.append((CANCEL, oid, own, s, 0, 0))
        elif r < 0.85:
            price = mid - sign * rng.randint(0, 3) * TICK
            ops.append((IOC, next_id, owner, side, price, rng.randint(1, 60)))
            next_id += 1
        elif r < 0.87:
            ops.append((MARKET, next_id, owner, side, 0, rng.randint(1, 30)))
            next_id += 1
        else:
            oid, own, s = live[rng.randrange(len(live))]
            a = rng.random()
            if a < 0.5:
                off = rng.randint(1, 25)
                price = mid + (-1 if s == "buy" else 1) * off * TICK
                ops.append((AMEND_PRICE, oid, own, s, price, 0))
            elif a < 0.75:
                ops.append((AMEND_UP, oid, own, s, 0, rng.randint(1, 50)))
            else:
                ops.append((AMEND_DOWN, oid, own, s, 0, rng.randint(1, 5)))
    return ops


def digest(ops: list[Op]) -> str:
    return hashlib.blake2b(repr(ops).encode(), digest_size=8).hexdigest()


# ---------------------------------------------------------------- adapters
# Each adapter: ``run(ops)`` applies the (already restricted) stream; ``levels()``
# returns {"bids": [(price, qty)] best first, "asks": [...]}.


class PubexAdapter:
    def __init__(self, stp: bool = True) -> None:
        self.book = Book("bench")
        self.stp = stp
        self.owners: dict[int, str] = {}

    def make(self) -> Any:
        b = self.book
        submit, cancel, amend = b.submit, b.cancel, b.amend
        stp = self.stp

        def step(op: Op, i: int) -> None:
            code, oid, owner, side, price, qty = op
            if not stp:
                owner = str(oid)
            if code == LIMIT:
                submit(oid, owner, side, "limit", price, qty, i)
            elif code == CANCEL:
                cancel(oid, owner)
            elif code == IOC:
                submit(oid, owner, side, "ioc", price, qty, i)
            elif code == MARKET:
                submit(oid, owner, side, "market", 0, qty, i)
            elif code == AMEND_PRICE:
                amend(oid, owner, price, None, i)
            elif code == AMEND_UP:
                q = b.order_qty(oid)
                if q:
                    amend(oid, owner, None, q + qty, i)
            else:
                q = b.order_qty(oid)
                if q > qty:
                    amend(oid, owner, None, q - qty, i)

        return step

    def prepare(self, ops: list[Op]) -> list[tuple[Any, tuple[Any, ...]]]:
        """The stream as pre-built (bound method, args) calls, built before timing; only
        the quantity amends look the order up at run time (they depend on fills)."""
        b = self.book
        submit, cancel, amend, order_qty = b.submit, b.cancel, b.amend, b.order_qty
        stp = self.stp

        def amend_up(oid: int, owner: str, qty: int, i: int) -> None:
            q = order_qty(oid)
            if q:
                amend(oid, owner, None, q + qty, i)

        def amend_down(oid: int, owner: str, qty: int, i: int) -> None:
            q = order_qty(oid)
            if q > qty:
                amend(oid, owner, None, q - qty, i)

        kinds = {LIMIT: "limit", IOC: "ioc", MARKET: "market"}
        calls: list[tuple[Any, tuple[Any, ...]]] = []
        for i, (code, oid, owner, side, price, qty) in enumerate(ops):
            if not stp:
                owner = str(oid)
            if code in kinds:
                calls.append((submit, (oid, owner, side, kinds[code], price, qty, i)))
            elif code == CANCEL:
                calls.append((cancel, (oid, owner)))
            elif code == AMEND_PRICE:
                calls.append((amend, (oid, owner, price, None, i)))
            elif code == AMEND_UP:
                calls.append((amend_up, (oid, owner, qty, i)))
            else:
                calls.append((amend_down, (oid, owner, qty, i)))
        return calls

    def levels(self) -> dict[str, list[tuple[int, int]]]:
        d = self.book.depth(10**9)
        return {"bids": list(d.bids), "asks": list(d.asks)}


class CythonLikeAdapter:
    """cython-orderbook and akhil4n-orderbook share one API (string ids, Order objects)."""

    def __init__(self, module: Any) -> None:
        self.m = module
        self.book = module.OrderBook()
        self.ids: dict[int, Any] = {}

    def make(self) -> Any:
        m, b, ids = self.m, self.book, self.ids
        Order, BID, ASK = m.Order, m.OrderSide.BID, m.OrderSide.ASK
        market_cls = getattr(m, "MarketOrder", None)
        orders = b.orders

        def add(side: str, price: int, qty: int) -> Any:
            o = (
                Order(BID if side == "buy" else ASK, price, qty)
                if market_cls
                else Order(side=BID if side == "buy" else ASK, original_quantity=qty, price=price)
            )
            b.add_limit_order(o)
            return o

        def step(op: Op, i: int) -> None:
            code, oid, _owner, side, price, qty = op
            if code == LIMIT:
                o = add(side, price, qty)
                if o.remaining_quantity > 0:
                    ids[oid] = o.order_id
            elif code == CANCEL:
                their = ids.pop(oid, None)
                if their is not None:
                    b.cancel_order(their)
            elif code == IOC:
                o = add(side, price, qty)
                if o.remaining_quantity > 0:
                    b.cancel_order(o.order_id)
            elif code == MARKET:
                s = BID if side == "buy" else ASK
                o = market_cls(s, qty) if market_cls else Order(side=s, original_quantity=qty)
                b.add_market_order(o)
            else:  # AMEND_PRICE / AMEND_UP: cancel + new limit
                their = ids.get(oid)
                if their is None or their not in orders:
                    ids.pop(oid, None)
                    return
                old = orders[their][1]
                rem, oprice = old.remaining_quantity, old.price
                if code == AMEND_PRICE and price == oprice:
                    return  # same price, same qty: no change, pubex keeps priority (B-4)
                b.cancel_order(their)
                o = add(
                    side,
                    price if code == AMEND_PRICE else oprice,
                    rem + (qty if code == AMEND_UP else 0),
                )
                if o.remaining_quantity > 0:
                    ids[oid] = o.order_id
                else:
                    del ids[oid]

        return step

    def levels(self) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {}
        for name, d in (("bids", self.book.bids), ("asks", self.book.asks)):
            lv = []
            for price, level in d.items():
                q = sum(o.remaining_quantity for o in level.queue.values())
                if q:
                    lv.append((int(price), q))
            lv.sort(reverse=name == "bids")
            out[name] = lv
        return out


class FastlobAdapter:
    def __init__(self, module: Any) -> None:
        self.m = module
        self.book = module.Orderbook("bench", start=True)
        self.ids: dict[int, str] = {}
        self.errors: dict[str, int] = {}

    def make(self) -> Any:
        m, b, ids = self.m, self.book, self.ids
        P, BID, ASK, GTC = m.OrderParams, m.OrderSide.BID, m.OrderSide.ASK, m.OrderType.GTC
        process, cancel, update = b.process, b.cancel, b.update
        orders = b._orders
        PENDING = (m.OrderStatus.PENDING, m.OrderStatus.PARTIAL)

        def add(side: str, price: int, qty: int) -> tuple[str, bool]:
            r = process(P(BID if side == "buy" else ASK, price, qty, GTC))
            their = r.orderid()
            return their, orders[their].status() in PENDING

        def step(op: Op, i: int) -> None:
            code, oid, _owner, side, price, qty = op
            if code == LIMIT:
                their, rests = add(side, price, qty)
                if rests:
                    ids[oid] = their
            elif code == CANCEL:
                their = ids.pop(oid, None)
                if their is not None and orders[their].status() in PENDING:
                    cancel(their)
            elif code in (IOC, MARKET):
                p = price if code == IOC else (EXTREME if side == "buy" else 1)
                their, rests = add(side, p, qty)
                if rests:
                    cancel(their)
            else:
                their = ids.get(oid)
                if their is None or orders[their].status() not in PENDING:
                    ids.pop(oid, None)
                    return
                old = orders[their]
                rem = int(old.quantity())
                if code == AMEND_DOWN:
                    if rem > qty:
                        update(their, rem - qty)
                    return
                oprice = int(old.price())
                if code == AMEND_PRICE and price == oprice:
                    return  # same price, same qty: no change, pubex keeps priority (B-4)
                cancel(their)
                new_p = price if code == AMEND_PRICE else oprice
                their2, rests = add(side, new_p, rem + (qty if code == AMEND_UP else 0))
                if rests:
                    ids[oid] = their2
                else:
                    del ids[oid]

        errors = self.errors

        def guarded(op: Op, i: int) -> None:
            try:
                step(op, i)
            except Exception as exc:  # fastlob raises on some cancels (KeyError)
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        return guarded

    def levels(self) -> dict[str, list[tuple[int, int]]]:
        b = self.book
        return {
            "bids": [(int(p), int(v)) for p, v, _ in b.best_bids(b.n_bids()) if v > 0],
            "asks": [(int(p), int(v)) for p, v, _ in b.best_asks(b.n_asks()) if v > 0],
        }

    def close(self) -> None:
        self.book.stop()


def make_adapter(name: str) -> Any:
    if name == "pubex":
        return PubexAdapter()
    module = __import__(MODULES[name])
    if name == "fastlob":
        import logging

        logging.disable(logging.CRITICAL)
        return FastlobAdapter(module)
    return CythonLikeAdapter(module)


def restrict(ops: list[Op], name: str) -> list[Op]:
    allowed = SUPPORTED[name]
    return [op for op in ops if op[0] in allowed]


# ---------------------------------------------------------------- worker


def worker(name: str, n: int, seed: int) -> dict[str, Any]:
    if name == "pubex-durable":
        from bench import book_durable

        return {"name": name, **book_durable.run(generate(n, seed), 3 if n <= 50_000 else 1)}
    try:
        probe = make_adapter(name)
        if hasattr(probe, "close"):
            probe.close()
    except ImportError:
        return {"name": name, "installed": False}
    ops = restrict(generate(n, seed), name)
    result: dict[str, Any] = {
        "name": name,
        "installed": True,
        "ops": len(ops),
        "digest": digest(ops),
    }
    best = 0.0
    adapter = None
    for _ in range(3 if n <= 50_000 else 1):
        adapter = make_adapter(name)
        if hasattr(adapter, "prepare"):  # pubex: pre-built bound calls, no dispatch
            calls = adapter.prepare(ops)
            gc.collect()
            gc.disable()
            t0 = time.perf_counter()
            for f, a in calls:
                f(*a)
            dt = time.perf_counter() - t0
        else:
            step = adapter.make()
            gc.collect()
            gc.disable()
            t0 = time.perf_counter()
            for i, op in enumerate(ops):
                step(op, i)
            dt = time.perf_counter() - t0
        gc.enable()
        best = max(best, len(ops) / dt)
        if hasattr(adapter, "close"):
            adapter.close()
    assert adapter is not None
    result["ops_per_s"] = round(best)
    result["peer_exceptions"] = getattr(adapter, "errors", {})
    result["levels"] = adapter.levels()
    # pass 2: per-operation latency on a fresh book
    lat_adapter = make_adapter(name)
    ns = time.perf_counter_ns
    lat = [0] * len(ops)
    if hasattr(lat_adapter, "prepare"):
        calls = lat_adapter.prepare(ops)
        gc.collect()
        for i, (f, a) in enumerate(calls):
            t = ns()
            f(*a)
            lat[i] = ns() - t
    else:
        step = lat_adapter.make()
        gc.collect()
        for i, op in enumerate(ops):
            t = ns()
            step(op, i)
            lat[i] = ns() - t
    if hasattr(lat_adapter, "close"):
        lat_adapter.close()
    lat.sort()
    result["p99_us"] = round(lat[min(len(lat) - 1, (99 * len(lat) + 99) // 100 - 1)] / 1000, 2)
    result["p50_us"] = round(lat[len(lat) // 2] / 1000, 2)
    return result


def run_worker(name: str, n: int, seed: int) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.book",
            "--worker",
            name,
            "--ops",
            str(n),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode != 0:
        return {"name": name, "installed": True, "error": proc.stderr.strip().splitlines()[-1:]}
    parsed: dict[str, Any] = json.loads(proc.stdout)
    return parsed


def compare(name: str, ops: list[Op], peer_levels: dict[str, Any]) -> dict[str, Any]:
    ref = PubexAdapter(stp=False)
    step = ref.make()
    for i, op in enumerate(restrict(ops, name)):
        step(op, i)
    mine = ref.levels()
    theirs = {k: [tuple(x) for x in v] for k, v in peer_levels.items()}
    out: dict[str, Any] = {"agree": mine == theirs}
    for side in ("bids", "asks"):
        a, b = mine[side], theirs[side]
        if a != b:
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            out[side] = {
                "levels_pubex": len(a),
                "levels_peer": len(b),
                "first_difference_at_level": first,
                "pubex": a[first : first + 3],
                "peer": b[first : first + 3],
            }
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench book")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ops", type=int, default=0)
    ap.add_argument("--seed", type=int, default=20240605)
    ap.add_argument("--worker", default="")
    args = ap.parse_args(argv)
    n = args.ops or (20_000 if args.quick else 200_000)
    if args.worker:
        print(json.dumps(worker(args.worker, n, args.seed)), flush=True)
        os._exit(0)  # fastlob leaves a non-daemon expiry thread behind
    ops = generate(n, args.seed)
    runs = {name: run_worker(name, n, args.seed) for name in ("pubex", *PEERS, "pubex-durable")}
    through = runs["pubex-durable"]
    pubex = runs["pubex"]
    if "ops_per_s" not in pubex:
        print(f"pubex worker failed: {pubex}", file=sys.stderr)
        return 1
    peers: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    peer_p99: dict[str, Any] = {}
    for name in PEERS:
        r = runs[name]
        if not r.get("installed"):
            peers[name] = "not installed"
            continue
        if "ops_per_s" not in r:
            peers[name] = f"error: {r.get('error')}"
            continue
        if r["digest"] != digest(restrict(ops, name)):
            peers[name] = "error: stream digest mismatch"
            continue
        peers[name] = r["ops_per_s"]
        peer_p99[name] = r["p99_us"]
        agreement[name] = compare(name, ops, r["levels"])
        agreement[name]["ops"] = r["ops"]
        if r.get("peer_exceptions"):
            agreement[name]["peer_exceptions"] = r["peer_exceptions"]
    numeric = {k: v for k, v in peers.items() if isinstance(v, int)}
    fastest = max(numeric, key=lambda k: numeric[k]) if numeric else None
    ratio = round(pubex["ops_per_s"] / numeric[fastest], 2) if fastest else None
    result = {
        "ops": n,
        "seed": args.seed,
        "pubex_ops": pubex["ops"],
        "pubex_ops_per_s": pubex["ops_per_s"],
        "p99_us": pubex["p99_us"],
        "p50_us": pubex["p50_us"],
        "peers": peers,
        "peers_p99_us": peer_p99,
        "ratios": {k: round(pubex["ops_per_s"] / v, 2) for k, v in numeric.items()},
        "fastest_peer": fastest,
        "ratio_to_fastest_peer": ratio,
        "target": TARGET_RATIO,
        "agreement": agreement,
        "router_ops_per_s": through.get("router_ops_per_s"),
        "durable_ops_per_s": through.get("durable_ops_per_s"),
        "durable": {k: v for k, v in through.items() if k != "name"},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"order book, {n} ops (seed {args.seed}), one process per book")
    print(f"  pubex            {pubex['ops_per_s']:>10,} ops/s   p99 {pubex['p99_us']} us")
    for name in PEERS:
        v = peers[name]
        if isinstance(v, int):
            print(
                f"  {name:<16} {v:>10,} ops/s   p99 {peer_p99[name]} us   pubex x{result['ratios'][name]}"
            )
        else:
            print(f"  {name:<16} {v}")
    if fastest:
        print(f"  ratio to fastest peer ({fastest}): {ratio} (target >= {TARGET_RATIO})")
    if "durable_ops_per_s" in through:
        print(
            f"  through the engine: Router.apply {through['router_ops_per_s']:,} ops/s; "
            f"durable (runtime + fsync'd ledger, group commit, mean batch "
            f"{through['durable_mean_batch']}) {through['durable_ops_per_s']:,} ops/s "
            f"({through['durable_ops']} commands)"
        )
    else:
        print(f"  durable run failed: {through}")
    for name, a in agreement.items():
        print(f"  final book vs {name}: {'agree' if a['agree'] else 'DISAGREE ' + json.dumps(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
