"""Bulk provisioning before a load run, over ONE staff WebSocket.

A stop-gap until ``pubex registry provision`` exists: the scenario's
definition (``simulators.agents.ScenarioDef``: lots, keys, registrations,
confirmed deposits) is sent as ordinary ledgered staff commands, pipelined
(up to ``window`` in flight, replies matched by ``client_seq``), and a plan
JSON is written for the Locust users (``PUBEX_LOAD_PLAN``).  Every command
must be acknowledged; a refusal stops the run.

Trio-free (websocket-client), so the runner and tests can call it anywhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import websocket

from gateway import protocol as p
from simulators import agents as ag
from simulators.agents import AgentSpec, LotSpec, ScenarioDef

NS = 1_000_000_000
YUAN = 100

_FRAMES: dict[str, type[p.StaffFrame]] = {
    "create_lot": p.CreateLotFrame,
    "publish_lot": p.PublishLotFrame,
    "set_reserve": p.SetReserveFrame,
    "register_key": p.RegisterKeyFrame,
    "register_bidder": p.RegisterBidderFrame,
    "confirm_deposit": p.ConfirmDepositFrame,
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
    ws = websocket.create_connection(
        f"{ws_url}?{urlencode({'token': token})}", timeout=60, suppress_origin=True
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
            ws.send(p.encode_text(_FRAMES[op.op](seq, **op.args)))
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
