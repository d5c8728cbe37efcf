"""What every companion service does the same way at start and stop."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import trio

from config.settings import ConfigError, load_settings
from gateway.wire.access import Access, access_from_settings, console_origins, dev_token_refusal
from ledger.store import LedgerStore
from persistence.service import ServiceStore


async def on_signals(
    shutdown: trio.Event,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM / SIGINT -> a clean stop.  Started with ``nursery.start`` so the
    handler is in place before the service says it is listening (a SIGTERM in
    that gap used to kill it with a traceback)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            shutdown.set()
            scope.cancel()
            return


async def wait_for_ledger(ledger_dir: Path) -> None:
    """The service may start before the engine has written anything."""
    while not (ledger_dir / "data.mdb").exists():
        await trio.sleep(0.2)


async def open_stores(data_dir: Path, name: str) -> tuple[LedgerStore, ServiceStore]:
    """A companion service's two stores, once the ledger exists: the ledger
    read-only, and the service's own store under ``data_dir / name`` (the
    ledger is closed again if the second cannot be opened)."""
    ledger_dir = data_dir / "ledger"
    await wait_for_ledger(ledger_dir)
    ledger = LedgerStore.open(ledger_dir, readonly=True)
    try:
        return ledger, ServiceStore.open(data_dir / name)
    except BaseException:
        ledger.close()
        raise


# ------------------------------------------------------------------ access
# Every companion serves HTTP to staff (or the public) with the platform's own
# tokens: ``--platform-config`` is the TOML ``pubex serve --config`` read.


def add_access_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--platform-config",
        help="the platform's TOML (its [auth] tokens and Origins; default config/default.toml)",
    )
    p.add_argument(
        "--console-origin",
        action="append",
        default=[],
        help="the console's URL: its pages may call this service from the browser (repeatable)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="allow the well-known development tokens (pubex platform --demo / --sandbox)",
    )


def access_from_args(args: argparse.Namespace, prog: str) -> Access:
    """The companion's :class:`Access`, or :class:`SystemExit` (2) with the reason
    when the config is bad or holds development tokens outside ``--demo``."""
    try:
        settings = load_settings(args.platform_config)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    refused = dev_token_refusal(settings.auth, args.demo, "--platform-config")
    if refused:
        print(f"{prog}: {refused}", file=sys.stderr)
        raise SystemExit(2)
    origins: set[str] = set()
    for url in args.console_origin:
        parts = urlsplit(url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    if settings.net.http_port:
        origins |= console_origins(settings.net.host, settings.net.http_port)
    return access_from_settings(settings.auth, prog.split()[-1], origins=origins)


def read_token(token_file: str | None, env: str) -> str:
    """A client's token: from ``token_file`` (its first line) or the environment
    variable ``env`` -- never from the command line, where ``ps`` shows it."""
    if token_file:
        return Path(token_file).read_text(encoding="utf-8").strip()
    return os.environ.get(env, "").strip()
