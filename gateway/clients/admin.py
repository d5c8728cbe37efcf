"""``pubex admin``: ledgered staff / registry commands over a staff WebSocket.

A staff member's command-line tool (the registry service and the console send
the same commands): each invocation connects with a staff token, sends ONE
command, prints its ack (ledger seq) or its refusal in words, and exits
non-zero on a refusal or a connection failure.

It connects in its own client session (``--session``, default ``admin``), so
its numbering never touches another client of the same staff id (the console,
the demo): ``client_seq`` is the wall clock in microseconds, strictly
increasing within that session across separate invocations without any local
state (two invocations in the same microsecond are not a concern for a human
tool).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.rules import PRESETS

if TYPE_CHECKING:
    from gateway.wire import protocol as p

NS = 1_000_000_000


TOKEN_ENV = "PUBEX_TOKEN"


def _seq() -> int:
    return time.time_ns() // 1000


def configure(parser: argparse.ArgumentParser) -> None:
    """The `pubex admin` arguments and its actions (sub-parsers)."""
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/ws")
    parser.add_argument(
        "--token-file",
        help=f"a file holding the staff token (default: the environment's ${TOKEN_ENV}; "
        "never on the command line, where ps shows it)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait")
    parser.add_argument(
        "--session",
        default="admin",
        help="the client session its client_seqs count in (default: admin)",
    )
    acts = parser.add_subparsers(dest="action", required=True)

    a = acts.add_parser("register-key", help="register a bidder's Ed25519 public key")
    a.add_argument("--key-id")
    a.add_argument("--bidder", required=True)
    a.add_argument("--public-key", help="hex public key")
    a.add_argument("--pub", help="a .pub file from `pubex keygen` (key id and public key)")

    a = acts.add_parser("register-bidder", help="register a bidder for a lot")
    a.add_argument("--lot", required=True)
    a.add_argument("--bidder", required=True)
    a.add_argument("--priority", type=int, default=0, help="priority rank (0: none)")

    a = acts.add_parser("confirm-deposit", help="confirm a bidder's deposit for a lot")
    a.add_argument("--lot", required=True)
    a.add_argument("--bidder", required=True)
    a.add_argument("--amount-fen", type=int, required=True)

    a = acts.add_parser("create-lot", help="create a lot (a draft until published)")
    a.add_argument("--lot", required=True)
    a.add_argument("--mechanism", choices=["english", "listing"], required=True)
    a.add_argument("--title", required=True)
    a.add_argument("--start-price-fen", type=int, required=True)
    a.add_argument("--increment-fen", type=int, required=True)
    a.add_argument("--start-in-s", type=float, required=True, help="opens S s from now")
    a.add_argument("--duration-s", type=float, required=True)
    a.add_argument("--preset", choices=sorted(PRESETS), default="judicial")
    a.add_argument("--deposit-fen", type=int, default=0)
    a.add_argument("--timed-increment-fen", type=int, default=0)

    a = acts.add_parser("publish", help="publish a draft lot")
    a.add_argument("--lot", required=True)
    for name in ("freeze", "resume", "terminate"):
        a = acts.add_parser(name, help=f"{name} a lot")
        a.add_argument("--lot", required=True)
        a.add_argument("--reason", required=True)


def build_frame(args: argparse.Namespace, server_ns: int) -> p.StaffFrame:
    """The frame for ``args.action``; times are relative to the server's clock."""
    from gateway.wire import protocol as p

    cs, act = _seq(), args.action
    if act == "register-key":
        key_id, public = _key_args(args)
        return p.RegisterKeyFrame(cs, key_id, args.bidder, public)
    if act == "register-bidder":
        return p.RegisterBidderFrame(cs, args.lot, args.bidder, args.priority)
    if act == "confirm-deposit":
        return p.ConfirmDepositFrame(cs, args.lot, args.bidder, args.amount_fen)
    if act == "create-lot":
        start = server_ns + int(args.start_in_s * NS)
        return p.CreateLotFrame(
            cs,
            args.lot,
            args.mechanism,
            args.title,
            args.start_price_fen,
            args.increment_fen,
            start,
            start + int(args.duration_s * NS),
            PRESETS[args.preset],
            args.deposit_fen,
            args.timed_increment_fen,
        )
    if act == "publish":
        return p.PublishLotFrame(cs, args.lot)
    lot_frames: dict[str, Any] = {
        "freeze": p.FreezeLotFrame,
        "resume": p.ResumeLotFrame,
        "terminate": p.TerminateLotFrame,
    }
    frame: p.StaffFrame = lot_frames[act](cs, args.lot, args.reason)
    return frame


