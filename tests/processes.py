"""A server is a process tree (``pubex serve`` -> sequencer, edges): signal all of it."""

from __future__ import annotations

import contextlib
import os

from bench.gateway import process_tree

__all__ = ["process_tree", "signal_tree"]


def signal_tree(pid: int, sig: int) -> None:
    for one in process_tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(one, sig)
