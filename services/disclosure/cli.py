"""Arguments and entry point of ``pubex disclose`` (registered in gateway/entry/cli.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from services.lifecycle import access_from_args, add_access_options


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="var", help="data directory holding ledger/ (default: var)")
    p.add_argument("--http-port", type=int, default=8093, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    add_access_options(p)


def run_disclose(args: argparse.Namespace) -> int:
    import trio

    from persistence.lock import DirectoryInUse
    from services.disclosure.service import disclose
    from services.follower import ChainBroken, LedgerMismatch

    access = access_from_args(args, "pubex disclose")
    try:
        trio.run(
            lambda: disclose(
                Path(args.data), host=args.host, http_port=args.http_port, access=access
            )
        )
    except (ChainBroken, LedgerMismatch) as e:
        print(f"pubex disclose: {e}", file=sys.stderr)
        return 1
    except DirectoryInUse as e:  # a second instance on one store: refused, nothing written
        print(f"pubex disclose: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def load_feed(where: str) -> bytes | None:
    """A saved feed file's bytes; None when ``where`` is a URL (fetched page by page)."""
    if where.startswith(("http://", "https://")):
        return None
    return Path(where).read_bytes()


def fetch_pages(url: str, timeout_s: float = 30.0) -> Callable[[int], bytes]:
    """``pages(since)`` for :func:`ledger.published.fetch_feed` over HTTP."""
    import urllib.parse
    import urllib.request

    def pages(since: int) -> bytes:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.urlencode({"since": since, "limit": 1000})
        page_url = urllib.parse.urlunsplit(parts._replace(query=query))
        with urllib.request.urlopen(page_url, timeout=timeout_s) as r:
            return bytes(r.read(64 << 20))

    return pages
