"""The live demo behind ``make run`` (``pubex serve --demo``).

A staff connection creates a catalogue of English and listing lots opening and
closing over the next minutes and registers seeded demo bidders (keys, lot
registrations, confirmed deposits) -- all as ordinary ledgered commands over
the WebSocket.  Each simulated bidder then connects with its own Ed25519 key,
subscribes to its lots and bids over a real WebSocket connection, like any
terminal, until its valuation is reached.  When a round's lots have all
closed, a new round starts.
"""

from __future__ import annotations

import random
import time
from typing import Any

import trio
from nacl.signing import SigningKey

from config.settings import Settings
from engine.router import Router
from engine.rules import JUDICIAL, QINZHOU, RuleSet
from engine.state import FINAL
from gateway.clients.tclient import Client
from gateway.edge.server import Listening
from gateway.wire import protocol as p

NS = 1_000_000_000
LOTS_PER_ROUND = 8
BIDDERS = 12
# The demo's clients number their client_seqs in their own session: `pubex admin`,
# the console or a terminal of the same staff id or bidder never make them stale.
SESSION = "demo"


def demo_key(seed: int, n: int) -> SigningKey:
    return SigningKey(random.Random(f"{seed}-{n}").randbytes(32))


class WsDemo:
    def __init__(self, router: Router, settings: Settings, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.token, self.staff_id = next(iter(settings.auth.staff_tokens.items()))
        self.router = router
        self.seqs: dict[str, int] = {}

    def next_seq(self, origin: str) -> int:
        """The next client_seq of the demo's own session (SESSION) of ``origin``."""
        last = self.seqs.get(origin, self.router.high_seq(origin, SESSION))
        self.seqs[origin] = last + 1
        return last + 1

    async def staff(self, client: Client, frame_type: type, *args: Any, **kw: Any) -> None:
        seq = self.next_seq(f"staff:{self.staff_id}")
        await client.staff(frame_type(seq, *args, **kw))

    async def setup_keys(self, client: Client) -> None:
        for n in range(BIDDERS):
            key_id = f"demo-key-{self.seed}-{n}"
            if key_id not in self.router.state.keys:
                vk = demo_key(self.seed, n).verify_key.encode().hex()
                await self.staff(client, p.RegisterKeyFrame, key_id, f"demo-bidder-{n}", vk)

    async def catalogue(self, client: Client, round_no: int) -> list[str]:
        now = time.time_ns()
        lots = []
        for i in range(LOTS_PER_ROUND):
            lot = f"R{round_no:03d}-{i:02d}"
            english = i % 4 != 3
            start_fen = self.rng.randrange(50, 5_000) * 1_000_000  # ¥0.5 m - ¥50 m
            base = JUDICIAL if english else QINZHOU
            fields = {f: getattr(base, f) for f in base.__struct_fields__}
            rules = RuleSet(
                **{
                    **fields,
                    "extension_window_ns": 60 * NS,
                    "countdown_ns": 60 * NS,
                    "reserve_cutoff_ns": 0,
                }
            )
            start, end = now + (5 + 15 * i) * NS, now + (150 + 40 * i) * NS
            await self.staff(
                client,
                p.CreateLotFrame,
                lot,
                "english" if english else "listing",
                f"演示标的 Demo lot {lot}",
                start_fen,
                start_fen // 200,
                start,
                end,
                rules=rules,
            )
            await self.staff(client, p.PublishLotFrame, lot)
            if i % 3 == 1:
                await self.staff(client, p.SetReserveFrame, lot, start_fen * 12 // 10)
            for n in self.rng.sample(range(BIDDERS), self.rng.randint(3, 7)):
                await self.staff(client, p.RegisterBidderFrame, lot, f"demo-bidder-{n}")
                await self.staff(client, p.ConfirmDepositFrame, lot, f"demo-bidder-{n}", 0)
            lots.append(lot)
        return lots

    async def resume_suspended(self, client: Client) -> None:
        """Lots suspended at start-up (the server was down past their deadline)
        are resumed, as the trading center's staff would after checking them."""
        for lot in list(self.router.state.lots.values()):
            if lot.lot_id.startswith("R") and lot.status == "frozen":
                await self.staff(
                    client, p.ResumeLotFrame, lot.lot_id, "demo: resumed after restart"
                )

    def open_lots(self) -> list[str]:
        return [
            lot.lot_id
            for lot in self.router.state.lots.values()
            if lot.lot_id.startswith("R") and lot.status not in FINAL
        ]

    async def bidder(self, n: int, url: str) -> None:
        key, key_id = demo_key(self.seed, n), f"demo-key-{self.seed}-{n}"
        bidder_id = f"demo-bidder-{n}"
        rng = random.Random(f"{self.seed}-agent-{n}")
        appetite = rng.uniform(1.05, 1.6)
        async with trio.open_nursery() as nursery:
            client = await _connect_retrying(
                nursery, url, key=key, key_id=key_id, device=f"demo-device-{n}"
            )
            await client.subscribe(["*"])
            while not client.closed:
                await trio.sleep(rng.uniform(0.5, 6.0))
                for lot_id, snap in list(client.snapshots.items()):
                    lot = self.router.state.lots.get(lot_id)
                    if lot is None or bidder_id not in lot.bidders or snap.status != "open":
                        continue
                    if snap.leader_code == lot.bidders[bidder_id].code:
                        continue
                    amount = (
                        snap.price_fen + snap.increment_fen
                        if snap.bid_count
                        else (snap.start_price_fen)
                    )
                    if amount <= snap.start_price_fen * appetite and rng.random() < 0.5:
                        seq = self.next_seq(f"bidder:{bidder_id}")
                        await client.send_text(p.bid_frame(key, key_id, lot_id, amount, seq))
            nursery.cancel_scope.cancel()


async def run_ws_demo(
    listening: Listening, settings: Settings, *, seed: int, bidders: bool
) -> None:
    """The demo beside an in-process server (``pubex serve --edges 0``)."""
    await run_demo(
        listening.gateway.rt.router,
        listening.ws_url,
        listening.http_url,
        settings,
        seed=seed,
        bidders=bidders,
    )


async def run_demo(
    router: Router,
    ws_url: str,
    http_url: str,
    settings: Settings,
    *,
    seed: int,
    bidders: bool,
    announce: bool = True,
) -> None:
    """The demo catalogue and simulated bidders, talking to ``ws_url`` as any
    client would; ``router``: the engine they read what is open from (the
    sequencer's, in its process)."""
    demo = WsDemo(router, settings, seed)
    if announce:
        print(
            f"console: {http_url}  (demo staff token to log in with: {demo.token})",
            flush=True,
        )
    async with trio.open_nursery() as nursery:
        staff = await _connect_retrying(nursery, ws_url, token=demo.token)
        await demo.setup_keys(staff)
        await demo.resume_suspended(staff)
        if bidders:
            for n in range(BIDDERS):
                nursery.start_soon(demo.bidder, n, ws_url)
        round_no = len(demo.router.state.lots)
        while True:
            if not demo.open_lots():
                round_no += 1
                await demo.catalogue(staff, round_no)
            await trio.sleep(5)


async def _connect_retrying(nursery: trio.Nursery, ws_url: str, **how: Any) -> Client:
    """A connection once the edges listen and know the demo's keys (they start
    beside the demo, and learn a key when its entry is durable)."""
    for _ in range(600):
        try:
            return await Client.connect(nursery, ws_url, session=SESSION, **how)
        except Exception:  # refused, reset, or a group of those: later
            await trio.sleep(0.1)
    return await Client.connect(nursery, ws_url, session=SESSION, **how)
