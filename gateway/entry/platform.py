"""``pubex platform``: the engine and its companion services, each in its own process,
kept running.

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
bound, and ``service platform http=URL`` for its own HTTP side (127.0.0.1,
``[services] platform_http_port``): ``GET /healthz`` (public) shows each child's state
(``running`` / ``restarting`` / ``held``), restarts, last exit code and pid; ``/metrics``
(loopback clients or the metrics token, as everywhere) the same as Prometheus series
``pubex_platform_child_*``.  That side is the same Starlette + hypercorn + ``Access``
stack every process serves, run by trio in one thread of its own: the platform proper
stays a plain blocking loop over child processes and pipes.

Supervision, not surrender
--------------------------
A child that exits on its own -- a companion or serve itself -- is logged and restarted
after a back-off (``restart_backoff_ms``, doubling up to ``restart_backoff_max_s``; back
to the start once the child had run ``restart_window_s``).  One that exits
``restart_max_tries`` times within ``restart_window_s`` is *held*: not restarted again
(until the platform is), reported on stderr, in ``/healthz`` and in the metrics.  Trading
never waits for a companion: serve does not depend on them (they follow the ledger; the
registry's writes queue in its own outbox until it is back).  If serve is held, the
companions stay up (their reads still answer) and the platform reports it.

A restarted child keeps the ports its first run bound (``0`` resolves once): bidders,
the console and the registry (whose ``--ws`` is serve's URL and which reconnects by
itself) find a restarted serve at the same URL.  Only serve exiting before it ever
listened (a bad config, a data directory in use) stops the platform, with serve's exit
code: restarting cannot fix that.

Stopping: SIGTERM or SIGINT (Ctrl-C) stops the companions first, then serve (which
drains its open batch), each with SIGTERM and a grace period before SIGKILL; every child
is waited for, so none outlives the platform.  The children run in their own sessions
(a terminal's Ctrl-C reaches only the platform, which stops them in order) and are
started with ``PR_SET_PDEATHSIG`` on Linux, so even a SIGKILLed platform takes them
down.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from config.settings import ConfigError, Settings, load_settings

SERVICE_NAMES = ("supervision", "disclosure", "registry")
_CLI = {"supervision": "supervise", "disclosure": "disclose", "registry": "registry"}
SERVICE_GRACE_S = 10.0
SERVE_GRACE_S = 20.0
_PR_SET_PDEATHSIG = 1
STATES = ("starting", "running", "restarting", "held", "stopped")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the platform dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve_argv(
    args: argparse.Namespace, data: str, ports: tuple[int, int] | None = None
) -> list[str]:
    """``ports`` (ws, http): those a first run bound, for a restart to keep its URLs."""
    argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--data", data]
    if args.config:
        argv += ["--config", args.config]
    ws_port, http_port = ports if ports is not None else (args.ws_port, args.http_port)
    for flag, value in (("--ws-port", ws_port), ("--http-port", http_port)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--accelerate", str(args.accelerate), "--seed", str(args.seed)]
    argv += [f for f, on in (("--sandbox", args.sandbox), ("--demo", args.demo)) if on]
    argv += ["--no-sim"] if args.no_sim else []
    argv += ["--verify-all"] if getattr(args, "verify_all", False) else []
    edges = getattr(args, "edges", None)
    argv += ["--edges", str(edges)] if edges is not None else []
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
    port: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """A companion's argv and the environment it gets beyond the platform's
    (the registry's service token: never on a command line).  ``port``: the one
    its first run bound (a restart keeps it), else the config's."""
    if port is None:
        port = getattr(settings.services, f"{name}_http_port")
    argv = [sys.executable, "-m", "gateway.entry.cli", _CLI[name], "--data", data]
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


def _port(url: str) -> int:
    return int(url.rstrip("/").split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


class Child:
    """One child process; a thread hands its stdout lines to the platform's queue,
    tagged with the run's generation (a late line of an earlier run is told apart)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        events: queue.Queue[tuple[str, int, Any]],
        env: dict[str, str] | None = None,
        generation: int = 0,
    ) -> None:
        self.name = name
        self.generation = generation
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

    def _read(self, stream: IO[str], events: queue.Queue[tuple[str, int, Any]]) -> None:
        for line in stream:
            events.put((self.name, self.generation, line.rstrip("\n")))
        events.put((self.name, self.generation, None))  # end of output: it exited

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


class Slot:
    """One supervised child across its runs: state, restarts, back-off."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "starting"
        self.child: Child | None = None
        self.generation = 0
        self.restarts = 0
        self.last_exit: int | None = None
        self.exits: collections.deque[float] = collections.deque()  # within the window
        self.failures = 0  # consecutive quick exits: the back-off's exponent
        self.started_at = 0.0
        self.next_start = 0.0
        self.url = ""
        self.port: int | None = None  # the port its first run bound (kept on restarts)

    def view(self, now: float) -> dict[str, Any]:
        child = self.child
        return {
            "state": self.state,
            "pid": child.proc.pid if child is not None and self.state == "running" else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "up_s": round(now - self.started_at, 1) if self.state == "running" else 0,
            "restart_in_s": (
                round(max(0.0, self.next_start - now), 2) if self.state == "restarting" else None
            ),
            "url": self.url,
        }


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


class Platform:
    """The supervisor: starts, watches and restarts serve and the companions."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.data = str(args.data or settings.data_dir)
        self.events: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self.slots: dict[str, Slot] = {"serve": Slot("serve")}
        self.lock = threading.Lock()  # the HTTP thread reads what the loop changes
        self.ws_url = ""
        self.console_url = ""
        self.serve_ports: tuple[int, int] | None = None
        self.fatal: int | None = None  # serve failed before it ever listened

    # -- starting -------------------------------------------------------------------

    def _argv(self, name: str) -> tuple[list[str], dict[str, str]]:
        if name == "serve":
            return serve_argv(self.args, self.data, self.serve_ports), {}
        return service_argv(
            name,
            self.settings,
            self.data,
            self.ws_url,
            config=self.args.config,
            console_url=self.console_url,
            demo=self.args.demo or self.args.sandbox,
            port=self.slots[name].port,
        )

    def start(self, name: str) -> None:
        slot = self.slots[name]
        argv, env = self._argv(name)
        with self.lock:
            slot.generation += 1
            slot.child = Child(name, argv, self.events, env or None, slot.generation)
            slot.state = "starting"
            slot.started_at = time.monotonic()

    def start_due(self) -> None:
        now = time.monotonic()
        for name, slot in self.slots.items():
            if slot.state == "restarting" and slot.next_start <= now:
                slot.restarts += 1
                print(
                    f"pubex platform: restarting {name} (restart {slot.restarts})", file=sys.stderr
                )
                self.start(name)

    # -- a line or an exit ------------------------------------------------------------

    def on_line(self, name: str, line: str) -> None:
        slot = self.slots[name]
        if name == "serve":
            print(line, flush=True)
            if line.startswith("listening ws="):
                with self.lock:
                    slot.state = "running"
                    slot.url = line.split("http=", 1)[1].split()[0] if "http=" in line else ""
                if not self.ws_url:  # the first run: its ports stay; the companions start
                    self.ws_url = line.split("ws=", 1)[1].split()[0]
                    self.console_url = slot.url
                    if self.console_url:
                        self.serve_ports = (_port(self.ws_url), _port(self.console_url))
                    for svc in SERVICE_NAMES:
                        self.slots[svc] = Slot(svc)
                        self.start(svc)
        elif line.startswith("listening http="):
            url = line.split("http=", 1)[1].split()[0]
            with self.lock:
                slot.state = "running"
                first = not slot.url
                slot.url = url
                slot.port = _port(url)
            if first:
                print(f"service {name} http={url}", flush=True)
            else:
                print(f"pubex platform: {name} is back at {url}", file=sys.stderr, flush=True)
        else:
            print(f"[{name}] {line}", flush=True)

    def on_exit(self, name: str) -> None:
        slot = self.slots[name]
        assert slot.child is not None
        code = slot.child.proc.wait()
        if name == "serve" and not self.ws_url:
            print(f"pubex platform: serve exited with {code} before listening", file=sys.stderr)
            self.fatal = code or 1
            with self.lock:
                slot.state, slot.last_exit = "stopped", code
            return
        cfg = self.settings.services
        now = time.monotonic()
        with self.lock:
            slot.last_exit = code
            if now - slot.started_at >= cfg.restart_window_s:
                slot.failures = 0  # it ran stably: the back-off starts over
            slot.exits.append(now)
            while slot.exits and now - slot.exits[0] > cfg.restart_window_s:
                slot.exits.popleft()
            if len(slot.exits) >= cfg.restart_max_tries:
                slot.state = "held"
            else:
                delay = min(
                    cfg.restart_backoff_ms / 1000 * 2**slot.failures, cfg.restart_backoff_max_s
                )
                slot.failures += 1
                slot.state, slot.next_start = "restarting", now + delay
        if slot.state == "held":
            also = "; the companions stay up" if name == "serve" else "; trading goes on"
            print(
                f"pubex platform: {name} held: exited {len(slot.exits)} times within "
                f"{cfg.restart_window_s} s (last exit {code}); not restarted{also}",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(
                f"pubex platform: {name} exited with {code}; restarting in "
                f"{slot.next_start - now:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def handle(self, name: str, generation: int, line: str | None) -> None:
        slot = self.slots.get(name)
        if slot is None or generation != slot.generation:
            return  # a line from an earlier run's pipe
        if line is None:
            self.on_exit(name)
        else:
            self.on_line(name, line)

    # -- reporting ------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        with self.lock:
            return {name: slot.view(now) for name, slot in self.slots.items()}

    def health(self) -> dict[str, Any]:
        children = self.snapshot()
        return {
            "ok": all(c["state"] == "running" for c in children.values()),
            "trading": children["serve"]["state"] == "running",
            "held": sorted(n for n, c in children.items() if c["state"] == "held"),
            "children": children,
        }

    def collect(self) -> Iterator[Any]:
        """Prometheus families (a custom collector: read at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        children = self.snapshot()
        up = GaugeMetricFamily(
            "pubex_platform_child_up", "1 while the child runs", labels=["child"]
        )
        state = GaugeMetricFamily(
            "pubex_platform_child_state",
            "1 for the child's current state (running, restarting, held, ...)",
            labels=["child", "state"],
        )
        restarts = CounterMetricFamily(
            "pubex_platform_child_restarts", "Restarts of the child", labels=["child"]
        )
        last = GaugeMetricFamily(
            "pubex_platform_child_last_exit_code",
            "The child's last exit code (-N: killed by signal N; absent: never exited)",
            labels=["child"],
        )
        held = GaugeMetricFamily(
            "pubex_platform_child_held",
            "1 when the child is held (not restarted)",
            labels=["child"],
        )
        for name, c in children.items():
            up.add_metric([name], 1.0 if c["state"] == "running" else 0.0)
            held.add_metric([name], 1.0 if c["state"] == "held" else 0.0)
            restarts.add_metric([name], c["restarts"])
            for s in STATES:
                state.add_metric([name, s], 1.0 if c["state"] == s else 0.0)
            if c["last_exit"] is not None:
                last.add_metric([name], c["last_exit"])
        yield from (up, state, restarts, last, held)

    # -- stopping ---------------------------------------------------------------------

    def stop_all(self) -> None:
        with self.lock:
            children = {n: s.child for n, s in self.slots.items() if s.child is not None}
            for s in self.slots.values():
                s.state = "stopped" if s.state != "held" else s.state
        _stop_all(children, lambda n: SERVE_GRACE_S if n == "serve" else SERVICE_GRACE_S)


def build_app(platform: Platform | None, settings: Settings, registry: Any) -> Any:
    """The platform's Starlette app: ``/healthz`` public, ``/metrics`` as everywhere
    (loopback clients or the metrics token), both through :class:`gateway.wire.access.Access`."""
    import msgspec
    from prometheus_client import generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from gateway.wire.access import METRICS_READERS, PUBLIC, Rule, access_from_settings

    if platform is not None:
        registry.register(platform)
    access = access_from_settings(settings.auth, "platform", registry=registry)

    async def healthz(request: Request) -> Response:
        body = msgspec.json.encode(platform.health() if platform is not None else {})
        return Response(body, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    rules = [
        Rule("/healthz", healthz, {"GET": PUBLIC}),
        Rule("/metrics", metrics, {"GET": METRICS_READERS}),
    ]
    return Starlette(routes=access.routes(rules))


class PlatformHTTP:
    """The platform's /healthz and /metrics: Starlette + hypercorn + Access, as every
    process serves them, run by trio in a thread of its own."""

    def __init__(self, platform: Platform, settings: Settings) -> None:
        self.platform = platform
        self.settings = settings
        self._token: Any = None
        self._shutdown: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        ready: queue.Queue[str | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        got = ready.get(timeout=60)
        if isinstance(got, BaseException):
            raise got
        return got

    def _run(self, ready: queue.Queue[str | BaseException]) -> None:
        import trio

        try:
            trio.run(self._main, ready)
        except BaseException as e:  # reported to start() if it happened before binding
            ready.put(e)

    async def _main(self, ready: queue.Queue[str | BaseException]) -> None:
        import trio
        from prometheus_client import CollectorRegistry

        from gateway.wire.http import serve_http

        app = build_app(self.platform, self.settings, CollectorRegistry())
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = trio.Event()
        port = self.settings.services.platform_http_port
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve_http, app, "127.0.0.1", port, self._shutdown)
            ready.put(f"http://127.0.0.1:{bound}/")

    def stop(self) -> None:
        if self._token is not None and self._shutdown is not None:
            import trio

            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(5)


def run_platform(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"pubex platform: {e}", file=sys.stderr)
        return 2
    platform = Platform(args, settings)
    http = PlatformHTTP(platform, settings)
    try:
        url = http.start()
    except OSError as e:
        print(f"pubex platform: cannot serve its HTTP side: {e}", file=sys.stderr)
        return 2
    print(f"service platform http={url}", flush=True)
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        signalled.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        platform.start("serve")
        while not stop.is_set() and platform.fatal is None:
            try:
                name, generation, line = platform.events.get(timeout=0.1)
            except queue.Empty:
                platform.start_due()
                continue
            platform.handle(name, generation, line)
            platform.start_due()
    finally:
        # Ignore further Ctrl-C while stopping: the children get their grace period.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        t0 = time.monotonic()
        platform.stop_all()
        http.stop()
        if signalled:
            print(f"pubex platform: stopped in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return platform.fatal or 0
