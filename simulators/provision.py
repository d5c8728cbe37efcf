"""Provisioning shared by the load runs and ``pubex registry provision``: the
demo and load lots, keys, registrations and confirmed deposits, in one place.

A scenario's definition (``simulators.agents.ScenarioDef``) is sent over ONE
staff WebSocket as ordinary ledgered staff commands, pipelined (up to
``window`` in flight, replies matched by ``client_seq``); for a Locust run a
plan JSON is written for the users (``PUBEX_LOAD_PLAN``).  Every command must
be acknowledged; a refusal stops the run.  ``pubex registry provision``
(``gateway/entry/provision.py``) takes the definitions and ``STAFF_FRAMES`` from
here, sends the lots over the trio client and the keys, registrations and
deposits as registry writes.

The load runs' sender is trio-free (websocket-client, the ``load`` extra, imported
only when a socket is opened), so the runner and tests can call it anywhere.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.wire import protocol as p
from simulators import agents as ag
from simulators.agents import AgentSpec, LotSpec, ScenarioDef

if TYPE_CHECKING:  # websocket-client: the load extra's, imported only where it is used
    import websocket

NS = 1_000_000_000
YUAN = 100

STAFF_FRAMES: dict[str, type[p.StaffFrame]] = {
    "create_lot": p.CreateLotFrame,
    "publish_lot": p.PublishLotFrame,
    "set_reserve": p.SetReserveFrame,
    "register_key": p.RegisterKeyFrame,
    "register_bidder": p.RegisterBidderFrame,
    "confirm_deposit": p.ConfirmDepositFrame,
    "create_item": p.CreateItemFrame,
    "set_purchase_limit": p.SetPurchaseLimitFrame,
}


class ProvisionError(Exception):
    pass


# ------------------------------------------------------------ definitions


def english_lots(
    prefix: str, lots: int, bidders: int, *, seed: int, duration_ns: int, window_ns: int
) -> ScenarioDef:
    """``lots`` English lots (judicial rules, anti-sniping window ``window_ns``)
    and ``bidders`` bidders spread round robin over them; valuations unbounded
    (load users bid the next valid price)."""
    rules = ag._with(ag.JUDICIAL, extension_window_ns=window_ns, reserve_cutoff_ns=0)
    specs = tuple(
        LotSpec(
            f"{prefix}{n:05d}",
            "english",
            f"Load lot {n}",
            1_000_000 * YUAN,
            10_000 * YUAN,
            0,
            duration_ns,
            rules,
        )
        for n in range(lots)
    )
    people = tuple(
        AgentSpec(
            f"{prefix.lower()}bidder-{i:05d}",
            f"{prefix.lower()}key-{i:05d}",
            specs[i % lots].lot,
            "incremental",
            10**15,
            f"device-{i:05d}",
        )
        for i in range(bidders)
    )
    return ScenarioDef(prefix, seed, specs, people)


def emall_market(users: int, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """``emall``: ``items`` catalogue items (opened at creation: continuous
    trading from the first order), each with a seeded reference price, a tick of
    1/400 of it and a price band of 10 % (as ``simulators.emall_day``); ``users``
    traders, 40 % suppliers (sell only), 40 % purchasers (buy only) and 20 %
    traders of trading rights (role ``bidder``, both sides), each on
    ``items_per_trader`` items drawn from the seed; the default single-purchase
    limit is 50, and one purchaser in three has 120 on its first item.
    Returns ``{"ops": [StaffOp], "items": {...}, "traders": [...]}``."""
    rng = random.Random(f"pubex-load-emall|{seed}")
    count = int(params.get("items", 100))
    per = min(count, int(params.get("items_per_trader", 5)))
    items: dict[str, dict[str, int]] = {}
    ops: list[ag.StaffOp] = []
    for n in range(count):
        item = f"EM{n:04d}"
        ref = rng.randrange(10, 5_000) * YUAN
        items[item] = {"reference_fen": ref, "band_fen": ref // 10, "tick_fen": max(1, ref // 400)}
        ops.append(
            ag.StaffOp(
                "create_item",
                {
                    "item": item,
                    "title": f"Load item {n}",
                    "reference_fen": ref,
                    "band_fen": ref // 10,
                    "purchase_limit_qty": 50,
                    "session": "open",
                },
            )
        )
    names = list(items)
    traders = []
    for i in range(users):
        role = ("supplier", "purchaser", "supplier", "purchaser", "bidder")[i % 5]
        trader = f"{role[0].upper()}{i:05d}"
        key_id = f"emkey-{i:05d}"
        mine = rng.sample(names, per)
        public = ag.agent_key(seed, key_id).verify_key.encode().hex()
        ops.append(
            ag.StaffOp(
                "register_key",
                {"key": key_id, "bidder": trader, "public_key_hex": public, "role": role},
            )
        )
        if role == "purchaser" and i % 3 == 0:
            ops.append(
                ag.StaffOp("set_purchase_limit", {"item": mine[0], "bidder": trader, "qty": 120})
            )
        traders.append({"key_id": key_id, "bidder": trader, "role": role, "items": mine})
    return {"ops": ops, "items": items, "traders": traders}


def definition_for(kind: str, users: int, seed: int, params: dict[str, Any]) -> ScenarioDef:
    if kind == "hot-land":
        return ag.hot_land(
            seed,
            bidders=users,
            listing_ns=int(params.get("listing_s", 10) * NS),
            countdown_ns=int(params.get("countdown_s", 4) * NS),
            quote_freeze_ns=0,
            start_offset_ns=0,
        )
    if kind == "english":
        return english_lots(
            params.get("prefix", "L"),
            int(params["lots"]),
            users,
            seed=seed,
            duration_ns=int(params.get("duration_s", 3600) * NS),
            window_ns=int(params.get("window_s", 300) * NS),
        )
    raise ProvisionError(f"unknown provisioning kind {kind!r}")


# ------------------------------------------------------------ the wire


def staff_connect(ws_url: str, token: str) -> tuple[websocket.WebSocket, p.Hello]:
    import websocket

    ws = websocket.create_connection(
        ws_url, header=[f"Authorization: Bearer {token}"], timeout=60, suppress_origin=True
    )
    hello = p.decode_server(ws.recv())
    if not isinstance(hello, p.Hello) or hello.role != "staff":
        raise ProvisionError(f"the token did not give a staff connection: {hello!r}")
    return ws, hello


def send_ops(
    ws: websocket.WebSocket, ops: list[ag.StaffOp], *, first_seq: int, window: int = 256
) -> int:
    """Pipelined: up to ``window`` commands in flight; returns the next client_seq."""
    seq, inflight, i = first_seq, {}, 0
    while i < len(ops) or inflight:
        while i < len(ops) and len(inflight) < window:
            op = ops[i]
            ws.send(p.encode_text(STAFF_FRAMES[op.op](seq, **op.args)))
            inflight[seq] = op
            seq, i = seq + 1, i + 1
        frame = p.decode_server(ws.recv())
        if isinstance(frame, p.Ack):
            inflight.pop(frame.client_seq, None)
        elif isinstance(frame, p.Error):
            op = inflight.pop(frame.client_seq, None)
            raise ProvisionError(f"{op.op if op else '?'} {op.args if op else ''}: {frame.name}")
    return seq


def provision(
    ws_url: str,
    http_url: str,
    out: Path,
    *,
    kind: str,
    users: int,
    seed: int,
    params: dict[str, Any],
    token: str = "dev-staff-token",
    lead_s: float = 3.0,
) -> dict[str, Any]:
    """Provision the scenario and write its plan to ``out``; returns the plan.
    Lots open ``lead_s`` after provisioning ends (estimated from the command count)."""
    if kind == "emall":
        return provision_emall(ws_url, http_url, out, users=users, seed=seed, params=params)
    definition = definition_for(kind, users, seed, params)
    ops_count = sum(1 for _ in ag.provisioning(definition, 0))
    started = time.perf_counter()
    ws, hello = staff_connect(ws_url, token)
    try:
        # ~3k staff commands/s on this machine: open the lots after they are all in
        t0 = hello.server_time_ns + int((ops_count / 2500 + lead_s) * NS)
        ops = list(ag.provisioning(definition, t0))
        send_ops(ws, ops, first_seq=1)
    finally:
        ws.close()
    lots = {
        s.lot: {
            "mechanism": s.mechanism,
            "start_price_fen": s.start_price_fen,
            "increment_fen": s.increment_fen,
            "start_ns": t0 + s.start_offset_ns,
            "end_ns": t0 + s.start_offset_ns + s.duration_ns,
        }
        for s in definition.lots
    }
    data = {
        "kind": kind,
        "seed": seed,
        "params": params,
        "users": users,
        "t0_ns": t0,
        "open_at_ns": min(v["start_ns"] for v in lots.values()),
        "ws_url": ws_url,
        "http_url": http_url,
        "staff_token": token,
        "hot_lot": definition.lots[0].lot,
        "lots": lots,
        "bidders": [
            {"key_id": a.key_id, "bidder": a.bidder, "lot": a.lot, "device": a.device}
            for a in definition.agents
        ],
        "commands": len(ops),
        "provision_s": round(time.perf_counter() - started, 3),
    }
    out.write_bytes(msgspec.json.format(msgspec.json.encode(data)))
    return data


def provision_emall(
    ws_url: str,
    http_url: str,
    out: Path,
    *,
    users: int,
    seed: int,
    params: dict[str, Any],
    token: str = "dev-staff-token",
) -> dict[str, Any]:
    """The ``emall`` market (``emall_market``) over one staff socket; its plan."""
    market = emall_market(users, seed, params)
    started = time.perf_counter()
    ws, hello = staff_connect(ws_url, token)
    try:
        send_ops(ws, market["ops"], first_seq=1)
    finally:
        ws.close()
    first = next(iter(market["items"]))
    data = {
        "kind": "emall",
        "seed": seed,
        "params": params,
        "users": users,
        "t0_ns": hello.server_time_ns,
        "open_at_ns": hello.server_time_ns,  # items open at creation
        "ws_url": ws_url,
        "http_url": http_url,
        "staff_token": token,
        "hot_lot": first,
        "lots": {},
        "items": market["items"],
        "bidders": market["traders"],
        "commands": len(market["ops"]),
        "provision_s": round(time.perf_counter() - started, 3),
    }
    out.write_bytes(msgspec.json.format(msgspec.json.encode(data)))
    return data


def load_definition(plan: dict[str, Any]) -> ScenarioDef:
    """The same definition the provisioning used (users rebuild their agents from it)."""
    return definition_for(plan["kind"], plan["users"], plan["seed"], plan["params"])


def main() -> None:  # pragma: no cover - a manual entry point
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ws-url", required=True)
    ap.add_argument("--http-url", default="")
    ap.add_argument("--kind", required=True)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--params", default="{}", help="JSON")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    plan = provision(
        a.ws_url,
        a.http_url,
        Path(a.out),
        kind=a.kind,
        users=a.users,
        seed=a.seed,
        params=json.loads(a.params),
    )
    print(f"provisioned {plan['commands']} commands in {plan['provision_s']} s -> {a.out}")


if __name__ == "__main__":  # pragma: no cover
    main()
