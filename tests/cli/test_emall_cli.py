"""``pubex simulate --scenario emall-day`` is deterministic and verifies; ``pubex
replay --lot ITEM`` prints the item's timeline with codes, never owners."""

from __future__ import annotations

import json
import subprocess
import sys

CLI = [sys.executable, "-m", "gateway.entry.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_emall_day_is_deterministic_verifies_and_replays(tmp_path):
    hashes = []
    for name in ("a", "b"):
        out = run(
            "simulate",
            "--scenario",
            "emall-day",
            "--seed",
            "5",
            "--ledger",
            str(tmp_path / name),
            "--json",
        )
        summary = json.loads(out.stdout)
        assert summary["items"] == 60 and summary["trades"] > 1_000
        for code in ("book_price_band", "book_purchase_limit", "book_halted", "book_unknown_order"):
            assert code in summary["refused_by_code"], code
        hashes.append(summary["state_hash"])
    assert hashes[0] == hashes[1]
    verify = run("ledger", "verify", str(tmp_path / "a"))
    assert verify.returncode == 0 and hashes[0] in verify.stdout
    timeline = run("replay", str(tmp_path / "a"), "--lot", "EM001")
    assert timeline.returncode == 0, timeline.stderr
    text = timeline.stdout
    for what in (
        "item_created",
        "auction_uncrossed",
        "order_filled",
        "order_placed",
        "item_session_changed",
    ):
        assert what in text, what
    assert "supplier:" not in text and "purchaser:" not in text and "S0" not in text
    summary_lines = run("replay", str(tmp_path / "a")).stdout.splitlines()
    assert any(line.startswith("EM059 emall closed") for line in summary_lines)
    assert run("replay", str(tmp_path / "a"), "--lot", "NOPE").returncode == 2


def test_schema_has_the_emall_frames():
    defs = json.loads(run("schema").stdout)["$defs"]
    for name in (
        "OrderFrame",
        "OrderPayload",
        "CreateItemFrame",
        "SetItemSessionFrame",
        "BookSnapshot",
    ):
        assert name in defs, name
    assert set(defs["OrderPayload"]["properties"]["action"]["enum"]) == {
        "place",
        "cancel",
        "amend",
        "purchase",
    }
