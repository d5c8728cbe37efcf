"""``make load SCENARIO=… USERS=… DURATION=…``: one bounded Locust run against a
real ``pubex serve`` on loopback.

    python -m bench.locust.run --scenario hot-land [--users N] [--duration 60]
                               [--seed 1] [--reports bench/reports]

1. Raise the open-file limit (children inherit it); start ``pubex serve`` on
   127.0.0.1 (ports 0) in a temp data dir, with the scenario's config
   overrides (``SPEC["server"]``).
2. Provision the scenario's lots, keys, registrations and deposits over one
   staff WebSocket (``bench.locust.provision``) and write the plan.
3. Scrape ``/metrics`` (the server's µs histograms and counters) before and
   after a headless Locust run (CSV, HTML and JSON reports); the server's
   ack latency percentiles, ack rate and outcome counts over the run go into
   ``<scenario>-<stamp>-server.json`` and the summary ``<stamp>.md``.
4. Exit non-zero when Locust's ``quitting`` listener found a bound broken
   (failure ratio, a p99), when the server-measured ack p99 breaks
   ``SPEC["bounds"]["server_ack_p99_us"]``, or when the server died.

Each scenario is a locustfile in this directory stating its load and bounds in
a literal ``SPEC`` (read here with ``ast``: this process never imports locust
or gevent).  ``emall`` is not here yet: the order book has no wire protocol
(issue 5's integration is another helper's work).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from bench.locust.provision import provision

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCENARIOS = {
    "hot-land": "hot_land.py",
    "storm": "storm.py",
    "judicial-day": "judicial_day.py",
    "watchers": "watchers.py",
}
NOT_YET = {
    "emall": "the e-mall order book has no wire protocol yet (issue 5 integration pending); "
    "add bench/locust/emall.py once place_order frames exist"
}


def read_spec(name: str) -> dict[str, Any]:
    tree = ast.parse((HERE / SCENARIOS[name]).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SPEC" for t in node.targets
        ):
            spec: dict[str, Any] = ast.literal_eval(node.value)
            return spec
    raise KeyError(f"{SCENARIOS[name]} has no SPEC")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def toml_tables(tables: dict[str, dict[str, Any]]) -> str:
    """Config overrides as TOML (one level of tables, scalar values)."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ server


class Server:
    def __init__(self, data: Path, config: Path) -> None:
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
        argv += ["--data", str(data), "--ws-port", "0", "--http-port", "0"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        self.log: list[str] = []
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pubex serve exited:\n" + "".join(self.log))
            self.log.append(line)
            m = re.search(r"listening ws=(\S+) http=(\S+)", line)
            if m:
                self.ws_url, self.http_url = m.group(1), m.group(2)
                break
        else:
            raise RuntimeError("pubex serve did not print its listening line in 60 s")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.http_url + "metrics", timeout=30) as r:
            text: str = r.read().decode()
            return text

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ----------------------------------------------------------------- metrics

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def histogram(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], name: str
) -> tuple[list[tuple[float, float]], float, float]:
    """[(upper bound, cumulative count)] of the run, count, sum."""
    buckets = []
    for (metric, labels), value in after.items():
        if metric == f"{name}_bucket":
            le = re.search(r'le="([^"]+)"', labels)
            assert le is not None
            bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
            buckets.append((bound, value - before.get((metric, labels), 0.0)))
    buckets.sort()
    count = after.get((f"{name}_count", ""), 0.0) - before.get((f"{name}_count", ""), 0.0)
    total = after.get((f"{name}_sum", ""), 0.0) - before.get((f"{name}_sum", ""), 0.0)
    return buckets, count, total


def quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Linear interpolation inside the bucket holding the q-th observation (the
    upper bound of the last finite bucket when it falls in +Inf)."""
    if count <= 0:
        return None
    rank, prev_bound, prev_cum = q * count, 0.0, 0.0
    for bound, cum in buckets:
        if cum >= rank:
            if bound == float("inf"):
                return prev_bound
            span = cum - prev_cum
            frac = (rank - prev_cum) / span if span else 1.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_cum = bound, cum
    return prev_bound


def share_within(buckets: list[tuple[float, float]], count: float, bound: float) -> float:
    """The fraction of observations in buckets with upper bound <= ``bound``."""
    within = max((cum for b, cum in buckets if b <= bound), default=0.0)
    return within / count if count else 1.0


def server_report(before: str, after: str, wall_s: float) -> dict[str, Any]:
    b, a = parse_metrics(before), parse_metrics(after)
    acks, count, total_us = histogram(b, a, "pubex_ack_latency_us")
    _batch, batches, entries = histogram(b, a, "pubex_batch_entries")
    commits, ncommit, commit_s = histogram(b, a, "pubex_commit_seconds")

    def diff(prefix: str) -> dict[str, float]:
        return {
            labels: value - b.get((metric, labels), 0.0)
            for (metric, labels), value in a.items()
            if metric == prefix and value - b.get((metric, labels), 0.0)
        }

    return {
        "wall_s": round(wall_s, 3),
        "replies": int(count),
        "replies_per_s": round(count / wall_s, 1) if wall_s else 0.0,
        "ack_p50_us": quantile(acks, count, 0.50),
        "ack_p99_us": quantile(acks, count, 0.99),
        "ack_p999_us": quantile(acks, count, 0.999),
        "ack_mean_us": round(total_us / count, 1) if count else None,
        "ack_buckets_us": [[bound, cum] for bound, cum in acks],
        "batches": int(batches),
        "entries_per_batch_mean": round(entries / batches, 2) if batches else None,
        "commit_p99_ms": (
            None
            if quantile(commits, ncommit, 0.99) is None
            else quantile(commits, ncommit, 0.99) * 1000  # type: ignore[operator]
        ),
        "commit_mean_ms": round(commit_s / ncommit * 1000, 3) if ncommit else None,
        "commands": diff("pubex_commands_total"),
        "frames_refused": diff("pubex_frames_refused_total"),
    }


# ------------------------------------------------------------------ locust


def locust_summary(json_file: Path, wall_s: float) -> list[dict[str, Any]]:
    """Per request name: count, failures, rate and percentiles from Locust's JSON."""
    rows = []
    for e in json.loads(json_file.read_text()):
        times = sorted((float(k), v) for k, v in e.get("response_times", {}).items())
        n = e["num_requests"]

        def pct(q: float, times: list[tuple[float, int]] = times, n: int = n) -> float | None:
            if not n:
                return None
            seen = 0
            for t, c in times:
                seen += c
                if seen >= q * n:
                    return t
            return times[-1][0] if times else None

        rows.append(
            {
                "type": e["method"],
                "name": e["name"],
                "requests": n,
                "failures": e["num_failures"],
                "per_s": round(n / wall_s, 1) if wall_s else 0.0,
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
                "max_ms": e.get("max_response_time"),
            }
        )
    return rows


