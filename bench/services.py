"""Companion services benchmark: each follower against the irreducible work of following.

``python -m bench services [--json] [--quick] [--entries N] [--live-s S] [--keep DIR]``

Issue 6's targets, each measured against its limit in the same run:

* **Catch-up** over a 1,000,000-entry ledger (``--quick``: 20,000).  The ledger
  is built once per run in a temp dir: one judicial day (``simulators`` harness,
  ``JudicialDay``, seed 1: 1,000 lots, ~52k entries) is simulated, then its
  commands are replayed day after day through the real engine and
  ``gateway.sequencer.journal.Journal`` (fsync'd group commits) with every lot, bidder and
  staff origin renamed per day and every time shifted by whole days, until the
  ledger holds exactly N entries.  Bidder and staff commands carry a gateway
  envelope (IP, device fingerprint, a frame-sized payload and signature), as
  they do live, so supervision's connection rules have their facts.
* ``raw_scan_entries_per_s`` -- the irreducible work of following: one cursor
  over the same ledger (one read txn) that checks each entry's hash chain
  (key = next seq, prev hash, blake2b re-computed, body decoded, body seq) and
  decodes its command and events.  Run in its own process before and after the
  followers; the faster run is the reference (the stricter ratio).
  ``raw_scan_body_only_entries_per_s`` is the same scan without the command
  and events decode (``ledger.verify.verify_chain``'s work).
* Each follower (``supervision``, ``disclosure``, ``registry``) is started as
  its real service (the ``pubex supervise|disclose|registry`` entry point, in
  its own process, ``--http-port 0``) on a fresh store: its first catch-up
  happens before it binds its port, timed from its first ``Follower.step`` to
  the last one (wall and process CPU).  ``follower_entries_per_s`` is the
  slowest; each follower's ``to_raw_scan`` ratio has the target >= 0.5.
* **Live lag**: ``pubex serve`` (temp data dir, fsync'd ledger, the per-bidder
  rate limit lifted as in ``bench gateway``) with the followers running beside
  it as processes; the gateway's max ack rate is measured closed-loop (50
  connections, W=1, with the followers running), then bids are sent open loop
  at half that rate for ``--live-s`` seconds (``bench.gateway``'s load
  processes).  Each follower's lag per entry = the wall time its chunk
  committed in the follower's store minus the entry's sequencer timestamp
  (stamped just before the gateway's group commit and its fsync, so an upper
  bound from the durable commit); only entries stamped inside the open-loop
  window count.  ``live_lag_p99_ms`` is the worst follower's p99 (target <= 50
  ms).  The services' own ``pubex_follower_lag_seconds`` histogram (per chunk,
  oldest entry) is scraped before and after the window as a cross-check
  (``metric_chunk_lag_p99_le_ms``: the bucket bound covering 99 % of chunks).

How the per-entry times are taken: the child process (``python -m
bench.services child run NAME``) wraps ``Follower.step`` and
``Follower._note_chunk`` with a timestamp each (a few hundred ns per chunk,
one tuple per entry), then calls the service's own CLI function unchanged.
Timing never fails the run; a follower whose service does not import is
skipped with the error in ``skipped``.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import emit, pct, ratio, render
from bench.stats import machine as stats_machine

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"follower_to_raw_scan": 0.5, "live_lag_p99_ms": 50.0}
# name -> (CLI module, entry point) of each companion service.
SERVICES: dict[str, tuple[str, str]] = {
    "supervision": ("services.supervision.cli", "run_supervise"),
    "disclosure": ("services.disclosure.cli", "run_disclose"),
    "registry": ("services.registry.cli", "run_registry"),
}
DAY_NS = 86_400 * 1_000_000_000
LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5, 30)


def log(msg: str) -> None:
    print(f"[bench services] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# ------------------------------------------------------------------ the ledger


def _renamer(tag: str) -> Any:
    """Per-day names: lots, bidders and the staff origin get the day's tag."""

    def rename(v: str) -> str:
        if v.startswith("bidder:"):
            return "bidder:" + rename(v[7:])
        if v.startswith("person-") or (len(v) == 5 and v[0] == "J"):
            return f"{tag}-{v}"
        if v.startswith("staff:"):
            return f"{v}-{tag}"
        return v

    return rename


