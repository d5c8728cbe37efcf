"""``make load SCENARIO=… USERS=… DURATION=…``: one bounded Locust run against a
real ``pubex serve`` on loopback.

    python -m bench.locust.run --scenario hot-land [--users N] [--duration 60]
                               [--seed 1] [--reports bench/reports]

1. Raise the open-file limit (children inherit it); start ``pubex serve`` on
   127.0.0.1 (ports 0) in a temp data dir, with the scenario's config
   overrides (``SPEC["server"]``).
2. Provision the scenario's lots, keys, registrations and deposits over one
   staff WebSocket (``simulators.provision``) and write the plan.
3. Scrape ``/metrics`` (the server's µs histograms and counters) before and
   after a headless Locust run (CSV, HTML and JSON reports); the server's
   ack latency percentiles, ack rate and outcome counts over the run go into
   ``<scenario>-<stamp>-server.json`` and the summary ``<stamp>.md``.
   A sampler scrapes ``/metrics`` every ``--sample-s`` seconds too, with the
   load average: the *steady window* (from the sample after the last user
   spawned to the end) gives the sustained reply rate and its own ack
   percentiles, apart from the ramp-up; the per-sample rates go in the report.
4. Exit non-zero when Locust's ``quitting`` listener found a bound broken
   (failure ratio, a p99), when the server-measured ack p99 breaks
   ``SPEC["bounds"]["server_ack_p99_us"]``, or when the server died.
5. ``--profile``: ``py-spy record`` (the ``profile`` extra) samples the server
   and the Locust process for the length of the run; raw collapsed stacks go
   to ``<base>-pyspy-{server,locust}.txt`` and the top frames by own time and
   by inclusive time into the summary.

Each scenario is a locustfile in this directory stating its load and bounds in
a literal ``SPEC`` (read here with ``ast``: this process never imports locust
or gevent).
"""

from __future__ import annotations

import argparse
import ast
import collections
import itertools
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

import orjson

from simulators.provision import provision

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCENARIOS = {
    "hot-land": "hot_land.py",
    "storm": "storm.py",
    "judicial-day": "judicial_day.py",
    "watchers": "watchers.py",
    "emall": "emall.py",
}
NOT_YET: dict[str, str] = {}


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


def _text(value: Any) -> str:
    """One JSON value as text (TOML values, report lines)."""
    return orjson.dumps(value).decode()


