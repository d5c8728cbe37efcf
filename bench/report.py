"""The benchmark report: every ``python -m bench`` suite, one table each, from one run.

``python -m bench report [--tiny] [--suites core,gateway,...] [--out docs/benchmarks.md]``
``python -m bench report --from-json docs/benchmarks.json``  (re-render, run nothing)

Each suite runs in its own process (``python -m bench NAME --json ...``), one after the
other, bounded by ``--timeout`` seconds; the load average is read before and after each.
The report (markdown) puts every figure next to its peer or limit measured in the same
run, the ratio, the issue's target where one is stated and whether it is met.  The raw
JSON of the run is written next to it (``--json-out``) so every figure can be traced, and
a hand-written SVG chart (``--svg-out``) shows the gateway's open-loop ack latency
percentiles under rising offered load (``bench gateway --sweep``).

A suite that is not registered (e.g. ``services`` before it exists), fails or times out
gets a section saying so; the report is still written.  Timing never fails the run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson

from bench.locust.summary import section as load_section
from bench.stats import machine as stats_machine

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
# The raw report: two-space indent (orjson has no other), keys as the suites wrote them.
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS

# Order of the report; suites registered later that are not listed here follow.
ORDER = ("core", "gateway", "book", "services")

# Arguments per suite: "full" for `make bench` (the whole report in ~5-10 minutes on
# 2 cores), "tiny" for the smoke test (seconds per suite, figures meaningless).
SUITE_ARGS: dict[str, dict[str, list[str]]] = {
    "core": {"full": [], "tiny": ["--quick"]},
    "gateway": {
        "full": ["--sweep"],
        "tiny": shlex.split(
            "--quick --conns 10 --closed-s 0.5 --watchers 20 --sweep 0.25,1.0 --sweep-s 0.5"
        ),
    },
    "book": {"full": [], "tiny": ["--ops", "2000"]},
    "services": {"full": [], "tiny": ["--quick"]},
}
DEFAULT_ARGS = {"full": [], "tiny": ["--quick"]}

# Targets stated in the issues for suites whose JSON does not carry them.
BOOK_TARGET_RATIO = 2.0  # issue 5: >= 2x the fastest peer in the same run
SERVICES_TARGETS = {"follower_to_raw_scan": 0.5, "live_lag_p99_ms": 50.0}  # issue 6
# Why a peer's final book may differ from pubex's (PERFORMANCE.md, "Peers to run side by side").
KNOWN_DISAGREEMENTS = {
    "fastlob": "fastlob loses partially filled resting orders (PERFORMANCE.md), so its "
    "resting quantities drift from the shared stream's; its rate is still comparable",
}


def log(msg: str) -> None:
    print(f"[bench report] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ running the suites


def registered_suites() -> list[str]:
    from bench.__main__ import SUITES

    names = [n for n in SUITES if n != "report"]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def run_suite(name: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """``python -m bench NAME --json ARGS`` in its own process group; its stderr is
    echoed live and its tail kept.  Returns the run's facts and ``result`` or ``error``."""
    cmd = [sys.executable, "-m", "bench", name, "--json", *args]
    shown = " ".join(["python", "-m", "bench", name, "--json", *args])
    out: dict[str, Any] = {"command": shown, "load_avg_before": _loadavg()}
    log(f"{shown}  (timeout {timeout:g} s, load {out['load_avg_before']})")
    tail: collections.deque[str] = collections.deque(maxlen=30)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def echo() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip())
            sys.stderr.write(line)
            sys.stderr.flush()

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    stdout_pipe = proc.stdout
    assert stdout_pipe is not None
    chunks: list[str] = []
    collector = threading.Thread(target=lambda: chunks.append(stdout_pipe.read()), daemon=True)
    collector.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        # SIGINT first, so the suite's finally blocks stop the servers it started.
        _signal_group(proc, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        out["error"] = f"timed out after {timeout:g} s"
    collector.join(5)
    reader.join(5)
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    out["load_avg_after"] = _loadavg()
    out["exit_code"] = proc.returncode
    stdout = "".join(chunks).strip()
    if "error" not in out:
        if proc.returncode != 0:
            out["error"] = f"exit code {proc.returncode}"
        else:
            try:
                out["result"] = orjson.loads(stdout.splitlines()[-1] if stdout else "")
            except ValueError:
                out["error"] = "no JSON object on stdout"
    if "error" in out:
        out["stderr_tail"] = list(tail)
        log(f"{name}: {out['error']}")
    return out


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    facts = stats_machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return facts


def git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return ""
    return proc.stdout.strip()


def run_all(suites: Sequence[str], tiny: bool, timeout: float, jobs: int = 1) -> dict[str, Any]:
    """Every suite in turn (``jobs`` > 1 runs them side by side: only for smoke runs,
    since suites sharing the cores spoil each other's figures)."""
    mode = "tiny" if tiny else "full"
    registered = registered_suites()
    report: dict[str, Any] = {
        "generated_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "mode": mode,
        "git_commit": git_commit(),
        "machine": machine(),
        "load_avg_start": _loadavg(),
        "jobs": jobs,
        "suites": {},
    }
    t0 = time.monotonic()

    def one(name: str) -> dict[str, Any]:
        if name not in registered:
            log(f"{name}: skipped (not registered)")
            return {
                "skipped": f"`python -m bench {name}` is not registered in bench/__main__.py "
                "(the suite does not exist yet)"
            }
        return run_suite(name, SUITE_ARGS.get(name, DEFAULT_ARGS)[mode], timeout)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        runs = list(pool.map(one, suites))
    report["suites"] = dict(zip(suites, runs, strict=True))
    report["load_avg_end"] = _loadavg()
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    return report


# ------------------------------------------------------------------ rows


@dataclass
class Row:
    figure: str
    value: str
    peer: str = ""  # the peer or limit measured in the same run
    ratio: str = ""
    target: str = ""
    met: bool | None = None


def fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == int(x) and abs(x) >= 1000:
            return f"{int(x):,}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:g}" if abs(x) >= 1 else f"{x:.3g}"
    return str(x)


def ratio(a: Any, b: Any) -> str:
    if not _num(a) or not _num(b) or not b:
        return ""
    return f"{a / b:.2f}"


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def at_least(x: Any, bound: float) -> bool | None:
    return bool(x >= bound) if _num(x) else None


def at_most(x: Any, bound: float) -> bool | None:
    return bool(x <= bound) if _num(x) else None


def _g(r: dict[str, Any], key: str) -> Any:
    return r.get(key, "n/a")


def rows_core(r: dict[str, Any]) -> list[Row]:
    t = r.get("targets", {})
    eng_t = t.get("engine_bids_per_s", 300_000)
    dr_t = t.get("durable_to_raw_ratio", 0.5)
    ack_t = t.get("ack_p99_us", 2000)
    eng, dur = _g(r, "engine_bids_per_s"), _g(r, "durable_bids_per_s")
    raw = _g(r, "raw_lmdb_entries_per_s")
    dr = _g(r, "durable_to_raw_ratio")
    rate = _g(r, "open_loop_rate_per_s")
    return [
        Row(
            "engine English bids/s (Router.apply, no ledger, best of 3)",
            fmt(eng),
            "",
            "",
            f"≥ {fmt(eng_t)} (issue 2)",
            at_least(eng, eng_t),
        ),
        Row("engine CPU µs per bid", fmt(_g(r, "engine_cpu_us_per_bid"))),
        Row(
            "durable bids/s (sequencer + engine + fsync'd ledger, group commit)",
            fmt(dur),
            f"raw LMDB append + group commit, same records and batches: {fmt(raw)}/s",
            ratio(dur, raw),
            f"durable/raw ≥ {dr_t} (issue 2)",
            at_least(dr, dr_t),
        ),
        Row(
            "durable CPU µs per bid (all threads)",
            fmt(_g(r, "durable_cpu_us_per_bid")),
            f"raw LMDB {fmt(_g(r, 'raw_lmdb_cpu_us_per_entry'))} µs/entry",
            ratio(r.get("durable_cpu_us_per_bid"), r.get("raw_lmdb_cpu_us_per_entry")),
        ),
        Row(
            "commit batches / mean entries per batch",
            f"{fmt(_g(r, 'batches'))} / {fmt(_g(r, 'mean_batch_entries'))}",
            f"raw LMDB {fmt(_g(r, 'raw_lmdb_commits_per_s'))} commits/s",
        ),
        Row(
            "closed-loop ack p50 / p99 µs (50 tasks x window 8, full rate)",
            f"{fmt(_g(r, 'closed_loop_ack_p50_us'))} / {fmt(_g(r, 'closed_loop_ack_p99_us'))}",
        ),
        Row(
            f"open-loop ack p99 µs at {fmt(rate)} bids/s (half the durable rate)",
            fmt(_g(r, "ack_p99_us")),
            "",
            "",
            f"≤ {fmt(ack_t)} µs (issue 2)",
            at_most(r.get("ack_p99_us"), ack_t),
        ),
        Row(
            "open-loop ack p50 / p99.9 / max µs",
            f"{fmt(_g(r, 'ack_p50_us'))} / {fmt(_g(r, 'ack_p999_us'))} / "
            f"{fmt(_g(r, 'ack_max_us'))}",
            f"sender lag p99 {fmt(_g(r, 'open_loop_send_lag_p99_us'))} µs",
        ),
        Row(
            "raw fsync'd commit p50 / p99 µs, the open loop's own batches back to back",
            f"{fmt(_g(r, 'raw_commit_p50_us'))} / {fmt(_g(r, 'raw_commit_p99_us'))}",
            "open-loop ack p99 against the raw commit p99 (its floor: the commit in"
            " flight, then its own)",
            ratio(r.get("ack_p99_us"), r.get("raw_commit_p99_us")),
        ),
        Row(
            "1-entry fsync'd commit p99 µs in a thread beside a busy loop, runtime switch interval",
            fmt(_g(r, "busy_loop_commit_p99_us_at_runtime")),
            f"5 ms switch interval: {fmt(_g(r, 'busy_loop_commit_p99_us_at_5ms'))} µs",
            ratio(
                r.get("busy_loop_commit_p99_us_at_runtime"),
                r.get("busy_loop_commit_p99_us_at_5ms"),
            ),
        ),
        Row(
            "bids refused / acks missing (workload check)",
            f"{fmt(_sum(r, 'engine_rejected', 'durable_rejected', 'open_loop_rejected'))}"
            f" / {fmt(_g(r, 'open_loop_missing_acks'))}",
        ),
    ]


def _sum(r: dict[str, Any], *keys: str) -> Any:
    vals = [r.get(k) for k in keys]
    return sum(v for v in vals if _num(v)) if all(_num(v) for v in vals) else "n/a"


def rows_gateway(r: dict[str, Any]) -> list[Row]:
    t = r.get("targets", {})
    ratio_t = t.get("acks_to_raw_verify_ratio", 0.85)
    ack_t = t.get("ack_p99_us", 10_000)
    lag_t = t.get("watcher_lag_p99_ms", 200)
    acks, ve, raw = _g(r, "acks_per_s"), _g(r, "raw_echo_verify_per_s"), _g(r, "raw_echo_per_s")
    kw = f"{fmt(_g(r, 'connections'))} conns x W={fmt(_g(r, 'window'))}"
    return [
        Row(
            f"pubex serve durable acks/s ({kw}, signed bids, closed loop)",
            fmt(acks),
            f"trio-websocket echo + Ed25519 verify: {fmt(ve)}/s",
            ratio(acks, ve),
            f"acks/echo+verify ≥ {ratio_t} (issue 3)",
            at_least(r.get("acks_to_raw_verify_ratio"), ratio_t),
        ),
        Row(
            "echo + Ed25519 verify round trips/s",
            fmt(ve),
            f"raw trio-websocket echo: {fmt(raw)}/s",
            ratio(ve, raw),
        ),
        Row(
            "server CPU µs per message: pubex",
            fmt(_g(r, "server_cpu_us_per_msg_pubex")),
            f"echo + verify {fmt(_g(r, 'server_cpu_us_per_msg_raw_echo_verify'))} µs, raw echo "
            f"{fmt(_g(r, 'server_cpu_us_per_msg_raw_echo'))} µs",
            ratio(
                r.get("server_cpu_us_per_msg_pubex"),
                r.get("server_cpu_us_per_msg_raw_echo_verify"),
            ),
        ),
        Row(
            "pubex commit batches: mean entries / mean commit ms",
            f"{fmt(_g(r, 'pubex_mean_batch_entries'))} / {fmt(_g(r, 'pubex_mean_commit_ms'))}",
        ),
        Row(
            "closed-loop p50 / p99 µs: pubex",
            f"{fmt(_g(r, 'closed_loop_ack_p50_us'))} / {fmt(_g(r, 'closed_loop_ack_p99_us'))}",
            f"echo + verify {fmt(_g(r, 'raw_echo_verify_p50_us'))} / "
            f"{fmt(_g(r, 'raw_echo_verify_p99_us'))} µs",
        ),
        Row(
            f"open-loop ack p99 µs at {fmt(_g(r, 'open_loop_rate_per_s'))}/s (half the max)",
            fmt(_g(r, "ack_p99_us")),
            "",
            "",
            f"≤ {fmt(ack_t)} µs (issue 3)",
            at_most(r.get("ack_p99_us"), ack_t),
        ),
        Row(
            "open-loop ack p50 / p99.9 / max µs",
            f"{fmt(_g(r, 'ack_p50_us'))} / {fmt(_g(r, 'ack_p999_us'))} / "
            f"{fmt(_g(r, 'ack_max_us'))}",
        ),
        Row(
            f"watcher lag p99 ms ({fmt(_g(r, 'watchers'))} watchers, "
            f"{fmt(_g(r, 'watch_bid_rate_per_s'))} bids/s, ledger ts → receipt)",
            fmt(_g(r, "watcher_lag_p99_ms")),
            f"p50 {fmt(_g(r, 'watcher_lag_p50_ms'))} ms",
            "",
            f"≤ {fmt(lag_t)} ms (issue 3)",
            at_most(r.get("watcher_lag_p99_ms"), lag_t),
        ),
        Row(
            "bids refused / acks missing / watcher updates missed (workload check)",
            f"{fmt(_sum(r, 'closed_loop_bad', 'open_loop_bad'))} / "
            f"{fmt(_g(r, 'open_loop_missing_acks'))} / {fmt(_g(r, 'watcher_missing'))}",
        ),
    ]


def rows_sweep(r: dict[str, Any]) -> list[Row]:
    """One summary row: the highest offered rate whose ack p99 met the gateway target."""
    steps = r.get("ack_sweep") or []
    ack_t = r.get("targets", {}).get("ack_p99_us", 10_000)
    ok = [s for s in steps if _num(s.get("p99_us")) and s["p99_us"] <= ack_t]
    best = max(ok, key=lambda s: s["offered_per_s"]) if ok else None
    return [
        Row(
            f"highest swept offered rate with ack p99 ≤ {fmt(ack_t)} µs",
            f"{fmt(best['offered_per_s'])}/s" if best else "none",
            f"closed-loop max {fmt(_g(r, 'ack_sweep_max_per_s'))}/s",
            ratio(best["offered_per_s"], r.get("ack_sweep_max_per_s")) if best else "",
        )
    ]


def rows_book(r: dict[str, Any]) -> list[Row]:
    pubex = _g(r, "pubex_ops_per_s")
    peers = r.get("peers", {})
    fastest = r.get("fastest_peer")
    target = r.get("target", BOOK_TARGET_RATIO)
    p99s = r.get("peers_p99_us", {})
    agreement = r.get("agreement", {})
    rows = [
        Row(
            f"pubex book ops/s ({fmt(_g(r, 'ops'))} ops, seed {_g(r, 'seed')}, one process "
            "per book)",
            fmt(pubex),
            f"fastest peer {fastest}: {fmt(peers.get(fastest))}/s" if fastest else "no peer ran",
            ratio(pubex, peers.get(fastest)) if fastest else "",
            f"≥ {target}x the fastest peer (issue 5)",
            at_least(r.get("ratio_to_fastest_peer"), target) if fastest else None,
        )
    ]
    for name, v in peers.items():
        if _num(v):
            a = agreement.get(name, {})
            agree = "final books agree" if a.get("agree") else "final books DISAGREE"
            rows.append(
                Row(
                    f"pubex ops/s vs {name} ({fmt(a.get('ops', 'n/a'))} ops it supports; {agree})",
                    fmt(pubex),
                    f"{name}: {fmt(v)}/s",
                    ratio(pubex, v),
                )
            )
        else:
            rows.append(Row(f"pubex ops/s vs {name}", fmt(pubex), f"{name}: {v}"))
    rows.append(
        Row(
            "pubex p99 µs per operation",
            fmt(_g(r, "p99_us")),
            ", ".join(f"{n} {fmt(v)}" for n, v in p99s.items()) or "",
            ratio(r.get("p99_us"), min(p99s.values())) if p99s else "",
        )
    )
    rows.append(
        Row(
            "durable ops/s (runtime + fsync'd ledger, group commit)",
            fmt(_g(r, "durable_ops_per_s")),
            f"same stream through Router.apply in memory: {fmt(_g(r, 'router_ops_per_s'))}/s",
            ratio(r.get("durable_ops_per_s"), r.get("router_ops_per_s")),
        )
    )
    return rows


def rows_services(r: dict[str, Any]) -> list[Row]:
    fol, scan = r.get("follower_entries_per_s"), r.get("raw_scan_entries_per_s")
    lag = r.get("live_lag_p99_ms")
    t_ratio, t_lag = SERVICES_TARGETS["follower_to_raw_scan"], SERVICES_TARGETS["live_lag_p99_ms"]
    fr = fol / scan if _num(fol) and _num(scan) and scan else None
    rows = [
        Row(
            "slowest follower catch-up entries/s",
            fmt(fol if fol is not None else "n/a"),
            f"verify-and-decode cursor scan of the same ledger: {fmt(scan)}/s",
            ratio(fol, scan),
            f"≥ {t_ratio} of the raw scan (issue 6)",
            at_least(fr, t_ratio),
        ),
        Row(
            "live lag p99 ms (gateway at half its max ack rate)",
            fmt(lag if lag is not None else "n/a"),
            "",
            "",
            f"≤ {fmt(t_lag)} ms (issue 6)",
            at_most(lag, t_lag),
        ),
    ]
    known = {"follower_entries_per_s", "raw_scan_entries_per_s", "live_lag_p99_ms"}
    return rows + rows_generic({k: v for k, v in r.items() if k not in known}, with_targets=False)


def rows_generic(r: dict[str, Any], *, with_targets: bool = True, prefix: str = "") -> list[Row]:
    """Every numeric figure of an unknown suite (nested dicts flattened one level)."""
    rows: list[Row] = []
    targets = r.get("targets", {}) if with_targets else {}
    for key, v in r.items():
        if key in ("targets", "machine", "quick", "elapsed_s"):
            continue
        if isinstance(v, dict) and not prefix:
            rows += rows_generic(v, with_targets=False, prefix=f"{key}.")
        elif _num(v):
            row = Row(prefix + key, fmt(v))
            if isinstance(targets, dict) and _num(targets.get(key)):
                lower = key.endswith(("_us", "_ms", "_s")) or "lag" in key
                row.target = ("≤ " if lower else "≥ ") + fmt(targets[key])
                row.met = (at_most if lower else at_least)(v, targets[key])
            rows.append(row)
    return rows


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "core": rows_core,
    "gateway": rows_gateway,
    "book": rows_book,
    "services": rows_services,
}

