"""The e-mall end to end over real WebSocket connections: staff create an item in
its opening call, a supplier and a purchaser place signed orders, the open uncrosses,
a direct purchase within the single-purchase limit trades, an amend and a cancel
follow; a watcher sees conflated depth and the trade tape, a supervisor every event,
and no event names an owner."""

from __future__ import annotations

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from gateway.clients.tclient import Client
from gateway.entry.serve import serve
from gateway.wire import protocol as p


def order(key: SigningKey, name: str, seq: int, action: str, **kw: object) -> str:
    payload = p.OrderPayload(p.ORDER_DOMAIN, action, "P-A4", f"k-{name}", seq, **kw)  # type: ignore[arg-type]
    return p.order_frame(key, payload)


async def until(client: Client, ok) -> None:  # type: ignore[no-untyped-def]
    while not ok():
        await client.changed.wait()


async def test_emall_item_over_the_gateway(tmp_path):
    keys = {n: SigningKey.generate() for n in ("supplier", "purchaser")}
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(40):
            staff = await Client.connect(nursery, listening.ws_url, token="dev-staff-token")
            frames: list[p.Frame] = [
                p.CreateItemFrame(1, "P-A4", "A4 复印纸 80g", 2_500, 500, 10, "call"),
                p.SetPurchaseLimitFrame(2, "P-A4", "purchaser", 40),
            ]
            for n, (name, key) in enumerate(keys.items()):
                frames.append(
                    p.RegisterKeyFrame(10 + n, f"k-{name}", name, key.verify_key.encode().hex())
                )
            for frame in frames:
                assert isinstance(await staff.staff(frame), p.Ack), frame
            supervisor = await Client.connect(
                nursery, listening.ws_url, token="dev-supervisor-token"
            )
            await supervisor.subscribe(["P-A4"])
            watcher = await Client.connect(nursery, listening.ws_url)
            await watcher.subscribe(["*"])
            sup = await Client.connect(
                nursery, listening.ws_url, key=keys["supplier"], key_id="k-supplier"
            )
            pur = await Client.connect(
                nursery, listening.ws_url, key=keys["purchaser"], key_id="k-purchaser"
            )
            ks, kp = keys["supplier"], keys["purchaser"]
            # The opening call: orders collect without matching.
            a1 = await sup.request(
                1, order(ks, "supplier", 1, "place", side="sell", price_fen=2_400, qty=30)
            )
            a2 = await sup.request(
                2, order(ks, "supplier", 2, "place", side="sell", price_fen=2_600, qty=50)
            )
            b1 = await pur.request(
                1, order(kp, "purchaser", 1, "place", side="buy", price_fen=2_450, qty=20)
            )
            assert all(isinstance(r, p.Ack) for r in (a1, a2, b1)), (a1, a2, b1)
            refused = await pur.request(
                2, order(kp, "purchaser", 2, "place", side="buy", kind="market", qty=1)
            )
            assert isinstance(refused, p.Error) and refused.name == "book_kind_not_allowed"
            # Staff open: the uncross trades 20 at one price.
            assert isinstance(await staff.staff(p.SetItemSessionFrame(20, "P-A4", "open")), p.Ack)
            await until(
                watcher, lambda: "P-A4" in watcher.books and watcher.books["P-A4"].volume == 20
            )
            # 直购: above the limit refused, within it filled at the best offers.
            too_much = await pur.request(3, order(kp, "purchaser", 3, "purchase", qty=41))
            assert isinstance(too_much, p.Error) and too_much.code == 608
            bought = await pur.request(4, order(kp, "purchaser", 4, "purchase", qty=15))
            assert isinstance(bought, p.Ack)
            # Amend the rest of a2 down (keeps priority), then cancel it.
            assert isinstance(a2, p.Ack)
            amended = await sup.request(
                3, order(ks, "supplier", 3, "amend", order_id=a2.seq, qty=20)
            )
            assert isinstance(amended, p.Ack), amended
            other = await pur.request(5, order(kp, "purchaser", 5, "cancel", order_id=a2.seq))
            assert isinstance(other, p.Error) and other.name == "book_unknown_order"
            cancelled = await sup.request(4, order(ks, "supplier", 4, "cancel", order_id=a2.seq))
            assert isinstance(cancelled, p.Ack)
            await until(
                watcher,
                lambda: watcher.books["P-A4"].volume == 35 and not watcher.books["P-A4"].asks,
            )
            book = watcher.books["P-A4"]
            assert book.session == "open" and book.bids == []
            assert [(t.price_fen, t.qty, t.aggressor) for t in book.tape] == [
                (2_450, 20, "none"),
                (2_400, 10, "buy"),
                (2_600, 5, "buy"),
            ]
            assert book.last_price_fen == 2_600
            # Watchers and the supervisor get every public event, codes only, in order.
            for client in (watcher, supervisor):
                await until(
                    client,
                    lambda c=client: any(
                        isinstance(e, p.EventFrame) and e.event.get("reason") == "requested"
                        for e in c.events
                    ),
                )
            public = [e for e in watcher.events if isinstance(e, p.EventFrame)]
            assert public == [
                e
                for e in supervisor.events
                if isinstance(e, p.EventFrame) and e.seq >= public[0].seq
            ]
            kinds = [e.event["type"] for e in supervisor.events if isinstance(e, p.EventFrame)]
            for kind in ("order_placed", "auction_uncrossed", "order_filled", "order_amended"):
                assert kind in kinds
            text = " ".join(p.encode_text(e) for e in supervisor.events)
            assert "purchaser" not in text.replace("purchase", "")
            assert "k-supplier" not in text and "k-purchaser" not in text
        nursery.cancel_scope.cancel()
