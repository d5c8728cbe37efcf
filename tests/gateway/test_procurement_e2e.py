"""Issue 4 over real WebSocket connections: a volume-based procurement (sealed
unit prices, revival, region choices) and a scored tender (committee keys,
committed draw seed), each end to end through the gateway."""

from __future__ import annotations

import time

import trio
from nacl.signing import SigningKey

from config.settings import load_settings
from engine.draw import seed_hash
from engine.messages import RegionDemand
from engine.rules import TENDER_SCORING, VBP_R10
from engine.sealed import seal_commitment
from gateway.clients.tclient import Client
from gateway.entry.serve import serve
from gateway.wire import protocol as p

NS = 1_000_000_000
SEED = "ab" * 16


def act(key: SigningKey, key_id: str, lot: str, seq: int, action: str, **kw: object) -> str:
    payload = p.SealedPayload(p.SEALED_DOMAIN, action, lot, key_id, seq, **kw)  # type: ignore[arg-type]
    return p.sealed_frame(key, payload)


async def until(client: Client, lot: str, pred) -> p.LotSnapshot:  # type: ignore[no-untyped-def]
    while (snap := client.snapshots.get(lot)) is None or not pred(snap):
        await client.changed.wait()
    return snap


async def setup(nursery, url, lot_frame, names, roles=None):  # type: ignore[no-untyped-def]
    roles = roles or {}
    keys = {n: SigningKey.generate() for n in names}
    staff = await Client.connect(nursery, url, token="dev-staff-token")
    frames: list[p.Frame] = [lot_frame, p.PublishLotFrame(2, lot_frame.lot)]
    seq = 10
    for n in names:
        vk = keys[n].verify_key.encode().hex()
        frames.append(p.RegisterKeyFrame(seq, f"k-{n}", n, vk, roles.get(n, "supplier")))
        seq += 1
        if roles.get(n, "supplier") != "committee":
            frames += [
                p.RegisterBidderFrame(seq, lot_frame.lot, n),
                p.ConfirmDepositFrame(seq + 1, lot_frame.lot, n, 0),
            ]
            seq += 2
    for frame in frames:
        assert isinstance(await staff.staff(frame), p.Ack), frame
    clients = {n: await Client.connect(nursery, url, key=keys[n], key_id=f"k-{n}") for n in names}
    watcher = await Client.connect(nursery, url, token="dev-supervisor-token")
    await watcher.subscribe([lot_frame.lot])
    return staff, keys, clients, watcher


async def sealed_round(keys, clients, lot, quotes, watcher, start_seq=1):  # type: ignore[no-untyped-def]
    for n, amount in quotes.items():
        c = seal_commitment(lot, amount, f"nonce-{n}")
        reply = await clients[n].request(
            start_seq, act(keys[n], f"k-{n}", lot, start_seq, "submit", commitment=c)
        )
        assert isinstance(reply, p.Ack), reply
    await until(watcher, lot, lambda s: s.phase == "reveal")
    for n, amount in quotes.items():
        frame = act(
            keys[n], f"k-{n}", lot, start_seq + 1, "reveal", amount_fen=amount, nonce=f"nonce-{n}"
        )
        assert isinstance(await clients[n].request(start_seq + 1, frame), p.Ack)


async def test_vbp_over_the_gateway(tmp_path):
    names = ("f1", "f2", "f3", "f4")
    rules = msgspec_replace(
        VBP_R10, reveal_window_ns=3 * NS, revival_window_ns=2 * NS, region_window_ns=2 * NS
    )
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(60):
            now = time.time_ns()
            lot = p.CreateLotFrame(
                1,
                "V1",
                "vbp",
                "amlodipine 5mg",
                100_000,
                1,
                now,
                now + 3 * NS,
                rules=rules,
                regions=(RegionDemand("beijing", 600), RegionDemand("hebei", 400)),
            )
            _staff, keys, clients, watcher = await setup(nursery, listening.ws_url, lot, names)
            await sealed_round(
                keys,
                clients,
                "V1",
                {"f1": 10_000, "f2": 17_000, "f3": 30_000, "f4": 40_000},
                watcher,
            )
            snap = await until(watcher, "V1", lambda s: s.phase == "revival")
            assert [r.bidder_code for r in snap.ranking][:2] == [
                "0001",
                "0002",
            ]  # the opening record
            bad = await clients["f1"].request(3, act(keys["f1"], "k-f1", "V1", 3, "accept_revival"))
            assert isinstance(bad, p.Error) and bad.name == "not_revival_candidate"
            ok = await clients["f3"].request(3, act(keys["f3"], "k-f3", "V1", 3, "accept_revival"))
            assert isinstance(ok, p.Ack), ok
            await until(watcher, "V1", lambda s: s.phase == "regions")
            frame = act(keys["f2"], "k-f2", "V1", 4, "choose_regions", regions=("beijing",))
            assert isinstance(await clients["f2"].request(4, frame), p.Ack)
            snap = await until(watcher, "V1", lambda s: s.status == "sold")
            # N=4 -> at most 3 winners: f1, f2 by rule 1, f3 revived at 17,000
            assert [(r.bidder_code, r.amount) for r in snap.ranking] == [
                ("0001", 10_000),
                ("0002", 17_000),
                ("0003", 17_000),
            ]
            assert "units" in snap.ranking[0].note
            # f1 (rank 1, no preference) took the first region, beijing; f2 wanted beijing
            # too, so it got hebei; f3 none left
            assert snap.ranking[0].note.endswith(f"{1000 * 70 // 100 * 600 // 1000} units")
        nursery.cancel_scope.cancel()


