"""LMDB environments: the one place that decides how pubex opens LMDB.

Theory of operation
-------------------
LMDB is copy-on-write with two meta pages, so there is no recovery step after a
crash: a reader always sees the last meta page that reached the disk.  A commit
writes the data pages, fdatasyncs them, then writes the meta page.  That is only
true with ``sync=True`` (fsync the data), ``metasync=True`` (fsync the meta page)
and ``writemap=False`` (writes go through write(2), so a full disk is an error,
not a SIGBUS).  With those three settings, "``txn.commit()`` returned" means
"durable", which is what "acknowledged means durable" rests on.  Every open in
pubex goes through :func:`open_env`, which hard-codes them, and
:func:`check_settings` (the settings guard) re-reads the live flags so a test or
a startup check can prove it.

A full map raises ``lmdb.MapFullError`` and leaves nothing half-written; the
caller aborts, calls :func:`grow_map` (doubling, up to a cap) and retries the
whole transaction.  ``set_mapsize`` is only safe when this process has no live
transaction on the environment, so only the single writer thread grows the map,
between transactions.  Readers in other processes adopt the new size when their
``begin()`` reports ``MapResizedError`` (see :func:`adopt_map_size`).

Never open an LMDB file you did not write: LMDB has no page checksums and a
forged file can crash the reader.  Outsiders verify a signed, hash-chained
export instead.
"""

from __future__ import annotations

from pathlib import Path

import lmdb

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_MAP_SIZE = 64 * MiB
# Virtual address space is cheap on 64-bit; the cap exists so a runaway writer
# turns into a typed refusal instead of eating the disk.
DEFAULT_MAP_CAP = 256 * GiB


class UnsafeSettings(RuntimeError):
    """The environment's live flags break the durability contract."""


class StorageUnavailable(RuntimeError):
    """Storage refused a write (I/O error, map at its cap, ...).

    Typed so the caller refuses every not-yet-durable command instead of
    acknowledging it.
    """


def open_env(
    path: str | Path,
    *,
    readonly: bool = False,
    map_size: int = DEFAULT_MAP_SIZE,
    max_dbs: int = 16,
) -> lmdb.Environment:
    """Open an LMDB environment with the durable settings, then guard them."""
    p = Path(path)
    if not readonly:
        p.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(
        str(p),
        map_size=map_size,
        subdir=True,
        readonly=readonly,
        create=not readonly,
        sync=True,
        metasync=True,
        writemap=False,
        map_async=False,
        max_dbs=max_dbs,
        lock=True,
    )
    try:
        check_settings(env)
    except UnsafeSettings:
        env.close()
        raise
    return env


def check_settings(env: lmdb.Environment) -> None:
    """The settings guard: raise ``UnsafeSettings`` unless commits are durable."""
    flags = env.flags()
    bad: list[str] = []
    if not flags["sync"]:
        bad.append("sync is off")
    if not flags["metasync"]:
        bad.append("metasync is off")
    if flags["writemap"]:
        bad.append("writemap is on")
    if flags["map_async"]:
        bad.append("map_async is on")
    if bad:
        raise UnsafeSettings(f"{env.path()}: " + ", ".join(bad))


def map_size(env: lmdb.Environment) -> int:
    """Current map size in bytes, as this process sees it."""
    return env.info()["map_size"]


def grow_map(env: lmdb.Environment, *, cap: int = DEFAULT_MAP_CAP) -> int:
    """Double the map size (at most ``cap``) and return the new size.

    Raises ``StorageUnavailable`` when the map is already at the cap, so the
    retry loop of a writer always terminates.  Call only with no transaction of
    this process open on ``env``.
    """
    current = map_size(env)
    if current >= cap:
        raise StorageUnavailable(f"{env.path()}: LMDB map at its cap ({cap} bytes)")
    new_size = min(current * 2, cap)
    env.set_mapsize(new_size)
    return new_size


def adopt_map_size(env: lmdb.Environment) -> None:
    """Adopt a map size grown by another process (after ``MapResizedError``)."""
    # 0 means "use the size recorded in the environment's meta page".
    env.set_mapsize(0)
