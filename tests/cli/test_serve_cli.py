"""pubex serve's sandbox rule, the listening line, and pubex schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

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
