"""One clock (issue 13, point 5): ``hello``, ``pong``, ``GET /time`` and
``/config.json`` tell clients the sequencer's clock -- the one lots run on and
the ledger is stamped with -- so under ``--accelerate`` a countdown or an
``end_ns`` computed from them is on lot time.  Everything here is compared with
the ledger's own stamps, never with the wall clock."""

from __future__ import annotations

import json
import urllib.request

import pytest
import trio

from gateway.wire import protocol as p
from tests.gateway.conftest import (
    SECOND,
    connect_staff,
    connect_watcher,
    next_staff_seq,
    staff_ok,
)
from tests.gateway.helpers import events_of

_pong_t = iter(range(7_000_000, 8_000_000))


async def pong_time(client) -> int:
    t = next(_pong_t)
    await client.send(p.Ping(t))
    with trio.fail_after(10):
        while True:
            for f in client.events:
                if isinstance(f, p.Pong) and f.t == t:
                    return f.server_time_ns
            await client.changed.wait()


async def http_time(srv, path: str = "time") -> int:
    def get() -> int:
        with urllib.request.urlopen(srv.http_url + path, timeout=10) as r:
            return int(json.loads(r.read())["server_time_ns"])

    return await trio.to_thread.run_sync(get)


def english(lot: str, start_ns: int, end_ns: int) -> p.CreateLotFrame:
    return p.CreateLotFrame(
        next_staff_seq(), lot, "english", f"title {lot}", 10_000, 100, start_ns, end_ns
    )


@pytest.mark.parametrize("accelerate", [1, 50])
async def test_clients_are_told_the_clock_the_ledger_is_stamped_with(
    nursery, server_factory, accelerate
):
    """Every time told to a client is at or after every ledger stamp before it,
    and every stamp after it is at or after it: one clock, in one order."""
    srv = await server_factory(sandbox=True, accelerate=accelerate)
    staff = await connect_staff(nursery, srv)
    told = staff.hello.server_time_ns
    ack = await staff_ok(staff, english("T1", told - SECOND, told + 3600 * SECOND))
    assert ack.ts_ns >= told
    pong = await pong_time(staff)
    assert pong >= ack.ts_ns
    now = await http_time(srv)
    assert now >= pong
    config = await http_time(srv, "config.json")
    assert config >= now
    again = await connect_staff(nursery, srv)
    assert again.hello.server_time_ns >= config
    ack2 = await staff_ok(again, p.PublishLotFrame(next_staff_seq(), "T1"))
    assert ack2.ts_ns >= again.hello.server_time_ns
    assert await pong_time(again) >= ack2.ts_ns


async def test_accelerated_lot_runs_on_the_time_clients_are_told(nursery, server_factory):
    """At 50x: a lot whose end_ns is hello + 30 s (sequencer time) is accepted,
    its snapshots show that end while pongs are before it, and it closes at it
    -- the close's stamp is at or after it, and pongs after the close are too."""
    srv = await server_factory(sandbox=True, accelerate=50)
    staff = await connect_staff(nursery, srv)
    told = staff.hello.server_time_ns
    end = told + 30 * SECOND
    await staff_ok(staff, english("A1", told - SECOND, end))
    await staff_ok(staff, p.PublishLotFrame(next_staff_seq(), "A1"))
    watcher = await connect_watcher(nursery, srv)
    await watcher.subscribe(["A1"])
    with trio.fail_after(10):
        while "A1" not in watcher.snapshots:
            await watcher.changed.wait()
    snap = watcher.snapshots["A1"]
    if snap.status in ("published", "open"):  # the remaining time shown: end - told
        assert snap.end_ns == end
        assert 0 < end - await pong_time(watcher) <= 30 * SECOND
    with trio.fail_after(30):  # 30 s of lot time: well under a second of wall time
        while not events_of(watcher, "lot_unsold"):
            await watcher.changed.wait()
    (unsold,) = events_of(watcher, "lot_unsold")
    assert unsold["reason"] == "no_bids" and unsold["closed_at_ns"] >= end
    close = next(f for f in watcher.events if isinstance(f, p.EventFrame) and f.event is unsold)
    assert close.ts_ns >= end
    assert await pong_time(watcher) >= close.ts_ns
    assert await http_time(srv) >= close.ts_ns