TITLES = {
    "core": "the durable core: engine, ledger, raw LMDB, in-process ack latency",
    "gateway": "the gateway: pubex serve against the WebSocket layer's own limits",
    "book": "the e-mall order book against the PyPI order books",
    "services": "companion services: followers against a raw scan of the ledger",
}


# ------------------------------------------------------------------ markdown


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| figure | value | peer or limit, same run | ratio | target | met |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for row in rows:
        met = "" if row.met is None else ("met" if row.met else "**NOT met**")
        if row.target and row.met is None:
            met = "n/a"
        cells = (row.figure, row.value, row.peer, row.ratio, row.target, met)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def sweep_table(r: dict[str, Any]) -> list[str]:
    lines = [
        "| offered bids/s | % of max | completed/s | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "max ms | acks missing | refused | load avg 1 min |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in r.get("ack_sweep") or []:
        ms = [_ms(s.get(k)) for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")]
        lines.append(
            f"| {fmt(s['offered_per_s'])} | {s['fraction']:.0%} | {fmt(s['completed_per_s'])} | "
            + " | ".join(ms)
            + f" | {fmt(s['missing_acks'])} | {fmt(s['bad'])} | {fmt(s.get('load_avg_1m', 'n/a'))} |"
        )
    return lines


def _ms(x: Any) -> str:
    return f"{x / 1000:.1f}" if _num(x) else "n/a"


def _machine_line(m: dict[str, Any]) -> str:
    parts = [
        f"{m.get('cpu_count')} CPUs" + (f" ({m['cpu_model']})" if m.get("cpu_model") else ""),
        f"{m['mem_gib']} GiB RAM" if m.get("mem_gib") else "",
        str(m.get("platform", "")),
        f"{m.get('implementation', 'Python')} {m.get('python', '')}",
    ]
    return ", ".join(p for p in parts if p)


def render_markdown(report: dict[str, Any], svg_name: str | None) -> str:
    m = report.get("machine", {})
    tiny = report["mode"] == "tiny"
    out = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`python -m bench report`) on {report['generated_utc']}"
        + (f" at commit `{report['git_commit']}`" if report.get("git_commit") else "")
        + (" — **tiny sizes (smoke test): the figures mean nothing**" if tiny else "")
        + (f" — **{report['jobs']} suites ran side by side**" if report.get("jobs", 1) > 1 else "")
        + ".",
        "Raw figures of this run: [`benchmarks.json`](benchmarks.json).",
        "",
        f"**Machine:** {_machine_line(m)}. Load average (1/5/15 min) at the start "
        f"{_la(report.get('load_avg_start'))}, at the end {_la(report.get('load_avg_end'))}; "
        f"the whole run took {fmt(report.get('elapsed_s'))} s.",
        "",
        "The machine is shared and noisy: absolute rates move from run to run, so every figure "
        "sits next to its peer or limit measured in the same run, one suite after the other, "
        "each suite in its own process (each book and each server in its own process too). "
        "Read the ratios. A load average above the CPU count means other work shared the "
        "cores during the run. Percentiles are exact (nearest rank); ack latencies are "
        "measured open loop from each bid's scheduled send time, so a stall is not hidden.",
        "",
        "## Targets",
        "",
        "| suite | figure | value | target | met |",
        "| --- | --- | ---: | --- | --- |",
    ]
    sections: list[str] = []
    for name, run in report["suites"].items():
        sections += ["", f"## {name} — {TITLES.get(name, f'python -m bench {name}')}", ""]
        if "skipped" in run:
            sections.append(f"Not run: {run['skipped']}.")
            out.append(f"| {name} | — | — | — | not run |")
            continue
        sections.append(
            f"`{run['command']}` — {fmt(run.get('elapsed_s'))} s, load average "
            f"{_la(run.get('load_avg_before'))} before, {_la(run.get('load_avg_after'))} after."
        )
        if "error" in run:
            sections += ["", f"**Failed: {run['error']}.** Last lines of its log:", "", "```"]
            sections += [*run.get("stderr_tail", [])[-15:], "```"]
            out.append(f"| {name} | — | — | — | failed: {run['error']} |")
            continue
        r = run["result"]
        rows = ROWS.get(name, rows_generic)(r)
        sections += ["", *table(rows)]
        for row in rows:
            if row.target:
                met = "n/a" if row.met is None else ("met" if row.met else "**NOT met**")
                out.append(
                    f"| {name} | {_cell(row.figure)} | {_cell(row.value)} | "
                    f"{_cell(row.target)} | {met} |"
                )
        if name == "book":
            sections += _book_notes(r)
        if name == "gateway" and r.get("ack_sweep"):
            step_s = r.get("ack_sweep_step_s")
            sections += [
                "",
                "### Ack latency under rising offered load",
                "",
                f"`pubex serve`, open loop (fixed schedule, round robin over "
                f"{fmt(r.get('connections'))} connections), {fmt(step_s)} s per step, each step "
                f"a fraction of the closed-loop maximum of the same run "
                f"({fmt(r.get('ack_sweep_max_per_s'))} acks/s); latency from each bid's "
                "scheduled send time to its durable ack.",
                "",
            ]
            if svg_name:
                sections += [f"![ack latency percentiles under rising load]({svg_name})", ""]
            sections += [*sweep_table(r), "", *table(rows_sweep(r))]
    out += sections
    # The Locust scenarios run apart (make load); their latest figures, from docs/load.json.
    out += [*load_section(DOCS / "load.json"), ""]
    return "\n".join(out)