def markdown(
    name: str,
    spec: dict[str, Any],
    args: argparse.Namespace,
    server: dict[str, Any],
    rows: list[dict[str, Any]],
    broken: list[str],
    plan: dict[str, Any],
) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:,.0f}" if isinstance(v, float) else str(v))

    lines = [
        f"# Load run: {name}",
        "",
        f"{args.users} users (spawn {args.spawn_rate}/s), {args.duration} s, seed {args.seed}; "
        f"provisioned {plan['commands']} staff commands in {plan['provision_s']} s. "
        f"Bounds: `{json.dumps(spec['bounds'])}`.",
        "",
        "## Locust (client side, whole milliseconds)",
        "",
        "| type | name | requests | failures | per s | p50 ms | p99 ms | max ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['name']} | {r['requests']} | {r['failures']} | {r['per_s']} | "
            f"{f(r['p50_ms'])} | {f(r['p99_ms'])} | {f(r['max_ms'])} |"
        )
    lines += [
        "",
        "## Server (/metrics, µs histograms: frame received to durable reply sent)",
        "",
        f"- replies: {server['replies']} ({server['replies_per_s']}/s over the Locust run)",
        f"- ack p50 {f(server['ack_p50_us'])} µs, p99 {f(server['ack_p99_us'])} µs, "
        f"p99.9 {f(server['ack_p999_us'])} µs, mean {f(server['ack_mean_us'])} µs "
        "(interpolated inside histogram buckets)",
        f"- batches {server['batches']}, {server['entries_per_batch_mean']} entries per "
        f"batch, commit mean {server['commit_mean_ms']} ms",
        f"- commands: {json.dumps(server['commands'])}",
        f"- gateway refusals: {json.dumps(server['frames_refused'])}",
        "",
        "## Verdict",
        "",
        "within bounds" if not broken else "BOUNDS BROKEN: " + "; ".join(broken),
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.scenario in NOT_YET:
        print(f"load: {args.scenario}: skipped: {NOT_YET[args.scenario]}", file=sys.stderr)
        return 2
    if args.scenario not in SCENARIOS:
        print(
            f"load: unknown scenario {args.scenario!r}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    spec = read_spec(args.scenario)
    args.users = args.users or spec["users"]
    args.duration = args.duration or spec["duration_s"]
    args.spawn_rate = args.spawn_rate or spec.get("spawn_rate", args.users)
    nofile = raise_nofile()
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = reports / f"{args.scenario}-{stamp}"
    provisioned = min(spec.get("bidders", args.users), args.users)  # watchers: its bidders
    with tempfile.TemporaryDirectory(prefix="pubex-load-") as tmp:
        config = Path(tmp) / "load.toml"
        overrides = {"net": {"host": "127.0.0.1"}, **spec.get("server", {})}
        config.write_text(toml_tables(overrides), encoding="utf-8")
        server = Server(Path(tmp) / "data", config)
        broken: list[str] = []
        try:
            print(f"load: {args.scenario}: server {server.ws_url}; open files {nofile}", flush=True)
            plan = provision(
                server.ws_url,
                server.http_url,
                base.with_name(base.name + "-plan.json"),
                kind=spec["provision"]["kind"],
                users=provisioned,
                seed=args.seed,
                params=spec["provision"].get("params", {}),
            )
            print(
                f"load: provisioned {plan['commands']} commands in {plan['provision_s']} s",
                flush=True,
            )
            before = server.metrics()
            started = time.monotonic()
            argv = [
                sys.executable, "-m", "locust", "-f", str(HERE / SCENARIOS[args.scenario]),
                "--headless", "-u", str(args.users), "-r", str(args.spawn_rate),
                "-t", f"{args.duration}s", "--stop-timeout", "5",
                "--csv", str(base), "--html", f"{base}.html", "--json-file", str(base),
                "--only-summary", "--loglevel", "WARNING",
            ]  # fmt: skip
            env = {**os.environ, "PUBEX_LOAD_PLAN": str(base) + "-plan.json"}
            env["PUBEX_LOAD_LATENCY_BOUNDS"] = "1" if args.latency_bounds else "0"
            rc = subprocess.run(argv, env=env, cwd=REPO, timeout=args.duration + 180).returncode
            wall = time.monotonic() - started
            after = server.metrics()
        finally:
            code = server.stop()
        if code not in (0, None):
            broken.append(f"pubex serve exited {code}")
    srv = server_report(before, after, wall)
    json_file = Path(f"{base}.json")
    rows = locust_summary(json_file, wall) if json_file.exists() else []
    if rc != 0:
        broken.append(f"locust exited {rc} (a Locust bound broke, see its output)")
    limit = spec["bounds"].get("server_ack_p99_us")
    if limit is not None and args.latency_bounds:
        buckets = [(float(b), c) for b, c in srv["ack_buckets_us"]]
        within = share_within(buckets, srv["replies"], limit)
        if within < 0.99:
            broken.append(f"server ack p99 over {limit} µs ({within:.4f} within)")
    Path(f"{base}-server.json").write_bytes(
        msgspec.json.format(
            msgspec.json.encode(
                {"scenario": args.scenario, "server": srv, "locust": rows, "broken": broken}
            )
        )
    )
    md = markdown(args.scenario, spec, args, srv, rows, broken, plan)
    Path(f"{base}.md").write_text(md, encoding="utf-8")
    print(md)
    print(f"load: reports {base}.{{md,html,json}}, {base}_stats.csv, {base}-server.json")
    return 1 if broken else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one bounded Locust run against pubex serve")
    ap.add_argument("--scenario", required=True, help=", ".join([*SCENARIOS, *NOT_YET]))
    ap.add_argument("--users", type=int, default=0, help="default: the scenario's")
    ap.add_argument("--duration", type=int, default=0, help="seconds (default: the scenario's)")
    ap.add_argument("--spawn-rate", type=float, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reports", default=str(REPO / "bench" / "reports"))
    ap.add_argument(
        "--no-latency-bounds",
        dest="latency_bounds",
        action="store_false",
        help="check only failures (the test suite never asserts a speed)",
    )
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
