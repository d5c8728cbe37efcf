"""The bidder's terminal end to end: a real `pubex serve`, keygen + admin as
subprocesses, the terminal in a detached tmux session driven by send-keys and
read with capture-pane.

Covers: a bid from a previous session whose ack was lost is resent with the
same client_seq and answered with the original outcome (no second bid); a bid
by keystroke is acknowledged and shows LEADING; a refusal is shown in words;
the server is stopped with a bid in flight and restarted on the same ports:
the terminal reconnects and the ledger holds that bid exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest

from gateway.clients.terminal.keys import SeqStore, default_paths, load_key
from gateway.wire import protocol as p
from tests.polling import wait_for
from tests.processes import process_tree, signal_tree

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (the Makefile's SYSDEPS has it)"
)

# The command line from this checkout (not whatever an installed `pubex` script points at).
ROOT = Path(__file__).resolve().parents[2]
PUBEX = [sys.executable, "-m", "gateway.entry.cli"]
TOKEN = "dev-staff-token"
LOT = "T1"
START, INC = 100_000_000, 1_000_000  # ¥1,000,000.00 and ¥10,000.00
# ncurses prefers $COLUMNS / $LINES over the pane's size, and pytest workers may set them.
ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
ENV |= {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PUBEX_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    # Chosen up front so a restarted server comes back on the same URL.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data: Path, ws_port: int, http_port: int, log: Path) -> None:
        self.data, self.ws_port, self.http_port, self.log = data, ws_port, http_port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws = f"ws://127.0.0.1:{ws_port}/ws"
        self.http = f"http://127.0.0.1:{http_port}"

    def start(self) -> None:
        self.log.write_text("")
        ports = ["--ws-port", str(self.ws_port), "--http-port", str(self.http_port)]
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*PUBEX, "serve", "--data", str(self.data), "--sandbox", *ports],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        wait_for(
            lambda: "listening" in self.log.read_text(), 30, "the server", why=self.log.read_text
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def bids(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.http}/api/lots/{LOT}/bids", timeout=10) as r:
            return list(json.loads(r.read()))


class Tmux:
    def __init__(self, name: str) -> None:
        # A private tmux server: never touches the developer's sessions.
        self.sock, self.name = f"pubex-test-{os.getpid()}-{name}", name

    def cmd(self, *args: str) -> str:
        full = ["tmux", "-L", self.sock, "-u", *args]
        return subprocess.run(full, env=ENV, capture_output=True, text=True, check=True).stdout

    def start(self, command: str) -> None:
        # The trailing sleep keeps the pane (and any traceback) readable if it exits.
        shell = f"{command}; echo TERMINAL EXITED $?; sleep 3600"
        self.cmd("new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", shell)

    def screen(self) -> str:
        return self.cmd("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.cmd("send-keys", "-t", self.name, *keys)

    def wait(self, what: str, check: Callable[[str], bool], timeout: float = 30) -> str:
        def ready() -> str:
            screen = self.screen()
            return screen if check(screen) else ""

        return str(wait_for(ready, timeout, what, poll_s=0.2, why=self.screen))

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


def pubex(*args: str) -> str:
    done = subprocess.run([*PUBEX, *args], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0, f"pubex {args[0]} failed: {done.stdout}{done.stderr}"
    return done.stdout


def setup_bidder(srv: Server, key: Path) -> None:
    """keygen -> register the key -> an open English lot -> register + deposit."""
    pubex("keygen", "--out", str(key), "--key-id", "tmux-key")
    admin = ["admin", "--url", srv.ws]  # the token: $PUBEX_TOKEN (ENV)
    pubex(*admin, "register-key", "--bidder", "tmux-bidder", "--pub", f"{key}.pub")
    pubex(
        *admin,
        "create-lot",
        "--lot",
        LOT,
        "--mechanism",
        "english",
        "--title",
        "tmux lot",
        "--start-price-fen",
        str(START),
        "--increment-fen",
        str(INC),
        "--start-in-s",
        "0",
        "--duration-s",
        "1800",
    )
    pubex(*admin, "publish", "--lot", LOT)
    pubex(*admin, "register-bidder", "--lot", LOT, "--bidder", "tmux-bidder")
    pubex(*admin, "confirm-deposit", "--lot", LOT, "--bidder", "tmux-bidder", "--amount-fen", "0")


def lost_ack_bid(srv: Server, key_path: Path) -> int:
    """A previous session placed a bid and died before its ack: the bid is in
    the ledger and still pending in the state file."""
    import websocket  # websocket-client, a test dependency

    key, key_id = load_key(key_path)
    state = SeqStore(default_paths(key_path)[0])
    cs = state.allocate()
    state.pending[cs] = {"client_seq": cs, "lot": LOT, "amount_fen": START}
    state.save()
    auth = p.auth_params(key, key_id, int(time.time() * 1000), secrets.token_hex(8))
    query = urlencode(auth)
    conn = websocket.create_connection(f"{srv.ws}?{query}", timeout=10, suppress_origin=True)
    try:
        conn.recv()  # hello
        conn.send(p.bid_frame(key, key_id, LOT, START, cs))
        while True:
            frame = p.decode_server(conn.recv())
            if isinstance(frame, p.Ack | p.Error) and frame.client_seq == cs:
                assert isinstance(frame, p.Ack), frame
                return cs
    finally:
        conn.close()


def test_terminal_in_tmux(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", free_port(), free_port(), tmp_path / "serve.log")
    tmux = Tmux("term")
    key = tmp_path / "bidder.key"
    try:
        srv.start()
        setup_bidder(srv, key)
        cs = lost_ack_bid(srv, key)
        assert len(srv.bids()) == 1

        # The terminal resends the pending bid with its client_seq: the original ack.
        err = tmp_path / "terminal.err"
        tmux.start(f"{shlex.join(PUBEX)} terminal --key {key} --url {srv.ws} --lot {LOT} 2>{err}")
        tmux.wait("the retried bid's ack", lambda s: "answer to a retry" in s)
        screen = tmux.wait("LEADING after the retry", lambda s: "LEADING" in s)
        assert "pending: none" in screen
        assert len(srv.bids()) == 1, "a retry must never place a second bid"
        receipts = default_paths(key)[1].read_text().splitlines()
        assert json.loads(receipts[-1])["client_seq"] == cs

        # (a) a bid by keystroke: one increment above the price, acknowledged, LEADING.
        tmux.keys("+")
        tmux.wait("the keystroke bid's ack", lambda s: "¥1,010,000.00 acknowledged" in s)
        tmux.wait("LEADING", lambda s: "领先 LEADING" in s and "¥1,020,000.00" in s)
        assert [b["amount_fen"] for b in srv.bids()] == [START, START + INC]

        # (b) a typed amount below the increment: refused, in words.
        tmux.keys("b 1000", "Enter")
        screen = tmux.wait("the refusal", lambda s: "refused: bid_below_increment" in s)
        assert "出价低于加价幅度 / below the increment" in screen
        assert len(srv.bids()) == 2

        # (c) a bid in flight while the server stops: resent after the restart, once.
        assert srv.proc is not None
        stopped = process_tree(srv.proc.pid)  # serve, its sequencer and edges
        signal_tree(srv.proc.pid, signal.SIGSTOP)
        tmux.keys("+")
        tmux.wait("the in-flight bid", lambda s: "pending: T1 ¥1,020,000.00" in s)
        srv.proc.send_signal(signal.SIGTERM)
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        srv.stop()
        tmux.wait("the drop", lambda s: "disconnected" in s, timeout=20)
        srv.start()
        screen = tmux.wait(
            "reconnect and the in-flight ack",
            lambda s: "connected ws://" in s and "¥1,020,000.00 acknowledged" in s,
            timeout=45,
        )
        tmux.wait("nothing pending", lambda s: "pending: none" in s and "领先 LEADING" in s)
        assert [b["amount_fen"] for b in srv.bids()] == [START, START + INC, START + 2 * INC]
        state = json.loads(default_paths(key)[0].read_text())
        assert state["pending"] == [] and state["last_client_seq"] > cs
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- server log ---\n{srv.log.read_text()}") from None
    finally:
        tmux.kill()
        if srv.proc is not None:
            signal_tree(srv.proc.pid, signal.SIGCONT)
        srv.stop()