def _la(x: Any) -> str:
    return " / ".join(f"{v:.2f}" for v in x) if isinstance(x, list) else "n/a"


def _book_notes(r: dict[str, Any]) -> list[str]:
    notes = []
    for name, a in (r.get("agreement") or {}).items():
        if not a.get("agree"):
            side = next((s for s in ("bids", "asks") if isinstance(a.get(s), dict)), None)
            where = ""
            if side:
                where = f" ({side} differ from level {a[side].get('first_difference_at_level')})"
            why = KNOWN_DISAGREEMENTS.get(name, "see `agreement` in the JSON")
            notes.append(f"- {name}: its final resting book differs from pubex's{where}: {why}.")
    if not notes:
        return []
    return ["", "Peers whose final book differs from pubex's on the shared stream:", "", *notes]


# ------------------------------------------------------------------ the chart (SVG)

SERIES = (
    ("p50_us", "p50", "#1f77b4"),
    ("p90_us", "p90", "#2ca02c"),
    ("p99_us", "p99", "#ff7f0e"),
    ("p999_us", "p99.9", "#d62728"),
)


def _nice_step(span: float, n: int = 6) -> float:
    raw = span / n if span > 0 else 1
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def svg_chart(
    steps: Sequence[dict[str, Any]],
    *,
    title: str,
    target_ms: float | None = None,
    max_rate: float | None = None,
    note: str = "",
) -> str:
    """A log-latency vs offered-load line chart of the sweep's percentiles, as SVG text."""
    w, h = 760, 440
    left, right, top, bottom = 70, 150, 40, 60
    pw, ph = w - left - right, h - top - bottom
    pts = [s for s in steps if _num(s.get("offered_per_s"))]
    values = [s[k] / 1000 for s in pts for k, _, _ in SERIES if _num(s.get(k)) and s[k] > 0]
    if target_ms:
        values.append(target_ms)
    lo = 10 ** math.floor(math.log10(min(values))) if values else 0.1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 100.0
    if hi <= lo:
        hi = lo * 10
    xmax_data = max([s["offered_per_s"] for s in pts] + [max_rate or 0, 1])
    xstep = _nice_step(xmax_data)
    xmax = math.ceil(xmax_data * 1.02 / xstep) * xstep

    def x(v: float) -> float:
        return round(left + pw * v / xmax, 1)

    def y(ms: float) -> float:
        frac = (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return round(top + ph * (1 - frac), 1)

    el = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left}" y="{h - 4}" font-size="10" fill="#555">{escape(note)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    decade = lo
    while decade <= hi * 1.0001:
        for mult in (1, 2, 5):
            v = decade * mult
            if v > hi * 1.0001:
                break
            yy = y(v)
            major = mult == 1
            el.append(
                f'<line x1="{left}" y1="{yy}" x2="{left + pw}" y2="{yy}" '
                f'stroke="{"#ccc" if major else "#eee"}"/>'
            )
            el.append(f'<text x="{left - 6}" y="{yy + 4}" text-anchor="end">{v:g}</text>')
        decade *= 10
    tick = 0.0
    while tick <= xmax + 1e-9:
        xx = x(tick)
        el.append(f'<line x1="{xx}" y1="{top}" x2="{xx}" y2="{top + ph}" stroke="#eee"/>')
        el.append(f'<text x="{xx}" y="{top + ph + 16}" text-anchor="middle">{tick:,.0f}</text>')
        tick += xstep
    el.append(
        f'<text x="{left + pw / 2}" y="{h - 18}" text-anchor="middle">'
        "offered load, bids/s (open loop)</text>"
    )
    el.append(
        f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "ack latency, ms (log scale)</text>"
    )
    if max_rate:
        xx = x(max_rate)
        el.append(
            f'<line x1="{xx}" y1="{top}" x2="{xx}" y2="{top + ph}" stroke="#555" '
            'stroke-dasharray="2 3"/>'
        )
        el.append(
            f'<text x="{xx - 4}" y="{top + 14}" text-anchor="end" fill="#555">'
            f"closed-loop max {max_rate:,.0f}/s</text>"
        )
    if target_ms:
        yy = y(target_ms)
        el.append(
            f'<line x1="{left}" y1="{yy}" x2="{left + pw}" y2="{yy}" stroke="#444" '
            'stroke-dasharray="6 4"/>'
        )
        el.append(
            f'<text x="{left + 6}" y="{yy - 5}" fill="#444">'
            f"{escape(f'target: p99 ≤ {target_ms:g} ms at half the max')}</text>"
        )
    for i, (key, label, color) in enumerate(SERIES):
        xy = [
            (x(s["offered_per_s"]), y(s[key] / 1000))
            for s in pts
            if _num(s.get(key)) and s[key] > 0
        ]
        if len(xy) > 1:
            path = " ".join(f"{a},{b}" for a, b in xy)
            el.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        el += [f'<circle cx="{a}" cy="{b}" r="3" fill="{color}"/>' for a, b in xy]
        ly = top + 16 + 20 * i
        lx = left + pw + 16
        el.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        el.append(f'<text x="{lx + 30}" y="{ly + 4}">{label}</text>')
    el.append("</svg>")
    return "\n".join(el) + "\n"