def _for_day(cmd: Any, rename: Any, offset_ns: int) -> Any:
    import msgspec

    changes: dict[str, Any] = {}
    for f in cmd.__struct_fields__:
        v = getattr(cmd, f)
        if type(v) is str:
            nv = rename(v)
            if nv != v:
                changes[f] = nv
        elif type(v) is int and f.endswith("_ns") and v > 0:
            changes[f] = v + offset_ns
    return msgspec.structs.replace(cmd, **changes) if changes else cmd


def _envelope(cmd: Any) -> bytes:
    """The connection facts a live gateway would ledger with this command."""
    import hashlib

    import msgspec

    from ledger.record import Envelope, encode_envelope

    role, _, who = cmd.origin.partition(":")
    if role not in ("bidder", "staff"):
        return b""  # the runtime's own commands (ticks) carry none
    h = zlib.crc32(who.encode())
    ip = "127.0.0.1" if role == "staff" else f"10.{h >> 24 & 63}.{h >> 16 & 255}.{h & 255}"
    payload = msgspec.json.encode(cmd).decode()
    sig = hashlib.blake2b(payload.encode(), digest_size=64).hexdigest()
    return encode_envelope(Envelope(role, who, ip, f"fp-{h:08x}", payload, sig))


def build_ledger(
    ledger_dir: Path, entries: int, lots: int, seed: int = 1, snapshot_every: int = 1 << 62
) -> dict[str, Any]:
    """One simulated judicial day, replayed day after day (renamed, shifted) through
    the engine and the Journal until ``ledger_dir`` holds exactly ``entries``.
    ``snapshot_every``: the Journal's snapshot policy (default: none -- the
    followers never read them; ``bench startup`` passes the server's)."""
    from engine.messages import decode_command
    from engine.router import Router
    from gateway.sequencer.journal import Journal
    from ledger.record import decode_body
    from ledger.store import LedgerStore
    from simulators.harness import EPOCH_NS, Harness
    from simulators.scenarios import JudicialDay

    t0 = time.perf_counter()
    template = ledger_dir.parent / "template"
    sim = Harness(template, seed, batch_entries=4096)
    day = type("BenchDay", (JudicialDay,), {"LOTS": lots})(sim)
    day.setup()
    sim.run()
    sim.close()
    with LedgerStore.open(template, readonly=True) as tpl:
        rows = []
        for _seq, _prev, _h, body in tpl.iter_entries():
            b = decode_body(body)
            rows.append((b.ts_ns, decode_command(b.command)))
    stride = ((rows[-1][0] - EPOCH_NS) // DAY_NS + 2) * DAY_NS
    t_template = time.perf_counter() - t0
    store = LedgerStore.open(ledger_dir, map_size=4 << 30)
    journal = Journal(
        store, Router(), snapshot_every_entries=snapshot_every, batch_max_entries=4096
    )
    n = days = 0
    try:
        while n < entries:
            rename, offset = _renamer(f"d{days:02d}"), days * stride
            for ts, cmd in rows:
                c = _for_day(cmd, rename, offset)
                journal.append(c, ts + offset, _envelope(c))
                if journal.full():
                    journal.commit()
                n += 1
                if n >= entries:
                    break
            days += 1
        journal.commit()
    finally:
        store.close()
    return {
        "entries": n,
        "template_entries": len(rows),
        "days": days,
        "template_s": round(t_template, 2),
        "build_s": round(time.perf_counter() - t0, 2),
        "ledger_mb": round((ledger_dir / "data.mdb").stat().st_size / 2**20, 1),
    }


def raw_scan(ledger_dir: Path, decode_all: bool = True) -> dict[str, Any]:
    """The irreducible work of following: verify the chain and decode every entry."""
    from engine.messages import decode_command, decode_events
    from ledger.record import GENESIS, HASH_SIZE, HEADER_SIZE
    from ledger.store import LedgerStore
    from ledger.verify import check_entry

    with LedgerStore.open(ledger_dir, readonly=True) as store:
        c0, t0 = time.process_time(), time.perf_counter()
        expected, prev = 1, GENESIS
        for k, v in store.iter_raw(1):
            reason, body = check_entry(expected, prev, k, v)
            if body is None:
                raise RuntimeError(f"chain broken at {expected}: {reason}")
            if decode_all:
                decode_command(body.command)
                decode_events(body.events)
            prev = v[HASH_SIZE:HEADER_SIZE]
            expected += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = expected - 1
    return {
        "entries": n,
        "wall_s": round(wall, 3),
        "per_s": round(n / wall),
        "cpu_us_per_entry": round(cpu / max(n, 1) * 1e6, 2),
    }


# ------------------------------------------------------------------ the follower children


def _instrument(samples: array.array[int], timing: dict[str, float]) -> None:
    """Time ``Follower.step`` and record per entry (its sequencer ts, the wall time
    the step that applied it began reading, the wall time its chunk committed)."""
    from services.follower import Follower

    step, note = Follower.step, Follower._note_chunk
    began = [0]

    def timed_step(self: Follower, limit: int | None = None) -> int:
        if "t0" not in timing:
            timing["t0"], timing["c0"] = time.perf_counter(), time.process_time()
        began[0] = time.time_ns()
        n = step(self, limit)
        if n:
            timing["t1"], timing["c1"] = time.perf_counter(), time.process_time()
            timing["entries"] = timing.get("entries", 0) + n
        return n

    def noted(self: Follower, entries: list[Any]) -> None:
        now = time.time_ns()
        note(self, entries)
        for e in entries:
            samples.extend((e.ts_ns, began[0], now))

    Follower.step = timed_step  # type: ignore[method-assign]
    Follower._note_chunk = noted  # type: ignore[method-assign]


def child_run(name: str, data: Path, out: Path) -> int:
    """The service ``name`` as ``pubex`` would run it, instrumented; on exit writes
    its catch-up timing (JSON) and samples (int64 triples) to ``out`` and ``out.bin``."""
    module, fn = SERVICES[name]
    mod = importlib.import_module(module)
    ap = argparse.ArgumentParser()
    mod.configure(ap)
    # a scratch data dir on loopback: the development tokens are fine (--demo)
    args = ap.parse_args(["--data", str(data), "--http-port", "0", "--demo"])
    samples: array.array[int] = array.array("q")
    timing: dict[str, float] = {}
    _instrument(samples, timing)

    def dump(rc: int) -> None:
        out.with_suffix(".bin").write_bytes(samples.tobytes())
        out.write_text(json.dumps({"rc": rc, **timing}))

    def early_term(signum: int, frame: Any) -> None:
        # Only reached while the service's own SIGTERM receiver is not installed (the
        # parent waits for /healthz first): keep the figures, exit at once.
        dump(-signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, early_term)
    rc: int = getattr(mod, fn)(args)
    dump(rc)
    return rc


class Child:
    """A follower service process; ready once it prints ``listening http=URL``."""

    def __init__(self, name: str, data: Path, out: Path) -> None:
        self.name, self.out = name, out
        argv = [sys.executable, "-m", "bench.services", "child", "run", name]
        argv += ["--data", str(data), "--out", str(out)]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.url = ""

    def wait_ready(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening http=" not in line:
            self.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"{self.name} did not start: {line!r} {err[-2000:]}")
        self.url = line.split("http=", 1)[1].split()[0]
        # Served once: the service's signal receiver (started beside its listener) is
        # in place, so a SIGTERM from now on stops it cleanly.
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=10) as r:
                    r.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self.url

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait; the timing it wrote and its (ts, read began, applied) samples."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        if not self.out.exists():
            raise RuntimeError(
                f"{self.name} exited {self.proc.returncode} without its figures: {err[-3000:]}"
            )
        res: dict[str, Any] = json.loads(self.out.read_text())
        samples: array.array[int] = array.array("q")
        samples.frombytes(self.out.with_suffix(".bin").read_bytes())
        res["samples"] = samples
        return res

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def available_followers() -> tuple[list[str], dict[str, str]]:
    names, skipped = [], {}
    for name, (module, fn) in SERVICES.items():
        try:
            mod = importlib.import_module(module)
            getattr(mod, fn)
            importlib.import_module(module.rsplit(".", 1)[0] + ".service")
        except Exception as e:  # a service still being written must not stop the run
            skipped[name] = f"import failed: {type(e).__name__}: {e}"
            continue
        names.append(name)
    return names, skipped


