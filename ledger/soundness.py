"""Is this a sound ledger?  Checked in a child process, answered in one sentence.

Theory of operation
-------------------
LMDB has no page checksums: a damaged ``data.mdb`` can make its reader fail
in any way, including a SIGBUS that no Python code can catch.  So every tool
that must not die on a damaged ledger -- ``pubex serve``'s start-up, ``pubex
ledger verify``, ``pubex replay`` -- reads it first in a *child process*
(``python -m ledger.soundness MODE DIR``, read-only) and only looks at the
child's answer: a :class:`Soundness` (one JSON line), or the signal that
killed it.  Either way the parent turns it into one plain sentence
(:attr:`Soundness.message`) and never prints a traceback.

Modes:

* ``chain``   -- the hash chain from genesis (``pubex replay`` before replaying);
* ``full``    -- chain, full replay (events re-produced), every snapshot and
  every signed checkpoint (``pubex ledger verify``, ``pubex serve --verify-all``);
* ``startup`` -- the same, but from the ledger's *verified point* on; then the
  recovery start-up itself runs (``ledger.replay.recover``: the newest
  snapshot and the tail), so the server repeats only reads that went well;
* ``startup-all`` -- ``full``, then the recovery (``pubex serve --verify-all``).

The verified point is (seq, entry hash) under :data:`VERIFIED_KEY` in the
ledger's meta.  ``pubex serve`` records it right after its start-up check
passes -- the head it has just read back from disk and checked -- and at no
other time: not at shutdown, because what a run wrote is only "verified" once
it has been read back, which the next start-up does.  So each start checks the
entries written since the previous start (the chain from the point, a replay
from the newest snapshot at or before it, the snapshots and checkpoints after
it); entries before the point were checked by an earlier start and are
re-checked only with ``--verify-all``.  A ledger with no point (written by the
simulator, or by a version before this one) is checked whole.

Child protocol on stdout, one line each: ``T <last seq>`` once the ledger is
open, ``P <seq>`` now and then (progress), ``R <json>`` the result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from ledger.audit import VerifyResult
    from ledger.store import LedgerStore

VERIFIED_KEY = b"verified_through"
MODES = ("chain", "full", "startup", "startup-all")
PROGRESS_EVERY = 1024

Progress = Callable[[int], None]


class Soundness(msgspec.Struct, frozen=True):
    """The child's verdict.  ``kind``: "" (sound) | missing | not_ledger |
    damaged | broken (a named first bad seq) | crashed (the child died)."""

    ok: bool
    kind: str = ""
    message: str = ""  # one sentence, no trailing period; "" when ok
    first_bad_seq: int | None = None
    entries: int = 0  # entries checked
    last_seq: int = 0  # the verified head
    last_hash: str = ""  # hex
    state_hash: str = ""
    snapshots_checked: int = 0
    checkpoints_checked: int = 0


def encode_point(seq: int, entry_hash: bytes) -> bytes:
    return seq.to_bytes(8, "big") + entry_hash


def decode_point(raw: bytes | None) -> tuple[int, bytes] | None:
    """The verified point, or None when absent or not 40 bytes (then the whole
    ledger is checked: a damaged point can only make the check longer)."""
    if raw is None or len(raw) != 40:
        return None
    return int.from_bytes(raw[:8], "big"), bytes(raw[8:])


def resolve_ledger_dir(path: str | Path) -> Path:
    """Accept a data directory (with ``ledger/`` inside) or the ledger directory."""
    p = Path(path)
    return p / "ledger" if (p / "ledger" / "data.mdb").exists() else p


# -- sentences ------------------------------------------------------------------


def _chain_sentence(seq: int, reason: str) -> str:
    before = f"entry {seq - 1}" if seq > 1 else "the genesis hash"
    why = {
        "gap": f"entry {seq} is missing",
        "prev_mismatch": f"its prev-hash does not match {before}",
        "hash_mismatch": "its contents do not match its stored hash",
        "seq_mismatch": "its contents name another seq",
        "undecodable": "it is not a readable ledger entry",
        "point_mismatch": "it is not the entry verified at an earlier start",
    }.get(reason, reason)
    return f"the ledger's chain breaks at seq {seq}: {why}"


def describe(first_bad_seq: int | None, reason: str, last_seq: int = 0) -> str:
    """One plain sentence for a failed :class:`ledger.audit.VerifyResult`."""
    seq = first_bad_seq or 0
    if reason in ("gap", "prev_mismatch", "hash_mismatch", "seq_mismatch", "undecodable"):
        return _chain_sentence(seq, reason)
    if reason == "point_mismatch":
        return _chain_sentence(seq, reason)
    if reason == "point_missing":
        if seq > last_seq:
            return (
                f"the ledger ends at seq {last_seq}, but seq {seq} was verified at an earlier "
                "start: entries were lost"
            )
        return f"entry {seq}, verified at an earlier start, cannot be found in the ledger"
    if reason == "snapshot_mismatch":
        return f"the snapshot at seq {seq} does not match the state the ledger replays to"
    if reason == "snapshot_undecodable":
        return f"the snapshot at seq {seq} is not a readable snapshot"
    if reason == "snapshot_damaged":
        return f"the snapshot at seq {seq} is damaged: its state does not match its own hash"
    if reason == "checkpoint_beyond_tail" and seq <= last_seq:
        return f"entry {seq}, which a signed checkpoint vouches for, cannot be found in the ledger"
    if reason == "checkpoint_beyond_tail":
        return (
            f"the ledger ends at seq {last_seq}, before its signed checkpoint at seq {seq}: "
            "entries were cut off"
        )
    if reason.startswith("checkpoint_"):
        why = {
            "bad_signature": "its signature does not verify under the server's key",
            "seq_mismatch": "it is signed for another seq",
            "hash_mismatch": "the entry there is not the one it signed",
        }.get(reason.removeprefix("checkpoint_"), reason)
        return f"the signed checkpoint at seq {seq} does not hold: {why}"
    if reason == "events differ from the recorded ones":
        return f"replaying the ledger at seq {seq} does not give the events it recorded"
    at = f" at seq {seq}" if seq else ""
    return f"the ledger does not replay{at}: {reason}"


# -- the child ---------------------------------------------------------------------


def _lmdb_words(e: BaseException) -> str:
    """LMDB's own words without the path it prefixes."""
    text = str(e)
    return text.split(": ", 1)[1] if ": " in text and text.startswith("/") else text