async def test_scored_tender_with_committee_and_draw_over_the_gateway(tmp_path):
    names = ("b1", "b2", "b3", "m1")
    rules = msgspec_replace(TENDER_SCORING, reveal_window_ns=3 * NS)
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(
            lambda task_status: serve(
                load_settings(), tmp_path, ws_port=0, http_port=0, task_status=task_status
            )
        )
        with trio.fail_after(60):
            now = time.time_ns()
            lot = p.CreateLotFrame(
                1, "T1", "sealed", "servers", 1_000_000, 1, now, now + 3 * NS, rules=rules
            )
            staff, keys, clients, watcher = await setup(
                nursery, listening.ws_url, lot, names, {"m1": "committee"}
            )
            commit = p.CommitDrawSeedFrame(100, "T1", seed_hash(SEED))
            assert isinstance(await staff.staff(commit), p.Ack)
            # A committee key may not quote; the engine's authorisation matrix refuses it.
            quote = await clients["m1"].bid(keys["m1"], "k-m1", "T1", 900_000, 1)
            assert isinstance(quote, p.Error) and quote.name == "not_authorized"
            await sealed_round(
                keys, clients, "T1", {"b1": 800_000, "b2": 800_000, "b3": 900_000}, watcher
            )
            await until(watcher, "T1", lambda s: s.phase == "evaluation")
            early = await clients["b1"].request(
                3,
                act(
                    keys["b1"], "k-b1", "T1", 3, "enter_scores", bidder_code="0001", points_centi=1
                ),
            )
            assert isinstance(early, p.Error) and early.name == "not_authorized"
            for i, code in enumerate(("0001", "0002", "0003")):
                frame = act(
                    keys["m1"],
                    "k-m1",
                    "T1",
                    2 + i,
                    "enter_scores",
                    bidder_code=code,
                    points_centi=5_000,
                )
                assert isinstance(await clients["m1"].request(2 + i, frame), p.Ack)
            assert isinstance(await staff.staff(p.FinalizeEvaluationFrame(101, "T1")), p.Ack)
            await until(watcher, "T1", lambda s: s.phase == "draw")
            reveal = p.RevealDrawSeedFrame(102, "T1", SEED)
            assert isinstance(await staff.staff(reveal), p.Ack)
            snap = await until(watcher, "T1", lambda s: s.status == "sold")
            assert {r.bidder_code for r in snap.ranking[:2]} == {"0001", "0002"}  # the tie, drawn
            assert snap.ranking[2].bidder_code == "0003"
        nursery.cancel_scope.cancel()


def msgspec_replace(rules, **kw):  # type: ignore[no-untyped-def]
    import msgspec

    return msgspec.structs.replace(rules, **kw)


# ------------------------------------------------------------ view folds (no sockets)
def _views_with(lot: str, mechanism: str):  # type: ignore[no-untyped-def]
    from engine.messages import LotCreated
    from gateway.public.views import Views

    views = Views()
    views.apply(1, 0, [LotCreated(lot, mechanism, "t", 1_000, 1, 0, 0, 10, 0, VBP_R10, 0)])
    return views


def test_views_touch_a_lot_for_events_without_a_fold():
    """The server pushes a committed entry's public events only for the lots
    Views.apply reports touched; events with no fold (ScoresEntered,
    RevivalAccepted, DrawSeedCommitted, ShareConfirmed ...) were reported
    untouched, so watchers never received them."""
    from engine.messages import DrawSeedCommitted, RevivalAccepted, ScoresEntered

    views = _views_with("L1", "sealed")
    assert views.apply(2, 0, [ScoresEntered("L1", "0001", 1)]) == {"L1"}
    assert views.apply(3, 0, [RevivalAccepted("L1", "0002")]) == {"L1"}
    assert views.apply(4, 0, [DrawSeedCommitted("L1", "ab" * 32)]) == {"L1"}
    assert views.lots["L1"].seq == 4
    assert views.apply(5, 0, [ScoresEntered("nope", "0001", 1)]) == set()


def test_views_rank_a_closest_to_average_opening_by_distance():
    from engine.messages import OpeningEntry, OpeningRecord

    views = _views_with("L1", "sealed")
    entries = (
        OpeningEntry("0001", 1_000, True, ""),
        OpeningEntry("0002", 1_400, True, ""),
        OpeningEntry("0003", 1_600, True, ""),
        OpeningEntry("0004", 0, False, "not_revealed"),
    )
    views.apply(2, 0, [OpeningRecord("L1", entries, 3, 1_333, "closest_to_average")])
    assert [r.bidder_code for r in views.lots["L1"].ranking] == ["0002", "0003", "0001", "0004"]


def test_views_keep_confirmed_shares_through_a_re_offer_round():
    from engine.messages import ShareConfirmed, ShareOffer, SharesOffered

    views = _views_with("R1", "reverse")
    first = (ShareOffer("0001", 70, 1, 900), ShareOffer("0002", 30, 2, 950))
    views.apply(2, 0, [SharesOffered("R1", first, 100)])
    views.apply(3, 0, [ShareConfirmed("R1", "0001", 70)])
    views.apply(4, 0, [SharesOffered("R1", (ShareOffer("0003", 30, 3, 990),), 200)])
    assert [(r.bidder_code, r.note) for r in views.lots["R1"].ranking] == [
        ("0001", "#1 confirmed 70%"),
        ("0003", "#3 offered 30%"),
    ]
