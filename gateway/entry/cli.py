"""The ``pubex`` command line.

    pubex simulate --scenario NAME --seed N --ledger DIR
    pubex ledger verify DIR|EXPORT [--receipts FILE] [--against FEED [--allow-empty]]
    pubex ledger export DIR OUT
    pubex replay DIR [--lot ID] [--until SEQ] [--html OUT.html] [--unverified]
    pubex serve [--data DIR] [--ws-port N] [--http-port N] [--verify-all] [--demo] ...
    pubex keygen --out FILE [--key-id ID]
    pubex admin --url WS [--token-file F] ACTION ...        (token: $PUBEX_TOKEN or F)
    pubex terminal --key FILE --url WS [--lot LOT ...] [--receipts FILE]
    pubex supervise [--data DIR] [--http-port N] [--config FILE] [--platform-config F]
    pubex registry [--data DIR] [--http-port N] [--ws URL] [--platform-config F]
                                                    (token: $PUBEX_SERVICE_TOKEN or --token-file)
    pubex registry provision --bidders N --lots M --ws URL   (+ $PUBEX_STAFF_TOKEN)
    pubex disclose [--data DIR] [--http-port N] [--platform-config F]
    pubex platform [serve's options]   serve + supervise + disclose + registry (make run)

Exit codes: 0 success, 1 verification failure, 2 usage error.  A ledger that
does not verify is a verification failure wherever it is met: ``ledger
verify``, ``replay`` (unless ``--unverified``) and ``serve``, which refuses to
start on it; each says why in one sentence, never with a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CST = dt.timezone(dt.timedelta(hours=8), "CST")


def fmt_ns(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, CST)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ts_ns // 1_000_000) % 1000:03d}"


class _Progress:
    """A progress bar on stderr for long ledgers (silent when not a terminal).

    ``start(total)`` once the size is known, ``advance(seq)`` as entries are
    done, ``finish(complete)``: a complete run ends the bar at its total (100 %),
    whatever the step between the last updates was."""

    def __init__(self, label: str, *, file: Any = None, disable: bool | None = None) -> None:
        self.label = label
        self.file = file if file is not None else sys.stderr
        self.disable = disable
        self.bar: Any = None
        self.done = 0

    def start(self, total: int) -> None:
        if self.disable is None and not self.file.isatty():
            self.disable = True  # what tqdm would decide, without importing it
        if self.disable:
            self.bar = _NoBar()
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=total or None,
            desc=self.label,
            unit="entry",
            disable=self.disable,
            file=self.file,
            mininterval=0.5,
        )

    def advance(self, seq: int) -> None:
        if self.bar is None:
            self.start(0)
        assert self.bar is not None
        if seq > self.done:
            self.bar.update(seq - self.done)
            self.done = seq

    def finish(self, complete: bool, total: int | None = None) -> None:
        bar = self.bar
        if bar is None:
            return
        if complete:
            end = total if total is not None else (bar.total or self.done)
            if bar.total != end:
                bar.total = end
            self.advance(end)
            bar.refresh()
        bar.close()


class _NoBar:
    total: int | None = None

    def update(self, n: int) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _resolve(path: str) -> tuple[bool, Path]:
    """(is an export, the ledger directory or the export file) -- without
    importing the engine: the parent of a check only reads its answer."""
    from ledger.soundness import resolve_ledger_dir

    p = Path(path)
    if p.is_file():
        from ledger.export import is_export

        if is_export(p):
            return True, p
    return False, resolve_ledger_dir(p)


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.run import format_summary, simulate

    try:
        summary = simulate(args.scenario, args.seed, args.ledger)
    except (KeyError, ValueError) as e:
        print(f"pubex simulate: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """The ledger is read in a child process (``ledger.soundness``): damage that
    crashes its reader -- even a SIGBUS -- is reported in one sentence."""
    from ledger.soundness import check_ledger

    export, where = _resolve(args.dir)
    if export:
        return _verify_export_file(args)
    bar = _Progress("verify")
    result = check_ledger(where, "full", on_total=bar.start, progress=bar.advance)
    bar.finish(result.ok)
    if not result.ok:
        print(f"FAIL: {result.message}")
        return 2 if result.kind == "missing" else 1
    print(
        f"OK: {result.entries} entries, state hash {result.state_hash}, "
        f"{result.snapshots_checked} snapshots and {result.checkpoints_checked} signed "
        "checkpoints checked"
    )
    return _verify_more(args)


def _verify_export_file(args: argparse.Namespace) -> int:
    """An export is parsed in-process: its parser is made for forged files."""
    from ledger.audit import verify_ledger
    from ledger.soundness import describe

    bar = _Progress("verify")
    result = verify_ledger(args.dir, progress=bar.advance)
    bar.finish(result.ok, result.entries)
    if not result.ok:
        if result.reason.startswith("export "):
            print(f"FAIL: the export does not verify at {result.reason.removeprefix('export ')}")
        else:
            print(f"FAIL: {describe(result.first_bad_seq, result.reason)}")
        return 1
    print(
        f"OK: {result.entries} entries, state hash {result.state_hash}, "
        f"{result.checkpoints_checked} signed checkpoints checked"
    )
    return _verify_more(args)


def _verify_more(args: argparse.Namespace) -> int:
    if args.against and _verify_against(args.dir, args.against, args.allow_empty):
        return 1
    return _verify_receipts(args.dir, args.receipts) if args.receipts else 0


def _verify_against(path: str, feed_at: str, allow_empty: bool = False) -> int:
    """Compare the (chain-verified) copy with the published checkpoints."""
    from ledger.audit import open_source, public_key, resolve_ledger_dir
    from ledger.export import ExportReader
    from ledger.published import check_against, fetch_feed, parse_feed
    from services.disclosure.cli import fetch_pages, load_feed

    try:
        raw = load_feed(feed_at)
        feed = parse_feed(raw) if raw is not None else fetch_feed(fetch_pages(feed_at))
    except (OSError, ValueError) as e:
        print(f"FAIL: cannot read the checkpoint feed {feed_at}: {e}")
        return 1
    with open_source(path) as source:
        if isinstance(source, ExportReader):
            key = source.server_pub()
        else:
            key = public_key(resolve_ledger_dir(path))
        report = check_against(source, feed, source_key=key)
    if not report.ok:
        where = f" at seq {report.first_bad_seq}" if report.first_bad_seq else ""
        print(f"FAIL: against the published checkpoints{where}: {report.reason}")
        return 1
    if report.checked == 0:
        if allow_empty:
            print("published checkpoints: none to compare (--allow-empty): nothing proven")
            return 0
        print(
            "FAIL: nothing proven: the feed has no checkpoint for this ledger "
            "(--allow-empty accepts that)"
        )
        return 1
    print(f"published checkpoints: {report.checked} match (up to seq {report.last_seq})")
    return 0


def _verify_receipts(ledger: str, receipts: str) -> int:
    from ledger.audit import verify_receipts

    checks = verify_receipts(ledger, receipts)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        print(f"FAIL: receipt line {c.line} (seq {c.seq}): {c.reason}")
    print(f"receipts: {len(checks) - len(bad)} of {len(checks)} verified")
    return 1 if bad or not checks else 0


def cmd_backup(args: argparse.Namespace) -> int:
    from ledger.audit import resolve_ledger_dir
    from ledger.backup import backup

    try:
        report = backup(resolve_ledger_dir(args.dir), args.out)
    except (FileExistsError, OSError) as e:
        print(f"pubex ledger backup: {e}", file=sys.stderr)
        return 2
    if not report.ok:
        from ledger.soundness import describe

        print(f"FAIL: the copy does not verify: {describe(report.first_bad_seq, report.reason)}")
        return 1
    print(f"OK: {report.count} entries copied to {args.out} (chain verified)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import time

    from ledger.audit import public_key, resolve_ledger_dir
    from ledger.export import ExportError, write_export
    from ledger.soundness import check_ledger
    from ledger.store import LedgerStore

    ledger_dir = resolve_ledger_dir(args.dir)
    if not (ledger_dir / "data.mdb").exists():
        print(f"pubex ledger export: no ledger at {args.dir}", file=sys.stderr)
        return 2
    sound = check_ledger(ledger_dir, "chain")  # in a child: damage must not crash us
    if not sound.ok:
        print(f"FAIL: {sound.message}")
        return 1
    try:
        with LedgerStore.open(ledger_dir, readonly=True) as store:
            pub = public_key(ledger_dir) or b""
            s = write_export(store, args.out, server_pub=pub, created_ns=time.time_ns())
    except (FileExistsError, OSError) as e:
        print(f"pubex ledger export: {e}", file=sys.stderr)
        return 2
    except ExportError as e:
        print(f"FAIL: {e}")
        return 1
    print(
        f"OK: {s.entries} entries and {s.checkpoints} signed checkpoints exported to "
        f"{args.out} ({s.bytes} bytes, head {s.last_hash.hex()})"
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """A ledger's hash chain is checked first, in a child process
    (``ledger.soundness``); one that breaks is not replayed -- with
    ``--unverified``, only the entries before the break are, and the output
    says so on its first line."""
    from engine.messages import LotSold, LotTerminated, LotUnsold
    from ledger.audit import source_exists, timelines
    from ledger.export import ExportError
    from ledger.replay import ReplayDivergence
    from ledger.soundness import check_ledger, describe

    if not source_exists(args.dir):
        print(f"pubex replay: no ledger or export at {args.dir}", file=sys.stderr)
        return 2
    export, where = _resolve(args.dir)
    until, total, unverified = args.until, 0, ""
    if not export:
        sound = check_ledger(where, "chain")
        bad = sound.first_bad_seq
        if not sound.ok and (not args.unverified or bad is None or args.html):
            hint = ""
            if bad is not None:
                hint = (
                    "; not replaying it (--unverified replays the entries before it)"
                    if not args.html
                    else "; --html needs a ledger that verifies"
                )
            print(f"pubex replay: {sound.message}{hint}", file=sys.stderr)
            return 1
        total = sound.last_seq
        if not sound.ok and bad is not None:
            until = bad - 1 if until is None else min(until, bad - 1)
            total = bad - 1
            done = f"entries 1-{bad - 1}" if bad > 1 else "no entries"
            unverified = f"UNVERIFIED: {sound.message}; replayed {done} only"
    if args.html:
        return _replay_html(args)
    finals = (LotSold, LotUnsold, LotTerminated)
    keep = (lambda ev: ev.lot_id == args.lot) if args.lot else (lambda ev: type(ev) in finals)
    bar = _Progress("replay")
    if total:
        bar.start(min(total, until) if until is not None else total)
    try:
        router, lines = timelines(args.dir, keep, until, progress=bar.advance)
    except ExportError as e:
        bar.finish(False)
        print(f"pubex replay: the export does not verify at {e}", file=sys.stderr)
        return 1
    except ReplayDivergence as e:
        bar.finish(False)
        print(f"pubex replay: {describe(e.seq, e.why)}", file=sys.stderr)
        return 1
    bar.finish(True, router.applied)
    if unverified:
        print(unverified)
    if args.lot:
        if args.lot not in router.state.lots and args.lot not in router.state.items:
            print(f"pubex replay: no lot or item {args.lot!r} in the ledger", file=sys.stderr)
            return 2
        for line in lines:
            print(f"{fmt_ns(line.ts_ns)}  #{line.seq:<8} {line.what}")
        return 0
    result = {line.lot_id: line.what for line in lines}
    for lot in router.state.lots.values():
        print(f"{lot.lot_id} {lot.mechanism} {lot.status} {result.get(lot.lot_id, '-')}")
    for item in router.state.items.values():  # e-mall items: session, last price, resting
        book = item.book
        print(f"{item.item_id} emall {book.session} last={book.last_price} resting={len(book)}")
    return 0


def _replay_html(args: argparse.Namespace) -> int:
    """One lot's self-contained playback report (services/supervision/playback.py)."""
    from ledger.export import ExportError
    from ledger.replay import ReplayDivergence
    from ledger.soundness import describe
    from services.supervision.playback import UnknownLot, write_report

    if not args.lot:
        print("pubex replay: --html needs --lot", file=sys.stderr)
        return 2
    try:
        pb = write_report(args.dir, args.lot, args.html, args.until)
    except UnknownLot:
        print(f"pubex replay: no lot {args.lot!r} in the ledger", file=sys.stderr)
        return 2
    except ExportError as e:
        print(f"pubex replay: the export does not verify at {e}", file=sys.stderr)
        return 1
    except ReplayDivergence as e:
        print(f"pubex replay: {describe(e.seq, e.why)}", file=sys.stderr)
        return 1
    print(f"{args.html}: lot {args.lot}, {len(pb.bids)} bids, {len(pb.alerts)} alerts")
    return 0


