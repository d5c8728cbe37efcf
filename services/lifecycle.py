"""What every companion service does the same way at start and stop."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

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
