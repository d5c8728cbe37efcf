"""``pubex platform``: the engine and its companion services, each in its own process.

``make run`` calls this.  It starts ``pubex serve`` with the arguments it was given (the
runtime, the gateway, the console; ``--demo`` for the demo catalogue) and, once serve has
printed its ``listening`` line (the ledger exists), the companions on the same data
directory, each following ``DATA/ledger`` read-only with its own store beside it:

* ``pubex supervise`` -- live monitoring, warnings, complaints;
* ``pubex disclose`` -- public notices and the published checkpoints;
* ``pubex registry`` -- subjects, deposits, experts; it writes through the gateway as a
  service (``--ws`` = serve's URL; the config's token for ``registry`` in
  ``auth.service_tokens`` in its environment, ``$PUBEX_SERVICE_TOKEN``, never on its
  command line; read-only when there is none).

Each companion gets the platform's config (``--platform-config``: the tokens its HTTP
routes accept), the console's URL (``--console-origin``: the browser Origin its writes and
WebSocket accept) and, with ``--demo`` or ``--sandbox``, ``--demo`` (development tokens
allowed; outside them every server refuses to start with one).

Their HTTP ports come from the config's ``[services]`` table (0 = any free port).  The
platform forwards serve's output unchanged (``listening ws=... http=...``, ``console:
...``) and prints ``service NAME http=URL`` for each companion once it is caught up and
bound.

Stopping: SIGTERM or SIGINT (Ctrl-C) stops the companions first, then serve (which
drains its open batch), each with SIGTERM and a grace period before SIGKILL; every child
is waited for, so none outlives the platform.  The children run in their own sessions
(a terminal's Ctrl-C reaches only the platform, which stops them in order) and are
started with ``PR_SET_PDEATHSIG`` on Linux, so even a SIGKILLed platform takes them
down.  If any child exits on its own, the platform stops the others and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from config.settings import ConfigError, Settings, load_settings

SERVICE_NAMES = ("supervision", "disclosure", "registry")
_CLI = {"supervision": "supervise", "disclosure": "disclose", "registry": "registry"}
SERVICE_GRACE_S = 10.0
SERVE_GRACE_S = 20.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the platform dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve_argv(args: argparse.Namespace, data: str) -> list[str]:
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--data", data]
    if args.config:
        argv += ["--config", args.config]
    for flag, value in (("--ws-port", args.ws_port), ("--http-port", args.http_port)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--accelerate", str(args.accelerate), "--seed", str(args.seed)]
    argv += [f for f, on in (("--sandbox", args.sandbox), ("--demo", args.demo)) if on]
    argv += ["--no-sim"] if args.no_sim else []
    argv += ["--verify-all"] if getattr(args, "verify_all", False) else []
    return argv


def service_argv(
    name: str,
    settings: Settings,
    data: str,
    ws_url: str,
    *,
    config: str | None = None,
    console_url: str = "",
    demo: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """A companion's argv and the environment it gets beyond the platform's
    (the registry's service token: never on a command line)."""
    port = getattr(settings.services, f"{name}_http_port")
    argv = [sys.executable, "-m", "gateway.cli", _CLI[name], "--data", data]
    argv += ["--http-port", str(port), "--host", settings.net.host]
    argv += ["--platform-config", config] if config else []
    argv += ["--console-origin", console_url] if console_url else []
    argv += ["--demo"] if demo else []
    env: dict[str, str] = {}
    if name == "registry":
        token = next((t for t, who in settings.auth.service_tokens.items() if who == name), "")
        if token:
            argv += ["--ws", ws_url]
            env["PUBEX_SERVICE_TOKEN"] = token
    return argv, env


class Child:
    """One child process; a thread hands its stdout lines to the platform's queue."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        events: queue.Queue[tuple[str, Any]],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env} if env else None,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.url = ""
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.proc.stdout, events), daemon=True
        )
        self._reader.start()

    def _read(self, stream: IO[str], events: queue.Queue[tuple[str, Any]]) -> None:
        for line in stream:
            events.put((self.name, line.rstrip("\n")))
        events.put((self.name, None))  # end of output: the child exited (or is exiting)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait(self, grace_s: float) -> int:
        try:
            return self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            print(f"pubex platform: {self.name} ignored SIGTERM; killing it", file=sys.stderr)
            self.proc.kill()
            return self.proc.wait()


def _stop_all(children: dict[str, Child], grace: Callable[[str], float]) -> None:
    """Companions first (all at once), then serve; each waited for."""
    services = [c for n, c in children.items() if n != "serve"]
    for c in services:
        c.terminate()
    for c in services:
        c.wait(grace(c.name))
    if "serve" in children:
        children["serve"].terminate()
        children["serve"].wait(grace("serve"))


def run_platform(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"pubex platform: {e}", file=sys.stderr)
        return 2
    data = str(args.data or settings.data_dir)
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        signalled.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    children: dict[str, Child] = {}
    rc = 0
    try:
        children["serve"] = Child("serve", serve_argv(args, data), events)
        while not stop.is_set():
            try:
                name, line = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                code = children[name].proc.wait()
                print(f"pubex platform: {name} exited with {code}; stopping", file=sys.stderr)
                rc = 1 if name != "serve" or code == 0 else code
                break
            if name == "serve":
                print(line, flush=True)
                if line.startswith("listening ws=") and len(children) == 1:
                    ws_url = line.split("ws=", 1)[1].split()[0]
                    console_url = line.split("http=", 1)[1].split()[0] if "http=" in line else ""
                    for svc in SERVICE_NAMES:
                        argv, env = service_argv(
                            svc,
                            settings,
                            data,
                            ws_url,
                            config=args.config,
                            console_url=console_url,
                            demo=args.demo or args.sandbox,
                        )
                        children[svc] = Child(svc, argv, events, env)
            elif line.startswith("listening http=") and not children[name].url:
                children[name].url = line.split("http=", 1)[1].split()[0]
                print(f"service {name} http={children[name].url}", flush=True)
            else:
                print(f"[{name}] {line}", flush=True)
    finally:
        # Ignore further Ctrl-C while stopping: the children get their grace period.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        t0 = time.monotonic()
        _stop_all(children, lambda n: SERVE_GRACE_S if n == "serve" else SERVICE_GRACE_S)
        if signalled:
            print(f"pubex platform: stopped in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return rc
