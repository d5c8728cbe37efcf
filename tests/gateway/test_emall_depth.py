"""The e-mall view keeps its price levels in book order: the depth it shows is the best
levels a side, as sorting every level would give."""

from __future__ import annotations

import random

from gateway.public.emall import DEPTH, ItemView


def test_depth_is_best_levels_first() -> None:
    rng = random.Random(3)
    view = ItemView("item", reference_fen=10_000)
    model: dict[str, dict[int, int]] = {"buy": {}, "sell": {}}
    for _ in range(3_000):
        side = rng.choice(("buy", "sell"))
        price = 10_000 + (-1 if side == "buy" else 1) * rng.randint(1, 40) * 10
        delta = rng.choice((rng.randint(1, 9), -rng.randint(1, 9)))
        qty = model[side].get(price, 0) + delta
        if qty > 0:
            model[side][price] = qty
        else:
            model[side].pop(price, None)
        view._level(side, price, delta)
        bids, asks = view.depth()
        assert bids == sorted(model["buy"].items(), reverse=True)[:DEPTH]
        assert asks == sorted(model["sell"].items())[:DEPTH]
    snap = view.snapshot()
    assert (snap.bids, snap.asks) == view.depth()