def toml_tables(tables: dict[str, dict[str, Any]]) -> str:
    """Config overrides as TOML (one level of tables, scalar values)."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_text(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ server


class Server:
    def __init__(self, data: Path, config: Path, edges: int | None = None) -> None:
        argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--config", str(config)]
        argv += ["--data", str(data), "--ws-port", "0", "--http-port", "0", "--sandbox"]
        argv += [] if edges is None else ["--edges", str(edges)]
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

    def alive(self) -> bool:
        return self.proc.poll() is None

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


_PROCESS_LABELS = re.compile(r',?process(?:_role)?="[^"]*"')


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """(name, labels) -> value, summed over the server's processes: a split
    server's series carry ``process_role`` / ``process`` labels, dropped here
    (a gauge summed over processes is the server's total, too)."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            labels = _PROCESS_LABELS.sub("", m.group(2) or "").replace("{,", "{")
            labels = "" if labels == "{}" else labels
            key = (m.group(1), labels)
            out[key] = out.get(key, 0.0) + float(m.group(3))
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


def fsync_probe(n: int = 150) -> dict[str, float]:
    """The disk's limit in the same run: ``n`` one-entry LMDB commits with fsync
    (what a lone bid's durable ack waits for), ms percentiles."""
    import lmdb

    times = []
    with tempfile.TemporaryDirectory(prefix="pubex-fsync-", dir=tempfile.gettempdir()) as d:
        env = lmdb.open(d, map_size=64 << 20, sync=True, metasync=True)
        try:
            for i in range(n):
                t0 = time.perf_counter()
                with env.begin(write=True) as txn:
                    txn.put(i.to_bytes(8, "big"), b"x" * 200)
                times.append((time.perf_counter() - t0) * 1000)
        finally:
            env.close()
    times.sort()
    return {
        "commits": n,
        "p50_ms": round(times[n // 2], 3),
        "p99_ms": round(times[min(n - 1, int(n * 0.99))], 3),
        "max_ms": round(times[-1], 3),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Sampler:
    """Scrapes ``/metrics`` every ``period`` s (with the load average) while the
    Locust run lasts."""

    def __init__(self, server: Server, period: float) -> None:
        self.server, self.period = server, period
        self.samples: list[tuple[float, str, list[float]]] = []
        self.started = time.monotonic()
        self.load_start = loadavg()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(self.period):
            try:
                text = self.server.metrics()
            except OSError:
                continue
            self.samples.append((time.monotonic() - self.started, text, loadavg()))

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=35)


def steady_report(
    samples: list[tuple[float, str, list[float]]],
    before: str,
    after: str,
    wall_s: float,
    spawned_s: float,
    load_start: list[float],
    connections: int = 0,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """The per-sample reply rates, and the steady window (from the first sample
    at or after ``spawned_s`` -- every user started -- to the last sample
    before Locust's ``duration_s`` ran out, when it starts stopping its users:
    thousands of connections closing at once, with bids in flight, is the
    end of the test, not the steady state; the whole run is reported too):
    its reply rate and ack percentiles, and the load average over the run."""
    points = [(0.0, parse_metrics(before), load_start)]
    points += [(t, parse_metrics(text), la) for t, text, la in samples]
    points.append((wall_s, parse_metrics(after), loadavg()))
    series = []
    for (t0, m0, _), (t1, m1, la) in itertools.pairwise(points):
        n = m1.get(("pubex_ack_latency_us_count", ""), 0.0) - m0.get(
            ("pubex_ack_latency_us_count", ""), 0.0
        )
        series.append([round(t1, 1), round(n / (t1 - t0), 1) if t1 > t0 else 0.0, la[0]])

    def connected(m: dict[tuple[str, str], float]) -> float:
        return sum(v for (name, _), v in m.items() if name == "pubex_connections")

    # every user started, and (when known) every connection open
    start = next(
        (pt for pt in points if pt[0] >= spawned_s and connected(pt[1]) >= 0.99 * connections),
        points[-1],
    )
    end = points[-1]
    if duration_s is not None:
        end = max(
            (pt for pt in points if start[0] < pt[0] <= duration_s),
            key=lambda pt: pt[0],
            default=end,
        )
    window = end[0] - start[0]
    out: dict[str, Any] = {
        "spawned_s": round(spawned_s, 1),
        "rate_series": series,  # [t s, replies/s over the last sample period, load 1 min]
        "load_avg_start": load_start,
        "load_avg_max_1m": max(la[0] for _, _, la in points),
        "load_avg_end": points[-1][2],
    }
    if window < 3:
        out["steady_s"] = 0.0
        return out
    acks, count, _ = histogram(start[1], end[1], "pubex_ack_latency_us")
    out.update(
        steady_from_s=round(start[0], 1),
        steady_to_s=round(end[0], 1),
        steady_s=round(window, 1),
        steady_replies=int(count),
        steady_per_s=round(count / window, 1),
        steady_ack_p50_us=quantile(acks, count, 0.50),
        steady_ack_p99_us=quantile(acks, count, 0.99),
        steady_ack_p999_us=quantile(acks, count, 0.999),
    )
    # the sequencer's share (split server): a command read from the link to its
    # answer queued back -- the rest of the ack is the edge's and the link's
    seq, seq_count, _ = histogram(start[1], end[1], "pubex_sequencer_answer_us")
    if seq_count:
        out.update(
            steady_sequencer_p50_us=quantile(seq, seq_count, 0.50),
            steady_sequencer_p99_us=quantile(seq, seq_count, 0.99),
        )
    return out


def pyspy(pid: int, out: Path, duration: float) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print("load: --profile: py-spy is not installed (pip install -e '.[profile]')")
        return None
    argv = [str(exe), "record", "--pid", str(pid), "--format", "raw", "--rate", "50"]
    argv += ["--duration", str(int(duration)), "--nonblocking", "-o", str(out)]
    argv += ["--subprocesses"]  # a split server: its sequencer and edges are children
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


# Where a server sample goes: the first rule whose every substring is in the
# stack (and none of its exclusions) names it.
SERVER_PARTS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("handshake: auth signature verify", ("Authenticator._bidder", "verify"), ()),
    ("handshake: hello (codes: a scan of every lot)", ("Gateway._hello",), ()),
    (
        "handshake: HTTP upgrade, accept, close",
        ("_handle_connection",),
        ("Gateway._receiver", "Gateway._sender", "Gateway._heartbeat"),
    ),
    ("frame: signature verify (Ed25519)", ("verify_bid",), ()),
    ("frame: WebSocket read + parse (trio-websocket reader task)", ("_reader_task",), ()),
    ("frame: receive, decode, dispatch", ("Gateway._receiver",), ()),
    ("send: acks, events, snapshots (WebSocket)", ("Gateway._sender",), ()),
    ("heartbeat pings", ("Gateway._heartbeat",), ()),
    ("snapshots (conflation)", ("Gateway.snapshots",), ()),
    ("commit (LMDB group commit, fsync)", ("CommitWorker",), ()),
    ("engine + ledger journal", ("Runtime.",), ()),
    ("/metrics, HTTP", ("serve_http",), ()),
    ("trio run loop (task switches, cancels), other", ("",), ()),
]


def profile_summary(raw: Path, top: int = 12) -> dict[str, Any]:
    """Top frames of py-spy's collapsed stacks: by own (leaf) samples and by
    inclusive samples (a frame counted once per stack); for the server, the
    share of each part (``SERVER_PARTS``)."""
    parts: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] if " (" in f else f for f in
                  stack.split(";")]  # fmt: skip
        total += count
        for label, needles, without in SERVER_PARTS:
            if all(n in stack for n in needles) and not any(w in stack for w in without):
                parts[label] += count
                break
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count

    def pct(c: collections.Counter[str]) -> list[list[Any]]:
        return [[f, round(100 * k / total, 1)] for f, k in c.most_common(top)] if total else []

    return {
        "samples": total,
        "parts_pct": pct(parts) if "gateway/entry/cli" in raw.read_text()[:4000] else [],
        "own_pct": pct(own),
        "inclusive_pct": pct(incl),
    }


# ------------------------------------------------------------------ locust


def locust_summary(json_file: Path, wall_s: float) -> list[dict[str, Any]]:
    """Per request name: count, failures, rate and percentiles from Locust's JSON."""
    rows = []
    for e in orjson.loads(json_file.read_bytes()):
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


def locust_bounds(rows: list[dict[str, Any]], bounds: dict[str, Any], latency: bool) -> list[str]:
    """The scenario's Locust bounds, re-checked on the summary rows."""
    out = []
    n = sum(r["requests"] for r in rows)
    fails = sum(r["failures"] for r in rows)
    if n and fails / n > bounds.get("fail_ratio", 0.0):
        out.append(f"Locust failures {fails} of {n} requests")
    for name, limit in bounds.get("p99_ms", {}).items() if latency else ():
        kind, _, label = name.partition(" ")
        for r in rows:
            if (r["type"], r["name"]) == (kind, label) and (r["p99_ms"] or 0) > limit:
                out.append(f"Locust {name} p99 {r['p99_ms']:.0f} ms > {limit} ms")
    return out


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
        f"Bounds: `{_text(spec['bounds'])}`.",
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
        f"batch, commit mean {server['commit_mean_ms']} ms, p99 {f(server['commit_p99_ms'])} ms; "
        "the disk in the same run (one-entry LMDB commits with fsync, before / after): p50 "
        + " / ".join(f"{server['fsync_probe'][k]['p50_ms']}" for k in ("before", "after"))
        + " ms, p99 "
        + " / ".join(f"{server['fsync_probe'][k]['p99_ms']}" for k in ("before", "after"))
        + " ms",
        f"- commands: {_text(server['commands'])}",
        f"- gateway refusals: {_text(server['frames_refused'])}",
    ]
    steady = server.get("steady", {})
    if steady.get("steady_s"):
        lines += [
            f"- steady window (every user started, from {steady['steady_from_s']} s "
            f"to {steady.get('steady_to_s', '?')} s, before Locust stops its users, "
            f"{steady['steady_s']} s): {steady['steady_per_s']} replies/s, ack p50 "
            f"{f(steady['steady_ack_p50_us'])} µs, p99 {f(steady['steady_ack_p99_us'])} µs, "
            f"p99.9 {f(steady['steady_ack_p999_us'])} µs",
        ]
        if "steady_sequencer_p50_us" in steady:
            lines += [
                f"- of which in the sequencer (command read from the link to its answer "
                f"queued): p50 {f(steady['steady_sequencer_p50_us'])} µs, "
                f"p99 {f(steady['steady_sequencer_p99_us'])} µs",
            ]
    if steady:
        lines += [
            f"- load average {steady['load_avg_start']} at the start, 1 min max "
            f"{steady['load_avg_max_1m']} during the run, "
            f"{steady['load_avg_end']} at its end (2 cores, shared)",
            "- replies/s per sample [t s, per s, load 1 min]: " + _text(steady["rate_series"]),
        ]
    for side, prof in server.get("profile", {}).items():
        lines += ["", f"## py-spy: {side} ({prof['samples']} samples)", ""]
        if prof.get("parts_pct"):
            lines += ["| % of samples | part |", "| ---: | --- |"]
            lines += [f"| {pct} | {part} |" for part, pct in prof["parts_pct"]]
            lines += [""]
        lines += ["| own % | frame |", "| ---: | --- |"]
        lines += [f"| {pct} | `{frame}` |" for frame, pct in prof["own_pct"]]
        lines += ["", "| inclusive % | frame |", "| ---: | --- |"]
        lines += [f"| {pct} | `{frame}` |" for frame, pct in prof["inclusive_pct"]]
    lines += [
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
        overrides: dict[str, dict[str, Any]] = {
            "net": {"host": "127.0.0.1"},
            # every simulated user connects from 127.0.0.1: the per-address cap
            # (meant for one client's many connections) would refuse them
            # ... and provisioning pipelines thousands of staff commands
            "limits": {
                "max_connections_per_address": 1_000_000,
                "staff_commands_per_s": 1_000_000,
                "staff_burst": 1_000_000,
            },
        }
        for table, values in spec.get("server", {}).items():
            overrides[table] = {**overrides.get(table, {}), **values}
        config.write_text(toml_tables(overrides), encoding="utf-8")
        server = Server(Path(tmp) / "data", config, getattr(args, "edges", None))
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
            probe_before = fsync_probe()
            before = server.metrics()
            started = time.monotonic()
            sampler = Sampler(server, args.sample_s)
            argv = [
                sys.executable, "-m", "locust", "-f", str(HERE / SCENARIOS[args.scenario]),
                "--headless", "-u", str(args.users), "-r", str(args.spawn_rate),
                "-t", f"{args.duration}s", "--stop-timeout", "5",
                "--csv", str(base), "--html", f"{base}.html", "--json-file", str(base),
                "--only-summary", "--loglevel", "WARNING",
            ]  # fmt: skip
            env = {**os.environ, "PUBEX_LOAD_PLAN": str(base) + "-plan.json"}
            env["PUBEX_LOAD_LATENCY_BOUNDS"] = "1" if args.latency_bounds else "0"
            spies: dict[str, subprocess.Popen[bytes] | None] = {}
            locust = subprocess.Popen(argv, env=env, cwd=REPO)
            if args.profile:
                span = args.duration + 5
                spies["server"] = pyspy(server.proc.pid, Path(f"{base}-pyspy-server.txt"), span)
                spies["locust"] = pyspy(locust.pid, Path(f"{base}-pyspy-locust.txt"), span)
            try:
                rc = locust.wait(timeout=args.duration + 180)
            except subprocess.TimeoutExpired:
                locust.kill()
                rc = locust.wait()
            wall = time.monotonic() - started
            sampler.stop()
            try:
                after = server.metrics()
            except OSError as e:  # the server died: report what the samples saw
                broken.append(f"/metrics after the run: {e}")
                after = sampler.samples[-1][1] if sampler.samples else before
            for spy in spies.values():
                if spy is not None:
                    try:
                        spy.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        spy.wait()
        finally:
            code = server.stop()
            Path(f"{base}-server.log").write_text("".join(server.log), encoding="utf-8")
        if code not in (0, None):
            broken.append(f"pubex serve exited {code}")
    srv = server_report(before, after, wall)
    srv["fsync_probe"] = {"before": probe_before, "after": fsync_probe()}
    srv["steady"] = steady_report(
        sampler.samples,
        before,
        after,
        wall,
        args.users / args.spawn_rate + 1.0,
        sampler.load_start,
        connections=args.users,  # every user holds one connection
        duration_s=args.duration,
    )
    srv["profile"] = {
        side: profile_summary(Path(f"{base}-pyspy-{side}.txt"))
        for side in ("server", "locust")
        if Path(f"{base}-pyspy-{side}.txt").exists()
    }
    json_file = Path(f"{base}.json")
    rows = locust_summary(json_file, wall) if json_file.exists() else []
    if rc != 0:  # name what broke (the quitting listener printed it to Locust's output)
        named = locust_bounds(rows, spec["bounds"], args.latency_bounds)
        broken += named or [f"locust exited {rc} (see its output)"]
    limit = spec["bounds"].get("server_ack_p99_us")
    if limit is not None and args.latency_bounds:
        buckets = [(float(b), c) for b, c in srv["ack_buckets_us"]]
        within = share_within(buckets, srv["replies"], limit)
        if within < 0.99:
            broken.append(f"server ack p99 over {limit} µs ({within:.4f} within)")
    Path(f"{base}-server.json").write_bytes(
        orjson.dumps(
            {"scenario": args.scenario, "server": srv, "locust": rows, "broken": broken},
            option=orjson.OPT_INDENT_2,
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
    ap.add_argument("--sample-s", type=float, default=5.0, help="/metrics sampling period")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the server and Locust for the run (the profile extra)",
    )
    ap.add_argument(
        "--edges", type=int, help="pubex serve --edges K (0: one process; default: serve's)"
    )
    ap.add_argument(
        "--no-latency-bounds",
        dest="latency_bounds",
        action="store_false",
        help="check only failures (the test suite never asserts a speed)",
    )
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
