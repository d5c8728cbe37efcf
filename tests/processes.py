"""A server is a process tree (``pubex serve`` -> sequencer, edges): signal all of it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants, parents first."""
    out, todo = [], [pid]
    while todo:
        one = todo.pop(0)
        out.append(one)
        for task in Path(f"/proc/{one}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def signal_tree(pid: int, sig: int) -> None:
    for one in process_tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(one, sig)
