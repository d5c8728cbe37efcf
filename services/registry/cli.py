"""Arguments and entry points of ``pubex registry`` (registered in gateway/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="var", help="data directory holding ledger/ (default: var)")
    p.add_argument("--http-port", type=int, default=8093, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ws", default="", help="the gateway's ws://HOST:PORT/ws (writes)")
    p.add_argument("--token", default="", help="a service token (config auth.service_tokens)")
    p.add_argument("--origin", default="service:registry", help="the origin the token maps to")
    sub = p.add_subparsers(dest="registry_command")
    pv = sub.add_parser("provision", help="keys, registrations and confirmed deposits in one go")
    for flag in ("--data", "--ws", "--token", "--origin"):  # also accepted after "provision"
        pv.add_argument(flag, default=argparse.SUPPRESS)
    pv.add_argument("--bidders", type=int, required=True)
    pv.add_argument("--lots", type=int, required=True)
    pv.add_argument("--staff-token", default="dev-staff-token", help="creates the lots")
    pv.add_argument("--seed", type=int, default=1, help="derives the bidders' keys")
    pv.add_argument("--prefix", default="R", help="lot id prefix")
    pv.add_argument("--duration-s", type=float, default=3600.0)
    pv.add_argument("--open-in-s", type=float, default=5.0)
    pv.add_argument("--keys-out", help="JSON lines: each bidder's key id, lot and private key")


def run_registry(args: argparse.Namespace) -> int:
    if args.registry_command == "provision":
        return run_provision(args)
    import trio

    from services.follower import ChainBroken, LedgerMismatch
    from services.registry.service import serve_registry

    if bool(args.ws) != bool(args.token):
        print("pubex registry: --ws and --token go together", file=sys.stderr)
        return 2
    try:
        trio.run(
            lambda: serve_registry(
                Path(args.data),
                host=args.host,
                http_port=args.http_port,
                ws_url=args.ws,
                token=args.token,
                origin=args.origin,
            )
        )
    except (ChainBroken, LedgerMismatch) as e:
        print(f"pubex registry: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def run_provision(args: argparse.Namespace) -> int:
    from services.registry.provision import provision

    if not args.ws or not args.token or args.bidders <= 0 or args.lots <= 0:
        print("pubex registry provision: --ws, --token, --bidders > 0, --lots > 0", file=sys.stderr)
        return 2
    try:
        report = provision(
            Path(args.data),
            args.ws,
            bidders=args.bidders,
            lots=args.lots,
            token=args.token,
            staff_token=args.staff_token,
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
