"""The ``pubex`` command line.

    pubex simulate --scenario NAME --seed N --ledger DIR
    pubex ledger verify DIR|EXPORT [--receipts FILE] [--against FEED]
    pubex ledger export DIR OUT
    pubex replay DIR [--lot ID] [--until SEQ] [--html OUT.html]
    pubex keygen --out FILE [--key-id ID]
    pubex admin --url WS [--token-file F] ACTION ...        (token: $PUBEX_TOKEN or F)
    pubex terminal --key FILE --url WS [--lot LOT ...] [--receipts FILE]
    pubex supervise [--data DIR] [--http-port N] [--config FILE] [--platform-config F]
    pubex registry [--data DIR] [--http-port N] [--ws URL] [--platform-config F]
                                                    (token: $PUBEX_SERVICE_TOKEN or --token-file)
    pubex registry provision --bidders N --lots M --ws URL   (+ $PUBEX_STAFF_TOKEN)
    pubex disclose [--data DIR] [--http-port N] [--platform-config F]
    pubex platform [serve's options]   serve + supervise + disclose + registry (make run)

Exit codes: 0 success, 1 verification failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence

from tqdm import tqdm

CST = dt.timezone(dt.timedelta(hours=8), "CST")


def fmt_ns(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, CST)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ts_ns // 1_000_000) % 1000:03d}"


def _progress(total: int, label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A progress bar on stderr for long ledgers (silent when not a terminal)."""
    bar = tqdm(
        total=total, desc=label, unit="entry", disable=None, file=sys.stderr, mininterval=0.5
    )
    last = [0]

    def step(seq: int) -> None:
        if seq - last[0] >= 1000:
            bar.update(seq - last[0])
            last[0] = seq

    return step, bar.close


def _ledger_size(path: str) -> int:
    from ledger.audit import resolve_ledger_dir
    from ledger.export import is_export
    from ledger.store import LedgerStore

    if is_export(path):
        return 0  # known only once the file is parsed; the bar then just counts
    ledger_dir = resolve_ledger_dir(path)
    if not (ledger_dir / "data.mdb").exists():
        return 0
    with LedgerStore.open(ledger_dir, readonly=True) as store:
        return store.last_seq()


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
    from ledger.audit import verify_ledger

    step, done = _progress(_ledger_size(args.dir), "verify")
    try:
        result = verify_ledger(args.dir, progress=step)
    finally:
        done()
    if not result.ok:
        where = f"first bad seq {result.first_bad_seq}" if result.first_bad_seq else "no entries"
        print(f"FAIL: {where}: {result.reason} ({result.entries} entries before it)")
        return 1
    print(
        f"OK: {result.entries} entries, state hash {result.state_hash}, "
        f"{result.snapshots_checked} snapshots and {result.checkpoints_checked} signed "
        "checkpoints checked"
    )
    if args.against and _verify_against(args.dir, args.against):
        return 1
    return _verify_receipts(args.dir, args.receipts) if args.receipts else 0