def _key_args(args: argparse.Namespace) -> tuple[str, str]:
    from gateway.clients.terminal.keys import KeyFileError, load_public

    key_id, public = args.key_id, args.public_key
    if args.pub:
        file_id, file_public = load_public(Path(args.pub))
        key_id, public = key_id or file_id, public or file_public
    if not key_id or not public:
        raise KeyFileError("register-key needs --key-id and --public-key, or --pub FILE.pub")
    try:
        if len(bytes.fromhex(public)) != 32:
            raise ValueError
    except ValueError:
        raise KeyFileError("the public key must be 64 hex digits (Ed25519)") from None
    return key_id, public


async def _send(args: argparse.Namespace) -> p.Ack | p.Error:
    import trio

    from gateway.clients.tclient import Client

    async with trio.open_nursery() as nursery:
        client = await Client.connect(nursery, args.url, token=args.token, session=args.session)
        if client.hello.role != "staff":
            raise PermissionError(f"the token gave role {client.hello.role!r}, not staff")
        frame = build_frame(args, client.hello.server_time_ns)
        reply = await client.staff(frame, timeout=args.timeout)
        await client.close()
        nursery.cancel_scope.cancel()
    return reply


def report(action: str, reply: p.Ack | p.Error) -> int:
    from gateway.clients.terminal.model import describe_error
    from gateway.wire import protocol as p

    if isinstance(reply, p.Ack):
        again = " (a retry: the original outcome)" if reply.retried else ""
        print(f"ok: {action} acknowledged at ledger seq {reply.seq}{again}")
        return 0
    print(f"refused: {action}: {describe_error(reply.code, reply.name, reply.message)}")
    return 1


def run_admin(args: argparse.Namespace) -> int:
    # Imported here: `pubex --help` and the other commands stay quick to start.
    import trio

    from gateway.clients.terminal.keys import KeyFileError
    from services.lifecycle import read_token

    try:
        args.token = read_token(args.token_file, TOKEN_ENV)
    except OSError as e:
        print(f"pubex admin: --token-file: {e}", file=sys.stderr)
        return 2
    if not args.token:
        print(f"pubex admin: no staff token: set ${TOKEN_ENV} or --token-file", file=sys.stderr)
        return 2
    if args.action == "register-key":  # check the key files before connecting
        try:
            args.key_id, args.public_key = _key_args(args)
        except KeyFileError as e:
            print(f"pubex admin: {e}", file=sys.stderr)
            return 2
        args.pub = None
    try:
        reply = trio.run(_send, args)
    except Exception as e:  # connection refused, handshake rejected, timeout: say so plainly
        print(f"pubex admin: {args.action} failed: {_explain(e)}", file=sys.stderr)
        return 1
    return report(args.action, reply)


def _explain(e: BaseException) -> str:
    import trio

    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return _explain(e.exceptions[0])
    if isinstance(e, trio.TooSlowError):
        return "no reply from the server in time"
    status, body = getattr(e, "status_code", None), getattr(e, "body", None)
    if status is not None:  # the WebSocket handshake was refused (bad token, draining)
        return f"the server refused the connection: HTTP {status} {(body or b'').decode()}"
    return f"{type(e).__name__}: {e}"
