"""``pubex registry provision``: keys, registrations and confirmed deposits in
one go, for load tests.

The scenario is ``simulators.provision.english_lots`` (``--lots`` English
lots, ``--bidders`` bidders round robin over them, keys derived from
``--seed``).  The lots are created and published over a staff socket (lots
are staff business; the trio client, like ``pubex admin``); the keys,
registrations and deposits are registry writes -- stored in the registry's
outbox with their client_seqs first, then sent pipelined as
``service:<id>`` (:class:`services.registry.writer.Submitter`), so a run
that dies half-way and is started again with the same ``--data`` resends
only what the engine has not applied.  The bidders' private keys go to
``--keys-out`` (JSON lines) for the load clients.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from persistence.service import ServiceStore
from services.lifecycle import read_token
from services.registry.cli import STAFF_ENV, TOKEN_ENV
from services.registry.service import NAME, Registry
from services.registry.writer import Result, frame_dict
from simulators import agents as ag
from simulators.provision import STAFF_FRAMES, ProvisionError, english_lots

NS = 1_000_000_000
REGISTRY_OPS = {
    "register_key": p.RegisterKeyFrame,
    "register_bidder": p.RegisterBidderFrame,
    "confirm_deposit": p.ConfirmDepositFrame,
}
WINDOW = 256  # staff commands in flight at once


async def _send_lots(
    ws_url: str, staff_token: str, definition: ag.ScenarioDef, open_in_s: float
) -> tuple[int, list[ag.StaffOp]]:
    """Create and publish the lots over one staff socket, in order and pipelined
    (up to ``WINDOW`` unanswered, replies matched by client_seq); the first
    refusal stops the run.  Returns the lots' opening time and every op of the
    definition (the registry's are sent by the caller)."""
    async with trio.open_nursery() as nursery:
        client = await Client.connect(nursery, ws_url, token=staff_token)
        if client.hello.role != "staff":
            raise ProvisionError(f"the token did not give a staff connection: {client.hello!r}")
        t0 = client.hello.server_time_ns + int(open_in_s * NS)
        ops = list(ag.provisioning(definition, t0))
        pending: dict[int, ag.StaffOp] = {}

        def settle() -> None:
            for seq in [s for s in pending if s in client.replies]:
                op, reply = pending.pop(seq), client.replies.pop(seq)
                if isinstance(reply, p.Error):
                    raise ProvisionError(f"{op.op} {op.args}: {reply.name}")

        async def next_reply() -> None:
            if client.closed:
                raise ConnectionError("the staff connection closed")
            await client.changed.wait()
            settle()

        seq = time.time_ns() // 1000  # like `pubex admin`
        for op in ops:
            if op.op in REGISTRY_OPS:
                continue
            while len(pending) >= WINDOW:
                await next_reply()
            pending[seq] = op
            await client.send(STAFF_FRAMES[op.op](seq, **op.args))
            seq += 1
        with trio.fail_after(120):
            while pending:
                await next_reply()
        nursery.cancel_scope.cancel()
    return t0, ops


async def _send_registry(reg: Registry, ws_url: str, token: str, frames: list[Any]) -> list[Result]:
    async with trio.open_nursery() as nursery:
        sub = reg.connect(ws_url, token)
        await nursery.start(sub.run)
        if not sub.connected:
            raise ConnectionError(f"registry connection failed: {sub.last_error}")
        seqs = reg.outbox.add(frames)
        sub.wake()
        results = [await sub.wait(cs, 120.0) for cs in seqs]
        nursery.cancel_scope.cancel()
    return results


def provision(
    data_dir: Path,
    ws_url: str,
    *,
    bidders: int,
    lots: int,
    token: str,
    staff_token: str,
    seed: int = 1,
    prefix: str = "R",
    duration_s: float = 3600.0,
    window_s: float = 300.0,
    open_in_s: float = 5.0,
    keys_out: Path | None = None,
    origin: str = "service:registry",
) -> dict[str, Any]:
    started = time.perf_counter()
    definition = english_lots(
        prefix,
        lots,
        bidders,
        seed=seed,
        duration_ns=int(duration_s * NS),
        window_ns=int(window_s * NS),
    )
    t0, ops = trio.run(_send_lots, ws_url, staff_token, definition, open_in_s)
    lot_ops = [o for o in ops if o.op not in REGISTRY_OPS]
    frames = [
        (frame_dict(REGISTRY_OPS[o.op](0, **o.args)), f"provision {o.op}")
        for o in ops
        if o.op in REGISTRY_OPS
    ]
    with ServiceStore.open(data_dir / NAME) as store:
        reg = Registry(store, None, origin=origin)
        results = trio.run(_send_registry, reg, ws_url, token, frames)
    refused = [r for r in results if r.state != "accepted"]
    if keys_out is not None:
        with keys_out.open("w") as out:
            for a in definition.agents:
                key = ag.agent_key(seed, a.key_id)
                row = {
                    "bidder": a.bidder,
                    "key_id": a.key_id,
                    "lot": a.lot,
                    "device": a.device,
                    "private_key_hex": bytes(key).hex(),
                    "public_key_hex": key.verify_key.encode().hex(),
                }
                out.write(json.dumps(row) + "\n")
    return {
        "lots": [s.lot for s in definition.lots],
        "open_at_ns": t0,
        "bidders": len(definition.agents),
        "staff_commands": len(lot_ops),
        "registry_commands": len(frames),
        "accepted": len(results) - len(refused),
        "refused": [f"{r.purpose}: {r.state} {r.name}".strip() for r in refused],
        "retried": sum(1 for r in results if r.retried),
        "seconds": round(time.perf_counter() - started, 3),
    }


def run_provision(args: argparse.Namespace) -> int:
    token = read_token(getattr(args, "token_file", None), TOKEN_ENV)
    staff_token = read_token(args.staff_token_file, STAFF_ENV)
    if not args.ws or not token or not staff_token or args.bidders <= 0 or args.lots <= 0:
        print(
            f"pubex registry provision: --ws, a service token (${TOKEN_ENV} or --token-file), "
            f"a staff token (${STAFF_ENV} or --staff-token-file), --bidders > 0, --lots > 0",
            file=sys.stderr,
        )
        return 2
    try:
        report = provision(
            Path(args.data),
            args.ws,
            bidders=args.bidders,
            lots=args.lots,
            token=token,
            staff_token=staff_token,
            seed=args.seed,
            prefix=args.prefix,
            duration_s=args.duration_s,
            open_in_s=args.open_in_s,
            keys_out=Path(args.keys_out) if args.keys_out else None,
            origin=args.origin,
        )
    except Exception as e:
        print(f"pubex registry provision: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 1 if report["refused"] else 0