# ------------------------------------------------------------------ main


def _chart_note(report: dict[str, Any], gw: dict[str, Any]) -> str:
    loads = [s["load_avg_1m"] for s in gw["ack_sweep"] if _num(s.get("load_avg_1m"))]
    m = report.get("machine", {})
    parts = [
        f"commit {report.get('git_commit', '?')}",
        f"{m.get('cpu_count', '?')} CPUs shared by server and load generator",
        f"{fmt(gw.get('ack_sweep_step_s'))} s per step",
    ]
    if loads:
        parts.append(f"load average {min(loads):.1f}-{max(loads):.1f}")
    return " · ".join(parts)


def write(
    report: dict[str, Any], out_md: Path, out_json: Path, out_svg: Path, *, save_json: bool = True
) -> None:
    """The markdown, the chart (when the gateway swept) and, with ``save_json``, the JSON."""
    gw = report["suites"].get("gateway", {}).get("result") or {}
    svg_name = None
    if gw.get("ack_sweep"):
        target_us = (gw.get("targets") or {}).get("ack_p99_us")
        svg = svg_chart(
            gw["ack_sweep"],
            title="pubex serve: ack latency percentiles under rising offered load",
            target_ms=target_us / 1000 if isinstance(target_us, int | float) else None,
            max_rate=gw.get("ack_sweep_max_per_s"),
            note=_chart_note(report, gw),
        )
        out_svg.parent.mkdir(parents=True, exist_ok=True)
        out_svg.write_text(svg)
        svg_name = os.path.relpath(out_svg, out_md.parent)
        log(f"wrote {out_svg}")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    md = render_markdown(report, svg_name)
    if save_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_bytes(orjson.dumps(report, option=_JSON_OPTIONS) + b"\n")
    rel = os.path.relpath(out_json, out_md.parent)
    md = md.replace("(benchmarks.json)", f"({rel})").replace("`benchmarks.json`", f"`{rel}`")
    out_md.write_text(md)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench report", description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run in seconds")
    ap.add_argument("--suites", default="", help="comma-separated suites (default: all)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per suite (default 420)")
    ap.add_argument("--out", type=Path, default=DOCS / "benchmarks.md")
    ap.add_argument("--json-out", type=Path, help="raw JSON (default: next to --out, .json)")
    ap.add_argument("--svg-out", type=Path, help="chart (default: next to --out, -ack-latency.svg)")
    ap.add_argument("--from-json", type=Path, help="re-render a saved run; run nothing")
    ap.add_argument(
        "--jobs", type=int, default=1, help="suites side by side (smoke runs only; default 1)"
    )
    args = ap.parse_args(argv)
    out_md: Path = args.out
    out_json = args.json_out or out_md.with_suffix(".json")
    out_svg = args.svg_out or out_md.with_name(out_md.stem + "-ack-latency.svg")
    if args.from_json:
        report = orjson.loads(args.from_json.read_bytes())
        write(report, out_md, args.from_json, out_svg, save_json=False)
        log(f"re-rendered {out_md} from {args.from_json}")
        return 0
    registered = registered_suites()
    # Every registered suite, and the expected ones that are not there yet (reported skipped).
    suites = [s for s in args.suites.split(",") if s] or [
        *registered,
        *(s for s in ORDER if s not in registered),
    ]
    timeout = args.timeout or (120 if args.tiny else 420)
    report = run_all(suites, args.tiny, timeout, args.jobs)
    write(report, out_md, out_json, out_svg)
    log(f"wrote {out_md}, {out_json}")
    return 0
