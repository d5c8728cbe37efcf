"""The figures of the latest ``make load`` run of each scenario, for the benchmark report.

    python -m bench.locust.summary [--reports bench/reports] [--out docs/load.json]

``bench/reports/`` is not committed, so this collects, for each scenario, the
newest ``<scenario>-<stamp>-server.json`` the runner wrote (and Locust's
``<scenario>-<stamp>.json`` next to it) into one small JSON file,
``docs/load.json``, which is committed; ``bench/report.py`` renders it as the
section "Load scenarios (make load)" of ``docs/benchmarks.md``
(``section()``), so a re-render from saved JSON keeps the figures.

Per scenario: failures; the server-measured ack p50/p99/p99.9 over the whole
Locust run and over its steady window (every user started); Locust's p50/p99
of every request but the connects (whole milliseconds, merged from Locust's
own histograms), and of the watchers' lag; the sustained reply rate; the
load average; the bounds and whether they held.  No locust or gevent here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "docs" / "load.json"
ORDER = ["hot-land", "storm", "judicial-day", "emall", "watchers"]
_STAMP = re.compile(r"^(?P<scenario>[a-z-]+)-(?P<stamp>\d{8}-\d{6})-server\.json$")


def _merged(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, failures, p50 and p99 (ms) of Locust entries, their histograms merged."""
    times: dict[float, int] = {}
    n = fails = 0
    for e in entries:
        n += e["num_requests"]
        fails += e["num_failures"]
        for k, v in e.get("response_times", {}).items():
            times[float(k)] = times.get(float(k), 0) + v
    ordered = sorted(times.items())

    def pct(q: float) -> float | None:
        seen = 0
        for t, c in ordered:
            seen += c
            if seen >= q * n:
                return t
        return None

    return {"requests": n, "failures": fails, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def one(server_json: Path) -> dict[str, Any]:
    m = _STAMP.match(server_json.name)
    assert m is not None
    data = orjson.loads(server_json.read_bytes())
    srv = data["server"]
    steady = srv.get("steady", {})
    base = server_json.with_name(server_json.name.removesuffix("-server.json"))
    out: dict[str, Any] = {
        "scenario": data["scenario"],
        "stamp": m.group("stamp"),
        "report": f"bench/reports/{base.name}.md",
        "broken": data["broken"],
        "replies": srv["replies"],
        "replies_per_s": srv["replies_per_s"],
        "wall_s": srv["wall_s"],
        "ack_p50_us": srv["ack_p50_us"],
        "ack_p99_us": srv["ack_p99_us"],
        "ack_p999_us": srv["ack_p999_us"],
        "commit_p99_ms": srv.get("commit_p99_ms"),
        "fsync_probe": srv.get("fsync_probe"),
        "frames_refused": srv.get("frames_refused", {}),
        **{k: steady.get(k) for k in steady if k != "rate_series"},
    }
    plan_file = Path(f"{base}-plan.json")
    if plan_file.exists():
        plan = orjson.loads(plan_file.read_bytes())
        out["users"] = plan.get("users")
    rows = data.get("locust", [])
    out["connects"] = sum(r["requests"] for r in rows if r["name"].startswith("connect"))
    out["users"] = max(out.get("users") or 0, out["connects"])  # watchers: plan = its bidders
    out["connect_failures"] = sum(r["failures"] for r in rows if r["name"].startswith("connect"))
    locust_json = Path(f"{base}.json")
    if locust_json.exists():
        entries = orjson.loads(locust_json.read_bytes())
        out["requests"] = _merged(
            [e for e in entries if e["method"] == "WS" and not e["name"].startswith("connect")]
        )
        lag = [e for e in entries if e["method"] == "WATCH"]
        if lag:
            out["watch_lag"] = _merged(lag)
    spy = Path(f"{base}-pyspy-server.txt")
    if spy.exists():  # --profile: where the server's samples went
        from bench.locust.run import profile_summary  # websocket-client: the load extra

        prof = profile_summary(spy)
        out["server_profile"] = {"samples": prof["samples"], "parts_pct": prof["parts_pct"]}
    out["failures"] = sum(r["failures"] for r in rows)
    out["requests_total"] = sum(r["requests"] for r in rows)
    return out


def collect(reports: Path, also: list[Path] | None = None) -> dict[str, Any]:
    """The newest run of each scenario under ``reports``, and the runs ``also``
    named (another size, or an earlier run on a quieter machine), keyed
    ``<scenario> (<users> users, earlier run)``."""
    latest: dict[str, Path] = {}
    for f in sorted(reports.glob("*-server.json")):
        m = _STAMP.match(f.name)
        if m and (m.group("scenario") not in latest or f.name > latest[m.group("scenario")].name):
            latest[m.group("scenario")] = f
    scenarios = {name: one(latest[name]) for name in ORDER if name in latest}
    scenarios |= {name: one(f) for name, f in latest.items() if name not in scenarios}
    for f in also or []:
        extra = one(f)
        extra["report"] = f"{f.parent.name}/{extra['report'].rsplit('/', 1)[-1]}"
        scenarios[f"{extra['scenario']} ({extra.get('users')} users, earlier run)"] = extra
    return {"scenarios": scenarios}


# ----------------------------------------------------------------- markdown


def _n(x: Any, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, int | float):
        return f"{x:,.{digits}f}"
    return str(x)


def _ms(us: Any) -> str:
    return "—" if us is None else f"{us / 1000:,.1f}"


def _la(x: Any) -> str:
    return "—" if not isinstance(x, list) else " / ".join(f"{v:.2f}" for v in x)


def section(path: Path = DEFAULT_OUT) -> list[str]:
    """The markdown section "Load scenarios (make load)" from ``docs/load.json``."""
    out = ["", "## Load scenarios (make load)", ""]
    if not path.exists():
        return [
            *out,
            f"No load runs collected (`python -m bench.locust.summary` writes {path.name}).",
        ]
    data = orjson.loads(path.read_bytes())
    runs = data.get("scenarios", {})
    out += [
        "`make load SCENARIO=… [USERS=…] [DURATION=…]` (`python -m bench.locust.run`): "
        "`pubex serve` on loopback and a headless Locust (one process, gevent) **on the same "
        "2 shared cores**; each scenario file states its load and bounds. The latest run of "
        "each, collected by `python -m bench.locust.summary` into "
        f"[`{path.name}`]({path.name}); the per-run reports are under `bench/reports/` "
        "(not committed). Server ack = the server's µs histogram from frame received to "
        "durable reply sent (`/metrics` before and after; interpolated in buckets); "
        "steady = from the first `/metrics` sample after the last user started to the end. "
        "1,000.0 ms is the histogram's last finite bucket: read it as >= 1 s. "
        "Locust = client round trip of every request but the connects (watchers: their lag "
        "samples count as requests), whole ms. The disk "
        "column is the same run's probe (150 one-entry LMDB commits with fsync, before and "
        "after; the worse p99): a durable ack cannot beat it.",
        "",
        "| scenario | run | users | failures / requests | connect failures | server ack p50 / p99 "
        "/ p99.9 ms (whole run) | steady: replies/s, ack p50 / p99 / p99.9 ms | Locust p50 / "
        "p99 ms | group commit p99 ms / disk: lone fsync p99 ms | load avg at start; 1-min max "
        "| bounds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, r in runs.items():
        req = r.get("requests") or {}
        steady = (
            f"{_n(r.get('steady_per_s'), 1)} over {_n(r.get('steady_s'), 0)} s, "
            f"{_ms(r.get('steady_ack_p50_us'))} / {_ms(r.get('steady_ack_p99_us'))} / "
            f"{_ms(r.get('steady_ack_p999_us'))}"
            if r.get("steady_s")
            else f"{_n(r.get('replies_per_s'), 1)} (whole run; no steady window)"
        )
        verdict = "held" if not r["broken"] else "**broken**: " + "; ".join(r["broken"])
        probe = r.get("fsync_probe") or {}
        disk = max((v["p99_ms"] for v in probe.values()), default=None)
        out.append(
            f"| {name} | {r['stamp']} | {_n(r.get('users'))} | "
            f"{_n(r.get('failures'))} / {_n(r.get('requests_total'))} | "
            f"{_n(r.get('connect_failures'))} of {_n(r.get('connects'))} | "
            f"{_ms(r['ack_p50_us'])} / {_ms(r['ack_p99_us'])} / {_ms(r['ack_p999_us'])} | "
            f"{steady} | {_n(req.get('p50_ms'))} / {_n(req.get('p99_ms'))} | "
            f"{_n(r.get('commit_p99_ms'), 1)} / {_n(disk, 1)} | "
            f"{_la(r.get('load_avg_start'))}; {_n(r.get('load_avg_max_1m'), 2)} | "
            f"{verdict.replace('|', '/')} |"
        )
    lags = {name: r["watch_lag"] for name, r in runs.items() if r.get("watch_lag")}
    if lags:
        out += [
            "",
            "Watcher lag (server's ledger timestamp of a bid to the receipt of the conflated "
            "snapshot carrying it, same clock):",
            "",
            "| scenario | lag samples | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: |",
        ]
        out += [
            f"| {name} | {_n(v['requests'])} | {_n(v['p50_ms'])} | {_n(v['p99_ms'])} |"
            for name, v in lags.items()
        ]
    for name, r in runs.items():
        prof = r.get("server_profile")
        if not prof:
            continue
        out += [
            "",
            f"Where the server's time went in the {name} run ({r['stamp']}, py-spy "
            f"`--profile`, {prof['samples']} samples at 50 Hz of the server's threads; "
            "share of the samples):",
            "",
            "| part | % |",
            "| --- | ---: |",
        ]
        out += [f"| {part} | {pct} |" for part, pct in prof["parts_pct"]]
    notes = data.get("notes", [])
    if notes:
        out += ["", *[f"- {line}" for line in notes]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=Path, default=REPO / "bench" / "reports")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--note", action="append", default=[], help="a line under the table")
    ap.add_argument(
        "--also", type=Path, action="append", default=[], help="another run's -server.json"
    )
    args = ap.parse_args(argv)
    data = collect(args.reports, args.also)
    if not data["scenarios"]:
        print(f"no *-server.json under {args.reports}", file=sys.stderr)
        return 1
    old = orjson.loads(args.out.read_bytes()) if args.out.exists() else {}
    data["notes"] = args.note or old.get("notes", [])
    args.out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    print("\n".join(section(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