def _verify_against(path: str, feed_at: str) -> int:
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
        print(f"FAIL: the copy does not verify at seq {report.first_bad_seq}: {report.reason}")
        return 1
    print(f"OK: {report.count} entries copied to {args.out} (chain verified)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import time

    from ledger.audit import public_key, resolve_ledger_dir
    from ledger.export import ExportError, write_export
    from ledger.store import LedgerStore

    ledger_dir = resolve_ledger_dir(args.dir)
    if not (ledger_dir / "data.mdb").exists():
        print(f"pubex ledger export: no ledger at {args.dir}", file=sys.stderr)
        return 2
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
    from engine.messages import LotSold, LotTerminated, LotUnsold
    from ledger.audit import source_exists, timelines
    from ledger.export import ExportError

    if not source_exists(args.dir):
        print(f"pubex replay: no ledger or export at {args.dir}", file=sys.stderr)
        return 2
    if args.html:
        return _replay_html(args)
    finals = (LotSold, LotUnsold, LotTerminated)
    keep = (lambda ev: ev.lot_id == args.lot) if args.lot else (lambda ev: type(ev) in finals)
    step, done = _progress(_ledger_size(args.dir), "replay")
    try:
        router, lines = timelines(args.dir, keep, args.until, progress=step)
    except ExportError as e:
        print(f"pubex replay: the export does not verify: {e}", file=sys.stderr)
        return 1
    finally:
        done()
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
    from services.supervision.playback import UnknownLot, write_report

    if not args.lot:
        print("pubex replay: --html needs --lot", file=sys.stderr)
        return 2
    try:
        pb = write_report(args.dir, args.lot, args.html, args.until)
    except UnknownLot:
        print(f"pubex replay: no lot {args.lot!r} in the ledger", file=sys.stderr)
        return 2
    except (ExportError, ReplayDivergence) as e:
        print(f"pubex replay: the ledger does not verify: {e}", file=sys.stderr)
        return 1
    print(f"{args.html}: lot {args.lot}, {len(pb.bids)} bids, {len(pb.alerts)} alerts")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    import trio

    from config.settings import ConfigError, load_settings
    from gateway.serve import ServeError, serve
    from persistence.lock import DirectoryInUse

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"pubex serve: {e}", file=sys.stderr)
        return 2
    data = Path(args.data or settings.data_dir)
    ws_port = settings.net.ws_port if args.ws_port is None else args.ws_port
    http_port = settings.net.http_port if args.http_port is None else args.http_port
    on_ready = None
    if args.demo:
        from simulators.wsdemo import run_ws_demo

        async def on_ready(listening):  # type: ignore[no-untyped-def]
            await run_ws_demo(listening, settings, seed=args.seed, bidders=not args.no_sim)

    try:
        trio.run(
            lambda: serve(
                settings,
                data,
                ws_port=ws_port,
                http_port=http_port,
                sandbox=args.sandbox,
                accelerate=args.accelerate,
                on_ready=on_ready,
                allow_dev_tokens=args.demo,  # and any sandbox (serve checks the ledger)
            )
        )
    except (ServeError, DirectoryInUse) as e:  # DirectoryInUse: a second writer, refused
        print(f"pubex serve: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.protocol import json_schema

    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.terminal import KeyFileError, write_keypair

    try:
        key_id, public_hex = write_keypair(Path(args.out), args.key_id or "")
    except (KeyFileError, OSError) as e:
        print(f"pubex keygen: {e}", file=sys.stderr)
        return 2
    print(f"key id:     {key_id}\npublic key: {public_hex}\nwrote {args.out} and {args.out}.pub")
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    from gateway.admin import run_admin

    return run_admin(args)


def cmd_supervise(args: argparse.Namespace) -> int:
    from services.supervision.cli import run_supervise

    return run_supervise(args)


def cmd_registry(args: argparse.Namespace) -> int:
    from services.registry.cli import run_registry

    return run_registry(args)


def cmd_disclose(args: argparse.Namespace) -> int:
    from services.disclosure.cli import run_disclose

    return run_disclose(args)


def cmd_platform(args: argparse.Namespace) -> int:
    from gateway.platform import run_platform

    return run_platform(args)


def cmd_terminal(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.terminal import KeyFileError, run_terminal

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


def build_parser() -> argparse.ArgumentParser:
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
    r.set_defaults(func=cmd_replay)

    sv = sub.add_parser("serve", help="the runtime, the WebSocket gateway and the console")
    add_serve_options(sv)
    sv.set_defaults(func=cmd_serve)

    pf = sub.add_parser("platform", help="serve plus the companion services, one process each")
    add_serve_options(pf)  # passed on to the serve child
    pf.set_defaults(func=cmd_platform)

    sc = sub.add_parser("schema", help="print the wire protocol's JSON Schema")
    sc.set_defaults(func=cmd_schema)

    kg = sub.add_parser("keygen", help="write a bidder's Ed25519 key pair (FILE, FILE.pub)")
    kg.add_argument("--out", required=True, help="private key file (refuses to overwrite)")
    kg.add_argument("--key-id", help="the key id (default: a random one)")
    kg.set_defaults(func=cmd_keygen)

    from gateway.admin import configure as configure_admin

    ad = sub.add_parser("admin", help="one staff / registry command over a staff WebSocket")
    configure_admin(ad)
    ad.set_defaults(func=cmd_admin)

    te = sub.add_parser("terminal", help="the bidder's full-screen terminal")
    te.add_argument("--key", required=True, help="private key file from `pubex keygen`")
    te.add_argument("--url", required=True, help="ws://HOST:PORT/ws")
    te.add_argument("--lot", action="append", help="a lot to watch (repeatable)")
    te.add_argument("--receipts", help="JSON-lines receipts (default: KEY.receipts.jsonl)")
    te.set_defaults(func=cmd_terminal)

    from services.supervision.cli import configure as configure_supervise

    su = sub.add_parser("supervise", help="the supervision service (alerts, lot monitoring)")
    configure_supervise(su)
    su.set_defaults(func=cmd_supervise)

    from services.registry.cli import configure as configure_registry

    rg = sub.add_parser("registry", help="the registry service (subjects, deposits, experts)")
    configure_registry(rg)
    rg.set_defaults(func=cmd_registry)

    from services.disclosure.cli import configure as configure_disclose

    di = sub.add_parser("disclose", help="the disclosure service (public notices, checkpoints)")
    configure_disclose(di)
    di.set_defaults(func=cmd_disclose)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # `pubex replay ... | head`
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
