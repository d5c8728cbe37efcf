"""``pubex serve --edges K`` (K >= 1): the sequencer and K edges, one process
each, started and kept running by this one.

    pubex serve  ── pubex sequencer   (the ledger; the link socket, no public port)
                 ├─ pubex edge #1     (ws + http ports, SO_REUSEPORT)
                 └─ pubex edge #K     (the same two ports)

Order: the public ports are checked free, then *held* here (bound with
``SO_REUSEPORT``, never listening: a port 0 resolves once, and a restarted
edge finds the same port); the sequencer starts and prints ``sequencer
ready``; then the edges, each printing its ``listening`` line; then this
process prints the one ``listening ws=... http=...`` line clients read,
exactly as the in-process server does.

A child that exits on its own is restarted after a back-off (doubling from
``RESTART_S`` to ``RESTART_MAX_S``): an edge's clients reconnect to the other
edges meanwhile, and the edges keep their listeners and relink when the
sequencer is back.  Only the sequencer exiting before it was ever ready (a
ledger that is unsound, a directory in use, a bad config) stops the server,
with the sequencer's exit code.

Stopping (SIGTERM, SIGINT): the edges first (each drains: no new
connections, its commands answered, connections closed 1001), then the
sequencer (its open batch commits).  The children die with this process
(``PR_SET_PDEATHSIG``, SIGKILL): a SIGKILLed server is a crashed server,
every part of it, and nothing of it is left holding the ports or the ledger.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from config.settings import Settings
from gateway.entry.startup import check_ports_free
from gateway.wire.ws import reuse_port_socket

RESTART_S = 0.2
RESTART_MAX_S = 5.0
STOP_GRACE_S = 20.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def default_edges() -> int:
    """One edge per core beyond the first (the sequencer's), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


class Child:
    """A started child: its process and its stdout as a trio stream."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: trio.lowlevel.FdStream) -> None:
        self.popen = popen
        self.stdout = stdout

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        while (code := self.popen.poll()) is None:
            await trio.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        self.popen.kill()


class Role:
    """One child: its argv, its process, what it printed when ready."""

    def __init__(self, name: str, argv: list[str], ready_prefix: str) -> None:
        self.name = name
        self.argv = argv
        self.ready_prefix = ready_prefix
        self.process: Child | None = None
        self.ready_line = ""
        self.restarts = 0
        self.stopping = False


class Split:
    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        *,
        edges: int,
        ws_port: int,
        http_port: int,
        common: list[str],
        sequencer_args: list[str],
        out: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.edges = edges
        self.ws_port = ws_port
        self.http_port = http_port
        self.common = common
        self.sequencer_args = sequencer_args
        self.out = out
        self.held: list[socket.socket] = []
        self.roles: list[Role] = []
        self.stopping = False

    def _cli(self, *words: str) -> list[str]:
        return [sys.executable, "-m", "gateway.entry.cli", *words]

    def hold_ports(self) -> tuple[int, int]:
        host = self.settings.net.host
        check_ports_free(host, [self.ws_port, self.http_port])
        ws_sock = reuse_port_socket(host, self.ws_port)
        http_sock = reuse_port_socket(host, self.http_port)
        self.held = [ws_sock, http_sock]
        return ws_sock.getsockname()[1], http_sock.getsockname()[1]

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> int:
        ws_port, http_port = self.hold_ports()
        host = self.settings.net.host
        data = str(self.data_dir)
        sequencer = Role(
            "sequencer",
            self._cli("sequencer", "--data", data, *self.common, *self.sequencer_args),
            "sequencer ready",
        )
        sequencer.argv += ["--prog", "pubex serve"]  # its refusals are serve's, to the operator
        sequencer.argv += ["--demo-ws", f"ws://{host}:{ws_port}/ws"]
        sequencer.argv += ["--demo-http", f"http://{host}:{http_port}/"]
        edge_roles = [
            Role(
                f"edge-{i}",
                self._cli(
                    "edge",
                    "--data",
                    data,
                    "--ws-port",
                    str(ws_port),
                    "--http-port",
                    str(http_port),
                    "--name",
                    f"edge-{i}",
                    *self.common,
                ),
                "listening ",
            )
            for i in range(1, self.edges + 1)
        ]
        self.roles = [sequencer, *edge_roles]
        # Installed before any child starts: a SIGTERM right after the
        # listening line (or before it) stops everything in order.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                stop = trio.Event()

                async def on_signal() -> None:
                    async for _ in signals:
                        stop.set()
                        return

                nursery.start_soon(on_signal)
                code = await self._start_all(nursery, sequencer, edge_roles, stop)
                if code is None:
                    self.out(
                        f"listening ws=ws://{host}:{ws_port}/ws http=http://{host}:{http_port}/"
                    )
                    task_status.started((ws_port, http_port))
                    await stop.wait()
                await self._stop()
                nursery.cancel_scope.cancel()
        return code or 0

    async def _start_all(
        self, nursery: trio.Nursery, sequencer: Role, edges: list[Role], stop: trio.Event
    ) -> int | None:
        """The sequencer, then each edge, each once ready; an exit code when one
        could not get ready (None when all are, or a signal came meanwhile)."""
        for role, fatal in ((sequencer, True), *((e, False) for e in edges)):
            code = None
            async with trio.open_nursery() as waiting:

                async def start(role: Role = role, fatal: bool = fatal) -> None:
                    nonlocal code
                    code = await nursery.start(self._keep, role, fatal)
                    waiting.cancel_scope.cancel()

                async def interrupted() -> None:
                    await stop.wait()
                    waiting.cancel_scope.cancel()

                waiting.start_soon(start)
                waiting.start_soon(interrupted)
            if stop.is_set():
                return None
            if code is not None:
                return int(code)
        return None

    async def _start(self, role: Role) -> Child:
        # Popen from this (the main) thread: PR_SET_PDEATHSIG fires when the
        # thread that forked exits, and trio's open_process forks in a worker
        # thread that exits when idle.
        popen = subprocess.Popen(role.argv, stdout=subprocess.PIPE, preexec_fn=_die_with_parent)
        assert popen.stdout is not None
        stdout = trio.lowlevel.FdStream(os.dup(popen.stdout.fileno()))
        popen.stdout.close()
        role.process = Child(popen, stdout)
        return role.process

    async def _keep(self, role: Role, fatal_before_ready: bool, task_status: Any) -> None:
        """Run ``role`` forever; ``started(None)`` once it is ready the first
        time, ``started(code)`` when it exits before (and ``fatal_before_ready``
        or it never got ready at all)."""
        backoff = RESTART_S
        ever_ready = False
        while True:
            process = await self._start(role)
            ready = await self._pump(role, process, task_status if not ever_ready else None)
            code = await process.wait()
            if ready and not ever_ready:
                ever_ready = True
            if not ever_ready and (fatal_before_ready or role.restarts >= 3):
                task_status.started(code)
                return
            if self.stopping or role.stopping:
                return
            role.restarts += 1
            print(
                f"pubex serve: {role.name} exited ({code}); restarting in {backoff:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S) if not ready else RESTART_S

    async def _pump(self, role: Role, process: Child, task_status: Any) -> bool:
        """Forward the child's stdout; True once it printed its ready line
        (then ``task_status.started(None)`` the first time)."""
        ready = False
        buf = b""
        async with process.stdout:
            async for chunk in process.stdout:
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    if not ready and line.startswith(role.ready_prefix):
                        ready = True
                        role.ready_line = line
                        if task_status is not None:
                            task_status.started(None)
                            task_status = None
                        continue  # the children's ready lines are this process's business
                    self.out(line)
        return ready

    async def _stop(self) -> None:
        """Edges first (they drain), then the sequencer; SIGKILL past the grace."""
        self.stopping = True
        edges = [r for r in self.roles if r.name != "sequencer"]
        sequencer = [r for r in self.roles if r.name == "sequencer"]
        for group in (edges, sequencer):
            for role in group:
                role.stopping = True
                if role.process is not None and role.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        role.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_GRACE_S):
                for role in group:
                    if role.process is not None:
                        await role.process.wait()
            for role in group:
                if role.process is not None and role.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        role.process.kill()
        for sock in self.held:
            sock.close()