def _settings(prog: str, args: argparse.Namespace) -> tuple[Any, Path] | None:
    """A server role's settings and data directory; None (after one line on
    stderr) when the config file is refused."""
    from config.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    return settings, Path(args.data or settings.data_dir)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.entry.startup import ServeError, check_ports_free, startup_check

    loaded = _settings("pubex serve", args)
    if loaded is None:
        return 2
    settings, data = loaded
    ws_port = settings.net.ws_port if args.ws_port is None else args.ws_port
    http_port = settings.net.http_port if args.http_port is None else args.http_port
    if args.check_only:  # start-up's checks alone (tests, operators): nothing is written
        try:
            check_ports_free(settings.net.host, [ws_port, http_port])
            found = startup_check(data, args.verify_all)
        except ServeError as e:
            print(f"pubex serve: {e}", file=sys.stderr)
            return e.exit_code
        print(
            "start-up check: "
            + ("a fresh data directory" if found is None else "the ledger is sound")
        )
        return 0

    import trio

    from gateway.entry.serve import serve
    from gateway.entry.split import Split, default_edges

    edges = default_edges() if args.edges is None else args.edges
    if edges < 0:
        print("pubex serve: --edges must be 0 or more", file=sys.stderr)
        return 2
    if edges:
        common = ["--config", args.config] if args.config else []
        common += ["--demo"] if args.demo else []
        seq_args = ["--accelerate", str(args.accelerate), "--seed", str(args.seed)]
        seq_args += [f for f, on in (("--sandbox", args.sandbox), ("--no-sim", args.no_sim)) if on]
        seq_args += ["--verify-all"] if args.verify_all else []
        split = Split(
            settings,
            data,
            edges=edges,
            ws_port=ws_port,
            http_port=http_port,
            common=common,
            sequencer_args=seq_args,
            out=lambda line: print(line, flush=True),
        )
        try:
            code = trio.run(split.run)
        except ServeError as e:
            print(f"pubex serve: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            return 0
        return code if code >= 0 else 1

    on_ready = None
    if args.demo:
        from simulators.wsdemo import run_ws_demo

        async def on_ready(listening):  # type: ignore[no-untyped-def]
            await run_ws_demo(listening, settings, seed=args.seed, bidders=not args.no_sim)

    return _run_role(
        "pubex serve",
        lambda: serve(
            settings,
            data,
            ws_port=ws_port,
            http_port=http_port,
            sandbox=args.sandbox,
            accelerate=args.accelerate,
            on_ready=on_ready,
            allow_dev_tokens=args.demo,  # and any sandbox (serve checks the ledger)
            verify_all=args.verify_all,
        ),
    )


def _run_role(prog: str, main: Any) -> int:
    """Run one server process role under trio; its refusals are one line on
    stderr and an exit code, never a traceback: a start-up check
    (``ServeError``'s code), a data directory in use or a link refused (2)."""
    import trio

    from gateway.entry.startup import ServeError
    from gateway.link.client import LinkRefused
    from persistence.lock import DirectoryInUse

    try:
        trio.run(main)
    except ServeError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_code
    except (DirectoryInUse, LinkRefused) as e:  # another writer; another link version
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def cmd_sequencer(args: argparse.Namespace) -> int:
    import trio

    from gateway.entry.serve import run_sequencer

    loaded = _settings(args.prog, args)
    if loaded is None:
        return 2
    settings, data = loaded
    on_ready = None
    if args.demo and args.demo_ws:
        from simulators.wsdemo import run_demo

        async def on_ready(front):  # type: ignore[no-untyped-def]
            # The demo is a client of the edges: when they are away it fails and
            # starts again; it never stops the sequencer.
            import logging

            announce = True
            while True:
                try:
                    await run_demo(
                        front.rt.router,
                        args.demo_ws,
                        args.demo_http,
                        settings,
                        seed=args.seed,
                        bidders=not args.no_sim,
                        announce=announce,
                    )
                except Exception as e:  # any failure of a client: start again
                    logging.getLogger("pubex.demo").warning("demo restarting: %r", e)
                announce = False
                await trio.sleep(2)

    return _run_role(
        args.prog,
        lambda: run_sequencer(
            settings,
            data,
            sandbox=args.sandbox,
            accelerate=args.accelerate,
            allow_dev_tokens=args.demo,
            verify_all=args.verify_all,
            on_ready=on_ready,
        ),
    )


def cmd_edge(args: argparse.Namespace) -> int:
    from gateway.entry.serve import run_edge

    loaded = _settings("pubex edge", args)
    if loaded is None:
        return 2
    settings, data = loaded
    ws_port = settings.net.ws_port if args.ws_port is None else args.ws_port
    http_port = settings.net.http_port if args.http_port is None else args.http_port
    return _run_role(
        "pubex edge",
        lambda: run_edge(
            settings,
            data,
            ws_port=ws_port,
            http_port=http_port,
            name=args.name,
            allow_dev_tokens=args.demo,
        ),
    )


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.wire.protocol import json_schema

    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.clients.terminal.keys import KeyFileError, write_keypair

    try:
        key_id, public_hex = write_keypair(Path(args.out), args.key_id or "")
    except (KeyFileError, OSError) as e:
        print(f"pubex keygen: {e}", file=sys.stderr)
        return 2
    print(f"key id:     {key_id}\npublic key: {public_hex}\nwrote {args.out} and {args.out}.pub")
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    from gateway.clients.admin import run_admin

    return run_admin(args)


def cmd_supervise(args: argparse.Namespace) -> int:
    from services.supervision.cli import run_supervise

    return run_supervise(args)


def cmd_registry(args: argparse.Namespace) -> int:
    if args.registry_command == "provision":
        from gateway.entry.provision import run_provision

        return run_provision(args)
    from services.registry.cli import run_registry

    return run_registry(args)


def cmd_disclose(args: argparse.Namespace) -> int:
    from services.disclosure.cli import run_disclose

    return run_disclose(args)


def cmd_platform(args: argparse.Namespace) -> int:
    from gateway.entry.platform import run_platform

    return run_platform(args)


def cmd_terminal(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.clients.terminal.keys import KeyFileError
    from gateway.clients.terminal.screen import run_terminal

    try:
        receipts = Path(args.receipts) if args.receipts else None
        return run_terminal(Path(args.key), args.url, args.lot or [], receipts)
    except KeyFileError as e:
        print(f"pubex terminal: {e}", file=sys.stderr)
        return 2


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """``pubex serve``'s options (``pubex platform`` takes the same)."""
    p.add_argument("--config", help="a TOML file overriding config/default.toml")
    p.add_argument("--data", help="data directory (default: the config's data_dir)")
    p.add_argument("--ws-port", type=int, help="0 picks a free port")
    p.add_argument("--http-port", type=int, help="0 picks a free port")
    p.add_argument("--sandbox", action="store_true", help="create the data dir as a sandbox")
    p.add_argument("--accelerate", type=int, default=1, help="sandbox only: N x clock")
    p.add_argument("--demo", action="store_true", help="a demo catalogue and bidders")
    p.add_argument("--no-sim", action="store_true", help="with --demo: no simulated bidders")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--verify-all",
        action="store_true",
        help="verify the whole ledger at start-up, not only what follows the verified point",
    )
    p.add_argument("--check-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--edges",
        type=int,
        help="edge processes (default: one per core beyond the first, at least 1; "
        "0: the sequencer and one edge in this one process)",
    )


def add_sequencer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TOML file overriding config/default.toml")
    p.add_argument("--data", help="data directory (default: the config's data_dir)")
    p.add_argument("--sandbox", action="store_true", help="create the data dir as a sandbox")
    p.add_argument("--accelerate", type=int, default=1, help="sandbox only: N x clock")
    p.add_argument("--demo", action="store_true", help="development tokens allowed; the demo")
    p.add_argument("--no-sim", action="store_true", help="with --demo: no simulated bidders")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verify-all", action="store_true", help="verify the whole ledger first")
    p.add_argument("--demo-ws", default="", help=argparse.SUPPRESS)
    p.add_argument("--prog", default="pubex sequencer", help=argparse.SUPPRESS)
    p.add_argument("--demo-http", default="", help=argparse.SUPPRESS)


def add_edge_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TOML file overriding config/default.toml")
    p.add_argument("--data", help="the sequencer's data directory (its link folder)")
    p.add_argument("--ws-port", type=int, help="the shared WebSocket port")
    p.add_argument("--http-port", type=int, help="the shared HTTP port")
    p.add_argument("--name", default="edge", help="this edge's name in logs and metrics")
    p.add_argument("--demo", action="store_true", help="development tokens allowed")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only`` = the command being run, the companion
    services' parsers (admin, supervise, registry, disclose: each imports its
    service) are configured only if it is theirs -- a ``pubex ledger verify``
    starts without importing trio or the web stack."""

    def configured(name: str) -> bool:
        return only is None or only == name

    p = argparse.ArgumentParser(prog="pubex", description="public-resource trading engine")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="run a seeded scenario in-process on virtual time")
    s.add_argument("--scenario", required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--ledger", required=True, help="directory for the new ledger")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)

    lg = sub.add_parser("ledger", help="ledger tools")
    lsub = lg.add_subparsers(dest="ledger_command", required=True)
    v = lsub.add_parser(
        "verify", help="check the hash chain and replay a whole ledger (or an export)"
    )
    v.add_argument("dir")
    v.add_argument("--receipts", help="a bidder's receipts file (JSON lines) to check too")
    v.add_argument(
        "--against",
        metavar="CHECKPOINT_FEED",
        help="the disclosure's published checkpoints: a URL (/checkpoints.json) or a saved file",
    )
    v.add_argument(
        "--allow-empty",
        action="store_true",
        help="with --against: a feed with no checkpoint for this ledger is not a failure",
    )
    v.set_defaults(func=cmd_verify)
    ex = lsub.add_parser("export", help="a portable, hash-chained file for supervisors")
    ex.add_argument("dir")
    ex.add_argument("out")
    ex.set_defaults(func=cmd_export)
    b = lsub.add_parser("backup", help="a consistent copy of a (live) ledger")
    b.add_argument("dir")
    b.add_argument("out")
    b.set_defaults(func=cmd_backup)

    r = sub.add_parser("replay", help="a lot's timeline, or every lot's result (ledger or export)")
    r.add_argument("dir")
    r.add_argument("--lot", help="a lot's or an e-mall item's timeline")
    r.add_argument("--until", type=int)
    r.add_argument("--html", metavar="OUT", help="with --lot: a self-contained playback report")
    r.add_argument(
        "--unverified",
        action="store_true",
        help="replay the entries before a broken chain (the output says UNVERIFIED)",
    )
    r.set_defaults(func=cmd_replay)

    sv = sub.add_parser("serve", help="the runtime, the WebSocket gateway and the console")
    add_serve_options(sv)
    sv.set_defaults(func=cmd_serve)

    sq = sub.add_parser("sequencer", help="the sequencer alone: ledger, engine, the edges' link")
    add_sequencer_options(sq)
    sq.set_defaults(func=cmd_sequencer)

    ed = sub.add_parser("edge", help="one edge alone: public ports, over the sequencer's link")
    add_edge_options(ed)
    ed.set_defaults(func=cmd_edge)

    pf = sub.add_parser("platform", help="serve plus the companion services, one process each")
    add_serve_options(pf)  # passed on to the serve child
    pf.set_defaults(func=cmd_platform)

    sc = sub.add_parser("schema", help="print the wire protocol's JSON Schema")
    sc.set_defaults(func=cmd_schema)

    kg = sub.add_parser("keygen", help="write a bidder's Ed25519 key pair (FILE, FILE.pub)")
    kg.add_argument("--out", required=True, help="private key file (refuses to overwrite)")
    kg.add_argument("--key-id", help="the key id (default: a random one)")
    kg.set_defaults(func=cmd_keygen)

    ad = sub.add_parser("admin", help="one staff / registry command over a staff WebSocket")
    if configured("admin"):
        from gateway.clients.admin import configure as configure_admin

        configure_admin(ad)
    ad.set_defaults(func=cmd_admin)

    te = sub.add_parser("terminal", help="the bidder's full-screen terminal")
    te.add_argument("--key", required=True, help="private key file from `pubex keygen`")
    te.add_argument("--url", required=True, help="ws://HOST:PORT/ws")
    te.add_argument("--lot", action="append", help="a lot to watch (repeatable)")
    te.add_argument("--receipts", help="JSON-lines receipts (default: KEY.receipts.jsonl)")
    te.set_defaults(func=cmd_terminal)

    su = sub.add_parser("supervise", help="the supervision service (alerts, lot monitoring)")
    if configured("supervise"):
        from services.supervision.cli import configure as configure_supervise

        configure_supervise(su)
    su.set_defaults(func=cmd_supervise)

    rg = sub.add_parser("registry", help="the registry service (subjects, deposits, experts)")
    if configured("registry"):
        from services.registry.cli import configure as configure_registry

        configure_registry(rg)
    rg.set_defaults(func=cmd_registry)

    di = sub.add_parser("disclose", help="the disclosure service (public notices, checkpoints)")
    if configured("disclose"):
        from services.disclosure.cli import configure as configure_disclose

        configure_disclose(di)
    di.set_defaults(func=cmd_disclose)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = next((w for w in words if not w.startswith("-")), None)
    args = build_parser(command).parse_args(words)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # `pubex replay ... | head`
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