def scan(ledger_dir: Path, mode: str, emit: Callable[[str], None]) -> Soundness:
    """Run in the child: open read-only, check, answer (never raises on damage)."""
    import lmdb

    from ledger.store import LedgerStore
    from ledger.verify import verify_chain

    try:
        store = LedgerStore.open(ledger_dir, readonly=True)
    except lmdb.InvalidError:
        return Soundness(
            False,
            "not_ledger",
            f"{ledger_dir / 'data.mdb'} is not an LMDB file: not a pubex ledger, or a damaged one",
        )
    except (lmdb.NotFoundError, lmdb.IncompatibleError):
        return Soundness(
            False,
            "not_ledger",
            f"{ledger_dir} holds an LMDB database without the ledger's tables: "
            "not a pubex ledger, or a damaged one",
        )
    except lmdb.Error as e:
        return Soundness(
            False,
            "not_ledger",
            f"{ledger_dir} cannot be opened as a ledger (LMDB: {_lmdb_words(e)})",
        )
    seen = [0]

    def progress(seq: int) -> None:
        seen[0] = seq
        if seq % PROGRESS_EVERY == 0:
            emit(f"P {seq}")

    with store:
        try:
            last = store.last_seq()
            emit(f"T {last}")
            if mode == "chain":
                chain = verify_chain(store, progress=progress)
                if not chain.ok:
                    return Soundness(
                        False,
                        "broken",
                        describe(chain.first_bad_seq, chain.reason, last),
                        chain.first_bad_seq,
                        chain.count,
                    )
                return Soundness(
                    True, "", "", None, chain.count, chain.last_seq, chain.last_hash.hex()
                )
            from ledger.audit import public_key, verify_store  # the engine: not for "chain"

            since = decode_point(store.get_meta(VERIFIED_KEY)) if mode == "startup" else None
            result = verify_store(store, public_key(ledger_dir), since=since, progress=progress)
            if result.ok and mode.startswith("startup"):
                result = _recovers(store, result)
            if not result.ok:
                return Soundness(
                    False,
                    "broken",
                    describe(result.first_bad_seq, result.reason, last),
                    result.first_bad_seq,
                    result.entries,
                )
            head = store.get(last)
            return Soundness(
                True,
                "",
                "",
                None,
                result.entries,
                last,
                head[1].hex() if head is not None else "",
                result.state_hash,
                result.snapshots_checked,
                result.checkpoints_checked,
            )
        except lmdb.Error as e:
            where = f" after seq {seen[0]}" if seen[0] else ""
            return Soundness(
                False,
                "damaged",
                f"the ledger file is damaged{where} (LMDB: {_lmdb_words(e)})",
                seen[0] + 1 if mode == "chain" else None,
                seen[0],
            )


