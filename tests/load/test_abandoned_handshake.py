"""Found by the judicial-day load run: a refused upgrade whose client has already
left crashes ``pubex serve``.

Under load, bidders whose handshake waited longer than their 30 s timeout closed
their sockets; the server then refused the stale request (401) and
``request.reject`` raised ``trio_websocket.ConnectionClosed`` out of
``Gateway.handle`` (gateway/edge/server.py, both ``reject`` calls), through
trio-websocket's handler nursery, and ended the whole server.  Any client
can do it without credentials: send an upgrade that will be refused and
close.  Fixed in gateway/wire/ws.py: ``Request.reject`` suppresses the closed
connection, as ``accept``'s caller already did.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(90)


def test_server_survives_clients_that_leave_before_their_refusal(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--data", str(tmp_path / "data")]
    argv += ["--ws-port", "0", "--http-port", "0", "--sandbox"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        m = None
        for line in proc.stdout:
            m = re.search(r"listening ws=ws://([\d.]+):(\d+)/ws http=(\S+)", line)
            if m:
                break
        assert m is not None, "no listening line"
        host, port, http = m.group(1), int(m.group(2)), m.group(3)
        request = (
            f"GET /ws?key=nobody&ts=1&nonce=abcdefgh12&sig=00 HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        for _ in range(50):  # each is refused 401 after its client has gone
            with socket.create_connection((host, port)) as s:
                s.sendall(request)

        def refused() -> float:
            assert proc.poll() is None, "pubex serve exited"
            with urllib.request.urlopen(http + "metrics", timeout=10) as r:
                text = r.read().decode()
            # summed over the server's processes (an edge's series carry its labels)
            found = re.findall(
                r'^pubex_frames_refused_total\{code="handshake"[^}]*\} (\S+)$', text, re.M
            )
            return sum(float(v) for v in found)

        wait_for(lambda: refused() >= 50, 30, "all 50 upgrades refused")
        assert proc.poll() is None, "pubex serve exited"
        with urllib.request.urlopen(http + "healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
