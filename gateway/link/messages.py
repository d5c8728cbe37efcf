"""Theory of operation: the link between an edge and its sequencer.

A Unix domain socket (``socket_path``: ``<data>/link/sequencer.sock``, the
folder 0700 and the socket 0600; a short fallback under the temp folder when
that path is too long for a socket).  The sequencer checks every peer twice:
its credentials (``SO_PEERCRED``: the same user) and the link secret
(``<data>/link/secret``, 0600, compared in constant time).

On the socket, *batches*: a 4-byte big-endian length, then a msgspec
msgpack array of messages -- one write per batch both ways, never one per
command.  The first batch from an edge holds ``Join`` alone; the sequencer
answers ``Welcome`` (or ``Goodbye`` with the reason, e.g. another link
version) and then streams, in ledger order, the public side of every entry
committed after the copy of the view the welcome carried.

    edge -> sequencer   Join, Submit, Admit, Release, Report, AskMetrics, AuthAttempt
    sequencer -> edge   Welcome, Goodbye, Answered, Admitted, Entries, Beat, MetricsText,
                        Hold

What crosses is what the ledger records: the command as translated from the
client's frame, and its envelope (``meta``: the signed payload exactly as
received, the signature, the key id, the session, the client IP and device
fingerprint).  Never a reserve amount, never another bidder's address: the
public side is ``gateway.public.events.PUBLIC_EVENTS`` and the keys an edge
checks signatures with.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

import msgspec

from engine.messages import AnyCommand
from engine.state import KeyRecord
from gateway.link.front import Admission, Answer, Budget, PublicEntry

LINK_VERSION = 1
# A batch an edge may send: commands are bounded by the frame limit long
# before this; past it the sequencer drops the link (a broken or hostile edge).
MAX_EDGE_BATCH_BYTES = 8 << 20
# A batch the sequencer sends: the welcome carries the whole public view.
MAX_SEQUENCER_BATCH_BYTES = 1 << 30
REPORT_S = 1.0
MAX_REPORT_BYTES = 1 << 20  # an edge's metrics text past it is dropped
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with room to spare


class Msg(msgspec.Struct, array_like=True, tag=True):
    pass


# ---------------------------------------------------------- edge -> sequencer
class Join(Msg, tag="join"):
    version: int
    secret: str
    name: str


class Submit(Msg, tag="submit"):
    id: int
    cmd: AnyCommand
    meta: bytes
    budget: Budget


class Admit(Msg, tag="admit"):
    id: int
    ip: str
    origin: str = ""
    session: str = ""
    bidder_id: str = ""
    nonce: str = ""
    token_ok: bool | None = None


class Release(Msg, tag="release"):
    ip: str


class Report(Msg, tag="report"):
    """The edge's own metrics (exposition text), every ``REPORT_S``."""

    text: bytes


class AskMetrics(Msg, tag="ask_metrics"):
    id: int


class AuthAttempt(Msg, tag="auth_attempt"):
    """A token tried on the edge's HTTP side (``POST /login``, ``/metrics``):
    the sequencer keeps the failed-token back-off for every edge at once."""

    ip: str
    ok: bool


# ---------------------------------------------------------- sequencer -> edge
class Welcome(Msg, tag="welcome"):
    version: int
    seq: int  # the view below is the fold of entries 1..seq
    views: bytes  # gateway.public.views.Views.encode()
    keys: dict[str, KeyRecord]
    clock_ns: int
    rate: int  # the clock's rate (--accelerate)
    sandbox: bool  # the ledger is a sandbox (development tokens allowed)


class Goodbye(Msg, tag="goodbye"):
    reason: str


class Answered(Msg, tag="answered"):
    id: int
    answer: Answer


class Admitted(Msg, tag="admitted"):
    id: int
    admission: Admission


class Entries(Msg, tag="entries"):
    entries: list[PublicEntry]
    keys: dict[str, KeyRecord]
    durable_seq: int


class Beat(Msg, tag="beat"):
    """The sequencer's clock and load, every ``BEAT_S``: an edge's ``/time``,
    ``pong`` and ``hello`` read the sequencer's clock from it."""

    clock_ns: int
    durable_seq: int
    queue_depth: int


class Hold(Msg, tag="hold"):
    """The back-off of ``ip`` now (``count`` failures in a row; 0: forgiven),
    to every edge, after any edge's failure or success."""

    ip: str
    count: int
    delay_s: float


class MetricsText(Msg, tag="metrics_text"):
    """Every process's latest metrics: ``sequencer`` and each edge by name."""

    id: int
    parts: dict[str, bytes]


EdgeMsg = Join | Submit | Admit | Release | Report | AskMetrics | AuthAttempt
SequencerMsg = Welcome | Goodbye | Answered | Admitted | Entries | Beat | MetricsText | Hold

ENCODER = msgspec.msgpack.Encoder()
# What decoding bytes that are not a batch raises: msgspec's errors (a
# ValidationError is a DecodeError), and UnicodeDecodeError -- msgspec raises
# that one as is for a string that is not UTF-8.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)
EDGE_DECODER = msgspec.msgpack.Decoder(list[EdgeMsg])
SEQUENCER_DECODER = msgspec.msgpack.Decoder(list[SequencerMsg])


def frame(batch: list[Msg]) -> bytes:
    body = ENCODER.encode(batch)
    return len(body).to_bytes(4, "big") + body


# --------------------------------------------------------------- the folder
def link_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "link"


def socket_path(data_dir: Path) -> Path:
    """Where the sequencer of ``data_dir`` listens: in the data directory's
    0700 ``link`` folder, or -- when that path is too long for a Unix socket
    -- in a 0700 folder of the temp directory named after it."""
    path = link_dir(data_dir) / "sequencer.sock"
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.blake2b(os.fsencode(Path(data_dir).resolve()), digest_size=8).hexdigest()
    return Path(tempfile.gettempdir()) / f"pubex-link-{os.getuid()}-{digest}" / "s.sock"


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or check an existing one is ours and 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a folder of this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def read_or_create_secret(data_dir: Path) -> str:
    """The link secret (64 hex characters, 0600), created on first use."""
    folder = private_dir(link_dir(data_dir))
    path = folder / "secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(data_dir)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return read_secret(data_dir)


def read_secret(data_dir: Path) -> str:
    path = link_dir(data_dir) / "secret"
    st = path.stat()
    if st.st_mode & 0o077:
        raise PermissionError(f"{path} must be readable by its owner only (chmod 600)")
    return path.read_text().strip()