def _recovers(store: LedgerStore, checked: VerifyResult) -> VerifyResult:
    """``checked`` if the server's own recovery (snapshot + tail) goes through
    too -- it looks entries up by key, which a damaged branch page can misdirect
    even when the walk in seq order was fine."""
    from ledger.audit import VerifyResult
    from ledger.replay import ReplayDivergence, recover

    try:
        recover(store)
    except ReplayDivergence as e:
        return VerifyResult(False, checked.entries, "", e.seq, e.why)
    except (msgspec.DecodeError, ValueError) as e:
        return VerifyResult(False, checked.entries, "", None, f"recovery fails ({e})")
    return checked


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in MODES:
        print(
            f"usage: python -m ledger.soundness {{{'|'.join(MODES)}}} LEDGER_DIR", file=sys.stderr
        )
        return 2
    out = sys.stdout

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    try:
        result = scan(Path(args[1]), args[0], emit)
    except Exception as e:  # the answer must be a sentence, whatever broke
        result = Soundness(
            False, "damaged", f"the ledger could not be read ({type(e).__name__}: {e})"
        )
    emit("R " + msgspec.json.encode(result).decode())
    return 0


# -- the parent --------------------------------------------------------------------


def _missing(ledger_dir: Path) -> Soundness | None:
    """Answers that need no child: nothing there, or an empty file."""
    data = ledger_dir / "data.mdb"
    if not ledger_dir.exists():
        return Soundness(False, "missing", f"there is nothing at {ledger_dir}")
    if ledger_dir.is_file():
        return Soundness(
            False,
            "not_ledger",
            f"{ledger_dir} is a file but not a ledger export (a ledger is a directory)",
        )
    if not data.exists():
        return Soundness(False, "missing", f"{ledger_dir} holds no ledger (no data.mdb)")
    if not data.is_file() or data.stat().st_size == 0:
        return Soundness(False, "not_ledger", f"{data} is empty, so no ledger")
    return None


def _child_env() -> dict[str, str]:
    """The child imports this very code: its package root leads PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def check_ledger(
    ledger_dir: str | Path,
    mode: str,
    *,
    on_total: Progress | None = None,
    progress: Progress | None = None,
) -> Soundness:
    """Check ``ledger_dir`` in a child process (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    ledger_dir = Path(ledger_dir)
    early = _missing(ledger_dir)
    if early is not None:
        return early
    result: Soundness | None = None
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.soundness", mode, str(ledger_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=_child_env(),
        )
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                tag, _, rest = line.decode(errors="replace").rstrip("\n").partition(" ")
                if tag == "T" and on_total is not None:
                    on_total(int(rest))
                elif tag == "P" and progress is not None:
                    progress(int(rest))
                elif tag == "R":
                    result = msgspec.json.decode(rest, type=Soundness)
        code = proc.wait()
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
    if result is not None:
        return result
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return Soundness(
            False, "crashed", f"the ledger file is damaged: reading it killed the checker ({name})"
        )
    why = tail[0] if tail else f"exit status {code}"
    return Soundness(False, "crashed", f"the ledger could not be checked ({why})")


if __name__ == "__main__":
    sys.exit(main())
