"""The edge's sequencer, in this process (``LocalCore``).

An edge (``gateway.edge.server.Gateway``) asks the same few things of its
sequencer whether it runs beside it or across the link
(``gateway.link.client.LinkCore``): the keys it checks signatures with, the
sequencer's clock, admission of a handshake, submission of a command (an
``Answer`` comes back), and the public side of every committed entry.
``LocalCore`` is the in-process one: simulations, tests and ``pubex serve
--edges 0`` run the runtime and the edge on one loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.state import KeyRecord
from gateway.link.front import Admission, AnswerSink, Budget, EntrySink, Front
from gateway.public.views import Views
from gateway.sequencer.runtime import Runtime


class LocalCore:
    linked = True  # always: the runtime is in this process
    name = "edge"

    def __init__(self, front: Front) -> None:
        self.front = front
        self.rt: Runtime = front.rt
        self.on_resync: list[Any] = []  # never: nothing to lose between two parts of one loop

    @property
    def keys(self) -> Mapping[str, KeyRecord]:
        return self.rt.router.state.keys

    @property
    def listeners(self) -> list[EntrySink]:
        return self.front.listeners

    def load_views(self, views: Views) -> None:
        views.load(self.rt.store)

    def clock_ns(self) -> int:
        return self.rt.clock.read()

    @property
    def durable_seq(self) -> int:
        return self.rt.durable_seq

    @property
    def queue_depth(self) -> int:
        return self.rt.queue_depth

    def busy(self) -> bool:
        """Commands queued or applied and not yet durable."""
        rt = self.rt
        return bool(rt.queue_depth) or rt.durable_seq < rt.router.applied

    def health(self) -> dict[str, Any]:
        return {"ok": True, "durable_seq": self.rt.durable_seq, "queue": self.rt.queue_depth}

    def submit(self, cmd: Any, meta: bytes, budget: Budget, reply: AnswerSink) -> None:
        self.front.submit(cmd, meta, budget, reply)

    async def admit(self, ip: str, **claim: Any) -> Admission:
        return self.front.admit(ip, **claim)

    async def metrics_parts(self) -> dict[str, bytes]:
        return {}  # one process: the edge's own registry is everything

    def release(self, ip: str) -> None:
        self.front.release(ip)
