"""Arguments and entry point of ``pubex supervise`` (registered in gateway/entry/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.lifecycle import access_from_args, add_access_options


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="var", help="data directory holding ledger/ (default: var)")
    p.add_argument("--http-port", type=int, default=8092, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    add_access_options(p)
    p.add_argument("--config", help="a TOML file with a [supervision] table of thresholds")


def run_supervise(args: argparse.Namespace) -> int:
    import msgspec
    import trio

    from persistence.lock import DirectoryInUse
    from services.follower import ChainBroken, LedgerMismatch
    from services.supervision.model import load_config
    from services.supervision.service import supervise

    access = access_from_args(args, "pubex supervise")
    try:
        config = load_config(args.config)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
        print(f"pubex supervise: {e}", file=sys.stderr)
        return 2
    try:
        trio.run(
            lambda: supervise(
                Path(args.data),
                host=args.host,
                http_port=args.http_port,
                config=config,
                access=access,
            )
        )
    except (ChainBroken, LedgerMismatch) as e:
        print(f"pubex supervise: {e}", file=sys.stderr)
        return 1
    except DirectoryInUse as e:  # a second instance on one store: refused, nothing written
        print(f"pubex supervise: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