def _child(argv: list[str]) -> dict[str, Any]:
    """Run ``python -m bench.services child ...`` and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.services", "child", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv[0]} failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def catch_up(name: str, data: Path) -> dict[str, Any]:
    out = data / f"bench-{name}.json"
    shutil.rmtree(data / name, ignore_errors=True)  # a fresh store: catch up from seq 1
    child = Child(name, data, out)
    try:
        child.wait_ready()  # printed once the first catch-up is done
    finally:
        res = child.stop()
    wall = res.get("t1", 0.0) - res.get("t0", 0.0)
    n = int(res.get("entries", 0))
    return {
        "entries": n,
        "wall_s": round(wall, 3),
        "entries_per_s": round(n / wall) if wall > 0 else 0,
        "cpu_us_per_entry": round((res.get("c1", 0) - res.get("c0", 0)) / max(n, 1) * 1e6, 2),
    }


# ------------------------------------------------------------------ live lag


def scrape_lag_hist(http_url: str) -> dict[str, float]:
    """Bucket counts of ``pubex_follower_lag_seconds`` (le -> cumulative count)."""
    out: dict[str, float] = {}
    url = http_url.rstrip("/") + "/metrics"
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("pubex_follower_lag_seconds_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[le] = float(line.rsplit(" ", 1)[1])
    return out


def hist_p99_le_ms(before: dict[str, float], after: dict[str, float]) -> float | None:
    total = after.get("+Inf", 0) - before.get("+Inf", 0)
    if total <= 0:
        return None
    for b in LAG_BUCKETS_S:
        key = next((k for k in after if k != "+Inf" and float(k) == b), None)
        if key is not None and after[key] - before.get(key, 0) >= 0.99 * total:
            return round(b * 1000, 1)
    return None


def _wait_applied(serve_http: str, follower_urls: Sequence[str], timeout_s: float) -> None:
    """Until every follower's position reaches the gateway's durable seq (or timeout)."""
    with urllib.request.urlopen(serve_http.rstrip("/") + "/healthz", timeout=10) as r:
        durable = json.loads(r.read())["durable_seq"]
    deadline = time.monotonic() + timeout_s
    for url in follower_urls:
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=10) as r:
                if json.loads(r.read()).get("position", 0) >= durable:
                    break
            time.sleep(0.05)


def lag_figures(samples: array.array[int], lo_ns: int, hi_ns: int) -> dict[str, Any]:
    """Per entry stamped in [lo, hi]: lag = applied - ts, split into the wait (ts -> the
    follower's read began: gateway commit + fsync + the follower's poll) and the apply
    (read began -> its store committed: read, verify, project, fsync)."""
    lags, waits, applies = [], [], []
    for i in range(0, len(samples), 3):
        ts, began, applied = samples[i], samples[i + 1], samples[i + 2]
        if lo_ns <= ts <= hi_ns:
            lags.append(applied - ts)
            waits.append(began - ts)
            applies.append(applied - began)
    lags.sort()
    waits.sort()
    applies.sort()
    ms = lambda ns: round(ns / 1e6, 2)  # noqa: E731
    return {
        "live_lag_samples": len(lags),
        "live_lag_p50_ms": ms(pct(lags, 50)),
        "live_lag_p99_ms": ms(pct(lags, 99)),
        "live_lag_p999_ms": ms(pct(lags, 99.9)),
        "live_lag_max_ms": ms(lags[-1]) if lags else 0.0,
        "live_wait_p50_ms": ms(pct(waits, 50)),
        "live_wait_p99_ms": ms(pct(waits, 99)),
        "live_apply_p50_ms": ms(pct(applies, 50)),
        "live_apply_p99_ms": ms(pct(applies, 99)),
    }


def live_lag(
    names: Sequence[str], tmp: Path, live_s: float, closed_s: float, conns: int
) -> dict[str, Any]:
    from bench.gateway import Server, closed_pair, pubex_setup, raise_nofile, run_load, scrape

    raise_nofile()
    data = tmp / "live"
    shutil.rmtree(data, ignore_errors=True)  # a kept dir's earlier live run
    cfg = tmp / "bench.toml"
    cfg.write_text(
        "# bench services: lift only the per-bidder rate limit (as bench gateway)\n"
        "[limits]\nbids_per_s = 100000000\nbid_burst = 100000000\n"
    )
    argv = [sys.executable, "-m", "gateway.entry.cli", "serve", "--config", str(cfg)]
    argv += ["--data", str(data), "--ws-port", "0", "--http-port", "0", "--sandbox"]
    r: dict[str, Any] = {}
    srv = Server(argv, "pubex serve")
    children: dict[str, Child] = {}
    try:
        log("live: setup (keys, lots, registrations, deposits)")
        pubex_setup(srv.url, conns)
        for name in names:
            children[name] = Child(name, data, data / f"bench-live-{name}.json")
        for c in children.values():
            c.wait_ready()
        log(f"live: max ack rate, {conns} connections x W=1, {closed_s} s, followers running")
        res = closed_pair(srv.url, srv.pid, conns, 1, min(1.0, closed_s), closed_s)
        rate = max(50.0, res["per_s"] * 0.5)
        before = {n: scrape_lag_hist(c.url) for n, c in children.items()}
        log(f"live: open loop at {rate:,.0f}/s for {live_s} s; lag per entry per follower")
        m0, lo = scrape(srv.http), time.time_ns()
        ol = run_load(
            "open", srv.url, srv.pid, conns=conns, rate=rate, duration=live_s, phase="open"
        )
        m1, hi = scrape(srv.http), time.time_ns()
        d = {k: m1[k] - m0[k] for k in m0}
        _wait_applied(srv.http, [c.url for c in children.values()], 10.0)
        after = {n: scrape_lag_hist(c.url) for n, c in children.items()}
        r.update(
            {
                "live_max_acks_per_s": res["per_s"],
                "live_rate_per_s": round(rate),
                "live_bids": ol["msgs"],
                "live_missing_acks": ol["missing"],
                "live_bad": ol["bad"],
                "live_first_bad": ol["first_bad"],
                "live_ack_p99_us": ol["p99_us"],
                "live_s": live_s,
                # The gateway's own part of every lag: its group commit (fsync) after
                # stamping the entries, mean per batch over the window.
                "live_gateway_commit_mean_ms": round(
                    d["pubex_commit_seconds_sum"] * 1e3 / (d["pubex_commit_seconds_count"] or 1), 2
                ),
                "live_gateway_batch_mean_entries": round(
                    d["pubex_batch_entries_sum"] / (d["pubex_batch_entries_count"] or 1), 1
                ),
            }
        )
        per: dict[str, dict[str, Any]] = {}
        for name, c in children.items():
            got = c.stop()
            per[name] = lag_figures(got["samples"], lo, hi)
            per[name]["metric_chunk_lag_p99_le_ms"] = hist_p99_le_ms(before[name], after[name])
        r["per_follower"] = per
    finally:
        for c in children.values():
            c.kill()
        srv.stop()
    return r


# ------------------------------------------------------------------ the run


def run(
    quick: bool,
    *,
    entries: int | None = None,
    live_s: float | None = None,
    keep: Path | None = None,
    conns: int = 50,
) -> dict[str, Any]:
    entries = entries or (20_000 if quick else 1_000_000)
    live_s = live_s or (2.0 if quick else 10.0)
    closed_s = 0.5 if quick else 3.0
    names, skipped = available_followers()
    r: dict[str, Any] = {"quick": quick, "load_avg_start": loadavg(), "followers": names}
    if skipped:
        r["skipped"] = skipped
        for name, why in skipped.items():
            log(f"{name}: skipped ({why})")
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pubex-bench-sv-")))
        else:
            tmp = keep
            tmp.mkdir(parents=True, exist_ok=True)
        data = tmp / "catchup"
        ledger_dir = data / "ledger"
        if (ledger_dir / "data.mdb").exists():
            log(f"reusing the ledger in {ledger_dir}")
            built = {"reused": True}
        else:
            log(f"building a {entries:,}-entry ledger (judicial days through the Journal)")
            lots = min(1000, max(20, entries // 50))
            built = _child(
                ["build", "--data", str(data), "--entries", str(entries), "--lots", str(lots)]
            )
            log(f"built: {built}")
        r["ledger"] = built
        scans = [_child(["scan", "--data", str(data)])]
        log(f"raw scan: {scans[0]}")
        body_only = _child(["scan", "--data", str(data), "--body-only"])
        n = scans[0]["entries"]
        r["entries"] = n
        per: dict[str, dict[str, Any]] = {}
        for name in names:
            log(f"{name}: catch-up over {n:,} entries (its own process)")
            per[name] = catch_up(name, data)
            log(f"{name}: {per[name]}")
        scans.append(_child(["scan", "--data", str(data)]))
        log(f"raw scan again: {scans[1]}")
        scan = max(s["per_s"] for s in scans)
        r["raw_scan_entries_per_s"] = scan
        r["raw_scan_runs_per_s"] = [s["per_s"] for s in scans]
        r["raw_scan_cpu_us_per_entry"] = min(s["cpu_us_per_entry"] for s in scans)
        r["raw_scan_body_only_entries_per_s"] = body_only["per_s"]
        r["load_avg_after_catch_up"] = loadavg()
        live = live_lag(names, tmp, live_s, closed_s, conns) if names else {}
        for name, figs in live.pop("per_follower", {}).items():
            per[name].update(figs)
        r.update(live)
    for name, f in per.items():
        f["to_raw_scan"] = round(f["entries_per_s"] / scan, 3) if scan else 0
        r[name] = f  # one flat dict per follower (the report flattens one level)
    if per:
        slowest = min(per, key=lambda n: per[n]["entries_per_s"])
        r["slowest_follower"] = slowest
        r["follower_entries_per_s"] = per[slowest]["entries_per_s"]
        r["follower_to_raw_scan"] = per[slowest]["to_raw_scan"]
        lagging = [n for n in per if "live_lag_p99_ms" in per[n]]
        if lagging:
            worst = max(lagging, key=lambda n: per[n]["live_lag_p99_ms"])
            r["live_lag_follower"] = worst
            r["live_lag_p50_ms"] = max(per[n]["live_lag_p50_ms"] for n in lagging)
            r["live_lag_p99_ms"] = per[worst]["live_lag_p99_ms"]
    r["load_avg_end"] = loadavg()
    r["machine"] = stats_machine(load_avg_1m=r["load_avg_end"])
    r["targets"] = dict(TARGETS)
    return r


def table(r: dict[str, Any]) -> str:
    scan = r.get("raw_scan_entries_per_s", 0)
    rows = [
        (
            "raw scan entries/s (verify + decode)",
            f"{scan:,}",
            f"body only {r.get('raw_scan_body_only_entries_per_s', 0):,}/s",
            ratio(scan, r.get("raw_scan_body_only_entries_per_s", 0)),
        )
    ]
    for name in r.get("followers", []):
        f = r.get(name, {})
        rows.append(
            (
                f"{name} catch-up entries/s ({f.get('cpu_us_per_entry')} µs CPU/entry)",
                f"{f.get('entries_per_s', 0):,}",
                f"raw scan {scan:,}/s (target >= {TARGETS['follower_to_raw_scan']})",
                ratio(f.get("entries_per_s", 0), scan),
            )
        )
        if "live_lag_p99_ms" in f:
            rows.append(
                (
                    f"{name} live lag p50 / p99 / max ms",
                    f"{f['live_lag_p50_ms']} / {f['live_lag_p99_ms']} / {f['live_lag_max_ms']}",
                    f"target p99 <= {TARGETS['live_lag_p99_ms']:g} ms",
                    ratio(f["live_lag_p99_ms"], TARGETS["live_lag_p99_ms"]),
                )
            )
    if "live_rate_per_s" in r:
        rows.append(
            (
                "live bids/s (open loop, half the max ack rate)",
                f"{r['live_rate_per_s']:,}",
                f"max acks/s {r['live_max_acks_per_s']:,}",
                ratio(r["live_rate_per_s"], r["live_max_acks_per_s"]),
            )
        )
    lines = render(rows, r["machine"])
    lines.append(f"entries {r.get('entries', 0):,}; load average {r.get('load_avg_end')}")
    for name, why in r.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench services", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="20,000 entries, 2 s live (smoke test)")
    ap.add_argument("--entries", type=int, help="ledger entries (default 1,000,000)")
    ap.add_argument("--live-s", type=float, help="open-loop seconds (default 10, quick 2)")
    ap.add_argument("--conns", type=int, default=50, help="bidder connections (default 50)")
    ap.add_argument("--keep", type=Path, help="work in DIR (kept; its ledger is reused)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(
        args.quick, entries=args.entries, live_s=args.live_s, keep=args.keep, conns=args.conns
    )
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    emit(result, args.json, table)
    return 0


def _child_main(argv: list[str]) -> int:
    """``python -m bench.services child build|scan|run ...``: the measured processes."""
    ap = argparse.ArgumentParser(prog="python -m bench.services child")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--data", type=Path, required=True)
    b.add_argument("--entries", type=int, required=True)
    b.add_argument("--lots", type=int, default=1000)
    b.add_argument("--snapshot-every", type=int, default=1 << 62)
    s = sub.add_parser("scan")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--body-only", action="store_true")
    ru = sub.add_parser("run")
    ru.add_argument("name", choices=tuple(SERVICES))
    ru.add_argument("--data", type=Path, required=True)
    ru.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return child_run(args.name, args.data, args.out)
    if args.cmd == "build":
        res = build_ledger(args.data / "ledger", args.entries, args.lots, 1, args.snapshot_every)
    else:
        res = raw_scan(args.data / "ledger", decode_all=not args.body_only)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
