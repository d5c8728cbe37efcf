"""``pubex serve``'s start-up checks, light enough to import alone.

``check_ports_free`` runs before anything is created; ``startup_check`` reads
an existing ledger in a child process (:mod:`ledger.soundness`).  ``pubex
serve --check-only`` runs both and exits, without importing the server.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from ledger.soundness import Soundness, check_ledger


class ServeError(Exception):
    """Refusing to start: a usage problem (exit 2)."""

    exit_code = 2


class LedgerUnsound(ServeError):
    """Refusing to start on a ledger that does not verify (exit 1)."""

    exit_code = 1


def check_ports_free(host: str, ports: list[int]) -> None:
    """Refuse (``ServeError``) when a fixed port cannot be bound on ``host``, before
    anything is created; bound the way the listeners will be (``SO_REUSEADDR``)."""
    for port in dict.fromkeys(p for p in ports if p):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ServeError(f"cannot listen on {host}: {e.strerror}") from e
        for family, kind, proto, _name, addr in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(addr)
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        raise ServeError(f"port {port} on {host} is in use") from e
                    raise ServeError(f"cannot listen on port {port} on {host}: {e.strerror}") from e


def startup_check(data_dir: Path, verify_all: bool = False) -> Soundness | None:
    """The start-up verification (module docstring); None for a fresh data
    directory, which has nothing to check.  Raises ``LedgerUnsound``."""
    ledger_dir = data_dir / "ledger"
    if not (ledger_dir / "data.mdb").exists():
        return None
    result = check_ledger(ledger_dir, "startup-all" if verify_all else "startup")
    if not result.ok:
        raise LedgerUnsound(f"refusing to start: {result.message}")
    return result
