"""What every companion service does the same way at start and stop."""

from __future__ import annotations

import signal
from pathlib import Path

import trio


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
