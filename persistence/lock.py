"""One writer per directory: an OS lock (``flock``) on ``DIR/writer.lock``.

Two processes appending to one ledger break its chain (the second's
``runtime_started`` entry made the first die with ``LedgerCorrupt``); two
companions on one store would each apply every entry.  LMDB itself lets any
number of processes open a write txn in turn, so the exclusion is ours: the
ledger's writer (``pubex serve``) and each companion take an exclusive,
non-blocking ``flock`` on ``writer.lock`` in their directory *before* opening
the environment, hold it for their lifetime, and write their pid and command
line into it so that a second instance can name the holder.  The kernel drops
the lock when the holder exits, however it exits (SIGKILL included): a
restarted process never waits for a stale lock file.  Read-only followers of
the ledger take no lock.

A second instance gets :class:`DirectoryInUse` having created nothing but the
directory and the lock file when they did not exist (in which case nobody held
them) and having written nothing.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
from pathlib import Path

__all__ = ["LOCK_NAME", "DirectoryInUse", "WriterLock"]

LOCK_NAME = "writer.lock"


class DirectoryInUse(RuntimeError):
    """Another live process holds the directory's writer lock."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"{directory} is in use by {holder or 'another process'}: "
            "one writer per directory; stop that one first"
        )
        self.directory = directory
        self.holder = holder


def _describe_self() -> str:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return f"pid {os.getpid()} ({shlex.join(argv)[:400]})"


class WriterLock:
    """The held lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | Path) -> WriterLock:
        """Take ``directory``'s writer lock (creating both when absent) or raise
        :class:`DirectoryInUse` naming the holder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise DirectoryInUse(directory, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_describe_self() + "\n").encode(), 0)
        return cls(directory, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock
