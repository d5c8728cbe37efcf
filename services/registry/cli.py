"""Arguments and entry points of ``pubex registry`` (registered in gateway/entry/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.lifecycle import access_from_args, add_access_options, read_token

TOKEN_ENV = "PUBEX_SERVICE_TOKEN"  # the registry's service token (never on the command line)
STAFF_ENV = "PUBEX_STAFF_TOKEN"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="var", help="data directory holding ledger/ (default: var)")
    p.add_argument("--http-port", type=int, default=8093, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ws", default="", help="the gateway's ws://HOST:PORT/ws (writes)")
    p.add_argument(
        "--token-file",
        help=f"a file holding the service token (config auth.service_tokens); default: ${TOKEN_ENV}",
    )
    p.add_argument("--origin", default="service:registry", help="the origin the token maps to")
    add_access_options(p)
    sub = p.add_subparsers(dest="registry_command")
    pv = sub.add_parser("provision", help="keys, registrations and confirmed deposits in one go")
    for flag in ("--data", "--ws", "--token-file", "--origin"):  # also accepted after "provision"
        pv.add_argument(flag, default=argparse.SUPPRESS)
    pv.add_argument("--bidders", type=int, required=True)
    pv.add_argument("--lots", type=int, required=True)
    pv.add_argument(
        "--staff-token-file", help=f"a staff token's file (creates the lots); default: ${STAFF_ENV}"
    )
    pv.add_argument("--seed", type=int, default=1, help="derives the bidders' keys")
    pv.add_argument("--prefix", default="R", help="lot id prefix")
    pv.add_argument("--duration-s", type=float, default=3600.0)
    pv.add_argument("--open-in-s", type=float, default=5.0)
    pv.add_argument("--keys-out", help="JSON lines: each bidder's key id, lot and private key")


def run_registry(args: argparse.Namespace) -> int:
    """The registry service (``pubex registry``; its ``provision`` subcommand is an
    entry point of its own: gateway/entry/provision.py)."""
    import trio

    from persistence.lock import DirectoryInUse
    from services.follower import ChainBroken, LedgerMismatch
    from services.registry.service import serve_registry

    token = read_token(args.token_file, TOKEN_ENV)
    if bool(args.ws) != bool(token):
        print(
            f"pubex registry: --ws and a token (${TOKEN_ENV} or --token-file) go together",
            file=sys.stderr,
        )
        return 2
    access = access_from_args(args, "pubex registry")
    try:
        trio.run(
            lambda: serve_registry(
                Path(args.data),
                host=args.host,
                http_port=args.http_port,
                ws_url=args.ws,
                token=token,
                origin=args.origin,
                access=access,
            )
        )
    except (ChainBroken, LedgerMismatch) as e:
        print(f"pubex registry: {e}", file=sys.stderr)
        return 1
    except DirectoryInUse as e:  # a second instance on one store: refused, nothing written
        print(f"pubex registry: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
