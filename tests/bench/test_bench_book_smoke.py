"""Smoke test of ``python -m bench book``: it runs and reports every key (no timing asserts).

Peers may be "not installed" (they are an optional extra)."""

from __future__ import annotations

from tests.bench.suite import run_suite


def test_bench_book_quick_json() -> None:
    r = run_suite("book", "--ops", "5000")
    assert isinstance(r["pubex_ops_per_s"], int) and r["pubex_ops_per_s"] > 0
    assert r["p99_us"] > 0
    assert r["target"] == 2.0
    assert set(r["peers"]) == {"cython-orderbook", "akhil4n-orderbook", "fastlob"}
    for value in r["peers"].values():
        assert (isinstance(value, int) and value > 0) or isinstance(value, str)
    assert "fastest_peer" in r and "ratio_to_fastest_peer" in r
    assert r["durable_ops_per_s"] > 0 and r["router_ops_per_s"] > 0
    assert r["durable"]["durable_failed"] == 0


def test_the_engine_stream_leaves_the_benchmarked_book() -> None:
    """The commands the durable figure replays are the in-memory stream: through the
    Router, the item's final book equals the bare book's (owners, priority, quantities)."""
    from bench import book as bb
    from bench.book_durable import ITEM, commands
    from engine.router import Router

    ops = bb.generate(4000, 11)
    base = 7
    cmds = commands(ops, base)
    router = Router()
    while router.applied < base - 1:
        from engine.messages import Tick

        router.apply(Tick("system", 0), router.state.now_ns + 1)
    from engine.messages import CreateItem

    router.apply(CreateItem("staff:bench", 1, ITEM, "t", 0, 0, 0, "open"), base)
    for i, cmd in enumerate(cmds):
        router.apply(cmd, base + 1 + i)
    bare = bb.PubexAdapter()
    step = bare.make()
    for i, op in enumerate(ops):
        step(op, i)
    assert router.state.items[ITEM].book.depth(10**9) == bare.book.depth(10**9)
