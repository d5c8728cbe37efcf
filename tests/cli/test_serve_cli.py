"""pubex serve's sandbox rule, the listening line, and pubex schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.messages import RuntimeStartedEvent, decode_events
from ledger.record import decode_body
from ledger.store import LedgerStore

CLI = [sys.executable, "-m", "gateway.entry.cli"]


def _serve(data, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "serve", "--data", str(data), "--ws-port", "0", "--http-port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_listening(proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.startswith("listening "):
            return line
    raise AssertionError("no listening line")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_accelerate_refused_unless_sandbox_and_recorded(tmp_path):
    plain, sandbox = tmp_path / "plain", tmp_path / "sandbox"
    refused = subprocess.run(
        [
            *CLI,
            "serve",
            "--data",
            str(plain),
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--accelerate",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "sandbox" in refused.stderr

    proc = _serve(sandbox, "--sandbox", "--accelerate", "10")
    line = _wait_listening(proc)
    assert line.split()[1].startswith("ws=ws://127.0.0.1:") and " http=http://" in line
    assert _stop(proc) == 0

    proc = _serve(sandbox, "--accelerate", "5")  # a sandbox stays a sandbox
    _wait_listening(proc)
    assert _stop(proc) == 0
    with LedgerStore.open(sandbox / "ledger", readonly=True) as store:
        starts = [
            ev
            for _s, _p, _h, raw in store.iter_entries()
            for ev in decode_events(decode_body(raw).events)
            if isinstance(ev, RuntimeStartedEvent)
        ]
    assert [(e.accelerate, e.sandbox) for e in starts] == [(10, True), (5, True)]

    refused = subprocess.run(  # a plain directory cannot be turned into a sandbox later
        [
            *CLI,
            "serve",
            "--data",
            str(sandbox / ".." / "plain2"),
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--accelerate",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2


def test_schema_is_json_schema_of_both_directions():
    out = subprocess.run([*CLI, "schema"], capture_output=True, text=True, timeout=60)
    schema = json.loads(out.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    defs = schema["$defs"]
    for name in ("PlaceBidFrame", "BidPayload", "Ack", "Error", "LotSnapshot", "Hello"):
        assert name in defs, name
    assert set(defs["BidPayload"]["required"]) >= {"domain", "lot", "key", "amount_fen"}


@pytest.mark.parametrize(
    ("scenario", "expected_refusal"),
    [
        ("dutch", "stale_tick"),
        ("tender", "reveal_mismatch"),
        ("vbp", "not_revival_candidate"),
        ("emall-reverse", "quote_not_below_best"),
    ],
)
def test_simulate_mode_scenarios_are_deterministic_and_verify(tmp_path, scenario, expected_refusal):
    hashes = []
    for name in ("a", "b"):
        out = subprocess.run(
            [
                *CLI,
                "simulate",
                "--scenario",
                scenario,
                "--seed",
                "3",
                "--ledger",
                str(tmp_path / name),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        summary = json.loads(out.stdout)
        assert summary["lots"].get("sold", 0) > 0
        assert expected_refusal in summary["refused_by_code"]
        hashes.append(summary["state_hash"])
    assert hashes[0] == hashes[1]
    verify = subprocess.run(
        [*CLI, "ledger", "verify", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0 and hashes[0] in verify.stdout
    replay = subprocess.run(  # decodes every ledgered event (a type missing from the union fails)
        [*CLI, "replay", str(tmp_path / "a")], capture_output=True, text=True, timeout=120
    )
    assert replay.returncode == 0, replay.stderr


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _processes_of(pid: int) -> list[str]:
    from tests.processes import process_tree

    out = []
    for child in process_tree(pid)[1:]:
        try:
            out.append(Path(f"/proc/{child}/cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return out


def test_serve_runs_a_sequencer_and_k_edges_or_one_process(tmp_path):
    """--edges 2: a sequencer and two edge processes under serve, the one
    listening line, /healthz with the link up, /metrics of the whole server;
    --edges 0: one process, no children, no link folder."""
    proc = _serve(tmp_path / "split", "--sandbox", "--edges", "2")
    try:
        line = _wait_listening(proc)
        http = line.split("http=", 1)[1].split()[0]
        children = _processes_of(proc.pid)
        assert sum("gateway.entry.cli sequencer" in c for c in children) == 1, children
        assert sum("gateway.entry.cli edge" in c for c in children) == 2, children
        status, body = _get(http + "healthz")
        assert status == 200 and json.loads(body)["link"] == "up"
        link = tmp_path / "split" / "link"
        assert (link.stat().st_mode & 0o777) == 0o700
        assert ((link / "sequencer.sock").stat().st_mode & 0o777) == 0o600
        assert ((link / "secret").stat().st_mode & 0o777) == 0o600
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # each edge reports once a second
            _status, text = _get(http + "metrics")
            processes = {
                m.split('process="', 1)[1].split('"', 1)[0]
                for m in text.decode().splitlines()
                if m.startswith("pubex_link_up{")
            }
            if processes == {"sequencer", "edge-1", "edge-2"}:
                break
            time.sleep(0.2)
        assert processes == {"sequencer", "edge-1", "edge-2"}
    finally:
        assert _stop(proc) == 0
    assert not _processes_on(tmp_path / "split")  # none outlives serve

    one = _serve(tmp_path / "one", "--sandbox", "--edges", "0")
    try:
        line = _wait_listening(one)
        http = line.split("http=", 1)[1].split()[0]
        assert _processes_of(one.pid) == []
        status, body = _get(http + "healthz")
        assert status == 200 and json.loads(body)["ok"]
        assert not (tmp_path / "one" / "link").exists()
    finally:
        assert _stop(one) == 0


def _processes_on(data) -> list[str]:
    """Every live process whose command line names ``data``."""
    from pathlib import Path

    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data) in text:
            found.append(text)
    return found
